"""devctl's side of the bastion audit: one line per command, sent to the session agent.

On the bastion every session exports DEVSERVER_AUDIT_SOCKET; the agent stamps the user from the
kernel's peer credentials and writes the JSON line. Elsewhere (a laptop) nothing is sent. Never
fails the command: an audit that cannot be delivered is dropped with a warning on stderr (the
API server's own audit log still attributes every request to the user's ServiceAccount).
"""

from __future__ import annotations

import json
import os
import socket
import sys

AUDIT_SOCKET_ENV = "DEVSERVER_AUDIT_SOCKET"


def report_command(argv: list[str], exit_code: int, duration: float) -> None:
    path = os.environ.get(AUDIT_SOCKET_ENV)
    if not path:
        return
    message = {"op": "devctl", "argv": argv, "exit_code": exit_code, "duration": duration}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(json.dumps(message).encode() + b"\n")
            sock.recv(4096)
    except OSError as error:
        sys.stderr.write(f"devctl: audit record not delivered ({error}).\n")
