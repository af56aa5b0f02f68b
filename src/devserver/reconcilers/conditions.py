"""Conditions as the API conventions want them: lastTransitionTime moves only on a change."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from devserver.api.schema import Condition


def merge_conditions(
    previous: Iterable[Condition], desired: Iterable[Condition], *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Wire form of `desired`, keeping each condition's transition time if its status held."""
    before = {c.type: c for c in previous}
    moment = now or datetime.now(UTC)
    out = []
    for condition in desired:
        old = before.get(condition.type)
        kept = old is not None and old.status == condition.status and old.last_transition_time
        stamp = old.last_transition_time if kept and old else moment
        wire = condition.model_copy(update={"last_transition_time": stamp}).model_dump(
            by_alias=True, mode="json", exclude_none=True
        )
        out.append(wire)
    return out
