"""The real Kueue (v0.17) on the local control plane, and devserver queueing through it.

First the harness alone: a Deployment in a dev namespace, queued on a LocalQueue, is admitted
while the ClusterQueue's GPU quota holds it; a second one waits, gated, with Kueue's own reason,
and is admitted when the first goes. With Kueue down, a pod outside the dev namespaces is
created as ever: its webhooks are scoped to dev namespaces.

Then devserver, installed by its chart with `kueue.enabled` (the chart makes the ResourceFlavor
and the ClusterQueue, one GPU of quota; the operator makes each user's LocalQueue): a server
over the quota is Queued with Kueue's reason and its place, not failing; when the running one
stops, the queued one is admitted and runs. A server that ran before Kueue was turned on keeps
its pod, and queues from its next start. With Kueue down, a running server is untouched, a stop
still gives its GPU back, and a new server waits with a clear reason and starts once Kueue is
back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from devserver.cli.main import cli
from devserver_harness.agent import report_activity
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.kueue import KueueProcess
from devserver_harness.nodes import NodeSpec
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "dev-kq"
GATE = "kueue.x-k8s.io/admission"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@pytest.fixture(scope="module")
def kueue(control_plane: LocalControlPlane) -> Iterator[KueueProcess]:
    # usage-based admission fair sharing (Kueue's, beta in 0.17), sampled each second here
    # (5 minutes by default) so that a test sees usage within seconds
    fair = {"usageHalfLifeTime": "1h", "usageSamplingInterval": "1s"}
    process = KueueProcess(control_plane, admissionFairSharing=fair)
    control_plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NS, "labels": {"devservers.io/user": "kq"}},
        }
    )
    try:
        yield process.start()
    finally:
        process.uninstall()
        process.stop()
        control_plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _cluster_queue(flavor: str, gpus: int) -> dict[str, Any]:
    """A ClusterQueue's spec: `gpus` of `flavor`, and room enough of CPU and memory."""
    quota = {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": str(gpus)}
    return {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": list(quota),
                "flavors": [
                    {
                        "name": flavor,
                        "resources": [{"name": k, "nominalQuota": v} for k, v in quota.items()],
                    }
                ],
            }
        ],
    }


def _kueue_objects(gpus: int) -> list[dict[str, Any]]:
    group = "kueue.x-k8s.io/v1beta2"
    return [
        {
            "apiVersion": group,
            "kind": "ResourceFlavor",
            "metadata": {"name": "kq-t4"},
            "spec": {"nodeLabels": {"node.kubernetes.io/instance-type": "g4dn.xlarge"}},
        },
        {
            "apiVersion": group,
            "kind": "ClusterQueue",
            "metadata": {"name": "kq"},
            "spec": _cluster_queue("kq-t4", gpus),
        },
        {
            "apiVersion": group,
            "kind": "LocalQueue",
            "metadata": {"name": "kq", "namespace": NS},
            "spec": {"clusterQueue": "kq"},
        },
    ]


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    resources = {"cpu": "100m", "memory": "128Mi", "nvidia.com/gpu": "1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"kueue.x-k8s.io/queue-name": "kq"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "pytorch/pytorch:2.5.1",
                            "resources": {"requests": resources, "limits": resources},
                        }
                    ],
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            },
        },
    }


def _pods(cp: LocalControlPlane, app: str) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", NS, "-l", f"app={app}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def _gated(pod: dict[str, Any]) -> bool:
    return any(g["name"] == GATE for g in pod["spec"].get("schedulingGates") or [])


def test_a_queued_deployment_waits_for_quota_and_is_admitted_when_it_frees(
    kueue: KueueProcess, control_plane: LocalControlPlane
) -> None:
    cp = control_plane
    cp.apply(*_kueue_objects(gpus=1))
    cp.apply(_deployment("kq-a"))
    first = poll(lambda: [p for p in _pods(cp, "kq-a") if p["spec"].get("nodeName")], 60, "kq-a")
    assert not _gated(first[0])

    cp.apply(_deployment("kq-b"))
    waiting = poll(lambda: _pods(cp, "kq-b"), 30, "kq-b's pod")
    assert _gated(waiting[0]), waiting[0]["spec"]  # held back by Kueue, not by the scheduler

    def reason() -> str:
        out = cp.kubectl("get", "workloads.kueue.x-k8s.io", "-n", NS, "-o", "json")
        for workload in json.loads(out.stdout)["items"]:
            if workload["metadata"]["name"].startswith("pod-kq-b"):
                for condition in workload.get("status", {}).get("conditions", []):
                    if condition["type"] == "QuotaReserved" and condition["status"] == "False":
                        return str(condition["message"])
        return ""

    said = poll(reason, 30, "Kueue's reason")
    assert "insufficient" in said.lower() or "quota" in said.lower(), said

    cp.kubectl("delete", "deployment", "kq-a", "-n", NS)
    admitted = poll(
        lambda: [p for p in _pods(cp, "kq-b") if p["spec"].get("nodeName")], 90, "kq-b admitted"
    )
    assert not _gated(admitted[0])


