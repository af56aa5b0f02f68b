"""A test-only dynamic volume provisioner standing in for the AWS EBS CSI driver.

It honours what matters to the operator above it: `WaitForFirstConsumer` binding (a volume is
created only once the scheduler picked a node, in that node's zone, and the PV carries that zone
as node affinity, as EBS volumes do), the claim's size and access modes, and the class's reclaim
policy (Released volumes of a `Delete` class are deleted). It lives in the harness, never in the
operator; no data is stored anywhere.

Run as `python -m devserver.testing.provisioner --kubeconfig PATH`. Level-based: every PVC or PV
event triggers one pass over all claims and volumes, and any error restarts the loop.
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


async def sync_once(core: client.CoreV1Api, storage: client.StorageV1Api) -> None:
    classes = {
        sc.metadata.name: sc
        for sc in (await storage.list_storage_class()).items
        if sc.provisioner == PROVISIONER_NAME
    }
    volumes = (await core.list_persistent_volume()).items
    existing = {pv.metadata.name for pv in volumes}
    for claim in (await core.list_persistent_volume_claim_for_all_namespaces()).items:
        storage_class = classes.get(claim.spec.storage_class_name or "")
        if storage_class is None or claim.spec.volume_name or claim.metadata.deletion_timestamp:
            continue
        if f"pvc-{claim.metadata.uid}" in existing:
            continue
        zone = None
        if storage_class.volume_binding_mode == "WaitForFirstConsumer":
            node_name = (claim.metadata.annotations or {}).get(SELECTED_NODE)
            if not node_name:
                continue  # not yet: the scheduler picks the node (and so the zone) first
            node = await core.read_node(node_name)
            zone = (node.metadata.labels or {}).get(ZONE_LABEL)
        await core.create_persistent_volume(desired_volume(claim, storage_class, zone))
        _log.info("provisioned %s/%s", claim.metadata.namespace, claim.metadata.name)
    for pv in volumes:
        ours = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by")
        if (
            ours == PROVISIONER_NAME
            and pv.status.phase == "Released"
            and pv.spec.persistent_volume_reclaim_policy == "Delete"
        ):
            await core.delete_persistent_volume(pv.metadata.name)
            _log.info("deleted released volume %s", pv.metadata.name)


async def run(kubeconfig: str) -> None:
    await config.load_kube_config(config_file=kubeconfig)
    async with ApiClient() as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        lock = asyncio.Lock()

        async def follow(lister: Any) -> None:
            while True:
                try:
                    async with lock:
                        await sync_once(core, storage)
                    async for _event in watch.Watch().stream(lister, timeout_seconds=10):
                        async with lock:
                            await sync_once(core, storage)
                except Exception as error:  # noqa: BLE001 - a test helper keeps going
                    _log.warning("provisioner loop: %s", error)
                    await asyncio.sleep(1)

        await asyncio.gather(
            follow(core.list_persistent_volume_claim_for_all_namespaces),
            follow(core.list_persistent_volume),
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
