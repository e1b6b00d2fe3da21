"""The object store: every object by (group, version, plural) and (namespace, name), with resource versions."""

from __future__ import annotations

import itertools
import threading
import uuid

from .resources import LWS_CRD, RESOURCES, now


class ObjectStore:
    """Objects as the API returns them; every method expects `lock` to be held by the caller."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._store: dict[tuple, dict[tuple[str, str], dict]] = {key: {} for key in RESOURCES}
        self._applied: dict[tuple, dict] = {}  # (resource, object, field manager) -> what that manager last applied
        self._rv = itertools.count(1000)

    def _put(self, key: tuple, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(next(self._rv))
        self._store[key][(meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def _ensure_namespace(self, namespace: str) -> None:
        if (("", namespace)) not in self._store[("", "v1", "namespaces")]:
            self._put(
                ("", "v1", "namespaces"),
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace},
                    "status": {"phase": "Active"},
                },
            )

    def _lws_installed(self) -> bool:
        return ("", LWS_CRD) in self._store[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
