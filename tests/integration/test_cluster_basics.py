"""The local control plane behaves like a real EKS-shaped cluster for what devserver relies on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devserver_harness.controlplane import DEFAULT_STORAGE_CLASS
from devserver_harness.nodes import GPU_RESOURCE
from devserver_harness.pytest_plugin import wait_for

pytestmark = pytest.mark.integration

GPU_TOLERATION = client.V1Toleration(
    key=GPU_RESOURCE, operator="Equal", value="present", effect="NoSchedule"
)


def pod(name: str, *, gpus: int = 0, tolerate_gpu: bool = False, **spec: Any) -> client.V1Pod:
    resources = client.V1ResourceRequirements(
        requests={"cpu": "100m", "memory": "64Mi"},
        limits={GPU_RESOURCE: str(gpus)} if gpus else None,
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(name="main", image="pytorch/pytorch:2.5.1", resources=resources)
            ],
            tolerations=[GPU_TOLERATION] if tolerate_gpu else None,
            **spec,
        ),
    )


async def running_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    async def probe() -> client.V1Pod | None:
        current = await core.read_namespaced_pod(name, namespace)
        return current if current.status.phase == "Running" else None

    result: client.V1Pod = await wait_for(probe, timeout=30, what=f"pod {name} Running")
    return result


async def test_gpu_node_pool_is_ready_with_gpu_capacity(admin_api: ApiClient) -> None:
    nodes = (await client.CoreV1Api(admin_api).list_node()).items
    by_type: dict[str, list[client.V1Node]] = {}
    for node in nodes:
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", f"{node.metadata.name} is not Ready"
        by_type.setdefault(node.metadata.labels["node.kubernetes.io/instance-type"], []).append(
            node
        )
    assert set(by_type) >= {"m5.2xlarge", "g4dn.xlarge", "p4d.24xlarge"}
    for node in by_type["g4dn.xlarge"]:
        assert node.status.allocatable[GPU_RESOURCE] == "1"
        assert any(t.key == GPU_RESOURCE and t.effect == "NoSchedule" for t in node.spec.taints)
    assert by_type["p4d.24xlarge"][0].status.capacity[GPU_RESOURCE] == "8"
    for node in by_type["m5.2xlarge"]:
        assert GPU_RESOURCE not in node.status.allocatable
        assert not node.spec.taints


async def test_deployment_pod_runs_and_is_garbage_collected(
    admin_api: ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    labels = {"app": "hello"}
    await apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="hello"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=pod("x").spec
                ),
            ),
        ),
    )

    async def running() -> list[client.V1Pod]:
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=hello")).items
        return [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]

    pods = await wait_for(running, timeout=30, what="the deployment's pod to run")
    owner = pods[0].metadata.owner_references[0]
    assert owner.kind == "ReplicaSet"
    assert pods[0].spec.node_name.startswith("cpu-"), "no GPU asked, no GPU toleration"

    await apps.delete_namespaced_deployment("hello", namespace, propagation_policy="Background")

    async def collected() -> bool:
        return not (await core.list_namespaced_pod(namespace, label_selector="app=hello")).items

    await wait_for(collected, timeout=60, what="garbage collection of the deployment's pods")


async def test_pvc_binds_in_the_zone_of_its_pod_and_is_deleted_with_it(
    admin_api: ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="home"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "20Gi"}),
            ),
        ),
    )
    claim = await core.read_namespaced_persistent_volume_claim("home", namespace)
    assert claim.spec.storage_class_name == DEFAULT_STORAGE_CLASS, "default class applied"
    await asyncio.sleep(1)
    claim = await core.read_namespaced_persistent_volume_claim("home", namespace)
    assert claim.status.phase == "Pending", "WaitForFirstConsumer: no volume before a pod"

    user = pod("user")
    user.spec.volumes = [
        client.V1Volume(
            name="home",
            persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="home"),
        )
    ]
    user.spec.containers[0].volume_mounts = [client.V1VolumeMount(name="home", mount_path="/home")]
    await core.create_namespaced_pod(namespace, user)
    running = await running_pod(core, namespace, "user")

    async def bound() -> client.V1PersistentVolumeClaim | None:
        current = await core.read_namespaced_persistent_volume_claim("home", namespace)
        return current if current.status.phase == "Bound" else None

    claim = await wait_for(bound, timeout=30, what="the claim to bind")
    assert claim.status.capacity["storage"] == "20Gi"
    volume = await core.read_persistent_volume(claim.spec.volume_name)
    node = await core.read_node(running.spec.node_name)
    zone = node.metadata.labels["topology.kubernetes.io/zone"]
    term = volume.spec.node_affinity.required.node_selector_terms[0].match_expressions[0]
    assert (term.key, term.values) == ("topology.kubernetes.io/zone", [zone])

    await core.delete_namespaced_pod("user", namespace, grace_period_seconds=0)
    await core.delete_namespaced_persistent_volume_claim("home", namespace)

    async def volume_gone() -> bool:
        names = [pv.metadata.name for pv in (await core.list_persistent_volume()).items]
        return claim.spec.volume_name not in names

    await wait_for(volume_gone, timeout=60, what="the Delete reclaim policy to remove the PV")


async def test_gpu_pods_land_only_on_gpu_nodes_and_impossible_requests_stay_pending(
    admin_api: ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_pod(namespace, pod("one-gpu", gpus=1, tolerate_gpu=True))
    await core.create_namespaced_pod(namespace, pod("sixteen", gpus=16, tolerate_gpu=True))
    await core.create_namespaced_pod(namespace, pod("untolerated", gpus=1))

    placed = await running_pod(core, namespace, "one-gpu")
    node = await core.read_node(placed.spec.node_name)
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1

    async def unschedulable(name: str) -> str | None:
        current = await core.read_namespaced_pod(name, namespace)
        for condition in current.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return str(condition.message)
        return None

    message = await wait_for(
        lambda: unschedulable("sixteen"), timeout=30, what="the scheduler to give up on 16 GPUs"
    )
    assert "Insufficient nvidia.com/gpu" in message
    current = await core.read_namespaced_pod("sixteen", namespace)
    assert current.status.phase == "Pending" and not current.spec.node_name

    message = await wait_for(
        lambda: unschedulable("untolerated"),
        timeout=30,
        what="the untolerated GPU pod to be refused",
    )
    assert "nvidia.com/gpu" in message  # taint on GPU nodes, no GPUs elsewhere

    events = (
        await core.list_namespaced_event(namespace, field_selector="involvedObject.name=sixteen")
    ).items
    assert any(e.reason == "FailedScheduling" for e in events)


async def test_pod_security_baseline_rejects_privileged_pods(
    admin_api: ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
    )
    privileged = pod("root-on-node")
    privileged.spec.containers[0].security_context = client.V1SecurityContext(privileged=True)
    with pytest.raises(client.ApiException) as rejected:
        await core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    message = json.loads(rejected.value.body)["message"]
    assert 'violates PodSecurity "baseline:latest"' in message
    assert "privileged" in message
    assert not (await core.list_namespaced_pod(namespace)).items

    host_path = pod("host-root")
    host_path.spec.volumes = [
        client.V1Volume(name="root", host_path=client.V1HostPathVolumeSource(path="/"))
    ]
    with pytest.raises(client.ApiException) as rejected:
        await core.create_namespaced_pod(namespace, host_path)
    assert "hostPath" in rejected.value.body

    await core.create_namespaced_pod(namespace, pod("ordinary"))  # baseline allows plain pods
