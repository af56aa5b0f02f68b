"""The dev pod, the same in every mode: a Deployment's or a StatefulSet's template (pure).

The container runs `sleep infinity`: a dev server is a box users exec and SSH into, and we
cannot inspect an image's entrypoint from here (no registry access in the operator), so we
always give it a main process that never exits. Resources, node selector and tolerations come
from the flavor; /dev/shm is memory-backed; the home is mounted at /home/dev and the optional
shared volume at /shared; the activity agent starts first (`agent.agent_pod_parts`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject
from devserver.api.names import FLAVOR_ANNOTATION, flavor_of, with_legacy
from devserver.api.quantity import format_binary, parse_quantity
from devserver.reconcilers.devserver.activity_agent import agent_env, agent_name, agent_pod_parts
from devserver.reconcilers.naming import labels

HOME_MOUNT = "/home/dev"
SHARED_MOUNT = "/shared"
SSH_PORT = 22  # the Service's: what ssh-config and the bastion connect to
# sshd in the pod runs as the image's user, so it listens on an unprivileged port; the Service
# maps 22 to it by the port's name
POD_SSH_PORT = 2222
SSH_RUN = "/run/devserver-ssh"  # sshd's config and the keys the agent keeps (memory only)


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
        all_ports.append({"name": "ssh", "containerPort": POD_SSH_PORT, "protocol": "TCP"})
        container["env"] += [
            {"name": "DEVSERVER_SSH_PORT", "value": str(POD_SSH_PORT)},
            {"name": "DEVSERVER_SSH_KEYS_FILE", "value": f"{SSH_RUN}/authorized_keys"},
        ]
        mounts.append({"name": "devserver-ssh", "mountPath": SSH_RUN})
        volumes.append(
            # 64 keys of at most 16 KiB each, twice while the file is replaced
            {"name": "devserver-ssh", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}}
        )
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
            "annotations": with_legacy({FLAVOR_ANNOTATION: flavor.metadata.name}),
        },
        "spec": pod_spec,
    }


def template_flavor(workload: KubeObject | None) -> str | None:
    """The flavor a workload's pod template was rendered from."""
    if workload is None:
        return None
    template = (workload.extra.get("spec") or {}).get("template") or {}
    flavor = flavor_of((template.get("metadata") or {}).get("annotations") or {})
    return str(flavor) if flavor else None
