"""Logging (structlog) and Prometheus metrics, usable from every layer."""
