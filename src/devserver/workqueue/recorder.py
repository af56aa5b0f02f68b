"""What a work queue reports about itself, and how it is given a reporter.

The queue knows nothing of Prometheus: whoever makes it passes a `MetricsProvider` (called
with the queue's name and its clock's `now`), as client-go's `MetricsProvider`. The operator's
controllers pass `observability.metrics.QueueMetrics`; a queue given none records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol


class QueueMetricsRecorder(Protocol):
    """What a work queue reports; see :class:`QueueMetrics` for the meaning of each call."""

    def add(self, item: Hashable) -> None: ...

    def get(self, item: Hashable) -> None: ...

    def done(self, item: Hashable) -> None: ...

    def retry(self) -> None: ...

    def update_unfinished(self) -> None: ...


class NoopQueueMetrics:
    """For unnamed queues: nothing to label the series with, so nothing is recorded."""

    def add(self, item: Hashable) -> None:
        pass

    def get(self, item: Hashable) -> None:
        pass

    def done(self, item: Hashable) -> None:
        pass

    def retry(self) -> None:
        pass

    def update_unfinished(self) -> None:
        pass


MetricsProvider = Callable[[str, Callable[[], float]], QueueMetricsRecorder]
