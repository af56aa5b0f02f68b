"""The operator's wheel as a platform team installs it: no test harness inside, and every module
imports with the runtime dependencies alone (no pytest, kubernetes_asyncio or cryptography)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devserver_harness.cluster import repo_root

# the harness's own dependencies: none may be needed to run the operator, devctl or the bastion
TEST_ONLY = ["devserver_harness", "pytest", "kubernetes_asyncio", "cryptography", "hypothesis"]

IMPORT_ALL = """
import importlib, pkgutil, sys
import devserver
names = [m.name for m in pkgutil.walk_packages(devserver.__path__, "devserver.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
test_only = sys.argv[1:]
loaded = sorted(n for n in sys.modules if n.split(".")[0] in test_only)
assert not loaded, loaded
for name in test_only:
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} is installed with the runtime dependencies")
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
         str(repo_root())],
        check=True,
    )  # fmt: skip
    [built] = out.glob("devserver-*.whl")
    return built


def test_the_wheel_holds_no_test_harness(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("devserver/reconcilers/") for n in names)
    assert not [n for n in names if "testing" in n.split("/") or n.startswith("devserver_harness")]
    assert not [n for n in names if n.startswith("tests/")]


def test_every_module_imports_with_only_the_runtime_dependencies(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
    )
    result = subprocess.run(
        [python, "-I", "-c", IMPORT_ALL, *TEST_ONLY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout) > 100  # every module of the operator, devctl and the bastion
    # the entry points the images run, from the wheel alone (no extras)
    for command, says in (
        ("devserver-operator", "--max-lifetime"),
        ("devctl", "create"),
        ("devserver-bastion", "--host-key-dir"),
    ):
        shown = subprocess.run(
            [str(venv / "bin" / command), "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert shown.returncode == 0 and says in shown.stdout, f"{command}: {shown.stderr}"
