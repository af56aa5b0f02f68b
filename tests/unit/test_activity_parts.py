"""The in-pod activity agent's measurements and the operator's idle arithmetic (pure parts)."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devserver.api.devserver import DevServer, DevServerStatus
from devserver.api.lifecycle import (
    EXPIRED,
    IDLE,
    activity_of,
    idle_deadline,
    next_stop,
    warned,
    warned_value,
)
from devserver.api.meta import KubeObject
from devserver.podagent.agent import (
    Proc,
    Sample,
    cpu_cores,
    own_pids,
    parse_downward,
    read_processes,
    scope,
    sessions,
    user_processes,
    write_terminals,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def devserver(**lifecycle: object) -> DevServer:
    return DevServer.model_validate(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {
                "name": "box",
                "namespace": "dev-a",
                "creationTimestamp": "2026-11-26T08:00:00Z",
            },
            "spec": {"owner": "a", "flavor": "gpu", "image": "x", "lifecycle": lifecycle},
        }
    )


def lease(idle_since: str | None, renewed: datetime = NOW, duration: int = 180) -> KubeObject:
    annotations = {"devservers.io/idle-since": idle_since} if idle_since else {}
    return KubeObject.model_validate(
        {
            "metadata": {"name": "box-activity", "namespace": "dev-a", "annotations": annotations},
            "spec": {
                "renewTime": renewed.isoformat().replace("+00:00", "Z"),
                "leaseDurationSeconds": duration,
            },
        }
    )


def test_an_idle_server_stops_idle_timeout_after_its_last_activity() -> None:
    ds = devserver(idleTimeout=1800, timeToLive="8h")
    stop = next_stop(ds, activity_of(lease("2026-11-26T11:45:00Z")), None, NOW)
    assert stop is not None
    assert (stop.when, stop.reason) == (datetime(2026, 11, 26, 12, 15, tzinfo=UTC), IDLE)


def test_activity_never_stops_a_server_for_idleness() -> None:
    ds = devserver(idleTimeout=1800, timeToLive="8h")
    stop = next_stop(ds, activity_of(lease(None)), None, NOW)
    assert stop is not None
    assert (stop.when, stop.reason) == (datetime(2026, 11, 26, 16, 0, tzinfo=UTC), EXPIRED)


def test_a_time_without_a_zone_is_utc_not_a_crash() -> None:
    ds = devserver(idleTimeout=600)
    report = activity_of(lease("2026-11-26T11:55:00"))  # the pod can write its Lease
    assert idle_deadline(ds, report, NOW) == datetime(2026, 11, 26, 12, 5, tzinfo=UTC)


def test_a_silent_agent_means_unknown_not_idle() -> None:
    ds = devserver(idleTimeout=600)
    stale = lease("2026-11-26T09:00:00Z", renewed=NOW - timedelta(minutes=10), duration=180)
    assert idle_deadline(ds, activity_of(stale), NOW) is None
    assert idle_deadline(ds, activity_of(None), NOW) is None
    unwritten = KubeObject.model_validate({"metadata": {"name": "box-activity"}})
    assert idle_deadline(ds, activity_of(unwritten), NOW) is None


def test_idleness_needs_auto_shutdown_and_a_timeout_and_counts_from_the_last_start() -> None:
    report = activity_of(lease("2026-11-26T09:00:00Z"))
    assert idle_deadline(devserver(), report, NOW) is None
    assert idle_deadline(devserver(idleTimeout=600, autoShutdown=False), report, NOW) is None
    ds = devserver(idleTimeout=600)
    started = DevServerStatus(lastStart=datetime(2026, 11, 26, 11, 55, tzinfo=UTC))
    ds = ds.model_copy(update={"status": started})
    assert idle_deadline(ds, report, NOW) == datetime(2026, 11, 26, 12, 5, tzinfo=UTC)


def test_warnings_are_remembered_per_deadline() -> None:
    ds = devserver()
    when = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    ds.metadata.annotations["devservers.io/warned"] = warned_value({"15m"}, when)
    assert warned(ds, when) == {"15m"}
    assert warned(ds, when + timedelta(hours=1)) == set()  # extended: warn again
    ds.metadata.annotations["devservers.io/warned"] = "15m,5m"  # before deadlines were recorded
    assert warned(ds, when) == set()  # unknown deadline: warn again rather than never


def procs(*rows: tuple[int, int, str, str]) -> list[Proc]:
    return [Proc(pid, ppid, comm, 0, cmdline) for pid, ppid, comm, cmdline in rows]


def test_sessions_are_execs_from_outside_and_ssh_connections() -> None:
    table = procs(
        (1, 0, "sleep", "sleep infinity"),  # main
        (7, 1, "python3", "python3 agent.py"),  # the agent
        (20, 0, "bash", "bash"),  # kubectl exec -it … bash
        (30, 1, "sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"),
        (31, 30, "sshd", "sshd: dev@pts/0"),
        (32, 31, "bash", "-bash"),
        (40, 1, "tmux: server", "tmux new -d"),
        (41, 40, "bash", "bash"),
    )
    assert sessions(table, 0, 1, {7}) == ["exec:bash", "dev@pts/0"]
    assert user_processes(table, 1, {7}) == []  # shells, sshd, a detached idle tmux: not work


def test_a_training_run_with_nobody_connected_is_work() -> None:
    table = procs(
        (1, 0, "sleep", "sleep infinity"),
        (7, 1, "python3", "python3 agent.py"),
        (50, 1, "python", "python train.py"),  # nohup'd, its shell long gone
    )
    assert sessions(table, 0, 1, {7}) == []
    assert user_processes(table, 1, {7}) == ["python"]
    assert Sample([], ["python"], 0.0, None, 0.05, 5).reasons == ["processes"]


def test_cpu_and_gpu_thresholds() -> None:
    assert cpu_cores({1: 100}, {1: 150, 2: 50}, 10.0, 100) == 0.1
    assert Sample([], [], 0.1, None, 0.05, 5).reasons == ["cpu"]
    assert not Sample([], [], 0.01, 2.0, 0.05, 5).active
    assert Sample([], [], 0.0, 80.0, 0.05, 5).reasons == ["gpu"]


def test_the_agent_reads_this_machine_s_processes_and_scopes_them() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        everything = read_processes()
        mine, top = scope(everything, os.getpid())
        assert top == os.getpid()
        assert [p.comm for p in mine if p.pid == child.pid] == ["sleep"]
        assert child.pid in own_pids(everything, os.getpid())
        before = {p.pid: p.ticks for p in read_processes() if p.pid == os.getpid()}
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        after = {p.pid: p.ticks for p in read_processes() if p.pid == os.getpid()}
        assert cpu_cores(before, after, 0.3, os.sysconf("SC_CLK_TCK")) > 0.5
    finally:
        child.kill()
        child.wait()


def test_downward_api_annotations_and_terminal_notices(tmp_path: Path) -> None:
    text = 'devservers.io/notice="box stops at 2026-11-26 13:00:00 UTC; keep it with \\"x\\""\n'
    text += 'kubectl.kubernetes.io/restartedAt="2026-11-26T10:00:00Z"\n'
    assert parse_downward(text)["devservers.io/notice"] == (
        'box stops at 2026-11-26 13:00:00 UTC; keep it with "x"'
    )
    main, follower = os.openpty()
    try:
        assert write_terminals(os.ttyname(follower), "stops at 13:00") == 1
        assert b"stops at 13:00" in os.read(main, 1024)
    finally:
        os.close(main)
        os.close(follower)


def test_gpu_hours_integrate_held_and_active_between_reports() -> None:
    from devserver.api.meta import ObjectKey
    from devserver.reconcilers.devserver.fleet_metrics import FleetMetrics, ServerReport

    clock = [0.0]
    fleet = FleetMetrics(clock=lambda: clock[0])
    a, b = ObjectKey("dev-a", "a"), ObjectKey("dev-b", "b")
    fleet.report(a, ServerReport("gpu-large", 4, held=True, active=True, team="nlp"))
    fleet.report(b, ServerReport("gpu-small", 1, held=True, active=False))
    clock[0] = 3600.0
    fleet.report(a, ServerReport("gpu-large", 4, held=True, active=False, team="nlp"))  # idle
    clock[0] = 7200.0
    fleet.report(a, None)  # deleted
    clock[0] = 10800.0
    seen = fleet.snapshot()
    large, small = ("gpu-large", "nlp"), ("gpu-small", "")
    assert seen.held_hours == {large: 8.0, small: 3.0}
    assert seen.active_hours == {large: 4.0, small: 0.0}
    assert seen.held == {large: 0, small: 1}
    assert seen.active == {large: 0, small: 0}
    fleet.report(ObjectKey("x", "cpu"), ServerReport("cpu-small", 0, held=True, active=True))
    assert ("cpu-small", "") not in fleet.snapshot().held_hours  # no GPUs, no series


def test_fleet_counts_servers_by_phase_and_keeps_a_drained_phase_at_zero() -> None:
    from devserver.api.meta import ObjectKey
    from devserver.reconcilers.devserver.fleet_metrics import FleetMetrics, ServerReport

    clock = [100.0]
    fleet = FleetMetrics(clock=lambda: clock[0])
    a, b = ObjectKey("dev-a", "a"), ObjectKey("dev-a", "b")
    fleet.report(a, ServerReport("gpu", 1, False, False, phase="Pending", pending_since=40.0))
    fleet.report(b, ServerReport("gpu", 1, True, True, phase="Running"))
    seen = fleet.snapshot()
    assert seen.servers == {("Pending", "gpu"): 1, ("Running", "gpu"): 1}
    assert seen.pending_oldest == {"gpu": 60.0}
    fleet.report(a, ServerReport("gpu", 1, True, True, phase="Running"))
    seen = fleet.snapshot()
    assert seen.servers == {("Pending", "gpu"): 0, ("Running", "gpu"): 2}  # 0, not gone
    assert seen.pending_oldest == {"gpu": 0.0}


def test_the_agent_parses_as_python_3_8_for_older_images() -> None:
    import ast

    from devserver.podagent import agent_source

    ast.parse(agent_source(), feature_version=(3, 8))  # raises SyntaxError on newer syntax


def test_gpu_utilisation_reads_nvidia_smi_and_is_absent_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU here: a script prints what `nvidia-smi --query-gpu=utilization.gpu
    --format=csv,noheader,nounits` prints on a 2-GPU node; the busiest GPU counts."""
    from devserver.podagent.agent import gpu_utilisation

    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_utilisation() is None  # no nvidia-smi: no GPU signal, not "idle GPU"
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '3\\n87\\n'\n")
    smi.chmod(0o755)
    assert gpu_utilisation() == 87.0


