"""Compare-then-write: touch the API server only when the live object lacks our intent.

Our intent is a partial object (what server-side apply would send). The live object has more:
defaults, other managers' fields, status. Intent is applied when every field we set is there
with our value (recursively; lists element by element). A converged object then costs no
request at all, not even a no-op apply. Cached list items carry no apiVersion/kind, so those
two are never compared.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from typing import Any

from devserver.api.meta import KubeObject, ObjectKey, as_cached
from devserver.api.resources import Resource
from devserver.client import ApiError, KubeClient, PatchType
from devserver.controller.reconciler import TerminalError


def is_applied(intent: Any, live: Any) -> bool:
    if isinstance(intent, dict):
        return isinstance(live, dict) and all(
            key in live and is_applied(value, live[key]) for key, value in intent.items()
        )
    if isinstance(intent, list):
        return (
            isinstance(live, list)
            and len(intent) == len(live)
            and all(is_applied(a, b) for a, b in zip(intent, live, strict=True))
        )
    return bool(intent == live)


@cache
def _modelled(model: type[KubeObject]) -> dict[str, str]:
    """A model's fields by the name they have in JSON."""
    fields = model.model_fields.items()
    return {field.serialization_alias or field.alias or name: name for name, field in fields}


def live_fields(live: KubeObject, keys: Collection[str]) -> dict[str, Any]:
    """What `live` holds under `keys` (top-level JSON names), as JSON. Only modelled fields
    (metadata) are dumped; the rest are extras, kept as their JSON was decoded (a Deployment's
    spec: dumping it again was most of a comparison's cost). The extras are the cached
    object's own: read them, never change them."""
    modelled = _modelled(type(live))
    fields = {modelled[key] for key in keys if key in modelled}
    found = live.model_dump(by_alias=True, mode="json", include=fields) if fields else {}
    extra = live.extra
    found.update((key, extra[key]) for key in keys if key not in modelled and key in extra)
    return found


async def apply_if_changed(
    client: KubeClient,
    resource: Resource[Any],
    intent: dict[str, Any],
    live: KubeObject | None,
    *,
    field_manager: str,
) -> KubeObject | None:
    """Server-side apply `intent` unless `live` (from the cache) already has it; the object as
    the API server answered, if sent (`OwnWrites` keeps its version).

    A 400/403/422 means the server refuses this intent as it is: retrying cannot help, so it
    becomes a TerminalError (counted, not retried; the next change of the object retries).
    """
    fields = {k: v for k, v in intent.items() if k not in ("apiVersion", "kind")}
    if live is not None:  # `live` is the cache's: compared as the cache holds it
        compared = as_cached(fields, resource.cache_keeps)
        if is_applied(compared, live_fields(live, compared)):
            return None
    try:
        applied: KubeObject = await client.apply(resource, intent, field_manager=field_manager)
    except ApiError as error:
        if error.status in (400, 403, 422):
            raise TerminalError(
                f"{resource.kind} {intent['metadata']['name']}: {error.message}"
            ) from error
        raise
    return applied


async def write_status_if_changed(
    client: KubeClient,
    resource: Resource[Any],
    key: ObjectKey,
    desired: dict[str, Any],
    current: dict[str, Any],
) -> bool:
    """Merge-patch the status subresource when it differs; fields we dropped are cleared, at
    any depth (a merge patch keeps every key it does not mention)."""
    if desired == current:
        return False
    await client.patch(
        resource,
        key.name,
        {"status": merge_patch(current, desired)},
        key.namespace,
        subresource="status",
        patch_type=PatchType.MERGE,
    )
    return True


def merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `current` into `desired`: objects are diffed key
    by key with removed keys set to null; anything else is replaced whole."""
    patch: dict[str, Any] = {k: None for k in current if k not in desired}
    for k, value in desired.items():
        before = current.get(k)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_patch(before, value)
            if inner:
                patch[k] = inner
        elif value != before or k not in current:
            patch[k] = value
    return patch
