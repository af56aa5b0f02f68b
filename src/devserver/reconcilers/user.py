"""The user reconciler: a DevUser gets a namespace and exactly the rights devctl needs.

Everything it creates is owned by the DevUser, so deleting the DevUser lets the garbage
collector remove the namespace (and all in it), the ServiceAccount, the roles and bindings.
Writes are compare-then-apply against the shared cache of what we made (label selected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import (
    CLUSTER_ROLE_BINDINGS,
    DEVUSERS,
    LIMIT_RANGES,
    NAMESPACES,
    RESOURCE_QUOTAS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    Resource,
)
from devserver.api.schema import Condition, ConditionStatus
from devserver.api.user import DevUser
from devserver.client import KubeClient
from devserver.controller import Controller, Result
from devserver.controller.applied import apply_if_changed, write_status_if_changed
from devserver.informers import Informer, InformerFactory
from devserver.reconcilers.conditions import merge_conditions
from devserver.reconcilers.user_objects import (
    USER_LABEL,
    UserDefaults,
    desired_flavor_binding,
    desired_limit_range,
    desired_namespace,
    desired_quota,
    desired_role,
    desired_role_binding,
    desired_service_account,
    desired_token_binding,
    desired_token_role,
    namespace_name,
)

FIELD_MANAGER = "devserver-operator"


@dataclass
class UserReconciler:
    client: KubeClient
    users: Informer[DevUser]
    made: dict[str, Informer[KubeObject]]  # resource plural -> informer of what we made
    defaults: UserDefaults = field(default_factory=UserDefaults)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        user = self.users.store.get(key)
        if user is None or user.metadata.deletion_timestamp:
            return None  # the garbage collector removes what it owned
        d = self.defaults
        plan: list[tuple[Resource[Any], dict[str, Any]]] = [
            (NAMESPACES, desired_namespace(user, d)),
            (SERVICE_ACCOUNTS, desired_service_account(user)),
            (ROLES, desired_role(user)),
            (ROLE_BINDINGS, desired_role_binding(user)),
            (CLUSTER_ROLE_BINDINGS, desired_flavor_binding(user)),
            (ROLES, desired_token_role(user)),
            (ROLE_BINDINGS, desired_token_binding(user, d)),
            (RESOURCE_QUOTAS, desired_quota(user, d)),
            (LIMIT_RANGES, desired_limit_range(user)),
        ]
        for resource, intent in plan:
            meta = intent["metadata"]
            live = self.made[resource.plural].store.get(
                ObjectKey(meta.get("namespace", ""), meta["name"])
            )
            await apply_if_changed(self.client, resource, intent, live, field_manager=FIELD_MANAGER)
        quota_meta = desired_quota(user, d)["metadata"]
        quota = self.made[RESOURCE_QUOTAS.plural].store.get(
            ObjectKey(quota_meta["namespace"], quota_meta["name"])
        )
        counted = quota_counted(getattr(quota, "status", None) if quota else None)
        ready = Condition(
            type="Ready",
            status=ConditionStatus.TRUE if counted else ConditionStatus.FALSE,
            reason="Provisioned" if counted else "QuotaPending",
            message=f"namespace {namespace_name(user)} and access are in place"
            if counted
            else "waiting for the quota controller to count the new namespace",
            observed_generation=user.metadata.generation,
        )
        previous = user.status.conditions if user.status else []
        status = {
            "namespace": namespace_name(user),
            "conditions": merge_conditions(previous, [ready]),
            "observedGeneration": user.metadata.generation,
        }
        current = (
            user.status.model_dump(by_alias=True, mode="json", exclude_none=True)
            if user.status
            else {}
        )
        await write_status_if_changed(self.client, DEVUSERS, key, status, current)
        return None


def quota_counted(status: Any) -> bool:
    """Has the quota controller counted every limited resource? Until then the API server
    refuses quota-tracked creates ("status unknown for quota"), so devctl would fail."""
    if not isinstance(status, dict) or not status.get("hard"):
        return False
    used = status.get("used") or {}
    return all(name in used for name in status["hard"])


def setup(informers: InformerFactory, client: KubeClient) -> Controller:
    users = informers.informer(DEVUSERS)
    made = {
        r.plural: informers.informer(r, label_selector=USER_LABEL)
        for r in (
            NAMESPACES,
            SERVICE_ACCOUNTS,
            ROLES,
            ROLE_BINDINGS,
            CLUSTER_ROLE_BINDINGS,
            RESOURCE_QUOTAS,
            LIMIT_RANGES,
        )
    }
    controller = Controller("user", UserReconciler(client, users, made))
    controller.watch(users)
    for informer in made.values():
        controller.watch_owned(informer, DEVUSERS)
    return controller
