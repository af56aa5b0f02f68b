"""The expiry reconciler: stop a dev server at its deadline, warn before it, never poll.

For each running DevServer with a deadline (its time-to-live, expiration time or the operator's
maximum lifetime) it asks to be woken at the next moment that matters — a warning lead time or
the deadline itself — with requeue-after; 1,000 servers with staggered deadlines cost one
reconcile each per moment, not a loop. At a lead time it records a Warning Event with the exact
stop time and the command to extend, once (the `warned` annotation remembers it across
restarts). At the deadline it *stops* the server — `spec.stopped` with reason Expired: the
workload scales to zero, the home volume stays — and records an Event. `devctl start` undoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devserver.api.devserver import DevServer
from devserver.api.lifecycle import EXPIRED, STOP_REASON, WARNED, deadline, warned
from devserver.api.meta import ObjectKey
from devserver.api.resources import DEVSERVERS
from devserver.client import KubeClient
from devserver.client.events import EventType, record_event
from devserver.controller import Controller, Result
from devserver.informers import Informer, InformerFactory
from devserver.reconcilers.lifecycle_config import LifecycleConfig, lead_label


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ExpiryReconciler:
    client: KubeClient
    devservers: Informer[DevServer]
    config: LifecycleConfig
    now: Callable[[], datetime] = field(default=utc_now)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        ds = self.devservers.store.get(key)
        if ds is None or ds.metadata.deletion_timestamp or ds.spec.stopped:
            return None
        when, _capped = deadline(ds, self.config.max_lifetime)
        if when is None:
            return None
        now = self.now()
        name = ds.metadata.name
        stamp = f"{when:%Y-%m-%d %H:%M:%S} UTC"
        if now >= when:
            patch = {
                "metadata": {"annotations": {STOP_REASON: EXPIRED, WARNED: None}},
                "spec": {"stopped": True},
            }
            await self.client.patch(DEVSERVERS, name, patch, key.namespace)
            await record_event(
                self.client,
                DEVSERVERS,
                ds,
                EventType.NORMAL,
                "Expired",
                f"stopped at its deadline {stamp}; the home volume is kept — "
                f"`devctl start {name}` brings it back",
            )
            return None
        given = warned(ds)
        due = [
            lead
            for lead in self.config.warn_before
            if now >= when - lead and lead_label(lead) not in given
        ]
        if due:
            left = when - now
            minutes = max(1, round(left.total_seconds() / 60))
            await record_event(
                self.client,
                DEVSERVERS,
                ds,
                EventType.WARNING,
                "ExpiringSoon",
                f"stops at {stamp} (in about {minutes} min); keep it with "
                f"`devctl extend {name} --time 1h`",
            )
            labels = sorted(given | {lead_label(lead) for lead in due})
            patch = {"metadata": {"annotations": {WARNED: ",".join(labels)}}}
            await self.client.patch(DEVSERVERS, name, patch, key.namespace)
            given = set(labels)
        moments = [when] + [
            when - lead
            for lead in self.config.warn_before
            if lead_label(lead) not in given and when - lead > now
        ]
        return Result(requeue_after=max(0.05, (min(moments) - now).total_seconds()))


def setup(
    informers: InformerFactory, client: KubeClient, lifecycle: LifecycleConfig | None = None
) -> Controller:
    devservers = informers.informer(DEVSERVERS)
    controller = Controller(
        "expiry", ExpiryReconciler(client, devservers, lifecycle or LifecycleConfig()), workers=2
    )
    controller.watch(devservers)
    return controller
