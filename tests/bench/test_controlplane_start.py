"""Warm start of the local control plane, phase by phase (binaries already cached).

Not a pass/fail timing: it reports. Run with `nox -s bench`; the figures go into issue notes.
"""

from __future__ import annotations

import statistics

from devserver_harness.controlplane import LocalControlPlane
from tests.bench.scale import scaled

ROUNDS = scaled(3)


def test_report_warm_start_time() -> None:
    totals: list[float] = []
    phases: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        cluster = LocalControlPlane()
        try:
            cluster.start()
        finally:
            cluster.stop()
        totals.append(cluster.start_seconds)
        for name, seconds in cluster.timings.items():
            phases.setdefault(name, []).append(seconds)
    lines = [f"warm control-plane start, {ROUNDS} rounds (median / max seconds):"]
    lines += [
        f"  {name:<40} {statistics.median(v):6.2f} {max(v):6.2f}" for name, v in phases.items()
    ]
    lines.append(f"  {'total':<40} {statistics.median(totals):6.2f} {max(totals):6.2f}")
    print("\n" + "\n".join(lines))  # noqa: T201
