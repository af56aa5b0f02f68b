"""The session agent's limits and its reading of sshd's log, on real sockets and processes.

The agent runs on a Unix socket in a temporary directory and is called with the session
wrapper's own client; sshd's log lines are fed with pids of real processes this test starts
(the kernel's answers about parents are what the log reader believes).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
import structlog
from hypothesis import given
from hypothesis import strategies as st

from devserver.bastion import procs, session
from devserver.bastion.ratelimit import RateLimiter
from devserver.bastion.session_agent import (
    FIRST_MESSAGE_WAIT,
    MAX_CONNECTIONS_PER_USER,
    SessionAgent,
)
from devserver.bastion.sshd_log import Origin, SshdLog
from devserver.bastion.tokens import IssuedToken
from devserver_harness.pytest_plugin import wait_for

# ---------------------------------------------------------------------------- the bucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=3, rate=1 / 10, clock=clock)
    assert [limiter.take(7) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(7) == 10.0  # seconds until the next token
    assert limiter.take(8) == 0.0  # another uid has its own bucket
    clock.now += 4
    assert limiter.take(7) == 6.0
    clock.now += 6
    assert limiter.take(7) == 0.0
    clock.now += 1000  # a long pause refills to the burst, not beyond
    assert [limiter.take(7) for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]


@given(
    burst=st.integers(1, 10),
    per_minute=st.integers(1, 120),
    steps=st.lists(st.tuples(st.floats(0, 30), st.integers(0, 2)), max_size=200),
)
def test_no_uid_ever_gets_more_than_burst_plus_rate_times_time(
    burst: int, per_minute: int, steps: list[tuple[float, int]]
) -> None:
    clock = Clock()
    limiter = RateLimiter(burst=burst, rate=per_minute / 60, clock=clock)
    granted: dict[int, int] = {}
    for pause, uid in steps:
        clock.now += pause
        if limiter.take(uid) == 0.0:
            granted[uid] = granted.get(uid, 0) + 1
    elapsed = clock.now - 1000.0
    for count in granted.values():
        assert count <= burst + elapsed * per_minute / 60 + 1e-6


# ---------------------------------------------------------------------------- the agent


class Issuer:
    def __init__(self) -> None:
        self.issued = 0

    async def issue(self, user: str) -> IssuedToken:
        self.issued += 1
        return IssuedToken(f"token-{self.issued}", datetime.now(UTC) + timedelta(hours=1))


ORIGIN = Origin(sshd_pid=4321, client="127.0.0.9 port 5555", key="ED25519 SHA256:k", command=None,
                tty=True)  # fmt: skip


@pytest_asyncio.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[SessionAgent, Clock, dict[str, Any]]]:
    clock = Clock()
    where: dict[str, Any] = {"origin": ORIGIN}

    async def origin_of(pid: int, user: str) -> Origin | None:
        return where["origin"]  # type: ignore[no-any-return]

    server = SessionAgent(
        socket_path=tmp_path / "agent.sock",
        issuer=Issuer(),  # type: ignore[arg-type]
        server="https://127.0.0.1:6443",
        ca_pem=b"PEM",
        is_user=lambda name: True,
        motd="hello {user}\n",
        refresh_margin=600,
        origin_of=origin_of,
        limiter=RateLimiter(burst=3, rate=1 / 60, clock=clock),
    )
    await server.start()
    try:
        yield server, clock, where
    finally:
        await server.stop()


async def test_tokens_beyond_the_rate_are_refused_with_one_sentence(
    agent: tuple[SessionAgent, Clock, dict[str, Any]],
) -> None:
    server, clock, _ = agent
    link = await anyio.to_thread.run_sync(session.AgentLink, str(server.socket_path))

    async def call(**message: object) -> dict[str, object]:
        return await anyio.to_thread.run_sync(lambda: link.call(**message))

    with structlog.testing.capture_logs() as logs:
        replies = [await call(op="start")] + [await call(op="refresh") for _ in range(3)]
        assert [r["ok"] for r in replies] == [True, True, True, False]
        assert replies[0]["motd"] == "hello root\n"
        assert replies[3]["error"] == (
            "too many requests for Kubernetes credentials from root (at most 3 at once, then "
            "1 a minute); try again in 60 s"
        )
        # the wrapper tries again when told, not before
        assert session.apply_credentials("/nonexistent", replies[3]) == 60
        clock.now += 60
        assert (await call(op="refresh"))["ok"] is True
        assert server.sessions_open == 1
        assert (await call(op="end", exit_code=0))["ok"] is True
        await asyncio.sleep(0.1)
    link.sock.close()
    [line] = [e for e in logs if e["event"] == "audit"]
    assert (line["tokens_issued"], line["tokens_refused"], line["outcome"]) == (4, 1, "ok")
    # the session is described by its origin (sshd's view), not by anything the wrapper sent
    assert (line["client"], line["sshd_pid"], line["tty"]) == ("127.0.0.9 port 5555", 4321, True)
    assert line["command"] == "<interactive shell>"


async def test_a_process_outside_an_sshd_session_gets_no_session(
    agent: tuple[SessionAgent, Clock, dict[str, Any]],
) -> None:
    server, _, where = agent
    where["origin"] = None
    link = await anyio.to_thread.run_sync(session.AgentLink, str(server.socket_path))
    with structlog.testing.capture_logs() as logs:
        reply = await anyio.to_thread.run_sync(
            lambda: link.call(op="start", command="fake", client="10.9.9.9 1 2 3")
        )
    link.sock.close()
    assert reply == {
        "ok": False,
        "fatal": True,
        "error": "only a login through the bastion's sshd starts a session.",
    }
    assert [e for e in logs if e["event"] == "audit"] == []


async def test_one_account_cannot_eat_the_agent_with_connections(
    agent: tuple[SessionAgent, Clock, dict[str, Any]],
) -> None:
    """Connections that never say anything hold a slot each; past the account's share the
    next is told why at once, and one that ends gives its slot back."""
    server, _, _ = agent
    idle = []
    for _ in range(MAX_CONNECTIONS_PER_USER):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(server.socket_path))
        idle.append(sock)
    try:
        await wait_for(
            lambda: server._held.get(os.getuid()) == MAX_CONNECTIONS_PER_USER,
            timeout=10,
            what="the agent to hold every connection",
        )
        # one more that says nothing is answered and closed at once, not after a timeout
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(str(server.socket_path))
        started = time.monotonic()
        answer = await anyio.to_thread.run_sync(lambda: silent.recv(4096))
        assert b"end some sessions" in answer
        assert await anyio.to_thread.run_sync(lambda: silent.recv(4096)) == b""  # closed
        assert time.monotonic() - started < FIRST_MESSAGE_WAIT
        silent.close()
        # and a wrapper that does speak reads the reason
        link = await anyio.to_thread.run_sync(session.AgentLink, str(server.socket_path))
        reply = await anyio.to_thread.run_sync(lambda: link.call(op="start"))
        link.sock.close()
        assert reply["ok"] is False and "end some sessions" in str(reply["error"])
        idle.pop().close()
        await wait_for(
            lambda: server._held.get(os.getuid()) == MAX_CONNECTIONS_PER_USER - 1,
            timeout=10,
            what="the slot back",
        )
        link = await anyio.to_thread.run_sync(session.AgentLink, str(server.socket_path))
        assert (await anyio.to_thread.run_sync(lambda: link.call(op="start")))["ok"] is True
        link.sock.close()
    finally:
        for sock in idle:
            sock.close()


# ---------------------------------------------------------------------------- sshd's log


@pytest.fixture
def processes() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """(a process with a child, another process): a post-auth child and its session wrapper, and
    an outsider. The child's environment is what 'sshd' exec'd it with."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '60'])"],
        env={**os.environ, "SSH_ORIGINAL_COMMAND": "make test"},
    )
    outsider = subprocess.Popen(["sleep", "60"])
    yield child, outsider
    for process in (child, outsider):
        process.kill()
        process.wait()


