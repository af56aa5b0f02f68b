"""A controller: informers feed keys into a rate-limited queue; N workers reconcile them.

The worker loop is one small switch over the outcome of a reconcile, each branch bumping a
metric (controller-runtime's semantics):

- raised `TerminalError` → dropped (forget), counted as a terminal error;
- raised anything else → retried with per-key exponential backoff under a global rate limit;
- `Result(requeue_after=s)` → forget the failures, reconcile again in `s` seconds;
- otherwise → success, forget the failures.

Caches must be synced before the first worker starts; a sync slower than `sync_timeout` fails
start-up loudly instead of reconciling against a partial cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from devserver.api.meta import KubeObject, ObjectKey, shared_key
from devserver.api.resources import Resource
from devserver.controller.owners import owner_keys
from devserver.controller.predicates import Predicate, generation_changed
from devserver.controller.reconciler import Reconciler, TerminalError
from devserver.informers.informer import Informer, Notification
from devserver.observability import metrics
from devserver.workqueue import RateLimitingQueue, ShutDown, default_controller_rate_limiter

log = structlog.get_logger("devserver.controller")

Mapper = Callable[[KubeObject], Iterable[ObjectKey]]


class CacheSyncTimeoutError(RuntimeError):
    pass


async def wait_synced(informers: list[Informer[Any]], timeout: float, who: str) -> None:
    """Until every one of `informers` has synced; `CacheSyncTimeoutError` naming those that
    have not within `timeout` s (a controller's own, or a manager's all)."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(i.wait_synced() for i in informers))
    except TimeoutError:
        pending = [i.name for i in informers if not i.has_synced]
        raise CacheSyncTimeoutError(
            f"{who}: caches {pending} did not sync within {timeout:.0f} s;"
            " check that the operator may list and watch them"
        ) from None


class Controller:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        sync_timeout: float = 120.0,
        queue: RateLimitingQueue[ObjectKey] | None = None,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self.workers = workers
        self.sync_timeout = sync_timeout
        self.queue: RateLimitingQueue[ObjectKey] = queue or RateLimitingQueue(
            default_controller_rate_limiter(), name=name, metrics=metrics.QueueMetrics
        )
        self._informers: list[Informer[Any]] = []
        self._active = 0
        metrics.init_controller_metrics(name, max_concurrent_reconciles=workers)

    # ------------------------------------------------------------------ wiring

    def watch(
        self, informer: Informer[Any], *predicates: Predicate, urgent: Predicate | None = None
    ) -> None:
        """Reconcile the object of every (filtered) notification: the primary resource. Keys of
        notifications `urgent` accepts go ahead of all others in the queue (default: a user's
        own change — created, spec edited, deleted — before the echoes of children)."""
        self.watch_mapped(
            informer, lambda obj: (obj.key,), *predicates, urgent=urgent or generation_changed
        )

    def watch_owned(
        self,
        informer: Informer[Any],
        owner: Resource[Any],
        *predicates: Predicate,
        controller_only: bool = True,
    ) -> None:
        """Reconcile the owner of every changed child (on updates: old and new owners)."""

        def mapper(obj: KubeObject) -> Iterable[ObjectKey]:
            return owner_keys(
                obj,
                group=owner.group,
                kind=owner.kind,
                owner_namespaced=owner.namespaced,
                controller_only=controller_only,
            )

        self.watch_mapped(informer, mapper, *predicates)

    def watch_mapped(
        self,
        informer: Informer[Any],
        mapper: Mapper,
        *predicates: Predicate,
        urgent: Predicate | None = None,
    ) -> None:
        def handler(note: Notification[Any]) -> None:
            if not all(predicate(note) for predicate in predicates):
                return
            keys = set(mapper(note.obj))
            if note.old is not None and note.old is not note.obj:
                keys.update(mapper(note.old))
            first = urgent is not None and urgent(note)
            for key in keys:
                self.queue.add(shared_key(key), urgent=first)  # held while queued or waiting

        self._informers.append(informer)
        informer.add_handler(self.name, handler)

    def reads(self, *informers: Informer[Any]) -> None:
        """Informers its reconciles read without being woken by them: it waits for them to
        sync as well. A store fills as its first list arrives, so until then it holds a part
        (a resize would find too few nodes)."""
        self._informers.extend(informers)

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 30.0) -> None:
        """Wait for caches, work until `stop`, then stop intake and drain in-flight reconciles."""
        await self.wait_synced()
        log.info("controller started", controller=self.name, workers=self.workers)
        tasks = [
            asyncio.create_task(self._worker(), name=f"worker:{self.name}:{i}")
            for i in range(self.workers)
        ]
        try:
            await stop.wait()
        finally:
            try:
                async with asyncio.timeout(drain_timeout):
                    await self.queue.shutdown_with_drain()
            except TimeoutError:
                log.warning("drain timed out; cancelling reconciles", controller=self.name)
            self.queue.shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("controller stopped", controller=self.name)

    async def wait_synced(self) -> None:
        await wait_synced(self._informers, self.sync_timeout, f"controller {self.name}")

    @property
    def synced(self) -> bool:
        return all(i.has_synced for i in self._informers)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._reconcile(key)
            finally:
                self.queue.done(key)

    async def _reconcile(self, key: ObjectKey) -> None:
        self._active += 1
        metrics.ACTIVE_WORKERS.labels(controller=self.name).set(self._active)
        started = time.monotonic()
        outcome = "success"
        try:
            with structlog.contextvars.bound_contextvars(controller=self.name, key=str(key)):
                try:
                    result = await self.reconciler.reconcile(key)
                except TerminalError as error:
                    outcome = "error"
                    self.queue.forget(key)
                    metrics.RECONCILE_ERRORS.labels(controller=self.name).inc()
                    metrics.TERMINAL_RECONCILE_ERRORS.labels(controller=self.name).inc()
                    log.error("reconcile failed for good", error=str(error))
                    return
                except Exception:
                    outcome = "error"
                    self.queue.add_rate_limited(key)
                    metrics.RECONCILE_ERRORS.labels(controller=self.name).inc()
                    log.exception(
                        "reconcile failed; will retry", retries=self.queue.num_requeues(key)
                    )
                    return
                self.queue.forget(key)
                if result is not None and result.requeue_after is not None:
                    outcome = "requeue_after"
                    self.queue.add_after(key, result.requeue_after)
        finally:
            self._active -= 1
            metrics.ACTIVE_WORKERS.labels(controller=self.name).set(self._active)
            metrics.RECONCILE_TOTAL.labels(controller=self.name, result=outcome).inc()
            metrics.RECONCILE_TIME.labels(controller=self.name).observe(time.monotonic() - started)
