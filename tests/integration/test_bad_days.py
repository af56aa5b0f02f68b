"""The harness's failure controls work, and the cluster behaves as a real one through them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devserver.testing.controlplane import LocalControlPlane
from devserver.testing.nodes import NodeSpec
from devserver.testing.pytest_plugin import wait_for

pytestmark = pytest.mark.integration


class RawWatch:
    """A minimal re-watching loop, as a client should write it: resume from the last RV."""

    def __init__(self, core: client.CoreV1Api, namespace: str, resource_version: str) -> None:
        self.core, self.namespace, self.rv = core, namespace, resource_version
        self.events: list[tuple[str, str]] = []
        self.reconnects = 0
        self.errors: list[str] = []

    async def run(self) -> None:
        while True:
            try:
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
                        if event["type"] == "ERROR":
                            self.errors.append(event["object"].get("message", ""))
                            return
                        self.rv = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.events.append((event["type"], event["object"]["metadata"]["name"]))
            except Exception:  # noqa: S110 - connection cut: re-watch from self.rv
                pass
            self.reconnects += 1
            await asyncio.sleep(0.2)


def config_map(name: str, value: str = "1") -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"v": value})


async def test_watch_resumes_after_apiserver_restart_without_relist(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_config_map(namespace, config_map("before"))
    listed = await core.list_namespaced_config_map(namespace)
    watcher = RawWatch(core, namespace, listed.metadata.resource_version)
    task = asyncio.create_task(watcher.run())
    try:
        await core.create_namespaced_config_map(namespace, config_map("first"))
        await wait_for(lambda: _has(watcher, ("ADDED", "first")), timeout=10, what="first event")

        await anyio.to_thread.run_sync(control_plane.restart_apiserver)

        await wait_for(
            lambda: _create_ok(core, namespace, config_map("after")),
            timeout=30,
            what="writes to succeed after the restart",
        )
        await core.patch_namespaced_config_map("before", namespace, {"data": {"v": "2"}})
        await wait_for(
            lambda: _has(watcher, ("MODIFIED", "before")),
            timeout=30,
            what="events after the restart",
        )
    finally:
        task.cancel()
    assert watcher.reconnects >= 1, "the restart must have cut the watch"
    assert watcher.errors == [], "resuming from the last RV must not be answered with 410"
    assert watcher.events == [("ADDED", "first"), ("ADDED", "after"), ("MODIFIED", "before")]


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
    with pytest.raises(client.ApiException) as gone:
        await core.list_namespaced_config_map(
            namespace,
            resource_version=created.metadata.resource_version,
            resource_version_match="Exact",
        )
    assert gone.value.status == 410


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


async def _has(watcher: RawWatch, event: tuple[str, str]) -> bool:
    return event in watcher.events


async def _create_ok(core: client.CoreV1Api, namespace: str, obj: client.V1ConfigMap) -> bool:
    try:
        await core.create_namespaced_config_map(namespace, obj)
    except client.ApiException as error:
        return bool(error.status == 409)
    except Exception:
        return False
    return True
