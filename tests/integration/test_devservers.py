"""DevServers end to end on the real control plane, with the operator running in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import pytest_asyncio

from devserver import __version__
from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject
from devserver.api.resources import (
    DEPLOYMENTS,
    DEVSERVERS,
    EVENTS,
    FLAVORS,
    LEASES,
    NODES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    ROLES,
    SERVICES,
)
from devserver.client import ApiError, KubeClient
from devserver.reconcilers.devserver.standalone import desired_deployment
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import operator_in_process
from devserver_harness.pytest_plugin import wait_for

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def operator(control_plane: LocalControlPlane) -> AsyncIterator[None]:
    async with operator_in_process(control_plane.operator_kubeconfig):
        yield


def devserver(name: str, namespace: str, flavor: str = "cpu-small", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "owner": "alice@example.com",
            "flavor": flavor,
            "image": "pytorch/pytorch:2.5.1",
            **spec,
        },
    }


def condition(ds: DevServer, kind: str) -> Any:
    for c in ds.status.conditions if ds.status else []:
        if c.type == kind:
            return c
    return None


async def until_ready(
    kube: KubeClient, namespace: str, name: str, timeout: float = 60
) -> DevServer:
    async def ready() -> DevServer | None:
        ds = await kube.get(DEVSERVERS, name, namespace)
        c = condition(ds, "Ready")
        return ds if c is not None and c.status == "True" else None

    result: DevServer = await wait_for(ready, timeout=timeout, what=f"DevServer {name} Ready")
    return result


async def events_of(kube: KubeClient, namespace: str, name: str) -> list[tuple[str, str]]:
    page = await kube.list_page(EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return [(e.extra["type"], e.extra["reason"]) for e in page.items]


async def node_of(kube: KubeClient, namespace: str, ds: DevServer) -> KubeObject:
    assert ds.status is not None and ds.status.pod_name
    pod = await kube.get(PODS, ds.status.pod_name, namespace)
    return await kube.get(NODES, pod.extra["spec"]["nodeName"])


async def test_cpu_devserver_becomes_ready_on_the_cpu_pool(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("box", namespace), namespace)
    ds = await until_ready(kube, namespace, "box")
    assert ds.status is not None
    assert ds.status.phase == "Running"
    assert ds.status.applied_flavor == "cpu-small"
    assert ds.status.home_claim == "box-home"
    assert ds.status.ssh_endpoint == f"box.{namespace}.svc.cluster.local:22"
    node = await node_of(kube, namespace, ds)
    assert node.metadata.labels["eks.amazonaws.com/nodegroup"] == "cpu"
    deployment = await kube.get(DEPLOYMENTS, "box", namespace)
    assert deployment.extra["spec"]["strategy"]["type"] == "Recreate"
    pod_spec = deployment.extra["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["command"][-2:] == ["sleep", "infinity"]  # after the agent's entrypoint
    assert pod_spec["serviceAccountName"] == "box-agent"
    role = await kube.get(ROLES, "box-agent", namespace)
    assert role.extra["rules"][0]["resourceNames"] == ["box-activity"]
    assert await kube.get(LEASES, "box-activity", namespace)
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert {"name": "home", "mountPath": "/home/dev"} in container["volumeMounts"]
    shm = next(v for v in pod_spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    claim = await kube.get(PERSISTENT_VOLUME_CLAIMS, "box-home", namespace)
    assert claim.extra["status"]["phase"] == "Bound"


async def test_gpu_flavor_lands_on_a_gpu_node(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("gpu", namespace, "gpu-small"), namespace)
    ds = await until_ready(kube, namespace, "gpu")
    node = await node_of(kube, namespace, ds)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "g4dn.xlarge"


async def test_unsatisfiable_flavor_reports_the_schedulers_reason(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    # gpu-medium wants g5.xlarge nodes; this cluster has none
    await kube.create(DEVSERVERS, devserver("nowhere", namespace, "gpu-medium"), namespace)

    async def unschedulable() -> DevServer | None:
        ds = await kube.get(DEVSERVERS, "nowhere", namespace)
        c = condition(ds, "Ready")
        return ds if c is not None and c.reason == "Unschedulable" else None

    ds = await wait_for(unschedulable, timeout=60, what="the scheduler's verdict in status")
    assert ds.status.phase == "Pending"
    assert "node(s) didn't match Pod's node affinity/selector" in condition(ds, "Ready").message
    assert ("Warning", "Unschedulable") in await events_of(kube, namespace, "nowhere")


async def test_flavor_change_keeps_the_home_volume(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("grow", namespace), namespace)
    before = await until_ready(kube, namespace, "grow")
    claim = await kube.get(PERSISTENT_VOLUME_CLAIMS, "grow-home", namespace)
    await kube.patch(
        PERSISTENT_VOLUME_CLAIMS,
        "grow-home",
        {"metadata": {"annotations": {"test/marker": "my-data"}}},
        namespace,
    )

    await kube.patch(DEVSERVERS, "grow", {"spec": {"flavor": "gpu-small"}}, namespace)

    async def moved() -> DevServer | None:
        ds = await kube.get(DEVSERVERS, "grow", namespace)
        ok = condition(ds, "Ready")
        if ds.status and ds.status.applied_flavor == "gpu-small" and ok and ok.status == "True":
            return ds
        return None

    after = await wait_for(moved, timeout=90, what="the server to move to gpu-small")
    assert after.status.pod_name != before.status.pod_name
    node = await node_of(kube, namespace, after)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "g4dn.xlarge"
    same = await kube.get(PERSISTENT_VOLUME_CLAIMS, "grow-home", namespace)
    assert same.metadata.uid == claim.metadata.uid, "the same home volume"
    assert same.metadata.annotations["test/marker"] == "my-data"

    assert ("Normal", "FlavorApplied") in await events_of(kube, namespace, "grow")

    # and back down
    await kube.patch(DEVSERVERS, "grow", {"spec": {"flavor": "cpu-small"}}, namespace)

    async def back() -> bool:
        ds = await kube.get(DEVSERVERS, "grow", namespace)
        ok = condition(ds, "Ready")
        return bool(ds.status and ds.status.applied_flavor == "cpu-small" and ok.status == "True")

    await wait_for(back, timeout=90, what="the server to move back to cpu-small")
    last = await kube.get(PERSISTENT_VOLUME_CLAIMS, "grow-home", namespace)
    assert last.metadata.uid == claim.metadata.uid


async def test_a_missing_flavor_leaves_the_running_server_untouched(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("steady", namespace), namespace)
    ready = await until_ready(kube, namespace, "steady")
    deployment = await kube.get(DEPLOYMENTS, "steady", namespace)

    await kube.patch(DEVSERVERS, "steady", {"spec": {"flavor": "gpu-huge"}}, namespace)

    async def flagged() -> DevServer | None:
        ds = await kube.get(DEVSERVERS, "steady", namespace)
        c = condition(ds, "FlavorValid")
        return ds if c is not None and c.status == "False" else None

    ds = await wait_for(flagged, timeout=30, what="FlavorValid=False")
    assert "flavor 'gpu-huge' does not exist" in condition(ds, "FlavorValid").message
    assert condition(ds, "Ready").status == "True", "still up on its old flavor"
    assert ds.status.applied_flavor == "cpu-small"
    assert ds.status.pod_name == ready.status.pod_name
    same = await kube.get(DEPLOYMENTS, "steady", namespace)
    # untouched by the operator: its spec and metadata as they were (the deployment
    # controller may still be writing the status it had not finished when the server said
    # Ready, which moves the resourceVersion: CI saw that once)
    assert _written_part(same) == _written_part(deployment)


def _written_part(obj: Any) -> Any:
    """What a writer other than the status's changes: all but the status and the version."""
    dumped = obj.model_dump(by_alias=True, mode="json")
    dumped.pop("status", None)
    dumped["metadata"].pop("resourceVersion", None)
    return dumped


