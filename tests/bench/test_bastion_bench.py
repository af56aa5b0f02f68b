"""100 concurrent SSH logins through the bastion, beside a bare sshd on the same machine.

A report (`nox -s bench`), not a pass/fail timing. Same sandbox, same users, same hardened
sshd_config, same command (`id -un`) — in the same run:

A. the bastion: AuthorizedKeysCommand, the session wrapper, a fresh TokenRequest per login,
   `~/.kube/config` written, one audit line per session;
B. the floor: a second sshd in the bastion's namespace with that config minus the wrapper
   (no ForceCommand) and with the key files read directly (AuthorizedKeysFile).

20 users x 5 logins, all started at once, for two client key exchanges: OpenSSH 9.x's default
(the post-quantum sntrup761x25519 hybrid, whose key generation costs the *client* ~60 ms of CPU)
and curve25519. Clients, sshd, the bastion and the control plane share this machine's 2 cores,
so CPU seconds per part are reported too. The only assertions: every login succeeded.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from devserver.api.resources import DEVUSERS
from devserver.client import KubeClient
from devserver_harness.bastion import BastionSandbox, new_key
from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.operator import operator_in_process
from devserver_harness.pytest_plugin import wait_for
from tests.bench.scale import scaled

USERS, LOGINS_EACH = scaled(20, 2), 5
KEX = {
    "default (sntrup761x25519)": "sntrup761x25519-sha512@openssh.com",
    "curve25519": "curve25519-sha256",
}


def report(lines: list[str]) -> None:
    print("\n" + "\n".join(lines))  # noqa: T201


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all cores spent not idle (from /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


@pytest_asyncio.fixture(scope="module")
async def bastion(
    control_plane: LocalControlPlane, quota_counts_devservers: None
) -> AsyncIterator[BastionSandbox]:
    async with operator_in_process(control_plane.kubeconfig):
        sandbox = BastionSandbox(control_plane).start()
        try:
            yield sandbox
        finally:
            sandbox.stop()


@pytest.fixture(scope="module")
def floor_sshd(bastion: BastionSandbox) -> Iterator[int]:
    """The baseline sshd: the bastion's config without the wrapper; its port."""
    config = bastion.read("/run/devserver-bastion/sshd_config")
    port = free_port()
    lines = []
    for line in config.splitlines():
        if line.startswith(("ForceCommand", "AuthorizedKeysCommand")):
            continue
        if line.startswith("AuthorizedKeysFile"):
            line = "AuthorizedKeysFile /run/devserver-bastion/keys/%u"
        elif line.startswith("Port "):
            line = f"Port {port}"
        elif line.startswith("PidFile"):
            line = "PidFile /run/devserver-bastion/floor.pid"
        lines.append(line)
    bastion.write("/run/devserver-bastion/floor_config", "\n".join(lines) + "\n")
    process = subprocess.Popen(
        [
            "nsenter",
            "-t",
            str(bastion.pid),
            "-m",
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            "/run/devserver-bastion/floor_config",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    known = bastion.known_hosts.read_text().splitlines()[0].split(" ", 1)[1]
    with bastion.known_hosts.open("a") as hosts:
        hosts.write(f"[127.0.0.1]:{port} {known}\n")
    time.sleep(0.5)
    try:
        yield port
    finally:
        process.terminate()
        process.wait()


async def test_a_hundred_concurrent_logins(
    bastion: BastionSandbox,
    floor_sshd: int,
    kube: KubeClient,
    control_plane: LocalControlPlane,
    tmp_path: Path,
) -> None:
    names = [f"bench{i:02d}" for i in range(USERS)]
    keys = {}
    for name in names:
        key, public = new_key(tmp_path, name)
        keys[name] = key
        await kube.create(
            DEVUSERS,
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": name},
                "spec": {"email": f"{name}@example.com", "sshPublicKeys": [public]},
            },
        )
    for name in names:
        await wait_for(
            lambda n=name: _ok(bastion, n, keys[n], bastion.port), timeout=90, what=f"{name} in"
        )
    apiserver = control_plane.process("kube-apiserver").pid
    assert apiserver is not None
    lines = [
        "100 concurrent SSH logins (20 users x 5), command `id -un`, this machine's 2 cores",
        f"{'client kex':<27}{'target':<9}{'p50 s':>7}{'p99 s':>7}{'all s':>7}"
        f"{'1 login s':>10}{'clients':>9}{'bastion':>9}{'apiserver':>10}{'server/login':>14}",
    ]
    for label, kex in KEX.items():
        for target, port in (("bastion", bastion.port), ("floor", floor_sshd)):
            single = []
            for _ in range(5):
                started = time.monotonic()
                assert await _ok(bastion, names[0], keys[names[0]], port, kex)
                single.append(time.monotonic() - started)
            before = (
                children_cpu(),
                cpu_seconds(bastion.pid),
                cpu_seconds(apiserver),
                machine_busy(),
            )
            started = time.monotonic()
            results = await asyncio.gather(
                *(
                    _login(bastion, name, keys[name], port, kex)
                    for name in names
                    for _ in range(LOGINS_EACH)
                )
            )
            wall = time.monotonic() - started
            after = (
                children_cpu(),
                cpu_seconds(bastion.pid),
                cpu_seconds(apiserver),
                machine_busy(),
            )
            assert all(ok for ok, _ in results), "every login must succeed"
            seconds = sorted(s for _, s in results)
            cpu = [b - a for a, b in zip(before, after, strict=True)]
            p99 = seconds[round(0.99 * (len(seconds) - 1))]
            lines.append(
                f"{label:<27}{target:<9}{statistics.median(seconds):>7.2f}{p99:>7.2f}"
                f"{wall:>7.2f}{statistics.median(single):>10.3f}"
                f"{cpu[0]:>9.2f}{cpu[1]:>9.2f}{cpu[2]:>10.2f}"
                f"{(cpu[3] - cpu[0]) / len(results) * 1000:>11.1f} ms"
            )
    lines.append(
        "CPU seconds: clients = the 100 ssh processes (on users' laptops in production); "
        "bastion = its Python process (agent, account sync, sshd's log); server/login = all "
        "CPU the machine spent minus the clients', per login (sshd, wrapper, agent, API server)."
    )
    report(lines)


async def _login(
    bastion: BastionSandbox, user: str, key: Path, port: int, kex: str
) -> tuple[bool, float]:
    argv = bastion.ssh_argv(user, key, "-o", f"KexAlgorithms={kex}")
    argv[argv.index("-p") + 1] = str(port)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        "id -un",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return process.returncode == 0 and out.decode().strip() == user, time.monotonic() - started


async def _ok(
    bastion: BastionSandbox, user: str, key: Path, port: int, kex: str = KEX["curve25519"]
) -> bool:
    return (await _login(bastion, user, key, port, kex))[0]
