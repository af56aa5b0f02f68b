"""The dev server commands: create, list, describe, delete, update.

How a server reads as text is `server_text`'s; waiting for one to run is `waiting`'s.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from devserver.api.flavor import DevServerFlavor
from devserver.api.quantity import QuantityError, parse_quantity
from devserver.api.resources import DEVSERVERS, EVENTS, FLAVORS, PODS
from devserver.cli.complete import complete_flavors, complete_servers
from devserver.cli.context import Devctl, owner_of, pass_devctl
from devserver.cli.durations import DurationError, canonical, parse_duration
from devserver.cli.errors import DevctlError
from devserver.cli.output import OUTPUT_OPTION, as_data, emit, items
from devserver.cli.server_text import render_describe, render_list
from devserver.cli.waiting import wait_running
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

    def go(client: BlockingKubeClient, namespace: str) -> None:
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

    devctl.run_here(go, what="create dev servers", name=name)


# ---------------------------------------------------------------------------- list


@click.command("list")
@OUTPUT_OPTION
@pass_devctl
def list_(devctl: Devctl, output: str) -> None:
    """List your dev servers."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        page = client.list_page(DEVSERVERS, namespace)
        servers = page.items
        for bad in page.unreadable:
            click.echo(
                f"devctl: dev server {bad.metadata.name} cannot be read ({bad.problem}); "
                "ask your platform admin",
                err=True,
            )
        emit(
            output,
            lambda: items(servers),
            lambda: render_list(servers, namespace, datetime.now(UTC)),
        )

    devctl.run_here(go, what="list dev servers")


# ---------------------------------------------------------------------------- describe


@click.command()
@click.argument("name", shell_complete=complete_servers)
@OUTPUT_OPTION
@pass_devctl
def describe(devctl: Devctl, name: str, output: str) -> None:
    """Show one dev server: its state, pod, volumes, conditions and recent events."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
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
        emit(
            output,
            lambda: {
                "devServer": as_data(ds),
                "pod": pod.model_dump(by_alias=True, mode="json") if pod else None,
                "events": [e.model_dump(by_alias=True, mode="json") for e in events],
            },
            lambda: render_describe(
                ds, pod.extra if pod else None, [e.extra for e in events], datetime.now(UTC)
            ),
        )

    devctl.run_here(go, what="read dev servers", name=name)


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

    def go(client: BlockingKubeClient, namespace: str) -> None:
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

    devctl.run_here(go, what="delete dev servers", name=name)


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

    def go(client: BlockingKubeClient, namespace: str) -> None:
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

    devctl.run_here(go, what="update dev servers", name=name)
