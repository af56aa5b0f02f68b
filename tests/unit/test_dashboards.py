"""The Grafana dashboards (observability/dashboards.py): laid out on Grafana's grid, every query on
the `datasource` variable, every metric name one the code exports (a typo fails here, not as an
empty panel), and every expression valid PromQL for the pinned Prometheus (promtool)."""

from __future__ import annotations

import re
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from devserver.observability import bastion_metrics, metrics
from devserver.observability.dashboards import DASHBOARDS, RECORDING_RULES, expressions
from devserver.reconcilers.devserver import fleet_metrics
from devserver_harness.tools import ensure_tool

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"short", "s", "percentunit", "currencyUSD", "ops", "reqps", "bytes"}

# reconcilers/devserver/fleet_metrics.py's collector (custom families, not in `metrics`)
FLEET = {
    "devserver_servers",
    "devserver_servers_pending_oldest_seconds",
    "devserver_gpus_held",
    "devserver_gpus_active",
    "devserver_gpu_hours_held_total",
    "devserver_gpu_hours_active_total",
    "devserver_gpu_hours_reclaimed_total",
    "devserver_cost_usd_total",
}
# prometheus_client's ProcessCollector, and the scrape's own series
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
# series shared by the operator and the bastion: a panel must say whose it graphs
SHARED_PREFIXES = (
    "rest_client_",
    "process_",
    "workqueue_",
    "controller_runtime_",
    "devserver_watch_",
    "leader_election_",
)


def _exported() -> set[str]:
    """The sample names of every metric the operator's and the bastion's modules register."""
    names = set()
    defined = [*vars(metrics).values(), *vars(bastion_metrics).values()]
    for value in [*defined, *vars(fleet_metrics).values()]:
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
    return names


KNOWN = _exported() | FLEET | PROCESS | set(RECORDING_RULES) | {"up"}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# a whole identifier not followed by "(": a metric name, or a keyword
_IDENTIFIERS = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (what remains without strings, matchers, ranges,
    label lists, functions and keywords)."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _LABEL_LISTS):
        expr = pattern.sub(" ", expr)
    return {name for name in _IDENTIFIERS.findall(expr) if name.lower() not in _KEYWORDS}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(stem, panel) for stem, board in DASHBOARDS.items() for panel in board["panels"]]


def test_each_dashboard_is_one_to_provision_with_a_datasource_variable() -> None:
    assert set(DASHBOARDS) == {"fleet", "operator", "bastion"}
    for stem, board in DASHBOARDS.items():
        assert board["uid"] == f"devserver-{stem}"
        assert board["schemaVersion"] == 39
        assert board["tags"] == ["devserver"]
        [variable] = board["templating"]["list"]
        assert (variable["name"], variable["type"], variable["query"]) == (
            "datasource",
            "datasource",
            "prometheus",
        )
    assert len({board["title"] for board in DASHBOARDS.values()}) == len(DASHBOARDS)


def test_panels_have_unique_ids_and_fit_the_24_column_grid_without_overlapping() -> None:
    for stem, board in DASHBOARDS.items():
        panels = board["panels"]
        ids = [panel["id"] for panel in panels]
        assert len(set(ids)) == len(ids), stem
        boxes = []
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
            assert grid["x"] + grid["w"] <= 24, (stem, panel["title"])
            boxes.append((panel["title"], grid))
        for (a, p), (b, q) in combinations(boxes, 2):
            apart = (
                p["x"] + p["w"] <= q["x"]
                or q["x"] + q["w"] <= p["x"]
                or p["y"] + p["h"] <= q["y"]
                or q["y"] + q["h"] <= p["y"]
            )
            assert apart, f"{stem}: {a!r} overlaps {b!r}"


def test_every_panel_queries_the_datasource_variable_with_named_targets() -> None:
    for stem, panel in _panels():
        where = (stem, panel["title"])
        assert panel["type"] in {"timeseries", "stat"}, where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, where
        targets = panel["targets"]
        assert targets, where
        ref_ids = [target["refId"] for target in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), where
        for target in targets:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
            assert target["legendFormat"], where


def test_expressions_are_every_target_with_grafanas_variables_replaced() -> None:
    raw = [target["expr"] for _, panel in _panels() for target in panel["targets"]]
    found = expressions()
    assert len(found) == len(raw)
    assert any("$__range" in expr for expr in raw)  # the JSON keeps Grafana's variable
    for stem, title, expr in found:
        assert "$" not in expr, (stem, title, expr)
    assert ("fleet", "Servers by phase", "sum by (phase) (devserver_servers)") in found


def test_the_metric_name_check_sees_names_and_only_names() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (controller, le) (rate(x_bucket{job="a"}[5m])))'
    ) == {"x_bucket"}
    assert metric_names("a:b:ratio > 0.1 and on (team) sum without (le) (c_total offset 1h)") == {
        "a:b:ratio",
        "c_total",
    }
    assert metric_names("sum(rate(devserver_stopz_total[5m]))") - KNOWN == {"devserver_stopz_total"}


def test_every_metric_name_is_one_the_code_exports_or_a_rule_records() -> None:
    unknown = [
        (stem, title, sorted(metric_names(expr) - KNOWN))
        for stem, title, expr in expressions()
        if metric_names(expr) - KNOWN
    ]
    assert not unknown, unknown
    used = {name for _, _, expr in expressions() for name in metric_names(expr)}
    assert used >= FLEET
    assert set(RECORDING_RULES) <= used


def test_series_both_components_export_are_selected_by_job() -> None:
    for stem, title, expr in expressions():
        names = metric_names(expr)
        if "up" in names or any(n.startswith(SHARED_PREFIXES) for n in names):
            job = {"fleet": "", "operator": "devserver-operator", "bastion": "devserver-bastion"}
            assert f'job="{job[stem]}"' in expr, (stem, title, expr)


@pytest.fixture
def promtool() -> Path:
    """The pinned promtool (tools/prometheus), built into the binary cache when missing."""
    return ensure_tool("promtool")


def test_promtool_accepts_every_expression_as_a_recording_rule(
    promtool: Path, tmp_path: Path
) -> None:
    rules = [
        {"record": f"devserver:dashboard_expression_{i}", "expr": expr}
        for i, (_, _, expr) in enumerate(expressions())
    ]
    rules_file = tmp_path / "dashboards.rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout
