"""Bytes from the API server into models, tolerant of the one object our model cannot read.

The CRDs come from the same models, so such an object should not exist; if one does, it must
cost nothing else: a page or a watch stream that failed whole would freeze a cache for good
(every relist failing the same way). It comes back as `Unreadable`, with the reason.
"""

from __future__ import annotations

import json
from typing import Any, Generic

from pydantic import BaseModel, ValidationError

from devserver.api.meta import EventType, KubeObject, ListMeta, ObjectList, ObjectT, Unreadable


class WatchEvent(BaseModel, Generic[ObjectT]):
    type: EventType
    object: ObjectT


def decode_event(line: bytes, model: type[WatchEvent[Any]]) -> WatchEvent[Any]:
    """One watch event. A BOOKMARK carries only a resourceVersion and an ERROR a Status, which
    a typed model (a DevServer needs its spec) rejects: those come back as plain KubeObjects.
    An object the model cannot read comes back as `Unreadable` (see `decode_item`)."""
    try:
        return model.model_validate_json(line)
    except ValidationError:
        raw = json.loads(line)
        loose = WatchEvent[KubeObject].model_validate(raw)
        if loose.type in (EventType.BOOKMARK, EventType.ERROR):
            return loose
        typed: type[KubeObject] = model.model_fields["object"].annotation  # type: ignore[assignment]
        obj = decode_item(raw.get("object") or {}, typed)
        return WatchEvent[Any](type=loose.type, object=obj)


def decode_list(data: bytes, model: type[ObjectT]) -> ObjectList[ObjectT]:
    """A page of objects; one the model cannot read never costs the others (it would freeze a
    cache for good: every relist would fail the same way)."""
    try:
        return ObjectList[model].model_validate_json(data)  # type: ignore[valid-type]
    except ValidationError:
        raw = json.loads(data)
    items: list[ObjectT] = []
    unreadable: list[Unreadable] = []
    for item in raw.get("items") or []:
        obj = decode_item(item, model)
        if isinstance(obj, Unreadable):
            unreadable.append(obj)
        else:
            items.append(obj)
    return ObjectList[model](  # type: ignore[valid-type]
        metadata=ListMeta.model_validate(raw.get("metadata") or {}),
        items=items,
        unreadable=unreadable,
    )


def decode_item(raw: dict[str, Any], model: type[ObjectT]) -> ObjectT | Unreadable:
    """One object: as the model reads it; else without its status (only the operator writes a
    status, and it writes a new one); else `Unreadable`, with the reason."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problem = _problem(error)
    if "status" in raw:
        try:
            return model.model_validate({k: v for k, v in raw.items() if k != "status"})
        except ValidationError:
            pass
    try:
        loose = KubeObject.model_validate(raw)
    except ValidationError:
        loose = KubeObject()
    return Unreadable(
        apiVersion=loose.api_version,
        kind=loose.kind,
        metadata=loose.metadata,
        problem=problem,
        status=raw.get("status"),
    )


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"
