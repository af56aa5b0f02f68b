"""What a standalone DevServer is made of: pure builders of the desired objects.

- PVC `<name>-home`: the user's home, ReadWriteOnce on the default class, mounted at /home/dev.
  It is never deleted or recreated by an update; it is owned by the DevServer (and so garbage
  collected with it) only when the user turned retention off.
- Deployment `<name>`: one replica, strategy Recreate (a ReadWriteOnce volume cannot be mounted
  by the old and the new pod at once, so a rolling update would hang), resources, node selector
  and tolerations from the flavor, a memory-backed /dev/shm, the optional shared volume at
  /shared. The container runs `sleep infinity`: a dev server is a box users exec and SSH into,
  and we cannot inspect an image's entrypoint from here (no registry access in the operator), so
  we always give it a main process that never exits.
- Service `<name>`: port 22 when SSH is enabled.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.quantity import format_binary, parse_quantity

NAME_LABEL = "devserver.io/name"
USER_LABEL = "devserver.io/user"
FLAVOR_ANNOTATION = "devserver.io/flavor"
MANAGED_BY = {"app.kubernetes.io/managed-by": "devserver-operator"}
HOME_MOUNT = "/home/dev"
SHARED_MOUNT = "/shared"
SSH_PORT = 22


def home_claim_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-home"


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


def _meta(ds: DevServer, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ds.metadata.namespace, "labels": labels(ds)}
    if owned:
        meta["ownerReferences"] = [owner_reference(ds)]
    return meta


def desired_home_claim(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(ds, home_claim_name(ds), owned=not ds.spec.retain_home_on_delete),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": ds.spec.persistent_home_size}},
        },
    }


def shm_size(flavor: DevServerFlavor) -> str:
    """The flavor's shmSize, else half the memory limit (PyTorch DataLoaders live in /dev/shm)."""
    if flavor.spec.shm_size:
        return flavor.spec.shm_size
    memory = flavor.spec.resources.limits.get("memory") or flavor.spec.resources.requests.get(
        "memory"
    )
    if memory is None:
        return "1Gi"
    half_in_mib = int(parse_quantity(memory) / 2 / Decimal(2**20))
    return format_binary(Decimal(half_in_mib * 2**20))


def desired_deployment(
    ds: DevServer, flavor: DevServerFlavor, *, replicas: int = 1
) -> dict[str, Any]:
    spec = flavor.spec
    mounts: list[dict[str, Any]] = [
        {"name": "home", "mountPath": HOME_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - the pod's shm, not a temp file
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "home", "persistentVolumeClaim": {"claimName": home_claim_name(ds)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(flavor)}},
    ]
    if ds.spec.shared_volume_claim_name:
        mounts.append({"name": "shared", "mountPath": SHARED_MOUNT})
        volumes.append(
            {
                "name": "shared",
                "persistentVolumeClaim": {"claimName": ds.spec.shared_volume_claim_name},
            }
        )
    container: dict[str, Any] = {
        "name": "dev",
        "image": ds.spec.image,
        "command": ["sleep", "infinity"],
        "env": [
            {"name": "HOME", "value": HOME_MOUNT},
            {"name": "DEVSERVER_NAME", "value": ds.metadata.name},
        ],
        "resources": {
            key: dict(value)
            for key, value in (
                ("requests", spec.resources.requests),
                ("limits", spec.resources.limits),
            )
            if value
        },
        "volumeMounts": mounts,
    }
    if ds.spec.enable_ssh:
        container["ports"] = [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ds, ds.metadata.name),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(ds)},
            "template": {
                "metadata": {
                    "labels": labels(ds),
                    "annotations": {FLAVOR_ANNOTATION: flavor.metadata.name},
                },
                "spec": pod_spec,
            },
        },
    }


def desired_service(ds: DevServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ds, ds.metadata.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ds),
            "ports": [{"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT, "protocol": "TCP"}],
        },
    }
