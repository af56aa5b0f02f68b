"""Child processes of the harness: started in their own session, logged to a file, never orphaned.

Three layers keep "leaves no process behind" true:
- `stop()` sends SIGTERM, waits, then SIGKILL;
- children spawned from the main thread get PR_SET_PDEATHSIG, so they die with the harness even
  if it is SIGKILLed (the kernel ties this to the spawning *thread*, hence main thread only);
- every run directory records its children; `reap_stale_runs()` kills those of dead owners.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    """One long-running binary of the control plane."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        registry: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._registry = registry
        self._env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        on_main = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,  # Ctrl-C reaches the harness, which stops us in order
                preexec_fn=_die_with_parent if on_main else None,
            )
        with self._registry.open("a") as reg:
            reg.write(f"{self._proc.pid} {self.argv[0]}\n")

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash, an OOM kill)."""
        self.stop(timeout=5, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_running(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self._proc.returncode}; last log lines "
                f"({self.log_path}):\n{self.log_tail()}"
            )


def wait_until(
    what: str,
    probe: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    processes: Sequence[ManagedProcess] = (),
) -> None:
    """Poll `probe` until true; fail fast (with logs) if a process it depends on died."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in processes:
            proc.check_running()
        with contextlib.suppress(Exception):
            if probe():
                return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ({p.log_path})\n{p.log_tail()}" for p in processes)
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_runs(runs_dir: Path) -> None:
    """Kill children of harness runs whose owner died without stopping them, and drop their dirs."""
    if not runs_dir.is_dir():
        return
    for run in runs_dir.iterdir():
        owner_file = run / "owner.pid"
        try:
            owner = int(owner_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        registry = run / "children"
        if registry.is_file():
            for line in registry.read_text().splitlines():
                pid_text, _, exe = line.partition(" ")
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError, OSError):
                    cmdline = Path(f"/proc/{pid_text}/cmdline").read_bytes()
                    if cmdline.split(b"\0", 1)[0].decode() == exe:  # not a recycled pid
                        os.kill(int(pid_text), signal.SIGKILL)
        shutil.rmtree(run, ignore_errors=True)


def poll(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call `probe` until it returns something truthy and return that; a probe that raises
    (an object not there yet, a kubectl error) counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception:  # noqa: BLE001 - "not yet", whatever the reason
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