def test_with_kueue_down_pods_outside_dev_namespaces_are_created_as_ever(
    kueue: KueueProcess, control_plane: LocalControlPlane
) -> None:
    cp = control_plane
    kueue.kill()
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kq-system", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
        cp.apply(pod)  # no webhook of Kueue's is called: it would fail, Kueue being down
        refused = cp.kubectl(
            "run", "kq-dev", "-n", NS, "--image=busybox", "--restart=Never", check=False
        )
        assert refused.returncode != 0  # in a dev namespace its webhook is called, and fails
    finally:
        cp.kubectl("delete", "pod", "kq-system", "-n", "default", "--wait=false", check=False)
        kueue.process.start()


# ------------------------------------------------------------------ devserver with Kueue

QUEUE = "kq-dev"  # the chart's ClusterQueue
NODE = NodeSpec("kq-g5-1", "g5.12xlarge", "kq-gpu")  # 4 GPUs: Kueue's quota (1) is the limit
USERS = {  # and their teams
    **{"kqa": "", "kqb": "", "kqc": "", "kqd": "", "kqr": "kq-red", "kqu": "kq-blue"},
    **{"kqg": "kq-gangs", "kqy": "kq-yield"},
}
COHORT = {"kq-red": "kq-red", "kq-blue": "kq-blue"}  # two teams of one cohort
GANGS = "kq-gangs"  # the distributed servers' team and queue, of their own
YIELD = "kq-yield"  # a team whose idle servers yield to its queued ones
TEAM_QUEUES = {**COHORT, GANGS: GANGS, YIELD: YIELD}
IDLE_YIELD_AFTER = "1m"
FLAVORS = {  # one GPU each; the second asks for more memory: another pod shape for Kueue
    "kq-gpu": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "1"},
    "kq-gpu-big": {"cpu": "100m", "memory": "512Mi", "nvidia.com/gpu": "1"},
    "kq-gpu-2": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "2"},
    "kq-huge": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "8"},  # no node has 8
}
CHART_KUEUE = {
    "kueue.resourceFlavors": {
        "kq-gpu": {
            "nodeLabels": {"eks.amazonaws.com/nodegroup": "kq-gpu"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        }
    },
    "kueue.clusterQueues": {
        # its users are admitted in turns: who used the least lately goes first
        QUEUE: _cluster_queue("kq-gpu", 1)
        | {"admissionScope": {"admissionMode": "UsageBasedAdmissionFairSharing"}},
        # one GPU each; either borrows the other's while it is unused, and reclaims it
        **{
            queue: _cluster_queue("kq-gpu", 1)
            | {
                "cohortName": "kq-cohort",
                "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"},
            }
            for queue in COHORT.values()
        },
        GANGS: _cluster_queue("kq-gpu", 1),
        # a queued server preempts one of lower priority: an idle one (`kueue.idleYield`)
        YIELD: _cluster_queue("kq-gpu", 1)
        | {"preemption": {"withinClusterQueue": "LowerPriority"}},
    },
    "kueue.teamQueues": TEAM_QUEUES,
    "kueue.idleYield.after": IDLE_YIELD_AFTER,
}