def test_routine_lease_renewals_do_not_wake_the_expiry_reconciler() -> None:
    from devserver.informers import Change, Notification
    from devserver.reconcilers.devserver.activity_agent import idle_report_changed

    def update(old: KubeObject, new: KubeObject) -> bool:
        return idle_report_changed(Notification(Change.UPDATED, new, old))

    active = lease(None)
    assert not update(active, lease(None, renewed=NOW + timedelta(seconds=60)))  # a renewal
    assert update(active, lease("2026-11-26T12:01:00Z", renewed=NOW + timedelta(seconds=60)))
    assert update(lease("2026-11-26T11:00:00Z"), active)  # active again
    lapsed = lease(None, renewed=NOW + timedelta(minutes=10))  # after a 10-minute silence
    assert update(active, lapsed)
    assert idle_report_changed(Notification(Change.ADDED, active))
    unwritten = KubeObject.model_validate({"metadata": {"name": "box-activity"}})
    assert not idle_report_changed(Notification(Change.ADDED, unwritten))  # nothing to say yet


def test_the_agent_runs_on_the_oldest_python_images_carry() -> None:
    """Parsing is not enough (a 3.11-only import once slipped in): run it on Python 3.8."""
    import glob
    import shutil

    from devserver.podagent import PODAGENT_DIR

    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    old = found[0] if found else shutil.which("python3.8")
    if old is None:
        pytest.skip("no Python 3.8 on this machine")
    path = str(PODAGENT_DIR / "agent.py")
    script = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('agent', {path!r})\n"
        "agent = importlib.util.module_from_spec(spec); spec.loader.exec_module(agent)\n"
        "procs = agent.read_processes()\n"
        "pod, top = agent.scope(procs, os.getppid())\n"
        "assert agent.own_pids(procs, os.getpid())\n"
        "print(agent.Sample([], [], 0.0, None, 0.05, 5).summary(), agent.utc_now()[-1])\n"
        "print(agent.parse_downward('a=\"b\"\\n'))\n"
    )
    out = subprocess.run([old, "-c", script], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "idle; sessions=0 cpu=0.00 gpu=- processes=- Z",
        "{'a': 'b'}",
    ]


def test_the_agent_samples_every_second_as_an_announced_stop_nears() -> None:
    from devserver.podagent.agent import parse_time, sleep_for

    stop = parse_time("2026-11-26T12:00:00Z")
    assert stop == NOW.timestamp()
    assert sleep_for(10, None, NOW.timestamp()) == 10
    assert sleep_for(10, stop, NOW.timestamp() - 600) == 10  # five minutes ahead: usual pace
    assert sleep_for(10, stop, NOW.timestamp() - 60) == 1.0  # the last minute: every second
    assert sleep_for(10, stop, NOW.timestamp() + 600) == 10  # long past (extended, or active)
    assert parse_time("soon") is None


def test_stop_times_are_shown_in_utc_whatever_offset_the_spec_used() -> None:
    from devserver.reconcilers.expiry import _stamp

    offset = datetime.fromisoformat("2026-11-26T13:00:00+01:00")
    assert _stamp(offset) == "2026-11-26 12:00:00 UTC"
