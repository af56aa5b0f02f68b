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

from devserver.api.meta import KubeObject
from devserver.api.resources import DEPLOYMENTS, KUEUE_WORKLOADS, PODS
from devserver.informers import InformerFactory
from devserver.operator import kueue_config
from devserver.reconcilers.kueue import (
    Evictions,
    KueueConfig,
    QueueCaches,
    Step,
    managed_step,
    pod_shape,
    queue_label,
    queued_message,
)
from tests.unit.reconcile_world import NAMESPACE, World

LABEL = "kueue.x-k8s.io/queue-name"
ON = KueueConfig("gpu-shared")
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def deployment(label: str | None, ready: int) -> KubeObject:
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": "box",
                "namespace": NAMESPACE,
                "labels": {LABEL: label} if label else {},
            },
            "spec": {"replicas": 1},
            "status": {"readyReplicas": ready} if ready else {},
        }
    )


@given(
    had=st.sampled_from([None, "devserver", "other"]),
    ready=st.integers(0, 2),
    enabled=st.booleans(),
    exists=st.booleans(),
)
def test_a_running_workload_keeps_its_queue_label_whatever_the_setting(
    had: str | None, ready: int, enabled: bool, exists: bool
) -> None:
    live = deployment(had, ready) if exists else None
    got = queue_label(live, ON if enabled else KueueConfig())
    if exists and (ready or not enabled):
        assert got == had  # running: Kueue refuses a change; off: never removed
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
        (statefulset(0, 0, SMALL), intent(4, SMALL), Step.APPLY),  # a start: 0 -> N allowed
        (statefulset(4, 4, SMALL), intent(2, SMALL), Step.SCALE_DOWN),  # N -> M: through 0
        (statefulset(4, 4, SMALL), intent(4, BIG), Step.SCALE_DOWN),  # a new shape: stop first
        (statefulset(0, 3, SMALL), intent(2, SMALL), Step.APPLY),  # 0 -> M: Kueue says when
        (statefulset(0, 3, SMALL), intent(4, BIG), Step.WAIT),  # ranks still going
        (statefulset(0, 0, SMALL), intent(4, BIG), Step.RECREATE),  # made anew, homes orphaned
        (statefulset(0, 0, SMALL), intent(0, BIG), Step.RECREATE),  # stopped: the same
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


def evicted(uid: str, reason: str = "WorkloadEvictedDueToPreempted") -> KubeObject:
    condition = {
        "type": "TerminationTarget",
        "status": "True",
        "reason": reason,
        "message": "Preempted to accommodate a workload due to reclamation within the cohort",
    }
    return KubeObject.model_validate(
        {"metadata": {"name": f"pod-{uid}", "uid": uid}, "status": {"conditions": [condition]}}
    )


def server(acted: str | None = None) -> Any:
    world = World()
    annotations = {"devservers.io/preempted-pod": acted} if acted else {}
    return world.server(annotations=annotations)


def test_an_eviction_seen_on_the_watch_is_acted_on_though_the_pod_is_gone() -> None:
    evictions = Evictions()
    ds = server()
    evictions.note(ds.key, evicted("p1"))
    found = evictions.take(ds, [])  # Kueue deleted the pod before the reconcile ran
    assert found is not None and found[0] == "p1" and "reclamation" in found[1]
    assert evictions.take(ds, []) is None  # once


def test_a_server_started_again_is_not_stopped_for_the_pod_it_was_stopped_for() -> None:
    evictions = Evictions()
    ds = server(acted="p1")
    evictions.note(ds.key, evicted("p1"))
    assert evictions.take(ds, [evicted("p1")]) is None  # that pod may still be going
    assert evictions.take(ds, [evicted("p2")]) is not None  # a new eviction is


@pytest.mark.parametrize("reason", ["WorkloadDeleted", "NotAdmitted", "NoMatchingWorkload"])
def test_only_an_eviction_stops_a_server(reason: str) -> None:
    """Kueue marks pods it stops for other reasons too (its Workload deleted, ...): those are
    not the user's server being taken away."""
    assert Evictions().take(server(), [evicted("p1", reason)]) is None


async def test_a_preempted_server_is_stopped_with_the_reason_and_kueues_words() -> None:
    world = World(kueue=ON)
    gated_server(world)
    world.child(
        PODS,
        "box-old",
        metadata={"uid": "p1", "deletionTimestamp": "2026-01-05T10:00:00Z"},
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
    assert stop.body["metadata"]["annotations"] == {
        "devservers.io/stop-reason": "Preempted",
        "devservers.io/preempted-pod": "p1",
    }
    [(kind, reason, message)] = world.kube.events()
    assert (kind, reason) == ("Warning", "Preempted")
    assert "Preempted to accommodate a workload" in message and "devctl start box" in message
