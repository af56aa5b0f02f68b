"""The basic work queue, with client-go ``workqueue.Typed`` semantics.

A controller's queue holds *keys*, not events: the reconciler reads the current state anyway, so
many events for one object collapse into one run. Two sets make that work:

- *dirty*: keys that need processing. Adding a dirty key again is a no-op, so N adds while a key
  waits produce one run, in the order of the first add.
- *processing*: keys handed to a worker and not yet ``done``. Such a key is never handed to a
  second worker; if it is re-added meanwhile it stays dirty and is queued again, once, by
  ``done``. So a change that lands mid-reconcile is never lost, and never reconciled in parallel.

Two lanes: a key added ``urgent`` (a user's own change: an object created, its spec edited,
deleted) is handed out before every ordinary key (a child's status moving, a periodic
requeue), FIFO within each lane; an urgent add of a key already waiting moves it to the urgent
lane. Under a burst, a user's new object waits for the other new objects, not for the echoes
of all the children made before it (controller-runtime's priority queue, the other way round).
The priority is bounded: after `URGENT_STREAK` urgent keys in a row, one ordinary key goes if
any waits, so users editing objects in a loop cannot starve others' child events, retries and
timed requeues (the expiry controller's stops are timed requeues).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypedDict, TypeVar

from devserver.workqueue.clock import Clock, SystemClock
from devserver.workqueue.recorder import MetricsProvider, NoopQueueMetrics, QueueMetricsRecorder

K = TypeVar("K", bound=Hashable)

URGENT_STREAK = 4  # urgent keys handed out in a row before an ordinary one that waits


class ShutDown(Exception):  # noqa: N818 - the name of asyncio.QueueShutDown (3.13) and client-go
    """The queue is shut down and has nothing left to hand out; the worker should exit."""


class QueueOptions(TypedDict, total=False):
    """What every queue kind is made with (the subclasses pass them on)."""

    name: str | None
    clock: Clock | None
    metrics: MetricsProvider | None


class WorkQueue(Generic[K]):
    """Deduplicating FIFO of keys; at most one worker holds a given key at a time.

    Workers loop ``key = await q.get()`` … ``q.done(key)`` (``done`` in a ``finally``: a key
    that is never ``done`` is never handed out again). ``metrics`` (a provider, given ``name``
    and the clock) records the queue's series; ``clock`` is what those metrics (and subclasses)
    measure time with.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        metrics: MetricsProvider | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._metrics: QueueMetricsRecorder = (
            metrics(name, self._clock.now)
            if metrics is not None and name is not None
            else NoopQueueMetrics()
        )
        self._queue: deque[K] = deque()
        self._urgent: deque[K] = deque()
        self._urgent_dirty: set[K] = set()  # dirty keys whose next run is urgent
        self._streak = 0  # urgent keys handed out since the last ordinary one
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._draining = False

    def __len__(self) -> int:
        """Keys waiting to be handed out (not counting those being processed)."""
        return len(self._queue) + len(self._urgent)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def metrics(self) -> QueueMetricsRecorder:
        """This queue's metrics recorder (a no-op one for an unnamed queue).

        Call ``metrics.update_unfinished()`` periodically: the in-flight gauges age while
        workers are busy, but the queue itself refreshes them only on ``get`` and ``done``.
        """
        return self._metrics

    def add(self, key: K, *, urgent: bool = False) -> None:
        """Mark ``key`` as needing processing; ignored once the queue is shutting down.
        ``urgent`` keys are handed out before all others."""
        if self._shutting_down:
            return
        if key in self._dirty:
            if urgent and key not in self._urgent_dirty:
                self._urgent_dirty.add(key)
                if key not in self._processing:  # waiting in the ordinary lane: move it up
                    self._queue.remove(key)
                    self._urgent.append(key)
            return
        self._metrics.add(key)
        self._dirty.add(key)
        if urgent:
            self._urgent_dirty.add(key)
        if key in self._processing:
            return  # ``done`` queues it again
        self._lane(key).append(key)
        self._wake_one_getter()

    def _lane(self, key: K) -> deque[K]:
        return self._urgent if key in self._urgent_dirty else self._queue

    async def get(self) -> K:
        """Wait for a key and mark it as processing.

        Raises :class:`ShutDown` once the queue is shutting down and no key is waiting; keys that
        were queued before the shutdown are still handed out.
        """
        while not self._queue and not self._urgent:
            if self._shutting_down:
                raise ShutDown
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                elif (self._queue or self._urgent) and not getter.cancelled():
                    self._wake_one_getter()  # pass on the wake-up this getter will not use
                raise
        if self._urgent and (not self._queue or self._streak < URGENT_STREAK):
            key = self._urgent.popleft()
            self._streak += 1
        else:
            key = self._queue.popleft()
            self._streak = 0
        self._metrics.get(key)
        self._processing.add(key)
        self._dirty.discard(key)
        self._urgent_dirty.discard(key)
        self._metrics.update_unfinished()
        return key

    def done(self, key: K) -> None:
        """Finish processing ``key``; if it was re-added meanwhile, queue it again.

        Calling ``done`` for a key that is not being processed does nothing (client-go would
        queue a dirty key twice in that case).
        """
        if key not in self._processing:
            return
        self._metrics.done(key)
        self._processing.discard(key)
        self._metrics.update_unfinished()
        if key in self._dirty:
            self._lane(key).append(key)
            self._wake_one_getter()
        if not self._processing:
            self._release_drain_waiters()

    def shutdown(self) -> None:
        """Stop intake and wake idle workers with :class:`ShutDown`; do not wait for anything.

        Also ends a concurrent :meth:`shutdown_with_drain` early, as in client-go.
        """
        self._draining = False
        self._stop_intake()
        self._release_drain_waiters()

    async def shutdown_with_drain(self) -> None:
        """Stop intake, then wait until every key handed out so far (and since) is ``done``.

        Keys still waiting are handed out to workers that keep calling ``get``. Bound the wait
        with ``asyncio.timeout`` if workers might hang.
        """
        self._draining = True
        self._stop_intake()
        while self._processing and self._draining:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _stop_intake(self) -> None:
        """Refuse further adds and wake every waiting getter; subclasses stop their feeders."""
        self._shutting_down = True
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
