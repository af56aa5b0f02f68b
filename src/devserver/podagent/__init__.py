"""What the operator ships into every dev pod: the activity agent and the entrypoint.

`agent.py` runs inside the user's image, so it imports only the standard library; nothing else
in devserver is imported here either, and the operator reads both files as text for the pod's
ConfigMap.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def agent_source() -> str:
    return (_HERE / "agent.py").read_text()


def entrypoint_source() -> str:
    return (_HERE / "entrypoint.sh").read_text()
