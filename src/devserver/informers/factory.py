"""One informer per (resource, namespace, selectors), shared by every controller that asks.

A controller names the indexes it reads when it asks for the informer; the first to ask for an
index adds it, later ones find it there (one name, one function, one index for all).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from devserver.api.meta import ObjectT
from devserver.api.resources import Resource
from devserver.client import KubeClient
from devserver.informers.informer import Informer
from devserver.informers.reflector import ReflectorOptions
from devserver.informers.store import IndexFunc

_Key = tuple[Resource[Any], str, str, str]


class InformerFactory:
    def __init__(self, client: KubeClient, *, options: ReflectorOptions | None = None) -> None:
        self.client = client
        self.options = options or ReflectorOptions()
        self._informers: dict[_Key, Informer[Any]] = {}
        self._started = False

    def informer(
        self,
        resource: Resource[ObjectT],
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        indexers: Mapping[str, IndexFunc[ObjectT]] | None = None,
    ) -> Informer[ObjectT]:
        key: _Key = (resource, namespace, label_selector, field_selector)
        existing = self._informers.get(key)
        if existing is None:
            existing = Informer(
                self.client,
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                options=self.options,
            )
            self._informers[key] = existing
            if self._started:
                existing.start()
        elif (existing.resource.cache_keeps, existing.resource.cache_packed) != (
            resource.cache_keeps,
            resource.cache_packed,
        ):
            raise ValueError(  # two shapes of one cache: the first asked would win, silently
                f"{resource.plural} with {label_selector!r} is cached in another shape already"
            )
        informer: Informer[ObjectT] = existing
        for name, func in (indexers or {}).items():
            informer.store.ensure_indexer(name, func)
        return informer

    def start(self) -> None:
        self._started = True
        for informer in self._informers.values():
            informer.start()

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()
        self._started = False

    @property
    def synced(self) -> bool:
        return all(i.has_synced for i in self._informers.values())

    def health(self) -> tuple[bool, str]:
        bound = self.options.idle_timeout + self.options.backoff_cap + 10
        for informer in self._informers.values():
            ok, detail = informer.health(bound)
            if not ok:
                return False, detail
        return True, "ok"

    def __iter__(self) -> Iterator[Informer[Any]]:
        return iter(self._informers.values())
