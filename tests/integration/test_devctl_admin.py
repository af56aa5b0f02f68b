"""`devctl admin user …` against the real API server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from devserver.cli.main import cli
from devserver_harness.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration


def devctl(control_plane: LocalControlPlane, *args: str, kubeconfig: Path | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        cli, ["--kubeconfig", str(kubeconfig or control_plane.kubeconfig), *args]
    )


def test_admin_adds_lists_and_removes_users(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBVnkrkQyt8mJd0fW0m2rmTqzQnFHAVbA5Z1b9cUc2Sv dora\n"
    )
    added = devctl(
        control_plane,
        "admin",
        "user",
        "add",
        "dora",
        "--email",
        "dora@example.com",
        "--ssh-key-file",
        str(key),
        "--team",
        "vision",
        "--gpus",
        "2",
    )
    assert added.exit_code == 0, added.output
    assert "user dora added; their namespace is dev-dora" in added.output
    user = json.loads(control_plane.kubectl("get", "devuser", "dora", "-o", "json").stdout)
    assert user["spec"]["sshPublicKeys"][0].startswith("ssh-ed25519 ")
    assert user["spec"]["quota"] == {"gpus": 2}

    listed = devctl(control_plane, "admin", "user", "list")
    assert listed.exit_code == 0
    assert any(
        line.split()[:3] == ["dora", "dora@example.com", "vision"]
        for line in listed.output.splitlines()
    )

    again = devctl(control_plane, "admin", "user", "add", "dora", "--email", "x@example.com")
    assert again.exit_code == 1
    assert "already exists" in again.output

    bad = devctl(control_plane, "admin", "user", "add", "Dora!", "--email", "d@example.com")
    assert bad.exit_code == 1
    assert "user name" in bad.output or "metadata.name" in bad.output

    removed = devctl(control_plane, "admin", "user", "remove", "dora", "--yes")
    assert removed.exit_code == 0, removed.output
    gone = control_plane.kubectl("get", "devuser", "dora", check=False)
    assert gone.returncode != 0


def test_a_user_token_cannot_manage_users(
    control_plane: LocalControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "eve", "-n", namespace)
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "eve", duration="10m")
    refused = devctl(
        control_plane,
        "admin",
        "user",
        "add",
        "mallory",
        "--email",
        "m@example.com",
        kubeconfig=kubeconfig,
    )
    assert refused.exit_code == 1
    assert "you are not allowed to manage users; ask a platform admin" in refused.output
    assert control_plane.kubectl("get", "devuser", "mallory", check=False).returncode != 0
