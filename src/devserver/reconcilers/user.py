"""The user reconciler: a DevUser gets a namespace and exactly the rights devctl needs.

Deleting a DevUser never deletes data. Its rights (ServiceAccount, roles, bindings, quota,
policies) are owned by it and go with it, so the user loses access at once; the namespace is
not owned and stays with its home volumes. The reconciler then stops every dev server in it (a
removed user holds no GPU) and marks the namespace `devservers.io/user-removed`. Adding the user
again finds the namespace (the operator's marker labels say it made it) and gives access back;
`devctl admin user remove --delete-homes` is the separate, explicit act that deletes the data.

A namespace named `dev-<user>` that the operator did not make is never taken over: the DevUser
says so in its status and nothing is written into it.

Writes are compare-then-apply against the shared cache of what we made (label selected).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.lifecycle import USER_REMOVED
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import (
    CACHE_USER_LABEL,
    CACHE_USER_SELECTOR,
    FIELD_MANAGER,
    STOP_REASON,
    USER_REMOVED_ANNOTATION,
    user_namespace,
)
from devserver.api.resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    CONFIGMAPS,
    DEVSERVERS,
    DEVUSERS,
    LIMIT_RANGES,
    LOCAL_QUEUES,
    NAMESPACES,
    NETWORK_POLICIES,
    RESOURCE_QUOTAS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    Resource,
)
from devserver.api.schema import Condition, ConditionStatus
from devserver.api.user import DevUser, DevUserStatus
from devserver.client import ApiError, KubeClient
from devserver.controller import Controller, Result
from devserver.controller.applied import apply_if_changed
from devserver.controller.reconciler import TerminalError
from devserver.informers import NAMESPACE_INDEX, NAMESPACED, Informer, InformerFactory
from devserver.reconcilers.children import Attempts
from devserver.reconcilers.conditions import merge_conditions
from devserver.reconcilers.kueue import KueueConfig, desired_local_queue, local_queue_target
from devserver.reconcilers.naming import SSH_KEYS_CONFIGMAP
from devserver.reconcilers.status_writer import StatusWriter
from devserver.reconcilers.user_objects import (
    BOUND_ROLES,
    LEGACY_ROLES,
    UserDefaults,
    desired_flavor_binding,
    desired_limit_range,
    desired_namespace,
    desired_network_policies,
    desired_quota,
    desired_role_binding,
    desired_service_account,
    desired_ssh_keys,
    desired_token_binding,
    is_ours,
    namespace_name,
)


@dataclass
class UserReconciler:
    client: KubeClient
    users: Informer[DevUser]
    made: dict[str, Informer[KubeObject]]  # resource plural -> informer of what we made
    devservers: Informer[DevServer] | None = None
    defaults: UserDefaults = field(default_factory=UserDefaults)
    kueue: KueueConfig = field(default_factory=KueueConfig)
    writer: StatusWriter[DevUser] = field(init=False)

    def __post_init__(self) -> None:
        self.writer = StatusWriter(self.client, DEVUSERS, DevUserStatus)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        user = self.users.store.get(key)
        if key in self.users.unreadable_now:
            return None  # it exists (unreadable by our model: its status says so); not removed
        if user is None or user.metadata.deletion_timestamp:
            self.writer.forget(key)
            await self._removed(key.name)
            return None  # the garbage collector removes the rights it owned; data stays
        namespace = namespace_name(user)
        live_ns = self.made[NAMESPACES.plural].store.get(ObjectKey("", namespace))
        mine = live_ns is not None and is_ours(live_ns, user.metadata.name)
        if not mine and await self._foreign_namespace(namespace, user.metadata.name):
            await self._write_status(user, taken=True)
            return Result(requeue_after=300)  # an admin may free the name; look again
        d = self.defaults
        plan: list[tuple[Resource[Any], dict[str, Any]]] = [
            (NAMESPACES, desired_namespace(user, d)),
            (SERVICE_ACCOUNTS, desired_service_account(user)),
            (CONFIGMAPS, desired_ssh_keys(user)),
            (ROLE_BINDINGS, desired_role_binding(user)),
            (CLUSTER_ROLE_BINDINGS, desired_flavor_binding(user)),
            (ROLE_BINDINGS, desired_token_binding(user, d)),
            (RESOURCE_QUOTAS, desired_quota(user, d)),
            (LIMIT_RANGES, desired_limit_range(user)),
            *((NETWORK_POLICIES, policy) for policy in desired_network_policies(user, d)),
        ]
        if self.kueue.enabled:
            queue = self.kueue.cluster_queue_of(user.spec.team or "")
            meta = desired_service_account(user)["metadata"]
            plan.append((LOCAL_QUEUES, desired_local_queue(namespace, queue, meta)))
        # the namespace first (everything else lives in it), then the rest together: a burst
        # of new users waits for round trips, not for each user's dozen writes in turn
        tried = Attempts()
        await tried.attempt("Namespace", self._ensure(*plan[0]))
        await asyncio.gather(
            *(
                tried.attempt(resource.kind, self._ensure(resource, intent))
                for resource, intent in plan[1:]
            )
        )
        if not tried.failed and not tried.refused:
            await tried.attempt("Role", self._remove_legacy_roles(namespace))
        if live_ns is not None and USER_REMOVED_ANNOTATION in live_ns.metadata.annotations:
            patch = {"metadata": {"annotations": {USER_REMOVED_ANNOTATION: None}}}
            await self.client.patch(NAMESPACES, namespace, patch)
        await self._write_status(user, taken=False, tried=tried)
        tried.raise_if_any()  # after the status: retried with backoff
        return None

    async def _remove_legacy_roles(self, namespace: str) -> None:
        """The Roles of releases before 0.2, once the bindings to the ClusterRoles stand and
        the ClusterRoles exist (a binding may name a missing one): the user never loses access
        on the way."""
        legacy = [
            (resource, name)
            for resource in (ROLE_BINDINGS, ROLES)
            for name in LEGACY_ROLES
            if self.made[resource.plural].store.get(ObjectKey(namespace, name)) is not None
        ]
        if not legacy:
            return
        for role in BOUND_ROLES:
            try:
                await self.client.get(CLUSTER_ROLES, role)
            except ApiError as error:
                if error.not_found:  # told in the DevUser's status; the old Roles stay
                    raise TerminalError(
                        f"ClusterRole {role} is missing, so this user's Roles of before 0.2 "
                        "are kept: install the chart (or manifests/rbac/user-roles.yaml)"
                    ) from None
                raise
        for resource in (ROLE_BINDINGS, ROLES):
            for name in LEGACY_ROLES:
                old = self.made[resource.plural].store.get(ObjectKey(namespace, name))
                if old is None:
                    continue
                try:
                    await self.client.delete(resource, name, namespace, uid=old.metadata.uid)
                except ApiError as error:
                    if not (error.not_found or error.status == 409):
                        raise

    async def _ensure(self, resource: Resource[Any], intent: dict[str, Any]) -> None:
        meta = intent["metadata"]
        live = self.made[resource.plural].store.get(
            ObjectKey(meta.get("namespace", ""), meta["name"])
        )
        if resource is NAMESPACES and live is not None and live.metadata.owner_references:
            # made by an operator that let the user own it: apply drops that reference, so
            # deleting the user can no longer delete the namespace and its homes
            await self.client.apply(resource, intent, field_manager=FIELD_MANAGER)
            return
        target = intent.get("spec", {}).get("clusterQueue")
        if resource is LOCAL_QUEUES and live is not None and local_queue_target(live) != target:
            # the user's team moved to another ClusterQueue: a LocalQueue's is immutable, so it
            # is made anew (servers running stay admitted; waiting ones queue in the new one)
            try:
                await self.client.delete(
                    resource, meta["name"], meta["namespace"], uid=live.metadata.uid
                )
            except ApiError as error:
                if not (error.not_found or error.status == 409):
                    raise
            live = None
        await apply_if_changed(self.client, resource, intent, live, field_manager=FIELD_MANAGER)

    async def _foreign_namespace(self, namespace: str, user: str) -> bool:
        """Does `namespace` exist without our marker? Read live: the cache holds only ours."""
        try:
            found = await self.client.get(NAMESPACES, namespace)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return not is_ours(found, user)

    async def _removed(self, user: str) -> None:
        """The user is gone: stop their servers (GPUs back), keep the namespace and homes."""
        namespace = self.made[NAMESPACES.plural].store.get(ObjectKey("", user_namespace(user)))
        if namespace is None or not is_ours(namespace, user):
            return
        if namespace.metadata.deletion_timestamp:
            return  # an admin deleted it on purpose
        servers = (
            self.devservers.store.by_index(NAMESPACE_INDEX, namespace.metadata.name)
            if self.devservers is not None
            else []
        )
        for ds in servers:
            if ds.spec.stopped or ds.metadata.deletion_timestamp:
                continue
            patch = {
                "metadata": {"annotations": {STOP_REASON: USER_REMOVED}},
                "spec": {"stopped": True},
            }
            try:
                await self.client.patch(DEVSERVERS, ds.metadata.name, patch, ds.metadata.namespace)
            except ApiError as error:
                if error.status != 404:
                    raise
        if USER_REMOVED_ANNOTATION not in namespace.metadata.annotations:
            stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
            patch = {"metadata": {"annotations": {USER_REMOVED_ANNOTATION: stamp}}}
            await self.client.patch(NAMESPACES, namespace.metadata.name, patch)

    async def _write_status(
        self, user: DevUser, *, taken: bool, tried: Attempts | None = None
    ) -> None:
        d = self.defaults
        namespace = namespace_name(user)
        quota_meta = desired_quota(user, d)["metadata"]
        quota = self.made[RESOURCE_QUOTAS.plural].store.get(
            ObjectKey(quota_meta["namespace"], quota_meta["name"])
        )
        counted = quota_counted(getattr(quota, "status", None) if quota else None)
        refused = tried is not None and bool(tried.refused)
        if tried is not None and tried.refused:
            applied = tried.condition(
                user.metadata.generation, "change the DevUser's spec (quota values) or ask why"
            )
            reason, message = applied.reason, applied.message  # Refused, or NotPermitted
        elif taken:
            reason = "NamespaceTaken"
            message = (
                f"namespace {namespace} exists and was not made by devserver, so it is left "
                "alone; delete or rename that namespace, or add the user under another name"
            )
        elif counted:
            reason, message = "Provisioned", f"namespace {namespace} and access are in place"
        else:
            reason = "QuotaPending"
            message = "waiting for the quota controller to count the new namespace"
        ready = Condition(
            type="Ready",
            status=ConditionStatus.TRUE
            if counted and not taken and not refused
            else ConditionStatus.FALSE,
            reason=reason,
            message=message,
            observed_generation=user.metadata.generation,
        )
        previous = user.status.conditions if user.status else []
        status: dict[str, Any] = {
            "conditions": merge_conditions(previous, [ready]),
            "observedGeneration": user.metadata.generation,
        }
        if not taken:
            status["namespace"] = namespace
        await self.writer.write(user, status)


def quota_counted(status: Any) -> bool:
    """Has the quota controller counted every limited resource? Until then the API server
    refuses quota-tracked creates ("status unknown for quota"), so devctl would fail."""
    if not isinstance(status, dict) or not status.get("hard"):
        return False
    used = status.get("used") or {}
    return all(name in used for name in status["hard"])


def setup(
    informers: InformerFactory,
    client: KubeClient,
    defaults: UserDefaults | None = None,
    kueue: KueueConfig | None = None,
) -> Controller:
    kueue = kueue or KueueConfig()
    users = informers.informer(DEVUSERS)
    made = {
        r.plural: informers.informer(r, label_selector=CACHE_USER_SELECTOR)
        for r in (
            NAMESPACES,
            SERVICE_ACCOUNTS,
            ROLES,
            ROLE_BINDINGS,
            CLUSTER_ROLE_BINDINGS,
            RESOURCE_QUOTAS,
            LIMIT_RANGES,
            NETWORK_POLICIES,
            *((LOCAL_QUEUES,) if kueue.enabled else ()),  # Kueue's CRDs may be absent
        )
    }
    # the keys only: a namespace's other ConfigMaps (the agent's scripts) are cached elsewhere
    made[CONFIGMAPS.plural] = informers.informer(
        CONFIGMAPS,
        label_selector=CACHE_USER_LABEL,
        field_selector=f"metadata.name={SSH_KEYS_CONFIGMAP}",
    )
    devservers = informers.informer(DEVSERVERS, indexers=NAMESPACED)
    controller = Controller(
        "user",
        UserReconciler(client, users, made, devservers, defaults or UserDefaults(), kueue),
        workers=4,
    )
    controller.watch(users)
    controller.reads(devservers)

    def by_user_label(obj: KubeObject) -> list[ObjectKey]:
        name = obj.metadata.labels.get(CACHE_USER_LABEL)
        return [ObjectKey("", name)] if name else []

    for informer in made.values():
        controller.watch_mapped(informer, by_user_label)
    return controller
