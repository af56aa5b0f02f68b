"""`LocalControlPlane`: a real local cluster (cluster.py) with its bad days on demand
(faults.py) and devserver installed on it as the chart would (install.py)."""

from __future__ import annotations

from devserver_harness.cluster import (
    DEFAULT_STORAGE_CLASS,
    OPERATOR_NAMESPACE,
    ControlPlaneOptions,
    free_port,
    repo_root,
)
from devserver_harness.faults import Faults
from devserver_harness.install import DevserverInstall

__all__ = [
    "DEFAULT_STORAGE_CLASS",
    "OPERATOR_NAMESPACE",
    "ControlPlaneOptions",
    "LocalControlPlane",
    "free_port",
    "repo_root",
]


class LocalControlPlane(Faults, DevserverInstall):
    """The whole local platform's cluster: what tests and `nox -s up` start."""
