"""Writing a DevServer's status, for every mode: only when it changed, building on what we wrote.

Only the operator writes this status, so what it last wrote is newer than a cache that has not
caught up with it yet; building on it avoids repeating the same patch and Event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from devserver.api.devserver import DevServer, DevServerStatus
from devserver.api.meta import ObjectKey
from devserver.api.resources import DEVSERVERS
from devserver.client import KubeClient
from devserver.controller.applied import write_status_if_changed

Announce = Callable[[DevServer, dict[str, Any]], Awaitable[None]]


@dataclass
class StatusWriter:
    client: KubeClient
    _written: dict[ObjectKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def latest(self, ds: DevServer) -> DevServer:
        """`ds` with the status we last wrote for it, if the cache is behind."""
        written = self._written.get(ds.key)
        unreadable_then = ds.status is not None and any(
            c.reason == "Unreadable" for c in ds.status.conditions
        )  # written by the unreadable reporter since: the cache is the newer one
        if written is not None and written[0] == ds.metadata.uid and not unreadable_then:
            return ds.model_copy(update={"status": DevServerStatus.model_validate(written[1])})
        return ds

    async def write(self, ds: DevServer, status: dict[str, Any], announce: Announce) -> None:
        """Announce the transitions (Events), then patch, when `status` differs."""
        current = current_status(ds)
        if status == current:
            return
        await announce(ds, status)
        await write_status_if_changed(self.client, DEVSERVERS, ds.key, status, current)
        self._written[ds.key] = (ds.metadata.uid, status)

    def forget(self, key: ObjectKey) -> None:
        self._written.pop(key, None)


def current_status(ds: DevServer) -> dict[str, Any]:
    if ds.status is None:
        return {}
    return ds.status.model_dump(by_alias=True, mode="json", exclude_none=True)
