"""Merge patches and server-side apply: how an update combines with the stored object."""

from __future__ import annotations

import copy


def merge_patch(target: dict, patch: dict) -> None:
    """JSON merge patch semantics (RFC 7386): maps merge, None deletes, everything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def prune_applied(target: dict, previous: dict, current: dict) -> None:
    """Server-side apply removes fields a manager applied before and no longer applies."""
    for key, old in previous.items():
        if key not in current:
            target.pop(key, None)
        elif isinstance(old, dict) and isinstance(current[key], dict) and isinstance(target.get(key), dict):
            prune_applied(target[key], old, current[key])


def comparable(obj: dict) -> dict:
    clean = copy.deepcopy(obj)
    meta = clean.get("metadata") or {}
    for key in ("resourceVersion", "managedFields", "generation"):
        meta.pop(key, None)
    return clean
