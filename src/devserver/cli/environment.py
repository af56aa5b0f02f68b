"""`devctl status`, `devctl info`, `devctl test-k8s`: where am I, what can I do, does it work."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import click

from devserver import __version__
from devserver.api.resources import DEVSERVERS, FLAVORS, RESOURCE_QUOTAS
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.errors import DevctlError
from devserver.cli.output import OUTPUT_OPTION, emit, table
from devserver.cli.server_text import phase_of
from devserver.client.blocking import BlockingKubeClient
from devserver.client.errors import ApiError


def whoami(client: BlockingKubeClient) -> str:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    review = json.loads(
        client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=body)
    )
    return str(review["status"]["userInfo"]["username"])


def allowed(
    client: BlockingKubeClient,
    verb: str,
    resource: str,
    namespace: str,
    group: str = "",
    sub: str = "",
) -> bool:
    attributes = {"verb": verb, "resource": resource, "group": group, "subresource": sub}
    if namespace:
        attributes["namespace"] = namespace
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    return bool(json.loads(client.request("POST", path, body=body))["status"]["allowed"])


@click.command()
@OUTPUT_OPTION
@pass_devctl
def status(devctl: Devctl, output: str) -> None:
    """Your environment: cluster, identity, namespace, dev servers, quota."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        version = client.server_version()
        user = whoami(client)
        servers = (client.list_page(DEVSERVERS, namespace)).items
        flavor_count = len((client.list_page(FLAVORS)).items)
        quota: dict[str, Any] = {}
        try:
            for item in (client.list_page(RESOURCE_QUOTAS, namespace)).items:
                quota = dict(item.extra.get("status") or {})
        except ApiError as error:
            if error.status != 403:
                raise
        phases = Counter(phase_of(s) for s in servers)
        report = {
            "devctl": __version__,
            "context": client.config.context,
            "server": client.host,
            "kubernetes": version,
            "user": user,
            "namespace": namespace,
            "devServers": dict(phases),
            "flavors": flavor_count,
            "quota": quota,
        }
        emit(output, lambda: report, lambda: render_status(report))

    devctl.run_here(go, what="read your namespace")


def render_status(report: dict[str, Any]) -> str:
    """`devctl status` for people: the report, a line a fact."""
    quota = report["quota"]
    used, hard = quota.get("used", {}), quota.get("hard", {})
    phases: dict[str, int] = report["devServers"]
    lines = [
        f"devctl {report['devctl']}   context {report['context']}",
        f"API server:   {report['server']} (Kubernetes {report['kubernetes']}) — reachable",
        f"You are:      {report['user']}",
        f"Namespace:    {report['namespace']}",
        "Dev servers:  " + (", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none"),
        f"Flavors:      {report['flavors']} (`devctl flavors`)",
    ]
    if hard:
        lines.append(
            "Quota:        "
            + ", ".join(f"{k} {used.get(k, '?')}/{v}" for k, v in sorted(hard.items()))
        )
    return "\n".join(lines)


COMMANDS = [
    ("status", "your cluster, identity, namespace, dev servers and quota"),
    ("flavors [--gpu] [--aws]", "hardware presets with prices"),
    ("create NAME --flavor F [--time 4h] [--wait]", "a dev server with a persistent home"),
    ("list / describe NAME", "your dev servers; one in detail"),
    ("ssh NAME / exec NAME -- CMD", "a shell in it; run one command (its exit code)"),
    ("logs NAME [-f]", "its output"),
    ("update NAME --flavor F", "other hardware, same home"),
    ("extend NAME --time 2h", "more time before it stops"),
    ("stop NAME / start NAME", "no pod, no GPU, no cost; the same home comes back"),
    ("cost [NAME]", "hours on a node x flavor price"),
    ("quota", "your GPU quota, and the queue your servers wait in"),
    ("delete NAME", "remove it (the home volume is kept)"),
    ("ssh-config", "OpenSSH config for ssh/scp/VS Code through the bastion"),
    ("test-k8s", "check your access"),
    ("completion bash|zsh|fish", "shell completion"),
]


@click.command()
@OUTPUT_OPTION
def info(output: str) -> None:
    """What devctl can do."""
    commands = [{"command": f"devctl {c}", "what": d} for c, d in COMMANDS]
    emit(
        output,
        lambda: {"devctl": __version__, "commands": commands},
        lambda: (
            f"devctl {__version__}: self-service PyTorch dev servers\n\n"
            + table([[c["command"], c["what"]] for c in commands], ["COMMAND", "WHAT"])
            + "\n\nEvery read command takes -o json|yaml; `devctl COMMAND --help` for options. "
            "Exit status: 0 ok, 1 failure, 2 usage error."
        ),
    )


# (what, verb, resource, group, subresource, own namespace?, expected)
CHECKS: list[tuple[str, str, str, str, str, bool, bool]] = [
    ("create dev servers", "create", "devservers", "devservers.io", "", True, True),
    ("list dev servers", "list", "devservers", "devservers.io", "", True, True),
    ("delete dev servers", "delete", "devservers", "devservers.io", "", True, True),
    ("read flavors", "list", "devserverflavors", "devservers.io", "", False, True),
    ("read pods", "list", "pods", "", "", True, True),
    ("exec into pods", "create", "pods", "", "exec", True, True),
    ("read pod logs", "get", "pods", "", "log", True, True),
    ("read events", "list", "events", "", "", True, True),
    ("create raw pods (not allowed)", "create", "pods", "", "", True, False),
    ("read secrets (not allowed)", "list", "secrets", "", "", True, False),
    ("create namespaces (not allowed)", "create", "namespaces", "", "", False, False),
    ("list nodes (not allowed)", "list", "nodes", "", "", False, False),
]


@click.command("test-k8s")
@OUTPUT_OPTION
@pass_devctl
def test_k8s(devctl: Devctl, output: str) -> None:
    """Check that your access works — and is no wider than it should be."""

    def go(client: BlockingKubeClient, namespace: str) -> None:
        user = whoami(client)
        results = []
        for what, verb, resource, group, sub, own, expected in CHECKS:
            got = allowed(client, verb, resource, namespace if own else "", group, sub)
            results.append({"check": what, "allowed": got, "expected": expected})
        wrong = [r for r in results if r["allowed"] != r["expected"]]
        report = {"user": user, "namespace": namespace, "checks": results}
        emit(output, lambda: report, lambda: render_checks(report))
        if wrong:
            raise DevctlError(
                f"{len(wrong)} access check(s) are not as expected; send this output to the "
                "platform team."
            )

    devctl.run_here(go, what="check access")


def render_checks(report: dict[str, Any]) -> str:
    """`devctl test-k8s` for people: a line a check, WRONG where it is not as expected."""
    rows = [
        [
            "ok" if r["allowed"] == r["expected"] else "WRONG",
            str(r["check"]),
            "allowed" if r["allowed"] else "denied",
        ]
        for r in report["checks"]
    ]
    return f"as {report['user']} in {report['namespace']}:\n" + table(rows, ["", "CHECK", "RESULT"])
