"""Running time and cost of a DevServer (pure): periods open when a pod holds a node and close
when it stops, is deleted or changes price. Nothing is written between transitions; the open
period is priced when read (`devctl cost`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from devserver.api.devserver import Billing


def next_billing(
    previous: Billing | None, *, holding: bool, price: float | None, now: datetime
) -> Billing:
    bill = previous or Billing()
    seconds, cost, since, rate = bill.seconds, bill.cost, bill.since, bill.price_per_hour
    if since is not None and (not holding or price != rate):
        spent = max(0.0, (now - since).total_seconds())
        seconds, cost, since = seconds + spent, cost + spent / 3600 * (rate or 0.0), None
    if holding and since is None:
        since, rate = now, price
    if since is None:
        rate = None
    return Billing(seconds=round(seconds, 3), cost=round(cost, 6), since=since, price_per_hour=rate)


def totals(bill: Billing | None, now: datetime) -> tuple[float, float]:
    """(hours, USD) including the open period up to `now`."""
    if bill is None:
        return 0.0, 0.0
    seconds, cost = bill.seconds, bill.cost
    if bill.since is not None:
        spent = max(0.0, (now - bill.since).total_seconds())
        seconds += spent
        cost += spent / 3600 * (bill.price_per_hour or 0.0)
    return seconds / 3600, cost


def as_status(bill: Billing) -> dict[str, Any]:
    return bill.model_dump(by_alias=True, mode="json", exclude_none=True)
