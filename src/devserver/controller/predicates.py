"""Filters on notifications, applied before a key is enqueued."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devserver.informers.informer import Change, Notification

Predicate = Callable[[Notification[Any]], bool]


def generation_changed(note: Notification[Any]) -> bool:
    """Skip updates that did not change `metadata.generation` (status-only writes, resyncs).

    Adds and deletes always pass. Objects without a generation (ConfigMaps) never change it, so
    do not use this filter for them.
    """
    if note.change is not Change.UPDATED or note.old is None:
        return True
    return bool(note.old.metadata.generation != note.obj.metadata.generation)


def spec_or_annotations_changed(note: Notification[Any]) -> bool:
    """Like `generation_changed`, but annotation edits pass too (they carry lifecycle state)."""
    if generation_changed(note) or note.old is None:
        return True
    return bool(note.old.metadata.annotations != note.obj.metadata.annotations)
