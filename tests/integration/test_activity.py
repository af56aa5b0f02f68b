"""Idle shutdown on the real control plane, with the real activity agent as a local process.

kwok runs no containers, so each dev pod's processes run here in a `LocalPod`: the entrypoint
the operator ships starts the agent beside the main process, exactly as in a pod, and the agent
reports to the DevServer's real Lease with a token of the ServiceAccount the operator made for
it. What each test pod does is real: an exec session, a nohup'd process, CPU load, nothing.
The operator warns 20 s ahead and deletes servers stopped for 15 s (keeping their homes); the
shortest idle timeout the API accepts is 60 s.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.http import fetch
from devserver_harness.operator import OperatorProcess, operator_with_namespace
from devserver_harness.process import poll as wait
from tests.support.localpod import LocalPod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

NS = "dev-activity"
CPU_LOAD = (
    "while :; do i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 0.3; done"
    " & exec sleep infinity"
)


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    flags = ("--max-lifetime", "0", "--warn-before", "20s", "--stopped-retention", "15s")
    with operator_with_namespace(control_plane, NS, *flags) as process:
        yield process


def get(control_plane: LocalControlPlane, kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads(control_plane.kubectl("get", kind, name, "-n", NS, "-o", "json").stdout))


def events(control_plane: LocalControlPlane, name: str) -> list[dict[str, Any]]:
    out = control_plane.kubectl(
        "get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return list(json.loads(out.stdout)["items"])


def create(
    control_plane: LocalControlPlane,
    name: str,
    spec: dict[str, Any] | None = None,
    **lifecycle: object,
) -> None:
    control_plane.apply(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "owner": "mia@example.com",
                "flavor": "cpu-small",
                "image": "pytorch/pytorch:2.5.1",
                "lifecycle": lifecycle,
                **(spec or {}),
            },
        }
    )


def phase(control_plane: LocalControlPlane, name: str) -> str:
    ds = get(control_plane, "devservers.devservers.io", name)
    return str(ds.get("status", {}).get("phase", ""))


def agent_env(control_plane: LocalControlPlane, name: str, tmp: Path) -> dict[str, str]:
    """What the pod's env and ServiceAccount mount give the agent, pointed at this machine."""
    wait(lambda: get(control_plane, "serviceaccount", f"{name}-agent"), 30, "the agent's account")
    token = control_plane.kubectl(
        "create", "token", f"{name}-agent", "-n", NS, "--duration=1h"
    ).stdout.strip()
    (tmp / f"{name}.token").write_text(token)
    return {
        "DEVSERVER_API": control_plane.server,
        "DEVSERVER_TOKEN_FILE": str(tmp / f"{name}.token"),
        "DEVSERVER_CA_FILE": str(control_plane.layout.pki.ca.cert),
        "DEVSERVER_NAMESPACE": NS,
        "DEVSERVER_LEASE": f"{name}-activity",
        "DEVSERVER_POD": f"{name}-pod",
        "DEVSERVER_SAMPLE_SECONDS": "1",
        "DEVSERVER_RENEW_SECONDS": "5",
        "DEVSERVER_PODINFO": str(tmp / f"{name}.podinfo"),
        "DEVSERVER_TERMINALS": str(tmp / "no-terminals-*"),
    }


def metric(operator: OperatorProcess, name: str) -> float:
    """The series' sum over teams for flavor gpu-small (-1: none exported)."""
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in fetch(operator.url + "/metrics", timeout=5)[1].decode().splitlines()
        if line.startswith(f"{name}{{") and 'flavor="gpu-small"' in line
    ]
    return sum(found) if found else -1.0


def gone(control_plane: LocalControlPlane, name: str) -> bool:
    found = control_plane.kubectl("get", "devservers.devservers.io", name, "-n", NS, check=False)
    return found.returncode != 0


