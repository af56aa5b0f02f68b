"""Local accounts on a bastion replica, synced from DevUsers.

Each DevUser becomes a Linux account of the same name, member of the users group (the marker of
"ours": nothing outside it is ever touched, and sshd's AllowGroups admits only it). Accounts are
made with the shadow tools (`useradd`, `userdel`) so locking and file formats are theirs, with
the uid (and the user's own group's gid) that uids.py derives from the DevUsers, and no
subordinate uid ranges (they would overlap other users' uids). A removed user's processes are
killed before the account goes: a removed user is logged out, not only kept from logging in
again. The bastion home is scratch space by design; the persistent home is on the user's dev
server.

Files belong to a person, not to a number. Homes are 0700 and their user's. /home and /tmp are
emptyDirs that outlive the container (and /etc/passwd with it), so each uid's owner is recorded
in a root-only directory beside the homes (`<owners_dir>/<uid>`: name and DevUser object uid).
Before a uid is given to anyone but the object that last had it — a new user, or one deleted and
created again under the same name — every file it owns in /home and the shared temporary
directories is removed first, with its System V IPC objects (shared memory a next holder could
attach to); the same purge runs when an account is removed. A replica that
restarts gives every user back their own files, and nobody anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

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


def secure_volumes(home_root: Path, shared: Iterable[Path]) -> None:
    """The pod's emptyDirs come as 0777 without the sticky bit (the kubelet's default): any user
    could rename another's home or files away and plant their own. /home is root's and 0755;
    the shared scratch directories are 1777, like /tmp on any Unix."""
    os.chown(home_root, 0, 0)
    os.chmod(home_root, 0o755)  # noqa: S103 - everyone may list the homes, not write here
    for directory in shared:
        if directory.is_dir() and not directory.is_symlink():
            os.chown(directory, 0, 0)
            os.chmod(directory, 0o1777)  # noqa: S103 - scratch space with the sticky bit


def purge_files(uid: int, roots: Iterable[Path]) -> int:
    """Remove everything `uid` owns under `roots` (never following links, never leaving a root's
    filesystem); a directory it owns goes with all it holds. The number of entries removed.

    Walked by directory descriptors (`os.fwalk`) and removed relative to them: a user who
    renames a directory or swaps one for a symlink while this runs can only move what is
    removed within what they could already reach, never point it at /etc."""
    removed = 0
    for root in roots:
        try:
            device = root.lstat().st_dev
        except FileNotFoundError:
            continue
        walk = os.fwalk(root, follow_symlinks=False)
        for _directory, subdirs, files, dir_fd in walk:
            for name in list(subdirs) + files:
                try:
                    info = os.lstat(name, dir_fd=dir_fd)
                except OSError:
                    continue
                if name in subdirs and (info.st_uid == uid or info.st_dev != device):
                    subdirs.remove(name)  # removed below, or another filesystem: not entered
                if info.st_uid != uid:
                    continue
                try:
                    if stat.S_ISDIR(info.st_mode):
                        shutil.rmtree(name, dir_fd=dir_fd)
                    else:
                        os.unlink(name, dir_fd=dir_fd)
                except OSError as error:  # gone or changed meanwhile: the next pass tries
                    log.warning("purge skipped an entry", uid=uid, entry=name, error=str(error))
                    continue
                removed += 1
    return removed


# System V IPC objects outlive their processes: /proc/sysvipc/<kind> lists them with their owner
# (uid) and creator (cuid); `ipcrm <flag> <id>` removes one.
_SYSV_IPC = {"shm": ("shmid", "-m"), "msg": ("msqid", "-q"), "sem": ("semid", "-s")}


def ipc_objects(uid: int, root: Path = Path("/proc/sysvipc")) -> list[tuple[str, int]]:
    """The System V shared memory segments, message queues and semaphore sets `uid` owns or
    made, as (ipcrm flag, id). POSIX ones are files (/dev/shm, /dev/mqueue), purged with them."""
    found: list[tuple[str, int]] = []
    for kind, (column, flag) in _SYSV_IPC.items():
        try:
            header, *rows = (root / kind).read_text().splitlines()
        except (FileNotFoundError, ValueError):
            continue
        names = header.split()
        for row in rows:
            entry = dict(zip(names, row.split(), strict=False))
            if str(uid) in (entry.get("uid"), entry.get("cuid")):
                found.append((flag, int(entry[column])))
    return found


async def purge_ipc(uid: int) -> int:
    """Remove `uid`'s System V IPC objects: the next holder of the uid must not attach to them.
    A segment another process still has attached is only marked for removal and can still be
    attached by id: then the uid is not handed on (AccountError) until it is gone."""
    removed = 0
    for flag, ident in ipc_objects(uid):
        code, output = await _run("ipcrm", flag, str(ident))
        if code == 0:
            removed += 1
        else:  # gone meanwhile
            log.warning("ipc object not removed", uid=uid, id=ident, error=output)
    if left := ipc_objects(uid):
        raise AccountError(f"System V IPC objects of uid {uid} survive ({left}); not reused yet")
    return removed


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

    @staticmethod
    def holders() -> dict[int, set[str]]:
        """Every uid and gid in use here, with the account and group names that use it."""
        held: dict[int, set[str]] = {}
        for account in pwd.getpwall():
            held.setdefault(account.pw_uid, set()).add(account.pw_name)
        for group in grp.getgrall():
            held.setdefault(group.gr_gid, set()).add(group.gr_name)
        return held

    def taken(self, name: str, uid: int) -> bool:
        """Whether `uid` (as a uid or a gid) belongs here to something other than `name`."""
        return bool(self.holders().get(uid, set()) - {name})

    async def ensure_group(self) -> None:
        async with self._lock:
            try:
                grp.getgrnam(self.settings.users_group)
            except KeyError:
                await _must("groupadd", "--system", self.settings.users_group)
            secure_volumes(self.settings.home_root, self.settings.shared_dirs)
            owners = self.settings.owners_dir
            found = owners.lstat() if owners.exists() or owners.is_symlink() else None
            if found is not None and not (stat.S_ISDIR(found.st_mode) and found.st_uid == 0):
                # not ours (a user made it while /home was open to all): never trust it
                if stat.S_ISDIR(found.st_mode):
                    shutil.rmtree(owners, ignore_errors=True)
                else:
                    owners.unlink()
            owners.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(owners, 0, 0)
            os.chmod(owners, 0o700)

    def _shared_roots(self) -> list[Path]:
        return [self.settings.home_root, *self.settings.shared_dirs]

    async def _kill(self, uid: int) -> None:
        """Every process of `uid`, until none is left: `kill -KILL -1` run as the uid signals
        all of its processes at once (a loop that forks faster than pkill reads /proc does not
        escape), repeated until pgrep finds none. If some survive, the uid is not handed on."""
        for _ in range(20):
            await _run(
                "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "kill", "-KILL", "-1",
            )  # fmt: skip
            code, _output = await _run("pgrep", "--uid", str(uid))
            if code == 1:  # nothing (left) to kill
                return
            await asyncio.sleep(0.05)
        raise AccountError(f"processes of uid {uid} survive being killed; it is not reused yet")

    async def _hand_over(self, name: str, uid: int, owner: str) -> None:
        """Make sure nothing of a previous holder of `uid` (or of `name`'s home) survives."""
        record = self.settings.owners_dir / str(uid)
        try:
            previous = record.read_text()
        except FileNotFoundError:
            previous = ""
        home = self.settings.home_root / name
        mine = f"{name}\n{owner}\n"
        if previous == mine:
            with contextlib.suppress(FileNotFoundError):
                if home.lstat().st_uid != uid or home.is_symlink():
                    shutil.rmtree(home, ignore_errors=True)
            return
        await self._kill(uid)
        if home.is_symlink():
            home.unlink()
        elif home.exists():
            shutil.rmtree(home, ignore_errors=True)
        removed = await asyncio.to_thread(purge_files, uid, self._shared_roots())
        removed += await purge_ipc(uid)
        if previous or removed:
            log.info("files of a previous holder removed", uid=uid, user=name, entries=removed)
        record.write_text(mine)

    async def _own_group(self, name: str, gid: int) -> None:
        """The user's own group, gid = uid (useradd --user-group would pick its own gid)."""
        try:
            group = grp.getgrnam(name)
        except KeyError:
            group = None
        if group is not None and group.gr_gid == gid:
            return
        if group is not None:
            s = self.settings
            ours = s.uid_min <= group.gr_gid <= s.uid_max and not group.gr_mem
            if not ours:  # a system group (tty, staff, the users group…): never taken over
                raise AccountError(
                    f"a group {name!r} exists on the bastion that devserver does not manage; "
                    "rename the DevUser"
                )
            await _must("groupdel", name)  # left behind by an interrupted add
        await _must("groupadd", "--gid", str(gid), name)

    async def add(self, name: str, email: str, *, uid: int, owner: str) -> None:
        """Create the account with `uid`; `owner` is the DevUser object's uid. AccountError if
        the name is taken by an account not ours."""
        async with self._lock:
            if name in self.managed():
                current = self.uid(name)
                record = self.settings.owners_dir / str(current)
                with contextlib.suppress(FileNotFoundError):
                    if record.read_text() == f"{name}\n{owner}\n":
                        return
                # the same name, another person (deleted and created again while we were
                # busy, or while this replica was down): the old one goes first, whole
                await self._remove(name)
            if self.exists(name):
                raise AccountError(
                    f"a local account {name!r} exists that devserver does not manage; "
                    "rename the DevUser or remove that account from the bastion image."
                )
            if self.taken(name, uid):
                raise AccountError(f"uid {uid} for {name!r} is already used on this bastion")
            s = self.settings
            await self._hand_over(name, uid, owner)
            await self._own_group(name, uid)
            await _must(
                "useradd",
                "--create-home",
                "--no-log-init",
                # no password at all, but not locked: sshd refuses keys for a locked ("!") account
                "--password",
                "*",
                "--shell",
                s.shell,
                "--uid",
                str(uid),
                "--gid",
                str(uid),
                "--groups",
                s.users_group,
                "--comment",
                gecos(email),
                "--key",
                "HOME_MODE=0700",
                "--key",
                "SUB_UID_COUNT=0",
                "--key",
                "SUB_GID_COUNT=0",
                name,
            )
            home = s.home_root / name
            os.chown(home, uid, pwd.getpwnam(name).pw_gid)
            os.chmod(home, 0o700)
            log.info("account added", user=name, uid=uid)

    async def remove(self, name: str) -> None:
        """Log the user out (kill every process), delete the account, its bastion home and
        every file its uid still owns in the shared directories."""
        async with self._lock:
            await self._remove(name)

    async def _remove(self, name: str) -> None:
        if name in self.managed():
            uid = self.uid(name)
            if uid is None:
                return
            await self._kill(uid)
            await _must("userdel", "--remove", "--force", name)
            removed = await asyncio.to_thread(purge_files, uid, self._shared_roots())
            removed += await purge_ipc(uid)
            with contextlib.suppress(FileNotFoundError):
                (self.settings.owners_dir / str(uid)).unlink()
            log.info("account removed", user=name, uid=uid, files_removed=removed)

    async def purge_unowned(self, wanted: dict[str, str]) -> None:
        """After a restart /etc is new, so an account removed while the replica was down is
        not there to remove; its records say whose files are still here. Purge every uid whose
        record names no current DevUser (name, object uid)."""
        async with self._lock:
            for record in sorted(self.settings.owners_dir.iterdir()):
                if not record.name.isdigit():
                    continue
                name, _, owner = record.read_text().strip().partition("\n")
                if wanted.get(name) == owner:
                    continue
                uid = int(record.name)
                if name in self.managed():
                    continue  # still an account here: `remove` handles it
                try:
                    await self._kill(uid)
                    removed = await asyncio.to_thread(purge_files, uid, self._shared_roots())
                    removed += await purge_ipc(uid)
                except AccountError as error:  # the record stays: tried again next pass
                    log.warning("files of a removed user not purged yet", user=name, uid=uid,
                                error=str(error))  # fmt: skip
                    continue
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(self.settings.home_root / name)
                record.unlink()
                log.info("files of a user gone meanwhile removed", user=name, uid=uid,
                         entries=removed)  # fmt: skip
