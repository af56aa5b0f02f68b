"""The controller loop: informers feed keys to a rate-limited queue, workers reconcile them.

`outcome` holds the Reconciler protocol, `Result` and `TerminalError`; `owners` maps child
objects to their owners' keys; `predicates` filters notifications; `controller` runs it all.
"""

from devserver.controller.controller import CacheSyncTimeoutError, Controller, wait_synced
from devserver.controller.reconciler import Reconciler, Result, TerminalError

__all__ = [
    "CacheSyncTimeoutError",
    "Controller",
    "Reconciler",
    "Result",
    "TerminalError",
    "wait_synced",
]
