"""Prometheus alerting and recording rules for devserver, as data (one place for each rule).

`python -m devserver.manifests` writes them as a plain rules file
(`manifests/monitoring/rules.yaml`, for a Prometheus of your own) and into the chart, which ships
them as a PrometheusRule for the Prometheus Operator. `tests/unit/test_alert_rules.py` runs
`promtool test rules` on every rule, firing and not firing; the end-to-end test makes some fire
on the local platform.

Selectors name the scrape jobs `devserver-operator` and `devserver-bastion`: the chart's
ServiceMonitor and PodMonitor set those job names; a hand-written scrape config should use them.
Thresholds follow the prometheus-operator mixins: ratios over rates, and a `for:` long enough
that one slow reconcile or one restart does not page anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPERATOR = 'job="devserver-operator"'
BASTION = 'job="devserver-bastion"'


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    wait: str  # `for:`
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.wait,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


@dataclass(frozen=True)
class Record:
    name: str
    expr: str

    def rule(self) -> dict[str, Any]:
        return {"record": self.name, "expr": self.expr}


RECORDS = [
    Record(
        "flavor:devserver_gpu_utilisation:ratio",
        "sum by (flavor) (devserver_gpus_active) / (sum by (flavor) (devserver_gpus_held) > 0)",
    ),
    Record(
        "team:devserver_gpu_utilisation:ratio",
        "sum by (team) (devserver_gpus_active) / (sum by (team) (devserver_gpus_held) > 0)",
    ),
    Record(
        "flavor_team:devserver_gpus_idle:sum",
        "sum by (flavor, team) (devserver_gpus_held - devserver_gpus_active)",
    ),
    Record(
        "team:devserver_gpu_hours_idle:increase1d",
        "sum by (team) (increase(devserver_gpu_hours_held_total[1d])"
        " - increase(devserver_gpu_hours_active_total[1d]))",
    ),
    Record(
        "controller:controller_runtime_reconcile_errors:ratio_rate5m",
        f"sum by (controller) (rate(controller_runtime_reconcile_errors_total{{{OPERATOR}}}[5m]))"
        f" / (sum by (controller) (rate(controller_runtime_reconcile_total{{{OPERATOR}}}[5m]))"
        " > 0)",
    ),
]

# Reconcile errors worth a look: besides the ratio, a rate (a quiet fleet where one server's
# retries, backing off to 1,000 s, are most of the reconciles is not an operator fault).
ERRORS_PER_SECOND_MIN = 0.05
# Idle GPUs worth a look: at least this many, and this share of all held, for an hour. Below
# it, idle stop (the default idle timeout is shorter than the hour) is doing its job.
IDLE_GPUS_MIN = 2
IDLE_GPUS_SHARE = 0.25
# Failed SSH authentications in 5 minutes that outnumber successful ones this much.
LOGIN_FAILURES_MIN = 20

OPERATOR_ALERTS = [
    Alert(
        "DevserverOperatorDown",
        f"absent(up{{{OPERATOR}}} == 1)",
        "5m",
        "critical",
        "No devserver operator is up",
        "No devserver-operator target has been up for 5 minutes: servers are not started, "
        "stopped at their deadline or idle stopped, and GPUs are not given back.",
    ),
    Alert(
        "DevserverNoLeader",
        f"sum by (name) (leader_election_master_status{{{OPERATOR}}}) < 1",
        "5m",
        "critical",
        "No devserver operator leads",
        "Operator pods are up but none has held the lease {{ $labels.name }} for 5 minutes: "
        "nothing reconciles. Check the pods' logs for lease errors and their RBAC on Leases.",
    ),
    Alert(
        "DevserverTwoLeaders",
        f"sum by (name) (leader_election_master_status{{{OPERATOR}}}) > 1",
        "2m",
        "critical",
        "Two devserver operators lead at once",
        "More than one operator pod says it holds the lease {{ $labels.name }}: they may "
        "fight over the same objects. Check clock skew between nodes and the lease's holder.",
    ),
    Alert(
        "DevserverReconcileErrors",
        "controller:controller_runtime_reconcile_errors:ratio_rate5m > 0.1"
        " and on (controller) sum by (controller)"
        f" (rate(controller_runtime_reconcile_errors_total{{{OPERATOR}}}[5m]))"
        f" > {ERRORS_PER_SECOND_MIN}",
        "10m",
        "warning",
        "devserver controller {{ $labels.controller }} fails over 10 % of its reconciles",
        "Controller {{ $labels.controller }} has failed more than 10 % of its reconciles, "
        "and at least 3 a minute, for 10 minutes; the operator's log says why (level=error).",
    ),
    Alert(
        "DevserverWorkqueueStuck",
        f"max by (name) (workqueue_longest_running_processor_seconds{{{OPERATOR}}}) > 300",
        "1m",
        "warning",
        "A devserver reconcile has run for over 5 minutes",
        "A worker of queue {{ $labels.name }} has been on one item for more than 5 minutes: "
        "a call that never returns. Restarting the leader frees it.",
    ),
    Alert(
        "DevserverWorkqueueGrowing",
        f"sum by (name) (workqueue_depth{{{OPERATOR}}}) > 100"
        f" and sum by (name) (deriv(workqueue_depth{{{OPERATOR}}}[15m])) > 0",
        "15m",
        "warning",
        "devserver work queue {{ $labels.name }} keeps growing",
        "Queue {{ $labels.name }} holds over 100 items and has grown for 15 minutes: the "
        "operator falls behind (API server throttling, or too few workers).",
    ),
    Alert(
        "DevserverWatchRestarts",
        "sum by (resource) (increase(devserver_watch_restarts_total"
        f'{{{OPERATOR},reason!~"gone|silent"}}[15m])) > 10',
        "15m",
        "warning",
        "devserver watches of {{ $labels.resource }} keep breaking",
        "The operator re-opened its watch of {{ $labels.resource }} more than 10 times in 15 "
        "minutes for errors, stalls or throttling (410 Gone, and the re-watch of a resource "
        "that had nothing to say, are normal and not counted): its "
        "cache lags the API server. Check the API server and the network between them.",
    ),
    Alert(
        "DevserverServersStuckPending",
        "max by (flavor) (devserver_servers_pending_oldest_seconds) > 900",
        "1m",
        "warning",
        "A {{ $labels.flavor }} dev server has waited over 15 minutes for a node",
        "A dev server of flavor {{ $labels.flavor }} has been Pending for more than 15 "
        "minutes: no node can take it (GPU capacity, node group scaling, selectors, taints). "
        "`devctl describe` on it says what the scheduler said.",
    ),
    Alert(
        "DevserverIdleGpus",
        f"sum(flavor_team:devserver_gpus_idle:sum) >= {IDLE_GPUS_MIN}"
        f" and sum(flavor_team:devserver_gpus_idle:sum) / sum(devserver_gpus_held)"
        f" > {IDLE_GPUS_SHARE}",
        "1h",
        "warning",
        "Over a quarter of the GPUs dev servers hold have been idle for an hour",
        "Dev servers hold GPUs their users do not use, and have for an hour: idle stop is off "
        "or its timeout long for some. The fleet dashboard and `devctl admin usage` say whose.",
    ),
]

BASTION_ALERTS = [
    Alert(
        "DevserverBastionDown",
        f"absent(up{{{BASTION}}} == 1)",
        "5m",
        "critical",
        "No devserver bastion is up",
        "No devserver-bastion target has been up for 5 minutes: users cannot log in.",
    ),
    Alert(
        "DevserverBastionLoginFailures",
        f'sum(increase(devserver_bastion_logins_total{{{BASTION},outcome!="accepted"}}[5m]))'
        f" > {LOGIN_FAILURES_MIN}"
        f' and sum(increase(devserver_bastion_logins_total{{{BASTION},outcome!="accepted"}}[5m]))'
        f' > 2 * sum(increase(devserver_bastion_logins_total{{{BASTION},outcome="accepted"}}[5m]))',
        "5m",
        "warning",
        "SSH logins to the bastion fail far more than they succeed",
        f"More than {LOGIN_FAILURES_MIN} SSH authentications failed in 5 minutes, over twice "
        "the successful ones: someone is guessing, or keys changed. The bastion's audit log "
        "says from where.",
    ),
]

GROUPS: dict[str, list[Alert] | list[Record]] = {
    "devserver.records": RECORDS,
    "devserver.operator": OPERATOR_ALERTS,
    "devserver.bastion": BASTION_ALERTS,
}


def rule_groups() -> dict[str, Any]:
    """The rules file: `{"groups": [...]}`, as Prometheus reads it."""
    return {
        "groups": [
            {"name": name, "rules": [rule.rule() for rule in rules]}
            for name, rules in GROUPS.items()
        ]
    }


def alerts() -> dict[str, Alert]:
    return {a.name: a for a in [*OPERATOR_ALERTS, *BASTION_ALERTS]}
