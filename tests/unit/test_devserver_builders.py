"""Pure builders and status of the DevServer and flavor reconcilers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devserver.api import crd
from devserver.api.devserver import DevServer
from devserver.api.flavor import DevServerFlavor, DevServerFlavorSpec
from devserver.api.meta import KubeObject
from devserver.api.quantity import QuantityError, format_binary, parse_quantity
from devserver.controller.applied import is_applied
from devserver.reconcilers.devserver.pod import shm_size
from devserver.reconcilers.devserver.standalone import (
    desired_deployment,
    desired_home_claim,
    desired_service,
    observed_status,
)
from devserver.reconcilers.devserver.status import Observed
from devserver.reconcilers.flavor import validate
from devserver.reconcilers.naming import user_label

REPO = Path(__file__).resolve().parents[2]


def ds(**spec: Any) -> DevServer:
    return DevServer.model_validate(
        {
            "metadata": {"name": "box", "namespace": "dev-alice", "uid": "u-1", "generation": 2},
            "spec": {
                "owner": "Alice.Smith@Example.com",
                "flavor": "gpu-small",
                "image": "pytorch/pytorch:2.5.1",
                **spec,
            },
        }
    )


def flavor(**spec: Any) -> DevServerFlavor:
    base = {
        "resources": {
            "requests": {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"},
        },
        "nodeSelector": {"node.kubernetes.io/instance-type": "g4dn.xlarge"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    return DevServerFlavor.model_validate(
        {"metadata": {"name": "gpu-small"}, "spec": {**base, **spec}}
    )


def test_crd_schemas_are_structural() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for spec in crd.ALL:
        walk(crd.crd(spec), spec.kind)


def test_deployment_carries_the_flavor_and_mounts_the_home() -> None:
    deployment = desired_deployment(ds(), flavor())
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["replicas"] == 1
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g4dn.xlarge"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the entrypoint starts the activity agent, then becomes `sleep infinity`
    assert container["command"] == ["/bin/sh", "/opt/devserver/entrypoint.sh", "sleep", "infinity"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "box-home"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "box-agent"
    env = {e["name"]: e for e in container["env"]}
    assert env["DEVSERVER_LEASE"]["value"] == "box-activity"
    assert env["DEVSERVER_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    podinfo = next(v for v in pod["volumes"] if v["name"] == "devserver-podinfo")
    assert podinfo["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.annotations"
    assert spec["template"]["metadata"]["labels"]["devserver.io/user"] == "alice.smith"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_shared_volume_and_ssh_are_optional() -> None:
    pod = desired_deployment(ds(sharedVolumeClaimName="team-efs", enableSSH=False), flavor())
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]
    assert "ports" not in container


def test_home_claim_is_owned_only_without_retention() -> None:
    kept = desired_home_claim(ds())
    assert "ownerReferences" not in kept["metadata"]
    assert kept["spec"]["resources"]["requests"]["storage"] == "20Gi"
    dropped = desired_home_claim(ds(retainHomeOnDelete=False))
    assert dropped["metadata"]["ownerReferences"][0]["kind"] == "DevServer"


def test_shm_defaults_to_half_the_memory_limit_in_canonical_form() -> None:
    assert shm_size(flavor()) == "6Gi"
    assert shm_size(flavor(shmSize="2Gi")) == "2Gi"
    assert format_binary(Decimal(3 * 2**29)) == "1536Mi"


def test_quantities() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("1e3") == 1000
    with pytest.raises(QuantityError, match="not a Kubernetes quantity"):
        parse_quantity("lots")


def test_flavor_validation_says_what_is_wrong() -> None:
    assert validate(flavor().spec) is None
    spec = DevServerFlavorSpec.model_validate(
        {"resources": {"requests": {"cpu": "8"}, "limits": {"cpu": "4"}}}
    )
    assert validate(spec) == (
        "resources.requests.cpu (8) exceeds its limit (4); lower the request or raise the limit"
    )
    bad = DevServerFlavorSpec.model_validate({"resources": {"limits": {"memory": "a lot"}}})
    assert "not a Kubernetes quantity" in (validate(bad) or "")
    gpu = DevServerFlavorSpec.model_validate(
        {"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}}
    )
    assert "equal request and limit" in (validate(gpu) or "")


def test_user_labels_are_label_safe() -> None:
    assert user_label("Bob@corp.io") == "bob"
    assert user_label("weird name!") == "weird-name"
    assert user_label("@@@") == "unknown"


def test_status_reports_the_schedulers_reason_and_keeps_transition_times() -> None:
    pending = KubeObject.model_validate(
        {
            "metadata": {"name": "box-abc", "namespace": "dev-alice"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        }
    )
    status = observed_status(ds(), Observed(None, None, [pending], None))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in ready["message"]
    again = observed_status(
        DevServer.model_validate({**ds().model_dump(by_alias=True), "status": status}),
        Observed(None, None, [pending], None),
    )
    assert again == status, "nothing changed: the same status, timestamps included"


def test_a_pod_refused_by_the_quota_says_so() -> None:
    deployment = KubeObject.model_validate(
        {
            "metadata": {"name": "box", "namespace": "dev-alice"},
            "status": {
                "conditions": [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": 'pods "box-1" is forbidden: exceeded quota: dev-user, '
                        "requested: requests.nvidia.com/gpu=8, used: 0, limited: 1",
                    }
                ]
            },
        }
    )
    status = observed_status(ds(), Observed(None, deployment, [], None))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", "QuotaExceeded")
    assert "requests.nvidia.com/gpu=8" in ready["message"]


def test_is_applied_compares_only_our_fields() -> None:
    live = {
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "extra": True},
        "status": {"x": 1},
    }
    assert is_applied({"spec": {"replicas": 1}}, live)
    assert not is_applied({"spec": {"replicas": 2}}, live)
    assert not is_applied({"spec": {"missing": 1}}, live)
    assert is_applied({"l": [{"a": 1}]}, {"l": [{"a": 1, "b": 2}]})
    assert not is_applied({"l": [{"a": 1}]}, {"l": [{"a": 1}, {"a": 2}]})


def test_image_pull_failures_degrade_the_status() -> None:
    # kwok runs any image, so this is proven here rather than on the local cluster
    pod = KubeObject.model_validate(
        {
            "metadata": {"name": "box-abc", "namespace": "dev-alice"},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "dev",
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": 'Back-off pulling image "pytorch/pytorch:nope"',
                            }
                        },
                    }
                ],
            },
        }
    )
    status = observed_status(ds(), Observed(None, None, [pod], None))
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert degraded["status"] == "True"
    assert ready["reason"] == "ImagePullBackOff"
    assert "pytorch/pytorch:nope" in ready["message"]


def test_a_missing_flavor_on_a_new_server_says_what_to_do() -> None:
    status = observed_status(ds(), Observed("flavor 'x' does not exist; pick one", None, [], None))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["reason"]) == ("Pending", "FlavorUnavailable")
    assert "appliedFlavor" not in status


def test_the_agent_role_allows_exactly_its_own_lease() -> None:
    from devserver.reconcilers.devserver.activity_agent import (
        desired_role,
        desired_role_binding,
        desired_scripts,
    )

    role = desired_role(ds(enableSSH=False))  # with SSH, its keys too (test_ssh_in_dev_pods)
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["box-activity"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    binding = desired_role_binding(ds())
    assert binding["subjects"][0]["name"] == "box-agent"
    scripts = desired_scripts("dev-alice")["data"]
    assert scripts["agent.py"].startswith('"""devserver activity agent')
    assert 'exec "$@"' in scripts["entrypoint.sh"]


