"""Local accounts on a bastion replica, synced from DevUsers.

Each DevUser becomes a Linux account of the same name, member of the users group (the marker of
"ours": nothing outside it is ever touched, and sshd's AllowGroups admits only it). Accounts are
made with the shadow tools (`useradd`, `userdel`) so locking and file formats are theirs. A
removed user's processes are killed before the account goes: a removed user is logged out, not
only kept from logging in again. The bastion home is scratch space by design; the persistent
home is on the user's dev server.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
import re

import structlog

from devserver.bastion.settings import BastionSettings

log = structlog.get_logger("devserver.bastion.accounts")

_GECOS_UNSAFE = re.compile(r"[^A-Za-z0-9@._+ -]")


class AccountError(RuntimeError):
    pass


async def _run(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace").strip()


async def _must(*argv: str) -> None:
    code, output = await _run(*argv)
    if code != 0:
        raise AccountError(f"{argv[0]} exited {code}: {output}")


def gecos(email: str) -> str:
    return "devserver " + _GECOS_UNSAFE.sub("", email)[:100]


class LocalAccounts:
    def __init__(self, settings: BastionSettings) -> None:
        self.settings = settings
        # one writer at a time: the shadow tools lock, but a queue is kinder than EBUSY retries
        self._lock = asyncio.Lock()

    def managed(self) -> set[str]:
        try:
            return set(grp.getgrnam(self.settings.users_group).gr_mem)
        except KeyError:
            return set()

    def exists(self, name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    def uid(self, name: str) -> int | None:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None

    async def ensure_group(self) -> None:
        async with self._lock:
            try:
                grp.getgrnam(self.settings.users_group)
            except KeyError:
                await _must("groupadd", "--system", self.settings.users_group)

    async def add(self, name: str, email: str) -> None:
        """Create the account; AccountError if the name is taken by an account not ours."""
        async with self._lock:
            if name in self.managed():
                return
            if self.exists(name):
                raise AccountError(
                    f"a local account {name!r} exists that devserver does not manage; "
                    "rename the DevUser or remove that account from the bastion image."
                )
            s = self.settings
            await _must(
                "useradd",
                "--create-home",
                "--no-log-init",
                # no password at all, but not locked: sshd refuses keys for a locked ("!") account
                "--password",
                "*",
                "--shell",
                s.shell,
                "--groups",
                s.users_group,
                "--comment",
                gecos(email),
                "--key",
                f"UID_MIN={s.uid_min}",
                "--key",
                f"UID_MAX={s.uid_max}",
                "--key",
                f"GID_MIN={s.uid_min}",
                "--key",
                f"GID_MAX={s.uid_max}",
                name,
            )
            log.info("account added", user=name, uid=self.uid(name))

    async def remove(self, name: str) -> None:
        """Log the user out (kill every process) and delete the account and its bastion home."""
        async with self._lock:
            if name not in self.managed():
                return
            uid = self.uid(name)
            for _ in range(5):
                code, _output = await _run("pkill", "--signal", "KILL", "--uid", str(uid))
                if code == 1:  # nothing (left) to kill
                    break
                await asyncio.sleep(0.1)
            await _must("userdel", "--remove", "--force", name)
            log.info("account removed", user=name, uid=uid)
