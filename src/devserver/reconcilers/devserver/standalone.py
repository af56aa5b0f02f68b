"""The standalone mode: one pod with its home volume — its children, its status, its Events.

- PVC `<name>-home`: the user's home, ReadWriteOnce on the default class, mounted at /home/dev.
  It is never deleted or recreated by an update; it is owned by the DevServer (and so garbage
  collected with it) only when the user turned retention off; when kept, its volume is set to
  Retain (`home_volumes`).
- The activity agent's objects (`activity_agent`).
- Deployment `<name>`: one replica (0 while stopped), strategy Recreate (a ReadWriteOnce volume
  cannot be mounted by the old and the new pod at once, so a rolling update would hang), the dev
  pod (`pod`); a running pod is replaced only for a change its user made (`running_template`).
- Service `<name>`: port 22 when SSH is enabled, deleted when it is not.

With Kueue (`reconcilers.kueue`), the Deployment carries the user's LocalQueue from its creation
or a start, and Kueue admits its pod when the GPU quota holds it.

Status: Running only when the pod is Ready; Queued, with Kueue's words and the place in the
queue, while Kueue holds the pod back; Pending with the scheduler's own words when no node
fits, or the API server's when no pod may be created at all (QuotaExceeded: more GPUs than the
user's quota; AdmissionUnavailable: a webhook, Kueue's, does not answer); Degraded when the
image cannot be pulled; LifetimeCapped when the operator's maximum lifetime shortened the
requested deadline.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from devserver.api.devserver import DevServer, Mode, Phase
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import (
    FIELD_MANAGER,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    flavor_of,
)
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import (
    DEPLOYMENTS,
    PERSISTENT_VOLUME_CLAIMS,
    SERVICES,
)
from devserver.api.schema import Condition
from devserver.client.events import EventType
from devserver.reconcilers.devserver.activity_agent import ensure_agent_objects
from devserver.reconcilers.devserver.home_volumes import retain_homes, retain_unowned_homes
from devserver.reconcilers.devserver.pod import SSH_PORT, pod_template, template_flavor
from devserver.reconcilers.devserver.reconciler import Child, ServerMode
from devserver.reconcilers.devserver.running_template import select_as_workload
from devserver.reconcilers.devserver.status import (
    Observed,
    Verdict,
    condition,
    mode_status,
    pod_condition,
    pod_refused,
    stopped_reason,
    waiting_reason,
)
from devserver.reconcilers.flavor import gpu_count
from devserver.reconcilers.kueue import priority_label, queue_label
from devserver.reconcilers.naming import home_claim_name, object_meta, selector

# Ready=False reasons worth a Warning (not the ordinary Creating/Starting on the way up)
WARN_REASONS = {"Unschedulable", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


# ---------------------------------------------------------------------- its objects (pure)


def home_size(ds: DevServer, claim: KubeObject | None) -> str:
    """The size to ask for: the spec's, but never less than the live claim's request — a home
    never shrinks (the API server would refuse it), so a server re-created by name with a
    smaller size adopts its kept home as it is."""
    wanted = ds.spec.persistent_home_size
    if claim is None:
        return wanted
    spec = claim.extra.get("spec") or {}
    live = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    try:
        if live and parse_quantity(str(live)) > parse_quantity(wanted):
            return str(live)
    except QuantityError:
        return wanted
    return wanted


def desired_home_claim(ds: DevServer, claim: KubeObject | None = None) -> dict[str, Any]:
    owned = not ds.spec.retain_home_on_delete
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(ds, home_claim_name(ds), owned=owned),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": home_size(ds, claim)}},
        },
    }


def desired_deployment(
    ds: DevServer,
    flavor: DevServerFlavor,
    *,
    replicas: int = 1,
    queue: str | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """`queue` and `priority`: Kueue's labels (its webhook copies them to the pod template)."""
    home = {"name": "home", "persistentVolumeClaim": {"claimName": home_claim_name(ds)}}
    metadata = object_meta(ds, ds.metadata.name)
    kueue = {KUEUE_QUEUE_LABEL: queue, KUEUE_PRIORITY_LABEL: priority}
    metadata["labels"] = {**metadata["labels"], **{k: v for k, v in kueue.items() if v}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(ds)},
            "template": pod_template(ds, flavor, home_volume=home),
        },
    }


def desired_service(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(ds, ds.metadata.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ds),
            "ports": [{"name": "ssh", "port": SSH_PORT, "targetPort": "ssh", "protocol": "TCP"}],
        },
    }


# ---------------------------------------------------------------------- its status (pure)


