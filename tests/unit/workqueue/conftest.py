"""Fixtures for the work queue tests: a fake clock and unique metric names."""

from __future__ import annotations

import uuid

import pytest

from devserver.workqueue import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def queue_name() -> str:
    """Prometheus' default registry is process-wide, so every test labels its own series."""
    return f"test-{uuid.uuid4().hex[:12]}"
