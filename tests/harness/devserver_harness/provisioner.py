"""A test-only dynamic volume provisioner standing in for the AWS EBS CSI driver.

It honours what matters to the operator above it: `WaitForFirstConsumer` binding (a volume is
created only once the scheduler picked a node, in that node's zone, and the PV carries that zone
as node affinity, as EBS volumes do), the claim's size and access modes, and the class's reclaim
policy (Released volumes of a `Delete` class are deleted). It lives in the harness, never in the
operator; no data is stored anywhere.

Run as `python -m devserver_harness.provisioner --kubeconfig PATH`. Claims and volumes are each
listed once, then watched from the list's resourceVersion; the watch resumes from the last event
or bookmark it saw, and any failure (a 410, a refused create) lists again, so no claim is missed.
Objects stay JSON dicts: at 10,000 claims, decoding each into the client's models, and a watch
restarted without a resourceVersion every minute (which replays every object), cost this
stand-in more CPU than the API server spent on the operator's whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.api_client import ApiClient

PROVISIONER_NAME = "ebs.csi.devserver.test"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
ZONE_LABEL = "topology.kubernetes.io/zone"
CLASSES_REFRESH_S = 5.0  # at most this often, a claim of a class not seen yet reads them again
_log = logging.getLogger("provisioner")

Json = dict[str, Any]


def desired_volume(claim: Json, storage_class: Json, zone: str | None) -> Json:
    meta, spec = claim["metadata"], claim["spec"]
    name = f"pvc-{meta['uid']}"
    volume: Json = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            **({"labels": {ZONE_LABEL: zone}} if zone else {}),
        },
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes"),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": f"/var/lib/devserver-test/{name}"},
        },
    }
    if zone:
        term = {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}
        volume["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [term]}}
    return volume


class Provisioner:
    def __init__(self, core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
        self.core, self.storage = core, storage
        self.classes: dict[str, Json] = {}
        self._classes_read = float("-inf")
        self._provisioned: set[str] = set()  # claim UIDs we made a volume for: no repeated 409
        self._zones: dict[str, str | None] = {}  # node name -> zone; nodes do not change zone

    async def storage_class(self, name: str) -> Json | None:
        if name not in self.classes and time.monotonic() - self._classes_read > CLASSES_REFRESH_S:
            self._classes_read = time.monotonic()
            items, _ = await listed(self.storage.list_storage_class)
            self.classes = {c["metadata"]["name"]: c for c in items}
        found = self.classes.get(name)
        return found if found and found.get("provisioner") == PROVISIONER_NAME else None

    async def provision(self, claim: Json) -> None:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        if (
            spec.get("volumeName")
            or meta.get("deletionTimestamp")
            or meta["uid"] in self._provisioned
        ):
            return
        storage_class = await self.storage_class(spec.get("storageClassName") or "")
        if storage_class is None:
            return
        zone = None
        if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
            node_name = (meta.get("annotations") or {}).get(SELECTED_NODE)
            if not node_name:
                return  # not yet: the scheduler picks the node (and so the zone) first
            if node_name not in self._zones:
                node = await self.core.read_node(node_name)
                self._zones[node_name] = (node.metadata.labels or {}).get(ZONE_LABEL)
            zone = self._zones[node_name]
        try:
            volume = desired_volume(claim, storage_class, zone)
            await self.core.create_persistent_volume(volume)  # type: ignore[arg-type]  # JSON
        except client.ApiException as error:
            if error.status != 409:  # already provisioned
                raise
        self._provisioned.add(meta["uid"])
        _log.info("provisioned %s/%s", meta["namespace"], meta["name"])

    async def reclaim(self, volume: Json) -> None:
        meta, spec = volume["metadata"], volume.get("spec") or {}
        if (
            (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")
            == PROVISIONER_NAME
            and (volume.get("status") or {}).get("phase") == "Released"
            and spec.get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            try:
                await self.core.delete_persistent_volume(meta["name"])
            except client.ApiException as error:
                if error.status != 404:
                    raise
                return
            _log.info("deleted released volume %s", meta["name"])


async def listed(lister: Callable[..., Awaitable[Any]]) -> tuple[list[Json], str]:
    """Every object, as dicts, and the list's resourceVersion."""
    response = await lister(_preload_content=False)
    body = json.loads(await response.read())
    return body.get("items") or [], body["metadata"]["resourceVersion"]


async def follow(
    lister: Callable[..., Awaitable[Any]], handle: Callable[[Json], Awaitable[None]]
) -> None:
    """List, handle each object, then handle each change from the list's resourceVersion on.
    A partial (no docstring) keeps the watch's objects as dicts; without `timeout_seconds` the
    watch re-watches from the last resourceVersion it saw when the server ends it."""
    while True:
        try:
            items, version = await listed(lister)
            for item in items:
                await handle(item)
            stream = watch.Watch().stream(
                functools.partial(lister), resource_version=version, allow_watch_bookmarks=True
            )
            async for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    await handle(event["object"])
        except Exception as error:  # noqa: BLE001 - a test helper keeps going: lists again
            _log.warning("provisioner: %s; listing again", error)
            await asyncio.sleep(1)


async def run(kubeconfig: str) -> None:
    await config.load_kube_config(config_file=kubeconfig)
    async with ApiClient() as api:
        core = client.CoreV1Api(api)
        provisioner = Provisioner(core, client.StorageV1Api(api))
        await asyncio.gather(
            follow(core.list_persistent_volume_claim_for_all_namespaces, provisioner.provision),
            follow(core.list_persistent_volume, provisioner.reclaim),
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    asyncio.run(run(args.kubeconfig))


if __name__ == "__main__":
    main()
