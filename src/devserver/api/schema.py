"""Shared pieces of our resources' schemas: the base model and Kubernetes-style conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from devserver.api.meta import share_fields_set

# USD per hour: no instance costs this much; the bound keeps every cost sum finite
MAX_PRICE_PER_HOUR = 1_000_000.0


class SpecModel(BaseModel):
    """camelCase on the wire (aliases), snake_case in Python; immutable once read."""

    # defer_build: a schema is built when a model is first used, not when it is imported
    # (devctl imports every model and uses one or two)
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore", defer_build=True)

    def model_post_init(self, context: Any, /) -> None:
        share_fields_set(self)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(SpecModel):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(description="CamelCase condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="One sentence for humans.")
    last_transition_time: datetime | None = Field(
        default=None, alias="lastTransitionTime", description="When status last changed."
    )
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="Generation this reflects."
    )
