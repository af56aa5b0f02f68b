"""The operator's small HTTP endpoint: /healthz, /readyz and Prometheus /metrics on one port.

Hand-rolled on asyncio streams (GET only, one response per connection) so health answers come
from the same event loop as the controllers: a wedged loop fails its probe, as it should.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


@dataclass
class HealthEndpoints:
    healthz: Check
    readyz: Check
    registry: CollectorRegistry = REGISTRY

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, ctype, body = self._route(parts[0] if parts else "", path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        checks = {"/healthz": self.healthz, "/readyz": self.readyz}
        if path in checks:
            ok, detail = checks[path]()
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, "text/plain", f"{detail}\n".encode()
        return "404 Not Found", "text/plain", b"not found\n"
