"""Kueue, when the operator is given a ClusterQueue: who queues where, and what a queued server
is told (pure, but for the informers `QueueCaches` holds).

- Each user's namespace gets a LocalQueue `devserver` (made by the user reconciler), pointing at
  their team's ClusterQueue (`--kueue-team-queue team=queue`), else the default one
  (`--kueue-cluster-queue`). The ClusterQueues, their ResourceFlavors and cohorts are the
  platform's (the chart's values, or an admin's): quotas are policy, not per-user state.
- A workload carries `kueue.x-k8s.io/queue-name` from its creation, or from a start (no ready
  replica): Kueue refuses that label changing while a pod runs, and it would restart the pod.
- Kueue gates each pod (`kueue.x-k8s.io/admission`) until its Workload is admitted; the server
  is then Queued, with Kueue's own words from the Workload's QuotaReserved condition and its
  place among the waiting servers of the same ClusterQueue.
- The user's ResourceQuota stays the hard ceiling: it counts pods when they are created, gated
  or not, so a server beyond it is never queued at all (QuotaExceeded, as without Kueue).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from http import HTTPStatus
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.kueue_gpus import gpus_admitted
from devserver.api.lifecycle import Activity
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import (
    ACTIVE_PRIORITY,
    IDLE_PRIORITY,
    KUEUE_ADMISSION_GATE,
    KUEUE_JOB_OWNER_GVK,
    KUEUE_JOB_OWNER_NAME,
    KUEUE_JOB_UID_LABEL,
    KUEUE_POD_GROUP_LABEL,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    KUEUE_STATEFULSET_GVK,
    LOCAL_QUEUE,
    POD_SHAPE,
    PREEMPTED_AT,
)
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import (
    CLUSTER_QUEUES,
    KUEUE_WORKLOADS,
    LOCAL_QUEUES,
    PODS,
    WORKLOAD_PRIORITY_CLASSES,
)
from devserver.client import ApiError, KubeClient
from devserver.informers import OWNED, OWNER_UID_INDEX, Informer, InformerFactory


@dataclass(frozen=True)
class KueueConfig:
    """`--kueue-cluster-queue` and `--kueue-team-queue`: empty, Kueue is not used."""

    cluster_queue: str = ""
    team_queues: tuple[tuple[str, str], ...] = field(default=())
    # `--kueue-idle-yield-after`: a server idle this long is marked to yield its GPUs first
    idle_yield_after: timedelta | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cluster_queue)

    @property
    def yields(self) -> bool:
        return self.enabled and self.idle_yield_after is not None

    def cluster_queue_of(self, team: str) -> str:
        return dict(self.team_queues).get(team, self.cluster_queue)


def desired_local_queue(namespace: str, cluster_queue: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The user's LocalQueue; `meta` is the user's objects' (labels, owner)."""
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {**meta, "name": LOCAL_QUEUE, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue},
    }


def local_queue_target(queue: KubeObject | None) -> str | None:
    if queue is None:
        return None
    return str((queue.extra.get("spec") or {}).get("clusterQueue") or "") or None


def gated(pod: KubeObject) -> bool:
    """Held back by Kueue until admitted (its scheduling gate)."""
    gates = (pod.extra.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == KUEUE_ADMISSION_GATE for g in gates)


