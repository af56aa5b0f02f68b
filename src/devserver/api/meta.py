"""Typed views of Kubernetes objects: metadata, owner references, lists, watch events, keys.

Raw JSON becomes these models at the client boundary (pydantic parses the bytes directly, in one
pass). Only what controllers read is typed; the rest of an object (spec, status, data …) is kept
as extra fields and written back untouched. `managedFields` is dropped on purpose: it is most of
the bytes of a typical cached object and no controller reads it. An informer's cache keeps less
of kinds it only reads (`keep_only`, `Resource.cache_keeps`): an object from such a cache is
never written back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class ObjectKey(NamedTuple):
    """Where an object lives: `namespace` is "" for cluster-scoped objects."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class _SharedKeys:
    """One `ObjectKey` object per namespace and name, for what holds keys for long: a server's
    keys sit in nine stores, their indexes, the work queues and the reconcilers' books, and
    each would otherwise hold its own copy (64 bytes each, ~10 per server). Like `sys.intern`,
    but keys nobody else holds any more are swept out: when the table has doubled since the
    last sweep, every key whose only references are the table's goes."""

    SWEEP_FLOOR = 4096  # keys held before the first sweep

    def __init__(self) -> None:
        self._keys: dict[ObjectKey, ObjectKey] = {}
        self._sweep_at = self.SWEEP_FLOOR
        # the reference count a key held by the table alone shows to `_unheld`, found by
        # asking it (the count of a reference held by the caller differs between versions)
        probe = {ObjectKey("", ""): ObjectKey("", "")}
        probe = {key: key for key in probe}
        self._alone = next(n for n in range(1, 64) if self._unheld(probe, n))

    @staticmethod
    def _unheld(keys: dict[ObjectKey, ObjectKey], alone: int) -> list[ObjectKey]:
        return [key for key in keys if sys.getrefcount(key) <= alone]

    def __call__(self, key: ObjectKey) -> ObjectKey:
        held = self._keys.get(key)
        if held is not None:
            return held
        key = ObjectKey(sys.intern(key.namespace), sys.intern(key.name))
        self._keys[key] = key
        if len(self._keys) >= self._sweep_at:
            self.sweep()
        return key

    def sweep(self) -> int:
        """Drop the keys only the table holds; how many went."""
        unheld = self._unheld(self._keys, self._alone)
        for key in unheld:
            del self._keys[key]
        self._sweep_at = max(self.SWEEP_FLOOR, 2 * len(self._keys))
        return len(unheld)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


shared_key = _SharedKeys()


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
_FIELDS_SETS_MAX = 4096  # distinct combinations of given fields; beyond, instances keep their own


def share_fields_set(model: BaseModel) -> None:
    """pydantic gives each instance its own set of the fields it was given: 200-700 bytes, a
    fifth of a cached object's metadata. Our models are frozen, and pydantic copies the set
    before changing it (`model_copy`), so instances given the same fields share one set."""
    mine = model.__pydantic_fields_set__
    key = frozenset(mine)
    shared = _FIELDS_SETS.get(key)
    if shared is None:
        if len(_FIELDS_SETS) < _FIELDS_SETS_MAX:
            _FIELDS_SETS[key] = mine
    elif shared is not mine:
        object.__setattr__(model, "__pydantic_fields_set__", shared)


class _Model(BaseModel):
    # defer_build: a schema is built when a model is first used, not when it is imported
    # (devctl imports every model and uses one or two)
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore", defer_build=True)

    def model_post_init(self, context: Any, /) -> None:
        share_fields_set(self)


class OwnerReference(_Model):
    api_version: str = Field(alias="apiVersion")
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = Field(default=None, alias="blockOwnerDeletion")

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


class ObjectMeta(_Model):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = Field(default="", alias="resourceVersion")
    generation: int = 0
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(default=None, alias="deletionTimestamp")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: tuple[OwnerReference, ...] = Field(default=(), alias="ownerReferences")
    finalizers: tuple[str, ...] = ()


