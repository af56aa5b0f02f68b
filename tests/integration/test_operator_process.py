"""The operator entry point runs against the cluster, reports readiness and stops cleanly."""

from __future__ import annotations

import json

import anyio
import pytest

from devserver_harness.controlplane import OPERATOR_NAMESPACE, LocalControlPlane
from devserver_harness.http import fetch
from devserver_harness.operator import OperatorProcess, operator_in_process

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    status, body = fetch(url, timeout=5)
    return status, body.decode()


def test_operator_subprocess_leads_serves_metrics_and_hands_back_its_lease_on_sigterm(
    operator_process: OperatorProcess, control_plane: LocalControlPlane
) -> None:
    operator_process.wait_leading()
    assert _get(operator_process.url + "/readyz") == (200, "ok (leader)\n")
    assert _get(operator_process.url + "/healthz")[0] == 200
    status, metrics = _get(operator_process.url + "/metrics")
    assert status == 200
    assert "python_info" in metrics

    def holder() -> str:
        lease = json.loads(
            control_plane.kubectl(
                "get", "lease", "-n", OPERATOR_NAMESPACE, "devserver-operator", "-o", "json"
            ).stdout
        )
        return str(lease["spec"].get("holderIdentity") or "")

    assert holder(), "the leader holds the Lease"
    assert operator_process.stop() == 0
    assert '"server_version": "v1.36' in operator_process.output()
    assert holder() == "", "a clean stop releases the Lease for the standby"


async def test_operator_in_process_connects_and_stops(control_plane: LocalControlPlane) -> None:
    async with operator_in_process(control_plane.operator_kubeconfig) as settings:
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
