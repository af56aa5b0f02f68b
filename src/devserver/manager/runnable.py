"""What the Manager runs: runnables (controller-runtime's `manager.Runnable` together with
`LeaderElectionRunnable.NeedLeaderElection()`).

A runnable works in `run(stop)` until `stop` is set, then winds down (a controller drains its
in-flight reconciles) and returns. `needs_leader` says when the Manager starts it: controllers
need the leader (they act on the cluster, and two replicas must not), so they start once this
process holds the Lease and are cancelled when it is lost. The probes server, the informer
caches and e.g. the bastion's account sync (every bastion replica keeps its own accounts) need
no leader: they start at once, on every replica, leader or standby.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from devserver.controller import Controller


class Runnable(Protocol):
    @property
    def name(self) -> str:
        """Names its task (and says which runnable failed)."""
        ...

    @property
    def needs_leader(self) -> bool: ...

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then wind down and return. Ending earlier, by returning or
        raising, stops the Manager; what it raised propagates once everything has stopped."""
        ...


@dataclass(frozen=True)
class RunnableFunc:
    """A coroutine function as a runnable (controller-runtime's `RunnableFunc`)."""

    name: str
    func: Callable[[asyncio.Event], Awaitable[None]]
    needs_leader: bool

    async def run(self, stop: asyncio.Event) -> None:
        await self.func(stop)


@dataclass(frozen=True)
class ControllerRunnable:
    """A controller: it needs the leader, and drains for at most `drain_timeout` s on stop."""

    controller: Controller
    drain_timeout: float = 30.0
    needs_leader: bool = True

    @property
    def name(self) -> str:
        return f"controller:{self.controller.name}"

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller.run(stop, drain_timeout=self.drain_timeout)
