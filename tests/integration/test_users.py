"""DevUsers: provisioning, clean-up, and what a user may do — decided by the real API server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio

from devserver.api.resources import DEVUSERS, NAMESPACES
from devserver.client import ApiError, KubeClient
from devserver.testing.controlplane import LocalControlPlane
from devserver.testing.operator import operator_in_process
from devserver.testing.pytest_plugin import wait_for

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
    async with operator_in_process(control_plane.kubeconfig):
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


async def test_a_user_gets_a_guarded_namespace_and_loses_it_on_removal(
    kube: KubeClient, control_plane: LocalControlPlane
) -> None:
    async with operator_in_process(control_plane.kubeconfig):
        await kube.create(DEVUSERS, devuser("cleo"))
        await wait_for(lambda: _ready(kube, "cleo"), timeout=30, what="cleo provisioned")
        ns = await kube.get(NAMESPACES, "dev-cleo")
        assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert ns.metadata.labels["devserver.io/user"] == "cleo"
        got = json.loads(
            control_plane.kubectl(
                "get",
                "serviceaccount,role,rolebinding,resourcequota,limitrange",
                "-n",
                "dev-cleo",
                "-o",
                "json",
            ).stdout
        )["items"]
        kinds = {(i["kind"], i["metadata"]["name"]) for i in got}
        assert {
            ("ServiceAccount", "user-cleo"),
            ("Role", "dev-user"),
            ("RoleBinding", "dev-user"),
            ("Role", "bastion-token-requester"),
            ("RoleBinding", "bastion-token-requester"),
            ("ResourceQuota", "dev-user"),
            ("LimitRange", "dev-user"),
        } <= kinds
        await kube.delete(DEVUSERS, "cleo")

        async def namespace_going() -> bool:
            try:
                ns = await kube.get(NAMESPACES, "dev-cleo")
            except ApiError as error:
                return error.not_found
            return ns.metadata.deletion_timestamp is not None

        # the garbage collector picks up new CRDs on its ~30 s discovery resync
        await wait_for(namespace_going, timeout=90, what="the namespace to be removed")


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
