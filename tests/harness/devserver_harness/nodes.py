"""Fake nodes modelled on EKS managed node groups, played by kwok.

Capacities follow the EC2 instance types (vCPU, memory, GPUs, EKS max-pods); allocatable takes the
usual EKS reservations off. GPU nodes carry the NVIDIA device plugin's resource and the taint EKS
GPU node groups are usually given, so only pods that tolerate it land there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: int
    memory_gib: int
    max_pods: int
    gpus: int = 0
    gpu_product: str = ""
    efa: int = 0

    def capacity(self) -> dict[str, str]:
        out = {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_gib}Gi",
            "pods": str(self.max_pods),
            "ephemeral-storage": "100Gi",
        }
        if self.gpus:
            out[GPU_RESOURCE] = str(self.gpus)
        if self.efa:
            out["vpc.amazonaws.com/efa"] = str(self.efa)
        return out

    def allocatable(self) -> dict[str, str]:
        out = self.capacity()
        out["cpu"] = f"{self.cpu * 1000 - 90}m"  # kube-reserved on EKS AMIs
        out["memory"] = f"{self.memory_gib * 1024 - 1024}Mi"
        out["ephemeral-storage"] = "95Gi"
        return out


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("m5.2xlarge", cpu=8, memory_gib=32, max_pods=58),
        InstanceType(
            "g4dn.xlarge", cpu=4, memory_gib=16, max_pods=29, gpus=1, gpu_product="Tesla-T4"
        ),
        InstanceType(
            "g5.12xlarge", cpu=48, memory_gib=192, max_pods=737, gpus=4, gpu_product="NVIDIA-A10G"
        ),
        InstanceType(
            "p4d.24xlarge",
            cpu=96,
            memory_gib=1152,
            max_pods=737,
            gpus=8,
            gpu_product="NVIDIA-A100-SXM4-40GB",
            efa=4,
        ),
    )
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    instance_type: str
    nodegroup: str
    zone: str = "us-east-1a"
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def instance(self) -> InstanceType:
        return INSTANCE_TYPES[self.instance_type]

    def manifest(self) -> dict[str, Any]:
        itype = self.instance
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": itype.name,
            "topology.kubernetes.io/region": self.zone[:-1],
            "topology.kubernetes.io/zone": self.zone,
            "eks.amazonaws.com/nodegroup": self.nodegroup,
            "eks.amazonaws.com/capacityType": "ON_DEMAND",
            "type": "kwok",
            **self.extra_labels,
        }
        taints: list[dict[str, str]] = []
        if itype.gpus:
            labels["nvidia.com/gpu.present"] = "true"
            labels["nvidia.com/gpu.product"] = itype.gpu_product
            labels["nvidia.com/gpu.count"] = str(itype.gpus)
            taints.append(dict(GPU_TAINT))
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {
                    KWOK_ANNOTATION: "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
            },
            "spec": {"taints": taints, "providerID": f"aws:///{self.zone}/i-{self.name}"},
            "status": {
                "capacity": itype.capacity(),
                "allocatable": itype.allocatable(),
            },
        }


def default_node_pool() -> list[NodeSpec]:
    """A small EKS-like cluster: a CPU group, a T4 group across two zones, one 8-GPU node."""
    return [
        NodeSpec("cpu-1", "m5.2xlarge", "cpu", "us-east-1a"),
        NodeSpec("cpu-2", "m5.2xlarge", "cpu", "us-east-1b"),
        NodeSpec("gpu-t4-1", "g4dn.xlarge", "gpu-small", "us-east-1a"),
        NodeSpec("gpu-t4-2", "g4dn.xlarge", "gpu-small", "us-east-1b"),
        NodeSpec("gpu-a100-1", "p4d.24xlarge", "gpu-large", "us-east-1a"),
    ]
