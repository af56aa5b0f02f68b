"""Reconcilers, one module per concern: devserver, distributed, flavor, user, expiry."""
