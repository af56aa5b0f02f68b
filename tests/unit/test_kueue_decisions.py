"""What devserver decides with Kueue, without a cluster: which workload carries the queue label
(never one that runs: Kueue refuses the change and it would restart the pod), what a queued
server's status says, its place in the queue, and what a Kueue outage looks like to the user.
The integration test (tests/integration/test_kueue.py) runs the same with the real Kueue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.lifecycle import Activity
from devserver.api.meta import KubeObject
from devserver.api.resources import DEPLOYMENTS, KUEUE_WORKLOADS, LEASES, PODS
from devserver.informers import Change, InformerFactory, Notification
from devserver.operator import kueue_config
from devserver.reconcilers.devserver.reconciler import queue_changed
from devserver.reconcilers.kueue import (
    Evictions,
    KueueConfig,
    QueueCaches,
    Step,
    gang_in,
    left_behind,
    managed_step,
    pod_shape,
    priority_label,
    queue_label,
    queued_message,
    shape_digest,
    to_mark,
    wanted_priority,
    yields_in,
)
from tests.unit.reconcile_world import NAMESPACE, World

LABEL = "kueue.x-k8s.io/queue-name"
ON = KueueConfig("gpu-shared")
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def deployment(label: str | None, replicas: int, ready: int) -> KubeObject:
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": "box",
                "namespace": NAMESPACE,
                "labels": {LABEL: label} if label else {},
            },
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready} if ready else {},
        }
    )


@given(
    had=st.sampled_from([None, "devserver", "other"]),
    replicas=st.integers(0, 2),
    ready=st.integers(0, 2),
    enabled=st.booleans(),
    exists=st.booleans(),
)
def test_a_scaled_up_workload_keeps_its_queue_label_whatever_the_setting(
    had: str | None, replicas: int, ready: int, enabled: bool, exists: bool
) -> None:
    """Even with no pod ready (a container restarting, a node gone quiet): the label would put
    the pod in the queue, and Kueue's webhook would replace it."""
    live = deployment(had, replicas, ready) if exists else None
    got = queue_label(live, ON if enabled else KueueConfig())
    if exists and (replicas or not enabled):
        assert got == had  # scaled up: never touched; off: never removed
    else:
        assert got == ("devserver" if enabled else None)  # made or started: queued


def workload(
    name: str,
    *,
    namespace: str = NAMESPACE,
    priority: int = 0,
    age: int = 0,
    admitted: bool = False,
) -> KubeObject:
    reserved = {"type": "QuotaReserved", "status": "True" if admitted else "False"}
    if not admitted:
        reserved["message"] = "couldn't assign flavors to pod set main: insufficient quota"
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "creationTimestamp": (T0 - timedelta(seconds=age)).isoformat(),
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": f"pod-{name}", "uid": f"pod-{name}"}
                ],
            },
            "spec": {"priority": priority, "queueName": "devserver"},
            "status": {"conditions": [reserved]},
        }
    )


