"""When a DevServer stops: its deadline, from the spec and the operator's own status (pure).

- `spec.lifecycle.expirationTime` wins; else `timeToLive` counted from the last start.
- The last start is `status.lastStart`, which only the operator writes (it records the moment
  it sees a stopped server started), else the creation time, which the API server sets. Nothing
  the user can write — annotations, labels, the agent's Lease — moves the start, so the
  operator's cap (start + `--max-lifetime`) always holds.
- Arithmetic saturates: durations and times of any magnitude the API server accepts give a
  time no later than `FAR_FUTURE`, never an OverflowError.
- Annotations carry what is not desired state: why it was stopped, which warnings were given
  (for which deadline: a moved deadline re-arms them), the last extension (who, when, how much).
- Idleness comes from the DevServer's activity Lease, written by the agent in the pod: with
  `autoShutdown` and an `idleTimeout`, a server idle since T stops at T + idleTimeout — but only
  on a *fresh* Lease. A Lease the agent stopped renewing means "unknown", never "idle".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject
from devserver.api.names import ACTIVITY, IDLE_SINCE, STARTED_AT, WARNED

# on the activity Lease, written by the in-pod agent
# on the pod, written by the operator, read by the agent through the downward API

EXPIRED, IDLE, STOPPED_BY_USER = "Expired", "Idle", "StoppedByUser"
USER_REMOVED = "UserRemoved"  # its DevUser was deleted: access revoked, data kept
PREEMPTED = "Preempted"  # Kueue evicted it (e.g. its team's quota was reclaimed): data kept

_PART = re.compile(r"([0-9]+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Saturation points: far beyond any lifetime, far inside what datetime can hold.
LONGEST = timedelta(days=36_500)
FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)
_FAR_PAST = datetime(1, 1, 2, tzinfo=UTC)


def parse_ttl(text: str) -> timedelta:
    """`4h`, `1h30m`, `90s`, `1d` (the CRD's pattern), at most `LONGEST`; ValueError otherwise."""
    if not text or _PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration such as 30m, 4h or 1d")
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(text))
    return seconds_at_most(seconds)


def seconds_at_most(seconds: float) -> timedelta:
    """A duration in seconds, clamped to [0, LONGEST] (timedelta raises past ~2.7 million years)."""
    if seconds != seconds:  # NaN
        return timedelta(0)
    return timedelta(seconds=min(max(seconds, 0.0), LONGEST.total_seconds()))


def later(when: datetime, by: timedelta) -> datetime:
    """`when + by`, saturating at `FAR_FUTURE` (and at the far past) instead of raising."""
    when = _aware(when)
    if by >= timedelta(0) and when >= FAR_FUTURE - by:
        return FAR_FUTURE
    if by < timedelta(0) and when <= _FAR_PAST - by:
        return _FAR_PAST
    return when + by


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def lifetime_start(ds: DevServer) -> datetime | None:
    """The last start as the operator recorded it, else the creation time (both out of the
    user's reach). Before the first status exists, that is the creation time."""
    recorded = ds.status.last_start if ds.status else None
    if recorded is not None:
        return _aware(recorded)
    return ds.metadata.creation_timestamp


def migrated_start(ds: DevServer, now: datetime) -> datetime | None:
    """The first `lastStart` for a server made before the operator recorded starts: the old
    annotation, clamped between creation and now — a value a user wrote into the future can
    give at most one lifetime from the upgrade, never an unbounded one."""
    created = ds.metadata.creation_timestamp
    old = _time(ds.metadata.annotations.get(STARTED_AT))
    if old is None or created is None:
        return created
    return max(created, min(old, now))


def start_pending(ds: DevServer) -> bool:
    """Running (spec) but the status has not recorded this run's start yet: just started (the
    status still says stopped), or made by an operator that did not record starts."""
    status = ds.status
    return (
        not ds.spec.stopped
        and status is not None
        and (status.stopped_at is not None or status.last_start is None)
    )


