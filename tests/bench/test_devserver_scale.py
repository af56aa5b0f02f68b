"""N DevServers (1,000 at scale 1) in N/5 namespaces created at once: the operator beside a
bare-client floor and two peer operators.

A report (`nox -s bench`; `-s` shows the table), not a pass/fail timing; DEVSERVER_BENCH_SCALE
sets N (10 for 10,000) and DEVSERVER_BENCH_PEERS which peers run ("" for none). On a control
plane of its own, with 72·scale more m5.2xlarge kwok nodes so that every run's pods fit side by
side:

A. the operator (a subprocess, no leader election) and N DevServers of the tiny `bench-tiny`
   flavor with SSH on (home PVC + Deployment + Service + the activity agent's ServiceAccount,
   Role, RoleBinding and Lease: 7 objects each, and one scripts ConfigMap per namespace),
   created 32 at a time: seconds until every one is Ready, the operator's CPU seconds and peak
   RSS, its API requests by verb (from the audit log; the benchmark's own client sends another
   User-Agent), its writes during 60 s at rest (goal: none), then a kill -9 and a start: seconds
   until it is ready again, until its first reconciles are done (its /metrics: no key queued or
   in a worker), until its last write, how many (goal: none), and the new process's peak RSS
   (a start lists every object);
B. the floor, with the operator stopped: a bare client creating the same child objects (the
   reconciler's own builders, minus ownerReferences to DevServers that do not exist) in other
   namespaces, 32 servers at a time, until every Deployment has its replica available. It runs
   second, beside A's servers: if anything, that slows the floor down.
C. the peers (tests/bench/peers), each in turn with our operator stopped, on the same job for
   DevServers of their own (the standalone core: home PVC, Deployment, Service, status): kopf,
   and Go with controller-runtime; at rest and after a kill -9 as A. Each runs beside the
   servers of the runs before it: if anything, that slows the later ones down (ours runs first).

DEVSERVER_BENCH_ALONE=ours (or floor) runs that contender alone, on a control plane of its own:
at 10,000 a run beside the objects of the runs before is far slower, so the ratio there comes
from two such runs.

The text and a plot (Ready servers and RSS over time per contender) go to DEVSERVER_BENCH_RESULTS
(default bench-results/) with the machine and the versions. The only assertions guard the
figures: every DevServer became Ready and every floor Deployment available, so a broken run
cannot pass for a fast one. Per-object milestones and CPU seconds per component show where the
time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.names import USER_LABEL
from devserver.api.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    DEVSERVERS,
    EVENTS,
    LEASES,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    SERVICES,
    Resource,
)
from devserver.client import ApiError, KubeClient, new_client
from devserver.client.events import COMPONENT
from devserver.reconcilers.devserver.activity_agent import (
    desired_lease,
    desired_role,
    desired_role_binding,
    desired_scripts,
    desired_service_account,
)
from devserver.reconcilers.devserver.standalone import (
    desired_deployment,
    desired_home_claim,
    desired_service,
)
from devserver_harness.binaries import read_versions, tools_dir
from devserver_harness.controlplane import ControlPlaneOptions, LocalControlPlane
from devserver_harness.http import fetch
from devserver_harness.nodes import NodeSpec, default_node_pool
from devserver_harness.tools import ensure_tool
from tests.bench.kubebench import USER_AGENT
from tests.bench.scale import scaled, seconds

pytestmark = pytest.mark.timeout(round(seconds(3600, 900)))  # four runs, rest and restarts

NAMESPACES_PER_RUN = scaled(200, 2)  # N/5, as users with a few servers each
PER_NAMESPACE = 5
SERVERS = NAMESPACES_PER_RUN * PER_NAMESPACE
CONCURRENCY = 32
STEADY_SECONDS = min(60.0, seconds(60, 3))  # at rest: the same window at any N
WAVE = min(SERVERS, 1000)  # servers changed, then stopped, at once (1,000 at any larger N)
RESTART_SECONDS = min(60.0, seconds(60, 10))  # after a kill -9 and a start: writes counted
READY_TIMEOUT = seconds(900, 120)
# a poll lists every server: at 10,000 that is ~40 MB a time, so it polls less often
POLL_SECONDS = max(1.0, SERVERS / 1000)
GOAL_RATIO, GOAL_RSS_MIB = 1.2, 150  # issue 18, for N = 10,000
BENCH_AGENT = "devserver-bench"  # not USER_AGENT's prefix: the audit log tells us apart
OPERATOR, FLOOR = "bench@example.com", "floor@example.com"  # user labels "bench" and "floor"
CONTENDER_LABEL = "bench.devservers.io/contender"  # a peer serves only the DevServers so marked
PEER_SETTLE = seconds(10, 2)  # a peer started, before its run is timed
WRITES = ("create", "update", "patch", "delete", "deletecollection")
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "provisioner",
    "devserver-operator",
)
HERE = "benchmark (pytest)"
TICKS = os.sysconf("SC_CLK_TCK")
FLAVOR: dict[str, Any] = {
    "apiVersion": "devservers.io/v1",
    "kind": "DevServerFlavor",
    "metadata": {"name": "bench-tiny"},
    "spec": {
        "description": "benchmark: tiny, so that nodes fill up by pod count (58 each)",
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
    },
}


RESIZED_CPU = "20m"  # the wave's flavor change: every pod is replaced by one of this flavor
RESIZED: dict[str, Any] = {
    **FLAVOR,
    "metadata": {"name": "bench-tiny-b"},
    "spec": {
        **FLAVOR["spec"],
        "resources": {
            **FLAVOR["spec"]["resources"],
            "requests": {"cpu": RESIZED_CPU, "memory": "16Mi"},
        },
    },
}


def report(lines: list[str]) -> str:
    """Printed, and kept in the results folder with the machine and the versions."""
    text = "\n".join(lines)
    print("\n" + text)  # noqa: T201
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"-{ALONE}" if ALONE else ""
    (RESULTS / f"devserver-scale-{SERVERS}{suffix}.txt").write_text(f"{provenance()}\n\n{text}\n")
    return text


def provenance(bench: str = "tests/bench/test_devserver_scale.py") -> str:
    """What ran, where: enough to compare a run with another."""
    versions = read_versions((tools_dir() / "go.mod").read_text())
    crpeer = (Path(__file__).parent / "peers" / "crpeer" / "go.mod").read_text()
    runtime = next(
        line.split()[-1]
        for line in crpeer.splitlines()
        if "sigs.k8s.io/controller-runtime " in line
    )
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    git = ["git", "-C", str(Path(__file__).parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    commit = commit.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
    return (
        f"# {bench}, N={SERVERS}, "
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, commit {commit or '?'}\n"
        f"# machine: {os.cpu_count()} cores, {int(memory) / 2**20:.0f} GiB, {platform.platform()}\n"
        f"# Kubernetes {versions.kubernetes}; Python {platform.python_version()}; "
        f"kopf {_version('kopf')}; controller-runtime {runtime}"
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalControlPlane]:
    with bench_control_plane() as plane:
        yield plane


@contextlib.contextmanager
def bench_control_plane() -> Iterator[LocalControlPlane]:
    """The control plane of a run: the chart's CRDs and RBAC installed, the flavors made."""
    zones = ("us-east-1a", "us-east-1b")
    extra = [
        NodeSpec(f"cpu-bench-{i:02d}", "m5.2xlarge", "cpu-bench", zones[i % 2])
        for i in range(EXTRA_NODES)
    ]
    keep = os.environ.get("DEVSERVER_KEEP_STATE") == "1"  # logs and data, for a post-mortem
    # every request of every run is counted from the audit log: ~40 per server, ~1 KB each,
    # kept in 100 MB files (the harness keeps 2 old ones; at 10,000 servers that is too few)
    backups = f"--audit-log-maxbackup={max(2, SERVERS // 250)}"
    options = ControlPlaneOptions(
        nodes=[*default_node_pool(), *extra], apiserver_extra_args=(backups,), keep_state=keep
    )
    plane = LocalControlPlane(options).start()
    try:
        plane.install_devserver()
        plane.apply(FLAVOR)
        plane.apply(RESIZED)
        yield plane
    finally:
        plane.stop()


