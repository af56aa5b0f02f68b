"""Queue and controller metrics: the client-go / controller-runtime names, zero-initialised."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from devserver.observability.metrics import (
    RECONCILE_RESULTS,
    Backlog,
    QueueMetrics,
    ReflectorMetrics,
    init_controller_metrics,
    init_informer_metrics,
)
from devserver.workqueue import (
    FakeClock,
    ItemExponentialFailureRateLimiter,
    RateLimitingQueue,
    WorkQueue,
)


def sample(metric: str, name: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"name": name, "controller": name})


def test_a_new_named_queue_exports_zeroes_before_any_traffic(queue_name: str) -> None:
    WorkQueue[str](name=queue_name, metrics=QueueMetrics)
    for metric in [
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_retries_total",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "workqueue_queue_duration_seconds_count",
        "workqueue_work_duration_seconds_count",
    ]:
        assert sample(metric, queue_name) == 0.0, metric


async def test_a_named_queue_counts_adds_depth_and_durations(
    queue_name: str, clock: FakeClock
) -> None:
    queue: WorkQueue[str] = WorkQueue(name=queue_name, clock=clock, metrics=QueueMetrics)
    for key in ["a", "a", "b", "a"]:
        queue.add(key)
    assert sample("workqueue_adds_total", queue_name) == 2.0  # duplicates are not adds
    assert sample("workqueue_depth", queue_name) == 2.0

    await clock.advance(1.0)
    a = await queue.get()
    b = await queue.get()
    assert sample("workqueue_depth", queue_name) == 0.0
    assert sample("workqueue_queue_duration_seconds_count", queue_name) == 2.0
    assert sample("workqueue_queue_duration_seconds_sum", queue_name) == pytest.approx(2.0)

    await clock.advance(2.0)
    queue.metrics.update_unfinished()
    assert sample("workqueue_unfinished_work_seconds", queue_name) == pytest.approx(4.0)
    assert sample("workqueue_longest_running_processor_seconds", queue_name) == pytest.approx(2.0)

    queue.done(a)
    await clock.advance(1.0)
    queue.done(b)
    assert sample("workqueue_work_duration_seconds_count", queue_name) == 2.0
    assert sample("workqueue_work_duration_seconds_sum", queue_name) == pytest.approx(5.0)
    assert sample("workqueue_unfinished_work_seconds", queue_name) == 0.0
    assert sample("workqueue_longest_running_processor_seconds", queue_name) == 0.0
    queue.shutdown()


async def test_rate_limited_adds_count_as_retries(queue_name: str, clock: FakeClock) -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue(
        ItemExponentialFailureRateLimiter(1.0, 10.0),
        name=queue_name,
        clock=clock,
        metrics=QueueMetrics,
    )
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert sample("workqueue_retries_total", queue_name) == 2.0
    assert sample("workqueue_adds_total", queue_name) == 0.0  # still waiting for the deadline
    await clock.advance(1.0)
    assert sample("workqueue_adds_total", queue_name) == 1.0
    assert sample("workqueue_depth", queue_name) == 1.0
    queue.shutdown()


def test_an_unnamed_queue_records_nothing(queue_name: str) -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add(queue_name)
    assert sample("workqueue_adds_total", queue_name) is None


def test_controller_and_informer_series_can_be_zero_initialised(queue_name: str) -> None:
    init_controller_metrics(queue_name, max_concurrent_reconciles=4)
    labels = {"controller": queue_name}
    for result in RECONCILE_RESULTS:
        value = REGISTRY.get_sample_value(
            "controller_runtime_reconcile_total", {**labels, "result": result}
        )
        assert value == 0.0, result
    for metric in [
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_count",
        "controller_runtime_active_workers",
    ]:
        assert REGISTRY.get_sample_value(metric, labels) == 0.0, metric
    assert REGISTRY.get_sample_value("controller_runtime_max_concurrent_reconciles", labels) == 4.0

    init_informer_metrics(queue_name, restart_reasons=["idle"])
    resource = {"resource": queue_name}
    assert REGISTRY.get_sample_value("devserver_relists_total", resource) == 0.0
    restarts = REGISTRY.get_sample_value(
        "devserver_watch_restarts_total", {**resource, "reason": "idle"}
    )
    assert restarts == 0.0
    events = REGISTRY.get_sample_value(
        "devserver_watch_events_total", {**resource, "type": "ADDED"}
    )
    assert events == 0.0


def test_reflector_and_backlog_series_start_at_zero_and_count(queue_name: str) -> None:
    reflector = ReflectorMetrics(queue_name)
    resource = {"resource": queue_name}
    restarts = {**resource, "reason": "stalled"}
    assert REGISTRY.get_sample_value("devserver_watch_restarts_total", restarts) == 0.0
    reflector.restart("stalled")
    reflector.relist()
    reflector.event("MODIFIED")
    assert REGISTRY.get_sample_value("devserver_watch_restarts_total", restarts) == 1.0
    assert REGISTRY.get_sample_value("devserver_relists_total", resource) == 1.0
    modified = {**resource, "type": "MODIFIED"}
    assert REGISTRY.get_sample_value("devserver_watch_events_total", modified) == 1.0

    waiting = [0]
    Backlog(queue_name, "enqueue-owner", lambda: waiting[0])
    labels = {**resource, "handler": "enqueue-owner"}
    assert REGISTRY.get_sample_value("devserver_handler_backlog", labels) == 0.0
    waiting[0] = 7  # read when scraped
    assert REGISTRY.get_sample_value("devserver_handler_backlog", labels) == 7.0
