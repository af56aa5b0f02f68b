"""A tiny example controller that exercises the core: mirror a labelled ConfigMap into a child.

For every ConfigMap labelled `demo=parent`, keep a ConfigMap `<name>-child` with the same data,
owned by the parent (controller reference), written by server-side apply.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient
from devserver.controller import Controller, Result
from devserver.informers import Informer, InformerFactory

FIELD_MANAGER = "devserver-demo"


def desired_child(parent: KubeObject) -> dict[str, Any]:
    meta = parent.metadata
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{meta.name}-child",
            "namespace": meta.namespace,
            "labels": {"demo": "child"},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": dict(parent.extra.get("data") or {}),
    }


@dataclass
class MirrorReconciler:
    client: KubeClient
    parents: Informer[KubeObject]
    delay: float = 0.0
    calls: Counter[ObjectKey] = field(default_factory=Counter)
    in_flight: Counter[ObjectKey] = field(default_factory=Counter)
    max_overlap: int = 0
    writes: int = 0

    async def reconcile(self, key: ObjectKey) -> Result | None:
        self.calls[key] += 1
        self.in_flight[key] += 1
        self.max_overlap = max(self.max_overlap, self.in_flight[key])
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            parent = self.parents.store.get(key)  # read from the cache, never the API
            if parent is None or parent.metadata.deletion_timestamp:
                return None  # garbage collection removes the child
            await self.client.apply(CONFIGMAPS, desired_child(parent), field_manager=FIELD_MANAGER)
            self.writes += 1
            return None
        finally:
            self.in_flight[key] -= 1


def mirror_controller(
    factory: InformerFactory,
    client: KubeClient,
    namespace: str,
    *,
    workers: int = 2,
    delay: float = 0.0,
    name: str = "mirror",
) -> tuple[Controller, MirrorReconciler]:
    parents = factory.informer(CONFIGMAPS, namespace=namespace, label_selector="demo=parent")
    children = factory.informer(CONFIGMAPS, namespace=namespace, label_selector="demo=child")
    reconciler = MirrorReconciler(client, parents, delay=delay)
    controller = Controller(name, reconciler, workers=workers)
    controller.watch(parents)
    controller.watch_owned(children, CONFIGMAPS)
    return controller, reconciler
