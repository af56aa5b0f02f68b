"""Connecting to the API server from a kubeconfig or from inside a pod."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient


@dataclass
class Connection:
    """An open connection; use as an async context manager to close it."""

    api: ApiClient

    async def server_version(self) -> str:
        info = await client.VersionApi(self.api).get_code()
        return str(info.git_version)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(kubeconfig: str | None = None) -> Connection:
    """Kubeconfig if given (or $KUBECONFIG), else the in-cluster ServiceAccount, else ~/.kube."""
    if (
        kubeconfig is None
        and "KUBECONFIG" not in os.environ
        and ("KUBERNETES_SERVICE_HOST" in os.environ)
    ):
        configuration = client.Configuration()
        load_incluster: Any = config.load_incluster_config  # untyped upstream
        load_incluster(client_configuration=configuration)
        return Connection(ApiClient(configuration))
    path = kubeconfig or os.environ.get("KUBECONFIG")
    return Connection(await config.new_client_from_config(config_file=path))
