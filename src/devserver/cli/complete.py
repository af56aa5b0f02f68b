"""Shell completion of dev server and flavor names (asked of the API server, quietly)."""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem

from devserver.api.resources import DEVSERVERS, FLAVORS
from devserver.client.blocking import new_blocking_client
from devserver.client.config import ConfigError
from devserver.client.errors import ApiError


def _root_params(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root()
    return dict(root.params)


def _names(ctx: click.Context, flavors: bool) -> list[tuple[str, str]]:
    params = _root_params(ctx)
    client = new_blocking_client(params.get("kubeconfig"), params.get("context"))
    try:
        if flavors:
            found = client.list_page(FLAVORS).items
            return [(f.metadata.name, f.spec.description) for f in found]
        namespace = params.get("namespace") or client.namespace
        servers = client.list_page(DEVSERVERS, namespace).items
        return [(s.metadata.name, s.spec.flavor) for s in servers]
    finally:
        client.close()


def _complete(ctx: click.Context, incomplete: str, flavors: bool) -> list[CompletionItem]:
    try:
        names = _names(ctx, flavors)
    except (ApiError, ConfigError, OSError, ValueError, KeyError):
        return []  # completion never prints errors into the user's prompt
    return [CompletionItem(n, help=h) for n, h in sorted(names) if n.startswith(incomplete)]


def complete_servers(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    return _complete(ctx, incomplete, flavors=False)


def complete_flavors(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    return _complete(ctx, incomplete, flavors=True)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script: `eval "$(devctl completion bash)"` in ~/.bashrc."""
    from click.shell_completion import get_completion_class

    root = ctx.find_root()
    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - click knows all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(completer(root.command, {}, "devctl", "_DEVCTL_COMPLETE").source())
