"""DevServer (namespaced, short name `devsrv`): one user's development server.

Standalone: a Deployment of one pod with a persistent home volume. Distributed: a StatefulSet
of `worldSize` pods wired for torchrun. The flavor names the hardware; changing it moves the
server to new hardware with the same home volume.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from devserver.api.meta import KubeObject
from devserver.api.schema import MAX_PRICE_PER_HOUR, Condition, SpecModel

# Derived object names append at most this many characters (e.g. "-home", "-scripts") and
# StatefulSet pods "-NN"; DNS labels hold 63.
MAX_NAME_LENGTH = 40
# A DevServer's name becomes a Service, a hostname and label values: a DNS-1035 label (a
# DevServer name is otherwise any DNS-1123 subdomain, dots and leading digits included).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]{1,9}(s|m|h|d))+$"
MAX_DURATION_TEXT = 32
# Inputs are bounded where they enter (the CRD), and the arithmetic saturates anyway
# (`api.lifecycle`): no value the API server accepts can make the operator raise.
MAX_IDLE_TIMEOUT = 30 * 86400
QUANTITY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _aware(value: datetime | None) -> datetime | None:
    """In UTC; a time without a zone is UTC. Comparing it with the API server's times, or
    printing it in UTC, must never raise: 9999-12-31T23:59:59-23:59 is past datetime's range
    in UTC, so it is clamped to the last second that is not."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (
            datetime.max.replace(tzinfo=UTC) if value.year > 1 else datetime.min.replace(tzinfo=UTC)
        )


AwareTime = Annotated[datetime, AfterValidator(_aware)]
RFC3339 = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}"
    r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


class Mode(StrEnum):
    STANDALONE = "standalone"
    DISTRIBUTED = "distributed"


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"  # waiting in Kueue's queue for GPU quota
    RUNNING = "Running"
    STOPPED = "Stopped"
    FAILED = "Failed"


class DistributedSpec(SpecModel):
    world_size: int = Field(alias="worldSize", ge=1, le=64, description="Pods (nodes) in the job.")
    nprocs_per_node: int = Field(
        default=1, alias="nprocsPerNode", ge=1, le=64, description="torchrun processes per pod."
    )
    backend: Literal["nccl", "gloo"] = Field(
        default="nccl", description="torch.distributed backend."
    )
    nccl_settings: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict,
        alias="ncclSettings",
        max_length=64,  # bounds the CEL rule's cost over its keys
        description="Extra NCCL_* environment, over the defaults.",
    )


def _legacy_idle(value: object) -> object:
    """Stored before the CRD had a maximum: read as the maximum (never refused on read: an
    object the model cannot read is stopped)."""
    if isinstance(value, int) and value > MAX_IDLE_TIMEOUT:
        return MAX_IDLE_TIMEOUT
    return value


def _legacy_ttl(value: object) -> object:
    """A duration stored before the CRD bounded its digits: the same time, at most 100 years,
    in the bounded form."""
    if not isinstance(value, str) or (
        len(value) <= MAX_DURATION_TEXT and re.match(DURATION_PATTERN, value)
    ):
        return value
    parts = re.findall(r"([0-9]+)([smhd])", value)
    if not parts or re.sub(r"[0-9]+[smhd]", "", value):
        return value  # not a duration at all: refused as before
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = min(sum(int(n) * units[u] for n, u in parts), 36_500 * 86400)
    days, rest = divmod(seconds, 86400)
    return f"{days}d{rest}s"


class LifecycleSpec(SpecModel):
    idle_timeout: (
        Annotated[int, Field(ge=60, le=MAX_IDLE_TIMEOUT), BeforeValidator(_legacy_idle)] | None
    ) = Field(
        default=None,
        alias="idleTimeout",
        description="Stop after this many seconds without activity (sessions, processes, CPU, "
        "GPU, as the in-pod agent reports); unset: never for idleness.",
    )
    auto_shutdown: bool = Field(
        default=True,
        alias="autoShutdown",
        description="Stop (never delete) after idleTimeout without activity; deadlines apply "
        "either way.",
    )
    expiration_time: AwareTime | None = Field(
        default=None,
        alias="expirationTime",
        description="Stop at this time (RFC 3339, e.g. 2026-12-01T18:00:00Z).",
        # the API server's date-time check takes any offset and year 0; Python takes neither
        json_schema_extra={"pattern": RFC3339},
    )
    time_to_live: (
        Annotated[
            str,
            Field(pattern=DURATION_PATTERN, max_length=MAX_DURATION_TEXT),
            BeforeValidator(_legacy_ttl),
        ]
        | None
    ) = Field(
        default=None,
        alias="timeToLive",
        description="Stop this long after the last start, e.g. 4h or 1h30m.",
    )


