"""Every label, annotation and field manager devserver writes: the one place each is named.

One domain, the API group's: `devservers.io/`. Labels and the pod template's flavor annotation
were `devserver.io/` before 0.2, and those keys are in Deployment and StatefulSet selectors
(immutable) and in running pods' templates (a change restarts the pod). So the move is in two
steps:

1. (now) Every object gets the new keys, and new workloads select by them. The old keys are
   written beside them, and the caches select and index by the old keys (`CACHE_*`), which
   every object devserver ever made carries. A workload made before keeps its selector for
   good (it is immutable: until the workload is made anew), a running one its template until
   its server is next started or changed, and a Service selects by what its workload selects
   by: no running server restarts for the move. A workload the caches lost (its old label
   removed by hand) is read from the API server when an apply is refused, so a stop reaches it.
2. (a later release, once every workload made before 0.2 has been made anew, which only its
   server's deletion does today) caches select by the new keys and the old copies are no longer
   written.

Rolling back to a release before 0.2 leaves the servers made since unable to start or change
(that release applies the old selector, which their workloads cannot take); stopping them still
works. Roll forward instead.

The in-pod agent (`podagent`, standard library only) keeps its own copies of its four
annotations; a unit test holds them equal to these.
"""

from __future__ import annotations

from collections.abc import Mapping

DOMAIN = "devservers.io"
LEGACY_LABEL_DOMAIN = "devserver.io"  # labels before 0.2: see above

# ------------------------------------------------------------------ who writes

OPERATOR = "devserver-operator"  # field manager, Event source, Lease, managed-by
FIELD_MANAGER = OPERATOR
MANAGED_BY = {"app.kubernetes.io/managed-by": OPERATOR}

# ------------------------------------------------------------------ labels (selectors)

NAME_LABEL = f"{DOMAIN}/name"  # the DevServer an object belongs to
USER_LABEL = f"{DOMAIN}/user"  # the user (DevUser, or a server's owner)
COMPONENT_LABEL = f"{DOMAIN}/component"  # e.g. the agent's scripts ConfigMap
CREATED_BY_LABEL = f"{DOMAIN}/created-by"  # a user's namespace and its objects
FLAVOR_ANNOTATION = f"{DOMAIN}/flavor"  # on pod templates: the flavor they run

# before 0.2: still written beside the new keys (step 1 above)
LEGACY_NAME_LABEL = f"{LEGACY_LABEL_DOMAIN}/name"
LEGACY_USER_LABEL = f"{LEGACY_LABEL_DOMAIN}/user"
LEGACY_COMPONENT_LABEL = f"{LEGACY_LABEL_DOMAIN}/component"
LEGACY_CREATED_BY_LABEL = f"{LEGACY_LABEL_DOMAIN}/created-by"
LEGACY_FLAVOR_ANNOTATION = f"{LEGACY_LABEL_DOMAIN}/flavor"
LEGACY_OF = {
    NAME_LABEL: LEGACY_NAME_LABEL,
    USER_LABEL: LEGACY_USER_LABEL,
    COMPONENT_LABEL: LEGACY_COMPONENT_LABEL,
    CREATED_BY_LABEL: LEGACY_CREATED_BY_LABEL,
    FLAVOR_ANNOTATION: LEGACY_FLAVOR_ANNOTATION,
}
# what caches select and index by: the keys every object devserver ever made carries
CACHE_NAME_LABEL = LEGACY_NAME_LABEL
CACHE_USER_LABEL = LEGACY_USER_LABEL
# what the operator made for a user rather than for one of their servers: a server's objects
# carry its owner's label too, and the user reconciler reads none of them (at 10,000 servers,
# 30,000 agent ServiceAccounts, Roles and RoleBindings cached twice, each write of one waking
# the user's reconcile)
CACHE_USER_SELECTOR = f"{CACHE_USER_LABEL},!{LEGACY_NAME_LABEL}"
CACHE_COMPONENT_LABEL = LEGACY_COMPONENT_LABEL


