"""`python -m devserver.testing.build`: build or find the control-plane binaries; say how long."""

from __future__ import annotations

import time

from devserver.testing.binaries import ensure_binaries


def main() -> None:
    started = time.monotonic()
    directory = ensure_binaries()
    print(f"control-plane binaries: {directory} ({time.monotonic() - started:.1f} s)")  # noqa: T201


if __name__ == "__main__":
    main()