@given(
    st.lists(
        st.tuples(st.integers(-2, 2), st.integers(0, 10_000), st.booleans()),
        min_size=1,
        max_size=12,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_places_in_the_queue_follow_kueues_order_priority_then_age(
    entries: list[tuple[int, int, bool]],
) -> None:
    queue = QueueCaches.shared(InformerFactory(None))  # type: ignore[arg-type]
    made = []
    for i, (priority, age, admitted) in enumerate(entries):
        w = workload(f"w{i}", priority=priority, age=age, admitted=admitted)
        queue.workloads.store.upsert(w)
        made.append((w, priority, age, admitted))
    waiting = [(w, p, a) for w, p, a, admitted in made if not admitted]
    places = [queue.position(w, {NAMESPACE}) for w, _, _ in waiting]
    assert sorted(places) == list(range(1, len(waiting) + 1))  # one place each, none skipped
    in_kueues_order = sorted(waiting, key=lambda e: (-e[1], -e[2]))  # higher first, then older
    assert [queue.position(w, {NAMESPACE}) for w, _, _ in in_kueues_order] == sorted(places)


def test_only_namespaces_of_the_same_cluster_queue_are_ahead() -> None:
    queue = QueueCaches.shared(InformerFactory(None))  # type: ignore[arg-type]
    mine = workload("mine", age=10)
    queue.workloads.store.upsert(mine)
    queue.workloads.store.upsert(workload("other-team", namespace="dev-bob", age=99))
    assert queue.position(mine, {NAMESPACE}) == 1
    assert queue.position(mine, {NAMESPACE, "dev-bob"}) == 2


@pytest.mark.parametrize(
    ("position", "said"),
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (22, "22nd")],
)
def test_a_queued_server_is_told_its_place_and_kueues_words(position: int, said: str) -> None:
    message = queued_message(workload("w"), position)
    assert message == (
        f"{said} in the queue for GPU quota: "
        "couldn't assign flavors to pod set main: insufficient quota"
    )


@pytest.mark.parametrize(
    ("cluster", "teams", "error"),
    [
        ("", ("vision=vq",), "needs --kueue-cluster-queue"),
        ("shared", ("vision",), "takes team=clusterqueue; not 'vision'"),
        ("shared", ("=vq",), "takes team=clusterqueue"),
        ("Shared_Q", (), "DNS subdomain"),
        ("shared", ("vision=VQ",), "not 'VQ'"),
    ],
)
def test_malformed_kueue_flags_are_refused_in_one_sentence(
    cluster: str, teams: tuple[str, ...], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        kueue_config(cluster, teams)


def test_teams_queue_in_their_own_cluster_queue_and_the_rest_in_the_default() -> None:
    config = kueue_config("shared", ("vision=vq", " nlp = nq "))
    assert config.cluster_queue_of("vision") == "vq"
    assert config.cluster_queue_of("nlp") == "nq"
    assert config.cluster_queue_of("") == "shared"
    assert not kueue_config("", ()).enabled


# ------------------------------------------------------------------ reconciles


def gated_server(world: World) -> None:
    world.flavor()
    world.server(status={"phase": "Pending"})
    world.child(
        DEPLOYMENTS,
        "box",
        metadata={"labels": {"devserver.io/name": "box", LABEL: "devserver"}},
        spec={"replicas": 1},
        status={},
    )
    world.child(
        PODS,
        "pod-w",
        metadata={"uid": "pod-w", "creationTimestamp": "2026-01-05T09:00:00Z"},
        spec={"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
        status={"conditions": [{"type": "PodScheduled", "status": "False"}]},
    )


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def test_a_server_kueue_holds_back_is_queued_with_its_words_and_holds_no_gpu() -> None:
    world = World(kueue=ON)
    gated_server(world)
    world.put(KUEUE_WORKLOADS, workload("w"))
    result = await world.reconcile("devserver", "box")
    status = world.kube.status_patches()[-1]
    assert status["phase"] == "Queued"
    assert ready(status)["reason"] == "Queued"
    assert ready(status)["message"].startswith("1st in the queue for GPU quota: couldn't assign")
    assert "billing" not in status  # no pod on a node: nothing billed
    assert result is not None and result.requeue_after == 60  # its place is looked at again


async def test_a_new_workload_is_made_in_the_users_queue() -> None:
    world = World(kueue=ON)
    world.flavor()
    world.server()
    await world.reconcile("devserver", "box")
    [applied] = [c for c in world.kube.writes("Deployment") if c.verb == "apply"]
    assert applied.body["metadata"]["labels"][LABEL] == "devserver"


async def test_without_kueue_no_workload_is_queued() -> None:
    world = World()
    world.flavor()
    world.server()
    await world.reconcile("devserver", "box")
    [applied] = [c for c in world.kube.writes("Deployment") if c.verb == "apply"]
    assert LABEL not in applied.body["metadata"]["labels"]


async def test_with_kueues_webhook_down_a_new_server_says_so_and_is_retried() -> None:
    world = World(kueue=ON)
    world.flavor()
    world.server()
    down = 'Internal error occurred: failed calling webhook "mdeployment.kb.io": connection refused'
    world.kube.refuse("apply", "Deployment", 500, down)
    with pytest.raises(Exception, match="failed calling webhook"):
        await world.reconcile("devserver", "box")  # retried with backoff
    status = world.kube.status_patches()[-1]
    assert status["phase"] == "Pending"
    assert ready(status)["reason"] == "AdmissionUnavailable"
    assert "it starts once it does" in ready(status)["message"]


# ------------------------------------------------------------------ a managed StatefulSet


def statefulset(
    replicas: int, running: int, requests: dict[str, str], *, queued: bool = True
) -> KubeObject:
    return KubeObject.model_validate(
        {
            "metadata": {"name": "box", "labels": {LABEL: "devserver"} if queued else {}},
            "spec": {"replicas": replicas, "template": template(requests)},
            "status": {"replicas": running},
        }
    )


def template(requests: dict[str, str]) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "dev", "resources": {"requests": requests}}]}}


