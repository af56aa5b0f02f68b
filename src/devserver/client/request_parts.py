"""What a request to the API server carries besides its method and path, in both clients
(`kube` for the operator, `blocking` for devctl): one definition of the optional parts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypedDict

Query = Sequence[tuple[str, str]]
JSON = "application/json"


class RequestParts(TypedDict, total=False):
    query: Query  # URL parameters, in order
    body: Any  # bytes as they are; anything else is sent as JSON
    content_type: str  # of the body; JSON unless said


def encoded_body(parts: RequestParts) -> bytes | None:
    body = parts.get("body")
    if body is None:
        return None
    return body if isinstance(body, bytes) else json.dumps(body).encode()
