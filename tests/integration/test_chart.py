"""The Helm chart, checked by the real tools (helm and kubeconform, built from pinned Go modules)
and by the local control plane, on which the whole suite installs devserver through it and runs
the operator with the token of the chart's ServiceAccount."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devserver.api import crd
from devserver.observability.dashboards import DASHBOARDS
from devserver.observability.rules import rule_groups
from devserver_harness.controlplane import LocalControlPlane, repo_root
from devserver_harness.tools import (
    PROMETHEUS_OPERATOR_CRDS,
    ensure_tool,
    prometheus_operator_crds,
)

CHART = repo_root() / "charts" / "devserver"
VALUES = {"default": (), "eks": ("-f", str(CHART / "values-eks.yaml"))}
NAMESPACE = "devserver-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:devserver-operator"
BASTION = f"system:serviceaccount:{NAMESPACE}:devserver-bastion"


def render(cp: LocalControlPlane, *args: str) -> str:
    """`helm template`, as on a cluster that has the CRDs (so the default flavors render)."""
    return cp.helm(
        "template", "devserver", str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.36.0",
        "--api-versions", "devservers.io/v1/DevServerFlavor", *args,
    ).stdout  # fmt: skip


def test_helm_lint_strict_passes_for_the_default_and_the_eks_values(
    control_plane: LocalControlPlane,
) -> None:
    for extra in VALUES.values():
        out = control_plane.helm("lint", "--strict", str(CHART), *extra).stdout
        assert "0 chart(s) failed" in out, out


def _crd_schemas(directory: Path) -> Path:
    """Our kinds' schemas in kubeconform's naming, from the CRDs the chart carries."""
    for spec in crd.ALL:
        schema = crd.crd(spec)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        name = f"{spec.kind.lower()}-{crd.GROUP.split('.')[0]}-{crd.VERSION}.json"
        (directory / name).write_text(json.dumps(schema))
    return directory


def _builtin_schemas(directory: Path) -> Path:
    """kubernetes-validate's strict 1.36 schemas, made to resolve offline: each names
    https://kubernetes.io/api/ as its base and `/api/_definitions.json` for the shared
    definitions, which kubeconform would fetch; here they point at the local file."""
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    target = directory / "v1.36.0-local-strict"
    target.mkdir(parents=True)
    definitions = (target / "_definitions.json").resolve().as_uri()
    for schema in (source / "v1.36.0-local-strict").glob("*.json"):
        text = schema.read_text()
        if schema.name != "_definitions.json":
            text = text.replace('"/api/_definitions.json#', f'"{definitions}#')
            data = json.loads(text)
            data.pop("$id", None)
            text = json.dumps(data)
        (target / schema.name).write_text(text)
    return directory


def test_rendered_objects_are_valid_kubernetes_1_36_objects(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    kubeconform = ensure_tool("kubeconform")
    builtin = _builtin_schemas(tmp_path / "builtin")
    ours = _crd_schemas(tmp_path)
    for name, extra in VALUES.items():
        rendered = tmp_path / f"{name}.yaml"
        rendered.write_text(render(control_plane, *extra))
        result = subprocess.run(
            [
                str(kubeconform),
                "-strict",
                "-summary",
                "-kubernetes-version=1.36.0",
                f"-schema-location={builtin}/{{{{ .NormalizedKubernetesVersion }}}}-local-strict"
                "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
                f"-schema-location={ours}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                str(rendered),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout
        broken = tmp_path / f"{name}-broken.yaml"  # the check can fail: a misspelt field
        broken.write_text(rendered.read_text().replace("  replicas: ", "  replicaz: ", 1))
        refused = subprocess.run(
            [*result.args[:-1], str(broken)], capture_output=True, text=True, check=False
        )
        assert "additional properties 'replicaz' not allowed" in refused.stdout


def test_every_rendered_object_passes_the_api_servers_dry_run(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    for name, extra in VALUES.items():
        rendered = tmp_path / f"{name}.yaml"
        rendered.write_text(render(control_plane, *extra))
        kinds = [d["kind"] for d in yaml.safe_load_all(rendered.read_text()) if d]
        out = control_plane.kubectl(
            "apply", "--server-side", "--dry-run=server", "--force-conflicts",
            "--field-manager=dry-run", "-f", str(rendered),
        ).stdout  # fmt: skip
        assert out.count("(server dry run)") == len(kinds), out


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("operator.replica=3", "additional properties 'replica' not allowed"),  # a typo
        ("operator.settings.maxLifetime=forever", "maxLifetime"),
        ("operator.settings.userQuota.gpus=-1", "gpus"),
        ("bastion.service.type=External", "type"),
        ("operator.image.digest=latest", "digest"),
    ],
)
def test_values_the_schema_refuses_before_anything_is_made(
    control_plane: LocalControlPlane, value: str, says: str
) -> None:
    with pytest.raises(RuntimeError, match=says):
        render(control_plane, "--set", value)


def test_with_kueue_the_yield_classes_are_made_and_kept_and_a_reversed_order_refused(
    control_plane: LocalControlPlane,
) -> None:
    """Made whenever Kueue is on (a workload labelled with one is never admitted without it),
    kept on uninstall; an idle class not below the active one would never yield first."""
    docs = yaml.safe_load_all(render(control_plane, "--set", "kueue.enabled=true"))
    classes = {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "WorkloadPriorityClass"}
    assert {n: d["value"] for n, d in classes.items()} == {
        "devserver-active": 0,  # what Kueue gives a workload of no class
        "devserver-idle": -100,
    }
    assert all(
        d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in classes.values()
    )
    with pytest.raises(RuntimeError, match="activePriority must be above idlePriority"):
        render(
            control_plane, "--set", "kueue.enabled=true", "--set", "kueue.idleYield.idlePriority=0"
        )


def test_crds_are_kept_on_uninstall_and_every_object_carries_the_charts_labels(
    control_plane: LocalControlPlane,
) -> None:
    documents = [d for d in yaml.safe_load_all(render(control_plane)) if d]
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == len(crd.ALL)
    for d in crds:
        assert d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for d in documents:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "devserver", d["kind"]
    unkept = [d for d in yaml.safe_load_all(render(control_plane, "--set", "crds.keep=false")) if d]
    assert not any(
        "helm.sh/resource-policy" in (d["metadata"].get("annotations") or {})
        for d in unkept
        if d["kind"] == "CustomResourceDefinition"
    )


def test_the_operator_pod_is_restricted_and_spread() -> None:
    """Pod Security `restricted` for the operator: what the admission plugin would check."""
    cp_render = subprocess.run(
        [
            str(ensure_tool("helm")),
            "template",
            "devserver",
            str(CHART),
            "-n",
            NAMESPACE,
            "--kube-version",
            "1.36.0",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [deployment] = [
        d
        for d in yaml.safe_load_all(cp_render)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "devserver-operator"
    ]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert deployment["spec"]["replicas"] == 2
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert probes == {"/healthz", "/readyz"}


def test_dashboards_render_as_configmaps_for_the_grafana_sidecar(
    control_plane: LocalControlPlane,
) -> None:
    def dashboards(*args: str) -> list[dict[str, Any]]:
        return [
            d
            for d in yaml.safe_load_all(render(control_plane, *args))
            if d
            and d["kind"] == "ConfigMap"
            and d["metadata"]["name"].startswith("devserver-dashboard-")
        ]

    assert dashboards() == []  # off by default
    on = dashboards(
        "--set", "monitoring.dashboards.enabled=true",
        "--set", "monitoring.dashboards.annotations.grafana_folder=devserver",
    )  # fmt: skip
    names = {d["metadata"]["name"] for d in on}
    assert names == {f"devserver-dashboard-{stem}" for stem in DASHBOARDS}
    for d in on:
        meta = d["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's sidecar
        assert meta["labels"]["app.kubernetes.io/part-of"] == "devserver"
        assert meta["annotations"] == {"grafana_folder": "devserver"}
        stem = meta["name"].removeprefix("devserver-dashboard-")
        [(key, text)] = d["data"].items()
        assert key == f"devserver-{stem}.json"
        dashboard = json.loads(text)
        assert dashboard["uid"] == f"devserver-{stem}"
        assert dashboard == DASHBOARDS[stem]
    elsewhere = dashboards(
        "--set", "monitoring.dashboards.enabled=true",
        "--set", "monitoring.dashboards.namespace=monitoring",
    )  # fmt: skip
    assert {d["metadata"]["namespace"] for d in elsewhere} == {"monitoring"}


def test_monitors_and_rules_render_for_the_prometheus_operator(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    def monitoring(*args: str) -> list[dict[str, Any]]:
        return [
            d
            for d in yaml.safe_load_all(render(control_plane, *args))
            if d and d["apiVersion"] == "monitoring.coreos.com/v1"
        ]

    assert monitoring() == []  # off by default: no CRDs of the Prometheus Operator needed
    on = monitoring(
        "--set", "monitoring.serviceMonitor.enabled=true",
        "--set", "monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set-json", 'monitoring.serviceMonitor.endpointAdditionalProperties={"scheme":"https"}',
        "--set", "monitoring.prometheusRule.enabled=true",
        "--set", "monitoring.prometheusRule.disabledAlerts={DevserverIdleGpus}",
    )  # fmt: skip
    monitors = {d["metadata"]["name"]: d for d in on if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"devserver-operator", "devserver-bastion"}
    for job, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["scheme"] == "https"
        # the job the rules and dashboards select on
        assert endpoint["relabelings"][0] == {
            "action": "replace", "targetLabel": "job", "replacement": job
        }  # fmt: skip
        assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": job}
    [rule] = [d for d in on if d["kind"] == "PrometheusRule"]
    expected = rule_groups()
    for group in expected["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != "DevserverIdleGpus"]
    assert rule["spec"]["groups"] == expected["groups"]
    # what the Prometheus Operator hands Prometheus is a rules file promtool accepts
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [str(ensure_tool("promtool")), "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

    no_bastion = monitoring(
        "--set", "bastion.enabled=false",
        "--set", "monitoring.podMonitor.enabled=true",
        "--set", "monitoring.prometheusRule.enabled=true",
    )  # fmt: skip
    assert [(d["kind"], d["metadata"]["name"]) for d in no_bastion] == [
        ("PodMonitor", "devserver-operator"), ("PrometheusRule", "devserver")
    ]  # fmt: skip
    [rule] = [d for d in no_bastion if d["kind"] == "PrometheusRule"]
    assert "devserver.bastion" not in {g["name"] for g in rule["spec"]["groups"]}


def test_monitoring_objects_pass_the_dry_run_against_the_prometheus_operators_own_crds(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    """Their CRDs rendered by controller-gen from the Prometheus Operator's pinned API types:
    the schemas a kube-prometheus-stack cluster enforces."""
    cp = control_plane
    for path in prometheus_operator_crds():
        cp.kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    names = [f"{name}.monitoring.coreos.com" for name in PROMETHEUS_OPERATOR_CRDS]
    cp.kubectl("wait", "--for=condition=Established", *(f"crd/{n}" for n in names))

    def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
        rendered = tmp_path / "monitoring.yaml"
        rendered.write_text(render(cp, *args))
        return cp.kubectl(
            "apply", "--server-side", "--dry-run=server", "--force-conflicts",
            "--field-manager=dry-run", "-f", str(rendered), check=False,
        )  # fmt: skip

    on = ("--set", "monitoring.prometheusRule.enabled=true", "--set",
          "monitoring.dashboards.enabled=true")  # fmt: skip
    for monitor in ("serviceMonitor", "podMonitor"):
        done = dry_run(
            *on,
            "--set", f"monitoring.{monitor}.enabled=true",
            "--set", f"monitoring.{monitor}.labels.release=kube-prometheus-stack",
            "--set-json", f'monitoring.{monitor}.metricRelabelings=[{{"action": "drop", '
            '"sourceLabels": ["__name__"], "regex": "python_gc_.*"}]',
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        kind = monitor.lower()
        for name in ("devserver-operator", "devserver-bastion"):
            assert f"{kind}.monitoring.coreos.com/{name} serverside-applied (server dry run)" in (
                done.stdout
            ), done.stdout
        assert "prometheusrule.monitoring.coreos.com/devserver serverside-applied" in done.stdout
    # what the schema refuses, the API server refuses: a scheme the operator does not know
    refused = dry_run(
        "--set", "monitoring.serviceMonitor.enabled=true",
        "--set-json", 'monitoring.serviceMonitor.endpointAdditionalProperties={"scheme": "ftp"}',
    )  # fmt: skip
    assert refused.returncode != 0 and "scheme" in refused.stderr, refused.stderr


# ------------------------------------------------------------------ the operator's own rights


def _requests_of(cp: LocalControlPlane, user: str) -> list[dict[str, Any]]:
    events = []
    for path in sorted(cp.audit_log.parent.glob("audit*.log")):
        with path.open() as lines:
            for line in lines:
                if user in line:
                    event = json.loads(line)
                    if event.get("user", {}).get("username") == user:
                        events.append(event)
    return events


def _chart_rules(cp: LocalControlPlane, role: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of a ClusterRole the chart renders."""
    [cluster_role] = [
        d
        for d in yaml.safe_load_all(render(cp))
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == role
    ]
    return {
        (group, resource, verb)
        for rule in cluster_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# Rules no flow of this suite exercises, and why they are needed anyway.
UNEXERCISED: dict[tuple[str, str, str], str] = {
    ("", "configmaps", "get"): "never sent: the operator grants it to SSH servers' agents "
    "(their user's keys), and RBAC lets a Role hold only what its maker holds",
    ("devservers.io", "devservers/finalizers", "update"): "OwnerReferencesPermissionEnforcement "
    "(OpenShift, some hardened clusters) checks it for children that block their owner's "
    "deletion; this control plane does not enable that plugin",
    ("devservers.io", "devusers/finalizers", "update"): "the same, for a user's objects",
}


@pytest.mark.last
def test_the_operator_used_exactly_the_rights_the_chart_gives_it(
    control_plane: LocalControlPlane,
) -> None:
    """After every other test: the operator ran the standalone, distributed, user, lifecycle
    and bastion flows with the chart's ServiceAccount. Nothing was refused (nothing missing),
    and each rule was used (nothing extra) or is listed in UNEXERCISED with its reason."""
    events = _requests_of(control_plane, OPERATOR)
    assert len(events) > 1000, "the operator ran under the chart's ServiceAccount"
    # refused by RBAC (not by admission: a write into a namespace being deleted is a 403 too)
    refused = [
        f"{e['verb']} {e.get('requestURI')}"
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert not refused, "\n".join(refused[:20])
    used: dict[tuple[str, str, str], int] = defaultdict(int)
    for e in events:
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery, /version
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        verb = e["verb"]
        if verb == "patch" and e.get("responseStatus", {}).get("code") == 201:
            verb = "create"  # a server-side apply that created: authorized as a create
        used[(ref.get("apiGroup", ""), resource, verb)] += 1
    rules = _chart_rules(control_plane, "devserver-operator")
    # `bind` is checked on the ClusterRoles named in a binding, never requested itself
    binds = {r for r in rules if r[2] == "bind"}
    # the operator's informers start with a streaming list, authorized as a watch; `list` is
    # what they fall back to where the API server refuses it
    fallback = {(group, resource, "list") for group, resource, verb in used if verb == "watch"}
    unused = rules - binds - set(used) - set(UNEXERCISED) - fallback
    assert not unused, f"rules no request used: {sorted(unused)}"
    print(  # noqa: T201 - the closing note's table
        "\noperator requests by (group, resource, verb):\n"
        + "\n".join(f"  {k}: {n}" for k, n in sorted(used.items()))
    )


@pytest.mark.last
def test_the_bastion_was_never_refused(control_plane: LocalControlPlane) -> None:
    events = _requests_of(control_plane, BASTION)
    refused = [
        e
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert not refused, refused[:3]
