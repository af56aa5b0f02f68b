"""`devctl admin usage`: the per-user and per-team sums of the DevServers' billing status (pure),
their table and JSON, and the command as an admin runs it against an API server in memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from devserver.api.devserver import DevServer
from devserver.api.user import DevUser
from devserver.cli.context import Devctl
from devserver.cli.main import cli
from devserver.cli.usage import (
    Usage,
    held_a_node_since,
    render_usage,
    usage_data,
    usage_report,
)
from devserver.client.blocking import BlockingKubeClient
from devserver.client.errors import ApiError

NOW = datetime(2025, 6, 2, 14, 0, tzinfo=UTC)
HOUR = 3600


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def server_raw(
    namespace: str, name: str, billing: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"owner": "x", "flavor": "gpu-small", "image": "pytorch"},
        "status": {**status, **({"billing": billing} if billing is not None else {})},
    }


def server(namespace: str, name: str, billing: dict[str, Any] | None = None, **s: Any) -> DevServer:
    return DevServer.model_validate(server_raw(namespace, name, billing, **s))


def user_raw(name: str, team: str | None) -> dict[str, Any]:
    spec = {"email": f"{name}@example.com", **({"team": team} if team else {})}
    return {"apiVersion": "devservers.io/v1", "kind": "DevUser", "metadata": {"name": name},
            "spec": spec}  # fmt: skip


def user(name: str, team: str | None) -> DevUser:
    return DevUser.model_validate(user_raw(name, team))


def fleet_raw(now: datetime = NOW) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """As at `now`: ana (vision): a server running now on 2 GPUs, active, for an hour on top of
    10 closed GPU-hours (4 active), and a stopped one; ben (vision): one idle-stopped server;
    cleo: no DevUser any more; a server in a shared namespace."""
    servers = [
        server_raw("dev-ana", "train", {
            "seconds": 5 * HOUR, "cost": 50.0, "gpuSeconds": 10 * HOUR,
            "activeGpuSeconds": 4 * HOUR, "idleStops": 1, "since": iso(now - timedelta(hours=1)),
            "pricePerHour": 10.0, "gpus": 2, "active": True}),
        server_raw("dev-ana", "old", {"seconds": HOUR, "cost": 1.0},
                   stoppedAt=iso(now - timedelta(days=30))),
        server_raw("dev-ben", "nb", {
            "seconds": 3 * HOUR, "cost": 30.0, "gpuSeconds": 3 * HOUR,
            "activeGpuSeconds": HOUR, "idleStops": 2},
            stoppedAt=iso(now - timedelta(days=2))),
        server_raw("dev-cleo", "gone", {
            "seconds": HOUR, "cost": 3.0, "gpuSeconds": 4 * HOUR, "activeGpuSeconds": 4 * HOUR},
            lastStart=iso(now - timedelta(hours=3))),
        server_raw("ml-shared", "batch", None),
    ]  # fmt: skip
    users = [user_raw("ana", "vision"), user_raw("ben", "vision"), user_raw("dora", "nlp")]
    return servers, users


def fleet() -> tuple[list[DevServer], list[DevUser]]:
    servers, users = fleet_raw()
    models = [DevUser.model_validate(u) for u in users]
    return [DevServer.model_validate(s) for s in servers], models


# ---------------------------------------------------------------------------- the sums


def test_a_row_a_user_with_their_team_and_the_open_period_counted_up_to_now() -> None:
    report = usage_report(*fleet(), NOW)
    rows = {r.label: r for r in report.users}
    assert [r.label for r in report.users] == ["ana", "cleo", "ben", "ns/ml-shared"]
    ana = rows["ana"]
    assert (ana.namespace, ana.team) == ("dev-ana", "vision")
    assert ana.usage == Usage(
        servers=2, hours=7, gpu_hours=12, active_gpu_hours=6, idle_stops=1, cost=61.0
    )
    assert ana.usage.idle_percent == pytest.approx(50)
    assert (rows["cleo"].user, rows["cleo"].team) == ("cleo", None)  # no DevUser: no team
    shared = rows["ns/ml-shared"]
    assert (shared.user, shared.namespace, shared.team) == (None, "ml-shared", None)
    assert shared.usage == Usage(servers=1)
    assert shared.usage.idle_percent is None  # no GPU-hours held: no share idle
    assert [(t.team, t.users, t.usage.gpu_hours) for t in report.teams] == [
        ("vision", 2, 15),
        (None, 2, 4),  # cleo and the shared namespace; dora has no server, no row
    ]
    assert report.total.servers == 5
    assert report.total.idle_stops == 3


def test_since_keeps_the_servers_that_held_a_node_in_the_window_with_their_whole_totals() -> None:
    servers, users = fleet()
    week = usage_report(servers, users, NOW, timedelta(days=7))
    assert [r.label for r in week.users] == ["ana", "cleo", "ben"]
    assert week.users[0].usage.servers == 1  # "old" stopped 30 days ago
    assert week.users[0].usage.gpu_hours == 12  # not only the week's: the billing has no history
    day = usage_report(servers, users, NOW, timedelta(days=1))
    assert [r.label for r in day.users] == ["ana", "cleo"]  # running now; started 3 h ago
    assert held_a_node_since(servers[0], NOW)  # on a node now: whatever the window
    assert not held_a_node_since(servers[4], NOW - timedelta(days=365))  # no status times


def test_gpu_hours_active_never_exceed_those_held_even_in_a_hand_written_status() -> None:
    odd = server("dev-eve", "x", {"gpuSeconds": HOUR, "activeGpuSeconds": 5 * HOUR})
    report = usage_report([odd], [], NOW)
    assert report.total.active_gpu_hours == report.total.gpu_hours == 1
    assert report.total.idle_percent == 0


_BILL = st.fixed_dictionaries(
    {
        "seconds": st.floats(0, 1e7),
        "cost": st.floats(0, 1e6),
        "gpuSeconds": st.floats(0, 1e8),
        "activeGpuSeconds": st.floats(0, 1e8),
        "idleStops": st.integers(0, 50),
    },
    optional={
        "since": st.integers(0, 10 * 86400).map(lambda s: iso(NOW - timedelta(seconds=s))),
        "pricePerHour": st.floats(0, 100),
        "gpus": st.integers(0, 8),
        "active": st.booleans(),
    },
)
_SERVER = st.tuples(
    st.sampled_from(["dev-ana", "dev-ben", "dev-cleo", "dev-dora", "ml-shared", "default"]),
    st.one_of(st.none(), _BILL),
    st.one_of(st.none(), st.integers(0, 30 * 86400)),  # stopped this many seconds ago
)
_TEAMS = st.fixed_dictionaries(
    {n: st.sampled_from([None, "vision", "nlp"]) for n in ["ana", "ben", "cleo", "dora"]}
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_SERVER, max_size=12),
    _TEAMS,
    st.one_of(st.none(), st.integers(60, 30 * 86400).map(lambda s: timedelta(seconds=s))),
)
def test_teams_and_the_total_are_the_sums_of_the_users_and_active_never_exceeds_held(
    specs: list[tuple[str, dict[str, Any] | None, int | None]],
    teams: dict[str, str | None],
    window: timedelta | None,
) -> None:
    servers = [
        server(ns, f"s{i}", bill, **({"stoppedAt": iso(NOW - timedelta(seconds=ago))}
                                     if ago is not None else {}))
        for i, (ns, bill, ago) in enumerate(specs)
    ]  # fmt: skip
    users = [user(name, team) for name, team in teams.items()]
    report = usage_report(servers, users, NOW, window)

    fields = ["servers", "hours", "gpu_hours", "active_gpu_hours", "idle_stops", "cost"]
    for name in fields:
        by_users = sum(getattr(r.usage, name) for r in report.users)
        assert getattr(report.total, name) == pytest.approx(by_users)
        assert sum(getattr(t.usage, name) for t in report.teams) == pytest.approx(by_users)
    for team in report.teams:
        mine = [r for r in report.users if r.team == team.team]
        assert team.users == len(mine)
        assert team.usage.gpu_hours == pytest.approx(sum(r.usage.gpu_hours for r in mine))
    assert sum(t.users for t in report.teams) == len(report.users)
    for usage in [report.total, *(r.usage for r in report.users), *(t.usage for t in report.teams)]:
        assert usage.active_gpu_hours <= usage.gpu_hours * (1 + 1e-9)
        assert usage.idle_percent is None or -1e-6 <= usage.idle_percent <= 100 + 1e-6
    counted = [s for s in servers if window is None or held_a_node_since(s, NOW - window)]
    assert report.total.servers == len(counted)
    held = [r.usage.gpu_hours for r in report.users]
    assert held == sorted(held, reverse=True)
    data = usage_data(report)  # what scripts get is plain JSON
    assert json.loads(json.dumps(data)) == data


# ---------------------------------------------------------------------------- what is printed


def test_the_table_says_what_is_counted_then_users_then_teams_and_the_total() -> None:
    servers, users = fleet()
    text = render_usage(usage_report(servers, users, NOW, timedelta(days=7)))
    assert text.splitlines()[:2] == [
        "GPU usage of 3 dev server(s) that held a node in the last 7d, as of 2025-06-02 14:00 UTC",
        "(each server's totals since its creation, not only the window; deleted servers are "
        "not counted)",
    ]
    header, *rows = text.split("\n\n")[1].splitlines()
    assert header.split() == [
        "USER", "TEAM", "SERVERS", "GPU-HOURS", "ACTIVE", "IDLE%", "IDLE-STOPS", "COST"
    ]  # fmt: skip
    assert [r.split() for r in rows] == [
        ["ana", "vision", "1", "12.0", "6.0", "50%", "1", "$60.00"],
        ["cleo", "-", "1", "4.0", "4.0", "0%", "0", "$3.00"],
        ["ben", "vision", "1", "3.0", "1.0", "67%", "2", "$30.00"],
    ]
    header, *rows = text.split("\n\n")[2].splitlines()
    assert header.split()[:2] == ["TEAM", "USERS"]
    assert [r.split() for r in rows] == [
        ["vision", "2", "2", "15.0", "7.0", "53%", "3", "$90.00"],
        ["-", "1", "1", "4.0", "4.0", "0%", "0", "$3.00"],
        ["TOTAL", "3", "3", "19.0", "11.0", "42%", "3", "$93.00"],
    ]


def test_an_empty_report_says_so() -> None:
    assert render_usage(usage_report([], [], NOW)) == "no dev servers in the cluster"
    assert render_usage(usage_report([], [], NOW, timedelta(hours=2))) == (
        "no dev servers held a node in the last 2h"
    )


def test_scripts_get_users_teams_and_the_total_rounded() -> None:
    data = usage_data(usage_report(*fleet(), NOW))
    assert (data["asOf"], data["since"]) == ("2025-06-02T14:00:00Z", None)
    assert data["users"][0] == {
        "user": "ana", "namespace": "dev-ana", "team": "vision", "servers": 2, "hours": 7.0,
        "gpuHours": 12.0, "activeGpuHours": 6.0, "idlePercent": 50.0, "idleStops": 1,
        "cost": 61.0,
    }  # fmt: skip
    assert data["users"][-1]["user"] is None
    assert data["users"][-1]["idlePercent"] is None
    assert [t["team"] for t in data["teams"]] == ["vision", None]
    assert data["total"]["users"] == 4
    assert data["total"]["gpuHours"] == 19.0
    assert data["total"]["idlePercent"] == pytest.approx(100 * 8 / 19, abs=0.05)


# ---------------------------------------------------------------------------- the command


class FakeKube:
    """The list requests `devctl admin usage` makes, answered a page of one at a time."""

    def __init__(self, servers: list[dict[str, Any]], users: list[dict[str, Any]]) -> None:
        self.lists = {"devservers": servers, "devusers": users}
        self.refuse: ApiError | None = None
        self.paths: list[str] = []
        self.closed = False

    def request(self, method: str, path: str, **parts: Any) -> bytes:
        assert method == "GET"
        self.paths.append(path)
        if self.refuse is not None:
            raise self.refuse
        objects = self.lists[path.rsplit("/", 1)[1]]
        start = int(dict(parts.get("query", ())).get("continue", "0"))
        more = str(start + 1) if start + 1 < len(objects) else ""
        page = {"metadata": {"continue": more}, "items": objects[start : start + 1]}
        return json.dumps(page).encode()

    def list_page(self, resource: Any, namespace: str = "", **options: Any) -> Any:
        """The real client's paging, over `request` above."""
        return BlockingKubeClient.list_page(cast(Any, self), resource, namespace, **options)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    servers, users = fleet_raw(datetime.now(UTC))
    fake = FakeKube(servers, users)
    monkeypatch.setattr(Devctl, "client", lambda self: fake)
    return fake


