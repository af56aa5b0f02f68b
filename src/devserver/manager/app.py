"""The Manager: shared informers, runnables, leader election, health and metrics, shutdown.

It runs a list of runnables (runnable.py). Its own two, the probes server and the informer
caches, start at once, then every runnable that needs no leader, so a standby is warm and
`/readyz` means "caches synced". Runnables that need the leader (controllers) run only while
this process leads and every cache has synced (controller-runtime's manager, too, starts its
controllers after its caches): the first reconciles of a start do not compete with the lists for
the CPU, and none reads a cache still filling. It runs for the Lease from the start (unlike
controller-runtime, which starts its election after the caches), so that the wait for a dead
leader's Lease to expire overlaps the lists. A leader whose caches have not synced within
`sync_timeout` fails loudly (`CacheSyncTimeoutError`).

On SIGTERM the manager stops intake, lets in-flight reconciles finish (≤ 30 s), releases the
Lease so a standby takes over at once, then stops the other runnables one at a time, the last
started first (so the probes answer until the very end), and returns. If the Lease cannot be
renewed, controllers are cancelled immediately (someone else may already be acting) and
`LeadershipLostError` propagates: the process exits non-zero and is restarted, as
controller-runtime does. A runnable that ends on its own stops the manager as SIGTERM does; what
it raised propagates.

The Manager knows no reconciler: the operator (devserver.operator) adds its controllers, the
bastion its account sync and sshd.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from devserver.api.names import OPERATOR
from devserver.client import KubeClient, new_client
from devserver.controller import Controller, wait_synced
from devserver.informers import InformerFactory, ReflectorOptions
from devserver.manager.leader import (
    Election,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLostError,
)
from devserver.manager.runnable import ControllerRunnable, Runnable, RunnableFunc
from devserver.observability.http import Check, HealthEndpoints

log = structlog.get_logger("devserver.manager")


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and Prometheus reach the pod IP
    http_port: int = 8080
    leader_election: bool = True
    lease_namespace: str = field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "devserver-system")
    )
    lease_name: str = OPERATOR
    identity: str = field(default_factory=default_identity)
    drain_timeout: float = 30.0
    sync_timeout: float = 120.0  # a leader's caches synced within it, or it fails
    # the operator's informers start with a streaming list: the initial state arrives object by
    # object, each kept and packed as it comes. A LIST served from the watch cache (RV 0) is one
    # page of every object whatever the limit (10,000 whole pods: ~320 MB decoded at once).
    # LIST where the API server refuses it.
    reflector: ReflectorOptions = field(
        default_factory=lambda: ReflectorOptions(streaming_list=True)
    )


class _Started:
    """Runnables started in order, each with a stop event of its own; `on_end` is called with
    the task of each that ends."""

    def __init__(
        self, runnables: Iterable[Runnable], on_end: Callable[[asyncio.Task[None]], None]
    ) -> None:
        self._running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
        for runnable in runnables:
            stop = asyncio.Event()
            task = asyncio.create_task(runnable.run(stop), name=runnable.name)
            task.add_done_callback(on_end)
            self._running.append((stop, task))

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for _, task in self._running]

    async def shutdown(self) -> None:
        """Stop them in reverse order, each once the one started after it has returned."""
        for stop, task in reversed(self._running):
            stop.set()
            await asyncio.gather(task, return_exceptions=True)


class Manager:
    def __init__(
        self, client: KubeClient, settings: Settings, *, elector: Election | None = None
    ) -> None:
        """`elector` replaces the Lease election `settings` ask for (tests pass a fake)."""
        self.client, self.settings = client, settings
        self.informers = InformerFactory(client, options=settings.reflector)
        self.controllers: list[Controller] = []
        self.runnables: list[Runnable] = []
        self.elector: Election | None = elector
        if elector is None and settings.leader_election:
            config = LeaderElectionConfig(
                settings.lease_namespace, settings.lease_name, settings.identity
            )
            self.elector = LeaderElector(client, config)
        self.leading = asyncio.Event()
        self._healthz_checks: list[Check] = []
        self._readyz_checks: list[Check] = []

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[Manager]:
        """A Manager with a client of its own, from `settings.kubeconfig`; closed after."""
        client = await new_client(settings.kubeconfig)
        try:
            yield cls(client, settings)
        finally:
            await client.close()

    def add(self, controller: Controller) -> None:
        """A controller, run while this process leads."""
        self.controllers.append(controller)
        self.add_runnable(ControllerRunnable(controller, self.settings.drain_timeout))

    def add_runnable(self, runnable: Runnable) -> None:
        self.runnables.append(runnable)

    def add_healthz_check(self, check: Check) -> None:
        """Also unhealthy when `check` fails (after the informers' own check)."""
        self._healthz_checks.append(check)

    def add_readyz_check(self, check: Check) -> None:
        """Not ready while `check` fails (checked before the caches)."""
        self._readyz_checks.append(check)

    def healthz(self) -> tuple[bool, str]:
        ok, detail = self.informers.health()
        for check in self._healthz_checks if ok else ():
            healthy, why = check()
            if not healthy:
                return False, why
        return ok, detail

    def readyz(self) -> tuple[bool, str]:
        for check in self._readyz_checks:
            ready, why = check()
            if not ready:
                return False, why
        if not self.informers.synced:
            return False, "caches not synced"
        if not self._leader_runnables():
            return True, "ok"
        return True, "ok (leader)" if self.leading.is_set() else "ok (standby)"

    def _leader_runnables(self) -> list[Runnable]:
        return [r for r in self.runnables if r.needs_leader]

    async def run(self, stop: asyncio.Event) -> None:
        halt = asyncio.Event()  # `stop`, or a runnable ended on its own
        ended: list[asyncio.Task[None]] = []

        def on_end(task: asyncio.Task[None]) -> None:
            ended.append(task)
            halt.set()

        free = _Started(
            [
                RunnableFunc("probes", self._serve_probes, needs_leader=False),
                RunnableFunc("informers", self._run_caches, needs_leader=False),
                *(r for r in self.runnables if not r.needs_leader),
            ],
            on_end,
        )
        relay = asyncio.create_task(stop.wait())
        relay.add_done_callback(lambda _: halt.set())
        try:
            if not self._leader_runnables():
                await halt.wait()
            elif await self._lead_or_stop(halt):
                await self._run_leading(halt)
        finally:
            relay.cancel()
            await free.shutdown()
        for task in [*ended, *free.tasks]:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _serve_probes(self, stop: asyncio.Event) -> None:
        """/healthz, /readyz and /metrics on one port, from start to the very end."""
        endpoints = HealthEndpoints(healthz=self.healthz, readyz=self.readyz)
        server = await endpoints.serve(self.settings.http_host, self.settings.http_port)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()

    async def _run_caches(self, stop: asyncio.Event) -> None:
        """The shared informers, leader or not, so a standby is warm."""
        self.informers.start()
        try:
            await stop.wait()
        finally:
            await self.informers.stop()

    async def _lead_or_stop(self, stop: asyncio.Event) -> bool:
        """Wait for leadership; False if asked to stop first."""
        if self.elector is None:
            self.leading.set()
            return True
        acquire = asyncio.create_task(self.elector.acquire())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (acquire, stopped):
            task.cancel()
        if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
            self.leading.set()
            return True
        return False

    async def _run_leading(self, stop: asyncio.Event) -> None:
        """Hold the Lease; once every cache has synced, run the leader runnables until `stop`
        or the Lease is lost."""
        controllers_stop = asyncio.Event()
        running: list[asyncio.Task[None]] = []
        holding = asyncio.create_task(self.elector.hold()) if self.elector else None
        stopped = asyncio.create_task(stop.wait())
        synced = asyncio.create_task(
            wait_synced(list(self.informers), self.settings.sync_timeout, "manager")
        )
        ending = {stopped, *([holding] if holding else [])}
        try:
            done, _ = await asyncio.wait({synced, *ending}, return_when=asyncio.FIRST_COMPLETED)
            if synced in done:
                synced.result()  # raises CacheSyncTimeoutError
                running = [
                    asyncio.create_task(r.run(controllers_stop), name=r.name)
                    for r in self._leader_runnables()
                ]
                done, _ = await asyncio.wait(
                    {*ending, *running}, return_when=asyncio.FIRST_COMPLETED
                )
            if holding in done:
                for task in running:  # no drain: another leader may already be acting
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                self.leading.clear()
                holding.result()  # raises LeadershipLostError
                raise LeadershipLostError("lease holder returned")
            for task in running:
                if task in done:
                    task.result()  # a controller failed to start (e.g. caches never synced)
            log.info("stopping controllers", drain_timeout=self.settings.drain_timeout)
            controllers_stop.set()
            await asyncio.gather(*running)
        finally:
            stopped.cancel()
            synced.cancel()
            for task in running:
                task.cancel()
            if holding is not None:
                holding.cancel()
                await asyncio.gather(holding, return_exceptions=True)
            if self.elector is not None and self.leading.is_set():
                await self.elector.release()
            self.leading.clear()