class Platform:
    def __init__(self, cp: LocalControlPlane, kueue: KueueProcess) -> None:
        self.cp, self.kueue = cp, kueue
        self.operator = self._operator(kueue=False)

    def _operator(self, *, kueue: bool) -> OperatorProcess:
        teams = [f"--kueue-team-queue={team}={queue}" for team, queue in TEAM_QUEUES.items()]
        queues = (
            ("--kueue-cluster-queue", QUEUE, *teams, f"--kueue-idle-yield-after={IDLE_YIELD_AFTER}")
            if kueue
            else ()
        )
        flags = ("--max-lifetime", "0", *queues)
        operator = OperatorProcess(self.cp.operator_kubeconfig, flags)
        operator.start()
        operator.wait_leading()
        return operator

    def restart_operator(self, *, kueue: bool) -> None:
        self.operator.stop()
        self.operator = self._operator(kueue=kueue)

    def get(self, kind: str, name: str, ns: str = "") -> dict[str, Any]:
        where = ("-n", ns) if ns else ()
        out = self.cp.kubectl("get", kind, name, *where, "-o", "json", check=False)
        return dict(json.loads(out.stdout)) if out.returncode == 0 else {}

    def status(self, name: str, user: str) -> dict[str, Any]:
        found = self.get("devservers.devservers.io", name, f"dev-{user}")
        return dict(found.get("status") or {})

    def ready(self, name: str, user: str) -> dict[str, Any]:
        for c in self.status(name, user).get("conditions") or []:
            if c["type"] == "Ready":
                return dict(c)
        return {}

    def events(self, name: str, user: str) -> list[tuple[str, str]]:
        """(reason, message) of the Events about server `name`, oldest first."""
        out = self.cp.kubectl(
            "get", "events", "-n", f"dev-{user}", "--field-selector",
            f"involvedObject.name={name}", "-o", "json",
        )  # fmt: skip
        return [(e["reason"], e.get("message", "")) for e in json.loads(out.stdout)["items"]]

    def pods(self, name: str, user: str) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "get", "pods", "-n", f"dev-{user}", "-l", f"devservers.io/name={name}", "-o", "json"
        )
        return [
            p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")
        ]

    def create(self, name: str, user: str, world_size: int = 0) -> None:
        spec: dict[str, Any] = {
            "owner": f"{user}@example.com",
            "flavor": "kq-gpu",
            "image": "pytorch/pytorch:2.5.1",
        }
        if world_size:  # homes deleted with the server: a StatefulSet made anew must not
            spec |= {
                "mode": "distributed",
                "distributed": {"worldSize": world_size},
                "retainHomeOnDelete": False,
            }
        self.cp.apply(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServer",
                "metadata": {"name": name, "namespace": f"dev-{user}"},
                "spec": spec,
            }
        )

    def set_gpu_quota(self, gpus: int, name: str = QUEUE) -> None:
        """A ClusterQueue's nominal GPU quota (as an admin would edit it)."""
        queue = self.get("clusterqueue", name)
        resources = queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
        index = next(i for i, r in enumerate(resources) if r["name"] == "nvidia.com/gpu")
        path = f"/spec/resourceGroups/0/flavors/0/resources/{index}/nominalQuota"
        patch = json.dumps([{"op": "replace", "path": path, "value": str(gpus)}])
        self.cp.kubectl("patch", "clusterqueue", name, "--type=json", "-p", patch)

    def set_stopped(self, name: str, user: str, stopped: bool) -> None:
        patch = json.dumps({"spec": {"stopped": stopped}})
        self.cp.kubectl(
            "patch",
            "devservers.devservers.io",
            name,
            "-n",
            f"dev-{user}",
            "--type=merge",
            "-p",
            patch,
        )

    def phase_is(self, name: str, user: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        poll(lambda: self.status(name, user).get("phase") == phase, timeout, f"{name} {phase}")
        return self.status(name, user)


@pytest.fixture(scope="module")
def platform(
    kueue: KueueProcess, control_plane: LocalControlPlane, quota_counts_devservers: None
) -> Iterator[Platform]:
    cp = control_plane
    cp.add_nodes(NODE)
    cp.apply(
        *(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevServerFlavor",
                "metadata": {"name": name},
                "spec": {
                    "resources": {"requests": resources, "limits": resources},
                    "nodeSelector": {"eks.amazonaws.com/nodegroup": "kq-gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            }
            for name, resources in FLAVORS.items()
        ),
        *(
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": user},
                "spec": {"email": f"{user}@example.com", **({"team": team} if team else {})},
            }
            for user, team in USERS.items()
        ),
    )
    platform = Platform(cp, kueue)
    try:
        yield platform
    finally:
        platform.operator.stop()
        for user in USERS:
            cp.kubectl("delete", "devuser", user, "--wait=false", check=False)
            cp.kubectl("delete", "namespace", f"dev-{user}", "--wait=false", check=False)
        cp.kubectl("delete", "devserverflavor", *FLAVORS, check=False)
        cp.install_devserver()  # the chart's defaults again: no Kueue objects, no Kueue rights
        cp.remove_nodes(NODE.name)


def test_a_server_that_ran_before_kueue_keeps_its_pod_and_queues_from_its_next_start(
    platform: Platform,
) -> None:
    p = platform
    poll(lambda: p.get("resourcequota", "dev-user", "dev-kqa"), 30, "dev-kqa's quota")
    p.create("kq-early", "kqa")
    p.phase_is("kq-early", "kqa", "Running")
    [before] = p.pods("kq-early", "kqa")

    p.cp.install_devserver(
        "kueue.enabled=true", f"kueue.clusterQueue={QUEUE}", json_values=CHART_KUEUE
    )
    p.restart_operator(kueue=True)
    queue = poll(lambda: p.get("localqueue", "devserver", "dev-kqa"), 30, "dev-kqa's LocalQueue")
    assert queue["spec"]["clusterQueue"] == QUEUE
    poll(lambda: p.get("localqueue", "devserver", "dev-kqb"), 30, "dev-kqb's LocalQueue")

    # a reconcile of the running server (an annotation wakes it) changes nothing of its pod
    p.cp.kubectl(
        "annotate",
        "devservers.devservers.io",
        "kq-early",
        "-n",
        "dev-kqa",
        "touched=1",
        "--overwrite",
    )
    time.sleep(3)
    [after] = p.pods("kq-early", "kqa")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    deployment = p.get("deployment", "kq-early", "dev-kqa")
    assert QUEUE_LABEL not in deployment["metadata"].get("labels", {})

    # its next start goes through the queue: the Deployment is labelled, Kueue admits the pod
    p.set_stopped("kq-early", "kqa", True)
    p.phase_is("kq-early", "kqa", "Stopped")
    p.set_stopped("kq-early", "kqa", False)
    p.phase_is("kq-early", "kqa", "Running")
    deployment = p.get("deployment", "kq-early", "dev-kqa")
    assert deployment["metadata"]["labels"][QUEUE_LABEL] == "devserver"
    [pod] = p.pods("kq-early", "kqa")
    assert pod["metadata"]["labels"].get(QUEUE_LABEL) == "devserver"  # Kueue manages it


def test_over_the_quota_a_server_is_queued_with_kueues_reason_and_runs_when_gpus_free(
    platform: Platform,
) -> None:
    p = platform
    p.phase_is("kq-early", "kqa", "Running")  # holds the queue's one GPU
    poll(lambda: p.get("resourcequota", "dev-user", "dev-kqb"), 30, "dev-kqb's quota")
    p.create("kq-next", "kqb")
    status = p.phase_is("kq-next", "kqb", "Queued")
    said = p.ready("kq-next", "kqb")
    assert said["reason"] == "Queued", said
    poll(lambda: "1st in the queue" in p.ready("kq-next", "kqb")["message"], 30, "its place")
    message = p.ready("kq-next", "kqb")["message"]
    assert "insufficient" in message.lower() and "nvidia.com/gpu" in message, message
    [pod] = p.pods("kq-next", "kqb")
    assert not pod["spec"].get("nodeName") and _gated(pod)  # no GPU held while it waits
    assert "billing" not in status or not status["billing"].get("gpuSeconds")

    p.set_stopped("kq-early", "kqa", True)  # the GPU comes back: the queued server gets it
    p.phase_is("kq-early", "kqa", "Stopped")
    p.phase_is("kq-next", "kqb", "Running", timeout=90)
    reasons = {reason for reason, _ in p.events("kq-next", "kqb")}
    assert "Ready" in reasons, reasons  # the user is told it is up


def test_with_kueue_down_running_servers_stay_stops_work_and_new_servers_wait(
    platform: Platform,
) -> None:
    p = platform
    p.phase_is("kq-next", "kqb", "Running")
    [running] = p.pods("kq-next", "kqb")
    p.kueue.kill()
    try:
        p.cp.kubectl(
            "annotate",
            "devservers.devservers.io",
            "kq-next",
            "-n",
            "dev-kqb",
            "touched=1",
            "--overwrite",
        )
        p.create("kq-late", "kqa")
        waiting = p.cp.kubectl(
            "get", "devservers.devservers.io", "kq-late", "-n", "dev-kqa", "-o", "json"
        )
        assert waiting.returncode == 0  # a DevServer is ours: no webhook of Kueue's is called

        def told() -> bool:
            reason = p.ready("kq-late", "kqa").get("reason")
            return p.status("kq-late", "kqa").get("phase") == "Pending" and reason not in (
                None,
                "Creating",
            )

        poll(told, 60, "kq-late told why it waits")
        said = p.ready("kq-late", "kqa")
        assert said["reason"] == "AdmissionUnavailable", said
        assert not p.pods("kq-late", "kqa")
        [still] = p.pods("kq-next", "kqb")
        assert still["metadata"]["uid"] == running["metadata"]["uid"]  # untouched

        p.set_stopped("kq-next", "kqb", True)  # the GPU is given back, Kueue or not
        poll(lambda: not p.pods("kq-next", "kqb"), 60, "kq-next's pod gone")
        p.phase_is("kq-next", "kqb", "Stopped")
    finally:
        p.kueue.process.start()
    p.phase_is("kq-late", "kqa", "Running", timeout=120)


def test_a_distributed_server_is_one_gang_no_rank_runs_until_all_are_admitted(
    platform: Platform,
) -> None:
    p = platform
    p.set_stopped("kq-late", "kqa", True)
    p.phase_is("kq-late", "kqa", "Stopped")
    poll(lambda: p.get("localqueue", "devserver", "dev-kqg"), 30, "dev-kqg's queue")
    poll(lambda: p.get("resourcequota", "dev-user", "dev-kqg"), 30, "dev-kqg's quota")
    p.set_gpu_quota(3, GANGS)  # room for 3 ranks of 4
    p.create("kq-gang", "kqg", world_size=4)
    p.phase_is("kq-gang", "kqg", "Queued")
    poll(lambda: len(p.pods("kq-gang", "kqg")) == 4, 60, "4 rank pods")
    time.sleep(5)  # Kueue's cycles pass: still nobody is admitted
    pods = p.pods("kq-gang", "kqg")
    assert all(_gated(pod) and not pod["spec"].get("nodeName") for pod in pods), pods
    said = p.ready("kq-gang", "kqg")["message"]
    assert said.startswith("all 4 ranks: 1st in the queue for GPU quota"), said
    assert p.status("kq-gang", "kqg")["readyRanks"] == 0

    p.set_gpu_quota(4, GANGS)  # now the whole gang fits: admitted together
    p.phase_is("kq-gang", "kqg", "Running", timeout=90)
    pods = p.pods("kq-gang", "kqg")
    assert len(pods) == 4 and all(pod["spec"].get("nodeName") for pod in pods)


def test_a_queued_gangs_world_size_and_flavor_change_by_a_restart_keeping_every_home(
    platform: Platform,
) -> None:
    """Kueue refuses a new replica count or pod shape of a StatefulSet it manages: the operator
    stops every rank, and starts them again (the StatefulSet made anew for a new shape), so the
    user only edits the spec. Homes are deleted with the server here, and still survive."""
    p = platform
    p.phase_is("kq-gang", "kqg", "Running")

    def homes() -> dict[str, str]:
        out = p.cp.kubectl("get", "pvc", "-n", "dev-kqg", "-o", "json")
        return {
            c["metadata"]["name"]: c["metadata"]["uid"]
            for c in json.loads(out.stdout)["items"]
            if c["metadata"]["name"].startswith("home-kq-gang-")
        }

    before = homes()
    assert len(before) == 4

    def edit(spec: dict[str, Any]) -> None:
        p.cp.kubectl(
            "patch", "devservers.devservers.io", "kq-gang", "-n", "dev-kqg", "--type=merge",
            "-p", json.dumps({"spec": spec}),
        )  # fmt: skip

    def settled(ranks: int, flavor: str) -> bool:
        status = p.status("kq-gang", "kqg")
        return (
            status.get("phase") == "Running"
            and status.get("readyRanks") == ranks
            and len(status.get("ranks") or []) == ranks
            and status.get("appliedFlavor") == flavor
            and len(p.pods("kq-gang", "kqg")) == ranks
        )

    def settle(ranks: int, flavor: str, what: str) -> None:
        """Wait; on a timeout, say what the server, its ranks and Kueue were at."""
        try:
            poll(lambda: settled(ranks, flavor), 120, what)
        except TimeoutError as error:
            kinds = "statefulsets,pods,workloads,events"
            seen = p.cp.kubectl("get", kinds, "-n", "dev-kqg", "-o", "wide", check=False).stdout
            log = "\n".join(p.operator.output().splitlines()[-40:])
            raise AssertionError(f"{error}\n{p.status('kq-gang', 'kqg')}\n{seen}\n{log}") from None

    edit({"distributed": {"worldSize": 2}})
    settle(2, "kq-gpu", "2 ranks running")
    statefulset = p.get("statefulset", "kq-gang", "dev-kqg")
    assert statefulset["spec"]["replicas"] == 2
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PET_NNODES", "value": "2"} in env

    edit({"flavor": "kq-gpu-big"})
    settle(2, "kq-gpu-big", "the new flavor running")
    made_anew = p.get("statefulset", "kq-gang", "dev-kqg")
    assert made_anew["metadata"]["uid"] != statefulset["metadata"]["uid"]
    assert homes() == before  # every rank's home, the same volumes: none deleted or made anew
    reasons = [reason for reason, _ in p.events("kq-gang", "kqg")]
    assert "Restarting" in reasons, reasons
    assert not any(r == "Failed" or r.startswith("Refused") for r in reasons), reasons

    # more ranks than the gang's queue holds (4 GPUs): parked, the 2 ranks run on untouched
    ranks = {pod["metadata"]["uid"] for pod in p.pods("kq-gang", "kqg")}
    edit({"distributed": {"worldSize": 6}})

    def parked() -> dict[str, Any]:
        found = [c for c in p.status("kq-gang", "kqg").get("conditions") or []]
        return next((c for c in found if c["type"] == "Resized" and c["status"] == "False"), {})

    said = poll(parked, 30, "the move parked")["message"]
    assert said.startswith("the move to 6 ranks of kq-gpu-big waits and keeps running as 2"), said
    workloads = p.cp.kubectl("get", "workloads", "-n", "dev-kqg", "-o", "json").stdout
    held = [
        (w["metadata"]["name"], w["metadata"].get("deletionTimestamp"), w.get("status"))
        for w in json.loads(workloads)["items"]
    ]
    assert "it needs 6 GPUs and the queue kq-gangs has" in said, (said, held)
    time.sleep(3)
    assert {pod["metadata"]["uid"] for pod in p.pods("kq-gang", "kqg")} == ranks
    assert p.status("kq-gang", "kqg")["phase"] == "Running"
    edit({"distributed": {"worldSize": 2}})  # asked back: nothing waits
    poll(lambda: not parked(), 30, "nothing parked")


def test_a_gang_workload_kueue_left_with_no_owner_is_deleted_and_the_gang_starts_again(
    platform: Platform,
) -> None:
    """Kueue 0.17.0 can leave a gang's Workload admitted with no owner once the gang scales to
    zero (kubernetes-sigs/kueue#12232, fixed in 0.17.7): it holds the gang's GPUs for nobody,
    and the gang's next start queues behind it for good (CI saw that here). Made as Kueue
    leaves it: a copy of the gang's, for an earlier StatefulSet, admitted to the queue's whole
    quota while an owner held it, then its last owner taken away. The operator deletes it only
    then, says so, and the stopped gang starts again within the queue's quota."""
    p = platform
    p.phase_is("kq-gang", "kqg", "Running")

    def gang_workloads() -> dict[str, dict[str, Any]]:
        out = p.cp.kubectl("get", "workloads", "-n", "dev-kqg", "-o", "json").stdout
        return {
            w["metadata"]["name"]: w
            for w in json.loads(out)["items"]
            if (w["metadata"].get("annotations") or {}).get("kueue.x-k8s.io/job-owner-name")
            == "kq-gang"
        }

    [own] = poll(lambda: list(gang_workloads().values()) if len(gang_workloads()) == 1 else [],
                 30, "the running gang's one Workload")  # fmt: skip
    meta = own["metadata"]
    p.set_stopped("kq-gang", "kqg", True)  # the queue's 4 GPUs free
    p.phase_is("kq-gang", "kqg", "Stopped")
    poll(lambda: not gang_workloads(), 60, "the stopped gang's Workload gone")

    holder = {"name": "kq-holder", "namespace": "dev-kqg"}
    p.cp.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": holder})
    holder_uid = p.get("configmap", "kq-holder", "dev-kqg")["metadata"]["uid"]
    spec = json.loads(json.dumps(own["spec"]))
    spec["podSets"][0]["count"] = 4  # the queue's whole quota
    left = "statefulset-kq-gang-left1"
    p.cp.apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": left,
                "namespace": "dev-kqg",
                "labels": {**meta.get("labels", {}), "kueue.x-k8s.io/job-uid": "an-earlier-one"},
                "annotations": {
                    k: v
                    for k, v in meta["annotations"].items()
                    if k.startswith("kueue.x-k8s.io/job")
                },
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "kq-holder",
                        "uid": holder_uid,
                    }
                ],
            },
            "spec": spec,
        }
    )

    def admitted() -> bool:
        found = gang_workloads().get(left) or {}
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(c["type"] == "QuotaReserved" and c["status"] == "True" for c in conditions)

    poll(admitted, 30, "the copy admitted: the queue's 4 GPUs held")
    time.sleep(3)  # an owned one is the garbage collector's: the operator leaves it
    assert left in gang_workloads()

    p.cp.kubectl(
        "patch", "workload", left, "-n", "dev-kqg", "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/metadata/ownerReferences"}]),
    )  # fmt: skip
    poll(lambda: left not in gang_workloads(), 30, "the left one deleted, not just marked")
    said = [message for reason, message in p.events("kq-gang", "kqg") if reason == "QuotaReleased"]
    assert any(left in m for m in said), said

    p.set_stopped("kq-gang", "kqg", False)
    p.phase_is("kq-gang", "kqg", "Running", timeout=120)


