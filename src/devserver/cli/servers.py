"""The dev server commands: create, list, describe, delete, update."""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import DEVSERVERS, EVENTS, FLAVORS, PODS
from devserver.cli.complete import complete_flavors, complete_servers
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.durations import DurationError, canonical, parse_duration
from devserver.cli.errors import DevctlError
from devserver.cli.output import OUTPUT_OPTION, age, dump, table, until
from devserver.client.blocking import BlockingKubeClient
from devserver.client.errors import ApiError

DEFAULT_IMAGE = os.environ.get(
    "DEVSERVER_DEFAULT_IMAGE", "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
)
NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40


def check_name(name: str) -> None:
    if len(name) > MAX_NAME or not NAME.match(name):
        raise DevctlError(
            f"{name!r} is not a valid dev server name: use up to {MAX_NAME} lower-case letters, "
            "digits and '-', starting with a letter (e.g. mydev)."
        )


def check_flavor(client: BlockingKubeClient, flavor: str) -> DevServerFlavor:
    try:
        return client.get(FLAVORS, flavor)
    except ApiError as error:
        if error.status != 404:
            raise
    names = sorted(f.metadata.name for f in (client.list_page(FLAVORS)).items)
    raise DevctlError(
        f"there is no flavor {flavor!r}; choose one of: {', '.join(names) or '(none defined)'} "
        "(see `devctl flavors`)."
    )


def owner_of(namespace: str) -> str:
    return namespace.removeprefix("dev-")


def message_of(ds: DevServer) -> str:
    for condition in ds.status.conditions if ds.status else []:
        if condition.type == "Ready" and condition.status != "True":
            return f"{condition.reason}: {condition.message}".strip(": ")
    return ""


def deadline_of(ds: DevServer) -> datetime | None:
    """When it stops: the operator's `expiresAt`, else what the spec asks for."""
    if ds.status and ds.status.expires_at:
        return ds.status.expires_at
    lifecycle = ds.spec.lifecycle
    if lifecycle.expiration_time:
        return lifecycle.expiration_time
    if lifecycle.time_to_live and ds.metadata.creation_timestamp:
        try:
            return ds.metadata.creation_timestamp + parse_duration(lifecycle.time_to_live)
        except DurationError:
            return None
    return None


def activity_line(ds: DevServer, now: datetime) -> str:
    timeout = ds.spec.lifecycle.idle_timeout
    policy = (
        f"stops after {canonical(timedelta(seconds=timeout))} idle"
        if timeout and ds.spec.lifecycle.auto_shutdown
        else "never stopped for idleness"
    )
    since = ds.status.idle_since if ds.status else None
    if since is not None:
        return f"idle for {age(since, now)} ({policy})"
    return f"in use or not reported ({policy})"


def phase_of(ds: DevServer) -> str:
    return (ds.status.phase.value if ds.status and ds.status.phase else None) or "Pending"


# ---------------------------------------------------------------------------- create


