"""The client layer: the only code that talks to the API server.

Everything above it (informers, controllers, reconcilers, the CLI) goes through `KubeClient`
(asyncio: typed reads, raw watch streams with an idle bound, server-side apply, exec, streams)
or, for devctl's short commands, `BlockingKubeClient` (the standard library only, so a command
line starts fast). Transport details (kubeconfig, auth, TLS, token refresh) stay here. Names are
imported lazily: `from devserver.client import ApiError` must not load aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devserver.client.config import ClusterConfig, ConfigError, load_config
from devserver.client.errors import ApiError, WatchStalledError

if TYPE_CHECKING:
    from devserver.client.blocking import BlockingKubeClient, new_blocking_client
    from devserver.client.decoding import WatchEvent
    from devserver.client.kube import KubeClient, PatchType, new_client

_LAZY = {
    "KubeClient": "devserver.client.kube",
    "PatchType": "devserver.client.kube",
    "WatchEvent": "devserver.client.decoding",
    "new_client": "devserver.client.kube",
    "BlockingKubeClient": "devserver.client.blocking",
    "new_blocking_client": "devserver.client.blocking",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'devserver.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApiError",
    "BlockingKubeClient",
    "ClusterConfig",
    "ConfigError",
    "KubeClient",
    "PatchType",
    "WatchEvent",
    "WatchStalledError",
    "load_config",
    "new_blocking_client",
    "new_client",
]
