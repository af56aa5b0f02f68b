"""`devctl quota`: what your servers may hold, and, where the platform queues GPUs with Kueue,
the queue they wait in: its GPUs of its own, in use, borrowed and borrowable, and who waits.

Two layers, read as they are: the ResourceQuota of your namespace is the hard ceiling (the API
server refuses a pod beyond it, queued or not); the ClusterQueue — your team's, shared with its
members — decides when a server within that ceiling gets its GPUs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from devserver.api.kueue_gpus import gpu_quota, gpus_in
from devserver.api.meta import KubeObject
from devserver.api.names import GPU_RESOURCE as GPU
from devserver.api.names import LOCAL_QUEUE, USER_QUOTA
from devserver.api.quantity import QuantityError, format_binary, parse_quantity
from devserver.api.resources import CLUSTER_QUEUES, LOCAL_QUEUES, RESOURCE_QUOTAS, Resource
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.output import OUTPUT_OPTION, emit, table
from devserver.client import ApiError
from devserver.client.blocking import BlockingKubeClient

LIMITS = (  # (the quota's key, what people call it)
    (f"requests.{GPU}", "GPUs"),
    ("requests.cpu", "CPUs"),
    ("requests.memory", "memory"),
    ("requests.storage", "storage"),
    ("count/devservers.devservers.io", "servers"),
)


def _amount(text: Any) -> Decimal:
    try:
        return parse_quantity(str(text))
    except QuantityError:
        return Decimal(0)


def _show(key: str, text: Any) -> str:
    if key.endswith(("memory", "storage")):
        return format_binary(_amount(text))
    return f"{_amount(text).normalize():f}"


def quota_report(
    namespace: str,
    quota: KubeObject | None,
    local_queue: KubeObject | None,
    cluster_queue: KubeObject | None,
) -> dict[str, Any]:
    """What `devctl quota` says, as data (`-o json`)."""
    status = (quota.extra.get("status") or {}) if quota is not None else {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    report: dict[str, Any] = {
        "namespace": namespace,
        "limits": [
            {"resource": name, "used": _show(key, used.get(key, 0)), "limit": _show(key, hard[key])}
            for key, name in LIMITS
            if key in hard
        ],
        "queue": None,
    }
    if local_queue is None:
        return report
    lq_spec = local_queue.extra.get("spec") or {}
    lq_status = local_queue.extra.get("status") or {}
    queue: dict[str, Any] = {
        "localQueue": local_queue.metadata.name,
        "clusterQueue": lq_spec.get("clusterQueue"),
        "yourGpus": gpus_in(lq_status.get("flavorsReservation")),
        "yourWaiting": int(lq_status.get("pendingWorkloads") or 0),
    }
    if cluster_queue is not None:
        spec = cluster_queue.extra.get("spec") or {}
        cq_status = cluster_queue.extra.get("status") or {}
        nominal = gpu_quota(spec) or 0
        in_use = gpus_in(cq_status.get("flavorsReservation"))
        queue |= {
            "cohort": spec.get("cohortName"),
            "nominalGpus": nominal,
            "gpusInUse": in_use,
            "gpusBorrowed": gpus_in(cq_status.get("flavorsReservation"), "borrowed"),
            "gpusFree": max(0, nominal - in_use),
            "borrowingLimit": gpu_quota(spec, "borrowingLimit"),
            "waiting": int(cq_status.get("pendingWorkloads") or 0),
        }
    report["queue"] = queue
    return report


def render_quota(report: dict[str, Any]) -> str:
    lines = [f"quota of {report['namespace']}: the most your servers may hold at once"]
    rows = [[r["resource"], r["used"], r["limit"]] for r in report["limits"]]
    lines.append(table(rows, ["RESOURCE", "USED", "LIMIT"]) if rows else "  (no quota set)")
    queue = report["queue"]
    if queue is None:
        return "\n".join(lines)
    lines.append("")
    target = queue["clusterQueue"]
    yours = f"yours: {queue['yourGpus']} GPUs, {_servers(queue['yourWaiting'])} waiting"
    if "nominalGpus" not in queue:
        lines.append(f"GPU queue {queue['localQueue']} → {target} (not readable); {yours}")
        return "\n".join(lines)
    cohort = f" (cohort {queue['cohort']})" if queue["cohort"] else ""
    lines.append(f"GPU queue {queue['localQueue']} → {target}{cohort}, shared by your team:")
    lines.append(
        f"  GPUs: {queue['nominalGpus']} of its own, {queue['gpusInUse']} in use "
        f"({queue['gpusBorrowed']} borrowed), {queue['gpusFree']} free; {yours}"
    )
    if queue["cohort"]:
        limit = queue["borrowingLimit"]
        most = f"up to {limit}" if limit is not None else "any"
        lines.append(f"  it may borrow {most} unused GPUs of cohort {queue['cohort']}")
    lines.append(f"  waiting in it: {_servers(queue['waiting'])}")
    return "\n".join(lines)


def _servers(n: int) -> str:
    return f"{n} server" if n == 1 else f"{n} servers"


def _get(client: BlockingKubeClient, resource: Resource[Any], name: str, ns: str = "") -> Any:
    """The object, or None where there is none or you may not read it (no Kueue here)."""
    try:
        return client.get(resource, name, ns)
    except ApiError as error:
        if error.status in (403, 404):
            return None
        raise


@click.command()
@OUTPUT_OPTION
@pass_devctl
def quota(devctl: Devctl, output: str) -> None:
    """Your GPU, CPU, memory and server quota, and the GPU queue your servers wait in."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        local_queue = _get(client, LOCAL_QUEUES, LOCAL_QUEUE, namespace)
        target = ((local_queue.extra.get("spec") or {}) if local_queue else {}).get("clusterQueue")
        report = quota_report(
            namespace,
            _get(client, RESOURCE_QUOTAS, USER_QUOTA, namespace),
            local_queue,
            _get(client, CLUSTER_QUEUES, target) if target else None,
        )
        emit(output, lambda: report, lambda: render_quota(report))

    devctl.run_here(go, what="read your quota")
