"""Developer entry points: `nox -s up` (the local platform) and `nox -s tests` (everything)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

HARNESS = "tests/harness"  # the test harness: its own package, never in the operator's wheel


def install(session: nox.Session, extra: str | None) -> None:
    """devserver (editable, with `extra`) and the test harness beside it."""
    session.install("-e", f".[{extra}]" if extra else ".", "-e", HARNESS)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then integration and end-to-end tests against the real local control plane.

    The first run builds the control-plane binaries from Go modules (minutes); later runs reuse
    them from ~/.cache/devserver.
    """
    install(session, "test")
    session.run("python", "-m", "devserver_harness.build")
    session.run(
        "pytest",
        *(session.posargs or ["tests/unit", "tests/packaging", "tests/integration", "tests/e2e"]),
    )


@nox.session
def distributed(session: nox.Session) -> None:
    """A real torch.distributed (gloo, CPU) rendezvous with the environment the operator
    renders on the local control plane. Installs torch (large), hence its own session."""
    install(session, "distributed")
    session.run("python", "-m", "devserver_harness.build")
    session.run("pytest", *(session.posargs or ["tests/distributed"]))


@nox.session
def fuzz(session: nox.Session) -> None:
    """The guarantees' generated-input tests at ten times the examples of `nox -s tests`
    (3,000; seeded, so a failure reproduces), and chaos with more rounds."""
    install(session, "test")
    session.run("python", "-m", "devserver_harness.build")
    session.env.setdefault("DEVSERVER_FUZZ_EXAMPLES", "3000")
    session.env.setdefault("DEVSERVER_CHAOS_ROUNDS", "60")
    session.run(
        "pytest",
        "-s",
        *(
            session.posargs
            or ["tests/integration/test_guarantees.py", "tests/integration/test_chaos.py"]
        ),
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict on src and the harness, and the import-linter layering contracts."""
    install(session, "lint")
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")
    session.run("mypy")  # devserver and the harness (pyproject's [tool.mypy] packages)
    session.run("lint-imports")


@nox.session
def up(session: nox.Session) -> None:
    """The whole platform locally, in the foreground; Ctrl-C stops it. Installed through the
    Helm chart, as users install it; the build step brings helm and, on a fresh machine,
    Debian's openssh-server for the bastion."""
    install(session, None)
    session.run("python", "-m", "devserver_harness.build")
    session.run("python", "-m", "devserver_harness.up", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each side by side with its baseline in the same run: every one, or those
    given (`nox -s bench -- tests/bench/test_kueue_queue.py`); pytest options pass through.
    DEVSERVER_BENCH_SCALE shrinks them (`.ci/run` runs each once at 0.01: a broken bench
    fails CI)."""
    install(session, "test")
    session.install("kopf==1.45.2")  # the Python peer in the scale bench (tests/bench/peers)
    session.install("matplotlib==3.11.2")  # the scale bench's plots (PNG), beside its text
    where = [] if _paths(session.posargs) else ["tests/bench"]
    session.run("pytest", *where, "-s", "-p", "no:cacheprovider", *session.posargs)


# pytest options that take the next argument: a path there names no test to run
_VALUED = {"-k", "-m", "-p", "-o", "--deselect", "--ignore", "--rootdir", "--basetemp",
           "--durations", "-c", "--confcutdir", "--timeout"}  # fmt: skip


def _paths(args: list[str]) -> list[str]:
    """The tests given among pytest's arguments (files, directories, node ids)."""
    return [
        arg
        for before, arg in zip(["", *args], args, strict=False)
        if not arg.startswith("-") and before not in _VALUED and Path(arg.split("::")[0]).exists()
    ]
