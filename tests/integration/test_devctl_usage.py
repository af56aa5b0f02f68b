"""`devctl admin usage` against the real API server: billing status summed by user and team."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devserver.cli.main import cli
from devserver_harness.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

HOUR = 3600


def devctl(control_plane: LocalControlPlane, *args: str, kubeconfig: Path | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        cli, ["--kubeconfig", str(kubeconfig or control_plane.kubeconfig), *args]
    )


def iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def apply(control_plane: LocalControlPlane, body: dict[str, Any]) -> None:
    control_plane.kubectl("apply", "-f", "-", input_text=json.dumps(body))


def server(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"owner": "vic", "flavor": "gpu-small", "image": "busybox", "stopped": True},
    }


def set_status(
    control_plane: LocalControlPlane, namespace: str, name: str, status: dict[str, Any]
) -> None:
    control_plane.kubectl(
        "patch",
        "devserver.devservers.io",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_admin_usage_sums_the_billing_status_by_user_and_team(
    control_plane: LocalControlPlane, namespace: str
) -> None:
    """No operator runs here: the statuses are written as the operator would have, and stay."""
    now = datetime.now(UTC)
    apply(
        control_plane,
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevUser",
            "metadata": {"name": "vic"},
            "spec": {"email": "vic@example.com", "team": "usage-vic"},
        },
    )
    control_plane.kubectl("create", "namespace", "dev-vic")
    try:
        apply(control_plane, server("dev-vic", "train"))
        apply(control_plane, server("dev-vic", "old"))
        apply(control_plane, server(namespace, "shared"))  # no dev-<user> namespace, no status
        set_status(control_plane, "dev-vic", "train", {
            "phase": "Stopped", "stoppedAt": iso(now - timedelta(hours=1)),
            "billing": {"seconds": 5 * HOUR, "cost": 30.0, "gpuSeconds": 10 * HOUR,
                        "activeGpuSeconds": 4 * HOUR, "idleStops": 2}})  # fmt: skip
        set_status(control_plane, "dev-vic", "old", {
            "phase": "Stopped", "stoppedAt": iso(now - timedelta(days=30)),
            "billing": {"seconds": 2 * HOUR, "cost": 5.0, "gpuSeconds": 2 * HOUR}})  # fmt: skip

        everything = devctl(control_plane, "admin", "usage", "-o", "json")
        assert everything.exit_code == 0, everything.output
        data = json.loads(everything.stdout)
        vic = next(u for u in data["users"] if u["user"] == "vic")
        assert vic == {
            "user": "vic", "namespace": "dev-vic", "team": "usage-vic", "servers": 2,
            "hours": 7.0, "gpuHours": 12.0, "activeGpuHours": 4.0, "idlePercent": 66.7,
            "idleStops": 2, "cost": 35.0,
        }  # fmt: skip
        team = next(t for t in data["teams"] if t["team"] == "usage-vic")
        assert (team["users"], team["servers"], team["gpuHours"]) == (1, 2, 12.0)
        shared = next(u for u in data["users"] if u["namespace"] == namespace)
        assert (shared["user"], shared["team"], shared["servers"]) == (None, None, 1)
        assert shared["gpuHours"] == 0.0
        assert data["total"]["gpuHours"] >= 12.0  # other tests' servers may be counted too
        assert data["total"]["servers"] >= 3
        assert data["since"] is None

        last_week = devctl(control_plane, "admin", "usage", "--since", "7d", "-o", "json")
        assert last_week.exit_code == 0, last_week.output
        week = json.loads(last_week.stdout)
        vic_week = next(u for u in week["users"] if u["user"] == "vic")
        assert (vic_week["servers"], vic_week["gpuHours"]) == (1, 10.0)  # "old": 30 days ago
        assert all(u["namespace"] != namespace for u in week["users"])  # never on a node

        table = devctl(control_plane, "admin", "usage")
        assert table.exit_code == 0, table.output
        assert ["vic", "usage-vic", "2", "12.0", "4.0", "67%", "2", "$35.00"] in [
            line.split() for line in table.stdout.splitlines()
        ]

        bad = devctl(control_plane, "admin", "usage", "--since", "soon")
        assert bad.exit_code == 1
        assert "--since 'soon' is not a duration" in bad.stderr
    finally:
        control_plane.kubectl("delete", "devuser.devservers.io", "vic", "--wait=false")
        control_plane.kubectl("delete", "namespace", "dev-vic", "--wait=false")