@click.command()
@click.argument("name")
@click.option("--flavor", required=True, shell_complete=complete_flavors, help="Hardware preset.")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="Container image.")
@click.option("--home-size", default=None, help="Persistent home volume size, e.g. 100Gi.")
@click.option("--shared-volume", default=None, help="An existing PVC to mount at /shared.")
@click.option("--time", "ttl", default=None, help="Stop after this long: 30m, 1h, 2h30m, 1d.")
@click.option(
    "--idle",
    "idle",
    default=None,
    help="Stop after this long without use (no session, process or CPU/GPU load): 30m, 2h.",
)
@click.option(
    "--distributed", is_flag=True, help="W pods wired for torchrun (see --replicas, --nprocs)."
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Distributed: pods (nodes) in the job, 1-64.",
)
@click.option(
    "--nprocs",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Distributed: torchrun processes per pod (usually its GPUs); default 1.",
)
@click.option(
    "--backend",
    type=click.Choice(["nccl", "gloo"]),
    default=None,
    help="Distributed: torch.distributed backend (default nccl; gloo for CPU).",
)
@click.option("--wait/--no-wait", default=False, help="Wait until it runs, showing progress.")
@click.option("--timeout", default="10m", show_default=True, help="How long --wait waits.")
@pass_devctl
def create(
    devctl: Devctl,
    name: str,
    flavor: str,
    image: str,
    home_size: str | None,
    shared_volume: str | None,
    ttl: str | None,
    idle: str | None,
    distributed: bool,
    replicas: int | None,
    nprocs: int | None,
    backend: str | None,
    wait: bool,
    timeout: str,
) -> None:
    """Create dev server NAME with a persistent home (one per rank when distributed)."""
    check_name(name)
    if not distributed and (replicas is not None or nprocs is not None or backend is not None):
        raise DevctlError(
            "--replicas, --nprocs and --backend are for distributed servers; add --distributed."
        )
    if distributed and replicas is None:
        raise DevctlError("a distributed server needs --replicas W (pods), e.g. --replicas 2.")
    try:
        lifetime = parse_duration(ttl) if ttl else None
        idle_after = parse_duration(idle) if idle else None
        wait_for = parse_duration(timeout)
    except DurationError as error:
        raise DevctlError(str(error)) from None
    if idle_after is not None and idle_after.total_seconds() < 60:
        raise DevctlError(f"--idle {idle} is too short; use at least 1m, e.g. --idle 30m.")
    if home_size is not None:
        try:
            if parse_quantity(home_size) <= 0:
                raise QuantityError("not positive")
        except QuantityError:
            raise DevctlError(
                f"{home_size!r} is not a volume size; use a quantity such as 50Gi or 1Ti."
            ) from None

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        check_flavor(client, flavor)
        spec: dict[str, Any] = {"owner": owner_of(namespace), "flavor": flavor, "image": image}
        if home_size:
            spec["persistentHomeSize"] = home_size
        if shared_volume:
            spec["sharedVolumeClaimName"] = shared_volume
        lifecycle: dict[str, Any] = {}
        if lifetime is not None:
            lifecycle["timeToLive"] = canonical(lifetime)
        if idle_after is not None:
            lifecycle["idleTimeout"] = int(idle_after.total_seconds())
        if lifecycle:
            spec["lifecycle"] = lifecycle
        if distributed:
            spec["mode"] = "distributed"
            spec["distributed"] = {"worldSize": replicas, "nprocsPerNode": nprocs or 1}
            if backend:
                spec["distributed"]["backend"] = backend
        body = {
            "apiVersion": DEVSERVERS.api_version,
            "kind": DEVSERVERS.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        client.create(DEVSERVERS, body, namespace)
        stops = f", stops in {ttl}" if ttl else ""
        shape = f", {replicas} pods x {nprocs or 1} processes" if distributed else ""
        click.echo(f"created dev server {name} ({flavor}{shape}{stops}) in {namespace}")
        if wait:
            wait_running(client, namespace, name, wait_for.total_seconds())

    devctl.run(go, what="create dev servers", name=name)


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


# ---------------------------------------------------------------------------- list


@click.command("list")
@OUTPUT_OPTION
@pass_devctl
def list_(devctl: Devctl, output: str) -> None:
    """List your dev servers."""

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        page = client.list_page(DEVSERVERS, namespace)
        servers = page.items
        for bad in page.unreadable:
            click.echo(
                f"devctl: dev server {bad.metadata.name} cannot be read ({bad.problem}); "
                "ask your platform admin",
                err=True,
            )
        if output != "table":
            items = [s.model_dump(by_alias=True, mode="json", exclude_none=True) for s in servers]
            click.echo(dump({"items": items}, output))
            return
        if not servers:
            click.echo(
                f"no dev servers in {namespace}; "
                "create one with `devctl create mydev --flavor cpu-small --time 4h`"
            )
            return
        now = datetime.now(UTC)
        rows = [
            [
                s.metadata.name,
                (s.status.applied_flavor if s.status else None) or s.spec.flavor,
                phase_of(s),
                age(s.metadata.creation_timestamp, now),
                until(deadline_of(s), now)
                + (" (idle)" if s.status and s.status.idle_since else ""),
                message_of(s)[:60],
            ]
            for s in sorted(servers, key=lambda s: s.metadata.name)
        ]
        click.echo(table(rows, ["NAME", "FLAVOR", "PHASE", "AGE", "TIME LEFT", "MESSAGE"]))

    devctl.run(go, what="list dev servers")


# ---------------------------------------------------------------------------- describe


@click.command()
@click.argument("name", shell_complete=complete_servers)
@OUTPUT_OPTION
@pass_devctl
def describe(devctl: Devctl, name: str, output: str) -> None:
    """Show one dev server: its state, pod, volumes, conditions and recent events."""

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        ds = client.get(DEVSERVERS, name, namespace)
        pod = None
        if ds.status and ds.status.pod_name:
            try:
                pod = client.get(PODS, ds.status.pod_name, namespace)
            except ApiError as error:
                if error.status != 404:
                    raise
        events = (
            client.list_page(EVENTS, namespace, field_selector=f"involvedObject.name={name}")
        ).items
        if output != "table":
            click.echo(
                dump(
                    {
                        "devServer": ds.model_dump(by_alias=True, mode="json", exclude_none=True),
                        "pod": pod.model_dump(by_alias=True, mode="json") if pod else None,
                        "events": [e.model_dump(by_alias=True, mode="json") for e in events],
                    },
                    output,
                )
            )
            return
        click.echo(render_describe(ds, pod.extra if pod else None, [e.extra for e in events]))

    devctl.run(go, what="read dev servers", name=name)


def render_describe(ds: DevServer, pod: dict[str, Any] | None, events: list[dict[str, Any]]) -> str:
    status = ds.status
    spec = ds.spec
    now = datetime.now(UTC)
    node = (pod or {}).get("spec", {}).get("nodeName") or "-"
    lines = [
        f"Name:         {ds.metadata.name}",
        f"Namespace:    {ds.metadata.namespace}",
        f"Owner:        {spec.owner}",
        f"Flavor:       {spec.flavor}"
        + (
            f" (running as {status.applied_flavor})"
            if status and status.applied_flavor and status.applied_flavor != spec.flavor
            else ""
        ),
        f"Image:        {spec.image}",
        f"Phase:        {phase_of(ds)}" + (f" — {message_of(ds)}" if message_of(ds) else ""),
        f"Pod:          {(status.pod_name if status else None) or '-'} on node {node}",
        *(
            [
                f"Ranks:        {(status.ready_ranks if status else None) or 0}/"
                f"{spec.distributed.world_size} ready, {spec.distributed.nprocs_per_node} "
                f"processes each (`devctl monitor {ds.metadata.name}`)"
            ]
            if spec.distributed is not None and spec.mode.value == "distributed"
            else []
        ),
        f"Home:         {(status.home_claim if status else None) or '-'} "
        f"({spec.persistent_home_size}, kept on delete: "
        f"{'yes' if spec.retain_home_on_delete else 'no'})",
        f"Shared:       {spec.shared_volume_claim_name or '-'}",
        f"SSH:          {(status.ssh_endpoint if status else None) or '-'}",
        f"Created:      {age(ds.metadata.creation_timestamp, now)} ago",
        f"Time left:    {until(deadline_of(ds), now)}",
        f"Activity:     {activity_line(ds, now)}",
        "",
        "Conditions:",
    ]
    conditions = status.conditions if status else []
    lines.append(
        table(
            [[c.type, c.status, c.reason or "", (c.message or "")[:70]] for c in conditions],
            ["  TYPE", "STATUS", "REASON", "MESSAGE"],
        )
        if conditions
        else "  (none yet)"
    )
    lines += ["", "Events:"]
    recent = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")[-10:]
    lines.append(
        table(
            [
                [
                    "  " + str(e.get("type", "")),
                    str(e.get("reason", "")),
                    str(e.get("message", ""))[:80],
                ]
                for e in recent
            ],
            ["  TYPE", "REASON", "MESSAGE"],
        )
        if recent
        else "  (none)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- delete


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_devctl
def delete(devctl: Devctl, name: str, yes: bool) -> None:
    """Delete dev server NAME (its home volume is kept unless it was created otherwise)."""
    if not yes:
        if not sys.stdin.isatty():
            raise DevctlError(f"refusing to delete {name} without a prompt; add --yes.")
        click.confirm(f"delete dev server {name}?", abort=True)

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        ds = client.get(DEVSERVERS, name, namespace)
        client.delete(DEVSERVERS, name, namespace)
        if ds.spec.retain_home_on_delete:
            claim = (ds.status.home_claim if ds.status else None) or f"{name}-home"
            click.echo(
                f"deleted {name}; its home volume {claim} is kept — a new dev server named "
                f"{name} gets it back."
            )
        else:
            click.echo(f"deleted {name} and its home volume")

    devctl.run(go, what="delete dev servers", name=name)


# ---------------------------------------------------------------------------- update


@click.command()
@click.argument("name", shell_complete=complete_servers)
@click.option("--flavor", required=True, shell_complete=complete_flavors, help="New flavor.")
@click.option("--wait/--no-wait", default=False, help="Wait until it runs again.")
@click.option("--timeout", default="10m", show_default=True, help="How long --wait waits.")
@pass_devctl
def update(devctl: Devctl, name: str, flavor: str, wait: bool, timeout: str) -> None:
    """Move NAME to another flavor; the home volume (and your files) stay."""
    try:
        wait_for = parse_duration(timeout)
    except DurationError as error:
        raise DevctlError(str(error)) from None

    def go() -> None:
        client = devctl.client()
        namespace = devctl.namespace()
        ds = client.get(DEVSERVERS, name, namespace)
        check_flavor(client, flavor)
        if ds.spec.flavor == flavor:
            click.echo(f"{name} already uses {flavor}; nothing to do")
            return
        client.patch(DEVSERVERS, name, {"spec": {"flavor": flavor}}, namespace)
        click.echo(
            f"{name}: {ds.spec.flavor} → {flavor}; the pod restarts on the new hardware, "
            "your home volume stays"
        )
        if wait:
            time.sleep(1.0)  # let the operator see the change before polling
            wait_running(client, namespace, name, wait_for.total_seconds())

    devctl.run(go, what="update dev servers", name=name)
