"""Builders of Grafana dashboard JSON (schemaVersion 39): timeseries and stat panels, their
Prometheus targets, and a layout that places rows of panels on Grafana's 24-column grid.

Pure data and the standard library only: `dashboards.py` describes the dashboards with these, and
`python -m devserver.manifests` writes them as JSON for the chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DATASOURCE",
    "GRID_COLUMNS",
    "SCHEMA_VERSION",
    "Q",
    "dashboard",
    "quantiles",
    "stat",
    "timeseries",
]

SCHEMA_VERSION = 39
GRID_COLUMNS = 24
# every panel and target queries the Prometheus the dashboard's `datasource` variable names
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

Panel = dict[str, Any]


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel and the name of each of its series (`{{label}}` templates)."""

    expr: str
    legend: str = ""


def _targets(queries: tuple[Q, ...], *, instant: bool) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "expr": q.expr,
            "instant": instant,
            "legendFormat": q.legend or "__auto",
            "range": not instant,
            "refId": chr(ord("A") + i),
        }
        for i, q in enumerate(queries)
    ]


def _panel(kind: str, title: str, description: str, width: int | None, height: int) -> Panel:
    return {
        "datasource": DATASOURCE,
        "description": description,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},  # placed by dashboard()
        "title": title,
        "type": kind,
    }


def timeseries(
    title: str,
    *queries: Q,
    unit: str = "short",
    description: str = "",
    width: int | None = None,
    height: int = 8,
    max_value: float | None = None,
    stacked: bool = False,
) -> Panel:
    """A graph over time, from 0 (every series here is a count, a ratio or a duration)."""
    defaults: dict[str, Any] = {
        "custom": {
            "drawStyle": "line",
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        },
        "min": 0,
        "unit": unit,
    }
    if max_value is not None:
        defaults["max"] = max_value
    return _panel("timeseries", title, description, width, height) | {
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": [],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _targets(queries, instant=False),
    }


def stat(
    title: str,
    *queries: Q,
    unit: str = "short",
    description: str = "",
    width: int | None = None,
    height: int = 6,
    decimals: int | None = None,
    instant: bool = False,
) -> Panel:
    """One number per series: its last value (`instant`: a single evaluation at the range's end,
    for totals over the dashboard's range)."""
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return _panel("stat", title, description, width, height) | {
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "none" if instant else "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": _targets(queries, instant=instant),
    }


def quantiles(bucket: str, by: str, legend: str, *qs: float) -> list[Q]:
    """`histogram_quantile` of a histogram's 5-minute rate, one query per quantile."""
    group = ", ".join([*filter(None, [by]), "le"])
    return [
        Q(
            f"histogram_quantile({q}, sum by ({group}) (rate({bucket}[5m])))",
            f"{legend} p{round(q * 100)}".strip(),
        )
        for q in qs
    ]


def _widths(row: list[Panel]) -> list[int]:
    """Panels of no width share equally what the others leave of the row's 24 columns."""
    widths = [panel["gridPos"]["w"] for panel in row]
    free = GRID_COLUMNS - sum(w for w in widths if w is not None)
    shared = [i for i, w in enumerate(widths) if w is None]
    for n, i in enumerate(shared):
        widths[i] = free // len(shared) + (n < free % len(shared))
    if sum(widths) > GRID_COLUMNS or min(widths, default=1) <= 0:
        raise ValueError(f"a row wider than {GRID_COLUMNS} columns: {[p['title'] for p in row]}")
    return widths


def _place(rows: list[list[Panel]]) -> list[Panel]:
    """Rows top to bottom, each row's panels left to right; ids 1, 2, ... in that order."""
    panels: list[Panel] = []
    y = 0
    for row in rows:
        x = 0
        for panel, width in zip(row, _widths(row), strict=True):
            grid = panel["gridPos"] | {"w": width, "x": x, "y": y}
            panels.append(panel | {"gridPos": grid, "id": len(panels) + 1})
            x += width
        y += max((panel["gridPos"]["h"] for panel in row), default=0)
    return panels


def dashboard(uid: str, title: str, description: str, rows: list[list[Panel]]) -> dict[str, Any]:
    """A dashboard to provision (no `id`: Grafana assigns one), with a `datasource` variable."""
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "graphTooltip": 1,  # a shared crosshair
        "links": [],
        "panels": _place(rows),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["devserver"],
        "templating": {
            "list": [
                {
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "label": "Data source",
                    "multi": False,
                    "name": "datasource",
                    "options": [],
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "type": "datasource",
                }
            ]
        },
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }
