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
    USER_QUOTA,
    user_namespace,
    with_legacy,
)
from devserver.api.ssh_keys import check_keys
from devserver.api.user import DevUser
from devserver.reconcilers.naming import SSH_KEYS_CONFIGMAP

CREATED_BY = {CREATED_BY_LABEL: OPERATOR}
ROLE = USER_QUOTA  # the name of the quota and limit range in a user's namespace
# ClusterRoles installed with the CRDs (`user_cluster_roles`), bound in each user's namespace.
# Binding a ClusterRole needs only `bind` on it, where writing a Role needs the operator to hold
# every right in it (pods/exec, serviceaccounts/token cluster-wide) or `escalate`.
USER_ROLE = "devserver-user"
FLAVOR_READER = "devserver-flavor-reader"
TOKEN_REQUESTER = "devserver-bastion-token-requester"  # noqa: S105 - a ClusterRole name
BOUND_ROLES = (USER_ROLE, FLAVOR_READER, TOKEN_REQUESTER)
USER_BINDING = "devserver-user"
TOKEN_BINDING = "devserver-bastion-token"  # noqa: S105 - a RoleBinding name
# made by releases before 0.2 (a Role and its RoleBinding each): removed once the new
# bindings are in place
LEGACY_ROLES = ("dev-user", "bastion-token-requester")


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
    return user_namespace(user.metadata.name)


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


def desired_ssh_keys(user: DevUser) -> dict[str, Any]:
    """The user's SSH public keys for sshd in their dev pods (the activity agent of each keeps
    the pod's authorized_keys in step with it): what the bastion admits too, options refused.
    Owned by the DevUser: a removed user's keys go, and no pod admits them after."""
    accepted = check_keys(list(user.spec.ssh_public_keys)).accepted
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(user, SSH_KEYS_CONFIGMAP),
        "data": {"authorized_keys": "".join(f"{key}\n" for key in accepted)},
    }


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


def user_cluster_roles() -> list[dict[str, Any]]:
    """The ClusterRoles users and the bastion are bound to; the chart installs them."""

    def cluster_role(name: str, why: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "devserver"},
                "annotations": {"devservers.io/purpose": why},
            },
            "rules": rules,
        }

    read = ["get", "list", "watch"]
    return [
        cluster_role(
            USER_ROLE,
            "a user's rights in their own namespace (a RoleBinding there)",
            [
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
                # `devctl quota`: their queue, where the platform queues GPUs with Kueue
                {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues"], "verbs": read},
                {
                    "apiGroups": [""],
                    "resources": ["pods/exec", "pods/portforward"],
                    "verbs": ["get", "create"],
                },
            ],
        ),
        cluster_role(
            FLAVOR_READER,
            "every user reads the flavors (a ClusterRoleBinding per user), and the GPU queues' "
            "quotas (`devctl quota`)",
            [
                {"apiGroups": ["devservers.io"], "resources": ["devserverflavors"], "verbs": read},
                {"apiGroups": ["kueue.x-k8s.io"], "resources": ["clusterqueues"], "verbs": read},
            ],
        ),
        cluster_role(
            TOKEN_REQUESTER,
            "the bastion mints tokens in a user's namespace (a RoleBinding there): the "
            "user's ServiceAccount, or a dev server's activity agent, which may write its "
            "own Lease only",
            [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}],
        ),
    ]


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
        "metadata": _meta(user, USER_BINDING),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": USER_ROLE,
        },
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


def desired_token_binding(user: DevUser, defaults: UserDefaults) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(user, TOKEN_BINDING),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
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
            # by name: a policy sees the pod's port (2222 since 0.2, 22 before), not the
            # Service's, and both templates name it `ssh`
            "ingress": [{"from": [bastion], "ports": [{"protocol": "TCP", "port": "ssh"}]}],
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
