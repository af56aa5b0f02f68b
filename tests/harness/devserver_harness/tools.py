"""Build and cache the test tools — helm, kubeconform, prometheus and promtool — each from its
own pinned Go module.

`tools/<name>/go.mod` is the one place a tool's version is chosen (one module per tool: their
Kubernetes libraries need not agree with the control plane's). A tool is built with `go build`
into ``$DEVSERVER_CACHE/bin/<name>-<version>_<hash>/<name>``, the hash covering go.mod, go.sum,
the Go version and the recipe, and reused while complete; builds run under a file lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devserver_harness.binaries import _locked, cache_root, go_version, tools_dir

_RECIPE = "2"


@dataclass(frozen=True)
class Tool:
    name: str  # the binary, and its directory under tools/
    package: str  # what `go build` is asked for
    module: str  # the module whose version go.mod pins
    version_variable: str = ""  # stamped with that version (`helm version` tells the truth)
    # stamped with the Kubernetes minor of its client-go, as helm's Makefile does: unset, helm
    # takes itself for a 1.20 client and refuses charts needing a newer `kubeVersion`
    kube_version_variables: tuple[str, ...] = ()
    directory: str = ""  # its module under tools/ when not its own name (several per module)
    tags: str = ""  # build tags


TOOLS = {
    "helm": Tool(
        "helm",
        "helm.sh/helm/v3/cmd/helm",
        "helm.sh/helm/v3",
        "helm.sh/helm/v3/internal/version.version",
        (
            "helm.sh/helm/v3/pkg/lint/rules.k8sVersion",
            "helm.sh/helm/v3/pkg/chartutil.k8sVersion",
        ),
    ),
    "kubeconform": Tool(
        "kubeconform",
        "github.com/yannh/kubeconform/cmd/kubeconform",
        "github.com/yannh/kubeconform",
    ),
    # without the web UI's assets (not in the module) and without the cloud service discoveries
    # (`remove_all_sd` keeps static and file SD: all a test needs, and a build of ~1.5 min)
    **{
        name: Tool(
            name,
            f"github.com/prometheus/prometheus/cmd/{name}",
            "github.com/prometheus/prometheus",
            "github.com/prometheus/common/version.Version",
            directory="prometheus",
            tags="remove_all_sd",
        )
        for name in ("prometheus", "promtool")
    },
    "kueue": Tool(
        "kueue",
        "sigs.k8s.io/kueue/cmd/kueue",
        "sigs.k8s.io/kueue",
        "sigs.k8s.io/kueue/pkg/version.GitVersion",
    ),
    # the scale bench's Go peer: our own source, on controller-runtime (tests/bench/peers)
    "crpeer": Tool(
        "crpeer",
        ".",
        "sigs.k8s.io/controller-runtime",
        directory="../tests/bench/peers/crpeer",
    ),
}


def pinned_version(go_mod: str, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.MULTILINE)
    if match is None:
        raise ValueError(f"go.mod does not require {module}")
    return match.group(1)


def ensure_tool(name: str) -> Path:
    """The path of tool `name`'s binary, built first if the cache lacks it."""
    override = os.environ.get(f"DEVSERVER_{name.upper()}")
    if override:
        return Path(override)
    tool = TOOLS[name]
    module_dir = tools_dir().parent / (tool.directory or name)
    version = pinned_version((module_dir / "go.mod").read_text(), tool.module)
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum", *sorted(p.name for p in module_dir.glob("*.go"))):
        digest.update((module_dir / part).read_bytes())  # a module of ours: its source too
    digest.update(go_version().encode() + _RECIPE.encode())
    directory = cache_root() / "bin" / f"{name}-{version}_{digest.hexdigest()[:12]}"
    binary = directory / name
    if binary.is_file():
        return binary
    with _locked(directory.with_name(directory.name + ".lock")):
        if not binary.is_file():
            _build(tool, version, module_dir, directory)
    return binary


def _build(tool: Tool, version: str, module_dir: Path, directory: Path) -> None:
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    flags = "-s -w"
    if tool.version_variable:
        flags += f" -X {tool.version_variable}={version}"
    if tool.kube_version_variables:
        client_go = pinned_version((module_dir / "go.mod").read_text(), "k8s.io/client-go")
        minor = client_go.split(".")[1]  # v0.<minor>.<patch>
        for prefix in tool.kube_version_variables:
            flags += f" -X {prefix}Major=1 -X {prefix}Minor={minor}"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    tags = ["-tags", tool.tags] if tool.tags else []
    started = time.monotonic()
    print(f"[tools] building {tool.name} {version} (a few minutes, once)", flush=True)  # noqa: T201
    subprocess.run(
        [
            "go",
            "build",
            "-trimpath",
            *tags,
            "-ldflags",
            flags,
            "-o",
            str(staging / tool.name),
            tool.package,
        ],
        cwd=module_dir,
        env=env,
        check=True,
    )
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    print(f"[tools] built {tool.name} in {time.monotonic() - started:.0f} s", flush=True)  # noqa: T201


# The Prometheus Operator's CRDs, rendered by controller-gen from its pinned API types: the
# chart's ServiceMonitor, PodMonitor and PrometheusRule are dry-run against them
PROMETHEUS_OPERATOR_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


def prometheus_operator_crds() -> list[Path]:
    """The CRD files, rendered once into the cache (the hash covers go.mod and go.sum)."""
    module_dir = tools_dir().parent / "prometheus-operator"
    go_mod = (module_dir / "go.mod").read_text()
    version = pinned_version(
        go_mod, "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"
    )
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum", *sorted(p.name for p in module_dir.glob("*.go"))):
        digest.update((module_dir / part).read_bytes())  # a module of ours: its source too
    directory = cache_root() / "crds" / f"prometheus-operator-{version}_{digest.hexdigest()[:12]}"
    files = [directory / f"monitoring.coreos.com_{name}.yaml" for name in PROMETHEUS_OPERATOR_CRDS]
    with _locked(directory.with_name(directory.name + ".lock")):
        if not all(f.is_file() for f in files):
            staging = directory.with_name(directory.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run(
                [
                    "go",
                    "tool",
                    "controller-gen",
                    "crd:allowDangerousTypes=true",
                    "paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1",
                    f"output:crd:dir={staging}",
                ],
                cwd=module_dir,
                env=dict(os.environ, GOFLAGS="-mod=mod"),
                check=True,
            )
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)
    return files
