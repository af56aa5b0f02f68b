"""devctl entry point: the command group; subcommands live in sibling modules."""

from __future__ import annotations

import click

from devserver import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="devctl")
def cli() -> None:
    """devctl: create, use and stop your PyTorch development servers."""


def main() -> None:
    cli()