def _condition(workload: KubeObject, kind: str) -> dict[str, Any] | None:
    for c in (workload.extra.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def waiting(workload: KubeObject) -> bool:
    """Not admitted and not finished: in the queue."""
    if workload.metadata.deletion_timestamp:
        return False
    reserved = _condition(workload, "QuotaReserved") or {}
    finished = _condition(workload, "Finished") or {}
    return reserved.get("status") != "True" and finished.get("status") != "True"


WAITING_INDEX = "waiting"


def waiting_in(workload: KubeObject) -> tuple[str, ...]:
    """Index of the workloads in the queue, by namespace."""
    return (workload.metadata.namespace,) if waiting(workload) else ()


GANG_INDEX = "gang"


def gang_of(workload: KubeObject) -> ObjectKey | None:
    """The StatefulSet (named as its server is) Kueue made this Workload for, from what Kueue
    writes on it: it stays when the StatefulSet is gone and its owner reference with it."""
    meta = workload.metadata
    name = meta.annotations.get(KUEUE_JOB_OWNER_NAME)
    if not name or meta.annotations.get(KUEUE_JOB_OWNER_GVK) != KUEUE_STATEFULSET_GVK:
        return None
    return ObjectKey(meta.namespace, name)


def gang_in(workload: KubeObject) -> tuple[str, ...]:
    """Index of the StatefulSets' Workloads, by `namespace/name` of the StatefulSet."""
    gang = gang_of(workload)
    return (f"{gang.namespace}/{gang.name}",) if gang else ()


def left_behind(
    workloads: list[KubeObject], live: KubeObject | None, pods: list[KubeObject]
) -> list[KubeObject]:
    """The Workloads of a gang's StatefulSet that nothing will ever take back or delete:

    - no owner left (the garbage collector deletes one whose owners are all gone);
    - not the running StatefulSet's: made for another uid, or the StatefulSet is gone or
      stopped (at 0 replicas, no pod left), when Kueue's own Workload is gone too;
    - no pod of its group left (`pods`: the server's).

    Kueue 0.17.0 leaves one so when a scale to zero races the garbage collector
    (kubernetes-sigs/kueue#12232, fixed in 0.17.7): the collector strips the deleted pods'
    references while the StatefulSet still owns it, then Kueue removes the StatefulSet's. It
    stays admitted and holds the gang's GPUs for good, and Kueue's webhook refuses the
    StatefulSet's next start while it is there."""
    running = live is not None and (
        _scaled_up(live) or (live.extra.get("status") or {}).get("replicas")
    )
    grouped = {p.metadata.labels.get(KUEUE_POD_GROUP_LABEL) for p in pods}
    return [
        w
        for w in workloads
        if not w.metadata.deletion_timestamp
        and not w.metadata.owner_references
        and w.metadata.name not in grouped
        and not (
            running
            and live is not None
            and w.metadata.labels.get(KUEUE_JOB_UID_LABEL) in (live.metadata.uid, None)
        )
    ]


def _queued_since(workload: KubeObject) -> datetime:
    return workload.metadata.creation_timestamp or datetime.max.replace(tzinfo=UTC)


def _priority(workload: KubeObject) -> int:
    value = (workload.extra.get("spec") or {}).get("priority")
    return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class QueueCaches:
    """Kueue's Workloads (each owned by the pod it is for) and ClusterQueues (their quotas)."""

    workloads: Informer[KubeObject]
    cluster_queues: Informer[KubeObject]

    @classmethod
    def shared(cls, informers: InformerFactory) -> QueueCaches:
        indexes = {WAITING_INDEX: waiting_in, GANG_INDEX: gang_in, **OWNED}  # `workload_of`
        return cls(
            informers.informer(KUEUE_WORKLOADS, indexers=indexes),
            informers.informer(CLUSTER_QUEUES),
        )

    def workload_of(self, pod: KubeObject) -> KubeObject | None:
        """A StatefulSet's pods are one group, one Workload (named by their label); any
        other pod has its own, owned by it."""
        group = pod.metadata.labels.get(KUEUE_POD_GROUP_LABEL)
        if group:
            return self.workloads.store.get(ObjectKey(pod.metadata.namespace, group))
        found = self.workloads.store.by_index(OWNER_UID_INDEX, pod.metadata.uid)
        return found[0] if found else None

    def gpus_admitted(self, cluster_queue: str) -> int:
        """The GPUs of the Workloads admitted to `cluster_queue`, as the watch saw them."""
        return sum(  # one being deleted has given its quota back
            gpus_admitted(w.extra, cluster_queue)
            for w in self.workloads.store.objects()
            if not w.metadata.deletion_timestamp
        )

    def position(self, workload: KubeObject, same_queue: set[str]) -> int:
        """Its place among the waiting workloads of the namespaces whose LocalQueue points at
        the same ClusterQueue (`same_queue`), in Kueue's order: priority, then age."""
        mine = (-_priority(workload), _queued_since(workload))
        ahead = 0
        for namespace in same_queue:  # the waiting ones only: admitted ones are most
            for other in self.workloads.store.by_index(WAITING_INDEX, namespace):
                if other.metadata.uid == workload.metadata.uid:
                    continue
                if (-_priority(other), _queued_since(other)) < mine:
                    ahead += 1
        return ahead + 1


def admitted_at(workload: KubeObject | None) -> datetime | None:
    """When Kueue reserved quota for it (from then on it waits for a node, not for quota)."""
    reserved = _condition(workload, "QuotaReserved") if workload is not None else None
    if not reserved or reserved.get("status") != "True":
        return None
    try:
        return datetime.fromisoformat(str(reserved.get("lastTransitionTime")))
    except ValueError:
        return None


def queued_message(workload: KubeObject | None, position: int | None) -> str:
    """What a queued server's status says: Kueue's own words, and its place."""
    if workload is None:
        return "waiting for Kueue to queue it for GPU quota"
    said = str((_condition(workload, "QuotaReserved") or {}).get("message") or "").strip()
    place = f"{_ordinal(position)} in the queue" if position else "in the queue"
    return f"{place} for GPU quota: {said}" if said else f"{place} for GPU quota"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def owners(workload: KubeObject, kind: str) -> list[ObjectKey]:
    """The objects of `kind` a Workload is for: its pod (a Deployment's), or its StatefulSet
    (named as the server is)."""
    return [
        ObjectKey(workload.metadata.namespace, ref.name)
        for ref in workload.metadata.owner_references
        if ref.kind == kind
    ]


def queue_label(live: KubeObject | None, config: KueueConfig) -> str | None:
    """The `kueue.x-k8s.io/queue-name` a server's workload gets: from its creation, or from a
    start (scaled to zero until then). A workload scaled up keeps what it has, even while no
    pod of it is ready: Kueue's webhook would put the label in the pod template (the pod
    replaced, and queued). Without Kueue, a label once given is kept (Kueue refuses its
    removal; once Kueue is gone, it means nothing)."""
    if live is None:
        return LOCAL_QUEUE if config.enabled else None
    had = live.metadata.labels.get(KUEUE_QUEUE_LABEL)
    if _scaled_up(live) or not config.enabled:
        return had
    return LOCAL_QUEUE


def priority_label(live: KubeObject | None, config: KueueConfig) -> str | None:
    """The WorkloadPriorityClass a standalone server's workload gets where idle servers yield:
    active, from its creation or a start, as the queue label. Kueue refuses giving a running
    workload a class, and ever taking one away: a class once given is kept."""
    had = live.metadata.labels.get(KUEUE_PRIORITY_LABEL) if live is not None else None
    if not config.yields or (live is not None and _scaled_up(live)):
        return had
    return ACTIVE_PRIORITY


def _scaled_up(live: KubeObject) -> bool:
    return bool((live.extra.get("spec") or {}).get("replicas", 1))


# ---------------------------------------------------------------------- idle servers yield


def wanted_priority(activity: Activity | None, now: datetime, after: timedelta) -> str:
    """Idle: the agent reports, fresh, that nothing has happened for `after` or longer. A
    silent agent, or none, counts as active: a server is never made to yield on a guess."""
    if activity is None or not activity.fresh(now) or activity.idle_since is None:
        return ACTIVE_PRIORITY
    return IDLE_PRIORITY if now - activity.idle_since >= after else ACTIVE_PRIORITY


def yields_in(activity: Activity | None, now: datetime, after: timedelta) -> float | None:
    """Seconds until an idle server's pods are marked to yield; None when that is not ahead."""
    if activity is None or not activity.fresh(now) or activity.idle_since is None:
        return None
    left = (activity.idle_since + after - now).total_seconds()
    return left if left > 0 else None


def to_mark(pods: list[KubeObject], wanted: str) -> list[KubeObject]:
    """The running pods whose class is not `wanted`. Only pods that have a class are marked
    (Kueue refuses one given to a running pod), and none it still holds back."""
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and not gated(p)
        and p.metadata.labels.get(KUEUE_PRIORITY_LABEL) not in (None, wanted)
    ]


