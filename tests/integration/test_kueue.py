"""The real Kueue on the local control plane: the harness's install works as Kueue's docs say.

A first step of issue 17 (nothing of devserver's yet): a Deployment in a dev namespace, queued
on a LocalQueue, is admitted while the ClusterQueue's GPU quota holds it; a second one waits,
gated, with Kueue's own reason, and is admitted when the first goes. With Kueue down, a pod
outside the dev namespaces is created as ever: its webhooks are scoped to dev namespaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.kueue import KueueProcess
from devserver_harness.process import poll

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "dev-kq"
GATE = "kueue.x-k8s.io/admission"


@pytest.fixture(scope="module")
def kueue(control_plane: LocalControlPlane) -> Iterator[KueueProcess]:
    process = KueueProcess(control_plane)
    control_plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NS, "labels": {"devservers.io/user": "kq"}},
        }
    )
    try:
        yield process.start()
    finally:
        process.uninstall()
        process.stop()
        control_plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _kueue_objects(gpus: int) -> list[dict[str, Any]]:
    group = "kueue.x-k8s.io/v1beta2"
    return [
        {
            "apiVersion": group,
            "kind": "ResourceFlavor",
            "metadata": {"name": "kq-t4"},
            "spec": {"nodeLabels": {"node.kubernetes.io/instance-type": "g4dn.xlarge"}},
        },
        {
            "apiVersion": group,
            "kind": "ClusterQueue",
            "metadata": {"name": "kq"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": "kq-t4",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "8"},
                                    {"name": "memory", "nominalQuota": "32Gi"},
                                    {"name": "nvidia.com/gpu", "nominalQuota": str(gpus)},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": group,
            "kind": "LocalQueue",
            "metadata": {"name": "kq", "namespace": NS},
            "spec": {"clusterQueue": "kq"},
        },
    ]


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    resources = {"cpu": "100m", "memory": "128Mi", "nvidia.com/gpu": "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kueue.x-k8s.io/queue-name": "kq"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "pytorch/pytorch:2.5.1",
                            "resources": {"requests": resources, "limits": resources},
                        }
                    ],
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            },
        },
    }


def _pods(cp: LocalControlPlane, app: str) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", NS, "-l", f"app={app}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def _gated(pod: dict[str, Any]) -> bool:
    return any(g["name"] == GATE for g in pod["spec"].get("schedulingGates") or [])


def test_a_queued_deployment_waits_for_quota_and_is_admitted_when_it_frees(
    kueue: KueueProcess, control_plane: LocalControlPlane
) -> None:
    cp = control_plane
    cp.apply(*_kueue_objects(gpus=1))
    cp.apply(_deployment("kq-a"))
    first = poll(lambda: [p for p in _pods(cp, "kq-a") if p["spec"].get("nodeName")], 60, "kq-a")
    assert not _gated(first[0])

    cp.apply(_deployment("kq-b"))
    waiting = poll(lambda: _pods(cp, "kq-b"), 30, "kq-b's pod")
    assert _gated(waiting[0]), waiting[0]["spec"]  # held back by Kueue, not by the scheduler

    def reason() -> str:
        out = cp.kubectl("get", "workloads.kueue.x-k8s.io", "-n", NS, "-o", "json")
        for workload in json.loads(out.stdout)["items"]:
            if workload["metadata"]["name"].startswith("pod-kq-b"):
                for condition in workload.get("status", {}).get("conditions", []):
                    if condition["type"] == "QuotaReserved" and condition["status"] == "False":
                        return str(condition["message"])
        return ""

    said = poll(reason, 30, "Kueue's reason")
    assert "insufficient" in said.lower() or "quota" in said.lower(), said

    cp.kubectl("delete", "deployment", "kq-a", "-n", NS)
    admitted = poll(
        lambda: [p for p in _pods(cp, "kq-b") if p["spec"].get("nodeName")], 90, "kq-b admitted"
    )
    assert not _gated(admitted[0])


def test_with_kueue_down_pods_outside_dev_namespaces_are_created_as_ever(
    kueue: KueueProcess, control_plane: LocalControlPlane
) -> None:
    cp = control_plane
    kueue.kill()
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kq-system", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
        cp.apply(pod)  # no webhook of Kueue's is called: it would fail, Kueue being down
        refused = cp.kubectl(
            "run", "kq-dev", "-n", NS, "--image=busybox", "--restart=Never", check=False
        )
        assert refused.returncode != 0  # in a dev namespace its webhook is called, and fails
    finally:
        cp.kubectl("delete", "pod", "kq-system", "-n", "default", "--wait=false", check=False)
        kueue.process.start()
