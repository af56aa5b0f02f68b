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
from devserver.cli.output import table, until
from devserver.cli.servers import deadline_of, message_of, phase_of


def render_monitor(ds: DevServer, now: datetime) -> str:
    status = ds.status
    dist = ds.spec.distributed
    w = dist.world_size if dist else 1
    p = dist.nprocs_per_node if dist else 1
    ready = status.ready_ranks if status and status.ready_ranks is not None else 0
    head = (
        f"{ds.metadata.name}: {phase_of(ds)} — {ready}/{w} ranks ready, {w} pods x {p} "
        f"processes = {w * p} workers; time left {until(deadline_of(ds), now)}"
    )
    lines = [head]
    if message_of(ds):
        lines.append(f"  {message_of(ds)}")
    if status and status.master_addr:
        lines.append(f"  master {status.master_addr}")
    ranks = status.ranks if status and status.ranks else []
    if ranks:
        lines.append(
            table(
                [
                    [
                        str(r.rank),
                        r.pod,
                        r.node or "-",
                        "yes" if r.ready else "no",
                        str(r.restarts),
                        r.reason or "",
                    ]
                    for r in ranks
                ],
                ["RANK", "POD", "NODE", "READY", "RESTARTS", "WHY NOT"],
            )
        )
    return "\n".join(lines)


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
