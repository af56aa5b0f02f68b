"""What requests and responses look like on the wire: an apply patch's body (JSON the API server
can read as YAML), list/watch selectors as a query, a watch stream split into events with a
bound on its silence, and parsing without the garbage collector's interruptions."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp

from devserver.client.decoding import WatchEvent, decode_event
from devserver.client.errors import ApiError, WatchStalledError


async def chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        while chunk := await response.content.readany():
            yield chunk
    except (aiohttp.ClientError, OSError) as error:
        raise ApiError(0, "ConnectionFailed", str(error) or type(error).__name__) from error


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building thousands of models at once triggers many useless collector passes (each one
    scans every live object); a page is parsed in tens of milliseconds, so pause it meanwhile.
    Measured: half of a 10k-object sync was collector time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def selectors(label_selector: str, field_selector: str) -> list[tuple[str, str]]:
    query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


async def watch_events(
    response: aiohttp.ClientResponse, model: type[WatchEvent[Any]], idle_timeout: float
) -> AsyncIterator[WatchEvent[Any]]:
    """Split the chunked body into JSON lines of any length; bound the silence between chunks."""
    buffer = b""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await response.content.readany()
        except TimeoutError:
            raise WatchStalledError(f"no data for {idle_timeout:.0f} s") from None
        except (aiohttp.ClientError, OSError) as error:
            raise ApiError(0, "ConnectionFailed", str(error) or type(error).__name__) from error
        if not chunk:  # server closed the stream (timeoutSeconds, shutdown)
            return
        buffer += chunk
        start = 0  # lines are cut from one buffer, not the rest of it copied for each line
        while (newline := buffer.find(b"\n", start)) >= 0:
            line, start = buffer[start:newline], newline + 1
            if line and not line.isspace():
                yield decode_event(line, model)
        buffer = buffer[start:]


_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def apply_body(body: Mapping[str, Any]) -> bytes:
    """JSON for an apply patch, which the API server parses as YAML: YAML takes no surrogate
    pairs (`\\ud83d\\ude00`, how JSON escapes a character beyond the BMP, such as an emoji in a
    user's text), so those become YAML's `\\U0001f600`; all else is ASCII JSON, valid YAML."""

    def astral(match: re.Match[str]) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"

    return _SURROGATE_PAIR.sub(astral, json.dumps(dict(body))).encode()