def intent(replicas: int, requests: dict[str, str]) -> dict[str, Any]:
    return {"spec": {"replicas": replicas, "template": template(requests)}}


SMALL = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
BIG = {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}


@pytest.mark.parametrize(
    ("live", "wanted", "step"),
    [
        (statefulset(4, 4, SMALL), intent(4, SMALL), Step.APPLY),  # nothing Kueue holds
        (statefulset(4, 4, SMALL), intent(0, SMALL), Step.APPLY),  # a stop: N -> 0 allowed
        (statefulset(0, 0, SMALL), intent(4, SMALL), Step.RECREATE),  # a start: a new Workload
        (statefulset(4, 4, SMALL), intent(2, SMALL), Step.SCALE_DOWN),  # N -> M: through 0
        (statefulset(4, 4, SMALL), intent(4, BIG), Step.SCALE_DOWN),  # a new shape: stop first
        (statefulset(0, 3, SMALL), intent(2, SMALL), Step.WAIT),  # ranks still going
        (statefulset(0, 3, SMALL), intent(4, BIG), Step.WAIT),  # ranks still going
        (statefulset(0, 0, SMALL), intent(4, BIG), Step.RECREATE),  # made anew, homes orphaned
        (statefulset(0, 0, SMALL), intent(0, BIG), Step.KEEP_TEMPLATE),  # stopped: at start
        (statefulset(4, 4, SMALL, queued=False), intent(2, BIG), Step.APPLY),  # not Kueue's
    ],
)
def test_a_managed_statefulset_changes_only_the_way_kueue_allows(
    live: KubeObject, wanted: dict[str, Any], step: Step
) -> None:
    assert managed_step(live, wanted) is step


SAME_AMOUNTS = [
    ("500m", "0.5"), ("1", "1000m"), ("1Gi", "1024Mi"), ("2048Ki", "2Mi"), ("1k", "1000"),
]  # fmt: skip


@given(st.sampled_from(SAME_AMOUNTS), st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]))
def test_the_same_amount_written_another_way_is_the_same_shape(
    amounts: tuple[str, str], resource: str
) -> None:
    """The API server may store a quantity in another form than the operator wrote it: that
    must never look like a new shape, or a running gang would restart again and again."""
    written, stored = amounts
    assert pod_shape(template({resource: written})["spec"]) == pod_shape(
        template({resource: stored})["spec"]
    )
    live = statefulset(4, 4, {resource: stored})
    assert managed_step(live, intent(4, {resource: written})) is Step.APPLY


# ------------------------------------------------------------------ preemption


def evicted(created: str, reason: str = "WorkloadEvictedDueToPreempted") -> KubeObject:
    condition = {
        "type": "TerminationTarget",
        "status": "True",
        "reason": reason,
        "message": "Preempted to accommodate a workload due to reclamation within the cohort",
    }
    return KubeObject.model_validate(
        {
            "metadata": {"name": f"pod-{created}", "creationTimestamp": created},
            "status": {"conditions": [condition]},
        }
    )


