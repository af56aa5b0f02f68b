"""What the operator's caches hold per dev server, by kind: ours beside plain dicts.

A report (`nox -s bench -- tests/bench/test_cache_memory.py`), not a pass/fail size. The objects
are those one standalone server with SSH has on the real control plane (recorded in
fixtures/cached-objects.json: the DevServer, its pod, Deployment, Service, home claim, the
activity agent's ServiceAccount, Role, RoleBinding and Lease, and a node), N copies of each
under other names, through the informer's path (decoded from the wire bytes, kept by
`Resource.cache_keeps`, stored). The baseline, in the same run: the same objects as plain
dicts without managedFields, as a dict-based cache (kopf's, or an unstructured one) keeps them.
Bytes are tracemalloc's: what Python allocated and still holds, per object.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devserver.api.meta import KubeObject
from devserver.api.resources import (
    DEPLOYMENTS,
    DEVSERVERS,
    LEASES,
    NODES,
    PERSISTENT_VOLUME_CLAIMS,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    SERVICES,
    Resource,
)
from devserver.informers import Informer
from tests.bench.scale import scaled

FIXTURES = Path(__file__).parent / "fixtures" / "cached-objects.json"
COPIES = scaled(2_000, 20)
KINDS: dict[str, Resource[Any]] = {
    "devservers": DEVSERVERS,
    "pods": PODS,
    "deployments": DEPLOYMENTS,
    "services": SERVICES,
    "persistentvolumeclaims": PERSISTENT_VOLUME_CLAIMS,
    "serviceaccounts": SERVICE_ACCOUNTS,
    "roles": ROLES,
    "rolebindings": ROLE_BINDINGS,
    "leases": LEASES,
    "nodes": NODES,
}
PER_SERVER = set(KINDS) - {"nodes"}


def wire(body: dict[str, Any]) -> list[bytes]:
    """COPIES of `body` for other servers (its name "mydev" everywhere: labels, claim names),
    each with its own name and uid, as the API server sends them."""
    text = json.dumps(body)
    out = []
    for i in range(COPIES):
        copy = json.loads(text.replace("mydev", f"s{i:06d}"))
        copy["metadata"]["name"] += f"-{i}"
        copy["metadata"]["uid"] = f"00000000-0000-0000-0000-{i:012d}"
        out.append(json.dumps(copy).encode())
    return out


def held(make: Callable[[list[bytes]], object], raw: list[bytes]) -> float:
    """Bytes per object that `make` keeps of `raw`."""
    make(raw[:2])  # builds pydantic's validators outside the measurement
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = make(raw)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return used / len(raw)


def as_dicts(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for data in raw:
        body = json.loads(data)
        body["metadata"].pop("managedFields", None)
        out.append(body)
    return out


def cached(resource: Resource[Any]) -> Callable[[list[bytes]], object]:
    def make(raw: list[bytes]) -> object:
        informer: Informer[Any] = Informer(None, resource)  # type: ignore[arg-type]  # not started
        for data in raw:
            informer.upsert(resource.model.model_validate_json(data))
        return informer

    return make


def test_report_cache_memory() -> None:
    bodies = json.loads(FIXTURES.read_text())
    rows = []
    for kind, resource in KINDS.items():
        raw = wire(bodies[kind])
        rows.append((kind, len(raw[0]), held(as_dicts, raw), held(cached(resource), raw)))
        assert isinstance(resource.model.model_validate_json(raw[0]), KubeObject)
    lines = [
        f"cache memory per object: {COPIES:,} copies of each, bytes (tracemalloc)",
        f"  {'kind':<24} {'JSON':>7} {'dicts':>8} {'ours':>8}  ours/dicts",
    ]
    for kind, size, dicts, ours in rows:
        lines.append(f"  {kind:<24} {size:7,} {dicts:8,.0f} {ours:8,.0f}  {ours / dicts:9.2f}")
    server = [r for r in rows if r[0] in PER_SERVER]
    dicts_total, ours_total = sum(r[2] for r in server), sum(r[3] for r in server)
    lines.append(
        f"  {'one server (9 objects)':<24} {sum(r[1] for r in server):7,}"
        f" {dicts_total:8,.0f} {ours_total:8,.0f}  {ours_total / dicts_total:9.2f}"
    )
    lines.append(
        f"  at 10,000 servers that is {ours_total * 10_000 / 2**20:,.0f} MiB of cache for ours,"
        f" {dicts_total * 10_000 / 2**20:,.0f} MiB as dicts (arithmetic, not a run)"
    )
    print("\n" + "\n".join(lines))  # noqa: T201
    assert all(ours > 0 and dicts > 0 for _, _, dicts, ours in rows)
