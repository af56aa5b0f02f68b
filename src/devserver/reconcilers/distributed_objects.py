"""What a distributed DevServer is made of: pure builders of the desired objects.

For DevServer X in namespace N with `worldSize` W and `nprocsPerNode` P
(see `shared/design/distributed.md`; sources: Kubeflow's PyTorchJob, torchrun, LeaderWorkerSet):

- Headless Service `X` (`clusterIP: None`, `publishNotReadyAddresses`: ranks resolve each other
  before they are Ready, no DNS race), port 29500 (`dist`) and SSH when enabled.
- StatefulSet `X`: `serviceName: X`, W replicas, `podManagementPolicy: Parallel` (ordered start is
  slow and deadlocks gang admission), a home volume per rank from the volumeClaimTemplate `home`
  (PVC `home-X-<i>`, kept when scaled down, and on delete unless retainHomeOnDelete is false),
  the shared volume in every pod, memory-backed /dev/shm, resources and placement from the flavor.
- The environment torchrun reads (static rendezvous with a fixed node rank), per pod: MASTER_ADDR
  `X-0.X.N.svc.cluster.local`, MASTER_PORT 29500 (and their PET_ forms), WORLD_SIZE = W*P,
  PET_NNODES, PET_NPROC_PER_NODE, NODE_RANK/PET_NODE_RANK from the pod-index label through the
  downward API (RANK too when P = 1), NCCL defaults under the spec's `ncclSettings`, and EFA
  variables only when the flavor asks for EFA devices.
- Helper scripts in ConfigMap `X-scripts` (beside the activity agent), at /opt/devserver
  ($DEVSERVER_BIN; PATH is the image's own): `devserver-torchrun` (torchrun with this
  environment), `wait-for-master`, `devserver-allreduce` (a smoke test: all-reduce of ones,
  checks the sum and the ranks).
"""

from __future__ import annotations

from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor
from devserver.reconcilers.naming import labels, owner_reference, selector
from devserver.reconcilers.standalone import SSH_PORT, pod_template

DIST_PORT = 29500
HOME_TEMPLATE = "home"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
NCCL_DEFAULTS = {"NCCL_SOCKET_IFNAME": "^lo,docker", "NCCL_DEBUG": "WARN"}
SCRIPTS_DIR = "/opt/devserver"


def world(ds: DevServer) -> tuple[int, int]:
    """(W pods, P processes per pod)."""
    dist = ds.spec.distributed
    return (dist.world_size, dist.nprocs_per_node) if dist else (1, 1)


def rank_home_claim(ds: DevServer, rank: int) -> str:
    return f"{HOME_TEMPLATE}-{ds.metadata.name}-{rank}"


def master_addr(ds: DevServer) -> str:
    name, ns = ds.metadata.name, ds.metadata.namespace
    return f"{name}-0.{name}.{ns}.svc.cluster.local"


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def distributed_env(ds: DevServer, flavor: DevServerFlavor) -> list[dict[str, Any]]:
    w, p = world(ds)

    def rank() -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}

    env = [
        _value("MASTER_ADDR", master_addr(ds)),
        _value("PET_MASTER_ADDR", master_addr(ds)),
        _value("MASTER_PORT", str(DIST_PORT)),
        _value("PET_MASTER_PORT", str(DIST_PORT)),
        _value("WORLD_SIZE", str(w * p)),
        _value("PET_NNODES", str(w)),
        _value("PET_NPROC_PER_NODE", str(p)),
        {"name": "NODE_RANK", "valueFrom": rank()},
        {"name": "PET_NODE_RANK", "valueFrom": rank()},
    ]
    if p == 1:
        env.append({"name": "RANK", "valueFrom": rank()})
    backend = ds.spec.distributed.backend if ds.spec.distributed else "nccl"
    env.append(_value("DEVSERVER_BACKEND", backend))
    settings = ds.spec.distributed.nccl_settings if ds.spec.distributed else {}
    # NCCL_* only (the CRD refuses others): no name can collide with the variables set here
    nccl = {**NCCL_DEFAULTS, **{k: v for k, v in settings.items() if k.startswith("NCCL_")}}
    env += [_value(k, v) for k, v in sorted(nccl.items())]
    env += [_value("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"), _value("PYTHONUNBUFFERED", "1")]
    resources = flavor.spec.resources
    if EFA_RESOURCE in resources.limits or EFA_RESOURCE in resources.requests:
        env += [_value("FI_PROVIDER", "efa"), _value("FI_EFA_USE_DEVICE_RDMA", "1")]
    env.append(_value("DEVSERVER_BIN", SCRIPTS_DIR))  # not PATH: images set their own
    return env


def _owned_meta(ds: DevServer) -> dict[str, Any]:
    return {
        "name": ds.metadata.name,
        "namespace": ds.metadata.namespace,
        "labels": labels(ds),
        "ownerReferences": [owner_reference(ds)],
    }


def desired_statefulset(
    ds: DevServer, flavor: DevServerFlavor, *, replicas: int | None = None
) -> dict[str, Any]:
    w, _ = world(ds)
    template = pod_template(
        ds,
        flavor,
        home_volume=None,  # the volumeClaimTemplate `home`: one volume per rank
        env=distributed_env(ds, flavor),
        ports=[{"name": "dist", "containerPort": DIST_PORT, "protocol": "TCP"}],
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _owned_meta(ds),
        "spec": {
            "serviceName": ds.metadata.name,
            "replicas": w if replicas is None else replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(ds)},
            "template": template,
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": HOME_TEMPLATE, "labels": labels(ds)},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": ds.spec.persistent_home_size}},
                    },
                }
            ],
            # scaling down never removes a rank's home (scaling back up finds it again); deleting
            # the server removes the homes only when the user turned retention off
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if ds.spec.retain_home_on_delete else "Delete",
                "whenScaled": "Retain",
            },
        },
    }


def desired_headless_service(ds: DevServer) -> dict[str, Any]:
    ports = [{"name": "dist", "port": DIST_PORT, "targetPort": DIST_PORT, "protocol": "TCP"}]
    if ds.spec.enable_ssh:
        ports.append({"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _owned_meta(ds),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(ds),
            "ports": ports,
        },
    }