def marked_idle(pods: list[KubeObject]) -> bool:
    return any(p.metadata.labels.get(KUEUE_PRIORITY_LABEL) == IDLE_PRIORITY for p in pods)


def classed(pods: list[KubeObject]) -> bool:
    """Whether any pod has a class to move (distributed servers' have none)."""
    return any(KUEUE_PRIORITY_LABEL in p.metadata.labels for p in pods)


async def mark_pods(client: KubeClient, pods: list[KubeObject], wanted: str) -> None:
    """Give the server's running pods the class `wanted`; Kueue moves their Workload to its
    priority (a pod label, not the template's: the pod is not replaced)."""
    patch = {"metadata": {"labels": {KUEUE_PRIORITY_LABEL: wanted}}}
    for pod in to_mark(pods, wanted):
        try:
            await client.patch(PODS, pod.metadata.name, patch, pod.metadata.namespace)
        except ApiError as error:
            if not error.not_found:
                raise


class Step(Enum):
    """What a StatefulSet Kueue manages takes next to reach its intent."""

    APPLY = "apply"  # Kueue allows it as it is
    SCALE_DOWN = "scale-down"  # first every rank goes (and the gang's quota with them)
    WAIT = "wait"  # ranks are still going
    RECREATE = "recreate"  # a new pod shape: the StatefulSet is made anew, its homes orphaned
    KEEP_TEMPLATE = "keep-template"  # stopped: the new shape waits for its start


