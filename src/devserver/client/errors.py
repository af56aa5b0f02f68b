"""API errors as one exception type with the facts callers branch on."""

from __future__ import annotations

from devserver.api.meta import Status


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: bytes) -> ApiError:
        try:
            parsed = Status.model_validate_json(body)
        except ValueError:
            return cls(status, "", body[:500].decode(errors="replace"))
        return cls(status, parsed.reason, parsed.message)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        """410: the resourceVersion (or continue token) is older than the server keeps."""
        return self.status == 410

    @property
    def retryable(self) -> bool:
        return self.status in (429, 500, 502, 503, 504) or self.status == 0


class WatchStalledError(Exception):
    """No bytes (not even a bookmark) arrived within the idle bound."""