def observed_status(ds: DevServer, seen: Observed, parked: str | None = None) -> dict[str, Any]:
    gen = ds.metadata.generation
    live = [p for p in seen.pods if not p.metadata.deletion_timestamp]
    ready_pods = [p for p in live if (pod_condition(p, "Ready") or {}).get("status") == "True"]
    pod = ready_pods[0] if ready_pods else (live[0] if live else None)
    phase, ready, reason, message = Phase.PENDING, False, "Creating", "creating the dev server"
    degraded: tuple[str, str] | None = None
    if ds.spec.stopped:
        phase, (reason, message) = Phase.STOPPED, stopped_reason(ds, "the home volume is kept")
        message += f" — `devctl start {ds.metadata.name}` brings it back"
        ready_pods, pod = [], None
    elif seen.workload is None and seen.flavor_problem:
        reason, message = "FlavorUnavailable", seen.flavor_problem
    elif ready_pods:
        phase, ready, reason, message = Phase.RUNNING, True, "PodReady", "the dev server is up"
    elif seen.queued is not None:
        phase, reason, message = Phase.QUEUED, "Queued", seen.queued
    elif pod is None and (failure := _replica_failure(seen.workload)) is not None:
        # no pod at all: the ReplicaSet could not create one (quota, admission) — say why
        reason, message = pod_refused(failure)
    elif pod is None and seen.webhook_down is not None:
        reason, message = pod_refused(seen.webhook_down)
    elif pod is not None:
        scheduled = pod_condition(pod, "PodScheduled") or {}
        image = waiting_reason(pod)
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            reason, message = "Unschedulable", str(scheduled.get("message", ""))
        elif image is not None:
            degraded = image
            reason, message = image[0], f"the image cannot be pulled: {image[1]}".rstrip(": ")
        else:
            reason, message = "Starting", "the pod is starting"
    applied = (flavor_of(pod.metadata.annotations) if pod is not None else None) or (
        template_flavor(seen.workload)
    )
    degraded_condition = condition(
        "Degraded",
        degraded is not None,
        degraded[0] if degraded else "AsExpected",
        message if degraded else "no known problem",
        gen,
    )
    capped: list[Condition] = []
    if parked is not None:  # a flavor change waits; the server runs on (`resize`)
        capped.append(condition("Resized", False, "Parked", parked, gen))
    times = seen.times(ds)
    if times.capped and times.deadline is not None and not ds.spec.stopped:
        capped.append(
            condition(
                "LifetimeCapped",
                True,
                "MaximumLifetime",
                "the requested deadline is past the platform's maximum lifetime; it stops at "
                f"{times.deadline.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
                gen,
            )
        )
    status = mode_status(
        ds,
        seen,
        Verdict(phase, ready, reason, message),
        waiting="the pod",
        home_claim=home_claim_name(ds),
        price=seen.price_per_hour,
        gpus=seen.gpus_per_pod,
        between=[degraded_condition],
        after=capped,
    )
    applied = (flavor_of(pod.metadata.annotations) if pod is not None else None) or (
        template_flavor(seen.workload)
    )
    if applied:
        status["appliedFlavor"] = applied
    if pod is not None:
        status["podName"] = pod.metadata.name
        started = (pod.extra.get("status") or {}).get("startTime")
        if started and ready:
            status["startedAt"] = started
    if seen.service is not None and ds.spec.enable_ssh:  # a Service left over is being deleted
        name = seen.service.metadata.name
        status["serviceName"] = name
        status["sshEndpoint"] = f"{name}.{ds.metadata.namespace}.svc.cluster.local:{SSH_PORT}"
    return status


