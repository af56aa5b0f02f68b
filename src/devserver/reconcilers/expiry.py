"""The expiry reconciler: stop a dev server at its deadline or when idle, warn first, never poll.

For each running DevServer it computes the next stop (`api.lifecycle.next_stop`): its deadline
(time-to-live, expiration time, or the operator's maximum lifetime) or, with `autoShutdown` and
an `idleTimeout`, the moment idleness reaches the timeout according to the in-pod agent's Lease.
It asks to be woken at the next moment that matters — a warning lead time or the stop itself —
with requeue-after; 1,000 servers with staggered deadlines cost one reconcile each per moment,
not a loop. Lease changes wake it too (a server turning idle, or active again).

- At a lead time: a Warning Event (ExpiringSoon or IdleSoon) with the exact stop time and what
  to do, once per deadline (the `warned` annotation records it, keyed by the deadline, so an
  extension or new activity re-arms it), and the same text as the pod's `devservers.io/notice`
  annotation, which the agent shows in every open terminal.
- At the stop: `spec.stopped` with reason Expired or Idle; the workload scales to zero, the home
  volume stays; an Event. `devctl start` undoes it.
- Stopped longer than `--stopped-retention` (off by default): the DevServer is deleted and its
  home volume kept; a server whose home would go with it (retainHomeOnDelete false) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.lifecycle import (
    IDLE,
    NextStop,
    combined_activity,
    next_stop,
    start_pending,
    warned,
    warned_value,
)
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import (
    CACHE_NAME_LABEL,
    NOTICE,
    RETENTION,
    STOP_AT,
    STOP_REASON,
    WARNED,
)
from devserver.api.resources import (
    DEVSERVERS,
    LEASES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    STATEFULSETS,
)
from devserver.client import ApiError, KubeClient
from devserver.client.events import EventType, record_event
from devserver.controller import Controller, Result
from devserver.controller.predicates import spec_or_annotations_changed
from devserver.informers import Change, Informer, InformerFactory, Notification
from devserver.reconcilers.devserver.activity_agent import idle_report_changed, lease_names
from devserver.reconcilers.devserver.fleet_metrics import STOP_WARNINGS
from devserver.reconcilers.lifecycle_config import LifecycleConfig, lead_label
from devserver.reconcilers.naming import NAME_INDEX, by_devserver_name, home_claims_text

PENDING_START_GRACE = timedelta(seconds=60)
MAX_STOP_CONFLICTS = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"  # an expirationTime may have an offset


def warning_text(name: str, stop: NextStop, now: datetime) -> str:
    minutes = max(1, round((stop.when - now).total_seconds() / 60))
    if stop.reason == IDLE:
        return (
            f"{name} has been idle and stops at {_stamp(stop.when)} (in about {minutes} min) "
            "unless it is used: a session, a running process or CPU/GPU load keeps it"
        )
    return (
        f"{name} stops at {_stamp(stop.when)} (in about {minutes} min); keep it with "
        f"`devctl extend {name} --time 1h`"
    )


@dataclass
class ExpiryReconciler:
    client: KubeClient
    devservers: Informer[DevServer]
    config: LifecycleConfig
    leases: Informer[KubeObject] | None = None
    pods: Informer[KubeObject] | None = None
    now: Callable[[], datetime] = field(default=utc_now)
    # when a start was first seen that the status has not recorded yet (see `_run_start`)
    _pending: dict[ObjectKey, datetime] = field(default_factory=dict)
    _conflicts: dict[ObjectKey, int] = field(default_factory=dict)  # stops refused with 409

    async def reconcile(self, key: ObjectKey) -> Result | None:
        ds = self.devservers.store.get(key)
        if ds is None or ds.metadata.deletion_timestamp:
            self._pending.pop(key, None)
            self._conflicts.pop(key, None)
            return None
        if ds.spec.stopped:
            self._pending.pop(key, None)
            return await self._retention(ds)
        ds, wait = self._run_start(ds)
        if wait is not None:
            return wait
        activity = (
            combined_activity(
                [self.leases.store.get(ObjectKey(key.namespace, n)) for n in lease_names(ds)]
            )
            if self.leases
            else None
        )
        now = self.now()
        stop = next_stop(ds, activity, self.config.max_lifetime, now)
        if stop is None:
            return None
        name = ds.metadata.name
        if now >= stop.when:
            # only the version this decision was made on: an extend, a start or a new report
            # that raced with it makes this a 409, and the next reconcile decides again — but
            # not forever: a user who keeps writing the object (an annotation every few ms)
            # must not starve the stop, so after a few conflicts it is sent unconditionally
            conflicts = self._conflicts.get(key, 0)
            metadata: dict[str, Any] = {"annotations": {STOP_REASON: stop.reason, WARNED: None}}
            if conflicts < MAX_STOP_CONFLICTS:
                metadata["resourceVersion"] = ds.metadata.resource_version
            patch = {"metadata": metadata, "spec": {"stopped": True}}
            try:
                await self.client.patch(DEVSERVERS, name, patch, key.namespace)
            except ApiError as error:
                if error.status == 409:
                    self._conflicts[key] = conflicts + 1
                    return Result(requeue_after=0.2)
                raise
            self._conflicts.pop(key, None)
            what = "was idle until" if stop.reason == IDLE else "reached its deadline"
            await record_event(
                self.client,
                DEVSERVERS,
                ds,
                EventType.NORMAL,
                stop.reason,
                f"stopped: it {what} {_stamp(stop.when)}; the home volume is kept — "
                f"`devctl start {name}` brings it back",
            )
            return None
        given = warned(ds, stop.when)
        due = [
            lead
            for lead in self.config.warn_before
            if now >= stop.when - lead and lead_label(lead) not in given
        ]
        if due:
            text = warning_text(name, stop, now)
            reason = "IdleSoon" if stop.reason == IDLE else "ExpiringSoon"
            await record_event(self.client, DEVSERVERS, ds, EventType.WARNING, reason, text)
            given |= {lead_label(lead) for lead in due}
            patch = {"metadata": {"annotations": {WARNED: warned_value(given, stop.when)}}}
            await self.client.patch(DEVSERVERS, name, patch, key.namespace)
            STOP_WARNINGS.labels(reason="idle" if stop.reason == IDLE else "expiring").inc()
            await self._notify_pods(key, text, stop.when)
        moments = [stop.when] + [
            stop.when - lead
            for lead in self.config.warn_before
            if lead_label(lead) not in given and stop.when - lead > now
        ]
        return Result(requeue_after=max(0.05, (min(moments) - now).total_seconds()))

    def _run_start(self, ds: DevServer) -> tuple[DevServer, Result | None]:
        """A run's start is what the DevServer reconciler records in the status; until it has
        (a start just made, or a server from an older operator) the previous run's start would
        stop the new run at once. Wait for it, but not forever — a status that is never
        written must not keep GPUs: after a minute the run counts from when the start was
        first seen here."""
        key = ds.key
        if not start_pending(ds):
            self._pending.pop(key, None)
            return ds, None
        now = self.now()
        first = self._pending.setdefault(key, now)
        if now - first < PENDING_START_GRACE:
            return ds, Result(requeue_after=(first + PENDING_START_GRACE - now).total_seconds())
        assert ds.status is not None  # start_pending implies a status
        status = ds.status.model_copy(update={"last_start": first, "stopped_at": None})
        return ds.model_copy(update={"status": status}), None

    async def _retention(self, ds: DevServer) -> Result | None:
        """Delete a server stopped longer than the retention, never its home volume."""
        retention = self.config.stopped_retention
        stopped_at = ds.status.stopped_at if ds.status else None
        if retention is None or stopped_at is None:
            return None
        now = self.now()
        if now < stopped_at + retention:
            return Result(requeue_after=(stopped_at + retention - now).total_seconds())
        name, ns = ds.metadata.name, ds.metadata.namespace
        if ds.spec.retain_home_on_delete and await self._home_owned_by(ds):
            # retention was just turned on and the home still names this server as its owner:
            # deleting now would take it with it; the DevServer reconciler drops that reference
            return Result(requeue_after=30)
        if not ds.spec.retain_home_on_delete:
            # deleting it would take the home volume with it: that is the user's call, not ours
            if ds.metadata.annotations.get(RETENTION) != "kept":
                await record_event(
                    self.client,
                    DEVSERVERS,
                    ds,
                    EventType.WARNING,
                    "RetentionSkipped",
                    f"stopped since {_stamp(stopped_at)}, past the retention period, but kept: "
                    "retainHomeOnDelete is false, so deleting it would delete its home volume; "
                    f"`devctl delete {name}` if you no longer need it",
                )
                patch = {"metadata": {"annotations": {RETENTION: "kept"}}}
                await self.client.patch(DEVSERVERS, name, patch, ns)
            return None
        await record_event(
            self.client,
            DEVSERVERS,
            ds,
            EventType.NORMAL,
            "RetentionExpired",
            f"deleted after being stopped since {_stamp(stopped_at)}; its home volume "
            f"({home_claims_text(ds)}) is kept — `devctl create {name} …` with the same name "
            "mounts it again",
        )
        try:
            await self.client.delete(
                DEVSERVERS,
                name,
                ns,
                uid=ds.metadata.uid,
                resource_version=ds.metadata.resource_version,
            )
        except ApiError as error:
            if error.status == 409:
                return Result(requeue_after=1)  # it changed meanwhile: decide again
            if error.status != 404:
                raise
        return None

    async def _home_owned_by(self, ds: DevServer) -> bool:
        """Would deleting the server take a home with it? Read live, not from a cache: this
        guards a delete. A home goes with it when a claim of the server (its `<name>-home`, or
        a rank's `home-<name>-<i>`) has an owner — the server or its StatefulSet — or the
        StatefulSet still says its claims are deleted with it."""
        ns, name = ds.metadata.namespace, ds.metadata.name
        claims = await self.client.list_page(
            PERSISTENT_VOLUME_CLAIMS, ns, label_selector=f"{CACHE_NAME_LABEL}={name}"
        )
        if any(claim.metadata.owner_references for claim in claims.items):
            return True
        try:
            statefulset = await self.client.get(STATEFULSETS, name, ns)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        policy = (statefulset.extra.get("spec") or {}).get(
            "persistentVolumeClaimRetentionPolicy"
        ) or {}
        return bool(policy.get("whenDeleted") == "Delete")

    async def _notify_pods(self, key: ObjectKey, text: str, when: datetime) -> None:
        """The agent in the pod shows the notice in every open terminal (downward API)."""
        if self.pods is None:
            return
        for pod in self.pods.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}"):
            if pod.metadata.deletion_timestamp:
                continue
            stop_at = f"{when.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            patch = {"metadata": {"annotations": {NOTICE: text, STOP_AT: stop_at}}}
            try:
                await self.client.patch(PODS, pod.metadata.name, patch, key.namespace)
            except ApiError as error:
                if error.status != 404:
                    raise


def setup(
    informers: InformerFactory, client: KubeClient, lifecycle: LifecycleConfig | None = None
) -> Controller:
    devservers = informers.informer(DEVSERVERS)
    leases = informers.informer(LEASES, label_selector=CACHE_NAME_LABEL)
    pods = informers.informer(
        PODS, label_selector=CACHE_NAME_LABEL, indexers={NAME_INDEX: by_devserver_name}
    )
    reconciler = ExpiryReconciler(
        client, devservers, lifecycle or LifecycleConfig(), leases=leases, pods=pods
    )
    controller = Controller("expiry", reconciler, workers=2)
    controller.watch(devservers, lifecycle_inputs_changed)
    controller.reads(pods)

    def by_label(obj: KubeObject) -> list[ObjectKey]:
        name = obj.metadata.labels.get(CACHE_NAME_LABEL)
        return [ObjectKey(obj.metadata.namespace, name)] if name else []

    controller.watch_mapped(leases, by_label, idle_report_changed)
    return controller


def lifecycle_inputs_changed(note: Notification[Any]) -> bool:
    """What the expiry reconciler reads: spec, annotations, `status.stoppedAt` (retention) and
    `status.lastStart` (where the lifetime counts from).
    Other status writes — most of a server's updates — would only cost a no-op reconcile."""
    old, new = note.old, note.obj
    if note.change is not Change.UPDATED or old is None or old is new:
        return True  # adds, deletes and resyncs
    stopped = (old.status.stopped_at if old.status else None) != (
        new.status.stopped_at if new.status else None
    )
    started = (old.status.last_start if old.status else None) != (
        new.status.last_start if new.status else None
    )
    return stopped or started or spec_or_annotations_changed(note)
