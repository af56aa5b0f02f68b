"""Names, labels and owner references shared by every object made for a DevServer, and the
names of its home claims (pure)."""

from __future__ import annotations

import re
from typing import Any

from devserver.api.devserver import DevServer, Mode
from devserver.api.meta import KubeObject
from devserver.api.names import CACHE_NAME_LABEL, MANAGED_BY, NAME_LABEL, USER_LABEL, with_legacy

# in each user's namespace: the user's SSH public keys, written by the user reconciler from the
# DevUser, read by the activity agent in each of their SSH-enabled dev pods (podagent.agent has
# the same name: it imports nothing of ours)
SSH_KEYS_CONFIGMAP = "devserver-ssh-keys"


def user_label(owner: str) -> str:
    """A label-safe form of the owner: the local part of an e-mail, lower-case."""
    local = owner.split("@", 1)[0].lower()
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", local).strip("-._")
    return cleaned[:63].rstrip("-._") or "unknown"


def selector(ds: DevServer) -> dict[str, str]:
    return {NAME_LABEL: ds.metadata.name}


def labels(ds: DevServer) -> dict[str, str]:
    return {**with_legacy({**selector(ds), USER_LABEL: user_label(ds.spec.owner)}), **MANAGED_BY}


def owner_reference(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "name": ds.metadata.name,
        "uid": ds.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# a distributed server's volumeClaimTemplate: the StatefulSet controller names rank i's claim
# `<template>-<statefulset>-<i>`
HOME_TEMPLATE = "home"


def home_claim_name(ds: DevServer, rank: int | None = None) -> str:
    """The claim of a home: a standalone server's `<name>-home`, or rank `rank`'s of a
    distributed one (`home-<name>-<rank>`)."""
    if rank is None:
        return f"{ds.metadata.name}-home"
    return f"{HOME_TEMPLATE}-{ds.metadata.name}-{rank}"


def home_claims_text(ds: DevServer) -> str:
    """Every home claim of `ds` in a few words: `box-home`, or `home-box-0..2` for three ranks."""
    dist = ds.spec.distributed
    if ds.spec.mode is Mode.DISTRIBUTED and dist is not None:
        return f"{home_claim_name(ds, 0)}..{dist.world_size - 1}"
    return home_claim_name(ds)


def object_meta(ds: DevServer, name: str, *, owned: bool = True) -> dict[str, Any]:
    """The metadata of an object made for `ds`: labelled, and owned by it unless told not to."""
    meta: dict[str, Any] = {"name": name, "namespace": ds.metadata.namespace, "labels": labels(ds)}
    if owned:
        meta["ownerReferences"] = [owner_reference(ds)]
    return meta


NAME_INDEX = "devserver-name"


def by_devserver_name(obj: KubeObject) -> tuple[str, ...]:
    """Index of the objects made for a DevServer, by `namespace/name`."""
    name = obj.metadata.labels.get(CACHE_NAME_LABEL)
    return (f"{obj.metadata.namespace}/{name}",) if name else ()
