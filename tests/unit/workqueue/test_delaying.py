"""DelayingQueue: add_after fires on its own, keeps the earliest deadline, stops on shutdown."""

from __future__ import annotations

import asyncio

from devserver.workqueue import DelayingQueue, FakeClock


async def test_add_after_fires_when_the_clock_passes_the_deadline_with_no_other_traffic(
    clock: FakeClock,
) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    getter = asyncio.create_task(queue.get())
    queue.add_after("a", 5.0)
    await clock.advance(4.9)
    assert not getter.done()
    await clock.advance(0.1)
    assert getter.done()
    assert getter.result() == "a"
    queue.done("a")
    await queue.shutdown_with_drain()


async def test_add_after_keeps_the_earliest_deadline_and_fires_once(clock: FakeClock) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 10.0)
    queue.add_after("a", 2.0)
    queue.add_after("a", 7.0)
    await clock.advance(2.0)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    await clock.advance(20.0)
    assert len(queue) == 0
    await queue.shutdown_with_drain()


async def test_an_earlier_deadline_wakes_the_sleeping_timer(clock: FakeClock) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("late", 100.0)
    await clock.advance(1.0)  # the timer is now asleep until t+100
    queue.add_after("soon", 1.0)
    await clock.advance(1.0)
    assert len(queue) == 1
    assert await queue.get() == "soon"
    await clock.advance(98.0)
    assert len(queue) == 1
    assert await queue.get() == "late"
    queue.shutdown()


async def test_deadlines_fire_in_order(clock: FakeClock) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    for key, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0)]:
        queue.add_after(key, delay)
    await clock.advance(5.0)
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    queue.shutdown()


async def test_a_non_positive_delay_adds_at_once(clock: FakeClock) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 0.0)
    queue.add_after("b", -1.0)
    assert len(queue) == 2
    queue.shutdown()


async def test_shutdown_drops_waiting_keys_and_stops_the_timer(clock: FakeClock) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    queue.add_after("a", 1.0)
    await clock.advance(0.5)
    assert clock.sleepers == 1
    await asyncio.wait_for(queue.shutdown_with_drain(), 1)
    assert clock.sleepers == 0
    queue.add_after("b", 1.0)
    await clock.advance(5.0)
    assert len(queue) == 0


async def test_with_the_system_clock_a_short_delay_fires_for_real() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    queue.add_after("a", 0.01)
    assert await asyncio.wait_for(queue.get(), 2) == "a"
    queue.done("a")
    await asyncio.wait_for(queue.shutdown_with_drain(), 1)