def start_to_record(
    ds: DevServer, now: datetime, first_pod: datetime | None = None
) -> datetime | None:
    """What `status.lastStart` says after this reconcile: for a start just seen, now — or the
    creation of its first pod, if earlier (the API server sets that; a pod made before an
    operator restart counts from then); the recorded one while it runs; the creation time for
    a new server. `status.stoppedAt` is written only once no pod is left, so a start after it
    follows a real stop: every GPU was given back."""
    status = ds.status
    if status is None:
        return ds.metadata.creation_timestamp
    if ds.spec.stopped:
        return status.last_start or ds.metadata.creation_timestamp
    if status.stopped_at is not None:
        return min(now, first_pod) if first_pod is not None else now
    if status.last_start is not None:
        return status.last_start
    return migrated_start(ds, now)


def with_start(ds: DevServer, now: datetime, first_pod: datetime | None = None) -> DevServer:
    """`ds` as the lifecycle sees it after this reconcile records the start."""
    return _recording(ds, start_to_record(ds, now, first_pod))


def _recording(ds: DevServer, start: datetime | None) -> DevServer:
    if ds.status is None or start == ds.status.last_start:
        return ds
    stopped_at = ds.status.stopped_at if ds.spec.stopped else None
    update = {"last_start": start, "stopped_at": stopped_at}
    return ds.model_copy(update={"status": ds.status.model_copy(update=update)})


def first_created(objects: list[KubeObject]) -> datetime | None:
    """The earliest creation time among `objects` (a server's pods), if any."""
    times = [o.metadata.creation_timestamp for o in objects if o.metadata.creation_timestamp]
    return min(times) if times else None


def requested_deadline(ds: DevServer) -> datetime | None:
    lifecycle = ds.spec.lifecycle
    if lifecycle.expiration_time is not None:
        return _aware(lifecycle.expiration_time)
    start = lifetime_start(ds)
    if lifecycle.time_to_live and start is not None:
        try:
            return later(start, parse_ttl(lifecycle.time_to_live))
        except ValueError:
            return None
    return None


def deadline(ds: DevServer, max_lifetime: timedelta | None) -> tuple[datetime | None, bool]:
    """(when it stops, whether the operator's cap shortened the request)."""
    requested = requested_deadline(ds)
    start = lifetime_start(ds)
    if max_lifetime is None or start is None:
        return requested, False
    cap = later(start, max_lifetime)
    if requested is None or requested > cap:
        return cap, requested is not None
    return requested, False


