"""Waiting on the operator: polling a dev server until it runs (`--wait`), or until the operator
has settled the deadline a user asked for (`devctl extend`)."""

from __future__ import annotations

import time
from datetime import datetime

import click

from devserver.api.devserver import DevServer
from devserver.api.resources import DEVSERVERS
from devserver.cli.errors import DevctlError
from devserver.cli.server_text import message_of, phase_of
from devserver.client.blocking import BlockingKubeClient


def wait_running(client: BlockingKubeClient, namespace: str, name: str, timeout: float) -> None:
    """Print each new state until Running; fail with the last reason on timeout."""
    started, last = time.monotonic(), ("", "")
    deadline = started + timeout
    while True:
        ds = client.get(DEVSERVERS, name, namespace)
        state = (phase_of(ds), message_of(ds))
        if state != last:
            elapsed = time.monotonic() - started
            detail = f" — {state[1]}" if state[1] else ""
            click.echo(f"  [{elapsed:5.1f}s] {state[0]}{detail}")
            last = state
        if _stuck(ds):
            raise DevctlError(
                f"{name} cannot start: {state[1]}; free quota (`devctl list`, `devctl delete`) "
                "or pick another flavor (`devctl update --flavor`)."
            )
        if state[0] == "Running":
            endpoint = ds.status.ssh_endpoint if ds.status else None
            click.echo(
                f"{name} is running; `devctl ssh {name}` for a shell"
                + (f" (sshd at {endpoint})" if endpoint else "")
            )
            return
        if time.monotonic() >= deadline and state[0] == "Queued":
            raise DevctlError(
                f"{name} is still queued after {timeout:.0f} s ({state[1]}); it starts by "
                f"itself when GPU quota frees — `devctl stop {name}` leaves the queue."
            )
        if time.monotonic() >= deadline:
            raise DevctlError(
                f"{name} is not running after {timeout:.0f} s: {state[1] or state[0]}; "
                f"see `devctl describe {name}`."
            )
        time.sleep(1.0)


def _stuck(ds: DevServer) -> bool:
    """States that no amount of waiting fixes without the user acting."""
    for condition in ds.status.conditions if ds.status else []:
        if condition.type == "Ready" and condition.status != "True":
            return condition.reason in ("QuotaExceeded", "FlavorUnavailable")
    return False


def settled_deadline(client: BlockingKubeClient, namespace: str, name: str) -> datetime | None:
    """The deadline the operator settled on (it applies the cap), waiting up to 5 s."""
    deadline = time.monotonic() + 5
    expires: datetime | None = None
    while time.monotonic() < deadline:
        ds: DevServer = client.get(DEVSERVERS, name, namespace)
        expires = ds.status.expires_at if ds.status else None
        wanted = ds.spec.lifecycle.expiration_time
        capped = any(
            c.type == "LifetimeCapped" for c in (ds.status.conditions if ds.status else [])
        )
        if expires is not None and wanted is not None and (expires == wanted or capped):
            return expires
        time.sleep(0.2)
    return expires
