"""A running dev server's pod is replaced only for a change its user made (pure).

The operator renders the pod template from the DevServer *and* from itself (the agent's
entrypoint, volumes, defaults) and from the flavor object. A new operator version or an admin's
edit of a flavor would otherwise restart every running server at once, killing shells and
training runs. So a workload that is running keeps its live template unless what the user
controls changed — the pod inputs of the spec (flavor name, image, volumes, SSH, the distributed
shape), recorded as a hash on the workload — or it is being started or stopped. Everything else
takes effect at the server's next start.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject

POD_INPUTS = "devservers.io/pod-inputs"


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
    that shapes the pod; the inputs hash is recorded on the workload either way."""
    intent = copy.deepcopy(intent)
    inputs = pod_inputs(ds)
    intent["metadata"].setdefault("annotations", {})[POD_INPUTS] = inputs
    if live is None:
        return intent
    live_spec = live.extra.get("spec") or {}
    running = bool(live_spec.get("replicas")) and bool(intent["spec"].get("replicas"))
    recorded = live.metadata.annotations.get(POD_INPUTS)
    same_inputs = recorded is None or recorded == inputs  # None: made before this rule existed
    changes_size = live_spec.get("replicas") != intent["spec"].get("replicas")
    if running and same_inputs and not changes_size and live_spec.get("template"):
        intent["spec"]["template"] = live_spec["template"]
    return intent
