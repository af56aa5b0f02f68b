"""A test-only dynamic volume provisioner standing in for the AWS EBS CSI driver.

It honours what matters to the operator above it: `WaitForFirstConsumer` binding (a volume is
created only once the scheduler picked a node, in that node's zone, and the PV carries that zone
as node affinity, as EBS volumes do), the claim's size and access modes, and the class's reclaim
policy (Released volumes of a `Delete` class are deleted). It lives in the harness, never in the
operator; no data is stored anywhere.

Run as `python -m devserver_harness.provisioner --kubeconfig PATH`. Claims and volumes are each
listed once, then watched from the list's resourceVersion; the watch resumes from the last event
or bookmark it saw, and a failed list or watch (a 410) lists again. A claim that could not be
handled yet (its class not seen yet, a refused create) is tried again every few seconds, so no
claim is missed and one bad claim holds up no other.
Objects stay JSON dicts: at 10,000 claims, decoding each into the client's models, and a watch
restarted without a resourceVersion every minute (which replays every object), cost this
stand-in 1,622 CPU s, half of what the API server spent on the whole run (now 56 s).
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
CLASSES_MAX_AGE_S = 30.0  # a known class is read again this often (deleted, made anew)
RETRY_S = 2.0  # claims not handled yet are tried again this often
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
        self.waiting: dict[str, Json] = {}  # claim UID -> its latest state, not handled yet

    async def storage_class(self, name: str) -> Json | None:
        age = time.monotonic() - self._classes_read
        if age > CLASSES_MAX_AGE_S or (name not in self.classes and age > CLASSES_REFRESH_S):
            self._classes_read = time.monotonic()
            items, _ = await listed(self.storage.list_storage_class)
            self.classes = {c["metadata"]["name"]: c for c in items}
        found = self.classes.get(name)
        return found if found and found.get("provisioner") == PROVISIONER_NAME else None

    async def claim_seen(self, claim: Json) -> None:
        """A claim listed or changed: provisioned now, or kept to be tried again."""
        uid = claim["metadata"]["uid"]
        self.waiting.pop(uid, None)
        try:
            done = await self.provision(claim)
        except Exception as error:  # noqa: BLE001 - a test helper: tried again, never lost
            _log.warning("provisioner: claim %s: %s; trying again", uid, error)
            done = False
        if not done:
            self.waiting[uid] = claim

    async def retry_waiting(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            for claim in list(self.waiting.values()):
                await self.claim_seen(claim)

    async def provision(self, claim: Json) -> bool:
        """Make the claim's volume when it is due; False when it may be due later without
        the claim changing (its class not seen yet)."""
        meta, spec = claim["metadata"], claim.get("spec") or {}
        if (
            spec.get("volumeName")
            or meta.get("deletionTimestamp")
            or meta["uid"] in self._provisioned
        ):
            return True
        class_name = spec.get("storageClassName") or ""
        storage_class = await self.storage_class(class_name)
        if storage_class is None:  # another provisioner's, or a class not seen yet
            return not class_name or class_name in self.classes
        zone = None
        if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
            node_name = (meta.get("annotations") or {}).get(SELECTED_NODE)
            if not node_name:
                return True  # not yet: the scheduler picks the node, and changes the claim
            if node_name not in self._zones:
                try:
                    node = await self.core.read_node(node_name)
                except client.ApiException as error:
                    if error.status == 404:  # gone: the scheduler picks another node
                        return True
                    raise
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
        return True

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
    lister: Callable[..., Awaitable[Any]],
    handle: Callable[[Json], Awaitable[None]],
    gone: Callable[[Json], object] = lambda _: None,
) -> None:
    """List, handle each object, then handle each change from the list's resourceVersion on.
    A partial (no docstring) keeps the watch's objects as dicts; without `timeout_seconds` the
    watch re-watches from the last resourceVersion it saw when the server ends it. An object
    whose handling fails is logged and passed: it holds up no other."""

    async def handled(obj: Json) -> None:
        try:
            await handle(obj)
        except Exception as error:  # noqa: BLE001 - a test helper: the next change retries
            _log.warning("provisioner: %s: %s", obj["metadata"].get("name"), error)

    while True:
        try:
            items, version = await listed(lister)
            for item in items:
                await handled(item)
            async with watch.Watch() as watching:
                stream = watching.stream(
                    functools.partial(lister), resource_version=version, allow_watch_bookmarks=True
                )
                async for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        await handled(event["object"])
                    elif event["type"] == "DELETED":
                        gone(event["object"])
        except Exception as error:  # noqa: BLE001 - a test helper keeps going: lists again
            _log.warning("provisioner: %s; listing again", error)
            await asyncio.sleep(1)


async def run(kubeconfig: str) -> None:
    await config.load_kube_config(config_file=kubeconfig)
    async with ApiClient() as api:
        core = client.CoreV1Api(api)
        provisioner = Provisioner(core, client.StorageV1Api(api))
        await asyncio.gather(
            follow(
                core.list_persistent_volume_claim_for_all_namespaces,
                provisioner.claim_seen,
                lambda claim: provisioner.waiting.pop(claim["metadata"]["uid"], None),
            ),
            follow(core.list_persistent_volume, provisioner.reclaim),
            provisioner.retry_waiting(),
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