def server(acted: str | None = None) -> Any:
    world = World()
    annotations = {"devservers.io/preempted-at": acted} if acted else {}
    return world.server(annotations=annotations)


def test_an_eviction_seen_on_the_watch_is_acted_on_though_the_pod_is_gone() -> None:
    evictions = Evictions()
    ds = server()
    evictions.note(ds.key, evicted("2026-01-05T10:00:00Z"))
    found = evictions.pending(ds, [])  # Kueue deleted the pod before the reconcile ran
    assert found is not None and "reclamation" in found.message
    evictions.forget(ds.key)  # stopped for it
    assert evictions.pending(ds, []) is None


def test_pods_of_the_run_a_server_was_stopped_for_never_stop_it_again() -> None:
    """The other ranks of a preempted gang, or a pod still going when the user starts the
    server again, were made before the stop: they belong to the run that ended."""
    evictions = Evictions()
    ds = server(acted="2026-01-05T10:00:05Z")
    rank_3 = evicted("2026-01-05T10:00:00Z")
    evictions.note(ds.key, rank_3)  # its deletion, seen after the stop
    assert evictions.pending(ds, [rank_3]) is None
    assert evictions.seen == {}  # nothing waits for the next start
    assert evictions.pending(ds, [evicted("2026-01-05T12:00:00Z")]) is not None  # a new run's


@pytest.mark.parametrize(
    "reason",
    [
        "WorkloadDeleted",
        "NotAdmitted",
        "WorkloadEvictedDueToPodsReadyTimeout",
        "WorkloadEvictedDueToClusterQueueStopped",
    ],
)
def test_only_a_preemption_stops_a_server(reason: str) -> None:
    """Kueue marks pods it stops for other reasons too: its Workload deleted, pods not ready
    in time (it requeues them), a queue stopped. Those are Kueue's to requeue."""
    assert Evictions().pending(server(), [evicted("2026-01-05T10:00:00Z", reason)]) is None


async def test_a_preempted_server_is_stopped_with_the_reason_and_kueues_words() -> None:
    world = World(kueue=ON)
    gated_server(world)
    world.child(
        PODS,
        "box-old",
        metadata={
            "uid": "p1",
            "creationTimestamp": "2026-01-05T09:30:00Z",
            "deletionTimestamp": "2026-01-05T10:00:00Z",
        },
        status={
            "conditions": [
                {
                    "type": "TerminationTarget",
                    "status": "True",
                    "reason": "WorkloadEvictedDueToPreempted",
                    "message": "Preempted to accommodate a workload",
                }
            ]
        },
    )
    await world.reconcile("devserver", "box")
    [stop] = [c for c in world.kube.writes("DevServer") if c.verb == "patch"]
    assert stop.body["spec"] == {"stopped": True}
    annotations = stop.body["metadata"]["annotations"]
    assert annotations["devservers.io/stop-reason"] == "Preempted"
    assert annotations["devservers.io/preempted-at"] > "2026-01-05T09:30:00Z"
    [(kind, reason, message)] = world.kube.events()
    assert (kind, reason) == ("Warning", "Preempted")
    assert "Preempted to accommodate a workload" in message and "devctl start box" in message


def test_a_statefulset_getting_its_queue_label_now_is_held_to_kueues_rules_already() -> None:
    """Kueue judges an update by the new object: a label given with a new shape is refused."""
    live = statefulset(0, 0, SMALL, queued=False)
    labelled = intent(4, BIG) | {"metadata": {"labels": {LABEL: "devserver"}}}
    assert managed_step(live, labelled) is Step.RECREATE


def test_what_the_api_server_drops_as_empty_is_not_a_new_shape() -> None:
    """A toleration written with `key: ""` is stored without it: never a restart loop."""
    written = {"tolerations": [{"key": "", "operator": "Exists", "value": ""}], "affinity": {}}
    stored = {"tolerations": [{"operator": "Exists"}]}
    assert pod_shape(written) == pod_shape(stored)


