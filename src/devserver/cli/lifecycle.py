"""`devctl stop`, `start`, `extend`, `cost`: a dev server's time and price, in the user's hands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from devserver.api.billing import totals
from devserver.api.lifecycle import STOPPED_BY_USER, later, requested_deadline
from devserver.api.names import LAST_EXTENSION, STARTED_AT, STOP_REASON, WARNED
from devserver.api.resources import DEVSERVERS
from devserver.cli.complete import complete_servers
from devserver.cli.context import Devctl, owner_of, pass_devctl
from devserver.cli.durations import DurationError, parse_duration, short
from devserver.cli.errors import DevctlError
from devserver.cli.output import OUTPUT_OPTION, emit, table
from devserver.cli.waiting import settled_deadline, wait_running
from devserver.client.blocking import BlockingKubeClient


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _stamp(when: datetime) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except DurationError as error:
        raise DevctlError(str(error)) from None


@click.command()
@click.argument("name", shell_complete=complete_servers)
@pass_devctl
def stop(devctl: Devctl, name: str) -> None:
    """Stop NAME now: no pod, no GPU, no cost; the home volume stays."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        ds = client.get(DEVSERVERS, name, namespace)
        if ds.spec.stopped:
            click.echo(f"{name} is already stopped; `devctl start {name}` brings it back")
            return
        patch = {
            "metadata": {"annotations": {STOP_REASON: STOPPED_BY_USER}},
            "spec": {"stopped": True},
        }
        client.patch(DEVSERVERS, name, patch, namespace)
        click.echo(
            f"stopped {name}; its home volume is kept — `devctl start {name}` brings it back"
        )

    devctl.run_here(go, what="update dev servers", name=name)


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--time", "ttl", default=None, help="Stop after this long (default: as before).")
@click.option("--wait/--no-wait", default=False, help="Wait until it runs.")
@click.option("--timeout", default="10m", show_default=True, help="How long --wait waits.")
@pass_devctl
def start(devctl: Devctl, name: str, ttl: str | None, wait: bool, timeout: str) -> None:
    """Start a stopped NAME again, with the same home volume."""
    lifetime = _duration(ttl) if ttl else None
    waiting = _duration(timeout)

    def go(client: BlockingKubeClient, namespace: str) -> None:
        ds = client.get(DEVSERVERS, name, namespace)
        if not ds.spec.stopped:
            click.echo(f"{name} is not stopped; nothing to do")
            return
        now = datetime.now(UTC)
        lifecycle: dict[str, object] = {}
        if lifetime is not None:
            lifecycle = {"expirationTime": _iso(later(now, lifetime)), "timeToLive": None}
        elif ds.spec.lifecycle.expiration_time is not None:
            # a fixed time has passed: give it the lifetime it had before
            old = ds.spec.lifecycle.expiration_time - (ds.metadata.creation_timestamp or now)
            lifecycle = {"expirationTime": _iso(later(now, old))}
        patch = {
            # the operator records the start itself (status.lastStart); the annotation older
            # devctl versions wrote is removed
            "metadata": {"annotations": {STOP_REASON: None, WARNED: None, STARTED_AT: None}},
            "spec": {"stopped": False, **({"lifecycle": lifecycle} if lifecycle else {})},
        }
        client.patch(DEVSERVERS, name, patch, namespace)
        click.echo(f"starting {name} with its home volume")
        if wait:
            wait_running(client, namespace, name, waiting.total_seconds())

    devctl.run_here(go, what="update dev servers", name=name)


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--time", "added", required=True, help="How much longer: 30m, 1h, 2h30m, 1d.")
@pass_devctl
def extend(devctl: Devctl, name: str, added: str) -> None:
    """Give NAME more time (up to the platform's maximum lifetime)."""
    more = _duration(added)

    def go(client: BlockingKubeClient, namespace: str) -> None:
        ds = client.get(DEVSERVERS, name, namespace)
        if ds.spec.stopped:
            raise DevctlError(f"{name} is stopped; `devctl start {name} --time {added}` instead.")
        now = datetime.now(UTC)
        current = (ds.status.expires_at if ds.status else None) or requested_deadline(ds) or now
        new = later(max(current, now), more)
        record = json.dumps(
            {"by": owner_of(namespace), "at": _iso(now), "added": added, "until": _iso(new)}
        )
        patch = {
            "metadata": {"annotations": {LAST_EXTENSION: record, WARNED: None}},
            "spec": {"lifecycle": {"expirationTime": _iso(new), "timeToLive": None}},
        }
        client.patch(DEVSERVERS, name, patch, namespace)
        effective = settled_deadline(client, namespace, name)
        if effective is not None and effective < new - timedelta(seconds=1):
            click.echo(
                f"{name} now stops at {_stamp(effective)} (in {short(effective - now)}): "
                f"capped by the platform's maximum lifetime, not {_stamp(new)}"
            )
        else:
            click.echo(f"{name} now stops at {_stamp(new)} (in {short(new - now)})")

    devctl.run_here(go, what="update dev servers", name=name)


@click.command()
@click.argument("name", required=False, shell_complete=complete_servers)
@OUTPUT_OPTION
@pass_devctl
def cost(devctl: Devctl, name: str | None, output: str) -> None:
    """What NAME (or each of your dev servers) has cost: hours on a node x flavor price."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        servers = (
            [client.get(DEVSERVERS, name, namespace)]
            if name
            else client.list_page(DEVSERVERS, namespace).items
        )
        now = datetime.now(UTC)
        rows, total = [], 0.0
        for ds in sorted(servers, key=lambda s: s.metadata.name):
            bill = ds.status.billing if ds.status else None
            hours, usd = totals(bill, now)
            total += usd
            rows.append(
                {
                    "name": ds.metadata.name,
                    "flavor": (ds.status.applied_flavor if ds.status else None) or ds.spec.flavor,
                    "running": bool(bill and bill.since),
                    "pricePerHour": bill.price_per_hour if bill else None,
                    "hours": round(hours, 4),
                    "cost": round(usd, 4),
                }
            )
        emit(
            output,
            lambda: {"items": rows, "total": round(total, 4)},
            lambda: render_cost(rows, total),
        )

    devctl.run_here(go, what="read dev servers", name=name or "")


def render_cost(rows: list[dict[str, Any]], total: float) -> str:
    """`devctl cost`: a row a server, then the total."""
    table_rows = [
        [
            str(r["name"]),
            str(r["flavor"]),
            "running" if r["running"] else "stopped",
            f"{r['pricePerHour']:.2f}" if r["pricePerHour"] is not None else "-",
            f"{r['hours']:.2f}",
            f"${r['cost']:.2f}",
        ]
        for r in rows
    ]
    headers = ["NAME", "FLAVOR", "NOW", "$/HOUR", "HOURS", "COST"]
    return f"{table(table_rows, headers)}\ntotal: ${total:.2f}"
