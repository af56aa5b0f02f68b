"""`devctl admin user add|remove|list`: platform admins manage DevUsers (`list -o json|yaml`);
`devctl admin usage`: GPU-hours, idle stops and cost per user and team (see `cli.usage`).

Each command is one request or two (`usage` reads page by page); errors are one sentence on
stderr and exit status 1, and nothing is changed by a refused command.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject, ObjectT
from devserver.api.names import CACHE_NAME_LABEL, user_namespace
from devserver.api.resources import (
    DEVSERVERS,
    DEVUSERS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    PERSISTENT_VOLUMES,
    Resource,
)
from devserver.api.user import DevUser
from devserver.cli.context import Devctl
from devserver.cli.durations import DurationError, parse_duration
from devserver.cli.errors import DevctlError
from devserver.cli.output import OUTPUT_OPTION, emit, items
from devserver.cli.usage import render_usage, usage_data, usage_report
from devserver.client.blocking import BlockingKubeClient
from devserver.client.errors import ApiError
from devserver.reconcilers.user_objects import is_ours

T = TypeVar("T")


def _run(
    devctl: Devctl, action: Callable[[BlockingKubeClient], T], what: str = "manage users"
) -> T:
    client = devctl.client()
    try:
        return action(client)
    except ApiError as error:
        raise DevctlError(_sentence(error, what)) from None
    finally:
        client.close()


def _sentence(error: ApiError, what: str = "manage users") -> str:
    if error.status == 0:
        return f"cannot reach the Kubernetes API server ({error.message}); check your kubeconfig"
    if error.status == 403:
        return f"you are not allowed to {what}; ask a platform admin"
    return error.message or f"the API server refused the request ({error.status})"


@click.group()
def admin() -> None:
    """Platform administration (needs admin rights on the cluster)."""


@admin.group()
def user() -> None:
    """Add, remove and list users."""


@user.command("add")
@click.argument("name")
@click.option("--email", required=True, help="The user's e-mail address.")
@click.option(
    "--ssh-key-file",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An OpenSSH public key file (repeatable).",
)
@click.option("--team", default=None, help="Team, for reports.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="GPU quota override.")
@click.pass_obj
def add(
    obj: Devctl,
    name: str,
    email: str,
    key_files: tuple[Path, ...],
    team: str | None,
    gpus: int | None,
) -> None:
    """Add user NAME (it becomes their bastion login and the namespace dev-NAME)."""
    keys = [
        line.strip()
        for f in key_files
        for line in f.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    spec: dict[str, Any] = {"email": email, "sshPublicKeys": keys}
    if team:
        spec["team"] = team
    if gpus is not None:
        spec["quota"] = {"gpus": gpus}
    body = {
        "apiVersion": "devservers.io/v1",
        "kind": "DevUser",
        "metadata": {"name": name},
        "spec": spec,
    }
    _run(obj, lambda c: c.create(DEVUSERS, body))
    click.echo(f"user {name} added; their namespace is dev-{name}")


@user.command("remove")
@click.argument("name")
@click.option(
    "--delete-homes",
    is_flag=True,
    help="Also delete namespace dev-NAME with every home volume in it (asks first).",
)
@click.option("--yes", is_flag=True, help="Do not ask (with --delete-homes).")
@click.pass_obj
def remove(obj: Devctl, name: str, delete_homes: bool, yes: bool) -> None:
    """Remove user NAME: access goes at once, servers stop; the data stays unless asked."""
    namespace = user_namespace(name)
    if delete_homes and not yes:
        click.confirm(
            f"This deletes namespace {namespace}, every dev server in it and every home volume "
            "with its data, for good. Continue?",
            abort=True,
        )

    def act(client: BlockingKubeClient) -> int:
        try:
            client.delete(DEVUSERS, name)
        except ApiError as error:
            if error.status != 404 or not delete_homes:
                raise
        homes = _homes(client, namespace)
        if delete_homes:
            try:
                found = client.get(NAMESPACES, namespace)
            except ApiError as error:
                if error.status == 404:
                    return 0
                raise
            if not is_ours(found, name):
                raise DevctlError(
                    f"namespace {namespace} was not made by devserver for {name}; it is left "
                    "alone (delete it yourself if you are sure)"
                )
            for claim in homes:  # the operator set kept homes to Retain: undo it first
                volume = (claim.extra.get("spec") or {}).get("volumeName")
                if volume:
                    patch = {"spec": {"persistentVolumeReclaimPolicy": "Delete"}}
                    try:
                        client.patch(PERSISTENT_VOLUMES, volume, patch)
                    except ApiError as error:
                        if error.status != 404:
                            raise
            client.delete(NAMESPACES, namespace)
        return len(homes)

    homes = _run(obj, act)
    if delete_homes:
        click.echo(f"user {name} removed; {namespace} and its {homes} volume(s) are being deleted")
    else:
        click.echo(
            f"user {name} removed: access revoked and their servers stopped; namespace "
            f"{namespace} and its {homes} home volume(s) are kept (adding {name} again gives "
            f"them back; `devctl admin user remove {name} --delete-homes` deletes them)"
        )


def _homes(client: BlockingKubeClient, namespace: str) -> list[KubeObject]:
    """The home volumes the operator made there (not a shared volume an admin provided)."""
    try:
        claims = client.list_page(
            PERSISTENT_VOLUME_CLAIMS, namespace, label_selector=CACHE_NAME_LABEL
        ).items
    except ApiError as error:
        if error.status == 404:
            return []
        raise
    return [
        c
        for c in claims
        if c.metadata.name.endswith("-home") or c.metadata.name.startswith("home-")
    ]


@user.command("list")
@OUTPUT_OPTION
@click.pass_obj
def list_users(obj: Devctl, output: str) -> None:
    """List users."""

    def fetch(client: BlockingKubeClient) -> list[DevUser]:
        return client.list_page(DEVUSERS).items

    users = _run(obj, fetch)
    emit(output, lambda: items(users), lambda: render_users(users))


def render_users(users: list[DevUser]) -> str:
    """`devctl admin user list` for people: a row a user, by name, with its key count."""
    lines = [f"{'NAME':<20} {'EMAIL':<32} {'TEAM':<12} {'KEYS':>4}  READY"]
    for u in sorted(users, key=lambda u: u.metadata.name):
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in (u.status.conditions if u.status else [])
        )
        lines.append(
            f"{u.metadata.name:<20} {u.spec.email:<32} {u.spec.team or '-':<12} "
            f"{len(u.spec.ssh_public_keys):>4}  {'yes' if ready else 'no'}"
        )
    return "\n".join(lines)


@admin.command()
@click.option(
    "--since",
    metavar="DURATION",
    default=None,
    help="Only servers that held a node in this last while (7d, 12h, 1d12h); their figures "
    "stay each server's totals since its creation (the billing status keeps no history). "
    "Default: every server.",
)
@OUTPUT_OPTION
@click.pass_obj
def usage(obj: Devctl, since: str | None, output: str) -> None:
    """GPU-hours held and in use, idle stops and cost, per user and per team.

    Read from every DevServer's billing status (no Prometheus needed); a user is the owner of
    the namespace dev-USER, a server elsewhere counts under ns/NAMESPACE with no team. Deleted
    servers are not counted.
    """
    try:
        window = parse_duration(since) if since is not None else None
    except DurationError as error:
        raise DevctlError(f"--since {error}") from None

    def fetch(client: BlockingKubeClient) -> tuple[list[DevServer], list[DevUser]]:
        return _every(client, DEVSERVERS), _every(client, DEVUSERS)

    servers, users = _run(obj, fetch, "read every namespace's dev servers and the users")
    report = usage_report(servers, users, datetime.now(UTC), window)
    emit(output, lambda: usage_data(report), lambda: render_usage(report))


def _every(client: BlockingKubeClient, resource: Resource[ObjectT]) -> list[ObjectT]:
    """Every object of every namespace, page by page; one the model cannot read is said, not
    counted."""
    found: list[ObjectT] = []
    token = ""
    while True:
        page = client.list_page(resource, continue_token=token)
        found.extend(page.items)
        for bad in page.unreadable:
            click.echo(
                f"devctl: {resource.kind} {bad.key} cannot be read ({bad.problem}); "
                "it is not counted",
                err=True,
            )
        token = page.metadata.continue_
        if not token:
            return found
