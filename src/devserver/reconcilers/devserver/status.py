"""What every DevServer's status says, whatever its mode (pure; no API calls).

`Observed` is what the reconcile saw; each mode turns it into its phase and Ready condition
(`standalone.observed_status`, `distributed.distributed_status`). The rest is the same for all:
Progressing and FlavorValid (FlavorValid False, with what to do, when the requested flavor is
missing or invalid — the running server is then left as it was, so `appliedFlavor` can differ
from `spec.flavor`), ExpiringSoon once a warning was given, Applied (whether every child was
accepted), and the lifecycle fields: when it stops, since when it is idle, when it stopped,
when it last started, what it has cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from devserver.api.billing import as_status, next_billing
from devserver.api.devserver import DevServer
from devserver.api.lifecycle import (
    EXPIRED,
    IDLE,
    USER_REMOVED,
    Activity,
    NextStop,
    start_to_record,
    warned,
)
from devserver.api.meta import KubeObject
from devserver.api.names import LAST_EXTENSION, STOP_REASON
from devserver.api.schema import Condition, ConditionStatus

IMAGE_PROBLEMS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class Observed:
    flavor_problem: str | None  # one sentence, or None when the requested flavor is usable
    workload: KubeObject | None  # the Deployment or the StatefulSet
    pods: list[KubeObject]
    service: KubeObject | None
    deadline: datetime | None = None  # the deadline, after the operator's cap
    capped: bool = False  # the cap shortened what the spec asked for
    stop: NextStop | None = None  # the earliest stop ahead: the deadline or idleness
    activity: Activity | None = None  # what the in-pod agent last reported
    price_per_hour: float | None = None  # of the flavor it runs with
    now: datetime | None = None  # for billing transitions; the wall clock when unset
    applied: Condition | None = None  # whether every child was accepted (`children.Attempts`)


def pod_condition(pod: KubeObject, kind: str) -> dict[str, Any] | None:
    for condition in (pod.extra.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def waiting_reason(pod: KubeObject) -> tuple[str, str] | None:
    """(reason, message) of a container that waits for an image it cannot pull."""
    for status in (pod.extra.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PROBLEMS:
            return waiting["reason"], waiting.get("message", "")
    return None


def on_nodes(pods: list[KubeObject]) -> int:
    """How many of the pods a node holds (scheduled: their GPUs are taken)."""
    return sum(1 for p in pods if (p.extra.get("spec") or {}).get("nodeName"))


def condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def stopped_reason(ds: DevServer, kept: str) -> tuple[str, str]:
    """(reason, message) of a stopped server: why it stopped, and what it kept."""
    why = ds.metadata.annotations.get(STOP_REASON) or "Stopped"
    said = {
        EXPIRED: "stopped at its deadline",
        IDLE: "stopped after being idle",
        USER_REMOVED: "stopped because its user was removed",
    }.get(why, "stopped")
    return why, f"{said}; {kept}"


def shared_conditions(
    ds: DevServer, seen: Observed, *, ready: bool, waiting: str
) -> tuple[Condition, Condition]:
    """Progressing and FlavorValid, the same in every mode."""
    gen = ds.metadata.generation
    settled = ready or ds.spec.stopped
    progressing = condition(
        "Progressing",
        not ready and seen.flavor_problem is None and not ds.spec.stopped,
        "Done" if settled else "Rolling",
        "nothing in progress" if settled else f"waiting for {waiting}",
        gen,
    )
    flavor_valid = condition(
        "FlavorValid",
        seen.flavor_problem is None,
        "Valid" if seen.flavor_problem is None else "FlavorUnavailable",
        seen.flavor_problem or f"flavor {ds.spec.flavor} is valid",
        gen,
    )
    return progressing, flavor_valid


def closing_conditions(ds: DevServer, seen: Observed) -> list[Condition]:
    """The last conditions in every mode: ExpiringSoon once a warning was given for the stop
    ahead, and Applied."""
    gen = ds.metadata.generation
    closing = []
    if seen.stop is not None and not ds.spec.stopped and warned(ds, seen.stop.when):
        why = "idle; it" if seen.stop.reason == IDLE else "it"
        when = f"{seen.stop.when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        closing.append(
            condition("ExpiringSoon", True, seen.stop.reason, f"{why} stops at {when}", gen)
        )
    if seen.applied is not None:
        closing.append(seen.applied)
    return closing


def lifecycle_fields(
    ds: DevServer, seen: Observed, *, holding: bool, price: float | None
) -> dict[str, Any]:
    """The status fields every mode shares: when it stops, since when it is idle, when it
    stopped, what it has cost (a period per price; `price` for all its pods on nodes)."""
    now = seen.now or datetime.now(UTC).replace(microsecond=0)
    fields: dict[str, Any] = {}
    if seen.stop is not None and not ds.spec.stopped:
        fields["expiresAt"] = _json_time(seen.stop.when)
    activity = seen.activity
    if (
        activity is not None
        and activity.idle_since is not None
        and not ds.spec.stopped
        and activity.fresh(now)
    ):
        fields["idleSince"] = _json_time(activity.idle_since)
    if ds.spec.stopped:
        before = ds.status.stopped_at if ds.status else None
        if before is not None or not seen.pods:  # stopped once no pod holds a node
            fields["stoppedAt"] = _json_time(before or now)
    start = start_to_record(ds, now)
    if start is not None:
        fields["lastStart"] = _json_time(start)
    previous_bill = ds.status.billing if ds.status else None
    if holding or previous_bill is not None:
        bill = next_billing(previous_bill, holding=holding, price=price, now=now)
        fields["billing"] = as_status(bill)
    extension = ds.metadata.annotations.get(LAST_EXTENSION)
    if extension:
        fields["lastExtension"] = extension
    return fields


_TIME = TypeAdapter(datetime)


def _json_time(value: datetime) -> str:
    """Exactly as the status reads back, so a converged server compares equal (no rewrite)."""
    return str(_TIME.dump_python(value, mode="json"))
