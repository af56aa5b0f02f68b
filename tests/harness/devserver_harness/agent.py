"""The in-pod activity agent, as tests stand in for it: kwok's nodes run no containers, so a
test writes the server's Lease the way the agent does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from devserver_harness.controlplane import LocalControlPlane


def report_activity(
    cp: LocalControlPlane, lease: str, namespace: str, *, idle: bool, idle_for: float = 300
) -> None:
    """A fresh report on Lease `lease`: idle for `idle_for` seconds, or active."""
    now = datetime.now(UTC)
    since = (now - timedelta(seconds=idle_for)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {
        "metadata": {
            "annotations": {
                "devservers.io/idle-since": since if idle else None,
                "devservers.io/activity": "idle" if idle else "processes: python",
            }
        },
        "spec": {"renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "leaseDurationSeconds": 600},
    }
    cp.kubectl("patch", "lease", lease, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
