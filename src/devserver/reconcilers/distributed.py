"""The distributed reconciler: a DevServer of W pods on which `torchrun` just works.

It owns DevServers with `mode: distributed` (the DevServer reconciler leaves them alone): the
activity agent's objects (one Lease per rank), the headless Service, the StatefulSet (W replicas,
0 while stopped; a home volume per rank) and the status per rank. Like the standalone path it
is cache-first and compare-then-apply, and a missing or invalid flavor never touches running
pods. Changing `worldSize` scales the StatefulSet: new ranks get new homes, removed ranks' homes
are kept (scaling back up finds them), and every pod restarts with the new WORLD_SIZE. Switching
between standalone and distributed is refused by the API server (a CEL rule): the two keep
their homes in different volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devserver.api.devserver import DevServer, Mode
from devserver.api.flavor import DevServerFlavor
from devserver.api.lifecycle import (
    EXPIRED,
    IDLE,
    STOP_REASON,
    deadline,
    first_created,
    next_stop,
    with_start,
)
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import (
    DEVSERVERS,
    FLAVORS,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    SERVICES,
    STATEFULSETS,
)
from devserver.client import KubeClient
from devserver.client.events import EventType, record_event
from devserver.controller import Controller, Result
from devserver.controller.applied import apply_if_changed
from devserver.informers import NAMESPACE_INDEX, Informer, InformerFactory
from devserver.reconcilers.agent_sync import (
    AgentInformers,
    ensure_agent_objects,
    idle_report_changed,
)
from devserver.reconcilers.children import Attempts
from devserver.reconcilers.devserver import flavor_problem, gpu_count
from devserver.reconcilers.devserver_status import Observed
from devserver.reconcilers.distributed_objects import (
    desired_headless_service,
    desired_statefulset,
    world,
)
from devserver.reconcilers.distributed_status import distributed_status
from devserver.reconcilers.flavor import FLAVOR_INDEX, by_flavor
from devserver.reconcilers.gpu_hours import GpuHours, Holding, shared_gpu_hours
from devserver.reconcilers.home_volumes import retain_homes
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from devserver.reconcilers.naming import NAME_INDEX, NAME_LABEL, by_devserver_name
from devserver.reconcilers.running_template import keep_running_template, scale_to_zero
from devserver.reconcilers.status_writer import StatusWriter

FIELD_MANAGER = "devserver-operator"


@dataclass
class DistributedReconciler:
    client: KubeClient
    devservers: Informer[DevServer]
    flavors: Informer[DevServerFlavor]
    statefulsets: Informer[KubeObject]
    services: Informer[KubeObject]
    pods: Informer[KubeObject]
    agent: AgentInformers
    claims: Informer[KubeObject] | None = None
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    gpu_hours: GpuHours = field(default_factory=GpuHours)
    writer: StatusWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = StatusWriter(self.client)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        ds = self.devservers.store.get(key)
        if ds is None or ds.metadata.deletion_timestamp:
            self.writer.forget(key)
            self.gpu_hours.report(key, None)
            # deleted, held in deletion, orphaning its children or unreadable: no GPU held
            await scale_to_zero(self.client, STATEFULSETS, self.statefulsets.store.get(key))
            return None
        if ds.spec.mode is not Mode.DISTRIBUTED or ds.spec.distributed is None:
            return None  # the DevServer reconciler's
        tried = Attempts()
        if ds.spec.stopped:  # first, whatever else fails: a stopped server holds no GPU
            live = self.statefulsets.store.get(key)
            await tried.attempt("StatefulSet", scale_to_zero(self.client, STATEFULSETS, live))
        flavor = self.flavors.store.get(ObjectKey("", ds.spec.flavor))
        problem = flavor_problem(ds, flavor)
        await tried.attempt("agent objects", ensure_agent_objects(self.client, self.agent, ds))
        await tried.attempt(
            "Service",
            self._ensure(SERVICES, desired_headless_service(ds), self.services.store.get(key)),
        )
        if self.claims is not None:
            homes = self.claims.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}")
            await tried.attempt("PersistentVolume", retain_homes(self.client, ds, homes))
        statefulset = self.statefulsets.store.get(key)
        if problem is None and flavor is not None:
            replicas = 0 if ds.spec.stopped else None  # None: worldSize
            intent = desired_statefulset(ds, flavor, replicas=replicas)
            await tried.attempt(
                "StatefulSet",
                self._ensure(
                    STATEFULSETS, keep_running_template(intent, statefulset, ds), statefulset
                ),
            )
        now = datetime.now(UTC).replace(microsecond=0)
        recorded = self.writer.latest(ds)
        pods = self.pods.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}")
        ds = with_start(recorded, now, first_created(pods))  # the run counts from its start
        activity = self.agent.activity(ds)
        deadline_at, capped = deadline(ds, self.lifecycle.max_lifetime)
        seen = Observed(
            flavor_problem=problem,
            deployment=None,
            pods=pods,
            service=self.services.store.get(key),
            deadline=deadline_at,
            capped=capped,
            stop=next_stop(ds, activity, self.lifecycle.max_lifetime, now),
            activity=activity,
            now=now,
            price_per_hour=flavor.spec.price_per_hour if flavor is not None else None,
            applied=tried.condition(ds.metadata.generation),
        )
        status = distributed_status(ds, seen, self.statefulsets.store.get(key))
        on_nodes = sum(1 for p in pods if (p.extra.get("spec") or {}).get("nodeName"))
        active = activity is not None and activity.fresh(now) and activity.idle_since is None
        name = flavor.metadata.name if flavor is not None else ds.spec.flavor
        self.gpu_hours.report(
            key, Holding(name, gpu_count(flavor) * on_nodes, on_nodes > 0, active and on_nodes > 0)
        )
        await self.writer.write(recorded, status, self._announce)
        tried.raise_if_any()  # after the status: retried with backoff, the user already told
        return None

    async def _announce(self, ds: DevServer, status: dict[str, Any]) -> None:
        before = ds.status
        was_ready = before is not None and before.phase is not None and before.phase == "Running"
        w, p = world(ds)
        if status["phase"] == "Running" and not was_ready:
            await record_event(
                self.client,
                DEVSERVERS,
                ds,
                EventType.NORMAL,
                "Ready",
                f"all {w} ranks are ready; run `$DEVSERVER_BIN/devserver-torchrun train.py` on "
                f"each ({w * p} processes)",
            )
        if status["phase"] == "Stopped" and before is not None and before.phase != "Stopped":
            why = ds.metadata.annotations.get(STOP_REASON, "")
            if why not in (EXPIRED, IDLE):
                await record_event(
                    self.client,
                    DEVSERVERS,
                    ds,
                    EventType.NORMAL,
                    "Stopped",
                    "stopped; every rank's home volume is kept",
                )

    async def _ensure(self, resource: Any, intent: dict[str, Any], live: KubeObject | None) -> None:
        await apply_if_changed(self.client, resource, intent, live, field_manager=FIELD_MANAGER)


def setup(
    informers: InformerFactory, client: KubeClient, lifecycle: LifecycleConfig | None = None
) -> Controller:
    mine = NAME_LABEL
    devservers = informers.informer(DEVSERVERS)
    if FLAVOR_INDEX not in devservers.store.indexer_names:
        devservers.store.add_indexer(FLAVOR_INDEX, by_flavor)
    flavors = informers.informer(FLAVORS)
    statefulsets = informers.informer(STATEFULSETS, label_selector=mine)
    services = informers.informer(SERVICES, label_selector=mine)
    pods = informers.informer(PODS, label_selector=mine)
    claims = informers.informer(PERSISTENT_VOLUME_CLAIMS, label_selector=mine)
    for informer in (pods, claims):
        if NAME_INDEX not in informer.store.indexer_names:
            informer.store.add_indexer(NAME_INDEX, by_devserver_name)
    agent = AgentInformers.shared(informers)
    reconciler = DistributedReconciler(
        client,
        devservers,
        flavors,
        statefulsets,
        services,
        pods,
        agent,
        claims,
        lifecycle or LifecycleConfig(),
        shared_gpu_hours(),
    )
    controller = Controller("distributed", reconciler, workers=2)

    def distributed_only(note: Any) -> bool:
        obj = note.obj
        return isinstance(obj, DevServer) and obj.spec.mode is Mode.DISTRIBUTED

    controller.watch(devservers, distributed_only)
    controller.watch_owned(services, DEVSERVERS)

    def by_label(obj: KubeObject) -> list[ObjectKey]:
        name = obj.metadata.labels.get(NAME_LABEL)
        return [ObjectKey(obj.metadata.namespace, name)] if name else []

    controller.watch_mapped(statefulsets, by_label)  # orphaned ones too (`--cascade=orphan`)

    controller.watch_mapped(pods, by_label)
    controller.watch_mapped(claims, by_label)
    controller.watch_mapped(agent.leases, by_label, idle_report_changed)
    for informer in (agent.accounts, agent.roles, agent.bindings):
        controller.watch_mapped(informer, by_label)

    def in_namespace(obj: KubeObject) -> list[ObjectKey]:
        servers = devservers.store.by_index(NAMESPACE_INDEX, obj.metadata.namespace)
        return [ds.key for ds in servers if ds.spec.mode is Mode.DISTRIBUTED]

    controller.watch_mapped(agent.config_maps, in_namespace)

    def users_of(flavor: KubeObject) -> list[ObjectKey]:
        return [
            ds.key
            for ds in devservers.store.by_index(FLAVOR_INDEX, flavor.metadata.name)
            if ds.spec.mode is Mode.DISTRIBUTED
        ]

    controller.watch_mapped(flavors, users_of)
    return controller
