"""A reconcile never decides from a cache older than the operator's own last write.

The property of `OwnWrites` is generated: an API server's history of one object, writes of
ours and of others interleaved, and a watch that brings the versions back late and in order.
The decisions are the real controllers' (`reconcile_world`), with a watch that lags: a stop
sent just after a start reaches the workload the cache still shows at zero.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import DEPLOYMENTS, STATEFULSETS
from devserver.controller.own_writes import PATIENCE, OwnWrites, older
from tests.unit.reconcile_world import NAMESPACE, Call, World

KEY = ObjectKey(NAMESPACE, "box")


def version(rv: int | str) -> KubeObject:
    return KubeObject.model_validate(
        {"metadata": {"name": "box", "namespace": NAMESPACE, "resourceVersion": str(rv)}}
    )


@given(st.integers(1, 10**30), st.integers(1, 10**30))
def test_versions_compare_as_numbers_though_held_as_text(a: int, b: int) -> None:
    assert older(str(a), str(b)) is (a < b)


@given(st.sampled_from(["", "0", "012", "12a", "abc", "1.5", "-3", "٣"]))
def test_a_version_that_is_not_a_plain_number_is_not_compared(odd: str) -> None:
    assert older(odd, "5") is None and older("5", odd) is None
    writes = OwnWrites()
    writes.wrote(KEY, version(odd))
    assert len(writes) == 0  # nothing held that could never be let go


Step = tuple[str, int]  # ("ours" | "stop" | "theirs" | "deliver" | "wait", n)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ours", "stop", "theirs", "deliver", "wait"]), st.integers(1, 3)
        ),
        max_size=40,
    )
)
def test_a_cache_is_behind_exactly_while_it_shows_a_version_older_than_our_last_write(
    steps: list[Step],
) -> None:
    now = [0.0]
    writes = OwnWrites(clock=lambda: now[0])
    history = [1]  # the versions the API server made, in order
    shown = 0  # the index in `history` the cache shows
    ours: tuple[int, float, bool] | None = None  # our last write, when, and if a stop
    for what, n in steps:
        if what in ("ours", "stop"):
            history.append(history[-1] + n)
            writes.wrote(KEY, version(history[-1]), stops=what == "stop")
            ours = (history[-1], now[0], what == "stop")
        elif what == "theirs":
            history.append(history[-1] + n)
        elif what == "deliver":
            shown = min(len(history) - 1, shown + n)
        else:
            now[0] += n * PATIENCE / 2
        cached = history[shown]
        expected = ours is not None and cached < ours[0] and now[0] - ours[1] < PATIENCE
        assert writes.behind(KEY, version(cached)) is expected
        assert writes.stopping(KEY) is (expected and ours is not None and ours[2])
        if not expected:
            ours = None
            assert len(writes) == 0  # only writes in flight are held
    assert not writes.behind(KEY, None)  # gone: nothing to wait for


def _server(world: World, mode: str, *, stopped: bool) -> None:
    if mode == "standalone":
        world.server(stopped=stopped)
    else:
        world.server(stopped=stopped, mode="distributed", distributed={"worldSize": 2})


@pytest.mark.parametrize("mode", ["standalone", "distributed"])
async def test_a_stop_just_after_a_start_reaches_a_workload_the_watch_has_not_brought_back(
    mode: str,
) -> None:
    world = World(echo=True)
    world.flavor(gpus=1)
    controller, kind, resource = (
        ("devserver", "Deployment", DEPLOYMENTS)
        if mode == "standalone"
        else ("distributed", "StatefulSet", STATEFULSETS)
    )
    _server(world, mode, stopped=True)
    await world.reconcile(controller, "box")  # made at zero replicas, and in the caches
    made = world.cached(resource, "box")
    assert made is not None and made.extra["spec"]["replicas"] == 0

    world.echo, world.kube.versions = False, True  # from here the watch lags behind
    _server(world, mode, stopped=False)  # devctl start
    await world.reconcile(controller, "box")
    [start] = [c for c in world.kube.writes(kind) if c.verb == "apply"][-1:]
    assert start.body["spec"]["replicas"] >= 1

    scale = Call("patch", kind, "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale")
    world.kube.calls.clear()
    _server(world, mode, stopped=True)  # devctl stop, at once
    result = await world.reconcile(controller, "box")
    # the cache still shows zero replicas: the stop is sent all the same, and nothing else is
    # decided from that cache (no status, no other write) until the watch brings ours back
    assert world.kube.writes() == [scale]
    assert result is not None and result.requeue_after is not None
    [stop] = world.kube.calls

    world.kube.calls.clear()
    await world.reconcile(controller, "box")  # woken again, the watch still behind
    assert world.kube.writes() == []  # the stop is on its way: not sent twice

    world.deliver(resource, start)  # the start arrives: still older than the stop
    await world.reconcile(controller, "box")
    assert world.kube.writes() == []

    stopped = {**start.body["spec"], "replicas": 0}  # the stop arrives
    metadata = {**start.body["metadata"], "resourceVersion": stop.version}
    world.put(
        resource,
        resource.model.model_validate(start.body | {"metadata": metadata, "spec": stopped}),
    )
    await world.reconcile(controller, "box")
    assert [c for c in world.kube.writes(kind) if c.subresource == "scale"] == []
    assert world.kube.status_patches()[-1]["phase"] == "Stopped"