def children_of(pid: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if found:
            return [int(p) for p in found]
        time.sleep(0.02)
    raise TimeoutError(f"{pid} started no child")


@pytest.mark.skipif(os.geteuid() != 0, reason="the monitor must be a root process")
async def test_forwards_are_audited_from_sshds_lines_and_sessions_traced_to_them(
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    """This process plays sshd's monitor (root, child of the 'listener'); a child it starts plays
    the post-auth child, and that one's child the session wrapper."""
    monitor = os.getpid()
    child_process, outsider = processes
    child = child_process.pid
    [wrapper] = children_of(child)
    tracker = SshdLog(lambda: os.getppid(), wait=0.3)

    def tag(where: str, pid: int) -> str:
        return f"debug1: {where}:100 (pid={pid}): "

    with structlog.testing.capture_logs() as logs:
        # a line that claims to come from the 'child': not a monitor of ours, ignored
        tracker.feed(tag("auth.c:auth_log()", child) + "Accepted publickey for eve from "
                     "10.0.0.66 port 1 ssh2: ED25519 SHA256:eve")  # fmt: skip
        tracker.feed(tag("auth.c:auth_log()", monitor) + "Accepted publickey for pia from "
                     "127.0.0.1 port 4242 ssh2: ED25519 SHA256:pia")  # fmt: skip
        tracker.feed(tag("sshd.c:privsep_postauth()", monitor) + f"User child is on pid {child}")
        channels = "channels.c:channel_post_connecting()"
        tracker.feed(tag(channels, child) + "channel 3: connected to box.dev-pia port 22")
        tracker.feed(tag(channels, outsider.pid) + "channel 5: connected to forged port 22")
        tracker.feed(
            tag("channels.c:channel_connect_to_port()", child) + "Received request from "
            "127.0.0.1 port 4242 to connect to host mail port 25, but the request was denied."
        )
        tracker.feed(tag("channels.c:channel_free()", child) + "channel 3: free: direct-tcpip, "
                     "nchannels 2")  # fmt: skip
        tracker.feed(tag(channels, child) + "channel 4: connected to 127.0.0.1 port 22")

        origin = await tracker.session_origin(wrapper, "pia")
        assert origin == Origin(
            sshd_pid=monitor,
            client="127.0.0.1 port 4242",
            key="ED25519 SHA256:pia",
            command="make test",  # from /proc, as the process was started
            tty=False,
        )
        assert await tracker.session_origin(wrapper, "eve") is None  # another user's
        assert await tracker.session_origin(outsider.pid, "pia") is None  # not under sshd
        # the child's pid taken by another process before the reap: not that connection
        tracker.children[child].child_started = -1
        assert await tracker.session_origin(wrapper, "pia") is None
        tracker.children[child].child_started = procs.started(child)

        child_process.kill()
        child_process.wait()
        tracker.reap()

    forwards = [e for e in logs if e.get("kind") == "forward"]
    assert {e["user"] for e in forwards} == {"pia"}
    assert {e["client"] for e in forwards} == {"127.0.0.1 port 4242"}
    assert [(e["target"], e.get("channel"), e["outcome"]) for e in forwards] == [
        ("box.dev-pia:22", 3, "open"),
        ("mail:25", None, "denied"),
        ("box.dev-pia:22", 3, "closed"),
        ("127.0.0.1:22", 4, "open"),
        ("127.0.0.1:22", 4, "connection closed"),  # the child died with it open
    ]
    closed = forwards[2]
    assert closed["started"] <= closed["ended"] and closed["duration_s"] >= 0
    assert tracker.connections == {}
    # the login itself, from sshd's lines alone: whatever the user's shell start-up files run
    # instead of the session wrapper, who came from where, with which key, and until when
    logins = [e for e in logs if e.get("kind") == "connection"]
    assert [(e["user"], e["client"], e["key"], e["outcome"]) for e in logins] == [
        ("pia", "127.0.0.1 port 4242", "ED25519 SHA256:pia", "open"),
        ("pia", "127.0.0.1 port 4242", "ED25519 SHA256:pia", "closed"),
    ]
    assert logins[1]["started"] == logins[0]["started"] <= logins[1]["ended"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the monitor must be a root process")
def test_a_monitor_pid_taken_again_before_the_reap_starts_a_new_login() -> None:
    """A login whose monitor died before its child was named, its pid re-used by the next
    login's monitor within the reap interval: the old one is closed, the new one recorded."""
    tracker = SshdLog(lambda: os.getppid(), wait=0.3)
    monitor = os.getpid()
    accepted = f"auth.c:auth_log():1 (pid={monitor}): Accepted publickey for {{}} from 10.0.0.1 "
    with structlog.testing.capture_logs() as logs:
        tracker.feed(accepted.format("ana") + "port 1 ssh2: ED25519 SHA256:ana")
        tracker.feed(accepted.format("bob") + "port 2 ssh2: ED25519 SHA256:bob")  # still ana's
        assert tracker.connections[monitor].user == "ana"
        tracker.connections[monitor].monitor_started = -1  # that monitor was another process
        tracker.feed(accepted.format("bob") + "port 3 ssh2: ED25519 SHA256:bob")
    assert tracker.connections[monitor].user == "bob"
    logins = [(e["user"], e["outcome"]) for e in logs if e.get("kind") == "connection"]
    assert logins == [("ana", "open"), ("ana", "closed"), ("bob", "open")]


@pytest.mark.skipif(os.geteuid() != 0, reason="the monitor must be a root process")
def test_a_channel_opened_before_the_monitor_names_its_child_is_audited(
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    """The post-auth child and the monitor write to the log independently: an `ssh -W` child's
    first channel line can come before the monitor's "User child is on pid" line."""
    monitor, child = os.getpid(), processes[0].pid
    tracker = SshdLog(lambda: os.getppid(), wait=0.3)
    with structlog.testing.capture_logs() as logs:
        tracker.feed(f"auth.c:auth_log():1 (pid={monitor}): Accepted publickey for pia from "
                     "127.0.0.1 port 7 ssh2: ED25519 SHA256:pia")  # fmt: skip
        tracker.feed(f"debug1: channels.c:channel_post_connecting():1994 (pid={child}): "
                     "channel 0: connected to 127.0.0.9 port 22")  # fmt: skip
        tracker.feed(f"sshd.c:privsep_postauth():577 (pid={monitor}): User child is on pid {child}")
        outsider = processes[1].pid  # not the monitor's child: never taken for one
        tracker.feed(f"debug1: channels.c:channel_post_connecting():1994 (pid={outsider}): "
                     "channel 1: connected to forged port 22")  # fmt: skip
    forwards = [(e["target"], e["outcome"]) for e in logs if e.get("kind") == "forward"]
    assert forwards == [("127.0.0.9:22", "open")]
    assert tracker.children[child].monitor == monitor


def test_a_message_with_a_line_break_is_never_read_as_a_record() -> None:
    """sshd passes CR and LF from client text (a forwarding target, a key algorithm name)
    through unescaped: a client could make a message that holds a forged 'Accepted' line."""
    tracker = SshdLog(lambda: os.getppid(), wait=0.3)
    forged = (
        "channels.c:channel_connect_by_listen_path() (pid=1): x\n"
        "auth.c:auth_log():1 (pid=4242): Accepted publickey for bob from 6.6.6.6 port 1 ssh2: K\r\n"
    )
    tracker.feed_message(forged.encode())
    assert 4242 not in tracker.connections
    tracker.feed_message(b"\xff\xfe garbage that is no log line at all\r\n")  # never raises


def _logins(outcome: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("devserver_bastion_logins_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.skipif(os.geteuid() != 0, reason="the monitor must be a root process")
def test_logins_count_connections_not_the_keys_a_client_tries_before_its_own() -> None:
    """A client offers its keys in turn: two refused, then the third accepted, is one login
    and no rejection. A connection that ends with every key refused is one rejection; an
    unknown user is counted once, from sshd's plain line."""
    monitors = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]  # sshd's monitors, as root
    tracker = SshdLog(lambda: os.getpid(), wait=0.3)
    before = {o: _logins(o) for o in ("accepted", "rejected", "unknown_user")}
    try:
        ok, refused = (m.pid for m in monitors)
        for pid in (ok, ok, refused, refused):
            tracker.feed(f"auth.c:auth_log():1 (pid={pid}): Failed publickey for pia from "
                         "127.0.0.1 port 7 ssh2: ED25519 SHA256:other")  # fmt: skip
        tracker.feed(f"auth.c:auth_log():1 (pid={ok}): Failed none for pia from 127.0.0.1 "
                     "port 7 ssh2")  # fmt: skip
        tracker.feed(f"auth.c:auth_log():1 (pid={ok}): Accepted publickey for pia from "
                     "127.0.0.1 port 7 ssh2: ED25519 SHA256:pia")  # fmt: skip
        tracker.feed("Invalid user mallory from 10.6.6.6 port 4")
        tracker.reap()
        assert _logins("rejected") == before["rejected"]  # still connected: not yet
        monitors[1].kill()
        monitors[1].wait()
        tracker.reap()
        tracker.reap()
    finally:
        for m in monitors:
            m.kill()
            m.wait()
    assert _logins("accepted") == before["accepted"] + 1
    assert _logins("rejected") == before["rejected"] + 1
    assert _logins("unknown_user") == before["unknown_user"] + 1
