"""Controllers on the real API server: owners, coalescing, outcomes, quiet when converged."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import CONFIGMAPS, DEPLOYMENTS, Resource
from devserver.client import ApiError, KubeClient
from devserver.controller import CacheSyncTimeoutError, Controller, Result, TerminalError
from devserver.controller.predicates import generation_changed
from devserver.informers import InformerFactory
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.pytest_plugin import wait_for
from tests.integration.core.conftest import USER_AGENT, configmap
from tests.integration.core.demo import mirror_controller

pytestmark = pytest.mark.integration


@dataclass
class Running:
    factory: InformerFactory
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def run(self, controller: Controller) -> None:
        self.factory.start()
        self.tasks.append(asyncio.create_task(controller.run(self.stop)))


@pytest_asyncio.fixture
async def running(kube: KubeClient) -> AsyncIterator[Running]:
    state = Running(InformerFactory(kube))
    yield state
    state.stop.set()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    await state.factory.stop()


async def _child(kube: KubeClient, namespace: str, name: str) -> KubeObject | None:
    try:
        return await kube.get(CONFIGMAPS, f"{name}-child", namespace)
    except ApiError as error:
        if error.not_found:
            return None
        raise


async def _until(probe, timeout: float = 20):  # type: ignore[no-untyped-def]
    return await wait_for(probe, timeout=timeout, what="the controller to converge")


def parent(name: str, namespace: str, value: str = "1") -> dict:  # type: ignore[type-arg]
    return configmap(name, namespace, value, labels={"demo": "parent"})


async def test_child_events_enqueue_the_owner(
    kube: KubeClient, namespace: str, running: Running
) -> None:
    controller, _ = mirror_controller(running.factory, kube, namespace, name=f"own-{namespace}")
    running.run(controller)
    await kube.create(CONFIGMAPS, parent("p", namespace), namespace)
    child = await _until(lambda: _child(kube, namespace, "p"))
    assert child.metadata.owner_references[0].name == "p"
    assert child.metadata.owner_references[0].controller is True

    await kube.delete(CONFIGMAPS, "p-child", namespace)  # someone deletes the child ...

    async def recreated() -> KubeObject | None:
        current = await _child(kube, namespace, "p")
        return current if current and current.metadata.uid != child.metadata.uid else None

    await _until(recreated)  # ... and the owner's reconcile puts it back


async def test_fifty_rapid_updates_coalesce_and_never_overlap(
    kube: KubeClient, namespace: str, running: Running
) -> None:
    controller, reconciler = mirror_controller(
        running.factory, kube, namespace, workers=4, delay=0.2, name=f"burst-{namespace}"
    )
    running.run(controller)
    await kube.create(CONFIGMAPS, parent("hot", namespace, "0"), namespace)
    for i in range(1, 51):
        await kube.patch(CONFIGMAPS, "hot", {"data": {"v": str(i)}}, namespace)

    async def final() -> bool:
        child = await _child(kube, namespace, "hot")
        return bool(child and child.extra["data"]["v"] == "50")

    await _until(final)
    calls = reconciler.calls[ObjectKey(namespace, "hot")]
    assert calls < 25, f"50 updates must coalesce, got {calls} reconciles"
    assert reconciler.max_overlap == 1, "the same key is never reconciled twice at once"


async def test_converged_objects_stay_quiet_for_a_minute(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str, running: Running
) -> None:
    """No hot loop: no reconciles, no writes, no API requests besides the open watches."""
    controller, reconciler = mirror_controller(
        running.factory, kube, namespace, name=f"quiet-{namespace}"
    )
    running.run(controller)
    for name in ("a", "b", "c"):
        await kube.create(CONFIGMAPS, parent(name, namespace), namespace)
    for name in ("a", "b", "c"):
        await _until(lambda n=name: _child(kube, namespace, n))
    await asyncio.sleep(2)  # let the children's own events settle
    versions = {n: (await _child(kube, namespace, n)).metadata.resource_version for n in "abc"}
    calls, sent = sum(reconciler.calls.values()), kube.requests_sent
    audited = len(control_plane.audit_events(user_agent=USER_AGENT, namespace=namespace))

    await asyncio.sleep(60)

    assert sum(reconciler.calls.values()) == calls, "no reconciles without changes"
    after = {n: (await _child(kube, namespace, n)).metadata.resource_version for n in "abc"}
    assert after == versions, "no writes without changes"
    new_events = control_plane.audit_events(user_agent=USER_AGENT, namespace=namespace)[audited:]
    assert [e["verb"] for e in new_events if e["verb"] != "get"] == []
    assert kube.requests_sent - sent == 3  # the three reads just above, nothing else


async def test_reapplying_the_same_intent_changes_nothing(
    kube: KubeClient, namespace: str, running: Running
) -> None:
    controller, reconciler = mirror_controller(
        running.factory, kube, namespace, name=f"ssa-{namespace}"
    )
    running.run(controller)
    await kube.create(CONFIGMAPS, parent("p", namespace), namespace)
    child = await _until(lambda: _child(kube, namespace, "p"))
    writes = reconciler.writes
    # a change to the parent that does not change the child's intent: reconciled, applied ...
    await kube.patch(CONFIGMAPS, "p", {"metadata": {"annotations": {"touch": "1"}}}, namespace)
    await _until(lambda: reconciler.writes > writes)
    # ... and the apply was a no-op on the server
    again = await _child(kube, namespace, "p")
    assert again is not None
    assert again.metadata.resource_version == child.metadata.resource_version


@dataclass
class Scripted:
    """A reconciler whose outcome per key is scripted by the test."""

    calls: dict[str, list[float]] = field(default_factory=dict)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        seen = self.calls.setdefault(key.name, [])
        seen.append(asyncio.get_running_loop().time())
        if key.name == "flaky" and len(seen) <= 3:
            raise RuntimeError("transient")
        if key.name == "broken":
            raise TerminalError("cannot be reconciled as it is")
        if key.name == "periodic" and len(seen) < 3:
            return Result(requeue_after=0.5)
        return None


def _metric(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_reconcile_outcomes_map_to_queue_actions(
    kube: KubeClient, namespace: str, running: Running
) -> None:
    name = f"outcomes-{namespace}"
    informer = running.factory.informer(CONFIGMAPS, namespace=namespace)
    script = Scripted()
    controller = Controller(name, script, workers=2)
    controller.watch(informer)
    assert _metric("controller_runtime_reconcile_total", controller=name, result="error") == 0
    running.run(controller)
    for key in ("flaky", "broken", "periodic"):
        await kube.create(CONFIGMAPS, configmap(key, namespace), namespace)

    await _until(lambda: len(script.calls.get("flaky", [])) == 4)
    await _until(lambda: len(script.calls.get("periodic", [])) == 3)
    await asyncio.sleep(1)
    # (the backoff curve itself is unit-tested with a fake clock)
    assert controller.queue.num_requeues(ObjectKey(namespace, "flaky")) == 0, "success forgets"
    assert len(script.calls["broken"]) == 1, "a terminal error is not retried"
    periodic = script.calls["periodic"]
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(periodic))
    assert _metric("controller_runtime_terminal_reconcile_errors_total", controller=name) == 1
    assert _metric("controller_runtime_reconcile_errors_total", controller=name) == 4
    assert _metric("workqueue_retries_total", name=name, controller=name) >= 3


async def test_a_cache_that_never_syncs_fails_start_up_loudly(kube: KubeClient) -> None:
    missing = Resource("nothing.devserver.io", "v1", "things", "Thing", True, KubeObject)
    factory = InformerFactory(kube)
    controller = Controller("never-synced", Scripted(), sync_timeout=2)
    controller.watch(factory.informer(missing))
    factory.start()
    try:
        with pytest.raises(CacheSyncTimeoutError, match="did not sync within 2 s"):
            await controller.run(asyncio.Event())
    finally:
        await factory.stop()


async def test_generation_filter_skips_status_only_updates(
    kube: KubeClient, namespace: str, running: Running
) -> None:
    informer = running.factory.informer(DEPLOYMENTS, namespace=namespace)
    script = Scripted()
    controller = Controller(f"gen-{namespace}", script)
    controller.watch(informer, generation_changed)
    running.run(controller)
    labels = {"app": "g"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "g", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    await kube.create(DEPLOYMENTS, deployment, namespace)

    async def available() -> bool:
        current = await kube.get(DEPLOYMENTS, "g", namespace)
        return bool((current.extra.get("status") or {}).get("availableReplicas"))

    await _until(available, timeout=30)  # the deployment controller wrote status several times
    assert len(script.calls["g"]) == 1
    await kube.patch(DEPLOYMENTS, "g", {"spec": {"replicas": 2}}, namespace)
    await _until(lambda: len(script.calls["g"]) == 2)
