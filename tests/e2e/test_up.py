"""`nox -s up` as a user runs it: one command up, Ctrl-C down, nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from devserver_harness.http import fetch

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_serves_a_cluster_and_ctrl_c_stops_every_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devserver_harness.up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _check_up(proc)
    finally:
        if proc.poll() is None:  # a failed check leaves nothing running behind it
            proc.kill()
            proc.communicate()


def _check_up(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    output: list[str] = []
    kubeconfig = path_dir = None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        output.append(line)
        if match := re.search(r"export KUBECONFIG=(\S+)", line):
            kubeconfig = match.group(1)
        if match := re.search(r"export PATH=(\S+):\$PATH", line):
            path_dir = match.group(1)
        if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
            break
    assert kubeconfig and path_dir, "".join(output)

    state_dir = Path(kubeconfig).parent
    children = [int(line.split()[0]) for line in (state_dir / "children").read_text().splitlines()]
    # etcd, apiserver, controller-manager, scheduler, kwok, provisioner, operator, prometheus
    assert len(children) == 8
    nodes = subprocess.run(
        [f"{path_dir}/kubectl", f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "node/gpu-a100-1" in nodes
    flavors = subprocess.run(
        [
            f"{path_dir}/kubectl",
            f"--kubeconfig={kubeconfig}",
            "get",
            "devserverflavors",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "devserverflavor.devservers.io/gpu-large" in flavors

    # Prometheus scrapes the operator, with devserver's rules loaded
    query = next(
        m.group(0) for line in output if (m := re.search(r"http://\S+/api/v1/query", line))
    )
    up = ""
    until = time.monotonic() + 60
    while '"1"' not in up and time.monotonic() < until:
        asked = query + "?query=" + quote('up{job="devserver-operator"}')
        up = fetch(asked, timeout=5)[1].decode()
        time.sleep(1)
    assert '"1"' in up, up
    rules = fetch(query.replace("/query", "/rules"), timeout=5)[1].decode()
    assert "DevserverOperatorDown" in rules

    # the bastion: a real ssh login as the demo user, with its own token
    ssh = next(line.strip() for line in output if line.strip().startswith("ssh -F"))
    whoami, tried = "", None
    until = time.monotonic() + 90  # the demo user is being provisioned (slow under CI load)
    while not whoami and time.monotonic() < until:
        tried = subprocess.run(
            [*ssh.split(), "kubectl auth whoami -o jsonpath={.status.userInfo.username}"],
            capture_output=True,
            text=True,
            check=False,
        )
        whoami = tried.stdout
        if not whoami:
            time.sleep(0.5)
    assert whoami == "system:serviceaccount:dev-demo:user-demo", (
        f"last ssh attempt: {tried.stderr if tried else ''}\n" + "".join(output)
    )

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(output) + rest
    assert "no process left behind" in rest
    assert [pid for pid in children if _alive(pid)] == []
    assert not state_dir.exists()
