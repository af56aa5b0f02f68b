"""The reflector's streaming list (`sendInitialEvents`), on a scripted watch: synced at its
bookmark; an early end or a transient ERROR is retried, not taken for a server without the
feature; LIST only after a refusal (400/422) or 3 early ends in a row."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devserver.api.meta import INITIAL_EVENTS_END, EventType, KubeObject, ObjectKey
from devserver.api.resources import CONFIGMAPS
from devserver.client import ApiError
from devserver.client.decoding import WatchEvent
from devserver.informers import Informer, ReflectorOptions
from devserver.informers.reflector import STREAM_ENDS_BEFORE_LIST


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
