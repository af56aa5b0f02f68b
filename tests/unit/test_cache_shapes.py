"""What the caches keep of an object: only what reconcilers read (`Resource.cache_keeps`), and
pydantic's per-instance sets of given fields shared between instances. The readers must give the
same answers from a cached object as from the object the API server sent."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from devserver.api.devserver import DevServer
from devserver.api.meta import DIGEST, KubeObject, ObjectKey, as_cached, keep_only, shared_key
from devserver.api.resources import (
    KUEUE_WORKLOADS,
    NODES,
    PODS,
    SCRIPT_CONFIGMAPS,
)
from devserver.controller.applied import apply_if_changed, live_fields
from devserver.informers import OWNED, OWNER_UID_INDEX, Informer, InformerFactory, Store
from devserver.reconcilers.devserver.activity_agent import AgentInformers, desired_scripts
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


# ------------------------------------------------------------------ packed stores

wire_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # what JSON (and the API server) carries
    st.text(max_size=6),
)
wire_value = st.recursive(
    wire_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)
zones = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))  # RFC 3339's
times = st.datetimes(timezones=zones).map(lambda t: t.isoformat())
durations = st.lists(
    st.tuples(st.integers(0, 10**9), st.sampled_from("smhd")), min_size=1, max_size=12
).map(lambda parts: "".join(f"{n}{u}" for n, u in parts))


def _server_body(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """A DevServer the API server would accept, with generated spec and status values."""
    lifecycle = {
        k: v
        for k, v in {
            "idleTimeout": given["idle"],
            "timeToLive": given["ttl"],
            "expirationTime": given["expires"],
        }.items()
        if v is not None
    }
    status = {
        "phase": given["phase"],
        "startedAt": given["started"],
        "billing": {"seconds": given["seconds"], "cost": given["cost"], "since": given["started"]},
    }
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": "dev-a", "resourceVersion": given["rv"]},
        "spec": {
            "owner": given["owner"],
            "flavor": "gpu",
            "image": "pytorch/pytorch:2.5.1",
            "stopped": given["stopped"],
            "lifecycle": lifecycle,
            **(
                {"mode": "distributed", "distributed": {"worldSize": given["world"]}}
                if given["world"]
                else {}
            ),
        },
        "status": {k: v for k, v in status.items() if v is not None}
        | {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Running", "message": given["owner"]}
            ],
            "ranks": [{"rank": i, "pod": f"box-{i}", "ready": True} for i in range(given["world"])],
        },
    }


servers = st.fixed_dictionaries(
    {
        "rv": st.integers(1, 10**12).map(str),
        "owner": st.text(max_size=20),
        "stopped": st.booleans(),
        "idle": st.one_of(st.none(), st.integers(60, 10**12)),  # past the bound: a legacy value
        "ttl": st.one_of(st.none(), durations),
        "expires": st.one_of(st.none(), times),
        "world": st.one_of(st.just(0), st.integers(1, 64)),
        "phase": st.one_of(st.none(), st.sampled_from(["Pending", "Running", "Stopped"])),
        "started": st.one_of(st.none(), times),
        "seconds": st.floats(0, 1e12),
        "cost": st.floats(0, 1e9),
    }
)


def same(a: BaseModel | None, b: BaseModel | None) -> bool:
    """Equal as a reader sees them, to the type of each value and the offset of each time,
    and with the same fields given (what a later `exclude_unset` dump writes)."""
    if a is None or b is None:
        return a is b
    return (a.model_dump_json(), a.model_dump_json(exclude_unset=True)) == (
        b.model_dump_json(),
        b.model_dump_json(exclude_unset=True),
    )


@given(servers, st.sampled_from(["json", "dict"]))
def test_a_packed_devserver_reads_back_as_the_one_decoded_from_the_wire(
    given_: dict[str, Any], path: str
) -> None:
    body = _server_body("box", given_)
    decoded = (  # the reflector's way, and the fallback's (`client/decoding.py`)
        DevServer.model_validate_json(json.dumps(body))
        if path == "json"
        else DevServer.model_validate(json.loads(json.dumps(body)))
    )
    store: Store[DevServer] = Store(packed=DevServer)
    store.upsert(decoded)
    store.upsert(DevServer.model_validate_json(json.dumps(_server_body("other", given_))))
    read = store.get(decoded.key)  # decoded from its bytes: the other is the recent one
    assert same(read, decoded)
    assert read is not None and read.model_fields_set == decoded.model_fields_set
    assert read.spec.model_fields_set == decoded.spec.model_fields_set


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 3).map(str),
            st.lists(st.sampled_from(["u1", "u2"]), max_size=2, unique=True),
            st.dictionaries(st.sampled_from(["spec", "status", "data"]), wire_value),
        ),
        st.tuples(st.just("delete"), st.sampled_from(["a", "b", "c"])),
        st.tuples(
            st.just("replace"),
            st.lists(
                st.tuples(
                    st.sampled_from(["a", "b", "c"]),
                    st.integers(1, 3).map(str),
                    st.lists(st.sampled_from(["u1", "u2"]), max_size=2, unique=True),
                    st.dictionaries(st.sampled_from(["spec", "status"]), wire_value),
                )
            ),
        ),
    ),
    max_size=12,
)


@given(operations)
def test_a_packed_store_answers_every_reader_as_a_plain_one(ops: list[tuple[Any, ...]]) -> None:
    """The same changes into a plain store and a packed one: every answer the same, including
    what a change reports (old objects for updates, the deleted ones' last state)."""
    plain: Store[KubeObject] = Store(OWNED)
    packed: Store[KubeObject] = Store(OWNED, packed=KubeObject)
    same_all = lambda xs, ys: len(xs) == len(ys) and all(map(same, xs, ys))  # noqa: E731

    def wire(name: str, rv: str, owners: list[str], extras: dict[str, Any]) -> KubeObject:
        refs = [{"apiVersion": "v1", "kind": "X", "name": u, "uid": u} for u in owners]
        body = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}
        body["metadata"] |= {"ownerReferences": refs} if refs else {}
        return KubeObject.model_validate_json(json.dumps(body | extras))

    def keyed(objects: list[KubeObject]) -> list[KubeObject]:
        return sorted(objects, key=lambda o: o.metadata.name)

    for op in ops:
        if op[0] == "upsert":
            obj = wire(*op[1:])
            assert same(plain.upsert(obj), packed.upsert(obj))
        elif op[0] == "delete":
            key = ObjectKey("ns", op[1])
            assert same(plain.delete(key), packed.delete(key))
        else:
            objs = list({o.key: o for o in (wire(*args) for args in op[1])}.values())
            a, b = plain.replace(objs), packed.replace(objs)
            assert same_all(keyed(a.added), keyed(b.added))
            assert same_all(keyed(a.deleted), keyed(b.deleted))
            updates = [sorted(r.updated, key=lambda p: p[0].key.name) for r in (a, b)]
            assert same_all(
                [o for pair in updates[0] for o in pair], [o for pair in updates[1] for o in pair]
            )
        assert same_all(keyed(plain.objects()), keyed(packed.objects()))
        for uid in ("u1", "u2"):
            assert same_all(
                keyed(plain.by_index(OWNER_UID_INDEX, uid)),
                keyed(packed.by_index(OWNER_UID_INDEX, uid)),
            )
            owned = {
                o.key for o in plain.objects() for r in o.metadata.owner_references if r.uid == uid
            }
            assert plain.index_keys(OWNER_UID_INDEX, uid) == owned
            assert packed.index_keys(OWNER_UID_INDEX, uid) == owned
            assert packed.index_count(OWNER_UID_INDEX, uid) == len(owned)
        for name in "abc":
            assert same(plain.get(ObjectKey("ns", name)), packed.get(ObjectKey("ns", name)))


