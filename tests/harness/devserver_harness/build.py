"""`python -m devserver_harness.build`: what the tests need besides Python — the control-plane
binaries and the test tools — helm, kubeconform, prometheus, promtool, kueue — and the
Prometheus Operator's CRDs (built and rendered from Go modules, cached), and Debian's
openssh-server for the bastion tests."""

from __future__ import annotations

import time

from devserver_harness.bastion import ensure_sshd
from devserver_harness.binaries import ensure_binaries
from devserver_harness.tools import TOOLS, ensure_tool, prometheus_operator_crds


def main() -> None:
    started = time.monotonic()
    directory = ensure_binaries()
    print(f"control-plane binaries: {directory} ({time.monotonic() - started:.1f} s)")  # noqa: T201
    for name in TOOLS:
        started = time.monotonic()
        print(f"{name}: {ensure_tool(name)} ({time.monotonic() - started:.1f} s)")  # noqa: T201
    started = time.monotonic()
    crds = prometheus_operator_crds()[0].parent
    print(f"Prometheus Operator CRDs: {crds} ({time.monotonic() - started:.1f} s)")  # noqa: T201
    started = time.monotonic()
    state = ensure_sshd()
    print(f"openssh-server, rsync: {state} ({time.monotonic() - started:.1f} s)")  # noqa: T201


if __name__ == "__main__":
    main()
