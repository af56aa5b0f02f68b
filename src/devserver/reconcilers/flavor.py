"""The flavor reconciler: is each DevServerFlavor valid, and how many DevServers use it.

Reads flavors and DevServers from the shared cache; writes only the flavor's status, and only
when it differs from what is there. What a DevServer asks of its flavor is here too: whether it
can run with it (`flavor_problem`) and how many GPUs it holds (`gpu_count`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor, DevServerFlavorSpec, DevServerFlavorStatus
from devserver.api.meta import ObjectKey
from devserver.api.names import GPU_RESOURCE
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import DEVSERVERS, FLAVORS
from devserver.api.schema import Condition, ConditionStatus
from devserver.client import KubeClient
from devserver.controller import Controller, Result
from devserver.informers import Informer, InformerFactory
from devserver.reconcilers.conditions import merge_conditions
from devserver.reconcilers.status_writer import StatusWriter

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
    gpus = parsed["requests"].get(GPU_RESOURCE)
    if gpus is not None and parsed["limits"].get(GPU_RESOURCE) != gpus:
        return "nvidia.com/gpu must have equal request and limit (GPUs cannot be overcommitted)"
    if spec.shm_size is not None:
        try:
            parse_quantity(spec.shm_size)
        except QuantityError as error:
            return f"shmSize: {error}"
    return None


def flavor_problem(ds: DevServer, flavor: DevServerFlavor | None) -> str | None:
    """Why `ds` cannot run with its flavor, in one sentence, or None when it can."""
    if flavor is None:
        return (
            f"flavor {ds.spec.flavor!r} does not exist; pick one from `devctl flavors` "
            "(the server, if running, keeps its current flavor)"
        )
    problem = validate(flavor.spec)
    if problem:
        return f"flavor {ds.spec.flavor!r} is invalid: {problem}"
    return None


def gpu_count(flavor: DevServerFlavor | None) -> int:
    """GPUs one pod of the flavor holds."""
    if flavor is None:
        return 0
    resources = flavor.spec.resources
    limit = resources.limits.get(GPU_RESOURCE) or resources.requests.get(GPU_RESOURCE)
    return int(parse_quantity(limit)) if limit else 0


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


@dataclass
class FlavorReconciler:
    client: KubeClient
    flavors: Informer[DevServerFlavor]
    devservers: Informer[DevServer]
    writer: StatusWriter[DevServerFlavor] = field(init=False)

    def __post_init__(self) -> None:
        self.writer = StatusWriter(self.client, FLAVORS, DevServerFlavorStatus)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        flavor = self.flavors.store.get(key)
        if flavor is None:
            self.writer.forget(key)
            return None
        users = self.devservers.store.index_count(FLAVOR_INDEX, key.name)  # none decoded
        desired = desired_status(flavor, users)
        await self.writer.write(flavor, desired)
        return None


def setup(informers: InformerFactory, client: KubeClient) -> Controller:
    flavors = informers.informer(FLAVORS)
    devservers = informers.informer(DEVSERVERS, indexers={FLAVOR_INDEX: by_flavor})
    controller = Controller("flavor", FlavorReconciler(client, flavors, devservers))
    controller.watch(flavors)
    controller.watch_mapped(devservers, lambda ds: (ObjectKey("", ds.spec.flavor),))  # type: ignore[attr-defined]
    return controller
