"""Rate limiters: per-key exponential backoff, global token bucket, and their maximum."""

from __future__ import annotations

import pytest

from devserver.workqueue import (
    BucketRateLimiter,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_backoff_doubles_per_failure_and_forget_resets() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(5)]
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.num_requeues("a") == 5
    assert limiter.when("b") == pytest.approx(0.005)  # per key
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_backoff_is_capped_even_after_very_many_failures() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(
        base=0.005, cap=1000.0
    )
    delays = [limiter.when("a") for _ in range(3000)]
    assert delays[17] == pytest.approx(0.005 * 2**17)  # 655 s, still under the cap
    assert delays[18] == 1000.0
    assert delays[-1] == 1000.0


async def test_bucket_lets_the_burst_through_then_spaces_retries_by_one_over_qps(
    clock: FakeClock,
) -> None:
    limiter: BucketRateLimiter[str] = BucketRateLimiter(qps=10.0, burst=100, clock=clock)
    assert [limiter.when(f"k{i}") for i in range(100)] == [0.0] * 100
    assert limiter.when("k100") == pytest.approx(0.1)
    assert limiter.when("k101") == pytest.approx(0.2)
    await clock.advance(1.2)  # pays back the two reserved tokens and refills ten
    assert [limiter.when("x") for _ in range(10)] == [0.0] * 10
    assert limiter.when("x") == pytest.approx(0.1)
    limiter.forget("x")
    assert limiter.num_requeues("x") == 0


async def test_bucket_never_holds_more_than_the_burst(clock: FakeClock) -> None:
    limiter: BucketRateLimiter[str] = BucketRateLimiter(qps=1.0, burst=2, clock=clock)
    await clock.advance(3600.0)
    assert [limiter.when("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


async def test_max_of_takes_the_longest_delay_and_every_limiter_records_every_retry(
    clock: FakeClock,
) -> None:
    limiter: MaxOfRateLimiter[str] = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base=0.005, cap=1000.0),
        BucketRateLimiter(qps=1.0, burst=2, clock=clock),
    )
    assert limiter.when("a") == pytest.approx(0.005)  # bucket has tokens: exponential wins
    assert limiter.when("a") == pytest.approx(0.01)
    assert limiter.when("b") == pytest.approx(1.0)  # bucket exhausted: bucket wins
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(2.0)  # forget does not refill the global bucket


async def test_default_controller_limiter_is_5ms_exponential_and_10qps_burst_100(
    clock: FakeClock,
) -> None:
    limiter: MaxOfRateLimiter[str] = default_controller_rate_limiter(clock)
    first = [limiter.when(f"k{i}") for i in range(100)]
    assert first == pytest.approx([0.005] * 100)
    assert limiter.when("k100") == pytest.approx(0.1)
    await clock.advance(3600.0)
    delays = [limiter.when("hot") for _ in range(25)]
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert delays[-1] == 1000.0
