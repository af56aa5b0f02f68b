"""The GPUs a Kueue ClusterQueue or LocalQueue speaks of (pure): its quota over all its flavors,
and what its status says is reserved, used or borrowed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from devserver.api.names import GPU_RESOURCE
from devserver.api.quantity import QuantityError, parse_quantity


def _amount(text: Any) -> Decimal:
    try:
        return parse_quantity(str(text))
    except QuantityError:
        return Decimal(0)


def gpus_in(flavors: Any, field: str = "total") -> int:
    """The GPUs of a status list (`flavorsReservation`, `flavorsUsage`), over all flavors."""
    total = Decimal(0)
    for flavor in flavors or []:
        for resource in flavor.get("resources") or []:
            if resource.get("name") == GPU_RESOURCE:
                total += _amount(resource.get(field, 0))
    return int(total)


def gpu_quota(spec: dict[str, Any], field: str = "nominalQuota") -> int | None:
    """A ClusterQueue's quota (or limit) of GPUs over its flavors; None when none is set."""
    found = None
    for group in spec.get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for resource in flavor.get("resources") or []:
                if resource.get("name") == GPU_RESOURCE and resource.get(field) is not None:
                    found = (found or 0) + int(_amount(resource[field]))
    return found


def gpus_admitted(workload: dict[str, Any], cluster_queue: str) -> int:
    """The GPUs a Workload holds in `cluster_queue`: reserved for it there, and not finished."""
    if (workload.get("metadata") or {}).get("deletionTimestamp"):
        return 0  # going: Kueue gives its quota back
    status = workload.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    admission = status.get("admission") or {}
    if conditions.get("QuotaReserved") != "True" or conditions.get("Finished") == "True":
        return 0
    if admission.get("clusterQueue") != cluster_queue:
        return 0
    total = Decimal(0)
    for assignment in admission.get("podSetAssignments") or []:
        total += _amount((assignment.get("resourceUsage") or {}).get(GPU_RESOURCE, 0))
    return int(total)