def devctl(*args: str) -> Result:
    return CliRunner().invoke(cli, ["admin", "usage", *args])


def test_the_command_reads_every_page_of_every_namespace(kube: FakeKube) -> None:
    result = devctl()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("GPU usage of 5 dev server(s), as of ")
    assert "ns/ml-shared" in result.stdout
    assert "/apis/devservers.io/v1/devservers" in kube.paths  # not one namespace's
    assert kube.paths.count("/apis/devservers.io/v1/devservers") == 5  # a page a server
    assert kube.closed


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_the_command_gives_scripts_one_document(kube: FakeKube, fmt: str) -> None:
    result = devctl("--since", "7d", "-o", fmt)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert list(data) == ["asOf", "since", "users", "teams", "total"]
    assert [u["user"] for u in data["users"]] == ["ana", "cleo", "ben"]
    assert data["total"]["servers"] == 3
    assert data["users"][0]["gpuHours"] == pytest.approx(12, abs=0.01)


def test_a_bad_since_is_one_sentence_before_any_request(kube: FakeKube) -> None:
    result = devctl("--since", "a week")
    assert result.exit_code == 1
    assert result.stderr == (
        "devctl: --since 'a week' is not a duration; use minutes, hours and days such as 30m, "
        "1h, 2h30m or 1d.\n"
    )
    assert kube.paths == []


def test_a_user_who_may_not_read_everything_is_told_so(kube: FakeKube) -> None:
    kube.refuse = ApiError(403, "Forbidden", "devservers.devservers.io is forbidden")
    result = devctl()
    assert result.exit_code == 1
    assert result.stderr == (
        "devctl: you are not allowed to read every namespace's dev servers and the users; "
        "ask a platform admin\n"
    )


def test_a_server_the_model_cannot_read_is_said_and_not_counted(kube: FakeKube) -> None:
    kube.lists["devservers"].append(
        {"metadata": {"name": "broken", "namespace": "dev-ana"}, "spec": {"flavor": 7}}
    )
    result = devctl("-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"]["servers"] == 5
    assert "devctl: DevServer dev-ana/broken cannot be read" in result.stderr
