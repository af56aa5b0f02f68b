"""A flavor change of a running server is parked, never breaking it, when the new pod could not
run: over the user's quota, no node of its group big enough, no room in its Kueue queue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.flavor import DevServerFlavor
from devserver.api.meta import KubeObject
from devserver.reconcilers.devserver.resize import (
    node_problem,
    queue_problem,
    quota_problem,
    resize_problem,
)


def flavor(
    name: str, gpus: int, cpu: str = "4", memory: str = "16Gi", **spec: Any
) -> DevServerFlavor:
    resources = {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)}
    return DevServerFlavor.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "resources": {"requests": resources, "limits": resources},
                "nodeSelector": {"eks.amazonaws.com/nodegroup": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                **spec,
            },
        }
    )


def quota(hard_gpus: int, used_gpus: int) -> KubeObject:
    hard = {
        "requests.nvidia.com/gpu": str(hard_gpus),
        "requests.cpu": "64",
        "requests.memory": "256Gi",
    }
    used = {
        "requests.nvidia.com/gpu": str(used_gpus),
        "requests.cpu": "8",
        "requests.memory": "32Gi",
    }
    return KubeObject.model_validate(
        {"metadata": {"name": "dev-user"}, "status": {"hard": hard, "used": used}}
    )


def node(gpus: int, group: str = "gpu", taint: bool = True) -> KubeObject:
    taints = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}] if taint else []
    return KubeObject.model_validate(
        {
            "metadata": {
                "name": f"n-{group}-{gpus}",
                "labels": {"eks.amazonaws.com/nodegroup": group},
            },
            "spec": {"taints": taints},
            "status": {
                "allocatable": {"cpu": "47", "memory": "180Gi", "nvidia.com/gpu": str(gpus)}
            },
        }
    )


@given(
    hard=st.integers(0, 16),
    others=st.integers(0, 16),
    old=st.integers(0, 8),
    new=st.integers(0, 8),
)
def test_the_quota_check_is_exactly_what_the_api_server_would_allow(
    hard: int, others: int, old: int, new: int
) -> None:
    """Once the running pod is gone, the new one is admitted by the quota iff its GPUs and the
    other servers' fit the limit: parked exactly when the API server would refuse it."""
    used = others + old
    problem = quota_problem(
        {"nvidia.com/gpu": Decimal(old)}, {"nvidia.com/gpu": Decimal(new)}, quota(hard, used)
    )
    assert (problem is None) == (others + new <= hard)
    if problem is not None:
        assert f"it needs {new} GPUs and your quota allows {hard}" in problem
        assert f"your other servers use {others}" in problem


def test_a_flavor_no_node_of_its_group_can_hold_is_parked() -> None:
    nodes = [node(4), node(8, group="other")]
    said = node_problem(flavor("huge", 8), nodes)
    assert said is not None
    assert "it needs 8 GPUs, the largest has 4" in said
    assert node_problem(flavor("big", 4), nodes) is None


def test_a_group_with_no_node_now_is_not_judged() -> None:
    """It may scale from zero: the cluster autoscaler knows its size, the operator does not."""
    assert node_problem(flavor("huge", 8), [node(8, group="other")]) is None


def test_nodes_whose_taints_the_flavor_does_not_tolerate_are_not_its_group() -> None:
    intolerant = flavor("huge", 8, tolerations=[])
    assert node_problem(intolerant, [node(16)]) is None  # not its group: none known
    assert node_problem(flavor("huge", 8), [node(16)]) is None  # tolerated: fits


def cluster_queue(nominal: int, reserved: int) -> KubeObject:
    return KubeObject.model_validate(
        {
            "metadata": {"name": "shared"},
            "spec": {
                "resourceGroups": [
                    {
                        "flavors": [
                            {
                                "name": "a10",
                                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": nominal}],
                            }
                        ]
                    }
                ]
            },
            "status": {
                "flavorsReservation": [
                    {
                        "name": "a10",
                        "resources": [{"name": "nvidia.com/gpu", "total": str(reserved)}],
                    }
                ]
            },
        }
    )


@pytest.mark.parametrize(
    ("old", "new", "nominal", "reserved", "parked"),
    [
        (1, 4, 8, 4, False),  # 4 free + its own 1 back: 5 >= 4
        (1, 4, 8, 6, True),  # 2 free + 1 back: 3 < 4
        (4, 1, 8, 8, False),  # smaller: never waits for the queue
        (0, 2, 2, 0, False),
    ],
)
def test_with_kueue_a_bigger_flavor_waits_for_room_in_the_queue(
    old: int, new: int, nominal: int, reserved: int, parked: bool
) -> None:
    said = queue_problem(old, new, cluster_queue(nominal, reserved), "shared")
    assert (said is not None) is parked
    if said:
        assert "the queue shared has" in said


def test_the_sentence_says_what_waits_what_runs_and_why() -> None:
    said = resize_problem(flavor("small", 1), flavor("huge", 8), quota(8, 1), [node(4)])
    assert said == (
        "the move to huge waits and keeps running on small: no node it can run on is big "
        "enough: it needs 8 GPUs, the largest has 4; pick a smaller flavor or ask an admin"
    )
    assert resize_problem(flavor("small", 1), flavor("big", 4), quota(8, 1), [node(4)]) is None
