"""Compare-then-write: has the server already got everything we intend?

Our intent is a partial object (what server-side apply would send). The live object has more:
defaults, other managers' fields, status. Intent is applied when every field we set is there
with our value (recursively; lists element by element). A converged object then costs no
request at all, not even a no-op apply.
"""

from __future__ import annotations

from typing import Any


def is_applied(intent: Any, live: Any) -> bool:
    if isinstance(intent, dict):
        return isinstance(live, dict) and all(
            key in live and is_applied(value, live[key]) for key, value in intent.items()
        )
    if isinstance(intent, list):
        return (
            isinstance(live, list)
            and len(intent) == len(live)
            and all(is_applied(a, b) for a, b in zip(intent, live, strict=True))
        )
    return bool(intent == live)
