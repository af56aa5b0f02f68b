"""The harness's failure controls work, and the cluster behaves as a real one through them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.nodes import NodeSpec
from devserver_harness.pytest_plugin import fresh_control_plane, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def control_plane() -> Iterator[LocalControlPlane]:
    """This module stops etcd and restarts the apiserver: it gets a cluster of its own."""
    yield from fresh_control_plane()


class RawWatch:
    """A minimal reflector, as a client must be written: list, watch from the list's RV, resume
    from the last RV after a cut, and relist when the server answers 410 Gone."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.store: dict[str, str] = {}  # name -> data["v"]
        self.rv = ""
        self.lists = 0
        self.reconnects = 0
        self.gone: list[str] = []
        self.failures: list[str] = []

    def __repr__(self) -> str:
        return (
            f"RawWatch(rv={self.rv}, store={self.store}, lists={self.lists}, "
            f"reconnects={self.reconnects}, gone={self.gone}, failures={self.failures[-3:]})"
        )

    async def relist(self) -> None:
        listed = await self.core.list_namespaced_config_map(self.namespace)
        self.store = {cm.metadata.name: (cm.data or {}).get("v", "") for cm in listed.items}
        self.rv = listed.metadata.resource_version
        self.lists += 1

    async def run(self) -> None:
        await self.relist()
        while True:
            try:
                if not self.rv:
                    await self.relist()
                response = await self.core.list_namespaced_config_map(
                    self.namespace,
                    watch=True,
                    resource_version=self.rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    _preload_content=False,
                )
                async with response:
                    async for line in response.content:
                        event: dict[str, Any] = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            self.gone.append(obj.get("message", ""))
                            self.rv = ""  # 410: the RV is unusable, relist
                            break
                        self.rv = obj["metadata"]["resourceVersion"]
                        name = obj["metadata"]["name"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self.store[name] = (obj.get("data") or {}).get("v", "")
                        elif event["type"] == "DELETED":
                            self.store.pop(name, None)
            except Exception as error:  # noqa: BLE001 - connection cut: re-watch from self.rv
                self.failures.append(repr(error))
            self.reconnects += 1
            await asyncio.sleep(0.2)


def config_map(name: str, value: str = "1") -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"v": value})


async def test_watch_survives_an_apiserver_restart(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_config_map(namespace, config_map("before"))
    watcher = RawWatch(core, namespace)
    task = asyncio.create_task(watcher.run())
    try:
        await core.create_namespaced_config_map(namespace, config_map("first"))
        await wait_for(lambda: _seen(watcher, "first", "1"), timeout=10, what="first event")

        await anyio.to_thread.run_sync(control_plane.restart_apiserver)

        await wait_for(
            lambda: _create_ok(core, namespace, config_map("after")),
            timeout=30,
            what="writes to succeed after the restart",
        )
        await core.patch_namespaced_config_map("before", namespace, {"data": {"v": "2"}})
        await wait_for(
            lambda: _seen(watcher, "before", "2"),
            timeout=30,
            what=f"changes after the restart to reach the watcher ({watcher})",
        )
        await wait_for(lambda: _seen(watcher, "after", "1"), timeout=10, what=repr(watcher))
    finally:
        task.cancel()
    assert watcher.reconnects >= 1, f"the restart must have cut the watch: {watcher}"
    # A restarted apiserver's watch cache starts at the current etcd revision, so resuming from
    # an older RV may be refused with 410; then, and only then, the client lists again.
    assert watcher.lists == 1 + len(watcher.gone), watcher
    watcher.store.pop("kube-root-ca.crt", None)  # published into every namespace
    assert watcher.store == {"before": "2", "first": "1", "after": "1"}


async def test_etcd_outage_and_compaction(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    created = await core.create_namespaced_config_map(namespace, config_map("old"))
    await core.patch_namespaced_config_map("old", namespace, {"data": {"v": "2"}})

    await anyio.to_thread.run_sync(control_plane.stop_etcd)
    with pytest.raises(Exception):  # noqa: B017, PT011 - 5xx or a timeout, depending on timing
        await asyncio.wait_for(
            core.create_namespaced_config_map(namespace, config_map("lost")), timeout=15
        )
    await anyio.to_thread.run_sync(control_plane.start_etcd)
    await wait_for(
        lambda: _create_ok(core, namespace, config_map("back")),
        timeout=60,
        what="writes after etcd came back",
    )
    names = {cm.metadata.name for cm in (await core.list_namespaced_config_map(namespace)).items}
    assert {"old", "back"} <= names

    revision = await anyio.to_thread.run_sync(control_plane.compact_etcd)
    assert revision > int(created.metadata.resource_version)
    old = created.metadata.resource_version
    # The apiserver's watch cache still holds that history, so compaction alone is invisible...
    await core.list_namespaced_config_map(
        namespace, resource_version=old, resource_version_match="Exact"
    )
    # ...until the cache restarts at the current revision: then an old RV is 410 Gone, for lists
    # (served from etcd, compacted) and watches alike. This is how tests provoke relists.
    await anyio.to_thread.run_sync(control_plane.restart_apiserver)
    with pytest.raises(client.ApiException) as gone:
        await core.list_namespaced_config_map(
            namespace, resource_version=old, resource_version_match="Exact"
        )
    assert gone.value.status == 410
    assert "too old" in json.loads(gone.value.body)["message"]


async def test_nodes_can_join_and_leave(
    admin_api: ApiClient, control_plane: LocalControlPlane
) -> None:
    core = client.CoreV1Api(admin_api)
    spec = NodeSpec("gpu-a10g-extra", "g5.12xlarge", "gpu-medium", "us-east-1c")
    await anyio.to_thread.run_sync(lambda: control_plane.add_nodes(spec))
    node = await core.read_node(spec.name)
    assert node.status.allocatable["nvidia.com/gpu"] == "4"
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "us-east-1c"
    await anyio.to_thread.run_sync(lambda: control_plane.remove_nodes(spec.name))
    names = {n.metadata.name for n in (await core.list_node()).items}
    assert spec.name not in names


async def _seen(watcher: RawWatch, name: str, value: str) -> bool:
    return watcher.store.get(name) == value


async def _create_ok(core: client.CoreV1Api, namespace: str, obj: client.V1ConfigMap) -> bool:
    try:
        await core.create_namespaced_config_map(namespace, obj)
    except client.ApiException as error:
        return bool(error.status == 409)
    except Exception:  # noqa: BLE001 - refused while the server comes back
        return False
    return True
