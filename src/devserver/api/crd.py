"""CustomResourceDefinitions generated from the pydantic models: the models are the truth.

pydantic's JSON Schema becomes a *structural* OpenAPI v3 schema: `$ref`s inlined, `anyOf [X,
null]` turned into `nullable`, titles dropped, descriptions kept (so `kubectl explain` helps),
conditions as a map-list keyed by type. What the apiserver can check itself is added as CEL.

`python -m devserver.manifests` writes the files (with the chart's copies); a unit test fails
when they drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from devserver.api.devserver import MAX_NAME_LENGTH, NAME_PATTERN, DevServerSpec, DevServerStatus
from devserver.api.flavor import GROUP, VERSION, DevServerFlavorSpec, DevServerFlavorStatus
from devserver.api.user import (
    MAX_USERNAME,
    RESERVED_USERNAMES,
    USERNAME_PATTERN,
    DevUserSpec,
    DevUserStatus,
)

_DROP = {"title"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline refs and rewrite pydantic's JSON Schema into Kubernetes' structural dialect."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: walk(v) for k, v in node.items() if k not in ("$ref", *_DROP)}
            return {**target, **extra}
        variants = node.get("anyOf")
        if variants is not None:
            real = [v for v in variants if v != {"type": "null"}]
            if len(real) == 1 and len(real) < len(variants):
                rest = {k: v for k, v in node.items() if k not in ("anyOf", *_DROP)}
                merged = {**walk(real[0]), **{k: walk(v) for k, v in rest.items()}}
                merged["nullable"] = True
                if merged.get("default", 0) is None:
                    del merged["default"]  # "default: null" is noise in a CRD
                return merged
        out = {k: walk(v) for k, v in node.items() if k not in ("$defs", *_DROP)}
        if out.get("type") == "array" and _is_conditions(out):
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = ["type"]
        if "const" in out:  # structural schemas have no const; a one-value enum says the same
            out["enum"] = [out.pop("const")]
        return out

    return walk(schema)  # type: ignore[no-any-return]


def _is_conditions(array: dict[str, Any]) -> bool:
    props = array.get("items", {}).get("properties", {})
    return {"type", "status", "lastTransitionTime"} <= set(props)


@dataclass(frozen=True)
class CrdSpec:
    kind: str
    short_name: str
    scope: str
    models: tuple[type[BaseModel], type[BaseModel]]  # spec, status
    description: str
    columns: list[dict[str, Any]]
    spec_rules: list[dict[str, Any]] = field(default_factory=list)
    root_rules: list[dict[str, Any]] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: ["devserver"])

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def plural(self) -> str:
        return self.kind.lower() + "s"


def crd(spec: CrdSpec) -> dict[str, Any]:
    spec_model, status_model = spec.models
    spec_schema = structural(spec_model.model_json_schema(by_alias=True))
    if spec.spec_rules:
        spec_schema["x-kubernetes-validations"] = spec.spec_rules
    status_schema = structural(status_model.model_json_schema(by_alias=True))
    root: dict[str, Any] = {
        "type": "object",
        "description": spec.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if spec.root_rules:
        root["x-kubernetes-validations"] = spec.root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{spec.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": spec.scope,
            "names": {
                "kind": spec.kind,
                "listKind": f"{spec.kind}List",
                "plural": spec.plural,
                "singular": spec.singular,
                "shortNames": [spec.short_name],
                "categories": spec.categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": spec.columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _column(name: str, kind: str, path: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


_AGE = _column("Age", "date", ".metadata.creationTimestamp")
_READY = _column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status')


DEVSERVER = CrdSpec(
    "DevServer",
    "devsrv",  # not `ds`: kubectl's short name for DaemonSets
    "Namespaced",
    (DevServerSpec, DevServerStatus),
    "A user's PyTorch development server (standalone or distributed).",
    columns=[
        _column("Flavor", "string", ".spec.flavor"),
        _column("Phase", "string", ".status.phase"),
        _READY,
        # a string: kubectl renders a future time of type date as <invalid>
        _column("Stops at", "string", ".status.expiresAt"),
        _AGE,
    ],
    spec_rules=[
        {
            "rule": "self.mode != 'distributed' || has(self.distributed)",
            "message": "mode distributed needs spec.distributed with worldSize >= 1",
        },
        {
            "rule": "!has(self.distributed) || !has(self.distributed.ncclSettings) || "
            "self.distributed.ncclSettings.all(k, k.startsWith('NCCL_'))",
            "message": "ncclSettings takes NCCL_* variables only, e.g. NCCL_DEBUG: INFO",
        },
        {
            "rule": "self.mode != 'distributed' || "
            "self.persistentHomeSize == oldSelf.persistentHomeSize",
            "message": "the home size of a distributed server is fixed when it is created (one "
            "volume per rank from the StatefulSet's template); create a new server for "
            "another size",
        },
        {
            "rule": "self.mode == oldSelf.mode",
            "message": "mode cannot change between standalone and distributed: their home "
            "volumes differ (<name>-home vs one per rank); create a new DevServer for the other "
            "mode (this one keeps its home volume)",
        },
    ],
    root_rules=[
        # checked when a server is created only (a name never changes): a server made before
        # a rule existed must stay writable, or stopping it would be refused
        {
            "rule": f"oldSelf.hasValue() || self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            "optionalOldSelf": True,
            "message": f"name must be at most {MAX_NAME_LENGTH} characters so the names of "
            "its volumes, pods and services fit Kubernetes' 63-character limit",
        },
        {
            "rule": f"oldSelf.hasValue() || self.metadata.name.matches('{NAME_PATTERN}')",
            "optionalOldSelf": True,
            "message": "name must start with a lower-case letter and hold only lower-case "
            "letters, digits and '-' (it becomes a Service and host name), e.g. my-dev",
        },
    ],
)

FLAVOR = CrdSpec(
    "DevServerFlavor",
    "dsf",
    "Cluster",
    (DevServerFlavorSpec, DevServerFlavorStatus),
    "A named hardware preset (resources, placement, price) for DevServers.",
    columns=[
        _column(name, kind, path)
        for name, kind, path in (
            ("GPUs", "string", ".spec.resources.limits.nvidia\\.com/gpu"),
            ("CPU", "string", ".spec.resources.limits.cpu"),
            ("Memory", "string", ".spec.resources.limits.memory"),
            ("Price/h", "number", ".spec.pricePerHour"),
            ("Valid", "boolean", ".status.valid"),
            ("In use", "integer", ".status.devServers"),
        )
    ]
    + [_AGE],
)

USER = CrdSpec(
    "DevUser",
    "du",
    "Cluster",
    (DevUserSpec, DevUserStatus),
    "A user of the platform; its name is the user name.",
    columns=[
        _column("Email", "string", ".spec.email"),
        _column("Team", "string", ".spec.team"),
        _column("Namespace", "string", ".status.namespace"),
        _READY,
        _AGE,
    ],
    root_rules=[
        {
            "rule": f"self.metadata.name.size() <= {MAX_USERNAME} && "
            f"self.metadata.name.matches('{USERNAME_PATTERN}')",
            "message": f"a user name is a lower-case letter followed by letters, digits or '-', "
            f"at most {MAX_USERNAME} characters (it becomes a Linux account and the namespace "
            "dev-<name>)",
        },
        {
            "rule": "!(self.metadata.name in " + str(list(RESERVED_USERNAMES)) + ")",
            "message": "that user name is reserved for the system; choose another",
        },
    ],
)

ALL = (DEVSERVER, FLAVOR, USER)


def render(spec: CrdSpec) -> str:
    header = "# Generated from src/devserver/api by `python -m devserver.manifests`; do not edit.\n"
    return header + str(yaml.safe_dump(crd(spec), sort_keys=False, width=100))


def file_name(spec: CrdSpec) -> str:
    return f"{GROUP}_{spec.plural}.yaml"
