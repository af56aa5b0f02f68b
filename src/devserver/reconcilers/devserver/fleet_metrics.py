"""The fleet as Prometheus sees it: servers by phase, GPUs and GPU-hours held and active.

*Held*: a dev server's pod is on a node, so its GPUs are taken from everyone else. *Active*: held
while the in-pod agent reports activity (a fresh Lease that does not say idle); a server without
a report counts as held, not active. The DevServer reconciler reports each server's state at
every reconcile (any change of the server, its pod or its Lease causes one), so the integral is
exact between changes at O(1) per report: the totals per (flavor, team) are kept, and time is
added with the counts that held until now.

Labels are bounded by what admins declare: `flavor` (DevServerFlavors) and `team` (DevUsers'
`spec.team`, "" for none) — never a server or a user (`devctl admin usage` reports those, from
the servers' billing status, without a series per user). A scrape brings the counters up to its
own moment first.

| series | type | labels |
|---|---|---|
| `devserver_servers` | gauge | phase, flavor |
| `devserver_servers_pending_oldest_seconds` | gauge | flavor |
| `devserver_gpus_held`, `devserver_gpus_active` | gauge | flavor, team |
| `devserver_gpu_hours_held_total`, `devserver_gpu_hours_active_total` | counter | flavor, team |
| `devserver_gpu_hours_reclaimed_total` | counter | flavor, team |
| `devserver_cost_usd_total` | counter | flavor, team |
| `devserver_stops_total` | counter | reason |
| `devserver_stop_warnings_total` | counter | reason |
| `devserver_extensions_total` | counter | |

The last three are events, counted where they happen (the reconciler, the expiry reconciler);
they are defined here so that only a process that runs the reconcilers exports them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from threading import Lock

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from devserver.api.meta import KubeObject, ObjectKey
from devserver.reconcilers.kueue import gated

Group = tuple[str, str]  # (flavor, team)
UNKNOWN_FLAVOR = "<unknown>"  # the label of a flavor no DevServerFlavor of that name exists for


STOP_REASONS = ("expired", "idle", "user", "user_removed", "preempted")
STOPS = prometheus_client.Counter(
    "devserver_stops_total", "Dev servers stopped, by why", ("reason",)
)
WARNING_REASONS = ("expiring", "idle")
STOP_WARNINGS = prometheus_client.Counter(
    "devserver_stop_warnings_total",
    "Warnings that a dev server will stop soon (each lead time once), by why",
    ("reason",),
)
EXTENSIONS = prometheus_client.Counter(
    "devserver_extensions_total", "Deadline extensions the operator applied (devctl extend)"
)
for _reason in STOP_REASONS:
    STOPS.labels(reason=_reason)
for _reason in WARNING_REASONS:
    STOP_WARNINGS.labels(reason=_reason)


@dataclass(frozen=True, slots=True)  # one per server: 96 bytes, not 352 with a __dict__
class ServerReport:
    flavor: str
    gpus: int
    held: bool
    active: bool
    team: str = ""
    phase: str = ""  # "" until its first status
    pending_since: float | None = None  # the fleet's clock, while it waits for a node
    price_per_hour: float = 0.0  # USD, for its pods on nodes (the flavor's price)

    @property
    def group(self) -> Group:
        return self.flavor, self.team


def waiting_since(
    pods: list[KubeObject],
    now: datetime,
    clock: float,
    admitted: Callable[[KubeObject], datetime | None] = lambda pod: None,
) -> float | None:
    """When (on the fleet's `clock`, read at `now`) the oldest of `pods` no node has taken yet
    was made — or admitted by Kueue, if later; None when every pod is on a node. Only waiting
    for a node counts: a server whose pod restarts, that has no pod (refused by its quota, a
    flavor that does not exist), or that Kueue holds in its queue, is not waiting for
    capacity."""
    made = [
        max(created, admitted(p) or created)
        for p in pods
        if not (p.extra.get("spec") or {}).get("nodeName")
        and not gated(p)
        and (created := p.metadata.creation_timestamp) is not None
    ]
    if not made:
        return None
    return clock - max(0.0, (now - min(made)).total_seconds())


@dataclass
class FleetMetrics:
    clock: Callable[[], float] = time.monotonic
    _servers: dict[ObjectKey, ServerReport] = field(default_factory=dict)
    _held: Counter[Group] = field(default_factory=Counter)  # GPUs held now
    _active: Counter[Group] = field(default_factory=Counter)
    held_hours: dict[Group, float] = field(default_factory=dict)
    active_hours: dict[Group, float] = field(default_factory=dict)
    reclaimed_hours: dict[Group, float] = field(default_factory=dict)
    cost: dict[Group, float] = field(default_factory=dict)
    _price: dict[Group, float] = field(default_factory=dict)  # USD per hour, held now
    _phases: set[tuple[str, str]] = field(default_factory=set)  # kept at 0 once seen
    _last: float | None = None
    _lock: Lock = field(default_factory=Lock)  # a scrape may run on another thread

    def _advance(self) -> None:
        now = self.clock()
        if self._last is not None:
            hours = (now - self._last) / 3600
            for group, gpus in self._held.items():
                self.held_hours[group] = self.held_hours.get(group, 0.0) + gpus * hours
            for group, gpus in self._active.items():
                self.active_hours[group] = self.active_hours.get(group, 0.0) + gpus * hours
            for group, price in self._price.items():
                self.cost[group] = self.cost.get(group, 0.0) + price * hours
        self._last = now

    def report(self, key: ObjectKey, report: ServerReport | None) -> None:
        """This server's state from now on (None: it is gone)."""
        with self._lock:
            self._advance()
            before = self._servers.pop(key, None)
            if before is not None:
                self._add(before, -1)
            if report is not None:
                self._servers[key] = report
                self._add(report, +1)

    def report_of(self, key: ObjectKey) -> ServerReport | None:
        with self._lock:
            return self._servers.get(key)

    def reclaimed(self, flavor: str, team: str, gpu_hours: float) -> None:
        """An idle stop gave back `gpu_hours` its server would have held until its deadline."""
        with self._lock:
            group = (flavor, team)
            self.reclaimed_hours[group] = self.reclaimed_hours.get(group, 0.0) + gpu_hours

    def _add(self, r: ServerReport, sign: int) -> None:
        if r.held and r.price_per_hour:
            self.cost.setdefault(r.group, 0.0)
            self._price[r.group] = self._price.get(r.group, 0.0) + sign * r.price_per_hour
        if r.gpus <= 0:
            return
        for series in (self.held_hours, self.active_hours, self.reclaimed_hours):
            series.setdefault(r.group, 0.0)  # zero-initialised: absent means "never seen"
        self._held[r.group] += sign * r.gpus if r.held else 0
        self._active[r.group] += sign * r.gpus if r.held and r.active else 0

    def snapshot(self) -> Snapshot:
        with self._lock:
            self._advance()
            now = self.clock()
            phases: Counter[tuple[str, str]] = Counter()
            for r in self._servers.values():
                if r.phase:
                    phases[(r.phase, r.flavor)] += 1
            self._phases.update(phases)
            oldest = {flavor: 0.0 for _, flavor in self._phases}
            for r in self._servers.values():
                if r.pending_since is not None:
                    oldest[r.flavor] = max(oldest.get(r.flavor, 0.0), now - r.pending_since)
            return Snapshot(
                held_hours=dict(self.held_hours),
                active_hours=dict(self.active_hours),
                reclaimed_hours=dict(self.reclaimed_hours),
                cost=dict(self.cost),
                held=dict(self._held),
                active=dict(self._active),
                servers={group: phases[group] for group in self._phases},
                pending_oldest=oldest,
            )


@dataclass(frozen=True)
class Snapshot:
    held_hours: dict[Group, float]
    active_hours: dict[Group, float]
    reclaimed_hours: dict[Group, float]
    cost: dict[Group, float]
    held: dict[Group, int]
    active: dict[Group, int]
    servers: dict[tuple[str, str], int]  # (phase, flavor)
    pending_oldest: dict[str, float]  # by flavor


GPU_LABELS = ["flavor", "team"]


class FleetCollector(Collector):
    def __init__(self, source: FleetMetrics) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        seen = self.source.snapshot()
        gpu_families: list[tuple[CounterMetricFamily | GaugeMetricFamily, dict[Group, float]]] = [
            (
                CounterMetricFamily(
                    "devserver_gpu_hours_held",
                    "GPU-hours during which dev servers' pods held GPUs on a node",
                    labels=GPU_LABELS,
                ),
                seen.held_hours,
            ),
            (
                CounterMetricFamily(
                    "devserver_gpu_hours_active",
                    "GPU-hours held while the in-pod agent reported activity",
                    labels=GPU_LABELS,
                ),
                seen.active_hours,
            ),
            (
                CounterMetricFamily(
                    "devserver_gpu_hours_reclaimed",
                    "GPU-hours idle stops gave back: GPUs times the time left to the deadline",
                    labels=GPU_LABELS,
                ),
                seen.reclaimed_hours,
            ),
            (
                CounterMetricFamily(
                    "devserver_cost_usd",
                    "What dev servers' pods on nodes cost, at their flavors' prices",
                    labels=GPU_LABELS,
                ),
                seen.cost,
            ),
            (
                GaugeMetricFamily(
                    "devserver_gpus_held", "GPUs held by dev servers now", labels=GPU_LABELS
                ),
                {g: float(n) for g, n in seen.held.items()},
            ),
            (
                GaugeMetricFamily(
                    "devserver_gpus_active",
                    "GPUs held by active dev servers now",
                    labels=GPU_LABELS,
                ),
                {g: float(n) for g, n in seen.active.items()},
            ),
        ]
        for family, values in gpu_families:
            for group, value in sorted(values.items()):
                family.add_metric(list(group), value)
            yield family
        servers = GaugeMetricFamily(
            "devserver_servers", "Dev servers by phase and flavor", labels=["phase", "flavor"]
        )
        for (phase, flavor), count in sorted(seen.servers.items()):
            servers.add_metric([phase, flavor], count)
        yield servers
        pending = GaugeMetricFamily(
            "devserver_servers_pending_oldest_seconds",
            "How long the longest-waiting dev server of a flavor has waited for its pods "
            "(0: none waits)",
            labels=["flavor"],
        )
        for flavor, seconds in sorted(seen.pending_oldest.items()):
            pending.add_metric([flavor], seconds)
        yield pending


_SHARED: FleetMetrics | None = None


def shared_fleet_metrics() -> FleetMetrics:
    """One per process, registered once with the default registry (its scrape is /metrics)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = FleetMetrics()
        REGISTRY.register(FleetCollector(_SHARED))
    return _SHARED
