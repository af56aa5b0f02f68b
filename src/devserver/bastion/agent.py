"""The session agent: a root-owned Unix socket that sessions and devctl talk to.

The caller's identity is the kernel's (SO_PEERCRED), never the message's: a session can only get
a token for the account it runs as, and audit lines carry that account. A session keeps its
connection for its whole life, so the audit line is written when the session ends — whatever
way it ends (a wrapper killed outright shows up as `disconnected`).

Protocol: requests are newline-delimited JSON. Replies to devctl are JSON lines; replies to
the session wrapper are length-prefixed `marshal` dicts (the wrapper runs without imports to keep
logins fast; marshal is safe here because only the trusted side, this agent, produces it).
Session: `{"op": "start", "command", "client", "tty"}` →
`{"ok", "kubeconfig", "refresh_in", "expires_at", "motd"}`; then any number of
`{"op": "refresh"}` → the same; then `{"op": "end", "exit_code"}`. devctl: one
`{"op": "devctl", "argv", "exit_code", "duration"}` per command.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from devserver.bastion.tokens import TokenIssuer, render_kubeconfig
from devserver.client import ApiError

log = structlog.get_logger("devserver.bastion.agent")
audit = structlog.get_logger("devserver.audit")

MAX_MESSAGE = 64 * 1024
_PEERCRED = struct.Struct("3i")


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock: socket.socket = writer.get_extra_info("socket")
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(uid)


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
        public_address: str = "",
    ) -> None:
        self.socket_path = socket_path
        self.issuer, self.server, self.ca_pem = issuer, server, ca_pem
        self.is_user, self.motd, self.refresh_margin = is_user, motd, refresh_margin
        self.public_address = public_address
        self.sessions_open = 0
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
        try:
            uid = peer_uid(writer)
            try:
                user = pwd.getpwuid(uid).pw_name
            except KeyError:
                user = ""
            if not user or not self.is_user(user):
                await self._reply(
                    writer, ok=False, fatal=True, error="this account is not a devserver user."
                )
                return
            first = await self._read(reader)
            if first is None:
                return
            if first.get("op") == "devctl":
                self._audit_devctl(user, first)
                await self._reply_json(writer, ok=True)
            elif first.get("op") == "start":
                await self._session(user, first, reader, writer)
            else:
                await self._reply(writer, ok=False, fatal=True, error="unknown request.")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _session(
        self,
        user: str,
        start: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        started, clock = _now(), time.monotonic()
        command = _text(start.get("command"))
        outcome, exit_code, tokens = "disconnected", None, 0
        self.sessions_open += 1
        log.info("session opened", user=user, command=command, client=start.get("client"))
        try:
            if await self._credentials(user, writer, motd=True):
                tokens += 1
            while (message := await self._read(reader)) is not None:
                if message.get("op") == "refresh":
                    if await self._credentials(user, writer, motd=False):
                        tokens += 1
                elif message.get("op") == "end":
                    code = message.get("exit_code")
                    exit_code = code if isinstance(code, int) else None
                    outcome = "ok" if exit_code == 0 else "failed"
                    await self._reply(writer, ok=True)
                    break
        finally:
            self.sessions_open -= 1
            audit.info(
                "audit",
                kind="session",
                user=user,
                command=command or "<interactive shell>",
                tty=bool(start.get("tty")),
                client=_text(start.get("client"), 200),
                started=started,
                ended=_now(),
                duration_s=round(time.monotonic() - clock, 3),
                exit_code=exit_code,
                outcome=outcome,
                tokens_issued=tokens,
            )

    async def _credentials(self, user: str, writer: asyncio.StreamWriter, *, motd: bool) -> bool:
        try:
            issued = await self.issuer.issue(user)
        except ApiError as error:
            log.warning("token request failed", user=user, error=str(error))
            await self._reply(
                writer,
                ok=False,
                error=f"could not get Kubernetes credentials ({error.reason or error.status}); "
                "devctl will not work in this session — log in again or ask the platform team",
            )
            return False
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

    def _audit_devctl(self, user: str, message: dict[str, Any]) -> None:
        argv = message.get("argv")
        code = message.get("exit_code")
        duration = message.get("duration")
        audit.info(
            "audit",
            kind="devctl",
            user=user,
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
