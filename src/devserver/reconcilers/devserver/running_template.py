"""A running dev server's pod is replaced only for a change its user made (pure).

The operator renders the pod template from the DevServer *and* from itself (the agent's
entrypoint, volumes, defaults) and from the flavor object. A new operator version or an admin's
edit of a flavor would otherwise restart every running server at once, killing shells and
training runs. So a workload that is running keeps its live template unless what the user
controls changed — the pod inputs of the spec (flavor name, image, volumes, SSH, the distributed
shape), recorded as a hash on the workload — or it is being started or stopped, or is not up at
all. Everything else takes effect at the server's next start.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject
from devserver.api.names import LEGACY_NAME_LABEL, POD_INPUTS, flavor_of
from devserver.api.resources import Resource
from devserver.client import ApiError, KubeClient


def pod_inputs(ds: DevServer) -> str:
    spec = ds.spec
    fields = {
        "flavor": spec.flavor,
        "image": spec.image,
        "home": spec.persistent_home_size,
        "shared": spec.shared_volume_claim_name,
        "ssh": spec.enable_ssh,
        "mode": spec.mode.value,
        "distributed": spec.distributed.model_dump(mode="json") if spec.distributed else None,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def keep_running_template(
    intent: dict[str, Any], live: KubeObject | None, ds: DevServer
) -> dict[str, Any]:
    """`intent` with the live pod template when the workload runs and its user changed nothing
    that shapes the pod; the inputs hash is recorded on the workload either way. Neither
    argument is changed: the levels written to are copied (a whole deep copy of two pod
    templates cost a third of a converged reconcile)."""
    inputs = pod_inputs(ds)
    metadata = intent["metadata"]
    intent = {
        **intent,
        "metadata": {**metadata, "annotations": {**metadata.get("annotations", {})}},
        "spec": {**intent["spec"]},
    }
    intent["metadata"]["annotations"][POD_INPUTS] = inputs
    if live is None:
        return intent
    live_spec = live.extra.get("spec") or {}
    live_status = live.extra.get("status") or {}
    # StatefulSet volume templates cannot change after creation: always the live ones
    if "volumeClaimTemplates" in intent["spec"] and live_spec.get("volumeClaimTemplates"):
        intent["spec"]["volumeClaimTemplates"] = live_spec["volumeClaimTemplates"]
    wanted = intent["spec"].get("replicas")
    # "running": every replica up. A server still failing to start (unschedulable, a bad
    # template) takes a fix at once; there is no work in it to protect.
    running = bool(wanted) and live_status.get("readyReplicas") == live_spec.get("replicas")
    recorded = live.metadata.annotations.get(POD_INPUTS)
    template = live_spec.get("template") or {}
    if recorded is None:  # made before this rule existed: compare what the user controls
        same_inputs = _image(template) == _image(intent["spec"]["template"]) and _flavor(
            template
        ) == _flavor(intent["spec"]["template"])
    else:
        same_inputs = recorded == inputs
    changes_size = live_spec.get("replicas") != wanted
    if running and same_inputs and not changes_size and template:
        intent["spec"]["template"] = template  # the cache's: never written to below
    # a selector never changes: a workload made before 0.2 keeps its own (api/names.py), and a
    # new template it runs carries those labels too (labels(ds) has them already)
    if adopted_selector(live_spec.get("selector"), ds):
        selector = live_spec["selector"]
        intent["spec"]["selector"] = {"matchLabels": {**selector["matchLabels"]}}
        chosen = intent["spec"]["template"]
        meta = chosen.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), **selector["matchLabels"]}
        intent["spec"]["template"] = {**chosen, "metadata": {**meta, "labels": labels}}
    return intent


def select_as_workload(intent: dict[str, Any], legacy: bool) -> dict[str, Any]:
    """A Service selects the pods by the key its workload selects them by: the pods of a
    workload made before 0.2 may have only the old key (api/names.py)."""
    if not legacy:
        return intent
    intent = copy.deepcopy(intent)
    intent["spec"]["selector"] = {LEGACY_NAME_LABEL: intent["metadata"]["name"]}
    return intent


def adopted_selector(selector: Any, ds: DevServer) -> bool:
    """The selector a workload made before 0.2 has: `{matchLabels: {devserver.io/name: …}}`."""
    return isinstance(selector, dict) and selector == {
        "matchLabels": {LEGACY_NAME_LABEL: ds.metadata.name}
    }


def _image(template: dict[str, Any]) -> str | None:
    containers = (template.get("spec") or {}).get("containers") or [{}]
    image = containers[0].get("image")
    return str(image) if image else None


def _flavor(template: dict[str, Any]) -> str | None:
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    flavor = flavor_of(annotations)
    return str(flavor) if flavor else None


async def scale_to_zero(
    client: KubeClient,
    resource: Resource[Any],
    live: KubeObject | None,
    *,
    stale: bool = False,
) -> KubeObject | None:
    """A stop needs no flavor: with the flavor gone or invalid, the workload is still scaled to
    zero (its template untouched), so a stopped server never keeps its GPUs. Through the scale
    subresource, which no admission webhook of Kueue's intercepts: a stop works while Kueue is
    down. A `stale` cache (`OwnWrites`) may show zero replicas where our start has set more:
    the patch is sent whatever it shows. Returns the API server's answer, if sent."""
    if live is None or not (stale or (live.extra.get("spec") or {}).get("replicas")):
        return None
    patch = {"spec": {"replicas": 0}}
    try:
        scaled: KubeObject = await client.patch(
            resource, live.metadata.name, patch, live.metadata.namespace, subresource="scale"
        )
    except ApiError as error:
        if error.status != 404:  # gone already (the garbage collector was first): nothing held
            raise
        return None
    return scaled
