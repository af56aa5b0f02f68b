"""devctl entry point: the command group and its global options; commands live beside it."""

from __future__ import annotations

import sys
import time

import click

from devserver import __version__
from devserver.cli.admin import admin
from devserver.cli.complete import completion
from devserver.cli.context import Devctl
from devserver.cli.environment import info, status, test_k8s
from devserver.cli.flavors import flavors
from devserver.cli.lifecycle import cost, extend, start, stop
from devserver.cli.monitor import monitor
from devserver.cli.quota import quota
from devserver.cli.remote import exec_, logs, ssh
from devserver.cli.servers import create, delete, describe, list_, update
from devserver.cli.sshconfig import ssh_config
from devserver.observability.audit import report_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devctl")
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    default=None,
    help="Kubeconfig (on the bastion: your own, renewed while you are logged in).",
)
@click.option("--context", default=None, help="Kubeconfig context (default: the current one).")
@click.option(
    "-n", "--namespace", default=None, help="Namespace (default: the context's, e.g. dev-<you>)."
)
@click.pass_context
def cli(
    ctx: click.Context, kubeconfig: str | None, context: str | None, namespace: str | None
) -> None:
    """devctl: create, use and stop your PyTorch development servers."""
    if kubeconfig and len(kubeconfig.split(":")) > 1:
        kubeconfig = None  # a KUBECONFIG list: let the loader merge it
    ctx.obj = Devctl(kubeconfig=kubeconfig, context=context, namespace_flag=namespace)


for command in (
    status,
    info,
    test_k8s,
    flavors,
    create,
    list_,
    describe,
    delete,
    update,
    stop,
    start,
    extend,
    cost,
    quota,
    monitor,
):
    cli.add_command(command)
cli.add_command(exec_, "exec")
cli.add_command(ssh)
cli.add_command(logs)
cli.add_command(ssh_config)
cli.add_command(completion)
cli.add_command(admin)


def main() -> None:
    """Run devctl; on the bastion, every command also leaves one audit line."""
    started, code = time.monotonic(), 1
    try:
        cli.main(prog_name="devctl")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        raise
    except Exception as error:  # noqa: BLE001 - the promise: one sentence, never a traceback
        first = (str(error).strip().splitlines() or [""])[0][:200]
        click.echo(
            f"devctl: something unexpected went wrong ({type(error).__name__}: {first}); "
            "run it again, and if it persists report it with the command you ran",
            err=True,
        )
        raise SystemExit(1) from None
    finally:
        report_command(["devctl", *sys.argv[1:]], code, time.monotonic() - started)
