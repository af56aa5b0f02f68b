"""A delaying queue that asks a rate limiter how long to wait (client-go ``RateLimitingInterface``).

This is the queue a controller uses: a failed reconcile calls ``add_rate_limited`` (back off),
a successful one calls ``forget`` (so the next failure starts from the shortest delay again).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar, Unpack

from devserver.workqueue.delaying import DelayingQueue
from devserver.workqueue.queue import QueueOptions
from devserver.workqueue.retry_delays import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


class RateLimitingQueue(DelayingQueue[K]):
    """A :class:`DelayingQueue` with retry delays from ``rate_limiter``.

    Without a limiter it uses :func:`default_controller_rate_limiter` on the queue's clock.
    """

    def __init__(
        self,
        rate_limiter: RateLimiter[K] | None = None,
        **options: Unpack[QueueOptions],
    ) -> None:
        super().__init__(**options)
        self.rate_limiter: RateLimiter[K] = (
            rate_limiter
            if rate_limiter is not None
            else default_controller_rate_limiter(self._clock)
        )

    def add_rate_limited(self, key: K) -> None:
        """Add ``key`` after the limiter's delay, recording one more retry of it."""
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """The key succeeded: reset its retry history (it does not remove the key)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.rate_limiter.num_requeues(key)
