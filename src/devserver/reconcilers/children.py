"""A DevServer's children are applied one by one, and a refusal of one never hides the others.

A reconcile that stopped at the first child the API server refused (a 422 on a Service, a 403
from a quota or a webhook) would never scale the workload, never write the status: a later stop
would be ignored and the user would see nothing. So each child is an *attempt*: refusals and
failures are collected, the rest proceed, the status says what was refused in the API server's
own words (condition `Applied`), and only then does the reconcile fail — with the workqueue's
per-key exponential backoff, so one bad object retries ever more slowly and never slows others.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from devserver.api.schema import Condition, ConditionStatus
from devserver.client import ApiError
from devserver.controller.reconciler import TerminalError

REFUSALS = (400, 403, 422)
WEBHOOK_DOWN = "failed calling webhook"  # the API server's words (a 500)
# the API server's words when RBAC denies a request (a 403): the request is the operator's own,
# so the missing permission is the installation's (a chart older than the operator, or a
# ClusterRole edited), not anything the user wrote; a quota's or a policy's 403 reads otherwise
RBAC_DENIAL = re.compile(r'forbidden: User "[^"]*" cannot ')
NOT_PERMITTED_HINT = (
    "the operator's own permissions (the Helm chart's ClusterRole) lack this: an admin should "
    "upgrade the devserver chart to the operator's version, or restore the ClusterRole if it "
    "was edited"
)


class NotYet(Exception):  # noqa: N818 - a state, not a failure
    """A child waits for something another controller finishes (Kueue deleting the Workload of
    a scale-down): looked at again in a second (no backoff: the wait is the other's, not a
    failure), never shown as a refusal or counted as an error."""


class ChildrenRefusedError(Exception):
    """Some children were refused or failed; the rest of the reconcile went on. Retried with
    backoff (a quota freed or a webhook fixed is noticed without an edit of the server)."""


@dataclass
class Attempts:
    refused: list[str] = field(default_factory=list)  # one sentence per refused child
    not_permitted: list[str] = field(default_factory=list)  # of those, denied the operator by RBAC
    failed: list[Exception] = field(default_factory=list)  # transient: connection, 5xx, 429
    waiting: list[str] = field(default_factory=list)  # for another controller (`NotYet`)

    async def attempt(self, what: str, action: Awaitable[Any]) -> None:
        try:
            await action
        except NotYet as error:
            self.waiting.append(f"{what}: {error}")
        except TerminalError as error:  # an apply refused (`apply_if_changed`: its cause)
            self._refused(str(error), error.__cause__)
        except ApiError as error:
            if error.status in REFUSALS:
                self._refused(f"{what}: {error.message or error.reason}", error)
            else:
                self.failed.append(error)

    def _refused(self, sentence: str, error: BaseException | None) -> None:
        self.refused.append(sentence)
        if (
            isinstance(error, ApiError)
            and error.status == 403
            and RBAC_DENIAL.search(error.message or "")
        ):
            self.not_permitted.append(sentence)

    def condition(
        self,
        generation: int,
        hint: str = "change the DevServer's spec (image, flavor, volumes, size) or ask an admin "
        "about quotas and policies",
    ) -> Condition:
        if not self.refused:
            return Condition(
                type="Applied",
                status=ConditionStatus.TRUE,
                reason="Applied",
                message="every object of the server is in place",
                observed_generation=generation,
            )
        mine = [sentence for sentence in self.refused if sentence not in self.not_permitted]
        parts = []
        if mine:
            parts.append("the API server refused " + "; ".join(mine)[:900] + " — " + hint)
        if self.not_permitted:
            parts.append(
                "the API server denied the operator "
                + "; ".join(self.not_permitted)[:600]
                + " — "
                + NOT_PERMITTED_HINT
            )
        return Condition(
            type="Applied",
            status=ConditionStatus.FALSE,
            reason="Refused" if mine else "NotPermitted",
            message=". ".join(parts),
            observed_generation=generation,
        )

    def webhook_down(self) -> str | None:
        """The API server's words when a child failed because an admission webhook did not
        answer (Kueue's, while it is down): not the user's doing, and it passes by itself."""
        for error in self.failed:
            if isinstance(error, ApiError) and WEBHOOK_DOWN in (error.message or ""):
                return error.message
        return None

    def raise_if_any(self) -> None:
        if self.failed:
            raise self.failed[0]
        if self.refused:
            raise ChildrenRefusedError("; ".join(self.refused))
