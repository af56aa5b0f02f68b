"""A shared informer: one reflector, one store, any number of handlers.

Each handler gets its own queue of notifications and its own task, so a slow handler delays only
itself; its backlog is a metric. Notifications carry the objects themselves (immutable models),
including the last known state of deleted ones. Resync re-delivers the cached objects as updates
(old is new) without asking the API server anything.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic

import structlog

from devserver.api.meta import ObjectKey, ObjectT, Unreadable, keep_only
from devserver.api.resources import Resource
from devserver.client import KubeClient
from devserver.informers.reflector import FAN_OUT_BATCH, Reflector, ReflectorOptions
from devserver.informers.store import IndexFunc, Replacement, Store
from devserver.observability import metrics

log = structlog.get_logger("devserver.informer")


class Change(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class Notification(Generic[ObjectT]):
    change: Change
    obj: ObjectT
    old: ObjectT | None = None  # for updates; for a resync, old is obj


Handler = Callable[[Notification[ObjectT]], Awaitable[None] | None]


class _HandlerRunner(Generic[ObjectT]):
    def __init__(self, name: str, handler: Handler[ObjectT], resource: str) -> None:
        self.name, self.handler = name, handler
        self.queue: asyncio.Queue[Notification[ObjectT]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        metrics.Backlog(resource, name, self.queue.qsize)

    def push(self, note: Notification[ObjectT]) -> None:
        self.queue.put_nowait(note)

    async def run(self) -> None:
        while True:
            note = await self.queue.get()
            try:
                result = self.handler(note)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler failed", handler=self.name, key=str(note.obj.key))


class Informer(Generic[ObjectT]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource[ObjectT],
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        indexers: Mapping[str, IndexFunc[ObjectT]] | None = None,
        resync_period: float | None = None,
        options: ReflectorOptions | None = None,
    ) -> None:
        self.resource = resource
        packed = resource.model if resource.cache_packed else None
        self.store: Store[ObjectT] = Store(indexers, packed=packed)
        self.reflector = Reflector(
            client,
            resource,
            self,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            options=options,
        )
        self.name = self.reflector.name
        self.resync_period = resync_period
        self._handlers: list[_HandlerRunner[ObjectT]] = []
        self._unreadable_handlers: list[Callable[[Unreadable], None]] = []
        self.unreadable_now: dict[ObjectKey, Unreadable] = {}
        self._synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ public

    def add_handler(self, name: str, handler: Handler[ObjectT]) -> None:
        """Register before or after start; a late handler first receives every cached object."""
        runner = _HandlerRunner(name, handler, self.name)
        self._handlers.append(runner)
        for obj in self.store.objects():
            runner.push(Notification(Change.ADDED, obj))
        if self._tasks:
            runner.task = asyncio.create_task(runner.run(), name=f"handler:{self.name}:{name}")
            self._tasks.append(runner.task)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self.reflector.run(), name=f"reflector:{self.name}"))
        for runner in self._handlers:
            runner.task = asyncio.create_task(
                runner.run(), name=f"handler:{self.name}:{runner.name}"
            )
            self._tasks.append(runner.task)
        if self.resync_period:
            self._tasks.append(asyncio.create_task(self._resync_loop(), name=f"resync:{self.name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def health(self, idle_bound: float) -> tuple[bool, str]:
        """Unhealthy when the watch loop died or has made no progress for `idle_bound` s."""
        if self._tasks and self._tasks[0].done():
            return False, f"{self.name}: watch loop ended"
        silent = self.reflector.silent_for
        if silent > idle_bound:
            return False, f"{self.name}: no watch progress for {silent:.0f} s"
        return True, "ok"

    # ------------------------------------------------------------------ ReflectorSink

    def kept(self, obj: ObjectT) -> ObjectT:
        """What the cache keeps of a decoded object (`Resource.cache_keeps`); the same object
        again when it was kept already."""
        if self.resource.cache_keeps is not None:
            keep_only(obj, self.resource.cache_keeps)
        return obj

    def replacement(self) -> Replacement[ObjectT]:
        """Where a list puts what it reads, object by object (kept first: `kept`): the store
        itself until it first syncs (`_FirstList`), else a replacement built aside."""
        if not self.store.has_synced:
            return _FirstList(self)
        return self.store.replacement()

    async def replace(
        self, listed: Replacement[ObjectT], unreadable: list[Unreadable] | None = None
    ) -> None:
        """The end of a list. A first list (`_FirstList`) is in the store and told already:
        it is synced now. A later one is swapped in, then the handlers are told what changed,
        a batch at a time with a yield between batches: the objects are decoded as they are
        told, and dropped once every handler has seen them."""
        self.unreadable_now = {obj.key: obj for obj in unreadable or []}
        if isinstance(listed, _FirstList):
            if listed.seen is not None:  # a retry: what only a failed attempt found is gone
                for key in set(self.store.keys()) - listed.seen:
                    if (last := self.store.delete(key)) is not None:
                        self._fan_out(Notification(Change.DELETED, last))
            self.store.has_synced = True
            self._synced.set()
            for bad in unreadable or []:
                self._report_unreadable(bad)
            return
        changes = self.store.swap(listed)
        store, told = self.store, 0
        for key in changes.added:
            if (obj := store.get(key)) is not None:  # it is: nothing changes it meanwhile
                self._fan_out(Notification(Change.ADDED, obj))
            told = await self._pace(told)
        for key, old in changes.updated:
            if (obj := store.get(key)) is not None:
                self._fan_out(Notification(Change.UPDATED, obj, store.decoded(old)))
            told = await self._pace(told)
        for gone in changes.deleted:
            self._fan_out(Notification(Change.DELETED, store.decoded(gone)))
            told = await self._pace(told)
        self._synced.set()
        for bad in unreadable or []:
            self._report_unreadable(bad)

    async def _pace(self, told: int) -> int:
        if told % FAN_OUT_BATCH == FAN_OUT_BATCH - 1:
            await asyncio.sleep(0)  # the handlers take what they were told
        return told + 1

    def unreadable(self, obj: Unreadable) -> None:
        """Stored, but not readable by our model: out of the cache (a reconciler sees it as
        absent, and deletes nothing for it), and reported to whoever can tell its owner."""
        self.unreadable_now[obj.key] = obj
        old = self.store.delete(obj.key)
        if old is not None:
            self._fan_out(Notification(Change.DELETED, old))
        self._report_unreadable(obj)

    def add_unreadable_handler(self, handler: Callable[[Unreadable], None]) -> None:
        self._unreadable_handlers.append(handler)

    def _report_unreadable(self, obj: Unreadable) -> None:
        metrics.UNREADABLE_OBJECTS.labels(resource=self.name).inc()
        log.error("object unreadable by our model", key=str(obj.key), problem=obj.problem)
        for handler in self._unreadable_handlers:
            handler(obj)

    def upsert(self, obj: ObjectT) -> None:
        self.unreadable_now.pop(obj.key, None)
        old = self.store.upsert(self.kept(obj))
        self._fan_out(
            Notification(Change.ADDED, obj)
            if old is None
            else Notification(Change.UPDATED, obj, old)
        )

    def _listed(self, obj: ObjectT) -> None:
        """An object of the first list: stored and told now, decoded once (`_FirstList`)."""
        old = self.store.upsert(obj)
        if old is None:
            self._fan_out(Notification(Change.ADDED, obj))
        elif old.metadata.resource_version != obj.metadata.resource_version:
            self._fan_out(Notification(Change.UPDATED, obj, old))  # since a failed attempt

    def remove(self, obj: ObjectT) -> None:
        self.unreadable_now.pop(obj.key, None)
        self.kept(obj)
        old = self.store.delete(obj.key)
        self._fan_out(Notification(Change.DELETED, old if old is not None else obj))

    # ------------------------------------------------------------------ internals

    def _fan_out(self, note: Notification[ObjectT]) -> None:
        for runner in self._handlers:
            runner.push(note)

    async def _resync_loop(self) -> None:
        assert self.resync_period is not None
        while True:
            await asyncio.sleep(self.resync_period)
            if self.has_synced:
                for obj in self.store.objects():
                    self._fan_out(Notification(Change.UPDATED, obj, obj))


class _FirstList(Replacement[ObjectT]):
    """The first list of an informer: each object goes into the store and to the handlers as
    it arrives, so it is decoded once. A later list is built aside and diffed against the
    store (`Informer.replace`), which decodes every object twice: once from the wire, once as
    it is told. Until the list ends the store is partial and not synced (controllers wait for
    that); a list that fails midway is retried into the same store, and what it no longer
    finds is deleted at the end. The handlers get the objects as they are read, as many at a
    time as one read of the stream holds: a handler's task empties its queue whenever the
    reflector waits for the next bytes."""

    def __init__(self, informer: Informer[ObjectT]) -> None:
        super().__init__(informer.store)
        self._informer = informer
        # a retry's keys, to find what went meanwhile; a first attempt has nothing to compare
        self.seen: set[ObjectKey] | None = set() if len(informer.store) else None

    def add(self, obj: ObjectT) -> None:
        if self.seen is not None:
            self.seen.add(obj.key)
        self._informer._listed(obj)
