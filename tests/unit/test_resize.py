"""A flavor change of a running server is parked, never breaking it, when the new pod could not
run: over the user's quota, no node of its group big enough, no room in its Kueue queue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.flavor import DevServerFlavor
from devserver.api.kueue_gpus import gpus_admitted
from devserver.api.meta import KubeObject
from devserver.api.resources import PODS, RESOURCE_QUOTAS, STATEFULSETS
from devserver.reconcilers.devserver.resize import (
    node_problem,
    queue_problem,
    quota_problem,
    resize_problem,
)
from tests.unit.reconcile_world import NAMESPACE, World


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


# ------------------------------------------------------------------ a distributed server's ranks


@given(
    hard=st.integers(0, 32),
    others=st.integers(0, 16),
    before=st.integers(1, 8),
    after=st.integers(1, 8),
    gpus=st.integers(1, 4),
)
def test_a_gangs_move_counts_every_rank_against_the_quota(
    hard: int, others: int, before: int, after: int, gpus: int
) -> None:
    """Every rank stops before the new gang starts: it fits iff the other servers and all its
    new ranks fit the quota."""
    same = flavor("g", gpus)
    said = resize_problem(same, same, quota(hard, others + before * gpus), [], pods=(before, after))
    assert (said is None) == (others + after * gpus <= hard)
    if said is not None:
        assert said.startswith(
            f"the move to {after} ranks of g waits and keeps running as {before}"
        )
        assert f"it needs {after * gpus} GPUs" in said


def gang(world: World, ranks: int) -> None:
    """A distributed server whose `ranks` pods of gpu-small run."""
    template = {"metadata": {"annotations": {"devservers.io/flavor": "gpu-small"}}}
    world.child(
        STATEFULSETS,
        "box",
        spec={"replicas": ranks, "template": template},
        status={"replicas": ranks, "readyReplicas": ranks},
    )
    for rank in range(ranks):
        world.child(
            PODS,
            f"box-{rank}",
            metadata={"uid": f"rank-{rank}", "creationTimestamp": "2026-01-05T09:00:00Z"},
            spec={"nodeName": "n1"},
            status={"conditions": [{"type": "Ready", "status": "True"}]},
        )


async def test_a_gang_grown_past_the_quota_is_parked_and_its_ranks_run_on() -> None:
    world = World()
    world.flavor("gpu-small", gpus=1)
    world.server(mode="distributed", distributed={"worldSize": 4}, status={"phase": "Running"})
    gang(world, 2)
    hard = {"requests.nvidia.com/gpu": "3"}
    world.put(
        RESOURCE_QUOTAS,
        KubeObject.model_validate(
            {
                "metadata": {"name": "dev-user", "namespace": NAMESPACE},
                "status": {"hard": hard, "used": {"requests.nvidia.com/gpu": "2"}},
            }
        ),
    )
    result = await world.reconcile("distributed", "box")
    assert [c for c in world.kube.writes("StatefulSet")] == []  # not a rank stopped
    parked = next(
        c for c in world.kube.status_patches()[-1]["conditions"] if c["type"] == "Resized"
    )
    assert (parked["status"], parked["reason"]) == ("False", "Parked")
    assert parked["message"] == (
        "the move to 4 ranks of gpu-small waits and keeps running as 2 of gpu-small: it needs "
        "4 GPUs and your quota allows 3, of which your other servers use 0: stop one "
        "(`devctl list`) or ask an admin for more"
    )
    assert result is not None and result.requeue_after == 60  # looked at again
    status = world.kube.status_patches()[-1]
    assert (status["readyRanks"], len(status["ranks"])) == (2, 2)  # the gang as it runs

    world.put(  # an admin raises the quota: the gang grows
        RESOURCE_QUOTAS,
        KubeObject.model_validate(
            {
                "metadata": {"name": "dev-user", "namespace": NAMESPACE},
                "status": {
                    "hard": {"requests.nvidia.com/gpu": "4"},
                    "used": {"requests.nvidia.com/gpu": "2"},
                },
            }
        ),
    )
    await world.reconcile("distributed", "box")
    assert world.kube.writes("StatefulSet")


async def test_a_gang_shrunk_is_never_parked() -> None:
    world = World()
    world.flavor("gpu-small", gpus=1)
    world.server(mode="distributed", distributed={"worldSize": 2}, status={"phase": "Running"})
    gang(world, 4)
    await world.reconcile("distributed", "box")
    assert world.kube.writes("StatefulSet")
    assert not any(c["type"] == "Resized" for c in world.kube.status_patches()[-1]["conditions"])


def test_the_queue_counts_what_its_admitted_workloads_hold_when_its_status_lags() -> None:
    """Kueue writes a ClusterQueue's status now and then; the Workloads' admissions come on the
    watch at once: the larger is what the queue holds."""
    lagging = cluster_queue(8, 0)
    assert queue_problem(1, 4, lagging, "shared") is None
    said = queue_problem(1, 4, lagging, "shared", admitted=6)
    assert said is not None and "the queue shared has 3 free" in said
    admitted = {
        "status": {
            "conditions": [{"type": "QuotaReserved", "status": "True"}],
            "admission": {
                "clusterQueue": "shared",
                "podSetAssignments": [{"resourceUsage": {"nvidia.com/gpu": "4"}, "count": 4}],
            },
        }
    }
    assert gpus_admitted(admitted, "shared") == 4  # the pod set's total
    assert gpus_admitted(admitted, "other") == 0
    admitted["status"]["conditions"].append({"type": "Finished", "status": "True"})
    assert gpus_admitted(admitted, "shared") == 0
