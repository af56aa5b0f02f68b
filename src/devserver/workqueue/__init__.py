"""Work queues: plain, delaying and rate-limited, with an injectable clock.

- ``clock``: the ``Clock`` protocol, ``SystemClock``, and ``FakeClock`` for tests;
- ``queue``: ``WorkQueue``: deduplicating FIFO, one worker per key at a time;
- ``delaying``: ``DelayingQueue``: plus ``add_after`` (a background task fires deadlines);
- ``retry_delays``: how long a failed key waits: per-key exponential, global token bucket, max-of;
- ``recorder``: what a queue reports about itself (its metrics come as an argument);
- ``ratelimiting``: ``RateLimitingQueue``: the controller's queue, ``add_rate_limited``/``forget``.
"""

from devserver.workqueue.clock import Clock, FakeClock, SystemClock
from devserver.workqueue.delaying import DelayingQueue
from devserver.workqueue.queue import ShutDown, WorkQueue
from devserver.workqueue.ratelimiting import RateLimitingQueue
from devserver.workqueue.retry_delays import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)

__all__ = [
    "BucketRateLimiter",
    "Clock",
    "DelayingQueue",
    "FakeClock",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "RateLimitingQueue",
    "ShutDown",
    "SystemClock",
    "WorkQueue",
    "default_controller_rate_limiter",
]
