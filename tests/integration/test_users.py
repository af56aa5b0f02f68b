"""DevUsers: provisioning, clean-up, and what a user may do — decided by the real API server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio

from devserver.api.names import CACHE_USER_SELECTOR
from devserver.api.resources import (
    DEVSERVERS,
    DEVUSERS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    SERVICE_ACCOUNTS,
)
from devserver.client import ApiError, KubeClient
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import operator_in_process
from devserver_harness.pytest_plugin import wait_for

pytestmark = pytest.mark.integration


def devuser(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "devservers.io/v1", "kind": "DevUser", "metadata": {"name": name},
            "spec": {"email": f"{name}@example.com", **spec}}  # fmt: skip


@pytest_asyncio.fixture
async def users(
    kube: KubeClient, control_plane: LocalControlPlane, quota_counts_devservers: None
) -> AsyncIterator[list[str]]:
    """Two users, provisioned by a running operator; removed afterwards."""
    names = ["ana", "ben"]
    async with operator_in_process(control_plane.operator_kubeconfig):
        await kube.create(DEVUSERS, devuser("ana", quota={"gpus": 1, "devServers": 2}))
        await kube.create(DEVUSERS, devuser("ben"))
        for name in names:
            await wait_for(lambda n=name: _ready(kube, n), timeout=30, what=f"user {name}")
        yield names
        for name in names:
            await kube.delete(DEVUSERS, name)


async def _ready(kube: KubeClient, name: str) -> bool:
    user = await kube.get(DEVUSERS, name)
    return bool(user.status and any(c.status == "True" for c in user.status.conditions))


async def test_a_user_gets_a_guarded_namespace_and_removing_them_keeps_their_data(
    kube: KubeClient, control_plane: LocalControlPlane, quota_counts_devservers: None
) -> None:
    async with operator_in_process(control_plane.operator_kubeconfig):
        await kube.create(DEVUSERS, devuser("cleo"))
        await wait_for(lambda: _ready(kube, "cleo"), timeout=30, what="cleo provisioned")
        ns = await kube.get(NAMESPACES, "dev-cleo")
        assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert ns.metadata.labels["devserver.io/user"] == "cleo"
        assert not ns.metadata.owner_references  # deleting the user cannot cascade to it
        got = json.loads(
            control_plane.kubectl(
                "get",
                "serviceaccount,role,rolebinding,resourcequota,limitrange,networkpolicy",
                "-n",
                "dev-cleo",
                "-o",
                "json",
            ).stdout
        )["items"]
        kinds = {(i["kind"], i["metadata"]["name"]) for i in got}
        assert not any(kind == "Role" for kind, _ in kinds)  # ClusterRoles, bound here
        assert {
            ("ServiceAccount", "user-cleo"),
            ("RoleBinding", "devserver-user"),
            ("RoleBinding", "devserver-bastion-token"),
            ("ResourceQuota", "dev-user"),
            ("LimitRange", "dev-user"),
            ("NetworkPolicy", "devserver-same-namespace-only"),
            ("NetworkPolicy", "devserver-bastion-ssh"),
            ("NetworkPolicy", "devserver-no-instance-metadata"),
        } <= kinds
        metadata = next(i for i in got if i["metadata"]["name"] == "devserver-no-instance-metadata")
        blocks = [
            peer["ipBlock"] for peer in metadata["spec"]["egress"][0]["to"] if "ipBlock" in peer
        ]
        assert {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]} in blocks
        await kube.create(
            DEVSERVERS,
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServer",
                "metadata": {"name": "work", "namespace": "dev-cleo"},
                "spec": {"owner": "cleo", "flavor": "cpu-small", "image": "busybox"},
            },
            "dev-cleo",
        )
        claim = await wait_for(
            lambda: _get(kube, PERSISTENT_VOLUME_CLAIMS, "work-home", "dev-cleo"),
            timeout=30,
            what="the home volume",
        )
        # the user's objects are cached by a selector that leaves out what was made for a
        # server: its agent's ServiceAccount carries the user's label too
        await wait_for(
            lambda: _get(kube, SERVICE_ACCOUNTS, "work-agent", "dev-cleo"),
            timeout=30,
            what="the server's agent ServiceAccount",
        )
        accounts = await kube.list_page(
            SERVICE_ACCOUNTS, "dev-cleo", label_selector=CACHE_USER_SELECTOR
        )
        assert {a.metadata.name for a in accounts.items} == {"user-cleo"}
        await kube.delete(DEVUSERS, "cleo")

        async def stopped_for_removal() -> bool:
            ds = await kube.get(DEVSERVERS, "work", "dev-cleo")
            reason = ds.metadata.annotations.get("devservers.io/stop-reason")
            return ds.spec.stopped and reason == "UserRemoved"

        await wait_for(stopped_for_removal, timeout=30, what="the user's server stopped")
        ns = await wait_for(lambda: _marked_removed(kube), timeout=30, what="the namespace marked")
        assert ns.metadata.deletion_timestamp is None
        # the garbage collector revokes access (it learns new CRDs on a ~30 s resync)
        await wait_for(
            lambda: _gone(kube, SERVICE_ACCOUNTS, "user-cleo", "dev-cleo"),
            timeout=90,
            what="the user's ServiceAccount to go",
        )
        same = await kube.get(PERSISTENT_VOLUME_CLAIMS, "work-home", "dev-cleo")
        assert same.metadata.uid == claim.metadata.uid
        assert (await kube.get(NAMESPACES, "dev-cleo")).metadata.deletion_timestamp is None

        # adding the user again gives the namespace, its server and home back
        await kube.create(DEVUSERS, devuser("cleo"))
        await wait_for(lambda: _ready(kube, "cleo"), timeout=30, what="cleo back")
        ns = await kube.get(NAMESPACES, "dev-cleo")
        assert "devservers.io/user-removed" not in ns.metadata.annotations
        assert (await kube.get(DEVSERVERS, "work", "dev-cleo")).spec.stopped
        await kube.delete(DEVUSERS, "cleo")
        control_plane.kubectl("delete", "namespace", "dev-cleo", "--wait=false")


async def test_a_namespace_the_operator_did_not_make_is_never_taken_over(
    kube: KubeClient, control_plane: LocalControlPlane
) -> None:
    control_plane.kubectl("create", "namespace", "dev-dora")
    async with operator_in_process(control_plane.operator_kubeconfig):
        await kube.create(DEVUSERS, devuser("dora"))

        async def refused() -> str:
            user = await kube.get(DEVUSERS, "dora")
            ready = [
                c for c in (user.status.conditions if user.status else []) if c.type == "Ready"
            ]
            return ready[0].message if ready and ready[0].reason == "NamespaceTaken" else ""

        message = await wait_for(refused, timeout=30, what="the refusal in the status")
        assert "dev-dora exists and was not made by devserver" in message
        ns = await kube.get(NAMESPACES, "dev-dora")
        assert "devserver.io/user" not in ns.metadata.labels
        assert await _gone(kube, SERVICE_ACCOUNTS, "user-dora", "dev-dora")
        await kube.delete(DEVUSERS, "dora")
    control_plane.kubectl("delete", "namespace", "dev-dora", "--wait=false")


async def _get(kube: KubeClient, resource: Any, name: str, namespace: str) -> Any:
    try:
        return await kube.get(resource, name, namespace)
    except ApiError as error:
        if error.not_found:
            return None
        raise


async def _gone(kube: KubeClient, resource: Any, name: str, namespace: str) -> bool:
    return await _get(kube, resource, name, namespace) is None


async def _marked_removed(kube: KubeClient) -> Any:
    ns = await kube.get(NAMESPACES, "dev-cleo")
    return ns if "devservers.io/user-removed" in ns.metadata.annotations else None


@pytest.mark.parametrize("name", ["Root", "root", "a" * 33, "has_underscore", "9lives", "admin"])
async def test_bad_user_names_are_refused_with_a_reason(kube: KubeClient, name: str) -> None:
    with pytest.raises(ApiError) as refused:
        await kube.create(DEVUSERS, devuser(name))
    assert refused.value.status == 422
    assert "user name" in refused.value.message


# What a user may do is decided over ssh, through the bastion: test_bastion.py's matrix.


async def test_guards_stand_even_if_a_role_were_widened(
    users: list[str], control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    """As an admin (past RBAC): the namespace itself refuses host access and extra GPUs."""
    pods = {
        "privileged": {"securityContext": {"privileged": True}},
        "host-path": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "host-network": {"hostNetwork": True},
        "two-gpus": {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
    }
    for name, extra in pods.items():
        container: dict[str, object] = {"name": "c", "image": "busybox"}
        spec: dict[str, object] = {"containers": [container]}
        if "resources" in extra:
            container["resources"] = extra["resources"]
        elif "securityContext" in extra:
            container["securityContext"] = extra["securityContext"]
        else:
            spec.update(extra)
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "dev-ana"},
                    "spec": spec,
                }
            )
        )
        result = await anyio.to_thread.run_sync(
            lambda p=path: control_plane.kubectl(
                "create", "-f", str(p), "--dry-run=server", check=False
            )
        )
        assert result.returncode != 0, name
        reason = "exceeded quota" if name == "two-gpus" else "violates PodSecurity"
        assert reason in result.stderr, f"{name}: {result.stderr}"
