"""A clever user and a careless admin against the real API server and operator.

Each case is one action, as a user with their own TokenRequest token (kubectl and devctl) or as
an admin. It is either refused — a non-zero exit with one sentence, and nothing of the user's
servers, homes or the operator's objects changed — or handled: the action goes through and the
guarantees still hold (the stop stays within the cap, the home keeps its UID, the operator
repairs what it owns).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll

pytestmark = pytest.mark.integration

USER, NS = "hana", "dev-hana"
CAP = timedelta(hours=3)
DEVCTL = str(Path(sys.prefix) / "bin" / "devctl")


@dataclass
class World:
    control_plane: LocalControlPlane
    user_config: Path
    tmp: Path

    def kubectl(self, *args: str, admin: bool = False) -> subprocess.CompletedProcess[str]:
        config = None if admin else self.user_config
        return self.control_plane.kubectl(*args, check=False, kubeconfig=config)

    def devctl(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(config or self.user_config)}
        env.pop("DEVSERVER_AUDIT_SOCKET", None)
        return subprocess.run(
            [DEVCTL, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def get(self, kind: str, name: str, ns: str = NS) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-n", ns, "-o", "json", admin=True)
        return dict(json.loads(out.stdout)) if out.returncode == 0 else {}

    def snapshot(self) -> dict[str, str]:
        """What must not change when an action is refused: servers' specs and homes' UIDs."""
        out = self.kubectl(
            "get", "devservers.devservers.io,pvc,deployments,services,leases,networkpolicies",
            "-n", NS, "-o", "json", admin=True,
        )  # fmt: skip
        items = json.loads(out.stdout)["items"]
        seen = {}
        for item in items:
            key = f"{item['kind']}/{item['metadata']['name']}"
            body = item.get("spec", {}) if item["kind"] != "PersistentVolumeClaim" else {}
            seen[key] = item["metadata"]["uid"] + json.dumps(body, sort_keys=True)
            if item["kind"] == "Lease":
                seen[key] = item["metadata"]["uid"]  # the agent renews it; its spec moves
        return seen


@pytest.fixture(scope="module")
def world(
    control_plane: LocalControlPlane,
    quota_counts_devservers: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    operator = OperatorProcess(control_plane.operator_kubeconfig, ("--max-lifetime", "3h"))
    operator.start()
    operator.wait_leading()
    tmp = tmp_path_factory.mktemp("hostile")
    config = control_plane.add_user(USER, tmp / "config")
    w = World(control_plane, config, tmp)
    made = w.devctl("create", "box", "--flavor", "cpu-small", "--time", "1h", "--wait")
    assert made.returncode == 0, made.stderr
    poll(lambda: w.get("pvc", "box-home").get("spec", {}).get("volumeName"), 30, "bound")
    try:
        yield w
    finally:
        assert operator.alive(), operator.output()[-3000:]
        code = operator.stop()
        control_plane.kubectl("delete", "devuser.devservers.io", USER, "--wait=false", check=False)
        control_plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        assert code == 0


def _manifest(w: World, name: str, body: dict[str, Any]) -> str:
    path = w.tmp / f"{name}.json"
    path.write_text(json.dumps(body))
    return str(path)


def _server(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"owner": USER, "flavor": "cpu-small", "image": "busybox", **spec},
    }


# ------------------------------------------------------------------ refused, nothing changed

KUBECTL_REFUSALS: list[tuple[str, list[str]]] = [
    ("delete a home volume", ["delete", "pvc", "box-home"]),
    ("delete the workload", ["delete", "deployment", "box"]),
    ("scale the workload", ["scale", "deployment", "box", "--replicas=3"]),
    ("delete the ssh service", ["delete", "service", "box"]),
    ("run a raw pod", ["run", "raw", "--image=busybox", "--restart=Never"]),
    ("create a deployment", ["create", "deployment", "raw", "--image=busybox"]),
    ("read secrets", ["get", "secrets"]),
    ("write the agent's Lease", ["annotate", "lease", "box-activity", "x=y"]),
    ("delete the agent's Lease", ["delete", "lease", "box-activity"]),
    ("delete the agent's Role", ["delete", "role", "box-agent"]),
    ("mint the agent's token", ["create", "token", "box-agent"]),
    ("delete the scripts", ["delete", "configmap", "devserver-scripts"]),
    ("delete a network policy", ["delete", "networkpolicy", "devserver-same-namespace-only"]),
    ("raise the quota", ["patch", "resourcequota", "dev-user", "-p", '{"spec":{"hard":{}}}']),
    ("bind a role", ["create", "rolebinding", "x", "--clusterrole=admin", "--user=hana"]),
    ("delete the namespace", ["delete", "namespace", NS]),
    ("label the namespace", ["label", "namespace", NS, "pod-security.kubernetes.io/enforce-"]),
    ("delete the user", ["delete", "devuser.devservers.io", USER]),
    ("edit a flavor", ["label", "devserverflavor.devservers.io", "cpu-small", "x=y"]),
    (
        "write the status",
        [
            "patch",
            "devserver.devservers.io",
            "box",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"expiresAt":"2100-01-01T00:00:00Z"}}',
        ],
    ),
    ("another user's namespace", ["get", "devservers.devservers.io", "-n", "kube-system"]),
]


@pytest.mark.parametrize(("what", "args"), KUBECTL_REFUSALS, ids=[c[0] for c in KUBECTL_REFUSALS])
def test_a_user_with_kubectl_is_refused(world: World, what: str, args: list[str]) -> None:
    before = world.snapshot()
    result = world.kubectl(*args, *(["-n", NS] if "-n" not in args else []))
    assert result.returncode != 0, f"{what}: allowed"
    assert "forbidden" in result.stderr.lower(), result.stderr
    assert world.snapshot() == before


SPEC_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("an unbounded time to live", _server("t1", lifecycle={"timeToLive": "9999999999d"}), ""),
    ("a huge idle timeout", _server("t2", lifecycle={"idleTimeout": 10**12}), ""),
    ("a name starting with a digit", {**_server("x"), "metadata": {"name": "9box"}}, "name"),
    ("a dotted name", {**_server("x"), "metadata": {"name": "a.b"}}, "name"),
    ("a 41-character name", {**_server("x"), "metadata": {"name": "b" * 41}}, "40"),
    ("an absurd home size", _server("t3", persistentHomeSize="9999999999999999Pi"), ""),
    ("an image with a space", _server("t4", image="busybox latest"), ""),
    ("an image in unicode", _server("t5", image="büsybox"), ""),
    ("a flavor that is no name", _server("t6", flavor="Not A Name"), ""),
    ("a shared claim that is no name", _server("t7", sharedVolumeClaimName="../etc"), ""),
    (
        "65 ranks",
        _server("t8", mode="distributed", distributed={"worldSize": 65}),
        "",
    ),
    (
        "LD_PRELOAD through ncclSettings",
        _server(
            "t9",
            mode="distributed",
            distributed={"worldSize": 2, "ncclSettings": {"LD_PRELOAD": "/x.so"}},
        ),
        "NCCL_",
    ),
    ("a negative idle timeout", _server("t10", lifecycle={"idleTimeout": -5}), ""),
    (
        "a time without a zone",
        _server("t12", lifecycle={"expirationTime": "2030-01-01T00:00:00"}),
        "date-time",
    ),
    ("a 33-character owner e-mail of text", _server("t11", owner="x" * 300), ""),
]


@pytest.mark.parametrize(("what", "body", "said"), SPEC_REFUSALS, ids=[c[0] for c in SPEC_REFUSALS])
def test_bad_specs_are_refused_by_the_api_server(
    world: World, what: str, body: dict[str, Any], said: str
) -> None:
    before = world.snapshot()
    result = world.kubectl("create", "-f", _manifest(world, "bad", body))
    assert result.returncode != 0, f"{what}: accepted"
    assert "invalid" in result.stderr.lower() or "forbidden" in result.stderr.lower()
    assert said in result.stderr
    assert world.snapshot() == before


DEVCTL_REFUSALS: list[tuple[str, list[str], int]] = [
    ("a bad name", ["create", "Bad_Name", "--flavor", "cpu-small"], 1),
    ("an unknown flavor", ["create", "x1", "--flavor", "nope"], 1),
    ("a time that is no duration", ["create", "x2", "--flavor", "cpu-small", "--time", "soon"], 1),
    (
        "a time of 3 million days",
        ["create", "x4", "--flavor", "cpu-small", "--time", "3000000d"],
        1,
    ),
    ("an idle timeout past 30 days", ["create", "x3", "--flavor", "cpu-small", "--idle", "90d"], 1),
    ("delete what is not there", ["delete", "ghost", "--yes"], 1),
    ("exec into what is not there", ["exec", "ghost", "--", "true"], 1),
    ("extend what is not there", ["extend", "ghost", "--time", "1h"], 1),
    ("another namespace", ["-n", "kube-system", "list"], 1),
    ("an unknown command", ["frobnicate"], 2),
]


@pytest.mark.parametrize(
    ("what", "args", "code"), DEVCTL_REFUSALS, ids=[c[0] for c in DEVCTL_REFUSALS]
)
def test_devctl_refuses_with_one_sentence(
    world: World, what: str, args: list[str], code: int
) -> None:
    before = world.snapshot()
    result = world.devctl(*args)
    assert result.returncode == code, f"{what}: {result.returncode} {result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip(), what
    assert world.snapshot() == before


def test_devctl_with_broken_kubeconfigs_says_one_sentence(world: World) -> None:
    broken = {
        "missing": world.tmp / "does-not-exist",
        "garbage": world.tmp / "garbage",
        "no contexts": world.tmp / "empty",
        "expired token": world.tmp / "expired",
    }
    broken["garbage"].write_text("{{{ not yaml")
    broken["no contexts"].write_text("apiVersion: v1\nkind: Config\n")
    config = yaml.safe_load(world.user_config.read_text())
    token = config["users"][0]["user"]["token"]
    config["users"][0]["user"]["token"] = token[:-8] + "AAAAAAAA"
    broken["expired token"].write_text(yaml.safe_dump(config))
    for what, path in broken.items():
        result = world.devctl("list", config=path)
        assert result.returncode == 1, what
        assert "Traceback" not in result.stderr, what
        assert len(result.stderr.strip().splitlines()) == 1, (what, result.stderr)


# ------------------------------------------------------------------ handled: the guarantees hold


def _expires(w: World, name: str) -> datetime:
    status = w.get("devserver.devservers.io", name).get("status", {})
    return datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))


def _start(w: World, name: str) -> datetime:
    status = w.get("devserver.devservers.io", name).get("status", {})
    return datetime.fromisoformat(status["lastStart"].replace("Z", "+00:00"))


def test_forged_start_and_far_deadlines_stay_within_the_cap(world: World) -> None:
    """The attacks of the report: a start annotation in 2100, a ttl of 3,000,000 days, an
    expiration time in 9999, a far extension — none moves the stop past start + cap."""
    made = world.devctl("create", "hog", "--flavor", "cpu-small", "--time", "36000d")
    assert made.returncode == 0, made.stderr
    huge = world.kubectl("patch", "devserver.devservers.io", "hog", "-n", NS, "--type=merge",
                         "-p", '{"spec":{"lifecycle":{"timeToLive":"3000000d"}}}')  # fmt: skip
    assert huge.returncode == 0, huge.stderr
    poll(lambda: world.get("devserver.devservers.io", "hog").get("status", {}).get("expiresAt"),
          20, "a deadline")  # fmt: skip
    start = _start(world, "hog")
    assert _expires(world, "hog") <= start + CAP
    forged = "devservers.io/started-at=2100-01-01T00:00:00Z"
    actions = [
        ["annotate", "devserver.devservers.io", "hog", forged],
        ["patch", "devserver.devservers.io", "hog", "--type=merge", "-p",
         '{"spec":{"lifecycle":{"expirationTime":"9999-12-31T23:59:59Z"}}}'],
        ["patch", "devserver.devservers.io", "hog", "--type=merge", "-p",
         '{"spec":{"lifecycle":{"expirationTime":"2030-01-01T00:00:00+14:00"}}}'],
        ["label", "devserver.devservers.io", "hog", "devserver.io/name=other"],
        ["annotate", "devserver.devservers.io", "hog", "devservers.io/warned=garbage@never"],
    ]  # fmt: skip
    for args in actions:
        overwrite = ["--overwrite"] if args[0] in ("annotate", "label") else []
        result = world.kubectl(*args, "-n", NS, *overwrite)
        assert result.returncode == 0, result.stderr
        time.sleep(1)
        assert _expires(world, "hog") <= start + CAP, args
        assert _start(world, "hog") == start, args
    extended = world.devctl("extend", "hog", "--time", "36000d")
    assert extended.returncode == 0, extended.stderr
    assert "capped" in extended.stdout
    assert _expires(world, "hog") <= start + CAP
    listed = world.devctl("list")
    assert listed.returncode == 0 and "hog" in listed.stdout, listed.stderr


def test_a_stop_scales_to_zero_even_when_a_child_is_refused(world: World) -> None:
    """A shared volume name no claim has, and an admin's quota that refuses the service: the
    workload still scales to zero on stop, and the status quotes the API server."""
    made = world.kubectl("create", "-f", _manifest(world, "s", _server("stopme")))
    assert made.returncode == 0, made.stderr
    poll(lambda: world.get("deployment", "stopme").get("status", {}).get("readyReplicas"),
          30, "running")  # fmt: skip
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-more-services", "namespace": NS},
        "spec": {"hard": {"services": "0"}},
    }
    world.control_plane.apply(quota)
    try:
        world.kubectl("patch", "devserver.devservers.io", "stopme", "--type=merge",
                      "-p", '{"spec":{"enableSSH":false}}')  # fmt: skip
        world.kubectl("patch", "devserver.devservers.io", "stopme", "--type=merge",
                      "-p", '{"spec":{"enableSSH":true}}')  # fmt: skip
        time.sleep(2)  # the service is gone and cannot come back: refused by the quota
        stopped = world.devctl("stop", "stopme")
        assert stopped.returncode == 0, stopped.stderr
        poll(lambda: world.get("deployment", "stopme")["spec"]["replicas"] == 0, 10, "zero")

        def refusal() -> str:
            conditions = world.get("devserver.devservers.io", "stopme")["status"]["conditions"]
            applied = next((c for c in conditions if c["type"] == "Applied"), {})
            return str(applied.get("message", "")) if applied.get("status") == "False" else ""

        message = poll(refusal, 15, "the refusal in the status")
        assert "exceeded quota" in message and "Service" in message
        phase = world.get("devserver.devservers.io", "stopme")["status"]["phase"]
        assert phase == "Stopped"
    finally:
        world.kubectl("delete", "resourcequota", "no-more-services", "-n", NS, admin=True)


def test_a_home_never_shrinks_and_survives_a_careless_admin(world: World) -> None:
    claim = world.get("pvc", "box-home")
    uid, volume = claim["metadata"]["uid"], claim["spec"]["volumeName"]
    pv = world.get("pv", volume, ns="")
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # a deleted claim keeps data
    shrink = world.kubectl("patch", "devserver.devservers.io", "box", "--type=merge",
                           "-p", '{"spec":{"persistentHomeSize":"1Gi"}}')  # fmt: skip
    assert shrink.returncode == 0, shrink.stderr
    time.sleep(2)
    after = world.get("pvc", "box-home")
    assert after["metadata"]["uid"] == uid
    assert (
        after["spec"]["resources"]["requests"]["storage"]
        == claim["spec"]["resources"]["requests"]["storage"]
    )
    conditions = world.get("devserver.devservers.io", "box")["status"]["conditions"]
    assert next(c for c in conditions if c["type"] == "Applied")["status"] == "True"
    # an admin deletes the workload and the service: the operator puts them back
    for kind in ("deployment", "service"):
        assert world.kubectl("delete", kind, "box", "-n", NS, admin=True).returncode == 0
    poll(lambda: world.get("deployment", "box").get("status", {}).get("readyReplicas"),
          30, "the workload back")  # fmt: skip
    poll(lambda: world.get("service", "box"), 10, "the service back")
    assert world.get("pvc", "box-home")["metadata"]["uid"] == uid
    # re-created by name with a smaller size: the kept home is adopted as it is
    deleted = world.devctl("delete", "box", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    poll(lambda: not world.get("devserver.devservers.io", "box"), 30, "deleted")
    again = world.devctl("create", "box", "--flavor", "cpu-small", "--home-size", "1Gi", "--wait")
    assert again.returncode == 0, again.stderr
    assert world.get("pvc", "box-home")["metadata"]["uid"] == uid


@pytest.mark.parametrize("trick", ["orphan", "finalizer"])
def test_deleting_a_server_in_ways_that_keep_its_children_gives_the_gpus_back(
    world: World, trick: str
) -> None:
    """`kubectl delete --cascade=orphan` strips the owner references from the workload, and a
    finalizer of the user's own holds the server in deletion forever: either way the workload
    must not keep running with nobody to stop it."""
    name = f"trick-{trick}"
    made = world.kubectl("create", "-f", _manifest(world, name, _server(name)))
    assert made.returncode == 0, made.stderr
    poll(lambda: world.get("deployment", name).get("status", {}).get("readyReplicas"),
          30, "running")  # fmt: skip
    if trick == "orphan":
        gone = world.kubectl("delete", "devserver.devservers.io", name, "-n", NS,
                             "--cascade=orphan")  # fmt: skip
    else:
        world.kubectl("patch", "devserver.devservers.io", name, "-n", NS, "--type=merge",
                      "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')  # fmt: skip
        gone = world.kubectl("delete", "devserver.devservers.io", name, "-n", NS, "--wait=false")
    assert gone.returncode == 0, gone.stderr
    poll(lambda: world.get("deployment", name).get("spec", {}).get("replicas") == 0
          or not world.get("deployment", name), 15, "the workload at zero")  # fmt: skip
    if trick == "finalizer":
        world.kubectl("patch", "devserver.devservers.io", name, "-n", NS, "--type=merge",
                      "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
    world.kubectl("delete", "deployment", name, "-n", NS, admin=True)
