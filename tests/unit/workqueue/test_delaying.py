"""DelayingQueue: add_after fires on its own, keeps the earliest deadline, stops on shutdown."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from devserver.workqueue import DelayingQueue, FakeClock
from devserver.workqueue.delaying import COMPACT_SLACK


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


@given(st.lists(st.tuples(st.integers(0, 30), st.floats(1.0, 3600.0)), max_size=400))
def test_deadlines_moved_earlier_again_and_again_keep_the_queue_as_small_as_its_keys(
    moves: list[tuple[int, float]],
) -> None:
    """A deadline worked out again by each reconcile moves by microseconds: each earlier one
    supersedes the last. The queue's memory stays bounded by the keys that wait, and each key
    still fires once, at its earliest deadline."""

    async def run() -> None:
        clock = FakeClock()
        queue: DelayingQueue[int] = DelayingQueue(clock=clock)
        earliest: dict[int, float] = {}
        for key, delay in moves:
            queue.add_after(key, delay)
            earliest[key] = min(delay, earliest.get(key, delay))
            assert len(queue._heap) <= 2 * len(earliest) + COMPACT_SLACK
        fired: dict[int, float] = {}
        for at in sorted(set(earliest.values())):
            await clock.advance(at - clock.now() + 1e-9)  # past it, whatever the rounding
            while len(queue):
                key = await queue.get()
                fired[key] = clock.now()
                queue.done(key)
        assert fired.keys() == earliest.keys()
        assert all(abs(fired[k] - at) < 1e-6 for k, at in earliest.items())
        await queue.shutdown_with_drain()

    asyncio.run(run())


async def test_a_key_rescheduled_a_little_earlier_ten_thousand_times_leaves_no_trail(
    clock: FakeClock,
) -> None:
    queue: DelayingQueue[str] = DelayingQueue(clock=clock)
    for i in range(10_000):
        queue.add_after("a", 3600.0 - i * 1e-6)
    assert len(queue._heap) <= 1 + COMPACT_SLACK + 2
    await queue.shutdown_with_drain()
