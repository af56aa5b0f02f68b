"""The Manager: shared informers, controllers, leader election, health and metrics, shutdown.

Caches start at once, leader or not, so a standby is warm and `/readyz` means "caches synced".
Controllers run only while this process leads. On SIGTERM the manager stops intake, lets
in-flight reconciles finish (≤ 30 s), releases the Lease so a standby takes over at once, and
returns. If the Lease cannot be renewed, controllers are cancelled immediately (someone else may
already be acting) and `LeadershipLostError` propagates: the process exits non-zero and is
restarted, as controller-runtime does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass, field

import structlog

from devserver.client import KubeClient
from devserver.controller import Controller
from devserver.informers import InformerFactory, ReflectorOptions
from devserver.manager.leader import LeaderElectionConfig, LeaderElector, LeadershipLostError
from devserver.observability.http import HealthEndpoints
from devserver.reconcilers.lifecycle_config import LifecycleConfig

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
    lease_name: str = "devserver-operator"
    identity: str = field(default_factory=default_identity)
    drain_timeout: float = 30.0
    reflector: ReflectorOptions = field(default_factory=ReflectorOptions)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)


class Manager:
    def __init__(self, client: KubeClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.informers = InformerFactory(client, options=settings.reflector)
        self.controllers: list[Controller] = []
        self.elector = (
            LeaderElector(
                client,
                LeaderElectionConfig(
                    settings.lease_namespace, settings.lease_name, settings.identity
                ),
            )
            if settings.leader_election
            else None
        )
        self.leading = asyncio.Event()

    def add(self, controller: Controller) -> None:
        self.controllers.append(controller)

    def healthz(self) -> tuple[bool, str]:
        return self.informers.health()

    def readyz(self) -> tuple[bool, str]:
        if not self.informers.synced:
            return False, "caches not synced"
        return True, "ok (leader)" if self.leading.is_set() else "ok (standby)"

    async def run(self, stop: asyncio.Event) -> None:
        endpoints = HealthEndpoints(healthz=self.healthz, readyz=self.readyz)
        server = await endpoints.serve(self.settings.http_host, self.settings.http_port)
        self.informers.start()
        try:
            if await self._lead_or_stop(stop):
                await self._run_controllers(stop)
        finally:
            await self.informers.stop()
            server.close()
            await server.wait_closed()

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

    async def _run_controllers(self, stop: asyncio.Event) -> None:
        controllers_stop = asyncio.Event()
        running = [
            asyncio.create_task(
                c.run(controllers_stop, drain_timeout=self.settings.drain_timeout),
                name=f"controller:{c.name}",
            )
            for c in self.controllers
        ]
        holding = asyncio.create_task(self.elector.hold()) if self.elector else None
        stopped = asyncio.create_task(stop.wait())
        watched = {stopped, *running, *([holding] if holding else [])}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        try:
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
            for task in running:
                task.cancel()
            if holding is not None:
                holding.cancel()
                await asyncio.gather(holding, return_exceptions=True)
            if self.elector is not None and self.leading.is_set():
                await self.elector.release()
            self.leading.clear()
