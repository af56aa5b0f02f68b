"""The flavor reconciler: is each DevServerFlavor valid, and how many DevServers use it.

Reads flavors and DevServers from the shared cache; writes only the flavor's status, and only
when it differs from what is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor, DevServerFlavorSpec
from devserver.api.meta import ObjectKey
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import DEVSERVERS, FLAVORS
from devserver.api.schema import Condition, ConditionStatus
from devserver.client import KubeClient
from devserver.controller import Controller, Result
from devserver.controller.applied import write_status_if_changed
from devserver.informers import Informer, InformerFactory
from devserver.reconcilers.conditions import merge_conditions

FLAVOR_INDEX = "flavor"


def by_flavor(obj: DevServer) -> tuple[str, ...]:
    return (obj.spec.flavor,)


def validate(spec: DevServerFlavorSpec) -> str | None:
    """One sentence saying what is wrong, or None."""
    parsed: dict[str, dict[str, Any]] = {}
    for kind, values in (("requests", spec.resources.requests), ("limits", spec.resources.limits)):
        parsed[kind] = {}
        for name, text in values.items():
            try:
                parsed[kind][name] = parse_quantity(text)
            except QuantityError as error:
                return f"resources.{kind}.{name}: {error}"
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            return (
                f"resources.requests.{name} ({spec.resources.requests[name]}) exceeds its limit "
                f"({spec.resources.limits[name]}); lower the request or raise the limit"
            )
    gpu = "nvidia.com/gpu"
    if gpu in parsed["requests"] and parsed["limits"].get(gpu) != parsed["requests"][gpu]:
        return "nvidia.com/gpu must have equal request and limit (GPUs cannot be overcommitted)"
    if spec.shm_size is not None:
        try:
            parse_quantity(spec.shm_size)
        except QuantityError as error:
            return f"shmSize: {error}"
    return None


def desired_status(flavor: DevServerFlavor, users: int) -> dict[str, Any]:
    problem = validate(flavor.spec)
    condition = Condition(
        type="Valid",
        status=ConditionStatus.FALSE if problem else ConditionStatus.TRUE,
        reason="InvalidSpec" if problem else "Validated",
        message=problem or "resources parse and requests fit within limits",
        observed_generation=flavor.metadata.generation,
    )
    previous = flavor.status.conditions if flavor.status else []
    return {
        "valid": problem is None,
        "message": problem or "",
        "devServers": users,
        "conditions": merge_conditions(previous, [condition]),
        "observedGeneration": flavor.metadata.generation,
    }


def current_status(flavor: DevServerFlavor) -> dict[str, Any]:
    if flavor.status is None:
        return {}
    return flavor.status.model_dump(by_alias=True, mode="json", exclude_none=True)


@dataclass
class FlavorReconciler:
    client: KubeClient
    flavors: Informer[DevServerFlavor]
    devservers: Informer[DevServer]

    async def reconcile(self, key: ObjectKey) -> Result | None:
        flavor = self.flavors.store.get(key)
        if flavor is None:
            return None
        users = len(self.devservers.store.by_index(FLAVOR_INDEX, key.name))
        desired = desired_status(flavor, users)
        await write_status_if_changed(self.client, FLAVORS, key, desired, current_status(flavor))
        return None


def setup(informers: InformerFactory, client: KubeClient) -> Controller:
    flavors = informers.informer(FLAVORS)
    devservers = informers.informer(DEVSERVERS)
    if FLAVOR_INDEX not in devservers.store.indexer_names:
        devservers.store.add_indexer(FLAVOR_INDEX, by_flavor)
    controller = Controller("flavor", FlavorReconciler(client, flavors, devservers))
    controller.watch(flavors)
    controller.watch_mapped(devservers, lambda ds: (ObjectKey("", ds.spec.flavor),))  # type: ignore[attr-defined]
    return controller
