"""WorkQueue: dedup, one worker per key, re-add during processing, shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from devserver.workqueue import ShutDown, WorkQueue


async def drain_keys(queue: WorkQueue[str]) -> list[str]:
    """Everything the queue hands out after shutdown, in order."""
    keys: list[str] = []
    queue.shutdown()
    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return keys
        keys.append(key)
        queue.done(key)


async def test_a_key_added_many_times_while_waiting_is_handed_out_once_in_first_add_order() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "a", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert await drain_keys(queue) == ["a", "b", "c"]


async def test_a_key_being_processed_is_not_handed_to_a_second_getter() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert len(queue) == 0
    assert not second.done()
    queue.done("a")
    assert await asyncio.wait_for(second, 1) == "a"
    queue.done("a")
    assert await drain_keys(queue) == []


async def test_readds_during_processing_yield_exactly_one_more_run_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    for _ in range(5):
        queue.add(key)
    queue.done(key)
    assert len(queue) == 1
    assert await drain_keys(queue) == ["a"]


async def test_concurrent_workers_never_hold_the_same_key_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue()
    in_flight: set[int] = set()
    overlaps: list[int] = []
    runs: Counter[int] = Counter()

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            if key in in_flight:
                overlaps.append(key)
            in_flight.add(key)
            runs[key] += 1
            try:
                for _ in range(3):  # yield so that other workers and the producer interleave
                    await asyncio.sleep(0)
            finally:
                in_flight.discard(key)
                queue.done(key)

    async def producer() -> None:
        for _ in range(50):
            for key in range(3):
                queue.add(key)
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(6)]
    await producer()
    await asyncio.wait_for(queue.shutdown_with_drain(), 5)
    await asyncio.wait_for(asyncio.gather(*workers), 5)
    assert overlaps == []
    assert set(runs) == {0, 1, 2}
    assert all(count < 50 for count in runs.values())  # adds were coalesced


async def test_shutdown_wakes_waiting_getters_with_shutdown_and_ignores_later_adds() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.shutdown()
    assert queue.shutting_down
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), 1)
    assert all(isinstance(result, ShutDown) for result in results)
    queue.add("late")
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await queue.get()


async def test_keys_queued_before_shutdown_are_still_handed_out() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    assert await drain_keys(queue) == ["a", "b"]


async def test_shutdown_with_drain_waits_for_in_flight_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    first = await queue.get()
    second = await queue.get()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await asyncio.sleep(0)
    queue.add("c")
    assert len(queue) == 0
    queue.done(first)
    await asyncio.sleep(0)
    assert not drain.done()
    queue.done(second)
    await asyncio.wait_for(drain, 1)


async def test_shutdown_ends_a_pending_drain() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    await queue.get()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await asyncio.sleep(0)
    queue.shutdown()
    await asyncio.wait_for(drain, 1)


async def test_a_cancelled_getter_does_not_swallow_a_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "a"
    assert first.cancelled()


async def test_done_for_a_key_not_being_processed_changes_nothing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.done("a")
    queue.done("never-added")
    assert len(queue) == 1
    assert await drain_keys(queue) == ["a"]