class _OwnAgent:
    """The client's aiohttp session, sending the benchmark's User-Agent instead of the operator's
    (`KubeClient._send` sets the header per request, so it is replaced on the way out)."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def request(self, method: str, url: str, **options: Any) -> Any:
        options["headers"] = {**options["headers"], "User-Agent": BENCH_AGENT}
        return self._session.request(method, url, **options)

    async def close(self) -> None:
        await self._session.close()


@pytest_asyncio.fixture
async def kube(cluster: LocalControlPlane) -> AsyncIterator[KubeClient]:
    client = await new_client(str(cluster.kubeconfig))
    own: Any = _OwnAgent(client._client_session())
    client._session = own  # every request of this client goes through the wrapper
    yield client
    await client.close()


# ------------------------------------------------------------------------- objects


def devserver(namespace: str, index: int, owner: str, contender: str = "") -> dict[str, Any]:
    labels = {CONTENDER_LABEL: contender} if contender else {}
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": f"ds-{index}", "namespace": namespace, "labels": labels},
        "spec": {
            "owner": owner,
            "flavor": FLAVOR["metadata"]["name"],
            "image": "pytorch/pytorch:2.5.1",
            "enableSSH": True,
        },
    }


def floor_children(
    namespace: str, index: int, flavor: DevServerFlavor
) -> list[tuple[Resource[Any], dict[str, Any]]]:
    """What the reconciler would create for this DevServer, built by its own functions."""
    body = devserver(namespace, index, FLOOR)
    body["metadata"] |= {"uid": str(uuid.uuid4()), "generation": 1}  # only the builders see it
    ds = DevServer.model_validate(body)
    children = [
        # the activity agent's objects first: a pod may not name a ServiceAccount that is missing
        *([(CONFIGMAPS, desired_scripts(namespace))] if index == 0 else []),  # one per namespace
        (SERVICE_ACCOUNTS, desired_service_account(ds)),
        (ROLES, desired_role(ds)),
        (ROLE_BINDINGS, desired_role_binding(ds)),
        (LEASES, desired_lease(ds)),
        (PERSISTENT_VOLUME_CLAIMS, desired_home_claim(ds)),
        (DEPLOYMENTS, desired_deployment(ds, flavor)),
        (SERVICES, desired_service(ds)),
    ]
    for _, child in children:  # the owner does not exist: the garbage collector would step in
        child["metadata"].pop("ownerReferences", None)
    return children


def is_ready(ds: dict[str, Any]) -> bool:
    conditions = (ds.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_available(deployment: dict[str, Any]) -> bool:
    return bool((deployment.get("status") or {}).get("availableReplicas") == 1)


async def list_items(kube: KubeClient, path: str, label_selector: str = "") -> list[dict[str, Any]]:
    """One unpaginated list from the apiserver's watch cache (resourceVersion=0), as dicts."""
    query = [("resourceVersion", "0")]
    if label_selector:
        query.append(("labelSelector", label_selector))
    items: list[dict[str, Any]] = json.loads(await kube.request("GET", path, query=query))["items"]
    return items