class KubeObject(_Model):
    """Any Kubernetes object; fields other than these stay available as extras (`.extra`)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="allow")

    api_version: str = Field(default="", alias="apiVersion")
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.metadata.namespace, self.metadata.name)

    @property
    def extra(self) -> dict[str, Any]:
        return self.__pydantic_extra__ or {}


ObjectT = TypeVar("ObjectT", bound=KubeObject)


class Digest:
    """In a `Keep`: the cache holds only a digest of the value (`digest_of`; of each value of
    a map), enough to tell whether it is what the operator writes (the agent's scripts: ~45 KB
    per namespace, 71 bytes a file so). `as_cached` puts an intent in the same form."""

    def __repr__(self) -> str:
        return "DIGEST"


DIGEST = Digest()

# What a cache keeps of an object's fields beyond metadata: a key maps to True (the whole value),
# DIGEST (a digest of it) or to what it keeps of the object under that key. A key not named is
# dropped.
Keep = Mapping[str, "bool | Digest | Keep"]


def digest_of(value: Any) -> str:
    """A digest of a JSON value, the same for the same content however it was written."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _digested(value: Any) -> Any:
    """A map's values each as a digest (so a key someone else added is one more key, and an
    intent without it still reads as applied); any other value as one digest. A digest
    again is itself: keeping an object twice changes nothing."""
    if isinstance(value, dict):
        return {key: _digested_leaf(inner) for key, inner in value.items()}
    return _digested_leaf(value)


def _digested_leaf(value: Any) -> str:
    if isinstance(value, str):
        if len(value) == 71 and value.startswith("sha256:"):
            return value
        if len(value) <= _MEMO_TEXT_MAX:
            return _text_digest(value)
    return digest_of(value)


# Every reconcile compares the same scripts (~25 KB, five files) with its namespace's copy,
# and a start digests 2,000 listed copies of them: a few texts, digested once each. Bounded in
# count and length (16 texts of at most 64 Ki characters, at most 4 bytes each), so texts
# someone else writes there cannot make it hold more than 4 MiB.
_MEMO_TEXT_MAX = 64 * 1024


@functools.lru_cache(maxsize=16)
def _text_digest(text: str) -> str:
    return digest_of(text)


def as_cached(fields: dict[str, Any], keep: Keep | None) -> dict[str, Any]:
    """`fields` (of an intent) with each value a cache holds as a digest replaced by its
    digest: what the cached live object holds there when it has what the intent says."""
    if keep is None:
        return fields
    shaped = dict(fields)
    for name, inner in keep.items():
        if name not in shaped:
            continue
        if isinstance(inner, Digest):
            shaped[name] = _digested(shaped[name])
        elif isinstance(inner, Mapping) and isinstance(shaped[name], dict):
            shaped[name] = as_cached(shaped[name], inner)
    return shaped


def keep_only(obj: KubeObject, keep: Keep) -> None:
    """Drop from `obj`, in place, what `keep` does not name. Only for an object no one else
    holds yet: the informer's, between its decoding and its cache."""
    extra = obj.__pydantic_extra__
    if extra:
        for name in list(extra):
            kept = _kept(extra[name], keep.get(name, False))
            if kept is _DROP:
                del extra[name]
            else:
                extra[name] = kept


_DROP = object()


def _kept(value: Any, keep: bool | Digest | Keep) -> Any:
    if keep is True:
        return value
    if isinstance(keep, Digest):
        return _digested(value)
    if keep is False or not isinstance(value, dict):
        return _DROP if keep is False else value
    kept = {}
    for name, inner in value.items():
        if (chosen := _kept(inner, keep.get(name, False))) is not _DROP:
            kept[name] = chosen
    return kept


class Unreadable(KubeObject):
    """An object the API server stored that our model cannot read; `problem` says why. It
    never reaches a typed cache: a reconciler sees it as absent, a reporter writes its status."""

    problem: str = ""


class ListMeta(_Model):
    resource_version: str = Field(default="", alias="resourceVersion")
    continue_: str = Field(default="", alias="continue")
    remaining_item_count: int | None = Field(default=None, alias="remainingItemCount")


class ObjectList(_Model, Generic[ObjectT]):
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[ObjectT] = Field(default_factory=list)
    # items of the page that the model could not read (see `client.kube.decode_list`)
    unreadable: list[Unreadable] = Field(default_factory=list, exclude=True)


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


class Status(_Model):
    """The API server's error body (and a watch ERROR event's object)."""

    code: int = 0
    reason: str = ""
    message: str = ""


INITIAL_EVENTS_END = "k8s.io/initial-events-end"