def test_a_shape_sent_once_is_not_made_anew_for_what_the_server_changed_in_it() -> None:
    """Another webhook may write into the template: the digest of what the operator sent says
    it already made the StatefulSet for this shape."""
    live = statefulset(4, 4, SMALL)
    wanted = intent(4, BIG)
    assert managed_step(live, wanted) is Step.SCALE_DOWN
    live.metadata.annotations["devservers.io/pod-shape"] = shape_digest(wanted["spec"]["template"])
    assert managed_step(live, wanted) is Step.APPLY


# ------------------------------------------------------------------ idle servers yield first

YIELDS = KueueConfig("gpu-shared", idle_yield_after=timedelta(minutes=15))
CLASS = "kueue.x-k8s.io/priority-class"


def report(renewed: datetime | None, idle_since: datetime | None, valid: int = 60) -> Activity:
    return Activity(
        renewed,
        renewed + timedelta(seconds=valid) if renewed else None,
        idle_since,
        "",
    )


@given(
    silent_for=st.integers(0, 600),
    idle_for=st.one_of(st.none(), st.integers(0, 7200)),
    after=st.integers(0, 3600),
)
def test_only_a_fresh_report_of_idleness_long_enough_marks_a_server_to_yield(
    silent_for: int, idle_for: int | None, after: int
) -> None:
    now = T0 + timedelta(hours=5)
    renewed = now - timedelta(seconds=silent_for)
    idle_since = None if idle_for is None else now - timedelta(seconds=idle_for)
    activity = report(renewed, idle_since)
    wanted = wanted_priority(activity, now, timedelta(seconds=after))
    fresh = silent_for <= 60
    should = fresh and idle_for is not None and idle_for >= after
    assert wanted == ("devserver-idle" if should else "devserver-active")
    turn = yields_in(activity, now, timedelta(seconds=after))
    if turn is not None:  # it is marked once that time has passed, if still reported idle
        assert not should
        then = now + timedelta(seconds=turn)
        expected = "devserver-idle" if activity.fresh(then) else "devserver-active"
        assert wanted_priority(activity, then, timedelta(seconds=after)) == expected
    assert wanted_priority(None, now, timedelta(0)) == "devserver-active"  # no agent: active


def labelled_pod(name: str, klass: str | None, *, gated_: bool = False, gone: bool = False) -> Any:
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {CLASS: klass} if klass else {},
                **({"deletionTimestamp": "2026-01-05T10:00:00Z"} if gone else {}),
            },
            "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]} if gated_ else {},
        }
    )


def test_only_running_pods_that_have_a_class_are_marked() -> None:
    pods = [
        labelled_pod("a", "devserver-active"),
        labelled_pod("b", None),  # Kueue refuses a class given to a running pod
        labelled_pod("c", "devserver-active", gated_=True),  # queued: nothing to yield
        labelled_pod("d", "devserver-active", gone=True),
        labelled_pod("e", "devserver-idle"),
    ]
    assert [p.metadata.name for p in to_mark(pods, "devserver-idle")] == ["a"]
    assert [p.metadata.name for p in to_mark(pods, "devserver-active")] == ["e"]


@given(
    had=st.sampled_from([None, "devserver-active", "devserver-idle"]), replicas=st.integers(0, 2)
)
def test_a_running_workload_keeps_its_class_and_a_start_is_active(
    had: str | None, replicas: int
) -> None:
    live = deployment("devserver", replicas, replicas)
    if had:
        live.metadata.labels[CLASS] = had
    for config in (ON, YIELDS, KueueConfig()):
        label = priority_label(live, config)
        if replicas or not config.yields:
            assert label == had  # Kueue refuses adding one while it runs, or ever removing one
        else:
            assert label == "devserver-active"
    assert priority_label(None, YIELDS) == "devserver-active"
    assert priority_label(None, ON) is None


