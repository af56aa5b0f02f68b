"""Fixtures for the controller core: our own client, a proxy to cut it off, recorders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio

from devserver import __version__
from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient, new_client
from devserver.informers import Change, Informer, Notification, ReflectorOptions
from devserver_harness.controlplane import LocalControlPlane
from tests.support.tcpproxy import TcpProxy

USER_AGENT = f"devserver/{__version__}"


@dataclass
class Proxied:
    proxy: TcpProxy
    client: KubeClient


@pytest_asyncio.fixture
async def proxied(control_plane: LocalControlPlane, tmp_path: Path) -> AsyncIterator[Proxied]:
    """A client whose every connection goes through a proxy the test controls."""
    proxy = await TcpProxy(control_plane.layout.ports.apiserver).start()
    kubeconfig = control_plane.admin_kubeconfig_via(
        f"https://127.0.0.1:{proxy.port}", tmp_path / "proxied.kubeconfig"
    )
    client = await new_client(str(kubeconfig))
    yield Proxied(proxy, client)
    await client.close()
    await proxy.close()


@dataclass
class Recorder:
    """An event handler that remembers what it was told."""

    notes: list[Notification[Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, note: Notification[Any]) -> None:
        self.notes.append(note)
        self.changed.set()

    def names(self, change: Change) -> list[str]:
        return [n.obj.metadata.name for n in self.notes if n.change is change]

    async def wait_for(self, change: Change, name: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while name not in self.names(change):
                self.changed.clear()
                await self.changed.wait()


def configmap(name: str, namespace: str, value: str = "1", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "data": {"v": value},
    }


@pytest_asyncio.fixture
async def make_informer(namespace: str) -> AsyncIterator[Any]:
    informers: list[Informer[Any]] = []

    def make(client: KubeClient, **options: Any) -> tuple[Informer[Any], Recorder]:
        selector = options.pop("label_selector", "")
        informer = Informer(
            client,
            CONFIGMAPS,
            namespace=namespace,
            label_selector=selector,
            resync_period=options.pop("resync_period", None),
            indexers=options.pop("indexers", None),
            options=ReflectorOptions(**options),
        )
        recorder = Recorder()
        informer.add_handler("recorder", recorder)
        informer.start()
        informers.append(informer)
        return informer, recorder

    yield make
    for informer in informers:
        await informer.stop()
