"""What the kernel says about a process (/proc), for the session agent and the sshd log.

A user can make their own processes say anything, but not change who a process's parent is,
when it started, or (once it runs) which environment sshd exec'd it with as far as a root
reader at that moment is concerned. These reads are the agent's ground truth; each answers
None when the process is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")"
    return raw[raw.rfind(")") + 2 :].split()


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def running(pid: int) -> bool:
    """The process exists and has not exited: a zombie (exited, not yet waited for) has not."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def started(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid, names one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def owner(pid: int) -> int | None:
    try:
        return (PROC / str(pid)).stat().st_uid
    except FileNotFoundError:
        return None


def ancestors(pid: int, limit: int = 64) -> list[int]:
    """pid, its parent, grandparent … up to init (or `limit` steps)."""
    chain = [pid]
    while len(chain) < limit:
        up = parent(chain[-1])
        if up is None or up <= 0 or up in chain:
            break
        chain.append(up)
    return chain


def environment(pid: int, name: str) -> str | None:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def has_terminal(pid: int) -> bool:
    try:
        target = os.readlink(PROC / str(pid) / "fd" / "0")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty"))
