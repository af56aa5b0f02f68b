"""`devctl admin usage`: GPU-hours held and used, idle stops and cost per user and per team, from
each DevServer's `status.billing` (pure: no API server, no Prometheus).

A DevServer's user is the owner of its namespace (`dev-<user>`), their team the DevUser's
`spec.team`. A server in any other namespace is counted in a row of that namespace, shown as
`ns/<namespace>` (no user name has a `/`), with no team. The billing status is cumulative (each
server's totals since its creation, the open period up to now; no history): a window (`since`)
only chooses the servers that held a node within it, and their figures stay whole. A deleted
server's bill went with it and is in no report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devserver.api.billing import bill_totals
from devserver.api.devserver import DevServer
from devserver.api.names import namespace_user
from devserver.api.user import DevUser
from devserver.cli.durations import short
from devserver.cli.output import table


@dataclass(frozen=True)
class Usage:
    """What some servers held and used, each up to now."""

    servers: int = 0
    hours: float = 0.0  # on a node
    gpu_hours: float = 0.0  # held
    active_gpu_hours: float = 0.0  # held while the pod's agent reported activity
    idle_stops: int = 0
    cost: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.servers + other.servers,
            self.hours + other.hours,
            self.gpu_hours + other.gpu_hours,
            self.active_gpu_hours + other.active_gpu_hours,
            self.idle_stops + other.idle_stops,
            self.cost + other.cost,
        )

    @property
    def idle_percent(self) -> float | None:
        """Of the GPU-hours held, the share not in use (None: none held)."""
        if self.gpu_hours <= 0:
            return None
        return 100 * (self.gpu_hours - self.active_gpu_hours) / self.gpu_hours


@dataclass(frozen=True)
class UserUsage:
    """A namespace's servers: a user's (`dev-<user>`), or those of another namespace."""

    namespace: str
    user: str | None
    team: str | None
    usage: Usage

    @property
    def label(self) -> str:
        return self.user if self.user is not None else f"ns/{self.namespace}"


@dataclass(frozen=True)
class TeamUsage:
    team: str | None
    users: int
    usage: Usage


@dataclass(frozen=True)
class UsageReport:
    now: datetime
    window: timedelta | None  # None: every server
    users: list[UserUsage] = field(default_factory=list)
    teams: list[TeamUsage] = field(default_factory=list)
    total: Usage = Usage()


def server_usage(ds: DevServer, now: datetime) -> Usage:
    """One server's bill up to `now` (GPU-hours active never above those held)."""
    counted = bill_totals(ds.status.billing if ds.status else None, now)
    return Usage(
        servers=1,
        hours=counted.hours,
        gpu_hours=counted.gpu_hours,
        active_gpu_hours=min(counted.active_gpu_hours, counted.gpu_hours),
        idle_stops=counted.idle_stops,
        cost=counted.cost,
    )


def held_a_node_since(ds: DevServer, start: datetime) -> bool:
    """On a node now, or stopped or (re)started at `start` or later."""
    status = ds.status
    if status is None:
        return False
    if status.billing is not None and status.billing.since is not None:
        return True
    return any(t is not None and t >= start for t in (status.stopped_at, status.last_start))


def usage_report(
    servers: Iterable[DevServer],
    users: Iterable[DevUser],
    now: datetime,
    window: timedelta | None = None,
) -> UsageReport:
    """Rows by namespace, then by team, then the total; each sorted by GPU-hours held, most
    first. Teams and the total are sums of the rows."""
    teams_of = {u.metadata.name: u.spec.team or None for u in users}
    by_namespace: dict[str, Usage] = {}
    for ds in servers:
        if window is not None and not held_a_node_since(ds, now - window):
            continue
        namespace = ds.metadata.namespace
        by_namespace[namespace] = by_namespace.get(namespace, Usage()) + server_usage(ds, now)
    rows = []
    for namespace, usage in by_namespace.items():
        user = namespace_user(namespace)
        team = teams_of.get(user) if user is not None else None
        rows.append(UserUsage(namespace, user, team, usage))
    rows.sort(key=lambda r: (-r.usage.gpu_hours, r.label))
    by_team: dict[str | None, tuple[int, Usage]] = {}
    for row in rows:
        count, usage = by_team.get(row.team, (0, Usage()))
        by_team[row.team] = (count + 1, usage + row.usage)
    teams = [TeamUsage(team, count, usage) for team, (count, usage) in by_team.items()]
    teams.sort(key=lambda t: (-t.usage.gpu_hours, t.team or ""))
    total = sum((r.usage for r in rows), Usage())
    return UsageReport(now, window, rows, teams, total)


# ------------------------------------------------------------------ for scripts


def _figures(usage: Usage) -> dict[str, Any]:
    idle = usage.idle_percent
    return {
        "servers": usage.servers,
        "hours": round(usage.hours, 2),
        "gpuHours": round(usage.gpu_hours, 2),
        "activeGpuHours": round(usage.active_gpu_hours, 2),
        "idlePercent": None if idle is None else round(idle, 1),
        "idleStops": usage.idle_stops,
        "cost": round(usage.cost, 2),
    }


def usage_data(report: UsageReport) -> dict[str, Any]:
    """`-o json|yaml`: hours to 0.01, USD to the cent, idle share to 0.1 %."""
    since = report.now - report.window if report.window is not None else None
    return {
        "asOf": _iso(report.now),
        "since": _iso(since) if since is not None else None,
        "users": [
            {"user": r.user, "namespace": r.namespace, "team": r.team, **_figures(r.usage)}
            for r in report.users
        ],
        "teams": [{"team": t.team, "users": t.users, **_figures(t.usage)} for t in report.teams],
        "total": {"users": len(report.users), **_figures(report.total)},
    }


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ for people

FIGURES = ["SERVERS", "GPU-HOURS", "ACTIVE", "IDLE%", "IDLE-STOPS", "COST"]


def _cells(usage: Usage) -> list[str]:
    idle = usage.idle_percent
    return [
        str(usage.servers),
        f"{usage.gpu_hours:.1f}",
        f"{usage.active_gpu_hours:.1f}",
        "-" if idle is None else f"{idle:.0f}%",
        str(usage.idle_stops),
        f"${usage.cost:.2f}",
    ]


def render_usage(report: UsageReport) -> str:
    """A header saying what is counted, a row a user, a row a team, and the total."""
    which = "" if report.window is None else f" in the last {short(report.window)}"
    if not report.users:
        return f"no dev servers held a node{which}" if which else "no dev servers in the cluster"
    stamp = f"{report.now.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    header = (
        f"GPU usage of {report.total.servers} dev server(s)"
        + (f" that held a node{which}" if which else "")
        + f", as of {stamp}\n(each server's totals since its creation"
        + (", not only the window" if which else "")
        + "; deleted servers are not counted)"
    )
    users = table(
        [[r.label, r.team or "-", *_cells(r.usage)] for r in report.users],
        ["USER", "TEAM", *FIGURES],
    )
    teams = table(
        [[t.team or "-", str(t.users), *_cells(t.usage)] for t in report.teams]
        + [["TOTAL", str(len(report.users)), *_cells(report.total)]],
        ["TEAM", "USERS", *FIGURES],
    )
    return f"{header}\n\n{users}\n\n{teams}"
