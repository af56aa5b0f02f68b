"""`promtool test rules` on every alert: synthetic series that must fire it, at the moment its
`for:` runs out and not before, and series just short of its threshold that must not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devserver.observability.rules import alerts, rule_groups
from devserver_harness.tools import ensure_tool

OP = 'job="devserver-operator",instance="op-0"'
OP2 = 'job="devserver-operator",instance="op-1"'
BA = 'job="devserver-bastion",instance="ba-0"'


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


# alert -> (input series, minutes when it fires, the labels it fires with beyond severity,
#           minutes when it must not fire yet, series just short of firing for `quiet`)
CASES: dict[str, dict[str, Any]] = {
    "DevserverOperatorDown": {
        "series": [_series("up", OP, "1 1 0x20"), _series("up", OP2, "0x22")],
        "fires": 9,  # down from minute 2, `for: 5m` counts from the first evaluation at 2
        "early": 5,
        "labels": {},
        "quiet": [_series("up", OP, "0x20"), _series("up", OP2, "1x20")],
    },
    "DevserverNoLeader": {
        "series": [
            _series("leader_election_master_status", f'{OP},name="devserver-operator"', "0x20"),
            _series("leader_election_master_status", f'{OP2},name="devserver-operator"', "0x20"),
        ],
        "fires": 6,
        "early": 4,
        "labels": {"name": "devserver-operator"},
        "quiet": [
            _series("leader_election_master_status", f'{OP},name="devserver-operator"', "1x20"),
            _series("leader_election_master_status", f'{OP2},name="devserver-operator"', "0x20"),
        ],
    },
    "DevserverTwoLeaders": {
        "series": [
            _series("leader_election_master_status", f'{OP},name="devserver-operator"', "1x20"),
            _series("leader_election_master_status", f'{OP2},name="devserver-operator"', "1x20"),
        ],
        "fires": 3,
        "early": 1,
        "labels": {"name": "devserver-operator"},
        "quiet": [
            _series("leader_election_master_status", f'{OP},name="devserver-operator"', "1x20"),
            _series("leader_election_master_status", f'{OP2},name="devserver-operator"', "0x20"),
        ],
    },
    "DevserverReconcileErrors": {
        # 100 reconciles a minute, 20 of them errors: a 20 % ratio
        "series": [
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="success"',
                "0+80x40",
            ),
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="error"',
                "0+20x40",
            ),
            _series(
                "controller_runtime_reconcile_errors_total",
                f'{OP},controller="devserver"',
                "0+20x40",
            ),
        ],
        "fires": 12,  # a rate from the second sample (minute 1), for 10m
        "early": 10,
        "labels": {"controller": "devserver"},
        "quiet": [  # 5 % errors
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="success"',
                "0+95x40",
            ),
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="error"',
                "0+5x40",
            ),
            _series(
                "controller_runtime_reconcile_errors_total",
                f'{OP},controller="devserver"',
                "0+5x40",
            ),
        ],
        "also_quiet": [  # one server failing, backing off: most reconciles, but 1 in 2 min
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="error"',
                "0+0.5x40",
            ),
            _series(
                "controller_runtime_reconcile_total",
                f'{OP},controller="devserver",result="success"',
                "0+0.1x40",
            ),
            _series(
                "controller_runtime_reconcile_errors_total",
                f'{OP},controller="devserver"',
                "0+0.5x40",
            ),
        ],
    },
    "DevserverWorkqueueStuck": {
        "series": [
            _series(
                "workqueue_longest_running_processor_seconds",
                f'{OP},name="devserver",controller="devserver"',
                "0+60x20",
            ),
        ],
        "fires": 7,  # over 300 s from minute 6, `for: 1m`
        "early": 6,
        "labels": {"name": "devserver"},
        "quiet": [
            _series(
                "workqueue_longest_running_processor_seconds",
                f'{OP},name="devserver",controller="devserver"',
                "0+60x4 0x20",
            ),
        ],
    },
    "DevserverWorkqueueGrowing": {
        "series": [
            _series(
                "workqueue_depth", f'{OP},name="devserver",controller="devserver"', "100+10x60"
            ),
        ],
        "fires": 17,
        "early": 14,
        "labels": {"name": "devserver"},
        "quiet": [  # deep but draining
            _series(
                "workqueue_depth", f'{OP},name="devserver",controller="devserver"', "900-10x60"
            ),
        ],
    },
    "DevserverWatchRestarts": {
        "series": [  # one stalled watch a minute
            _series(
                "devserver_watch_restarts_total", f'{OP},resource="pods",reason="stalled"', "0+1x60"
            ),
        ],
        "fires": 26,  # 11 in 15 minutes from minute 11, for 15m
        "early": 20,
        "labels": {"resource": "pods"},
        "quiet": [  # 410 Gone every minute is how watches end, an idle resource's silent
            # re-watch every 90 s how it stays fresh: not an alert
            _series(
                "devserver_watch_restarts_total", f'{OP},resource="pods",reason="gone"', "0+1x60"
            ),
            _series(
                "devserver_watch_restarts_total",
                f'{OP},resource="leases",reason="silent"',
                "0+1x60",
            ),
        ],
    },
    "DevserverServersStuckPending": {
        "series": [
            _series(
                "devserver_servers_pending_oldest_seconds", f'{OP},flavor="gpu-large"', "0+60x30"
            ),
        ],
        "fires": 17,
        "early": 15,
        "labels": {"flavor": "gpu-large"},
        "quiet": [
            _series(
                "devserver_servers_pending_oldest_seconds",
                f'{OP},flavor="gpu-large"',
                "0+60x10 0x20",
            ),
        ],
    },
    "DevserverIdleGpus": {
        "series": [  # 8 GPUs held, 4 used: 4 idle (50 %)
            _series("devserver_gpus_held", f'{OP},flavor="gpu",team="nlp"', "8x90"),
            _series("devserver_gpus_active", f'{OP},flavor="gpu",team="nlp"', "4x90"),
        ],
        "fires": 61,
        "early": 59,
        "labels": {},
        "quiet": [  # 1 of 8 idle: below both thresholds
            _series("devserver_gpus_held", f'{OP},flavor="gpu",team="nlp"', "8x90"),
            _series("devserver_gpus_active", f'{OP},flavor="gpu",team="nlp"', "7x90"),
        ],
    },
    "DevserverBastionDown": {
        "series": [_series("up", BA, "0x20")],
        "fires": 5,
        "early": 4,
        "labels": {},
        "quiet": [_series("up", BA, "1x20")],
    },
    "DevserverBastionLoginFailures": {
        "series": [  # 10 refused keys a minute, 1 login
            _series("devserver_bastion_logins_total", f'{BA},outcome="rejected"', "0+10x30"),
            _series("devserver_bastion_logins_total", f'{BA},outcome="accepted"', "0+1x30"),
        ],
        "fires": 8,
        "early": 6,
        "labels": {},
        "quiet": [  # as many logins as failures: a busy morning, not an attack
            _series("devserver_bastion_logins_total", f'{BA},outcome="rejected"', "0+10x30"),
            _series("devserver_bastion_logins_total", f'{BA},outcome="accepted"', "0+10x30"),
        ],
    },
}


def _annotations(name: str, labels: dict[str, str]) -> dict[str, str]:
    alert = alerts()[name]
    texts = {"summary": alert.summary, "description": alert.description}
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
        for key, text in texts.items()
    }


def _test(name: str, series: list[dict[str, str]], minute: int, fired: bool) -> dict[str, Any]:
    case = CASES[name]
    labels = {"severity": alerts()[name].severity, **case["labels"]}
    expected = [{"exp_labels": labels, "exp_annotations": _annotations(name, labels)}]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected if fired else []}
        ],
    }


def test_every_alert_has_a_case() -> None:
    assert set(CASES) == set(alerts())


@pytest.mark.parametrize("name", sorted(CASES))
def test_alert_fires_when_its_for_runs_out_and_not_before_nor_below_its_threshold(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    tests = [
        _test(name, case["series"], case["fires"], fired=True),
        _test(name, case["series"], case["early"], fired=False),
        _test(name, case["quiet"], case["fires"], fired=False),
    ]
    if "also_quiet" in case:
        tests.append(_test(name, case["also_quiet"], case["fires"], fired=False))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run(
        [str(ensure_tool("promtool")), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_recording_rules_compute_utilisation_and_idle_gpus(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    held = [("gpu-large", "nlp", 8, 2), ("gpu-small", "nlp", 2, 2), ("gpu-small", "", 4, 0)]
    series = []
    for flavor, team, gpus, active in held:
        labels = f'{OP},flavor="{flavor}",team="{team}"'
        series += [
            _series("devserver_gpus_held", labels, f"{gpus}x10"),
            _series("devserver_gpus_active", labels, f"{active}x10"),
        ]
    expected = {
        "flavor:devserver_gpu_utilisation:ratio": [
            ({"flavor": "gpu-large"}, 0.25),
            ({"flavor": "gpu-small"}, 2 / 6),
        ],
        "team:devserver_gpu_utilisation:ratio": [({"team": "nlp"}, 0.4), ({"team": ""}, 0.0)],
        "flavor_team:devserver_gpus_idle:sum": [
            ({"flavor": "gpu-large", "team": "nlp"}, 6),
            ({"flavor": "gpu-small", "team": "nlp"}, 0),
            ({"flavor": "gpu-small", "team": ""}, 4),
        ],
    }
    promql = [
        {
            "expr": record,
            "eval_time": "5m",
            "exp_samples": [
                {
                    "labels": record
                    + "{"
                    + ",".join(f'{k}="{v}"' for k, v in labels.items() if v)
                    + "}",
                    "value": value,
                }
                for labels, value in samples
            ],
        }
        for record, samples in expected.items()
    ]
    spec = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": promql}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run(
        [str(ensure_tool("promtool")), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_recording_rules_compute_idle_gpu_hours_per_day_and_the_error_ratio(
    tmp_path: Path,
) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    labels = f'{OP},flavor="gpu-large",team="nlp"'
    hourly = {
        "interval": "1h",
        "input_series": [  # 2 GPUs held for two days, one of them used
            _series("devserver_gpu_hours_held_total", labels, "0+2x48"),
            _series("devserver_gpu_hours_active_total", labels, "0+1x48"),
        ],
        "promql_expr_test": [
            {
                "expr": "team:devserver_gpu_hours_idle:increase1d",
                "eval_time": "30h",
                "exp_samples": [
                    {"labels": 'team:devserver_gpu_hours_idle:increase1d{team="nlp"}', "value": 24}
                ],
            }
        ],
    }
    controller = f'{OP},controller="devserver"'
    ratio = "controller:controller_runtime_reconcile_errors:ratio_rate5m"
    errors = {
        "interval": "1m",
        "input_series": [  # 100 reconciles a minute, 20 of them failed
            _series(
                "controller_runtime_reconcile_total", f'{controller},result="success"', "0+80x20"
            ),
            _series(
                "controller_runtime_reconcile_total", f'{controller},result="error"', "0+20x20"
            ),
            _series("controller_runtime_reconcile_errors_total", controller, "0+20x20"),
        ],
        "promql_expr_test": [
            {
                "expr": ratio,
                "eval_time": "10m",
                "exp_samples": [{"labels": f'{ratio}{{controller="devserver"}}', "value": 0.2}],
            }
        ],
    }
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [hourly, errors]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run(
        [str(ensure_tool("promtool")), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
