"""A real torch.distributed rendezvous with exactly the environment the operator generated.

The operator renders two distributed DevServers on the real control plane (W=3 pods with P=1 and
P=2 processes). kwok runs no containers, so the ranks run here: for each pod ordinal, the
StatefulSet's container environment as the kubelet would resolve it (the pod-index label for
NODE_RANK/RANK), with MASTER_ADDR rewritten to 127.0.0.1, running the helper scripts from the
operator's ConfigMap — `devserver-allreduce` directly when P=1, through `devserver-torchrun`
when P=2. gloo on CPU; all_reduce of ones must give W*P on every process, and the ranks must be
exactly 0..W*P-1. Needs torch: `nox -s distributed`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess, operator_with_namespace

pytest.importorskip("torch")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NS = "dev-rdzv"


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    with operator_with_namespace(control_plane, NS, "--max-lifetime", "0") as process:
        yield process


def get(control_plane: LocalControlPlane, kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads(control_plane.kubectl("get", kind, name, "-n", NS, "-o", "json").stdout))


def rendered(control_plane: LocalControlPlane, name: str, nprocs: int) -> dict[str, Any]:
    control_plane.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "owner": "ana@example.com",
                "flavor": "cpu-small",
                "image": "pytorch/pytorch:2.5.1",
                "mode": "distributed",
                "distributed": {"worldSize": 3, "nprocsPerNode": nprocs, "backend": "gloo"},
            },
        }
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = control_plane.kubectl(
            "get", "statefulset", name, "-n", NS, "-o", "json", check=False
        )
        if found.returncode == 0:
            return dict(json.loads(found.stdout))
        time.sleep(0.5)
    raise TimeoutError(f"no StatefulSet {name}")


def pod_env(sts: dict[str, Any], ordinal: int) -> dict[str, str]:
    """The container environment as the kubelet resolves it for pod `<name>-<ordinal>`."""
    name = sts["metadata"]["name"]
    fields = {
        "metadata.labels['apps.kubernetes.io/pod-index']": str(ordinal),
        "metadata.name": f"{name}-{ordinal}",
        "metadata.namespace": NS,
    }
    env: dict[str, str] = {}
    for item in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            value = item["value"]
            for key, known in env.items():  # $(VAR) references to earlier variables
                value = value.replace(f"$({key})", known)
            env[item["name"]] = value
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(
    sts: dict[str, Any], argv: list[str], tmp: Path, world_pods: int
) -> list[dict[str, Any]]:
    port = str(free_port())
    procs = []
    for ordinal in range(world_pods):
        env = pod_env(sts, ordinal)
        env |= {"MASTER_ADDR": "127.0.0.1", "PET_MASTER_ADDR": "127.0.0.1"}  # the one rewrite
        env |= {"MASTER_PORT": port, "PET_MASTER_PORT": port}  # a free port on this machine
        env["HOME"] = str(tmp)  # /home/dev is the pod's volume
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return results


def test_a_real_gloo_rendezvous_with_the_operators_environment(
    operator: OperatorProcess, control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    one = rendered(control_plane, "rdzv-p1", nprocs=1)
    scripts = get(control_plane, "configmap", "devserver-scripts")["data"]  # made with it
    for name in ("devserver-allreduce", "devserver-torchrun"):
        (tmp_path / name).write_text(scripts[name])
    allreduce = str(tmp_path / "devserver-allreduce")

    assert pod_env(one, 2)["RANK"] == "2"
    results = run_ranks(one, [sys.executable, allreduce], tmp_path, 3)
    assert sorted(r["rank"] for r in results) == [0, 1, 2]
    assert all(r["ok"] and r["sum"] == 3 and r["world"] == 3 for r in results), results

    two = rendered(control_plane, "rdzv-p2", nprocs=2)
    assert shutil.which("torchrun", path=str(Path(sys.executable).parent))
    results = run_ranks(two, ["sh", str(tmp_path / "devserver-torchrun"), allreduce], tmp_path, 3)
    assert sorted(r["rank"] for r in results) == [0, 1, 2, 3, 4, 5]
    assert all(r["ok"] and r["sum"] == 6 and r["world"] == 6 for r in results), results
    assert {r["backend"] for r in results} == {"gloo"}
