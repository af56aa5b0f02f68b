"""What the in-pod activity agent needs, per DevServer: pure builders of the desired objects.

- ConfigMap `<name>-scripts`: the agent and the entrypoint that starts it (mounted read-only at
  /opt/devserver).
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

from devserver.api.devserver import DevServer
from devserver.podagent import agent_source, entrypoint_source
from devserver.reconcilers.naming import labels, owner_reference

SCRIPTS_MOUNT = "/opt/devserver"
PODINFO_MOUNT = "/etc/devserver/podinfo"


def scripts_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-scripts"


def lease_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-activity"


def agent_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-agent"


def _meta(ds: DevServer, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ds.metadata.namespace,
        "labels": labels(ds),
        "ownerReferences": [owner_reference(ds)],
    }


def desired_scripts(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(ds, scripts_name(ds)),
        "data": {"agent.py": agent_source(), "entrypoint.sh": entrypoint_source()},
    }


def desired_lease(ds: DevServer) -> dict[str, Any]:
    """Only the metadata: the spec and annotations are the agent's to write."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(ds, lease_name(ds)),
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
                "resourceNames": [lease_name(ds)],
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
            "configMap": {"name": scripts_name(ds), "defaultMode": 0o555},
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
    return [
        {"name": "DEVSERVER_LEASE", "value": lease_name(ds)},
        {
            "name": "DEVSERVER_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "DEVSERVER_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
