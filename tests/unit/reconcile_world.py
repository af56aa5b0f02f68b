"""An operator without a cluster: the real controllers, their real caches, a fake client.

`World` builds every controller the manager would (`register_all`) on an `InformerFactory`
that is never started; objects are put straight into the informers' `Store`s, and `FakeKube`
stands in for the `KubeClient` methods reconcilers call. It answers reads from nothing (or
what a test gave it), records every write in order, and refuses what a test told it to, with
the client's own `ApiError`. With `echo`, an applied object lands in the caches as the API
server's watch would bring it back, so a second reconcile sees what the first one made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject, ObjectKey, ObjectList, keep_only
from devserver.api.resources import DEVSERVERS, FLAVORS, Resource
from devserver.client import ApiError
from devserver.controller import Controller
from devserver.informers import InformerFactory
from devserver.reconcilers import register_all
from devserver.reconcilers.kueue import KueueConfig
from devserver.reconcilers.lifecycle_config import LifecycleConfig

NAMESPACE = "dev-alice"


@dataclass(frozen=True)
class Call:
    verb: str  # apply, patch, delete, create
    kind: str
    name: str
    namespace: str
    body: Any = None
    subresource: str = ""
    version: str = field(default="", compare=False)  # the API server's answer's, if any


@dataclass
class FakeKube:
    """The KubeClient methods reconcilers use, in memory."""

    calls: list[Call] = field(default_factory=list)
    refusals: list[tuple[str, str, ApiError]] = field(default_factory=list)
    world: World | None = None  # with echo: where applied objects land
    # objects the API server holds that the caches may not (`get` answers them); a workload's
    # selector is immutable there, as on a real API server
    stored: dict[tuple[str, str], KubeObject] = field(default_factory=dict)
    version: int = 1000  # the API server's last resourceVersion: each write's answer is newer
    versions: bool = False  # answers carry it (`_next_version`)

    def _next_version(self) -> str:
        """What the API server answers a write with: without `versions` (or `World.echo`), no
        resourceVersion, as if the caches had it at once; with them, a newer one than any a
        test gives its objects (they use small ones)."""
        if not (self.versions or (self.world is not None and self.world.echo)):
            return ""
        self.version += 1
        return str(self.version)

    def _answered(self, call: Call) -> str:
        """The version `call` made, recorded on it."""
        version = self._next_version()
        object.__setattr__(call, "version", version)
        return version

    def refuse(self, verb: str, kind: str, status: int = 422, message: str = "") -> None:
        """The next and every later `verb` of a `kind` fails with an ApiError."""
        self.refusals.append((verb, kind, ApiError(status, "Invalid", message)))

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        for verb, kind, error in self.refusals:
            if verb == call.verb and kind == call.kind:
                raise error

    async def apply(
        self,
        resource: Resource[Any],
        body: dict[str, Any],
        *,
        field_manager: str,
        force: bool = True,
        subresource: str = "",
    ) -> Any:
        meta = body["metadata"]
        call = Call("apply", resource.kind, meta["name"], meta.get("namespace", ""), body)
        self._record(call)
        held = self.stored.get((resource.kind, meta["name"]))
        if held is not None and resource.kind in ("Deployment", "StatefulSet"):
            selector = (held.extra.get("spec") or {}).get("selector")
            if selector and body["spec"].get("selector") != selector:
                raise ApiError(422, "Invalid", "spec.selector: field is immutable")
        metadata = {**meta, "resourceVersion": self._answered(call)}
        applied = resource.model.model_validate({**body, "metadata": metadata})
        if self.world is not None and self.world.echo:
            self.world.put(resource, applied)
        return applied

    async def patch(
        self,
        resource: Resource[Any],
        name: str,
        patch: Any,
        namespace: str = "",
        *,
        patch_type: Any = None,
        subresource: str = "",
    ) -> KubeObject:
        call = Call("patch", resource.kind, name, namespace, patch, subresource)
        self._record(call)
        metadata = {"name": name, "namespace": namespace, "resourceVersion": self._answered(call)}
        return KubeObject.model_validate({"metadata": metadata})

    async def delete(
        self, resource: Resource[Any], name: str, namespace: str = "", **_: Any
    ) -> None:
        self._record(Call("delete", resource.kind, name, namespace))

    async def create(
        self, resource: Resource[Any], body: dict[str, Any], namespace: str = ""
    ) -> None:
        self._record(
            Call("create", resource.kind, body["metadata"].get("name", ""), namespace, body)
        )

    async def get(self, resource: Resource[Any], name: str, namespace: str = "") -> Any:
        self.calls.append(Call("get", resource.kind, name, namespace))
        if (resource.kind, name) in self.stored:
            return self.stored[(resource.kind, name)]
        raise ApiError(404, "NotFound", f"{resource.kind} {name} not found")

    async def list_page(self, resource: Resource[Any], namespace: str = "", **_: Any) -> Any:
        return ObjectList[KubeObject]()  # nothing of that kind

    # ------------------------------------------------------------------ reading the record

    def writes(self, kind: str | None = None) -> list[Call]:
        """Every write but Events, in order (optionally of one kind)."""
        return [
            c
            for c in self.calls
            if c.kind != "Event" and c.verb != "get" and kind in (None, c.kind)
        ]

    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of every Event recorded, in order."""
        return [
            (c.body["type"], c.body["reason"], c.body["message"])
            for c in self.calls
            if c.kind == "Event"
        ]

    def status_patches(self) -> list[dict[str, Any]]:
        return [c.body["status"] for c in self.calls if c.subresource == "status"]


