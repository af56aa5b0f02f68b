"""Running time, cost and GPU-seconds of a DevServer (pure): periods open when a pod holds a
node and close when it stops, is deleted, changes price or GPU count, or turns active or idle.
Nothing is written between transitions; the open period is counted when read (`devctl cost`,
`devctl admin usage`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devserver.api.devserver import Billing


@dataclass(frozen=True)
class Holding:
    """What an open period holds: its price per hour, its GPUs, whether they are in use."""

    price: float | None
    gpus: int = 0
    active: bool = False


def next_billing(previous: Billing | None, holding: Holding | None, *, now: datetime) -> Billing:
    """The bill after this moment: `holding` is what the server holds now (None: no node)."""
    bill = previous or Billing()
    seconds, cost = bill.seconds, bill.cost
    gpu_seconds, active_seconds = bill.gpu_seconds, bill.active_gpu_seconds
    since = bill.since
    was = Holding(bill.price_per_hour, bill.gpus or 0, bool(bill.active))
    if since is not None and holding != was:  # the open period closes
        seconds, cost, gpu_seconds, active_seconds = _with_open_period(bill, now)
        since = None
    if holding is not None and since is None:
        since = now
    opened = holding if since is not None else None
    return Billing(
        seconds=_bounded(seconds, 3),
        cost=_bounded(cost, 6),
        gpu_seconds=_bounded(gpu_seconds, 3),
        active_gpu_seconds=_bounded(active_seconds, 3),
        idle_stops=bill.idle_stops,
        since=since,
        price_per_hour=opened.price if opened else None,
        gpus=opened.gpus if opened and opened.gpus else None,
        active=True if opened and opened.active else None,
    )


# A total no real server reaches (10^15 s is 30 million years): sums stop there, so values an
# admin wrote into a status by hand can never overflow to infinity (which JSON cannot carry).
MAX_TOTAL = 1e15


def _bounded(value: float, digits: int) -> float:
    return round(min(max(value, 0.0), MAX_TOTAL), digits) if math.isfinite(value) else MAX_TOTAL


@dataclass(frozen=True)
class Totals:
    """A bill up to a moment, the open period included."""

    hours: float
    cost: float
    gpu_hours: float
    active_gpu_hours: float
    idle_stops: int


def _with_open_period(bill: Billing, now: datetime) -> tuple[float, float, float, float]:
    """(seconds, USD, GPU-seconds, active GPU-seconds): the closed periods and the open one up
    to `now`."""
    seconds, cost = bill.seconds, bill.cost
    gpu_seconds, active_seconds = bill.gpu_seconds, bill.active_gpu_seconds
    if bill.since is not None:
        spent = max(0.0, (now - bill.since).total_seconds())
        seconds += spent
        cost += spent / 3600 * (bill.price_per_hour or 0.0)
        gpu_seconds += spent * (bill.gpus or 0)
        active_seconds += spent * (bill.gpus or 0) if bill.active else 0.0
    return seconds, cost, gpu_seconds, active_seconds


def bill_totals(bill: Billing | None, now: datetime) -> Totals:
    if bill is None:
        return Totals(0.0, 0.0, 0.0, 0.0, 0)
    seconds, cost, gpu_seconds, active_seconds = _with_open_period(bill, now)
    return Totals(seconds / 3600, cost, gpu_seconds / 3600, active_seconds / 3600, bill.idle_stops)


def totals(bill: Billing | None, now: datetime) -> tuple[float, float]:
    """(hours, USD) including the open period up to `now`."""
    counted = bill_totals(bill, now)
    return counted.hours, counted.cost


def with_idle_stop(bill: Billing) -> Billing:
    return bill.model_copy(update={"idle_stops": bill.idle_stops + 1})


def as_status(bill: Billing) -> dict[str, Any]:
    return bill.model_dump(by_alias=True, mode="json", exclude_none=True)
