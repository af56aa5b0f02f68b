"""pytest fixtures on the local control plane.

- `control_plane` (session): one real cluster per test run, with its controls;
- `admin_api` (function): an async `ApiClient` with the admin credentials;
- `fresh_control_plane()`: for modules that need a cluster of their own (see its docstring);
- `kube` (function): devserver's own `KubeClient` with the admin credentials;
- `namespace` (function): a fresh namespace whose default ServiceAccount exists;
- `operator_process` (function): starts `devserver-operator` as a subprocess against the cluster
  and stops it with SIGTERM, asserting a clean exit.

Enable with `pytest_plugins = ["devserver_harness.pytest_plugin"]` in a conftest.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient

from devserver.client import KubeClient, new_client
from devserver_harness.controlplane import ControlPlaneOptions, LocalControlPlane
from devserver_harness.operator import OperatorProcess


def fresh_control_plane() -> Iterator[LocalControlPlane]:
    """Start a cluster, yield it, stop it. Modules whose tests break the cluster on purpose
    (etcd outages, apiserver restarts) override `control_plane` with a module-scoped fixture
    that yields from this, so the controllers' recovery backoff never leaks into other tests."""
    backend = os.environ.get("DEVSERVER_TEST_CLUSTER", "local")
    if backend != "local":
        pytest.fail(
            f"DEVSERVER_TEST_CLUSTER={backend!r}: only 'local' is supported on this machine"
        )
    keep = os.environ.get("DEVSERVER_KEEP_STATE") == "1"  # keep logs and data for debugging
    cluster = LocalControlPlane(ControlPlaneOptions(keep_state=keep)).start()
    cluster.install_devserver()
    print(f"\nlocal control plane up in {cluster.start_seconds:.1f} s at {cluster.server}")  # noqa: T201
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` run at the end, so what they wait for overlaps the rest of the run."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    yield from fresh_control_plane()


@pytest.fixture(scope="session")
def quota_counts_devservers(control_plane: LocalControlPlane) -> None:
    """For tests that make users: the quota controller knows DevServers (≤ 30 s, once)."""
    control_plane.wait_quota_counts_devservers()


@pytest_asyncio.fixture
async def admin_api(control_plane: LocalControlPlane) -> AsyncIterator[ApiClient]:
    api = await config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    async with api:
        yield api


@pytest_asyncio.fixture
async def kube(control_plane: LocalControlPlane) -> AsyncIterator[KubeClient]:
    """devserver's own client (the one the operator uses), with admin credentials."""
    client = await new_client(str(control_plane.kubeconfig))
    yield client
    await client.close()


@pytest_asyncio.fixture
async def namespace(admin_api: ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    core = client.CoreV1Api(admin_api)
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:5]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await wait_for(
        lambda: _exists(core.read_namespaced_service_account("default", name)),
        timeout=60,  # the serviceaccount controller can lag on a loaded 2-core machine
        what=f"default ServiceAccount in {name}",
    )
    yield name
    await core.delete_namespace(name)


@pytest.fixture
def operator_process(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig=control_plane.operator_kubeconfig)
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"operator exited with {code}:\n{proc.output()}"


async def _exists(call: Any) -> bool:
    try:
        await call
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def wait_for(probe: Any, *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call `probe()` (a plain function or a coroutine function) until it returns something
    truthy; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
