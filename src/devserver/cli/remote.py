"""Inside a dev server: `exec` (one command, its exit code), `ssh` (a terminal), `logs`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING

import click

from devserver.api.resources import DEVSERVERS, PODS
from devserver.cli.complete import complete_servers
from devserver.cli.context import Devctl
from devserver.cli.errors import DevctlError
from devserver.cli.server_text import message_of, phase_of
from devserver.client.errors import ApiError
from devserver.client.remote import STDERR, ExecSession, exit_code_from_status

if TYPE_CHECKING:
    from devserver.client.kube import KubeClient

CONTAINER = "dev"
LOGIN_SHELL = [
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi",
]


async def pod_of(client: KubeClient, namespace: str, name: str, rank: int | None = None) -> str:
    """NAME's pod (rank 0's for a distributed server, or `rank`'s), if it is running."""
    ds = await client.get(DEVSERVERS, name, namespace)
    dist = ds.spec.distributed if ds.spec.mode.value == "distributed" else None
    if rank is not None:
        if dist is None:
            raise DevctlError(f"{name} is not distributed; drop --rank.")
        if rank >= dist.world_size:
            raise DevctlError(
                f"{name} has ranks 0..{dist.world_size - 1}; pick one of them with --rank."
            )
        ready = (
            any(r.rank == rank and r.ready for r in (ds.status.ranks or [])) if ds.status else False
        )
        if not ready:
            raise DevctlError(f"rank {rank} of {name} is not ready; see `devctl monitor {name}`.")
        return f"{name}-{rank}"
    pod = ds.status.pod_name if ds.status else None
    if not pod or phase_of(ds) != "Running":
        detail = message_of(ds) or phase_of(ds)
        raise DevctlError(
            f"{name} is not running ({detail}); see `devctl describe {name}` or wait with "
            f"`devctl create --wait`."
        )
    return pod


async def _pump_output(session: ExecSession) -> None:
    async for channel, data in session.output():
        stream = sys.stderr.buffer if channel == STDERR else sys.stdout.buffer
        stream.write(data)
        stream.flush()


async def _pump_stdin(session: ExecSession) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    while data := await loop.run_in_executor(None, os.read, fd, 65536):
        await session.send_stdin(data)
    await session.close_stdin()


