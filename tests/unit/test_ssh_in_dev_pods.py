"""SSH into a dev server: the user's keys from their DevUser, sshd's port, the agent's part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from devserver.api.user import DevUser
from devserver.podagent import agent
from devserver.reconcilers.devserver.activity_agent import desired_role
from devserver.reconcilers.devserver.pod import POD_SSH_PORT
from devserver.reconcilers.devserver.standalone import desired_deployment, desired_service
from devserver.reconcilers.naming import SSH_KEYS_CONFIGMAP
from devserver.reconcilers.user_objects import desired_ssh_keys
from tests.unit.test_devserver_builders import ds, flavor

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBqbZQcGRZ6z57Tjn/3RzaCA5WOqlzcIlZD22/w5OxQ5 alice@laptop"
)


def user(*keys: str) -> DevUser:
    return DevUser.model_validate(
        {"metadata": {"name": "alice", "uid": "u1"}, "spec": {"sshPublicKeys": list(keys)}}
    )


def test_the_keys_object_holds_plain_keys_only() -> None:
    made = desired_ssh_keys(
        user(KEY, f'command="/bin/sh" {KEY}', f"{KEY}\nssh-ed25519 AAAAinjected", "garbage")
    )
    assert made["metadata"]["name"] == SSH_KEYS_CONFIGMAP
    assert made["metadata"]["namespace"] == "dev-alice"
    assert made["metadata"]["ownerReferences"][0]["uid"] == "u1"  # goes with the user
    assert made["data"]["authorized_keys"] == f"{KEY}\n"


@given(st.lists(st.text(max_size=80), max_size=5))
def test_no_list_of_strings_yields_an_option_or_an_extra_line(keys: list[str]) -> None:
    lines = desired_ssh_keys(user(*keys))["data"]["authorized_keys"].splitlines()
    assert len(lines) <= len(keys)
    for line in lines:
        assert line.split()[0] in {"ssh-ed25519", "ssh-rsa"} or line.startswith(("ecdsa-", "sk-"))


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec["spec"]["template"]["spec"]["containers"][0])


def test_an_ssh_server_runs_sshd_on_an_unprivileged_port_behind_port_22() -> None:
    server = ds(enableSSH=True)
    container = _container(desired_deployment(server, flavor(), replicas=1))
    assert {"name": "ssh", "containerPort": POD_SSH_PORT, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DEVSERVER_SSH_PORT"] == str(POD_SSH_PORT)
    assert env["DEVSERVER_SSH_KEYS_FILE"].startswith("/run/devserver-ssh/")
    [port] = desired_service(server)["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (22, "ssh")  # by name: old pods still match
    plain = _container(desired_deployment(ds(enableSSH=False), flavor(), replicas=1))
    assert "DEVSERVER_SSH_PORT" not in {e["name"] for e in plain["env"]}


def test_the_agent_may_read_the_keys_and_nothing_else_of_the_namespace() -> None:
    rules = desired_role(ds(enableSSH=True))["rules"]
    [keys] = [r for r in rules if r["resources"] == ["configmaps"]]
    assert keys == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": [SSH_KEYS_CONFIGMAP],
        "verbs": ["get"],
    }
    assert agent.SSH_KEYS == SSH_KEYS_CONFIGMAP  # the agent imports nothing of ours


def test_the_agent_replaces_the_keys_file_at_once_and_only_on_a_change(tmp_path: Path) -> None:
    path = str(tmp_path / "authorized_keys")
    assert agent.write_keys(path, KEY + "\n")
    assert (tmp_path / "authorized_keys").stat().st_mode & 0o777 == 0o600
    assert not agent.write_keys(path, KEY + "\n")
    assert agent.write_keys(path, "")  # the key removed: sshd admits nobody
    assert (tmp_path / "authorized_keys").read_text() == ""


def test_the_bastion_may_reach_the_pods_ssh_port_by_its_name() -> None:
    """A NetworkPolicy sees the pod's port (2222 now, 22 in pods made before), not the
    Service's: the policy names the port, as both templates do."""
    from devserver.reconcilers.user_objects import UserDefaults, desired_network_policies

    [bastion] = [
        p for p in desired_network_policies(user(KEY), UserDefaults())
        if p["metadata"]["name"].endswith("bastion-ssh")
    ]  # fmt: skip
    assert bastion["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "ssh"}]
    container = _container(desired_deployment(ds(enableSSH=True), flavor(), replicas=1))
    assert [p["name"] for p in container["ports"] if p["containerPort"] == POD_SSH_PORT] == ["ssh"]


class _Unreachable:
    def ssh_keys(self) -> str | None:
        return None  # the API server answers something else than 200 or 404


def test_keys_that_cannot_be_confirmed_for_five_minutes_are_withdrawn(tmp_path: Path) -> None:
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_text(KEY + "\n")
    env = {
        "DEVSERVER_LEASE": "box-activity",
        "DEVSERVER_SSH_KEYS_FILE": str(keys_file),
        "DEVSERVER_CA_FILE": "",
    }
    pod_agent = agent.Agent(env)
    pod_agent.writer = _Unreachable()  # type: ignore[assignment]
    pod_agent.sync_keys()
    assert keys_file.read_text() == KEY + "\n"  # a moment's trouble keeps them
    pod_agent.keys_known -= agent.KEYS_TRUSTED_SECONDS + 1
    pod_agent.keys_read = 0.0
    pod_agent.sync_keys()
    assert keys_file.read_text() == ""