def lease(renewed: datetime, idle_since: datetime | None) -> dict[str, Any]:
    annotations = {"devservers.io/idle-since": idle_since.isoformat()} if idle_since else {}
    return {
        "metadata": {"annotations": annotations},
        "spec": {"renewTime": renewed.isoformat(), "leaseDurationSeconds": 3600},
    }


def running_box(world: World, klass: str) -> None:
    world.flavor()
    world.server(status={"phase": "Running"})
    world.child(
        DEPLOYMENTS,
        "box",
        metadata={"labels": {"devserver.io/name": "box", LABEL: "devserver", CLASS: klass}},
        spec={"replicas": 1},
        status={"readyReplicas": 1},
    )
    world.child(
        PODS,
        "box-pod",
        metadata={"uid": "p1", "labels": {"devserver.io/name": "box", CLASS: klass}},
        status={"conditions": [{"type": "Ready", "status": "True"}]},
    )


@pytest.mark.parametrize(
    ("idle_minutes", "klass", "marked"),
    [
        (20, "devserver-active", "devserver-idle"),
        (5, "devserver-active", None),
        (None, "devserver-idle", "devserver-active"),
        (20, "devserver-idle", None),
    ],
)
async def test_a_server_idle_long_enough_is_marked_to_yield_and_active_again_unmarked(
    idle_minutes: int | None, klass: str, marked: str | None
) -> None:
    world = World(kueue=YIELDS)
    running_box(world, klass)
    now = datetime.now(UTC)
    idle = None if idle_minutes is None else now - timedelta(minutes=idle_minutes)
    world.child(LEASES, "box-activity", **lease(now, idle))
    result = await world.reconcile("devserver", "box")
    patches = [c for c in world.kube.writes("Pod") if c.verb == "patch"]
    if marked is None:
        assert patches == []
    else:
        [patch] = patches
        assert patch.body == {"metadata": {"labels": {CLASS: marked}}}
    if idle_minutes == 5:  # looked at again when it has been idle for 15 min
        assert result is not None and 590 <= result.requeue_after <= 602


async def test_without_idle_yield_no_pod_is_marked() -> None:
    world = World(kueue=ON)
    running_box(world, "devserver-active")
    now = datetime.now(UTC)
    world.child(LEASES, "box-activity", **lease(now, now - timedelta(hours=2)))
    await world.reconcile("devserver", "box")
    assert [c for c in world.kube.writes("Pod") if c.verb == "patch"] == []


async def test_a_server_that_yielded_is_told_it_was_stopped_because_it_was_idle() -> None:
    world = World(kueue=YIELDS)
    running_box(world, "devserver-idle")
    world.child(
        PODS,
        "box-pod",
        metadata={
            "uid": "p1",
            "labels": {"devserver.io/name": "box", CLASS: "devserver-idle"},
            "creationTimestamp": "2026-01-05T09:30:00Z",
        },
        status={
            "conditions": [
                {
                    "type": "TerminationTarget",
                    "status": "True",
                    "reason": "WorkloadEvictedDueToPreempted",
                    "message": "Preempted to accommodate a workload due to prioritization",
                }
            ]
        },
    )
    await world.reconcile("devserver", "box")
    [(kind, reason, message)] = world.kube.events()
    assert (kind, reason) == ("Warning", "Preempted")
    assert "it was idle and a queued server needed its GPUs" in message
    assert "home volume kept" in message


def test_idle_yield_is_off_at_zero_and_a_bad_duration_is_refused_in_one_sentence() -> None:
    assert kueue_config("q", (), "0s").idle_yield_after is None
    assert kueue_config("q", (), "0").idle_yield_after is None
    assert kueue_config("q", (), "15m").idle_yield_after == timedelta(minutes=15)
    with pytest.raises(ValueError, match="--kueue-idle-yield-after: 'soon' is not a duration"):
        kueue_config("q", (), "soon")
    with pytest.raises(ValueError, match="needs --kueue-cluster-queue"):
        kueue_config("", (), "15m")