def test_borrowed_gpus_are_reclaimed_and_the_preempted_server_is_stopped_with_its_home(
    platform: Platform,
) -> None:
    """Team red runs two servers on one GPU of its own and one borrowed from team blue, idle;
    blue starts a server: Kueue reclaims blue's GPU by preempting one of red's, which the
    operator stops (not left to queue unseen), home kept, with Kueue's words as the reason."""
    p = platform
    p.set_stopped("kq-gang", "kqg", True)  # the node's GPUs back: only quota limits here
    p.phase_is("kq-gang", "kqg", "Stopped")
    for user in ("kqr", "kqu"):
        poll(lambda u=user: p.get("localqueue", "devserver", f"dev-{u}"), 30, f"{user}'s queue")
        poll(lambda u=user: p.get("resourcequota", "dev-user", f"dev-{u}"), 30, "quota")
    assert p.get("localqueue", "devserver", "dev-kqr")["spec"]["clusterQueue"] == "kq-red"
    p.create("kq-r1", "kqr")
    p.phase_is("kq-r1", "kqr", "Running")
    p.create("kq-r2", "kqr")
    p.phase_is("kq-r2", "kqr", "Running")  # on blue's unused GPU
    pods = {name: p.pods(name, "kqr")[0]["metadata"]["uid"] for name in ("kq-r1", "kq-r2")}

    p.create("kq-u1", "kqu")
    p.phase_is("kq-u1", "kqu", "Running", timeout=90)

    def preempted() -> str:
        stopped = [n for n in pods if p.status(n, "kqr").get("phase") == "Stopped"]
        return stopped[0] if len(stopped) == 1 else ""

    victim = poll(preempted, 60, "one of red's servers stopped")
    [kept] = [n for n in pods if n != victim]
    said = p.ready(victim, "kqr")
    assert said["reason"] == "Preempted", said
    assert "Kueue gave its GPUs" in said["message"], said
    assert p.status(kept, "kqr")["phase"] == "Running"
    assert p.pods(kept, "kqr")[0]["metadata"]["uid"] == pods[kept]  # untouched
    assert p.get("pvc", f"{victim}-home", "dev-kqr")  # its home is kept
    warned = [message for reason, message in p.events(victim, "kqr") if reason == "Preempted"]
    assert warned and "Kueue evicted it" in warned[0], warned

    # started again, it queues: red's own GPU is taken, and blue now uses its own
    p.set_stopped(victim, "kqr", False)
    p.phase_is(victim, "kqr", "Queued")