def _replica_failure(deployment: KubeObject | None) -> str | None:
    if deployment is None:
        return None
    for c in (deployment.extra.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return str(c.get("message", "")) or "refused"
    return None


# ---------------------------------------------------------------------- the mode


class Standalone(ServerMode, name="devserver", workers=4, workload=DEPLOYMENTS):
    def owns(self, ds: DevServer) -> bool:
        return ds.spec.mode is not Mode.DISTRIBUTED

    def children(self, ds: DevServer, flavor: DevServerFlavor | None) -> list[Child]:
        key, caches = ds.key, self.caches
        claim = caches.claims.store.get(ObjectKey(key.namespace, home_claim_name(ds)))
        children: list[Child] = [("PersistentVolumeClaim", lambda: self._home(ds, claim))]
        if claim is not None:
            children.append(("PersistentVolume", lambda: retain_homes(self.client, ds, [claim])))
        children.append(
            ("agent objects", lambda: ensure_agent_objects(self.client, caches.agent, ds))
        )
        if flavor is not None:
            children.append(("Deployment", lambda: self._deployment(ds, flavor)))
        children.append(("Service", lambda: self._service(ds)))
        return children

    def status(self, ds: DevServer, seen: Observed) -> dict[str, Any]:
        return observed_status(ds, seen, parked=self.resize_blocked(ds))

    def gpus(
        self, ds: DevServer, flavor: DevServerFlavor | None, status: dict[str, Any], placed: int
    ) -> tuple[str, int]:
        """The pod's flavor's: the one it runs with, which may not be the one asked for."""
        running = self.caches.flavors.store.get(
            ObjectKey("", status.get("appliedFlavor") or ds.spec.flavor)
        )
        return (running.metadata.name if running else ds.spec.flavor), gpu_count(running)

    async def gone(self, key: ObjectKey) -> None:
        """Its kept home's volume is set to Retain, for homes kept before this operator."""
        homes = self.caches.made_for(self.caches.claims, key)
        await retain_unowned_homes(self.client, homes)

    async def _home(self, ds: DevServer, claim: KubeObject | None) -> None:
        if claim is not None and ds.spec.retain_home_on_delete and owned_by(claim, ds):
            # retention turned on: apply drops the owner reference we no longer claim, so the
            # home survives the server (a plain compare would call the claim up to date)
            await self.client.apply(
                PERSISTENT_VOLUME_CLAIMS,
                desired_home_claim(ds, claim),
                field_manager=FIELD_MANAGER,
            )
        else:
            await self.ensure(PERSISTENT_VOLUME_CLAIMS, desired_home_claim(ds, claim), claim)

    def resize_blocked(self, ds: DevServer) -> str | None:
        """Why moving this running server to its requested flavor must wait (`resize`)."""
        live = self.caches.workloads.store.get(ds.key)
        running = live is not None and (live.extra.get("status") or {}).get("readyReplicas")
        applied = template_flavor(live)
        if ds.spec.stopped or not running or applied in (None, ds.spec.flavor):
            return None
        flavors = self.caches.flavors.store
        new = flavors.get(ObjectKey("", ds.spec.flavor))
        if new is None:
            return None  # FlavorValid says what is wrong; the running pod is left as it is
        return self.resize_check(ds, flavors.get(ObjectKey("", applied or "")), new)

    async def _deployment(self, ds: DevServer, flavor: DevServerFlavor) -> None:
        if self.resize_blocked(ds) is not None:
            return  # parked: the running pod stays as it is, the status says why
        live = self.caches.workloads.store.get(ds.key)
        intent = desired_deployment(
            ds,
            flavor,
            replicas=0 if ds.spec.stopped else 1,
            queue=queue_label(live, self.kueue),
            priority=priority_label(live, self.kueue),
        )
        await self.ensure_workload(ds, intent)

    async def _service(self, ds: DevServer) -> None:
        service = self.caches.services.store.get(ds.key)
        if ds.spec.enable_ssh:
            intent = select_as_workload(desired_service(ds), self.workload_selector(ds))
            await self.ensure(SERVICES, intent, service)
        elif service is not None:
            await self.client.delete(SERVICES, ds.metadata.name, ds.metadata.namespace)

    async def announce(self, ds: DevServer, status: dict[str, Any]) -> None:
        """One Event per transition a user cares about; the status remembers what was said."""
        before = {c.type: (c.status, c.reason) for c in (ds.status.conditions if ds.status else [])}
        for c in status["conditions"]:
            now = (c["status"], c["reason"])
            if before.get(c["type"]) == now:
                continue
            if c["type"] == "Ready" and now == ("True", "PodReady"):
                await self.event(ds, EventType.NORMAL, "Ready", c["message"])
            elif c["type"] == "Ready" and c["reason"] in WARN_REASONS:
                await self.event(ds, EventType.WARNING, c["reason"], c["message"])
            elif c["type"] == "FlavorValid" and c["status"] == "False":
                await self.event(ds, EventType.WARNING, "FlavorUnavailable", c["message"])
            elif c["type"] == "Resized" and c["status"] == "False":
                await self.event(ds, EventType.WARNING, "ResizeParked", c["message"])
        await self.announce_stop(ds, status, "stopped; home volume kept")
        extension = status.get("lastExtension")
        if extension and extension != (ds.status.last_extension if ds.status else None):
            await self.event(ds, EventType.NORMAL, "Extended", f"extended: {extension}")
        capped = [c for c in status.get("conditions") or [] if c["type"] == "LifetimeCapped"]
        if capped and not any(
            c.type == "LifetimeCapped" for c in (ds.status.conditions if ds.status else [])
        ):
            await self.event(ds, EventType.WARNING, "LifetimeCapped", capped[0]["message"])
        applied = status.get("appliedFlavor")
        previous = ds.status.applied_flavor if ds.status else None
        if applied and previous and applied != previous:
            message = f"now running on flavor {applied} (was {previous}), with the same home volume"
            await self.event(ds, EventType.NORMAL, "FlavorApplied", message)


def owned_by(obj: KubeObject, ds: DevServer) -> bool:
    return any(ref.uid == ds.metadata.uid for ref in obj.metadata.owner_references)
