"""DevUser (cluster-scoped): a person allowed on the platform, named by their user name.

The object's name is the user name: a lower-case DNS label of at most 32 characters (a Linux
user name on the bastion; `dev-<name>` and `user-<name>` then fit Kubernetes' 63), and not a
reserved system name. The reconciler gives each user a namespace and exactly the rights the
devctl workflow needs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from devserver.api.devserver import QUANTITY_PATTERN
from devserver.api.meta import KubeObject
from devserver.api.schema import Condition, SpecModel

MAX_USERNAME = 32
USERNAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
CPU_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,3}|m)?$"
RESERVED_USERNAMES = ("root", "admin", "system", "kube", "default", "devserver", "nobody", "sshd")


class QuotaOverrides(SpecModel):
    gpus: int | None = Field(
        default=None, ge=0, le=10_000, description="nvidia.com/gpu requests in total."
    )
    cpu: str | None = Field(
        default=None,
        pattern=CPU_PATTERN,
        max_length=24,
        description="CPU requests in total, e.g. '64' or 500m.",
    )
    memory: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        max_length=24,
        description="Memory requests in total, e.g. 256Gi.",
    )
    storage: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        max_length=24,
        description="PVC storage in total, e.g. 2Ti.",
    )
    dev_servers: int | None = Field(
        default=None, alias="devServers", ge=0, le=1_000, description="How many DevServers at once."
    )


class DevUserSpec(SpecModel):
    email: str = Field(
        default="", max_length=254, description="Contact address; also the DevServer owner."
    )
    ssh_public_keys: list[Annotated[str, Field(max_length=16384)]] = Field(
        default_factory=list,
        alias="sshPublicKeys",
        max_length=64,
        description="OpenSSH public keys allowed to log in to the bastion as this user.",
    )
    team: str | None = Field(default=None, max_length=63, description="Team, for reports and cost.")
    quota: QuotaOverrides | None = Field(
        default=None, description="Overrides of the operator's default per-user quota."
    )


class DevUserStatus(SpecModel):
    namespace: str | None = Field(default=None, description="The user's namespace.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready.")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class DevUser(KubeObject):
    """A user of the platform."""

    spec: DevUserSpec = Field(default_factory=DevUserSpec)
    status: DevUserStatus | None = None
