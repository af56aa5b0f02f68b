"""The operator entry point runs against the cluster, reports readiness and stops cleanly."""

from __future__ import annotations

import anyio
import pytest

from devserver.testing.controlplane import LocalControlPlane
from devserver.testing.http import fetch
from devserver.testing.operator import OperatorProcess, operator_in_process

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    status, body = fetch(url, timeout=5)
    return status, body.decode()


def test_operator_subprocess_is_ready_serves_metrics_and_exits_0_on_sigterm(
    operator_process: OperatorProcess,
) -> None:
    assert _get(operator_process.url + "/readyz") == (200, "ok\n")
    status, metrics = _get(operator_process.url + "/metrics")
    assert status == 200 and "python_info" in metrics
    assert operator_process.stop() == 0
    assert '"server_version": "v1.36' in operator_process.output()


async def test_operator_in_process_connects_and_stops(control_plane: LocalControlPlane) -> None:
    async with operator_in_process(control_plane.kubeconfig) as settings:
        url = f"http://127.0.0.1:{settings.http_port}/readyz"
        with anyio.fail_after(20):
            while True:
                try:
                    status, _ = await anyio.to_thread.run_sync(_get, url)
                except OSError:
                    status = 0
                if status == 200:
                    break
                await anyio.sleep(0.1)
