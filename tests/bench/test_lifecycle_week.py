"""A simulated week of 100 users (`tests.bench.week`): GPU-hours held with the lifecycle
on vs off, and active work interrupted — ours against simpler cullers. A report (`nox -s bench`);
it fails only if our policy interrupts live work or saves less than the plan's 30%."""

from __future__ import annotations

import pytest

from tests.bench.week import report, run_week


@pytest.mark.parametrize("idle_minutes", [60, 30])
def test_a_week_of_100_users(idle_minutes: int) -> None:
    print("\n" + "\n".join(report(idle_minutes * 60)))  # noqa: T201
    _users, results = run_week(idle_minutes * 60)
    off, ours = results[0], results[1]
    assert ours.interruptions == 0
    assert ours.gpu_hours_held < 0.7 * off.gpu_hours_held
