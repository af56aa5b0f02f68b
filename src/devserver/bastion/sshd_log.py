"""sshd's own account of each connection: who logged in from where, and what they forwarded.

The audit must not rest on what a user's process says about itself. sshd runs as our child
(`-D -e`), so its log arrives on a pipe only sshd holds: the monitor (root) and the post-auth
child (the user's uid, but not dumpable, so the user cannot read its memory or descriptors, and
their session gets other descriptors) write it, the user's processes cannot. Plain log lines
carry no pid, so `LogVerbose` (OpenSSH >= 8.5) forces the few messages the audit needs and sshd
tags each forced line with its source and pid: `file:function():line (pid=N): message`.

- `auth.c:auth_log()` in the monitor M: "Accepted publickey for U from IP port P ssh2: KEY".
  Accepted only from a root process whose parent is our listening sshd (checked in /proc).
- `sshd.c:privsep_postauth()` in M: "User child is on pid C" — C runs the connection as U.
- `serverloop.c`/`channels.c` in C: a `direct-tcpip` channel (`ssh -J`, `ssh -W`, `-L`, VS Code
  Remote-SSH) connected to host:port, refused by PermitOpen, failed, or freed. C and M write
  independently, so an `ssh -W` channel line can come before M's line naming C: then C is
  known by the kernel's word that its parent is M, an accepted monitor still without a child.

Every login is audited from this alone: one `connection` audit line when sshd accepts it (user,
client address, key) and one when its processes are gone (found by `reap`), whatever the
user's shell start-up files run instead of the session wrapper. Forwarding too: one `forward`
audit line when a channel opens (state open) and one when it ends (closed; or "connection
closed" when C exits without freeing it, found by `reap`; or denied/failed). Sessions (the
command, the terminal, the token) are audited by the agent, which asks
`session_origin` for the sshd connection a wrapper process belongs to: its parent must be a
post-auth child C we saw being born, of the same user. Client strings sshd puts in messages
(hosts) are escaped by sshd (no newline can start a forged line), and lines are only believed
from pids sshd's own lines introduced.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from devserver.bastion import procs
from devserver.observability.bastion_metrics import BASTION_LOGINS

log = structlog.get_logger("devserver.bastion.sshd_log")
sshd_log = structlog.get_logger("sshd")
audit = structlog.get_logger("devserver.audit")

LOG_VERBOSE = ",".join(
    [
        "auth.c:auth_log():*",
        "sshd.c:privsep_postauth():*",
        "channels.c:channel_connect_to_port():*",
        "channels.c:connect_to_helper():*",
        "channels.c:channel_post_connecting():*",
        "channels.c:channel_free():*",
    ]
)

_FORCED = re.compile(
    r"^(?:debug\d: )?(?P<where>[\w.-]+:\w+\(\)):\d+ \(pid=(?P<pid>\d+)\): (?P<msg>.*?)\r?$"
)
_ACCEPTED = re.compile(
    r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+) ssh2"
    r"(?:: (?P<key>.*))?$"
)
_REFUSED = re.compile(
    r"^Failed (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>\S+) from \S+ port \d+ ssh2"
)
# plain (no pid): sshd's pipe is its own, and a user name it quotes cannot hold a line break
_INVALID = re.compile(r"^Invalid user .* from \S+ port \d+$")
_CHILD = re.compile(r"^User child is on pid (?P<child>\d+)$")
_CONNECTED = re.compile(r"^channel (?P<channel>\d+): connected to (?P<host>.*) port (?P<port>\d+)$")
_DENIED = re.compile(
    r"^Received request from \S+ port \d+ to connect to host (?P<host>.*) port (?P<port>\d+), "
    r"but the request was denied\.$"
)
_FAILED = re.compile(
    r"^(?:connect_to (?P<h1>.*) port (?P<p1>\d+): failed\."
    r"|connect to (?P<h2>.*) port (?P<p2>\d+) failed: .*"
    r"|connect_to (?P<h3>.*): unknown host .*)$"
)
_FREED = re.compile(r"^channel (?P<channel>\d+): free: (?P<kind>[^,]*), nchannels \d+$")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Forward:
    target: str
    started: str
    clock: float


@dataclass
class Connection:
    monitor: int
    user: str
    client: str  # "IP port P", as sshd saw the TCP connection
    key: str  # the key that logged in: "ED25519 SHA256:…"
    started: str
    monitor_started: int | None = None  # the monitor's start time: its pid may be re-used
    sessions: int = 0  # sessions traced to it so far
    clock: float = field(default_factory=time.monotonic)
    child: int | None = None
    child_started: int | None = None
    forwards: dict[int, Forward] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """The sshd session a wrapper process runs in, as sshd and the kernel say."""

    sshd_pid: int
    client: str
    key: str
    command: str | None
    tty: bool
    accepted_clock: float = field(default=0.0, compare=False)  # monotonic, at the key accepted
    first_session: bool = field(default=False, compare=False)  # the connection's first


class SshdLog:
    def __init__(self, listener: Callable[[], int | None], *, wait: float = 5.0) -> None:
        self.listener = listener  # pid of the listening sshd (our child)
        self.wait = wait  # how long a wrapper's connection waits for sshd's line about it
        self.connections: dict[int, Connection] = {}  # by monitor pid
        self.children: dict[int, Connection] = {}  # by post-auth child pid
        self.refusing: set[int] = set()  # monitors that refused a key and accepted none yet
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ reading

    def feed(self, line: str) -> None:
        sshd_log.info(line)
        forced = _FORCED.match(line)
        if forced is None:
            if _INVALID.match(line):  # once per connection of a user sshd does not know
                BASTION_LOGINS.labels(outcome="unknown_user").inc()
            return
        pid, message = int(forced["pid"]), forced["msg"]
        if forced["where"] == "auth.c:auth_log()":
            self._accepted(pid, message)
        elif forced["where"] == "sshd.c:privsep_postauth()":
            self._child(pid, message)
        elif pid in self.children:
            self._channel(self.children[pid], message)
        elif forced["where"].startswith("channels.c:") and (found := self._unnamed_child(pid)):
            self._channel(found, message)

    def _unnamed_child(self, pid: int) -> Connection | None:
        """The connection whose post-auth child `pid` is, before the monitor's line naming it
        has arrived: the child and the monitor write to the log independently, and an `ssh -W`
        opens its channel at once. Only a post-auth child has channels, and the kernel says
        whose child it is."""
        monitor = procs.parent(pid)
        if monitor is None or procs.owner(monitor) != 0:
            return None
        connection = self.connections.get(monitor)
        if connection is None or connection.child is not None:
            return None
        connection.child, connection.child_started = pid, procs.started(pid)
        self.children[pid] = connection
        self._changed.set()
        return connection

    def _accepted(self, pid: int, message: str) -> None:
        found = _ACCEPTED.match(message)
        if found is None:
            self._refused(pid, message)
            return
        if pid in self.connections:
            if self._alive(self.connections[pid]):
                return  # one login per monitor
            self.reap()  # a monitor gone before the reap and its pid re-used: the old one ends

        if not self._ours(pid):
            log.warning("sshd log line from an unexpected process ignored", pid=pid)
            return
        BASTION_LOGINS.labels(outcome="accepted").inc()
        self.refusing.discard(pid)
        self.connections[pid] = Connection(
            monitor=pid,
            user=found["user"],
            client=f"{found['ip']} port {found['port']}",
            key=found["key"] or found["method"],
            started=now_iso(),
            monitor_started=procs.started(pid),
        )
        self._login(self.connections[pid], outcome="open", started=self.connections[pid].started)

    def _refused(self, pid: int, message: str) -> None:
        """A key refused: the connection counts as rejected if it ends without one accepted
        (a client offers its keys in turn; the one that works comes after those that do not).
        "none" is how every client starts (asking which methods there are): not a failure. A
        user sshd does not know is counted from its "Invalid user" line instead."""
        refused = _REFUSED.match(message)
        if refused is None or refused["method"] == "none" or refused["invalid"]:
            return
        if self._ours(pid):
            self.refusing.add(pid)

    def _ours(self, pid: int) -> bool:
        """A connection's monitor: root, and a child of our listening sshd."""
        return procs.owner(pid) == 0 and procs.parent(pid) == self.listener()

    def _child(self, pid: int, message: str) -> None:
        found = _CHILD.match(message)
        connection = self.connections.get(pid)
        if found is None or connection is None or connection.child is not None:
            return
        child = int(found["child"])
        if procs.parent(child) != pid:
            return  # gone already, or not what sshd says
        connection.child, connection.child_started = child, procs.started(child)
        self.children[child] = connection
        self._changed.set()

    def _channel(self, connection: Connection, message: str) -> None:
        if found := _CONNECTED.match(message):
            target = f"{found['host']}:{found['port']}"
            channel = int(found["channel"])
            connection.forwards[channel] = Forward(target, now_iso(), time.monotonic())
            self._audit(connection, target, channel=channel, started=now_iso(), outcome="open")
        elif found := _FREED.match(message):
            forward = connection.forwards.pop(int(found["channel"]), None)
            if forward is not None:
                self._end(connection, int(found["channel"]), forward, "closed")
        elif found := _DENIED.match(message):
            self._audit(connection, f"{found['host']}:{found['port']}", outcome="denied")
        elif found := _FAILED.match(message):
            host = found["h1"] or found["h2"] or found["h3"]
            port = found["p1"] or found["p2"] or "?"
            self._audit(connection, f"{host}:{port}", outcome="failed")

    def _end(self, connection: Connection, channel: int, forward: Forward, outcome: str) -> None:
        self._audit(
            connection,
            forward.target,
            channel=channel,
            started=forward.started,
            ended=now_iso(),
            duration_s=round(time.monotonic() - forward.clock, 3),
            outcome=outcome,
        )

    @staticmethod
    def _login(connection: Connection, **fields: object) -> None:
        audit.info(
            "audit",
            kind="connection",
            user=connection.user,
            client=connection.client,
            key=connection.key,
            sshd_pid=connection.monitor,
            **fields,
        )

    @staticmethod
    def _audit(connection: Connection, target: str, **fields: object) -> None:
        audit.info(
            "audit",
            kind="forward",
            user=connection.user,
            target=target[:300],
            client=connection.client,
            key=connection.key,
            sshd_pid=connection.monitor,
            **fields,
        )

    def reap(self) -> None:
        """Forget connections whose processes are gone; their open forwards end here. One that
        only had keys refused is counted as rejected once it is gone."""
        for pid in [pid for pid in self.refusing if not procs.running(pid)]:
            self.refusing.discard(pid)
            BASTION_LOGINS.labels(outcome="rejected").inc()
        for monitor, connection in list(self.connections.items()):
            if self._alive(connection):
                continue
            for channel, forward in sorted(connection.forwards.items()):
                self._end(connection, channel, forward, "connection closed")
            connection.forwards.clear()
            self._login(
                connection,
                outcome="closed",
                started=connection.started,
                ended=now_iso(),
                duration_s=round(time.monotonic() - connection.clock, 3),
            )
            del self.connections[monitor]
            if connection.child is not None and self.children.get(connection.child) is connection:
                del self.children[connection.child]

    @staticmethod
    def _alive(connection: Connection) -> bool:
        """Its post-auth child runs (or, before sshd named one, its monitor): the same
        processes, by start time, not another that took the pid."""
        pid, since = connection.child, connection.child_started
        if pid is None:
            pid, since = connection.monitor, connection.monitor_started
        return procs.running(pid) and procs.started(pid) == since

    def feed_message(self, data: bytes) -> None:
        """One log message as sshd wrote it: one `write()`, so one datagram on the socket its
        stderr is. A message with a line break inside holds text a client chose (a forwarding
        target, a key algorithm name: sshd passes CR and LF through unescaped) and could pose as
        another line: it is logged, and never read as a record."""
        text = data.decode(errors="replace").rstrip("\r\n")
        if "\n" in text or "\r" in text:
            sshd_log.warning("sshd message with a line break; not audited", message=repr(text))
            return
        try:
            self.feed(text)
        except Exception:  # noqa: BLE001 - the bastion never dies on a log line
            sshd_log.exception("sshd message not understood", message=repr(text[:300]))

    async def run(self, messages: AsyncIterator[bytes], *, reap_every: float = 1.0) -> None:
        async def reaper() -> None:
            while True:
                await asyncio.sleep(reap_every)
                self.reap()

        task = asyncio.create_task(reaper(), name="sshd-reaper")
        try:
            async for data in messages:
                self.feed_message(data)
        finally:
            task.cancel()
            self.reap()

    # ------------------------------------------------------------------ asking

    async def connection_of(self, child: int) -> Connection | None:
        """The connection whose post-auth child is `child`; waits for sshd's line about it."""
        deadline = time.monotonic() + self.wait
        while (connection := self.children.get(child)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or procs.parent(child) is None:
                return None
            self._changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._changed.wait()
            except TimeoutError:
                continue
        if procs.started(child) != connection.child_started:
            return None  # that child is gone and its pid another process's (before the reap)
        return connection

    async def session_origin(self, pid: int, user: str) -> Origin | None:
        """Where the session wrapper `pid` runs: its parent must be the post-auth child of an
        sshd connection `user` logged in with. Its command and terminal are what sshd exec'd it
        with, read from /proc, not what it says."""
        child = procs.parent(pid)
        if child is None:
            return None
        connection = await self.connection_of(child)
        if connection is None or connection.user != user:
            return None
        connection.sessions += 1
        return Origin(
            sshd_pid=connection.monitor,
            client=connection.client,
            key=connection.key,
            command=procs.environment(pid, "SSH_ORIGINAL_COMMAND"),
            tty=procs.has_terminal(pid),
            accepted_clock=connection.clock,
            first_session=connection.sessions == 1,
        )
