"""`devctl quota`: the namespace's hard ceiling, and the Kueue queue the servers wait in."""

from __future__ import annotations

from typing import Any

from devserver.api.meta import KubeObject
from devserver.cli.quota import quota_report, render_quota


def obj(name: str, **fields: Any) -> KubeObject:
    return KubeObject.model_validate({"metadata": {"name": name}, **fields})


QUOTA = obj(
    "dev-user",
    status={
        "hard": {
            "requests.nvidia.com/gpu": "8",
            "requests.cpu": "64",
            "requests.memory": "256Gi",
            "count/devservers.devservers.io": "10",
            "pods": "40",
        },
        "used": {
            "requests.nvidia.com/gpu": "2",
            "requests.cpu": "8500m",
            "requests.memory": "34359738368",
            "count/devservers.devservers.io": "3",
        },
    },
)
LOCAL = obj(
    "devserver",
    spec={"clusterQueue": "vision"},
    status={
        "pendingWorkloads": 1,
        "flavorsReservation": [
            {"name": "a10", "resources": [{"name": "nvidia.com/gpu", "total": "2"}]}
        ],
    },
)
CLUSTER = obj(
    "vision",
    spec={
        "cohortName": "ml",
        "resourceGroups": [
            {
                "flavors": [
                    {
                        "name": "a10",
                        "resources": [
                            {"name": "nvidia.com/gpu", "nominalQuota": "12", "borrowingLimit": "4"}
                        ],
                    },
                    {
                        "name": "h100",
                        "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "4"}],
                    },
                ]
            }
        ],
    },
    status={
        "pendingWorkloads": 3,
        "flavorsReservation": [
            {
                "name": "a10",
                "resources": [{"name": "nvidia.com/gpu", "total": "14", "borrowed": "2"}],
            },
            {
                "name": "h100",
                "resources": [{"name": "nvidia.com/gpu", "total": "4", "borrowed": "0"}],
            },
        ],
    },
)


def test_the_ceiling_is_shown_in_peoples_units() -> None:
    report = quota_report("dev-alice", QUOTA, None, None)
    assert report["limits"] == [
        {"resource": "GPUs", "used": "2", "limit": "8"},
        {"resource": "CPUs", "used": "8.5", "limit": "64"},
        {"resource": "memory", "used": "32Gi", "limit": "256Gi"},
        {"resource": "servers", "used": "3", "limit": "10"},
    ]
    assert report["queue"] is None
    assert "GPU queue" not in render_quota(report)  # no Kueue: nothing about queues


def test_the_queue_says_its_own_gpus_what_is_used_borrowed_free_and_who_waits() -> None:
    report = quota_report("dev-alice", QUOTA, LOCAL, CLUSTER)
    assert report["queue"] == {
        "localQueue": "devserver",
        "clusterQueue": "vision",
        "yourGpus": 2,
        "yourWaiting": 1,
        "cohort": "ml",
        "nominalGpus": 16,
        "gpusInUse": 18,
        "gpusBorrowed": 2,
        "gpusFree": 0,
        "borrowingLimit": 4,
        "waiting": 3,
    }
    text = render_quota(report)
    assert "GPU queue devserver → vision (cohort ml), shared by your team:" in text
    assert (
        "  GPUs: 16 of its own, 18 in use (2 borrowed), 0 free; yours: 2 GPUs, 1 server waiting"
        in text
    )
    assert "it may borrow up to 4 unused GPUs of cohort ml" in text
    assert "waiting in it: 3 servers" in text


def test_a_queue_the_user_may_not_read_is_named_not_guessed() -> None:
    text = render_quota(quota_report("dev-alice", QUOTA, LOCAL, None))
    assert "GPU queue devserver → vision (not readable); yours: 2 GPUs, 1 server waiting" in text
