"""A real Prometheus (3.16, built from its Go module) on loopback, scraping the local platform.

Jobs are static targets (`host:port`), named as the chart's ServiceMonitors name them
(`devserver-operator`, `devserver-bastion`), plus `apiserver`: the control plane's own /metrics
over TLS with the admin client certificate. Tests read it through the HTTP API: instant
queries, alerts, targets. Rules are loaded from a file; `reload()` re-reads config and rules.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devserver_harness.controlplane import LocalControlPlane, free_port
from devserver_harness.http import fetch
from devserver_harness.process import ManagedProcess, wait_until
from devserver_harness.tools import ensure_tool


@dataclass
class PrometheusServer:
    cluster: LocalControlPlane
    jobs: dict[str, list[str]] = field(default_factory=dict)  # job -> ["127.0.0.1:port"]
    rules: dict[str, Any] | None = None  # a rules file's content (`{"groups": [...]}`)
    interval: str = "1s"  # scrape and rule evaluation
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="prometheus-"))
        layout = self.cluster.layout
        self.process = ManagedProcess(
            f"prometheus-{self.port}",
            [
                str(ensure_tool("prometheus")),
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_dir=layout.logs,
            registry=layout.state_dir / "children",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write(self) -> None:
        pki = self.cluster.layout.pki
        scrape: list[dict[str, Any]] = [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in self.jobs.items()
        ]
        scrape.append(
            {
                "job_name": "apiserver",
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.admin.cert),
                    "key_file": str(pki.admin.key),
                },
                "static_configs": [
                    {"targets": [urllib.parse.urlsplit(self.cluster.server).netloc]}
                ],
            }
        )
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": scrape,
        }
        if self.rules is not None:
            (self.directory / "rules.yaml").write_text(yaml.safe_dump(self.rules, sort_keys=False))
            config["rule_files"] = [str(self.directory / "rules.yaml")]
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 30) -> PrometheusServer:
        self._write()
        self.process.start()

        def ready() -> bool:
            self.process.check_running()
            try:
                return fetch(self.url + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until("prometheus /-/ready", ready, timeout=timeout)
        return self

    def stop(self) -> None:
        self.process.stop()

    def reload(self) -> None:
        """Re-read the config and the rules after a change of `jobs` or `rules`."""
        self._write()
        status, body = fetch(
            urllib.request.Request(self.url + "/-/reload", method="POST"),  # noqa: S310 - http to loopback
            timeout=10,
        )
        if status != 200:
            raise RuntimeError(f"prometheus reload: {status} {body!r}")

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = json.loads(fetch(f"{self.url}{path}?{query}", timeout=10)[1])
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single value of `expr` (None: an empty result)."""
        found = self.query(expr)
        if not found:
            return None
        if len(found) > 1:
            raise AssertionError(f"{expr} has {len(found)} series: {found}")
        return float(found[0]["value"][1])

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alerts firing now, by name: each one's labels."""
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self._get("/api/v1/alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def targets_up(self) -> dict[str, bool]:
        """Every active target's job and whether its last scrape worked."""
        return {
            t["labels"]["job"] + "/" + t["labels"]["instance"]: t["health"] == "up"
            for t in self._get("/api/v1/targets", state="active")["activeTargets"]
        }

    def series_count(self, job: str) -> int:
        """How many series the last scrape of `job` brought (scrape_samples_scraped)."""
        return int(
            sum(float(s["value"][1]) for s in self.query(f'scrape_samples_scraped{{job="{job}"}}'))
        )
