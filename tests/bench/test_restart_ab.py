"""kill -9 restarts of the operator from this tree, side by side with a baseline commit's, on one
platform of N servers (the scale bench's: 1,000 in 200 namespaces at scale 1).

A restart is where a start's whole cost shows (decode, pack and tell the handlers of every
object), and one run of the scale bench gives one restart, on a machine whose other tenants
(the control plane, two cores) add seconds of noise to it. Here the servers are made once, by
this tree's operator; then each round kills the operator and starts it from the baseline's
source (`git archive` of DEVSERVER_BENCH_BASELINE, default HEAD), then from this tree's, and
times each until /readyz and until its first reconciles are done (its /metrics: no key queued or
in a worker, no notification waiting for a handler): alternating shares the drift between the
two. Per start it prints the seconds to ready, the operator's CPU seconds by then, the API
server's CPU seconds meanwhile, the operator's RSS when ready, and the seconds and the
operator's CPU seconds until its first reconciles were done; then the medians.

    DEVSERVER_BENCH_BASELINE=6ef3b9b DEVSERVER_BENCH_SCALE=2 \
        nox -s bench -- tests/bench/test_restart_ab.py

DEVSERVER_BENCH_PYSPY=DIR records each start of this tree with py-spy (if installed) until its
first reconciles are done, as DIR/start-K.txt (collapsed stacks, for flamegraph.pl or
speedscope); the sampler shares the two cores, so its rounds' figures are not of record.

The baseline runs against this tree's CRDs and chart: compare with commits whose CRDs are the
same. Its only assertions: every server became Ready, and every start became ready.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from devserver.client import new_client
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.http import fetch
from tests.bench.scale import seconds
from tests.bench.test_devserver_scale import (
    RESULTS,
    SERVERS,
    _cpu,
    bench_control_plane,
    provenance,
    rss_mib,
    run_operator,
    work_left,
)

pytestmark = pytest.mark.timeout(round(seconds(1800, 600)))

BASELINE = os.environ.get("DEVSERVER_BENCH_BASELINE", "HEAD")
ROUNDS = min(4, round(seconds(4, 1)))  # each: the baseline's start, then this tree's
SETTLE = min(15.0, seconds(15, 3))  # after a start has drained: at rest a while, then kill
REPO = Path(__file__).parents[2]
PYSPY = os.environ.get("DEVSERVER_BENCH_PYSPY", "")


@dataclass(frozen=True)
class Start:
    tree: str
    ready_s: float
    cpu_s: float  # the operator's, from its start until ready
    apiserver_cpu_s: float  # meanwhile
    rss_mib: float  # when ready
    drained_s: float  # until its first reconciles were done
    drained_cpu_s: float  # the operator's, from its start until then


@contextmanager
def baseline_source(rev: str) -> Iterator[Path]:
    """`src/` of commit `rev`, unpacked aside."""
    with tempfile.TemporaryDirectory(prefix="devserver-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        path = Path(tmp) / "archive.tar"
        path.write_bytes(archive)
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / "src"


def start(args: list[str], src: Path, url: str, log: Path, apiserver: int, tree: str) -> Start:
    """The operator from `src`, timed until /readyz answers and until it has drained; killed
    (SIGKILL) SETTLE s later."""
    env = {**os.environ, "PYTHONPATH": str(src)}  # ahead of the installed (editable) package
    before, began = _cpu(apiserver), time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out)
    sampler = None
    try:
        sampler = _sampled(process.pid) if tree == "this tree" else None
        while not _ready(url):
            assert process.poll() is None, f"the operator from {src} exited; see {log}"
            assert time.monotonic() - began < 300, f"the operator from {src} never became ready"
            time.sleep(0.05)
        ready = time.monotonic() - began
        cpu, apiserver_cpu, rss = _cpu(process.pid), _cpu(apiserver) - before, rss_mib(process.pid)
        while work_left(url + "/metrics") > 0:
            assert process.poll() is None, f"the operator from {src} exited; see {log}"
            assert time.monotonic() - began < 300, f"the operator from {src} never drained"
            time.sleep(0.25)  # a scrape costs the operator ~ms: not too often
        drained = time.monotonic() - began
        _stopped(sampler)
        found = Start(tree, ready, cpu, apiserver_cpu, rss, drained, _cpu(process.pid))
        time.sleep(SETTLE)
        return found
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        _stopped(sampler)


def _stopped(sampler: subprocess.Popen[bytes] | None) -> None:
    """py-spy asked to write its file and exit (SIGINT); killed if it has not within 30 s."""
    if sampler is None or sampler.poll() is not None:
        return
    sampler.send_signal(signal.SIGINT)
    try:
        sampler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.wait()


def _sampled(pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy recording `pid` into DEVSERVER_BENCH_PYSPY, when asked for and installed."""
    spy = shutil.which("py-spy") if PYSPY else None
    if spy is None:
        return None
    out = Path(PYSPY)
    out.mkdir(parents=True, exist_ok=True)
    time.sleep(0.2)  # the interpreter is loaded: py-spy can read its version
    target = out / f"start-{len(list(out.glob('start-*.txt')))}.txt"
    argv = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "-o", str(target)]
    try:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None  # no profile, the same figures