async def make_namespaces(kube: KubeClient, prefix: str) -> list[str]:
    """Namespaces whose default ServiceAccount exists (pods are refused before): not timed."""
    names = [f"{prefix}-{i:02d}" for i in range(NAMESPACES_PER_RUN)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(name: str) -> None:
        async with gate:
            await kube.create(NAMESPACES, {"metadata": {"name": name}})

    await asyncio.gather(*(create(name) for name in names))
    async with asyncio.timeout(120):
        while True:
            accounts = await list_items(kube, "/api/v1/serviceaccounts")
            if {a["metadata"]["namespace"] for a in accounts} >= set(names):
                return names
            await asyncio.sleep(0.5)


Sample = tuple[float, int, float]  # (seconds after the first create, how many done, RSS MiB)


async def timed_until_all(
    kube: KubeClient,
    create: Callable[[], Awaitable[Any]],
    path: str,
    label_selector: str,
    done: Callable[[dict[str, Any]], bool],
    pid: int | None = None,
    want: int = SERVERS,
) -> tuple[float, int, list[Sample]]:
    """Seconds from the first create until `want` objects at `path` are `done`, how many, and
    at each poll how many were done and the RSS of process `pid` (0 without one)."""
    started = time.monotonic()
    creating = asyncio.ensure_future(create())
    series: list[Sample] = []
    try:
        while True:
            if creating.done():
                creating.result()  # a failed create ends the run
            count = sum(map(done, await list_items(kube, path, label_selector)))
            seconds = time.monotonic() - started
            series.append((seconds, count, rss_mib(pid) if pid else 0.0))
            if count >= want or seconds > READY_TIMEOUT:
                return seconds, count, series
            await asyncio.sleep(POLL_SECONDS)
    finally:
        creating.cancel()


# ------------------------------------------------------------------------- measurements


def cpu_snapshot(cluster: LocalControlPlane) -> dict[str, float]:
    """CPU seconds (user + system, all threads) of every running component and of this process."""
    alive = {}
    for name in COMPONENTS:
        with contextlib.suppress(KeyError):  # never started: the operator, for the floor alone
            proc = cluster.process(name)
            if proc.alive and proc.pid:
                alive[name] = proc.pid
    seconds = {}
    for name, pid in {**alive, HERE: os.getpid()}.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds[name] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return seconds


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if name in before}


def peak_rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float:
    return _status_mib(pid, "VmRSS:")


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


@dataclass(frozen=True)
class Request:
    at: float  # when the apiserver received it, epoch seconds
    client: str
    verb: str
    resource: str


def client_name(event: dict[str, Any]) -> str:
    """Who sent it: the User-Agent's product, the controller manager split per controller."""
    agent = str(event.get("userAgent", "")).split("/", 1)[0]
    user = str((event.get("user") or {}).get("username", ""))
    if agent == "kube-controller-manager" and user.startswith("system:serviceaccount:"):
        return "kcm " + user.rsplit(":", 1)[1]
    named = {"devserver": "devserver-operator", "OpenAPI-Generator": "provisioner"}
    named |= {"kopf-peer": "kopf", "crpeer": "go"}  # the peers, by their User-Agents
    return named.get(agent, agent)


def audit_requests(cluster: LocalControlPlane) -> list[Request]:
    """Every request in the audit log, its rotated files included (it rotates at 100 MB), once."""
    seen: dict[str, Request] = {}
    for path in cluster.audit_log.parent.glob("audit*.log"):
        with path.open() as lines:
            for line in lines:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "(non-resource)")
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                seen[event["auditID"]] = Request(
                    datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp(),
                    client_name(event),
                    event["verb"],
                    resource,
                )
    return list(seen.values())


def window(requests: list[Request], start: float, end: float, client: str = "") -> list[Request]:
    return [r for r in requests if start <= r.at < end and (not client or r.client == client)]


def since(stamp: str | None, start: float) -> float | None:
    """Seconds from `start` to an API timestamp (whole seconds, so never before 0)."""
    return None if stamp is None else max(0.0, datetime.fromisoformat(stamp).timestamp() - start)


