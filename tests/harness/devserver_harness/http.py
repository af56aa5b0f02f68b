"""One HTTP call that always releases its connection, even for error statuses.

urllib raises HTTPError for 4xx/5xx and leaves the socket open until garbage collection; in a
process that polls /readyz while a server starts, that is a stream of ResourceWarnings.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request


def fetch(
    url: str | urllib.request.Request, *, timeout: float, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """Return (status, body) for any HTTP answer; raise OSError if there was none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), bytes(error.read())
