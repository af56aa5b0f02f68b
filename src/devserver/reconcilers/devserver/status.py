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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from devserver.api.billing import Holding, as_status, next_billing, with_idle_stop
from devserver.api.devserver import DevServer, Phase
from devserver.api.lifecycle import (
    EXPIRED,
    IDLE,
    PREEMPTED,
    USER_REMOVED,
    Activity,
    Timeline,
    timeline,
)
from devserver.api.meta import KubeObject
from devserver.api.names import LAST_EXTENSION, STOP_REASON
from devserver.api.schema import Condition, ConditionStatus
from devserver.reconcilers.children import WEBHOOK_DOWN
from devserver.reconcilers.conditions import merge_conditions

IMAGE_PROBLEMS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class Observed:
    flavor_problem: str | None  # one sentence, or None when the requested flavor is usable
    workload: KubeObject | None  # the Deployment or the StatefulSet
    pods: list[KubeObject]
    service: KubeObject | None
    timeline: Timeline | None = None  # start, deadline, next stop; None: read with no cap
    activity: Activity | None = None  # what the in-pod agent last reported
    price_per_hour: float | None = None  # of the flavor it runs with
    gpus_per_pod: int = 0  # of the flavor it runs with
    now: datetime | None = None  # for billing transitions; the wall clock when unset
    applied: Condition | None = None  # whether every child was accepted (`children.Attempts`)
    queued: str | None = None  # Kueue holds its pod back: what it says, and the place in line
    webhook_down: str | None = None  # a child failed: an admission webhook did not answer

    def times(self, ds: DevServer) -> Timeline:
        now = self.now or datetime.now(UTC).replace(microsecond=0)
        return self.timeline or timeline(ds, self.pods, self.activity, None, now)


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
        PREEMPTED: "stopped because Kueue gave its GPUs to a server with a better claim on "
        "the quota (its team's own, reclaimed); a start queues it again",
    }.get(why, "stopped")
    return why, f"{said}; {kept}"


def pod_refused(failure: str) -> tuple[str, str]:
    """(reason, message) when no pod can be created: over the user's quota, or refused by an
    admission webhook that cannot be reached (Kueue's, when Kueue is down)."""
    if "exceeded quota" in failure:
        return "QuotaExceeded", f"the pod cannot be created: {failure}"
    if WEBHOOK_DOWN in failure:
        return (
            "AdmissionUnavailable",
            "the server cannot be created while an admission webhook (Kueue's, if the "
            f"platform queues GPUs) does not answer; it starts once it does: {failure}",
        )
    return "PodRefused", f"the pod cannot be created: {failure}"


@dataclass(frozen=True)
class Verdict:
    """What a mode concludes from what it saw: the phase, and the Ready condition."""

    phase: Phase
    ready: bool
    reason: str
    message: str


def mode_status(
    ds: DevServer,
    seen: Observed,
    verdict: Verdict,
    waiting: str,
    home_claim: str,
    price: float | None,
    gpus: int = 0,
    *,
    between: Sequence[Condition] = (),
    after: Sequence[Condition] = (),
) -> dict[str, Any]:
    """The fields every mode's status has: the verdict's phase; the conditions in order
    (Ready, Progressing, the mode's `between`, FlavorValid, its `after`, ExpiringSoon once
    warned, Applied); observedGeneration; homeClaim; and the lifecycle fields. `waiting` names
    what Progressing waits for; `price` (per hour) and `gpus` are for all the pods on nodes."""
    gen = ds.metadata.generation
    is_ready, reason, message = verdict.ready, verdict.reason, verdict.message
    settled = is_ready or ds.spec.stopped
    desired = [
        condition("Ready", is_ready, reason, message, gen),
        condition(
            "Progressing",
            not is_ready and seen.flavor_problem is None and not ds.spec.stopped,
            "Done" if settled else "Rolling",
            "nothing in progress" if settled else f"waiting for {waiting}",
            gen,
        ),
        *between,
        condition(
            "FlavorValid",
            seen.flavor_problem is None,
            "Valid" if seen.flavor_problem is None else "FlavorUnavailable",
            seen.flavor_problem or f"flavor {ds.spec.flavor} is valid",
            gen,
        ),
        *after,
    ]
    stop = seen.times(ds).stop
    if stop is not None and not ds.spec.stopped and seen.times(ds).warned:
        why = "idle; it" if stop.reason == IDLE else "it"
        when = f"{stop.when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        desired.append(condition("ExpiringSoon", True, stop.reason, f"{why} stops at {when}", gen))
    if seen.applied is not None:
        desired.append(seen.applied)
    status: dict[str, Any] = {
        "phase": verdict.phase.value,
        "conditions": merge_conditions(ds.status.conditions if ds.status else [], desired),
        "observedGeneration": gen,
        "homeClaim": home_claim,
    }
    return status | _lifecycle_fields(ds, seen, price=price, gpus=gpus)


def _lifecycle_fields(
    ds: DevServer, seen: Observed, *, price: float | None, gpus: int
) -> dict[str, Any]:
    """The status fields every mode shares: when it stops, since when it is idle, when it
    stopped, what it has cost and the GPU-seconds it held and used (a period per price, GPU
    count and activity; `price` and `gpus` for all its pods on nodes)."""
    now = seen.now or datetime.now(UTC).replace(microsecond=0)
    fields: dict[str, Any] = {}
    times = seen.times(ds)
    if times.stop is not None and not ds.spec.stopped:
        fields["expiresAt"] = _json_time(times.stop.when)
    activity = seen.activity
    if (
        activity is not None
        and activity.idle_since is not None
        and not ds.spec.stopped
        and activity.fresh(now)
    ):
        fields["idleSince"] = _json_time(activity.idle_since)
    stopping = False
    if ds.spec.stopped:
        before = ds.status.stopped_at if ds.status else None
        if before is not None or not seen.pods:  # stopped once no pod holds a node
            fields["stoppedAt"] = _json_time(before or now)
            stopping = before is None
    if times.start is not None:
        fields["lastStart"] = _json_time(times.start)
    previous_bill = ds.status.billing if ds.status else None
    holding = None
    if on_nodes(seen.pods) > 0:
        active = activity is not None and activity.fresh(now) and activity.idle_since is None
        holding = Holding(price, gpus, active and gpus > 0)
    if holding is not None or previous_bill is not None:
        bill = next_billing(previous_bill, holding, now=now)
        if stopping and ds.metadata.annotations.get(STOP_REASON) == IDLE:
            bill = with_idle_stop(bill)  # once: the stop's first status has its stoppedAt
        fields["billing"] = as_status(bill)
    extension = ds.metadata.annotations.get(LAST_EXTENSION)
    if extension:
        fields["lastExtension"] = extension
    return fields


_TIME = TypeAdapter(datetime)


def _json_time(value: datetime) -> str:
    """Exactly as the status reads back, so a converged server compares equal (no rewrite)."""
    return str(_TIME.dump_python(value, mode="json"))
