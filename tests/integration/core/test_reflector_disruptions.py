"""Reflector behaviour through outages we cause on purpose: on a cluster of this module's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio
import pytest

from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient
from devserver.informers import Change
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.pytest_plugin import fresh_control_plane
from tests.integration.core.conftest import Proxied, configmap
from tests.integration.core.test_reflector import _queries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def control_plane() -> Iterator[LocalControlPlane]:
    yield from fresh_control_plane()


async def test_paginated_relist_after_gone_delivers_deletes_that_happened_meanwhile(
    proxied: Proxied,
    kube: KubeClient,
    control_plane: LocalControlPlane,
    namespace: str,
    make_informer,
) -> None:
    for i in range(12):
        await kube.create(CONFIGMAPS, configmap(f"keep{i}", namespace), namespace)
    for i in range(3):
        await kube.create(CONFIGMAPS, configmap(f"doomed{i}", namespace), namespace)
    informer, recorder = make_informer(proxied.client, page_size=5)
    await asyncio.wait_for(informer.wait_synced(), 10)

    await proxied.proxy.cut()  # the operator is cut off ...
    for i in range(3):
        await kube.delete(CONFIGMAPS, f"doomed{i}", namespace)
    await kube.create(CONFIGMAPS, configmap("born", namespace), namespace)
    await anyio.to_thread.run_sync(control_plane.compact_etcd)
    await anyio.to_thread.run_sync(control_plane.restart_apiserver)  # ... and its RV is gone
    await proxied.proxy.restore()

    await recorder.wait_for(Change.DELETED, "doomed2", timeout=60)
    await recorder.wait_for(Change.ADDED, "born")
    assert informer.reflector.lists == 2, "exactly one relist"
    assert sorted(recorder.names(Change.DELETED)) == ["doomed0", "doomed1", "doomed2"]
    fresh = await kube.list_page(CONFIGMAPS, namespace, limit=500)
    assert {o.metadata.name: o.metadata.resource_version for o in fresh.items} == {
        o.metadata.name: o.metadata.resource_version for o in informer.store.objects()
    }
    relist = _queries(control_plane, namespace)
    consistent = [q for q in relist if q.get("resourceVersion", [""]) == [""] or "continue" in q]
    assert any("continue" in q for q in consistent), "the relist is paginated"


async def test_apiserver_restart_loses_no_event_and_repeats_none(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str, make_informer
) -> None:
    for i in range(5):
        await kube.create(CONFIGMAPS, configmap(f"r{i}", namespace), namespace)
    informer, recorder = make_informer(kube)
    await asyncio.wait_for(informer.wait_synced(), 10)
    await asyncio.sleep(0.2)
    before = len(recorder.notes)

    await anyio.to_thread.run_sync(control_plane.restart_apiserver)
    await kube.patch(CONFIGMAPS, "r0", {"data": {"v": "2"}}, namespace)
    await kube.create(CONFIGMAPS, configmap("r5", namespace), namespace)
    await kube.delete(CONFIGMAPS, "r1", namespace)
    await recorder.wait_for(Change.DELETED, "r1", timeout=60)
    await recorder.wait_for(Change.ADDED, "r5")
    await recorder.wait_for(Change.UPDATED, "r0")
    await asyncio.sleep(1)

    after = [(n.change, n.obj.metadata.name) for n in recorder.notes[before:]]
    assert sorted(after) == sorted(
        [(Change.UPDATED, "r0"), (Change.ADDED, "r5"), (Change.DELETED, "r1")]
    ), "each change exactly once; unchanged objects are not re-delivered after a relist"
    fresh = await kube.list_page(CONFIGMAPS, namespace)
    assert sorted(o.metadata.name for o in fresh.items) == sorted(
        o.metadata.name for o in informer.store.objects()
    )
