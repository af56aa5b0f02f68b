"""The guarantees on the real control plane and the real operator, with generated input.

Every example is sent to the API server as a user or admin would write it (raw JSON, not through
our models). Each is refused with a message, or stored; for what was stored the properties are
checked together once the examples are in (seconds each, not one wait per example):

- G3: every stored DevServer and DevUser gets a status within 10 s of its creation (the status
  write's managedFields time), and the operator process never dies;
- G2: no running server's `expiresAt` is past its recorded start + the cap, whatever its
  spec, annotations or Lease say; a server created stopped never has a pod;
- G1: no home PVC is deleted (the audit log is the witness).

Seeded (`derandomize`): a failure is reproducible. `DEVSERVER_FUZZ_EXAMPLES` raises the count
(`nox -s fuzz` runs ten times as many).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devserver.api.resources import DEVSERVERS, DEVUSERS, LEASES, PODS
from devserver.client.blocking import BlockingKubeClient, new_blocking_client
from devserver.client.errors import ApiError
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess

pytestmark = pytest.mark.integration

SCALE = int(os.environ.get("DEVSERVER_FUZZ_EXAMPLES", "300"))
SERVER_EXAMPLES = SCALE * 5 // 6
USER_EXAMPLES = SCALE - SERVER_EXAMPLES
CAP = timedelta(days=1)
FLAVORS = ["cpu-small", "cpu-large", "gpu-small", "gpu-large", "no-such-flavor"]


@dataclass
class Run:
    client: BlockingKubeClient
    operator: OperatorProcess
    namespace: str
    stored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def run(control_plane: LocalControlPlane) -> Iterator[Run]:
    operator = OperatorProcess(
        control_plane.operator_kubeconfig, ("--max-lifetime", "1d", "--warn-before", "8s")
    )
    operator.start()
    operator.wait_leading()
    namespace = f"fuzz-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    client = new_blocking_client(str(control_plane.kubeconfig))
    try:
        yield Run(client, operator, namespace)
    finally:
        client.close()
        code = operator.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        assert code == 0, operator.output()[-3000:]


# ------------------------------------------------------------------ what users write

times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
time_text = st.one_of(
    times.map(lambda t: t.isoformat() + "Z"),
    times.map(lambda t: t.isoformat()),
    times.map(lambda t: t.isoformat() + "+05:30"),
    st.text(max_size=30),
    st.sampled_from(["2100-01-01T00:00:00Z", "9999-12-31T23:59:59Z", ""]),
)
numbers = st.one_of(
    st.integers(-5, 5), st.integers(59, 61), st.integers(-(2**63), 2**63 - 1), st.floats()
)
durations = st.one_of(
    st.from_regex(r"\A([0-9]{1,12}[smhdx]){1,3}\Z"),
    st.sampled_from(["3000000d", "1h", "30m", "0s", "4h30m"]),
    st.text(max_size=12),
)
quantities = st.one_of(
    st.sampled_from(["20Gi", "1Gi", "0", "999999999999Pi", "1.5Ti", "-1Gi", "10E"]),
    st.from_regex(r"\A[0-9]{1,14}(Ki|Mi|Gi|Ti|Pi)?\Z"),
    st.text(max_size=10),
)
lifecycle = st.fixed_dictionaries(
    {},
    optional={
        "idleTimeout": numbers,
        "autoShutdown": st.booleans(),
        "expirationTime": time_text,
        "timeToLive": durations,
    },
)
annotation_keys = st.sampled_from(
    [
        "devservers.io/started-at",
        "devservers.io/warned",
        "devservers.io/stop-reason",
        "devservers.io/last-extension",
        "devservers.io/retention",
        "example.com/note",
    ]
)
spec = st.fixed_dictionaries(
    {
        "owner": st.one_of(st.just("gia@example.com"), st.text(max_size=80)),
        "flavor": st.one_of(st.sampled_from(FLAVORS), st.text(max_size=20)),
        "image": st.one_of(st.sampled_from(["busybox", "pytorch/pytorch:2.5.1"]), st.text()),
    },
    optional={
        "mode": st.sampled_from(["standalone", "distributed", "serverless"]),
        "distributed": st.fixed_dictionaries(
            {"worldSize": st.one_of(st.integers(0, 3), st.just(65))},
            optional={
                "nprocsPerNode": st.integers(0, 3),
                "backend": st.sampled_from(["gloo", "nccl", "mpi"]),
                "ncclSettings": st.dictionaries(
                    st.sampled_from(["NCCL_DEBUG", "LD_PRELOAD", "NCCL_X"]), st.text(max_size=8)
                ),
            },
        ),
        "persistentHomeSize": quantities,
        "sharedVolumeClaimName": st.one_of(st.sampled_from(["efs", "a.b"]), st.text(max_size=9)),
        "enableSSH": st.booleans(),
        "retainHomeOnDelete": st.booleans(),
        "lifecycle": lifecycle,
        "stopped": st.booleans(),
    },
)
aware_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@st.composite
def valid_spec(draw: st.DrawFn) -> dict[str, Any]:
    """Within every bound the CRD states, at its edges too: most of these must be stored."""
    body: dict[str, Any] = {
        "owner": draw(st.one_of(st.emails(), st.text(max_size=80))),
        "flavor": draw(st.sampled_from(FLAVORS)),
        "image": draw(st.sampled_from(["busybox", "pytorch/pytorch:2.5.1", "a/b@sha256:0f"])),
    }
    if draw(st.integers(0, 5)) == 0:
        body["mode"] = "distributed"
        body["distributed"] = {
            "worldSize": draw(st.integers(1, 3)),
            "nprocsPerNode": draw(st.integers(1, 64)),
            "backend": draw(st.sampled_from(["gloo", "nccl"])),
            "ncclSettings": draw(
                st.dictionaries(st.from_regex(r"\ANCCL_[A-Z]{1,8}\Z"), st.text(max_size=20))
            ),
        }
    life: dict[str, Any] = {}
    if draw(st.booleans()):
        life["idleTimeout"] = draw(st.integers(60, 2_592_000))
    if draw(st.booleans()):
        life["autoShutdown"] = draw(st.booleans())
    if draw(st.booleans()):
        when = draw(aware_times)
        life["expirationTime"] = when.isoformat().replace(
            "+00:00", draw(st.sampled_from(["Z", "+00:00"]))
        )
    if draw(st.booleans()):
        life["timeToLive"] = draw(st.from_regex(r"\A([0-9]{1,9}[smhd]){1,3}\Z"))
    body["lifecycle"] = life
    body["persistentHomeSize"] = draw(st.from_regex(r"\A[1-9][0-9]{0,2}(Mi|Gi)\Z"))
    body["retainHomeOnDelete"] = draw(st.booleans())
    body["enableSSH"] = draw(st.booleans())
    body["stopped"] = draw(st.booleans())
    return body


names = st.one_of(
    st.just(""),  # the test numbers it: a valid, unique name
    st.just(""),
    st.just(""),
    st.sampled_from(["9lives", "a.b", "UPPER", "x" * 41, "has_underscore", "-dash"]),
)


@settings(
    max_examples=SERVER_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    name=names,
    body=st.one_of(valid_spec(), valid_spec(), spec),
    notes=st.dictionaries(annotation_keys, time_text, max_size=3),
)
def _create_server(run: Run, name: str, body: dict[str, Any], notes: dict[str, str]) -> None:
    name = name or f"g{next(_COUNTER)}"
    obj = {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": run.namespace, "annotations": notes},
        "spec": body,
    }
    refusal = _refused(lambda: run.client.create(DEVSERVERS, obj, run.namespace))
    (run.refused if refusal else run.stored).append(name)


_COUNTER = itertools.count()


def test_generated_servers_are_refused_or_served_and_keep_the_guarantees(
    run: Run, control_plane: LocalControlPlane
) -> None:
    started = time.monotonic()
    _create_server(run)
    created_in = time.monotonic() - started
    print(  # noqa: T201 - the figures for the closing note
        f"\n{SERVER_EXAMPLES} generated DevServers in {created_in:.1f} s: "
        f"{len(run.stored)} stored, {len(run.refused)} refused"
    )
    assert run.stored, "the generator should produce valid servers too"
    assert run.refused, "…and invalid ones"

    # G3: a status for every stored server, within 10 s of its creation
    def unserved() -> list[str]:
        page = _all(run, DEVSERVERS)
        assert not page.unreadable, [u.problem for u in page.unreadable]
        return [d.metadata.name for d in page.items if not (d.status and d.status.conditions)]

    waited = _wait_until(lambda: not unserved(), 60)
    assert not unserved(), f"no status after {waited:.0f} s: {unserved()[:10]}"
    servers = _all(run, DEVSERVERS).items
    lags = _status_lags(
        control_plane,
        "devservers",
        {d.metadata.name: d.metadata.creation_timestamp for d in servers},
    )
    print(  # noqa: T201
        f"status after creation: p50 {_pct(lags, 50):.0f} s, max {max(lags):.0f} s "
        f"({len(lags)} servers)"
    )
    assert max(lags) <= 10, sorted(lags)[-10:]

    # G2: every running server stops by its recorded start + the cap
    now = datetime.now(UTC)
    for ds in _all(run, DEVSERVERS).items:
        status = ds.status
        assert status is not None
        if ds.spec.stopped:
            continue
        assert status.expires_at is not None, ds.metadata.name
        assert status.last_start is not None, ds.metadata.name
        assert status.last_start <= now + timedelta(seconds=2)
        assert status.expires_at <= status.last_start + CAP, ds.metadata.name

    # a server made stopped never has a pod; the operator never died
    time.sleep(5)
    stopped = {d.metadata.name for d in _all(run, DEVSERVERS).items if d.spec.stopped}
    pods = _all(run, PODS, label_selector="devserver.io/name").items
    assert not [p for p in pods if p.metadata.labels.get("devserver.io/name") in stopped]
    assert run.operator.alive(), run.operator.output()[-3000:]
    _assert_no_crash(run.operator)


def test_lease_fields_a_pod_may_write_never_lengthen_a_run(run: Run) -> None:
    """Any renewTime, duration and idle-since the agent's token could write."""
    leases = _all(run, LEASES, label_selector="devserver.io/name").items
    assert leases, "the servers above have activity Leases"
    written = itertools.count()

    @settings(max_examples=min(60, len(leases)), derandomize=True, database=None, deadline=None)
    @given(
        renewed=time_text,
        duration=st.integers(-(2**31), 2**31 - 1),
        idle=time_text,
        activity=st.text(max_size=200),
    )
    def write(renewed: str, duration: int, idle: str, activity: str) -> None:
        lease = leases[next(written) % len(leases)]
        patch = {
            "metadata": {
                "annotations": {
                    "devservers.io/idle-since": idle,
                    "devservers.io/activity": activity,
                }
            },
            "spec": {"renewTime": renewed, "leaseDurationSeconds": duration},
        }
        _refused(lambda: run.client.patch(LEASES, lease.metadata.name, patch, run.namespace))

    write()
    time.sleep(5)
    now = datetime.now(UTC)
    for ds in _all(run, DEVSERVERS).items:
        if ds.spec.stopped or ds.status is None or ds.status.expires_at is None:
            continue
        assert ds.status.last_start is not None
        assert ds.status.expires_at <= ds.status.last_start + CAP
        assert ds.status.last_start <= now + timedelta(seconds=2)
    assert run.operator.alive(), run.operator.output()[-3000:]
    _assert_no_crash(run.operator)


