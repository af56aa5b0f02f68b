"""One DevServer reconcile for every mode: fetch → decide → apply children → status → accounting.

Level-based and cache-first: everything is read from shared informers; a write happens only
when the live object lacks part of our intent (compare-then-apply), so a converged DevServer
costs no API request. The steps, the same for a standalone and a distributed server:

1. fetch: the server from the cache; deleted, held in deletion, orphaning its children
   (`--cascade=orphan`) or unreadable, it holds no GPU: its workload goes to zero replicas
   (`_gone`) and the reconcile ends.
2. decide: a stopped server's workload is scaled to zero *first*, whatever else fails, needing
   no flavor; then the flavor (`flavor.flavor_problem`). A missing or invalid flavor never
   touches a running server: the workload keeps its last good flavor and the status says what
   to do.
3. apply children: the mode's, in its order, each an attempt (`children.Attempts`): a refusal
   of one never hides the others.
4. status: what the mode makes of what exists, written only when it changed (`StatusWriter`),
   with an Event per transition a user cares about — and only then does a refused child fail
   the reconcile (retried with backoff, the user already told).
5. accounting: its phase, the GPUs it holds and whether they are used, its stop
   (`fleet_metrics`).

A mode (`ServerMode`: `standalone.Standalone`, `distributed.Distributed`) says only what differs:
its workload, its children, its status, its Events, the GPUs it counts. Each mode is its own
controller ("devserver", "distributed"), wired by `mode_controller()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from devserver.api.devserver import DevServer, DevServerStatus, Mode
from devserver.api.flavor import DevServerFlavor
from devserver.api.lifecycle import EXPIRED, IDLE, PREEMPTED, USER_REMOVED, timeline
from devserver.api.meta import KubeObject, ObjectKey, shared_key
from devserver.api.names import (
    CACHE_NAME_LABEL,
    FIELD_MANAGER,
    PREEMPTED_AT,
    STOP_REASON,
    USER_QUOTA,
    user_namespace,
)
from devserver.api.resources import (
    DEVSERVERS,
    Resource,
)
from devserver.client import ApiError, KubeClient
from devserver.client.events import EventType, record_event
from devserver.controller import Controller, Result, TerminalError
from devserver.controller.applied import apply_if_changed
from devserver.controller.own_writes import OwnWrites
from devserver.controller.predicates import generation_changed
from devserver.informers import NAMESPACE_INDEX, InformerFactory, Notification
from devserver.reconcilers.children import Attempts
from devserver.reconcilers.devserver.activity_agent import idle_report_changed
from devserver.reconcilers.devserver.caches import MODE_INDEX, Caches
from devserver.reconcilers.devserver.fleet_metrics import (
    EXTENSIONS,
    STOPS,
    UNKNOWN_FLAVOR,
    FleetMetrics,
    ServerReport,
    shared_fleet_metrics,
    waiting_since,
)
from devserver.reconcilers.devserver.resize import resize_problem
from devserver.reconcilers.devserver.running_template import (
    adopted_selector,
    keep_running_template,
    scale_to_zero,
)
from devserver.reconcilers.devserver.status import Observed, on_nodes
from devserver.reconcilers.flavor import FLAVOR_INDEX, flavor_problem, gpu_count
from devserver.reconcilers.kueue import (
    Evictions,
    KueueConfig,
    admitted_at,
    classed,
    eviction,
    gang_of,
    gated,
    mark_pods,
    owners,
    queued_message,
    waiting,
    wanted_priority,
    yields_in,
)
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from devserver.reconcilers.status_writer import StatusWriter

QUEUE_REFRESH = 60.0  # seconds: how often a queued server's place in the queue is looked at
NOT_YET_RETRY = 1.0  # seconds: a child waiting for another controller (`children.NotYet`)
# why a server stopped, as `devserver_stops_total` says it (the annotation's words are CamelCase)
STOP_LABELS = {
    EXPIRED: "expired",
    IDLE: "idle",
    USER_REMOVED: "user_removed",
    PREEMPTED: "preempted",
}

Child = tuple[str, Callable[[], Awaitable[object]]]
"""A child: what a refusal calls it, and the write that makes it right. Started in order, each
when its turn comes, so it reads the caches after the writes before it."""


@dataclass
class ServerMode(ABC):
    """What one mode of DevServer says; the reconcile around it is `DevServerReconciler`'s."""

    name: ClassVar[str]  # its controller's, in metrics and logs
    workers: ClassVar[int]
    workload: ClassVar[Resource[KubeObject]]  # scaled to zero when stopped or gone
    woken_by: ClassVar[Mode | None] = None  # the servers of one mode wake it; None: every one

    client: KubeClient
    caches: Caches
    kueue: KueueConfig = field(default_factory=KueueConfig)
    # since when a server's child has been waiting for another controller (`NotYet`)
    waiting_since: dict[ObjectKey, float] = field(default_factory=dict)
    # the version of our last write of each workload, until the cache shows it (`OwnWrites`)
    written: OwnWrites = field(default_factory=OwnWrites)

    def __init_subclass__(
        cls, *, name: str, workers: int, workload: Resource[KubeObject], **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.workers, cls.workload = name, workers, workload

    @abstractmethod
    def owns(self, ds: DevServer) -> bool:
        """Whether this mode reconciles `ds` (a deleted server is every mode's to scale down)."""

    def wakes(self, ds: DevServer) -> bool:
        """Whether a change of `ds`, or of its flavor or namespace, is worth a reconcile."""
        return self.woken_by is None or ds.spec.mode is self.woken_by

    @abstractmethod
    def children(self, ds: DevServer, flavor: DevServerFlavor | None) -> list[Child]:
        """Its objects, in order; `flavor` is None when it is missing or invalid (the running
        workload is then left as it is)."""

    @abstractmethod
    def status(self, ds: DevServer, seen: Observed) -> dict[str, Any]: ...

    @abstractmethod
    def gpus(
        self, ds: DevServer, flavor: DevServerFlavor | None, status: dict[str, Any], placed: int
    ) -> tuple[str, int]:
        """(the flavor they count under, the GPUs held) with `placed` pods on nodes."""

    @abstractmethod
    async def announce(self, ds: DevServer, status: dict[str, Any]) -> None:
        """Events for the transitions from `ds.status` to `status` a user cares about."""

    async def gone(self, key: ObjectKey) -> None:
        """What else a deleted server needs, once its workload is at zero."""
        return None  # nothing, unless the mode says

    async def ensure(
        self, resource: Resource[Any], intent: dict[str, Any], live: KubeObject | None
    ) -> KubeObject | None:
        """Apply `intent` unless `live` has it already; the API server's answer, if sent."""
        return await apply_if_changed(
            self.client, resource, intent, live, field_manager=FIELD_MANAGER
        )

    async def ensure_workload(self, ds: DevServer, intent: dict[str, Any]) -> None:
        """The workload, on the selector and running template it has. One the cache does not
        hold (its labels edited by hand) is read from the API server when the apply is refused,
        so a stop still reaches it instead of failing on a selector it cannot change."""
        live = self.caches.workloads.store.get(ds.key)
        try:
            await self._apply_workload(ds, keep_running_template(intent, live, ds), live)
        except TerminalError:
            if live is not None:
                raise
            live = await self.read_live(self.workload, ds)
            if live is None:
                raise
            await self._apply_workload(ds, keep_running_template(intent, live, ds), live)

    async def _apply_workload(
        self, ds: DevServer, intent: dict[str, Any], live: KubeObject | None
    ) -> None:
        answer = await self.ensure(self.workload, intent, live)
        self.written.wrote(ds.key, answer, stops=intent["spec"].get("replicas") == 0)

    async def scale_down(self, live: KubeObject | None, *, behind: bool = False) -> None:
        """The workload to zero replicas (`scale_to_zero`), its new version kept in `written`.
        With the cache `behind` our last write, sent whatever the cache shows, unless that
        write was a stop already (then nothing is: it is on its way)."""
        if live is None or (behind and self.written.stopping(live.key)):
            return
        scaled = await scale_to_zero(self.client, self.workload, live, stale=behind)
        self.written.wrote(live.key, scaled, stops=True)

    async def read_live(self, resource: Resource[KubeObject], ds: DevServer) -> KubeObject | None:
        try:
            return await self.client.get(resource, ds.metadata.name, ds.metadata.namespace)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    def resize_check(
        self,
        ds: DevServer,
        old: DevServerFlavor | None,
        new: DevServerFlavor,
        pods: tuple[int, int] | None = None,
    ) -> str | None:
        """Why moving running `ds` from `old` to `new` (`pods` ranks before and after) must
        wait: the user's quota, the nodes, the queue (`resize`)."""
        namespace = ds.metadata.namespace
        quota = self.caches.quotas.store.get(ObjectKey(namespace, USER_QUOTA))
        cluster_queue, name, admitted = None, "", 0
        if self.caches.queue is not None and self.kueue.enabled:
            name = self.kueue.cluster_queue_of(self.caches.team_of(namespace))
            cluster_queue = self.caches.queue.cluster_queues.store.get(ObjectKey("", name))
            admitted = self.caches.queue.gpus_admitted(name)
        nodes = self.caches.nodes.store.objects()
        return resize_problem(old, new, quota, nodes, cluster_queue, name, pods, admitted)

    def workload_selector(self, ds: DevServer) -> bool:
        """Whether the workload (cached) selects by the keys of before 0.2 (api/names.py)."""
        live = self.caches.workloads.store.get(ds.key)
        return live is not None and adopted_selector(
            (live.extra.get("spec") or {}).get("selector"), ds
        )

    async def event(self, ds: DevServer, kind: EventType, reason: str, message: str) -> None:
        await record_event(self.client, DEVSERVERS, ds, kind, reason, message)

    async def announce_stop(self, ds: DevServer, status: dict[str, Any], message: str) -> None:
        """A Normal Event `Stopped` when `status` stops `ds`, unless the expiry reconciler
        stopped it (it announces its own stops)."""
        before = ds.status
        if status.get("phase") != "Stopped" or before is None or before.phase == "Stopped":
            return
        if ds.metadata.annotations.get(STOP_REASON, "") not in (EXPIRED, IDLE):
            await self.event(ds, EventType.NORMAL, "Stopped", message)


@dataclass
class DevServerReconciler:
    client: KubeClient
    caches: Caches
    mode: ServerMode
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    fleet: FleetMetrics = field(default_factory=FleetMetrics)
    evictions: Evictions = field(default_factory=Evictions)
    queue_members: dict[str, set[str]] | None = None  # ClusterQueue: its users' namespaces
    writer: StatusWriter[DevServer] = field(init=False)

    def __post_init__(self) -> None:
        self.writer = StatusWriter(self.client, DEVSERVERS, DevServerStatus)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        ds = self.caches.devservers.store.get(key)
        if ds is None or ds.metadata.deletion_timestamp:
            self.writer.forget(key)
            self.evictions.forget(key)
            self.mode.waiting_since.pop(key, None)
            self.fleet.report(key, None)
            await self._gone(key)
            return None  # owned children go with it; a retained home volume stays
        if not self.mode.owns(ds):
            return None  # the other mode's
        evicted = self.evictions.pending(ds, self.caches.made_for(self.caches.pods, key))
        if evicted is not None and not ds.spec.stopped:
            await self._stop_preempted(ds, evicted.message, yielded=evicted.idle)
            self.evictions.forget(key)  # once stopped: a failed patch is retried with it
            return None  # the stop wakes it again: the workload then goes to zero
        tried = Attempts()
        workload = self.mode.workload
        live = self.caches.workloads.store.get(key)
        # the cache may still show the workload as it was before a write of an earlier
        # reconcile: what is decided from it would undo that write (`OwnWrites`)
        behind = self.mode.written.behind(key, live)
        if ds.spec.stopped:  # first, whatever else fails: a stopped server holds no GPU
            await tried.attempt(workload.kind, self.mode.scale_down(live, behind=behind))
        if behind:  # the rest once the cache has our write: its watch event wakes us
            tried.raise_if_any()
            return Result(requeue_after=NOT_YET_RETRY)
        flavor = self.caches.flavors.store.get(ObjectKey("", ds.spec.flavor))
        problem = flavor_problem(ds, flavor)
        for what, write in self.mode.children(ds, flavor if problem is None else None):
            await tried.attempt(what, write())
        now = datetime.now(UTC).replace(microsecond=0)
        recorded = self.writer.latest(ds)
        billed = self._running_flavor(recorded)
        pods = self.caches.made_for(self.caches.pods, key)
        activity = self.caches.agent.activity(recorded)
        # idle servers yield: only pods that have a class are marked (a standalone server's)
        after = self.mode.kueue.idle_yield_after if self.mode.kueue.yields else None
        after = after if after is not None and classed(pods) else None
        if after is not None and not ds.spec.stopped:
            marking = mark_pods(self.client, pods, wanted_priority(activity, now, after))
            await tried.attempt("idle mark", marking)
        times = timeline(recorded, pods, activity, self.lifecycle.max_lifetime, now)
        ds = times.ds  # the run counts from its start
        seen = Observed(
            flavor_problem=problem,
            workload=self.caches.workloads.store.get(key),
            pods=pods,
            service=self.caches.services.store.get(key),
            timeline=times,
            activity=activity,
            now=now,
            price_per_hour=billed.spec.price_per_hour if billed is not None else None,
            gpus_per_pod=gpu_count(billed),
            applied=tried.condition(ds.metadata.generation),
            queued=self._queued(ds, pods),
            webhook_down=tried.webhook_down(),
        )
        status = self.mode.status(ds, seen)
        before = self.fleet.report_of(key)
        report = self._report(ds, flavor, seen, status, billed)
        self.fleet.report(key, report)
        was = recorded.status
        stopping = status.get("phase") == "Stopped" and (was is None or was.phase != "Stopped")
        extended = status.get("lastExtension") not in (None, was.last_extension if was else None)
        await self.writer.write(recorded, status, self.mode.announce)
        # counted once written: a refused write is retried, not counted twice
        if stopping:
            self._count_stop(ds, before, times.deadline, now)
        if extended:
            EXTENSIONS.inc()
        tried.raise_if_any()  # after the status: retried with backoff, the user already told
        if tried.waiting:
            return Result(requeue_after=NOT_YET_RETRY)  # another controller finishes its part
        if seen.queued is not None or parked(status):
            # its place moves as others are admitted; a parked change may fit now
            return Result(requeue_after=QUEUE_REFRESH)
        later = []
        if activity is not None and activity.valid_until is not None and activity.fresh(now):
            # nothing wakes us when the agent falls silent: look again once its report lapses
            # (active GPU time must not run on); a reconcile, no write unless something changed
            later.append((activity.valid_until - now).total_seconds() + 1)
        if after is not None and (turn := yields_in(activity, now, after)) is not None:
            later.append(turn + 1)  # idle long enough then: its pods are marked to yield
        return Result(requeue_after=min(later)) if later else None

    def _queued(self, ds: DevServer, pods: list[KubeObject]) -> str | None:
        """What Kueue says of the pod it holds back, and its place in the queue; None when
        Kueue holds no pod of this server."""
        held = [p for p in pods if not p.metadata.deletion_timestamp and gated(p)]
        if not held:
            return None
        queue = self.caches.queue
        workload = queue.workload_of(held[0]) if queue is not None else None
        position = None
        if queue is not None and workload is not None and waiting(workload):
            position = queue.position(workload, self._same_queue(ds.metadata.namespace))
        return queued_message(workload, position)

    def _same_queue(self, namespace: str) -> set[str]:
        """The user namespaces whose LocalQueue points at the ClusterQueue this one's does
        (worked out once for all users until one of them changes)."""
        kueue = self.mode.kueue
        if self.queue_members is None:
            members: dict[str, set[str]] = {}
            for u in self.caches.users.store.objects():
                queue = kueue.cluster_queue_of(u.spec.team or "")
                members.setdefault(queue, set()).add(user_namespace(u.metadata.name))
            self.queue_members = members
        mine = kueue.cluster_queue_of(self.caches.team_of(namespace))
        return {namespace} | self.queue_members.get(mine, set())

    def _admitted_at(self, pod: KubeObject) -> datetime | None:
        queue = self.caches.queue
        return admitted_at(queue.workload_of(pod)) if queue is not None else None

    async def _stop_preempted(self, ds: DevServer, why: str, *, yielded: bool = False) -> None:
        """Kueue evicted its pod (preempted, to give its team's quota back, or as an idle server
        yielding to a queued one): the server stops instead of queueing again unseen, its home
        kept; the user is told why, in Kueue's words."""
        patch = {
            "metadata": {"annotations": {STOP_REASON: PREEMPTED, PREEMPTED_AT: _stamp()}},
            "spec": {"stopped": True},
        }
        try:
            await self.client.patch(DEVSERVERS, ds.metadata.name, patch, ds.metadata.namespace)
        except ApiError as error:
            if error.not_found:
                return
            raise
        cause = "it was idle and a queued server needed its GPUs; " if yielded else ""
        message = (
            f"stopped, home volume kept: {cause}Kueue evicted it ({why}); "
            f"`devctl start {ds.metadata.name}` queues it again"
        )
        await self.mode.event(ds, EventType.WARNING, PREEMPTED, message)

    def _running_flavor(self, ds: DevServer) -> DevServerFlavor | None:
        """The flavor its pods run with (billed, counted): the one last applied, not one asked
        for that is missing or not applied yet."""
        applied = ds.status.applied_flavor if ds.status else None
        return self.caches.flavors.store.get(ObjectKey("", applied or ds.spec.flavor))

    async def _gone(self, key: ObjectKey) -> None:
        """A server deleted (or held in deletion by a finalizer, or orphaning its children with
        `--cascade=orphan`, or unreadable) holds no GPU: its workload goes to zero replicas
        first."""
        live = self.caches.workloads.store.get(key)
        await self.mode.scale_down(live, behind=self.mode.written.behind(key, live))
        self.mode.written.forget(key)
        await self.mode.gone(key)

    def _report(
        self,
        ds: DevServer,
        flavor: DevServerFlavor | None,
        seen: Observed,
        status: dict[str, Any],
        billed: DevServerFlavor | None,
    ) -> ServerReport:
        placed = on_nodes(seen.pods)
        activity, now = seen.activity, seen.now or datetime.now(UTC)
        active = activity is not None and activity.fresh(now) and activity.idle_since is None
        name, gpus = self.mode.gpus(ds, flavor, status, placed)
        if self.caches.flavors.store.get(ObjectKey("", name)) is None:
            name = UNKNOWN_FLAVOR  # a name a user typed is no label of ours
        price = (billed.spec.price_per_hour or 0.0) * placed if billed is not None else 0.0
        return ServerReport(
            name,
            gpus,
            placed > 0,
            placed > 0 and active,
            self.caches.team_of(ds.metadata.namespace),
            str(status.get("phase") or ""),
            None
            if ds.spec.stopped
            else waiting_since(seen.pods, now, self.fleet.clock(), self._admitted_at),
            price,
        )

    def _count_stop(
        self, ds: DevServer, before: ServerReport | None, deadline: datetime | None, now: datetime
    ) -> None:
        """A stop, by why; an idle stop also gives back the GPU-hours it would have held."""
        reason = STOP_LABELS.get(ds.metadata.annotations.get(STOP_REASON, ""), "user")
        STOPS.labels(reason=reason).inc()
        if reason == "idle" and before is not None and before.gpus and deadline is not None:
            left = max(0.0, (deadline - now).total_seconds()) / 3600
            self.fleet.reclaimed(before.flavor, before.team, before.gpus * left)


def mode_controller(
    kind: type[ServerMode],
    informers: InformerFactory,
    client: KubeClient,
    lifecycle: LifecycleConfig | None,
    kueue: KueueConfig | None = None,
) -> Controller:
    """The mode's controller: its servers, and every object of theirs, wake it."""
    kueue = kueue or KueueConfig()
    caches = Caches.shared(informers, kind.workload, kueue=kueue.enabled)
    mode = kind(client, caches, kueue)
    reconciler = DevServerReconciler(
        client, caches, mode, lifecycle or LifecycleConfig(), shared_fleet_metrics()
    )
    controller = Controller(mode.name, reconciler, workers=mode.workers)
    devservers = caches.devservers

    def woken(note: Notification[Any]) -> bool:
        return isinstance(note.obj, DevServer) and mode.wakes(note.obj)

    def woken_in(index: str, value: str) -> list[ObjectKey]:
        """The servers under `value` in `index` that this mode wakes for, from the indexes
        alone: the cache of servers is packed, and a flavor may have thousands of them."""
        keys = devservers.store.index_keys(index, value)
        if mode.woken_by is not None:
            keys &= devservers.store.index_keys(MODE_INDEX, mode.woken_by.value)
        return list(keys)

    controller.watch(devservers, woken)
    controller.watch_owned(caches.services, DEVSERVERS)
    controller.reads(caches.nodes, *((caches.queue.cluster_queues,) if caches.queue else ()))

    def by_label(obj: KubeObject) -> list[ObjectKey]:
        name = obj.metadata.labels.get(CACHE_NAME_LABEL)
        return [ObjectKey(obj.metadata.namespace, name)] if name else []

    # by label, not owner: a workload orphaned from its server (`--cascade=orphan`) is found
    controller.watch_mapped(caches.workloads, by_label)
    controller.watch_mapped(caches.claims, by_label)
    controller.watch_mapped(caches.pods, by_label)

    def evicted(note: Notification[Any]) -> None:
        if eviction(note.obj) is None:  # nearly every pod event: no server is decoded for it
            return
        for key in by_label(note.obj):
            ds = devservers.store.get(key)
            if ds is not None and mode.owns(ds):
                reconciler.evictions.note(shared_key(key), note.obj)  # kept

    caches.pods.add_handler(f"{mode.name}-evictions", evicted)
    agent = caches.agent
    for informer in agent.all():
        if informer is agent.leases:  # routine renewals change nothing we show
            controller.watch_mapped(informer, by_label, idle_report_changed)
        elif informer is agent.config_maps:  # one per namespace, for all its servers

            def in_namespace(obj: KubeObject) -> list[ObjectKey]:
                return woken_in(NAMESPACE_INDEX, obj.metadata.namespace)

            controller.watch_mapped(informer, in_namespace)
        else:
            controller.watch_mapped(informer, by_label)

    def users_of(flavor: KubeObject) -> list[ObjectKey]:
        return woken_in(FLAVOR_INDEX, flavor.metadata.name)

    def flavor_changed(note: Notification[Any]) -> bool:
        """A new spec, or a flavor deleted and made again (a relist sees an update with a new
        uid); never a status write: the flavor's count of servers changes with every create,
        and at 10,000 servers each such write woke all 10,000."""
        replaced = note.old is not None and note.old.metadata.uid != note.obj.metadata.uid
        return replaced or generation_changed(note)

    controller.watch_mapped(caches.flavors, users_of, flavor_changed)

    def servers_of(user: KubeObject) -> list[ObjectKey]:
        return woken_in(NAMESPACE_INDEX, user_namespace(user.metadata.name))

    def team_changed(note: Notification[Any]) -> bool:
        """A user's new team labels their servers' GPU-hours from now on."""
        return note.old is None or note.obj.spec.team != note.old.spec.team

    controller.watch_mapped(caches.users, servers_of, team_changed)

    def users_changed(note: Notification[Any]) -> None:
        reconciler.queue_members = None  # who shares a ClusterQueue, worked out again

    caches.users.add_handler(f"{mode.name}-queue-members", users_changed)

    def servers_in(obj: KubeObject) -> list[ObjectKey]:
        return woken_in(NAMESPACE_INDEX, obj.metadata.namespace)

    controller.watch_mapped(caches.quotas, servers_in)  # a parked flavor change may fit now
    if caches.queue is not None:
        pods = caches.pods.store

        def server_of_workload(workload: KubeObject) -> list[ObjectKey]:
            """Its pod's server, or its StatefulSet's (named as the server is), owner or not:
            one left with no owner is the server's to delete (`left_behind`)."""
            of_pods = [
                key
                for found in (pods.get(k) for k in owners(workload, "Pod"))
                if found is not None
                for key in by_label(found)
            ]
            gang = gang_of(workload)
            return of_pods + owners(workload, "StatefulSet") + ([gang] if gang else [])

        controller.watch_mapped(caches.queue.workloads, server_of_workload, queue_changed)
    return controller


def _stamp() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parked(status: dict[str, Any]) -> bool:
    """A flavor change waits (`resize`): looked at again, as nodes and queues change."""
    return any(c["type"] == "Resized" and c["status"] == "False" for c in status["conditions"])


def queue_changed(note: Notification[Any]) -> bool:
    """What Kueue says of a workload changed (its conditions), or its owners (the last one
    gone: `left_behind`), or it came or went."""
    if note.old is None or note.obj is note.old:
        return True
    if note.obj.metadata.owner_references != note.old.metadata.owner_references:
        return True
    status = note.obj.extra.get("status") or {}
    before = note.old.extra.get("status") or {}
    return bool(status.get("conditions") != before.get("conditions"))
