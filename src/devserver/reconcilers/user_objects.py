"""What a DevUser is given: pure builders of the desired objects.

The namespace is NOT owned by the DevUser: an owner reference would let the garbage collector
delete the namespace — and every home volume in it — when the DevUser is deleted (or its CRD).
The rights (ServiceAccount, roles, bindings, quota) are owned, so deleting a user revokes their
access at once while their data stays. NetworkPolicies confine each namespace: no ingress from
other namespaces except the bastion to port 22, and no egress to the instance metadata service.

Rights follow the devctl workflow and nothing more: full control of DevServers in their own
namespace; read of pods, services, PVCs and events there; exec, logs and port-forward into their
pods; read of flavors cluster-wide. Users may NOT create pods, Deployments or other workloads
directly: every workload goes through a DevServer, so flavors, quotas and our pod template
(no privilege, no host access) always apply. Pod Security Admission (baseline, enforced) and a
ResourceQuota with a LimitRange guard the namespace anyway, should a role ever be widened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devserver.api.meta import KubeObject
from devserver.api.names import (
    CREATED_BY_LABEL,
    LEGACY_CREATED_BY_LABEL,
    LEGACY_USER_LABEL,
    OPERATOR,
    USER_LABEL,
    with_legacy,
)
from devserver.api.user import DevUser

CREATED_BY = {CREATED_BY_LABEL: OPERATOR}
ROLE = "dev-user"
FLAVOR_READER = "devserver-flavor-reader"
TOKEN_REQUESTER = "bastion-token-requester"  # noqa: S105 - a Role name


@dataclass(frozen=True)
class UserDefaults:
    """Operator configuration: the quota every user gets unless their DevUser overrides it."""

    gpus: int = 8
    cpu: str = "64"
    memory: str = "256Gi"
    storage: str = "1Ti"
    dev_servers: int = 10
    bastion_namespace: str = "devserver-system"
    bastion_service_account: str = "devserver-bastion"
    bastion_pod_labels: tuple[tuple[str, str], ...] = (
        ("app.kubernetes.io/name", "devserver-bastion"),
    )
    pod_security: str = "baseline"


def namespace_name(user: DevUser) -> str:
    return f"dev-{user.metadata.name}"


def service_account_name(user: DevUser) -> str:
    return f"user-{user.metadata.name}"


def _owner(user: DevUser) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevUser",
            "name": user.metadata.name,
            "uid": user.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _labels(user: DevUser) -> dict[str, str]:
    return with_legacy({USER_LABEL: user.metadata.name, **CREATED_BY})


def _meta(user: DevUser, name: str, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(user), "ownerReferences": _owner(user)}
    if namespaced:
        meta["namespace"] = namespace_name(user)
    return meta


def is_ours(namespace: KubeObject, user: str) -> bool:
    """Made by the operator for this user (a namespace only an admin can label)."""
    found = namespace.metadata.labels
    # under either key (api/names.py): an admin may have removed one of the two
    made = OPERATOR in (found.get(CREATED_BY_LABEL), found.get(LEGACY_CREATED_BY_LABEL))
    return user in (found.get(USER_LABEL), found.get(LEGACY_USER_LABEL)) and made


def desired_namespace(user: DevUser, defaults: UserDefaults) -> dict[str, Any]:
    meta = _meta(user, namespace_name(user), namespaced=False)
    del meta["ownerReferences"]  # see the module docstring: deleting a user keeps their data
    meta["labels"].update(
        {
            "pod-security.kubernetes.io/enforce": defaults.pod_security,
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        }
    )
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def desired_service_account(user: DevUser) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(user, service_account_name(user)),
        "automountServiceAccountToken": False,
    }


def desired_role(user: DevUser) -> dict[str, Any]:
    read = ["get", "list", "watch"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(user, ROLE),
        "rules": [
            {
                "apiGroups": ["devservers.io"],
                "resources": ["devservers"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            {"apiGroups": ["devservers.io"], "resources": ["devservers/status"], "verbs": read},
            {
                "apiGroups": [""],
                "resources": [
                    "pods",
                    "services",
                    "persistentvolumeclaims",
                    "events",
                    "resourcequotas",
                    "limitranges",
                ],
                "verbs": read,
            },
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["pods/exec", "pods/portforward"],
                "verbs": ["get", "create"],
            },
        ],
    }


def _subject(user: DevUser) -> dict[str, str]:
    return {
        "kind": "ServiceAccount",
        "name": service_account_name(user),
        "namespace": namespace_name(user),
    }


def desired_role_binding(user: DevUser) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(user, ROLE),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
        "subjects": [_subject(user)],
    }


def desired_flavor_binding(user: DevUser) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(user, f"{FLAVOR_READER}:{user.metadata.name}", namespaced=False),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": FLAVOR_READER,
        },
        "subjects": [_subject(user)],
    }


def desired_token_role(user: DevUser) -> dict[str, Any]:
    """The bastion may mint tokens for this user's ServiceAccount, and for nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(user, TOKEN_REQUESTER),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["serviceaccounts/token"],
                "resourceNames": [service_account_name(user)],
                "verbs": ["create"],
            }
        ],
    }


