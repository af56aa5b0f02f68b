"""`BlockingKubeClient`: devctl's request/response client on the standard library.

A command line pays for every import before it does anything: aiohttp and asyncio cost devctl
~250 ms on a bastion-class CPU, the standard library's http.client and ssl ~35 ms. So the short
commands (list, create, describe, …) use this client — one keep-alive HTTPS connection, the same
configuration, URLs, models and `ApiError` as `KubeClient` — and only the streaming ones (exec,
ssh, logs) load the asyncio client.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, Unpack

from devserver import __version__
from devserver.api.meta import ObjectList, ObjectT, Unreadable
from devserver.api.resources import Resource
from devserver.client.config import ClusterConfig
from devserver.client.decoding import decode_item, decode_list
from devserver.client.errors import ApiError
from devserver.client.request_parts import JSON, RequestParts, encoded_body

TIMEOUT = 30.0


class BlockingKubeClient:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.host = config.server
        parsed = urllib.parse.urlsplit(config.server)
        self._https = parsed.scheme == "https"
        self._netloc = parsed.hostname or ""
        self._port = parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self.requests_sent = 0

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                context = self.config.ssl_context
                if self.config.server_hostname:
                    context = _with_server_name(context, self.config.server_hostname)
                self._conn = http.client.HTTPSConnection(
                    self._netloc, self._port, context=context, timeout=TIMEOUT
                )
            else:
                self._conn = http.client.HTTPConnection(self._netloc, self._port, timeout=TIMEOUT)
        return self._conn

    def request(self, method: str, path: str, **parts: Unpack[RequestParts]) -> bytes:
        query = parts.get("query", ())
        url = self._prefix + path + (f"?{urllib.parse.urlencode(list(query))}" if query else "")
        headers = {
            "Accept": JSON,
            "User-Agent": f"devctl/{__version__}",
        }
        try:
            token = self.config.auth.token_sync()
        except OSError as error:
            raise ApiError(0, "CredentialsUnavailable", str(error)) from error
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = encoded_body(parts)
        if payload is not None:
            headers["Content-Type"] = parts.get("content_type", JSON)
        self.requests_sent += 1
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            connection = self._connection()
            try:
                connection.request(method, url, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 2:
                    raise ApiError(0, "ConnectionFailed", str(e)) from e
            except (OSError, http.client.HTTPException, ssl.SSLError) as error:
                self.close()
                reason = error.reason if isinstance(error, ssl.SSLError) else ""
                raise ApiError(0, "ConnectionFailed", str(reason or error)) from error
        if not 200 <= response.status < 300:
            raise ApiError.from_body(response.status, data)
        return data

    def get(self, resource: Resource[ObjectT], name: str, namespace: str = "") -> ObjectT:
        data = self.request("GET", resource.path(namespace, name))
        obj = decode_item(json.loads(data), resource.model)
        if isinstance(obj, Unreadable):
            raise ApiError(
                422, "Unreadable", f"{resource.kind} {name} cannot be read: {obj.problem}"
            )
        return obj

    def list_page(
        self,
        resource: Resource[ObjectT],
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 500,
        continue_token: str = "",
    ) -> ObjectList[ObjectT]:
        query = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        data = self.request("GET", resource.path(namespace), query=query)
        return decode_list(data, resource.model)

    def create(
        self, resource: Resource[ObjectT], body: Mapping[str, Any], namespace: str = ""
    ) -> ObjectT:
        data = self.request("POST", resource.path(namespace), body=dict(body))
        return resource.model.model_validate_json(data)

    def patch(
        self, resource: Resource[ObjectT], name: str, patch: Any, namespace: str = ""
    ) -> ObjectT:
        data = self.request(
            "PATCH",
            resource.path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return resource.model.model_validate_json(data)

    def delete(self, resource: Resource[Any], name: str, namespace: str = "") -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        self.request("DELETE", resource.path(namespace, name), body=body)

    def server_version(self) -> str:
        return str(json.loads(self.request("GET", "/version"))["gitVersion"])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _with_server_name(context: ssl.SSLContext, server_name: str) -> ssl.SSLContext:
    """http.client verifies the URL's host; `tls-server-name` asks for another name."""

    class _Named(ssl.SSLContext):
        def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
            kwargs["server_hostname"] = server_name
            return context.wrap_socket(sock, *args, **kwargs)

    return _Named(context.protocol)


def new_blocking_client(
    kubeconfig: str | None = None, context: str | None = None
) -> BlockingKubeClient:
    from devserver.client.config import load_config

    return BlockingKubeClient(load_config(kubeconfig, context))
