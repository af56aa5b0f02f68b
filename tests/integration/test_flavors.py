"""Flavors: shipped defaults are valid, bad ones say why, and usage is counted."""

from __future__ import annotations

import pytest

from devserver.api.flavor import DevServerFlavor
from devserver.api.resources import DEVSERVERS, FLAVORS
from devserver.client import KubeClient
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import operator_in_process
from devserver_harness.pytest_plugin import wait_for
from tests.integration.test_devservers import condition, devserver

pytestmark = pytest.mark.integration


async def _flavor(kube: KubeClient, name: str) -> DevServerFlavor:
    return await kube.get(FLAVORS, name)


async def test_flavor_status_reports_validity_and_usage(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    broken = f"broken-{namespace[-5:]}"
    await kube.create(
        FLAVORS,
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServerFlavor",
            "metadata": {"name": broken},
            "spec": {"resources": {"requests": {"cpu": "8"}, "limits": {"cpu": "4"}}},
        },
    )
    try:
        async with operator_in_process(control_plane.operator_kubeconfig):

            async def judged() -> DevServerFlavor | None:
                flavor = await _flavor(kube, broken)
                return flavor if flavor.status and flavor.status.valid is not None else None

            flavor = await wait_for(judged, timeout=30, what="the flavor to be judged")
            assert flavor.status.valid is False
            assert flavor.status.message == (
                "resources.requests.cpu (8) exceeds its limit (4); "
                "lower the request or raise the limit"
            )
            for name in ("cpu-small", "gpu-small", "gpu-large"):
                shipped = await _flavor(kube, name)
                assert shipped.status is not None and shipped.status.valid is True, name

            before = (await _flavor(kube, "cpu-medium")).status.dev_servers
            await kube.create(DEVSERVERS, devserver("user", namespace, "cpu-medium"), namespace)

            async def counted() -> bool:
                return (await _flavor(kube, "cpu-medium")).status.dev_servers == before + 1

            await wait_for(counted, timeout=30, what="the usage count")

            await kube.create(DEVSERVERS, devserver("victim", namespace, broken), namespace)

            async def refused() -> str | None:
                ds = await kube.get(DEVSERVERS, "victim", namespace)
                c = condition(ds, "FlavorValid")
                return c.message if c is not None and c.status == "False" else None

            message = await wait_for(refused, timeout=30, what="FlavorValid=False")
            assert message.startswith(f"flavor {broken!r} is invalid: resources.requests.cpu")
    finally:
        await kube.delete(FLAVORS, broken)