def _report(session: ExecSession) -> int:
    code = session.exit_code if session.exit_code is not None else 1
    # "exit status N" is only how some nodes say N; anything else means it did not run
    if (
        code != 0
        and session.message
        and exit_code_from_status({"message": session.message}) != (code, session.message)
    ):
        click.echo(f"devctl: {session.message}", err=True)
    return code


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name", shell_complete=complete_servers)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--stdin", "with_stdin", is_flag=True, help="Pass your stdin to it.")
@click.option(
    "--rank", type=click.IntRange(min=0), default=None, help="Distributed: this rank's pod."
)
@click.pass_context
def exec_(
    ctx: click.Context, name: str, command: tuple[str, ...], with_stdin: bool, rank: int | None
) -> None:
    """Run COMMAND in NAME and exit with its exit code: devctl exec mydev -- nvidia-smi"""
    devctl = ctx.ensure_object(Devctl)
    namespace = devctl.namespace()

    async def go(client: KubeClient) -> int:
        pod = await pod_of(client, namespace, name, rank)
        async with client.exec(
            namespace, pod, list(command), container=CONTAINER, stdin=with_stdin
        ) as session:
            feeder = asyncio.create_task(_pump_stdin(session)) if with_stdin else None
            try:
                await _pump_output(session)
            finally:
                if feeder is not None:
                    feeder.cancel()
            return _report(session)

    ctx.exit(devctl.run_async(go, what="exec into pods", name=name))


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option(
    "--rank", type=click.IntRange(min=0), default=None, help="Distributed: this rank's pod."
)
@click.pass_context
def ssh(ctx: click.Context, name: str, rank: int | None) -> None:
    """An interactive login shell in NAME (a terminal through the API server)."""
    devctl = ctx.ensure_object(Devctl)
    if not sys.stdin.isatty():
        raise DevctlError(
            "devctl ssh needs a terminal; to run a command use `devctl exec NAME -- CMD`."
        )
    import termios
    import tty

    namespace = devctl.namespace()

    async def go(client: KubeClient) -> int:
        pod = await pod_of(client, namespace, name, rank)
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno()
        async with client.exec(
            namespace, pod, LOGIN_SHELL, container=CONTAINER, tty=True, stdin=True
        ) as session:
            queue: asyncio.Queue[bytes] = asyncio.Queue()

            def readable() -> None:
                queue.put_nowait(os.read(fd, 65536))

            async def feed() -> None:
                while data := await queue.get():
                    await session.send_stdin(data)
                await session.close_stdin()

            resizes: set[asyncio.Task[None]] = set()

            def resized() -> None:
                size = shutil.get_terminal_size()
                task = loop.create_task(session.resize(size.columns, size.lines))
                resizes.add(task)
                task.add_done_callback(resizes.discard)

            saved = termios.tcgetattr(fd)
            # TCSADRAIN, as ssh does: what the user typed while we connected is kept and sent
            # (setraw's default, TCSAFLUSH, would throw it away)
            tty.setraw(fd, termios.TCSADRAIN)
            loop.add_reader(fd, readable)
            loop.add_signal_handler(signal.SIGWINCH, resized)
            resized()
            feeder = asyncio.create_task(feed())
            try:
                await _pump_output(session)
            finally:
                feeder.cancel()
                loop.remove_reader(fd)
                loop.remove_signal_handler(signal.SIGWINCH)
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            return _report(session)

    ctx.exit(devctl.run_async(go, what="exec into pods", name=name))


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option(
    "--rank", type=click.IntRange(min=0), default=None, help="Distributed: this rank's pod."
)
@click.option("--all", "all_ranks", is_flag=True, help="Distributed: every rank, prefixed.")
@click.pass_context
def logs(
    ctx: click.Context,
    name: str,
    follow: bool,
    tail: int | None,
    rank: int | None,
    all_ranks: bool,
) -> None:
    """The output of NAME's main process (of one rank, or of all, for a distributed server)."""
    devctl = ctx.ensure_object(Devctl)
    namespace = devctl.namespace()
    if rank is not None and all_ranks:
        raise DevctlError("pass either --rank N or --all, not both.")

    async def one(client: KubeClient, pod: str, prefix: bytes) -> None:
        query = [("container", CONTAINER)]
        if follow:
            query.append(("follow", "true"))
        if tail is not None:
            query.append(("tailLines", str(tail)))
        pending = b""
        async with client.stream(PODS.path(namespace, pod, "log"), query=query) as chunks:
            async for chunk in chunks:
                if not prefix:
                    sys.stdout.buffer.write(chunk)
                else:  # whole lines only, so ranks do not interleave mid-line
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        sys.stdout.buffer.write(prefix + line + b"\n")
                sys.stdout.flush()
        if pending:
            sys.stdout.buffer.write(prefix + pending + b"\n")

    async def go(client: KubeClient) -> None:
        ds = await client.get(DEVSERVERS, name, namespace)
        dist = ds.spec.distributed if ds.spec.mode.value == "distributed" else None
        if dist is None:
            if rank is not None or all_ranks:
                raise DevctlError(f"{name} is not distributed; drop --rank/--all.")
            await one(client, await pod_of(client, namespace, name), b"")
            return
        if rank is not None and rank >= dist.world_size:
            raise DevctlError(
                f"{name} has ranks 0..{dist.world_size - 1}; pick one of them with --rank."
            )
        if all_ranks:  # a rank without a pod (pending) says so; the others still print
            results = await asyncio.gather(
                *(
                    one(client, f"{name}-{i}", f"[rank {i}] ".encode())
                    for i in range(dist.world_size)
                ),
                return_exceptions=True,
            )
            for i, result in enumerate(results):
                if isinstance(result, ApiError):
                    click.echo(f"[rank {i}] no log: {result.message}", err=True)
                elif isinstance(result, BaseException):
                    raise result
        else:
            await one(client, f"{name}-{rank or 0}", b"")

    with contextlib.suppress(BrokenPipeError):
        devctl.run_async(go, what="read pod logs", name=name)
