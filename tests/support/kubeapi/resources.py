"""What the server serves: the resource table, Kubernetes `Status` errors, and small facts about objects."""

from __future__ import annotations

import datetime
import hashlib
import json

GPU = "nvidia.com/gpu"
LWS_GROUP = "leaderworkerset.x-k8s.io"
LWS_CRD = f"leaderworkersets.{LWS_GROUP}"
LWS_CONTROLLER_NAMESPACE = "lws-system"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
DEFAULT_TOKEN = "test-token"

# (group, version, plural) -> (kind, namespaced)
RESOURCES = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "nodes"): ("Node", False),
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "events"): ("Event", True),
    ("", "v1", "resourcequotas"): ("ResourceQuota", True),
    ("", "v1", "secrets"): ("Secret", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("scheduling.k8s.io", "v1", "priorityclasses"): ("PriorityClass", False),
    ("storage.k8s.io", "v1", "storageclasses"): ("StorageClass", False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): ("CustomResourceDefinition", False),
    (LWS_GROUP, "v1", "leaderworkersets"): ("LeaderWorkerSet", True),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"): ("SelfSubjectAccessReview", False),
}
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
FAILURE_REASONS = ("Unschedulable", "ImagePullBackOff", "ErrImagePull", "OOMKilled", "CrashLoopBackOff")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, message: str, *, reason: str | None = None, details: dict | None = None) -> dict:
    """A Kubernetes `Status` object, as the API server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "details": details or {},
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason=reason, details=details)


def quantity(value) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


def pod_gpus(spec: dict) -> int:
    total = 0
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        total += max(
            quantity((resources.get("requests") or {}).get(GPU)), quantity((resources.get("limits") or {}).get(GPU))
        )
    return total


def template_hash(template) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
