"""The reflector's streaming list (`sendInitialEvents`), on a scripted watch: synced at its
bookmark; an early end or a transient ERROR is retried, not taken for a server without the
feature; LIST only after a refusal (400/422) or 3 early ends in a row."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.meta import (
    INITIAL_EVENTS_END,
    EventType,
    KubeObject,
    ListMeta,
    ObjectKey,
    ObjectList,
)
from devserver.api.resources import CONFIGMAPS, PODS
from devserver.client import ApiError
from devserver.client.decoding import WatchEvent
from devserver.informers import Change, Informer, Notification, ReflectorOptions
from devserver.informers.reflector import FAN_OUT_BATCH, STREAM_ENDS_BEFORE_LIST


def event(kind: EventType, body: dict[str, Any]) -> WatchEvent[KubeObject]:
    return WatchEvent[KubeObject](type=kind, object=KubeObject.model_validate(body))


ADDED = event(
    EventType.ADDED, {"metadata": {"name": "c", "namespace": "n", "resourceVersion": "5"}}
)
END = event(
    EventType.BOOKMARK,
    {"metadata": {"resourceVersion": "6", "annotations": {INITIAL_EVENTS_END: "true"}}},
)


def error(code: int) -> WatchEvent[KubeObject]:
    return event(EventType.ERROR, {"code": code, "reason": "R", "message": "m"})


class Scripted:
    """A client whose watches send the events of one script each, then end."""

    def __init__(self, *scripts: list[WatchEvent[KubeObject]]) -> None:
        self.scripts = list(scripts)

    @contextlib.asynccontextmanager
    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        script = self.scripts.pop(0)

        async def events() -> AsyncIterator[WatchEvent[KubeObject]]:
            for item in script:
                yield item

        yield events()


def informer(client: Scripted) -> Informer[KubeObject]:
    options = ReflectorOptions(streaming_list=True)
    return Informer(client, CONFIGMAPS, options=options)  # type: ignore[arg-type]


async def test_a_streaming_list_syncs_at_its_bookmark() -> None:
    found = informer(Scripted([ADDED, END]))
    assert await found.reflector._streaming_list("0") is True
    assert found.has_synced and found.store.get(ObjectKey("n", "c")) is not None
    assert found.reflector.resource_version == "6"


@pytest.mark.parametrize("code", [500, 429])
async def test_a_transient_error_is_retried_and_streaming_stays_on(code: int) -> None:
    found = informer(Scripted([ADDED, error(code)]))
    with pytest.raises(ApiError) as raised:
        await found.reflector._streaming_list("0")
    assert raised.value.status == code
    assert found.reflector._streaming and not found.has_synced


async def test_early_ends_are_retried_and_only_a_run_of_them_means_list() -> None:
    """A rolling upgrade ends streams early; a server ignoring the parameter does so always."""
    found = informer(Scripted(*([[ADDED]] * STREAM_ENDS_BEFORE_LIST)))
    for _ in range(STREAM_ENDS_BEFORE_LIST - 1):
        with pytest.raises(ApiError):
            await found.reflector._streaming_list("0")
        assert found.reflector._streaming
    assert await found.reflector._streaming_list("0") is False  # LIST from now on
    assert not found.reflector._streaming and not found.has_synced


@pytest.mark.parametrize("code", [400, 422])
async def test_a_refusal_means_list_at_once(code: int) -> None:
    found = informer(Scripted([error(code)]))
    assert await found.reflector._streaming_list("0") is False
    assert not found.reflector._streaming


# ---------------------------------------------------------------- the first list, told as it comes


def configmap(name: str, rv: int) -> WatchEvent[KubeObject]:
    body = {"metadata": {"name": name, "namespace": "n", "resourceVersion": str(rv)}}
    return event(EventType.ADDED, body)


POD_FIXTURE = Path(__file__).parents[1] / "bench" / "fixtures" / "cached-objects.json"


class Told:
    """A handler that keeps what it was told, and a map that follows the notifications."""

    def __init__(self, informer: Informer[KubeObject]) -> None:
        self.informer = informer
        self.notes: list[tuple[Change, str, bool, int]] = []  # change, name, synced, waiting
        self.world: dict[str, str] = {}  # name -> resourceVersion, as the notes tell it
        informer.add_handler("told", self)
        self.runner = informer._handlers[-1]

    def __call__(self, note: Notification[KubeObject]) -> None:
        meta = note.obj.metadata
        self.notes.append(
            (note.change, meta.name, self.informer.has_synced, self.runner.queue.qsize())
        )
        if note.change is Change.DELETED:
            self.world.pop(meta.name, None)
        else:
            self.world[meta.name] = meta.resource_version


async def test_a_start_decodes_each_object_once_and_tells_it_as_it_comes_a_batch_at_a_time() -> (
    None
):
    """The first list puts each object into the store and tells the handlers at once, from the
    object just read: nothing is decoded again from the store. The handlers take what they were
    told at the reflector's yields, so no more than a batch waits decoded at any time."""
    pod = json.loads(POD_FIXTURE.read_text())["pods"]
    script = [
        event(EventType.ADDED, {**pod, "metadata": {**pod["metadata"], "name": f"p{i}"}})
        for i in range(1000)
    ]
    found = Informer(Scripted([*script, END]), PODS, options=ReflectorOptions(streaming_list=True))  # type: ignore[arg-type]
    told = Told(found)
    unpacked = []
    real = found.store._unpack
    found.store._unpack = lambda held: unpacked.append(1) or real(held)  # type: ignore[method-assign]
    task = asyncio.create_task(told.runner.run())
    assert await found.reflector._streaming_list("0") is True
    await asyncio.sleep(0)
    task.cancel()
    assert [(c, n) for c, n, _, _ in told.notes] == [(Change.ADDED, f"p{i}") for i in range(1000)]
    assert not told.notes[0][2], "told while the list was still coming, before the store synced"
    assert max(waiting for *_, waiting in told.notes) < FAN_OUT_BATCH
    assert not unpacked, "no object was decoded again from the store"
    assert found.has_synced and len(found.store) == 1000