def managed_step(live: KubeObject, intent: dict[str, Any]) -> Step:
    """Kueue admits a StatefulSet as one gang, so it refuses a new replica count unless from or
    to 0, and any change of the pods' shape (requests, ports, node selector, tolerations...)
    at all, once the queue label is on it (or comes with this very change). A change of the
    world size or of the flavor is then a restart: every rank stops, and the StatefulSet
    starts again with the new count. Every start makes it anew (its home claims are orphaned,
    not deleted, and the new one adopts them by name): see below. A stopped one keeps its
    shape until it starts: nothing is made anew for an admin's edit of a flavor nobody runs.

    The shape the operator last sent is recorded (`POD_SHAPE`): a live template that differs
    from the intent only by what the API server or a webhook normalised is the same shape,
    so no server restarts twice for one change."""
    labels = intent.get("metadata", {}).get("labels") or {}
    if KUEUE_QUEUE_LABEL not in live.metadata.labels and KUEUE_QUEUE_LABEL not in labels:
        return Step.APPLY
    spec = live.extra.get("spec") or {}
    had = spec.get("replicas", 1) or 0
    wanted = intent["spec"].get("replicas", 1) or 0
    template = intent["spec"].get("template") or {}
    shaped = pod_shape((spec.get("template") or {}).get("spec") or {}) != pod_shape(
        template.get("spec") or {}
    ) and live.metadata.annotations.get(POD_SHAPE) != shape_digest(template)
    resized = had and wanted and had != wanted
    starting = not had and wanted
    if not shaped and not resized and not starting:
        return Step.APPLY
    if had:
        return Step.SCALE_DOWN
    if (live.extra.get("status") or {}).get("replicas"):
        return Step.WAIT
    # every start is a StatefulSet made anew: Kueue names a gang's Workload after its
    # StatefulSet's uid, and one started again under the same name raced the deletion of the
    # last run's (Kueue 0.17 then refused the start, or went on counting the deleted one's
    # GPUs); a new uid is a new name
    return Step.RECREATE if wanted else Step.KEEP_TEMPLATE


def shape_digest(template: dict[str, Any]) -> str:
    """A digest of the pod shape of a template the operator renders."""
    shape = json.dumps(pod_shape(template.get("spec") or {}), sort_keys=True, default=str)
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def pod_shape(spec: dict[str, Any]) -> dict[str, Any]:
    """What Kueue holds immutable in a managed pod group's template (its `SpecShape`), with
    quantities compared by value, as the API server may write them in another form."""

    def containers(key: str) -> list[Any]:
        return [
            {
                "requests": {
                    name: _amount(value)
                    for name, value in ((c.get("resources") or {}).get("requests") or {}).items()
                },
                "ports": c.get("ports") or [],
            }
            for c in spec.get(key) or []
        ]

    fixed = ("nodeSelector", "affinity", "tolerations", "runtimeClassName", "priority")
    more = ("topologySpreadConstraints", "overhead", "resourceClaims")
    return {
        "initContainers": containers("initContainers"),
        "containers": containers("containers"),
        **{key: _pruned(spec.get(key)) for key in (*fixed, *more)},
    }


