"""Injectable time source for the queues and rate limiters.

Delays, backoffs and token buckets are all about time; with the clock injected, tests step time
explicitly instead of sleeping for real, and stay fast and deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time plus a way to wait for it to pass."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A clock that moves only when a test says so.

    Sleepers wait on futures that :meth:`advance` resolves once their deadline has passed.
    ``advance`` walks through every deadline inside the step in order (so a task that sleeps in a
    loop wakes once per period, not once per step) and after each wake yields to the event loop
    ``settle`` times, so that woken tasks, and the tasks they wake in turn, run before it returns.
    A test therefore reads: ``queue.add_after(k, 1); await clock.advance(1); assert len(queue)``.
    """

    def __init__(self, start: float = 0.0, *, settle: int = 20) -> None:
        self._now = start
        self._settle_rounds = settle
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are currently sleeping on this clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers deadline by deadline."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        await self._settle()  # let tasks that are about to sleep register first
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            self._now = max(self._now, self._sleepers[0][0])
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()

    async def _settle(self) -> None:
        for _ in range(self._settle_rounds):
            await asyncio.sleep(0)
