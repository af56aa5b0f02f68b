"""Grafana dashboards as code: the fleet, the operator and the bastion.

`python -m devserver.manifests` writes each to `manifests/monitoring/dashboards/<stem>.json` and
into the chart (`files/dashboards/`), whose `monitoring.dashboards` values ship them as ConfigMaps
for kube-prometheus-stack's Grafana sidecar. Every query reads the `datasource` variable's
Prometheus; the names are those of `metrics.py`, of the fleet's collector
(`reconcilers.devserver.fleet_metrics`) and of the recording rules below.

Series whose names both the operator and the bastion export (client-go's, controller-runtime's,
the process's, `up`) are selected by `job`: `devserver-operator` or `devserver-bastion`. Rates
use fixed windows; totals over the dashboard's time range use Grafana's `$__range`, which
`expressions()` replaces by `1h` so that each query can be checked outside Grafana.
"""

from __future__ import annotations

from typing import Any

from devserver.observability.dashboard_panels import Q, dashboard, quantiles, stat, timeseries
from devserver.observability.rules import BASTION, OPERATOR, RECORDS

__all__ = ["DASHBOARDS", "RECORDING_RULES", "expressions"]

# Recorded by the rules (`observability.rules`; the chart's PrometheusRule): read, not made, here.
RECORDING_RULES = tuple(record.name for record in RECORDS)

# Grafana's variables, as `expressions()` evaluates them outside Grafana.
GRAFANA_VARIABLES = {"$__range": "1h", "$__rate_interval": "5m"}


def fleet() -> dict[str, Any]:
    over_range = "Totals over the dashboard's time range."
    return dashboard(
        "devserver-fleet",
        "devserver / Fleet",
        "Dev servers, the GPUs they hold and use, what idle stops give back and what it costs.",
        [
            [
                timeseries(
                    "Servers by phase",
                    Q("sum by (phase) (devserver_servers)", "{{phase}}"),
                    stacked=True,
                ),
                timeseries(
                    "GPUs held vs active",
                    Q("sum(devserver_gpus_held)", "held"),
                    Q("sum(devserver_gpus_active)", "active"),
                    description="Held: a server's pod is on a node. Active: held, and its agent "
                    "reports activity.",
                ),
            ],
            [
                timeseries(
                    f"GPU utilisation by {label}",
                    Q(f"{label}:devserver_gpu_utilisation:ratio", f"{{{{{label}}}}}"),
                    unit="percentunit",
                    max_value=1,
                    description="Active GPUs / held GPUs.",
                )
                for label in ("flavor", "team")
            ],
            [
                timeseries(
                    "Idle GPUs by flavor and team",
                    Q("flavor_team:devserver_gpus_idle:sum", "{{flavor}} / {{team}}"),
                    stacked=True,
                    description="Held but not active.",
                ),
                timeseries(
                    "Idle GPU-hours by team, last 24 h",
                    Q("team:devserver_gpu_hours_idle:increase1d", "{{team}}"),
                    description="GPU-hours held but not active over the day before each point.",
                ),
                timeseries(
                    "Oldest Pending wait by flavor",
                    Q("max by (flavor) (devserver_servers_pending_oldest_seconds)", "{{flavor}}"),
                    unit="s",
                    description="How long the longest-waiting server has waited for a node.",
                ),
            ],
            [
                stat(
                    "GPU-hours reclaimed by idle stops",
                    Q("sum(increase(devserver_gpu_hours_reclaimed_total[$__range]))", "reclaimed"),
                    instant=True,
                    decimals=1,
                    description="GPU-hours idle servers would have held until their deadlines. "
                    + over_range,
                ),
                stat(
                    "GPU-hours reclaimed by team",
                    Q(
                        "sum by (team) (increase(devserver_gpu_hours_reclaimed_total[$__range]))",
                        "{{team}}",
                    ),
                    instant=True,
                    decimals=1,
                    description=over_range,
                ),
                stat(
                    "GPU-hours held vs active by team",
                    Q(
                        "sum by (team) (increase(devserver_gpu_hours_held_total[$__range]))",
                        "{{team}} held",
                    ),
                    Q(
                        "sum by (team) (increase(devserver_gpu_hours_active_total[$__range]))",
                        "{{team}} active",
                    ),
                    instant=True,
                    decimals=1,
                    width=12,
                    description=over_range,
                ),
            ],
            [
                stat(
                    f"Cost by {label}",
                    Q(
                        f"sum by ({label}) (increase(devserver_cost_usd_total[$__range]))",
                        f"{{{{{label}}}}}",
                    ),
                    unit="currencyUSD",
                    instant=True,
                    description="Servers' pods on nodes at their flavors' prices. " + over_range,
                )
                for label in ("flavor", "team")
            ],
            [
                timeseries(
                    "Stops by reason (per hour)",
                    Q("sum by (reason) (increase(devserver_stops_total[1h]))", "{{reason}}"),
                    stacked=True,
                ),
                timeseries(
                    "Stop warnings and extensions",
                    Q(
                        "sum by (reason) (rate(devserver_stop_warnings_total[5m]))",
                        "warning: {{reason}}",
                    ),
                    Q("sum(rate(devserver_extensions_total[5m]))", "extensions"),
                    unit="ops",
                ),
            ],
        ],
    )


