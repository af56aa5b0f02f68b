"""devserver: self-service PyTorch development servers on Kubernetes GPU clusters.

Layers, top to bottom (enforced by import-linter, see pyproject.toml):

- ``cli`` (devctl) and ``bastion``: what users and the SSH bastion run;
- ``manager``: the operator process: wiring, leader election, health, metrics, signals;
- ``reconcilers``: one module per concern (devserver, distributed, flavor, user, expiry);
- ``controller``: worker loop, reconcile outcomes, owner mapping;
- ``informers`` and ``workqueue``: raw-watch reflectors, the shared cache, rate-limited queues;
- ``client``: the only code that talks to the API server (kubeconfig loading, aiohttp for
  the operator and streams, the standard library for devctl's short commands);
- ``api``: pydantic models of our resources, the single source of truth for the CRDs.

``observability`` (logging, metrics) may be used by any layer; ``testing`` is the local
control-plane harness for tests and ``nox -s up`` and is never imported by runtime code.
"""

__version__ = "0.1.0.dev0"
