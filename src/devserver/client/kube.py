"""`KubeClient`: typed requests and raw watch streams over one aiohttp session.

`config` says where the server is and how to authenticate (kubeconfig, exec plugins, in-cluster);
this module sends: URLs from `Resource`, JSON parsed by pydantic straight from bytes, errors as
`ApiError`, and watch streams read chunk by chunk (no line-length limit) with a client-side idle
bound that catches connections which stay open but deliver nothing, whether before the response
headers or between events. The session is made on first use, inside the running loop.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any, Unpack
from urllib.parse import urlsplit

import aiohttp

from devserver import __version__
from devserver.api.meta import ObjectList, ObjectT
from devserver.api.resources import PODS, Resource
from devserver.client.config import ClusterConfig, load_config
from devserver.client.decoding import WatchEvent, decode_list
from devserver.client.errors import ApiError, WatchStalledError
from devserver.client.remote import ExecSession, open_exec
from devserver.client.request_parts import JSON, Query, RequestParts, encoded_body
from devserver.client.wire import apply_body, chunks, gc_paused, selectors, watch_events
from devserver.observability.metrics import REST_CLIENT_REQUESTS

# Connections are HTTP/1.1: every open watch holds one, so the pool must exceed the watch count.
POOL_SIZE = 64
# asyncio's TLS transport gives each connection a read buffer of `SSLProtocol.max_size`, 256 KiB,
# zeroed when it connects; the operator holds one connection per watch (~25): ~7 MiB of its RSS
# at any size. Reads of 64 KiB (a watch's events come in pieces of a few KB) lose nothing.
TLS_READ_BUFFER = 64 * 1024


class PatchType(StrEnum):
    APPLY = "application/apply-patch+yaml"
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"


class KubeClient:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.host = config.server
        self.requests_sent = 0  # every request, watches included (tests count API traffic)
        self._metric_host = urlsplit(config.server).netloc
        self._session: aiohttp.ClientSession | None = None

    @property
    def namespace(self) -> str:
        """The context's namespace (on the bastion: the user's own)."""
        return self.config.namespace

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER  # every connection after
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=self.config.ssl_context),
                auto_decompress=True,
            )
        return self._session

    # ------------------------------------------------------------------ plumbing

    async def _send(
        self,
        method: str,
        path: str,
        *,
        timeout: aiohttp.ClientTimeout,
        **parts: Unpack[RequestParts],
    ) -> aiohttp.ClientResponse:
        headers = {
            "Accept": JSON,
            "Content-Type": parts.get("content_type", JSON),
            "User-Agent": f"devserver/{__version__}",
        }
        try:
            headers.update(await self._auth_headers())
        except OSError as error:
            raise ApiError(0, "CredentialsUnavailable", str(error)) from error
        options: dict[str, Any] = {
            "params": list(parts.get("query", ())),
            "headers": headers,
            "timeout": timeout,
        }
        payload = encoded_body(parts)
        if payload is not None:
            # bytes in a stream: aiohttp neither copies nor warns about large bodies
            options["data"] = io.BytesIO(payload)
        if self.config.server_hostname:
            options["server_hostname"] = self.config.server_hostname
        self.requests_sent += 1
        try:
            response: aiohttp.ClientResponse = await self._client_session().request(
                method, self.host + path, **options
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            self._requests(method, "<error>").inc()
            raise ApiError(0, "ConnectionFailed", str(error) or type(error).__name__) from error
        self._requests(method, str(response.status)).inc()
        return response

    def _requests(self, method: str, code: str) -> Any:
        """client-go's rest_client_requests_total series (its host: host:port of the server)."""
        return REST_CLIENT_REQUESTS.labels(code=code, method=method, host=self._metric_host)

    async def request(
        self, method: str, path: str, *, timeout: float = 60, **parts: Unpack[RequestParts]
    ) -> bytes:
        response = await self._send(
            method, path, timeout=aiohttp.ClientTimeout(total=timeout), **parts
        )
        async with response:
            try:
                data = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                raise ApiError(0, "ConnectionFailed", str(error)) from error
            if not 200 <= response.status < 300:
                raise ApiError.from_body(response.status, data)
            return data

    # ------------------------------------------------------------------ reads

    async def list_page(
        self,
        resource: Resource[ObjectT],
        namespace: str = "",
        *,
        limit: int = 500,
        continue_token: str = "",
        resource_version: str | None = None,
        resource_version_match: str = "",
        label_selector: str = "",
        field_selector: str = "",
    ) -> ObjectList[ObjectT]:
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        elif resource_version is not None:
            query.append(("resourceVersion", resource_version))
            if resource_version_match:
                query.append(("resourceVersionMatch", resource_version_match))
        query += selectors(label_selector, field_selector)
        data = await self.request("GET", resource.path(namespace), query=query)
        with gc_paused():
            return decode_list(data, resource.model)

    async def get(self, resource: Resource[ObjectT], name: str, namespace: str = "") -> ObjectT:
        data = await self.request("GET", resource.path(namespace, name))
        return resource.model.model_validate_json(data)

    @asynccontextmanager
    async def watch(
        self,
        resource: Resource[ObjectT],
        namespace: str = "",
        *,
        resource_version: str,
        timeout_seconds: int,
        idle_timeout: float,
        label_selector: str = "",
        field_selector: str = "",
        send_initial_events: bool = False,
    ) -> AsyncIterator[AsyncIterator[WatchEvent[ObjectT]]]:
        """Open a watch; iterate the yielded stream for events until it ends or fails.

        Raises `ApiError` for a refused watch (e.g. 410 as an HTTP status), `WatchStalledError` when
        nothing arrives for `idle_timeout` seconds, `ApiError(0)` when the connection breaks.
        """
        query: list[tuple[str, str]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
            ("resourceVersion", resource_version),
        ]
        if send_initial_events:
            query += [("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan")]
        query += selectors(label_selector, field_selector)
        try:
            async with asyncio.timeout(idle_timeout):  # a stall can also hit the request itself
                response = await self._send(
                    "GET",
                    resource.path(namespace),
                    query=query,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
                )
        except TimeoutError:
            raise WatchStalledError(f"no response within {idle_timeout:.0f} s") from None
        try:
            if response.status != 200:
                raise ApiError.from_body(response.status, await response.read())
            model = WatchEvent[resource.model]  # type: ignore[name-defined]
            yield watch_events(response, model, idle_timeout)
        finally:
            # close, never release: a stream we stopped reading (a stall, a cancel) must not go
            # back to the pool, or the next request would inherit a dead connection
            response.close()

    # ------------------------------------------------------------------ writes

    async def create(
        self, resource: Resource[ObjectT], body: Mapping[str, Any], namespace: str = ""
    ) -> ObjectT:
        data = await self.request("POST", resource.path(namespace), body=dict(body))
        return resource.model.model_validate_json(data)

    async def apply(
        self,
        resource: Resource[ObjectT],
        body: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = True,
        subresource: str = "",
    ) -> ObjectT:
        """Server-side apply `body` (the full intent of `field_manager` for this object)."""
        meta = body["metadata"]
        path = resource.path(meta.get("namespace", ""), meta["name"], subresource)
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        data = await self.request(
            "PATCH", path, query=query, body=apply_body(body), content_type=PatchType.APPLY
        )
        return resource.model.model_validate_json(data)

    async def patch(
        self,
        resource: Resource[ObjectT],
        name: str,
        patch: Any,
        namespace: str = "",
        *,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str = "",
    ) -> ObjectT:
        data = await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=patch_type,
        )
        return resource.model.model_validate_json(data)

    async def replace(
        self, resource: Resource[ObjectT], body: Mapping[str, Any], *, subresource: str = ""
    ) -> ObjectT:
        meta = body["metadata"]
        path = resource.path(meta.get("namespace", ""), meta["name"], subresource)
        data = await self.request("PUT", path, body=dict(body))
        return resource.model.model_validate_json(data)

    async def delete(
        self,
        resource: Resource[Any],
        name: str,
        namespace: str = "",
        *,
        propagation: str = "Background",
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Delete; with `uid`/`resource_version`, only that very object in that very state
        (409 Conflict otherwise): a decision made on a cached copy stays safe."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        }
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if preconditions:
            body["preconditions"] = preconditions
        await self.request("DELETE", resource.path(namespace, name), body=body)

    # ------------------------------------------------------------------ pods

    async def _auth_headers(self) -> dict[str, str]:
        token = await self.config.auth.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    @asynccontextmanager
    async def exec(
        self,
        namespace: str,
        pod: str,
        command: Sequence[str],
        *,
        container: str = "",
        tty: bool = False,
        stdin: bool = False,
    ) -> AsyncIterator[ExecSession]:
        """Run `command` in the pod; iterate `session.output()`, then read `exit_code`."""
        query = [("command", part) for part in command]
        query += [("stdout", "true"), ("stderr", "false" if tty else "true")]
        query += [("stdin", "true" if stdin else "false"), ("tty", "true" if tty else "false")]
        if container:
            query.append(("container", container))
        options: dict[str, Any] = {}
        if self.config.server_hostname:
            options["server_hostname"] = self.config.server_hostname
        self.requests_sent += 1
        session = await open_exec(
            self._client_session(),
            self.host + PODS.path(namespace, pod, "exec"),
            query,
            {"User-Agent": f"devserver/{__version__}", **(await self._auth_headers())},
            **options,
        )
        try:
            yield session
        finally:
            await session.ws.close()

    @asynccontextmanager
    async def stream(self, path: str, *, query: Query = ()) -> AsyncIterator[AsyncIterator[bytes]]:
        """A GET whose body is read as it arrives (pod logs with follow)."""
        response = await self._send(
            "GET",
            path,
            query=query,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
        )
        try:
            if response.status != 200:
                raise ApiError.from_body(response.status, await response.read())
            yield chunks(response)
        finally:
            response.close()

    async def server_version(self) -> str:
        return str(json.loads(await self.request("GET", "/version"))["gitVersion"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def new_client(kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
    """From `kubeconfig` (or $KUBECONFIG, ~/.kube/config); inside a pod with none, the
    ServiceAccount. Raises `ConfigError` with a sentence saying what to fix."""
    return KubeClient(load_config(kubeconfig, context))
