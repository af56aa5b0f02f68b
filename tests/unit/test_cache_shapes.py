"""What the caches keep of an object: only what reconcilers read (`Resource.cache_keeps`), and
pydantic's per-instance sets of given fields shared between instances. The readers must give the
same answers from a cached object as from the object the API server sent."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject, keep_only
from devserver.api.resources import KUEUE_WORKLOADS, NODES, PODS
from devserver.informers import Informer
from devserver.reconcilers.devserver.resize import node_problem
from devserver.reconcilers.devserver.status import on_nodes, pod_condition, waiting_reason
from devserver.reconcilers.kueue import _priority, eviction, gated, waiting

FIXTURES = Path(__file__).parents[1] / "bench" / "fixtures" / "cached-objects.json"

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
keep_tree: st.SearchStrategy[Any] = st.recursive(
    st.booleans(),
    lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=8,
)


def _expected(value: Any, keep: Any) -> tuple[bool, Any]:
    """(kept?, what is kept), spelled out as the rule says."""
    if keep is True:
        return True, value
    if keep is False:
        return False, None
    if not isinstance(value, dict):
        return True, value
    kept = {}
    for k, v in value.items():
        present, inner = _expected(v, keep.get(k, False))
        if present:
            kept[k] = inner
    return True, kept


@given(st.dictionaries(st.sampled_from(["spec", "status", "data", "x"]), json_value), keep_tree)
def test_a_cache_keeps_exactly_what_it_names(extras: dict[str, Any], keep: Any) -> None:
    if not isinstance(keep, dict):
        keep = {}
    obj = KubeObject.model_validate({"metadata": {"name": "n", "labels": {"a": "b"}}, **extras})
    keep_only(obj, keep)
    want = {}
    for k, v in extras.items():
        present, inner = _expected(v, keep.get(k, False))
        if present:
            want[k] = inner
    assert obj.extra == want
    assert obj.metadata.labels == {"a": "b"}  # metadata is never projected


pods_answers = st.fixed_dictionaries(
    {
        "node": st.one_of(st.none(), st.sampled_from(["n1", "n2"])),
        "gates": st.lists(st.sampled_from(["kueue.x-k8s.io/admission", "other"]), max_size=2),
        "conditions": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["Ready", "PodScheduled", "DisruptionTarget"]),
                    "status": st.sampled_from(["True", "False"]),
                    "reason": st.sampled_from(["Preempted", "", "Unschedulable"]),
                    "message": st.text(max_size=8),
                }
            ),
            max_size=3,
        ),
        "waiting": st.one_of(st.none(), st.sampled_from(["ErrImagePull", "ContainerCreating"])),
    }
)


def _pod(fixture: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(fixture)
    spec, status = pod["spec"], pod["status"]
    spec.pop("nodeName", None)
    if answers["node"]:
        spec["nodeName"] = answers["node"]
    if answers["gates"]:
        spec["schedulingGates"] = [{"name": g} for g in answers["gates"]]
    status["conditions"] = answers["conditions"]
    if answers["waiting"]:
        status["containerStatuses"] = [
            {"name": "dev", "state": {"waiting": {"reason": answers["waiting"], "message": "m"}}}
        ]
    return pod


def _fixture(kind: str) -> dict[str, Any]:
    return dict(json.loads(FIXTURES.read_text())[kind])


def _cached(informer: Informer[KubeObject], body: dict[str, Any]) -> KubeObject:
    """`body` as the informer caches it, decoded from the wire as the reflector does."""
    informer.upsert(KubeObject.model_validate_json(json.dumps(body)))
    cached = informer.store.get(KubeObject.model_validate(body).key)
    assert cached is not None
    return cached


@given(pods_answers)
def test_readers_of_a_cached_pod_see_what_they_saw_in_the_whole_pod(
    answers: dict[str, Any],
) -> None:
    body = _pod(_fixture("pods"), answers)
    whole = KubeObject.model_validate(body)
    cached = _cached(Informer(None, PODS), body)  # type: ignore[arg-type]  # never started
    assert "containers" not in cached.extra["spec"]  # the bulk of a pod is gone
    for read in (
        lambda p: on_nodes([p]),
        gated,
        eviction,
        waiting_reason,
        lambda p: pod_condition(p, "Ready"),
        lambda p: p.extra["status"].get("startTime"),
    ):
        assert read(cached) == read(whole)


def test_a_cached_node_still_answers_whether_a_flavor_fits() -> None:
    from tests.unit.test_resize import flavor  # the resize tests' flavors: the "gpu" group

    body = _fixture("nodes")
    body["metadata"]["labels"]["eks.amazonaws.com/nodegroup"] = "gpu"
    body["spec"]["taints"] = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    body["status"]["allocatable"]["nvidia.com/gpu"] = "4"
    body["status"]["images"] = [{"names": [f"img-{i}"], "sizeBytes": i} for i in range(50)]
    whole = KubeObject.model_validate(body)
    cached = _cached(Informer(None, NODES), body)  # type: ignore[arg-type]
    assert "images" not in cached.extra["status"]
    fits, too_big = flavor("small", 1, cpu="1"), flavor("huge", 1, cpu="999")
    assert node_problem(fits, [cached]) is None
    assert node_problem(too_big, [cached]) == node_problem(too_big, [whole]) is not None


def test_a_cached_workload_keeps_its_priority_and_its_admission() -> None:
    body = {
        "metadata": {"name": "w", "namespace": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"priority": -100, "queueName": "q", "podSets": [{"template": {"spec": {}}}]},
        "status": {"conditions": [{"type": "QuotaReserved", "status": "False"}]},
    }
    cached = _cached(Informer(None, KUEUE_WORKLOADS), body)  # type: ignore[arg-type]
    assert "podSets" not in cached.extra["spec"]
    assert (_priority(cached), waiting(cached)) == (-100, True)


def test_instances_share_their_set_of_given_fields_and_copies_do_not_leak() -> None:
    body = _fixture("devservers")
    first, second = (DevServer.model_validate(body) for _ in range(2))
    assert first.metadata.__pydantic_fields_set__ is second.metadata.__pydantic_fields_set__
    before = set(second.model_fields_set)
    moved = first.model_copy(update={"status": None})  # a copy changes its own set only
    assert "status" in moved.model_fields_set
    assert second.model_fields_set == before
    assert first.model_dump(exclude_unset=True) == second.model_dump(exclude_unset=True)
    assert first.metadata.creation_timestamp == datetime.fromisoformat(
        body["metadata"]["creationTimestamp"]
    ).astimezone(UTC)


def _subclasses(cls: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_model_that_shares_its_fields_set_is_frozen() -> None:
    """A shared set is safe only while no instance can change its fields in place."""
    import importlib
    import pkgutil

    import devserver.api
    from devserver.api.meta import _Model

    for module in pkgutil.iter_modules(devserver.api.__path__):  # every model defined
        importlib.import_module(f"devserver.api.{module.name}")
    from devserver.api.schema import SpecModel

    models = _subclasses(_Model) + _subclasses(SpecModel)
    assert DevServer in models
    assert [m.__name__ for m in models if not m.model_config.get("frozen")] == []
