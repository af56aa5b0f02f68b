"""Keeping the activity agent's objects, and reading its reports, for any DevServer mode."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.lifecycle import Activity, activity_of, combined_activity
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import (
    CONFIGMAPS,
    LEASES,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    Resource,
)
from devserver.client import KubeClient
from devserver.controller.applied import apply_if_changed
from devserver.informers import Change, Informer, InformerFactory, Notification
from devserver.reconcilers.naming import NAME_LABEL
from devserver.reconcilers.pod_agent import (
    SCRIPTS_COMPONENT,
    SCRIPTS_CONFIGMAP,
    agent_name,
    desired_lease,
    desired_role,
    desired_role_binding,
    desired_scripts,
    desired_service_account,
    lease_names,
)

FIELD_MANAGER = "devserver-operator"
SCRIPTS_SELECTOR = ",".join(f"{k}={v}" for k, v in SCRIPTS_COMPONENT.items())


@dataclass(frozen=True)
class AgentInformers:
    """Caches of what the in-pod activity agent needs (only objects we labelled)."""

    config_maps: Informer[KubeObject]
    accounts: Informer[KubeObject]
    roles: Informer[KubeObject]
    bindings: Informer[KubeObject]
    leases: Informer[KubeObject]

    @classmethod
    def shared(cls, informers: InformerFactory) -> AgentInformers:
        mine = NAME_LABEL
        return cls(
            informers.informer(CONFIGMAPS, label_selector=SCRIPTS_SELECTOR),
            informers.informer(SERVICE_ACCOUNTS, label_selector=mine),
            informers.informer(ROLES, label_selector=mine),
            informers.informer(ROLE_BINDINGS, label_selector=mine),
            informers.informer(LEASES, label_selector=mine),
        )

    def all(self) -> tuple[Informer[KubeObject], ...]:
        return (self.config_maps, self.accounts, self.roles, self.bindings, self.leases)

    def activity(self, ds: DevServer) -> Activity | None:
        """What the agent(s) reported: one Lease, or one per rank combined."""
        ns = ds.metadata.namespace
        return combined_activity(
            [self.leases.store.get(ObjectKey(ns, name)) for name in lease_names(ds)]
        )


async def ensure_agent_objects(client: KubeClient, agent: AgentInformers, ds: DevServer) -> None:
    """The agent's ConfigMap, Lease(s), ServiceAccount and a Role for exactly those Leases."""
    ns = ds.metadata.namespace
    wanted: list[tuple[Resource[Any], dict[str, Any], Informer[KubeObject], str]] = [
        (CONFIGMAPS, desired_scripts(ns), agent.config_maps, SCRIPTS_CONFIGMAP),
        (SERVICE_ACCOUNTS, desired_service_account(ds), agent.accounts, agent_name(ds)),
        (ROLES, desired_role(ds), agent.roles, agent_name(ds)),
        (ROLE_BINDINGS, desired_role_binding(ds), agent.bindings, agent_name(ds)),
    ]
    wanted += [(LEASES, desired_lease(ds, name), agent.leases, name) for name in lease_names(ds)]
    # independent objects: sent together, so a reconcile waits for one round trip, not five
    # (under a creation burst the API server's latency, not our CPU, paces the queue)
    await asyncio.gather(
        *(
            apply_if_changed(
                client,
                resource,
                intent,
                informer.store.get(ObjectKey(ns, name)),
                field_manager=FIELD_MANAGER,
            )
            for resource, intent, informer, name in wanted
        )
    )


def idle_report_changed(note: Notification[Any]) -> bool:
    """A Lease matters when idleness begins or ends, or the agent reports again after a silence
    (a renewal after the Lease had lapsed); routine renewals do not wake the reconciler."""
    old, new = note.old, note.obj
    if note.change is Change.ADDED:
        report = activity_of(new)
        return report is not None and report.renewed is not None  # not a Lease we just made
    if note.change is not Change.UPDATED or old is None or old is new:
        return True
    before, after = activity_of(old), activity_of(new)
    if before is None or after is None or before.idle_since != after.idle_since:
        return True
    if after.renewed is None:
        return False
    return before.valid_until is None or after.renewed > before.valid_until
