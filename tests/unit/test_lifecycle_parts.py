"""Deadlines (pure): time-to-live from the last start, fixed times, the operator's cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devserver.api.devserver import DevServer, DevServerStatus
from devserver.api.lifecycle import deadline, parse_ttl, requested_deadline
from devserver.api.names import STARTED_AT
from devserver.reconcilers.lifecycle_config import lead_label

CREATED = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def ds(lifecycle: dict[str, Any], annotations: dict[str, str] | None = None) -> DevServer:
    return DevServer.model_validate(
        {
            "metadata": {
                "name": "box",
                "namespace": "dev-ana",
                "creationTimestamp": CREATED.isoformat(),
                "annotations": annotations or {},
            },
            "spec": {"owner": "ana", "flavor": "cpu-small", "image": "x", "lifecycle": lifecycle},
        }
    )


def test_time_to_live_counts_from_creation_or_the_recorded_start() -> None:
    assert requested_deadline(ds({"timeToLive": "2h30m"})) == CREATED + timedelta(hours=2.5)
    restarted = CREATED + timedelta(days=1)
    again = ds({"timeToLive": "1h"}).model_copy(
        update={"status": DevServerStatus(lastStart=restarted)}
    )
    assert requested_deadline(again) == restarted + timedelta(hours=1)


def test_the_old_started_at_annotation_is_the_users_and_moves_nothing() -> None:
    """The annotation `devctl start` used to write: a user could set it to 2100."""
    forged = ds({"timeToLive": "1h"}, {STARTED_AT: "2100-01-01T00:00:00Z"})
    assert requested_deadline(forged) == CREATED + timedelta(hours=1)
    assert deadline(forged, timedelta(days=7)) == (CREATED + timedelta(hours=1), False)


def test_a_fixed_expiration_time_wins() -> None:
    fixed = CREATED + timedelta(minutes=5)
    assert requested_deadline(ds({"timeToLive": "4h", "expirationTime": fixed.isoformat()})) == (
        fixed
    )


def test_the_cap_shortens_long_requests_and_bounds_servers_without_one() -> None:
    cap = timedelta(hours=3)
    assert deadline(ds({"timeToLive": "1h"}), cap) == (CREATED + timedelta(hours=1), False)
    assert deadline(ds({"timeToLive": "1d"}), cap) == (CREATED + cap, True)
    assert deadline(ds({}), cap) == (CREATED + cap, False)
    assert deadline(ds({}), None) == (None, False)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1h30m", 5400), ("1d", 86400)])
def test_the_operator_reads_the_crd_durations(text: str, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 2m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_ttl(text)


def test_warning_labels() -> None:
    assert [lead_label(timedelta(seconds=s)) for s in (900, 300, 8, 3600)] == [
        "15m",
        "5m",
        "8s",
        "1h",
    ]


def test_billing_opens_on_a_node_closes_on_stop_and_reprices_on_a_flavor_change() -> None:
    from devserver.api.billing import Holding, next_billing, totals

    t0 = CREATED
    bill = next_billing(None, Holding(2.0, 1, active=True), now=t0)
    assert (bill.since, bill.price_per_hour, bill.seconds, bill.gpus) == (t0, 2.0, 0, 1)
    same = next_billing(bill, Holding(2.0, 1, active=True), now=t0 + timedelta(hours=1))
    assert same == bill  # nothing to write between transitions
    moved = next_billing(bill, Holding(8.0, 4, active=True), now=t0 + timedelta(hours=1))
    assert (moved.seconds, moved.cost, moved.price_per_hour) == (3600, 2.0, 8.0)
    assert (moved.gpu_seconds, moved.gpus) == (3600, 4)
    stopped = next_billing(moved, None, now=t0 + timedelta(hours=1.5))
    assert (stopped.seconds, stopped.cost, stopped.since) == (5400, 6.0, None)
    assert (stopped.gpu_seconds, stopped.active_gpu_seconds) == (3600 + 7200, 3600 + 7200)
    assert totals(stopped, t0 + timedelta(days=9)) == (1.5, 6.0)  # stopped: no more cost
    assert totals(moved, t0 + timedelta(hours=2)) == (2.0, 10.0)  # the open period counts


_PERIOD = st.tuples(
    st.integers(min_value=0, max_value=7200),  # seconds until the next report
    st.none() | st.tuples(st.sampled_from([None, 0.5, 2.0]), st.integers(0, 8), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PERIOD, max_size=12))
def test_billing_totals_are_the_integral_of_what_was_held_whatever_the_reports(
    periods: list[tuple[int, tuple[float | None, int, bool] | None]],
) -> None:
    """Reports at any moments (repeats, flips, stops): the bill, written only at transitions,
    always equals summing hours, cost, GPU-hours held and used over every interval."""
    from devserver.api.billing import Holding, bill_totals, next_billing

    bill, now = None, CREATED
    hours = cost = gpu_hours = active_hours = 0.0
    for wait, state in periods:
        held = Holding(*state) if state is not None else None
        bill = next_billing(bill, held, now=now)
        now += timedelta(seconds=wait)
        if held is not None:
            hours += wait / 3600
            cost += wait / 3600 * (held.price or 0.0)
            gpu_hours += wait / 3600 * held.gpus
            active_hours += wait / 3600 * held.gpus if held.active else 0.0
    counted = bill_totals(bill, now)
    assert counted.hours == pytest.approx(hours, abs=1e-5)
    assert counted.cost == pytest.approx(cost, abs=1e-4)
    assert counted.gpu_hours == pytest.approx(gpu_hours, abs=1e-5)
    assert counted.active_gpu_hours == pytest.approx(active_hours, abs=1e-5)
    assert counted.active_gpu_hours <= counted.gpu_hours + 1e-9
