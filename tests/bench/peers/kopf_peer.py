"""The standalone DevServer job in kopf, as its docs show it: a creation handler makes the
children (adopted: owner references) from the spec and the flavor, an update handler makes the
Deployment follow a changed spec (flavor, stop), and an event handler on the Deployments it
labelled writes the DevServer's status once the pod is available.

Settings: kopf's defaults (smart progress storage in annotations and status, Kubernetes Events
posted for handler outcomes, a worker per object), plus what its docs recommend at scale:
`settings.posting.level = WARNING` (no Event per successful handler), and a peering-free run
(`--standalone`, one operator). Children are written with kubernetes_asyncio, the asyncio client
its docs pair it with. Run: `kopf run --standalone --all-namespaces tests/bench/peers/kopf_peer.py`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION = "devservers.io", "v1"
MANAGED = {"app.kubernetes.io/managed-by": "kopf-peer"}
_api: client.ApiClient | None = None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _api
    settings.posting.level = logging.WARNING
    await config.load_kube_config()
    _api = client.ApiClient()
    _api.user_agent = "kopf-peer"  # told apart from the harness's kubernetes_asyncio in audits


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _api is not None:
        await _api.close()


def _children(name: str, spec: dict[str, Any], flavor: dict[str, Any]) -> list[dict[str, Any]]:
    labels = {**MANAGED, "devservers.io/name": name}
    resources = flavor.get("spec", {}).get("resources", {})
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{name}-home", "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0 if spec.get("stopped") else 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"devservers.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "dev",
                            "image": spec["image"],
                            "resources": resources,
                            "ports": [{"name": "ssh", "containerPort": 2222}],
                            "volumeMounts": [{"name": "home", "mountPath": "/home/dev"}],
                        }
                    ],
                    "volumes": [
                        {"name": "home", "persistentVolumeClaim": {"claimName": f"{name}-home"}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"devservers.io/name": name},
            "ports": [{"name": "ssh", "port": 22, "targetPort": "ssh"}],
        },
    }
    return [claim, deployment, service]


async def _flavor(spec: kopf.Spec) -> dict[str, Any]:
    assert _api is not None
    try:
        found: dict[str, Any] = await client.CustomObjectsApi(_api).get_cluster_custom_object(
            GROUP, VERSION, "devserverflavors", spec["flavor"]
        )
    except ApiException as error:
        raise kopf.TemporaryError(f"flavor {spec['flavor']}: {error.reason}", delay=10) from None
    return found


@kopf.on.create(GROUP, VERSION, "devservers", labels={"bench.devservers.io/contender": "kopf"})
async def create_devserver(
    spec: kopf.Spec, name: str, namespace: str, body: kopf.Body, **_: Any
) -> dict[str, Any]:
    flavor = await _flavor(spec)
    children = _children(name, dict(spec), flavor)
    kopf.adopt(children, owner=body)
    core, apps = client.CoreV1Api(_api), client.AppsV1Api(_api)
    create = {
        "PersistentVolumeClaim": core.create_namespaced_persistent_volume_claim,
        "Deployment": apps.create_namespaced_deployment,
        "Service": core.create_namespaced_service,
    }
    for child in children:
        try:
            await create[child["kind"]](namespace, child)
        except ApiException as error:
            if error.status != 409:  # made by an earlier try of this handler
                raise
    return {"children": [c["kind"] for c in children]}


@kopf.on.update(
    GROUP, VERSION, "devservers", field="spec", labels={"bench.devservers.io/contender": "kopf"}
)
async def update_devserver(spec: kopf.Spec, name: str, namespace: str, **_: Any) -> None:
    """A changed flavor, image or stop: the Deployment follows (a strategic merge patch)."""
    flavor = await _flavor(spec)
    deployment = _children(name, dict(spec), flavor)[1]
    await client.AppsV1Api(_api).patch_namespaced_deployment(
        name,
        namespace,
        {"spec": deployment["spec"]},
        _content_type="application/strategic-merge-patch+json",
    )


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(body: kopf.Body, namespace: str, **_: Any) -> None:
    assert _api is not None
    owner = body["metadata"]["labels"]["devservers.io/name"]
    ready = (body.get("status") or {}).get("availableReplicas", 0) >= 1
    phase = "Running" if ready else "Pending"
    custom = client.CustomObjectsApi(_api)
    try:
        current = await custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "devservers", owner
        )
    except ApiException as error:
        if error.status == 404:
            return
        raise
    if (current.get("status") or {}).get("phase") == phase:
        return
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "PodReady" if ready else "Starting",
        "message": "the dev server is up" if ready else "the pod is starting",
        "lastTransitionTime": now,
    }
    status = {"status": {"phase": phase, "conditions": [condition]}}
    await custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "devservers",
        owner,
        status,
        _content_type="application/merge-patch+json",
    )
