"""What the in-pod activity agent needs, per DevServer: pure builders of the desired objects.

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
"""

from __future__ import annotations

from typing import Any

from devserver.api.devserver import DevServer, Mode
from devserver.podagent import agent_source, distributed_scripts, entrypoint_source
from devserver.reconcilers.naming import MANAGED_BY, labels, owner_reference

SCRIPTS_MOUNT = "/opt/devserver"
PODINFO_MOUNT = "/etc/devserver/podinfo"


SCRIPTS_CONFIGMAP = "devserver-scripts"
SCRIPTS_COMPONENT = {"devserver.io/component": "scripts"}


def lease_name(ds: DevServer) -> str:
    """Standalone: the one Lease. Distributed servers have one per rank (`lease_names`)."""
    return f"{ds.metadata.name}-activity"


def lease_names(ds: DevServer) -> list[str]:
    if ds.spec.mode is Mode.DISTRIBUTED and ds.spec.distributed is not None:
        return [f"{lease_name(ds)}-{i}" for i in range(ds.spec.distributed.world_size)]
    return [lease_name(ds)]


def agent_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-agent"


def _meta(ds: DevServer, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ds.metadata.namespace,
        "labels": labels(ds),
        "ownerReferences": [owner_reference(ds)],
    }


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
        "metadata": _meta(ds, name or lease_name(ds)),
    }


def desired_service_account(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(ds, agent_name(ds)),
        "automountServiceAccountToken": False,  # mounted explicitly in the dev pod only
    }


def desired_role(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(ds, agent_name(ds)),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": lease_names(ds),
                "verbs": ["get", "update", "patch"],
            }
        ],
    }


def desired_role_binding(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(ds, agent_name(ds)),
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
