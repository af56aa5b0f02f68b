"""devctl as a user runs it: the real binary, a token-scoped user, the real control plane."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio

from devserver.api.resources import DEVUSERS
from devserver.client import new_client
from devserver_harness.controlplane import LocalControlPlane
from devserver_harness.operator import OperatorProcess
from devserver_harness.pytest_plugin import wait_for

pytestmark = pytest.mark.integration

USER = "kim"
NS = f"dev-{USER}"
DEVCTL = str(Path(sys.prefix) / "bin" / "devctl")


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane, quota_counts_devservers: None) -> Iterator[None]:
    """A process of its own: these tests block on devctl subprocesses."""
    process = OperatorProcess(control_plane.operator_kubeconfig)
    process.start()
    process.wait_leading()
    try:
        yield
    finally:
        process.stop()


@pytest_asyncio.fixture(scope="module")
async def user_kubeconfig(
    control_plane: LocalControlPlane, operator: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """The user's own kubeconfig: a TokenRequest token for user-kim, namespace dev-kim."""
    admin = await new_client(str(control_plane.kubeconfig))
    try:
        await admin.create(
            DEVUSERS,
            {
                "apiVersion": "devservers.io/v1",
                "kind": "DevUser",
                "metadata": {"name": USER},
                "spec": {"email": f"{USER}@example.com", "quota": {"gpus": 1}},
            },
        )

        async def ready() -> bool:
            user = await admin.get(DEVUSERS, USER)
            return bool(user.status and any(c.status == "True" for c in user.status.conditions))

        await wait_for(ready, timeout=60, what=f"{USER} provisioned")
        path = tmp_path_factory.mktemp("kim") / "config"
        await anyio.to_thread.run_sync(
            lambda: control_plane.service_account_kubeconfig(
                NS, f"user-{USER}", duration="2h", path=path, embed_ca=True
            )
        )
        yield path
    finally:
        await admin.close()


