"""`devserver-bastion`: one replica of the SSH bastion — sshd plus the process that feeds it.

Start order: runtime directory and host keys; then a Manager (devserver.manager) serves
/healthz, /readyz and /metrics, runs the DevUser informer and two runnables: the account sync
(one full pass — every user present, every stale account gone — then every change) and, once
that pass is done, the session agent and then sshd. sshd runs as a child in the foreground
(`-D -e`), its log lines go into ours and through sshd_log.SshdLog, which audits forwarding and
tells the agent which sshd connection a session belongs to; if sshd dies, the replica exits
non-zero and is restarted. `/readyz` is true only while sshd runs behind a synced account set;
`/healthz` fails when the watch is dead or sshd is gone. No leader election: every replica keeps
its own accounts, all of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import click
import structlog

from devserver import __version__
from devserver.api.meta import ObjectKey
from devserver.api.resources import DEVUSERS
from devserver.bastion.accounts import LocalAccounts
from devserver.bastion.ratelimit import RateLimiter
from devserver.bastion.session_agent import SessionAgent
from devserver.bastion.settings import BastionSettings
from devserver.bastion.sshd_config import (
    GENERATED_HOST_KEYS,
    HOST_KEY_TYPES,
    host_key_files,
    render_sshd_config,
)
from devserver.bastion.sshd_log import SshdLog
from devserver.bastion.sync import AccountReconciler
from devserver.bastion.tokens import TokenIssuer
from devserver.controller import Controller
from devserver.manager import Manager, RunnableFunc, Settings
from devserver.observability.bastion_metrics import BASTION_CONNECTIONS, BASTION_SESSIONS
from devserver.observability.logging import configure_logging
from devserver.observability.metrics import BUILD_INFO
from devserver.signals import run_until_signalled

log = structlog.get_logger("devserver.bastion")

SESSION_SCRIPT = Path(__file__).with_name("session.py")
ACCOUNTS_DRAIN = 15.0  # seconds the account sync may finish its reconciles on SIGTERM


class SshdFailedError(RuntimeError):
    pass


def session_command(settings: BastionSettings) -> str:
    return shlex.join(
        [
            sys.executable,
            "-I",
            "-S",
            str(SESSION_SCRIPT),
            str(settings.agent_socket),
            settings.shell,
        ]
    )


def prepare_runtime(settings: BastionSettings) -> None:
    for directory in (settings.privsep_dir, settings.runtime_dir, settings.keys_dir):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(directory, 0o755)  # noqa: S103 - sshd needs a root-owned, readable path
    # closed until the first full pass: no key file survives a restart
    for stale in settings.keys_dir.iterdir():
        stale.unlink()


async def ensure_host_keys(settings: BastionSettings) -> None:
    directory = settings.host_keys
    if settings.host_key_dir is not None:  # shared by every replica (a Secret): used as it is
        if not host_key_files(settings):
            names = ", ".join(f"ssh_host_{kind}_key" for kind in HOST_KEY_TYPES)
            raise FileNotFoundError(f"--host-key-dir {directory} holds none of {names}")
        return
    directory.mkdir(mode=0o700, exist_ok=True)
    for kind in GENERATED_HOST_KEYS:
        key = directory / f"ssh_host_{kind}_key"
        if key.exists():
            continue
        extra = ["-b", "3072"] if kind == "rsa" else []
        process = await asyncio.create_subprocess_exec(
            "ssh-keygen",
            "-q",
            "-t",
            kind,
            *extra,
            "-N",
            "",
            "-C",
            "devserver-bastion",
            "-f",
            str(key),
            stdin=asyncio.subprocess.DEVNULL,
        )
        if await process.wait() != 0:
            raise RuntimeError(f"ssh-keygen could not create {key}")


class Bastion:
    """A Manager without leader election (every replica keeps its own accounts) that runs two
    runnables: the account sync, and sshd with its session agent once the first full pass is
    done. The Manager serves the probes and /metrics and runs the DevUser informer."""

    def __init__(self, manager: Manager, settings: BastionSettings) -> None:
        self.manager, self.client, self.settings = manager, manager.client, settings
        self.users = manager.informers.informer(DEVUSERS)
        self.accounts = LocalAccounts(settings)
        self.reconciler = AccountReconciler(self.users, self.accounts, settings)
        self.controller = Controller("bastion-accounts", self.reconciler, workers=2)
        self.controller.watch(self.users)
        self.sshd: asyncio.subprocess.Process | None = None
        self.sshd_log = SshdLog(lambda: self.sshd.pid if self.sshd is not None else None)
        self._sshd_messages: socket.socket | None = None
        self._first_pass_done = asyncio.Event()
        self.manager.add_healthz_check(self.sshd_alive)
        self.manager.add_readyz_check(self.serving)
        self.manager.add_runnable(RunnableFunc("accounts", self._sync_accounts, needs_leader=False))

    # ------------------------------------------------------------------ health

    def _sshd_running(self) -> bool:
        return self.sshd is not None and self.sshd.returncode is None

    def sshd_alive(self) -> tuple[bool, str]:
        """Unhealthy once sshd, started, has exited (after the informers' own check)."""
        if self.sshd is not None and not self._sshd_running():
            return False, "sshd exited"
        return True, "ok"

    def serving(self) -> tuple[bool, str]:
        """Ready while sshd runs behind a synced account set."""
        if not self.settings.synced_marker.exists():
            return False, "accounts not synced"
        if not self._sshd_running():
            return False, "sshd not running"
        return True, "ok"

    def is_user(self, name: str) -> bool:
        return (
            self.users.store.get(ObjectKey("", name)) is not None
            and name in self.accounts.managed()
        )

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        prepare_runtime(s)
        await ensure_host_keys(s)
        ca_pem = Path(s.ca_file).read_bytes() if s.ca_file else self.client.config.ca_pem  # noqa: ASYNC240 - once, at start
        if not ca_pem:
            raise click.UsageError("no CA for users' kubeconfigs; pass --ca-file")
        agent = SessionAgent(
            socket_path=s.agent_socket,
            issuer=TokenIssuer(self.client, lifetime=s.token_lifetime),
            server=s.api_server or self.client.host,
            ca_pem=ca_pem,
            is_user=self.is_user,
            motd=s.motd,
            refresh_margin=s.token_refresh_margin,
            origin_of=self.sshd_log.session_origin,
            limiter=RateLimiter(burst=s.token_burst, rate=s.token_rate_per_minute / 60),
            public_address=s.public_address,
        )
        BASTION_SESSIONS.set_function(lambda: agent.sessions_open)
        BASTION_CONNECTIONS.set_function(lambda: len(self.sshd_log.connections))
        self.manager.add_runnable(
            RunnableFunc("sshd", partial(self._serve_ssh, agent), needs_leader=False)
        )
        await self.manager.run(stop)

    async def _sync_accounts(self, stop: asyncio.Event) -> None:
        """One full pass (every user present, every stale account gone), then every change."""
        await self.accounts.ensure_group()
        await self.controller.wait_synced()
        await self.reconciler.full_pass()
        self._first_pass_done.set()
        await self.controller.run(stop, drain_timeout=ACCOUNTS_DRAIN)

    async def _serve_ssh(self, agent: SessionAgent, stop: asyncio.Event) -> None:
        """After the first full pass: the session agent, then sshd until `stop` or its end."""
        first_pass = asyncio.create_task(self._first_pass_done.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({first_pass, stopped}, return_when=asyncio.FIRST_COMPLETED)
        first_pass.cancel()
        stopped.cancel()
        if stop.is_set():
            return
        reader: asyncio.Task[None] | None = None
        try:
            await agent.start()
            self.sshd = await self._start_sshd()
            reader = asyncio.create_task(self._read_sshd_log(self.sshd), name="sshd-log")
            sshd_exit: asyncio.Task[int] = asyncio.create_task(self.sshd.wait())
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                {sshd_exit, stopped, reader}, return_when=asyncio.FIRST_COMPLETED
            )
            sshd_exit.cancel()
            stopped.cancel()
            if reader in done:  # the log reader ended: fail loudly, restart
                reader.result()
                if not stop.is_set() and sshd_exit not in done:
                    raise SshdFailedError(f"{reader.get_name()} ended")
            if sshd_exit in done and not stop.is_set():
                raise SshdFailedError(f"sshd exited with {self.sshd.returncode}")
            log.info("stopping")
        finally:
            if self._sshd_running() and self.sshd is not None:
                self.sshd.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await self.sshd.wait()
            if reader is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    async with asyncio.timeout(15):
                        await reader
            await agent.stop()

    async def _start_sshd(self) -> asyncio.subprocess.Process:
        s = self.settings
        cat = shutil.which("cat") or "/usr/bin/cat"
        s.sshd_config.write_text(render_sshd_config(s, session_command=session_command(s), cat=cat))
        check = await asyncio.create_subprocess_exec(
            s.sshd,
            "-t",
            "-f",
            str(s.sshd_config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        if check.returncode != 0:
            raise SshdFailedError(f"sshd rejected its configuration: {output.decode().strip()}")
        # sshd's stderr is a datagram socket, not a pipe: sshd writes each log message with
        # one write(), so each arrives whole and alone, and text a client smuggled into a
        # message (a line break in a forwarding target) cannot pose as a line of its own
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                s.sshd,
                "-D",
                "-e",
                "-f",
                str(s.sshd_config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=theirs.fileno(),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sshd_messages = ours
        log.info("sshd started", pid=process.pid, listen=f"{s.listen}:{s.port}")
        return process

    async def _read_sshd_log(self, process: asyncio.subprocess.Process) -> None:
        sock = self._sshd_messages
        assert sock is not None

        async def messages() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            while data := await loop.sock_recv(sock, 65536):
                yield data

        try:
            await self.sshd_log.run(messages())
        finally:
            sock.close()


async def run(settings: BastionSettings, stop: asyncio.Event) -> None:
    manager_settings = Settings(
        kubeconfig=settings.kubeconfig,
        http_host=settings.http_host,
        http_port=settings.http_port,
        leader_election=False,
    )
    async with Manager.connect(manager_settings) as manager:
        await Bastion(manager, settings).run(stop)


def _sshd_failed(error: SshdFailedError) -> None:
    log.error("bastion stopped", reason=str(error))


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in-cluster when unset.")
@click.option("--listen", default="0.0.0.0", show_default=True, help="sshd ListenAddress.")  # noqa: S104
@click.option("--port", default=22, show_default=True, help="sshd Port.")
@click.option("--http-host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--http-port", default=8080, show_default=True, help="/healthz, /readyz, /metrics")
@click.option("--sshd", "sshd_path", default="/usr/sbin/sshd", show_default=True)
@click.option(
    "--runtime-dir",
    type=click.Path(path_type=Path),
    default=str(BastionSettings.runtime_dir),
    show_default=True,
)
@click.option(
    "--host-key-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Shared host keys (a Secret); generated when unset.",
)
@click.option("--token-lifetime", default=3600, show_default=True, help="Seconds; at least 600.")
@click.option(
    "--token-refresh-margin",
    default=600,
    show_default=True,
    help="Renew this many seconds before expiry.",
)
@click.option("--api-server", default=None, help="API server URL in users' kubeconfigs.")
@click.option("--ca-file", default=None, help="CA bundle for users' kubeconfigs.")
@click.option("--public-address", default="", help="Where users reach the bastion (NLB name).")
@click.option(
    "--per-source-max-startups",
    default=BastionSettings.per_source_max_startups,
    show_default=True,
    help="Unauthenticated connections one address block may hold (sshd).",
)
@click.option(
    "--token-burst",
    default=BastionSettings.token_burst,
    show_default=True,
    help="Tokens one user may get at once from the session agent.",
)
@click.option(
    "--token-rate-per-minute",
    default=BastionSettings.token_rate_per_minute,
    show_default=True,
    help="Tokens per minute and user once the burst is used.",
)
@click.option("--log-json/--no-log-json", default=True, show_default=True)
def main(
    kubeconfig: str | None,
    listen: str,
    port: int,
    http_host: str,
    http_port: int,
    sshd_path: str,
    runtime_dir: Path,
    host_key_dir: Path | None,
    token_lifetime: int,
    token_refresh_margin: int,
    api_server: str | None,
    ca_file: str | None,
    public_address: str,
    per_source_max_startups: int,
    token_burst: int,
    token_rate_per_minute: float,
    log_json: bool,
) -> None:
    """Run one replica of the devserver SSH bastion (as root, in its container)."""
    configure_logging(json=log_json)
    BUILD_INFO.labels(version=__version__, component="bastion").set(1)
    settings = BastionSettings(
        kubeconfig=kubeconfig,
        listen=listen,
        port=port,
        http_host=http_host,
        http_port=http_port,
        sshd=sshd_path,
        runtime_dir=runtime_dir,
        host_key_dir=host_key_dir,
        token_lifetime=token_lifetime,
        token_refresh_margin=token_refresh_margin,
        api_server=api_server,
        ca_file=ca_file,
        public_address=public_address,
        per_source_max_startups=per_source_max_startups,
        token_burst=token_burst,
        token_rate_per_minute=token_rate_per_minute,
        log_json=log_json,
    )
    run_until_signalled(partial(run, settings), SshdFailedError, _sshd_failed)
