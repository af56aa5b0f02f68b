"""The session wrapper: sshd's ForceCommand for every bastion session.

Runs as the user, started by sshd as `python -I -S session.py <agent socket>`. It is on every
login's critical path, so it imports only built-in modules — not even `typing`, `json`,
`socket`, `signal` or `threading`, whose imports together cost more than the interpreter's
start (~25 ms against ~8 ms). It asks the root
agent for the user's credentials, writes `~/.kube/config` (mode 0600, replaced atomically),
prints the motd for an interactive login, runs the shell or the requested command, renews the
token (SIGALRM) while the session lasts, and reports the exit code so the agent writes one
audit line for the session. It does not start a session without the agent: no session goes
unaudited.

Wire: requests are one JSON object per line (encoded here by hand: strings and integers only);
the agent, the trusted side, answers with a length-prefixed `marshal` dict.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum import
import _socket
import marshal
import os
import pwd
import sys

TIMEOUT = 30.0


def _json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    escaped = "".join(
        c if c >= " " and c not in '"\\' and c != "\x7f" else f"\\u{ord(c):04x}" for c in text
    )
    return f'"{escaped}"'


class AgentLink:
    def __init__(self, path: str) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)

    def call(self, **message: object) -> dict[str, object]:
        body = ",".join(f"{_json(k)}:{_json(v)}" for k, v in message.items())
        self.sock.sendall(("{" + body + "}\n").encode())
        size = int.from_bytes(self._exactly(4), "big")
        reply = marshal.loads(self._exactly(size))  # noqa: S302 - written by the root agent
        if not isinstance(reply, dict):
            raise ValueError("malformed reply from the session agent")
        return reply

    def _exactly(self, size: int) -> bytes:
        chunks, missing = [], size
        while missing:
            chunk = self.sock.recv(min(missing, 65536))
            if not chunk:
                raise ConnectionError("the bastion's session agent closed the connection")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


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


def apply_credentials(home: str, reply: dict[str, object]) -> int:
    """Write the kubeconfig of a successful reply; whole seconds until the next renewal."""
    refresh = reply.get("refresh_in")
    if not reply.get("ok"):
        say(str(reply.get("error", "no credentials")))
        return max(1, int(refresh)) if isinstance(refresh, int | float) else 60
    write_kubeconfig(home, str(reply["kubeconfig"]))
    return max(1, int(refresh)) if isinstance(refresh, int | float) else 300


def run_child(shell: str, command: str | None) -> int:
    pid = os.fork()
    if pid == 0:  # the child: the user's shell, with default signal handling
        for sig in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGHUP, _signal.SIGTERM):
            _signal.signal(sig, _signal.SIG_DFL)
        try:
            if command is None:
                os.execv(shell, ["-" + os.path.basename(shell)])  # noqa: S606 - a login shell
            os.execv(shell, [shell, "-c", command])  # noqa: S606 - the user's own command
        finally:
            os._exit(127)
    return pid


def main(argv: list[str]) -> int:
    agent_socket = argv[1]
    os.umask(0o077)  # what the user makes (in /tmp too) is theirs alone unless they say otherwise
    account = pwd.getpwuid(os.getuid())
    home, shell = account.pw_dir, (argv[2] if len(argv) > 2 else account.pw_shell) or "/bin/sh"
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    tty = os.isatty(0)
    try:
        link = AgentLink(agent_socket)
        reply = link.call(
            op="start", command=command, client=os.environ.get("SSH_CONNECTION", ""), tty=tty
        )
    except (OSError, ValueError, EOFError) as error:
        say(f"the bastion is not ready ({error}); try again in a minute.")
        return 1
    if reply.get("fatal"):
        say(str(reply.get("error")))
        return 1
    delay = apply_credentials(home, reply)
    os.environ["DEVSERVER_AUDIT_SOCKET"] = agent_socket
    if reply.get("bastion"):
        os.environ["DEVSERVER_BASTION"] = str(reply["bastion"])  # for `devctl ssh-config`
    if command is None and reply.get("motd"):
        sys.stdout.write(str(reply["motd"]))
        sys.stdout.flush()

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGQUIT, _signal.SIG_IGN)
    child = run_child(shell, command)

    def forward(sig: int, _frame: object) -> None:
        os.kill(child, sig)

    def renew(_sig: int, _frame: object) -> None:
        try:
            next_delay = apply_credentials(home, link.call(op="refresh"))
        except (OSError, ValueError, EOFError) as error:
            say(f"could not renew Kubernetes credentials: {error}")
            return
        _signal.alarm(next_delay)

    _signal.signal(_signal.SIGHUP, forward)
    _signal.signal(_signal.SIGTERM, forward)
    _signal.signal(_signal.SIGALRM, renew)
    _signal.alarm(delay)
    _, status = os.waitpid(child, 0)  # retried after each renewal (PEP 475)
    _signal.alarm(0)
    code = os.waitstatus_to_exitcode(status)
    exit_code = code if code >= 0 else 128 - code
    try:  # noqa: SIM105 - importing contextlib would cost every login 2 ms
        link.call(op="end", exit_code=exit_code)
    except (OSError, ValueError, EOFError):
        pass
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
