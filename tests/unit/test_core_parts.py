"""Pure parts of the controller core: store, owner mapping, predicates, backoff, paths, errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.meta import KubeObject, ObjectKey, ObjectList
from devserver.api.resources import CONFIGMAPS, LEASES, NODES
from devserver.client import ApiError
from devserver.controller.owners import owner_keys
from devserver.controller.predicates import generation_changed
from devserver.informers import (
    NAMESPACE_INDEX,
    NAMESPACED,
    OWNED,
    OWNER_UID_INDEX,
    Change,
    Notification,
    Store,
)
from devserver.informers.reflector import Backoff, ReflectorOptions


def obj(
    name: str,
    rv: str = "1",
    ns: str = "a",
    owners: tuple[str, ...] = (),
    gen: int = 1,
    **extra: Any,
) -> KubeObject:
    refs = [
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "name": f"o-{uid}",
            "uid": uid,
            "controller": True,
        }
        for uid in owners
    ]
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": rv,
                "generation": gen,
                "ownerReferences": refs,
                "managedFields": [{"manager": "x"}],
            },
            **extra,
        }
    )


def test_models_keep_unknown_fields_and_drop_managed_fields() -> None:
    cm = obj("c", data={"k": "v"})
    assert cm.extra["data"] == {"k": "v"}
    assert "managedFields" not in cm.metadata.model_dump(by_alias=True)
    assert cm.key == ObjectKey("a", "c")
    page = ObjectList[KubeObject].model_validate_json(
        b'{"metadata":{"resourceVersion":"7","continue":"abc"},"items":[{"metadata":{"name":"x"}}]}'
    )
    assert (page.metadata.resource_version, page.metadata.continue_) == ("7", "abc")
    assert page.items[0].key == ObjectKey("", "x")


def test_store_replace_reports_added_updated_deleted_and_swaps_atomically() -> None:
    store: Store[KubeObject] = Store(OWNED)
    assert not store.has_synced
    store.replace([obj("keep"), obj("change"), obj("gone", owners=("u1",))])
    assert store.has_synced
    before = store.objects()
    result = store.replace([obj("keep"), obj("change", rv="2"), obj("new")])
    assert [o.metadata.name for o in result.added] == ["new"]
    assert [
        (old.metadata.resource_version, new.metadata.resource_version)
        for old, new in result.updated
    ] == [("1", "2")]
    assert [o.metadata.name for o in result.deleted] == ["gone"]
    assert store.by_index(OWNER_UID_INDEX, "u1") == []
    assert len(before) == 3, "readers holding the old list are unaffected"


def test_store_indexes_follow_upserts_and_deletes() -> None:
    store: Store[KubeObject] = Store({**NAMESPACED, **OWNED})
    store.upsert(obj("x", owners=("u1",)))
    store.upsert(obj("y", ns="b", owners=("u1", "u2")))
    assert {o.metadata.name for o in store.by_index(OWNER_UID_INDEX, "u1")} == {"x", "y"}
    store.upsert(obj("y", ns="b", owners=("u2",)))
    assert [o.metadata.name for o in store.by_index(OWNER_UID_INDEX, "u1")] == ["x"]
    assert [o.metadata.name for o in store.by_index(NAMESPACE_INDEX, "b")] == ["y"]
    store.delete(ObjectKey("a", "x"))
    assert store.by_index(OWNER_UID_INDEX, "u1") == []
    assert "u1" not in store.index_values(OWNER_UID_INDEX), "empty buckets are dropped"
    store.add_indexer("gen", lambda o: (str(o.metadata.generation),))
    assert [o.metadata.name for o in store.by_index("gen", "1")] == ["y"]
    with pytest.raises(ValueError, match="already exists"):
        store.add_indexer("gen", lambda o: ())


def test_informers_asked_for_an_index_share_one() -> None:
    from devserver.informers import InformerFactory

    def by_generation(o: KubeObject) -> tuple[str, ...]:
        return (str(o.metadata.generation),)

    factory = InformerFactory(client=None)  # type: ignore[arg-type]  # never started
    first = factory.informer(CONFIGMAPS, indexers={"gen": by_generation})
    first.store.upsert(obj("x", gen=3))
    again = factory.informer(CONFIGMAPS, indexers={"gen": by_generation})  # a second controller
    assert again is first
    assert [o.metadata.name for o in again.store.by_index("gen", "3")] == ["x"]
    assert factory.informer(CONFIGMAPS) is first  # a controller that reads no index
    with pytest.raises(ValueError, match="another function"):
        factory.informer(CONFIGMAPS, indexers={"gen": lambda o: ()})


def test_owner_keys_match_group_and_kind_and_controller() -> None:
    child = obj("pod", owners=("u1",))
    assert owner_keys(child, group="devservers.io", kind="DevServer") == [ObjectKey("a", "o-u1")]
    assert owner_keys(child, group="apps", kind="DevServer") == []
    assert owner_keys(child, group="devservers.io", kind="DevServer", owner_namespaced=False) == [
        ObjectKey("", "o-u1")
    ]


def test_generation_predicate() -> None:
    old, same, bumped = obj("d", gen=1), obj("d", rv="2", gen=1), obj("d", rv="3", gen=2)
    assert generation_changed(Notification(Change.ADDED, old))
    assert not generation_changed(Notification(Change.UPDATED, same, old))
    assert generation_changed(Notification(Change.UPDATED, bumped, old))
    assert generation_changed(Notification(Change.DELETED, old))


def test_backoff_doubles_with_jitter_caps_and_resets_after_health() -> None:
    now = [0.0]
    backoff = Backoff(ReflectorOptions(), lambda: now[0])
    delays = [backoff.next() for _ in range(8)]
    assert 0.64 <= delays[0] <= 0.96
    assert 1.28 <= delays[1] <= 1.92
    assert all(d <= 36 for d in delays)
    assert delays[-1] >= 24, "capped at 30 s, +-20 %"
    now[0] += 121
    backoff.healthy()
    assert backoff.next() <= 0.96


def test_resource_paths_encode_scope() -> None:
    assert CONFIGMAPS.path("ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert CONFIGMAPS.path() == "/api/v1/configmaps"
    assert NODES.path("ignored", "n1") == "/api/v1/nodes/n1"
    assert LEASES.path("kube-node-lease") == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    )
    assert LEASES.api_version == "coordination.k8s.io/v1"


def test_api_errors_parse_status_bodies() -> None:
    error = ApiError.from_body(
        410, b'{"kind":"Status","code":410,"reason":"Expired","message":"too old"}'
    )
    assert error.gone
    assert (error.reason, error.message) == ("Expired", "too old")
    assert ApiError.from_body(502, b"<html>bad gateway</html>").retryable


def test_status_patches_clear_dropped_fields_at_any_depth() -> None:
    from devserver.controller.applied import merge_patch

    current = {"phase": "Running", "podName": "p", "billing": {"seconds": 1, "since": "t"}}
    desired = {"phase": "Stopped", "billing": {"seconds": 5}}
    assert merge_patch(current, desired) == {
        "podName": None,
        "phase": "Stopped",
        "billing": {"seconds": 5, "since": None},
    }
    assert merge_patch(desired, desired) == {}


def test_typed_watches_decode_bookmarks_and_errors_and_refuse_broken_objects() -> None:
    """Found by the expiry bench: the API server's first BOOKMARK (about a minute into a watch)
    has no spec, and decoding it as a DevServer killed the DevServer cache for good."""
    from devserver.api.devserver import DevServer
    from devserver.api.meta import EventType, Unreadable
    from devserver.client.decoding import WatchEvent, decode_event

    model = WatchEvent[DevServer]
    bookmark = (
        b'{"type":"BOOKMARK","object":{"kind":"DevServer","apiVersion":"devservers.io/v1",'
        b'"metadata":{"resourceVersion":"1970","creationTimestamp":null}}}'
    )
    event = decode_event(bookmark, model)
    assert event.type is EventType.BOOKMARK
    assert event.object.metadata.resource_version == "1970"
    error = (
        b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure",'
        b'"message":"too old resource version","reason":"Expired","code":410}}'
    )
    assert decode_event(error, model).object.extra["code"] == 410
    added = (
        b'{"type":"ADDED","object":{"apiVersion":"devservers.io/v1","kind":"DevServer",'
        b'"metadata":{"name":"a","namespace":"n","resourceVersion":"5"},'
        b'"spec":{"owner":"u","flavor":"cpu-small","image":"x"}}}'
    )
    assert isinstance(decode_event(added, model).object, DevServer)
    # a real object that breaks the model is neither hidden nor fatal: it says why
    broken = decode_event(added.replace(b'"owner":"u",', b""), model)
    assert isinstance(broken.object, Unreadable)
    assert broken.object.key == ("n", "a")
    assert "spec.owner" in broken.object.problem
    # a status only the operator writes is dropped, not the object
    bad_status = added.replace(b"}}}", b'},"status":{"phase":"Exploded"}}}')
    assert isinstance(decode_event(bad_status, model).object, DevServer)


def test_a_page_with_an_unreadable_object_keeps_the_others() -> None:
    from devserver.api.devserver import DevServer
    from devserver.client.decoding import decode_list

    good = (
        b'{"metadata":{"name":"a","namespace":"n"},"spec":{"owner":"u","flavor":"f","image":"x"}}'
    )
    bad = b'{"metadata":{"name":"b","namespace":"n"},"spec":{"flavor":"f","image":"x"}}'
    page = decode_list(b'{"metadata":{"resourceVersion":"9"},"items":[' + good + b"," + bad + b"]}",
                       DevServer)  # fmt: skip
    assert [d.metadata.name for d in page.items] == ["a"]
    assert [u.metadata.name for u in page.unreadable] == ["b"]
    assert page.metadata.resource_version == "9"


@given(st.text())
def test_an_apply_body_is_yaml_that_reads_back_as_the_same_text(text: str) -> None:
    """Found by the generated servers: an emoji in ncclSettings made every apply of the
    StatefulSet fail, because the API server reads an apply patch as YAML, and YAML takes no
    JSON surrogate pairs."""
    import json

    import yaml

    from devserver.client.wire import apply_body

    body = apply_body({"v": text})
    if "\\U" not in body.decode():
        assert json.loads(body) == {"v": text}
    surrogates = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    if not surrogates:  # the API server never sends a lone surrogate (Go strings are UTF-8)
        assert yaml.safe_load(body.decode()) == {"v": text}


async def test_a_written_status_is_held_only_until_the_cache_has_it() -> None:
    """Read-your-writes while the cache is behind; once it has caught up, the writer holds
    nothing more for the server (not a copy of every status), and a later status written by
    another is the one read."""
    from devserver.api.devserver import DevServer, DevServerStatus
    from devserver.api.resources import DEVSERVERS
    from devserver.reconcilers.status_writer import StatusWriter

    patches: list[dict[str, Any]] = []

    class Client:
        async def patch(self, *args: Any, **kwargs: Any) -> None:
            patches.append(args[2])

    def with_status(ds: DevServer, phase: str) -> DevServer:
        return ds.model_copy(update={"status": DevServerStatus.model_validate({"phase": phase})})

    spec = {"owner": "a@example.com", "flavor": "f", "image": "i"}
    ds = DevServer.model_validate({"metadata": {"name": "box", "uid": "u1"}, "spec": spec})
    writer: StatusWriter[DevServer] = StatusWriter(Client(), DEVSERVERS, DevServerStatus)  # type: ignore[arg-type]
    await writer.write(ds, {"phase": "Pending", "conditions": []})  # as the cache reads it
    assert patches == [{"status": {"phase": "Pending", "conditions": []}}]
    behind = writer.latest(ds)
    assert behind.status is not None and behind.status.phase == "Pending"
    caught_up = with_status(ds, "Pending")
    assert writer.latest(caught_up) is caught_up
    edited = with_status(ds, "Stopped")  # by someone else, after the cache caught up
    assert writer.latest(edited) is edited
    assert writer.latest(ds) is ds  # nothing held: the cache is the truth again


def test_an_index_asked_for_while_a_relist_comes_covers_every_listed_object() -> None:
    """A relist is built aside with the indexes of when it began; one asked for meanwhile is
    worked out whole when the list is swapped in (else: a KeyError, or objects missing)."""
    store: Store[KubeObject] = Store(packed=KubeObject)
    store.replace([obj("old", owners=("u1",))])
    listed = store.replacement()
    listed.add(obj("x", owners=("u1",)))
    store.add_indexer(OWNER_UID_INDEX, OWNED[OWNER_UID_INDEX])
    listed.add(obj("y", owners=("u1",)))
    store.swap(listed)
    assert {o.metadata.name for o in store.by_index(OWNER_UID_INDEX, "u1")} == {"x", "y"}


async def test_a_client_s_tls_connections_each_hold_a_64_kib_read_buffer_not_256() -> None:
    """asyncio sizes each TLS connection's read buffer by `SSLProtocol.max_size` (256 KiB by
    default); the operator holds ~25 connections. If a Python release stops reading that
    attribute, this fails instead of the setting quietly doing nothing."""
    import asyncio
    import ssl
    from asyncio.sslproto import SSLProtocol

    from devserver.client.config import Auth, ClusterConfig
    from devserver.client.kube import TLS_READ_BUFFER, KubeClient

    context = ssl.create_default_context()
    client = KubeClient(
        ClusterConfig(server="https://127.0.0.1:6443", ssl_context=context, auth=Auth())
    )
    await client._client_session().close()
    loop = asyncio.get_running_loop()
    tls = SSLProtocol(loop, asyncio.Protocol(), context, loop.create_future())
    tls._get_app_transport()._closed = True  # never connected: nothing to close
    assert len(tls._ssl_buffer) == TLS_READ_BUFFER < 256 * 1024
