"""The operator process, `devserver-operator` (also `python -m devserver.manager`): its command
line, and a Manager with every reconciler, run until SIGTERM.

The Manager (devserver.manager) knows no reconciler; this module is where the operator's list of
them (`reconcilers.register_all`) and its own settings (the lifecycle flags) meet it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import click
import structlog
from pydantic import ValidationError

from devserver import __version__
from devserver.api.lifecycle import parse_ttl
from devserver.api.names import OPERATOR
from devserver.api.user import QuotaOverrides
from devserver.manager import LeadershipLostError, Manager, Settings, heap
from devserver.observability.logging import configure_logging
from devserver.observability.metrics import BUILD_INFO
from devserver.reconcilers import register_all
from devserver.reconcilers.kueue import KueueConfig, kueue_served, missing_priority_classes
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from devserver.reconcilers.user_objects import UserDefaults
from devserver.signals import run_until_signalled

__all__ = ["OperatorSettings", "kueue_config", "main", "run", "user_defaults"]

log = structlog.get_logger("devserver.operator")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


@dataclass(frozen=True)
class OperatorSettings(Settings):
    """The Manager's settings and the operator's own (the lifecycle and user flags)."""

    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    users: UserDefaults = field(default_factory=UserDefaults)
    kueue: KueueConfig = field(default_factory=KueueConfig)


def user_defaults(quota: str, bastion: str) -> UserDefaults:
    """The `--user-*` and `--bastion-*` flags; ValueError with one sentence when malformed."""
    pairs = [part.partition("=") for part in quota.split(",") if part.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise ValueError(f"--user-quota takes name=value pairs, e.g. gpus=8,cpu=64; not {quota!r}")
    known = {f.alias or name for name, f in QuotaOverrides.model_fields.items()}
    unknown = sorted({k.strip() for k, _, _ in pairs} - known)
    if unknown:
        raise ValueError(f"--user-quota knows {', '.join(sorted(known))}; not {unknown[0]!r}")
    try:
        parsed = QuotaOverrides.model_validate({k.strip(): v.strip() for k, _, v in pairs})
    except ValidationError as error:
        key = error.errors()[0]["loc"][0]
        value = {k.strip(): v for k, _, v in pairs}.get(str(key), "")
        raise ValueError(
            f"--user-quota: {key}={value.encode('unicode_escape').decode()} is "
            "not a valid amount; give counts for gpus and devServers, quantities for the rest "
            "(e.g. cpu=64, memory=256Gi, storage=1Ti)"
        ) from None
    namespace, slash, account = bastion.partition("/")
    if not slash or not all(re.fullmatch(_DNS_LABEL, part) for part in (namespace, account)):
        raise ValueError(f"--bastion-service-account is namespace/name; not {bastion!r}")
    base = UserDefaults()
    given = parsed.model_dump(exclude_none=True)
    return replace(
        base,
        **given,
        bastion_namespace=namespace,
        bastion_service_account=account,
    )


def kueue_config(
    cluster_queue: str, team_queues: tuple[str, ...], idle_yield_after: str = ""
) -> KueueConfig:
    """The `--kueue-*` flags; ValueError with one sentence when malformed."""
    names = [cluster_queue] if cluster_queue else []
    pairs = []
    for given in team_queues:
        team, sep, queue = given.partition("=")
        if not sep or not team.strip() or not queue.strip():
            raise ValueError(f"--kueue-team-queue takes team=clusterqueue; not {given!r}")
        pairs.append((team.strip(), queue.strip()))
        names.append(queue.strip())
    bad = [n for n in names if not re.fullmatch(_DNS_SUBDOMAIN, n)]
    if bad:
        raise ValueError(
            f"a ClusterQueue name is a DNS subdomain (e.g. gpu-shared); not {bad[0]!r}"
        )
    if pairs and not cluster_queue:
        raise ValueError("--kueue-team-queue needs --kueue-cluster-queue for users of no team")
    try:
        after = parse_ttl(idle_yield_after) if idle_yield_after not in ("", "0") else None
    except ValueError as error:
        raise ValueError(f"--kueue-idle-yield-after: {error}") from None
    after = after or None  # 0s, 0m: off, as 0
    if after is not None and not cluster_queue:
        raise ValueError("--kueue-idle-yield-after needs --kueue-cluster-queue")
    return KueueConfig(cluster_queue, tuple(pairs), after)


async def run(settings: OperatorSettings, stop: asyncio.Event) -> None:
    """Connect, register every reconciler, and run the manager until `stop`."""
    async with Manager.connect(settings) as manager:
        version = await manager.client.server_version()
        log.info("connected", server_version=version, identity=settings.identity)
        kueue = settings.kueue
        if kueue.enabled and not await kueue_served(manager.client):
            log.error(
                "Kueue is not installed (kueue.x-k8s.io/v1beta2 is not served): servers are "
                "not queued until Kueue is installed and the operator restarted",
                cluster_queue=kueue.cluster_queue,
            )
            kueue = KueueConfig()
        if kueue.yields and (missing := await missing_priority_classes(manager.client)):
            log.error(
                "the WorkloadPriorityClasses idle servers yield by are missing or unreadable: "
                "idle servers do not yield, and servers already labelled with them are not "
                "admitted, until the chart (kueue.enabled) makes them and grants their read "
                "(kueue.idleYield.after) and the operator is restarted",
                missing=missing,
            )
            kueue = replace(kueue, idle_yield_after=None)
        register_all(
            manager.informers,
            manager.client,
            manager.add,
            settings.lifecycle,
            settings.users,
            kueue,
        )
        await manager.run(stop)


def _leadership_lost(error: LeadershipLostError) -> None:
    log.error("leadership lost; exiting so a fresh process can rejoin", error=str(error))


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig; in-cluster when unset.")
@click.option("--http-host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--http-port", default=8080, show_default=True, help="/healthz, /readyz, /metrics")
@click.option(
    "--leader-elect/--no-leader-elect", "leader_election", default=True, show_default=True
)
@click.option(
    "--lease-namespace", envvar="POD_NAMESPACE", default="devserver-system", show_default=True
)
@click.option("--lease-name", default=OPERATOR, show_default=True)
@click.option(
    "--max-lifetime",
    default="7d",
    show_default=True,
    help="Every dev server stops this long after it (re)started at the latest; 0: no cap.",
)
@click.option(
    "--warn-before",
    default="15m,5m",
    show_default=True,
    help="Warn (Event) this long before a deadline; a comma-separated list.",
)
@click.option(
    "--stopped-retention",
    default="0",
    show_default=True,
    help="Delete a DevServer stopped this long (its home volume is kept); 0: never.",
)
@click.option(
    "--user-quota",
    default="gpus=8,cpu=64,memory=256Gi,storage=1Ti,devServers=10",
    show_default=True,
    help="Each user's namespace quota unless their DevUser overrides it.",
)
@click.option(
    "--bastion-service-account",
    default="devserver-system/devserver-bastion",
    show_default=True,
    help="namespace/name of the bastion's ServiceAccount: it may mint users' tokens.",
)
@click.option(
    "--kueue-cluster-queue",
    default="",
    help="Queue GPU servers with Kueue: the ClusterQueue of users without a team-specific "
    "one (each user's namespace gets a LocalQueue pointing at it); empty: no Kueue.",
)
@click.option(
    "--kueue-team-queue",
    multiple=True,
    help="team=clusterqueue: the ClusterQueue of a team's users (repeat per team).",
)
@click.option(
    "--kueue-idle-yield-after",
    default="0",
    show_default=True,
    help="A server idle this long (its agent says) is marked to yield: Kueue preempts it first "
    "when a queued server needs its GPUs (a ClusterQueue with withinClusterQueue: "
    "LowerPriority). 0: idle servers do not yield.",
)
@click.option("--log-json/--no-log-json", default=True, show_default=True)
def main(
    max_lifetime: str,
    warn_before: str,
    stopped_retention: str,
    user_quota: str,
    bastion_service_account: str,
    kueue_cluster_queue: str,
    kueue_team_queue: tuple[str, ...],
    kueue_idle_yield_after: str,
    log_json: bool,
    **flags: Any,
) -> None:
    """devserver-operator: reconciles DevServers, flavors and users."""
    # `flags`: the Manager's Settings by their names (--kubeconfig, --http-*, --lease-*, ...)
    configure_logging(json=log_json)
    BUILD_INFO.labels(version=__version__, component="operator").set(1)
    try:
        lifecycle = LifecycleConfig(
            max_lifetime=None if max_lifetime in ("0", "") else parse_ttl(max_lifetime),
            warn_before=tuple(parse_ttl(t) for t in warn_before.split(",") if t.strip()),
            stopped_retention=(
                None if stopped_retention in ("0", "") else parse_ttl(stopped_retention)
            ),
        )
        users = user_defaults(user_quota, bastion_service_account)
        kueue = kueue_config(kueue_cluster_queue, kueue_team_queue, kueue_idle_yield_after)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    settings = OperatorSettings(lifecycle=lifecycle, users=users, kueue=kueue, **flags)
    heap.settle()
    run_until_signalled(partial(run, settings), LeadershipLostError, _leadership_lost)
