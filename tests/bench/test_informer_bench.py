"""Informer and workqueue benchmarks, each beside a baseline measured in the same run.

Reports, not pass/fail timings (`nox -s bench`; `-s` shows the tables). The only assertions
guard the figures: every informer must hold all 10,000 seeded ConfigMaps (+ kube-root-ca.crt),
so a broken sync cannot pass for a fast one.

1. initial sync of 10k ConfigMaps: Informer vs a bare paginated LIST + json.loads;
2. memory: RSS of a fresh process, and tracemalloc bytes per cached object, models vs dicts;
3. workqueue throughput: RateLimitingQueue (without and with metrics) vs asyncio.Queue;
4. API requests during a minute of idleness with a synced informer (expected: none).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devserver.api.meta import KubeObject, ObjectList
from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient, new_client
from devserver.informers import Informer, Store
from devserver.observability.metrics import QueueMetrics
from devserver.workqueue import RateLimitingQueue, ShutDown
from devserver_harness.controlplane import LocalControlPlane
from tests.bench.conftest import SEEDED, Seeded
from tests.bench.kubebench import USER_AGENT, bare_list, synced_informer
from tests.bench.scale import scaled, seconds

pytestmark = pytest.mark.timeout(1800)  # seeding, 12 syncs and a 60 s idle window

ROUNDS = scaled(3)
GOAL = 1.3  # the target: informer sync within 1.3x the bare LIST
REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def report(lines: list[str]) -> None:
    print("\n" + "\n".join(lines))  # noqa: T201


@pytest_asyncio.fixture
async def kube(control_plane: LocalControlPlane) -> AsyncIterator[KubeClient]:
    client = await new_client(str(control_plane.kubeconfig))
    yield client
    await client.close()


async def list_counters(client: KubeClient) -> Counter[str]:
    """ConfigMap LISTs the apiserver served from its watch cache vs sent to etcd, so far."""
    counts: Counter[str] = Counter()
    for line in (await client.request("GET", "/metrics")).decode().splitlines():
        if 'resource="configmaps"' not in line:
            continue
        if line.startswith("apiserver_cache_list_total{"):
            counts["cache"] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("etcd_requests_total{") and 'operation="list"' in line:
            counts["etcd"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


# ------------------------------------------------------------------------- 1. initial sync


async def test_report_initial_sync(configmaps_10k: Seeded, kube: KubeClient) -> None:
    seeded = configmaps_10k
    ns, expected = seeded.namespace, seeded.expected
    notes: dict[str, str] = {}

    def baseline(resource_version: str | None) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            started = time.perf_counter()
            items, pages = await bare_list(kube, ns, resource_version)
            seconds = time.perf_counter() - started
            assert len(items) == expected
            notes[f"baseline {resource_version}"] = f"{pages} page(s)"
            return seconds

        return run

    def informer(streaming_list: bool) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            started = time.perf_counter()
            synced = await synced_informer(kube, ns, streaming_list=streaming_list)
            seconds = time.perf_counter() - started
            streamed = synced.reflector._streaming  # False once it fell back to LIST
            await synced.stop()
            assert len(synced.store) == expected, "the informer did not cache every ConfigMap"
            if streaming_list:
                notes["streaming"] = "sendInitialEvents" if streamed else "fell back to LIST"
            return seconds

        return run

    variants = {
        "baseline: LIST rv unset, limit 500, json.loads": baseline(None),
        "baseline: LIST rv=0, limit 500, json.loads": baseline("0"),
        "Informer (LIST rv=0, page_size 500)": informer(False),
        "Informer, streaming_list=True": informer(True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    lists: dict[str, Counter[str]] = {name: Counter() for name in variants}
    await bare_list(kube, ns, "0")  # warm the connection and the apiserver's encoders
    for _ in range(ROUNDS):  # interleaved, so drift on the shared 2-core machine hits all rows
        for name, run in variants.items():
            gc.collect()
            counters = await list_counters(kube)
            times[name].append(await run())
            lists[name] += (await list_counters(kube)) - counters

    unset = statistics.median(times["baseline: LIST rv unset, limit 500, json.loads"])
    same = statistics.median(times["baseline: LIST rv=0, limit 500, json.loads"])
    pages = {None: notes["baseline None"], "0": notes["baseline 0"]}
    lines = [
        f"initial sync of {expected:,} ConfigMaps ({SEEDED:,} + kube-root-ca.crt) in {ns}; seeding "
        f"took {seeded.seed_seconds:.1f} s; {ROUNDS} interleaved rounds, seconds:",
        f"  {'variant':<48} {'median':>7} {'min':>7} {'max':>7} {'/rv=0':>6} {'/unset':>6}"
        "  lists/run cache+etcd",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        served = f"{lists[name]['cache'] / ROUNDS:.0f}+{lists[name]['etcd'] / ROUNDS:.0f}"
        lines.append(
            f"  {name:<48} {median:7.3f} {min(values):7.3f} {max(values):7.3f}"
            f" {median / same:5.2f}x {median / unset:5.2f}x  {served:>9}"
        )
    informer_median = statistics.median(times["Informer (LIST rv=0, page_size 500)"])
    ratio = informer_median / same
    lines += [
        f"  baseline pages: rv unset {pages[None]}, rv=0 {pages['0']}; "
        f"streaming row used {notes['streaming']}",
        f"  informer / baseline, same query (rv=0): {ratio:.2f}x "
        f"({'within' if ratio <= GOAL else 'ABOVE'} the {GOAL}x goal); "
        f"vs rv unset: {informer_median / unset:.2f}x",
    ]
    report(lines)


# ------------------------------------------------------------------------- 2. memory


async def raw_pages(client: KubeClient, namespace: str) -> list[bytes]:
    """The informer's first list (rv=0, limit 500) as response bodies, unparsed."""
    pages: list[bytes] = []
    token = ""
    while True:
        query = [("limit", "500"), ("continue", token) if token else ("resourceVersion", "0")]
        pages.append(await client.request("GET", CONFIGMAPS.path(namespace), query=query))
        token = json.loads(pages[-1])["metadata"].get("continue", "")
        if not token:
            return pages


