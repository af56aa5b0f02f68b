"""Store, handlers and resync against the real API server (items 11-14)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from devserver.api.meta import ObjectKey
from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient
from devserver.informers import OWNED, OWNER_UID_INDEX, Change, Informer, Notification
from tests.integration.core.conftest import Recorder, configmap

pytestmark = pytest.mark.integration


async def test_synced_only_after_the_full_first_list(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    for i in range(30):
        await kube.create(CONFIGMAPS, configmap(f"c{i}", namespace), namespace)
    informer, recorder = make_informer(kube)
    assert not informer.has_synced
    await asyncio.wait_for(informer.wait_synced(), 10)
    assert len(informer.store) == 31  # and kube-root-ca.crt
    await asyncio.sleep(0.1)
    assert len(recorder.names(Change.ADDED)) == 31


async def test_owner_index_follows_adds_updates_and_deletes(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    owner = await kube.create(CONFIGMAPS, configmap("owner", namespace), namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    informer, recorder = make_informer(kube, indexers=OWNED)
    await asyncio.wait_for(informer.wait_synced(), 10)
    await kube.create(CONFIGMAPS, configmap("kid", namespace, ownerReferences=[ref]), namespace)
    await recorder.wait_for(Change.ADDED, "kid")
    owned = informer.store.by_index(OWNER_UID_INDEX, owner.metadata.uid)
    assert [o.metadata.name for o in owned] == ["kid"]

    await kube.patch(CONFIGMAPS, "kid", {"metadata": {"ownerReferences": None}}, namespace)
    await recorder.wait_for(Change.UPDATED, "kid")
    assert informer.store.by_index(OWNER_UID_INDEX, owner.metadata.uid) == []

    await kube.patch(CONFIGMAPS, "kid", {"metadata": {"ownerReferences": [ref]}}, namespace)
    await asyncio.sleep(0.5)
    await kube.delete(CONFIGMAPS, "kid", namespace)
    await recorder.wait_for(Change.DELETED, "kid")
    assert informer.store.by_index(OWNER_UID_INDEX, owner.metadata.uid) == []
    assert informer.store.get(ObjectKey(namespace, "kid")) is None


async def test_a_slow_handler_does_not_delay_the_others(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    informer, fast = make_informer(kube)
    slow_seen: list[str] = []

    async def slow(note: Notification[object]) -> None:
        await asyncio.sleep(0.5)
        slow_seen.append(note.obj.metadata.name)  # type: ignore[attr-defined]

    informer.add_handler("slow", slow)
    await asyncio.wait_for(informer.wait_synced(), 10)
    for i in range(10):
        await kube.create(CONFIGMAPS, configmap(f"e{i}", namespace), namespace)
    await fast.wait_for(Change.ADDED, "e9", timeout=5)
    assert len(slow_seen) < 5, "the slow handler is still behind"
    backlog = REGISTRY.get_sample_value(
        "devserver_handler_backlog", {"resource": informer.name, "handler": "slow"}
    )
    assert backlog is not None
    assert backlog >= 3, "its backlog is visible"


async def test_resync_redelivers_from_the_cache_without_api_calls(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    await kube.create(CONFIGMAPS, configmap("r", namespace), namespace)
    informer, recorder = make_informer(kube, resync_period=1.0)
    await asyncio.wait_for(informer.wait_synced(), 10)
    sent = kube.requests_sent
    await recorder.wait_for(Change.UPDATED, "r", timeout=5)
    resynced = [n for n in recorder.notes if n.change is Change.UPDATED]
    assert resynced[0].old is resynced[0].obj, "a resync is an update from the object to itself"
    assert kube.requests_sent == sent


async def test_handlers_added_late_get_the_cache_first(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    await kube.create(CONFIGMAPS, configmap("early", namespace), namespace)
    informer, _ = make_informer(kube)
    await asyncio.wait_for(informer.wait_synced(), 10)
    late = Recorder()
    informer.add_handler("late", late)
    await late.wait_for(Change.ADDED, "early", timeout=5)
    assert isinstance(informer, Informer)
