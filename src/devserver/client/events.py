"""Kubernetes Events for what users should see in `kubectl describe` and `devctl describe`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from devserver.api.meta import KubeObject
from devserver.api.names import OPERATOR
from devserver.api.resources import EVENTS, Resource
from devserver.client.errors import ApiError
from devserver.client.kube import KubeClient

log = structlog.get_logger("devserver.events")
COMPONENT = OPERATOR


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


async def record_event(
    client: KubeClient,
    resource: Resource[Any],
    obj: KubeObject,
    kind: EventType,
    reason: str,
    message: str,
) -> None:
    """Best effort: an event that cannot be written is logged, never a reconcile failure."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = obj.metadata
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace or "default"},
        "involvedObject": {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": kind.value,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await client.create(EVENTS, body, meta.namespace or "default")
    except ApiError as error:
        log.warning("could not record an event", reason=reason, error=str(error))