# ---------------------------------------------------------------------- left behind by Kueue


def gang_workload(*, owned: bool, deleting: bool, uid: str | None) -> KubeObject:
    """A Workload Kueue made for StatefulSet `box` (made for `uid`)."""
    meta: dict[str, Any] = {
        "name": f"statefulset-box-{uid or 'legacy'}",
        "namespace": NAMESPACE,
        "uid": f"wl-{uid}",
        "annotations": {
            "kueue.x-k8s.io/job-owner-gvk": "apps/v1, Kind=StatefulSet",
            "kueue.x-k8s.io/job-owner-name": "box",
        },
        "labels": {"kueue.x-k8s.io/job-uid": uid} if uid else {},
    }
    if owned:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "box", "uid": uid or "x"}
        ]
    if deleting:
        meta["deletionTimestamp"] = T0.isoformat()
    return KubeObject.model_validate({"metadata": meta, "spec": {"queueName": "devserver"}})


def live_gang(uid: str, replicas: int, running: int) -> KubeObject:
    return KubeObject.model_validate(
        {
            "metadata": {"name": "box", "namespace": NAMESPACE, "uid": uid},
            "spec": {"replicas": replicas},
            "status": {"replicas": running},
        }
    )


def rank(group: str) -> KubeObject:
    return KubeObject.model_validate(
        {"metadata": {"name": "box-0", "labels": {"kueue.x-k8s.io/pod-group-name": group}}}
    )


@given(
    owned=st.booleans(),
    deleting=st.booleans(),
    made_for=st.sampled_from(["now", "before", None]),
    live=st.sampled_from(["running", "stopping", "stopped", "gone"]),
    has_pod=st.booleans(),
)
def test_only_a_workload_nothing_will_take_back_is_deleted_and_always_that_one(
    owned: bool, deleting: bool, made_for: str | None, live: str, has_pod: bool
) -> None:
    """Kueue 0.17.0 can leave a gang's Workload admitted with no owner after a scale to zero
    (kueue#12232): the GPUs are held for nobody. That one goes; one the running StatefulSet,
    a pod or the garbage collector may still claim never does."""
    workload = gang_workload(owned=owned, deleting=deleting, uid=made_for)
    statefulset = {
        "running": live_gang("now", 2, 2),
        "stopping": live_gang("now", 0, 1),
        "stopped": live_gang("now", 0, 0),
        "gone": None,
    }[live]
    pods = [rank(workload.metadata.name)] if has_pod else [rank("statefulset-box-other")]
    deleted = left_behind([workload], statefulset, pods) == [workload]
    if owned or deleting or has_pod:
        assert not deleted  # the collector's or Kueue's to finish, or a rank runs on it
    elif live in ("running", "stopping") and made_for in ("now", None):
        assert not deleted  # the running StatefulSet's own (or maybe: legacy, unnamed)
    else:
        assert deleted  # an earlier StatefulSet's, or a stopped one's: GPUs for nobody


def test_a_gang_workload_is_found_by_its_statefulset_even_with_no_owner_left() -> None:
    orphan = gang_workload(owned=False, deleting=False, uid="before")
    assert gang_in(orphan) == (f"{NAMESPACE}/box",)
    of_a_pod = workload("solo")  # a Deployment's pod's own: not a gang's
    assert gang_in(of_a_pod) == ()


def test_a_workload_losing_its_last_owner_wakes_its_server_and_a_routine_write_does_not() -> None:
    """Kueue's last edit of a left-behind Workload removes its StatefulSet's owner reference:
    nothing else about it changes, and the server must look at it then."""
    owned = gang_workload(owned=True, deleting=False, uid="before")
    orphan = gang_workload(owned=False, deleting=False, uid="before")
    assert queue_changed(Notification(Change.UPDATED, orphan, owned))
    same = gang_workload(owned=True, deleting=False, uid="before")
    assert not queue_changed(Notification(Change.UPDATED, same, owned))
