"""The real Kueue (v0.17, built from its Go module) as a local process of the test cluster.

What a cluster install does with Services and cert-manager is done here by hand, as Kueue's
own docs describe for an out-of-cluster manager:
- its CRDs from the module's `config/components/crd/bases`, serving v1beta2 only (the storage
  version): v1beta1 is not served, so no conversion webhook is needed;
- its webhooks, registered with `clientConfig.url` to 127.0.0.1 and the cluster CA as the
  bundle; the server certificate is the PKI's `webhook-serving` pair (SAN 127.0.0.1). Only the
  webhooks of what devserver uses: Kueue's own objects, Pods, Deployments, StatefulSets; the
  workload webhooks (Pods, Deployments, StatefulSets) only in dev namespaces (a label the
  operator puts on them), so a Kueue outage never blocks a system pod;
- internal cert management off, leader election off (one manager), the visibility API off;
- with internal certs off, Kueue reads its metrics certificate from a path fixed in its code
  (/etc/kueue/metrics/certs): the process runs in a private mount namespace whose /etc is a
  copy of this machine's with that directory added, as the bastion's sandbox does.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from devserver_harness.binaries import tools_dir
from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.http import fetch
from devserver_harness.process import ManagedProcess, wait_until
from devserver_harness.tools import ensure_tool

NAMESPACE = "kueue-system"
# the webhooks devserver needs (mutating and validating), by the names Kueue's manifests use
WEBHOOKS = (
    "clusterqueue",
    "resourceflavor",
    "cohort",
    "workload",
    "pod",
    "deployment",
    "statefulset",
)
WORKLOAD_WEBHOOKS = ("pod", "deployment", "statefulset")
# the label every user namespace has (api/names.py: USER_LABEL)
DEV_NAMESPACES = {"matchExpressions": [{"key": "devservers.io/user", "operator": "Exists"}]}


def kueue_source() -> Path:
    """The pinned Kueue module's source (its CRDs and webhook manifests)."""
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kueue"],
        cwd=tools_dir().parent / "kueue",
        env=dict(os.environ, GOFLAGS="-mod=mod"),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def crds(source: Path) -> list[dict[str, Any]]:
    """Kueue's CRDs, v1beta1 not served (no conversion webhook)."""
    found = []
    for path in sorted((source / "config/components/crd/bases").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            if not version.get("storage"):
                version["served"] = False
        crd["spec"].pop("conversion", None)
        found.append(crd)
    return found


def webhook_configurations(source: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, only what devserver uses, pointed at `url`."""
    out = []
    for document in yaml.safe_load_all(
        (source / "config/components/webhook/manifests.yaml").read_text()
    ):
        if not document:
            continue
        config = copy.deepcopy(document)
        prefix = "m" if config["kind"] == "MutatingWebhookConfiguration" else "v"
        config["metadata"] = {"name": f"devserver-kueue-{config['metadata']['name']}"}
        kept = []
        for hook in config["webhooks"]:
            kind = hook["name"].removesuffix(".kb.io").removeprefix(prefix)
            if kind not in WEBHOOKS:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": url + path, "caBundle": ca_bundle}
            if kind in WORKLOAD_WEBHOOKS:
                hook["namespaceSelector"] = DEV_NAMESPACES
            kept.append(hook)
        config["webhooks"] = kept
        out.append(config)
    return out


class KueueProcess:
    def __init__(self, cluster: LocalControlPlane, **configuration: Any) -> None:
        self.cluster = cluster
        self.root = Path(tempfile.mkdtemp(prefix="devserver-kueue-"))
        self.webhook_port, self.health_port, self.metrics_port = (free_port() for _ in range(3))
        self.configuration = configuration  # merged over the defaults below
        layout = cluster.layout
        self.process = ManagedProcess(
            f"kueue-{self.webhook_port}",
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", self._script()],
            log_dir=layout.logs,
            registry=layout.state_dir / "children",
        )

    def _script(self) -> str:
        argv = [
            str(ensure_tool("kueue")),
            f"--config={self.root / 'config.yaml'}",
            f"--kubeconfig={self.cluster.kubeconfig}",
            "--feature-gates=VisibilityOnDemand=false",
        ]
        return f"mount --bind {self.root / 'etc'} /etc; exec {' '.join(argv)}"

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.metrics_port}"},
            "webhook": {
                "host": "127.0.0.1",
                "port": self.webhook_port,
                "certDir": str(self.root / "webhook-certs"),
            },
            "leaderElection": {"leaderElect": False},
            # as Kueue's own manifests and chart configure it (its binary alone defaults to 20/30)
            "clientConnection": {"qps": 50, "burst": 100},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "managedJobsNamespaceSelector": DEV_NAMESPACES,
            "integrations": {"frameworks": ["pod", "deployment", "statefulset"]},
        }
        config.update(self.configuration)
        return config

    def install(self) -> None:
        """CRDs, namespace and webhook configurations (idempotent)."""
        source = kueue_source()
        pki = self.cluster.layout.pki
        self.cluster.apply(*crds(source))
        self.cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        bundle = base64.b64encode(pki.ca.cert.read_bytes()).decode()
        url = f"https://127.0.0.1:{self.webhook_port}"
        self.cluster.apply(*webhook_configurations(source, url, bundle))

    def start(self, timeout: float = 60) -> KueueProcess:
        pki = self.cluster.layout.pki
        for directory in (self.root / "webhook-certs", self.root / "metrics-certs"):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copy(pki.webhook_serving.cert, directory / "tls.crt")
            shutil.copy(pki.webhook_serving.key, directory / "tls.key")
        etc = self.root / "etc"
        if not etc.exists():
            shutil.copytree("/etc", etc, symlinks=True, ignore_dangling_symlinks=True)
            shutil.copytree(self.root / "metrics-certs", etc / "kueue/metrics/certs")
        (self.root / "config.yaml").write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self.install()
        self.process.start()

        def ready() -> bool:
            self.process.check_running()
            try:
                return fetch(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until("kueue /readyz", ready, timeout=timeout)
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def uninstall(self) -> None:
        """Its webhook configurations go first: nothing may call a Kueue that is not there."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            for name in (
                "devserver-kueue-mutating-webhook-configuration",
                "devserver-kueue-validating-webhook-configuration",
            ):
                self.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)