@settings(
    max_examples=USER_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "email": st.text(max_size=300),
            "sshPublicKeys": st.lists(st.text(max_size=50), max_size=3),
            "team": st.text(max_size=70),
            "quota": st.fixed_dictionaries(
                {},
                optional={
                    "gpus": numbers,
                    "cpu": quantities,
                    "memory": quantities,
                    "storage": quantities,
                    "devServers": numbers,
                },
            ),
        },
    )
)
def _create_user(made: list[str], body: dict[str, Any]) -> None:
    name = f"fz{uuid.uuid4().hex[:8]}"
    obj = {"apiVersion": "devservers.io/v1", "kind": "DevUser", "metadata": {"name": name}}
    obj["spec"] = body
    if not _refused(lambda: _USER_CLIENT[0].create(DEVUSERS, obj)):
        made.append(name)


_USER_CLIENT: list[BlockingKubeClient] = []


def test_generated_users_are_refused_or_get_a_status(
    run: Run, control_plane: LocalControlPlane
) -> None:
    made: list[str] = []
    _USER_CLIENT[:] = [run.client]
    _create_user(made)
    assert made
    try:

        def unserved() -> list[str]:
            return [
                name
                for name in made
                if not ((u := run.client.get(DEVUSERS, name)).status and u.status.conditions)
            ]

        _wait_until(lambda: not unserved(), 30)
        assert not unserved()
        users = {n: run.client.get(DEVUSERS, n).metadata.creation_timestamp for n in made}
        lags = _status_lags(control_plane, "devusers", users)
        print(f"\n{len(made)} DevUsers: status after creation max {max(lags):.0f} s")  # noqa: T201
        assert max(lags) <= 10
        assert run.operator.alive()
        _assert_no_crash(run.operator)
    finally:
        for name in made:
            run.client.delete(DEVUSERS, name)
            control_plane.kubectl("delete", "namespace", f"dev-{name}", "--wait=false", check=False)


