"""Objects the API server stored but our model cannot read still get a status.

The CRDs are generated from the same models the operator reads with, so a stored object that
the model refuses should not exist; if one does (an older CRD, a hand-edited schema, a gap
between the API server's checks and ours), the informer keeps it out of the cache and this
reconciler tells its owner in the status, in one sentence, instead of leaving it silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devserver.api.meta import KubeObject, ObjectKey, Unreadable, shared_key
from devserver.api.resources import DEVSERVERS, DEVUSERS, Resource
from devserver.client import ApiError, KubeClient, PatchType
from devserver.controller import Controller, Result
from devserver.informers import Informer, InformerFactory

REASON = "Unreadable"


def message(obj: Unreadable) -> str:
    return (
        f"the operator cannot read this {obj.kind or 'object'} ({obj.problem[:300]}); fix that "
        "field, or delete it and create it again"
    )


def reported(obj: Unreadable) -> bool:
    status = obj.extra.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return bool(
                condition.get("reason") == REASON and condition.get("message") == message(obj)
            )
    return False


@dataclass
class UnreadableReporter:
    client: KubeClient
    resource: Resource[Any]
    informer: Informer[Any]

    @property
    def loose(self) -> Resource[KubeObject]:
        """The resource read as plain objects: the answer is as unreadable as the object."""
        return dataclasses.replace(self.resource, model=KubeObject)

    async def reconcile(self, key: ObjectKey) -> Result | None:
        obj = self.informer.unreadable_now.get(key)
        if obj is None or reported(obj):
            return None
        stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": REASON,
            "message": message(obj),
            "lastTransitionTime": stamp,
        }
        patch = {"status": {"phase": "Failed", "conditions": [condition]}}
        if self.resource is DEVUSERS:
            patch = {"status": {"conditions": [condition]}}
        try:
            await self.client.patch(
                self.loose,
                key.name,
                patch,
                key.namespace,
                subresource="status",
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status != 404:
                raise
        return None


def setup(informers: InformerFactory, client: KubeClient) -> Controller:
    """One controller for every resource users write: DevServers and DevUsers."""
    reporters = [
        UnreadableReporter(client, resource, informers.informer(resource))
        for resource in (DEVSERVERS, DEVUSERS)
    ]

    @dataclass
    class Both:
        async def reconcile(self, key: ObjectKey) -> Result | None:
            reporter = reporters[0] if key.namespace else reporters[1]
            return await reporter.reconcile(key)

    controller = Controller("unreadable", Both())
    for reporter in reporters:
        reporter.informer.add_unreadable_handler(
            lambda obj: controller.queue.add(shared_key(obj.key))
        )
    return controller
