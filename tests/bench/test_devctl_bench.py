"""Cold `devctl list` with 50 DevServers, beside `kubectl get` of the same list.

A report (`nox -s bench`), not a pass/fail timing. Every run is a new process, as a user typing
the command; median of 9. The user's kubeconfig is a token kubeconfig like the bastion writes.
Rows: the Python interpreter alone (floor), importing devctl, `devctl --help` (no API call),
`devctl list` (table), `devctl list -o json`, and kubectl (a Go binary) listing the same objects.
The only assertion: every command succeeded and listed all 50.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from devserver_harness.controlplane import LocalControlPlane
from tests.bench.scale import scaled

SERVERS, RUNS = scaled(50, 5), scaled(9, 3)
DEVCTL = str(Path(sys.prefix) / "bin" / "devctl")


def report(lines: list[str]) -> None:
    print("\n" + "\n".join(lines))  # noqa: T201


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - started, done.stdout


def test_cold_devctl_list(control_plane: LocalControlPlane) -> None:
    namespace = f"bench-devctl-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "user", "-n", namespace)
    control_plane.kubectl(
        "create",
        "role",
        "lister",
        "--verb=get,list",
        "--resource=devservers.devservers.io",
        "-n",
        namespace,
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "lister",
        "--role=lister",
        f"--serviceaccount={namespace}:user",
        "-n",
        namespace,
    )
    control_plane.apply(
        *(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServer",
                "metadata": {"name": f"dev{i:02d}", "namespace": namespace},
                "spec": {
                    "owner": "bench",
                    "flavor": "cpu-small",
                    "image": "pytorch/pytorch:2.5.1",
                    "lifecycle": {"timeToLive": "4h"},
                },
            }
            for i in range(SERVERS)
        )
    )
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "user", path=Path(f"/tmp/{namespace}.kubeconfig"), embed_ca=True
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("DEVSERVER_AUDIT_SOCKET", None)
    kubectl = control_plane.layout.binary("kubectl")
    cases = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "python -c 'import devctl'": [sys.executable, "-c", "import devserver.cli.main"],
        "devctl --help": [DEVCTL, "--help"],
        "devctl list": [DEVCTL, "list"],
        "devctl list -o json": [DEVCTL, "list", "-o", "json"],
        "kubectl get devservers": [kubectl, "get", "devservers", "-n", namespace],
    }
    lines = [f"cold commands, {SERVERS} DevServers, median of {RUNS} new processes"]
    lines.append(f"{'command':<28}{'median s':>10}{'min s':>8}{'max s':>8}")
    for label, argv in cases.items():
        times = []
        for _ in range(RUNS):
            seconds, out = timed(argv, env)
            times.append(seconds)
            if "list" in label or "get" in label:
                assert out.count("dev") >= SERVERS, out[:500]
        lines.append(
            f"{label:<28}{statistics.median(times):>10.3f}{min(times):>8.3f}{max(times):>8.3f}"
        )
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import devserver.cli.main"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.splitlines()
    top = sorted(
        (int(line.split("|")[1]), line.split("|")[2].strip())
        for line in imports
        if line.startswith("import time:") and line.split("|")[1].strip().isdigit()
    )[-6:]
    lines.append(
        "largest imports (cumulative ms): "
        + ", ".join(f"{name} {us / 1000:.0f}" for us, name in reversed(top))
    )
    report(lines)
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
