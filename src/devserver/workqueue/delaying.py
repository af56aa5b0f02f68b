"""A work queue that can add a key later (client-go ``DelayingInterface``).

``requeue_after`` and retry backoff both need "add this key in N seconds", and the add must
happen even if nothing else touches the queue: a background task sleeps on the injected clock
until the earliest deadline and wakes early when an earlier one arrives.

Lifecycle: the background task starts lazily, on the first ``add_after`` with a positive delay
(so ``add_after`` must be called from inside the running event loop). ``shutdown()`` stops it and
drops keys still waiting for their deadline; ``shutdown_with_drain()`` also awaits its exit.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Hashable
from typing import TypeVar, Unpack

from devserver.workqueue.queue import QueueOptions, WorkQueue

K = TypeVar("K", bound=Hashable)


COMPACT_SLACK = 64  # superseded heap entries allowed beyond one per waiting key


class DelayingQueue(WorkQueue[K]):
    """A :class:`WorkQueue` plus ``add_after``.

    A key waiting for a deadline is held once: a second ``add_after`` keeps the earlier deadline.
    Waiting keys are not dirty yet, so a plain ``add`` meanwhile queues the key at once (and the
    delayed add, when it fires, is then deduplicated as usual).
    """

    def __init__(self, **options: Unpack[QueueOptions]) -> None:
        super().__init__(**options)
        # A min-heap of (ready_at, seq, key) with lazy deletion: an entry is live only while
        # ``_waiting[key]`` is that entry itself, so moving a deadline earlier is a push (and a
        # waiting key costs one tuple, not a second one of its deadline and seq).
        self._heap: list[tuple[float, int, K]] = []
        self._waiting: dict[K, tuple[float, int, K]] = {}
        self._seq = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed; at once if ``delay <= 0``.

        Every call counts as a retry in ``workqueue_retries_total``, as in client-go.
        """
        if self.shutting_down:
            return
        self._metrics.retry()
        if delay <= 0:
            self.add(key)
            return
        ready_at = self._clock.now() + delay
        current = self._waiting.get(key)
        if current is not None and current[0] <= ready_at:
            return
        head = self._peek()
        self._waiting[key] = entry = (ready_at, next(self._seq), key)
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._waiting) + COMPACT_SLACK:
            # superseded entries stay until their time comes, which may be hours away: a
            # deadline read from the wall clock moves by microseconds each time it is worked
            # out again, so every reconcile of every server would leave one behind
            self._heap = list(self._waiting.values())
            heapq.heapify(self._heap)
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._wait_loop(), name=f"workqueue-delay:{self.name or 'unnamed'}"
            )
        elif head is None or ready_at < head:
            self._wake_loop()

    async def shutdown_with_drain(self) -> None:
        await super().shutdown_with_drain()
        if self._loop_task is not None:
            await self._loop_task

    def _stop_intake(self) -> None:
        super()._stop_intake()
        self._heap.clear()
        self._waiting.clear()
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _peek(self) -> float | None:
        """The earliest live deadline, discarding superseded heap entries on the way."""
        while self._heap:
            entry = self._heap[0]
            if self._waiting.get(entry[2]) is entry:
                return entry[0]
            heapq.heappop(self._heap)
        return None

    def _fire_ready(self) -> float | None:
        """Add every key whose deadline has passed; return the next deadline, if any."""
        now = self._clock.now()
        while (ready_at := self._peek()) is not None and ready_at <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._waiting[key]
            self.add(key)
        return self._peek()

    async def _wait_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.shutting_down:
            next_ready = self._fire_ready()
            self._wake = loop.create_future()
            if next_ready is None:
                await self._wake
                continue
            sleeper = loop.create_task(self._clock.sleep(next_ready - self._clock.now()))
            try:
                await asyncio.wait((sleeper, self._wake), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
