"""Prometheus metrics under the names client-go and controller-runtime use.

Dashboards and alerts for Go operators already graph these names; keeping them means ours work
unchanged. Every metric is registered once, here, at import (the default registry rejects
duplicates). Series are zero-initialised when a queue, controller or informer is created, so a
``rate()`` or an absent-series alert sees 0 rather than nothing before the first event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

from prometheus_client import Counter, Gauge, Histogram

_QUEUE_LABELS = ("name", "controller")
# client-go's workqueue buckets: 10 ns .. 1000 s, x10 per step.
_QUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))
# controller-runtime's reconcile_time_seconds buckets.
_RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    *(6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)

# --- workqueue -------------------------------------------------------------------------------

WORKQUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", _QUEUE_LABELS)
WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total", "Total number of adds handled by workqueue", _QUEUE_LABELS
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total", "Total number of retries handled by workqueue", _QUEUE_LABELS
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads.",
    _QUEUE_LABELS,
)
WORKQUEUE_LONGEST_RUNNING_PROCESSOR = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running",
    _QUEUE_LABELS,
)

# --- controller ------------------------------------------------------------------------------

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ("controller", "result"),
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ("controller",),
)
UNREADABLE_OBJECTS = Counter(
    "devserver_unreadable_objects_total",
    "Objects the API server stored that the operator's model could not read (each sighting)",
    ("resource",),
)
TERMINAL_RECONCILE_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Total number of terminal reconciliation errors per controller",
    ("controller",),
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ("controller",),
    buckets=_RECONCILE_BUCKETS,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ("controller",),
)
MAX_CONCURRENT_RECONCILES = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ("controller",),
)

# --- informers -------------------------------------------------------------------------------

WATCH_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
# Why a reflector re-opened its watch: 410 Gone, a stall, an idle resource's silence, 429, other.
WATCH_RESTART_REASONS = ("gone", "stalled", "silent", "throttled", "error")

WATCH_RESTARTS = Counter(
    "devserver_watch_restarts_total",
    "Watch streams re-opened, by resource and reason",
    ("resource", "reason"),
)
RELISTS = Counter(
    "devserver_relists_total", "Full LISTs after the first, by resource", ("resource",)
)
WATCH_EVENTS = Counter(
    "devserver_watch_events_total",
    "Watch events received, by resource and type",
    ("resource", "type"),
)
HANDLER_BACKLOG = Gauge(
    "devserver_handler_backlog",
    "Notifications waiting for an event handler, by resource and handler",
    ("resource", "handler"),
)


def init_controller_metrics(
    controller: str, *, max_concurrent_reconciles: int | None = None
) -> None:
    """Create a controller's series at 0 so they are exported before its first reconcile."""
    for result in RECONCILE_RESULTS:
        RECONCILE_TOTAL.labels(controller=controller, result=result)
    RECONCILE_ERRORS.labels(controller=controller)
    TERMINAL_RECONCILE_ERRORS.labels(controller=controller)
    RECONCILE_TIME.labels(controller=controller)
    ACTIVE_WORKERS.labels(controller=controller).set(0)
    workers = MAX_CONCURRENT_RECONCILES.labels(controller=controller)
    workers.set(max_concurrent_reconciles or 0)


def init_informer_metrics(
    resource: str,
    *,
    restart_reasons: Iterable[str] = WATCH_RESTART_REASONS,
    event_types: Iterable[str] = WATCH_EVENT_TYPES,
) -> None:
    """Create an informer's series at 0 so they are exported before its first event."""
    RELISTS.labels(resource=resource)
    UNREADABLE_OBJECTS.labels(resource=resource)
    for reason in restart_reasons:
        WATCH_RESTARTS.labels(resource=resource, reason=reason)
    for event_type in event_types:
        WATCH_EVENTS.labels(resource=resource, type=event_type)


class ReflectorMetrics:
    """The watch series of one resource's reflector, zero-initialised at construction."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        init_informer_metrics(resource)

    def restart(self, reason: str) -> None:
        WATCH_RESTARTS.labels(resource=self.resource, reason=reason).inc()

    def relist(self) -> None:
        RELISTS.labels(resource=self.resource).inc()

    def event(self, event_type: str) -> None:
        WATCH_EVENTS.labels(resource=self.resource, type=str(event_type)).inc()


class Backlog:
    """How many notifications wait for one event handler (design item 13: observable backlog),
    read from `size` when scraped: a start tells every handler of every listed object, and a
    gauge set on each of those, under the gauge's lock, cost ~2 % of the start's CPU."""

    def __init__(self, resource: str, handler: str, size: Callable[[], int]) -> None:
        HANDLER_BACKLOG.labels(resource=resource, handler=handler).set_function(size)


class QueueMetrics:
    """The workqueue series of one named queue (client-go's ``defaultQueueMetrics``).

    ``now`` should be the queue's clock so that durations agree with the queue's notion of time
    (and are deterministic under a fake clock). The gauges are reset at construction, so a queue
    re-created under the same name (e.g. after a leader-election handover) starts from 0.
    """

    def __init__(self, name: str, now: Callable[[], float] = time.monotonic) -> None:
        labels = {"name": name, "controller": name}
        self._now = now
        self._depth = WORKQUEUE_DEPTH.labels(**labels)
        self._adds = WORKQUEUE_ADDS.labels(**labels)
        self._queue_duration = WORKQUEUE_QUEUE_DURATION.labels(**labels)
        self._work_duration = WORKQUEUE_WORK_DURATION.labels(**labels)
        self._retries = WORKQUEUE_RETRIES.labels(**labels)
        self._unfinished = WORKQUEUE_UNFINISHED_WORK.labels(**labels)
        self._longest = WORKQUEUE_LONGEST_RUNNING_PROCESSOR.labels(**labels)
        for gauge in (self._depth, self._unfinished, self._longest):
            gauge.set(0)
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}

    def add(self, item: Hashable) -> None:
        """An item became dirty (a deduplicated add is not counted)."""
        self._adds.inc()
        self._depth.inc()
        self._added_at.setdefault(item, self._now())

    def get(self, item: Hashable) -> None:
        """An item was handed to a worker: observe how long it waited."""
        now = self._now()
        self._depth.dec()
        self._started_at[item] = now
        added = self._added_at.pop(item, None)
        if added is not None:
            self._queue_duration.observe(now - added)

    def done(self, item: Hashable) -> None:
        """A worker finished an item: observe how long it worked on it."""
        started = self._started_at.pop(item, None)
        if started is not None:
            self._work_duration.observe(self._now() - started)

    def retry(self) -> None:
        self._retries.inc()

    def update_unfinished(self) -> None:
        """Refresh the in-flight gauges; they age with time, so call this periodically too."""
        now = self._now()
        ages = [now - started for started in self._started_at.values()]
        self._unfinished.set(sum(ages))
        self._longest.set(max(ages, default=0.0))


# --- client and leader election (client-go's names) -------------------------------------------

REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host.",
    ("code", "method", "host"),
)
LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease.",
    ("name",),
)
BUILD_INFO = Gauge(
    "devserver_build_info", "Always 1: the version of devserver running", ("version", "component")
)
