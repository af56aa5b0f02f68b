"""What the client needs to address a resource: group, version, plural, scope and model type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import DIGEST, Keep, KubeObject, ObjectT
from devserver.api.user import DevUser


@dataclass(frozen=True)
class Resource(Generic[ObjectT]):
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    model: type[ObjectT]
    # what an informer's cache keeps beyond metadata (None: all); the readers are named below
    cache_keeps: Keep | None = field(default=None, compare=False)
    # held packed (compressed JSON, decoded on each read: informers/store.py): the kinds with an
    # object or more per server, never read whole
    cache_packed: bool = field(default=False, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        """URL path; an empty namespace on a namespaced resource means all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", True, KubeObject)
# the agent's scripts, one ConfigMap per user namespace (~45 KB of data each): the cache holds a
# digest of the data (at 2,000 namespaces, 90 MiB otherwise), enough to rewrite one that differs
SCRIPT_CONFIGMAPS = Resource(
    "", "v1", "configmaps", "ConfigMap", True, KubeObject, cache_keeps={"data": DIGEST}
)
SECRETS = Resource("", "v1", "secrets", "Secret", True, KubeObject)
# Read from the cache: spec.nodeName (status.on_nodes, distributed ranks, fleet metrics),
# spec.schedulingGates (kueue.gated), status conditions (readiness, Kueue's eviction), container
# statuses (readiness, the reason a start fails), startTime; never applied or compared. The pod
# spec is two thirds of a cached pod.
POD_CACHE: Keep = {
    "spec": {"nodeName": True, "schedulingGates": True},
    "status": {
        "phase": True,
        "conditions": True,
        "containerStatuses": True,
        "startTime": True,
        "reason": True,
        "message": True,
    },
}
PODS = Resource("", "v1", "pods", "Pod", True, KubeObject, cache_keeps=POD_CACHE, cache_packed=True)
SERVICES = Resource("", "v1", "services", "Service", True, KubeObject, cache_packed=True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, KubeObject)
# Read from the cache: labels, spec.taints and status.allocatable (resize.node_problem). A node's
# status lists every image it holds: tens of KB per node on a real cluster.
NODE_CACHE: Keep = {"spec": {"taints": True}, "status": {"allocatable": True}}
NODES = Resource("", "v1", "nodes", "Node", False, KubeObject, cache_keeps=NODE_CACHE)
PERSISTENT_VOLUME_CLAIMS = Resource(
    "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, KubeObject, cache_packed=True
)
EVENTS = Resource("", "v1", "events", "Event", True, KubeObject)
DEPLOYMENTS = Resource(
    "apps", "v1", "deployments", "Deployment", True, KubeObject, cache_packed=True
)
STATEFULSETS = Resource(
    "apps", "v1", "statefulsets", "StatefulSet", True, KubeObject, cache_packed=True
)
LEASES = Resource(
    "coordination.k8s.io", "v1", "leases", "Lease", True, KubeObject, cache_packed=True
)
CUSTOM_RESOURCE_DEFINITIONS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    False,
    KubeObject,
)


DEVSERVERS = Resource(
    "devservers.io", "v1", "devservers", "DevServer", True, DevServer, cache_packed=True
)
FLAVORS = Resource(
    "devservers.io", "v1", "devserverflavors", "DevServerFlavor", False, DevServerFlavor
)
DEVUSERS = Resource("devservers.io", "v1", "devusers", "DevUser", False, DevUser)
SERVICE_ACCOUNTS = Resource(
    "", "v1", "serviceaccounts", "ServiceAccount", True, KubeObject, cache_packed=True
)
RESOURCE_QUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota", True, KubeObject)
LIMIT_RANGES = Resource("", "v1", "limitranges", "LimitRange", True, KubeObject)
ROLES = Resource(
    "rbac.authorization.k8s.io", "v1", "roles", "Role", True, KubeObject, cache_packed=True
)
ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io",
    "v1",
    "rolebindings",
    "RoleBinding",
    True,
    KubeObject,
    cache_packed=True,
)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io",
    "v1",
    "clusterrolebindings",
    "ClusterRoleBinding",
    False,
    KubeObject,
)
CLUSTER_ROLES = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, KubeObject
)
NETWORK_POLICIES = Resource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, KubeObject
)
PERSISTENT_VOLUMES = Resource(
    "", "v1", "persistentvolumes", "PersistentVolume", False, KubeObject, cache_packed=True
)

# Kueue's, used only when the operator is given a ClusterQueue (`--kueue-cluster-queue`)
LOCAL_QUEUES = Resource("kueue.x-k8s.io", "v1beta2", "localqueues", "LocalQueue", True, KubeObject)
CLUSTER_QUEUES = Resource(
    "kueue.x-k8s.io", "v1beta2", "clusterqueues", "ClusterQueue", False, KubeObject
)
# Read from the cache: spec.priority (the queue's order) and status (admission, conditions). Its
# spec.podSets repeats the whole pod template.
WORKLOAD_CACHE: Keep = {"spec": {"priority": True, "queueName": True}, "status": True}
KUEUE_WORKLOADS = Resource(
    "kueue.x-k8s.io",
    "v1beta2",
    "workloads",
    "Workload",
    True,
    KubeObject,
    cache_keeps=WORKLOAD_CACHE,
)
WORKLOAD_PRIORITY_CLASSES = Resource(
    "kueue.x-k8s.io",
    "v1beta2",
    "workloadpriorityclasses",
    "WorkloadPriorityClass",
    False,
    KubeObject,
)
