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
async def users(kube: KubeClient, control_plane: LocalControlPlane) -> AsyncIterator[list[str]]:
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


# (what the user tries, allowed?) — every decision comes from the real API server
MATRIX: list[tuple[str, list[str], bool]] = [
    ("list own devservers", ["get", "devservers", "-n", "dev-ana"], True),
    ("create own devserver", ["create", "-f", "{ds}", "-n", "dev-ana", "--dry-run=server"], True),
    ("list own pods", ["get", "pods", "-n", "dev-ana"], True),
    ("list own services", ["get", "services", "-n", "dev-ana"], True),
    ("list own volumes", ["get", "pvc", "-n", "dev-ana"], True),
    ("list own events", ["get", "events", "-n", "dev-ana"], True),
    ("read own quota", ["get", "resourcequota", "-n", "dev-ana"], True),
    ("list flavors", ["get", "devserverflavors"], True),
    ("list another user's devservers", ["get", "devservers", "-n", "dev-ben"], False),
    ("list another user's pods", ["get", "pods", "-n", "dev-ben"], False),
    ("create in another namespace",
     ["create", "-f", "{ds}", "-n", "dev-ben", "--dry-run=server"], False),
    ("create a namespace", ["create", "namespace", "sneaky", "--dry-run=server"], False),
    ("delete own namespace", ["delete", "namespace", "dev-ana", "--dry-run=server"], False),
    ("read own secrets", ["get", "secrets", "-n", "dev-ana"], False),
    ("read secrets cluster-wide", ["get", "secrets", "-A"], False),
    ("read kube-system config", ["get", "configmaps", "-n", "kube-system"], False),
    ("create a raw pod", ["run", "raw", "--image=busybox", "-n", "dev-ana",
                          "--dry-run=server"], False),
    ("create a deployment", ["create", "deployment", "d", "--image=busybox", "-n", "dev-ana",
                             "--dry-run=server"], False),
    ("create a ClusterRole", ["create", "clusterrole", "x", "--verb=get", "--resource=pods",
                              "--dry-run=server"], False),
    ("bind itself more rights", ["create", "rolebinding", "x", "--clusterrole=admin",
                                 "--serviceaccount=dev-ana:user-ana", "-n", "dev-ana",
                                 "--dry-run=server"], False),
    ("edit its own role", ["patch", "role", "dev-user", "-n", "dev-ana", "--type=json",
                           "-p", '[{"op":"add","path":"/rules/0/verbs/-","value":"escalate"}]',
                           "--dry-run=server"], False),
    ("impersonate an admin", ["get", "pods", "-n", "dev-ana", "--as=kubernetes-admin"], False),
    ("list nodes", ["get", "nodes"], False),
    ("create a flavor", ["create", "-f", "{flavor}", "--dry-run=server"], False),
    ("mint a token for another account",
     ["create", "token", "default", "-n", "dev-ana"], False),
    ("mint its own token", ["create", "token", "user-ana", "-n", "dev-ana"], False),
    ("read DevUsers", ["get", "devusers"], False),
]  # fmt: skip


async def test_permission_matrix(
    users: list[str], control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    ds = tmp_path / "ds.json"
    ds.write_text(
        json.dumps(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServer",
                "metadata": {"name": "m"},
                "spec": {"owner": "ana@example.com", "flavor": "cpu-small", "image": "busybox"},
            }
        )
    )
    flavor = tmp_path / "flavor.json"
    flavor.write_text(
        json.dumps(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServerFlavor",
                "metadata": {"name": "free-gpus"},
                "spec": {},
            }
        )
    )
    kubeconfig = await anyio.to_thread.run_sync(
        lambda: control_plane.service_account_kubeconfig("dev-ana", "user-ana", duration="10m")
    )
    wrong = []
    for case, args, allowed in MATRIX:
        argv = [a.replace("{ds}", str(ds)).replace("{flavor}", str(flavor)) for a in args]
        result = await anyio.to_thread.run_sync(
            lambda a=argv: control_plane.kubectl(*a, kubeconfig=kubeconfig, check=False)
        )
        denied = result.returncode != 0 and "forbidden" in result.stderr.lower()
        if allowed and result.returncode != 0:
            wrong.append(f"{case}: should be allowed: {result.stderr.strip()}")
        if not allowed and not denied:
            wrong.append(
                f"{case}: should be forbidden: rc={result.returncode} "
                f"{(result.stdout + result.stderr).strip()[:200]}"
            )
    assert len(MATRIX) >= 25
    assert wrong == []


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
