"""Command lines of the control-plane components, as pure functions of a `Layout`.

These are the flags a production cluster (kubeadm, EKS) runs with, narrowed to loopback: RBAC and
Node authorization, service-account token issuing, the admission chain real clusters enable,
an audit log, controllers using their own service-account credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devserver_harness.pki import Pki

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # kwok hands out fake pod IPs from it; nothing ever dials them
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "DefaultStorageClass",
    "DefaultTolerationSeconds",
    "StorageObjectInUseProtection",
    "PersistentVolumeClaimResize",
    "Priority",
    "PodSecurity",
    "NodeRestriction",
    "TaintNodesByCondition",
    "RuntimeClass",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)

# Metadata for everything (who did what, to which object, with which verdict), minus the
# heartbeat noise that would drown it.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
  users: ["kubernetes-admin", "system:kube-controller-manager", "system:kube-scheduler"]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
- level: Metadata
"""


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


@dataclass(frozen=True)
class Layout:
    """Where one cluster's binaries, state, certificates and kubeconfigs live."""

    bin_dir: Path
    state_dir: Path
    pki: Pki
    ports: Ports

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def etcd_data(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    @property
    def audit_policy(self) -> Path:
        return self.state_dir / "audit-policy.yaml"

    @property
    def kwok_config(self) -> Path:
        return self.state_dir / "kwok.yaml"

    @property
    def exec_dir(self) -> Path:
        return self.state_dir / "exec"

    @property
    def container_log(self) -> Path:
        return self.state_dir / "container.log"

    def kubeconfig(self, who: str) -> Path:
        return self.state_dir / f"{who}.kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"


def etcd_argv(layout: Layout) -> list[str]:
    p = layout.ports
    peer = f"http://127.0.0.1:{p.etcd_peer}"
    return [
        layout.binary("etcd"),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={layout.etcd_url}",
        f"--advertise-client-urls={layout.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync",  # test data; survives process restarts, not power loss
        "--log-level=warn",
        "--quota-backend-bytes=4294967296",
    ]


def apiserver_argv(layout: Layout, extra: tuple[str, ...] = ()) -> list[str]:
    pki = layout.pki
    return [
        layout.binary("kube-apiserver"),
        f"--etcd-servers={layout.etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={layout.ports.apiserver}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        f"--api-audiences={ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
        "--allow-privileged=true",  # as on EKS; Pod Security Admission decides per namespace
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-maxsize=100",
        "--audit-log-maxbackup=2",
        # exec/logs/port-forward reach kwok as they would reach a kubelet, verified by our CA
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        f"--kubelet-certificate-authority={pki.ca.cert}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--profiling=false",
        "--enable-priority-and-fairness=true",
        *extra,
    ]


def controller_manager_argv(layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig("controller-manager")
    pki = layout.pki
    return [
        layout.binary("kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={layout.ports.controller_manager}",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--leader-elect=false",
        "--controllers=*",
        # kwok renews node leases every ~10 s (40 s duration); match kwokctl's monitor periods
        "--node-monitor-period=5s",
        "--node-monitor-grace-period=40s",
        "--kube-api-qps=100",
        "--kube-api-burst=200",
        "--profiling=false",
    ]


def scheduler_argv(layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig("scheduler")
    return [
        layout.binary("kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={layout.ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_argv(layout: Layout) -> list[str]:
    port = layout.ports.kwok
    return [
        layout.binary("kwok"),
        f"--kubeconfig={layout.kubeconfig('admin')}",
        f"--config={layout.bin_dir / 'kwok-stages.yaml'}",
        f"--config={layout.kwok_config}",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=127.0.0.1",
        "--node-name=localhost",
        f"--node-port={port}",
        f"--server-address=127.0.0.1:{port}",
        "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}",
        f"--tls-cert-file={layout.pki.kubelet_serving.cert}",
        f"--tls-private-key-file={layout.pki.kubelet_serving.key}",
    ]


def kwok_config(layout: Layout) -> str:
    """Exec runs the command on this machine; logs serve one CRI-format file for every container."""
    return f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: local-exec
spec:
  execs:
  - local:
      workDir: {layout.exec_dir}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: local-logs
spec:
  logs:
  - logsFile: {layout.container_log}
"""
