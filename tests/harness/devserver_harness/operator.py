"""Run devserver-operator against a test cluster: as a subprocess or inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from devserver.operator import OperatorSettings, run
from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.http import fetch
from devserver_harness.process import wait_until


class OperatorProcess:
    """`python -m devserver.manager` with its own log file; ready when /readyz says so."""

    def __init__(
        self,
        kubeconfig: Path,
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.env = dict(env or {})  # e.g. PYTHONPATH: another release's source
        self.port = free_port()
        self.extra_args = extra_args
        self._log = Path(tempfile.mkstemp(prefix="devserver-operator-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devserver.manager",
                    f"--kubeconfig={self.kubeconfig}",
                    "--http-host=127.0.0.1",
                    f"--http-port={self.port}",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"operator exited early:\n{self.output()}")
            return fetch(self.url + "/readyz", timeout=2)[0] == 200

        try:
            wait_until("operator /readyz", ready, timeout=timeout)
        except TimeoutError as error:
            self.stop()  # never left running behind a failed start
            raise TimeoutError(f"{error}\n{self.output()}") from None

    def wait_leading(self, timeout: float = 30) -> None:
        """Ready means caches synced, leader or standby; this waits for leadership."""
        wait_until(
            "the operator to lead",
            lambda: b"leader" in fetch(self.url + "/readyz", timeout=2)[1],
            timeout=timeout,
        )

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; return the exit code (killed: negative)."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.stop_seconds = time.monotonic() - started
        return proc.returncode

    def output(self) -> str:
        return self._log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def operator_in_process(kubeconfig: Path) -> AsyncIterator[OperatorSettings]:
    """Run the manager as a task of the current loop; stop it on exit and surface its errors."""
    settings = OperatorSettings(
        kubeconfig=str(kubeconfig), http_host="127.0.0.1", http_port=free_port()
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop), name="devserver-operator")
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@contextlib.contextmanager
def operator_with_namespace(
    control_plane: LocalControlPlane, namespace: str, *flags: str
) -> Iterator[OperatorProcess]:
    """The operator as a subprocess (leading) with `flags`, and a fresh `namespace` for a test
    module; both go away at the end."""
    process = OperatorProcess(control_plane.operator_kubeconfig, flags)
    process.start()
    process.wait_leading()
    control_plane.kubectl("create", "namespace", namespace)
    try:
        yield process
    finally:
        process.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
