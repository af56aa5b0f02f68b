"""What a DevServer's status says, computed from what exists (pure; no API calls).

Phase and conditions mirror reality: Running only when the pod is Ready; Pending with the
scheduler's own words when no node fits, or the API server's when no pod may be created at all
(QuotaExceeded: more GPUs than the user's quota); Degraded when the image cannot be pulled;
FlavorValid False (with what to do) when the requested flavor is missing or invalid — in which
case the running server is left as it was, so `appliedFlavor` can differ from `spec.flavor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from devserver.api.billing import as_status, next_billing
from devserver.api.devserver import DevServer, Phase
from devserver.api.lifecycle import (
    EXPIRED,
    IDLE,
    LAST_EXTENSION,
    STOP_REASON,
    USER_REMOVED,
    Activity,
    NextStop,
    start_to_record,
    warned,
)
from devserver.api.meta import KubeObject
from devserver.api.schema import Condition, ConditionStatus
from devserver.reconcilers.conditions import merge_conditions
from devserver.reconcilers.standalone import FLAVOR_ANNOTATION, SSH_PORT, home_claim_name

IMAGE_PROBLEMS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class Observed:
    flavor_problem: str | None  # one sentence, or None when the requested flavor is usable
    deployment: KubeObject | None
    pods: list[KubeObject]
    service: KubeObject | None
    deadline: datetime | None = None  # the deadline, after the operator's cap
    capped: bool = False  # the cap shortened what the spec asked for
    stop: NextStop | None = None  # the earliest stop ahead: the deadline or idleness
    activity: Activity | None = None  # what the in-pod agent last reported
    price_per_hour: float | None = None  # of the flavor it runs with
    now: datetime | None = None  # for billing transitions; the wall clock when unset
    applied: Condition | None = None  # whether every child was accepted (`children.Attempts`)


def _pod_condition(pod: KubeObject, kind: str) -> dict[str, Any] | None:
    for condition in (pod.extra.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _waiting_reason(pod: KubeObject) -> tuple[str, str] | None:
    for status in (pod.extra.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PROBLEMS:
            return waiting["reason"], waiting.get("message", "")
    return None


def _cond(kind: str, ok: bool, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def observed_status(ds: DevServer, seen: Observed) -> dict[str, Any]:
    gen = ds.metadata.generation
    live = [p for p in seen.pods if not p.metadata.deletion_timestamp]
    ready_pods = [p for p in live if (_pod_condition(p, "Ready") or {}).get("status") == "True"]
    pod = ready_pods[0] if ready_pods else (live[0] if live else None)
    phase, ready, reason, message = Phase.PENDING, False, "Creating", "creating the dev server"
    degraded: tuple[str, str] | None = None
    if ds.spec.stopped:
        phase, (reason, message) = Phase.STOPPED, stopped_reason(ds, "the home volume is kept")
        message += f" — `devctl start {ds.metadata.name}` brings it back"
        ready_pods, pod = [], None
    elif seen.deployment is None and seen.flavor_problem:
        reason, message = "FlavorUnavailable", seen.flavor_problem
    elif ready_pods:
        phase, ready, reason, message = Phase.RUNNING, True, "PodReady", "the dev server is up"
    elif pod is None and (failure := _replica_failure(seen.deployment)) is not None:
        # no pod at all: the ReplicaSet could not create one (quota, admission) — say why
        quota = "exceeded quota" in failure
        reason = "QuotaExceeded" if quota else "PodRefused"
        message = f"the pod cannot be created: {failure}"
    elif pod is not None:
        scheduled = _pod_condition(pod, "PodScheduled") or {}
        image = _waiting_reason(pod)
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            reason, message = "Unschedulable", str(scheduled.get("message", ""))
        elif image is not None:
            degraded = image
            reason, message = image[0], f"the image cannot be pulled: {image[1]}".rstrip(": ")
        else:
            reason, message = "Starting", "the pod is starting"
    applied = (pod.metadata.annotations.get(FLAVOR_ANNOTATION) if pod is not None else None) or (
        _template_flavor(seen.deployment)
    )
    progressing, flavor_valid = shared_conditions(ds, seen, ready=ready, waiting="the pod")
    desired = [
        _cond("Ready", ready, reason, message, gen),
        progressing,
        _cond(
            "Degraded",
            degraded is not None,
            degraded[0] if degraded else "AsExpected",
            message if degraded else "no known problem",
            gen,
        ),
        flavor_valid,
    ]
    if seen.capped and seen.deadline is not None and not ds.spec.stopped:
        desired.append(
            _cond(
                "LifetimeCapped",
                True,
                "MaximumLifetime",
                "the requested deadline is past the platform's maximum lifetime; it stops at "
                f"{seen.deadline.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
                gen,
            )
        )
    if seen.stop is not None and not ds.spec.stopped and warned(ds, seen.stop.when):
        desired.append(_expiring(seen.stop, gen))  # a warning was given for this stop
    if seen.applied is not None:
        desired.append(seen.applied)
    previous = [
        c for c in (ds.status.conditions if ds.status else []) if c.type != "LifetimeCapped"
    ]
    status: dict[str, Any] = {
        "phase": phase.value,
        "conditions": merge_conditions(previous, desired),
        "observedGeneration": gen,
        "homeClaim": home_claim_name(ds),
    }
    if applied:
        status["appliedFlavor"] = applied
    holding = any((p.extra.get("spec") or {}).get("nodeName") for p in seen.pods)
    status |= lifecycle_fields(ds, seen, holding=holding, price=seen.price_per_hour)
    if pod is not None:
        status["podName"] = pod.metadata.name
        started = (pod.extra.get("status") or {}).get("startTime")
        if started and ready:
            status["startedAt"] = started
    if seen.service is not None:
        name = seen.service.metadata.name
        status["serviceName"] = name
        status["sshEndpoint"] = f"{name}.{ds.metadata.namespace}.svc.cluster.local:{SSH_PORT}"
    return status


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
    progressing = _cond(
        "Progressing",
        not ready and seen.flavor_problem is None and not ds.spec.stopped,
        "Done" if settled else "Rolling",
        "nothing in progress" if settled else f"waiting for {waiting}",
        gen,
    )
    flavor_valid = _cond(
        "FlavorValid",
        seen.flavor_problem is None,
        "Valid" if seen.flavor_problem is None else "FlavorUnavailable",
        seen.flavor_problem or f"flavor {ds.spec.flavor} is valid",
        gen,
    )
    return progressing, flavor_valid


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


def _expiring(stop: NextStop, generation: int) -> Condition:
    why = "idle; it" if stop.reason == IDLE else "it"
    return _cond(
        "ExpiringSoon",
        True,
        stop.reason,
        f"{why} stops at {stop.when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        generation,
    )


_TIME = TypeAdapter(datetime)


def _json_time(value: datetime) -> str:
    """Exactly as the status reads back, so a converged server compares equal (no rewrite)."""
    return str(_TIME.dump_python(value, mode="json"))


def _replica_failure(deployment: KubeObject | None) -> str | None:
    if deployment is None:
        return None
    for condition in (deployment.extra.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return str(condition.get("message", "")) or "refused"
    return None


def _template_flavor(deployment: KubeObject | None) -> str | None:
    if deployment is None:
        return None
    template = (deployment.extra.get("spec") or {}).get("template") or {}
    flavor = ((template.get("metadata") or {}).get("annotations") or {}).get(FLAVOR_ANNOTATION)
    return str(flavor) if flavor else None


def current_status(ds: DevServer) -> dict[str, Any]:
    if ds.status is None:
        return {}
    return ds.status.model_dump(by_alias=True, mode="json", exclude_none=True)
