"""The account reconciler: one DevUser ↔ one local account and its authorized keys.

Order matters for the bad days. A new user: account first, keys last (a key never names an
account that does not exist yet). A removed user: keys first (no new logins), then processes
killed and the account deleted. Each account's uid is derived from the cached DevUsers
(uids.py), so it is the same on every replica and after every restart. The keys directory is
emptied at start and sshd starts only after the first full pass (every local account without a
DevUser removed, every cached DevUser applied): a bastion restarted while someone was removed
never admits them from stale files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog

from devserver.api.meta import ObjectKey
from devserver.api.ssh_keys import check_keys
from devserver.api.user import DevUser
from devserver.bastion.accounts import AccountError, LocalAccounts
from devserver.bastion.keys import remove_keys, write_keys
from devserver.bastion.settings import BastionSettings
from devserver.bastion.uids import Claimant, UidRangeExhaustedError, assign_uids
from devserver.controller import Result, TerminalError
from devserver.informers import Informer

log = structlog.get_logger("devserver.bastion.sync")

_NEVER = datetime.max.replace(tzinfo=UTC)  # an object without a creation time sorts last


class AccountReconciler:
    def __init__(
        self, users: Informer[DevUser], accounts: LocalAccounts, settings: BastionSettings
    ) -> None:
        self.users, self.accounts, self.settings = users, accounts, settings

    async def reconcile(self, key: ObjectKey) -> Result | None:
        name = key.name
        user = self.users.store.get(key)
        if user is None or user.metadata.deletion_timestamp is not None:
            if remove_keys(self.settings.keys_dir, name):
                log.info("keys removed", user=name)
            await self.accounts.remove(name)
            return None
        check = check_keys(user.spec.ssh_public_keys)
        for sentence in check.refused:
            log.warning("key refused", user=name, reason=sentence)
        try:
            uid = self.uid_for(name)
            await self.accounts.add(name, user.spec.email, uid=uid, owner=user.metadata.uid)
        except (AccountError, UidRangeExhaustedError) as error:
            remove_keys(self.settings.keys_dir, name)
            raise TerminalError(str(error)) from error
        if write_keys(self.settings.keys_dir, name, check.accepted):
            log.info("keys written", user=name, keys=len(check.accepted))
        return None

    def uid_for(self, name: str) -> int:
        claimants = (
            Claimant(user.metadata.creation_timestamp or _NEVER, user.metadata.name)
            for user in self.users.store.objects()
        )
        held = self.accounts.holders()  # one read of passwd and group, not one per probe
        s = self.settings
        uids = assign_uids(
            claimants,
            uid_min=s.uid_min,
            uid_max=s.uid_max,
            taken=lambda who, uid: bool(held.get(uid, set()) - {who}),
        )
        return uids[name]

    async def full_pass(self) -> None:
        """Remove every local account without a DevUser, apply every cached DevUser; then open.
        Removals first: a uid a stale account holds may be the one a new user should get."""
        wanted = {user.metadata.name for user in self.users.store.objects()}
        gone = self.accounts.managed() - wanted
        owners = {u.metadata.name: u.metadata.uid for u in self.users.store.objects()}
        await self.accounts.purge_unowned(owners)
        for name in [*sorted(gone), *sorted(wanted)]:
            try:
                await self.reconcile(ObjectKey("", name))
            except TerminalError as error:
                log.error("user not synced", user=name, reason=str(error))
        for stale in list(Path(self.settings.keys_dir).iterdir()):  # noqa: ASYNC240 - a few names
            if not stale.name.startswith(".") and stale.name not in wanted:
                stale.unlink()
        self.settings.synced_marker.touch()
        log.info("accounts synced", users=len(wanted))