attempt = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 3)), max_size=8)


@given(
    st.lists(attempt, min_size=1, max_size=STREAM_ENDS_BEFORE_LIST - 1),
    attempt,
    st.sampled_from(["end", "error"]),
)
def test_a_first_list_that_fails_midway_and_is_retried_ends_exactly_as_the_last_one(
    failed: list[list[tuple[str, int]]], last: list[tuple[str, int]], how: str
) -> None:
    """Attempts that end early (a stream cut, an ERROR) leave a partial store, not synced; the
    attempt that ends at its bookmark leaves exactly its objects, and a handler that follows
    the notifications sees the same world, including what only a failed attempt had (deleted).
    A relist after that (built aside, then diffed) keeps the same promise."""

    async def run() -> None:
        ends = [error(500)] if how == "error" else []
        scripts = [[*(configmap(n, rv) for n, rv in a), *ends] for a in failed]
        final = [configmap(n, rv) for n, rv in last]
        relist = [configmap(n, rv + 1) for n, rv in last[: len(last) // 2]]
        found = informer(Scripted(*scripts, [*final, END], [*relist, END]))
        told = Told(found)
        task = asyncio.create_task(told.runner.run())
        for _ in failed:
            with pytest.raises(ApiError):
                await found.reflector._streaming_list("0")
            assert not found.has_synced
        for expected in (final, relist):
            assert await found.reflector._streaming_list("0") is True
            await asyncio.sleep(0)
            want = {
                obj.object.metadata.name: obj.object.metadata.resource_version for obj in expected
            }
            assert {
                o.metadata.name: o.metadata.resource_version for o in found.store.objects()
            } == want
            assert told.world == want
        task.cancel()

    asyncio.run(run())


async def test_a_relist_after_the_start_tells_what_changed_a_batch_at_a_time() -> None:
    """A later list is diffed against the synced store, then told: no more than a batch of
    decoded objects waits for a handler at any time."""
    first = [configmap(f"c{i}", 1) for i in range(1000)]
    again = [configmap(f"c{i}", 2) for i in range(1000)]
    found = informer(Scripted([*first, END], [*again, END]))
    told = Told(found)
    task = asyncio.create_task(told.runner.run())
    assert await found.reflector._streaming_list("0") is True
    await asyncio.sleep(0)
    told.notes.clear()
    assert await found.reflector._streaming_list("0") is True
    await asyncio.sleep(0)
    task.cancel()
    assert [(c, n) for c, n, _, _ in told.notes] == [(Change.UPDATED, f"c{i}") for i in range(1000)]
    assert max(waiting for *_, waiting in told.notes) < FAN_OUT_BATCH


class Paged:
    """A client without streaming lists: pages of a LIST, the second one's continue token
    expired (410) once, as after a long pause between pages."""

    def __init__(self, pages: list[list[tuple[str, int]]], then: list[tuple[str, int]]) -> None:
        self.pages, self.then, self.expired = pages, then, False

    async def list_page(self, resource: Any, namespace: str = "", **kw: Any) -> Any:
        index = int(kw.get("continue_token") or 0)
        if index == 1 and not self.expired:
            self.expired = True
            self.pages[0] = self.then  # the first page, when listed again
            raise ApiError(410, "Expired", "the continue token expired")
        items = [configmap(n, rv).object for n, rv in self.pages[index]]
        more = str(index + 1) if index + 1 < len(self.pages) else ""
        return ObjectList[KubeObject](
            metadata=ListMeta(resourceVersion="9", **{"continue": more}), items=items
        )


async def test_a_first_list_by_pages_that_starts_over_ends_exactly_as_the_list_it_gave() -> None:
    """LIST, page by page, into the store as it comes: a continue token that expired starts
    the list over, and what only the pages before had is deleted at the end (and told so)."""
    client = Paged([[("a", 1), ("gone", 1)], [("b", 1)]], then=[("a", 2)])
    found = Informer(client, CONFIGMAPS)  # type: ignore[arg-type]
    told = Told(found)
    task = asyncio.create_task(told.runner.run())
    await found.reflector._list("0")
    await asyncio.sleep(0)
    task.cancel()
    assert found.has_synced
    assert {o.metadata.name: o.metadata.resource_version for o in found.store.objects()} == {
        "a": "2",
        "b": "1",
    }
    assert told.world == {"a": "2", "b": "1"}
    assert (Change.DELETED, "gone") in [(c, n) for c, n, _, _ in told.notes]


class Recording(Scripted):
    """A scripted client that keeps the resourceVersion each watch asked from."""

    def __init__(self, *scripts: list[WatchEvent[KubeObject]]) -> None:
        super().__init__(*scripts)
        self.asked: list[str] = []

    @contextlib.asynccontextmanager
    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.asked.append(kwargs["resource_version"])
        if not self.scripts:
            await asyncio.Event().wait()  # a watch that stays open, silent
        async with super().watch(*args, **kwargs) as events:
            yield events


@given(st.sampled_from([500, 503, 429]))
def test_a_first_list_retried_after_a_failure_midway_reads_from_etcd(code: int) -> None:
    """The first list reads from an API server's watch cache (resourceVersion 0); one that fails
    midway has stored and told its objects already. Its retry may reach another API server,
    whose cache can be behind those: it reads from etcd instead, so the store never goes back."""

    async def run() -> None:
        client = Recording([ADDED, error(code)], [ADDED, END])
        options = ReflectorOptions(streaming_list=True, backoff_initial=0.001)
        found = Informer(client, CONFIGMAPS, options=options)  # type: ignore[arg-type]
        task = asyncio.create_task(found.reflector.run())
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(client.asked) >= 3:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert client.asked[:2] == ["0", ""]
        assert client.asked[2] == "6"  # then the watch, from the list's bookmark

    asyncio.run(run())
