"""The session agent: a root-owned Unix socket that sessions and devctl talk to.

The caller's identity is the kernel's (SO_PEERCRED), never the message's: a session can only get
a token for the account it runs as, and audit lines carry that account. A session's audit line
is tied to the real sshd connection, not to what the wrapper claims: the peer process must be a
child of an sshd post-auth child that sshd's own log says the same user logged in with
(sshd_log.py), and the line's client address, key, command and terminal come from sshd and
/proc; a process that is not a session wrapper gets no session. A devctl line belongs to the
open session among the caller's ancestors (the kernel's process tree), or to none. A session
keeps its connection for its whole life, so the audit line is written when the session ends —
whatever way it ends (a wrapper killed outright shows up as `disconnected`).

Tokens are rate-limited per uid (a token bucket: `token_burst` at once, then
`token_rate_per_minute`): a user's processes may talk to the socket directly, and each token is
a TokenRequest to the API server. A refusal is one sentence, with when to try again.

Protocol: requests are newline-delimited JSON. Replies to devctl are JSON lines; replies to
the session wrapper are length-prefixed `marshal` dicts (the wrapper runs without imports to keep
logins fast; marshal is safe here because only the trusted side, this agent, produces it).
Session: `{"op": "start", …}` → `{"ok", "kubeconfig", "refresh_in", "expires_at", "motd"}`;
then any number of `{"op": "refresh"}` → the same; then `{"op": "end", "exit_code"}`. devctl:
one `{"op": "devctl", "argv", "exit_code", "duration"}` per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import os
import pwd
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from devserver.bastion import procs
from devserver.bastion.ratelimit import RateLimiter
from devserver.bastion.sshd_log import Origin
from devserver.bastion.tokens import TokenIssuer, render_kubeconfig
from devserver.client import ApiError
from devserver.observability.bastion_metrics import BASTION_LOGIN_SECONDS, BASTION_TOKEN_REQUESTS

log = structlog.get_logger("devserver.bastion.session_agent")
audit = structlog.get_logger("devserver.audit")

MAX_MESSAGE = 64 * 1024
# connections one account may hold open at once (a session holds one for its whole life; an
# editor opens a handful): beyond that a user's loop of connects would only eat the agent
MAX_CONNECTIONS_PER_USER = 64
FIRST_MESSAGE_WAIT = 10.0  # seconds a connection may stay silent before it is closed
REFUSED_LINGER = 1.0  # seconds a refused connection stays open for its request to arrive
_PEERCRED = struct.Struct("3i")


# (wrapper pid, user) → the sshd session it runs in, or None (sshd_log.SshdLog.session_origin)
OriginOf = Callable[[int, str], Awaitable[Origin | None]]


def peer(writer: asyncio.StreamWriter) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, as the kernel recorded it at connect()."""
    sock: socket.socket = writer.get_extra_info("socket")
    pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(pid), int(uid)


@dataclass(frozen=True)
class _Open:
    origin: Origin
    started: int | None  # the wrapper's start time (a reused pid is not the session)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(value: Any, limit: int = 4096) -> str:
    return str(value)[:limit] if value is not None else ""


