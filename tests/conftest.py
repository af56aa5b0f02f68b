"""Every test session shares one local control plane (started on first use)."""

pytest_plugins = ["devserver.testing.pytest_plugin"]
