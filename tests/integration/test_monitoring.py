"""A real Prometheus (3.16) scraping the local platform: the operator (with the chart's
ServiceAccount), the real bastion, and the API server's own /metrics, with devserver's rules
loaded as a platform team would load them.

The scenario: two users of two teams; GPU servers on a node group of their own, one used, one
idle (the agent's Lease says so, as the in-pod agent would write it) that idle stop takes down;
one server reaching its deadline; one whose flavor no node can hold; SSH logins to the bastion,
accepted, refused and unknown. Then the figures are read back through PromQL and compared with
what the API server says, every dashboard expression must return data, and two alerts fire for
real: a server stuck Pending, and the operator down once it is stopped. Only `for:` durations
and the Pending threshold are shortened (seconds, not minutes) in the rules given to the test's
Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devserver.observability.dashboards import expressions
from devserver.observability.rules import rule_groups
from devserver_harness.agent import report_activity
from devserver_harness.bastion import BastionSandbox, check_prerequisites, new_key
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.nodes import NodeSpec
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll
from devserver_harness.prometheus import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

USERS = {"val": "mon-vision", "wes": "mon-nlp"}  # teams of this module alone
NODE = NodeSpec("mon-g5-1", "g5.12xlarge", "mon-gpu")  # 4 GPUs, for this module alone
SHORT_FOR = {"DevserverOperatorDown": "3s", "DevserverServersStuckPending": "2s"}


def _flavor(name: str, nodegroup: str, gpus: int, price: float) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServerFlavor",
        "metadata": {"name": name},
        "spec": {
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": str(gpus)},
                "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)},
            },
            "nodeSelector": {"eks.amazonaws.com/nodegroup": nodegroup},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "pricePerHour": price,
        },
    }


def _server(name: str, user: str, flavor: str, **lifecycle: object) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": f"dev-{user}"},
        "spec": {
            "owner": f"{user}@example.com",
            "flavor": flavor,
            "image": "pytorch/pytorch:2.5.1",
            "lifecycle": lifecycle,
        },
    }


def _shortened_rules() -> dict[str, Any]:
    rules = rule_groups()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in SHORT_FOR:
                rule["for"] = SHORT_FOR[rule["alert"]]
            if rule.get("alert") == "DevserverServersStuckPending":
                rule["expr"] = rule["expr"].replace("> 900", "> 5")
    return rules


@dataclass
class Platform:
    cp: LocalControlPlane
    operator: OperatorProcess
    bastion: BastionSandbox
    prometheus: PrometheusServer
    keys: dict[str, Path]

    def get(self, kind: str, name: str, ns: str = "") -> dict[str, Any]:
        where = ("-n", ns) if ns else ()
        out = self.cp.kubectl("get", kind, name, *where, "-o", "json", check=False)
        return dict(json.loads(out.stdout)) if out.returncode == 0 else {}

    def phase(self, name: str, ns: str) -> str:
        return str(self.get("devservers.devservers.io", name, ns).get("status", {}).get("phase"))

    def quota_counted(self, user: str) -> None:
        """The user's quota counts DevServers (until it does, it refuses every create)."""

        def counted() -> bool:
            quota = self.get("resourcequota", "dev-user", f"dev-{user}")
            return "count/devservers.devservers.io" in quota.get("status", {}).get("used", {})

        poll(counted, 30, f"dev-{user}'s quota")


@pytest.fixture(scope="module")
def platform(
    control_plane: LocalControlPlane,
    quota_counts_devservers: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    try:
        check_prerequisites()  # the real bastion: root, Debian's sshd
    except RuntimeError as error:
        pytest.skip(str(error))
    cp = control_plane
    cp.add_nodes(NODE)
    cp.apply(_flavor("mon-gpu", "mon-gpu", 1, 1.5), _flavor("mon-nowhere", "nowhere", 1, 9.0))
    keys = {}
    for user, team in USERS.items():
        key, public = new_key(tmp_path_factory.mktemp(user), user)
        keys[user] = key
        cp.apply(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": user},
                "spec": {"email": f"{user}@example.com", "team": team, "sshPublicKeys": [public]},
            }
        )
    operator = OperatorProcess(
        cp.operator_kubeconfig, ("--max-lifetime", "0", "--warn-before", "4s")
    )
    operator.start()
    operator.wait_leading()
    bastion = BastionSandbox(cp).start()
    prometheus = PrometheusServer(
        cp,
        jobs={
            "devserver-operator": [f"127.0.0.1:{operator.port}"],
            "devserver-bastion": [f"127.0.0.1:{bastion.http_port}"],
        },
        rules=_shortened_rules(),
    ).start()
    try:
        yield Platform(cp, operator, bastion, prometheus, keys)
    finally:
        prometheus.stop()
        bastion.stop()
        operator.stop()
        for user in USERS:
            cp.kubectl("delete", "devuser", user, "--wait=false", check=False)
            cp.kubectl("delete", "namespace", f"dev-{user}", "--wait=false", check=False)
        cp.kubectl("delete", "devserverflavor", "mon-gpu", "mon-nowhere", check=False)
        cp.remove_nodes(NODE.name)


