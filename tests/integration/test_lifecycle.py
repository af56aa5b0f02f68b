"""Lifecycle on the real control plane: deadlines stop (never delete), warnings, stop/start,
extend within the platform's cap. Time is made short through the API (an expiration time a few
seconds ahead) and the operator's flags (warn 8 s before; cap 3 h)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess

pytestmark = pytest.mark.integration

USER, NS = "lee", "dev-lee"
DEVCTL = str(Path(sys.prefix) / "bin" / "devctl")


@pytest.fixture(scope="module")
def kubeconfig(
    control_plane: LocalControlPlane,
    quota_counts_devservers: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    operator = OperatorProcess(
        control_plane.operator_kubeconfig, ("--max-lifetime", "3h", "--warn-before", "8s")
    )
    operator.start()
    operator.wait_leading()
    path = control_plane.add_user(USER, tmp_path_factory.mktemp("lee") / "config")
    try:
        yield path
    finally:
        operator.stop()


def wait(probe: Any, timeout: float, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (KeyError, StopIteration, subprocess.CalledProcessError):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what or probe}")


def get(control_plane: LocalControlPlane, kind: str, name: str, ns: str = "") -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json", *(["-n", ns] if ns else [])]
    return dict(json.loads(control_plane.kubectl(*args).stdout))


def devctl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("DEVSERVER_AUDIT_SOCKET", None)
    return subprocess.run(
        [DEVCTL, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def ready_reason(ds: dict[str, Any]) -> str:
    conditions = ds.get("status", {}).get("conditions", [])
    return next((c["reason"] for c in conditions if c["type"] == "Ready"), "")


def events(control_plane: LocalControlPlane, name: str) -> list[dict[str, Any]]:
    out = control_plane.kubectl(
        "get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return list(json.loads(out.stdout)["items"])


def iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def test_a_deadline_warns_then_stops_and_start_brings_the_same_home_back(
    kubeconfig: Path, control_plane: LocalControlPlane
) -> None:
    made = devctl(kubeconfig, "create", "ttl", "--flavor", "cpu-small", "--time", "1h", "--wait")
    assert made.returncode == 0, made.stderr
    home = get(control_plane, "pvc", "ttl-home", NS)["metadata"]["uid"]
    deadline = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    control_plane.kubectl(
        "patch",
        "devservers.devservers.io",
        "ttl",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lifecycle": {"expirationTime": iso(deadline)}}}),
    )

    warning = wait(
        lambda: next(e for e in events(control_plane, "ttl") if e["reason"] == "ExpiringSoon"),
        30,
        "the warning",
    )
    assert "devctl extend ttl --time 1h" in warning["message"]
    assert iso(deadline)[11:19] in warning["message"]  # the exact stop time
    assert datetime.now(UTC) < deadline + timedelta(seconds=2)  # it came before the stop

    stopped = wait(
        lambda: (
            (ds := get(control_plane, "devservers.devservers.io", "ttl", NS))["status"]["phase"]
            == "Stopped"
            and ds
        ),
        40,
        "the stop",
    )
    assert ready_reason(stopped) == "Expired"
    assert datetime.now(UTC) >= deadline  # not early
    assert stopped["spec"]["stopped"] is True
    wait(lambda: get(control_plane, "deployment", "ttl", NS)["spec"]["replicas"] == 0, 20)
    wait(lambda: not get(control_plane, "deployment", "ttl", NS)["status"].get("replicas"), 30)
    assert get(control_plane, "pvc", "ttl-home", NS)["metadata"]["uid"] == home
    assert any(e["reason"] == "Expired" for e in events(control_plane, "ttl"))
    listed = devctl(kubeconfig, "list")
    assert any(
        line.split()[:3] == ["ttl", "cpu-small", "Stopped"] for line in listed.stdout.splitlines()
    )

    started = devctl(kubeconfig, "start", "ttl", "--time", "1h", "--wait")
    assert started.returncode == 0, started.stderr
    assert "is running" in started.stdout
    assert get(control_plane, "pvc", "ttl-home", NS)["metadata"]["uid"] == home
    ds = get(control_plane, "devservers.devservers.io", "ttl", NS)
    left = datetime.fromisoformat(ds["status"]["expiresAt"].replace("Z", "+00:00")) - datetime.now(
        UTC
    )
    assert timedelta(minutes=55) < left <= timedelta(hours=1)


def test_extend_moves_the_deadline_within_the_cap_and_is_recorded(
    kubeconfig: Path, control_plane: LocalControlPlane
) -> None:
    made = devctl(kubeconfig, "create", "ext", "--flavor", "cpu-small", "--time", "1h")
    assert made.returncode == 0, made.stderr
    wait(
        lambda: get(control_plane, "devservers.devservers.io", "ext", NS)["status"].get(
            "expiresAt"
        ),
        20,
    )
    before = datetime.fromisoformat(
        get(control_plane, "devservers.devservers.io", "ext", NS)["status"]["expiresAt"].replace(
            "Z", "+00:00"
        )
    )
    longer = devctl(kubeconfig, "extend", "ext", "--time", "30m")
    assert longer.returncode == 0, longer.stderr
    assert "ext now stops at" in longer.stdout
    ds = get(control_plane, "devservers.devservers.io", "ext", NS)
    after = datetime.fromisoformat(ds["status"]["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=29) < after - before <= timedelta(minutes=31)
    record = json.loads(ds["metadata"]["annotations"]["devservers.io/last-extension"])
    assert (record["by"], record["added"]) == (USER, "30m")
    wait(lambda: any(e["reason"] == "Extended" for e in events(control_plane, "ext")), 20)

    capped = devctl(kubeconfig, "extend", "ext", "--time", "1d")
    assert capped.returncode == 0, capped.stderr
    assert "capped by the platform's maximum lifetime" in capped.stdout
    ds = get(control_plane, "devservers.devservers.io", "ext", NS)
    created = datetime.fromisoformat(ds["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    final = datetime.fromisoformat(ds["status"]["expiresAt"].replace("Z", "+00:00"))
    assert final == created + timedelta(hours=3)  # the operator's --max-lifetime
    assert any(c["type"] == "LifetimeCapped" for c in ds["status"]["conditions"])

    bad = devctl(kubeconfig, "extend", "ext", "--time", "5")
    assert bad.returncode == 1
    assert "is not a duration" in bad.stderr


def test_stop_and_start_by_the_user(kubeconfig: Path, control_plane: LocalControlPlane) -> None:
    made = devctl(kubeconfig, "create", "pause", "--flavor", "cpu-small", "--wait")
    assert made.returncode == 0, made.stderr
    home = get(control_plane, "pvc", "pause-home", NS)["metadata"]["uid"]
    time.sleep(3)
    running = json.loads(devctl(kubeconfig, "cost", "pause", "-o", "json").stdout)["items"][0]
    assert running["running"] is True
    assert running["pricePerHour"] > 0
    assert running["hours"] > 0.0008  # > 3 s on a node
    stopped = devctl(kubeconfig, "stop", "pause")
    assert "its home volume is kept" in stopped.stdout
    ds = wait(
        lambda: (
            (d := get(control_plane, "devservers.devservers.io", "pause", NS))["status"]["phase"]
            == "Stopped"
            and d
        ),
        30,
    )
    assert ready_reason(ds) == "StoppedByUser"
    wait(
        lambda: (
            not get(control_plane, "devservers.devservers.io", "pause", NS)["status"][
                "billing"
            ].get("since")
        ),
        30,
        "the billing period to close",
    )
    first = json.loads(devctl(kubeconfig, "cost", "pause", "-o", "json").stdout)
    time.sleep(1.5)
    second = json.loads(devctl(kubeconfig, "cost", "pause", "-o", "json").stdout)
    assert first == second  # a stopped server costs nothing more
    assert first["items"][0]["cost"] > 0
    table = devctl(kubeconfig, "cost")
    assert "total: $" in table.stdout
    extend_stopped = devctl(kubeconfig, "extend", "pause", "--time", "1h")
    assert extend_stopped.returncode == 1
    assert "devctl start pause" in extend_stopped.stderr
    again = devctl(kubeconfig, "start", "pause", "--wait")
    assert again.returncode == 0, again.stderr
    assert get(control_plane, "pvc", "pause-home", NS)["metadata"]["uid"] == home
