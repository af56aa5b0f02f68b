"""Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm).

A candidate takes the Lease when it is free or when its holder has not renewed it for
`lease_duration` — measured on *our* clock from when we first saw that record, so clock skew
between nodes does not matter. The leader renews every `retry_period`; if it cannot renew for
`renew_deadline` (< lease_duration) it must consider itself deposed, and stop acting, before
anyone else may take over. Writes carry the resourceVersion read, so two candidates cannot both
win a race.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from devserver.api.meta import KubeObject
from devserver.api.resources import LEASES
from devserver.client import ApiError, KubeClient
from devserver.observability.metrics import LEADER_ELECTION_MASTER_STATUS

log = structlog.get_logger("devserver.leader")


class LeadershipLostError(Exception):
    pass


class Election(Protocol):
    """What the Manager needs of a leader election (LeaderElector; a fake in unit tests)."""

    async def acquire(self) -> None:
        """Return once this process leads."""
        ...

    async def hold(self) -> None:
        """Keep leading; raise LeadershipLostError once that is no longer sure."""
        ...

    async def release(self) -> None:
        """Step down so a standby takes over at once."""
        ...


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: KubeClient, config: LeaderElectionConfig) -> None:
        self.client, self.config = client, config
        self._status = LEADER_ELECTION_MASTER_STATUS.labels(name=config.name)
        self._leader = False
        self.is_leader = False
        self._observed: tuple[str, str] = ("", "")  # (holder, renewTime) last seen
        self._observed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self._leader

    @is_leader.setter
    def is_leader(self, leading: bool) -> None:
        self._leader = leading
        self._status.set(int(leading))  # client-go's leader_election_master_status

    async def acquire(self) -> None:
        """Return once we hold the Lease."""
        log.info("waiting for leadership", lease=self.config.name, identity=self.config.identity)
        # polling the Lease every retry_period is the protocol (no watch: fewer moving parts)
        while True:
            try:
                if await self._try_acquire_or_renew():
                    break
            except ApiError as error:  # an apiserver outage must not kill a standby
                log.warning("lease not reachable; retrying", error=str(error))
            await asyncio.sleep(self.config.retry_period)
        self.is_leader = True
        log.info("became leader", lease=self.config.name, identity=self.config.identity)

    async def hold(self) -> None:
        """Renew until we cannot for `renew_deadline`; then raise LeadershipLostError."""
        cfg = self.config
        last_renew = time.monotonic()
        while True:
            await asyncio.sleep(cfg.retry_period)
            try:
                async with asyncio.timeout(cfg.renew_deadline):
                    renewed = await self._try_acquire_or_renew()
            except (ApiError, TimeoutError):
                renewed = False
            if renewed:
                last_renew = time.monotonic()
            elif time.monotonic() - last_renew + cfg.retry_period >= cfg.renew_deadline:
                # the next attempt would land past the deadline: give up now, in time
                self.is_leader = False
                raise LeadershipLostError(
                    f"could not renew lease {cfg.name} for {cfg.renew_deadline} s"
                )

    async def release(self) -> None:
        """Hand the Lease back so a standby takes over at once instead of after expiry."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.client.get(LEASES, self.config.name, self.config.namespace)
            spec = dict(lease.extra.get("spec", {}))
            if spec.get("holderIdentity") != self.config.identity:
                return
            spec.update(
                holderIdentity=None,
                leaseDurationSeconds=1,
                renewTime=_micro_time(datetime.now(UTC)),
            )
            await self.client.replace(LEASES, self._body(lease, spec))
            log.info("released leadership", lease=self.config.name)
        except ApiError as error:
            log.warning("could not release the lease", error=str(error))

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        now = datetime.now(UTC)
        try:
            lease = await self.client.get(LEASES, cfg.name, cfg.namespace)
        except ApiError as error:
            if not error.not_found:
                raise
            spec = self._spec(now, transitions=0, acquired=now)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": spec,
            }
            try:
                await self.client.create(LEASES, body, cfg.namespace)
            except ApiError as create_error:
                if create_error.conflict:
                    return False
                raise
            return True
        spec = lease.extra.get("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and holder != cfg.identity and time.monotonic() - self._observed_at < duration:
            return False  # someone else holds a live lease
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == cfg.identity:
            acquired = spec.get("acquireTime") or _micro_time(now)
            new_spec = self._spec(now, transitions=transitions, acquired=acquired)
        else:
            new_spec = self._spec(now, transitions=transitions + 1, acquired=now)
        try:
            await self.client.replace(LEASES, self._body(lease, new_spec))
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    def _spec(self, now: datetime, *, transitions: int, acquired: datetime | str) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": acquired if isinstance(acquired, str) else _micro_time(acquired),
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _body(self, lease: KubeObject, spec: dict[str, Any]) -> dict[str, Any]:
        meta = lease.metadata
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "resourceVersion": meta.resource_version,
            },
            "spec": spec,
        }
