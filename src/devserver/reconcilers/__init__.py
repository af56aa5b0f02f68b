"""Reconcilers, one module per concern: devserver, distributed, flavor, user, expiry.

`register_all` is the one place the manager learns which controllers exist; each later issue
adds its reconciler's setup function to `_setups()`.
"""

from __future__ import annotations

from collections.abc import Callable

from devserver.client import KubeClient
from devserver.controller import Controller
from devserver.informers import InformerFactory
from devserver.reconcilers import devserver, flavor, user

Setup = Callable[[InformerFactory, KubeClient], Controller]


def _setups() -> list[Setup]:
    return [flavor.setup, devserver.setup, user.setup]


def register_all(
    informers: InformerFactory, client: KubeClient, add: Callable[[Controller], None]
) -> None:
    for setup in _setups():
        add(setup(informers, client))
