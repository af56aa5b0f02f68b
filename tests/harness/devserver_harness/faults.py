"""The bad days a cluster can have, on demand: apiserver restarts, etcd outages, compaction."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from devserver_harness.cluster import Cluster
from devserver_harness.http import fetch


class Faults(Cluster):
    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver (graceful), optionally stay down a while, start it again."""
        apiserver = self.process("kube-apiserver")
        apiserver.stop()
        time.sleep(downtime)
        apiserver.start()
        self._wait_apiserver(self.options.start_timeout)

    def stop_etcd(self) -> None:
        self.process("etcd").stop()

    def start_etcd(self) -> None:
        self.process("etcd").start()
        self._wait_etcd(self.options.start_timeout)

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision; return that revision."""
        status = self._etcd_call("/v3/maintenance/status", {})
        revision = int(status["header"]["revision"])
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310
            self.layout.etcd_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        status, answer = fetch(request, timeout=10)
        if status != 200:
            raise RuntimeError(f"etcd {path}: {status} {answer[:200]!r}")
        result: dict[str, Any] = json.loads(answer)
        return result
