"""Our own writes the cache has not brought back yet: a reconcile waits for them.

A reconcile decides from the cache. Right after the operator wrote an object, the cache can
still hold an older version for a while (the watch event is on its way; at 10,000 servers,
seconds). A decision read from it is made on a world the operator itself has already changed:
a stop read just after a start finds the workload still at zero and sends nothing, leaving the
GPUs held until the watch catches up; a start read just after a stop finds the pod still
running and keeps its template. So a writer records the version its write made, and a reconcile
that finds an older one in the cache waits for the watch to bring it (controller-runtime's
"expectations", kept by resourceVersion).

Kubernetes 1.35 made resourceVersions comparable (KEP-5504, GA): well formed, they are decimal
numbers without leading zeros, ordered by length and then as text, for objects of one type.
One that is not (another storage than etcd may serve others) cannot be compared, and the cache
is believed, as before this rule. Only writes in flight are held: a cached version as new as
ours (or newer: someone else's since) drops the record. A watch that never brings the write
back (stalled, then relisted) cannot hold a server for longer than `PATIENCE`: after that the
cache is believed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devserver.api.meta import KubeObject, ObjectKey

PATIENCE = 30.0  # seconds: the longest a reconcile waits for the cache to show our write


def comparable(version: str) -> bool:
    """A well-formed resourceVersion (KEP-5504): digits only, not empty, no leading zero."""
    return version.isascii() and version.isdigit() and version[0] != "0"


def older(version: str, than: str) -> bool | None:
    """Whether `version` is older than `than`; None when either cannot be compared."""
    if not (comparable(version) and comparable(than)):
        return None
    return (len(version), version) < (len(than), than)


@dataclass
class OwnWrites:
    """Per object, the version of our last write, until the cache shows it or a newer one."""

    clock: Callable[[], float] = time.monotonic
    # per object: our last write's version, when it was made, and whether it was a stop
    _pending: dict[ObjectKey, tuple[str, float, bool]] = field(default_factory=dict)

    def wrote(self, key: ObjectKey, answer: KubeObject | None, *, stops: bool = False) -> None:
        """Our write of `key`, `answer` being the API server's (None: nothing was sent);
        `stops`: it set zero replicas."""
        if answer is None or not comparable(answer.metadata.resource_version):
            return
        held = self._pending.get(key)
        if held is None or older(held[0], answer.metadata.resource_version):
            self._pending[key] = (answer.metadata.resource_version, self.clock(), stops)

    def stopping(self, key: ObjectKey) -> bool:
        """Whether our last write of `key` not yet in the cache set zero replicas: a stop is
        on its way, and sending it again while the cache is behind would only add load."""
        held = self._pending.get(key)
        return held is not None and held[2]

    def behind(self, key: ObjectKey, cached: KubeObject | None) -> bool:
        """Whether `cached` is older than our last write of `key` (and not for too long). A
        cache without the object is not behind: a create is not held (the next apply is the
        same one), and an object deleted since is gone whatever we wrote."""
        held = self._pending.get(key)
        if held is None:
            return False
        version, since, _ = held
        if (
            cached is not None
            and older(cached.metadata.resource_version, version)
            and self.clock() - since < PATIENCE
        ):
            return True
        del self._pending[key]  # caught up, gone, not comparable, or waited for long enough
        return False

    def forget(self, key: ObjectKey) -> None:
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)
