"""RBAC for ServiceAccount tokens, exec and logs through the API server, the audit trail."""

from __future__ import annotations

import json

import anyio
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient

from devserver.api.resources import SERVICES
from devserver.client import new_client
from devserver.controller.applied import apply_if_changed
from devserver.reconcilers.children import Attempts
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.pytest_plugin import wait_for
from tests.integration.test_cluster_basics import pod, running_pod

pytestmark = pytest.mark.integration


async def test_service_account_token_gets_what_rbac_allows_and_403_otherwise(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(admin_api), client.RbacAuthorizationV1Api(admin_api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="alice"))
    )
    await rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"]
                )
            ],
        ),
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="alice-reads-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="alice", namespace=namespace)
            ],
        ),
    )
    kubeconfig = await anyio.to_thread.run_sync(
        lambda: control_plane.service_account_kubeconfig(namespace, "alice", duration="10m")
    )
    assert json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]

    async with await config.new_client_from_config(config_file=str(kubeconfig)) as alice_api:
        alice = client.CoreV1Api(alice_api)
        assert (await alice.list_namespaced_pod(namespace)).items == []  # allowed
        for denied in (
            alice.list_namespaced_secret(namespace),  # other resource
            alice.create_namespaced_pod(namespace, pod("sneaky")),  # other verb
            alice.list_namespaced_pod("default"),  # other namespace
        ):
            with pytest.raises(client.ApiException) as forbidden:
                await denied
            assert forbidden.value.status == 403
            assert f"system:serviceaccount:{namespace}:alice" in forbidden.value.body
    assert not (await core.list_namespaced_pod(namespace)).items, "the denied create made nothing"

    user = f"system:serviceaccount:{namespace}:alice"
    entries = [json.loads(line) for line in control_plane.audit_log.read_text().splitlines()]
    mine = [e for e in entries if e["user"]["username"] == user]
    verdicts = {
        (e["verb"], e["objectRef"].get("resource"), e["responseStatus"]["code"]) for e in mine
    }
    assert ("list", "pods", 200) in verdicts
    assert ("list", "secrets", 403) in verdicts


async def test_exec_and_logs_round_trip_through_the_api_server(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_pod(namespace, pod("shell"))
    await running_pod(core, namespace, "shell")

    result = await anyio.to_thread.run_sync(
        lambda: control_plane.kubectl(
            "exec", "-n", namespace, "shell", "--", "sh", "-c", "echo hello from $((6 * 7))"
        )
    )
    assert result.stdout.strip() == "hello from 42"

    failed = await anyio.to_thread.run_sync(
        lambda: control_plane.kubectl(
            "exec", "-n", namespace, "shell", "--", "sh", "-c", "exit 3", check=False
        )
    )
    # kwok reports a command's failure as an exec error carrying its status, not as the exit
    # code a kubelet would pass through; a failure must still be visible as one.
    assert failed.returncode != 0
    assert "exit status 3" in failed.stderr

    logs = await core.read_namespaced_pod_log("shell", namespace)
    assert "container started" in logs


async def test_a_denial_of_the_operators_own_permission_is_told_apart_from_a_quotas(
    admin_api: ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    """The real API server's words: a request RBAC denies reads as the operator's missing
    permission (the admin's to fix), a quota's 403 in the same namespace as the user's."""
    core = client.CoreV1Api(admin_api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="old-chart"))
    )
    await core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-services"),
            spec=client.V1ResourceQuotaSpec(hard={"services": "0"}),
        ),
    )

    async def counted() -> object:  # the quota is enforced once its controller has counted
        quota = await core.read_namespaced_resource_quota("no-services", namespace)
        return quota.status and quota.status.hard

    await wait_for(counted, timeout=60, what="the quota's first count")
    kubeconfig = await anyio.to_thread.run_sync(
        lambda: control_plane.service_account_kubeconfig(namespace, "old-chart", duration="10m")
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "box", "namespace": namespace},
        "spec": {"ports": [{"port": 22}]},
    }
    operator = await new_client(str(kubeconfig))  # its chart gave it no permission at all
    admin = await new_client(str(control_plane.kubeconfig))
    try:
        denied, over_quota = Attempts(), Attempts()
        await denied.attempt("Service box", operator.delete(SERVICES, "box", namespace))
        await over_quota.attempt(
            "Service", apply_if_changed(admin, SERVICES, service, None, field_manager="t")
        )
    finally:
        await operator.close()
        await admin.close()

    assert denied.refused and denied.not_permitted == denied.refused
    assert denied.condition(1).reason == "NotPermitted"
    assert "upgrade the devserver chart" in denied.condition(1).message
    assert over_quota.refused and not over_quota.not_permitted, over_quota.refused
    assert "exceeded quota" in over_quota.refused[0]
    assert over_quota.condition(1).reason == "Refused"
    assert not (await core.list_namespaced_service(namespace)).items, "nothing was made"