@dataclass
class World:
    """Every controller of the operator on caches a test fills by hand."""

    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    kueue: KueueConfig = field(default_factory=KueueConfig)
    echo: bool = False
    kube: FakeKube = field(default_factory=FakeKube)
    controllers: dict[str, Controller] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kube.world = self
        self.factory = InformerFactory(self.kube)  # type: ignore[arg-type]
        register_all(
            self.factory,
            self.kube,  # type: ignore[arg-type]
            lambda c: self.controllers.__setitem__(c.name, c),
            self.lifecycle,
            kueue=self.kueue,
        )

    def put(self, resource: Resource[Any], obj: KubeObject) -> None:
        """As a watch event would: into every cache of that resource, as much of it as the
        cache keeps (`Resource.cache_keeps`), so that a reconciler reading a field its cache
        drops fails here too."""
        for informer in self.factory:
            if informer.resource == resource:
                if resource.cache_keeps is not None:  # on a copy: the test keeps its object
                    obj = type(obj).model_validate(obj.model_dump(by_alias=True, mode="json"))
                    keep_only(obj, resource.cache_keeps)
                informer.store.upsert(obj)

    def cached(self, resource: Resource[Any], name: str) -> KubeObject | None:
        """Server `box`'s object `name` as the caches of `resource` hold it."""
        for informer in self.factory:
            if informer.resource == resource:
                found: KubeObject | None = informer.store.get(ObjectKey(NAMESPACE, name))
                return found
        return None

    def deliver(self, resource: Resource[Any], call: Call) -> None:
        """What `call` (an apply) made, as its watch event brings it, late."""
        metadata = {**call.body["metadata"], "resourceVersion": call.version}
        self.put(resource, resource.model.model_validate({**call.body, "metadata": metadata}))

    async def reconcile(self, controller: str, server: DevServer | str) -> Any:
        name = server if isinstance(server, str) else server.metadata.name
        reconciler = self.controllers[controller].reconciler
        return await reconciler.reconcile(ObjectKey(NAMESPACE, name))

    def server(self, name: str = "box", **spec: Any) -> DevServer:
        """A DevServer of alice's in the caches (`status` and `annotations` go to its object)."""
        status = spec.pop("status", None)
        annotations = spec.pop("annotations", {})
        body: dict[str, Any] = {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{name}",
                "generation": 1,
                "resourceVersion": "1",
                "creationTimestamp": "2026-01-05T09:00:00Z",
                "annotations": annotations,
            },
            "spec": {"owner": "alice@example.com", "flavor": "gpu-small", "image": "pt:2", **spec},
        }
        if status is not None:
            body["status"] = status
        ds = DevServer.model_validate(body)
        self.put(DEVSERVERS, ds)
        return ds

    def flavor(self, name: str = "gpu-small", gpus: int = 1, **spec: Any) -> DevServerFlavor:
        resources = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(gpus)}
        flavor = DevServerFlavor.model_validate(
            {
                "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
                "spec": {"resources": {"requests": resources, "limits": resources}, **spec},
            }
        )
        self.put(FLAVORS, flavor)
        return flavor

    def child(self, resource: Resource[Any], name: str, **fields: Any) -> KubeObject:
        """A child object of server `box` (labelled and owned as the operator makes them)."""
        metadata = {
            "name": name,
            "namespace": NAMESPACE,
            "resourceVersion": "1",
            "labels": {"devserver.io/name": "box"},
            **fields.pop("metadata", {}),
        }
        obj = KubeObject.model_validate(
            {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": metadata}
            | fields
        )
        self.put(resource, obj)
        return obj
