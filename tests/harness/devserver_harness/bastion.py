"""devserver-bastion on this machine, as its container would run it — with a real sshd.

The bastion adds Linux accounts, writes their homes and runs sshd as root; on a shared test
machine that must not touch the host. So it runs in a private mount namespace that looks like
its image: a copy of /etc (useradd writes there; the container layer, new at every start), its
own /home, /tmp, /var/tmp and /dev/shm (the pod's emptyDirs: they outlive a `restart()`), an
empty /run, /usr/local/bin holding kubectl and devctl, and /root replaced by an empty, traversable
directory into which only the Python runtime and the venv are bound back (users must be able to
run devctl; nothing else of root's — the cluster's keys, kubeconfigs — is visible to them).
Processes, network and kernel are the host's: sshd listens on loopback, sessions are real
processes with their own uids.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import devserver
from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.http import fetch
from devserver_harness.process import wait_until

SSHD = "/usr/sbin/sshd"
UID_MIN = 200000  # BastionSettings.uid_min
# the pod's emptyDirs, kept under the sandbox's root: (directory there, mount point, mode)
# (mounted in this order: /tmp, which hides the sandbox's own root, last)
# as the kubelet makes them: 0777, no sticky bit (the bastion must fix that itself)
VOLUMES = (
    ("home", "/home", 0o777),
    ("shm", "/dev/shm", 0o777),
    ("vartmp", "/var/tmp", 0o777),
    ("tmp", "/tmp", 0o777),
)
INSIDE = "/run/devserver-sandbox"  # the sandbox's root as the bastion sees it


class BastionUnavailableError(RuntimeError):
    pass


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BastionUnavailableError("the bastion tests need root (accounts, sshd, mounts)")
    if not Path(SSHD).exists():
        raise BastionUnavailableError(
            f"{SSHD} is missing: install Debian's openssh-server "
            "(`apt-get install -y openssh-server`; .ci/run does this)"
        )
    if shutil.which("unshare") is None:
        raise BastionUnavailableError("unshare (util-linux) is missing")


# what the SSH tests run besides Python, by the file each package installs
DEBIAN_PACKAGES = {SSHD: "openssh-server", "/usr/bin/rsync": "rsync"}


def ensure_sshd() -> str:
    """Debian's openssh-server (and rsync, which `rsync -e ssh` needs at both ends), installed
    with the machine's own apt configuration if missing."""
    missing = [package for path, package in DEBIAN_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return "present"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BastionUnavailableError(
            f"{', '.join(missing)} missing and cannot be installed here (needs root and "
            f"apt-get): install {' '.join(missing)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    return f"installed {' '.join(missing)}"


@dataclass(frozen=True)
class SshResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class BastionSandbox:
    def __init__(
        self,
        control_plane: LocalControlPlane,
        *,
        token_lifetime: int = 3600,
        token_refresh_margin: int = 600,
    ) -> None:
        check_prerequisites()
        self.control_plane = control_plane
        self.kubectl = control_plane.layout.bin_dir / "kubectl"
        self.token_lifetime = token_lifetime
        self.token_refresh_margin = token_refresh_margin
        self.root = Path(tempfile.mkdtemp(prefix="devserver-bastion-"))
        self.port = free_port()
        self.http_port = free_port()
        self.log = self.root / "bastion.log"
        self.known_hosts = self.root / "known_hosts"
        self._proc: subprocess.Popen[bytes] | None = None
        self._mount_ns = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60) -> BastionSandbox:
        """Start the replica; again after `halt()`, it is a restarted container: new /etc (no
        accounts), the same volumes."""
        root = self.root
        shutil.rmtree(root / "etc", ignore_errors=True)
        shutil.copytree("/etc", root / "etc", symlinks=True)
        for name in ("run", "bin", "rootorig", "runtime"):
            (root / name).mkdir(exist_ok=True)
        for name, _mountpoint, mode in VOLUMES:
            (root / name).mkdir(exist_ok=True)
            os.chmod(root / name, mode)
        tools = (("kubectl", self.kubectl), ("devctl", Path(sys.prefix) / "bin" / "devctl"))
        for tool, target in tools:
            if not (root / "bin" / tool).is_symlink():
                os.symlink(target, root / "bin" / tool)
        kubeconfig = root / "bastion.kubeconfig"
        if not kubeconfig.exists():
            self.control_plane.service_account_kubeconfig(
                "devserver-system",
                "devserver-bastion",
                duration="24h",
                path=kubeconfig,
                embed_ca=True,
            )
        argv = [
            sys.executable,
            "-m",
            "devserver.bastion",
            f"--kubeconfig={INSIDE}/bastion.kubeconfig",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            "--http-host=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--token-lifetime={self.token_lifetime}",
            f"--token-refresh-margin={self.token_refresh_margin}",
            f"--public-address=127.0.0.1:{self.port}",
        ]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-euc",
                    self._namespace_script(argv),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise BastionUnavailableError(f"bastion exited early:\n{self.output()}")
            return fetch(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2)[0] == 200

        try:
            wait_until("bastion /readyz", ready, timeout=timeout)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.output()}") from None
        self._mount_ns = os.readlink(f"/proc/{self.pid}/ns/mnt")
        host_key = self._in_namespace_path(
            "/run/devserver-bastion/hostkeys/ssh_host_ed25519_key.pub"
        )
        kind, blob = host_key.split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return self

    def _namespace_script(self, argv: list[str]) -> str:
        root = self.root
        needed = {
            Path(sys.base_prefix).resolve(),
            Path(sys.prefix),
            Path(sys.prefix).resolve(),
            Path(devserver.__file__).resolve().parents[1],  # src/ of an editable install
            self.kubectl.parent.resolve(),
        }
        under_root = sorted(p for p in needed if p.is_relative_to("/root"))
        lines = [
            f"mount --bind {root / 'etc'} /etc",
            f"mount --bind {root / 'bin'} /usr/local/bin",
            "mount -t tmpfs -o mode=755 tmpfs /run",
            f"mkdir {INSIDE}",
            f"mount --bind {root} {INSIDE}",  # root is 0700: nothing in it is the users'
            f"mount --bind /root {root / 'rootorig'}",
            "mount -t tmpfs -o mode=755 tmpfs /root",
        ]
        for path in under_root:
            inner = path.relative_to("/root")
            lines += [
                f"mkdir -p {shlex.quote(str(path))}",
                f"mount --bind {shlex.quote(str(root / 'rootorig' / inner))} "
                f"{shlex.quote(str(path))}",
            ]
        # the volumes hide what lies under their mount points: the interpreter, the repo or
        # the tools may live under /tmp (a CI clone does); keep those visible at their paths
        hidden = {
            name: sorted(p for p in needed if p.is_relative_to(mountpoint))
            for name, mountpoint, _mode in VOLUMES
        }
        for name, mountpoint, _mode in VOLUMES:
            if hidden[name]:
                lines += [
                    f"mkdir -p {INSIDE}/orig-{name}",
                    f"mount --bind {mountpoint} {INSIDE}/orig-{name}",
                ]
        for name, mountpoint, _mode in VOLUMES:  # last: /tmp hides the sandbox's root
            lines.append(f"mount --bind {root / name} {mountpoint}")
        for name, mountpoint, _mode in VOLUMES:
            for path in hidden[name]:
                rel = shlex.quote(str(path.relative_to(mountpoint)))
                lines += [
                    f"mkdir -p {shlex.quote(str(path))}",
                    f"mount --bind {INSIDE}/orig-{name}/{rel} {shlex.quote(str(path))}",
                ]
        lines.append(f"exec {shlex.join(argv)}")
        return "\n".join(lines)

    @property
    def pid(self) -> int:
        """The bastion's process; its mount namespace is the sandbox (`nsenter -t pid -m`)."""
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def write(self, path: str, text: str) -> None:
        (Path(f"/proc/{self.pid}/root") / path.lstrip("/")).write_text(text)

    def _in_namespace_path(self, path: str) -> str:
        """Read a file the bastion wrote inside its namespace (through its /proc root)."""
        assert self._proc is not None
        return (Path(f"/proc/{self._proc.pid}/root") / path.lstrip("/")).read_text()

    def read(self, path: str) -> str:
        return self._in_namespace_path(path)

    def exists(self, path: str) -> bool:
        assert self._proc is not None
        return (Path(f"/proc/{self._proc.pid}/root") / path.lstrip("/")).exists()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def accounts(self) -> dict[str, tuple[int, int]]:
        """The bastion's users' accounts: name → (uid, gid)."""
        found = {}
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[2].isdigit() and int(fields[2]) >= UID_MIN:
                found[fields[0]] = (int(fields[2]), int(fields[3]))
        return found

    def uids(self) -> list[int]:
        return [uid for uid, _gid in self.accounts().values()]

    def halt(self) -> None:
        """Stop the replica and everything in its mount namespace; keep its volumes."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # what outlives the bastion (sessions, an sshd of a killed bastion, a benchmark's
        # second sshd) dies with the sandbox: every process in its mount namespace (not by
        # uid: another replica's users have the same uids)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._mount_ns:
                try:
                    if os.readlink(entry / "ns" / "mnt") == self._mount_ns:
                        os.kill(int(entry.name), 9)
                except OSError:
                    continue

    def stop(self) -> None:
        self.halt()
        if os.environ.get("DEVSERVER_KEEP_STATE") != "1":
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ clients

    def ssh_argv(self, user: str, key: Path, *extra: str) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            *extra,
            f"{user}@127.0.0.1",
        ]

    async def ssh(
        self,
        user: str,
        key: Path,
        command: str,
        *,
        extra: tuple[str, ...] = (),
        timeout: float = 60,
        stdin: bytes | None = None,
    ) -> SshResult:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *self.ssh_argv(user, key, *extra),
            command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate(stdin)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return SshResult(
            process.returncode or 0, out.decode(), err.decode(), time.monotonic() - started
        )


def new_key(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key pair for a test user: (private key path, public key line)."""
    key = directory / f"{name}_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)],
        check=True,
    )
    return key, (directory / f"{name}_ed25519.pub").read_text().strip()
