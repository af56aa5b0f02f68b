"""G2 in pure form, on generated input: no value a user or a pod can write makes the lifecycle
arithmetic raise, and nothing they can write moves a stop past the operator's cap.

What the API server refuses never reaches the operator; these tests go further and feed values
beyond the CRD's bounds too (the arithmetic must saturate on its own, should a bound ever be
loosened), along with every annotation and Lease field a user or the agent's token may write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from devserver.api.devserver import MAX_IDLE_TIMEOUT, DevServer
from devserver.api.lifecycle import (
    FAR_FUTURE,
    activity_of,
    deadline,
    first_created,
    later,
    lifetime_start,
    next_stop,
    parse_ttl,
    seconds_at_most,
    start_to_record,
    timeline,
    with_start,
)
from devserver.api.meta import KubeObject
from devserver.api.names import STARTED_AT
from devserver.reconcilers.devserver.standalone import observed_status
from devserver.reconcilers.devserver.status import Observed

CREATED = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CAP = timedelta(days=7)

times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
time_text = st.one_of(
    times.map(lambda t: t.isoformat()),
    times.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.text(max_size=40),
    st.sampled_from(["", "Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00", "nan", "2100"]),
)
durations = st.from_regex(r"\A([0-9]{1,9}[smhd]){1,3}\Z").filter(lambda t: len(t) <= 32)
lifecycles = st.fixed_dictionaries(
    {},
    optional={
        "idleTimeout": st.integers(60, MAX_IDLE_TIMEOUT),
        "autoShutdown": st.booleans(),
        "expirationTime": times.map(lambda t: t.isoformat()),
        "timeToLive": durations,
    },
)
annotations = st.dictionaries(
    st.sampled_from([STARTED_AT, "devservers.io/warned", "devservers.io/stop-reason", "x/y"]),
    time_text,
    max_size=4,
)


def server(
    lifecycle: dict[str, Any], notes: dict[str, str], status: dict[str, Any] | None, stopped: bool
) -> DevServer:
    return DevServer.model_validate(
        {
            "metadata": {
                "name": "box",
                "namespace": "dev-ana",
                "creationTimestamp": CREATED.isoformat(),
                "annotations": notes,
            },
            "spec": {
                "owner": "ana",
                "flavor": "cpu-small",
                "image": "x",
                "lifecycle": lifecycle,
                "stopped": stopped,
            },
            "status": status,
        }
    )


statuses = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "lastStart": times.map(lambda t: t.replace(tzinfo=UTC).isoformat()),
        "stoppedAt": times.map(lambda t: t.replace(tzinfo=UTC).isoformat()),
    },
)
leases = st.none() | st.builds(
    lambda renewed, duration, idle: KubeObject.model_validate(
        {
            "metadata": {"annotations": {"devservers.io/idle-since": idle}},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": duration},
        }
    ),
    time_text,
    st.one_of(st.integers(-(2**63), 2**63), st.text(max_size=5), st.none()),
    time_text,
)


@settings(max_examples=400, deadline=None)
@given(lifecycles, annotations, statuses, st.booleans(), leases)
def test_no_stop_past_the_cap_and_no_exception(
    lifecycle: dict[str, Any],
    notes: dict[str, str],
    status: dict[str, Any] | None,
    stopped: bool,
    lease: KubeObject | None,
) -> None:
    ds = with_start(server(lifecycle, notes, status, stopped), NOW)
    activity = activity_of(lease)
    stop = next_stop(ds, activity, CAP, NOW)
    start = lifetime_start(ds)
    assert start is not None
    assert stop is not None  # a cap means every server has a finite stop
    assert stop.when <= start + CAP if start + CAP < FAR_FUTURE else stop.when <= FAR_FUTURE
    # the start is the operator's record or the API server's creation time, never an annotation
    recorded = (status or {}).get("lastStart")
    assert start in (CREATED, NOW) or (recorded and start.isoformat() == recorded)
    migrating = status is not None and not recorded and not stopped
    if not migrating:  # annotations never move the deadline
        plain = with_start(server(lifecycle, {}, status, stopped), NOW)
        assert deadline(plain, CAP) == deadline(ds, CAP)
    else:  # a server from before recorded starts: the old annotation, clamped to now at most
        assert start <= NOW


@settings(max_examples=200, deadline=None)
@given(lifecycles, annotations, statuses, st.booleans(), leases, st.booleans())
def test_the_status_is_always_written_and_serialisable(
    lifecycle: dict[str, Any],
    notes: dict[str, str],
    status: dict[str, Any] | None,
    stopped: bool,
    lease: KubeObject | None,
    flavor_missing: bool,
) -> None:
    activity = activity_of(lease)
    times = timeline(server(lifecycle, notes, status, stopped), [], activity, CAP, NOW)
    ds = times.ds
    seen = Observed(
        flavor_problem="flavor 'x' does not exist" if flavor_missing else None,
        workload=None,
        pods=[],
        service=None,
        timeline=times,
        activity=activity,
        now=NOW,
    )
    written = observed_status(ds, seen)
    json.dumps(written)
    assert written["phase"] == ("Stopped" if stopped else "Pending")
    assert "lastStart" in written


def test_a_start_is_recorded_when_a_stopped_server_runs_again() -> None:
    stopped = server(
        {}, {}, {"lastStart": CREATED.isoformat(), "stoppedAt": "2026-11-27T00:00:00Z"}, False
    )
    assert start_to_record(stopped, NOW) == NOW
    running = server({}, {}, {"lastStart": "2026-11-28T00:00:00Z"}, False)
    assert start_to_record(running, NOW) == datetime(2026, 11, 28, tzinfo=UTC)
    fresh = server({}, {}, None, False)
    assert start_to_record(fresh, NOW) == CREATED
    # made before starts were recorded: the old annotation, clamped to [creation, now]
    legacy = server({}, {STARTED_AT: "2100-01-01T00:00:00Z"}, {"phase": "Running"}, False)
    assert start_to_record(legacy, NOW) == NOW


@given(times, st.integers(-(10**40), 10**40))
def test_time_arithmetic_saturates_beyond_any_bound(when: datetime, seconds: int) -> None:
    """Should a CRD bound ever be loosened, the arithmetic still never raises."""
    result = later(when, seconds_at_most(seconds))
    assert result <= FAR_FUTURE or result == when.replace(tzinfo=result.tzinfo)


@given(st.integers(0, 10**40), st.sampled_from("smhd"))
def test_durations_of_any_size_parse(number: int, unit: str) -> None:
    assert parse_ttl(f"{number}{unit}") <= timedelta(days=36_500)


def test_a_stop_counts_only_once_no_pod_is_left() -> None:
    """Stop then start at once, faster than the pod goes: no new lifetime (found by review)."""
    pod = KubeObject.model_validate(
        {"metadata": {"name": "box-1", "creationTimestamp": "2026-11-29T11:00:00Z"}}
    )
    stopping = server({}, {}, {"lastStart": CREATED.isoformat()}, True)
    seen = Observed(flavor_problem=None, workload=None, pods=[pod], service=None, now=NOW)
    assert "stoppedAt" not in observed_status(stopping, seen)  # the pod still holds the node
    gone = Observed(flavor_problem=None, workload=None, pods=[], service=None, now=NOW)
    assert observed_status(stopping, gone)["stoppedAt"] == "2026-11-29T12:00:00Z"
    # a start after a real stop counts from the first new pod, if the operator saw it late
    started = server(
        {}, {}, {"lastStart": CREATED.isoformat(), "stoppedAt": "2026-11-29T10:00:00Z"}, False
    )
    view = with_start(started, NOW, first_created([pod]))
    assert lifetime_start(view) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
