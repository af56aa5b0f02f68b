"""A flavor change never breaks a running server (pure).

Moving a running standalone server to another flavor replaces its pod (the Deployment's
Recreate strategy: the old pod goes first, its home volume cannot be mounted twice). If the new
pod could then not run, the user would have lost a working server for nothing. So before the
old pod is stopped, the change is checked against:

- the user's ResourceQuota: what the namespace uses, less the running pod's requests, plus the
  new flavor's, must stay within each limit — else the API server would refuse the new pod;
- the nodes: when nodes of the flavor's node group exist (its node selector, its taints
  tolerated), one of them must be big enough to ever hold the pod. With none (a group that
  scales from zero) this cannot be known here, and the change goes ahead;
- Kueue, when used: the server's ClusterQueue must have the GPUs free now (its nominal quota
  less what it has reserved, the running pod's given back), or the new pod would wait in the
  queue while the old one is gone. Borrowing from the cohort is not counted: parking is the
  safe side.

A change that fails is parked: the server keeps running on its current flavor, the status says
why in one sentence (condition `Resized`, False), and the change is made as soon as the reason
is gone (looked at again each minute, and on every change of the namespace's quota), or at the
server's next start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from devserver.api.flavor import DevServerFlavor
from devserver.api.kueue_gpus import gpu_quota, gpus_in
from devserver.api.meta import KubeObject
from devserver.api.names import GPU_RESOURCE
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.reconcilers.flavor import gpu_count

CHECKED = ("cpu", "memory", GPU_RESOURCE)  # what quotas and nodes are checked for
NAMES = {"cpu": "CPUs", "memory": "memory", GPU_RESOURCE: "GPUs"}


def _amounts(values: Mapping[str, Any]) -> dict[str, Decimal]:
    out = {}
    for name, text in values.items():
        try:
            out[name] = parse_quantity(str(text))
        except QuantityError:
            continue
    return out


def requests_of(flavor: DevServerFlavor | None) -> dict[str, Decimal]:
    if flavor is None:
        return {}
    return _amounts(flavor.spec.resources.requests)


def _show(name: str, amount: Decimal) -> str:
    if name == "memory":
        return f"{amount / 2**30:.3g} GiB"
    return f"{amount.normalize():f}"


def quota_problem(
    old: Mapping[str, Decimal], new: Mapping[str, Decimal], quota: KubeObject | None
) -> str | None:
    """Whether the new pod fits the namespace's ResourceQuota once the running one is gone."""
    status = (quota.extra.get("status") or {}) if quota is not None else {}
    hard, used = _amounts(status.get("hard") or {}), _amounts(status.get("used") or {})
    for name in CHECKED:
        key = f"requests.{name}"
        if key not in hard or name not in new:
            continue
        after = used.get(key, Decimal(0)) - old.get(name, Decimal(0)) + new[name]
        if after > hard[key]:
            others = used.get(key, Decimal(0)) - old.get(name, Decimal(0))
            return (
                f"it needs {_show(name, new[name])} {NAMES[name]} and your quota allows "
                f"{_show(name, hard[key])}, of which your other servers use "
                f"{_show(name, others)}: stop one (`devctl list`) or ask an admin for more"
            )
    return None


def _tolerated(taint: Mapping[str, Any], flavor: DevServerFlavor) -> bool:
    """As the scheduler matches them: only NoSchedule and NoExecute taints keep a pod off."""
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for t in flavor.spec.tolerations:
        if t.effect and t.effect != taint.get("effect"):
            continue
        if t.operator == "Exists":
            if not t.key or t.key == taint.get("key"):
                return True
        elif t.key == taint.get("key") and (t.value or "") == (taint.get("value") or ""):
            return True
    return False


def node_problem(flavor: DevServerFlavor, nodes: Iterable[KubeObject]) -> str | None:
    """Whether a node of the flavor's group exists that could ever hold its pod (a group with
    no node now — scaled to zero — is not judged)."""
    new = requests_of(flavor)
    group = []
    for node in nodes:
        labels = node.metadata.labels
        if any(labels.get(k) != v for k, v in flavor.spec.node_selector.items()):
            continue
        taints = (node.extra.get("spec") or {}).get("taints") or []
        if all(_tolerated(t, flavor) for t in taints):
            group.append(node)
    if not group:
        return None
    largest: dict[str, Decimal] = {}
    for node in group:
        allocatable = _amounts((node.extra.get("status") or {}).get("allocatable") or {})
        if all(allocatable.get(n, Decimal(0)) >= need for n, need in new.items() if n in CHECKED):
            return None
        for name in CHECKED:
            largest[name] = max(largest.get(name, Decimal(0)), allocatable.get(name, Decimal(0)))
    short = next(n for n in CHECKED if n in new and new[n] > largest.get(n, Decimal(0)))
    return (
        f"no node it can run on is big enough: it needs {_show(short, new[short])} "
        f"{NAMES[short]}, the largest has {_show(short, largest.get(short, Decimal(0)))}; "
        "pick a smaller flavor or ask an admin"
    )


def queue_problem(
    old_gpus: int,
    new_gpus: int,
    cluster_queue: KubeObject | None,
    queue: str,
    admitted: int = 0,
) -> str | None:
    """Whether the server's ClusterQueue has the GPUs free now (the running pod's given back).
    What it holds is the larger of its status (Kueue writes it now and then) and `admitted`,
    the GPUs of its admitted Workloads as the watch saw them last."""
    if cluster_queue is None or new_gpus <= old_gpus:
        return None
    nominal = gpu_quota(cluster_queue.extra.get("spec") or {}) or 0
    status = cluster_queue.extra.get("status") or {}
    reserved = max(gpus_in(status.get("flavorsReservation")), admitted)
    free = nominal - reserved + old_gpus
    if new_gpus <= free:
        return None
    return (
        f"it needs {new_gpus} GPUs and the queue {queue} has {max(free, 0)} free for "
        "it now; it moves when GPUs free up"
    )


def resize_problem(
    old: DevServerFlavor | None,
    new: DevServerFlavor,
    quota: KubeObject | None,
    nodes: Iterable[KubeObject],
    cluster_queue: KubeObject | None = None,
    queue: str = "",
    pods: tuple[int, int] | None = None,
    admitted: int = 0,
) -> str | None:
    """One sentence when moving a running server from `old` to `new` must wait, else None.
    `pods`: a distributed server's ranks before and after (each pod of its flavor)."""
    before, after = pods or (1, 1)
    problem = (
        quota_problem(_times(requests_of(old), before), _times(requests_of(new), after), quota)
        or node_problem(new, nodes)
        or queue_problem(
            gpu_count(old) * before, gpu_count(new) * after, cluster_queue, queue, admitted
        )
    )
    if problem is None:
        return None
    if pods is None:
        was = f" and keeps running on {old.metadata.name}" if old is not None else ""
        return f"the move to {new.metadata.name} waits{was}: {problem}"
    was = f" and keeps running as {before} of {old.metadata.name}" if old is not None else ""
    return f"the move to {after} ranks of {new.metadata.name} waits{was}: {problem}"


def _times(amounts: Mapping[str, Decimal], n: int) -> dict[str, Decimal]:
    return {name: amount * n for name, amount in amounts.items()}