def lease_request(
    control_plane: LocalControlPlane, token_file: str, lease: str, method: str = "GET"
) -> int:
    url = urlsplit(control_plane.server)
    context = ssl.create_default_context(cafile=str(control_plane.layout.pki.ca.cert))
    conn = HTTPSConnection(url.hostname or "", url.port, context=context, timeout=10)
    body = json.dumps({"metadata": {"annotations": {"x": "y"}}}) if method == "PATCH" else None
    conn.request(
        method,
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{lease}",
        body=body,
        headers={
            "Authorization": f"Bearer {Path(token_file).read_text().strip()}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    status = conn.getresponse().status
    conn.close()
    return status


def test_used_servers_stay_up_and_an_idle_one_stops_with_reason_idle(
    operator: OperatorProcess, control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    kinds = ("idle", "session", "training", "cpu", "silent")
    for kind in kinds:
        gpu = {"flavor": "gpu-small"} if kind in ("idle", "training") else None
        create(control_plane, f"act-{kind}", gpu, idleTimeout=60)
    for kind in kinds:
        wait(lambda k=kind: phase(control_plane, f"act-{k}") == "Running", 60, f"{kind} running")
    home = get(control_plane, "pvc", "act-idle-home")["metadata"]["uid"]
    pods: list[LocalPod] = []
    try:
        envs = {k: agent_env(control_plane, f"act-{k}", tmp_path) for k in kinds[:4]}
        started = datetime.now(UTC)
        idle = LocalPod(envs["idle"], ["sleep", "infinity"], tmp_path / "idle.log")
        session = LocalPod(envs["session"], ["sleep", "infinity"], tmp_path / "session.log")
        session.exec(["sleep", "100000"])  # `kubectl exec box -- …`: a session from outside
        training = LocalPod(
            envs["training"],
            ["sh", "-c", "python3 -c 'import time; time.sleep(10**6)' & exec sleep infinity"],
            tmp_path / "training.log",
        )
        cpu = LocalPod(envs["cpu"], ["sh", "-c", CPU_LOAD], tmp_path / "cpu.log")
        pods += [idle, session, training, cpu]  # "silent" has no agent at all

        # the agent may write its own Lease, and nothing else
        token = envs["idle"]["DEVSERVER_TOKEN_FILE"]
        assert lease_request(control_plane, token, "act-idle-activity") == 200
        assert lease_request(control_plane, token, "act-session-activity", "PATCH") == 403
        assert lease_request(control_plane, token, "act-idle-activity", "PATCH") == 200

        def lease_says(kind: str) -> str:
            lease = get(control_plane, "lease", f"act-{kind}-activity")
            return str(lease["metadata"].get("annotations", {}).get("devservers.io/activity", ""))

        for kind, why in (("session", "sessions"), ("training", "processes"), ("cpu", "cpu")):
            wait(lambda k=kind, w=why: w in lease_says(k), 30, f"{kind} reported active")
        wait(lambda: lease_says("idle").startswith("idle"), 30, "idle reported idle")
        # two GPU servers hold a GPU each; only the training one is in use
        wait(lambda: metric(operator, "devserver_gpus_active") == 1.0, 30, "GPUs active")
        assert metric(operator, "devserver_gpus_held") == 2.0
        idle_since = wait(
            lambda: get(control_plane, "devservers.devservers.io", "act-idle")["status"].get(
                "idleSince"
            ),
            30,
            "status.idleSince",
        )
        since = datetime.fromisoformat(idle_since.replace("Z", "+00:00"))
        assert started - timedelta(seconds=2) <= since <= started + timedelta(seconds=10)

        warning = wait(
            lambda: next(e for e in events(control_plane, "act-idle") if e["reason"] == "IdleSoon"),
            90,
            "the idle warning",
        )
        stop_at = since + timedelta(seconds=60)
        assert f"{stop_at:%H:%M:%S} UTC" in warning["message"]
        assert datetime.now(UTC) < stop_at + timedelta(seconds=1)  # warned before the stop

        wait(lambda: phase(control_plane, "act-idle") == "Stopped", 60, "the idle stop")
        assert datetime.now(UTC) >= stop_at  # not early
        ds = get(control_plane, "devservers.devservers.io", "act-idle")
        assert ds["metadata"]["annotations"]["devservers.io/stop-reason"] == "Idle"
        ready = next(c for c in ds["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Idle"
        assert any(e["reason"] == "Idle" for e in events(control_plane, "act-idle"))
        assert get(control_plane, "pvc", "act-idle-home")["metadata"]["uid"] == home

        wait(lambda: metric(operator, "devserver_gpus_held") == 1.0, 30, "the GPU given back")
        held = metric(operator, "devserver_gpu_hours_held_total")
        active = metric(operator, "devserver_gpu_hours_active_total")
        assert held > active > 0

        time.sleep(10)  # well past every other server's idle timeout too
        for kind in ("session", "training", "cpu", "silent"):
            assert phase(control_plane, f"act-{kind}") == "Running", kind
            assert not get(control_plane, "devservers.devservers.io", f"act-{kind}")["spec"].get(
                "stopped"
            )
    finally:
        for pod in pods:
            pod.stop()


def test_a_stop_notice_reaches_every_open_terminal(
    operator: OperatorProcess, control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    deadline = (datetime.now(UTC) + timedelta(seconds=45)).replace(microsecond=0)
    create(control_plane, "notice", expirationTime=deadline.isoformat().replace("+00:00", "Z"))
    wait(lambda: phase(control_plane, "notice") == "Running", 60, "running")
    terminal, follower = os.openpty()
    os.set_blocking(terminal, False)
    env = agent_env(control_plane, "notice", tmp_path)
    env["DEVSERVER_TERMINALS"] = os.ttyname(follower)
    podinfo = Path(env["DEVSERVER_PODINFO"])
    pod = LocalPod(env, ["sleep", "infinity"], tmp_path / "notice.log")
    shown = b""
    try:
        while datetime.now(UTC) < deadline + timedelta(seconds=5) and b"devctl" not in shown:
            # what the kubelet does for a downward-API volume: the pod's annotations, as a file
            name = get(control_plane, "devservers.devservers.io", "notice")["status"]["podName"]
            notes = get(control_plane, "pod", name)["metadata"].get("annotations", {})
            podinfo.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in sorted(notes.items())))
            try:
                shown += os.read(terminal, 4096)
            except BlockingIOError:
                time.sleep(0.5)
        text = shown.decode(errors="replace")
        assert f"notice stops at {deadline:%Y-%m-%d %H:%M:%S} UTC" in text
        assert "devctl extend notice --time 1h" in text
        name = get(control_plane, "devservers.devservers.io", "notice")["status"]["podName"]
        stop_at = get(control_plane, "pod", name)["metadata"]["annotations"][
            "devservers.io/stop-at"
        ]
        assert stop_at == f"{deadline:%Y-%m-%dT%H:%M:%SZ}"  # the agent samples faster near it
        assert datetime.now(UTC) < deadline  # before the stop, not after
    finally:
        pod.stop()
        os.close(terminal)
        os.close(follower)


def test_retention_deletes_long_stopped_servers_but_never_a_home(
    operator: OperatorProcess, control_plane: LocalControlPlane
) -> None:
    create(control_plane, "old-kept")
    create(control_plane, "old-owned", {"retainHomeOnDelete": False})
    for name in ("old-kept", "old-owned"):
        wait(lambda n=name: phase(control_plane, n) == "Running", 60, f"{name} running")
    home = get(control_plane, "pvc", "old-kept-home")["metadata"]["uid"]
    for name in ("old-kept", "old-owned"):
        control_plane.kubectl(
            "patch", "devservers.devservers.io", name, "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": {"stopped": True}}),
        )  # fmt: skip
    wait(lambda: gone(control_plane, "old-kept"), 60, "the retention delete")
    assert get(control_plane, "pvc", "old-kept-home")["metadata"]["uid"] == home  # home kept
    skipped = wait(
        lambda: next(
            e for e in events(control_plane, "old-owned") if e["reason"] == "RetentionSkipped"
        ),
        30,
        "the refusal",
    )
    assert "would delete its home volume" in skipped["message"]
    assert phase(control_plane, "old-owned") == "Stopped"  # still there, and its home with it
    assert get(control_plane, "pvc", "old-owned-home")["metadata"]["uid"]
    deleted = next(
        e for e in events(control_plane, "old-kept") if e["reason"] == "RetentionExpired"
    )
    assert "(old-kept-home) is kept" in deleted["message"]

    # the user protects that home after all: the owner reference goes before the delete comes
    owned = get(control_plane, "pvc", "old-owned-home")["metadata"]
    assert owned["ownerReferences"][0]["name"] == "old-owned"
    control_plane.kubectl(
        "patch", "devservers.devservers.io", "old-owned", "-n", NS, "--type=merge",
        "-p", json.dumps({"spec": {"retainHomeOnDelete": True}}),
    )  # fmt: skip
    wait(lambda: gone(control_plane, "old-owned"), 60, "the delete once the home is kept")
    time.sleep(5)  # the garbage collector would have acted by now
    claim = get(control_plane, "pvc", "old-owned-home")["metadata"]
    assert claim["uid"] == owned["uid"]
    assert not claim.get("ownerReferences")
