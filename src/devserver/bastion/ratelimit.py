"""Token buckets per key (the session agent keys them by the caller's uid).

A bucket holds at most `burst` tokens and gains `rate` tokens a second; each request takes one
or is refused with the time until one is there. The clock is injected (monotonic by default) so
the arithmetic is tested without waiting. Full buckets are forgotten (a full bucket and no
bucket are the same thing), so memory follows the users active in the last burst/rate seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, *, burst: int, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError(f"a rate limit needs burst >= 1 and rate > 0, not {burst}, {rate}")
        self.burst, self.rate, self.clock = burst, rate, clock
        self._buckets: dict[int, _Bucket] = {}

    def _level(self, key: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            return _Bucket(float(self.burst), now)
        elapsed = max(0.0, now - bucket.updated)
        return _Bucket(min(float(self.burst), bucket.tokens + elapsed * self.rate), now)

    def take(self, key: int) -> float:
        """0.0 if a token was taken for `key`; else the whole seconds until one is available."""
        now = self.clock()
        bucket = self._level(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self._buckets[key] = bucket
            self._forget_full(now)
            return 0.0
        self._buckets[key] = bucket
        return float(max(1, math.ceil((1.0 - bucket.tokens) / self.rate)))

    def _forget_full(self, now: float) -> None:
        if len(self._buckets) < 1024:
            return
        for key in [k for k in self._buckets if self._level(k, now).tokens >= self.burst]:
            del self._buckets[key]
