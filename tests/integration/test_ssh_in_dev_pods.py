"""SSH into a dev server: a real sshd, started by the entrypoint the operator ships, as the
image's own (non-root) user, admitting exactly the keys of the server's user.

There is no kubelet here, so the dev container is played as the bastion's sandbox plays its
image: a private mount namespace whose /etc/passwd has the image's user `dev`, the entrypoint
and the agent run as that user with the env and token the pod would have, against the real API
server and the operator (with the chart's ServiceAccount). The second test goes the way a
laptop does: `devctl ssh-config`'s output, ProxyJump through the real bastion, sshd in the
container behind what the Service would be (port 22 of the server's DNS name).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.podagent import __file__ as podagent_init
from devserver_harness.bastion import BastionSandbox, check_prerequisites, new_key
from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PODAGENT = Path(podagent_init).parent
UID = 61000  # the image's user, `dev`


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    try:
        check_prerequisites()  # root (mounts, another uid) and Debian's sshd
    except RuntimeError as error:
        pytest.skip(str(error))
    process = OperatorProcess(control_plane.operator_kubeconfig, ("--max-lifetime", "0"))
    process.start()
    process.wait_leading()
    yield process
    assert process.stop() == 0, process.output()[-3000:]


def _user(cp: LocalControlPlane, name: str, *keys: str) -> None:
    cp.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevUser",
            "metadata": {"name": name},
            "spec": {"email": f"{name}@example.com", "sshPublicKeys": list(keys)},
        }
    )


def _get(cp: LocalControlPlane, kind: str, name: str, ns: str) -> dict[str, Any]:
    out = cp.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


class DevContainer:
    """The dev container of server `name` in `ns`, as the user `dev` of its image."""

    def __init__(
        self, cp: LocalControlPlane, ns: str, name: str, listen: str = "127.0.0.1", port: int = 0
    ) -> None:
        # outside root's 0700 directories: the image's user must reach what the pod mounts
        root = Path(tempfile.mkdtemp(prefix="devserver-devpod-"))
        self.root, self.port, self.listen = root, port or free_port(), listen
        etc, home, run, scripts = root / "etc", root / "home", root / "run", root / "opt"
        for directory in (etc, home, run, scripts):
            directory.mkdir(parents=True)
        for script in ("agent.py", "entrypoint.sh"):  # the scripts ConfigMap's mount
            shutil.copy(PODAGENT / script, scripts / script)
        shutil.copy(cp.layout.pki.ca.cert, root / "ca.crt")  # the ServiceAccount mount
        (root / "ca.crt").chmod(0o644)
        for part in ("passwd", "group", "shadow"):
            shutil.copy(f"/etc/{part}", etc / part)
        with (etc / "passwd").open("a") as f:
            f.write(f"dev:x:{UID}:{UID}:dev:{home}:/bin/sh\n")
        with (etc / "group").open("a") as f:
            f.write(f"dev:x:{UID}:\n")
        with (etc / "shadow").open("a") as f:
            f.write("dev:NOPASSWORD:20000:0:99999:7:::\n")  # no password, not locked
        token = cp.kubectl("create", "token", f"{name}-agent", "-n", ns, "--duration=1h")
        (root / "token").write_text(token.stdout.strip())
        (root / "token").chmod(0o644)
        for path in (root, home, run):
            os.chown(path, UID, UID)
        root.chmod(0o755)
        self.keys_file = run / "ssh" / "authorized_keys"
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "DEVSERVER_AGENT": str(scripts / "agent.py"),
            "DEVSERVER_API": cp.server,
            "DEVSERVER_TOKEN_FILE": str(root / "token"),
            "DEVSERVER_CA_FILE": str(root / "ca.crt"),
            "DEVSERVER_NAMESPACE": ns,
            "DEVSERVER_LEASE": f"{name}-activity",
            "DEVSERVER_POD": f"{name}-pod",
            "DEVSERVER_SAMPLE_SECONDS": "1",
            "DEVSERVER_SSH_KEYS_SECONDS": "1",  # 10 in a pod: a removed key is out within 10 s
            "DEVSERVER_PODINFO": str(root / "podinfo"),
            "DEVSERVER_TERMINALS": str(root / "no-terminals-*"),
            # as the operator sets them for a server with SSH (pod.py), on a free port here
            "DEVSERVER_SSH_PORT": str(self.port),
            "DEVSERVER_SSH_LISTEN": listen,
            "DEVSERVER_SSH_KEYS_FILE": str(self.keys_file),
        }
        script = (
            f"for f in passwd group shadow; do mount --bind {etc}/$f /etc/$f; done; "
            f"exec setpriv --reuid={UID} --regid={UID} --clear-groups "
            # port 22 of the server's address plays the Service (22 -> the pod's 2222)
            + ("--inh-caps=+net_bind_service --ambient-caps=+net_bind_service " if port else "")
            + f"sh {scripts / 'entrypoint.sh'} sleep infinity"
        )
        self.log = (root.parent / f"{root.name}.log").open("ab")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return (self.root.parent / f"{self.root.name}.log").read_text(errors="replace")

    def ssh(self, key: Path, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", *self.options(key), "-p", str(self.port), "dev@127.0.0.1", *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def scp(self, key: Path, source: str, target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["scp", *self.options(key), "-P", str(self.port), source, target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def options(self, key: Path) -> list[str]:
        known = self.root.parent / f"{self.root.name}.known_hosts"
        return [
            "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}",
        ]  # fmt: skip

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def test_sshd_in_the_dev_container_admits_exactly_its_users_keys(
    control_plane: LocalControlPlane,
    operator: OperatorProcess,
    quota_counts_devservers: None,
    tmp_path: Path,
) -> None:
    cp = control_plane
    first, first_line = new_key(tmp_path, "sid-laptop")
    second, second_line = new_key(tmp_path, "sid-desktop")
    other, other_line = new_key(tmp_path, "tia-laptop")
    for name in ("sid", "tia"):
        cp.add_user(name, tmp_path / f"{name}.kubeconfig")  # provisioned: quota counted
    _user(cp, "sid", first_line)
    _user(cp, "tia", other_line)
    poll(lambda: _get(cp, "configmap", "devserver-ssh-keys", "dev-sid"), 30, "sid's keys")
    cp.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": "box", "namespace": "dev-sid"},
            "spec": {"owner": "sid", "flavor": "cpu-small", "image": "busybox", "enableSSH": True},
        }
    )
    poll(lambda: _get(cp, "role", "box-agent", "dev-sid"), 30, "the agent's Role")
    container = DevContainer(cp, "dev-sid", "box")
    try:
        poll(lambda: container.ssh(first, "true").returncode == 0, 30, "sshd admitting sid")
        said = container.ssh(first, "id", "-un")
        assert said.stdout.strip() == "dev", said.stderr  # the image's user, not root
        assert container.ssh(other, "true").returncode == 255  # another user's key: never

        # scp both ways (the SFTP protocol of OpenSSH 9, as VS Code's file transfers)
        (tmp_path / "up.txt").write_text("to the dev server\n")
        up = container.scp(first, str(tmp_path / "up.txt"), "dev@127.0.0.1:up.txt")
        assert up.returncode == 0, up.stderr
        assert (container.root / "home" / "up.txt").read_text() == "to the dev server\n"
        down = container.scp(first, "dev@127.0.0.1:up.txt", str(tmp_path / "down.txt"))
        assert down.returncode == 0 and (tmp_path / "down.txt").read_text().startswith("to the")

        # a key added to the DevUser works, and a key removed stops working within seconds
        _user(cp, "sid", second_line)
        started = time.monotonic()
        poll(lambda: container.ssh(second, "true").returncode == 0, 30, "the added key")
        poll(lambda: container.ssh(first, "true").returncode == 255, 30, "the removed key out")
        took = time.monotonic() - started
        print(f"\nkey change effective in the pod after {took:.1f} s")  # noqa: T201
        assert took < 15

        # options in a DevUser's key never reach sshd: no forced command, no other key
        _user(cp, "sid", f'command="echo pwned" {second_line}')
        poll(lambda: container.ssh(second, "true").returncode == 255, 30, "an option refused")
        assert container.keys_file.read_text() == ""
    except BaseException:
        print(container.output()[-4000:])  # noqa: T201
        raise
    finally:
        container.stop()
        cp.kubectl("delete", "devserver.devservers.io", "box", "-n", "dev-sid", check=False)


def test_ssh_scp_and_vs_code_reach_the_dev_server_through_the_bastion(
    control_plane: LocalControlPlane,
    operator: OperatorProcess,
    quota_counts_devservers: None,
    tmp_path: Path,
) -> None:
    """The laptop's way: `devctl ssh-config` (its Host entries as VS Code Remote-SSH reads
    them), ProxyJump through the bastion, sshd in the dev container on the server's port 22."""
    cp = control_plane
    key, line = new_key(tmp_path, "uli-laptop")
    config = cp.add_user("uli", tmp_path / "uli.kubeconfig")
    _user(cp, "uli", line)
    cp.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": "code", "namespace": "dev-uli"},
            "spec": {"owner": "uli", "flavor": "cpu-small", "image": "busybox", "enableSSH": True},
        }
    )
    poll(lambda: _get(cp, "role", "code-agent", "dev-uli"), 30, "the agent's Role")
    bastion = BastionSandbox(cp).start()
    container = DevContainer(cp, "dev-uli", "code", listen="127.0.0.8", port=22)
    try:
        # the cluster's DNS, as the bastion's pod would resolve the Service
        with (bastion.root / "etc" / "hosts").open("a") as hosts:
            hosts.write("127.0.0.8 code.dev-uli.svc.cluster.local\n")
        made = subprocess.run(
            [str(Path(sys.prefix) / "bin" / "devctl"), "--kubeconfig", str(config),
             "ssh-config", "--bastion", f"127.0.0.1:{bastion.port}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "Host code.devserver" in made and "User dev" in made
        laptop = tmp_path / "ssh_config"
        laptop.write_text(
            made + "\n\nHost *\n"  # what the laptop's own config adds: its key and known hosts
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {tmp_path / 'known_hosts'}\n"
            "  StrictHostKeyChecking accept-new\n"
        )

        def ssh(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*argv], capture_output=True, text=True, timeout=60, check=False)

        poll(
            lambda: ssh("ssh", "-F", str(laptop), "code.devserver", "true").returncode == 0,
            60,
            "ssh through the bastion",
        )
        said = ssh("ssh", "-F", str(laptop), "code.devserver", "id -un; echo $HOME")
        assert said.stdout.split() == ["dev", str(container.root / "home")], said.stderr
        (tmp_path / "model.py").write_text("print('hello from the laptop')\n")
        up = ssh("scp", "-F", str(laptop), str(tmp_path / "model.py"), "code.devserver:model.py")
        assert up.returncode == 0, up.stderr
        run = ssh("ssh", "-F", str(laptop), "code.devserver", "python3 model.py")
        assert run.stdout.strip() == "hello from the laptop", run.stderr
        down = ssh("scp", "-F", str(laptop), "code.devserver:model.py", str(tmp_path / "back.py"))
        assert down.returncode == 0 and (tmp_path / "back.py").read_text().startswith("print")
        # rsync over the same ssh, both ways (a data directory, as ML engineers sync them)
        data = tmp_path / "data"
        data.mkdir()
        for i in range(3):
            (data / f"shard-{i}.txt").write_text(f"shard {i}\n")
        transport = f"ssh -F {laptop}"
        sent = ssh("rsync", "-a", "-e", transport, f"{data}/", "code.devserver:data/")
        assert sent.returncode == 0, sent.stderr
        assert sorted(p.name for p in (container.root / "home" / "data").iterdir()) == [
            "shard-0.txt", "shard-1.txt", "shard-2.txt"
        ]  # fmt: skip
        back = tmp_path / "back"
        got = ssh("rsync", "-a", "-e", transport, "code.devserver:data/", f"{back}/")
        assert got.returncode == 0 and (back / "shard-2.txt").read_text() == "shard 2\n"
    except BaseException:
        print(container.output()[-3000:], bastion.output()[-3000:])  # noqa: T201
        raise
    finally:
        container.stop()
        bastion.stop()
        cp.kubectl("delete", "devserver.devservers.io", "code", "-n", "dev-uli", check=False)