def operator() -> dict[str, Any]:
    return dashboard(
        "devserver-operator",
        "devserver / Operator",
        "The operator's health: reconciles, work queues, watches, API requests and resources.",
        [
            [
                stat("Pods up", Q(f"sum(up{{{OPERATOR}}})", "up"), width=4),
                timeseries(
                    "Leader",
                    Q(
                        f"max by (pod, instance) (leader_election_master_status{{{OPERATOR}}})",
                        "{{pod}} {{instance}}",
                    ),
                    width=8,
                    height=6,
                    max_value=1,
                    description="1: the pod holding the leader-election Lease.",
                ),
                timeseries(
                    "Reconcile error ratio",
                    Q(
                        "controller:controller_runtime_reconcile_errors:ratio_rate5m",
                        "{{controller}}",
                    ),
                    unit="percentunit",
                    height=6,
                ),
            ],
            [
                timeseries(
                    "Reconciles by controller and result",
                    Q(
                        "sum by (controller, result) "
                        f"(rate(controller_runtime_reconcile_total{{{OPERATOR}}}[5m]))",
                        "{{controller}} {{result}}",
                    ),
                    unit="ops",
                ),
                timeseries(
                    "Reconcile latency p50 / p99",
                    *quantiles(
                        f"controller_runtime_reconcile_time_seconds_bucket{{{OPERATOR}}}",
                        "controller",
                        "{{controller}}",
                        0.5,
                        0.99,
                    ),
                    unit="s",
                ),
            ],
            [
                timeseries(
                    "Active workers vs max",
                    Q(
                        f"sum by (controller) (controller_runtime_active_workers{{{OPERATOR}}})",
                        "{{controller}} active",
                    ),
                    Q(
                        "max by (controller) "
                        f"(controller_runtime_max_concurrent_reconciles{{{OPERATOR}}})",
                        "{{controller}} max",
                    ),
                ),
                timeseries(
                    "Workqueue depth",
                    Q(f"sum by (name) (workqueue_depth{{{OPERATOR}}})", "{{name}}"),
                ),
            ],
            [
                timeseries(
                    "Workqueue adds",
                    Q(f"sum by (name) (rate(workqueue_adds_total{{{OPERATOR}}}[5m]))", "{{name}}"),
                    unit="ops",
                ),
                timeseries(
                    "Workqueue wait p99",
                    *quantiles(
                        f"workqueue_queue_duration_seconds_bucket{{{OPERATOR}}}",
                        "name",
                        "{{name}}",
                        0.99,
                    ),
                    unit="s",
                    description="How long an item waits in the queue before a worker takes it.",
                ),
                timeseries(
                    "Longest running processor",
                    Q(
                        "max by (name) "
                        f"(workqueue_longest_running_processor_seconds{{{OPERATOR}}})",
                        "{{name}}",
                    ),
                    unit="s",
                    description="Grows without bound when a worker is stuck.",
                ),
            ],
            [
                timeseries(
                    "Workqueue retries",
                    Q(
                        f"sum by (name) (rate(workqueue_retries_total{{{OPERATOR}}}[5m]))",
                        "{{name}}",
                    ),
                    unit="ops",
                ),
                timeseries(
                    "Watch restarts by resource and reason",
                    Q(
                        "sum by (resource, reason) "
                        f"(rate(devserver_watch_restarts_total{{{OPERATOR}}}[5m]))",
                        "{{resource}} {{reason}}",
                    ),
                    unit="ops",
                ),
                timeseries(
                    "Relists by resource (per hour)",
                    Q(
                        f"sum by (resource) (increase(devserver_relists_total{{{OPERATOR}}}[1h]))",
                        "{{resource}}",
                    ),
                    description="Full LISTs after the first (a watch that could not resume).",
                ),
            ],
            [
                timeseries(
                    "Handler backlog",
                    Q(
                        f"sum by (resource, handler) (devserver_handler_backlog{{{OPERATOR}}})",
                        "{{resource}} {{handler}}",
                    ),
                    description="Notifications waiting for an event handler.",
                ),
                timeseries(
                    "Unreadable objects (per hour)",
                    Q(
                        "sum by (resource) "
                        f"(increase(devserver_unreadable_objects_total{{{OPERATOR}}}[1h]))",
                        "{{resource}}",
                    ),
                    description="Objects stored that the operator's model could not read.",
                ),
                timeseries(
                    "API requests by code and method",
                    Q(
                        "sum by (code, method) "
                        f"(rate(rest_client_requests_total{{{OPERATOR}}}[5m]))",
                        "{{code}} {{method}}",
                    ),
                    unit="reqps",
                ),
            ],
            _process(OPERATOR),
        ],
    )