def test_a_flavor_change_that_cannot_happen_is_parked_and_the_server_keeps_running(
    platform: Platform,
) -> None:
    """To a flavor no node of its group can hold, then beyond the user's quota: each time the
    running pod stays, and the status says why in one sentence; once the quota is raised the
    change goes through by itself."""
    p = platform
    p.set_gpu_quota(4)  # the queue has room: the user's quota and the nodes limit here
    p.create("kq-move", "kqa")
    p.phase_is("kq-move", "kqa", "Running")
    [before] = p.pods("kq-move", "kqa")

    def flavor(name: str) -> None:
        p.cp.kubectl(
            "patch", "devservers.devservers.io", "kq-move", "-n", "dev-kqa", "--type=merge",
            "-p", json.dumps({"spec": {"flavor": name}}),
        )  # fmt: skip

    def parked() -> str:
        for c in p.status("kq-move", "kqa").get("conditions") or []:
            if c["type"] == "Resized" and c["status"] == "False":
                return str(c["message"])
        return ""

    def gpu_quota(gpus: int) -> None:
        patch = json.dumps({"spec": {"quota": {"gpus": gpus}}})
        p.cp.kubectl("patch", "devuser", "kqa", "--type=merge", "-p", patch)
        poll(
            lambda: (
                p.get("resourcequota", "dev-user", "dev-kqa")["status"]["hard"][
                    "requests.nvidia.com/gpu"
                ]
                == str(gpus)
            ),
            30,
            "the quota counted",
        )

    flavor("kq-huge")
    said = poll(parked, 30, "the move to kq-huge parked")
    assert said == (
        "the move to kq-huge waits and keeps running on kq-gpu: no node it can run on is big "
        "enough: it needs 8 GPUs, the largest has 4; pick a smaller flavor or ask an admin"
    ), said
    status = p.status("kq-move", "kqa")
    assert status["phase"] == "Running" and status["appliedFlavor"] == "kq-gpu"

    gpu_quota(1)
    flavor("kq-gpu-2")
    poll(lambda: "kq-gpu-2" in parked(), 30, "the move to kq-gpu-2 parked")
    said = parked()
    assert "it needs 2 GPUs and your quota allows 1" in said, said
    [still] = p.pods("kq-move", "kqa")
    assert still["metadata"]["uid"] == before["metadata"]["uid"]  # never stopped meanwhile
    assert "ResizeParked" in {reason for reason, _ in p.events("kq-move", "kqa")}

    gpu_quota(4)  # the reason is gone: the change is made without the user asking again
    poll(
        lambda: (
            p.status("kq-move", "kqa").get("appliedFlavor") == "kq-gpu-2"
            and p.status("kq-move", "kqa").get("phase") == "Running"
        ),
        90,
        "kq-move running on kq-gpu-2",
    )
    assert not parked()
    [after] = p.pods("kq-move", "kqa")
    assert after["metadata"]["uid"] != before["metadata"]["uid"]


