"""Shared benchmark fixtures: one namespace seeded with 10,000 ConfigMaps per module."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio

from devserver.api.resources import CONFIGMAPS, NAMESPACES
from devserver.client import ApiError, KubeClient, new_client
from devserver_harness.controlplane import LocalControlPlane
from tests.bench.scale import scaled

SEEDED = scaled(10_000, 50)
SEED_CONCURRENCY = 32
ROOT_CA = "kube-root-ca.crt"  # published into every namespace by the controller manager


@dataclass(frozen=True)
class Seeded:
    namespace: str
    expected: int  # what a full list returns: the seeded ConfigMaps plus kube-root-ca.crt
    seed_seconds: float


def bench_configmap(index: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{index:05d}", "labels": {"app": "bench"}},
        "data": {"a": "1", "b": "two", "c": f"value-{index}", "d": "x" * 32},
    }


async def _wait_root_ca(client: KubeClient, namespace: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.request("GET", CONFIGMAPS.path(namespace, ROOT_CA))
                return
            except ApiError as error:
                if error.status != 404:
                    raise
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module")
async def configmaps_10k(control_plane: LocalControlPlane) -> AsyncIterator[Seeded]:
    client = await new_client(str(control_plane.kubeconfig))
    namespace = f"bench-10k-{uuid.uuid4().hex[:5]}"
    try:
        await client.request("POST", NAMESPACES.path(), body={"metadata": {"name": namespace}})
        try:
            await _wait_root_ca(client, namespace)
            gate = asyncio.Semaphore(SEED_CONCURRENCY)

            async def create(index: int) -> None:
                async with gate:
                    # raw POST: the seeding measures the server, not our response parsing
                    await client.request(
                        "POST", CONFIGMAPS.path(namespace), body=bench_configmap(index)
                    )

            started = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(SEEDED)))
            seconds = time.perf_counter() - started
            print(  # noqa: T201
                f"\nseeded {SEEDED:,} ConfigMaps into {namespace} in {seconds:.1f} s "
                f"({SEEDED / seconds:,.0f}/s, {SEED_CONCURRENCY} concurrent POSTs)"
            )
            yield Seeded(namespace, SEEDED + 1, seconds)
        finally:
            await client.delete(NAMESPACES, namespace)
    finally:
        await client.close()
