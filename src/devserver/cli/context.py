"""The CLI context every devctl command shares: the connection, the namespace, error translation.

Short commands use the blocking client (fast start); exec, ssh and logs the asyncio one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import click

from devserver.api.names import namespace_user
from devserver.cli.errors import DevctlError, from_api
from devserver.client.blocking import BlockingKubeClient
from devserver.client.config import ClusterConfig, ConfigError, load_config
from devserver.client.errors import ApiError

if TYPE_CHECKING:
    from devserver.client.kube import KubeClient

T = TypeVar("T")


@dataclass
class Devctl:
    """The command line's global options (click's `obj`) and the connection made from them."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace_flag: str | None = None
    _config: ClusterConfig | None = field(default=None, repr=False)
    _client: BlockingKubeClient | None = field(default=None, repr=False)

    def config(self) -> ClusterConfig:
        if self._config is None:
            try:
                self._config = load_config(self.kubeconfig, self.context)
            except (ConfigError, OSError, ValueError, KeyError) as error:
                raise DevctlError(f"cannot use your kubeconfig: {error}.") from None
        return self._config

    def client(self) -> BlockingKubeClient:
        if self._client is None:
            self._client = BlockingKubeClient(self.config())
        return self._client

    def namespace(self) -> str:
        """--namespace, else the kubeconfig context's (on the bastion: dev-<you>)."""
        return self.namespace_flag or self.config().namespace

    def _refusal(self, error: ApiError, what: str, name: str) -> DevctlError:
        namespace = self.namespace_flag or (self._config.namespace if self._config else "?")
        return from_api(error, namespace=namespace, what=what, name=name)

    def run(self, action: Callable[[], T], *, what: str = "", name: str = "") -> T:
        """Run one command; API refusals become one sentence with a hint."""
        try:
            return action()
        except ApiError as error:
            raise self._refusal(error, what, name) from None
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None

    def run_here(
        self, action: Callable[[BlockingKubeClient, str], T], *, what: str = "", name: str = ""
    ) -> T:
        """`run`, handing `action` the client and your namespace."""
        return self.run(lambda: action(self.client(), self.namespace()), what=what, name=name)

    def run_async(
        self,
        action: Callable[[KubeClient], Awaitable[T]],
        *,
        what: str = "",
        name: str = "",
    ) -> T:
        """The same for the streaming commands, on the asyncio client."""
        import asyncio

        from devserver.client.kube import KubeClient

        async def go() -> T:
            client = KubeClient(self.config())
            try:
                return await action(client)
            finally:
                await client.close()

        try:
            return asyncio.run(go())
        except ApiError as error:
            raise self._refusal(error, what, name) from None
        except KeyboardInterrupt:
            raise click.Abort from None


def owner_of(namespace: str) -> str:
    """Whose namespace it is: dev-<user> belongs to <user>."""
    return namespace_user(namespace) or namespace


# `@pass_devctl`: the command gets the Devctl object of the group (made if missing)
pass_devctl = click.make_pass_decorator(Devctl, ensure=True)
