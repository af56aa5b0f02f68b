"""The Manager's runnables: which start at once, which wait for the leader, how they stop.

A fake election stands in for the Lease (the Manager's `elector` seam); the probes server is
real, on an ephemeral loopback port. The Lease itself: tests/integration/core/test_manager.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

import pytest

from devserver.client import KubeClient
from devserver.controller import Controller, Result
from devserver.manager import LeadershipLostError, Manager, RunnableFunc, Settings

NO_CLIENT = cast(KubeClient, object())  # no informer is registered: nothing talks to a server


@dataclass
class FakeElection:
    granted: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    acquiring: bool = False
    released: bool = False

    async def acquire(self) -> None:
        self.acquiring = True
        await self.granted.wait()

    async def hold(self) -> None:
        await self.lost.wait()
        raise LeadershipLostError("could not renew")

    async def release(self) -> None:
        self.released = True


@dataclass
class Probe:
    """A runnable that records when it started and how it ended."""

    name: str
    needs_leader: bool
    ended: list[str]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: str = ""

    async def run(self, stop: asyncio.Event) -> None:
        self.started.set()
        try:
            await stop.wait()
            self.outcome = "stopped"
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        finally:
            self.ended.append(self.name)


@dataclass
class Setup:
    """A Manager with a fake election and, as asked, a runnable of each kind."""

    manager: Manager
    election: FakeElection
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ended: list[str] = field(default_factory=list)

    def probe(self, name: str) -> Probe:
        return next(r for r in self.manager.runnables if isinstance(r, Probe) and r.name == name)

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.manager.run(self.stop))


def setup(*, leader: bool = True, free: bool = True) -> Setup:
    election = FakeElection()
    settings = Settings(http_host="127.0.0.1", http_port=0)
    world = Setup(Manager(NO_CLIENT, settings, elector=election), election)
    if free:
        world.manager.add_runnable(Probe("free", needs_leader=False, ended=world.ended))
    if leader:
        world.manager.add_runnable(Probe("controller", needs_leader=True, ended=world.ended))
    return world


async def soon(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 5)


async def test_leader_runnables_start_once_leading_the_others_at_once() -> None:
    world = setup()
    free, controller, manager = world.probe("free"), world.probe("controller"), world.manager
    task = world.start()
    await soon(free.started)
    await asyncio.sleep(0.05)
    assert world.election.acquiring
    assert not controller.started.is_set(), "no leader yet"
    assert manager.readyz() == (True, "ok (standby)")

    world.election.granted.set()
    await soon(controller.started)
    assert manager.readyz() == (True, "ok (leader)")
    assert free.outcome == ""

    world.stop.set()
    await asyncio.wait_for(task, 5)
    assert (controller.outcome, free.outcome) == ("stopped", "stopped")
    assert world.ended == ["controller", "free"], "controllers drain first, the rest after"
    assert world.election.released, "a clean stop hands the Lease back"
    assert not manager.leading.is_set()


async def test_runnables_without_leader_stop_one_at_a_time_the_last_started_first() -> None:
    world = setup()
    world.manager.add_runnable(Probe("second", needs_leader=False, ended=world.ended))
    task = world.start()
    world.election.granted.set()
    await soon(world.probe("controller").started)
    assert world.probe("second").started.is_set()
    world.stop.set()
    await asyncio.wait_for(task, 5)
    assert world.ended == ["controller", "second", "free"]


async def test_losing_leadership_cancels_leader_runnables_and_raises() -> None:
    world = setup()
    task = world.start()
    world.election.granted.set()
    await soon(world.probe("controller").started)

    world.election.lost.set()
    with pytest.raises(LeadershipLostError):
        await asyncio.wait_for(task, 5)
    assert world.probe("controller").outcome == "cancelled", "no drain: another may act"
    assert world.probe("free").outcome == "stopped", "the process exits: the others stop"
    assert not world.manager.leading.is_set()
    assert not world.election.released, "the Lease is not ours any more"


async def test_a_stop_before_leadership_starts_no_leader_runnable() -> None:
    world = setup()
    task = world.start()
    await soon(world.probe("free").started)
    world.stop.set()
    await asyncio.wait_for(task, 5)
    assert not world.probe("controller").started.is_set()
    assert world.probe("free").outcome == "stopped"
    assert not world.election.released


async def test_a_failing_runnable_stops_the_others_and_its_error_propagates() -> None:
    world = setup()
    failing = asyncio.Event()

    async def fail(stop: asyncio.Event) -> None:
        await failing.wait()
        raise RuntimeError("sshd exited")

    world.manager.add_runnable(RunnableFunc("fails", fail, needs_leader=False))
    task = world.start()
    world.election.granted.set()
    await soon(world.probe("controller").started)

    failing.set()
    with pytest.raises(RuntimeError, match="sshd exited"):
        await asyncio.wait_for(task, 5)
    assert world.probe("controller").outcome == "stopped", "drained as on SIGTERM"
    assert world.probe("free").outcome == "stopped"
    assert world.election.released


async def test_without_leader_runnables_nothing_is_elected_and_ready_says_ok() -> None:
    world = setup(leader=False)
    manager = world.manager
    serving = False
    manager.add_readyz_check(lambda: (serving, "sshd not running"))
    manager.add_healthz_check(lambda: (False, "sshd exited"))
    task = world.start()
    await soon(world.probe("free").started)
    assert manager.readyz() == (False, "sshd not running"), "checks come first"
    serving = True
    assert manager.readyz() == (True, "ok"), "no leader, no standby"
    assert manager.healthz() == (False, "sshd exited")
    world.stop.set()
    await asyncio.wait_for(task, 5)
    assert not world.election.acquiring
    assert world.probe("free").outcome == "stopped"


async def test_a_controller_is_a_runnable_that_needs_the_leader() -> None:
    class Nothing:
        async def reconcile(self, key: object) -> Result | None:
            return None

    manager = setup(leader=False, free=False).manager
    controller = Controller("runnables-unit", Nothing())
    manager.add(controller)
    (runnable,) = manager.runnables
    assert (runnable.name, runnable.needs_leader) == ("controller:runnables-unit", True)
    assert manager.controllers == [controller]
