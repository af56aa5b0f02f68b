"""The manager: readiness, health, graceful drain, leader election (items 24-27)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import OPERATOR
from devserver.api.resources import CONFIGMAPS, LEASES, Resource
from devserver.client import KubeClient
from devserver.controller import CacheSyncTimeoutError, Controller, Result
from devserver.manager import Manager, Settings
from devserver.manager.leader import LeadershipLostError
from devserver_harness.controlplane import OPERATOR_NAMESPACE, LocalControlPlane
from devserver_harness.http import fetch
from devserver_harness.operator import OperatorProcess
from devserver_harness.pytest_plugin import wait_for
from tests.integration.core.conftest import Proxied, configmap

pytestmark = pytest.mark.integration


@dataclass
class Slow:
    seconds: float
    started: list[ObjectKey] = field(default_factory=list)
    finished: list[ObjectKey] = field(default_factory=list)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        self.started.append(key)
        await asyncio.sleep(self.seconds)
        self.finished.append(key)
        return None


def _manager(client: KubeClient, namespace: str, reconciler: Slow, **settings: object) -> Manager:
    options: dict[str, object] = {"leader_election": False, **settings}
    manager = Manager(client, Settings(http_host="127.0.0.1", http_port=0, **options))  # type: ignore[arg-type]
    controller = Controller(f"mgr-{namespace}-{uuid.uuid4().hex[:4]}", reconciler)
    controller.watch(manager.informers.informer(CONFIGMAPS, namespace=namespace))
    manager.add(controller)
    return manager


async def test_sigterm_stops_intake_and_finishes_in_flight_reconciles(
    kube: KubeClient, namespace: str
) -> None:
    slow = Slow(2.0)
    manager = _manager(kube, namespace, slow)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    await wait_for(lambda: slow.started, timeout=10, what="a reconcile to start")
    await kube.create(CONFIGMAPS, configmap("late", namespace), namespace)
    stop.set()  # what the SIGTERM handler does
    started = time.monotonic()
    await asyncio.wait_for(task, 30)
    assert slow.finished == slow.started, "in-flight reconciles finished"
    assert time.monotonic() - started < 5


# a kind the API server does not serve: its list answers 404, so its cache never syncs
GHOSTS = Resource("ghosts.devserver.example", "v1", "ghosts", "Ghost", True, KubeObject)


async def test_no_reconcile_before_every_cache_syncs_and_one_that_never_does_fails_the_start(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(CONFIGMAPS, configmap("early", namespace), namespace)
    slow = Slow(0)
    manager = _manager(
        kube, namespace, slow, sync_timeout=8.0, leader_election=True, lease_namespace=namespace
    )
    manager.informers.informer(GHOSTS, namespace=namespace)  # read by no controller
    controller = manager.controllers[0]
    task = asyncio.create_task(manager.run(asyncio.Event()))
    try:
        await wait_for(lambda: controller.synced, timeout=8, what="the controller's own cache")
        # the Lease is won while a cache is still empty: a takeover's wait overlaps the lists
        await wait_for(manager.leading.is_set, timeout=8, what="the Lease")
        with pytest.raises(CacheSyncTimeoutError, match=r"\['ghosts[^,]*'\] did not sync"):
            await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert slow.started == [], "a reconcile ran while a cache of the operator was still empty"
    assert not manager.readyz()[0]
    lease = await kube.get(LEASES, OPERATOR, namespace)
    assert lease.extra["spec"].get("holderIdentity") is None, "a failed start hands it back"


async def test_ready_once_synced_and_unhealthy_when_a_watch_loop_dies(
    kube: KubeClient, namespace: str
) -> None:
    manager = _manager(kube, namespace, Slow(0))
    controller = manager.controllers[0]
    depth = REGISTRY.get_sample_value(
        "workqueue_depth", {"name": controller.name, "controller": controller.name}
    )
    assert depth == 0, "metrics exist, at zero, before any traffic"
    assert manager.readyz()[0] is False
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await wait_for(lambda: manager.readyz()[0], timeout=10, what="readiness")
        assert manager.healthz() == (True, "ok")
        informer = next(iter(manager.informers))
        informer._tasks[0].cancel()  # a watch task dies (a bug, an unexpected exception)
        await asyncio.sleep(0.1)
        healthy, detail = manager.healthz()
        assert not healthy
        assert "watch loop ended" in detail
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_losing_the_lease_stops_controllers_before_the_renew_deadline(
    proxied: Proxied, namespace: str
) -> None:
    slow = Slow(0)
    manager = _manager(
        proxied.client,
        namespace,
        slow,
        leader_election=True,
        lease_namespace=namespace,
        lease_name="lost",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    await wait_for(lambda: manager.leading.is_set(), timeout=15, what="leadership")
    await proxied.proxy.cut()  # the API server is unreachable: the lease cannot be renewed
    cut_at = time.monotonic()
    with pytest.raises(LeadershipLostError):
        await asyncio.wait_for(task, 20)
    assert time.monotonic() - cut_at < 10, "deposed before the renew deadline elapsed"
    assert not manager.leading.is_set()


async def test_one_leader_and_a_fast_takeover_after_kill_9(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    lease = f"election-{uuid.uuid4().hex[:6]}"
    args = (f"--lease-name={lease}", f"--lease-namespace={OPERATOR_NAMESPACE}")
    first = OperatorProcess(control_plane.operator_kubeconfig, args)
    second = OperatorProcess(control_plane.operator_kubeconfig, args)
    first.start()
    second.start()
    try:
        roles = await wait_for(lambda: _roles(first, second), timeout=20, what="one leader")
        leader, standby = (first, second) if roles[0] == "leader" else (second, first)
        assert sorted(roles) == ["leader", "standby"]

        os.kill(leader.pid, signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(lambda: _leads(standby), timeout=25, what="the standby to take over")
        assert time.monotonic() - killed < 20
    finally:
        first.stop()
        second.stop()


async def _roles(*operators: OperatorProcess) -> list[str] | None:
    roles = []
    for op in operators:
        _, body = await asyncio.to_thread(fetch, op.url + "/readyz", timeout=2)
        text = body.decode()
        roles.append("leader" if "leader" in text else "standby" if "standby" in text else "")
    return roles if sorted(roles) == ["leader", "standby"] else None


async def _leads(op: OperatorProcess) -> bool:
    _, body = await asyncio.to_thread(fetch, op.url + "/readyz", timeout=2)
    return b"leader" in body
