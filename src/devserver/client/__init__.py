"""The client layer: the only code that imports kubernetes_asyncio.

Everything above it (informers, controllers, reconcilers, the CLI) talks to the API server
through `KubeClient`: typed reads, raw watch streams with an idle bound, server-side apply, and
one error type. Transport details (auth, TLS, token refresh) stay here.
"""

from devserver.client.errors import ApiError, WatchStalledError
from devserver.client.kube import KubeClient, PatchType, WatchEvent, new_client

__all__ = ["ApiError", "KubeClient", "PatchType", "WatchEvent", "WatchStalledError", "new_client"]