class DevServerSpec(SpecModel):
    owner: str = Field(max_length=254, description="The user it belongs to (e-mail or user name).")
    flavor: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of a DevServerFlavor.",
    )
    image: str = Field(
        min_length=1,
        max_length=1024,
        # ASCII classes only: the API server (RE2) and pydantic must agree on every string
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$",
        description="Container image, e.g. pytorch/pytorch:2.5.1.",
    )
    mode: Mode = Field(default=Mode.STANDALONE, description="standalone or distributed.")
    distributed: DistributedSpec | None = Field(
        default=None, description="Required when mode is distributed."
    )
    persistent_home_size: str = Field(
        default="20Gi",
        alias="persistentHomeSize",
        pattern=QUANTITY_PATTERN,
        max_length=24,
        description="Size of the home volume mounted at /home/dev.",
    )
    shared_volume_claim_name: str | None = Field(
        default=None,
        alias="sharedVolumeClaimName",
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="An existing PVC (e.g. EFS) mounted at /shared in every pod.",
    )
    enable_ssh: bool = Field(default=True, alias="enableSSH", description="Expose port 22.")
    retain_home_on_delete: bool = Field(
        default=True,
        alias="retainHomeOnDelete",
        description="Keep the home volume when the DevServer is deleted (default: keep).",
    )
    lifecycle: LifecycleSpec = Field(default_factory=LifecycleSpec, description="When to stop.")
    stopped: bool = Field(
        default=False,
        description="Scaled to zero with the home kept: set at expiry or by `devctl stop`; "
        "`devctl start` clears it.",
    )


class Billing(SpecModel):
    """Time the server held a node, priced by its flavor, and the GPU-seconds it held and used;
    written only at transitions (on or off a node, a new price or GPU count, active or idle)."""

    seconds: float = Field(default=0, ge=0, description="Closed periods: seconds on a node.")
    cost: float = Field(default=0, ge=0, description="Closed periods: USD.")
    gpu_seconds: float = Field(
        default=0, ge=0, alias="gpuSeconds", description="Closed periods: GPU-seconds held."
    )
    active_gpu_seconds: float = Field(
        default=0,
        ge=0,
        alias="activeGpuSeconds",
        description="Closed periods: GPU-seconds held while the pod's agent reported activity.",
    )
    idle_stops: int = Field(
        default=0, ge=0, alias="idleStops", description="Times it was stopped for being idle."
    )
    since: datetime | None = Field(
        default=None, description="Start of the open period (a pod on a node), if any."
    )
    price_per_hour: float | None = Field(
        default=None,
        alias="pricePerHour",
        ge=0,
        le=MAX_PRICE_PER_HOUR,
        description="USD per hour of the open period.",
    )
    gpus: int | None = Field(default=None, ge=0, description="GPUs held in the open period.")
    active: bool | None = Field(
        default=None, description="Whether the open period is one of reported activity."
    )


class RankStatus(SpecModel):
    """One pod of a distributed DevServer."""

    rank: int = Field(ge=0, description="The node rank (StatefulSet pod index).")
    pod: str = Field(description="Pod name.")
    node: str | None = Field(default=None, description="The node it runs on.")
    ready: bool = Field(default=False)
    restarts: int = Field(default=0, ge=0, description="Container restarts.")
    reason: str | None = Field(default=None, description="Why it is not ready, if it is not.")
    home_claim: str | None = Field(default=None, alias="homeClaim", description="Its home PVC.")


class DevServerStatus(SpecModel):
    phase: Phase | None = Field(
        default=None, description="Pending, Queued, Running, Stopped or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded, FlavorValid."
    )
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    applied_flavor: str | None = Field(
        default=None, alias="appliedFlavor", description="The flavor the pod actually runs with."
    )
    pod_name: str | None = Field(default=None, alias="podName")
    service_name: str | None = Field(default=None, alias="serviceName")
    ssh_endpoint: str | None = Field(default=None, alias="sshEndpoint")
    home_claim: str | None = Field(default=None, alias="homeClaim", description="Home PVC.")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    last_start: datetime | None = Field(
        default=None,
        alias="lastStart",
        description="When it was created or last started, as the operator saw it: deadlines "
        "and the maximum lifetime count from here (only the operator writes it).",
    )
    expires_at: datetime | None = Field(
        default=None, alias="expiresAt", description="When it stops (after any cap)."
    )
    stopped_at: datetime | None = Field(default=None, alias="stoppedAt")
    idle_since: datetime | None = Field(
        default=None,
        alias="idleSince",
        description="Nothing has happened in the pod since then (sessions, processes, CPU, GPU).",
    )
    last_extension: str | None = Field(
        default=None, alias="lastExtension", description="Who extended it, when, by how much."
    )
    billing: Billing | None = Field(default=None, description="Running time and cost.")
    ranks: list[RankStatus] | None = Field(
        default=None, description="Distributed: each rank's pod, node, readiness."
    )
    master_addr: str | None = Field(
        default=None, alias="masterAddr", description="Distributed: rank 0's host:port."
    )
    ready_ranks: int | None = Field(
        default=None, alias="readyRanks", description="Distributed: ranks ready, of worldSize."
    )


class DevServer(KubeObject):
    """A user's development server."""

    spec: DevServerSpec
    status: DevServerStatus | None = None
