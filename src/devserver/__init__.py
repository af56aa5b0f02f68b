"""devserver: self-service PyTorch development servers on Kubernetes GPU clusters.

Layers, top to bottom (enforced by import-linter, see pyproject.toml):

- ``cli`` (devctl), ``bastion`` and ``operator``: the three programs (``operator`` is the
  operator's command line and its list of reconcilers);
- ``manager`` and ``reconcilers``, which know nothing of each other: the Manager runs
  *runnables* (informers, probes, controllers; each says whether it needs the leader) with
  leader election, health and metrics; the reconcilers are one module per concern (flavor,
  expiry, user, unreadable) and the ``reconcilers.devserver`` package (one reconcile, a
  standalone and a distributed mode; its docstring maps the path of one key);
- ``controller``: worker loop, reconcile outcomes, owner mapping, predicates;
- ``informers`` and ``workqueue``: raw-watch reflectors, the shared cache and its indexes,
  rate-limited queues with an urgent lane (their metrics come as an argument);
- ``client``: the only code that talks to the API server (kubeconfig loading, aiohttp for
  the operator and streams, the standard library for devctl's short commands);
- at the bottom, knowing nothing of each other: ``api`` (pydantic models of our resources,
  the single source of truth for the CRDs), ``observability`` (logging, metrics),
  ``podagent`` (the in-pod activity agent, standard library only) and ``signals``.

The test harness (a real local control plane) is its own package, ``tests/harness``, and
never part of this one.
"""

__version__ = "0.1.0.dev0"
