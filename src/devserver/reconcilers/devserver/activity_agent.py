"""The in-pod activity agent's side of a DevServer, in every mode: its objects, and its reports.

- ConfigMap `devserver-scripts`, one per namespace (not per server: 1,000 copies of the agent
  cost the operator's cache ~50 MiB and 1,000 writes): the agent, the entrypoint that starts it
  and the distributed helpers, mounted read-only at /opt/devserver.
- Lease `<name>-activity` (coordination.k8s.io): where the agent reports. The operator creates
  it, because a Role cannot grant `create` for one name only.
- ServiceAccount, Role and RoleBinding `<name>-agent`: the Role allows get/update/patch of
  exactly that one Lease, nothing else; the pod runs as that ServiceAccount.
- The pod side (`agent_pod_parts`): the entrypoint as command, the scripts and a downward-API
  volume with the pod's annotations (how the operator's notices reach the agent), and the
  environment the agent reads.

`ensure_agent_objects` keeps them (compare-then-apply, against `AgentInformers`, the caches of
what we labelled); `AgentInformers.activity` reads what the agent reported, and
`idle_report_changed` says which Lease updates are worth a reconcile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from devserver.api.devserver import DevServer, Mode
from devserver.api.lifecycle import Activity, activity_of, combined_activity
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import (
    CACHE_COMPONENT_LABEL,
    CACHE_NAME_LABEL,
    COMPONENT_LABEL,
    FIELD_MANAGER,
    MANAGED_BY,
    with_legacy,
)
from devserver.api.resources import (
    LEASES,
    ROLE_BINDINGS,
    ROLES,
    SCRIPT_CONFIGMAPS,
    SERVICE_ACCOUNTS,
    Resource,
)
from devserver.client import KubeClient
from devserver.controller.applied import apply_if_changed
from devserver.informers import Change, Informer, InformerFactory, Notification
from devserver.podagent import agent_source, distributed_scripts, entrypoint_source
from devserver.reconcilers.naming import SSH_KEYS_CONFIGMAP, object_meta

SCRIPTS_MOUNT = "/opt/devserver"
PODINFO_MOUNT = "/etc/devserver/podinfo"


SCRIPTS_CONFIGMAP = "devserver-scripts"
SCRIPTS_COMPONENT = with_legacy({COMPONENT_LABEL: "scripts"})
SCRIPTS_SELECTOR = f"{CACHE_COMPONENT_LABEL}=scripts"


def lease_name(ds: DevServer) -> str:
    """Standalone: the one Lease. Distributed servers have one per rank (`lease_names`)."""
    return f"{ds.metadata.name}-activity"


def lease_names(ds: DevServer) -> list[str]:
    if ds.spec.mode is Mode.DISTRIBUTED and ds.spec.distributed is not None:
        return [f"{lease_name(ds)}-{i}" for i in range(ds.spec.distributed.world_size)]
    return [lease_name(ds)]


def agent_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-agent"


def desired_scripts(namespace: str) -> dict[str, Any]:
    """Shared by the namespace's dev servers; owned by none (it goes with the namespace)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": SCRIPTS_CONFIGMAP,
            "namespace": namespace,
            "labels": {**MANAGED_BY, **SCRIPTS_COMPONENT},
        },
        "data": {
            "agent.py": agent_source(),
            "entrypoint.sh": entrypoint_source(),
            **distributed_scripts(),
        },
    }


def desired_lease(ds: DevServer, name: str | None = None) -> dict[str, Any]:
    """Only the metadata: the spec and annotations are the agent's to write."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": object_meta(ds, name or lease_name(ds)),
    }


def desired_service_account(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(ds, agent_name(ds)),
        "automountServiceAccountToken": False,  # mounted explicitly in the dev pod only
    }


def desired_role(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(ds, agent_name(ds)),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": lease_names(ds),
                "verbs": ["get", "update", "patch"],
            },
            # with SSH: the user's keys, which sshd in the pod admits (the agent keeps them)
            *(
                [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [SSH_KEYS_CONFIGMAP],
                        "verbs": ["get"],
                    }
                ]
                if ds.spec.enable_ssh
                else []
            ),
        ],
    }


def desired_role_binding(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(ds, agent_name(ds)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": agent_name(ds),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": agent_name(ds),
                "namespace": ds.metadata.namespace,
            }
        ],
    }


def agent_pod_parts(ds: DevServer) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(command prefix, volume mounts, volumes) that start the agent in the dev container."""
    command = ["/bin/sh", f"{SCRIPTS_MOUNT}/entrypoint.sh"]
    mounts = [
        {"name": "devserver-scripts", "mountPath": SCRIPTS_MOUNT, "readOnly": True},
        {"name": "devserver-podinfo", "mountPath": PODINFO_MOUNT, "readOnly": True},
    ]
    volumes = [
        {
            "name": "devserver-scripts",
            "configMap": {"name": SCRIPTS_CONFIGMAP, "defaultMode": 0o555},
        },
        {
            "name": "devserver-podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
                ]
            },
        },
    ]
    return command, mounts, volumes


def agent_env(ds: DevServer) -> list[dict[str, Any]]:
    """Distributed pods report to their rank's Lease: `$(NODE_RANK)` is expanded by the kubelet
    from the variable the distributed environment defines before this one."""
    lease = lease_name(ds)
    if ds.spec.mode is Mode.DISTRIBUTED:
        lease += "-$(NODE_RANK)"
    return [
        {"name": "DEVSERVER_LEASE", "value": lease},
        {
            "name": "DEVSERVER_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "DEVSERVER_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


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
        mine = CACHE_NAME_LABEL
        return cls(
            informers.informer(SCRIPT_CONFIGMAPS, label_selector=SCRIPTS_SELECTOR),
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
        (SCRIPT_CONFIGMAPS, desired_scripts(ns), agent.config_maps, SCRIPTS_CONFIGMAP),
        (SERVICE_ACCOUNTS, desired_service_account(ds), agent.accounts, agent_name(ds)),
        (ROLES, desired_role(ds), agent.roles, agent_name(ds)),
    ]
    wanted += [(LEASES, desired_lease(ds, name), agent.leases, name) for name in lease_names(ds)]

    async def ensure(
        resource: Resource[Any], intent: dict[str, Any], informer: Informer[KubeObject], name: str
    ) -> None:
        live = informer.store.get(ObjectKey(ns, name))
        await apply_if_changed(client, resource, intent, live, field_manager=FIELD_MANAGER)

    # independent objects: sent together, so a reconcile waits for one round trip, not five
    # (under a creation burst the API server's latency, not our CPU, paces the queue)
    await asyncio.gather(*(ensure(*parts) for parts in wanted))
    # then the binding: the API server lets the operator bind a Role only once it exists (it
    # checks the Role's rights against the operator's own; a new one is "not found" before)
    await ensure(ROLE_BINDINGS, desired_role_binding(ds), agent.bindings, agent_name(ds))


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
