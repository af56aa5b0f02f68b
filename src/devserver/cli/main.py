"""devctl entry point: the command group; subcommands live in sibling modules."""

from __future__ import annotations

import sys
import time

import click

from devserver import __version__
from devserver.cli.admin import admin
from devserver.observability.audit import report_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devctl")
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    default=None,
    help="Kubeconfig (on the bastion: your own, refreshed at login).",
)
@click.pass_context
def cli(ctx: click.Context, kubeconfig: str | None) -> None:
    """devctl: create, use and stop your PyTorch development servers."""
    ctx.obj = {"kubeconfig": kubeconfig}


cli.add_command(admin)


def main() -> None:
    """Run devctl; on the bastion, every command also leaves one audit line."""
    started, code = time.monotonic(), 1
    try:
        cli.main(prog_name="devctl")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        raise
    finally:
        report_command(["devctl", *sys.argv[1:]], code, time.monotonic() - started)
