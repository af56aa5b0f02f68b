"""`nox -s up`: the local platform in the foreground until Ctrl-C.

The control plane with EKS-like node groups, the CRDs and default flavors, the operator, and —
where this machine allows it (root, sshd, unshare) — the SSH bastion with a `demo` user whose
key is generated for you; a Prometheus scraping them (and the API server) with devserver's
rules. Ctrl-C (or SIGTERM) stops every process it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from devserver.observability.rules import rule_groups
from devserver_harness.bastion import BastionSandbox, BastionUnavailableError, new_key
from devserver_harness.binaries import read_versions, tools_dir
from devserver_harness.controlplane import LocalControlPlane, repo_root
from devserver_harness.prometheus import PrometheusServer


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep-state", action="store_true", help="keep logs and etcd data")
    parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    cluster = LocalControlPlane()
    bastion: BastionSandbox | None = None
    prometheus: PrometheusServer | None = None
    try:
        cluster.start()
        cluster.install_devserver()
        operator_url = cluster.run_operator()
        bastion, bastion_text = _start_bastion(cluster)
        jobs = {"devserver-operator": [operator_url.removeprefix("http://")]}
        if bastion is not None:
            jobs["devserver-bastion"] = [f"127.0.0.1:{bastion.http_port}"]
        prometheus = PrometheusServer(cluster, jobs, rule_groups(), interval="5s").start()
    except KeyboardInterrupt:
        if prometheus is not None:
            prometheus.stop()
        if bastion is not None:
            bastion.stop()
        cluster.stop()
        return 130
    signal.signal(signal.SIGINT, on_signal)
    try:
        version = read_versions((tools_dir() / "go.mod").read_text()).kubernetes
        _say(
            f"""
devserver local platform is up ({cluster.start_seconds:.1f} s): {cluster.server}
  ({", ".join(f"{name} {seconds:.1f} s" for name, seconds in cluster.timings.items())})

  export KUBECONFIG={cluster.kubeconfig}
  export PATH={cluster.layout.bin_dir}:$PATH   # kubectl {version} for this cluster

The operator is running ({operator_url}/metrics) with the Helm release `devserver`
(CRDs, default flavors, RBAC; the chart is charts/devserver).

Try:
  kubectl get devserverflavors
  kubectl apply -f {repo_root() / "manifests" / "samples" / "devserver.yaml"}
  kubectl get devservers -w
  kubectl patch devsrv mydev --type=merge -p '{{"spec":{{"flavor":"gpu-small"}}}}'   # same home
  kubectl get nodes -L node.kubernetes.io/instance-type,topology.kubernetes.io/zone

{bastion_text}
Prometheus 3.16 scrapes the operator, the bastion and the API server with devserver's rules:
  {prometheus.url}/api/v1/query?query=devserver_servers   (API only: no web UI in this build)
  {prometheus.url}/api/v1/alerts
  Dashboards to import into a Grafana of yours: {repo_root() / "manifests" / "monitoring"}

Logs (operator too): {cluster.layout.logs}   Audit log: {cluster.audit_log}
Ctrl-C stops everything.
"""
        )
        while not stop.wait(1):
            cluster.check_running()
    except RuntimeError as error:  # a component died: say which, with its log tail
        _say(f"error: {error}")
        return 1
    finally:
        _say("stopping the local platform ...")
        prometheus.stop()
        if bastion is not None:
            bastion.stop()
        cluster.stop()
        _say("stopped; no process left behind.")
    return 0


def _start_bastion(cluster: LocalControlPlane) -> tuple[BastionSandbox | None, str]:
    """The bastion and a `demo` DevUser with a fresh key; what to tell the user."""
    try:
        bastion = BastionSandbox(cluster)
    except BastionUnavailableError as error:
        return None, f"The SSH bastion is not started: {error}.\n"
    _say("waiting for the quota controller to count DevServers (once per cluster, <= 30 s) ...")
    cluster.wait_quota_counts_devservers()
    bastion.start()
    key, public = new_key(cluster.layout.state_dir, "demo")
    cluster.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevUser",
            "metadata": {"name": "demo"},
            "spec": {"email": "demo@example.com", "sshPublicKeys": [public]},
        }
    )
    ssh = " ".join(bastion.ssh_argv("demo", key))
    return bastion, (
        "The SSH bastion runs on 127.0.0.1:"
        f"{bastion.port} (a real sshd; user `demo`, key generated for you):\n"
        f"  {ssh}\n"
        "  then: kubectl get devservers; devctl --help\n"
    )


if __name__ == "__main__":
    sys.exit(main())