def test_prometheus_sees_the_fleet_the_bastion_and_alerts_fire(platform: Platform) -> None:
    p, prom = platform, platform.prometheus
    for user in USERS:
        p.quota_counted(user)
    p.cp.apply(
        _server("mon-train", "val", "mon-gpu"),
        _server("mon-idle", "val", "mon-gpu", idleTimeout=60, expirationTime=_in(hours=2)),
        _server("mon-ttl", "wes", "mon-gpu", expirationTime=_in(seconds=25)),
        _server("mon-wait", "wes", "mon-nowhere"),
    )
    for name, ns in (("mon-train", "dev-val"), ("mon-idle", "dev-val"), ("mon-ttl", "dev-wes")):
        poll(lambda n=name, s=ns: p.phase(n, s) == "Running", 60, f"{name} running")
    for name in ("mon-train", "mon-idle"):
        poll(lambda n=name: p.get("lease", f"{n}-activity", "dev-val"), 30, f"{name}'s Lease")
    report_activity(p.cp, "mon-train-activity", "dev-val", idle=False)
    report_activity(p.cp, "mon-idle-activity", "dev-val", idle=True)

    # bastion logins: accepted (with a session and its token), a refused key, an unknown user
    stranger, _ = new_key(p.keys["val"].parent, "stranger")
    accepted = asyncio.run(p.bastion.ssh("val", p.keys["val"], "devctl list"))
    assert accepted.returncode == 0, accepted.stderr
    refused = asyncio.run(p.bastion.ssh("val", stranger, "true"))
    unknown = asyncio.run(p.bastion.ssh("nobody-here", stranger, "true"))
    assert refused.returncode != 0 and unknown.returncode != 0

    # the idle server stops (its run started a minute ago at most), the deadline stops another
    poll(lambda: p.phase("mon-idle", "dev-val") == "Stopped", 120, "the idle stop")
    poll(lambda: p.phase("mon-ttl", "dev-wes") == "Stopped", 60, "the deadline stop")
    assert p.phase("mon-wait", "dev-wes") == "Pending"

    # what the API server says, Prometheus says: one GPU held (mon-train), by team vision
    def settled() -> bool:
        return prom.value('sum(devserver_gpus_held{flavor="mon-gpu"})') == 1.0

    poll(settled, 30, "one GPU held in Prometheus")
    # (other modules' servers may still be in the cluster: this module's flavors and teams)
    assert prom.value('sum(devserver_gpus_active{team="mon-vision"})') == 1.0
    assert prom.value('sum(devserver_gpus_held{team="mon-nlp"})') == 0.0
    assert prom.value('sum(devserver_servers{phase="Running",flavor="mon-gpu"})') == 1.0
    assert prom.value('sum(devserver_servers{phase="Stopped",flavor="mon-gpu"})') == 2.0
    assert prom.value('sum(devserver_servers{phase="Pending",flavor="mon-nowhere"})') == 1.0
    assert (prom.value('devserver_stops_total{reason="idle"}') or 0) >= 1
    assert (prom.value('devserver_stops_total{reason="expired"}') or 0) >= 1
    ratio = 'flavor:devserver_gpu_utilisation:ratio{flavor="mon-gpu"}'  # a rule: a beat later
    poll(lambda: prom.value(ratio) == 1.0, 10, "the utilisation rule to follow")
    reclaimed = prom.value('sum(devserver_gpu_hours_reclaimed_total{team="mon-vision"})')
    assert reclaimed is not None and 1.9 < reclaimed <= 2.0  # its 2 h deadline, 1 GPU
    held = prom.value('sum(devserver_gpu_hours_held_total{team="mon-vision"})')
    active = prom.value('sum(devserver_gpu_hours_active_total{team="mon-vision"})')
    assert held is not None and active is not None and held > active > 0
    assert (prom.value('sum(devserver_cost_usd_total{flavor="mon-gpu"})') or 0) > 0
    assert prom.value('max(leader_election_master_status{job="devserver-operator"})') == 1.0
    assert (
        prom.value('sum(rest_client_requests_total{job="devserver-operator",code=~"2.."})') or 0
    ) > 0
    assert prom.value('devserver_bastion_logins_total{outcome="accepted"}') == 1.0
    assert prom.value('devserver_bastion_logins_total{outcome="rejected"}') == 1.0
    assert prom.value('devserver_bastion_logins_total{outcome="unknown_user"}') == 1.0
    assert prom.value('devserver_bastion_token_requests_total{outcome="issued"}') == 1.0
    assert prom.value("devserver_bastion_login_duration_seconds_count") == 1.0
    assert prom.value('up{job="apiserver"}') == 1.0
    assert (prom.value('sum(apiserver_request_total{job="apiserver"})') or 0) > 0

    # every dashboard expression parses and has data now
    empty = [
        f"{board}/{title}: {expr}" for board, title, expr in expressions() if not prom.query(expr)
    ]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    series = prom.series_count("devserver-operator")
    print(f"\noperator scrape: {series} samples")  # noqa: T201 - a figure for the notes

    # alerts, for real: the Pending server, then the operator down
    def pending_alert() -> bool:
        firing = prom.firing().get("DevserverServersStuckPending", [])
        return any(alert["flavor"] == "mon-nowhere" for alert in firing)

    poll(pending_alert, 60, "the Pending alert")
    assert not any(  # the servers on a node never count as waiting
        alert["flavor"] == "mon-gpu"
        for alert in prom.firing().get("DevserverServersStuckPending", [])
    )
    assert "DevserverOperatorDown" not in prom.firing()
    p.operator.stop()
    started = time.monotonic()
    poll(lambda: "DevserverOperatorDown" in prom.firing(), 60, "the operator-down alert")
    assert time.monotonic() - started >= 3  # not before its `for:`


def _in(**delta: float) -> str:
    when = datetime.now(UTC) + timedelta(**delta)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
