"""Work queues: plain, delaying and rate-limited, with an injectable clock.

- ``clock``: the ``Clock`` protocol, ``SystemClock``, and ``FakeClock`` for tests;
- ``queue``: ``WorkQueue``: deduplicating FIFO, one worker per key at a time;
- ``delaying``: ``DelayingQueue``: plus ``add_after`` (a background task fires deadlines);
- ``ratelimit``: retry delays: per-key exponential, global token bucket, max-of;
- ``ratelimiting``: ``RateLimitingQueue``: the controller's queue, ``add_rate_limited``/``forget``.
"""

from devserver.workqueue.clock import Clock, FakeClock, SystemClock
from devserver.workqueue.delaying import DelayingQueue
from devserver.workqueue.queue import ShutDown, WorkQueue
from devserver.workqueue.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from devserver.workqueue.ratelimiting import RateLimitingQueue

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