class SessionAgent:
    def __init__(
        self,
        *,
        socket_path: Path,
        issuer: TokenIssuer,
        server: str,
        ca_pem: bytes,
        is_user: Callable[[str], bool],
        motd: str,
        refresh_margin: int,
        origin_of: OriginOf,
        limiter: RateLimiter,
        public_address: str = "",
    ) -> None:
        self.socket_path = socket_path
        self.issuer, self.server, self.ca_pem = issuer, server, ca_pem
        self.is_user, self.motd, self.refresh_margin = is_user, motd, refresh_margin
        self.origin_of, self.limiter = origin_of, limiter
        self.public_address = public_address
        self._open: dict[int, _Open] = {}  # by wrapper pid
        self._starting: set[int] = set()  # wrapper pids whose start is being checked
        self._held: dict[int, int] = {}  # connections open, by uid
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=MAX_MESSAGE
        )
        os.chmod(self.socket_path, 0o666)  # noqa: S103 - anyone may connect; the kernel says who they are

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = -1
        try:
            pid, uid = peer(writer)
            self._held[uid] = self._held.get(uid, 0) + 1
            if self._held[uid] > MAX_CONNECTIONS_PER_USER:  # refused before anything is read
                await self._reply(
                    writer,
                    ok=False,
                    fatal=True,
                    error=f"this account already holds {MAX_CONNECTIONS_PER_USER} connections "
                    "to the session agent; end some sessions and log in again.",
                )
                if self._held[uid] <= 2 * MAX_CONNECTIONS_PER_USER:  # not in a flood: a moment
                    with contextlib.suppress(TimeoutError):  # for a wrapper's request to land,
                        async with asyncio.timeout(REFUSED_LINGER):  # so that it reads the reply
                            await reader.read(MAX_MESSAGE)
                return
            try:  # a wrapper speaks first, at once: a silent connection only holds a slot
                async with asyncio.timeout(FIRST_MESSAGE_WAIT):
                    first = await self._read(reader)
            except TimeoutError:
                return
            try:
                user = pwd.getpwuid(uid).pw_name
            except KeyError:
                user = ""
            if not user or not self.is_user(user):
                await self._reply(
                    writer, ok=False, fatal=True, error="this account is not a devserver user."
                )
            elif first is not None:
                await self._request(user, uid, pid, first, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if uid in self._held:
                self._held[uid] -= 1
                if not self._held[uid]:
                    del self._held[uid]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _request(
        self,
        user: str,
        uid: int,
        pid: int,
        first: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if first.get("op") == "devctl":
            self._audit_devctl(user, pid, first)
            await self._reply_json(writer, ok=True)
        elif first.get("op") == "start":
            # one session per wrapper process: the slot is taken before the wait for sshd's
            # lines, so two starts from one pid cannot both pass
            origin = None
            if pid not in self._open and pid not in self._starting:
                self._starting.add(pid)
                try:
                    origin = await self.origin_of(pid, user)
                finally:
                    self._starting.discard(pid)
            if origin is None:
                log.warning("session refused: not an sshd session", user=user, pid=pid)
                await self._reply(
                    writer,
                    ok=False,
                    fatal=True,
                    error="only a login through the bastion's sshd starts a session.",
                )
                return
            await self._session(user, uid, pid, origin, reader, writer)
        else:
            await self._reply(writer, ok=False, fatal=True, error="unknown request.")

    @property
    def sessions_open(self) -> int:
        return len(self._open)

    async def _session(
        self,
        user: str,
        uid: int,
        pid: int,
        origin: Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        started, clock = _now(), time.monotonic()
        outcome, exit_code, tokens, refused = "disconnected", None, 0, 0
        self._open[pid] = _Open(origin, procs.started(pid))
        log.info("session opened", user=user, command=origin.command, client=origin.client)
        try:
            message: dict[str, Any] | None = {"op": "start"}
            while message is not None:
                if message.get("op") in ("start", "refresh"):
                    starting = message.get("op") == "start"
                    issued = await self._credentials(user, uid, writer, motd=starting)
                    if starting and issued and origin.first_session:
                        BASTION_LOGIN_SECONDS.observe(time.monotonic() - origin.accepted_clock)
                    tokens, refused = tokens + issued, refused + (not issued)
                elif message.get("op") == "end":
                    code = message.get("exit_code")
                    exit_code = code if isinstance(code, int) else None
                    outcome = "ok" if exit_code == 0 else "failed"
                    await self._reply(writer, ok=True)
                    break
                message = await self._read(reader)
        finally:
            self._open.pop(pid, None)
            audit.info(
                "audit",
                kind="session",
                user=user,
                command=_text(origin.command) or "<interactive shell>",
                tty=origin.tty,
                client=origin.client,
                key=origin.key,
                sshd_pid=origin.sshd_pid,
                started=started,
                ended=_now(),
                duration_s=round(time.monotonic() - clock, 3),
                exit_code=exit_code,
                outcome=outcome,
                tokens_issued=tokens,
                tokens_refused=refused,
            )

    async def _credentials(
        self, user: str, uid: int, writer: asyncio.StreamWriter, *, motd: bool
    ) -> bool:
        wait = self.limiter.take(uid)
        if wait:
            log.warning("token request refused: rate limit", user=user, retry_in=wait)
            BASTION_TOKEN_REQUESTS.labels(outcome="rate_limited").inc()
            await self._reply(
                writer,
                ok=False,
                error=f"too many requests for Kubernetes credentials from {user} "
                f"(at most {self.limiter.burst} at once, then "
                f"{round(self.limiter.rate * 60)} a minute); try again in {wait:.0f} s",
                refresh_in=wait,
                motd=self.motd.format(user=user) if motd else "",
            )
            return False
        try:
            issued = await self.issuer.issue(user)
        except ApiError as error:
            log.warning("token request failed", user=user, error=str(error))
            BASTION_TOKEN_REQUESTS.labels(outcome="failed").inc()
            await self._reply(
                writer,
                ok=False,
                error=f"could not get Kubernetes credentials ({error.reason or error.status}); "
                "devctl will not work in this session — log in again or ask the platform team",
            )
            return False
        BASTION_TOKEN_REQUESTS.labels(outcome="issued").inc()
        lifetime = (issued.expires_at - datetime.now(UTC)).total_seconds()
        await self._reply(
            writer,
            ok=True,
            kubeconfig=render_kubeconfig(
                user=user, server=self.server, ca_pem=self.ca_pem, token=issued.token
            ),
            expires_at=issued.expires_at.isoformat(),
            refresh_in=max(5.0, lifetime - self.refresh_margin),
            motd=self.motd.format(user=user) if motd else "",
            bastion=self.public_address,
        )
        return True

    def _session_of(self, pid: int) -> Origin | None:
        """The open session among `pid`'s ancestors (the kernel's process tree)."""
        for ancestor in procs.ancestors(pid)[1:]:
            found = self._open.get(ancestor)
            if found is not None and procs.started(ancestor) == found.started:
                return found.origin
        return None

    def _audit_devctl(self, user: str, pid: int, message: dict[str, Any]) -> None:
        argv = message.get("argv")
        code = message.get("exit_code")
        duration = message.get("duration")
        session = self._session_of(pid)
        audit.info(
            "audit",
            kind="devctl",
            user=user,
            client=session.client if session else None,
            sshd_pid=session.sshd_pid if session else None,
            command=" ".join(map(str, argv))[:4096] if isinstance(argv, list) else "",
            ended=_now(),
            duration_s=round(duration, 3) if isinstance(duration, int | float) else None,
            exit_code=code if isinstance(code, int) else None,
            outcome="ok" if code == 0 else "failed",
        )

    # ------------------------------------------------------------------ wire

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
        try:
            line = await reader.readline()
        except ValueError:  # longer than MAX_MESSAGE
            return None
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, **fields: Any) -> None:
        """To a session wrapper: a length-prefixed marshal dict."""
        body = marshal.dumps(fields)
        writer.write(len(body).to_bytes(4, "big") + body)
        await writer.drain()

    @staticmethod
    async def _reply_json(writer: asyncio.StreamWriter, **fields: Any) -> None:
        writer.write(json.dumps(fields).encode() + b"\n")
        await writer.drain()
