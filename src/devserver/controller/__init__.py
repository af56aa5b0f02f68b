"""The controller loop: workers, reconcile outcomes, owner mapping, predicates."""
