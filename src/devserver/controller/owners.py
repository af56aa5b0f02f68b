"""Map a child object to the owners to reconcile, from its ownerReferences.

Matches by API group and kind (any version), the controller owner only unless asked otherwise.
Owners of a namespaced child live in its namespace unless the owner kind is cluster-scoped.
"""

from __future__ import annotations

from devserver.api.meta import KubeObject, ObjectKey


def owner_keys(
    obj: KubeObject,
    *,
    group: str,
    kind: str,
    owner_namespaced: bool = True,
    controller_only: bool = True,
) -> list[ObjectKey]:
    namespace = obj.metadata.namespace if owner_namespaced else ""
    return [
        ObjectKey(namespace, ref.name)
        for ref in obj.metadata.owner_references
        if ref.kind == kind and ref.group == group and (ref.controller or not controller_only)
    ]
