"""GPU-hours held and GPU-hours active, by flavor: what idle shutdown is meant to bring together.

*Held*: a dev server's pod is on a node, so its GPUs are taken from everyone else. *Active*: held
while the in-pod agent reports activity (a fresh Lease that does not say idle); a server without
a report counts as held, not active. The DevServer reconciler reports each server's state at
every reconcile (any change of the server, its pod or its Lease causes one), so the integral is
exact between changes at O(1) per report: the totals per flavor are kept, and time is added with
the counts that held until now.

Exported as counters `devserver_gpu_hours_held_total` / `devserver_gpu_hours_active_total` and
gauges `devserver_gpus_held` / `devserver_gpus_active` (label `flavor`); a scrape brings the
counters up to its own moment first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from threading import Lock

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from devserver.api.meta import ObjectKey


@dataclass(frozen=True)
class Holding:
    flavor: str
    gpus: int
    held: bool
    active: bool


@dataclass
class GpuHours:
    clock: Callable[[], float] = time.monotonic
    _servers: dict[ObjectKey, Holding] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)  # GPUs held now, by flavor
    _active: dict[str, int] = field(default_factory=dict)
    held_hours: dict[str, float] = field(default_factory=dict)
    active_hours: dict[str, float] = field(default_factory=dict)
    _last: float | None = None
    _lock: Lock = field(default_factory=Lock)  # scrapes run on the metrics server's thread

    def _advance(self) -> None:
        now = self.clock()
        if self._last is not None:
            hours = (now - self._last) / 3600
            for flavor, gpus in self._held.items():
                self.held_hours[flavor] = self.held_hours.get(flavor, 0.0) + gpus * hours
            for flavor, gpus in self._active.items():
                self.active_hours[flavor] = self.active_hours.get(flavor, 0.0) + gpus * hours
        self._last = now

    def report(self, key: ObjectKey, holding: Holding | None) -> None:
        """This server's state from now on (None: it is gone)."""
        with self._lock:
            self._advance()
            before = self._servers.pop(key, None)
            if before is not None:
                self._add(before, -1)
            if holding is not None and holding.gpus > 0:
                self._servers[key] = holding
                self._add(holding, +1)

    def _add(self, h: Holding, sign: int) -> None:
        for series in (self.held_hours, self.active_hours):
            series.setdefault(h.flavor, 0.0)  # zero-initialised: absent means "never seen"
        for now in (self._held, self._active):
            now.setdefault(h.flavor, 0)
        if h.held:
            self._held[h.flavor] = self._held.get(h.flavor, 0) + sign * h.gpus
        if h.held and h.active:
            self._active[h.flavor] = self._active.get(h.flavor, 0) + sign * h.gpus

    def snapshot(self) -> tuple[dict[str, float], dict[str, float], dict[str, int], dict[str, int]]:
        with self._lock:
            self._advance()
            return (
                dict(self.held_hours),
                dict(self.active_hours),
                dict(self._held),
                dict(self._active),
            )


class GpuHoursCollector(Collector):
    def __init__(self, source: GpuHours) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        held, active, held_now, active_now = self.source.snapshot()
        families: list[CounterMetricFamily | GaugeMetricFamily] = [
            CounterMetricFamily(
                "devserver_gpu_hours_held",
                "GPU-hours during which dev servers' pods held GPUs on a node",
                labels=["flavor"],
            ),
            CounterMetricFamily(
                "devserver_gpu_hours_active",
                "GPU-hours held while the in-pod agent reported activity",
                labels=["flavor"],
            ),
            GaugeMetricFamily(
                "devserver_gpus_held", "GPUs held by dev servers now", labels=["flavor"]
            ),
            GaugeMetricFamily(
                "devserver_gpus_active", "GPUs held by active dev servers now", labels=["flavor"]
            ),
        ]
        series: list[dict[str, float]] = [held, active, dict(held_now), dict(active_now)]
        for family, values in zip(families, series, strict=True):
            for flavor, value in sorted(values.items()):
                family.add_metric([flavor], value)
        yield from families


_SHARED: GpuHours | None = None


def shared_gpu_hours() -> GpuHours:
    """One per process, registered once with the default registry (its scrape is /metrics)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = GpuHours()
        REGISTRY.register(GpuHoursCollector(_SHARED))
    return _SHARED
