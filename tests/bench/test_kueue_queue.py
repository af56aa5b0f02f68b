"""500 dev servers queued with the real Kueue against 50 GPUs, with a churn of stops.

A report (`nox -s bench -- tests/bench/test_kueue_queue.py`; `-s` shows it), not a pass/fail
timing. On a control plane of its own: 13 g5.12xlarge kwok nodes (52 GPUs) in a node group of
their own, Kueue v0.17 as a local process, devserver installed by its chart with `kueue.enabled`
(one ClusterQueue `bench`, nominal 50 GPUs), the operator with the chart's ServiceAccount, and
50 users of 10 one-GPU servers each, created 32 at a time.

1. Fill: seconds until 50 servers run and 450 are Queued (each with its place in the queue).
2. Churn: ROUNDS times, STOPS running servers are stopped at once; for each, how long until the
   next queued server is admitted by Kueue (its Workload reserves quota, as a poller sees it
   every 0.5 s) and until that server reports Running. Between rounds, a sampler integrates the
   GPUs left unreserved while servers wait: the goal is none beyond Kueue's own cycle.
3. CPU seconds of the operator, Kueue and the control plane over the whole run.

Only the figures are guarded: every server must be Running or Queued at the end of the fill,
and every freed GPU must be taken again, so that a broken run cannot pass for a fast one.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devserver.api.resources import DEVSERVERS, DEVUSERS, KUEUE_WORKLOADS
from devserver.client import KubeClient, new_client
from devserver_harness.controlplane import ControlPlaneOptions, LocalControlPlane
from devserver_harness.kueue import KueueProcess
from devserver_harness.nodes import NodeSpec, default_node_pool
from devserver_harness.operator import OperatorProcess
from tests.bench.scale import scaled

pytestmark = pytest.mark.timeout(2400)

USERS = int(os.environ.get("KUEUE_BENCH_USERS", scaled(50, 2)))
PER_USER = 10
SERVERS = USERS * PER_USER
GPUS = int(os.environ.get("KUEUE_BENCH_GPUS", scaled(50, 4)))
ROUNDS, STOPS = scaled(10, 2), min(5, GPUS)
CONCURRENCY = 32
SAMPLE_SECONDS = 0.5
TICKS = os.sysconf("SC_CLK_TCK")
GROUP = "bench-gpu"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def report(lines: list[str]) -> None:
    print("\n" + "\n".join(lines))  # noqa: T201


def progress(line: str) -> None:
    print(f"[kueue bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr)  # noqa: T201


def chart_values() -> dict[str, Any]:
    quota = {"cpu": "1000", "memory": "4000Gi", "nvidia.com/gpu": str(GPUS)}
    return {
        "kueue.resourceFlavors": {
            GROUP: {
                "nodeLabels": {"eks.amazonaws.com/nodegroup": GROUP},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            }
        },
        "kueue.clusterQueues": {
            "bench": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": list(quota),
                        "flavors": [
                            {
                                "name": GROUP,
                                "resources": [
                                    {"name": k, "nominalQuota": v} for k, v in quota.items()
                                ],
                            }
                        ],
                    }
                ],
            }
        },
    }


FLAVOR = {
    "apiVersion": "devservers.io/v1",
    "kind": "DevServerFlavor",
    "metadata": {"name": "bench-gpu"},
    "spec": {
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": "1"},
        },
        "nodeSelector": {"eks.amazonaws.com/nodegroup": GROUP},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
    },
}


@dataclass
class Bench:
    cluster: LocalControlPlane
    kueue: KueueProcess
    operator: OperatorProcess


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    nodes = [NodeSpec(f"gpu-bench-{i:02d}", "g5.12xlarge", GROUP) for i in range(-(-GPUS // 4))]
    plane = LocalControlPlane(ControlPlaneOptions(nodes=[*default_node_pool(), *nodes])).start()
    kueue = KueueProcess(plane)
    try:
        kueue.start()
        plane.install_devserver(
            "kueue.enabled=true", "kueue.clusterQueue=bench", json_values=chart_values()
        )
        plane.apply(FLAVOR)
        plane.wait_quota_counts_devservers()  # else users' quotas refuse servers for 5 min
        operator = OperatorProcess(
            plane.operator_kubeconfig,
            (
                "--kueue-cluster-queue=bench",
                "--max-lifetime=0",
                "--user-quota=gpus=16,cpu=64,memory=256Gi,storage=1Ti,devServers=20",
                "--no-log-json",
            ),
        )
        operator.start(timeout=60)
        operator.wait_leading()
        try:
            yield Bench(plane, kueue, operator)
        finally:
            operator.stop()
    finally:
        kueue.uninstall()
        kueue.stop()
        plane.stop()


@pytest_asyncio.fixture
async def kube(bench: Bench) -> AsyncIterator[KubeClient]:
    client = await new_client(str(bench.cluster.kubeconfig))
    yield client
    await client.close()


async def items(kube: KubeClient, path: str) -> list[dict[str, Any]]:
    """One unpaginated list from the apiserver's watch cache (resourceVersion=0)."""
    found = json.loads(await kube.request("GET", path, query=[("resourceVersion", "0")]))
    return list(found["items"])


