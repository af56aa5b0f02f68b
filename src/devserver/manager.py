"""The operator process: connect, (later) start informers and reconcilers, serve health/metrics.

Today it is the skeleton later issues fill in: it connects to the API server, reports ready
once it has, serves /healthz, /readyz and /metrics, and on SIGTERM or SIGINT stops and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import click
import structlog

from devserver.client import new_client
from devserver.observability.http import HealthEndpoints
from devserver.observability.logging import configure_logging

log = structlog.get_logger("devserver.manager")


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and Prometheus reach the pod IP
    http_port: int = 8080


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set."""
    ready = False
    endpoints = HealthEndpoints(
        healthz=lambda: (True, "ok"),
        readyz=lambda: (ready, "ok" if ready else "connecting to the API server"),
    )
    server = await endpoints.serve(settings.http_host, settings.http_port)
    try:
        kube = await new_client(settings.kubeconfig)
        try:
            version = await kube.server_version()
            ready = True
            log.info("connected", server_version=version, http_port=settings.http_port)
            await stop.wait()
            log.info("stopping")
        finally:
            await kube.close()
    finally:
        server.close()
        await server.wait_closed()


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in-cluster when unset.")
@click.option("--http-host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--http-port", default=8080, show_default=True, help="/healthz, /readyz, /metrics")
@click.option("--log-json/--no-log-json", default=True, show_default=True)
def main(kubeconfig: str | None, http_host: str, http_port: int, log_json: bool) -> None:
    """devserver-operator: reconciles DevServers, flavors and users."""
    configure_logging(json=log_json)
    asyncio.run(_main(Settings(kubeconfig, http_host, http_port)))


if __name__ == "__main__":
    main()
