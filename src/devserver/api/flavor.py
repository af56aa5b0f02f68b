"""DevServerFlavor (cluster-scoped, short name `dsf`): a named hardware preset.

Admins own flavors; users pick one by name. A flavor says what a dev server's pod requests and
may use, where it may run (node selector, tolerations), how large its `/dev/shm` is, and what an
hour of it costs (for `devctl cost`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from devserver.api.meta import KubeObject
from devserver.api.schema import MAX_PRICE_PER_HOUR, Condition, SpecModel

GROUP = "devservers.io"
VERSION = "v1"


class Toleration(SpecModel):
    key: str | None = Field(default=None, description="Taint key to tolerate; empty: all keys.")
    operator: Literal["Equal", "Exists"] = Field(default="Equal", description="Equal or Exists.")
    value: str | None = Field(default=None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty: all effects."
    )


class ResourceRequirements(SpecModel):
    requests: dict[str, str] = Field(
        default_factory=dict,
        description="Guaranteed resources, e.g. cpu: '4', memory: 16Gi, nvidia.com/gpu: '1'.",
    )
    limits: dict[str, str] = Field(
        default_factory=dict, description="Upper bounds; each must be >= its request."
    )


class DevServerFlavorSpec(SpecModel):
    description: str = Field(default="", description="One line shown by `devctl flavors`.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Pod resources of a dev server."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        alias="nodeSelector",
        description="Node labels required, e.g. node.kubernetes.io/instance-type: g4dn.xlarge.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pods tolerate (e.g. the GPU taint)."
    )
    shm_size: str | None = Field(
        default=None,
        alias="shmSize",
        description="Size of the memory-backed /dev/shm; default: half the memory limit.",
    )
    price_per_hour: float | None = Field(
        default=None,
        alias="pricePerHour",
        ge=0,
        le=MAX_PRICE_PER_HOUR,
        description="Cost of one hour, in USD.",
    )


class DevServerFlavorStatus(SpecModel):
    valid: bool | None = Field(default=None, description="Whether the spec passed validation.")
    message: str = Field(default="", description="Why the flavor is invalid, if it is.")
    dev_servers: int = Field(default=0, alias="devServers", description="DevServers using it.")
    conditions: list[Condition] = Field(default_factory=list, description="Valid.")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class DevServerFlavor(KubeObject):
    """A named hardware preset for dev servers."""

    spec: DevServerFlavorSpec = Field(default_factory=DevServerFlavorSpec)
    status: DevServerFlavorStatus | None = None