def _process(job: str) -> list[dict[str, Any]]:
    return [
        timeseries(
            "CPU",
            Q(f"rate(process_cpu_seconds_total{{{job}}}[5m])", "{{pod}} {{instance}}"),
            description="Cores used.",
        ),
        timeseries(
            "Memory (RSS)",
            Q(f"process_resident_memory_bytes{{{job}}}", "{{pod}} {{instance}}"),
            unit="bytes",
        ),
    ]


def bastion() -> dict[str, Any]:
    return dashboard(
        "devserver-bastion",
        "devserver / Bastion",
        "The SSH bastion: logins, connections and sessions, credentials, API requests.",
        [
            [
                stat("Pods up", Q(f"sum(up{{{BASTION}}})", "up"), width=4, height=8),
                timeseries(
                    "Open connections and sessions",
                    Q("sum(devserver_bastion_connections_open)", "connections"),
                    Q("sum(devserver_bastion_sessions_open)", "sessions"),
                ),
                timeseries(
                    "Logins by outcome",
                    Q(
                        "sum by (outcome) (increase(devserver_bastion_logins_total[5m]))",
                        "{{outcome}}",
                    ),
                    stacked=True,
                    description="SSH authentications per 5 minutes: accepted, a key refused, "
                    "or an unknown user.",
                ),
            ],
            [
                timeseries(
                    "Token requests by outcome",
                    Q(
                        "sum by (outcome) (increase(devserver_bastion_token_requests_total[5m]))",
                        "{{outcome}}",
                    ),
                    stacked=True,
                    description="Kubernetes credentials asked for by sessions, per 5 minutes.",
                ),
                timeseries(
                    "Login latency p50 / p90 / p99",
                    *quantiles(
                        "devserver_bastion_login_duration_seconds_bucket", "", "", 0.5, 0.9, 0.99
                    ),
                    unit="s",
                    description="From sshd accepting a key to the session holding its "
                    "Kubernetes credentials.",
                ),
                timeseries(
                    "API requests by code",
                    Q(
                        f"sum by (code) (rate(rest_client_requests_total{{{BASTION}}}[5m]))",
                        "{{code}}",
                    ),
                    unit="reqps",
                ),
            ],
            _process(BASTION),
        ],
    )


DASHBOARDS: dict[str, dict[str, Any]] = {
    "fleet": fleet(),
    "operator": operator(),
    "bastion": bastion(),
}


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard stem, panel title, expr) of every target, with Grafana's variables replaced
    (`$__range` by 1h, `$__rate_interval` by 5m) so that Prometheus itself can evaluate them."""
    found = []
    for stem, board in DASHBOARDS.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                found.append((stem, panel["title"], expr))
    return found
