"""The generated manifests on disk (for kubectl and in the Helm chart) are what the code makes."""

from __future__ import annotations

from pathlib import Path

import yaml

from devserver import manifests
from devserver.api import crd

REPO = Path(__file__).resolve().parents[2]


def test_generated_manifests_match_the_code() -> None:
    stale = [
        str(path)
        for path, text in (manifests.generated() | manifests.copied(REPO)).items()
        if not (REPO / path).is_file() or (REPO / path).read_text() != text
    ]
    assert not stale, f"stale: {', '.join(stale)}; run `python -m devserver.manifests`"


def test_short_names_shadow_no_built_in_resource() -> None:
    """kubectl resolves a built-in's short name first: `ds` meant DaemonSets (with a warning)."""
    built_in = {
        "cm", "cs", "csr", "crd", "crds", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits",
        "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa",
        "sc", "sts", "svc",
    }  # fmt: skip
    for spec in crd.ALL:
        assert spec.short_name not in built_in, spec.kind


def test_no_printer_column_of_a_future_time_is_a_date() -> None:
    """kubectl prints a `date` column in the future as <invalid>."""
    for spec in crd.ALL:
        for column in spec.columns:
            if column["type"] == "date":
                assert column["jsonPath"] == ".metadata.creationTimestamp", column


def test_user_roles_are_cluster_roles_the_operator_binds() -> None:
    roles = list(yaml.safe_load_all((REPO / "charts/devserver/files/user-roles.yaml").read_text()))
    assert {r["metadata"]["name"] for r in roles} == set(manifests.BOUND_ROLES)