async def test_deleted_or_edited_children_are_repaired(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("fix", namespace), namespace)
    await until_ready(kube, namespace, "fix")
    service = await kube.get(SERVICES, "fix", namespace)
    await kube.delete(SERVICES, "fix", namespace)
    await kube.patch(DEPLOYMENTS, "fix", {"spec": {"replicas": 3}}, namespace)

    async def repaired() -> bool:
        try:
            again = await kube.get(SERVICES, "fix", namespace)
        except ApiError:
            return False
        deployment = await kube.get(DEPLOYMENTS, "fix", namespace)
        return again.metadata.uid != service.metadata.uid and (
            deployment.extra["spec"]["replicas"] == 1
        )

    await wait_for(repaired, timeout=30, what="the Service and the replica count to be repaired")


async def _gone(kube: KubeClient, resource: Any, name: str, namespace: str) -> bool:
    try:
        await kube.get(resource, name, namespace)
    except ApiError as error:
        return error.not_found
    return False


async def test_delete_keeps_the_home_volume_unless_told_otherwise(
    kube: KubeClient, namespace: str, operator: None
) -> None:
    await kube.create(DEVSERVERS, devserver("keep", namespace), namespace)
    await kube.create(DEVSERVERS, devserver("drop", namespace, retainHomeOnDelete=False), namespace)
    await until_ready(kube, namespace, "keep")
    await until_ready(kube, namespace, "drop")
    for name in ("keep", "drop"):
        await kube.delete(DEVSERVERS, name, namespace)
    for name in ("keep", "drop"):
        await wait_for(
            lambda n=name: _gone(kube, DEPLOYMENTS, n, namespace),
            timeout=60,
            what=f"{name}'s Deployment to go",
        )
    await wait_for(
        lambda: _gone(kube, PERSISTENT_VOLUME_CLAIMS, "drop-home", namespace),
        timeout=60,
        what="the unretained home to go",
    )
    kept = await kube.get(PERSISTENT_VOLUME_CLAIMS, "keep-home", namespace)
    assert kept.metadata.deletion_timestamp is None, "retained by default: nothing is lost"


