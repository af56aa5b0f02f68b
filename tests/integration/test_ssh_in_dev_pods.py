"""SSH into a dev server: a real sshd, started by the entrypoint the operator ships, as the
image's own (non-root) user, admitting exactly the keys of the server's user.

There is no kubelet here, so the dev container is played as the bastion's sandbox plays its
image: a private mount namespace whose /etc/passwd has the image's user `dev`, the entrypoint
and the agent run as that user with the env and token the pod would have, against the real API
server and the operator (with the chart's ServiceAccount). Not yet through the bastion: the
ProxyJump leg (`devctl ssh-config`) is the next step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.podagent import __file__ as podagent_init
from devserver_harness.bastion import check_prerequisites, new_key
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

    def __init__(self, cp: LocalControlPlane, ns: str, name: str) -> None:
        # outside root's 0700 directories: the image's user must reach what the pod mounts
        root = Path(tempfile.mkdtemp(prefix="devserver-devpod-"))
        self.root, self.port = root, free_port()
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
            "DEVSERVER_PODINFO": str(root / "podinfo"),
            "DEVSERVER_TERMINALS": str(root / "no-terminals-*"),
            # as the operator sets them for a server with SSH (pod.py), on a free port here
            "DEVSERVER_SSH_PORT": str(self.port),
            "DEVSERVER_SSH_LISTEN": "127.0.0.1",
            "DEVSERVER_SSH_KEYS_FILE": str(self.keys_file),
        }
        script = (
            f"for f in passwd group shadow; do mount --bind {etc}/$f /etc/$f; done; "
            f"exec setpriv --reuid={UID} --regid={UID} --clear-groups "
            f"sh {scripts / 'entrypoint.sh'} sleep infinity"
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
