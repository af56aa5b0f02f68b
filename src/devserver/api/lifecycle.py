"""When a DevServer stops: its deadline, from the spec and a few annotations (pure).

- `spec.lifecycle.expirationTime` wins; else `timeToLive` counted from the last start (the
  `devservers.io/started-at` annotation `devctl start` writes) or from creation.
- The operator caps every deadline at start + its maximum lifetime (`--max-lifetime`).
- Annotations carry what is not desired state: why it was stopped, which warnings were given,
  the last extension (who, when, how much) for the record.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from devserver.api.devserver import DevServer

STOP_REASON = "devservers.io/stop-reason"
STARTED_AT = "devservers.io/started-at"
WARNED = "devservers.io/warned"
LAST_EXTENSION = "devservers.io/last-extension"

EXPIRED, STOPPED_BY_USER = "Expired", "StoppedByUser"

_PART = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """`4h`, `1h30m`, `90s`, `1d` (the CRD's pattern); ValueError otherwise."""
    if not text or _PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration such as 30m, 4h or 1d")
    return timedelta(seconds=sum(int(n) * _UNIT[u] for n, u in _PART.findall(text)))


def lifetime_start(ds: DevServer) -> datetime | None:
    started = ds.metadata.annotations.get(STARTED_AT)
    if started:
        try:
            return datetime.fromisoformat(started.replace("Z", "+00:00"))
        except ValueError:
            pass
    return ds.metadata.creation_timestamp


def requested_deadline(ds: DevServer) -> datetime | None:
    lifecycle = ds.spec.lifecycle
    if lifecycle.expiration_time is not None:
        return lifecycle.expiration_time
    start = lifetime_start(ds)
    if lifecycle.time_to_live and start is not None:
        try:
            return start + parse_ttl(lifecycle.time_to_live)
        except ValueError:
            return None
    return None


def deadline(ds: DevServer, max_lifetime: timedelta | None) -> tuple[datetime | None, bool]:
    """(when it stops, whether the operator's cap shortened the request)."""
    requested = requested_deadline(ds)
    start = lifetime_start(ds)
    if max_lifetime is None or start is None:
        return requested, False
    cap = start + max_lifetime
    if requested is None or requested > cap:
        return cap, requested is not None
    return requested, False


def warned(ds: DevServer) -> set[str]:
    return {w for w in ds.metadata.annotations.get(WARNED, "").split(",") if w}