def desired_token_binding(user: DevUser, defaults: UserDefaults) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(user, TOKEN_REQUESTER),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": TOKEN_REQUESTER,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": defaults.bastion_service_account,
                "namespace": defaults.bastion_namespace,
            }
        ],
    }


def desired_quota(user: DevUser, defaults: UserDefaults) -> dict[str, Any]:
    o = user.spec.quota
    gpus = o.gpus if o and o.gpus is not None else defaults.gpus
    hard = {
        "requests.nvidia.com/gpu": str(gpus),
        "requests.cpu": (o.cpu if o and o.cpu else defaults.cpu),
        "requests.memory": (o.memory if o and o.memory else defaults.memory),
        "requests.storage": (o.storage if o and o.storage else defaults.storage),
        "count/devservers.devservers.io": str(
            o.dev_servers if o and o.dev_servers is not None else defaults.dev_servers
        ),
        "pods": "40",
        "persistentvolumeclaims": "40",
        "services": "40",
    }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(user, "dev-user"),
        "spec": {"hard": hard},
    }


def desired_limit_range(user: DevUser) -> dict[str, Any]:
    """Bounds for any container that does not say what it needs."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(user, "dev-user"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "1", "memory": "1Gi"},
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                }
            ]
        },
    }


METADATA_SERVICE = "169.254.169.254/32"  # EC2 instance metadata: the node's IAM credentials
METADATA_SERVICE_V6 = "fd00:ec2::254/128"  # the same service on IPv6 (Nitro instances)


def desired_network_policies(user: DevUser, defaults: UserDefaults) -> list[dict[str, Any]]:
    """Ingress only from the namespace itself (a user's servers, ranks of one distributed
    server) and from the bastion to SSH; egress anywhere but the instance metadata address.
    Policies are additive: a pod selected by any ingress policy takes only what some policy
    allows."""
    bastion = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": defaults.bastion_namespace}
        },
        "podSelector": {"matchLabels": dict(defaults.bastion_pod_labels)},
    }
    everywhere = [
        # pods by selector too: some CNIs (Cilium) never match pod addresses by ipBlock, and
        # DNS and the ranks of a distributed server must stay reachable
        {"namespaceSelector": {}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_SERVICE]}},
        {"ipBlock": {"cidr": "::/0", "except": [METADATA_SERVICE_V6]}},
    ]
    specs = {
        "same-namespace-only": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
        "bastion-ssh": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [bastion], "ports": [{"protocol": "TCP", "port": 22}]}],
        },
        "no-instance-metadata": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": everywhere}],
        },
    }
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(user, f"devserver-{name}"),
            "spec": spec,
        }
        for name, spec in specs.items()
    ]
