"""`Cluster`: a real Kubernetes control plane as local processes on loopback.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (playing the kubelets of
EKS-like node groups) and a test-only volume provisioner (standing in for the EBS CSI driver).
Its methods are synchronous and safe to call from a worker thread. The bad days are in
faults.py, installing devserver in install.py; `LocalControlPlane` (controlplane.py) is all three.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from devserver_harness import components
from devserver_harness.binaries import cache_root, ensure_binaries, tools_dir
from devserver_harness.http import fetch
from devserver_harness.kubeconfig import write_kubeconfig
from devserver_harness.nodes import NodeSpec, default_node_pool
from devserver_harness.pki import create_pki
from devserver_harness.process import ManagedProcess, reap_stale_runs, wait_until
from devserver_harness.provisioner import PROVISIONER_NAME

DEFAULT_STORAGE_CLASS = "gp3"
OPERATOR_NAMESPACE = "devserver-system"


@dataclass
class ControlPlaneOptions:
    nodes: list[NodeSpec] = field(default_factory=default_node_pool)
    apiserver_extra_args: tuple[str, ...] = ()
    start_timeout: float = 60.0
    keep_state: bool = False  # leave logs and etcd data behind after stop (for debugging)


def repo_root() -> Path:
    return tools_dir().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self, options: ControlPlaneOptions | None = None) -> None:
        self.options = options or ControlPlaneOptions()
        self._processes: dict[str, ManagedProcess] = {}
        self._started = False
        self.start_seconds = 0.0
        # seconds per start-up phase, in order: what `nox -s up` and the benchmark report
        self.timings: dict[str, float] = {}
        self._mark = 0.0

    def start(self) -> Self:
        started = time.monotonic()
        self._mark = started
        bin_dir = ensure_binaries()  # may build for a long while on a cold machine
        self._phase("binaries")
        runs = cache_root() / "run"
        reap_stale_runs(runs)
        runs.mkdir(parents=True, exist_ok=True)
        state = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=runs))
        (state / "owner.pid").write_text(str(os.getpid()))
        ports = components.Ports(*(free_port() for _ in range(6)))
        pki = create_pki(state / "pki", service_ip=components.SERVICE_IP)
        self._phase("pki")
        self.layout = layout = components.Layout(bin_dir, state, pki, ports)
        layout.logs.mkdir()
        layout.exec_dir.mkdir()
        layout.audit_policy.write_text(components.AUDIT_POLICY)
        layout.kwok_config.write_text(components.kwok_config(layout))
        layout.container_log.write_text(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S.000000000Z', time.gmtime())} stdout F "
            "devserver-local: container started\n"
        )
        for who, pair in (
            ("admin", pki.admin),
            ("controller-manager", pki.controller_manager),
            ("scheduler", pki.scheduler),
        ):
            write_kubeconfig(
                layout.kubeconfig(who),
                server=layout.apiserver_url,
                ca_file=pki.ca.cert,
                user=who,
                client_cert=pair.cert,
                client_key=pair.key,
            )
        self._started = True
        try:
            self._boot()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _process(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        proc = ManagedProcess(
            name, argv, log_dir=self.layout.logs, registry=self.layout.state_dir / "children"
        )
        self._processes[name] = proc
        return proc

    def _boot(self) -> None:
        layout, timeout = self.layout, self.options.start_timeout
        etcd = self._process("etcd", components.etcd_argv(layout))
        etcd.start()
        self._wait_etcd(timeout)
        self._phase("etcd")
        apiserver = self._process(
            "kube-apiserver", components.apiserver_argv(layout, self.options.apiserver_extra_args)
        )
        apiserver.start()
        self._wait_apiserver(timeout)
        self._phase("kube-apiserver")
        rest = [
            self._process("kube-controller-manager", components.controller_manager_argv(layout)),
            self._process("kube-scheduler", components.scheduler_argv(layout)),
            self._process("kwok", components.kwok_argv(layout)),
            self._process(
                "provisioner",
                [
                    sys.executable,
                    "-m",
                    "devserver_harness.provisioner",
                    f"--kubeconfig={layout.kubeconfig('admin')}",
                ],
            ),
        ]
        for proc in rest:
            proc.start()
        self.apply(
            self._storage_class(),
            # where the operator runs (its Lease lives there), as the Helm chart would create it
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            *(spec.manifest() for spec in self.options.nodes),
        )
        everything = list(self._processes.values())
        wait_until(
            "the controller manager to create the default ServiceAccount",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            timeout=timeout,
            processes=everything,
        )
        wait_until(
            "the scheduler to be healthy",
            lambda: self._probe(f"https://127.0.0.1:{layout.ports.scheduler}/healthz"),
            timeout=timeout,
            processes=everything,
        )
        names = [spec.name for spec in self.options.nodes]
        wait_until(
            f"nodes {names} to be Ready",
            lambda: self._nodes_ready(names),
            timeout=timeout,
            processes=everything,
        )
        self._phase("controllers, scheduler, kwok, nodes")

    def _phase(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = now - self._mark
        self._mark = now

    def stop(self) -> None:
        """Stop every process, newest first; remove the state unless asked to keep it."""
        for proc in reversed(list(self._processes.values())):
            proc.stop()
        self._processes.clear()
        if self._started and not self.options.keep_state:
            shutil.rmtree(self.layout.state_dir, ignore_errors=True)
        self._started = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in `system:masters`)."""
        return self.layout.kubeconfig("admin")

    @property
    def server(self) -> str:
        return self.layout.apiserver_url

    @property
    def audit_log(self) -> Path:
        return self.layout.audit_log

    def audit_events(
        self, *, user_agent: str = "", namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit events (newest last), optionally those of one client and/or namespace."""
        events = []
        for line in self.audit_log.read_text().splitlines():
            event: dict[str, Any] = json.loads(line)
            if user_agent and not event.get("userAgent", "").startswith(user_agent):
                continue
            if namespace is not None and event.get("objectRef", {}).get("namespace") != namespace:
                continue
            events.append(event)
        return events

    def process(self, name: str) -> ManagedProcess:
        return self._processes[name]

    def kubectl(
        self,
        *args: str,
        input_text: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.layout.binary("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def apply(self, *objects: dict[str, Any]) -> None:
        document = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=devserver-harness",
            "--force-conflicts",
            "-f",
            "-",
            input_text=json.dumps(document),
        )

    def add_nodes(self, *specs: NodeSpec, wait: bool = True) -> None:
        self.apply(*(spec.manifest() for spec in specs))
        if wait:
            names = [spec.name for spec in specs]
            wait_until(
                f"nodes {names} to be Ready",
                lambda: self._nodes_ready(names),
                timeout=30,
                processes=[self.process("kwok")],
            )

    def remove_nodes(self, *names: str) -> None:
        self.kubectl("delete", "node", "--wait=true", *names)

    def check_running(self) -> None:
        for proc in self._processes.values():
            proc.check_running()

    def _storage_class(self) -> dict[str, Any]:
        return {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": DEFAULT_STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER_NAME,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": True,
            "parameters": {"type": "gp3"},
        }

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.layout.pki
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        return context

    def _probe(self, url: str) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # component health ports use self-signed certs
        return fetch(url, timeout=2, context=context)[0] == 200

    def _get(self, path: str) -> dict[str, Any] | None:
        status, body = fetch(self.server + path, timeout=5, context=self._ssl_context())
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def _wait_apiserver(self, timeout: float) -> None:
        wait_until(
            "kube-apiserver /readyz",
            lambda: (
                fetch(self.server + "/readyz", timeout=2, context=self._ssl_context())[0] == 200
            ),
            timeout=timeout,
            processes=[self.process("etcd"), self.process("kube-apiserver")],
        )

    def _wait_etcd(self, timeout: float) -> None:
        def healthy() -> bool:
            status, body = fetch(self.layout.etcd_url + "/health", timeout=2)
            return status == 200 and json.loads(body).get("health") == "true"

        wait_until("etcd /health", healthy, timeout=timeout, processes=[self.process("etcd")])

    def _nodes_ready(self, names: Iterable[str]) -> bool:
        for name in names:
            node = self._get(f"/api/v1/nodes/{name}")
            if node is None:
                return False
            conditions = node.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
        return True
