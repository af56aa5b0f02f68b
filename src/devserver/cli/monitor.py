"""devctl monitor: a distributed server's ranks — pod, node, readiness, restarts — refreshing."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import click

from devserver.api.resources import DEVSERVERS
from devserver.cli.complete import complete_servers
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.server_text import render_monitor


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--watch/--once", default=True, help="Refresh until Ctrl-C (default) or print once.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True)
@pass_devctl
def monitor(devctl: Devctl, name: str, watch: bool, interval: float) -> None:
    """Ranks of distributed server NAME: pods, nodes, readiness, restarts (refreshing)."""

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        while True:
            ds = client.get(DEVSERVERS, name, namespace)
            text = render_monitor(ds, datetime.now(UTC))
            if watch:
                click.echo("\033[H\033[2J" + text, nl=True)  # clear and redraw, like `watch`
            else:
                click.echo(text)
                return
            time.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        devctl.run(go, what="read dev servers", name=name)
