"""What a DevServer reconcile reads: shared informers of only the objects we labelled, and the
users (their teams label the fleet's metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import CACHE_NAME_LABEL, CACHE_USER_SELECTOR, namespace_user
from devserver.api.resources import (
    DEVSERVERS,
    DEVUSERS,
    FLAVORS,
    NODES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    RESOURCE_QUOTAS,
    SERVICES,
    Resource,
)
from devserver.api.user import DevUser
from devserver.informers import NAMESPACED, Informer, InformerFactory
from devserver.reconcilers.devserver.activity_agent import AgentInformers
from devserver.reconcilers.flavor import FLAVOR_INDEX, by_flavor
from devserver.reconcilers.kueue import QueueCaches
from devserver.reconcilers.naming import NAME_INDEX, by_devserver_name

MODE_INDEX = "mode"  # the servers of each mode: woken by key, none decoded (informers/store.py)


def by_mode(ds: DevServer) -> tuple[str, ...]:
    return (ds.spec.mode.value,)


@dataclass(frozen=True)
class Caches:
    """What a DevServer reconcile reads: shared informers of only the objects we labelled."""

    devservers: Informer[DevServer]
    flavors: Informer[DevServerFlavor]
    workloads: Informer[KubeObject]  # the mode's: Deployments or StatefulSets
    services: Informer[KubeObject]
    claims: Informer[KubeObject]
    pods: Informer[KubeObject]
    agent: AgentInformers
    users: Informer[DevUser]  # the user reconciler's: their teams label the fleet's metrics
    quotas: Informer[KubeObject]  # the user reconciler's: a flavor change must fit (`resize`)
    nodes: Informer[KubeObject]  # a flavor change must fit a node (`resize`)
    queue: QueueCaches | None = None  # Kueue's Workloads, when the operator uses Kueue

    @classmethod
    def shared(
        cls, informers: InformerFactory, workload: Resource[KubeObject], *, kueue: bool = False
    ) -> Caches:
        mine = CACHE_NAME_LABEL  # only objects we made: smaller caches, fewer events
        named = {NAME_INDEX: by_devserver_name}
        woken = {FLAVOR_INDEX: by_flavor, MODE_INDEX: by_mode, **NAMESPACED}  # `woken_in`
        return cls(
            informers.informer(DEVSERVERS, indexers=woken),
            informers.informer(FLAVORS),
            informers.informer(workload, label_selector=mine),
            informers.informer(SERVICES, label_selector=mine),
            informers.informer(PERSISTENT_VOLUME_CLAIMS, label_selector=mine, indexers=named),
            informers.informer(PODS, label_selector=mine, indexers=named),
            AgentInformers.shared(informers),
            informers.informer(DEVUSERS),
            informers.informer(RESOURCE_QUOTAS, label_selector=CACHE_USER_SELECTOR),
            informers.informer(NODES),
            QueueCaches.shared(informers) if kueue else None,
        )

    def team_of(self, namespace: str) -> str:
        """The team of the user whose namespace this is ("" for none, or no such user)."""
        name = namespace_user(namespace)
        user = self.users.store.get(ObjectKey("", name)) if name else None
        return (user.spec.team or "") if user is not None else ""

    def made_for(self, informer: Informer[KubeObject], key: ObjectKey) -> list[KubeObject]:
        """The objects of `informer` labelled for server `key` (its pods, its home claims)."""
        return informer.store.by_index(NAME_INDEX, f"{key.namespace}/{key.name}")
