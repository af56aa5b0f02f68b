"""Reconcilers, one module per concern: flavor, devserver (a package: the standalone and the
distributed mode around one reconcile), expiry, user, unreadable.

`register_all` is the one place the manager learns which controllers exist; each later issue
adds its reconciler's setup function to `_setups()`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from devserver.client import KubeClient
from devserver.controller import Controller
from devserver.informers import InformerFactory
from devserver.reconcilers import expiry, flavor, unreadable, user
from devserver.reconcilers.devserver.distributed import Distributed
from devserver.reconcilers.devserver.reconciler import mode_controller
from devserver.reconcilers.devserver.standalone import Standalone
from devserver.reconcilers.kueue import KueueConfig
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from devserver.reconcilers.user_objects import UserDefaults

Setup = Callable[[InformerFactory, KubeClient], Controller]


def _setups(lifecycle: LifecycleConfig, users: UserDefaults, kueue: KueueConfig) -> list[Setup]:
    return [
        flavor.setup,
        partial(mode_controller, Standalone, lifecycle=lifecycle, kueue=kueue),
        partial(mode_controller, Distributed, lifecycle=lifecycle, kueue=kueue),
        partial(expiry.setup, lifecycle=lifecycle),
        partial(user.setup, defaults=users, kueue=kueue),
        unreadable.setup,
    ]


def register_all(
    informers: InformerFactory,
    client: KubeClient,
    add: Callable[[Controller], None],
    lifecycle: LifecycleConfig | None = None,
    users: UserDefaults | None = None,
    kueue: KueueConfig | None = None,
) -> None:
    setups = _setups(
        lifecycle or LifecycleConfig(), users or UserDefaults(), kueue or KueueConfig()
    )
    for setup in setups:
        add(setup(informers, client))
