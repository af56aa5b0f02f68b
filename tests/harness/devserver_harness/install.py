"""Installing devserver on a cluster as the Helm chart would, and what tests need of it: the
operator as a process, users with their own tokens, ServiceAccount kubeconfigs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devserver_harness.cluster import OPERATOR_NAMESPACE, Cluster, free_port, repo_root
from devserver_harness.http import fetch
from devserver_harness.kubeconfig import write_kubeconfig
from devserver_harness.process import wait_until
from devserver_harness.tools import ensure_tool

RELEASE = "devserver"
CRD_PLURALS = ("devservers", "devserverflavors", "devusers")


class DevserverInstall(Cluster):
    def install_devserver(self, *values: str, json_values: Mapping[str, Any] | None = None) -> None:
        """devserver from its Helm chart, as a platform team installs it (`helm upgrade
        --install`: a second call upgrades), with `values` (`key=value`) and `json_values`
        (`--set-json`) set on top of the local ones: no load balancer here, and the images are
        never pulled (kwok's nodes run no containers; the operator and the bastion run as
        processes of this machine)."""
        command = (
            "upgrade",
            "--install",
            RELEASE,
            str(repo_root() / "charts" / "devserver"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            "bastion.service.type=ClusterIP",
            # the chart's pods stay Pending: kwok's nodes run no containers, and the operator
            # and the bastion run as processes here; their requests use no node's capacity
            "--set-string",
            "operator.nodeSelector.devservers\\.io/local-images=none",
            "--set-string",
            "bastion.nodeSelector.devservers\\.io/local-images=none",
            *(arg for value in values for arg in ("--set", value)),
            *(
                arg
                for key, value in (json_values or {}).items()
                for arg in ("--set-json", f"{key}={json.dumps(value)}")
            ),
        )
        crds = [f"crd/{plural}.devservers.io" for plural in CRD_PLURALS]
        first = self.kubectl("get", *crds, check=False).returncode != 0
        self.helm(*command)
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", *crds)
        if first:  # the default flavors come with the second run, as the chart's notes say
            self.helm(*command)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(ensure_tool("helm")), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            env={
                **os.environ,
                "HELM_CACHE_HOME": str(self.layout.state_dir / "helm-cache"),
                "HELM_CONFIG_HOME": str(self.layout.state_dir / "helm-config"),
                "HELM_DATA_HOME": str(self.layout.state_dir / "helm-data"),
            },
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def forget_operator_token(self) -> None:
        """After the ServiceAccount was deleted and made anew (uninstall, install)."""
        (self.layout.state_dir / "operator.kubeconfig").unlink(missing_ok=True)

    @property
    def operator_kubeconfig(self) -> Path:
        """Credentials of the chart's ServiceAccount for the operator (a TokenRequest token,
        minted once per cluster): the operator runs with the rights the chart gives it."""
        path = self.layout.state_dir / "operator.kubeconfig"
        if not path.exists():
            self.service_account_kubeconfig(
                OPERATOR_NAMESPACE, "devserver-operator", duration="24h", path=path
            )
        return path

    def wait_quota_counts_devservers(self, timeout: float = 90) -> float:
        """Wait until the quota controller counts DevServers; the seconds it took.

        kube-controller-manager discovers new CRDs every 30 s, and a quota synced before that
        stays "unknown" for the DevServer count until its 5-minute resync: every create in that
        namespace is refused. Production installs CRDs long before users; a fresh test cluster
        must wait once. A probe quota is made anew each try (a new quota is counted at once).
        """
        started = time.monotonic()
        namespace = OPERATOR_NAMESPACE
        attempt = 0
        while True:
            attempt += 1
            name = f"quota-probe-{attempt}"
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"hard": {"count/devservers.devservers.io": "0"}},
                }
            )
            deadline = time.monotonic() + 3
            counted = False
            while time.monotonic() < deadline and not counted:
                quota = self._get(f"/api/v1/namespaces/{namespace}/resourcequotas/{name}") or {}
                counted = "count/devservers.devservers.io" in quota.get("status", {}).get(
                    "used", {}
                )
                time.sleep(0.2)
            self.kubectl("delete", "resourcequota", name, "-n", namespace, "--wait=false")
            if counted:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError("the quota controller never counted DevServers")

    def run_operator(self, *extra_args: str, kubeconfig: Path | None = None) -> str:
        """Start devserver-operator against this cluster as one of its processes (with the
        chart's ServiceAccount unless told otherwise); its URL."""
        port = free_port()
        operator = self._process(
            "devserver-operator",
            [
                sys.executable,
                "-m",
                "devserver.manager",
                f"--kubeconfig={kubeconfig or self.operator_kubeconfig}",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
                "--no-log-json",
                *extra_args,
            ],
        )
        operator.start()
        url = f"http://127.0.0.1:{port}"
        wait_until(
            "the operator to be ready",
            lambda: fetch(url + "/readyz", timeout=2)[0] == 200,
            timeout=60,
            processes=[operator],
        )
        return url

    def admin_kubeconfig_via(self, server: str, path: Path) -> Path:
        """The admin credentials, but talking to `server` (e.g. a proxy in front of ours)."""
        pki = self.layout.pki
        return write_kubeconfig(
            path,
            server=server,
            ca_file=pki.ca.cert,
            user="admin",
            client_cert=pki.admin.cert,
            client_key=pki.admin.key,
        )

    def add_user(self, name: str, path: Path, timeout: float = 60) -> Path:
        """A DevUser made by a running operator, Ready; a kubeconfig with its own token."""
        self.apply(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": name},
                "spec": {"email": f"{name}@example.com"},
            }
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.kubectl("get", "devuser.devservers.io", name, "-o", "json", check=False)
            conditions = json.loads(got.stdout or "{}").get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                break
            time.sleep(0.25)
        else:
            raise TimeoutError(f"user {name} was not provisioned within {timeout:.0f} s")
        return self.service_account_kubeconfig(
            f"dev-{name}", f"user-{name}", path=path, embed_ca=True
        )

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        duration: str = "1h",
        path: Path | None = None,
        embed_ca: bool = False,
    ) -> Path:
        """Kubeconfig authenticating as a ServiceAccount with a TokenRequest-issued token."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        target = path or self.layout.state_dir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            target,
            server=self.server,
            ca_file=self.layout.pki.ca.cert,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
            embed_ca=embed_ca,
        )
