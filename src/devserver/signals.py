"""A process's main coroutine, run until SIGTERM or SIGINT: the operator's and the bastion's.

The standard library only, nothing of ours: the bottom import layer, beside the API model.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

Fatal = TypeVar("Fatal", bound=Exception)


async def until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)` with `stop` set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def run_until_signalled(
    run: Callable[[asyncio.Event], Awaitable[None]],
    fatal: type[Fatal],
    report: Callable[[Fatal], None],
) -> None:
    """A process's `main` after its flags: `until_signalled(run)` in a new event loop. `fatal`,
    the expected way to fail, is reported by `report` (one log line, no traceback) and exits 1;
    anything else propagates (a traceback, and exit 1 too)."""
    try:
        asyncio.run(until_signalled(run))
    except fatal as error:
        report(error)
        sys.exit(1)
