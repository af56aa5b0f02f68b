"""RateLimitingQueue: retries come back after the limiter's delay; forget resets the backoff."""

from __future__ import annotations

from devserver.workqueue import FakeClock, ItemExponentialFailureRateLimiter, RateLimitingQueue


async def test_rate_limited_retries_back_off_and_forget_starts_over(clock: FakeClock) -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1.0, 60.0)
    queue: RateLimitingQueue[str] = RateLimitingQueue(limiter, clock=clock)

    queue.add_rate_limited("a")
    await clock.advance(0.9)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert await queue.get() == "a"
    queue.done("a")

    queue.add_rate_limited("a")  # second failure: 2 s
    await clock.advance(1.9)
    assert len(queue) == 0
    await clock.advance(0.1)
    assert len(queue) == 1
    assert queue.num_requeues("a") == 2

    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert len(queue) == 1  # forget resets the history, it does not remove the key
    await queue.get()
    queue.done("a")
    queue.add_rate_limited("a")
    await clock.advance(1.0)
    assert len(queue) == 1
    queue.shutdown()


async def test_the_default_limiter_retries_a_key_after_5ms(clock: FakeClock) -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(clock=clock)
    queue.add_rate_limited("a")
    await clock.advance(0.004)
    assert len(queue) == 0
    await clock.advance(0.001)
    assert len(queue) == 1
    assert queue.num_requeues("a") == 1
    queue.shutdown()
