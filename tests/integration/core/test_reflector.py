"""Reflector behaviour against the real API server (items 1-10 of the controller-core list)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import CONFIGMAPS, CUSTOM_RESOURCE_DEFINITIONS, Resource
from devserver.client import ApiError, KubeClient
from devserver.informers import Change, Informer, ReflectorOptions
from devserver_harness.controlplane import LocalControlPlane
from tests.integration.core.conftest import USER_AGENT, Proxied, Recorder, configmap

pytestmark = pytest.mark.integration


def _queries(control_plane: LocalControlPlane, namespace: str) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(e["requestURI"]).query)
        for e in control_plane.audit_events(user_agent=USER_AGENT, namespace=namespace)
        if e["objectRef"].get("resource") == "configmaps" and e["verb"] in ("list", "watch")
    ]


def _restarts(name: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "devserver_watch_restarts_total", {"resource": name, "reason": reason}
    )
    return value or 0.0


async def test_first_list_from_cache_then_watch_from_the_lists_rv(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str, make_informer
) -> None:
    for i in range(3):
        await kube.create(CONFIGMAPS, configmap(f"c{i}", namespace), namespace)
    informer, recorder = make_informer(kube)
    await asyncio.wait_for(informer.wait_synced(), 10)
    assert sorted(o.metadata.name for o in informer.store.objects()) == [
        "c0",
        "c1",
        "c2",
        "kube-root-ca.crt",
    ]
    await kube.create(CONFIGMAPS, configmap("live", namespace), namespace)
    await recorder.wait_for(Change.ADDED, "live")

    queries = _queries(control_plane, namespace)
    first_list, first_watch = queries[0], queries[1]
    assert first_list["resourceVersion"] == ["0"]  # served from the watch cache
    assert "watch" not in first_list
    assert first_watch["watch"] == ["true"]
    assert first_watch["allowWatchBookmarks"] == ["true"]
    assert first_watch["resourceVersion"] == [
        informer.reflector.lists and first_watch["resourceVersion"][0]
    ]
    timeout = int(first_watch["timeoutSeconds"][0])
    assert 300 <= timeout < 600


async def test_watch_resumes_from_last_rv_after_a_normal_close_without_listing(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    # the server ends each watch after 4-5 s; a bookmark comes 2 s before that
    informer, recorder = make_informer(kube, watch_timeout=(4, 5))
    await asyncio.wait_for(informer.wait_synced(), 10)
    for i in range(4):
        await kube.create(CONFIGMAPS, configmap(f"x{i}", namespace), namespace)
        await asyncio.sleep(2)
    await recorder.wait_for(Change.ADDED, "x3")
    assert informer.reflector.lists == 1, "normal closes re-watch, they do not relist"
    added = recorder.names(Change.ADDED)
    assert sorted(added) == sorted(set(added)), f"no object is ADDED twice: {added}"
    bookmarks = REGISTRY.get_sample_value(
        "devserver_watch_events_total", {"resource": informer.name, "type": "BOOKMARK"}
    )
    assert bookmarks and bookmarks >= 1
    assert all(n.obj.metadata.name for n in recorder.notes), "bookmarks never reach handlers"


async def test_connection_refused_backs_off_and_rewatches_without_relist(
    proxied: Proxied, kube: KubeClient, namespace: str, make_informer
) -> None:
    informer, recorder = make_informer(proxied.client)
    await asyncio.wait_for(informer.wait_synced(), 10)
    await proxied.proxy.cut()
    await asyncio.sleep(3)  # several refused attempts, backing off
    await kube.create(CONFIGMAPS, configmap("while-away", namespace), namespace)
    await proxied.proxy.restore()
    await recorder.wait_for(Change.ADDED, "while-away", timeout=40)
    assert informer.reflector.lists == 1
    assert _restarts(informer.name, "error") >= 1


async def test_a_stalled_connection_is_detected_within_the_idle_bound(
    proxied: Proxied, kube: KubeClient, namespace: str, make_informer
) -> None:
    idle = 3.0
    informer, recorder = make_informer(proxied.client, idle_timeout=idle)
    await asyncio.wait_for(informer.wait_synced(), 10)
    await kube.create(CONFIGMAPS, configmap("before-stall", namespace), namespace)
    await recorder.wait_for(Change.ADDED, "before-stall", timeout=10)  # the watch is heard
    proxied.proxy.freeze_existing()  # open, silent: a half-open connection
    await kube.create(CONFIGMAPS, configmap("after-stall", namespace), namespace)
    started = time.monotonic()
    await recorder.wait_for(Change.ADDED, "after-stall", timeout=idle + 10)
    assert time.monotonic() - started <= idle + 5
    assert _restarts(informer.name, "stalled") >= 1
    assert informer.reflector.lists == 1, "a stall re-watches from the last RV"


async def test_a_watch_that_never_heard_anything_rewatches_quietly_not_as_a_stall(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    """A resource with no change since the API server started gets no bookmark: its watch is
    silent by design. It re-watches at the idle bound without being called stalled (no
    warning, no alert), and still sees the next change."""
    idle = 2.0
    informer, recorder = make_informer(kube, idle_timeout=idle, label_selector="never=matched")
    await asyncio.wait_for(informer.wait_synced(), 10)
    stalled, silent = _restarts(informer.name, "stalled"), _restarts(informer.name, "silent")
    await asyncio.sleep(idle * 2 + 1)
    assert _restarts(informer.name, "silent") > silent
    assert _restarts(informer.name, "stalled") == stalled
    assert informer.reflector.lists == 1  # a re-watch, not a relist
    body = configmap("finally", namespace)
    body["metadata"]["labels"] = {"never": "matched"}
    await kube.create(CONFIGMAPS, body, namespace)
    await recorder.wait_for(Change.ADDED, "finally", timeout=10)


async def test_silence_past_the_limit_is_a_stall_after_all(
    kube: KubeClient, namespace: str, make_informer
) -> None:
    """The watch cache sends bookmarks once etcd's progress notice arrives: a watch silent for
    longer than that has a broken path behind it, whatever it heard before."""
    informer, _ = make_informer(
        kube, idle_timeout=1.0, silent_limit=3.0, label_selector="never=matched"
    )
    await asyncio.wait_for(informer.wait_synced(), 10)
    stalled = _restarts(informer.name, "stalled")
    await asyncio.sleep(6)
    assert _restarts(informer.name, "stalled") > stalled


async def test_streaming_list_syncs_without_a_list_request(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str, make_informer
) -> None:
    for i in range(3):
        await kube.create(CONFIGMAPS, configmap(f"s{i}", namespace), namespace)
    informer, recorder = make_informer(kube, streaming_list=True)
    await asyncio.wait_for(informer.wait_synced(), 10)
    assert {"s0", "s1", "s2"} <= {o.metadata.name for o in informer.store.objects()}
    await kube.create(CONFIGMAPS, configmap("s3", namespace), namespace)
    await recorder.wait_for(Change.ADDED, "s3")
    queries = _queries(control_plane, namespace)
    assert queries[0]["sendInitialEvents"] == ["true"]
    assert all("watch" in q for q in queries), "no LIST request at all"


BLOBS = Resource("test.devserver.io", "v1", "blobs", "Blob", True, KubeObject)


async def _ensure_blob_crd(kube: KubeClient) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "blobs.test.devserver.io"},
        "spec": {
            "group": "test.devserver.io",
            "scope": "Namespaced",
            "names": {"plural": "blobs", "singular": "blob", "kind": "Blob"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    try:
        await kube.create(CUSTOM_RESOURCE_DEFINITIONS, crd)
    except ApiError as error:
        if not error.conflict:
            raise
    async with asyncio.timeout(30):
        while True:
            current = await kube.get(CUSTOM_RESOURCE_DEFINITIONS, "blobs.test.devserver.io")
            conditions = (current.extra.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.2)


async def test_a_one_and_a_half_mib_object_is_delivered(kube: KubeClient, namespace: str) -> None:
    await _ensure_blob_crd(kube)
    informer = Informer(kube, BLOBS, namespace=namespace)
    recorder = Recorder()
    informer.add_handler("recorder", recorder)
    informer.start()
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        payload = "x" * (1536 * 1024 - 16 * 1024)  # 1.5 MiB with room for metadata
        blob = {
            "apiVersion": "test.devserver.io/v1",
            "kind": "Blob",
            "metadata": {"name": "big", "namespace": namespace},
            "payload": payload,
        }
        await kube.create(BLOBS, blob, namespace)
        await recorder.wait_for(Change.ADDED, "big")
        cached = informer.store.get(ObjectKey(namespace, "big"))
        assert cached is not None
        assert cached.extra["payload"] == payload
    finally:
        await informer.stop()


async def test_label_selector_is_sent_on_list_and_watch(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str, make_informer
) -> None:
    await kube.create(CONFIGMAPS, configmap("mine", namespace, labels={"app": "a"}), namespace)
    await kube.create(CONFIGMAPS, configmap("other", namespace, labels={"app": "b"}), namespace)
    informer, _ = make_informer(kube, label_selector="app=a")
    await asyncio.wait_for(informer.wait_synced(), 10)
    assert [o.metadata.name for o in informer.store.objects()] == ["mine"]
    await asyncio.sleep(0.5)
    for query in _queries(control_plane, namespace):
        assert query["labelSelector"] == ["app=a"]


# a ConfigMap cache that keeps one key of its data, packed as the per-server kinds are
KEPT_CONFIGMAPS = Resource(
    "", "v1", "configmaps", "ConfigMap", True, KubeObject,
    cache_keeps={"data": {"kept": True}}, cache_packed=True,
)  # fmt: skip


class _PageSpy:
    """The client, noting each page a list asks for."""

    def __init__(self, kube: KubeClient, log: list[str]) -> None:
        self._kube, self._log = kube, log

    async def list_page(self, *args: Any, **kwargs: Any) -> Any:
        self._log.append("page")
        return await self._kube.list_page(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)


class _Listed(Informer[KubeObject]):
    """An informer noting each object it keeps, in order with the pages."""

    log: list[str]

    def kept(self, obj: KubeObject) -> KubeObject:
        kept = super().kept(obj)
        self.log.append(f"kept {sorted(kept.extra.get('data') or {})}")
        return kept


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_list_keeps_only_what_the_cache_keeps_page_by_page_and_reads_back_whole(
    kube: KubeClient, namespace: str, streaming: bool
) -> None:
    """Listed (LIST, or a streaming list), each object is cut to what the cache keeps and held
    packed; the packed cache reads back what was kept, and a watched change replaces it."""
    blob = "x" * 4096  # what a cached pod's spec is to its cache: read by no one
    for i in range(5):
        body = configmap(f"k{i}", namespace) | {"data": {"kept": f"v{i}", "dropped": blob}}
        await kube.create(CONFIGMAPS, body, namespace)
    options = ReflectorOptions(page_size=2, streaming_list=streaming)
    log: list[str] = []
    spy: Any = _PageSpy(kube, log)
    informer = _Listed(spy, KEPT_CONFIGMAPS, namespace=namespace, options=options)
    informer.log = log
    recorder = Recorder()
    informer.add_handler("recorder", recorder)
    informer.start()
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        assert informer.reflector.lists == 1
        kept = [entry for entry in log if entry != "page"]
        assert len(kept) >= 5 and set(kept) <= {"kept ['kept']", "kept []"}, log
        assert ("page" in log) is not streaming, log  # a LIST was asked for, or none
        key = ObjectKey(namespace, "k3")
        assert isinstance(informer.store._items[key], bytes)  # held packed
        cached = informer.store.get(key)
        assert cached is not None and cached.extra == {"data": {"kept": "v3"}}
        assert cached.metadata.resource_version  # metadata whole
        update = configmap("k3", namespace) | {"data": {"kept": "new", "dropped": blob}}
        await kube.replace(CONFIGMAPS, update)
        await recorder.wait_for(Change.UPDATED, "k3")
        changed = informer.store.get(ObjectKey(namespace, "k3"))
        assert changed is not None and changed.extra == {"data": {"kept": "new"}}
    finally:
        await informer.stop()
