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

from decimal import Decimal
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject
from devserver.api.quantity import QuantityError, format_binary, parse_quantity
from devserver.reconcilers.naming import (
    MANAGED_BY,
    NAME_LABEL,
    USER_LABEL,
    labels,
    owner_reference,
    selector,
    user_label,
)
from devserver.reconcilers.pod_agent import agent_env, agent_name, agent_pod_parts

__all__ = ["MANAGED_BY", "NAME_LABEL", "USER_LABEL", "labels", "owner_reference", "user_label"]

FLAVOR_ANNOTATION = "devserver.io/flavor"
HOME_MOUNT = "/home/dev"
SHARED_MOUNT = "/shared"
SSH_PORT = 22


def home_claim_name(ds: DevServer) -> str:
    return f"{ds.metadata.name}-home"


def _meta(ds: DevServer, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ds.metadata.namespace, "labels": labels(ds)}
    if owned:
        meta["ownerReferences"] = [owner_reference(ds)]
    return meta


def home_size(ds: DevServer, claim: KubeObject | None) -> str:
    """The size to ask for: the spec's, but never less than the live claim's request — a home
    never shrinks (the API server would refuse it), so a server re-created by name with a
    smaller size adopts its kept home as it is."""
    wanted = ds.spec.persistent_home_size
    if claim is None:
        return wanted
    spec = claim.extra.get("spec") or {}
    live = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    try:
        if live and parse_quantity(str(live)) > parse_quantity(wanted):
            return str(live)
    except QuantityError:
        return wanted
    return wanted


def desired_home_claim(ds: DevServer, claim: KubeObject | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(ds, home_claim_name(ds), owned=not ds.spec.retain_home_on_delete),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": home_size(ds, claim)}},
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


def pod_template(
    ds: DevServer,
    flavor: DevServerFlavor,
    *,
    home_volume: dict[str, Any] | None,
    env: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The dev pod, for a Deployment or a StatefulSet. `home_volume` is the pod's `home` volume,
    or None when a volumeClaimTemplate named `home` provides it."""
    spec = flavor.spec
    mounts: list[dict[str, Any]] = [
        {"name": "home", "mountPath": HOME_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - the pod's shm, not a temp file
    ]
    volumes: list[dict[str, Any]] = [
        *([home_volume] if home_volume is not None else []),
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
    entrypoint, agent_mounts, agent_volumes = agent_pod_parts(ds)
    mounts += agent_mounts
    volumes += agent_volumes
    container: dict[str, Any] = {
        "name": "dev",
        "image": ds.spec.image,
        "command": [*entrypoint, "sleep", "infinity"],
        "env": [
            {"name": "HOME", "value": HOME_MOUNT},
            {"name": "DEVSERVER_NAME", "value": ds.metadata.name},
            *(env or []),
            *agent_env(ds),
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
    all_ports = list(ports or [])
    if ds.spec.enable_ssh:
        all_ports.append({"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"})
    if all_ports:
        container["ports"] = all_ports
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "serviceAccountName": agent_name(ds),
        "automountServiceAccountToken": True,  # the agent's token: its Lease, nothing else
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
        "metadata": {
            "labels": labels(ds),
            "annotations": {FLAVOR_ANNOTATION: flavor.metadata.name},
        },
        "spec": pod_spec,
    }


def desired_deployment(
    ds: DevServer, flavor: DevServerFlavor, *, replicas: int = 1
) -> dict[str, Any]:
    home = {"name": "home", "persistentVolumeClaim": {"claimName": home_claim_name(ds)}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ds, ds.metadata.name),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(ds)},
            "template": pod_template(ds, flavor, home_volume=home),
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
