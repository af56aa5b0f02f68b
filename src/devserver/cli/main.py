"""devctl entry point: the command group; subcommands live in sibling modules."""

from __future__ import annotations

import click

from devserver import __version__
from devserver.cli.admin import admin


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
    cli()
