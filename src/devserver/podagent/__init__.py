"""What the operator ships into every dev pod: the activity agent and the entrypoint, and for
distributed servers the torchrun helpers.

`agent.py` runs inside the user's image, so it imports only the standard library; nothing else
in devserver is imported here either, and the operator reads both files as text for the pod's
ConfigMap.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PODAGENT_DIR = _HERE = Path(__file__).parent


@cache  # read once per process, not at every reconcile
def agent_source() -> str:
    return (_HERE / "agent.py").read_text()


@cache
def entrypoint_source() -> str:
    return (_HERE / "entrypoint.sh").read_text()


DISTRIBUTED_SCRIPTS = ("devserver-torchrun", "wait-for-master", "devserver-allreduce")


@cache
def _scripts() -> tuple[tuple[str, str], ...]:
    return tuple((name, (_HERE / name).read_text()) for name in DISTRIBUTED_SCRIPTS)


def distributed_scripts() -> dict[str, str]:
    """torchrun with the pod's environment, a wait for rank 0, an all-reduce smoke test."""
    return dict(_scripts())
