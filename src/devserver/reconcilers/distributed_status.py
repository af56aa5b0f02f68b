"""What a distributed DevServer's status says, from its StatefulSet and pods (pure).

Per rank: pod, node, ready, restarts, its home volume and why it is not ready. Overall: Running
only when every rank is ready (a job needs all of them), with `readyRanks` counting; Pending with
the first problem in rank order otherwise; Stopped when stopped. The lifecycle parts (deadline,
idleness, billing, warnings) are the standalone builder's.
"""

from __future__ import annotations

from typing import Any

from devserver.api.devserver import DevServer, Phase
from devserver.api.lifecycle import warned
from devserver.api.meta import KubeObject
from devserver.reconcilers.conditions import merge_conditions
from devserver.reconcilers.devserver_status import (
    Observed,
    _cond,
    _expiring,
    _pod_condition,
    _waiting_reason,
    lifecycle_fields,
    shared_conditions,
    stopped_reason,
)
from devserver.reconcilers.distributed_objects import (
    DIST_PORT,
    POD_INDEX_LABEL,
    rank_home_claim,
    world,
)
from devserver.reconcilers.standalone import SSH_PORT


def _rank_of(pod: KubeObject) -> int | None:
    index = pod.metadata.labels.get(POD_INDEX_LABEL)
    if index is None:  # before Kubernetes 1.28: the name's suffix
        index = pod.metadata.name.rsplit("-", 1)[-1]
    return int(index) if index.isdigit() else None


def _restarts(pod: KubeObject) -> int:
    statuses = (pod.extra.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def rank_entries(ds: DevServer, pods: list[KubeObject]) -> list[dict[str, Any]]:
    w, _ = world(ds)
    by_rank = {
        rank: pod
        for pod in pods
        if not pod.metadata.deletion_timestamp and (rank := _rank_of(pod)) is not None
    }
    entries = []
    for rank in range(w):
        pod = by_rank.get(rank)
        entry: dict[str, Any] = {
            "rank": rank,
            "pod": f"{ds.metadata.name}-{rank}",
            "homeClaim": rank_home_claim(ds, rank),
            "ready": False,
            "restarts": 0,
        }
        if pod is None:
            entry["reason"] = "NoPod"
        else:
            entry["restarts"] = _restarts(pod)
            node = (pod.extra.get("spec") or {}).get("nodeName")
            if node:
                entry["node"] = node
            ready = (_pod_condition(pod, "Ready") or {}).get("status") == "True"
            entry["ready"] = ready
            if not ready:
                scheduled = _pod_condition(pod, "PodScheduled") or {}
                image = _waiting_reason(pod)
                if scheduled.get("reason") == "Unschedulable":
                    entry["reason"] = "Unschedulable"
                elif image is not None:
                    entry["reason"] = image[0]
                else:
                    entry["reason"] = "Starting"
        entries.append(entry)
    return entries


def rolled_out(statefulset: KubeObject | None, w: int) -> bool:
    """Every rank runs the current template (the StatefulSet controller says so)."""
    if statefulset is None:
        return False
    status = statefulset.extra.get("status") or {}
    return (
        status.get("observedGeneration") == statefulset.metadata.generation
        and int(status.get("updatedReplicas", 0)) >= w
        and status.get("currentRevision") == status.get("updateRevision")
    )


def distributed_status(
    ds: DevServer, seen: Observed, statefulset: KubeObject | None
) -> dict[str, Any]:
    gen = ds.metadata.generation
    w, p = world(ds)
    ranks = [] if ds.spec.stopped else rank_entries(ds, seen.pods)
    ready_count = sum(1 for r in ranks if r["ready"])
    phase, ready, reason = Phase.PENDING, False, "Creating"
    message = f"creating {w} ranks"
    if ds.spec.stopped:
        phase, (reason, message) = (
            Phase.STOPPED,
            stopped_reason(ds, "every rank's home volume is kept"),
        )
        message += f" — `devctl start {ds.metadata.name}`"
    elif statefulset is None and seen.flavor_problem:
        reason, message = "FlavorUnavailable", seen.flavor_problem
    elif ready_count == w and not rolled_out(statefulset, w):
        # every pod ready, but some still run the old shape (another WORLD_SIZE): not yet
        updated = int(
            ((statefulset.extra.get("status") or {}) if statefulset else {}).get(
                "updatedReplicas", 0
            )
        )
        reason = "Updating"
        message = f"{updated}/{w} ranks restarted with the new settings; wait before torchrun"
    elif ready_count == w:
        phase, ready, reason = Phase.RUNNING, True, "AllRanksReady"
        message = f"all {w} ranks ready ({w * p} processes with torchrun)"
    elif ranks:
        first = next(r for r in ranks if not r["ready"])
        reason = str(first.get("reason") or "Starting")
        message = f"{ready_count}/{w} ranks ready; rank {first['rank']}: {reason}"
        if reason == "Unschedulable":
            pod = next((q for q in seen.pods if _rank_of(q) == first["rank"]), None)
            detail = ((_pod_condition(pod, "PodScheduled") or {}) if pod else {}).get("message")
            if detail:
                message += f" ({detail})"
    progressing, flavor_valid = shared_conditions(ds, seen, ready=ready, waiting="the ranks")
    desired = [_cond("Ready", ready, reason, message, gen), progressing, flavor_valid]
    if seen.stop is not None and not ds.spec.stopped and warned(ds, seen.stop.when):
        desired.append(_expiring(seen.stop, gen))
    if seen.applied is not None:
        desired.append(seen.applied)
    previous = ds.status.conditions if ds.status else []
    name, ns = ds.metadata.name, ds.metadata.namespace
    status: dict[str, Any] = {
        "phase": phase.value,
        "conditions": merge_conditions(previous, desired),
        "observedGeneration": gen,
        "homeClaim": rank_home_claim(ds, 0),
        "ranks": ranks,
        "readyRanks": ready_count,
        "serviceName": name,
        "podName": f"{name}-0",
    }
    if ds.spec.enable_ssh:
        status["sshEndpoint"] = f"{name}-0.{name}.{ns}.svc.cluster.local:{SSH_PORT}"
    status["masterAddr"] = f"{name}-0.{name}.{ns}.svc.cluster.local:{DIST_PORT}"
    on_nodes = sum(1 for q in seen.pods if (q.extra.get("spec") or {}).get("nodeName"))
    # the flavor's price is per pod: the period's price is that times the pods on nodes (a
    # change of that count is a transition that closes the period)
    price = seen.price_per_hour * on_nodes if seen.price_per_hour is not None else None
    status |= lifecycle_fields(ds, seen, holding=on_nodes > 0, price=price)
    applied = (statefulset.extra.get("spec") or {}).get("template", {}) if statefulset else {}
    flavor = ((applied.get("metadata") or {}).get("annotations") or {}).get("devserver.io/flavor")
    if flavor:
        status["appliedFlavor"] = flavor
    return status
