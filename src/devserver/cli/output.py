"""Tables for people, JSON or YAML for scripts: every read command's `-o` and how it prints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from devserver.api.meta import KubeObject
from devserver.cli.durations import short

OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="table for people; json or yaml for scripts.",
)
CLEAR_SCREEN = "\033[H\033[2J"


def emit(output: str, data: Callable[[], Any], text: Callable[[], str]) -> None:
    """What a read command prints: `text()` for people, or `data()` as one JSON or YAML
    document for scripts (only the one asked for is made)."""
    click.echo(text() if output == "table" else dump(data(), output))


def emit_frame(output: str, data: Callable[[], Any], text: Callable[[], str]) -> None:
    """One refresh of a live view: the screen cleared and redrawn for people (like `watch`); for
    scripts one JSON document a line (JSON Lines) or one YAML document (`---`) a refresh."""
    if output == "table":
        click.echo(CLEAR_SCREEN + text())
    elif output == "json":
        click.echo(json.dumps(data()))
    else:
        click.echo("---\n" + dump(data(), output))


def as_data(obj: KubeObject) -> dict[str, Any]:
    """An object as the API server gives it (fields it left out stay out), for scripts."""
    return obj.model_dump(by_alias=True, mode="json", exclude_none=True)


def items(objects: Iterable[KubeObject]) -> dict[str, Any]:
    """A list of objects for scripts: `{"items": [...]}`, as the API server lists them."""
    return {"items": [as_data(o) for o in objects]}


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        import yaml  # only when asked for

        return str(yaml.safe_dump(data, sort_keys=False)).rstrip()
    return json.dumps(data, indent=2)


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    return short((now or datetime.now(UTC)) - when)


def until(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    left = when - (now or datetime.now(UTC))
    return "expired" if left.total_seconds() <= 0 else short(left)