def condition_time(obj: dict[str, Any], kind: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return str(c["lastTransitionTime"])
    return None


async def milestones(kube: KubeClient, owner: str, start: float) -> dict[str, list[float]]:
    """Seconds after the first create at which each object reached each step (1 s resolution)."""
    selector = f"{USER_LABEL}={owner.split('@')[0]}"
    claims = await list_items(kube, PERSISTENT_VOLUME_CLAIMS.path(), selector)
    deployments = await list_items(kube, DEPLOYMENTS.path(), selector)
    services = await list_items(kube, SERVICES.path(), selector)
    pods = await list_items(kube, PODS.path(), selector)
    namespaces = {d["metadata"]["namespace"] for d in deployments}
    volumes = [
        v
        for v in await list_items(kube, "/api/v1/persistentvolumes")
        if (v["spec"].get("claimRef") or {}).get("namespace") in namespaces
    ]
    steps: dict[str, list[float | None]] = {
        "home PVC created": [since(c["metadata"]["creationTimestamp"], start) for c in claims],
        "Deployment created": [
            since(d["metadata"]["creationTimestamp"], start) for d in deployments
        ],
        "Service created": [since(s["metadata"]["creationTimestamp"], start) for s in services],
        "Pod created (ReplicaSet)": [
            since(p["metadata"]["creationTimestamp"], start) for p in pods
        ],
        "PV provisioned": [since(v["metadata"]["creationTimestamp"], start) for v in volumes],
        "Pod scheduled (bound)": [since(condition_time(p, "PodScheduled"), start) for p in pods],
        "Pod Ready (kwok)": [since(condition_time(p, "Ready"), start) for p in pods],
    }
    if owner == OPERATOR:
        servers = await list_items(kube, DEVSERVERS.path())
        steps["DevServer Ready (status)"] = [
            since(condition_time(s, "Ready"), start) for s in servers
        ]
    return {step: [s for s in values if s is not None] for step, values in steps.items()}


# ------------------------------------------------------------------------- the benchmark


@dataclass
class Run:
    seconds: float
    count: int
    start: float  # wall clock of the first create
    end: float  # wall clock when the poll saw everything done
    cpu: dict[str, float]
    steps: dict[str, list[float]]
    series: list[Sample] = field(default_factory=list)


async def run_operator(kube: KubeClient, cluster: LocalControlPlane, pid: int) -> Run:
    namespaces = await make_namespaces(kube, "scale-op")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(namespace: str, index: int) -> None:
        async with gate:
            await kube.create(DEVSERVERS, devserver(namespace, index, OPERATOR), namespace)

    async def create_all() -> None:
        await asyncio.gather(*(create(ns, i) for ns in namespaces for i in range(PER_NAMESPACE)))

    before, start = cpu_snapshot(cluster), time.time()
    seconds, count, series = await timed_until_all(
        kube, create_all, DEVSERVERS.path(), "", is_ready, pid
    )
    end, cpu = time.time(), cpu_delta(before, cpu_snapshot(cluster))
    return Run(seconds, count, start, end, cpu, await milestones(kube, OPERATOR, start), series)


async def run_floor(kube: KubeClient, cluster: LocalControlPlane) -> Run:
    namespaces = await make_namespaces(kube, "scale-floor")
    flavor = DevServerFlavor.model_validate(FLAVOR)
    servers = [floor_children(ns, i, flavor) for ns in namespaces for i in range(PER_NAMESPACE)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(children: list[tuple[Resource[Any], dict[str, Any]]]) -> None:
        async with gate:
            for resource, body in children:  # in the reconciler's order
                await kube.create(resource, body, body["metadata"]["namespace"])

    async def create_all() -> None:
        await asyncio.gather(*(create(children) for children in servers))

    selector = f"{USER_LABEL}={FLOOR.split('@')[0]}"
    before, start = cpu_snapshot(cluster), time.time()
    seconds, count, series = await timed_until_all(
        kube, create_all, DEPLOYMENTS.path(), selector, is_available
    )
    end, cpu = time.time(), cpu_delta(before, cpu_snapshot(cluster))
    return Run(seconds, count, start, end, cpu, await milestones(kube, FLOOR, start), series)


@dataclass(frozen=True)
class Restart:
    """A contender killed (SIGKILL) at rest with every server Ready, and started again."""

    synced: float  # s from its start until its readiness (ours) or health (peers) answers
    converged: float  # s from its start until its last write in RESTART_SECONDS (synced if none)
    writes: int  # its writes in the RESTART_SECONDS after its start
    peak_rss_mib: float  # the new process's peak RSS by the end of RESTART_SECONDS (its lists)
    # s from its start until its first reconciles are done: no key queued, none in a worker,
    # no notification waiting for a handler (ours: its /metrics; None where not measured)
    drained: float | None = None


@dataclass(frozen=True)
class Wave:
    """WAVE servers of a contender moved to another flavor at once, then stopped at once."""

    resized: float  # s from the first change until each of their Deployments runs the new flavor
    stopped: float  # s from the first stop until each of their Deployments is at zero pods
    writes: int  # the contender's writes from the first change until all stopped


def _in(prefix: str, deployment: dict[str, Any]) -> bool:
    return str(deployment["metadata"]["namespace"]).startswith(prefix + "-")


def _settled(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    generation = deployment["metadata"].get("generation")
    return bool(status.get("observedGeneration") == generation)


def runs_resized(prefix: str) -> Callable[[dict[str, Any]], bool]:
    def done(deployment: dict[str, Any]) -> bool:
        containers = deployment["spec"]["template"]["spec"]["containers"]
        cpu = ((containers[0].get("resources") or {}).get("requests") or {}).get("cpu")
        status = deployment.get("status") or {}
        return (
            _in(prefix, deployment)
            and _settled(deployment)
            and cpu == RESIZED_CPU
            and status.get("replicas") == status.get("updatedReplicas") == 1
            and status.get("availableReplicas") == 1
        )

    return done


def at_zero(prefix: str) -> Callable[[dict[str, Any]], bool]:
    def done(deployment: dict[str, Any]) -> bool:
        status = deployment.get("status") or {}
        return (
            _in(prefix, deployment)
            and _settled(deployment)
            and deployment["spec"].get("replicas") == 0
            and not status.get("replicas")
        )

    return done


async def wave(kube: KubeClient, cluster: LocalControlPlane, prefix: str, client: str) -> Wave:
    """Change the flavor of WAVE servers in namespaces `prefix`-*, then stop them."""
    servers = [
        (item["metadata"]["namespace"], item["metadata"]["name"])
        for item in await list_items(kube, DEVSERVERS.path())
        if str(item["metadata"]["namespace"]).startswith(prefix + "-")
    ][:WAVE]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def change(spec: dict[str, Any]) -> None:
        async def one(namespace: str, name: str) -> None:
            async with gate:
                await kube.patch(DEVSERVERS, name, {"spec": spec}, namespace)

        await asyncio.gather(*(one(ns, name) for ns, name in servers))

    began = time.time()
    resized, _, _ = await timed_until_all(
        kube, lambda: change({"flavor": RESIZED["metadata"]["name"]}), DEPLOYMENTS.path(), "",
        runs_resized(prefix), want=len(servers),
    )  # fmt: skip
    stopped, _, _ = await timed_until_all(
        kube, lambda: change({"stopped": True}), DEPLOYMENTS.path(), "", at_zero(prefix),
        want=len(servers),
    )  # fmt: skip
    mine = window(audit_requests(cluster), began, time.time(), client)
    return Wave(resized, stopped, sum(1 for r in mine if r.verb in WRITES))


@dataclass
class Peer:
    run: Run
    cpu: float  # its own CPU seconds, first create -> all Ready
    peak_rss_mib: float
    requests: int  # its API requests during the run
    writes: int
    rest_writes: int  # its writes in STEADY_SECONDS at rest after the run
    restart: Restart
    wave: Wave


async def restarted(
    cluster: LocalControlPlane, client: str, kill: Callable[[], None],
    start: Callable[[], int], ready_url: str, metrics_url: str | None = None,
) -> Restart:  # fmt: skip
    """Kill -9 the contender, start it again (`start` gives the new pid): how soon it is
    synced, when its first reconciles are done (`metrics_url`: ours), how long it writes, how
    much (the audit log; its client name is `client`), and its peak RSS meanwhile: a start
    lists every object, all of them at once in memory."""
    kill()
    began = time.time()
    pid = start()
    async with asyncio.timeout(120):
        while True:
            if _answers(ready_url):
                break
            await asyncio.sleep(0.1)
    synced = time.time() - began
    drained = None
    if metrics_url is not None:
        drained = math.inf  # still working at the end of RESTART_SECONDS
        while time.time() - began < RESTART_SECONDS:
            if work_left(metrics_url) == 0:
                drained = time.time() - began
                break
            await asyncio.sleep(0.25)  # a scrape costs the operator ~ms: not too often
    await asyncio.sleep(max(0.0, RESTART_SECONDS - (time.time() - began)))
    writes = [
        r for r in window(audit_requests(cluster), began, began + RESTART_SECONDS, client)
        if r.verb in WRITES
    ]  # fmt: skip
    converged = max([synced, *(r.at - began for r in writes)])
    return Restart(synced, converged, len(writes), peak_rss_mib(pid), drained)


WORK = ("workqueue_depth{", "controller_runtime_active_workers{", "devserver_handler_backlog{")


def work_left(metrics_url: str) -> float:
    """Work our operator has not done yet, from its /metrics: keys queued or in a worker and
    notifications waiting for a handler, over every controller (0: a start's first reconciles
    are done). Keys waiting for a retry after a failed reconcile, or for a later requeue, are
    not counted: a failed first reconcile shows in the writes and the operator's log instead."""
    lines = [
        line for line in fetch(metrics_url, timeout=5)[1].decode().splitlines()
        if line.startswith(WORK)
    ]  # fmt: skip
    missing = [name for name in WORK if not any(line.startswith(name) for line in lines)]
    assert not missing, f"the operator's /metrics has no {missing}: its work cannot be told"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


PEERS = {  # name: (its command, its health endpoint)
    "kopf": (
        [
            sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "--quiet",
            "--liveness=http://127.0.0.1:18081/healthz",
            str(Path(__file__).parent / "peers" / "kopf_peer.py"),
        ],
        "http://127.0.0.1:18081/healthz",
    ),
    "go": (["crpeer", "--health-probe-bind-address=127.0.0.1:18082"], "http://127.0.0.1:18082/healthz"),
}  # fmt: skip
# which peers run (comma-separated; "" for none, to measure ours and the floor alone)
RESULTS = Path(os.environ.get("DEVSERVER_BENCH_RESULTS", "bench-results"))  # text and plots
CHOSEN_PEERS = os.environ.get("DEVSERVER_BENCH_PEERS", ",".join(PEERS))
# "ours" or "floor": that contender alone on a control plane of its own, for a run in two
# halves. At 10,000 the objects of the runs before slow the next one down (the floor made ~115
# servers a minute beside ours' 10,000), so a floor measured after ours is no floor there.
ALONE = os.environ.get("DEVSERVER_BENCH_ALONE", "")
assert ALONE in ("", "ours", "floor"), f"DEVSERVER_BENCH_ALONE={ALONE!r}: say ours or floor"
RUNS = 1 if ALONE else 2 + len([p for p in PEERS if p in CHOSEN_PEERS.split(",")])
# with cpu-1 and cpu-2, 58 pods each: room for every run's pods side by side (72 at N = 1,000)
EXTRA_NODES = max(1, -(-SERVERS * RUNS // 56))


PEER_NAMES = {
    "kopf": "kopf 1.45.2 (peers/kopf_peer.py)",
    "go": "controller-runtime v0.24.1 (peers/crpeer)",
}


def start_peer(name: str, cluster: LocalControlPlane) -> subprocess.Popen[bytes]:
    """A peer as its docs run it: one process, every namespace, admin credentials."""
    command, _ = PEERS[name]
    if command[0] == "crpeer":
        command = [str(ensure_tool("crpeer")), *command[1:]]
    with (cluster.layout.logs / f"{name}-peer.log").open("wb") as log:  # a pipe would fill
        return subprocess.Popen(
            command,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            stdout=subprocess.DEVNULL,
            stderr=log,  # the child has its own copy of the descriptor
        )


async def run_peer(kube: KubeClient, cluster: LocalControlPlane, name: str) -> Peer:
    """The same DevServers, in namespaces of their own, with our operator stopped, served by
    peer `name`: only DevServers marked for it (`CONTENDER_LABEL`). Then at rest, then killed
    and started again."""
    namespaces = await make_namespaces(kube, f"scale-{name}")
    running = [start_peer(name, cluster)]
    try:
        async with asyncio.timeout(120):  # it is up: its health endpoint answers
            while not _answers(PEERS[name][1]):
                process = running[-1]
                assert process.poll() is None, f"{name} exited with {process.returncode}"
                await asyncio.sleep(0.5)
        # its health answers before its first listing is done (kopf lists every DevServer and
        # Deployment of the runs before): that settles first, out of the timed run
        await asyncio.sleep(PEER_SETTLE)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def create(namespace: str, index: int) -> None:
            body = devserver(namespace, index, f"{name}@example.com", name)
            async with gate:
                await kube.create(DEVSERVERS, body, namespace)

        async def create_all() -> None:
            await asyncio.gather(
                *(create(ns, i) for ns in namespaces for i in range(PER_NAMESPACE))
            )

        pid = running[-1].pid
        cpu_before, start = _cpu(pid), time.time()
        selector = f"{CONTENDER_LABEL}={name}"
        seconds, count, series = await timed_until_all(
            kube, create_all, DEVSERVERS.path(), selector, is_ready, pid
        )
        end, cpu = time.time(), _cpu(pid) - cpu_before
        await asyncio.sleep(STEADY_SECONDS)
        rest_end = time.time()
        peak = peak_rss_mib(pid)

        def kill() -> None:
            running[-1].kill()
            running[-1].wait()

        def start_again() -> int:
            running.append(start_peer(name, cluster))
            return running[-1].pid

        restart = await restarted(cluster, name, kill, start_again, PEERS[name][1])
        changed = await wave(kube, cluster, f"scale-{name}", name)
    finally:
        for process in running:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # kopf waits for its handlers; the run is over
                process.kill()
                process.wait()
    requests = audit_requests(cluster)
    mine = window(requests, start, end, name)
    rest = sum(1 for r in window(requests, end, rest_end, name) if r.verb in WRITES)
    run = Run(seconds, count, start, end, {}, {}, series)
    writes = sum(1 for r in mine if r.verb in WRITES)
    return Peer(run, cpu, peak, len(mine), writes, rest, restart, changed)


def _answers(url: str) -> bool:
    try:
        return fetch(url, timeout=2)[0] == 200
    except OSError:
        return False


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Operator:
    startup: list[Request]  # its API requests: from its start to the first create
    burst: list[Request]  # from the first create until all Ready
    steady: list[Request]  # during the steady state after that
    steady_cpu: dict[str, float]  # every process's CPU seconds during the steady state
    total_cpu: float  # its CPU seconds, from its start to the end of the steady state
    peak_rss_mib: float
    events: Counter[str]  # the Events it recorded, by type and reason
    scrape: tuple[int, int]  # its /metrics at rest: (samples, bytes)
    restart: Restart
    wave: Wave


async def test_report_devserver_scale(kube: KubeClient, cluster: LocalControlPlane) -> None:
    started = time.time()
    if ALONE == "floor":
        b = await run_floor(kube, cluster)
        assert b.count == SERVERS, f"only {b.count} of {SERVERS} floor Deployments are available"
        report(
            [f"the floor alone: {SERVERS:,} servers ({CONCURRENCY} concurrent creates)", *alone(b)]
        )
        return
    # admin, as the floor's client: like for like. Under the chart's ServiceAccount every
    # request is authorized by RBAC and every Role it writes is checked against its own
    # rights, which costs the 2-core API server ~20 CPU seconds more over the 1,000 servers
    # (A 103 s against a 63 s floor, measured once); the floor pays none of that as admin
    url = cluster.run_operator("--no-leader-elect", kubeconfig=cluster.kubeconfig)
    process = cluster.process("devserver-operator")
    assert process.pid is not None
    cpu_at_start = cpu_snapshot(cluster)["devserver-operator"]
    try:
        a = await run_operator(kube, cluster, process.pid)
        assert a.count == SERVERS, f"only {a.count} of {SERVERS} DevServers became Ready"
        before = cpu_snapshot(cluster)
        await asyncio.sleep(STEADY_SECONDS)
        after, steady_end = cpu_snapshot(cluster), time.time()
        peak = peak_rss_mib(process.pid)
        scraped = fetch(url + "/metrics", timeout=10)[1]
        samples = sum(1 for line in scraped.splitlines() if line and not line.startswith(b"#"))

        def start_again() -> int:
            process.start()
            assert process.pid is not None
            return process.pid

        restart = await restarted(
            cluster, "devserver-operator", process.kill, start_again, url + "/readyz",
            url + "/metrics",
        )  # fmt: skip
        changed = await wave(kube, cluster, "scale-op", "devserver-operator")
        print(  # noqa: T201  # now: if a later run fails or is stopped, this much is known
            f"\nA: {a.count:,} Ready in {a.seconds:.1f} s, operator CPU"
            f" {a.cpu['devserver-operator']:.1f} s, peak RSS {peak:.1f} MiB; {restart}; {changed}",
            flush=True,
        )
        process.stop()  # the floor's children carry the same labels: it must not see them
        if ALONE == "ours":
            report([f"ours alone: {SERVERS:,} servers; {restart}; {changed}", *alone(a, peak)])
            return
        requests = audit_requests(cluster)  # now: the log rotates, run B could push A out
        operator = Operator(
            window(requests, started, a.start, "devserver-operator"),
            window(requests, a.start, a.end, "devserver-operator"),
            window(requests, a.end, steady_end, "devserver-operator"),
            cpu_delta(before, after),
            after["devserver-operator"] - cpu_at_start,
            peak,
            Counter(
                f"{e['type']} {e['reason']}"
                for e in await list_items(kube, EVENTS.path())
                if e.get("reportingComponent") == COMPONENT
            ),
            (samples, len(scraped)),
            restart,
            changed,
        )
        b = await run_floor(kube, cluster)
        assert b.count == SERVERS, f"only {b.count} of {SERVERS} floor Deployments are available"
        requests_b = window(audit_requests(cluster), b.start, b.end)
        contenders = {}
        for peer in (p for p in PEERS if p in CHOSEN_PEERS.split(",")):
            contenders[peer] = found = await run_peer(kube, cluster, peer)
            assert found.run.count == SERVERS, f"{peer}: {found.run.count} of {SERVERS} Ready"
    finally:
        for prefix in ("scale-op", "scale-floor", *(f"scale-{p}" for p in PEERS)):
            for i in range(NAMESPACES_PER_RUN):
                with contextlib.suppress(ApiError):  # never created, if a run failed early
                    await kube.delete(NAMESPACES, f"{prefix}-{i:02d}")
    report(
        [
            f"DevServers at scale: {SERVERS:,} in {NAMESPACES_PER_RUN} namespaces, flavor "
            f"{FLAVOR['metadata']['name']}, SSH on (PVC, Deployment, Service and the agent's "
            "account, Role, binding, Lease each), "
            f"{CONCURRENCY} concurrent creates, {len(cluster.options.nodes)} kwok nodes",
            *summary(a, b, operator),
            *peers(a, b, operator, contenders),
            f"operator /metrics at rest: {operator.scrape[0]:,} samples, "
            f"{operator.scrape[1] / 1024:,.0f} KiB (bounded labels: the same at any N)",
            "",
            *verbs(operator),
            "",
            *steps(a, b),
            "",
            *cpu_table(a, b, operator),
            "",
            *clients(window(requests, a.start, a.end), requests_b),
        ]
    )


def alone(run: Run, peak: float | None = None) -> list[str]:
    """One contender's run on a control plane of its own (`ALONE`): its time, and the CPU of
    every component (on 2 cores the API server's is most of it)."""
    lines = [f"  first create -> all Ready, s: {run.seconds:.1f} ({run.count:,} Ready)"]
    if peak is not None:
        lines.append(f"  operator peak RSS (VmHWM), MiB: {peak:.1f}")
    lines += [f"  CPU s, {name}: {cpu:.1f}" for name, cpu in sorted(run.cpu.items())]
    return lines


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def summary(a: Run, b: Run, operator: Operator) -> list[str]:
    ratio = a.seconds / b.seconds
    burst_cpu = a.cpu["devserver-operator"]
    peak = operator.peak_rss_mib
    writes = Counter(f"{r.verb} {r.resource}" for r in operator.steady if r.verb in WRITES)
    rows = [
        ("A. operator: first create -> all DevServers Ready, s", f"{a.seconds:.1f}", ""),
        ("B. floor: first create -> all Deployments available, s", f"{b.seconds:.1f}", ""),
        ("ratio A / B", f"{ratio:.2f}x", f"<= {GOAL_RATIO}x {verdict(ratio <= GOAL_RATIO)}"),
        (
            "operator CPU s, first create -> all Ready",
            f"{burst_cpu:.1f}",
            f"({burst_cpu / a.seconds:.0%} of one core)",
        ),
        ("operator CPU s, its start -> end of steady state", f"{operator.total_cpu:.1f}", ""),
        (
            "operator peak RSS (VmHWM), MiB",
            f"{peak:.1f}",
            f"<= {GOAL_RSS_MIB} {verdict(peak <= GOAL_RSS_MIB)}",
        ),
        (
            f"operator writes in {STEADY_SECONDS} s of steady state",
            str(writes.total()),
            f"0 {verdict(not writes)} {dict(writes) if writes else ''}".rstrip(),
        ),
        (
            "operator CPU s during the steady state",
            f"{operator.steady_cpu['devserver-operator']:.1f}",
            "",
        ),
    ]
    return [f"  {what:<56} {value:>9}  {goal}".rstrip() for what, value, goal in rows]


def peers(a: Run, b: Run, operator: Operator, contenders: dict[str, Peer]) -> list[str]:
    """Ours beside each peer on the same job, against the same floor: the run, then at rest,
    then a kill -9 and a start, then the wave."""
    ours = Peer(
        a,
        a.cpu["devserver-operator"],
        operator.peak_rss_mib,
        len(operator.burst),
        sum(1 for r in operator.burst if r.verb in WRITES),
        sum(1 for r in operator.steady if r.verb in WRITES),
        operator.restart,
        operator.wave,
    )
    named = {PEER_NAMES.get(name, name): peer for name, peer in contenders.items()}
    everyone = {"devserver (all its reconcilers on)": ours, **named}
    lines = [
        "side by side (the same servers, in turn, on this control plane; the peers make 3 "
        "objects per server, ours and the floor 7, the activity agent's 4 included):",
        f"  {'contender':<44} {'s':>6} {'x floor':>7} {'CPU s':>6} {'RSS MiB':>7}"
        f" {'req/srv':>7} {'wr/srv':>6}",
    ]
    for name, peer in everyone.items():
        lines.append(
            f"  {name:<44} {peer.run.seconds:6.1f} {peer.run.seconds / b.seconds:6.2f}x"
            f" {peer.cpu:6.1f} {peer.peak_rss_mib:7.1f} {peer.requests / SERVERS:7.1f}"
            f" {peer.writes / SERVERS:6.1f}"
        )
    lines += [
        f"then: writes in {STEADY_SECONDS:.0f} s at rest; after a kill -9 and a start, seconds"
        f" until ready, until its first reconciles are done (ours only: its /metrics) and until"
        f" its last write within {RESTART_SECONDS:.0f} s, its writes and its peak RSS (MiB);"
        f" the wave ({WAVE:,} flavor changes, then {WAVE:,} stops), seconds to converge"
        " each and its writes:",
        f"  {'contender':<44} {'rest wr':>7} | {'ready':>6} {'drained':>7} {'last wr':>7}"
        f" {'writes':>6}"
        f" {'RSS':>6} |"
        f" {'resize':>6} {'stop':>6} {'writes':>6}",
    ]
    for name, peer in everyone.items():
        lines.append(
            f"  {name:<44} {peer.rest_writes:7d} | {peer.restart.synced:6.1f}"
            f" {_seconds(peer.restart.drained):>7} {peer.restart.converged:7.1f}"
            f" {peer.restart.writes:6d}"
            f" {peer.restart.peak_rss_mib:6.1f} |"
            f" {peer.wave.resized:6.1f} {peer.wave.stopped:6.1f} {peer.wave.writes:6d}"
        )
    plot(a, b, contenders)
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(a: Run, b: Run, contenders: dict[str, Peer]) -> None:
    """Ready servers and RSS over time per contender: a PNG in the results folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"devserver": a, "floor (bare client)": b}
    runs |= {PEER_NAMES.get(n, n): p.run for n, p in contenders.items()}
    figure, (ready, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, run), color in zip(runs.items(), ("C0", "C1", "C2", "C3"), strict=False):
        t = [s[0] for s in run.series]  # one color per contender in both panels
        ready.plot(t, [s[1] for s in run.series], label=name, color=color)
        if any(s[2] for s in run.series):
            memory.plot(t, [s[2] for s in run.series], label=name, color=color)
    ready.set(xlabel="s after the first create", ylabel="Ready", title=f"{SERVERS:,} servers")
    memory.set(xlabel="s after the first create", ylabel="RSS, MiB", title="process RSS")
    for axes in (ready, memory):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / f"devserver-scale-{SERVERS}.png", dpi=90)
    plt.close(figure)


def verbs(operator: Operator) -> list[str]:
    phases = {"startup": operator.startup, "burst": operator.burst, "steady": operator.steady}
    counts = {phase: Counter(r.verb for r in requests) for phase, requests in phases.items()}
    lines = [
        f"operator API requests by verb (audit log, User-Agent {USER_AGENT}):",
        f"  {'verb':<8} {'startup':>8} {'burst':>8} {'steady':>8}  burst by resource",
    ]
    for verb in sorted(set().union(*counts.values())):
        resources = Counter(r.resource for r in operator.burst if r.verb == verb)
        by_resource = ", ".join(f"{resource} {n}" for resource, n in resources.most_common())
        lines.append(
            f"  {verb:<8} {counts['startup'][verb]:8d} {counts['burst'][verb]:8d}"
            f" {counts['steady'][verb]:8d}  {by_resource}".rstrip()
        )
    totals = {phase: len(requests) for phase, requests in phases.items()}
    events = ", ".join(f"{reason} {n}" for reason, n in operator.events.most_common())
    return [
        *lines,
        f"  {'total':<8} {totals['startup']:8d} {totals['burst']:8d} {totals['steady']:8d}"
        f"  ({totals['burst'] / SERVERS:.1f} per DevServer; the floor client sent "
        f"{3 * SERVERS:,} creates)",
        f"  Events it recorded: {events}",
    ]


def steps(a: Run, b: Run) -> list[str]:
    lines = [
        "where the time goes: seconds after the first create, p50 / max (1 s timestamps)",
        f"  {'step':<28} {'A operator':>15} {'B floor':>15}",
    ]
    for step in a.steps | b.steps:
        cells = [
            f"{statistics.median(values):.0f} / {max(values):.0f}"
            if (values := run.steps.get(step))
            else "-"
            for run in (a, b)
        ]
        lines.append(f"  {step:<28} {cells[0]:>15} {cells[1]:>15}")
    return lines


def cpu_table(a: Run, b: Run, operator: Operator) -> list[str]:
    runs = ((a.cpu, a.seconds), (operator.steady_cpu, STEADY_SECONDS), (b.cpu, b.seconds))
    lines = [
        "CPU seconds per process (2 cores: at most 2 per wall second):",
        f"  {'process':<26} {'A burst':>8} {'steady':>8} {'B floor':>8}",
    ]
    for name in [*COMPONENTS, HERE]:
        cells = [f"{cpu[name]:8.1f}" if name in cpu else f"{'-':>8}" for cpu, _ in runs]
        lines.append(f"  {name:<26} {' '.join(cells)}")
    busy = " ".join(f"{sum(cpu.values()) / wall:8.2f}" for cpu, wall in runs)
    lines.append(f"  {'cores busy (sum / wall s)':<26} {busy}")
    return lines


def clients(during_a: list[Request], during_b: list[Request]) -> list[str]:
    every = {"A": Counter(r.client for r in during_a), "B": Counter(r.client for r in during_b)}
    writes = {
        "A": Counter(r.client for r in during_a if r.verb in WRITES),
        "B": Counter(r.client for r in during_b if r.verb in WRITES),
    }
    lines = [
        "API requests per client during each run, all (writes):",
        f"  {'client':<36} {'A operator':>16} {'B floor':>16}",
    ]
    for client, _ in (every["A"] + every["B"]).most_common():
        cells = [f"{every[run][client]} ({writes[run][client]})" for run in ("A", "B")]
        lines.append(f"  {client:<36} {cells[0]:>16} {cells[1]:>16}")
    return lines
