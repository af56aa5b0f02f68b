"""The operator's lifecycle policy: maximum lifetime and warning lead times (flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class LifecycleConfig:
    # every dev server stops at the latest this long after it (re)started; extensions are capped
    max_lifetime: timedelta | None = timedelta(days=7)
    # Events (and the pod's warning annotation) this long before a deadline
    warn_before: tuple[timedelta, ...] = field(
        default=(timedelta(minutes=15), timedelta(minutes=5))
    )
    # a DevServer stopped this long is deleted — only when its home volume survives that
    stopped_retention: timedelta | None = None


def lead_label(lead: timedelta) -> str:
    seconds = int(lead.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