async def traced(build: Callable[[], Awaitable[Any]]) -> tuple[Any, int, int]:
    """Run `build`; return what it built, the bytes still allocated after it, and its peak."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        start_current = tracemalloc.get_traced_memory()[0]
        held = await build()
        gc.collect()
        peak = tracemalloc.get_traced_memory()[1] - start_current
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return held, retained, peak


async def rss_in_fresh_process(kubeconfig: Path, namespace: str, mode: str) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.kubebench",
        "rss",
        str(kubeconfig),
        namespace,
        mode,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_report_memory(
    configmaps_10k: Seeded, kube: KubeClient, control_plane: LocalControlPlane
) -> None:
    ns, expected = configmaps_10k.namespace, configmaps_10k.expected

    rss = {
        mode: await rss_in_fresh_process(control_plane.kubeconfig, ns, mode)
        for mode in ("informer", "dicts")
    }

    model = ObjectList[KubeObject]  # what list_page parses a ConfigMap page into
    model.model_validate_json(b'{"items": [{}]}')  # build pydantic's schema outside the trace
    pages = await raw_pages(kube, ns)

    async def informer() -> Any:
        return await synced_informer(kube, ns)

    async def models_and_store() -> Store[KubeObject]:
        store: Store[KubeObject] = Store()
        items = [obj for page in pages for obj in model.model_validate_json(page).items]
        store.replace(items)
        return store

    async def baseline() -> list[dict[str, Any]]:
        items, _ = await bare_list(kube, ns, "0")
        return items

    async def dicts() -> list[dict[str, Any]]:
        return [obj for page in pages for obj in json.loads(page)["items"]]

    rows: dict[str, tuple[int, int]] = {}
    for name, build in {
        "Informer: LIST rv=0 -> models -> Store (e2e)": informer,
        "models + Store, from the fetched bytes": models_and_store,
        "baseline: LIST rv=0 -> json.loads dicts (e2e)": baseline,
        "json.loads dicts, from the fetched bytes": dicts,
    }.items():
        held, retained, peak = await traced(build)
        if isinstance(held, Informer):
            await held.stop()
        cached = held.store if isinstance(held, Informer) else held
        assert len(cached) == expected, f"{name}: not every ConfigMap was kept"
        rows[name] = (retained, peak)
        del held, cached

    wire = sum(len(page) for page in pages) / expected
    dict_bytes = rows["json.loads dicts, from the fetched bytes"][0]
    lines = [
        f"memory for {expected:,} ConfigMaps (JSON on the wire: {wire:.0f} B/object, "
        "managedFields included; the models drop them):",
        "  RSS of a fresh process (VmRSS before -> after holding them; VmHWM = peak), MiB:",
    ]
    for mode, figures in rss.items():
        assert figures["count"] == expected
        delta = (figures["after_kib"] - figures["before_kib"]) * 1024
        lines.append(
            f"    {'Informer (models in Store)' if mode == 'informer' else 'baseline dicts':<28}"
            f" {figures['before_kib'] / 1024:7.1f} -> {figures['after_kib'] / 1024:7.1f}"
            f"  (+{delta / MIB:6.1f}, {delta / expected:6.0f} B/object)"
            f"  peak {figures['peak_kib'] / 1024:7.1f}"
        )
    lines += [
        "  tracemalloc, retained after gc (snapshot diff) and peak during the build:",
        f"    {'what':<48} {'B/object':>9} {'MiB':>7} {'peak MiB':>9} {'/dicts':>7}",
    ]
    for name, (retained, peak) in rows.items():
        lines.append(
            f"    {name:<48} {retained / expected:9.0f} {retained / MIB:7.1f}"
            f" {peak / MIB:9.1f} {retained / dict_bytes:6.2f}x"
        )
    report(lines)


# ------------------------------------------------------------------------- 3. workqueue

ADDS = scaled(100_000, 1_000)
KEYS = scaled(10_000, 100)
WORKERS = 4
YIELD_EVERY = 100  # the producer lets workers run after every 100 adds, as an event burst would


async def through_asyncio_queue() -> tuple[float, int]:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    handed = 0

    async def worker() -> None:
        nonlocal handed
        while True:
            key = await queue.get()
            queue.task_done()
            if key is None:
                return
            handed += 1

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    for i in range(ADDS):
        queue.put_nowait(i % KEYS)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return time.perf_counter() - started, handed


async def through_workqueue(name: str | None) -> tuple[float, int]:
    queue: RateLimitingQueue[int] = RateLimitingQueue(name=name, metrics=QueueMetrics)
    handed = 0

    async def worker() -> None:
        nonlocal handed
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            queue.done(key)
            handed += 1

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    for i in range(ADDS):
        queue.add(i % KEYS)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    queue.shutdown()  # workers finish what is queued, then get ShutDown
    await asyncio.gather(*workers)
    return time.perf_counter() - started, handed


async def test_report_workqueue_throughput() -> None:
    variants: dict[str, Callable[[], Awaitable[tuple[float, int]]]] = {
        "baseline: asyncio.Queue": through_asyncio_queue,
        "RateLimitingQueue, unnamed (no metrics)": lambda: through_workqueue(None),
        "RateLimitingQueue, named (metrics on)": lambda: through_workqueue("bench-throughput"),
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():
            gc.collect()
            results[name].append(await run())
    base = statistics.median(s for s, _ in results["baseline: asyncio.Queue"])
    lines = [
        f"workqueue: {ADDS:,} adds of {KEYS:,} distinct keys, {WORKERS} workers doing get -> "
        f"done, producer yields every {YIELD_EVERY} adds; median of {ROUNDS}:",
        f"  {'queue':<42} {'seconds':>8} {'adds/s':>10} {'handed out':>11} {'time/base':>10}",
    ]
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        handed = statistics.median(h for _, h in runs)
        lines.append(
            f"  {name:<42} {seconds:8.3f} {ADDS / seconds:10,.0f} {handed:11,.0f}"
            f" {seconds / base:9.2f}x"
        )
    report(lines)


# ------------------------------------------------------------------------- 4. idle traffic

IDLE_SECONDS = seconds(60, 3)


async def test_report_idle_requests(
    configmaps_10k: Seeded, control_plane: LocalControlPlane
) -> None:
    ns, expected = configmaps_10k.namespace, configmaps_10k.expected

    async def audit() -> dict[tuple[str, str], dict[str, Any]]:
        events = await asyncio.to_thread(
            control_plane.audit_events, user_agent=USER_AGENT, namespace=ns
        )
        return {(e["auditID"], e["stage"]): e for e in events}

    async def watch_opened(earlier: dict[tuple[str, str], dict[str, Any]]) -> bool:
        return any(e["verb"] == "watch" for k, e in (await audit()).items() if k not in earlier)

    client = await new_client(str(control_plane.kubeconfig))  # its own: requests_sent is ours
    try:
        earlier = await audit()
        informer = await synced_informer(client, ns)
        try:
            assert len(informer.store) == expected, "the informer did not cache every ConfigMap"
            for _ in range(60):  # the window starts once the watch is open
                if await watch_opened(earlier):
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("the informer's watch did not open within 30 s")
            sent_before, before = client.requests_sent, await audit()
            await asyncio.sleep(IDLE_SECONDS)
            sent_after, after = client.requests_sent, await audit()
            healthy, detail = informer.health(informer.reflector.options.idle_timeout)
            assert len(informer.store) == expected
        finally:
            await informer.stop()
    finally:
        await client.close()

    new = [e for key, e in after.items() if key not in before]
    kinds = Counter(f"{e['verb']}/{e['stage']}" for e in new)
    report(
        [
            f"API traffic of a synced informer on {ns} ({expected:,} objects) "
            f"during {IDLE_SECONDS} s of idleness (expected: 0 and 0):",
            f"  new audit events from {USER_AGENT} in the namespace: {len(new)}"
            + (f" ({dict(kinds)})" if new else ""),
            f"  client.requests_sent delta:                          {sent_after - sent_before}",
            f"  informer health after the window: {detail if not healthy else 'ok'}",
        ]
    )