def _time(text: object) -> datetime | None:
    """RFC 3339 from an annotation or a Lease. A time without a zone is taken as UTC: the
    Lease is writable from inside the pod, and a naive time must not break the arithmetic."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    return _aware(when)


def warned(ds: DevServer, when: datetime | None = None) -> set[str]:
    """The lead times already warned of for the deadline `when` (`labels@deadline`)."""
    labels, _, recorded = ds.metadata.annotations.get(WARNED, "").partition("@")
    if when is not None and _time(recorded) != when:
        return set()  # given for another deadline (extended, idleness moved it, or unknown)
    return {w for w in labels.split(",") if w}


def warned_value(labels: set[str], when: datetime) -> str:
    return f"{','.join(sorted(labels))}@{when.isoformat()}"


@dataclass(frozen=True)
class Activity:
    """What the in-pod agent last reported on the Lease."""

    renewed: datetime | None
    valid_until: datetime | None  # renewed + leaseDurationSeconds
    idle_since: datetime | None  # None while active
    summary: str

    def fresh(self, now: datetime) -> bool:
        return self.valid_until is not None and now <= self.valid_until


def activity_of(lease: KubeObject | None) -> Activity | None:
    if lease is None:
        return None
    spec = lease.extra.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    renewed = _time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    # the Lease is the pod's to write: any number, any time; a lease that claims to be valid
    # for longer than a day is taken as valid for a day (freshness only ever shortens a run)
    seconds = min(duration, 86_400) if isinstance(duration, int) and duration > 0 else 0
    valid = later(renewed, timedelta(seconds=seconds)) if renewed and seconds else None
    annotations = lease.metadata.annotations
    return Activity(
        renewed, valid, _time(annotations.get(IDLE_SINCE)), annotations.get(ACTIVITY, "")
    )


def combined_activity(leases: list[KubeObject | None]) -> Activity | None:
    """A distributed server's activity: idle only when every rank is idle; fresh only while
    every rank reports; a missing Lease means unknown (None)."""
    reports = [activity_of(lease) for lease in leases]
    if not reports or any(r is None for r in reports):
        return None
    known = [r for r in reports if r is not None]
    if len(known) == 1:
        return known[0]
    renewed = [r.renewed for r in known]
    valid = [r.valid_until for r in known]
    idle = [r.idle_since for r in known]
    return Activity(
        None if any(t is None for t in renewed) else min(t for t in renewed if t is not None),
        None if any(t is None for t in valid) else min(t for t in valid if t is not None),
        None if any(t is None for t in idle) else max(t for t in idle if t is not None),
        "; ".join(f"rank {i}: {r.summary}" for i, r in enumerate(known)),
    )


def idle_deadline(ds: DevServer, activity: Activity | None, now: datetime) -> datetime | None:
    """When idleness stops it: on a fresh Lease saying idle, with autoShutdown and a timeout."""
    lifecycle = ds.spec.lifecycle
    if not lifecycle.auto_shutdown or lifecycle.idle_timeout is None or activity is None:
        return None
    if activity.idle_since is None or not activity.fresh(now):
        return None
    since = activity.idle_since
    start = lifetime_start(ds)
    if start is not None and start > since:
        since = start  # a report from before the last start says nothing about this run
    return later(since, seconds_at_most(lifecycle.idle_timeout))


@dataclass(frozen=True)
class NextStop:
    when: datetime
    reason: str  # EXPIRED or IDLE
    capped: bool  # the operator's cap shortened the requested deadline


def next_stop(
    ds: DevServer, activity: Activity | None, max_lifetime: timedelta | None, now: datetime
) -> NextStop | None:
    """The earliest stop ahead: the deadline (after the cap) or the idle deadline."""
    when, capped = deadline(ds, max_lifetime)
    return _earliest(ds, when, capped, activity, now)


def _earliest(
    ds: DevServer, when: datetime | None, capped: bool, activity: Activity | None, now: datetime
) -> NextStop | None:
    idle = idle_deadline(ds, activity, now)
    if idle is not None and (when is None or idle < when):
        return NextStop(idle, IDLE, capped)
    if when is None:
        return None
    return NextStop(when, EXPIRED, capped)


@dataclass(frozen=True)
class Timeline:
    """Where a DevServer stands in its lifecycle at `now`, read once per reconcile."""

    ds: DevServer  # as it stands once this reconcile records its start
    start: datetime | None  # `status.lastStart` after this reconcile
    deadline: datetime | None  # after the operator's cap
    capped: bool  # the cap shortened the requested deadline
    stop: NextStop | None  # the earliest stop ahead: the deadline or idleness
    warned: bool  # a warning was given for that stop


def timeline(
    ds: DevServer,
    pods: list[KubeObject],
    activity: Activity | None,
    max_lifetime: timedelta | None,
    now: datetime,
) -> Timeline:
    """`ds`'s start (counting from its first pod, `pods`), deadline, next stop and warnings."""
    start = start_to_record(ds, now, first_created(pods))
    ds = _recording(ds, start)
    when, capped = deadline(ds, max_lifetime)
    stop = _earliest(ds, when, capped, activity, now)
    return Timeline(ds, start, when, capped, stop, stop is not None and bool(warned(ds, stop.when)))
