"""Pure parts of the harness: versions, certificates, node models, command lines, volumes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client

from devserver_harness import provisioner
from devserver_harness.binaries import ldflags, read_versions, tools_dir
from devserver_harness.components import SERVICE_IP, Layout, Ports, apiserver_argv
from devserver_harness.nodes import GPU_RESOURCE, NodeSpec, default_node_pool
from devserver_harness.pki import create_pki
from devserver_harness.provisioner import (
    PROVISIONER_NAME,
    SELECTED_NODE,
    Provisioner,
    desired_volume,
)


def test_versions_come_from_the_one_go_mod() -> None:
    versions = read_versions((tools_dir() / "go.mod").read_text())
    assert versions.kubernetes.startswith("v1.36.")
    assert versions.etcd.startswith("v3.6.")
    assert versions.kwok.startswith("v0.8.")
    assert f"gitVersion={versions.kubernetes}" in ldflags(versions)
    assert "gitMinor=36" in ldflags(versions)


def test_staging_replacements_match_the_kubernetes_version() -> None:
    go_mod = (tools_dir() / "go.mod").read_text()
    patch = read_versions(go_mod).kubernetes.replace("v1.", "v0.")
    replaced = [line for line in go_mod.splitlines() if "=> k8s.io/" in line]
    assert len(replaced) >= 30
    assert all(line.rstrip().endswith(patch) for line in replaced), replaced


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_issues_chained_certificates_with_the_right_identities(tmp_path: Path) -> None:
    pki = create_pki(tmp_path, service_ip=SERVICE_IP)
    ca = _load(pki.ca.cert)
    serving = _load(pki.apiserver.cert)
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        SERVICE_IP,
    }
    admin = _load(pki.admin.cert)
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:masters"
    )
    usages = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    assert ExtendedKeyUsageOID.SERVER_AUTH not in usages
    scheduler = _load(pki.scheduler.cert)
    assert scheduler.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:kube-scheduler"
    )
    assert pki.ca.key.stat().st_mode & 0o077 == 0, "private keys are not world-readable"
    assert isinstance(_load(pki.kubelet_serving.cert).public_key(), ec.EllipticCurvePublicKey)


def test_gpu_nodes_are_tainted_and_carry_gpu_capacity() -> None:
    manifest = NodeSpec("g", "p4d.24xlarge", "gpu-large").manifest()
    assert manifest["status"]["capacity"][GPU_RESOURCE] == "8"
    assert manifest["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert manifest["spec"]["taints"] == [
        {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
    ]
    assert manifest["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    cpu = NodeSpec("c", "m5.2xlarge", "cpu", "us-east-1b").manifest()
    assert GPU_RESOURCE not in cpu["status"]["capacity"]
    assert cpu["spec"]["taints"] == []
    assert cpu["metadata"]["labels"]["topology.kubernetes.io/zone"] == "us-east-1b"
    assert cpu["metadata"]["labels"]["topology.kubernetes.io/region"] == "us-east-1"


def test_default_pool_has_cpu_and_both_gpu_groups() -> None:
    types = {spec.instance_type for spec in default_node_pool()}
    assert types == {"m5.2xlarge", "g4dn.xlarge", "p4d.24xlarge"}
    assert len({spec.name for spec in default_node_pool()}) == len(default_node_pool())


def test_apiserver_runs_with_real_cluster_security(tmp_path: Path) -> None:
    pki = create_pki(tmp_path / "pki", service_ip=SERVICE_IP)
    layout = Layout(tmp_path / "bin", tmp_path, pki, Ports(1, 2, 3, 4, 5, 6))
    argv = apiserver_argv(layout, ("--v=2",))
    flags = dict(arg.split("=", 1) for arg in argv[1:])
    assert flags["--authorization-mode"] == "Node,RBAC"
    plugins = flags["--enable-admission-plugins"].split(",")
    for plugin in (
        "PodSecurity",
        "ResourceQuota",
        "LimitRanger",
        "ServiceAccount",
        "DefaultStorageClass",
        "NamespaceLifecycle",
    ):
        assert plugin in plugins
    assert flags["--bind-address"] == "127.0.0.1"
    assert "--audit-log-path" in flags
    assert argv[-1] == "--v=2"


def test_provisioned_volume_follows_the_claim_and_the_zone() -> None:
    claim = {
        "metadata": {"uid": "u1", "namespace": "dev-alice", "name": "home"},
        "spec": {"resources": {"requests": {"storage": "50Gi"}}, "accessModes": ["ReadWriteOnce"]},
    }
    storage_class = {"metadata": {"name": "gp3"}, "reclaimPolicy": "Retain"}
    volume = desired_volume(claim, storage_class, "us-east-1b")
    assert volume["metadata"]["name"] == "pvc-u1"
    assert volume["spec"]["capacity"] == {"storage": "50Gi"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["volumeMode"] == "Filesystem"
    reference = volume["spec"]["claimRef"]
    assert (reference["namespace"], reference["name"], reference["uid"]) == (
        "dev-alice",
        "home",
        "u1",
    )
    terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["us-east-1b"]
    assert "nodeAffinity" not in desired_volume(claim, storage_class, None)["spec"]


class _Body:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    async def read(self) -> bytes:
        return json.dumps(self.body).encode()


class _Cluster:
    """The three calls the provisioner makes, in memory: nodes, classes, volume creates."""

    def __init__(self) -> None:
        self.classes: list[dict[str, Any]] = []
        self.created: list[str] = []
        self.refused: set[str] = set()  # claim names whose volume create fails

    async def list_storage_class(self, **_: Any) -> _Body:
        return _Body({"items": self.classes, "metadata": {"resourceVersion": "1"}})

    async def read_node(self, name: str) -> Any:
        if name == "removed":
            raise client.ApiException(status=404)
        return SimpleNamespace(
            metadata=SimpleNamespace(labels={"topology.kubernetes.io/zone": "z"})
        )

    async def create_persistent_volume(self, body: dict[str, Any]) -> None:
        claim = body["spec"]["claimRef"]["name"]
        if claim in self.refused:
            raise client.ApiException(status=500)
        self.created.append(claim)


def _claim(name: str, node: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"uid": f"uid-{name}", "namespace": "dev", "name": name,
                     "annotations": {SELECTED_NODE: node}},
        "spec": {"storageClassName": "ebs", "resources": {"requests": {"storage": "1Gi"}}},
    }  # fmt: skip


def test_a_claim_not_handled_yet_is_tried_again_and_holds_up_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its class made after it, or its volume refused once: the claim waits and is provisioned
    on a retry, while the claims beside it are provisioned at once; a claim on a node that
    is gone waits for the scheduler's next pick, not for a retry."""
    monkeypatch.setattr(provisioner, "CLASSES_REFRESH_S", 0.0)
    cluster = _Cluster()
    volumes = Provisioner(cluster, cluster)  # type: ignore[arg-type]

    async def scenario() -> None:
        await volumes.claim_seen(_claim("early"))  # no class "ebs" yet
        assert volumes.waiting.keys() == {"uid-early"} and not cluster.created
        cluster.classes.append({"metadata": {"name": "ebs"}, "provisioner": PROVISIONER_NAME,
                                "volumeBindingMode": "WaitForFirstConsumer"})  # fmt: skip
        cluster.refused.add("refused")
        for name, node in (("refused", "n1"), ("fine", "n1"), ("moved", "removed")):
            await volumes.claim_seen(_claim(name, node))
        assert cluster.created == ["fine"]
        assert volumes.waiting.keys() == {"uid-early", "uid-refused"}
        cluster.refused.clear()
        for claim in list(volumes.waiting.values()):  # what `retry_waiting` does every 2 s
            await volumes.claim_seen(claim)
        assert sorted(cluster.created) == ["early", "fine", "refused"] and not volumes.waiting

    asyncio.run(scenario())
