"""The DevServer reconciler (standalone mode): home volume, Deployment, Service, status.

Level-based and cache-first: everything is read from shared informers; a write happens only
when the live object lacks part of our intent (compare-then-apply), so a converged DevServer
costs no API request. A missing or invalid flavor never touches a running server: the Deployment
keeps its last good flavor and the status says what to do.
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
from devserver.api.quantity import parse_quantity
from devserver.api.resources import (
    DEPLOYMENTS,
    DEVSERVERS,
    FLAVORS,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    SERVICES,
    Resource,
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
from devserver.reconcilers.devserver_status import Observed, observed_status
from devserver.reconcilers.flavor import FLAVOR_INDEX, by_flavor, validate
from devserver.reconcilers.gpu_hours import GpuHours, Holding, shared_gpu_hours
from devserver.reconcilers.home_volumes import retain_homes, retain_unowned_homes
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from devserver.reconcilers.naming import NAME_INDEX, NAME_LABEL, by_devserver_name
from devserver.reconcilers.running_template import keep_running_template, scale_to_zero
from devserver.reconcilers.standalone import (
    desired_deployment,
    desired_home_claim,
    desired_service,
    home_claim_name,
)
from devserver.reconcilers.status_writer import StatusWriter

FIELD_MANAGER = "devserver-operator"
GPU_RESOURCE = "nvidia.com/gpu"
# Ready=False reasons worth a Warning (not the ordinary Creating/Starting on the way up)
WARN_REASONS = {"Unschedulable", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


@dataclass
class DevServerReconciler:
    client: KubeClient
    devservers: Informer[DevServer]
    flavors: Informer[DevServerFlavor]
    deployments: Informer[KubeObject]
    services: Informer[KubeObject]
    claims: Informer[KubeObject]
    pods: Informer[KubeObject]
    agent: AgentInformers
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
            await self._gone(key)
            return None  # owned children go with it; a retained home volume stays
        if ds.spec.mode is Mode.DISTRIBUTED:
            return None  # the distributed reconciler's
        tried = Attempts()
        if ds.spec.stopped:  # first, whatever else fails: a stopped server holds no GPU
            live = self.deployments.store.get(key)
            await tried.attempt("Deployment", scale_to_zero(self.client, DEPLOYMENTS, live))
        flavor = self.flavors.store.get(ObjectKey("", ds.spec.flavor))
        problem = flavor_problem(ds, flavor)
        claim = self.claims.store.get(ObjectKey(key.namespace, home_claim_name(ds)))
        await tried.attempt("PersistentVolumeClaim", self._home(ds, claim))
        if claim is not None:
            await tried.attempt("PersistentVolume", retain_homes(self.client, ds, [claim]))
        await tried.attempt("agent objects", ensure_agent_objects(self.client, self.agent, ds))
        if problem is None and flavor is not None:
            replicas = 0 if ds.spec.stopped else 1
            live = self.deployments.store.get(key)
            intent = desired_deployment(ds, flavor, replicas=replicas)
            await tried.attempt(
                "Deployment",
                self._ensure(DEPLOYMENTS, keep_running_template(intent, live, ds), live),
            )
        service = self.services.store.get(key)
        if ds.spec.enable_ssh:
            await tried.attempt("Service", self._ensure(SERVICES, desired_service(ds), service))
        elif service is not None:
            await tried.attempt("Service", self.client.delete(SERVICES, key.name, key.namespace))
        now = datetime.now(UTC).replace(microsecond=0)
        recorded = self.writer.latest(ds)
        pods = self.pods.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}")
        ds = with_start(recorded, now, first_created(pods))  # the run counts from its start
        activity = self.agent.activity(ds)
        stop = next_stop(ds, activity, self.lifecycle.max_lifetime, now)
        deadline_at, capped = deadline(ds, self.lifecycle.max_lifetime)
        seen = Observed(
            flavor_problem=problem,
            deployment=self.deployments.store.get(key),
            pods=pods,
            service=self.services.store.get(key) if ds.spec.enable_ssh else None,
            deadline=deadline_at,
            capped=capped,
            stop=stop,
            activity=activity,
            now=now,
            price_per_hour=flavor.spec.price_per_hour if flavor is not None else None,
            applied=tried.condition(ds.metadata.generation),
        )
        status = observed_status(ds, seen)
        self.gpu_hours.report(key, self._holding(ds, seen, status))
        await self.writer.write(recorded, status, self._announce)
        tried.raise_if_any()  # after the status: retried with backoff, the user already told
        return None

    async def _gone(self, key: ObjectKey) -> None:
        """A server deleted (or held in deletion by a finalizer, or orphaning its children with
        `--cascade=orphan`, or unreadable) holds no GPU: its workload goes to zero replicas
        first. Its kept home's volume is set to Retain, for homes kept before this operator."""
        await scale_to_zero(self.client, DEPLOYMENTS, self.deployments.store.get(key))
        homes = self.claims.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}")
        await retain_unowned_homes(self.client, homes)

    async def _home(self, ds: DevServer, claim: KubeObject | None) -> None:
        if claim is not None and ds.spec.retain_home_on_delete and owned_by(claim, ds):
            # retention turned on: apply drops the owner reference we no longer claim, so the
            # home survives the server (a plain compare would call the claim up to date)
            await self.client.apply(
                PERSISTENT_VOLUME_CLAIMS,
                desired_home_claim(ds, claim),
                field_manager=FIELD_MANAGER,
            )
        else:
            await self._ensure(PERSISTENT_VOLUME_CLAIMS, desired_home_claim(ds, claim), claim)

    def _holding(self, ds: DevServer, seen: Observed, status: dict[str, Any]) -> Holding:
        flavor = self.flavors.store.get(
            ObjectKey("", status.get("appliedFlavor") or ds.spec.flavor)
        )
        held = any((p.extra.get("spec") or {}).get("nodeName") for p in seen.pods)
        activity, now = seen.activity, seen.now or datetime.now(UTC)
        active = activity is not None and activity.fresh(now) and activity.idle_since is None
        name = flavor.metadata.name if flavor is not None else ds.spec.flavor
        return Holding(name, gpu_count(flavor), held, held and active)

    async def _announce(self, ds: DevServer, status: dict[str, Any]) -> None:
        """One Event per transition a user cares about; the status remembers what was said."""
        before = {c.type: (c.status, c.reason) for c in (ds.status.conditions if ds.status else [])}
        for c in status["conditions"]:
            now = (c["status"], c["reason"])
            if before.get(c["type"]) == now:
                continue
            if c["type"] == "Ready" and now == ("True", "PodReady"):
                await self._event(ds, EventType.NORMAL, "Ready", c["message"])
            elif c["type"] == "Ready" and c["reason"] in WARN_REASONS:
                await self._event(ds, EventType.WARNING, c["reason"], c["message"])
            elif c["type"] == "FlavorValid" and c["status"] == "False":
                await self._event(ds, EventType.WARNING, "FlavorUnavailable", c["message"])
        if status.get("phase") == "Stopped" and ds.status and ds.status.phase != "Stopped":
            why = ds.metadata.annotations.get(STOP_REASON, "")
            if why not in (EXPIRED, IDLE):  # the expiry reconciler announces its own stops
                await self._event(ds, EventType.NORMAL, "Stopped", "stopped; home volume kept")
        extension = status.get("lastExtension")
        if extension and extension != (ds.status.last_extension if ds.status else None):
            await self._event(ds, EventType.NORMAL, "Extended", f"extended: {extension}")
        if (
            status.get("conditions")
            and any(c["type"] == "LifetimeCapped" for c in status["conditions"])
            and not any(
                c.type == "LifetimeCapped" for c in (ds.status.conditions if ds.status else [])
            )
        ):
            await self._event(
                ds,
                EventType.WARNING,
                "LifetimeCapped",
                next(c["message"] for c in status["conditions"] if c["type"] == "LifetimeCapped"),
            )
        applied = status.get("appliedFlavor")
        previous = ds.status.applied_flavor if ds.status else None
        if applied and previous and applied != previous:
            message = f"now running on flavor {applied} (was {previous}), with the same home volume"
            await self._event(ds, EventType.NORMAL, "FlavorApplied", message)

    async def _event(self, ds: DevServer, kind: EventType, reason: str, message: str) -> None:
        await record_event(self.client, DEVSERVERS, ds, kind, reason, message)

    async def _ensure(
        self, resource: Resource[Any], intent: dict[str, Any], live: KubeObject | None
    ) -> None:
        await apply_if_changed(self.client, resource, intent, live, field_manager=FIELD_MANAGER)


