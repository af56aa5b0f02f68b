"""Build and cache the control-plane binaries from the pinned Go module.

`tools/controlplane/go.mod` is the one place where versions are chosen. The binaries are built
with one `go build` (so the Kubernetes commands share compiled packages) into
``$DEVSERVER_CACHE/bin/<key>/``, where the key names the versions and hashes everything that
shapes the result (go.mod, go.sum, the Go version and the link flags). A present, complete
directory is reused; a build runs under a file lock so parallel test runs wait instead of
building twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# What `go build` is asked for, and the name each binary gets in the cache.
_PACKAGES: dict[str, str] = {
    "go.etcd.io/etcd/server/v3": "etcd",
    "sigs.k8s.io/kwok/cmd/kwok": "kwok",
    "k8s.io/kubernetes/cmd/kube-apiserver": "kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager": "kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler": "kube-scheduler",
    "k8s.io/kubernetes/cmd/kubectl": "kubectl",
}
BINARIES: tuple[str, ...] = tuple(_PACKAGES.values())
# kwok ships no built-in stages; kwokctl embeds these from the module. So do we, next to the
# binaries, so the stages always match the kwok that was built.
KWOK_STAGES_FILE = "kwok-stages.yaml"
_KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
# Bump when the build recipe below changes in a way go.mod does not show.
_RECIPE = "2"


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    kwok: str

    @property
    def kube_minor(self) -> str:
        return self.kubernetes.lstrip("v").split(".")[1]


def cache_root() -> Path:
    """Where built binaries and Go caches live; outside the repository on purpose."""
    base = os.environ.get("DEVSERVER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "devserver"
    )
    return Path(base)


def tools_dir() -> Path:
    """Locate `tools/controlplane` from this source tree or the working directory."""
    override = os.environ.get("DEVSERVER_TOOLS_DIR")
    candidates = [Path(override)] if override else []
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        candidates += [p / "tools" / "controlplane" for p in (start, *start.parents)]
    for candidate in candidates:
        if (candidate / "go.mod").is_file():
            return candidate
    raise FileNotFoundError(
        "tools/controlplane/go.mod not found; run from a devserver checkout or set "
        "DEVSERVER_TOOLS_DIR to its tools/controlplane directory."
    )


def read_versions(go_mod: str) -> Versions:
    def required(module: str) -> str:
        match = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", go_mod, re.MULTILINE)
        if match is None:
            raise ValueError(f"go.mod does not require {module}")
        return match.group(1)

    return Versions(
        kubernetes=required("k8s.io/kubernetes"),
        etcd=required("go.etcd.io/etcd/server/v3"),
        kwok=required("sigs.k8s.io/kwok"),
    )


def ldflags(versions: Versions) -> str:
    """Version stamps so `kube-apiserver --version` and `kubectl version` tell the truth."""
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={versions.kubernetes}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={versions.kube_minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def cache_key(tools: Path, versions: Versions) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((tools / name).read_bytes())
    digest.update(ldflags(versions).encode())
    digest.update(go_version().encode())
    digest.update(_RECIPE.encode())
    return (
        f"k8s-{versions.kubernetes}_etcd-{versions.etcd}_kwok-{versions.kwok}_"
        f"{digest.hexdigest()[:12]}"
    )


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (*BINARIES, KWOK_STAGES_FILE))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"[controlplane-build] {message}", file=sys.stderr, flush=True)  # noqa: T201


def ensure_binaries() -> Path:
    """Return the directory holding the control-plane binaries, building them if needed."""
    override = os.environ.get("DEVSERVER_BIN_DIR")
    if override:
        directory = Path(override)
        if not _complete(directory):
            raise FileNotFoundError(f"DEVSERVER_BIN_DIR={override} lacks one of {BINARIES}")
        return directory
    tools = tools_dir()
    versions = read_versions((tools / "go.mod").read_text())
    key = cache_key(tools, versions)
    target = cache_root() / "bin" / key
    if _complete(target):
        return target
    with _locked(cache_root() / "bin" / f"{key}.lock"):
        if _complete(target):  # another process built it while we waited
            return target
        _build(tools, versions, target)
    return target


def _build(tools: Path, versions: Versions, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    _log(
        f"building kubernetes {versions.kubernetes}, etcd {versions.etcd}, kwok {versions.kwok} "
        f"into {target} (a cold build takes 20-40 minutes on 2 cores; later runs reuse it)"
    )
    started = time.monotonic()
    subprocess.run(["go", "mod", "download"], cwd=tools, env=env, check=True)
    total = _count_packages(tools, env)
    command = [
        "go",
        "build",
        "-v",
        "-trimpath",
        "-ldflags",
        ldflags(versions),
        "-o",
        f"{staging}{os.sep}",
        *_PACKAGES,
    ]
    with subprocess.Popen(
        command, cwd=tools, env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stderr is not None
        _report_progress(proc.stderr, total, started)
        if proc.wait() != 0:
            raise RuntimeError(f"go build failed (exit {proc.returncode}); see the output above")
    for package, name in _PACKAGES.items():
        built = staging / package.rstrip("/").split("/")[-1]
        if package.endswith("/v3"):  # Go names a major-version module's binary after its parent
            built = staging / package.split("/")[-2]
        built.rename(staging / name)
    _write_kwok_stages(tools, env, staging / KWOK_STAGES_FILE)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    _log(f"built in {time.monotonic() - started:.0f} s")


def _write_kwok_stages(tools: Path, env: dict[str, str], out: Path) -> None:
    module_dir = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=tools,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    documents = [(Path(module_dir) / stage).read_text().strip() for stage in _KWOK_STAGES]
    out.write_text("\n---\n".join(documents) + "\n")


def _count_packages(tools: Path, env: dict[str, str]) -> int:
    out = subprocess.run(
        ["go", "list", "-deps", *_PACKAGES],
        cwd=tools,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return max(1, len(out.stdout.split()))


def _report_progress(lines: Iterable[str], total: int, started: float) -> None:
    """`go build -v` names each package as it compiles it; turn that into a progress line."""
    done = 0
    last = 0.0
    for line in lines:
        text = line.rstrip()
        if not text or " " in text:  # compiler errors and notes contain spaces; show them
            if text:
                _log(text)
            continue
        done += 1
        now = time.monotonic()
        if now - last >= 15:
            last = now
            _log(f"{done}/{total} packages ({100 * done // total}%), {now - started:.0f} s: {text}")
