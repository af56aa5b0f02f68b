"""The distributed mode: W pods on which `torchrun` just works — its children, status, Events.

For DevServer X in namespace N with `worldSize` W and `nprocsPerNode` P
(see `shared/design/distributed.md`; sources: Kubeflow's PyTorchJob, torchrun, LeaderWorkerSet):

- The activity agent's objects, one Lease per rank (`activity_agent`).
- Headless Service `X` (`clusterIP: None`, `publishNotReadyAddresses`: ranks resolve each other
  before they are Ready, no DNS race), port 29500 (`dist`) and SSH when enabled.
- Each rank's home claim's volume set to Retain when homes are kept (`home_volumes`).
- StatefulSet `X`: `serviceName: X`, W replicas (0 while stopped), `podManagementPolicy:
  Parallel` (ordered start is slow and deadlocks gang admission), a home volume per rank from
  the volumeClaimTemplate `home` (PVC `home-X-<i>`, kept when scaled down, and on delete unless
  retainHomeOnDelete is false), the dev pod (`pod`) with the environment torchrun reads (static
  rendezvous with a fixed node rank): MASTER_ADDR `X-0.X.N.svc.cluster.local`, MASTER_PORT 29500
  (and their PET_ forms), WORLD_SIZE = W*P, PET_NNODES, PET_NPROC_PER_NODE, NODE_RANK and
  PET_NODE_RANK from the pod-index label through the downward API (RANK too when P = 1), NCCL
  defaults under the spec's `ncclSettings`, EFA variables only when the flavor asks for EFA
  devices; helper scripts at /opt/devserver ($DEVSERVER_BIN; PATH is the image's own).

Changing `worldSize` scales the StatefulSet: new ranks get new homes, removed ranks' homes are
kept (scaling back up finds them), and every pod restarts with the new WORLD_SIZE. Switching
between standalone and distributed is refused by the API server (a CEL rule): the two keep their
homes in different volumes.

Status, per rank: pod, node, ready, restarts, its home claim and why it is not ready. Overall:
Running only when every rank is ready and runs the current template (a job needs all of them),
with `readyRanks` counting; Pending with the first problem in rank order otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from devserver.api.devserver import DevServer, Mode, Phase
from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.names import KUEUE_QUEUE_LABEL, POD_SHAPE
from devserver.api.resources import KUEUE_WORKLOADS, SERVICES, STATEFULSETS
from devserver.client import ApiError
from devserver.client.events import EventType
from devserver.controller import TerminalError
from devserver.reconcilers.children import NotYet
from devserver.reconcilers.devserver.activity_agent import ensure_agent_objects
from devserver.reconcilers.devserver.home_volumes import retain_homes
from devserver.reconcilers.devserver.pod import SSH_PORT, pod_template, template_flavor
from devserver.reconcilers.devserver.reconciler import Child, ServerMode
from devserver.reconcilers.devserver.running_template import (
    keep_running_template,
    select_as_workload,
)
from devserver.reconcilers.devserver.status import (
    Observed,
    Verdict,
    condition,
    mode_status,
    on_nodes,
    pod_condition,
    pod_refused,
    stopped_reason,
    waiting_reason,
)
from devserver.reconcilers.flavor import gpu_count
from devserver.reconcilers.kueue import (
    GANG_INDEX,
    Step,
    left_behind,
    managed_step,
    queue_label,
    scale_down_pending,
    shape_digest,
)
from devserver.reconcilers.naming import (
    HOME_TEMPLATE,
    home_claim_name,
    labels,
    object_meta,
    selector,
)

DIST_PORT = 29500
KUEUE_PATIENCE = 30.0  # seconds Kueue may refuse a start for a scale-down it has not finished
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
NCCL_DEFAULTS = {"NCCL_SOCKET_IFNAME": "^lo,docker", "NCCL_DEBUG": "WARN"}
SCRIPTS_DIR = "/opt/devserver"


# ---------------------------------------------------------------------- its objects (pure)


def world(ds: DevServer) -> tuple[int, int]:
    """(W pods, P processes per pod)."""
    dist = ds.spec.distributed
    return (dist.world_size, dist.nprocs_per_node) if dist else (1, 1)


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


def desired_statefulset(
    ds: DevServer,
    flavor: DevServerFlavor,
    *,
    replicas: int | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    w, _ = world(ds)
    template = pod_template(
        ds,
        flavor,
        home_volume=None,  # the volumeClaimTemplate `home`: one volume per rank
        env=distributed_env(ds, flavor),
        ports=[{"name": "dist", "containerPort": DIST_PORT, "protocol": "TCP"}],
    )
    metadata = object_meta(ds, ds.metadata.name)
    if queue:  # Kueue admits all W ranks as one Workload: a gang
        metadata["labels"] = {**metadata["labels"], KUEUE_QUEUE_LABEL: queue}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
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
        ports.append({"name": "ssh", "port": SSH_PORT, "targetPort": "ssh", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(ds, ds.metadata.name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(ds),
            "ports": ports,
        },
    }


# ---------------------------------------------------------------------- its status (pure)


def _rank_of(pod: KubeObject) -> int | None:
    index = pod.metadata.labels.get(POD_INDEX_LABEL)
    if index is None:  # before Kubernetes 1.28: the name's suffix
        index = pod.metadata.name.rsplit("-", 1)[-1]
    return int(index) if index.isdigit() else None


def rank_entries(
    ds: DevServer, pods: list[KubeObject], w: int | None = None
) -> list[dict[str, Any]]:
    """Each of the `w` ranks (the spec's world size unless given)."""
    w = world(ds)[0] if w is None else w
    by_rank = {
        rank: pod
        for pod in pods
        if not pod.metadata.deletion_timestamp and (rank := _rank_of(pod)) is not None
    }
    entries = []
    for rank in range(w):
        pod = by_rank.get(rank)
        entry: dict[str, Any] = {
            "rank": rank,
            "pod": f"{ds.metadata.name}-{rank}",
            "homeClaim": home_claim_name(ds, rank),
            "ready": False,
            "restarts": 0,
        }
        if pod is None:
            entry["reason"] = "NoPod"
        else:
            statuses = (pod.extra.get("status") or {}).get("containerStatuses") or []
            entry["restarts"] = sum(int(s.get("restartCount", 0)) for s in statuses)
            node = (pod.extra.get("spec") or {}).get("nodeName")
            if node:
                entry["node"] = node
            ready = (pod_condition(pod, "Ready") or {}).get("status") == "True"
            entry["ready"] = ready
            if not ready:
                scheduled = pod_condition(pod, "PodScheduled") or {}
                image = waiting_reason(pod)
                if scheduled.get("reason") == "Unschedulable":
                    entry["reason"] = "Unschedulable"
                elif image is not None:
                    entry["reason"] = image[0]
                else:
                    entry["reason"] = "Starting"
        entries.append(entry)
    return entries


def rolled_out(statefulset: KubeObject | None, w: int) -> bool:
    """Every rank runs the current template (the StatefulSet controller says so)."""
    if statefulset is None:
        return False
    status = statefulset.extra.get("status") or {}
    return (
        status.get("observedGeneration") == statefulset.metadata.generation
        and int(status.get("updatedReplicas", 0)) >= w
        and status.get("currentRevision") == status.get("updateRevision")
    )


def distributed_status(ds: DevServer, seen: Observed, parked: str | None = None) -> dict[str, Any]:
    statefulset = seen.workload
    w, p = world(ds)
    if parked is not None and statefulset is not None:  # the gang as it runs, not as asked
        w = int((statefulset.extra.get("spec") or {}).get("replicas") or w)
    ranks = [] if ds.spec.stopped else rank_entries(ds, seen.pods, w)
    ready_count = sum(1 for r in ranks if r["ready"])
    phase, ready, reason = Phase.PENDING, False, "Creating"
    message = f"creating {w} ranks"
    if ds.spec.stopped:
        phase = Phase.STOPPED
        reason, message = stopped_reason(ds, "every rank's home volume is kept")
        message += f" — `devctl start {ds.metadata.name}`"
    elif statefulset is None and seen.flavor_problem:
        reason, message = "FlavorUnavailable", seen.flavor_problem
    elif statefulset is None and seen.webhook_down is not None:
        reason, message = pod_refused(seen.webhook_down)
    elif seen.queued is not None and ready_count < w:
        # Kueue admits the W ranks together or not at all: none holds a GPU meanwhile
        phase, reason, message = Phase.QUEUED, "Queued", f"all {w} ranks: {seen.queued}"
    elif ready_count == w and not rolled_out(statefulset, w):
        # every pod ready, but some still run the old shape (another WORLD_SIZE): not yet
        live = (statefulset.extra.get("status") or {}) if statefulset else {}
        updated = int(live.get("updatedReplicas", 0))
        reason = "Updating"
        message = f"{updated}/{w} ranks restarted with the new settings; wait before torchrun"
    elif ready_count == w:
        phase, ready, reason = Phase.RUNNING, True, "AllRanksReady"
        message = f"all {w} ranks ready ({w * p} processes with torchrun)"
    elif ranks:
        first = next(r for r in ranks if not r["ready"])
        reason = str(first.get("reason") or "Starting")
        message = f"{ready_count}/{w} ranks ready; rank {first['rank']}: {reason}"
        if reason == "Unschedulable":
            pod = next((q for q in seen.pods if _rank_of(q) == first["rank"]), None)
            detail = ((pod_condition(pod, "PodScheduled") or {}) if pod else {}).get("message")
            if detail:
                message += f" ({detail})"
    verdict = Verdict(phase, ready, reason, message)
    placed = on_nodes(seen.pods)
    # the flavor's price is per pod: the period's price is that times the pods on nodes (a
    # change of that count is a transition that closes the period)
    price = seen.price_per_hour * placed if seen.price_per_hour is not None else None
    gpus = seen.gpus_per_pod * placed
    after = (
        []
        if parked is None
        else [condition("Resized", False, "Parked", parked, ds.metadata.generation)]
    )
    status = mode_status(
        ds, seen, verdict, "the ranks", home_claim_name(ds, 0), price, gpus, after=after
    )
    name, ns = ds.metadata.name, ds.metadata.namespace
    status |= {
        "ranks": ranks,
        "readyRanks": ready_count,
        "serviceName": name,
        "podName": f"{name}-0",
    }
    if ds.spec.enable_ssh:
        status["sshEndpoint"] = f"{name}-0.{name}.{ns}.svc.cluster.local:{SSH_PORT}"
    status["masterAddr"] = f"{name}-0.{name}.{ns}.svc.cluster.local:{DIST_PORT}"
    flavor = template_flavor(statefulset)
    if flavor:
        status["appliedFlavor"] = flavor
    return status


# ---------------------------------------------------------------------- the mode


class Distributed(ServerMode, name="distributed", workers=2, workload=STATEFULSETS):
    woken_by = Mode.DISTRIBUTED  # a standalone server's changes are the standalone mode's

    def owns(self, ds: DevServer) -> bool:
        return ds.spec.mode is Mode.DISTRIBUTED and ds.spec.distributed is not None

    def children(self, ds: DevServer, flavor: DevServerFlavor | None) -> list[Child]:
        caches, key = self.caches, ds.key
        children: list[Child] = [
            ("agent objects", lambda: ensure_agent_objects(self.client, caches.agent, ds)),
            ("Service", lambda: self._service(ds)),
            (
                "PersistentVolume",
                lambda: retain_homes(self.client, ds, caches.made_for(caches.claims, key)),
            ),
        ]
        if caches.queue is not None:
            children.append(("Kueue Workload", lambda: self._release_left_behind(key, ds)))
        if flavor is not None:
            children.append(("StatefulSet", lambda: self._statefulset(ds, flavor)))
        return children

    def status(self, ds: DevServer, seen: Observed) -> dict[str, Any]:
        return distributed_status(ds, seen, parked=self.resize_blocked(ds))

    def resize_blocked(self, ds: DevServer) -> str | None:
        """Why a running gang's move to more ranks or another flavor must wait (`resize`):
        every rank would stop first, and the new gang might then never run."""
        live = self.caches.workloads.store.get(ds.key)
        spec = (live.extra.get("spec") or {}) if live is not None else {}
        running = live is not None and (live.extra.get("status") or {}).get("readyReplicas")
        if ds.spec.stopped or not running or live is None:
            return None
        applied, before = template_flavor(live), int(spec.get("replicas") or 0)
        after, _ = world(ds)
        if applied is None or (applied == ds.spec.flavor and after <= before):
            return None  # nothing more is asked for
        flavors = self.caches.flavors.store
        new = flavors.get(ObjectKey("", ds.spec.flavor))
        if new is None:
            return None  # FlavorValid says what is wrong; the ranks are left as they are
        old = flavors.get(ObjectKey("", applied))
        return self.resize_check(ds, old, new, (before, after))

    def gpus(
        self, ds: DevServer, flavor: DevServerFlavor | None, status: dict[str, Any], placed: int
    ) -> tuple[str, int]:
        """The requested flavor's, for every pod on a node."""
        return (flavor.metadata.name if flavor else ds.spec.flavor), gpu_count(flavor) * placed

    async def _service(self, ds: DevServer) -> None:
        live = self.caches.services.store.get(ds.key)
        intent = select_as_workload(desired_headless_service(ds), self.workload_selector(ds))
        await self.ensure(SERVICES, intent, live)

    async def _statefulset(self, ds: DevServer, flavor: DevServerFlavor) -> None:
        if self.resize_blocked(ds) is not None:
            return  # parked: the ranks run on as they are, the status says why
        live = self.caches.workloads.store.get(ds.key)
        queue = queue_label(live, self.kueue)
        replicas = 0 if ds.spec.stopped else None
        intent = keep_running_template(
            desired_statefulset(ds, flavor, replicas=replicas, queue=queue), live, ds
        )
        step = Step.APPLY if live is None else managed_step(live, intent)
        if step is Step.KEEP_TEMPLATE and live is not None:  # stopped: the new shape at start
            intent["spec"]["template"] = (live.extra.get("spec") or {}).get("template")
        # the shape sent, so that what the API server normalises never reads as a new one
        intent["metadata"]["annotations"][POD_SHAPE] = shape_digest(intent["spec"]["template"])
        if step is Step.SCALE_DOWN:
            await self.scale_down(live)
            await self.event(
                ds,
                EventType.NORMAL,
                "Restarting",
                "every rank restarts to take the change: Kueue admits the ranks as one gang, "
                "so they stop together and queue again; every home volume is kept",
            )
            return
        if step is Step.RECREATE and self.caches.made_for(self.caches.pods, ds.key):
            step = Step.WAIT  # a pod still going would be adopted, and named as a new rank
        if step is Step.WAIT:
            raise NotYet("the ranks are still stopping")
        if step is Step.RECREATE and live is not None:
            await self._make_anew(live)
        try:
            await self.ensure_workload(ds, intent)
        except TerminalError as error:
            if not scale_down_pending(str(error)) or live is None:
                raise
            first = self.waiting_since.setdefault(ds.key, time.monotonic())
            if time.monotonic() - first < KUEUE_PATIENCE or live.extra.get("status", {}).get(
                "replicas"
            ):
                raise NotYet(str(error)) from None
            # Kueue has said for a while that the last scale-down's Workload is still being
            # deleted though no rank is left (seen with Kueue 0.17: its cache kept a deleted
            # Workload): a StatefulSet made anew has a Workload of another name
            self.waiting_since.pop(ds.key, None)
            await self._make_anew(live)
        self.waiting_since.pop(ds.key, None)

    async def gone(self, key: ObjectKey) -> None:
        """A deleted server's gang scaled to zero may leave its Workload behind as well."""
        await self._release_left_behind(key, None)

    async def _release_left_behind(self, key: ObjectKey, ds: DevServer | None) -> None:
        """Delete the Workloads of this server's StatefulSet that a Kueue 0.17.0 scale-down left
        behind (`left_behind`): each holds the gang's GPUs for no pod at all, and the gang may
        then queue for ever behind itself. Guarded by uid and resourceVersion: one that
        changed since it was read (an owner given back) is left alone."""
        queue = self.caches.queue
        if queue is None:
            return
        gang = queue.workloads.store.by_index(GANG_INDEX, f"{key.namespace}/{key.name}")
        if not gang:
            return
        live = self.caches.workloads.store.get(key)
        for workload in left_behind(gang, live, self.caches.made_for(self.caches.pods, key)):
            meta = workload.metadata
            try:
                await self.client.delete(
                    KUEUE_WORKLOADS, meta.name, meta.namespace,
                    uid=meta.uid, resource_version=meta.resource_version,
                )  # fmt: skip
            except ApiError as error:
                if error.not_found:
                    continue
                raise  # changed since: read again, and decided again
            if ds is not None:
                await self.event(
                    ds,
                    EventType.NORMAL,
                    "QuotaReleased",
                    f"deleted Kueue's Workload {meta.name}: an earlier run's, with no pod and "
                    "no owner left, it held the gang's GPU quota for nothing",
                )

    async def _make_anew(self, live: KubeObject) -> None:
        """Delete a StatefulSet with no pod left so that it is made anew: orphaned, not deleted,
        its home claims stay, and the new one adopts them by name. Guarded by its uid and
        resourceVersion: a StatefulSet that changed since (scaled up) is left alone."""
        meta = live.metadata
        try:
            await self.client.delete(
                STATEFULSETS, meta.name, meta.namespace,
                propagation="Orphan", uid=meta.uid, resource_version=meta.resource_version,
            )  # fmt: skip
        except ApiError as error:
            if not error.not_found:  # gone already: the cache has not seen it go yet
                raise
        raise NotYet("the StatefulSet is being made anew")

    async def announce(self, ds: DevServer, status: dict[str, Any]) -> None:
        before = ds.status
        was_ready = before is not None and before.phase is not None and before.phase == "Running"
        w, p = world(ds)
        if status["phase"] == "Running" and not was_ready:
            message = (
                f"all {w} ranks are ready; run `$DEVSERVER_BIN/devserver-torchrun train.py` on "
                f"each ({w * p} processes)"
            )
            await self.event(ds, EventType.NORMAL, "Ready", message)
        await self.announce_stop(ds, status, "stopped; every rank's home volume is kept")