async def test_a_restarted_operator_makes_no_writes_for_converged_servers(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    async with operator_in_process(control_plane.operator_kubeconfig):
        for name in ("one", "two"):
            await kube.create(DEVSERVERS, devserver(name, namespace), namespace)
        for name in ("one", "two"):
            await until_ready(kube, namespace, name)
        await anyio.sleep(2)
    mark = len(control_plane.audit_events(namespace=namespace))
    async with operator_in_process(control_plane.operator_kubeconfig):
        await anyio.sleep(8)
    ours = f"devserver/{__version__}"
    writes = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"))
        for e in control_plane.audit_events(user_agent=ours, namespace=namespace)[0:]
        if e["verb"] in ("create", "update", "patch", "delete")
    ]
    all_events = control_plane.audit_events(namespace=namespace)
    late = [e for e in all_events[mark:] if e.get("userAgent", "").startswith(ours)]
    late_writes = [
        (e["verb"], e["objectRef"].get("resource"))
        for e in late
        if e["verb"] in ("create", "update", "patch", "delete")
    ]
    assert late_writes == [], f"converged servers need no writes: {late_writes}"
    assert writes, "the first run did write"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"metadata": {"name": "n" * 41}}, "name must be at most 40 characters"),
        ({"spec": {"mode": "distributed"}}, "mode distributed needs spec.distributed"),
        (
            {"spec": {"mode": "distributed", "distributed": {"worldSize": 0}}},
            "should be greater than or equal to 1",
        ),
        ({"spec": {"lifecycle": {"timeToLive": "four hours"}}}, "spec.lifecycle.timeToLive"),
        ({"spec": {"persistentHomeSize": "lots"}}, "spec.persistentHomeSize"),
        ({"spec": {"image": "has space"}}, "spec.image"),
    ],
)
async def test_bad_input_is_rejected_by_the_api_server(
    kube: KubeClient, namespace: str, change: dict[str, Any], complaint: str
) -> None:
    body = devserver("bad", namespace)
    for part, values in change.items():
        body[part] = {**body[part], **values}
    with pytest.raises(ApiError) as refused:
        await kube.create(DEVSERVERS, body, namespace)
    assert refused.value.status == 422
    assert complaint in refused.value.message, refused.value.message
    assert (await kube.list_page(DEVSERVERS, namespace)).items == []
    json.dumps(body)


