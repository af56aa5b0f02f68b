"""Distributed DevServers on the real control plane: W pods on the flavor's nodes, each with the
torchrun environment and its own home; a deleted pod comes back with the same home; a changed
world size keeps every home; a mode switch is refused with a sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess, operator_with_namespace
from devserver_harness.process import poll as wait

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "dev-dist"


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    with operator_with_namespace(control_plane, NS, "--max-lifetime", "0") as process:
        yield process


def get(control_plane: LocalControlPlane, kind: str, name: str = "", **flags: str) -> Any:
    args = ["get", kind, *([name] if name else []), "-n", NS, "-o", "json"]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", value]
    return json.loads(control_plane.kubectl(*args).stdout)


def devctl(control_plane: LocalControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    env.pop("DEVSERVER_AUDIT_SOCKET", None)
    return subprocess.run(
        [str(Path(sys.prefix) / "bin" / "devctl"), "-n", NS, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_ranks_run_on_the_flavor_nodes_with_their_env_and_own_homes(
    operator: OperatorProcess, control_plane: LocalControlPlane
) -> None:
    control_plane.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": "dist", "namespace": NS},
            "spec": {
                "owner": "ana@example.com",
                "flavor": "cpu-small",
                "image": "pytorch/pytorch:2.5.1",
                "mode": "distributed",
                "distributed": {"worldSize": 3, "nprocsPerNode": 2, "backend": "gloo"},
            },
        }
    )
    ds = wait(
        lambda: (
            (d := get(control_plane, "devservers.devservers.io", "dist"))["status"]["phase"]
            == "Running"
            and d
        ),
        120,
        "all ranks ready",
    )
    assert ds["status"]["readyRanks"] == 3
    ranks = ds["status"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1, 2]
    assert [r["homeClaim"] for r in ranks] == ["home-dist-0", "home-dist-1", "home-dist-2"]
    cpu_nodes = {
        n["metadata"]["name"]
        for n in get(control_plane, "nodes", selector="eks.amazonaws.com/nodegroup=cpu")["items"]
    }
    assert {r["node"] for r in ranks} <= cpu_nodes

    service = get(control_plane, "service", "dist")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pods = {
        p["metadata"]["name"]: p
        for p in get(control_plane, "pods", selector="devserver.io/name=dist")["items"]
    }
    assert sorted(pods) == ["dist-0", "dist-1", "dist-2"]
    claims = {}
    for i in range(3):
        pod = pods[f"dist-{i}"]
        assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == str(i)
        env = env_of(pod)
        assert env["MASTER_ADDR"] == f"dist-0.dist.{NS}.svc.cluster.local"
        assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("6", "3", "2")
        assert env["NODE_RANK"]["fieldRef"]["fieldPath"] == (
            "metadata.labels['apps.kubernetes.io/pod-index']"
        )
        home = next(v for v in pod["spec"]["volumes"] if v["name"] == "home")
        claims[i] = home["persistentVolumeClaim"]["claimName"]
    assert claims == {0: "home-dist-0", 1: "home-dist-1", 2: "home-dist-2"}
    uids = {name: get(control_plane, "pvc", name)["metadata"]["uid"] for name in claims.values()}
    for name in claims.values():
        assert get(control_plane, "pvc", name)["status"]["phase"] == "Bound"

    # devctl: one rank, every rank, the monitor
    said = devctl(control_plane, "exec", "dist", "--rank", "1", "--", "echo", "rank-one")
    assert said.returncode == 0 and "rank-one" in said.stdout, said.stderr
    wrong = devctl(control_plane, "exec", "dist", "--rank", "5", "--", "true")
    assert wrong.returncode == 1 and "dist has ranks 0..2" in wrong.stderr
    shown = devctl(control_plane, "monitor", "dist", "--once")
    assert "Running — 3/3 ranks ready, 3 pods x 2 processes = 6 workers" in shown.stdout
    assert devctl(control_plane, "logs", "dist", "--all").returncode == 0
    described = devctl(control_plane, "describe", "dist").stdout
    assert "Ranks:        3/3 ready, 2 processes each" in described

    # a rank's pod dies: the same rank comes back with the same home
    old = pods["dist-1"]["metadata"]["uid"]
    control_plane.kubectl("delete", "pod", "dist-1", "-n", NS, "--wait=false")
    back = wait(
        lambda: (
            (p := get(control_plane, "pod", "dist-1"))["metadata"]["uid"] != old
            and p["status"].get("phase") == "Running"
            and p
        ),
        60,
        "rank 1 back",
    )
    home = next(v for v in back["spec"]["volumes"] if v["name"] == "home")
    assert home["persistentVolumeClaim"]["claimName"] == "home-dist-1"
    assert get(control_plane, "pvc", "home-dist-1")["metadata"]["uid"] == uids["home-dist-1"]

    # a mode switch is refused by the API server, with what to do
    refused = control_plane.kubectl(
        "patch", "devservers.devservers.io", "dist", "-n", NS, "--type=merge",
        "-p", json.dumps({"spec": {"mode": "standalone"}}), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "mode cannot change between standalone and distributed" in refused.stderr

    # fewer ranks: the removed rank's home is kept for when it comes back
    control_plane.kubectl(
        "patch", "devservers.devservers.io", "dist", "-n", NS, "--type=merge",
        "-p", json.dumps({"spec": {"distributed": {"worldSize": 2}}}),
    )  # fmt: skip
    wait(
        lambda: (
            (d := get(control_plane, "devservers.devservers.io", "dist"))["status"].get(
                "readyRanks"
            )
            == 2
            and d["status"]["phase"] == "Running"
            and len(get(control_plane, "pods", selector="devserver.io/name=dist")["items"]) == 2
        ),
        120,
        "two ranks",
    )
    assert get(control_plane, "pvc", "home-dist-2")["metadata"]["uid"] == uids["home-dist-2"]
    sts = get(control_plane, "statefulset", "dist")
    env = env_of(sts["spec"]["template"])
    assert env["WORLD_SIZE"] == "4"
    # Running means every rank already runs the new shape, not just that pods are up
    for pod in get(control_plane, "pods", selector="devserver.io/name=dist")["items"]:
        assert env_of(pod)["WORLD_SIZE"] == "4", pod["metadata"]["name"]

    # what cannot change is refused with a sentence
    for change, says in (
        ({"persistentHomeSize": "50Gi"}, "the home size of a distributed server is fixed"),
        (
            {"distributed": {"ncclSettings": {"HOME": "/tmp"}}},
            "ncclSettings takes NCCL_* variables only",
        ),
    ):
        refused = control_plane.kubectl(
            "patch", "devservers.devservers.io", "dist", "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": change}), check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and says in refused.stderr, refused.stderr


def test_a_stop_frees_the_gpus_even_when_the_flavor_is_gone(
    operator: OperatorProcess, control_plane: LocalControlPlane
) -> None:
    flavor = json.loads(
        control_plane.kubectl(
            "get", "devserverflavors.devservers.io", "cpu-small", "-o", "json"
        ).stdout
    )
    control_plane.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServerFlavor",
            "metadata": {"name": "short-lived"},
            "spec": flavor["spec"],
        }
    )
    control_plane.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": "orphan", "namespace": NS},
            "spec": {
                "owner": "ana@example.com",
                "flavor": "short-lived",
                "image": "pytorch/pytorch:2.5.1",
                "mode": "distributed",
                "distributed": {"worldSize": 2},
            },
        }
    )
    wait(
        lambda: (
            get(control_plane, "devservers.devservers.io", "orphan")["status"]["phase"] == "Running"
        ),
        120,
        "running",
    )
    control_plane.kubectl("delete", "devserverflavors.devservers.io", "short-lived")
    control_plane.kubectl(
        "patch", "devservers.devservers.io", "orphan", "-n", NS, "--type=merge",
        "-p", json.dumps({"spec": {"stopped": True}}),
    )  # fmt: skip
    wait(
        lambda: get(control_plane, "statefulset", "orphan")["spec"]["replicas"] == 0,
        30,
        "scaled to zero without a flavor",
    )
    wait(
        lambda: not get(control_plane, "pods", selector="devserver.io/name=orphan")["items"],
        60,
        "no pods",
    )