def test_no_home_was_deleted(run: Run, control_plane: LocalControlPlane) -> None:
    """The audit log: no DELETE of a PVC in the namespace the generated servers live in."""
    deletes = [
        e
        for e in control_plane.audit_events()
        if e.get("verb") == "delete"
        and (e.get("objectRef") or {}).get("resource") == "persistentvolumeclaims"
        and (e.get("objectRef") or {}).get("namespace") == run.namespace
    ]
    assert not deletes, deletes[:3]


# ------------------------------------------------------------------ helpers


def _all(run: Run, resource: Any, *, label_selector: str = "") -> Any:
    """Every object in one answer (the fuzz session makes thousands: a 500-item page would
    check a fifth of them)."""
    page = run.client.list_page(
        resource, run.namespace, label_selector=label_selector, limit=100_000
    )
    assert not page.metadata.continue_, "more than one page"
    return page


def _refused(call: Any) -> bool:
    """Run an API call; a refusal must be a 4xx with a message (never a 500 or silence)."""
    refusal: ApiError | None = None
    try:
        call()
    except ApiError as error:
        refusal = error
    if refusal is None:
        return False
    assert refusal.status in (400, 409, 422), refusal
    assert refusal.message, "a refusal says why"
    return True


def _wait_until(probe: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout and not probe():
        time.sleep(0.5)
    return time.monotonic() - started


def _status_lags(
    control_plane: LocalControlPlane, resource: str, created: dict[str, datetime | None]
) -> list[float]:
    """Seconds from each object's creation (its creationTimestamp, whole seconds) to the
    operator's first status write as the API server's audit log saw it."""
    first: dict[str, datetime] = {}
    for event in control_plane.audit_events():
        ref = event.get("objectRef") or {}
        if ref.get("resource") != resource or ref.get("subresource") != "status":
            continue
        if event.get("verb") != "patch" or (event.get("responseStatus") or {}).get("code") != 200:
            continue
        when = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00"))
        first.setdefault(ref.get("name", ""), when)
    return [
        (first[name] - when).total_seconds() if name in first and when else float("inf")
        for name, when in created.items()
    ]


def _pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


def _assert_no_crash(operator: OperatorProcess) -> None:
    """Refusals are expected (ChildrenRefusedError, ApiError); a Python error on data is not."""
    bad = (
        "OverflowError",
        "TypeError",
        "KeyError",
        "ValueError",
        "ValidationError",
        "AttributeError",
    )
    lines = [line for line in operator.output().splitlines() if any(b in line for b in bad)]
    assert not lines, lines[:5]
