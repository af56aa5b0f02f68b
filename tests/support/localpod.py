"""A dev pod's processes, run locally: the in-pod agent measured against real processes.

There is no kubelet here (kwok runs no containers), so the activity agent is tested as a local
process against the real API server. A `LocalPod` plays what the container runtime does for a
pod: it starts the main process through the very entrypoint the operator ships (which starts the
agent, then becomes the main command), and it starts "exec sessions" as its own direct children
— in a container those have a parent outside the pod, which is what the agent counts. The agent
sees only the runtime's descendants (`DEVSERVER_SCOPE_ROOT`), not the rest of this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devserver.podagent import __file__ as _podagent

PODAGENT = Path(_podagent).parent

# The runtime: reads JSON argv lines on stdin and starts each as its child; prints the pid.
_RUNTIME = """
import json, subprocess, sys
children = []
for line in sys.stdin:
    argv = json.loads(line)
    children.append(subprocess.Popen(argv, start_new_session=False))
    print(children[-1].pid, flush=True)
"""


class LocalPod:
    def __init__(self, env: Mapping[str, str], main: Sequence[str], log: Path) -> None:
        self.log = log.open("ab")
        self.runtime = subprocess.Popen(
            [sys.executable, "-c", _RUNTIME],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,  # one process group: stop() takes everything
            env={
                **os.environ,
                **env,
                "DEVSERVER_AGENT": str(PODAGENT / "agent.py"),
                "PYTHONUNBUFFERED": "1",
            },
        )
        env_scope = {"DEVSERVER_SCOPE_ROOT": str(self.runtime.pid)}
        self.main = self.exec(
            ["/usr/bin/env", *_assign(env_scope), "sh", str(PODAGENT / "entrypoint.sh"), *main]
        )

    def exec(self, argv: Sequence[str]) -> int:
        """Start a process the way `kubectl exec` does: a session from outside the pod."""
        assert self.runtime.stdin is not None and self.runtime.stdout is not None
        self.runtime.stdin.write(json.dumps(list(argv)) + "\n")
        self.runtime.stdin.flush()
        return int(self.runtime.stdout.readline())

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.runtime.pid, signal.SIGKILL)
        self.runtime.wait(timeout=10)
        for pipe in (self.runtime.stdin, self.runtime.stdout):
            if pipe is not None:
                pipe.close()
        self.log.close()


def _assign(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]
