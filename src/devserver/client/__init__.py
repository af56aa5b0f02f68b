"""The client layer: the only code that imports kubernetes_asyncio.

Everything above it (informers, controllers, reconcilers, the CLI) talks to the API server
through the typed helpers here, so transport details (auth, TLS, retries, raw watch streams)
stay in one place.
"""

from devserver.client.connection import Connection, connect

__all__ = ["Connection", "connect"]
