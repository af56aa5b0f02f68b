"""Writing the status of our own kinds (DevServer, DevServerFlavor, DevUser): only when it
changed, building on what we wrote.

Only the operator writes these statuses, so what it last wrote is newer than a cache that has
not caught up with it yet; building on it avoids repeating the same patch and Event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel

from devserver.api.meta import ObjectKey, ObjectMeta
from devserver.api.resources import Resource
from devserver.client import KubeClient
from devserver.controller.applied import write_status_if_changed


class _Status(Protocol):
    @property
    def conditions(self) -> Any: ...

    def model_dump(self, *, by_alias: bool, mode: str, exclude_none: bool) -> dict[str, Any]: ...


class WithStatus(Protocol):
    @property
    def metadata(self) -> ObjectMeta: ...

    @property
    def key(self) -> ObjectKey: ...

    @property
    def status(self) -> _Status | None: ...

    def model_copy(self, *, update: dict[str, Any]) -> Self: ...


T = TypeVar("T", bound=WithStatus)
Announce = Callable[[T, dict[str, Any]], Awaitable[None]]


@dataclass
class StatusWriter(Generic[T]):
    client: KubeClient
    resource: Resource[Any]
    status_model: type[BaseModel]
    _written: dict[ObjectKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def latest(self, obj: T) -> T:
        """`obj` with the status we last wrote for it, if the cache is behind. Once the cache
        has it (or another's since), it is forgotten: only writes in flight are held, not a
        copy of every server's status."""
        written = self._written.get(obj.key)
        if written is None:
            return obj
        unreadable_then = obj.status is not None and any(
            c.reason == "Unreadable" for c in obj.status.conditions
        )  # written by the unreadable reporter since: the cache is the newer one
        if written[0] != obj.metadata.uid or unreadable_then or current_status(obj) == written[1]:
            del self._written[obj.key]
            return obj
        return obj.model_copy(update={"status": self.status_model.model_validate(written[1])})

    async def write(
        self, obj: T, status: dict[str, Any], announce: Announce[T] | None = None
    ) -> None:
        """Announce the transitions (Events), then patch, when `status` differs."""
        current = current_status(obj)
        if status == current:
            return
        if announce is not None:
            await announce(obj, status)
        await write_status_if_changed(self.client, self.resource, obj.key, status, current)
        self._written[obj.key] = (obj.metadata.uid, status)

    def forget(self, key: ObjectKey) -> None:
        self._written.pop(key, None)


def current_status(obj: WithStatus) -> dict[str, Any]:
    if obj.status is None:
        return {}
    return obj.status.model_dump(by_alias=True, mode="json", exclude_none=True)