def owned_by(obj: KubeObject, ds: DevServer) -> bool:
    return any(ref.uid == ds.metadata.uid for ref in obj.metadata.owner_references)


def gpu_count(flavor: DevServerFlavor | None) -> int:
    if flavor is None:
        return 0
    resources = flavor.spec.resources
    limit = resources.limits.get(GPU_RESOURCE) or resources.requests.get(GPU_RESOURCE)
    return int(parse_quantity(limit)) if limit else 0


def flavor_problem(ds: DevServer, flavor: DevServerFlavor | None) -> str | None:
    if flavor is None:
        return (
            f"flavor {ds.spec.flavor!r} does not exist; pick one from `devctl flavors` "
            "(the server, if running, keeps its current flavor)"
        )
    problem = validate(flavor.spec)
    if problem:
        return f"flavor {ds.spec.flavor!r} is invalid: {problem}"
    return None


def setup(
    informers: InformerFactory, client: KubeClient, lifecycle: LifecycleConfig | None = None
) -> Controller:
    mine = f"{NAME_LABEL}"  # only objects we made: smaller caches, fewer events
    devservers = informers.informer(DEVSERVERS)
    if FLAVOR_INDEX not in devservers.store.indexer_names:
        devservers.store.add_indexer(FLAVOR_INDEX, by_flavor)
    flavors = informers.informer(FLAVORS)
    deployments = informers.informer(DEPLOYMENTS, label_selector=mine)
    services = informers.informer(SERVICES, label_selector=mine)
    claims = informers.informer(PERSISTENT_VOLUME_CLAIMS, label_selector=mine)
    pods = informers.informer(PODS, label_selector=mine)
    agent = AgentInformers.shared(informers)
    for informer in (pods, claims):
        if NAME_INDEX not in informer.store.indexer_names:
            informer.store.add_indexer(NAME_INDEX, by_devserver_name)
    reconciler = DevServerReconciler(
        client,
        devservers,
        flavors,
        deployments,
        services,
        claims,
        pods,
        agent,
        lifecycle or LifecycleConfig(),
        shared_gpu_hours(),
    )
    controller = Controller("devserver", reconciler, workers=4)
    controller.watch(devservers)
    controller.watch_owned(services, DEVSERVERS)

    def by_label(obj: KubeObject) -> list[ObjectKey]:
        name = obj.metadata.labels.get(NAME_LABEL)
        return [ObjectKey(obj.metadata.namespace, name)] if name else []

    # by label, not owner: a workload orphaned from its server (`--cascade=orphan`) is found
    controller.watch_mapped(deployments, by_label)

    controller.watch_mapped(claims, by_label)
    controller.watch_mapped(pods, by_label)
    for informer in agent.all():
        if informer is agent.leases:  # routine renewals change nothing we show
            controller.watch_mapped(informer, by_label, idle_report_changed)
        elif informer is agent.config_maps:  # one per namespace, for all its servers

            def in_namespace(obj: KubeObject) -> list[ObjectKey]:
                servers = devservers.store.by_index(NAMESPACE_INDEX, obj.metadata.namespace)
                return [ds.key for ds in servers]

            controller.watch_mapped(informer, in_namespace)
        else:
            controller.watch_mapped(informer, by_label)

    def users_of(flavor: KubeObject) -> list[ObjectKey]:
        return [ds.key for ds in devservers.store.by_index(FLAVOR_INDEX, flavor.metadata.name)]

    controller.watch_mapped(flavors, users_of)
    return controller