class _Applies:
    """A client that records what would be applied."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def apply(
        self, resource: Any, intent: dict[str, Any], *, field_manager: str
    ) -> KubeObject:
        self.sent.append(intent)
        return KubeObject.model_validate(intent)


def _scripts_as_cached(intent: dict[str, Any]) -> KubeObject:
    served = copy.deepcopy(intent)
    served["metadata"] |= {"uid": "u1", "resourceVersion": "7"}
    live = KubeObject.model_validate(json.loads(json.dumps(served)))
    keep_only(live, SCRIPT_CONFIGMAPS.cache_keeps or {})
    return live


@given(st.text(min_size=1, max_size=40))
def test_the_scripts_configmap_is_cached_as_a_digest_and_rewritten_only_when_it_differs(
    edit: str,
) -> None:
    """~45 KB of scripts per user namespace: the cache holds a digest of them. One as the
    operator writes it is left alone; one an admin edited, in any way, is written again."""
    intent = desired_scripts("dev-a")
    live = _scripts_as_cached(intent)
    assert all(len(v) < 100 for v in live.extra["data"].values())
    kept_twice = live.model_copy(deep=True)
    keep_only(kept_twice, SCRIPT_CONFIGMAPS.cache_keeps or {})
    assert kept_twice.extra["data"] == live.extra["data"]
    operator_cache = AgentInformers.shared(InformerFactory(cast(Any, None))).config_maps
    assert operator_cache.resource.cache_keeps is SCRIPT_CONFIGMAPS.cache_keeps
    client: Any = _Applies()

    def applied(cached: KubeObject) -> bool:
        answer = asyncio.run(
            apply_if_changed(client, SCRIPT_CONFIGMAPS, intent, cached, field_manager="t")
        )
        return answer is not None

    assert not applied(live) and not client.sent

    added = copy.deepcopy(intent)  # a key someone else wrote: ours still applied, no rewrite
    added["data"]["extra.sh"] = edit
    assert not applied(_scripts_as_cached(added)) and not client.sent

    edited = copy.deepcopy(intent)
    edited["data"]["agent.py"] += edit
    assert applied(_scripts_as_cached(edited))
    assert client.sent == [intent]  # the whole data, not its digest


_examples = itertools.count()
key_changes = st.lists(
    st.tuples(st.sampled_from(["upsert", "delete"]), st.integers(0, 2), st.integers(0, 5)),
    max_size=40,
)


@given(key_changes)
def test_stores_share_one_key_per_name_and_forget_it_once_none_holds_it(
    changes: list[tuple[str, int, int]],
) -> None:
    """Three stores (a server's kinds) stored and deleted in any order: a name held by two
    stores is one key object, and a sweep drops exactly the names no store holds any more."""
    stores: list[Store[KubeObject]] = [Store(), Store(packed=KubeObject), Store(OWNED)]
    namespace = f"shared-keys-{next(_examples)}"  # none of another example's keys

    def obj(name: int) -> KubeObject:
        meta = {"name": f"s{name}", "namespace": namespace, "resourceVersion": "1"}
        return KubeObject.model_validate({"metadata": meta})

    def check() -> None:
        shared_key.sweep()
        held: dict[ObjectKey, ObjectKey] = {}
        for each in stores:
            for key in each.keys():  # noqa: SIM118 (a Store, not a dict)
                assert held.setdefault(key, key) is key  # one object per name, in every store
        for n in range(6):
            key = ObjectKey(namespace, f"s{n}")
            assert (key in shared_key) == (key in held)
            assert all(each.get(key) is not None for each in stores if key in each)

    for change, store, name in changes:
        if change == "upsert":
            stores[store].upsert(obj(name))
        else:
            stores[store].delete(ObjectKey(namespace, f"s{name}"))
        check()  # its locals gone before the next sweep


@given(st.text(max_size=40), st.sampled_from([0, 64 * 1024 - 40, 64 * 1024 + 1]))
def test_a_cached_text_digest_is_its_content_s_however_often_and_however_long(
    text: str, padding: int
) -> None:
    """Texts are digested once each (the scripts, compared on every reconcile); a text past
    the memo's size, or read again after others pushed it out, digests the same."""
    value = "x" * padding + text
    first = as_cached({"data": {"f": value}}, {"data": DIGEST})["data"]["f"]
    for other in range(20):  # more than the memo holds
        as_cached({"data": {"f": f"{other}{value}"}}, {"data": DIGEST})
    again = as_cached({"data": {"f": value}}, {"data": DIGEST})["data"]["f"]
    expected = (
        "sha256:" + hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()
    )
    assert first == again == expected


top_keys = st.sampled_from(["metadata", "spec", "status", "data", "x", "apiVersion", "kind"])


@given(
    st.dictionaries(st.sampled_from(["spec", "status", "data", "x"]), json_value),
    st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=3)),
    st.sets(top_keys),
)
def test_comparing_reads_the_live_object_as_its_whole_dump_would_show_it(
    extras: dict[str, Any], labels: dict[str, str], keys: set[str]
) -> None:
    """`apply_if_changed` reads only the keys its intent sets, and extras without dumping
    them: what it compares must be what the whole object's JSON dump holds there."""
    meta = {"name": "n", "namespace": "ns", "uid": "u", "labels": labels,
            "creationTimestamp": "2026-12-02T10:00:00Z"}  # fmt: skip
    obj = KubeObject.model_validate({"apiVersion": "v1", "kind": "K", "metadata": meta, **extras})
    whole = obj.model_dump(by_alias=True, mode="json")
    assert live_fields(obj, keys) == {k: whole[k] for k in keys if k in whole}


def test_a_typed_object_compares_its_modelled_fields_as_dumped() -> None:
    server = DevServer.model_validate(
        {
            "metadata": {"name": "box", "namespace": "dev-a"},
            "spec": {"flavor": "cpu-small", "owner": "a", "image": "img"},
        }
    )
    whole = server.model_dump(by_alias=True, mode="json")
    keys = {"metadata", "spec", "status"}
    assert live_fields(server, keys) == {k: whole[k] for k in keys if k in whole}
    assert live_fields(server, {"spec"})["spec"]["flavor"] == "cpu-small"