def reserved(workload: dict[str, Any]) -> bool:
    for c in (workload.get("status") or {}).get("conditions") or []:
        if c.get("type") == "QuotaReserved":
            return c.get("status") == "True"
    return False


def finished(workload: dict[str, Any]) -> bool:
    conditions = (workload.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Finished" and c.get("status") == "True" for c in conditions)


def phase(server: dict[str, Any]) -> str:
    return str((server.get("status") or {}).get("phase") or "")


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_snapshot(bench: Bench) -> dict[str, float]:
    pids = {name: bench.cluster.process(name).pid for name in COMPONENTS}
    pids |= {"devserver-operator": bench.operator.pid, "kueue": bench.kueue.process.pid}
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Sampler:
    """What Kueue holds, every SAMPLE_SECONDS: when each Workload was first seen reserving
    quota, and the GPU-seconds left unreserved while some server waited."""

    kube: KubeClient
    first_reserved: dict[str, float] = field(default_factory=dict)  # workload uid: time
    released: dict[str, float] = field(default_factory=dict)  # uid: first seen holding none
    holding: set[str] = field(default_factory=set)
    idle_gpu_seconds: float = 0.0
    waiting_seconds: float = 0.0
    samples: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            found = await items(self.kube, KUEUE_WORKLOADS.path())
            now = time.monotonic()
            live = [
                w for w in found if not finished(w) and not w["metadata"].get("deletionTimestamp")
            ]
            held = [w for w in live if reserved(w)]
            for w in held:
                self.first_reserved.setdefault(w["metadata"]["uid"], now)
            holding = {w["metadata"]["uid"] for w in held}
            for uid in self.holding - holding:  # finished, deleted: its quota is free
                self.released.setdefault(uid, now)
            self.holding = holding
            waiting = len(live) - len(held)
            if waiting:
                step = now - last
                self.waiting_seconds += step
                self.idle_gpu_seconds += max(0, GPUS - len(held)) * step
            self.samples += 1
            last = now
            await asyncio.sleep(SAMPLE_SECONDS)


async def test_500_servers_queued_against_50_gpus_with_a_churn_of_stops(
    bench: Bench, kube: KubeClient
) -> None:
    users = [f"kb{i:02d}" for i in range(USERS)]
    for user in users:
        await kube.create(
            DEVUSERS,
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": user},
                "spec": {"email": f"{user}@example.com"},
            },
        )
    async with asyncio.timeout(300):  # every namespace with its LocalQueue and a counted quota
        while True:
            queues = await items(kube, "/apis/kueue.x-k8s.io/v1beta2/localqueues")
            quotas = await items(kube, "/api/v1/resourcequotas")
            counted = {
                q["metadata"]["namespace"]
                for q in quotas
                if "count/devservers.devservers.io" in ((q.get("status") or {}).get("used") or {})
            }
            if len(queues) >= USERS and len(counted & {f"dev-{u}" for u in users}) >= USERS:
                break
            await asyncio.sleep(1)

    cpu_before = cpu_snapshot(bench)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(user: str, index: int) -> None:
        body = {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": f"s{index}", "namespace": f"dev-{user}"},
            "spec": {"owner": f"{user}@example.com", "flavor": "bench-gpu", "image": "pt:2"},
        }
        async with gate:
            await kube.create(DEVSERVERS, body, f"dev-{user}")

    started = time.monotonic()
    await asyncio.gather(*(create(u, i) for u in users for i in range(PER_USER)))
    created = time.monotonic() - started
    async with asyncio.timeout(900):
        while True:
            servers = await items(kube, DEVSERVERS.path())
            phases = [phase(s) for s in servers]
            if phases.count("Running") >= GPUS and phases.count("Queued") >= SERVERS - GPUS:
                break
            await asyncio.sleep(1)
    filled = time.monotonic() - started
    progress(f"filled in {filled:.1f} s")
    while True:  # and every queued server says its place
        servers = await items(kube, DEVSERVERS.path())
        said = Counter(_said(s) for s in servers if phase(s) == "Queued")
        if said["placed"] >= SERVERS - GPUS:
            break
        progress(f"queued servers say: {dict(said)}")
        if time.monotonic() - started > filled + 180:
            pytest.fail(f"queued servers not told their place after 180 s: {said}")
        await asyncio.sleep(1)
    told = time.monotonic() - started
    progress(f"every queued server told its place after {told:.1f} s")

    sampler = Sampler(kube)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    admitted_after: list[float] = []
    released_after: list[float] = []
    running_after: list[float] = []
    rounds: list[float] = []
    cycles: list[float] = []
    try:
        await asyncio.sleep(2)
        for _ in range(ROUNDS):
            servers = await items(kube, DEVSERVERS.path())
            running = [s for s in servers if phase(s) == "Running"][:STOPS]
            queued_before = {
                s["metadata"]["namespace"] + "/" + s["metadata"]["name"]
                for s in servers
                if phase(s) == "Queued"
            }
            held_before = set(sampler.first_reserved)
            t0, wall = time.monotonic(), time.time()
            await asyncio.gather(
                *(
                    kube.patch(
                        DEVSERVERS,
                        s["metadata"]["name"],
                        {"spec": {"stopped": True}},
                        s["metadata"]["namespace"],
                    )
                    for s in running
                )
            )
            deadline = t0 + 120
            while True:  # as many newly admitted as were stopped, and Running
                fresh = [u for u in sampler.first_reserved if u not in held_before]
                servers = await items(kube, DEVSERVERS.path())
                now_running = [
                    s
                    for s in servers
                    if phase(s) == "Running"
                    and s["metadata"]["namespace"] + "/" + s["metadata"]["name"] in queued_before
                ]
                if len(fresh) >= len(running) and len(now_running) >= len(running):
                    break
                if time.monotonic() > deadline:
                    workloads = await items(kube, KUEUE_WORKLOADS.path())
                    pytest.fail(
                        f"round {len(admitted_after) // STOPS + 1}: {len(running)} stopped, "
                        f"{len(fresh)} newly admitted, {len(now_running)} of the queued Running "
                        f"after 120 s; phases {sorted(Counter(map(phase, servers)).items())}; "
                        f"workloads reserved {sum(map(reserved, workloads))}, "
                        f"finished {sum(map(finished, workloads))}, all {len(workloads)}"
                    )
                await asyncio.sleep(SAMPLE_SECONDS)
            admitted = sorted(sampler.first_reserved[u] - t0 for u in fresh)[: len(running)]
            admitted_after += admitted
            rounds.append(max(admitted))
            gone = [t - t0 for u, t in sampler.released.items() if u in held_before and t >= t0]
            released_after += sorted(gone)[: len(running)]
            # Kueue's own part: from the last stopped server's quota freed to the last admitted
            cycles.append(max(admitted) - max(sorted(gone)[: len(running)], default=0.0))
            for s in now_running[: len(running)]:
                ready = next(c for c in s["status"]["conditions"] if c["type"] == "Ready")
                running_after.append(max(0.0, _epoch(ready["lastTransitionTime"]) - wall))
            progress(f"round {len(admitted_after) // STOPS} done")
            await asyncio.sleep(3)  # the queue settles; idle GPUs here would count
    finally:
        stop.set()
        await sampling
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_snapshot(bench).items()}

    assert len(admitted_after) == ROUNDS * STOPS, admitted_after
    report(
        [
            f"Kueue bench: {SERVERS} servers of {USERS} users, {GPUS} GPUs of quota, "
            f"{ROUNDS} rounds of {STOPS} stops",
            f"  created in {created:.1f} s; {GPUS} Running and {SERVERS - GPUS} Queued "
            f"after {filled:.1f} s; every queued server told its place after {told:.1f} s",
            f"  stop -> its quota released (Workload finished): p50 "
            f"{pct(released_after, 0.5):.2f} s, p99 {pct(released_after, 0.99):.2f} s",
            f"  stop -> next admitted by Kueue: p50 {pct(admitted_after, 0.5):.2f} s, "
            f"p99 {pct(admitted_after, 0.99):.2f} s, max {max(admitted_after):.2f} s",
            "  slowest admission by round: " + ", ".join(f"{r:.1f}" for r in rounds),
            f"  of which Kueue's own cycle (last quota freed -> last admitted): p50 "
            f"{pct(cycles, 0.5):.2f} s, max {max(cycles):.2f} s",
            f"  stop -> that server Running (status, 1 s resolution): p50 "
            f"{pct(running_after, 0.5):.1f} s, p99 {pct(running_after, 0.99):.1f} s",
            f"  GPUs idle while servers waited: {sampler.idle_gpu_seconds:.1f} GPU-s over "
            f"{sampler.waiting_seconds:.1f} s of churn "
            f"({sampler.idle_gpu_seconds / max(sampler.waiting_seconds, 1e-9):.2f} GPUs "
            f"on average, of {GPUS}); {sampler.samples} samples",
            "  CPU seconds over fill and churn: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])),
            f"  operator peak RSS {_peak_rss(bench.operator.pid):.0f} MiB, "
            f"Kueue peak RSS {_peak_rss(bench.kueue.process.pid):.0f} MiB",
            f"  mean admission {statistics.fmean(admitted_after):.2f} s",
        ]
    )


def _said(server: dict[str, Any]) -> str:
    """How far a queued server's status goes: its place, Kueue's words, or not yet either."""
    ready = [
        c for c in (server.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"
    ]
    message = ready[0].get("message", "") if ready else ""
    if " in the queue for GPU quota" in message:
        return "placed"
    return "in the queue" if message.startswith("in the queue") else message[:40]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _peak_rss(pid: int | None) -> float:
    if not pid:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
