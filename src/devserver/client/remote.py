"""Exec into a pod over the API server's WebSocket protocol (v5/v4.channel.k8s.io).

Frames carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the final Status (exit code), 4
terminal resize; v5 adds 255 to close one direction (stdin EOF). The API server translates to
the kubelet's protocol, so this works whatever the node speaks.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from devserver.client.errors import ApiError

if TYPE_CHECKING:  # imported where used: devctl loads this module without aiohttp
    import aiohttp

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_EXIT_STATUS = re.compile(r"exit (?:status|code) (\d+)")


def exit_code_from_status(status: dict[str, Any]) -> tuple[int, str]:
    """(exit code, message) from the Status on the error channel.

    A kubelet reports NonZeroExitCode with an ExitCode cause; some runtimes (kwok among them)
    only say "exit status N" in the message; anything else is a failure to run at all (1).
    """
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message", ""))
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", 1)), message
    match = _EXIT_STATUS.search(message)
    if match:
        return int(match.group(1)), message
    return 1, message or "the command could not be run"


class ExecSession:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.v5 = ws.protocol == PROTOCOLS[0]
        self.exit_code: int | None = None
        self.message = ""

    async def send_stdin(self, data: bytes) -> None:
        await self.ws.send_bytes(bytes([STDIN]) + data)

    async def close_stdin(self) -> None:
        if self.v5:
            await self.ws.send_bytes(bytes([CLOSE, STDIN]))

    async def resize(self, columns: int, rows: int) -> None:
        await self.ws.send_bytes(
            bytes([RESIZE]) + json.dumps({"Width": columns, "Height": rows}).encode()
        )

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, data) for stdout and stderr until the command ends."""
        import aiohttp

        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                    break
                continue
            data: bytes = message.data
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel in (STDOUT, STDERR) and payload:
                yield channel, payload
            elif channel == ERROR and payload:
                self.exit_code, self.message = exit_code_from_status(json.loads(payload))
        if self.exit_code is None:
            self.exit_code = 0  # the connection closed without a Status: success (v4 servers)


async def open_exec(
    session: aiohttp.ClientSession,
    url: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    **options: Any,
) -> ExecSession:
    import aiohttp

    try:
        ws = await session.ws_connect(
            url,
            params=query,
            headers=headers,
            protocols=PROTOCOLS,
            heartbeat=30,
            max_msg_size=0,
            **options,
        )
    except aiohttp.WSServerHandshakeError as error:
        raise ApiError(error.status, "ExecRefused", error.message) from error
    except (aiohttp.ClientError, OSError) as error:
        raise ApiError(0, "ConnectionFailed", str(error)) from error
    return ExecSession(ws)
