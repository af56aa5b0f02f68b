"""DevServers: one reconcile, two modes (standalone: a Deployment; distributed: a StatefulSet).

A DevServer key, from the work queue to its status write, passes through these modules in
order (`controller.controller` hands it to the mode's controller, "devserver" or "distributed"):

1. `reconciler`    the skeleton, the same for every mode: fetch → decide (a stopped server's
                   workload to zero first; `reconcilers.flavor.flavor_problem`) → apply the
                   mode's children as attempts (`reconcilers.children`) → status → accounting
2. `standalone` or `distributed`
                   the mode: what differs, and only that — its children, its status, its
                   Events, the GPUs it holds; each builds its own objects and reads the pieces
                   below. The two never import each other (an import-linter contract).
3. `pod`           the dev pod (a Deployment's or a StatefulSet's template)
4. `activity_agent` the activity agent: its objects (ConfigMap, Lease(s), RBAC), the pod's
                   part of it, its reports
5. `status`        what every mode's status shares: Observed, Progressing, FlavorValid,
                   ExpiringSoon, Applied, the lifecycle and billing fields
6. `reconcilers.status_writer` the status patch, only when it changed (Events first, via
                   the mode); the flavor and user reconcilers write theirs with it too

Beside the path: `caches` (the shared informers a reconcile reads), `running_template` (a
running pod is replaced only for its user's change; a stop scales to zero), `home_volumes` (a
kept home's volume set to Retain), `fleet_metrics` (servers by phase, GPU-hours held and used,
stops: the skeleton's last step). Names of every object, home claims included, are
`reconcilers.naming`'s; the expiry reconciler reads them there too.
"""