def _pruned(value: Any) -> Any:
    """As Go serialises it (`omitempty`): empty strings, lists and maps, and nulls dropped, so a
    toleration written with `key: ""` equals the one the API server stores without it."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})} or None
    if isinstance(value, list):
        items = [_pruned(v) for v in value]
        return [v for v in items if v not in (None, "", [], {})] or None
    return None if value == "" else value


def _amount(value: Any) -> Any:
    try:
        return parse_quantity(str(value))
    except QuantityError:
        return value


def scale_down_pending(message: str) -> bool:
    """Kueue's refusal of a start while the last scale-down is not finished."""
    return "scaling down is still in progress" in message or "still being deleted" in message


EVICTED = "TerminationTarget"  # the condition Kueue puts on a pod it evicts, then deletes
PREEMPTION = "WorkloadEvictedDueToPreempted"  # its reason when the quota went to another


@dataclass(frozen=True)
class Eviction:
    pod_created: datetime  # the run it ended began no later than this
    message: str
    idle: bool = False  # the pod was marked to yield (`to_mark`)


def eviction(pod: KubeObject) -> Eviction | None:
    """Why Kueue preempted `pod`: it says so on the pod, then deletes it. Evictions for other
    reasons (pods not ready in time, a queue stopped) are Kueue's to requeue."""
    created = pod.metadata.creation_timestamp
    for c in (pod.extra.get("status") or {}).get("conditions") or []:
        kind, status, reason = c.get("type"), c.get("status"), c.get("reason")
        if kind == EVICTED and status == "True" and reason == PREEMPTION and created:
            message = str(c.get("message") or "preempted")
            return Eviction(created, message, marked_idle([pod]))
    return None


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


@dataclass
class Evictions:
    """Preemptions seen on the watch, by server. Kueue deletes a preempted pod right after
    marking it, so by the time the server's reconcile runs the cache may hold the pod no more;
    what the watch showed is kept here until the server is stopped for it. (Lost on a restart:
    the server then queues again instead of stopping; it holds no GPU either way.)

    A preemption is acted on once: the stop records when (`PREEMPTED_AT`), and the pods made
    before it — the other ranks of the same gang, a pod still going when the user starts the
    server again — belong to the run that ended."""

    seen: dict[ObjectKey, Eviction] = field(default_factory=dict)

    def note(self, server: ObjectKey, pod: KubeObject) -> None:
        found = eviction(pod)
        if found is not None:
            self.seen[server] = found

    def pending(self, ds: DevServer, pods: list[KubeObject]) -> Eviction | None:
        """The preemption of a pod of `ds` not acted on yet."""
        acted = _time(ds.metadata.annotations.get(PREEMPTED_AT))
        found = [e for e in (*(eviction(p) for p in pods), self.seen.get(ds.key)) if e]
        fresh = [e for e in found if acted is None or e.pod_created > acted]
        if not fresh:
            self.seen.pop(ds.key, None)
            return None
        return fresh[0]

    def forget(self, server: ObjectKey) -> None:
        self.seen.pop(server, None)


async def kueue_served(client: KubeClient) -> bool:
    """Whether the API server serves what the operator reads of Kueue (v1beta2): without it,
    those informers would never sync and the operator would not start at all."""
    try:
        found = json.loads(await client.request("GET", "/apis/kueue.x-k8s.io/v1beta2"))
    except ApiError as error:
        if error.not_found:
            return False
        raise
    served = {r.get("name") for r in found.get("resources") or []}
    return {LOCAL_QUEUES.plural, KUEUE_WORKLOADS.plural, CLUSTER_QUEUES.plural} <= served


async def missing_priority_classes(client: KubeClient) -> list[str]:
    """The WorkloadPriorityClasses idle servers yield by that are not there, or that the
    operator may not read (the chart makes them, and grants that): a pod naming a missing one
    would never be admitted."""
    missing = []
    for name in (ACTIVE_PRIORITY, IDLE_PRIORITY):
        try:
            await client.get(WORKLOAD_PRIORITY_CLASSES, name)
        except ApiError as error:
            if not (error.not_found or error.status == HTTPStatus.FORBIDDEN):
                raise
            missing.append(name)
    return missing
