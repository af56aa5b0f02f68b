"""The cache of one resource: objects by key, secondary indexes, and a synced flag.

Readers get immutable pydantic models; only the informer that owns a store mutates it, and
every mutation is synchronous (no `await` inside), so on one event loop a reader never sees a
half-applied change. `replace()` builds the new maps aside and swaps them in one step: readers
see either the old world or the new one, never a mix. An informer's first list goes into the
store object by object instead (`Informer.replacement`): until it is synced, a store may hold
a part of the world, and controllers wait for the stores they read (`Controller.reads`).

A packed store (`packed=` the model; `Resource.cache_packed`) holds each object as its JSON,
deflated with the first object it stored as the preset dictionary (objects of one kind differ
in little but names, uids and times), and decodes it on every read: a server's nine objects
take ~0.7 KB of deflated JSON where their models take 57 KB, for 5 to 40 µs a read. Kinds with
one object or more per server are packed; kinds read whole (nodes, users, flavors) are not.
Indexes are worked out when an object is stored: `index_keys` answers from them alone, without
decoding; an index value with one object holds its key alone, not a set of one (~200 bytes),
and keys are shared (`shared_key`: a server's objects share their namespace, most their name). The
last objects stored or read are kept decoded as well (`RECENT`): a reconcile reads the objects
of one server several times, most often just after they changed.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic

from pydantic_core import PydanticSerializationError

from devserver.api.meta import ObjectKey, ObjectT, shared_key

IndexFunc = Callable[[ObjectT], Iterable[str]]

NAMESPACE_INDEX = "namespace"
OWNER_UID_INDEX = "owner-uid"


def by_namespace(obj: ObjectT) -> Iterable[str]:
    return (obj.metadata.namespace,)


def by_owner_uid(obj: ObjectT) -> Iterable[str]:
    return tuple(ref.uid for ref in obj.metadata.owner_references)


# the common indexes, for a reader to ask for by name (`InformerFactory.informer(indexers=)`):
# a store holds only the indexes someone reads, each ~2-3 MB at 10,000 objects
NAMESPACED: Mapping[str, IndexFunc[ObjectT]] = {NAMESPACE_INDEX: by_namespace}  # type: ignore[valid-type]
OWNED: Mapping[str, IndexFunc[ObjectT]] = {OWNER_UID_INDEX: by_owner_uid}  # type: ignore[valid-type]


Bucket = ObjectKey | set[ObjectKey]  # an index value's objects: one key alone, or a set


def _keys(bucket: Bucket | None) -> Iterable[ObjectKey]:
    if bucket is None:
        return ()
    return bucket if isinstance(bucket, set) else (bucket,)


def _add(index: dict[str, Bucket], value: str, key: ObjectKey) -> None:
    bucket = index.get(value)
    if bucket is None:
        index[value] = key
    elif isinstance(bucket, set):
        bucket.add(key)
    elif bucket != key:
        index[value] = {bucket, key}


def _discard(index: dict[str, Bucket], value: str, key: ObjectKey) -> None:
    bucket = index.get(value)
    if isinstance(bucket, set):
        bucket.discard(key)
        if len(bucket) == 1:
            index[value] = next(iter(bucket))
        elif not bucket:
            del index[value]
    elif bucket == key:
        del index[value]


@dataclass(frozen=True)
class Changes(Generic[ObjectT]):
    """What a swap changed: keys, and the old states as the store held them (packed or not)."""

    added: list[ObjectKey]
    updated: list[tuple[ObjectKey, ObjectT | bytes]]  # the key, and its state before
    deleted: list[ObjectT | bytes]  # the last state of each object that vanished


class Replacement(Generic[ObjectT]):
    """A store's next contents, built aside as a list arrives, page by page, and swapped in at
    once. Each object is packed as it comes and what changed is kept as keys, so that a start
    never holds every listed object decoded at once (at 10,000 servers, ~0.6 GB)."""

    def __init__(self, store: Store[ObjectT]) -> None:
        self._store = store
        self.items: dict[ObjectKey, ObjectT | bytes] = {}
        self.indices: dict[str, dict[str, Bucket]] = {n: {} for n in store.indexer_names}
        self.added: list[ObjectKey] = []
        self.updated: list[tuple[ObjectKey, ObjectT | bytes]] = []

    def add(self, obj: ObjectT) -> None:
        store = self._store
        key = shared_key(obj.key)
        self.items[key] = new = store._pack(obj)
        store._index(key, obj, self.indices)
        held = store._items.get(key)
        if held is None:
            self.added.append(key)
        elif not (isinstance(new, bytes) and held == new):  # the same bytes: unchanged
            rv = store.decoded(held).metadata.resource_version
            if rv != obj.metadata.resource_version:
                self.updated.append((key, held))


@dataclass(frozen=True)
class ReplaceResult(Generic[ObjectT]):
    added: list[ObjectT]
    updated: list[tuple[ObjectT, ObjectT]]  # (old, new), only where resourceVersion changed
    deleted: list[ObjectT]  # last known state of objects that vanished


PACK_LEVEL = 1  # zlib's fastest: with the preset dictionary, a cached object ~8 times smaller
EXEMPLAR_BYTES = 16384  # of the first object's JSON, the preset dictionary (deflate uses 32 KB)
RECENT = 64  # objects of a packed store kept decoded: the last stored or read


class Store(Generic[ObjectT]):
    def __init__(
        self,
        indexers: Mapping[str, IndexFunc[ObjectT]] | None = None,
        *,
        packed: type[ObjectT] | None = None,
    ) -> None:
        self._indexers: dict[str, IndexFunc[ObjectT]] = dict(indexers or {})
        self._model = packed
        self._items: dict[ObjectKey, ObjectT | bytes] = {}
        self._recent: OrderedDict[ObjectKey, tuple[bytes, ObjectT]] = OrderedDict()
        self._exemplar = b""  # the preset dictionary: set once, by the first object packed
        self._indices: dict[str, dict[str, Bucket]] = {n: {} for n in self._indexers}
        self.has_synced = False

    # ------------------------------------------------------------------ reads

    def get(self, key: ObjectKey) -> ObjectT | None:
        held = self._items.get(key)
        return None if held is None else self._read(key, held)

    def objects(self) -> list[ObjectT]:
        return [self._unpack(held) for held in self._items.values()]

    def keys(self) -> list[ObjectKey]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[ObjectT]:
        keys = _keys(self._indices[index].get(value))
        return [self._read(k, self._items[k]) for k in keys]

    def index_keys(self, index: str, value: str) -> set[ObjectKey]:
        """The keys of the objects under `value` in `index`, nothing decoded (a copy)."""
        return set(_keys(self._indices[index].get(value)))

    def index_count(self, index: str, value: str) -> int:
        """How many objects are under `value` in `index`, nothing copied."""
        bucket = self._indices[index].get(value)
        return len(bucket) if isinstance(bucket, set) else int(bucket is not None)

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
        self._indices[name] = self._built(name, self._items)

    def _built(self, name: str, items: dict[ObjectKey, ObjectT | bytes]) -> dict[str, Bucket]:
        index: dict[str, Bucket] = {}
        for key, held in items.items():
            for value in self._indexers[name](self._unpack(held)):
                _add(index, value, key)
        return index

    def ensure_indexer(self, name: str, func: IndexFunc[ObjectT]) -> None:
        """Add the index unless it is there; the same name with another function is a bug."""
        present = self._indexers.get(name)
        if present is None:
            self.add_indexer(name, func)
        elif present is not func:
            raise ValueError(f"indexer {name!r} already exists with another function")

    def upsert(self, obj: ObjectT) -> ObjectT | None:
        key = shared_key(obj.key)
        new = self._pack(obj)
        held = self._items.get(key)
        old = None if held is None else self._read(key, held)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = new
        self._index(key, obj, self._indices)
        self._recall(key, new, obj)
        return old

    def delete(self, key: ObjectKey) -> ObjectT | None:
        held = self._items.pop(key, None)
        old = None if held is None else self._read(key, held)
        self._recent.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objects: Iterable[ObjectT]) -> ReplaceResult[ObjectT]:
        """Make the store exactly `objects`; report what changed relative to before."""
        listed = self.replacement()
        for obj in objects:
            listed.add(obj)
        changes = self.swap(listed)
        return ReplaceResult(
            [self._read(key, self._items[key]) for key in changes.added],
            [
                (self.decoded(old), self._read(key, self._items[key]))
                for key, old in changes.updated
            ],
            [self.decoded(old) for old in changes.deleted],
        )

    def replacement(self) -> Replacement[ObjectT]:
        """The next contents of the store, built aside object by object (`swap` them in)."""
        return Replacement(self)

    def swap(self, listed: Replacement[ObjectT]) -> Changes[ObjectT]:
        """Make the store exactly what `listed` holds, in one step; what changed, as keys and
        the old states as held (`decoded` reads them)."""
        deleted = [held for key, held in self._items.items() if key not in listed.items]
        for name in self._indexers.keys() - listed.indices.keys():  # asked for meanwhile
            listed.indices[name] = self._built(name, listed.items)
        self._items, self._indices = listed.items, listed.indices
        self._recent.clear()
        self.has_synced = True
        return Changes(listed.added, listed.updated, deleted)

    def decoded(self, held: ObjectT | bytes) -> ObjectT:
        """An old state from `Changes`, as the model."""
        return self._unpack(held)

    def _pack(self, obj: ObjectT) -> ObjectT | bytes:
        """Its compressed JSON in a packed store; the object itself when JSON cannot carry it
        (a string the API server never sends), and in a plain store."""
        if self._model is None:
            return obj
        try:
            text = obj.model_dump_json(by_alias=True, exclude_unset=True).encode()
        except (PydanticSerializationError, UnicodeEncodeError):
            return obj
        if not self._exemplar:
            self._exemplar = text[:EXEMPLAR_BYTES]
        deflate = zlib.compressobj(PACK_LEVEL, zlib.DEFLATED, -15, zdict=self._exemplar)
        return deflate.compress(text) + deflate.flush()

    def _unpack(self, held: ObjectT | bytes) -> ObjectT:
        if isinstance(held, bytes):
            assert self._model is not None
            inflate = zlib.decompressobj(-15, zdict=self._exemplar)
            return self._model.model_validate_json(inflate.decompress(held) + inflate.flush())
        return held

    def _read(self, key: ObjectKey, held: ObjectT | bytes) -> ObjectT:
        """`held` decoded, from the recent ones when it is there (the same bytes: not stale)."""
        if not isinstance(held, bytes):
            return held
        recent = self._recent.get(key)
        if recent is not None and recent[0] is held:
            self._recent.move_to_end(key)
            return recent[1]
        obj = self._unpack(held)
        self._recall(key, held, obj)
        return obj

    def _recall(self, key: ObjectKey, held: ObjectT | bytes, obj: ObjectT) -> None:
        if isinstance(held, bytes):
            self._recent[shared_key(key)] = (held, obj)  # not the caller's copy of the key
            self._recent.move_to_end(key)
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)

    def _index(self, key: ObjectKey, obj: ObjectT, indices: dict[str, dict[str, Bucket]]) -> None:
        for name, index in indices.items():  # a replacement's: those asked for when it began
            for value in self._indexers[name](obj):
                _add(index, value, key)

    def _unindex(self, key: ObjectKey, obj: ObjectT) -> None:
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in func(obj):
                _discard(index, value, key)
