"""Helpers for the informer benchmarks: a bare LIST baseline, /proc memory, and an RSS probe.

The probe runs in a fresh interpreter (`python -m tests.bench.kubebench rss KUBECONFIG NS MODE`)
so that the RSS it reports is not blurred by what the test process allocated and freed before.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

from devserver import __version__
from devserver.api.resources import CONFIGMAPS
from devserver.client import KubeClient, new_client
from devserver.informers import Informer, ReflectorOptions

# what KubeClient sends (the same value as tests/integration/core/conftest.py's USER_AGENT)
USER_AGENT = f"devserver/{__version__}"


async def bare_list(
    client: KubeClient, namespace: str, resource_version: str | None, *, limit: int = 500
) -> tuple[list[dict[str, Any]], int]:
    """The baseline: a paginated LIST, each page through `json.loads`; no models, no store.

    `resource_version=None` leaves it unset (a consistent read); "0" is the informer's first list.
    Returns the items and the number of pages.
    """
    items: list[dict[str, Any]] = []
    pages, token = 0, ""
    while True:
        query = [("limit", str(limit))]
        if token:
            query.append(("continue", token))
        elif resource_version is not None:
            query.append(("resourceVersion", resource_version))
        page = json.loads(await client.request("GET", CONFIGMAPS.path(namespace), query=query))
        pages += 1
        items.extend(page["items"])
        token = page["metadata"].get("continue", "")
        if not token:
            return items, pages


async def synced_informer(
    client: KubeClient, namespace: str, *, streaming_list: bool = False
) -> Informer[Any]:
    """A started ConfigMap informer on `namespace`, returned once its first list is in the store."""
    informer = Informer(
        client,
        CONFIGMAPS,
        namespace=namespace,
        options=ReflectorOptions(streaming_list=streaming_list),
    )
    informer.start()
    await informer.wait_synced()
    return informer


def proc_status_kib(field: str) -> int:
    """A `kB` line of /proc/self/status, e.g. VmRSS (resident) or VmHWM (peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


async def rss_probe(kubeconfig: str, namespace: str, mode: str) -> dict[str, Any]:
    """RSS before and after this process holds every ConfigMap of `namespace`.

    mode "informer": a synced informer (models in a Store); "dicts": the bare LIST (resourceVersion
    0, like the informer) kept as `json.loads` dicts.
    """
    client = await new_client(kubeconfig)
    try:
        await bare_list(client, "kube-system", "0")  # warm: TLS connection, parsers, imports
        CONFIGMAPS.model.model_validate_json(b"{}")
        gc.collect()
        before = proc_status_kib("VmRSS")
        held: Any
        if mode == "informer":
            held = await synced_informer(client, namespace)
            count = len(held.store)
        else:
            held, _ = await bare_list(client, namespace, "0")
            count = len(held)
        gc.collect()
        after = proc_status_kib("VmRSS")
        peak = proc_status_kib("VmHWM")
        if isinstance(held, Informer):
            await held.stop()
        return {"count": count, "before_kib": before, "after_kib": after, "peak_kib": peak}
    finally:
        await client.close()


def main(argv: list[str]) -> None:
    command, kubeconfig, namespace, mode = argv
    if command != "rss" or mode not in ("informer", "dicts"):
        raise SystemExit("usage: python -m tests.bench.kubebench rss KUBECONFIG NS informer|dicts")
    print(json.dumps(asyncio.run(rss_probe(kubeconfig, namespace, mode))))  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])
