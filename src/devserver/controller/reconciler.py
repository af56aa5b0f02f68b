"""The reconciler contract: a reconcile says done, come back later (`Result`), retry (raise),
or give up (`TerminalError`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from devserver.api.meta import ObjectKey


@dataclass(frozen=True)
class Result:
    """Success; with `requeue_after`, reconcile the key again after that many seconds."""

    requeue_after: float | None = None


class TerminalError(Exception):
    """The object cannot be reconciled as it is; retrying will not help. Counted, not retried;
    a later change of the object enqueues it again."""


class Reconciler(Protocol):
    """Level-based: look at the world for `key` and make it right. Never told what changed."""

    async def reconcile(self, key: ObjectKey) -> Result | None: ...
