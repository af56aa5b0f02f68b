"""The session wrapper: sshd's ForceCommand for every bastion session (stdlib only).

Runs as the user, started by sshd as `python -I -S session.py <agent socket>`: no site
packages, no environment influence, a few milliseconds. It asks the root agent for the user's
credentials, writes `~/.kube/config` (mode 0600, replaced atomically), prints the motd for an
interactive login, runs the shell or the requested command, renews the token while the session
lasts, and reports the exit code so the agent writes one audit line for the session. It does not
start a session without the agent: no session goes unaudited.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import sys
import threading
from typing import Any


class AgentLink:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.lock = threading.Lock()

    def call(self, **message: Any) -> dict[str, Any]:
        with self.lock:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
            line = self.file.readline()
        if not line:
            raise ConnectionError("the bastion's session agent closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply


def write_kubeconfig(home: str, content: str) -> None:
    directory = os.path.join(home, ".kube")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".config.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.replace(temporary, os.path.join(directory, "config"))


def say(text: str) -> None:
    sys.stderr.write(f"devserver: {text}\n")
    sys.stderr.flush()


def apply_credentials(home: str, reply: dict[str, Any]) -> float | None:
    """Write the kubeconfig of a successful reply; seconds until the next renewal."""
    if not reply.get("ok"):
        say(str(reply.get("error", "no credentials")))
        return None
    write_kubeconfig(home, str(reply["kubeconfig"]))
    return float(reply.get("refresh_in", 300))


def renew(link: AgentLink, home: str, first: float | None, done: threading.Event) -> None:
    delay = first if first is not None else 60.0
    while not done.wait(delay):
        try:
            renewed = apply_credentials(home, link.call(op="refresh"))
        except (OSError, ValueError) as error:
            say(f"could not renew Kubernetes credentials: {error}")
            return
        delay = renewed if renewed is not None else 60.0


def run_child(shell: str, command: str | None) -> int:
    pid = os.fork()
    if pid == 0:  # the child: the user's shell, with default signal handling
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        try:
            if command is None:
                os.execv(shell, ["-" + os.path.basename(shell)])  # noqa: S606 - a login shell
            os.execv(shell, [shell, "-c", command])  # noqa: S606 - the user's own command
        finally:
            os._exit(127)
    return pid


def main(argv: list[str]) -> int:
    agent_socket = argv[1]
    account = pwd.getpwuid(os.getuid())
    home, shell = account.pw_dir, account.pw_shell or "/bin/sh"
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    tty = sys.stdin.isatty()
    try:
        link = AgentLink(agent_socket)
        reply = link.call(
            op="start", command=command, client=os.environ.get("SSH_CONNECTION", ""), tty=tty
        )
    except (OSError, ValueError) as error:
        say(f"the bastion is not ready ({error}); try again in a minute.")
        return 1
    if reply.get("fatal"):
        say(str(reply.get("error")))
        return 1
    first = apply_credentials(home, reply)
    os.environ["DEVSERVER_AUDIT_SOCKET"] = agent_socket
    if command is None and reply.get("motd"):
        sys.stdout.write(str(reply["motd"]))
        sys.stdout.flush()

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    child = run_child(shell, command)

    def forward(sig: int, _frame: object) -> None:
        os.kill(child, sig)

    signal.signal(signal.SIGHUP, forward)
    signal.signal(signal.SIGTERM, forward)
    done = threading.Event()
    renewer = threading.Thread(target=renew, args=(link, home, first, done), daemon=True)
    renewer.start()
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    exit_code = code if code >= 0 else 128 - code
    done.set()
    renewer.join(timeout=5)
    with contextlib.suppress(OSError, ValueError):
        link.call(op="end", exit_code=exit_code)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
