"""The reflector: keep a sink equal to the server's view of one resource, through bad days.

list (or streaming list), then watch from the list's resourceVersion, forever:

- the first LIST asks for resourceVersion "0" (the apiserver's watch cache); a relist after an
  ordinary failure asks for "not older than" the last synced RV; after a 410 it asks for ""
  (a consistent read), because that RV is gone;
- pages of `page_size`; a 410 on a continue token restarts the list from scratch;
- the RV to watch from is the list's, never an item's; bookmarks only advance it;
- a watch that ends normally (server timeout, randomised per watch) re-watches from the last RV
  without listing; a 410 (as an HTTP status or an ERROR event) relists, and the sink's
  `replace` reports what vanished meanwhile;
- throttling and connection failures back off (0.8 s doubling to 30 s, with jitter, reset after
  two healthy minutes) and re-watch without relisting;
- silence longer than the idle bound (no bytes, not even a bookmark, which the server sends
  about every minute) drops the connection and re-watches: this catches half-open TCP and
  frozen proxies, which otherwise look like a quiet cluster forever. A watch the server
  answered and then said nothing on at all is not called stalled: the API server's watch cache
  sends no bookmark for a resource that has not changed since it started (until etcd's
  progress notice, 10 min by default), so an idle resource is silent by design. Its re-watch
  is counted as `silent`, logged at debug, and never alerts — for at most `silent_limit`
  (15 min) since the server last said anything on it. A watch that went silent after hearing
  from the server, one never answered, a silent streaming list, or silence past that limit is
  `stalled`, with a warning.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol

import structlog

from devserver.api.meta import INITIAL_EVENTS_END, EventType, ObjectT, Unreadable
from devserver.api.resources import Resource
from devserver.client import ApiError, KubeClient, WatchStalledError
from devserver.informers.store import Replacement
from devserver.observability import metrics

log = structlog.get_logger("devserver.reflector")

STREAM_ENDS_BEFORE_LIST = 3  # streaming lists ending early in a row before LIST is used instead
# objects listed between two yields to the event loop: a first list tells the handlers each
# object as it comes, decoded (see `Informer.replacement`), and they take what they were told
# at a yield; so not all of a 10,000-object start is held decoded at once. A later list tells
# them after its end, the same many at a time.
FAN_OUT_BATCH = 256


class ReflectorSink(Protocol[ObjectT]):
    def kept(self, obj: ObjectT) -> ObjectT:
        """What the cache keeps of a listed object, as soon as its page is in (then packed
        into the replacement): a start lists every object, and must not hold them all whole."""
        ...

    def replacement(self) -> Replacement[ObjectT]: ...
    async def replace(self, listed: Replacement[ObjectT], unreadable: list[Unreadable]) -> None: ...
    def upsert(self, obj: ObjectT) -> None: ...
    def remove(self, obj: ObjectT) -> None: ...
    def unreadable(self, obj: Unreadable) -> None: ...


@dataclass(frozen=True)
class ReflectorOptions:
    page_size: int = 500
    watch_timeout: tuple[int, int] = (300, 600)  # timeoutSeconds drawn from [a, b)
    idle_timeout: float = 90.0  # > the apiserver's ~60 s bookmark period
    # an idle resource's watch may be silent this long (no bookmark until etcd's progress
    # notice, 10 min by default); silence beyond it is a stall
    silent_limit: float = 900.0
    backoff_initial: float = 0.8
    backoff_cap: float = 30.0
    backoff_reset_after: float = 120.0
    streaming_list: bool = False  # sendInitialEvents; falls back to LIST if refused


class Backoff:
    def __init__(self, options: ReflectorOptions, now: Callable[[], float]) -> None:
        self._options, self._now = options, now
        self._delay = 0.0
        self._healthy_since = now()

    def healthy(self) -> None:
        """Called on progress; two minutes of it forget past failures."""
        if self._now() - self._healthy_since >= self._options.backoff_reset_after:
            self._delay = 0.0

    def next(self) -> float:
        opts = self._options
        self._delay = min(opts.backoff_cap, max(opts.backoff_initial, self._delay * 2))
        self._healthy_since = self._now()
        return self._delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto


class _GoneError(Exception):
    """Internal: the RV we hold is gone (410); list again with a consistent read."""


class Reflector(Generic[ObjectT]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource[ObjectT],
        sink: ReflectorSink[ObjectT],
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        options: ReflectorOptions | None = None,
    ) -> None:
        self.client, self.resource, self.sink = client, resource, sink
        self.namespace = namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.options = options or ReflectorOptions()
        self.name = str(resource) + (f"@{namespace}" if namespace else "")
        self.resource_version = ""  # last RV seen (list, event or bookmark)
        self.list_resource_version = ""  # the RV of the last (streaming) list
        self.last_progress = time.monotonic()  # any answer, attempt or event
        self.lists = 0
        self._streaming = self.options.streaming_list
        self._stream_ends = 0  # streaming lists in a row that ended before their bookmark
        self._heard = self._opened = False  # the current watch: said anything; answered
        self._last_heard = time.monotonic()  # the last list, event or bookmark
        self._metrics = metrics.ReflectorMetrics(self.name)

    @property
    def silent_for(self) -> float:
        return time.monotonic() - self.last_progress

    async def run(self) -> None:
        """Run until cancelled."""
        backoff = Backoff(self.options, time.monotonic)
        list_rv: str | None = "0"  # first list: from the watch cache
        while True:
            self.last_progress = time.monotonic()
            try:
                if list_rv is not None:
                    if not await self._streaming_list(list_rv):
                        await self._list(list_rv)
                    list_rv = None
                await self._watch(backoff)
            except _GoneError:
                self._metrics.restart("gone")
                list_rv = ""
            except WatchStalledError as stalled:
                if self._quiet_by_design():
                    self._metrics.restart("silent")
                    log.debug("watch silent; re-watching", resource=self.name)
                else:
                    self._metrics.restart("stalled")
                    log.warning(
                        "watch stalled; reconnecting", resource=self.name, detail=str(stalled)
                    )
            except ApiError as error:
                if error.gone:
                    self._metrics.restart("gone")
                    list_rv = ""
                    continue
                # transient: keep the RV and re-watch from it after a pause; no relist
                self._metrics.restart("throttled" if error.status == 429 else "error")
                if list_rv == "0":
                    # a first list failed midway: its objects are stored and told already;
                    # another API server's watch cache may be behind them, so the retry
                    # reads from etcd (a first list is never older than what it retries)
                    list_rv = ""
                delay = backoff.next()
                log.warning(
                    "api request failed; backing off",
                    resource=self.name,
                    status=error.status,
                    error=error.message,
                    delay=delay,
                )
                await asyncio.sleep(delay)
            except Exception:
                # Anything else (an object our model rejects, a bug): never die silently, which
                # would freeze this cache for good. Log it, back off, and start over.
                self._metrics.restart("error")
                delay = backoff.next()
                log.exception("watch failed unexpectedly; relisting", resource=self.name)
                list_rv = ""
                await asyncio.sleep(delay)

    def _quiet_by_design(self) -> bool:
        """A silent watch is an idle resource's, not a stall: the server answered it (the
        response began) and sent nothing since, not even a bookmark, and the last word heard
        from the server on this resource is younger than `silent_limit` (etcd's progress notice
        makes the watch cache send bookmarks by then). A stall while listing, or a request the
        server never answered, is always a stall."""
        heard_for = time.monotonic() - self._last_heard
        return self._opened and not self._heard and heard_for < self.options.silent_limit

    # ------------------------------------------------------------------ list

    async def _list(self, resource_version: str) -> None:
        listed = self.sink.replacement()
        unreadable: list[Unreadable] = []
        continue_token = ""
        rv = resource_version
        while True:
            try:
                page = await self.client.list_page(
                    self.resource,
                    self.namespace,
                    limit=self.options.page_size,
                    continue_token=continue_token,
                    resource_version=rv if not continue_token else None,
                    resource_version_match="NotOlderThan" if rv not in ("", "0") else "",
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                )
            except ApiError as error:
                too_large = error.status == 504 and "Too large resource version" in error.message
                if (error.gone or too_large) and (rv or continue_token):
                    # an expired continue token or an RV the server can't serve: start over
                    # with a consistent read
                    listed, unreadable = self.sink.replacement(), []
                    continue_token, rv = "", ""
                    continue
                raise
            self.last_progress = time.monotonic()
            for count, obj in enumerate(page.items, 1):
                listed.add(self.sink.kept(obj))
                if count % FAN_OUT_BATCH == 0:
                    await asyncio.sleep(0)
            unreadable.extend(page.unreadable)
            continue_token = page.metadata.continue_
            if not continue_token:
                break
        await self.sink.replace(listed, unreadable)
        self.resource_version = self.list_resource_version = page.metadata.resource_version
        self._last_heard = time.monotonic()
        self.lists += 1
        self._metrics.relist()

    async def _streaming_list(self, resource_version: str) -> bool:
        """sendInitialEvents: the initial state arrives as a watch. False if unsupported."""
        if not self._streaming:
            return False
        self._opened = False  # it must end with a bookmark: its silence is always a stall
        listed = self.sink.replacement()
        unreadable: list[Unreadable] = []
        count = 0
        try:
            async with self.client.watch(
                self.resource,
                self.namespace,
                resource_version=resource_version,
                timeout_seconds=self._timeout(),
                idle_timeout=self.options.idle_timeout,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                send_initial_events=True,
            ) as events:
                async for event in events:
                    self.last_progress = time.monotonic()
                    if event.type is EventType.ADDED and isinstance(event.object, Unreadable):
                        unreadable.append(event.object)
                    elif event.type is EventType.ADDED:
                        listed.add(self.sink.kept(event.object))
                        count += 1
                        if count % FAN_OUT_BATCH == 0:
                            await asyncio.sleep(0)
                    elif event.type is EventType.BOOKMARK:
                        annotations = event.object.metadata.annotations
                        if annotations.get(INITIAL_EVENTS_END) == "true":
                            await self.sink.replace(listed, unreadable)
                            rv = event.object.metadata.resource_version
                            self.resource_version = self.list_resource_version = rv
                            self._last_heard = time.monotonic()
                            self._stream_ends = 0
                            self.lists += 1
                            self._metrics.relist()
                            return True
                    elif event.type is EventType.ERROR:
                        code = int(event.object.extra.get("code", 0))
                        if code == 410:
                            raise _GoneError  # a stale RV, not a server without the feature
                        said = event.object.extra  # 400, 422: refused (LIST then); else transient
                        reason, message = str(said.get("reason", "")), str(said.get("message", ""))
                        raise ApiError(code, reason, message)
            # ended before its bookmark: a server going down (a rolling upgrade) does that, and
            # so does one that ignores the parameter; the first is retried, the second is not
            self._stream_ends += 1
            if self._stream_ends < STREAM_ENDS_BEFORE_LIST:
                raise ApiError(0, "StreamEnded", "the streaming list ended before its bookmark")
        except ApiError as error:
            if error.status not in (400, 422):
                raise
        log.info("streaming list unavailable; using LIST", resource=self.name)
        self._streaming = False
        return False

    # ------------------------------------------------------------------ watch

    async def _watch(self, backoff: Backoff) -> None:
        self._heard = self._opened = False  # this watch: answered, and anything said since
        async with self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            timeout_seconds=self._timeout(),
            idle_timeout=self.options.idle_timeout,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        ) as events:
            self._opened = True
            async for event in events:
                self.last_progress = self._last_heard = time.monotonic()
                self._heard = True
                backoff.healthy()
                self._metrics.event(event.type)
                obj = event.object
                if event.type is EventType.ERROR:
                    code = int(obj.extra.get("code", 0))
                    if code == 410:
                        raise _GoneError
                    raise ApiError(
                        code, str(obj.extra.get("reason", "")), str(obj.extra.get("message", ""))
                    )
                self.resource_version = obj.metadata.resource_version
                if event.type is EventType.BOOKMARK:
                    continue
                if isinstance(obj, Unreadable) and event.type is not EventType.DELETED:
                    self.sink.unreadable(obj)
                elif event.type is EventType.DELETED:
                    self.sink.remove(obj)
                else:
                    self.sink.upsert(obj)

    def _timeout(self) -> int:
        low, high = self.options.watch_timeout
        return random.randrange(low, high)  # noqa: S311 - spread reconnects, not crypto
