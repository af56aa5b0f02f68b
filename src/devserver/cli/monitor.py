"""devctl monitor: a distributed server's ranks — pod, node, readiness, restarts — refreshing."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import click

from devserver.api.devserver import DevServer
from devserver.api.resources import DEVSERVERS
from devserver.cli.complete import complete_servers
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.output import OUTPUT_OPTION, as_data, emit, emit_frame
from devserver.cli.server_text import render_monitor
from devserver.client.blocking import BlockingKubeClient


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--watch/--once", default=True, help="Refresh until Ctrl-C (default) or print once.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True)
@OUTPUT_OPTION
@pass_devctl
def monitor(devctl: Devctl, name: str, watch: bool, interval: float, output: str) -> None:
    """Ranks of distributed server NAME: pods, nodes, readiness, restarts (refreshing).

    Watching, -o json prints a line of JSON a refresh (JSON Lines) and -o yaml a document a
    refresh; --once prints one document.
    """

    show = emit_frame if watch else emit

    def refresh(ds: DevServer) -> None:
        show(output, lambda: as_data(ds), lambda: render_monitor(ds, datetime.now(UTC)))

    def go(client: BlockingKubeClient, namespace: str) -> None:
        while True:
            refresh(client.get(DEVSERVERS, name, namespace))
            if not watch:
                return
            time.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        devctl.run_here(go, what="read dev servers", name=name)
