"""Pydantic models of the devservers.io resources; the single source of truth for the CRDs."""
