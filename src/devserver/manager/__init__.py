"""The operator process: `devserver-operator` builds a Manager and runs it until SIGTERM.

`app` holds the Manager (informers, controllers, leader election, health, shutdown); `leader`
the Lease-based election; this module the command line and the signal wiring.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

import click
import structlog

from devserver.api.lifecycle import parse_ttl
from devserver.client import new_client
from devserver.manager.app import Manager, Settings
from devserver.manager.leader import LeadershipLostError
from devserver.observability.logging import configure_logging
from devserver.reconcilers import register_all
from devserver.reconcilers.lifecycle_config import LifecycleConfig

__all__ = ["Manager", "Settings", "main", "run", "until_signalled"]

log = structlog.get_logger("devserver.manager")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Connect, register every reconciler, and run the manager until `stop`."""
    client = await new_client(settings.kubeconfig)
    try:
        version = await client.server_version()
        log.info("connected", server_version=version, identity=settings.identity)
        manager = Manager(client, settings)
        register_all(manager.informers, client, manager.add, settings.lifecycle)
        await manager.run(stop)
    finally:
        await client.close()


async def until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)` with `stop` set on SIGTERM or SIGINT (the operator's and the bastion's)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def _main(settings: Settings) -> None:
    await until_signalled(lambda stop: run(settings, stop))


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in-cluster when unset.")
@click.option("--http-host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--http-port", default=8080, show_default=True, help="/healthz, /readyz, /metrics")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option(
    "--lease-namespace", envvar="POD_NAMESPACE", default="devserver-system", show_default=True
)
@click.option("--lease-name", default="devserver-operator", show_default=True)
@click.option(
    "--max-lifetime",
    default="7d",
    show_default=True,
    help="Every dev server stops this long after it (re)started at the latest; 0: no cap.",
)
@click.option(
    "--warn-before",
    default="15m,5m",
    show_default=True,
    help="Warn (Event) this long before a deadline; a comma-separated list.",
)
@click.option(
    "--stopped-retention",
    default="0",
    show_default=True,
    help="Delete a DevServer stopped this long (its home volume is kept); 0: never.",
)
@click.option("--log-json/--no-log-json", default=True, show_default=True)
def main(
    kubeconfig: str | None,
    http_host: str,
    http_port: int,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    max_lifetime: str,
    warn_before: str,
    stopped_retention: str,
    log_json: bool,
) -> None:
    """devserver-operator: reconciles DevServers, flavors and users."""
    configure_logging(json=log_json)
    try:
        lifecycle = LifecycleConfig(
            max_lifetime=None if max_lifetime in ("0", "") else parse_ttl(max_lifetime),
            warn_before=tuple(parse_ttl(t) for t in warn_before.split(",") if t.strip()),
            stopped_retention=(
                None if stopped_retention in ("0", "") else parse_ttl(stopped_retention)
            ),
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    settings = Settings(
        kubeconfig=kubeconfig,
        http_host=http_host,
        http_port=http_port,
        leader_election=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        lifecycle=lifecycle,
    )
    try:
        asyncio.run(_main(settings))
    except LeadershipLostError as error:
        log.error("leadership lost; exiting so a fresh process can rejoin", error=str(error))
        sys.exit(1)