def test_devctl_quota_shows_a_user_their_ceiling_and_their_teams_queue(
    platform: Platform,
) -> None:
    """As the user, with their own token: blue's queue, its one GPU in use by their server."""
    p = platform
    p.phase_is("kq-u1", "kqu", "Running")
    kubeconfig = p.cp.service_account_kubeconfig("dev-kqu", "user-kqu", duration="10m")
    result = CliRunner().invoke(cli, ["--kubeconfig", str(kubeconfig), "quota", "-o", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"resource": "GPUs", "used": "1", "limit": "8"} in report["limits"]
    queue = report["queue"]
    assert (queue["clusterQueue"], queue["cohort"]) == ("kq-blue", "kq-cohort")
    assert (queue["nominalGpus"], queue["gpusInUse"], queue["yourGpus"]) == (1, 1, 1)
    text = CliRunner().invoke(cli, ["--kubeconfig", str(kubeconfig), "quota"]).stdout
    assert "GPU queue devserver → kq-blue (cohort kq-cohort), shared by your team:" in text


def test_two_users_of_one_queue_are_admitted_in_turns_not_first_come_takes_all(
    platform: Platform,
) -> None:
    """One GPU, two users new to the queue (no usage of earlier tests to weigh): kqc queues
    three servers, then kqd two. With usage-based admission fair sharing, kqd's first server
    goes before kqc's second, though queued later, and each user gets two of the first four
    turns."""
    p = platform
    p.set_stopped("kq-move", "kqa", True)
    p.phase_is("kq-move", "kqa", "Stopped")
    p.set_gpu_quota(1)
    for user in ("kqc", "kqd"):
        poll(lambda u=user: p.get("localqueue", "devserver", f"dev-{u}"), 30, f"{user}'s queue")
        poll(lambda u=user: p.get("resourcequota", "dev-user", f"dev-{u}"), 30, "quota")
    first = "kq-fa1"
    p.create(first, "kqc")
    p.phase_is(first, "kqc", "Running")
    for name in ("kq-fa2", "kq-fa3"):
        p.create(name, "kqc")
        p.phase_is(name, "kqc", "Queued")
    time.sleep(2)  # kqb's are queued later: first come would be kqa's
    for name in ("kq-fb1", "kq-fb2"):
        p.create(name, "kqd")
        p.phase_is(name, "kqd", "Queued")
    waiting = {"kq-fa2": "kqc", "kq-fa3": "kqc", "kq-fb1": "kqd", "kq-fb2": "kqd"}
    turns, running = [], (first, "kqc")
    for _ in range(3):
        time.sleep(5)  # each turn holds the GPU a while: usage to weigh
        p.set_stopped(*running, True)

        def admitted() -> str:
            found = [n for n, u in waiting.items() if p.status(n, u).get("phase") == "Running"]
            return found[0] if len(found) == 1 else ""

        name = poll(admitted, 60, "the next turn")
        turns.append(waiting.pop(name))
        running = (name, turns[-1])
    assert turns[0] == "kqd", turns  # not first come: kqc has used the GPU, kqd not yet
    assert ["kqc", *turns].count("kqc") == 2 and turns.count("kqd") == 2, turns


def test_an_idle_server_yields_its_gpu_to_a_queued_one_and_an_active_one_never_does(
    platform: Platform,
) -> None:
    """Team kq-yield has one GPU, and a queue that preempts only lower priorities. Its first
    server runs, active; a second queues and stays queued (an active server never yields).
    Once the first's agent reports it idle for longer than `--kueue-idle-yield-after`, the
    operator marks its pod idle, Kueue preempts it for the queued one, and it is stopped with
    its home and told why."""
    p = platform
    others = {"kq-u1": "kqu", "kq-r1": "kqr", "kq-r2": "kqr", "kq-fa1": "kqc", "kq-fb1": "kqd"}
    others |= {"kq-fa2": "kqc", "kq-fa3": "kqc", "kq-fb2": "kqd"}
    for name, user in others.items():  # the node's GPUs free: only the quota limits here
        if p.status(name, user).get("phase") not in (None, "Stopped"):
            p.set_stopped(name, user, True)
    poll(lambda: p.get("localqueue", "devserver", "dev-kqy"), 30, "dev-kqy's queue")
    poll(lambda: p.get("resourcequota", "dev-user", "dev-kqy"), 30, "dev-kqy's quota")
    p.create("kq-y1", "kqy")
    p.phase_is("kq-y1", "kqy", "Running", timeout=90)
    [pod] = p.pods("kq-y1", "kqy")
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "devserver-active"
    report_activity(p.cp, "kq-y1-activity", "dev-kqy", idle=False)

    p.create("kq-y2", "kqy")
    p.phase_is("kq-y2", "kqy", "Queued")
    time.sleep(5)  # Kueue has had its cycles: among equals, nobody is preempted
    assert p.status("kq-y1", "kqy")["phase"] == "Running"
    assert p.pods("kq-y1", "kqy")[0]["metadata"]["uid"] == pod["metadata"]["uid"]

    report_activity(
        p.cp, "kq-y1-activity", "dev-kqy", idle=True
    )  # idle for 5 min, past the 1 min to yield
    p.phase_is("kq-y1", "kqy", "Stopped", timeout=60)
    said = p.ready("kq-y1", "kqy")
    assert said["reason"] == "Preempted", said
    p.phase_is("kq-y2", "kqy", "Running", timeout=60)
    assert p.get("pvc", "kq-y1-home", "dev-kqy")  # its home is kept
    warned = [message for reason, message in p.events("kq-y1", "kqy") if reason == "Preempted"]
    assert warned and "it was idle and a queued server needed its GPUs" in warned[0], warned
