"""Human durations for `--time`: 30m, 1h, 2h30m, 1d (and combinations like 1d12h)."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([dhm])")
_WHOLE = re.compile(r"^(\d+[dhm])+$")
_UNIT = {"d": 86400, "h": 3600, "m": 60}
LONGEST_SECONDS = 36_500 * 86400  # beyond any platform's cap, far inside timedelta's range
HINT = "use minutes, hours and days such as 30m, 1h, 2h30m or 1d"


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """`2h30m` → 2:30:00; a clear error for anything else."""
    value = text.strip().lower()
    if not _WHOLE.match(value):
        raise DurationError(f"{text!r} is not a duration; {HINT}.")
    units = [unit for _, unit in _PART.findall(value)]
    if len(set(units)) != len(units) or units != sorted(units, key="dhm".index):
        raise DurationError(f"{text!r} repeats or misorders its units; {HINT}.")
    seconds = sum(int(number) * _UNIT[unit] for number, unit in _PART.findall(value))
    if seconds < 60:
        raise DurationError(f"{text!r} is too short; the shortest is 1m.")
    if seconds > LONGEST_SECONDS:
        raise DurationError(f"{text!r} is longer than 100 years; {HINT}.")
    return timedelta(seconds=seconds)


def canonical(duration: timedelta) -> str:
    """The form the API stores (`timeToLive`), e.g. 9000 s → 2h30m."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0m"


def short(duration: timedelta) -> str:
    """For tables: 3d4h, 2h30m, 45m, 20s (two units at most)."""
    seconds = int(duration.total_seconds())
    if seconds < 0:
        return "-" + short(-duration)
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])
