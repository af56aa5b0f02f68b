"""What later issues lean on: quotas that bound GPUs, StatefulSets with a volume per ordinal."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devserver_harness.pytest_plugin import wait_for
from tests.integration.test_cluster_basics import pod

pytestmark = pytest.mark.integration


async def test_resource_quota_caps_gpus_per_namespace(admin_api: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="gpus"),
            spec=client.V1ResourceQuotaSpec(hard={"requests.nvidia.com/gpu": "1"}),
        ),
    )

    async def quota_observed() -> bool:
        quota = await core.read_namespaced_resource_quota("gpus", namespace)
        return bool(quota.status and quota.status.hard)

    await wait_for(quota_observed, timeout=30, what="the quota controller to observe the quota")
    await core.create_namespaced_pod(namespace, pod("first", gpus=1, tolerate_gpu=True))
    with pytest.raises(client.ApiException) as refused:
        await core.create_namespaced_pod(namespace, pod("second", gpus=1, tolerate_gpu=True))
    assert refused.value.status == 403
    assert "exceeded quota: gpus" in json.loads(refused.value.body)["message"]


async def test_statefulset_pods_get_ordinals_and_their_own_volume(
    admin_api: ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    labels = {"app": "ranks"}
    template = pod("x")
    template.spec.containers[0].volume_mounts = [
        client.V1VolumeMount(name="home", mount_path="/home")
    ]
    await apps.create_namespaced_stateful_set(
        namespace,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="ranks"),
            spec=client.V1StatefulSetSpec(
                service_name="ranks",
                replicas=2,
                pod_management_policy="Parallel",
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=template.spec
                ),
                volume_claim_templates=[
                    client.V1PersistentVolumeClaim(
                        metadata=client.V1ObjectMeta(name="home"),
                        spec=client.V1PersistentVolumeClaimSpec(
                            access_modes=["ReadWriteOnce"],
                            resources=client.V1VolumeResourceRequirements(
                                requests={"storage": "10Gi"}
                            ),
                        ),
                    )
                ],
            ),
        ),
    )

    async def all_running() -> dict[str, str] | None:
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=ranks")).items
        running = {p.metadata.name: p for p in pods if p.status.phase == "Running"}
        if len(running) != 2:
            return None
        return {
            name: p.metadata.labels["apps.kubernetes.io/pod-index"] for name, p in running.items()
        }

    indexes = await wait_for(all_running, timeout=60, what="both ordinals Running")
    assert indexes == {"ranks-0": "0", "ranks-1": "1"}

    async def claims_bound() -> set[str] | None:
        claims = (await core.list_namespaced_persistent_volume_claim(namespace)).items
        bound = {c.metadata.name for c in claims if c.status.phase == "Bound"}
        return bound if len(bound) == 2 else None

    assert await wait_for(claims_bound, timeout=60, what="one bound claim per ordinal") == {
        "home-ranks-0",
        "home-ranks-1",
    }