def test_a_running_pod_keeps_its_template_unless_its_user_changed_something() -> None:
    from devserver.api.names import POD_INPUTS
    from devserver.reconcilers.devserver.running_template import keep_running_template, pod_inputs

    server = ds()
    new = desired_deployment(server, flavor())
    old_template = {
        "metadata": {"annotations": {"era": "old", "devserver.io/flavor": "gpu-small"}},
        "spec": {"containers": [{"name": "dev", "image": "pytorch/pytorch:2.5.1"}]},
    }

    def live(replicas: int, inputs: str | None, ready: int | None = None) -> KubeObject:
        notes = {POD_INPUTS: inputs} if inputs else {}
        return KubeObject.model_validate(
            {
                "metadata": {"name": "box", "annotations": notes},
                "spec": {"replicas": replicas, "template": old_template},
                "status": {"readyReplicas": replicas if ready is None else ready},
            }
        )

    kept = keep_running_template(new, live(1, pod_inputs(server)), server)
    assert kept["spec"]["template"] == old_template  # operator-side change: waits
    assert kept["metadata"]["annotations"][POD_INPUTS] == pod_inputs(server)
    adopted = keep_running_template(new, live(1, None), server)  # made by an older operator
    assert adopted["spec"]["template"] == old_template
    other = ds(image="pytorch/pytorch:2.6.0")  # ... and the image changed while it was down
    changed = desired_deployment(other, flavor())
    assert keep_running_template(changed, live(1, None), other)["spec"]["template"] != (
        old_template
    )
    failing = keep_running_template(new, live(1, pod_inputs(server), ready=0), server)
    assert failing["spec"]["template"] == new["spec"]["template"]  # not up: nothing to protect
    moved = ds(image="pytorch/pytorch:2.6.0")  # the user changed the image
    assert keep_running_template(new, live(1, pod_inputs(server)), moved)["spec"]["template"] != (
        old_template
    )
    started = keep_running_template(new, live(0, pod_inputs(server)), server)  # a start
    assert started["spec"]["template"] == new["spec"]["template"]
    stopping = desired_deployment(server, flavor(), replicas=0)
    assert (
        keep_running_template(stopping, live(1, pod_inputs(server)), server)["spec"]["template"]
        == stopping["spec"]["template"]
    )
    assert pod_inputs(ds(lifecycle={"timeToLive": "9h"})) == pod_inputs(server)  # extend: no


