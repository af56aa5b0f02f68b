"""devctl's read commands as a user runs them (click's CliRunner), against an API server in
memory: the tables for people, `-o json|yaml` for scripts, and the waiting of `--wait`.

The fake stands where every short command gets its connection, `Devctl.client()`; its answers
go through the real client's decoder, so commands see the models a real server would give.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from devserver.api.devserver import DevServer
from devserver.api.meta import ObjectList, ObjectT, Unreadable
from devserver.api.resources import DEVSERVERS, Resource
from devserver.cli.context import Devctl
from devserver.cli.environment import CHECKS
from devserver.cli.errors import DevctlError
from devserver.cli.main import cli
from devserver.cli.server_text import render_describe, render_list
from devserver.cli.waiting import settled_deadline, wait_running
from devserver.client.decoding import decode_item, decode_list
from devserver.client.errors import ApiError

NS = "dev-ana"
HOUR = timedelta(hours=1)
LEFT = timedelta(hours=3, minutes=30)  # web's time left


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def condition(reason: str, message: str) -> dict[str, str]:
    return {"type": "Ready", "status": "False", "reason": reason, "message": message}


def world(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """What the API server holds, as (plural, object): three servers of ana's made an hour ago
    (and one it cannot read), one of ben's, web's pod, events, flavors, a user, ana's quota."""

    def server(name: str, status: dict[str, Any], ns: str = NS, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": iso(now - HOUR)},
            "spec": {"owner": "ana", "flavor": "cpu-small", "image": "pytorch", **spec},
            "status": status,
        }

    return [
        ("devservers", server("web", {
            "phase": "Running", "podName": "web-7f9", "homeClaim": "web-home",
            "expiresAt": iso(now + LEFT),
            "billing": {"seconds": 7200, "cost": 0.2, "pricePerHour": 0.1}})),
        ("devservers", server("big", {"phase": "Pending", "conditions": [
            condition("QuotaExceeded", "requests.nvidia.com/gpu=8")]}, flavor="gpu-large")),
        ("devservers", server("job", {"phase": "Running", "readyRanks": 1, "ranks": [
            {"rank": 0, "pod": "job-0", "node": "gpu-1", "ready": True},
            {"rank": 1, "pod": "job-1", "ready": False, "reason": "Unschedulable"}]},
            mode="distributed", distributed={"worldSize": 2, "nprocsPerNode": 4})),
        ("devservers", server("theirs", {}, ns="dev-ben")),
        ("devservers", {"metadata": {"name": "broken", "namespace": NS}, "spec": {"flavor": 7}}),
        ("pods", {"metadata": {"name": "web-7f9", "namespace": NS},
                  "spec": {"nodeName": "node-3"}}),
        ("events", {"metadata": {"name": "e1", "namespace": NS}, "involvedObject": {"name": "web"},
                    "type": "Normal", "reason": "Started", "message": "pod web-7f9 started",
                    "lastTimestamp": iso(now)}),
        ("events", {"metadata": {"name": "e2", "namespace": NS}, "involvedObject": {"name": "big"},
                    "type": "Warning", "reason": "QuotaExceeded", "message": "no room"}),
        ("devserverflavors", {"metadata": {"name": "gpu-large"}, "spec": {
            "resources": {"requests": {"cpu": "96", "memory": "1100Gi", "nvidia.com/gpu": "8"}},
            "nodeSelector": {"node.kubernetes.io/instance-type": "p4d.24xlarge"},
            "pricePerHour": 32.77, "description": "8 A100"}}),
        ("devserverflavors", {"metadata": {"name": "cpu-small"}, "spec": {
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}, "pricePerHour": 0.1,
            "description": "for editing"}}),
        ("devusers", {"metadata": {"name": "dora"}, "spec": {
            "email": "dora@example.com", "team": "vision", "sshPublicKeys": ["ssh-ed25519 AAAA d"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        ("resourcequotas", {"metadata": {"name": "q", "namespace": NS}, "status": {
            "hard": {"requests.nvidia.com/gpu": "1"}, "used": {"requests.nvidia.com/gpu": "0"}}}),
    ]  # fmt: skip


class FakeKube:
    """The BlockingKubeClient calls devctl makes, answered from objects in memory."""

    host = "https://k.example:6443"
    config = SimpleNamespace(context="ctx", namespace=NS)

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.objects = world(self.now)
        self.denied: set[str] = set()  # access checks (their `what`) answered the other way

    def _raw(self, resource: Resource[Any], namespace: str) -> list[dict[str, Any]]:
        return [
            raw
            for plural, raw in self.objects
            if plural == resource.plural
            and (not resource.namespaced or raw["metadata"].get("namespace") == namespace)
        ]

    def get(self, resource: Resource[ObjectT], name: str, namespace: str = "") -> ObjectT:
        for raw in self._raw(resource, namespace):
            if raw["metadata"]["name"] == name:
                obj = decode_item(raw, resource.model)
                if isinstance(obj, Unreadable):  # as the real client says it
                    raise ApiError(422, "Unreadable", f"{name} cannot be read: {obj.problem}")
                return obj
        raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')

    def list_page(
        self,
        resource: Resource[ObjectT],
        namespace: str = "",
        *,
        field_selector: str = "",
        **_: str,
    ) -> ObjectList[ObjectT]:
        found = self._raw(resource, namespace)
        if field_selector:
            involved = field_selector.removeprefix("involvedObject.name=")
            found = [e for e in found if e["involvedObject"]["name"] == involved]
        return decode_list(json.dumps({"items": found}).encode(), resource.model)

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> bytes:
        if path.endswith("/selfsubjectreviews"):
            return json.dumps({"status": {"userInfo": {"username": "ana"}}}).encode()
        attributes = body["spec"]["resourceAttributes"]
        check = next(c for c in CHECKS if (c[1], c[2], c[4]) == (
            attributes["verb"], attributes["resource"], attributes["subresource"]))  # fmt: skip
        return json.dumps({"status": {"allowed": check[6] != (check[0] in self.denied)}}).encode()

    def server_version(self) -> str:
        return "v1.36.0"

    def close(self) -> None:
        pass


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube()
    monkeypatch.setattr(Devctl, "client", lambda self: fake)
    monkeypatch.setattr(Devctl, "config", lambda self: fake.config)
    return fake


def devctl(*args: str, terminal: bool = False) -> Result:
    """devctl ARGS; on a `terminal`, click keeps the escape sequences it strips from pipes."""
    return CliRunner().invoke(cli, list(args), color=terminal)


def parsed(fmt: str, *args: str) -> Any:
    result = devctl(*args, "-o", fmt)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)


def names(listed: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listed["items"]]


# ---------------------------------------------------------------------------- tables for people


def test_list_shows_a_row_a_server_of_the_namespace_and_says_what_cannot_be_read(
    kube: FakeKube,
) -> None:
    result = devctl("list")
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["NAME", "FLAVOR", "PHASE", "AGE", "TIME", "LEFT", "MESSAGE"]
    rows = [line.split(maxsplit=5) for line in lines]
    assert [r[:4] for r in rows] == [  # by name; ben's server and the unreadable one left out
        ["big", "gpu-large", "Pending", "1h"],
        ["job", "cpu-small", "Running", "1h"],
        ["web", "cpu-small", "Running", "1h"],
    ]
    assert rows[0][5] == "QuotaExceeded: requests.nvidia.com/gpu=8"
    assert rows[2][4] in ("3h29m", "3h30m")
    assert "dev server broken cannot be read" in result.stderr


def test_an_empty_list_says_how_to_create_one() -> None:
    assert render_list([], "dev-x", datetime.now(UTC)) == (
        "no dev servers in dev-x; "
        "create one with `devctl create mydev --flavor cpu-small --time 4h`"
    )


def test_describe_shows_the_pod_node_conditions_and_events(kube: FakeKube) -> None:
    web = devctl("describe", "web")
    assert web.exit_code == 0
    assert "Pod:          web-7f9 on node node-3" in web.stdout
    assert "Time left:    3h" in web.stdout
    assert "Started   pod web-7f9 started" in web.stdout
    assert "QuotaExceeded" not in web.stdout  # another server's event
    big = DevServer.model_validate(
        {
            "metadata": {"name": "big", "namespace": NS},
            "spec": {"owner": "ana", "flavor": "gpu-large", "image": "pytorch"},
            "status": {"conditions": [condition("X", "y")]},
        }
    )
    text = render_describe(big, None, [], datetime.now(UTC))
    assert "Phase:        Pending — X: y" in text
    assert "Pod:          - on node -" in text
    assert text.endswith("Events:\n  (none)")


def test_monitor_once_shows_each_rank(kube: FakeKube) -> None:
    shown = devctl("monitor", "job", "--once")
    assert shown.exit_code == 0
    assert shown.stdout.startswith("job: Running — 1/2 ranks ready, 2 pods x 4 processes")
    rank = next(line.split() for line in shown.stdout.splitlines() if line.startswith("1 "))
    assert rank == ["1", "job-1", "-", "no", "0", "Unschedulable"]
    assert "\033[2J" not in shown.stdout


def test_other_read_commands_keep_their_tables(kube: FakeKube) -> None:
    flavors = devctl("flavors").stdout.splitlines()
    assert [line.split()[0] for line in flavors] == ["NAME", "cpu-small", "gpu-large"]
    assert "p4d.24xlarge" in flavors[2] and "32.77" in flavors[2]
    assert devctl("flavors", "--gpu", "--aws").stdout.count("\n") == 2
    status = devctl("status").stdout
    assert "Dev servers:  1 Pending, 2 Running" in status
    assert "Quota:        requests.nvidia.com/gpu 0/1" in status
    cost = devctl("cost", "web").stdout.splitlines()
    assert cost[1].split() == ["web", "cpu-small", "stopped", "0.10", "2.00", "$0.20"]
    assert cost[-1] == "total: $0.20"
    users = devctl("admin", "user", "list").stdout.splitlines()
    assert users[1].split() == ["dora", "dora@example.com", "vision", "1", "yes"]
    assert devctl("test-k8s").stdout.startswith("as ana in dev-ana:\n")
    assert "devctl status" in devctl("info").stdout


# ---------------------------------------------------------------------------- data for scripts


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_list_gives_each_server_as_the_api_does(kube: FakeKube, fmt: str) -> None:
    listed = parsed(fmt, "list")
    assert names(listed) == ["web", "big", "job"]
    web = listed["items"][0]
    assert web["metadata"]["namespace"] == NS
    assert web["spec"]["flavor"] == "cpu-small"
    assert web["status"]["phase"] == "Running"
    assert listed["items"][1]["status"]["conditions"][0]["reason"] == "QuotaExceeded"


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_describe_gives_the_server_its_pod_and_events(kube: FakeKube, fmt: str) -> None:
    described = parsed(fmt, "describe", "web")
    assert described["devServer"]["status"]["podName"] == "web-7f9"
    assert described["pod"]["spec"]["nodeName"] == "node-3"
    assert [e["reason"] for e in described["events"]] == ["Started"]
    assert parsed(fmt, "describe", "big")["pod"] is None


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_the_other_read_commands_give_their_data(kube: FakeKube, fmt: str) -> None:
    assert names(parsed(fmt, "flavors")) == ["cpu-small", "gpu-large"]
    assert names(parsed(fmt, "flavors", "--gpu")) == ["gpu-large"]
    status = parsed(fmt, "status")
    assert (status["namespace"], status["devServers"]) == (NS, {"Running": 2, "Pending": 1})
    cost = parsed(fmt, "cost")
    assert [(i["name"], i["hours"]) for i in cost["items"]] == [("big", 0), ("job", 0), ("web", 2)]
    assert cost["total"] == 0.2
    assert all(c["allowed"] == c["expected"] for c in parsed(fmt, "test-k8s")["checks"])
    users = parsed(fmt, "admin", "user", "list")
    assert names(users) == ["dora"]
    assert users["items"][0]["spec"]["email"] == "dora@example.com"
    assert "devctl status" in [c["command"] for c in parsed(fmt, "info")["commands"]]
    job = parsed(fmt, "monitor", "job", "--once")
    assert job["metadata"]["name"] == "job"
    assert [r["ready"] for r in job["status"]["ranks"]] == [True, False]


def test_a_failed_access_check_still_prints_its_data(kube: FakeKube) -> None:
    kube.denied.add("read secrets (not allowed)")
    result = devctl("test-k8s", "-o", "json")
    assert result.exit_code == 1
    wrong = [c["check"] for c in json.loads(result.stdout)["checks"] if c["allowed"]]
    assert "read secrets (not allowed)" in wrong
    assert "1 access check(s) are not as expected" in result.stderr


@pytest.fixture
def refreshes(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    """`monitor` watching: job is Pending, then Running, then the user presses Ctrl-C."""
    job = next(raw for _, raw in kube.objects if raw["metadata"]["name"] == "job")
    phases = iter(["Pending", "Running"])
    real = kube.get

    def get(resource: Resource[ObjectT], name: str, namespace: str = "") -> ObjectT:
        phase = next(phases, None)
        if phase is None:
            raise KeyboardInterrupt
        job["status"]["phase"] = phase
        return real(resource, name, namespace)

    monkeypatch.setattr(kube, "get", get)
    monkeypatch.setattr("devserver.cli.monitor.time.sleep", lambda _: None)


def test_monitor_json_is_a_line_a_refresh(refreshes: None) -> None:
    result = devctl("monitor", "job", "-o", "json", terminal=True)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(line)["status"]["phase"] for line in lines] == ["Pending", "Running"]
    assert "\033" not in result.stdout


def test_monitor_yaml_is_a_document_a_refresh(refreshes: None) -> None:
    result = devctl("monitor", "job", "-o", "yaml")
    assert result.exit_code == 0, result.output
    frames = list(yaml.safe_load_all(result.stdout))
    assert [f["status"]["phase"] for f in frames] == ["Pending", "Running"]


def test_monitor_redraws_the_screen_for_people(refreshes: None) -> None:
    result = devctl("monitor", "job", terminal=True)
    assert result.stdout.count("\033[H\033[2J") == 2
    assert "job: Running — 1/2 ranks ready" in result.stdout


READ_COMMANDS = [
    ["list"], ["describe", "web"], ["flavors"], ["status"], ["cost"], ["test-k8s"], ["info"],
    ["monitor", "job", "--once"], ["admin", "user", "list"],
]  # fmt: skip


@pytest.mark.parametrize("args", READ_COMMANDS, ids=[" ".join(a) for a in READ_COMMANDS])
def test_every_read_command_refuses_an_unknown_format(kube: FakeKube, args: list[str]) -> None:
    result = devctl(*args, "-o", "xml")
    assert result.exit_code == 2
    assert "Invalid value for '-o' / '--output': 'xml' is not one of" in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------------- waiting


def test_wait_prints_each_new_state_until_running(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    web = kube._raw(DEVSERVERS, NS)[0]
    phases = iter(["Pending", "Pending", "Running"])

    def sleep(_: float) -> None:
        web["status"]["phase"] = next(phases)

    monkeypatch.setattr("devserver.cli.waiting.time.sleep", sleep)
    web["status"]["phase"] = "Pending"
    wait_running(kube, NS, "web", timeout=60)  # type: ignore[arg-type]
    said = [line.split("] ")[-1] for line in capsys.readouterr().out.splitlines()]
    assert said == ["Pending", "Running", "web is running; `devctl ssh web` for a shell"]


def test_wait_goes_on_through_the_queue_and_says_so_when_it_times_out(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    web = kube._raw(DEVSERVERS, NS)[0]
    queued = "2nd in the queue for GPU quota: insufficient unused quota for nvidia.com/gpu"
    web["status"]["phase"] = "Queued"
    web["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Queued", "message": queued}
    ]
    clock = iter(float(t) for t in range(0, 1000, 30))
    monkeypatch.setattr("devserver.cli.waiting.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("devserver.cli.waiting.time.sleep", lambda _: None)
    with pytest.raises(DevctlError, match=r"web is still queued after 60 s .*`devctl stop web`"):
        wait_running(kube, NS, "web", timeout=60)  # type: ignore[arg-type]
    assert f"Queued — Queued: {queued}" in capsys.readouterr().out


def test_wait_stops_at_once_when_only_the_user_can_help(kube: FakeKube) -> None:
    with pytest.raises(DevctlError, match=r"big cannot start: QuotaExceeded: requests\.nvidia"):
        wait_running(kube, NS, "big", timeout=600)  # type: ignore[arg-type]


def test_the_settled_deadline_is_the_operators(kube: FakeKube) -> None:
    web = kube._raw(DEVSERVERS, NS)[0]
    web["spec"]["lifecycle"] = {"expirationTime": iso(kube.now + timedelta(days=9))}
    web["status"]["conditions"] = [{"type": "LifetimeCapped", "status": "True"}]
    assert settled_deadline(kube, NS, "web") == kube.now + LEFT  # type: ignore[arg-type]
