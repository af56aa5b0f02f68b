"""Names, labels and owner references shared by every object made for a DevServer (pure)."""

from __future__ import annotations

import re
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject

NAME_LABEL = "devserver.io/name"
USER_LABEL = "devserver.io/user"
MANAGED_BY = {"app.kubernetes.io/managed-by": "devserver-operator"}


def user_label(owner: str) -> str:
    """A label-safe form of the owner: the local part of an e-mail, lower-case."""
    local = owner.split("@", 1)[0].lower()
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", local).strip("-._")
    return cleaned[:63].rstrip("-._") or "unknown"


def selector(ds: DevServer) -> dict[str, str]:
    return {NAME_LABEL: ds.metadata.name}


def labels(ds: DevServer) -> dict[str, str]:
    return {**selector(ds), USER_LABEL: user_label(ds.spec.owner), **MANAGED_BY}


def owner_reference(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "name": ds.metadata.name,
        "uid": ds.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


NAME_INDEX = "devserver-name"


def by_devserver_name(obj: KubeObject) -> tuple[str, ...]:
    """Index of the objects made for a DevServer, by `namespace/name`."""
    name = obj.metadata.labels.get(NAME_LABEL)
    return (f"{obj.metadata.namespace}/{name}",) if name else ()