def test_workloads_and_services_made_before_the_label_move_keep_their_selectors() -> None:
    """Selectors are immutable: a Deployment made with `devserver.io/name` keeps selecting by it,
    and a template it runs next carries that label; new ones select by `devservers.io/name`; a
    Service selects by the key its workload selects by."""
    from devserver.api.names import LEGACY_NAME_LABEL, NAME_LABEL
    from devserver.reconcilers.devserver.running_template import (
        keep_running_template,
        select_as_workload,
    )

    server = ds()
    new = desired_deployment(server, flavor())
    assert new["spec"]["selector"] == {"matchLabels": {NAME_LABEL: "box"}}
    labels = new["spec"]["template"]["metadata"]["labels"]
    assert labels[NAME_LABEL] == labels[LEGACY_NAME_LABEL] == "box"

    old_selector = {"matchLabels": {LEGACY_NAME_LABEL: "box"}}
    stopped = KubeObject.model_validate(
        {
            "metadata": {"name": "box"},
            "spec": {"replicas": 0, "selector": old_selector, "template": {"metadata": {}}},
        }
    )
    started = keep_running_template(new, stopped, server)  # a new template, the old selector
    assert started["spec"]["selector"] == old_selector
    template_labels = started["spec"]["template"]["metadata"]["labels"]
    assert template_labels[LEGACY_NAME_LABEL] == "box" and template_labels[NAME_LABEL] == "box"
    assert stopped.extra["spec"]["selector"] == old_selector  # the cache is not touched

    made_now = KubeObject.model_validate(
        {"metadata": {"name": "box"}, "spec": {"replicas": 0, "selector": new["spec"]["selector"]}}
    )
    assert (
        keep_running_template(new, made_now, server)["spec"]["selector"]
        == (new["spec"]["selector"])
    )

    service = desired_service(server)
    assert service["spec"]["selector"] == {NAME_LABEL: "box"}
    legacy = select_as_workload(service, legacy=True)
    assert legacy["spec"]["selector"] == {LEGACY_NAME_LABEL: "box"}
    assert service["spec"]["selector"] == {NAME_LABEL: "box"}  # a copy, not the intent changed
    assert select_as_workload(service, legacy=False) == service
