"""Which uid each bastion account gets: a pure function of the DevUsers, the same everywhere.

Why derived, not stored: a replica's /etc/passwd lives in its container layer and is new after
every container restart, while /home and /tmp are emptyDirs that outlive it. With `useradd`
picking the next free uid, a restarted replica (or the other replica, which saw users in another
order) handed the same uid to another person, who then owned the first one's files. Storing the
number would need a writer shared by both replicas (the DevUser, so write rights for the
bastion) and still a rule for the first choice. So the uid is computed, by every replica, from
what every replica sees alike — the DevUser objects:

- a user's candidates are `probe(name, 0), probe(name, 1), …`: SHA-256 of the name and the probe
  number, reduced into [uid_min, uid_max] (by default 200000-1999999999, far above every uid an
  image or useradd hands out, and below 2^31);
- collisions are settled by age: users are taken in (creationTimestamp, name) order and each gets
  its first candidate no older user holds. A new user never moves an older one, so adding users
  in any order, on any replica, before or after a restart, gives everyone the same uid. With
  1.8·10^9 numbers, even 10,000 users all keep their first candidate with probability ~97 %.

The one case where replicas can differ: an older user whose candidate a newer one had to skip is
deleted; a replica that starts afterwards gives the newer user its first candidate, a running one
keeps the account it has (a logged-in account's uid is never changed under it). A uid held by
another local account is skipped as well (`taken`), so two accounts never share one.

Reuse is safe because files go with the person, not the number: accounts.py purges every file a
uid owns in /home and the shared temporary directories before the uid is given to anyone other
than the DevUser object that last had it, and when an account is removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

MAX_PROBES = 64


class UidRangeExhaustedError(RuntimeError):
    pass


@dataclass(frozen=True, order=True)
class Claimant:
    """A DevUser as the uid rule sees it; ordering is the rule's (oldest first, then name)."""

    created: datetime
    name: str


@lru_cache(maxsize=65536)
def probe(name: str, attempt: int, uid_min: int, uid_max: int) -> int:
    digest = hashlib.sha256(f"{name}\0{attempt}".encode()).digest()
    return uid_min + int.from_bytes(digest[:8], "big") % (uid_max - uid_min + 1)


def assign_uids(
    claimants: Iterable[Claimant],
    *,
    uid_min: int,
    uid_max: int,
    taken: Callable[[str, int], bool] = lambda _name, _uid: False,
) -> dict[str, int]:
    """Every claimant's uid. `taken(name, uid)`: held on this host by an account other than
    `name`'s (skipped like a collision)."""
    if not 0 < uid_min <= uid_max:
        raise ValueError(f"bad uid range {uid_min}-{uid_max}")
    assigned: dict[str, int] = {}
    held: set[int] = set()
    for claimant in sorted(set(claimants)):
        if claimant.name in assigned:
            continue
        for attempt in range(MAX_PROBES):
            uid = probe(claimant.name, attempt, uid_min, uid_max)
            if uid not in held and not taken(claimant.name, uid):
                break
        else:
            raise UidRangeExhaustedError(
                f"no free uid for {claimant.name!r} after {MAX_PROBES} tries; "
                f"widen the uid range {uid_min}-{uid_max}"
            )
        assigned[claimant.name] = uid
        held.add(uid)
    return assigned
