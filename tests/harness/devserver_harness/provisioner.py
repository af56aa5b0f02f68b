"""A test-only dynamic volume provisioner standing in for the AWS EBS CSI driver.

It honours what matters to the operator above it: `WaitForFirstConsumer` binding (a volume is
created only once the scheduler picked a node, in that node's zone, and the PV carries that zone
as node affinity, as EBS volumes do), the claim's size and access modes, and the class's reclaim
policy (Released volumes of a `Delete` class are deleted). It lives in the harness, never in the
operator; no data is stored anywhere.

Run as `python -m devserver_harness.provisioner --kubeconfig PATH`. Each claim or volume event
is handled on its own, and a full pass every 30 s catches anything a broken watch missed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.api_client import ApiClient

PROVISIONER_NAME = "ebs.csi.devserver.test"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
ZONE_LABEL = "topology.kubernetes.io/zone"
_log = logging.getLogger("provisioner")


def desired_volume(claim: Any, storage_class: Any, zone: str | None) -> client.V1PersistentVolume:
    name = f"pvc-{claim.metadata.uid}"
    affinity = None
    if zone:
        affinity = client.V1VolumeNodeAffinity(
            required=client.V1NodeSelector(
                node_selector_terms=[
                    client.V1NodeSelectorTerm(
                        match_expressions=[
                            client.V1NodeSelectorRequirement(
                                key=ZONE_LABEL, operator="In", values=[zone]
                            )
                        ]
                    )
                ]
            )
        )
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            labels={ZONE_LABEL: zone} if zone else None,
        ),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": claim.spec.resources.requests["storage"]},
            access_modes=claim.spec.access_modes,
            persistent_volume_reclaim_policy=storage_class.reclaim_policy or "Delete",
            storage_class_name=storage_class.metadata.name,
            volume_mode=claim.spec.volume_mode or "Filesystem",
            claim_ref=client.V1ObjectReference(
                api_version="v1",
                kind="PersistentVolumeClaim",
                namespace=claim.metadata.namespace,
                name=claim.metadata.name,
                uid=claim.metadata.uid,
            ),
            host_path=client.V1HostPathVolumeSource(path=f"/var/lib/devserver-test/{name}"),
            node_affinity=affinity,
        ),
    )


async def _classes(storage: client.StorageV1Api) -> dict[str, Any]:
    return {
        sc.metadata.name: sc
        for sc in (await storage.list_storage_class()).items
        if sc.provisioner == PROVISIONER_NAME
    }


_provisioned: set[str] = set()  # claim UIDs we made a volume for: no repeated create -> 409
_zones: dict[str, str | None] = {}  # node name -> zone; nodes do not change zone


async def provision(core: client.CoreV1Api, classes: dict[str, Any], claim: Any) -> None:
    storage_class = classes.get(claim.spec.storage_class_name or "")
    if storage_class is None or claim.spec.volume_name or claim.metadata.deletion_timestamp:
        return
    if claim.metadata.uid in _provisioned:
        return
    zone = None
    if storage_class.volume_binding_mode == "WaitForFirstConsumer":
        node_name = (claim.metadata.annotations or {}).get(SELECTED_NODE)
        if not node_name:
            return  # not yet: the scheduler picks the node (and so the zone) first
        if node_name not in _zones:
            node = await core.read_node(node_name)
            _zones[node_name] = (node.metadata.labels or {}).get(ZONE_LABEL)
        zone = _zones[node_name]
    try:
        await core.create_persistent_volume(desired_volume(claim, storage_class, zone))
    except client.ApiException as error:
        if error.status != 409:  # already provisioned
            raise
    _provisioned.add(claim.metadata.uid)
    _log.info("provisioned %s/%s", claim.metadata.namespace, claim.metadata.name)


async def reclaim(core: client.CoreV1Api, volume: Any) -> None:
    ours = (volume.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by")
    if (
        ours == PROVISIONER_NAME
        and volume.status.phase == "Released"
        and volume.spec.persistent_volume_reclaim_policy == "Delete"
    ):
        try:
            await core.delete_persistent_volume(volume.metadata.name)
        except client.ApiException as error:
            if error.status != 404:
                raise
            return
        _log.info("deleted released volume %s", volume.metadata.name)


async def sync_once(core: client.CoreV1Api, storage: client.StorageV1Api) -> dict[str, Any]:
    """A full pass over every claim and volume; returns the classes it saw."""
    classes = await _classes(storage)
    for claim in (await core.list_persistent_volume_claim_for_all_namespaces()).items:
        await provision(core, classes, claim)
    for volume in (await core.list_persistent_volume()).items:
        await reclaim(core, volume)
    return classes


async def run(kubeconfig: str) -> None:
    """Per-event handling (scales to thousands of claims) plus a full pass every 30 s."""
    await config.load_kube_config(config_file=kubeconfig)
    async with ApiClient() as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        classes: dict[str, Any] = {}

        async def resync() -> None:
            nonlocal classes
            while True:
                try:
                    classes = await sync_once(core, storage)
                except Exception as error:  # noqa: BLE001 - a test helper keeps going
                    _log.warning("provisioner resync: %s", error)
                await asyncio.sleep(30)

        async def follow(lister: Any, handle: Any) -> None:
            while True:
                try:
                    async for event in watch.Watch().stream(lister, timeout_seconds=60):
                        if event["type"] in ("ADDED", "MODIFIED"):
                            if not classes:
                                classes.update(await _classes(storage))
                            await handle(event["object"])
                except Exception as error:  # noqa: BLE001 - a test helper keeps going
                    _log.warning("provisioner watch: %s", error)
                    await asyncio.sleep(1)

        await asyncio.gather(
            resync(),
            follow(
                core.list_persistent_volume_claim_for_all_namespaces,
                lambda claim: provision(core, classes, claim),
            ),
            follow(core.list_persistent_volume, lambda volume: reclaim(core, volume)),
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
