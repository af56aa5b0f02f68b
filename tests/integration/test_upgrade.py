"""An upgrade as a platform team does one: servers made by the previous release's operator, then
this operator in its place. Nothing restarts, nothing is refused, and what the previous release
made is adopted: the label move to `devservers.io/` (api/names.py) keeps the selectors of
workloads and Services made before, and a user's next change runs on them."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.api.names import LEGACY_NAME_LABEL, NAME_LABEL
from devserver_harness.controlplane import LocalControlPlane, repo_root
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll

# the last release whose objects carry only `devserver.io/` labels
PREVIOUS = "221c3e8"
NS = "dev-uma"


@pytest.fixture(scope="module")
def previous_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(repo_root()), "archive", PREVIOUS, "src"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"the previous release's source is not in this checkout ({PREVIOUS})")
    out = tmp_path_factory.mktemp("previous")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return out / "src"


@pytest.fixture
def previous_operator(
    control_plane: LocalControlPlane, previous_source: Path, quota_counts_devservers: None
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        control_plane.kubeconfig, ("--max-lifetime", "1d"), env={"PYTHONPATH": str(previous_source)}
    )
    process.start()
    process.wait_leading()
    yield process
    process.stop()


def _get(cp: LocalControlPlane, kind: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", kind, name, "-o", "json", "-n", NS, check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def _pods(cp: LocalControlPlane, name: str) -> dict[str, dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", NS, "-l", f"{LEGACY_NAME_LABEL}={name}", "-o", "json")
    return {p["metadata"]["uid"]: p for p in json.loads(out.stdout)["items"]}


def _server(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"owner": "uma", "flavor": "cpu-small", "image": "busybox", **spec},
    }


def _ready(cp: LocalControlPlane, name: str, flavor: str = "cpu-small") -> bool:
    status = _get(cp, "devserver.devservers.io", name).get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    ready = conditions.get("Ready", {}).get("status") == "True"
    return ready and status.get("appliedFlavor") == flavor


def _refusals(cp: LocalControlPlane, name: str) -> list[str]:
    status = _get(cp, "devserver.devservers.io", name).get("status", {})
    return [
        c["message"]
        for c in status.get("conditions", [])
        if c["type"] == "Applied" and c["status"] == "False"
    ]


def test_servers_made_by_the_previous_release_run_on_untouched(
    control_plane: LocalControlPlane, previous_operator: OperatorProcess, tmp_path: Path
) -> None:
    cp = control_plane
    cp.add_user("uma", tmp_path / "config")  # the previous release makes the namespace
    distributed = {"worldSize": 2, "nprocsPerNode": 1}
    cp.apply(
        _server("old", enableSSH=True),
        _server("olddist", mode="distributed", distributed=distributed),
    )
    for name in ("old", "olddist"):
        poll(lambda n=name: _ready(cp, n), 90, f"{name} running under the previous release")
    before = {name: set(_pods(cp, name)) for name in ("old", "olddist")}
    selectors = {
        "old": _get(cp, "deployment", "old")["spec"]["selector"],
        "olddist": _get(cp, "statefulset", "olddist")["spec"]["selector"],
    }
    assert selectors["old"] == {"matchLabels": {LEGACY_NAME_LABEL: "old"}}  # what we upgrade
    assert previous_operator.stop() == 0

    current = OperatorProcess(cp.operator_kubeconfig, ("--max-lifetime", "1d"))
    current.start()
    current.wait_leading()
    try:
        # adopted: the objects get the new labels, the selectors stay, the pods run on
        poll(
            lambda: NAME_LABEL in _get(cp, "deployment", "old")["metadata"]["labels"],
            30,
            "the Deployment labelled anew",
        )
        poll(
            lambda: NAME_LABEL in _get(cp, "statefulset", "olddist")["metadata"]["labels"],
            30,
            "the StatefulSet labelled anew",
        )
        assert _get(cp, "deployment", "old")["spec"]["selector"] == selectors["old"]
        assert _get(cp, "statefulset", "olddist")["spec"]["selector"] == selectors["olddist"]
        assert _get(cp, "service", "old")["spec"]["selector"] == {LEGACY_NAME_LABEL: "old"}
        for name in ("old", "olddist"):
            assert set(_pods(cp, name)) == before[name], f"{name}'s pods were replaced"
            assert _ready(cp, name) and not _refusals(cp, name)
        assert (
            json.loads(cp.kubectl("get", "namespace", NS, "-o", "json").stdout)["metadata"][
                "labels"
            ].get("devservers.io/user")
            == "uma"
        )  # the user's namespace too

        # the user's rights: bindings to the ClusterRoles, the Roles of before removed, and
        # the user's own credentials work throughout
        def roles_moved() -> bool:
            got = cp.kubectl("get", "role,rolebinding", "-n", NS, "-o", "json").stdout
            names = {(i["kind"], i["metadata"]["name"]) for i in json.loads(got)["items"]}
            bound = {("RoleBinding", "devserver-user"), ("RoleBinding", "devserver-bastion-token")}
            old = {"dev-user", "bastion-token-requester"}  # the servers' agent Roles stay
            return bound <= names and not any(name in old for _, name in names)

        poll(roles_moved, 30, "the user's Roles replaced by ClusterRole bindings")
        mine = cp.kubectl(
            "get", "devservers", "-n", NS, "-o", "name", kubeconfig=tmp_path / "config"
        ).stdout
        assert "devserver.devservers.io/old" in mine

        # the user's next change runs on the selector the workload has
        cp.kubectl(
            "patch", "devserver.devservers.io", "old", "-n", NS, "--type=merge",
            "-p", '{"spec": {"flavor": "cpu-medium"}}',
        )  # fmt: skip
        poll(lambda: _ready(cp, "old", "cpu-medium"), 90, "old moved to cpu-medium")
        assert not _refusals(cp, "old")
        [pod] = _pods(cp, "old").values()
        assert pod["metadata"]["labels"][NAME_LABEL] == "old"  # both keys on the new pod

        # and a server made now selects by the new key alone
        cp.apply(_server("fresh"))
        poll(lambda: _ready(cp, "fresh"), 90, "a new server running")
        assert _get(cp, "deployment", "fresh")["spec"]["selector"] == {
            "matchLabels": {NAME_LABEL: "fresh"}
        }
        assert current.alive()
    finally:
        assert current.stop() == 0, current.output()[-3000:]