def _ready(url: str) -> bool:
    try:
        return fetch(url + "/readyz", timeout=1)[0] == 200
    except OSError:
        return False


def test_report_restarts_beside_a_baseline() -> None:
    with bench_control_plane() as cluster, baseline_source(BASELINE) as base:
        url = cluster.run_operator("--no-leader-elect", kubeconfig=cluster.kubeconfig)
        process = cluster.process("devserver-operator")
        assert process.pid is not None
        made = asyncio.run(_servers_made(cluster, process.pid))
        assert made == SERVERS, f"only {made} of {SERVERS} DevServers became Ready"
        args = Path(f"/proc/{process.pid}/cmdline").read_text().split("\0")[:-1]
        process.kill()
        apiserver = cluster.process("kube-apiserver").pid
        assert apiserver is not None
        log = cluster.layout.logs / "restart-ab-operator.log"
        trees = (("baseline", base), ("this tree", REPO / "src"))
        starts = [
            start(args, src, url, log, apiserver, tree)
            for _ in range(ROUNDS)
            for tree, src in trees
        ]
    lines = [
        f"kill -9 and start, {SERVERS:,} servers: the operator from {BASELINE} (baseline) and"
        f" from this tree, in turn, {ROUNDS} round(s)",
        "  tree        ready s   CPU s  API server CPU s  RSS MiB  drained s   CPU s",
        *(
            f"  {s.tree:<10} {s.ready_s:7.2f} {s.cpu_s:7.2f} {s.apiserver_cpu_s:17.2f}"
            f" {s.rss_mib:8.1f} {s.drained_s:10.2f} {s.drained_cpu_s:7.2f}"
            for s in starts
        ),
    ]
    for tree, _ in trees:
        mine = [s for s in starts if s.tree == tree]
        lines.append(
            f"  median {tree:<10} ready {statistics.median(s.ready_s for s in mine):.2f} s,"
            f" CPU {statistics.median(s.cpu_s for s in mine):.2f} s,"
            f" API server {statistics.median(s.apiserver_cpu_s for s in mine):.2f} s,"
            f" RSS {statistics.median(s.rss_mib for s in mine):.1f} MiB;"
            f" drained {statistics.median(s.drained_s for s in mine):.2f} s,"
            f" CPU {statistics.median(s.drained_cpu_s for s in mine):.2f} s"
        )
    text = "\n".join([provenance("tests/bench/test_restart_ab.py"), "", *lines]) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"restart-ab-{SERVERS}.txt").write_text(text)
    print("\n" + text)  # noqa: T201


async def _servers_made(cluster: LocalControlPlane, pid: int) -> int:
    """The scale bench's servers, made by this tree's operator (`pid`): how many became Ready."""
    kube = await new_client(str(cluster.kubeconfig))
    try:
        return (await run_operator(kube, cluster, pid)).count
    finally:
        await kube.close()