def devctl(
    kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("DEVSERVER_AUDIT_SOCKET", None)
    return subprocess.run(
        [DEVCTL, *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin if stdin is not None else "",
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def running(user_kubeconfig: Path) -> Iterator[str]:
    """One dev server, created and waited for by devctl itself."""
    made = devctl(
        user_kubeconfig,
        *("create", "work", "--flavor", "cpu-small", "--time", "2h30m", "--idle", "45m", "--wait"),
    )
    assert made.returncode == 0, made.stderr
    assert "created dev server work (cpu-small, stops in 2h30m) in dev-kim" in made.stdout
    assert "Running" in made.stdout
    yield "work"
    devctl(user_kubeconfig, "delete", "work", "--yes")


# ---------------------------------------------------------------------------- where am I


def test_status_info_and_access_check(user_kubeconfig: Path) -> None:
    status = devctl(user_kubeconfig, "status")
    assert status.returncode == 0, status.stderr
    assert "You are:      system:serviceaccount:dev-kim:user-kim" in status.stdout
    assert "Namespace:    dev-kim" in status.stdout
    report = json.loads(devctl(user_kubeconfig, "status", "-o", "json").stdout)
    assert report["namespace"] == NS
    assert report["kubernetes"].startswith("v1.36")
    assert report["quota"]["hard"]["requests.nvidia.com/gpu"] == "1"

    assert devctl(user_kubeconfig, "info").returncode == 0
    checked = devctl(user_kubeconfig, "test-k8s", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checks = json.loads(checked.stdout)["checks"]
    assert len(checks) >= 10
    assert all(c["allowed"] == c["expected"] for c in checks)


def test_flavors_filter_gpus_and_aws(user_kubeconfig: Path) -> None:
    every = devctl(user_kubeconfig, "flavors")
    assert every.returncode == 0
    assert "cpu-small" in every.stdout
    assert "gpu-large" in every.stdout
    gpu = devctl(user_kubeconfig, "flavors", "--gpu")
    assert "cpu-small" not in gpu.stdout
    assert "p4d.24xlarge" in gpu.stdout
    aws = json.loads(devctl(user_kubeconfig, "flavors", "--aws", "-o", "json").stdout)["items"]
    assert aws
    assert all("node.kubernetes.io/instance-type" in f["spec"]["nodeSelector"] for f in aws)


# ---------------------------------------------------------------------------- the workflow


def test_list_and_describe_show_the_running_server(user_kubeconfig: Path, running: str) -> None:
    table = devctl(user_kubeconfig, "list")
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith(running))
    assert row[1:3] == ["cpu-small", "Running"]
    assert row[4].startswith(("2h", "1h"))  # time left of 2h30m
    items = json.loads(devctl(user_kubeconfig, "list", "-o", "json").stdout)["items"]
    work = next(i for i in items if i["metadata"]["name"] == running)
    assert work["spec"]["lifecycle"]["timeToLive"] == "2h30m"
    assert work["spec"]["lifecycle"]["idleTimeout"] == 2700
    assert work["spec"]["owner"] == USER
    described = devctl(user_kubeconfig, "describe", running)
    assert described.returncode == 0
    assert "Phase:        Running" in described.stdout
    assert f"Home:         {running}-home" in described.stdout
    # no agent reports in kwok (no containers run): unknown, which never counts as idle
    assert "Activity:     in use or not reported (stops after 45m idle)" in described.stdout
    as_yaml = devctl(user_kubeconfig, "describe", running, "-o", "yaml")
    assert "devServer:" in as_yaml.stdout
    assert "pod:" in as_yaml.stdout


def test_exec_returns_the_remote_exit_code_and_streams(user_kubeconfig: Path, running: str) -> None:
    done = devctl(
        user_kubeconfig, "exec", running, "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "out\n"
    assert "err" in done.stderr
    # kwok's exec never closes a command's stdin (kubectl exec -i hangs the same way), so the
    # command reads a fixed amount instead of waiting for end of input
    fed = devctl(
        user_kubeconfig, "exec", "-i", running, "--", "sh", "-c", "head -c 5 | wc -c", stdin="12345"
    )
    assert (fed.returncode, fed.stdout.strip()) == (0, "5")


def test_logs_and_follow(user_kubeconfig: Path, running: str) -> None:
    logs = devctl(user_kubeconfig, "logs", running)
    assert logs.returncode == 0, logs.stderr
    assert "container started" in logs.stdout
    env = {**os.environ, "KUBECONFIG": str(user_kubeconfig)}
    follow = subprocess.Popen(
        [DEVCTL, "logs", "-f", running], stdout=subprocess.PIPE, text=True, env=env
    )
    assert follow.stdout is not None
    assert "container started" in follow.stdout.readline()
    time.sleep(1)
    assert follow.poll() is None  # still following
    follow.terminate()
    follow.wait(timeout=10)
    follow.stdout.close()


def test_ssh_gives_an_interactive_terminal(user_kubeconfig: Path, running: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: devctl on a terminal
        os.environ["KUBECONFIG"] = str(user_kubeconfig)
        os.execv(DEVCTL, [DEVCTL, "ssh", running])  # noqa: S606 - devctl on a terminal
    output = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not sent and time.monotonic() > deadline - 58:
            # typed ahead, while devctl still connects: kept and sent once the terminal is raw
            os.write(fd, b"echo tty=$(tty >/dev/null && echo yes); exit 5\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    assert b"tty=yes" in output, output
    assert os.waitstatus_to_exitcode(status) == 5


def test_update_moves_the_flavor_and_keeps_the_home(
    user_kubeconfig: Path, running: str, control_plane: LocalControlPlane
) -> None:
    claim = f"{running}-home"
    before = control_plane.kubectl("get", "pvc", claim, "-n", NS, "-o", "jsonpath={.metadata.uid}")
    moved = devctl(user_kubeconfig, "update", running, "--flavor", "cpu-medium", "--wait")
    assert moved.returncode == 0, moved.stderr
    assert "cpu-small → cpu-medium" in moved.stdout
    after = control_plane.kubectl("get", "pvc", claim, "-n", NS, "-o", "jsonpath={.metadata.uid}")
    assert before.stdout == after.stdout
    same = devctl(user_kubeconfig, "update", running, "--flavor", "cpu-medium")
    assert "nothing to do" in same.stdout


def test_wait_stops_with_the_reason_when_the_quota_forbids(user_kubeconfig: Path) -> None:
    """kim may hold 1 GPU; gpu-large has 8: --wait says so instead of waiting 10 minutes."""
    started = time.monotonic()
    big = devctl(user_kubeconfig, "create", "big", "--flavor", "gpu-large", "--wait")
    assert big.returncode == 1
    assert "big cannot start: QuotaExceeded" in big.stderr
    assert "requests.nvidia.com/gpu=8" in big.stderr
    assert time.monotonic() - started < 60
    assert devctl(user_kubeconfig, "delete", "big", "--yes").returncode == 0


def test_delete_asks_and_keeps_the_home(
    user_kubeconfig: Path, control_plane: LocalControlPlane
) -> None:
    assert devctl(user_kubeconfig, "create", "scratch", "--flavor", "cpu-small").returncode == 0
    unasked = devctl(user_kubeconfig, "delete", "scratch")
    assert unasked.returncode == 1
    assert "add --yes" in unasked.stderr
    gone = devctl(user_kubeconfig, "delete", "scratch", "--yes")
    assert gone.returncode == 0
    assert "its home volume scratch-home is kept" in gone.stdout


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["create", "My_Dev", "--flavor", "cpu-small"], 1, "is not a valid dev server name"),
        (["create", "ok", "--flavor", "cpu-small", "--time", "2x"], 1, "is not a duration"),
        (["create", "ok", "--flavor", "cpu-small", "--time", "90s"], 1, "is not a duration"),
        (["create", "ok", "--flavor", "cpu-small", "--idle", "soon"], 1, "is not a duration"),
        (["create", "ok", "--flavor", "cpu-small", "--replicas", "2"], 1, "add --distributed"),
        (["create", "ok", "--flavor", "cpu-small", "--distributed"], 1, "needs --replicas W"),
        (["create", "ok", "--flavor", "cpu-small", "--distributed", "--replicas", "99"], 2, "99"),
        (
            ["create", "ok", "--flavor", "cpu-small", "--home-size", "lots"],
            1,
            "is not a volume size",
        ),
        (["create", "ok", "--flavor", "gpu-huge"], 1, "choose one of: cpu-large, cpu-medium"),
        (["create", "ok"], 2, "Missing option '--flavor'"),
        (["describe", "nothere"], 1, "see `devctl list`"),
        (["exec", "nothere", "--", "true"], 1, "see `devctl list`"),
        (["-n", "dev-ana", "list"], 1, "devctl works in your own namespace"),
        (
            ["-n", "kube-system", "create", "x", "--flavor", "cpu-small"],
            1,
            "you may not create dev servers in namespace kube-system",
        ),
        (["ssh-config"], 1, "pass --bastion HOST"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_bad_input_gets_one_sentence_and_changes_nothing(
    user_kubeconfig: Path, args: list[str], code: int, says: str
) -> None:
    result = devctl(user_kubeconfig, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1
    listed = json.loads(devctl(user_kubeconfig, "list", "-o", "json").stdout)["items"]
    assert "ok" not in {i["metadata"]["name"] for i in listed}


def test_a_refused_token_says_to_log_in_again(user_kubeconfig: Path, tmp_path: Path) -> None:
    config = json.loads(user_kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "not-a-token"
    broken = tmp_path / "config"
    broken.write_text(json.dumps(config))
    result = devctl(broken, "list")
    assert result.returncode == 1
    assert "log in to the bastion again" in result.stderr


# ---------------------------------------------------------------------------- conveniences


def test_completion_of_names_and_flavors(user_kubeconfig: Path, running: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(user_kubeconfig), "_DEVCTL_COMPLETE": "bash_complete"}

    def complete(words: str) -> list[str]:
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1))
        out = subprocess.run([DEVCTL], capture_output=True, text=True, env=env, check=False)
        return [line.split(",", 1)[1] for line in out.stdout.splitlines() if "," in line]

    assert running in complete("devctl describe wo")
    assert complete("devctl create x --flavor gpu-l") == ["gpu-large"]
    assert "describe" in complete("devctl desc")
    script = devctl(user_kubeconfig, "completion", "bash")
    assert "_DEVCTL_COMPLETE" in script.stdout


def test_ssh_config_jumps_through_the_bastion(user_kubeconfig: Path, running: str) -> None:
    result = devctl(user_kubeconfig, "ssh-config", "--bastion", "bastion.example.com")
    assert result.returncode == 0
    assert "Host devserver-bastion\n  HostName bastion.example.com\n  User kim" in result.stdout
    assert (
        f"Host {running}.devserver\n  HostName {running}.dev-kim.svc.cluster.local\n"
        "  Port 22\n  User dev\n"  # the image's user: sshd in the pod runs as it
    ) in result.stdout
    assert "ProxyJump devserver-bastion" in result.stdout
