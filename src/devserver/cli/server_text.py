"""Dev servers as text for people: phase, message, deadline and activity in words; the table of
`devctl list`, the page of `devctl describe` and the frame of `devctl monitor`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from devserver.api.devserver import DevServer
from devserver.cli.durations import DurationError, canonical, parse_duration
from devserver.cli.output import age, table, until


def phase_of(ds: DevServer) -> str:
    return (ds.status.phase.value if ds.status and ds.status.phase else None) or "Pending"


def message_of(ds: DevServer) -> str:
    for condition in ds.status.conditions if ds.status else []:
        if condition.type == "Ready" and condition.status != "True":
            return f"{condition.reason}: {condition.message}".strip(": ")
    return ""


def deadline_of(ds: DevServer) -> datetime | None:
    """When it stops: the operator's `expiresAt`, else what the spec asks for."""
    if ds.status and ds.status.expires_at:
        return ds.status.expires_at
    lifecycle = ds.spec.lifecycle
    if lifecycle.expiration_time:
        return lifecycle.expiration_time
    if lifecycle.time_to_live and ds.metadata.creation_timestamp:
        try:
            return ds.metadata.creation_timestamp + parse_duration(lifecycle.time_to_live)
        except DurationError:
            return None
    return None


def activity_line(ds: DevServer, now: datetime) -> str:
    timeout = ds.spec.lifecycle.idle_timeout
    policy = (
        f"stops after {canonical(timedelta(seconds=timeout))} idle"
        if timeout and ds.spec.lifecycle.auto_shutdown
        else "never stopped for idleness"
    )
    since = ds.status.idle_since if ds.status else None
    if since is not None:
        return f"idle for {age(since, now)} ({policy})"
    return f"in use or not reported ({policy})"


def render_list(servers: Sequence[DevServer], namespace: str, now: datetime) -> str:
    """`devctl list`: one row a server, by name; a hint to create one when there is none."""
    if not servers:
        return (
            f"no dev servers in {namespace}; "
            "create one with `devctl create mydev --flavor cpu-small --time 4h`"
        )
    rows = [
        [
            s.metadata.name,
            (s.status.applied_flavor if s.status else None) or s.spec.flavor,
            phase_of(s),
            age(s.metadata.creation_timestamp, now),
            until(deadline_of(s), now) + (" (idle)" if s.status and s.status.idle_since else ""),
            message_of(s)[:60],
        ]
        for s in sorted(servers, key=lambda s: s.metadata.name)
    ]
    return table(rows, ["NAME", "FLAVOR", "PHASE", "AGE", "TIME LEFT", "MESSAGE"])


def render_describe(
    ds: DevServer, pod: dict[str, Any] | None, events: list[dict[str, Any]], now: datetime
) -> str:
    """`devctl describe`: the server, its pod's node, its conditions and its last 10 events."""
    status = ds.status
    spec = ds.spec
    node = (pod or {}).get("spec", {}).get("nodeName") or "-"
    lines = [
        f"Name:         {ds.metadata.name}",
        f"Namespace:    {ds.metadata.namespace}",
        f"Owner:        {spec.owner}",
        f"Flavor:       {spec.flavor}"
        + (
            f" (running as {status.applied_flavor})"
            if status and status.applied_flavor and status.applied_flavor != spec.flavor
            else ""
        ),
        f"Image:        {spec.image}",
        f"Phase:        {phase_of(ds)}" + (f" — {message_of(ds)}" if message_of(ds) else ""),
        f"Pod:          {(status.pod_name if status else None) or '-'} on node {node}",
        *(
            [
                f"Ranks:        {(status.ready_ranks if status else None) or 0}/"
                f"{spec.distributed.world_size} ready, {spec.distributed.nprocs_per_node} "
                f"processes each (`devctl monitor {ds.metadata.name}`)"
            ]
            if spec.distributed is not None and spec.mode.value == "distributed"
            else []
        ),
        f"Home:         {(status.home_claim if status else None) or '-'} "
        f"({spec.persistent_home_size}, kept on delete: "
        f"{'yes' if spec.retain_home_on_delete else 'no'})",
        f"Shared:       {spec.shared_volume_claim_name or '-'}",
        f"SSH:          {(status.ssh_endpoint if status else None) or '-'}",
        f"Created:      {age(ds.metadata.creation_timestamp, now)} ago",
        f"Time left:    {until(deadline_of(ds), now)}",
        f"Activity:     {activity_line(ds, now)}",
        "",
        "Conditions:",
    ]
    conditions = status.conditions if status else []
    lines.append(
        table(
            [[c.type, c.status, c.reason or "", (c.message or "")[:70]] for c in conditions],
            ["  TYPE", "STATUS", "REASON", "MESSAGE"],
        )
        if conditions
        else "  (none yet)"
    )
    lines += ["", "Events:"]
    recent = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")[-10:]
    lines.append(
        table(
            [
                [
                    "  " + str(e.get("type", "")),
                    str(e.get("reason", "")),
                    str(e.get("message", ""))[:80],
                ]
                for e in recent
            ],
            ["  TYPE", "REASON", "MESSAGE"],
        )
        if recent
        else "  (none)"
    )
    return "\n".join(lines)


def render_monitor(ds: DevServer, now: datetime) -> str:
    """`devctl monitor`: a distributed server's ranks — pod, node, readiness, restarts."""
    status = ds.status
    dist = ds.spec.distributed
    w = dist.world_size if dist else 1
    p = dist.nprocs_per_node if dist else 1
    ready = status.ready_ranks if status and status.ready_ranks is not None else 0
    head = (
        f"{ds.metadata.name}: {phase_of(ds)} — {ready}/{w} ranks ready, {w} pods x {p} "
        f"processes = {w * p} workers; time left {until(deadline_of(ds), now)}"
    )
    lines = [head]
    if message_of(ds):
        lines.append(f"  {message_of(ds)}")
    if status and status.master_addr:
        lines.append(f"  master {status.master_addr}")
    ranks = status.ranks if status and status.ranks else []
    if ranks:
        lines.append(
            table(
                [
                    [
                        str(r.rank),
                        r.pod,
                        r.node or "-",
                        "yes" if r.ready else "no",
                        str(r.restarts),
                        r.reason or "",
                    ]
                    for r in ranks
                ],
                ["RANK", "POD", "NODE", "READY", "RESTARTS", "WHY NOT"],
            )
        )
    return "\n".join(lines)
