"""Golden render of a distributed DevServer (W=3 pods, P=2 processes each), and its key facts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from devserver.reconcilers.devserver.activity_agent import desired_role, desired_scripts
from devserver.reconcilers.devserver.distributed import (
    desired_headless_service,
    desired_statefulset,
    master_addr,
)
from tests.unit.test_devserver_builders import ds, flavor

GOLDEN = Path(__file__).parent / "golden" / "distributed-w3-p2.yaml"


def distributed(**spec: Any):  # type: ignore[no-untyped-def]
    return ds(
        mode="distributed",
        distributed={
            "worldSize": 3,
            "nprocsPerNode": 2,
            "backend": "nccl",
            "ncclSettings": {"NCCL_DEBUG": "INFO", "NCCL_IB_DISABLE": "1"},
        },
        sharedVolumeClaimName="team-efs",
        **spec,
    )


def render() -> str:
    server = distributed()
    objects = [
        desired_headless_service(server),
        desired_statefulset(server, flavor()),
        desired_role(server),
    ]
    return yaml.safe_dump_all(objects, sort_keys=True, width=100)


def test_the_render_matches_the_reviewed_golden_file() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(render())
    assert render() == GOLDEN.read_text(), "rerun with UPDATE_GOLDEN=1 and review the diff"


def env_of(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_facts_torchrun_depends_on() -> None:
    server = distributed()
    service = desired_headless_service(server)
    assert service["metadata"]["name"] == "box"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {"name": "dist", "port": 29500, "targetPort": 29500, "protocol": "TCP"} in service[
        "spec"
    ]["ports"]
    sts = desired_statefulset(server, flavor())
    spec = sts["spec"]
    assert (spec["serviceName"], spec["replicas"], spec["podManagementPolicy"]) == (
        "box",
        3,
        "Parallel",
    )
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "home"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    env = env_of(sts)
    assert master_addr(server) == "box-0.box.dev-alice.svc.cluster.local"
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "box-0.box.dev-alice.svc.cluster.local"
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
    assert (env["WORLD_SIZE"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("6", "3", "2")
    index = {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert env["NODE_RANK"] == env["PET_NODE_RANK"] == index
    assert "RANK" not in env  # with P > 1, torchrun assigns the process ranks
    assert env["NCCL_DEBUG"] == "INFO"  # the spec wins over the defaults
    assert env["NCCL_SOCKET_IFNAME"] == "^lo,docker"
    assert env["DEVSERVER_LEASE"] == "box-activity-$(NODE_RANK)"  # each rank its own Lease
    assert "FI_PROVIDER" not in env  # no EFA in this flavor
    pod = spec["template"]["spec"]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "team-efs"}} in pod["volumes"]
    assert not any(v["name"] == "home" for v in pod["volumes"])  # from the claim template
    assert desired_role(server)["rules"][0]["resourceNames"] == [
        "box-activity-0",
        "box-activity-1",
        "box-activity-2",
    ]
    scripts = desired_scripts("dev-alice")["data"]
    assert {"devserver-torchrun", "wait-for-master", "devserver-allreduce"} <= set(scripts)


def test_one_process_per_pod_sets_rank_and_efa_flavors_get_efa() -> None:
    server = ds(mode="distributed", distributed={"worldSize": 2})
    efa = flavor(
        resources={
            "limits": {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "4"},
            "requests": {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "4"},
        }
    )
    env = env_of(desired_statefulset(server, efa))
    assert env["WORLD_SIZE"] == "2"
    assert env["RANK"] == env["NODE_RANK"]
    assert (env["FI_PROVIDER"], env["FI_EFA_USE_DEVICE_RDMA"]) == ("efa", "1")


def test_monitor_shows_each_rank() -> None:
    from datetime import UTC, datetime

    from devserver.api.devserver import DevServerStatus
    from devserver.cli.server_text import render_monitor

    status = DevServerStatus.model_validate(
        {
            "phase": "Pending",
            "readyRanks": 2,
            "masterAddr": "box-0.box.dev-alice.svc.cluster.local:29500",
            "ranks": [
                {"rank": 0, "pod": "box-0", "node": "gpu-1", "ready": True},
                {"rank": 1, "pod": "box-1", "node": "gpu-2", "ready": True},
                {"rank": 2, "pod": "box-2", "ready": False, "reason": "Unschedulable"},
            ],
        }
    )
    server = distributed().model_copy(update={"status": status})
    text = render_monitor(server, datetime(2026, 11, 26, tzinfo=UTC))
    assert "2/3 ranks ready, 3 pods x 2 processes = 6 workers" in text
    assert "master box-0.box.dev-alice.svc.cluster.local:29500" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("2 "))
    assert row == ["2", "box-2", "-", "no", "0", "Unschedulable"]


def run_allreduce(
    monkeypatch: pytest.MonkeyPatch, world: int, gathered: list[int]
) -> tuple[object, list[str]]:
    """The smoke test run as rank 0 of `world` on a stub torch whose all-reduce sums `world`
    ones and whose all-gather brings `gathered`: its exit code and each write to stdout."""
    import runpy
    import sys
    import types

    class Tensor:
        def __init__(self, value: float) -> None:
            self.value = value

        def item(self) -> float:
            return self.value

    def all_reduce(tensor: Tensor) -> None:
        tensor.value = float(world)

    def all_gather(out: list[Tensor], tensor: Tensor) -> None:
        out[:] = [Tensor(r) for r in gathered]

    fake_dist = types.SimpleNamespace(
        init_process_group=lambda backend: None,
        get_rank=lambda: 0,
        get_world_size=lambda: world,
        all_reduce=all_reduce,
        all_gather=all_gather,
        destroy_process_group=lambda: None,
    )
    fake_torch = types.SimpleNamespace(
        cuda=types.SimpleNamespace(is_available=lambda: False),
        device=lambda name: name,
        int64="int64",
        ones=lambda n, device=None: Tensor(1.0),
        zeros=lambda n, dtype=None, device=None: Tensor(0),
        tensor=lambda values, dtype=None, device=None: Tensor(values[0]),
        distributed=fake_dist,
    )
    writes: list[str] = []

    class Unbuffered:  # what PYTHONUNBUFFERED makes of stdout: every write reaches the pipe
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch.distributed", fake_dist)
    monkeypatch.setattr(sys, "stdout", Unbuffered())
    monkeypatch.setenv("DEVSERVER_BACKEND", "gloo")
    script = Path(__file__).parents[2] / "src/devserver/podagent/devserver-allreduce"
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    return exit_.value.code, [w for w in writes if w]


def test_the_allreduce_smoke_test_writes_each_result_line_in_one_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ranks of a pod share one stdout, and distributed pods set PYTHONUNBUFFERED, so a line
    written as two writes (print's text, then its newline) merges with another rank's line."""
    code, writes = run_allreduce(monkeypatch, 3, [2, 0, 1])
    assert code == 0
    assert len(writes) == 1 and writes[0].endswith("\n"), writes
    assert json.loads(writes[0]) == {
        "rank": 0,
        "world": 3,
        "sum": 3.0,
        "missing": [],
        "doubled": [],
        "backend": "gloo",
        "ok": True,
    }


def test_the_allreduce_smoke_test_names_the_ranks_it_missed_in_a_bounded_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4,096 ranks (64 pods of 64) and one answering twice: one line under a pipe's 4,096
    bytes, failing, naming what went wrong."""
    world = 64 * 64
    code, writes = run_allreduce(monkeypatch, world, [0] * world)
    result = json.loads(writes[0])
    assert code == 1 and len(writes) == 1 and len(writes[0].encode()) < 4096
    assert (result["ok"], result["missing"][:3], result["doubled"]) == (False, [1, 2, 3], [0])
