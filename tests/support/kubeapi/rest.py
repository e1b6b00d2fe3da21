"""The REST verbs: discovery, get, list, create, replace, merge patch, server-side apply, scale and delete."""

from __future__ import annotations

import copy
import json
from urllib.parse import unquote

import yaml

from .patching import comparable, merge_patch, prune_applied
from .pods import PodSimulation
from .resources import LWS_GROUP, RESOURCES, ApiError, now, status_body
from .selectors import field_match, label_match


class RestApi(PodSimulation):
    """Answers one API request at a time, under the lock, with the simulation advanced before and after."""

    def __init__(self, *, git_version: str, **simulation) -> None:
        super().__init__(**simulation)
        self.git_version = git_version
        self.denied: set[str] = set()

    def handle(self, method: str, path: str, query: dict, content_type: str | None, body: bytes) -> tuple[int, dict]:
        with self.lock:
            self._tick()
            code, answer = self._route(method, path, query, content_type, body)
            self._tick()
            return code, copy.deepcopy(answer)

    def _parse(self, path: str):
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        namespace = None
        if rest and rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return group, version, None, None, None, None
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, "/".join(rest[2:]) or None
        key = (group, version, plural)
        if key not in RESOURCES or (group == LWS_GROUP and not self._lws_installed()):
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        return group, version, namespace, plural, name, sub

    def _discovery(self, group: str, version: str) -> dict:
        if group == LWS_GROUP and not self._lws_installed():
            raise ApiError(404, "the server could not find the requested resource")
        resources = [
            {
                "name": plural,
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "list", "create", "patch", "delete"],
            }
            for (g, v, plural), (kind, namespaced) in RESOURCES.items()
            if g == group and v == version
        ]
        if not resources:
            raise ApiError(404, "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _route(self, method: str, path: str, query: dict, content_type: str | None, body: bytes) -> tuple[int, dict]:
        if path == "/version":
            minor = self.git_version.lstrip("v").split(".")[1]
            return 200, {"major": "1", "minor": minor, "gitVersion": self.git_version, "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = sorted({g for g, _, _ in RESOURCES if g and (g != LWS_GROUP or self._lws_installed())})
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
                    }
                    for g in groups
                ],
            }
        group, version, namespace, plural, name, sub = self._parse(path)
        if plural is None:
            if method != "GET":
                raise ApiError(405, "method not allowed")
            return 200, self._discovery(group, version)
        key = (group, version, plural)
        kind, namespaced = RESOURCES[key]
        if plural == "selfsubjectaccessreviews":
            if method != "POST":
                raise ApiError(405, "selfsubjectaccessreviews only support create")
            return 201, self._review(json.loads(body or b"{}"))
        if method == "GET" and name is None:
            return 200, self._list(key, kind, namespace if namespaced else None, query)
        if name is None:
            if method == "POST":
                obj = json.loads(body or b"{}")
                return 201, self._create(key, kind, namespace, obj)
            raise ApiError(405, "method not allowed")
        store_key = (namespace or "", name) if namespaced else ("", name)
        existing = self._store[key].get(store_key)
        if method == "GET":
            if existing is None:
                raise self._not_found(plural, group, name)
            if sub == "scale":
                return 200, self._scale_view(existing)
            return 200, existing
        if method == "DELETE":
            if existing is None:
                raise self._not_found(plural, group, name)
            return 200, self._delete(key, kind, store_key, existing)
        if method == "PATCH":
            return self._patch(
                key, kind, namespace if namespaced else None, name, sub, existing, query, content_type, body
            )
        if method == "PUT":
            if existing is None:
                raise self._not_found(plural, group, name)
            obj = json.loads(body or b"{}")
            obj.setdefault("metadata", {}).update({k: existing["metadata"][k] for k in ("uid", "creationTimestamp")})
            self._put(key, obj)
            self._after_change(kind, obj)
            return 200, obj
        raise ApiError(405, "method not allowed")

    def _not_found(self, plural: str, group: str, name: str) -> ApiError:
        resource = f"{plural}.{group}" if group else plural
        return ApiError(404, f'{resource} "{name}" not found', details={"name": name, "group": group, "kind": plural})

    def _list(self, key: tuple, kind: str, namespace: str | None, query: dict) -> dict:
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        items = [
            obj
            for (ns, _), obj in sorted(self._store[key].items())
            if (namespace is None or ns == namespace)
            and label_match(labels, obj["metadata"].get("labels") or {})
            and field_match(fields, obj)
        ]
        group, version, _ = key
        return {
            "kind": f"{kind}List",
            "apiVersion": f"{group}/{version}" if group else version,
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    def _review(self, review: dict) -> dict:
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        resource = attributes.get("resource", "") + (
            f"/{attributes['subresource']}" if attributes.get("subresource") else ""
        )
        denied = f"{attributes.get('verb')} {resource}" in self.denied
        review["status"] = {"allowed": not denied}
        if denied:
            review["status"]["reason"] = "no RBAC policy matched"
        return review

    def _create(self, key: tuple, kind: str, namespace: str | None, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        if (meta.get("namespace", ""), meta.get("name")) in self._store[key]:
            raise ApiError(409, f'{key[2]} "{meta.get("name")}" already exists', reason="AlreadyExists")
        meta["generation"] = 1
        self._put(key, obj)
        self._after_change(kind, obj)
        return obj

    def _validate(self, kind: str, obj: dict, name: str) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") != name:
            raise ApiError(
                400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if obj.get("kind") != kind:
            raise ApiError(400, f"the kind of the object ({obj.get('kind')}) does not match the URL ({kind})")
        if kind == "Deployment":
            spec = obj.get("spec") or {}
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                raise ApiError(
                    422,
                    f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: Invalid value: '
                    f"{json.dumps(labels)}: `selector` does not match template `labels`",
                )
            if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
                raise ApiError(
                    422, f'Deployment.apps "{name}" is invalid: spec.template.spec.containers: Required value'
                )

    def _patch(self, key, kind, namespace, name, sub, existing, query, content_type, body) -> tuple[int, dict]:
        content_type = (content_type or "").split(";")[0].strip()
        if sub == "scale":
            if existing is None:
                raise self._not_found(key[2], key[0], name)
            patch = json.loads(body or b"{}")
            replicas = (patch.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value')
            if existing["spec"].get("replicas") != replicas:
                existing["spec"]["replicas"] = replicas
                existing["metadata"]["generation"] = existing["metadata"].get("generation", 1) + 1
                self._put(key, existing)
                self._after_change(kind, existing)
            return 200, self._scale_view(existing)
        if content_type == "application/apply-patch+yaml":
            manager = query.get("fieldManager")
            if not manager:
                raise ApiError(400, "PATCH /apply requires fieldManager to be set")
            try:
                applied = json.loads(body or b"{}")  # JSON is YAML and parses a hundred times faster
            except ValueError:
                applied = yaml.safe_load(body) or {}
            self._validate(kind, applied, name)
            if namespace:
                applied.setdefault("metadata", {})["namespace"] = namespace
            return self._apply(key, kind, namespace, name, existing, applied, manager)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if existing is None:
                raise self._not_found(key[2], key[0], name)
            updated = copy.deepcopy(existing)
            merge_patch(updated, json.loads(body or b"{}"))
            if comparable(updated) != comparable(existing):
                if updated.get("spec") != existing.get("spec"):
                    updated["metadata"]["generation"] = existing["metadata"].get("generation", 1) + 1
                self._put(key, updated)
                self._after_change(kind, updated)
            return 200, updated
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml "
            f"(got {content_type or 'none'})",
        )

    def _apply(self, key, kind, namespace, name, existing, applied, manager) -> tuple[int, dict]:
        store_key = (namespace or "", name)
        managed = [
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": applied.get("apiVersion"),
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
        ]
        if existing is None:
            obj = copy.deepcopy(applied)
            obj["metadata"]["generation"] = 1
            obj["metadata"]["managedFields"] = managed
            if kind == "Namespace":
                obj["status"] = {"phase": "Active"}
            self._put(key, obj)
            self._applied[(key, store_key, manager)] = copy.deepcopy(applied)
            self._after_change(kind, obj)
            return 201, obj
        updated = copy.deepcopy(existing)
        previous = self._applied.get((key, store_key, manager))
        if previous:
            prune_applied(updated, previous, applied)
        merge_patch(updated, applied)
        self._applied[(key, store_key, manager)] = copy.deepcopy(applied)
        managers = [m for m in existing["metadata"].get("managedFields") or [] if m.get("manager") != manager]
        if comparable(updated) == comparable(existing):
            if len(managers) == len(existing["metadata"].get("managedFields") or []):
                existing["metadata"]["managedFields"] = managers + managed
            return 200, existing
        if updated.get("spec") != existing.get("spec"):
            updated["metadata"]["generation"] = existing["metadata"].get("generation", 1) + 1
        updated["metadata"]["managedFields"] = managers + managed
        self._put(key, updated)
        self._after_change(kind, updated)
        return 200, updated

    def _scale_view(self, obj: dict) -> dict:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)},
        }

    def _after_change(self, kind: str, obj: dict) -> None:
        if obj["metadata"].get("namespace"):
            self._ensure_namespace(obj["metadata"]["namespace"])
        if kind in ("Deployment", "LeaderWorkerSet"):
            self._dirty.add((obj["metadata"]["namespace"], kind, obj["metadata"]["name"]))
        if kind == "Deployment":
            self._reconcile_deployment(obj)
        elif kind == "LeaderWorkerSet":
            self._reconcile_lws(obj)

    def _delete(self, key, kind, store_key, existing) -> dict:
        self._store[key].pop(store_key, None)
        for manager_key in [k for k in self._applied if k[0] == key and k[1] == store_key]:
            self._applied.pop(manager_key)
        namespace, name = store_key
        if kind in ("Deployment", "LeaderWorkerSet"):
            for sim in self._owned(namespace, kind, name):
                self._terminate(sim)
        elif kind == "Pod":
            sim = self._pods.get(store_key)
            if sim:
                self._terminate(sim)
        elif kind == "Namespace":
            for other, (_other_kind, namespaced) in RESOURCES.items():
                if namespaced:
                    for item_key in [k for k in self._store[other] if k[0] == name]:
                        self._store[other].pop(item_key)
            for sim_key in [k for k in self._pods if k[0] == name]:
                self._drop_pod(sim_key)
        return status_body(200, "", details={"name": name, "kind": key[2], "uid": existing["metadata"].get("uid")})