def with_legacy(keys: Mapping[str, str]) -> dict[str, str]:
    """`keys` (labels or annotations) with the pre-0.2 copy of each key that has one."""
    return {**keys, **{LEGACY_OF[k]: v for k, v in keys.items() if k in LEGACY_OF}}


def flavor_of(annotations: Mapping[str, str]) -> str | None:
    """The flavor a pod (template) runs, whichever release made it."""
    return annotations.get(FLAVOR_ANNOTATION) or annotations.get(LEGACY_FLAVOR_ANNOTATION)


# ------------------------------------------------------------------ annotations

# on a DevServer: its lifecycle, written by the operator (and devctl for extensions)
STOP_REASON = f"{DOMAIN}/stop-reason"
PREEMPTED_AT = f"{DOMAIN}/preempted-at"  # when it was stopped for a preemption (acted on once)
STARTED_AT = f"{DOMAIN}/started-at"  # written by devctl before 0.2; read once, clamped
WARNED = f"{DOMAIN}/warned"
LAST_EXTENSION = f"{DOMAIN}/last-extension"
RETENTION = f"{DOMAIN}/retention"  # "kept": past retention, but deleting would take the home
# on the activity agent's Lease: what it saw
IDLE_SINCE = f"{DOMAIN}/idle-since"
ACTIVITY = f"{DOMAIN}/activity"
# on the pod, written by the operator, read by the agent through the downward API
NOTICE = f"{DOMAIN}/notice"
STOP_AT = f"{DOMAIN}/stop-at"  # beside the notice: the agent samples faster as it nears
# on a pod template: a digest of what the pod is made from
POD_INPUTS = f"{DOMAIN}/pod-inputs"
# on a StatefulSet Kueue manages: a digest of the pod shape last sent (kueue.managed_step)
POD_SHAPE = f"{DOMAIN}/pod-shape"
# on a kept home's claim: its volume was set to Retain
RETAINED_VOLUME = f"{DOMAIN}/retained-volume"
# on a removed user's namespace: when they were removed
USER_REMOVED_ANNOTATION = f"{DOMAIN}/user-removed"

# ------------------------------------------------------------------ resources

GPU_RESOURCE = "nvidia.com/gpu"  # what a flavor, a quota and a Kueue queue count GPUs in

# ------------------------------------------------------------------ Kueue's (kueue.x-k8s.io)

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # on a workload: the LocalQueue it waits in
KUEUE_ADMISSION_GATE = "kueue.x-k8s.io/admission"  # a pod's scheduling gate until admitted
KUEUE_POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"  # a StatefulSet's pods: their Workload
# on a Workload Kueue made for a StatefulSet: its kind, its name, and the uid it was made for
KUEUE_JOB_OWNER_GVK = "kueue.x-k8s.io/job-owner-gvk"
KUEUE_JOB_OWNER_NAME = "kueue.x-k8s.io/job-owner-name"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
KUEUE_STATEFULSET_GVK = "apps/v1, Kind=StatefulSet"  # as Kueue writes it (Go's gvk.String())
LOCAL_QUEUE = "devserver"  # the LocalQueue the operator makes in each user's namespace
# on a workload and its pods: the WorkloadPriorityClass Kueue orders and preempts by. Servers
# start as active; the operator marks a pod idle (`--kueue-idle-yield-after`), so Kueue preempts
# it first when a queued server needs its GPUs (classes made by the chart)
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
ACTIVE_PRIORITY = "devserver-active"
IDLE_PRIORITY = "devserver-idle"

# ------------------------------------------------------------------ namespaces

USER_NAMESPACE_PREFIX = "dev-"  # a DevUser's namespace: dev-<user>
USER_QUOTA = "dev-user"  # the ResourceQuota (and LimitRange) in a user's namespace


def user_namespace(user: str) -> str:
    return f"{USER_NAMESPACE_PREFIX}{user}"


def namespace_user(namespace: str) -> str | None:
    """Whose namespace it is (dev-<user> is <user>'s), or None for any other namespace."""
    if namespace.startswith(USER_NAMESPACE_PREFIX):
        return namespace.removeprefix(USER_NAMESPACE_PREFIX)
    return None
