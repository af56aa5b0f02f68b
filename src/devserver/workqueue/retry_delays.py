"""Retry delays (client-go ``workqueue`` rate limiters).

A failing key must back off on its own (exponential, per key) and all retries together must not
flood the API server (a token bucket, shared by every key); the controller default is the larger
of the two delays.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from devserver.workqueue.clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

# 2.0 ** n overflows a float (OverflowError) past n = 1023; the cap is reached long before.
_MAX_EXPONENT = 1023


class RateLimiter(Protocol[K_contra]):
    """Decides how long a key waits before its next try."""

    def when(self, key: K_contra) -> float:
        """Seconds to wait before retrying ``key``; records the retry."""
        ...

    def forget(self, key: K_contra) -> None:
        """Stop tracking ``key`` (it succeeded): its next failure starts from scratch."""
        ...

    def num_requeues(self, key: K_contra) -> int:
        """How many retries of ``key`` have been recorded since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """``base * 2**n`` seconds for a key's n-th consecutive failure (n from 0), capped."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        exponent = self._failures.get(key, 0)
        self._failures[key] = exponent + 1
        return min(self.cap, self.base * 2.0 ** min(exponent, _MAX_EXPONENT))

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter(Generic[K]):
    """A token bucket shared by all keys (``golang.org/x/time/rate``'s ``Reserve().Delay()``).

    The bucket starts full with ``burst`` tokens and refills at ``qps`` per second. Each ``when``
    reserves one token even if none is available yet, driving the balance negative, and returns
    how long until that token exists; so the n-th retry past the burst waits ``n / qps``.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be positive and burst at least 1")
        self.qps = qps
        self.burst = burst
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._tokens = float(burst)
        self._last = self._clock.now()

    def when(self, key: K) -> float:
        now = self._clock.now()
        elapsed = max(now - self._last, 0.0)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps) - 1.0
        self._last = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: K) -> None:
        """The bucket is global: one key's success returns no tokens."""

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """The longest delay of several limiters; every limiter records every retry."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, key: K) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: K) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter[K]:
    """controller-runtime's default: per-key 5 ms … 1000 s, overall 10 qps with a burst of 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base=0.005, cap=1000.0),
        BucketRateLimiter(qps=10.0, burst=100, clock=clock),
    )
