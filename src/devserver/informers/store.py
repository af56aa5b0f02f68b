"""The cache of one resource: objects by key, secondary indexes, and a synced flag.

Readers get immutable pydantic models; only the informer that owns a store mutates it, and
every mutation is synchronous (no `await` inside), so on one event loop a reader never sees a
half-applied change. `replace()` builds the new maps aside and swaps them in one step: readers
see either the old world or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic

from devserver.api.meta import ObjectKey, ObjectT

IndexFunc = Callable[[ObjectT], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"


def by_namespace(obj: ObjectT) -> Iterable[str]:
    return (obj.metadata.namespace,)


def by_owner_uid(obj: ObjectT) -> Iterable[str]:
    return tuple(ref.uid for ref in obj.metadata.owner_references)


DEFAULT_INDEXERS: Mapping[str, IndexFunc[ObjectT]] = {  # type: ignore[valid-type]
    NAMESPACE_INDEX: by_namespace,
    OWNER_UID_INDEX: by_owner_uid,
}


@dataclass(frozen=True)
class ReplaceResult(Generic[ObjectT]):
    added: list[ObjectT]
    updated: list[tuple[ObjectT, ObjectT]]  # (old, new), only where resourceVersion changed
    deleted: list[ObjectT]  # last known state of objects that vanished


class Store(Generic[ObjectT]):
    def __init__(self, indexers: Mapping[str, IndexFunc[ObjectT]] | None = None) -> None:
        self._indexers: dict[str, IndexFunc[ObjectT]] = dict(
            DEFAULT_INDEXERS if indexers is None else indexers
        )
        self._items: dict[ObjectKey, ObjectT] = {}
        self._indices: dict[str, dict[str, set[ObjectKey]]] = {n: {} for n in self._indexers}
        self.has_synced = False

    # ------------------------------------------------------------------ reads

    def get(self, key: ObjectKey) -> ObjectT | None:
        return self._items.get(key)

    def objects(self) -> list[ObjectT]:
        return list(self._items.values())

    def keys(self) -> list[ObjectKey]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[ObjectT]:
        keys = self._indices[index].get(value, ())
        return [self._items[k] for k in keys]

    def index_values(self, index: str) -> list[str]:
        return list(self._indices[index])

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    # ------------------------------------------------------------------ writes (owner only)

    @property
    def indexer_names(self) -> list[str]:
        return list(self._indexers)

    def add_indexer(self, name: str, func: IndexFunc[ObjectT]) -> None:
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = func
        index: dict[str, set[ObjectKey]] = {}
        for key, obj in self._items.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)
        self._indices[name] = index

    def ensure_indexer(self, name: str, func: IndexFunc[ObjectT]) -> None:
        """Add the index unless it is there; the same name with another function is a bug."""
        present = self._indexers.get(name)
        if present is None:
            self.add_indexer(name, func)
        elif present is not func:
            raise ValueError(f"indexer {name!r} already exists with another function")

    def upsert(self, obj: ObjectT) -> ObjectT | None:
        key = obj.key
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj, self._indices)
        return old

    def delete(self, key: ObjectKey) -> ObjectT | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objects: Iterable[ObjectT]) -> ReplaceResult[ObjectT]:
        """Make the store exactly `objects`; report what changed relative to before."""
        items: dict[ObjectKey, ObjectT] = {}
        indices: dict[str, dict[str, set[ObjectKey]]] = {n: {} for n in self._indexers}
        added: list[ObjectT] = []
        updated: list[tuple[ObjectT, ObjectT]] = []
        for obj in objects:
            key = obj.key
            items[key] = obj
            self._index(key, obj, indices)
            old = self._items.get(key)
            if old is None:
                added.append(obj)
            elif old.metadata.resource_version != obj.metadata.resource_version:
                updated.append((old, obj))
        deleted = [old for key, old in self._items.items() if key not in items]
        self._items, self._indices = items, indices
        self.has_synced = True
        return ReplaceResult(added, updated, deleted)

    def _index(
        self, key: ObjectKey, obj: ObjectT, indices: dict[str, dict[str, set[ObjectKey]]]
    ) -> None:
        for name, func in self._indexers.items():
            index = indices[name]
            for value in func(obj):
                index.setdefault(value, set()).add(key)

    def _unindex(self, key: ObjectKey, obj: ObjectT) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