async def test_an_operator_upgrade_does_not_restart_running_servers(
    kube: KubeClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    """A running server made by an older operator (another pod template) keeps its pod when
    the new operator takes over; the new template arrives with the next start."""
    async with operator_in_process(control_plane.operator_kubeconfig):
        await kube.create(DEVSERVERS, devserver("old", namespace), namespace)
        await until_ready(kube, namespace, "old")
    # what an older operator version applied: its own intent, with another pod template
    ds = await kube.get(DEVSERVERS, "old", namespace)
    flavor = await kube.get(FLAVORS, "cpu-small")
    older = desired_deployment(ds, flavor)
    older["spec"]["template"]["metadata"]["annotations"]["devserver.io/era"] = "old"
    await kube.apply(DEPLOYMENTS, older, field_manager="devserver-operator")

    async def one_pod() -> KubeObject | None:
        pods = (await kube.list_page(PODS, namespace, label_selector="devserver.io/name=old")).items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        ready = [p for p in live if (p.extra.get("status") or {}).get("phase") == "Running"]
        return ready[0] if len(live) == 1 and ready else None

    async def old_era_pod() -> KubeObject | None:
        pod = await one_pod()
        era = pod.metadata.annotations.get("devserver.io/era") if pod else None
        return pod if era == "old" else None

    before = await wait_for(old_era_pod, timeout=60, what="the old-era pod")
    async with operator_in_process(control_plane.operator_kubeconfig):
        await anyio.sleep(6)  # the new operator reconciles everything at start
        deployment = await kube.get(DEPLOYMENTS, "old", namespace)
        template = deployment.extra["spec"]["template"]
        assert template["metadata"]["annotations"].get("devserver.io/era") == "old"  # kept
        assert deployment.metadata.annotations["devservers.io/pod-inputs"]  # adopted
        pod = await wait_for(one_pod, timeout=10, what="the pod")
        assert pod.metadata.uid == before.metadata.uid  # not restarted

        # the user stops and starts it: now the new template
        await kube.patch(DEVSERVERS, "old", {"spec": {"stopped": True}}, namespace)

        async def scaled_down() -> bool:
            live = await kube.get(DEPLOYMENTS, "old", namespace)
            return bool(live.extra["spec"]["replicas"] == 0)

        await wait_for(scaled_down, timeout=30, what="the stop")

        async def says_stopped() -> bool:  # as a user starts it again: once it says Stopped
            found = await kube.get(DEVSERVERS, "old", namespace)
            return found.status is not None and found.status.phase == "Stopped"

        # (a start the operator reads before its cache has the scale-down keeps the running
        # template until the next start: the cache says the old one still runs)
        await wait_for(says_stopped, timeout=30, what="Stopped")
        await kube.patch(DEVSERVERS, "old", {"spec": {"stopped": False}}, namespace)
        await until_ready(kube, namespace, "old")
        deployment = await kube.get(DEPLOYMENTS, "old", namespace)
        annotations = deployment.extra["spec"]["template"]["metadata"].get("annotations", {})
        assert "devserver.io/era" not in annotations
