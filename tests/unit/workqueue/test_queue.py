"""WorkQueue: dedup, one worker per key, re-add during processing, shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.workqueue import ShutDown, WorkQueue
from devserver.workqueue.queue import URGENT_STREAK


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


async def test_urgent_keys_go_first_and_an_urgent_add_moves_a_waiting_key_up() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["echo-1", "echo-2", "echo-3"]:
        queue.add(key)
    queue.add("new", urgent=True)
    queue.add("echo-3", urgent=True)  # waiting already: moved up, not added twice
    queue.add("new")  # an ordinary add never moves an urgent key down
    assert len(queue) == 4
    assert await drain_keys(queue) == ["new", "echo-3", "echo-1", "echo-2"]


async def test_an_urgent_readd_during_processing_runs_first_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "a"
    queue.add("a", urgent=True)
    queue.done("a")
    assert await drain_keys(queue) == ["a", "b"]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("get"), st.just(0), st.just(False)),
        st.tuples(st.just("done"), st.integers(0, 5), st.just(False)),
    ),
    max_size=80,
)


@given(ops)
async def test_the_two_lanes_keep_every_workqueue_promise(
    steps: list[tuple[str, int, bool]],
) -> None:
    """Against a plain model: each add of a key not already pending yields exactly one run; a key
    is never handed out while held; a pending urgent key goes before any other, except that
    after URGENT_STREAK urgent ones in a row a waiting ordinary key gets its turn."""
    queue: WorkQueue[int] = WorkQueue()
    pending: dict[int, bool] = {}  # key -> urgent, for keys added since their last hand-out
    held: set[int] = set()
    streak = 0
    for op, key, urgent in steps:
        if op == "add":
            pending[key] = pending.get(key, False) or urgent
            queue.add(key, urgent=urgent)
        elif op == "get" and len(queue):
            got = await queue.get()
            assert got not in held
            assert got in pending
            waiting = {k: u for k, u in pending.items() if k not in held}
            if any(waiting.values()) and (all(waiting.values()) or streak < URGENT_STREAK):
                assert pending[got], (got, pending, streak)
            if not any(waiting.values()) or (not all(waiting.values()) and streak >= URGENT_STREAK):
                assert not pending[got], (got, pending, streak)
            streak = streak + 1 if pending[got] else 0
            del pending[got]
            held.add(got)
        elif op == "done" and key in held:
            held.discard(key)
            queue.done(key)
        waiting = {k for k in pending if k not in held}
        assert len(queue) == len(waiting)
    for key in sorted(held):
        queue.done(key)
    assert sorted(await drain_keys(queue)) == sorted(pending)


async def test_edits_in_a_loop_cannot_starve_ordinary_keys() -> None:
    """Users editing objects without pause keep the urgent lane full: one ordinary key (a timed
    stop, a child's echo) still runs after every URGENT_STREAK urgent ones."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a stop that is due")
    served: list[str] = []
    for turn in range(3 * (URGENT_STREAK + 1)):
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
            queue.add(user, urgent=True)
        key = await queue.get()
        served.append(key)
        queue.done(key)
        if key == "a stop that is due":
            break
        assert turn < URGENT_STREAK
    assert served[-1] == "a stop that is due"
    assert len(served) == URGENT_STREAK + 1
