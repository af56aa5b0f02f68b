"""How big the benches run: `DEVSERVER_BENCH_SCALE` times the sizes and waits each names
(default 1, the figures the notes report). `.ci/run` runs every bench once at 0.01, so that a
broken bench fails CI in seconds instead of rotting until someone needs its figures."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("DEVSERVER_BENCH_SCALE", "1"))


def scaled(full: int, least: int = 1) -> int:
    """`full` at this scale, never below `least` (what the bench needs to mean anything)."""
    return max(least, round(full * SCALE))


def seconds(full: float, least: float = 1.0) -> float:
    """A wait of `full` seconds at this scale, never below `least`."""
    return max(least, full * SCALE)
