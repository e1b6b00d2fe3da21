"""An in-memory Kubernetes API server that speaks real HTTP, for tests.

The official `kubernetes` client talks to it through an ordinary kubeconfig. It keeps objects in memory, runs a
tiny Deployment/LeaderWorkerSet "controller" and "scheduler" so pods appear, get GPUs on nodes and become Ready,
and forwards the pod proxy to upstream HTTP servers a test chooses. Tests steer it with Python methods:
`fail_next`, `delay`, `set_pod_failure`, `mark_running`, `mark_ready`, `set_rbac`, `set_tokens`, ...
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hashlib
import http.client
import itertools
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GPU = "nvidia.com/gpu"
LWS_GROUP = "leaderworkerset.x-k8s.io"
LWS_CRD = f"leaderworkersets.{LWS_GROUP}"
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
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}
FAILURE_REASONS = ("Unschedulable", "ImagePullBackOff", "ErrImagePull", "OOMKilled", "CrashLoopBackOff")


def _now() -> str:
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


# ------------------------------------------------------------------------------------------ selectors and merging


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_match(selector: str, labels: dict) -> bool:
    for term in _split_top(selector or ""):
        found = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if found:
            key, op, values = found.group(1), found.group(2), {v.strip() for v in found.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _dig(obj: dict, dotted: str):
    current = obj
    for part in dotted.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    return "" if current is None else str(current)


def field_match(selector: str, obj: dict) -> bool:
    for term in _split_top(selector or ""):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _dig(obj, key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if _dig(obj, key.strip()) != value.strip():
                return False
    return True


def _merge(target: dict, patch: dict) -> None:
    """JSON merge patch semantics (RFC 7386): maps merge, None deletes, everything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _prune(target: dict, previous: dict, current: dict) -> None:
    """Server-side apply removes fields a manager applied before and no longer applies."""
    for key, old in previous.items():
        if key not in current:
            target.pop(key, None)
        elif isinstance(old, dict) and isinstance(current[key], dict) and isinstance(target.get(key), dict):
            _prune(target[key], old, current[key])


def _comparable(obj: dict) -> dict:
    clean = copy.deepcopy(obj)
    meta = clean.get("metadata") or {}
    for key in ("resourceVersion", "managedFields", "generation"):
        meta.pop(key, None)
    return clean


def _quantity(value) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


def pod_gpus(spec: dict) -> int:
    total = 0
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        total += max(
            _quantity((resources.get("requests") or {}).get(GPU)), _quantity((resources.get("limits") or {}).get(GPU))
        )
    return total


def _template_hash(template) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------------ certificates


def make_certificate(*, expired: bool = False, hostname: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """A self-signed CA certificate for 127.0.0.1/localhost (already expired when asked) and its key, as PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        not_before, not_after = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeapi-test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(hostname)), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ------------------------------------------------------------------------------------------------------ the state


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict
    content_type: str | None


@dataclass
class _FailRule:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    message: str | None


@dataclass
class _DelayRule:
    method: str
    pattern: re.Pattern
    seconds: float
    times: int | None


@dataclass
class _PodSim:
    namespace: str
    name: str
    owner_kind: str | None
    owner_name: str | None
    created: float
    template_hash: str | None = None
    group: int | None = None
    forced: str | None = None  # "running" | "ready" from mark_running/mark_ready
    terminating_since: float | None = None
    external: bool = False  # added with add_pod: status is set by the test, not simulated
    unschedulable: str | None = None
    rendered: tuple | None = None  # what the last rendering was based on; unchanged inputs skip re-rendering
    events_sent: set = field(default_factory=set)


class KubeApiServer:
    """The state and the test controls; `run_kube_api()` wraps it in a running HTTP(S) server."""

    def __init__(
        self,
        *,
        nodes: list[dict] | None = None,
        lws: bool = True,
        default_storage_class: bool = True,
        priority_classes: tuple[str, ...] = (),
        tokens: tuple[str, ...] = (DEFAULT_TOKEN,),
        start_after: float | None = 0.0,
        ready_after: float | None = None,
        terminate_after: float = 0.0,
        git_version: str = "v1.33.1",
    ):
        self.lock = threading.RLock()
        self.url = ""
        self.ca_pem: bytes | None = None
        self.git_version = git_version
        self.tokens = set(tokens)
        self.start_after = start_after
        self.ready_after = ready_after
        self.terminate_after = terminate_after
        self.request_log: list[LoggedRequest] = []
        self.denied: set[str] = set()
        self._store: dict[tuple, dict[tuple[str, str], dict]] = {key: {} for key in RESOURCES}
        self._applied: dict[tuple, dict] = {}
        self._pods: dict[tuple[str, str], _PodSim] = {}
        # (namespace, kind, workload) -> pod keys, and the workloads whose status needs recomputing.
        self._by_owner: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        self._world = 0  # bumped whenever something a pod's rendering depends on changes (nodes, failures, marks)
        self._failures: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._upstreams: dict[tuple[str, str], str] = {}
        self._fail_rules: list[_FailRule] = []
        self._delay_rules: list[_DelayRule] = []
        self._rv = itertools.count(1000)
        self._ips = itertools.count(2)
        for node in [{"name": "gpu-node-0"}, {"name": "gpu-node-1"}] if nodes is None else nodes:
            self.add_node(**node)
        if lws:
            self.install_lws()
        if default_storage_class:
            self.add_storage_class("standard", default=True)
        for name in priority_classes:
            self.add_priority_class(name)

    # ------------------------------------------------------------------------------------------- test controls

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 8,
        product: str | None = "NVIDIA-H100-80GB-HBM3",
        memory_mb: int | None = 81559,
        ready: bool = True,
        unschedulable: bool = False,
        taints: list[dict] | None = None,
        allocatable: int | None = None,
        labels: dict | None = None,
    ) -> dict:
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
        capacity = {"cpu": "96", "memory": "1056Gi", "pods": "110"}
        if gpus:
            capacity[GPU] = str(gpus)
            node_labels["nvidia.com/gpu.count"] = str(gpus)
            if product:
                node_labels["nvidia.com/gpu.product"] = product
            if memory_mb:
                node_labels["nvidia.com/gpu.memory"] = str(memory_mb)
        alloc = dict(capacity)
        if gpus:
            alloc[GPU] = str(gpus if allocatable is None else allocatable)
        spec = {
            "taints": taints
            if taints is not None
            else ([{"key": GPU, "value": "present", "effect": "NoSchedule"}] if gpus else [])
        }
        if unschedulable:
            spec["unschedulable"] = True
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": spec,
            "status": {
                "capacity": capacity,
                "allocatable": alloc,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"192.168.0.{len(self._store[('', 'v1', 'nodes')]) + 10}"}
                ],
            },
        }
        with self.lock:
            self._world += 1
            return self._put(("", "v1", "nodes"), node)

    def add_pod(
        self, namespace: str, name: str, *, node: str, gpus: int = 0, phase: str = "Running", labels: dict | None = None
    ) -> dict:
        """A pod that is not the platform's (e.g. another team's training job holding GPUs)."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "main", "image": "busybox", "resources": {"limits": {GPU: str(gpus)}} if gpus else {}}
                ],
            },
            "status": {"phase": phase},
        }
        with self.lock:
            self._ensure_namespace(namespace)
            self._pods[(namespace, name)] = _PodSim(namespace, name, None, None, time.monotonic(), external=True)
            self._world += 1
            return self._put(("", "v1", "pods"), pod)

    def install_lws(self) -> None:
        with self.lock:
            self._put(
                ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": LWS_CRD},
                    "spec": {
                        "group": LWS_GROUP,
                        "scope": "Namespaced",
                        "names": {"plural": "leaderworkersets", "kind": "LeaderWorkerSet"},
                        "versions": [
                            {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}, "scale": {}}}
                        ],
                    },
                },
            )

    def add_storage_class(self, name: str, *, default: bool = False) -> None:
        annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
        with self.lock:
            self._put(
                ("storage.k8s.io", "v1", "storageclasses"),
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": name, "annotations": annotations},
                    "provisioner": "rancher.io/local-path",
                },
            )

    def add_priority_class(self, name: str, value: int = 100000) -> None:
        with self.lock:
            self._put(
                ("scheduling.k8s.io", "v1", "priorityclasses"),
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                },
            )

    def set_tokens(self, *tokens: str) -> None:
        """Only these bearer tokens are accepted from now on."""
        with self.lock:
            self.tokens = set(tokens)

    set_token = set_tokens

    def set_rbac(self, *, denied: set[str] | list[str] = ()) -> None:
        """SelfSubjectAccessReviews deny these "verb resource[/subresource]" pairs, e.g. "get pods/proxy"."""
        with self.lock:
            self.denied = set(denied)

    def fail_next(self, method: str, path_regex: str, status: int, times: int = 1, message: str | None = None) -> None:
        """The next `times` matching requests get `status` with a Kubernetes Status body; method "*" matches any."""
        with self.lock:
            self._fail_rules.append(_FailRule(method.upper(), re.compile(path_regex), status, times, message))

    def delay(self, path_regex: str, seconds: float, *, method: str = "*", times: int | None = None) -> None:
        """Matching requests wait `seconds` before being answered (all of them unless `times`)."""
        with self.lock:
            self._delay_rules.append(_DelayRule(method.upper(), re.compile(path_regex), seconds, times))

    def set_pod_failure(self, namespace: str, name: str, reason: str, message: str | None = None) -> None:
        """Every pod of workload `name` (now and later) fails the way Kubernetes shows `reason`, and an Event is recorded."""  # noqa: E501
        if reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {FAILURE_REASONS}")
        with self.lock:
            self._failures[(namespace, name)] = (reason, message)
            self._tick()

    def clear_pod_failure(self, namespace: str, name: str) -> None:
        with self.lock:
            self._failures.pop((namespace, name), None)
            self._tick()

    def mark_running(self, namespace: str, name: str, n: int | None = None) -> int:
        """Start the containers (not yet Ready) of up to n pods (n groups for a LeaderWorkerSet) of workload `name`."""
        return self._force(namespace, name, "running", n)

    def mark_ready(self, namespace: str, name: str, n: int | None = None) -> int:
        """Make up to n pods (n groups for a LeaderWorkerSet) of workload `name` Ready; returns how many changed."""
        return self._force(namespace, name, "ready", n)

    def set_auto(self, *, start_after: float | None = 0.0, ready_after: float | None = None) -> None:
        """Pods start their containers `start_after` s and turn Ready `ready_after` s after creation (None: never)."""
        with self.lock:
            self.start_after, self.ready_after = start_after, ready_after

    def set_pod_upstream(self, namespace: str, name: str, url: str) -> None:
        """Pod-proxy requests to pod `name` (or to any pod of workload `name`) go to this HTTP base URL."""
        with self.lock:
            self._upstreams[(namespace, name)] = url.rstrip("/")

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [
                r
                for r in self.request_log
                if (method is None or r.method == method.upper())
                and (path_regex is None or re.search(path_regex, r.path))
            ]

    def reset_log(self) -> None:
        with self.lock:
            self.request_log.clear()

    def get(
        self, plural: str, namespace: str | None, name: str, *, group: str = "", version: str = "v1"
    ) -> dict | None:
        with self.lock:
            self._tick()
            found = self._store[(group, version, plural)].get((namespace or "", name))
            return copy.deepcopy(found) if found else None

    def pods(self, namespace: str, workload: str | None = None) -> list[dict]:
        with self.lock:
            self._tick()
            return [
                copy.deepcopy(p)
                for (ns, _), p in sorted(self._store[("", "v1", "pods")].items())
                if ns == namespace and (workload is None or self._owner_of(p) == workload)
            ]

    def kubeconfig(
        self,
        token: str = DEFAULT_TOKEN,
        context: str = "maas-test",
        *,
        user: str = "maas",
        ca: bool = True,
        server: str | None = None,
    ) -> str:
        """A kubeconfig (YAML text) for this server with a bearer-token user."""
        cluster = {"server": server or self.url}
        if self.ca_pem and ca:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test-cluster", "cluster": cluster}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": context, "context": {"cluster": "test-cluster", "user": user}}],
                "current-context": context,
            }
        )

    # --------------------------------------------------------------------------------------------- the store

    def _put(self, key: tuple, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
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

    def _owner_of(self, pod: dict) -> str | None:
        sim = self._pods.get((pod["metadata"].get("namespace", ""), pod["metadata"]["name"]))
        return sim.owner_name if sim else None

    def _lws_installed(self) -> bool:
        return ("", LWS_CRD) in self._store[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]

    def _force(self, namespace: str, name: str, state: str, n: int | None) -> int:
        with self.lock:
            self._tick()
            sims = sorted(
                (
                    s
                    for kind in ("Deployment", "LeaderWorkerSet")
                    for s in self._owned(namespace, kind, name)
                    if s.terminating_since is None
                ),
                key=lambda s: (s.created, s.name),
            )
            rank = {"running": 1, "ready": 2}
            changed = 0
            if any(s.group is not None for s in sims):
                groups: dict[int, list[_PodSim]] = {}
                for sim in sims:
                    groups.setdefault(sim.group, []).append(sim)
                units = [groups[g] for g in sorted(groups)]
            else:
                units = [[s] for s in sims]
            for unit in units:
                if n is not None and changed >= n:
                    break
                if all(rank.get(s.forced or "", 0) >= rank[state] for s in unit):
                    continue
                for sim in unit:
                    sim.forced = state
                changed += 1
            self._world += 1
            self._tick()
            return changed

    # ----------------------------------------------------------------------------------- controller/scheduler

    def _node_free(self) -> dict[str, int]:
        free = {}
        for (_, name), node in self._store[("", "v1", "nodes")].items():
            free[name] = _quantity(node["status"]["allocatable"].get(GPU))
        for pod in self._store[("", "v1", "pods")].values():
            node_name = pod["spec"].get("nodeName")
            if node_name in free and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                free[node_name] -= pod_gpus(pod["spec"])
        return free

    def _schedule(self, sim: _PodSim, pod: dict, free: dict[str, int]) -> str | None:
        """Place a pod on a node with enough free GPUs that matches its nodeSelector; None with the reason recorded."""
        nodes = self._store[("", "v1", "nodes")]
        wanted = pod_gpus(pod["spec"])
        selector = pod["spec"].get("nodeSelector") or {}
        tolerated = {t.get("key") for t in pod["spec"].get("tolerations") or []}
        insufficient = mismatch = tainted = not_ready = 0
        for (_, name), node in sorted(nodes.items()):
            labels = node["metadata"].get("labels") or {}
            if node["spec"].get("unschedulable") or not any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
            ):
                not_ready += 1
            elif any(labels.get(k) != v for k, v in selector.items()):
                mismatch += 1
            elif any(
                t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in tolerated
                for t in node["spec"].get("taints") or []
            ):
                tainted += 1
            elif free[name] < wanted:
                insufficient += 1
            else:
                free[name] -= wanted
                return name
        parts = []
        if insufficient:
            parts.append(f"{insufficient} Insufficient {GPU}")
        if mismatch:
            parts.append(f"{mismatch} node(s) didn't match Pod's node affinity/selector")
        if tainted:
            parts.append(f"{tainted} node(s) had untolerated taint")
        if not_ready:
            parts.append(f"{not_ready} node(s) were unschedulable or not ready")
        sim.unschedulable = (
            f"0/{len(nodes)} nodes are available: {', '.join(parts) or 'no nodes'}. "
            "preemption: 0/{0} nodes are available: {0} No preemption victims found for incoming pod.".format(
                len(nodes)
            )
        )
        return None

    def _new_pod(
        self,
        namespace: str,
        name: str,
        owner_kind: str,
        owner_name: str,
        template: dict,
        thash: str,
        extra_labels: dict,
        group: int | None,
    ) -> None:
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), **extra_labels}
        owner = (
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{owner_name}-{thash}",
                "controller": True,
                "uid": str(uuid.uuid4()),
            }
            if owner_kind == "Deployment"
            else {
                "apiVersion": f"{LWS_GROUP}/v1",
                "kind": "LeaderWorkerSet",
                "name": owner_name,
                "controller": True,
                "uid": str(uuid.uuid4()),
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [owner],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending"},
        }
        self._pods[(namespace, name)] = _PodSim(namespace, name, owner_kind, owner_name, time.monotonic(), thash, group)
        self._by_owner.setdefault((namespace, owner_kind, owner_name), set()).add((namespace, name))
        self._dirty.add((namespace, owner_kind, owner_name))
        self._put(("", "v1", "pods"), pod)

    def _terminate(self, sim: _PodSim) -> None:
        if sim.terminating_since is None:
            sim.terminating_since = time.monotonic()
            pod = self._store[("", "v1", "pods")].get((sim.namespace, sim.name))
            if pod:
                pod["metadata"]["deletionTimestamp"] = _now()
        self._world += 1
        if sim.owner_name:
            self._dirty.add((sim.namespace, sim.owner_kind, sim.owner_name))
        if self.terminate_after <= 0:
            self._drop_pod((sim.namespace, sim.name))

    def _drop_pod(self, key: tuple[str, str]) -> None:
        self._store[("", "v1", "pods")].pop(key, None)
        sim = self._pods.pop(key, None)
        if sim and sim.owner_name:
            owner = (sim.namespace, sim.owner_kind, sim.owner_name)
            self._by_owner.get(owner, set()).discard(key)
            self._dirty.add(owner)
        self._world += 1

    def _owned(self, namespace: str, kind: str, name: str) -> list[_PodSim]:
        keys = self._by_owner.get((namespace, kind, name), set())
        return [self._pods[k] for k in keys if k in self._pods]

    def _reconcile_deployment(self, dep: dict) -> None:
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        thash = _template_hash(dep["spec"].get("template"))
        mine = [s for s in self._owned(namespace, "Deployment", name) if s.terminating_since is None]
        for sim in mine:
            if sim.template_hash != thash:
                self._terminate(sim)
        current = sorted((s for s in mine if s.template_hash == thash), key=lambda s: (s.created, s.name))
        want = dep["spec"].get("replicas", 1)
        for sim in current[want:]:
            self._terminate(sim)
        for _ in range(want - len(current)):
            suffix = uuid.uuid4().hex[:5]
            self._new_pod(
                namespace,
                f"{name}-{thash[:9]}-{suffix}",
                "Deployment",
                name,
                dep["spec"]["template"],
                thash,
                {"pod-template-hash": thash[:9]},
                None,
            )

    def _reconcile_lws(self, lws: dict) -> None:
        namespace, name = lws["metadata"]["namespace"], lws["metadata"]["name"]
        lwt = lws["spec"]["leaderWorkerTemplate"]
        thash = _template_hash(lwt)
        size = lwt.get("size", 1)
        want = lws["spec"].get("replicas", 1)
        mine = [s for s in self._owned(namespace, "LeaderWorkerSet", name) if s.terminating_since is None]
        for sim in mine:
            if sim.template_hash != thash or sim.group >= want:
                self._terminate(sim)
        existing = {s.group for s in mine if s.template_hash == thash and s.group < want}
        for group in range(want):
            if group in existing:
                continue
            for index in range(size):
                template = (
                    lwt.get("leaderTemplate") if index == 0 and lwt.get("leaderTemplate") else lwt["workerTemplate"]
                )
                pod_name = f"{name}-{group}" if index == 0 else f"{name}-{group}-{index}"
                labels = {LWS_NAME: name, LWS_GROUP_INDEX: str(group), LWS_WORKER_INDEX: str(index)}
                self._new_pod(namespace, pod_name, "LeaderWorkerSet", name, template, thash, labels, group)

    def _event(self, sim: _PodSim, pod: dict, reason: str, message: str, component: str) -> None:
        if reason in sim.events_sent:
            return
        sim.events_sent.add(reason)
        self._put(
            ("", "v1", "events"),
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{sim.name}.{uuid.uuid4().hex[:16]}", "namespace": sim.namespace},
                "involvedObject": {
                    "kind": "Pod",
                    "name": sim.name,
                    "namespace": sim.namespace,
                    "uid": pod["metadata"]["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "count": 1,
                "firstTimestamp": _now(),
                "lastTimestamp": _now(),
                "source": {"component": component},
            },
        )

    def _failure_of(self, sim: _PodSim) -> tuple[str, str | None] | None:
        return self._failures.get((sim.namespace, sim.owner_name or "")) or self._failures.get(
            (sim.namespace, sim.name)
        )

    def _state_of(self, sim: _PodSim, now: float) -> str:
        age = now - sim.created
        state = sim.forced or ""
        if not state or state == "running":
            if self.ready_after is not None and age >= self.ready_after:
                state = "ready"
            elif not state and self.start_after is not None and age >= self.start_after:
                state = "running"
        return state

    def _render_pod(self, sim: _PodSim, pod: dict, state: str, free: list) -> None:
        spec = pod["spec"]
        containers = spec.get("containers") or [{"name": "main", "image": ""}]
        first = containers[0]
        failure = self._failure_of(sim)
        status = {"phase": "Pending", "qosClass": "Guaranteed"}
        if failure and failure[0] == "Unschedulable":
            spec.pop("nodeName", None)
        elif not spec.get("nodeName"):
            if free[0] is None:
                free[0] = self._node_free()
            node = self._schedule(sim, pod, free[0])
            if node:
                spec["nodeName"] = node
                sim.unschedulable = None
        if not spec.get("nodeName"):
            message = (failure[1] if failure and failure[1] else None) or sim.unschedulable or "0/0 nodes are available"
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": _now(),
                }
            ]
            self._event(sim, pod, "FailedScheduling", message, "default-scheduler")
            pod["status"] = status
            return
        if "podIP" not in (pod.get("status") or {}):
            serial = next(self._ips)
            ip = f"10.244.{serial // 250}.{serial % 250 + 2}"
        else:
            ip = pod["status"]["podIP"]
        status.update(
            {
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": "192.168.0.10",
                "startTime": pod["metadata"]["creationTimestamp"],
            }
        )
        ready = False
        restarts = 0
        container_state: dict = {"waiting": {"reason": "ContainerCreating"}}
        last_state: dict = {}
        if failure:
            reason, message = failure
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                text = message or f'Back-off pulling image "{first.get("image")}"'
                container_state = {"waiting": {"reason": reason, "message": text}}
                self._event(
                    sim, pod, "Failed", message or f'Failed to pull image "{first.get("image")}": not found', "kubelet"
                )
            else:
                restarts = 3
                status["phase"] = "Running"
                exit_code, term_reason = (137, "OOMKilled") if reason == "OOMKilled" else (1, "Error")
                terminated = {"exitCode": exit_code, "reason": term_reason, "startedAt": _now(), "finishedAt": _now()}
                if message:
                    terminated["message"] = message
                last_state = {"terminated": terminated}
                container_state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 40s restarting failed container={first['name']} pod={sim.name}_{sim.namespace}",  # noqa: E501
                    }
                }
                self._event(
                    sim,
                    pod,
                    "BackOff",
                    f"Back-off restarting failed container {first['name']} in pod {sim.name}_{sim.namespace}",
                    "kubelet",
                )
        elif state in ("running", "ready"):
            status["phase"] = "Running"
            container_state = {"running": {"startedAt": _now()}}
            ready = state == "ready"
        condition = "True" if ready else "False"
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": condition, **({} if ready else {"reason": "ContainersNotReady"})},
            {"type": "Ready", "status": condition, **({} if ready else {"reason": "ContainersNotReady"})},
        ]
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": "running" in container_state,
                "restartCount": restarts,
                "state": container_state,
                "lastState": last_state,
            }
            for c in containers
        ]
        pod["status"] = status

    def _tick(self) -> None:
        """Advance the simulated cluster: terminate, schedule, start and ready pods, refresh workload status."""
        now = time.monotonic()
        pods = self._store[("", "v1", "pods")]
        free: list = [None]  # GPU headroom per node, computed only if some pod needs scheduling
        for key, sim in sorted(self._pods.items(), key=lambda item: (item[1].created, item[0])):
            pod = pods.get(key)
            if pod is None:
                self._drop_pod(key)
                continue
            if sim.terminating_since is not None:
                if now - sim.terminating_since >= self.terminate_after:
                    self._drop_pod(key)
                continue
            if sim.external:
                continue
            state = self._state_of(sim, now)
            inputs = (
                self._world if not pod["spec"].get("nodeName") or self._failure_of(sim) else None,
                state,
                self._failure_of(sim),
            )
            if sim.rendered == inputs:
                continue
            self._render_pod(sim, pod, state, free)
            sim.rendered = inputs
            if sim.owner_name:
                self._dirty.add((sim.namespace, sim.owner_kind, sim.owner_name))
        dirty, self._dirty = self._dirty, set()
        for namespace, kind, name in dirty:
            owned = [
                (s, pods[(s.namespace, s.name)])
                for s in self._owned(namespace, kind, name)
                if s.terminating_since is None and (s.namespace, s.name) in pods
            ]
            if kind == "Deployment":
                dep = self._store[("apps", "v1", "deployments")].get((namespace, name))
                if dep:
                    self._deployment_status(dep, owned)
            else:
                lws = self._store[(LWS_GROUP, "v1", "leaderworkersets")].get((namespace, name))
                if lws:
                    self._lws_status(lws, owned)

    def _is_ready(self, pod: dict) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or []
        )

    def _deployment_status(self, dep: dict, pods: list[tuple[_PodSim, dict]]) -> None:
        thash = _template_hash(dep["spec"].get("template"))
        ready = sum(1 for _, p in pods if self._is_ready(p))
        updated = sum(1 for s, _ in pods if s.template_hash == thash)
        want = dep["spec"].get("replicas", 1)
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "unavailableReplicas": max(want - ready, 0),
        }
        status = {k: v for k, v in status.items() if v}
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True" if ready >= want else "False",
                "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if ready >= want else "ReplicaSetUpdated",
            },
        ]
        if status != dep.get("status"):
            dep["status"] = status

    def _lws_status(self, lws: dict, pods: list[tuple[_PodSim, dict]]) -> None:
        name = lws["metadata"]["name"]
        thash = _template_hash(lws["spec"]["leaderWorkerTemplate"])
        groups: dict[int, list] = {}
        for sim, pod in pods:
            groups.setdefault(sim.group, []).append((sim, pod))
        size = lws["spec"]["leaderWorkerTemplate"].get("size", 1)
        ready = sum(
            1 for members in groups.values() if len(members) == size and all(self._is_ready(p) for _, p in members)
        )
        updated = sum(1 for members in groups.values() if all(s.template_hash == thash for s, _ in members))
        want = lws["spec"].get("replicas", 1)
        status = {
            "replicas": len(groups),
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "hpaPodSelector": f"{LWS_NAME}={name},{LWS_WORKER_INDEX}=0",
        }
        status = {k: v for k, v in status.items() if v}
        status["conditions"] = [{"type": "Available", "status": "True" if ready >= want else "False"}]
        lws["status"] = status

    # ------------------------------------------------------------------------------------------- HTTP verbs

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
            _merge(updated, json.loads(body or b"{}"))
            if _comparable(updated) != _comparable(existing):
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
                "time": _now(),
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
            _prune(updated, previous, applied)
        _merge(updated, applied)
        self._applied[(key, store_key, manager)] = copy.deepcopy(applied)
        managers = [m for m in existing["metadata"].get("managedFields") or [] if m.get("manager") != manager]
        if _comparable(updated) == _comparable(existing):
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

    # ------------------------------------------------------------------------------------------- pod proxy

    def upstream_for(self, namespace: str, pod_name: str) -> str | None:
        with self.lock:
            self._tick()
            pod = self._store[("", "v1", "pods")].get((namespace, pod_name))
            if pod is None:
                raise ApiError(404, f'pods "{pod_name}" not found')
            sim = self._pods.get((namespace, pod_name))
            return self._upstreams.get((namespace, pod_name)) or (
                self._upstreams.get((namespace, sim.owner_name)) if sim and sim.owner_name else None
            )

    # ------------------------------------------------------------------------------------------- request gate

    def gate(self, method: str, path: str, query: dict, content_type: str | None, authorization: str | None) -> float:
        """Log the request, check the token and the injected failures; returns how long to stall first."""
        with self.lock:
            self.request_log.append(LoggedRequest(method, path, query, content_type))
            stall = 0.0
            for rule in self._delay_rules:
                if (
                    rule.method in ("*", method)
                    and rule.pattern.search(path)
                    and (rule.times is None or rule.times > 0)
                ):
                    stall = max(stall, rule.seconds)
                    if rule.times is not None:
                        rule.times -= 1
            token = (authorization or "").removeprefix("Bearer ").strip()
            if token not in self.tokens:
                raise ApiError(401, "Unauthorized")
            for rule in self._fail_rules:
                if rule.times > 0 and rule.method in ("*", method) and rule.pattern.search(path):
                    rule.times -= 1
                    raise ApiError(rule.status, rule.message or _default_failure(rule.status, method, path))
            return stall


def _default_failure(status: int, method: str, path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return {
        401: "Unauthorized",
        403: f'User "system:serviceaccount:maas:maas" cannot {method.lower()} resource at {path}',
        404: f'"{name}" not found',
        409: f'Operation cannot be fulfilled on "{name}": the object has been modified; please apply your changes to the latest version and try again',  # noqa: E501
        422: f'"{name}" is invalid: spec: Invalid value',
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: etcdserver: request timed out",
        503: "the server is currently unable to handle the request",
    }.get(status, f"injected failure {status}")


_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/:]+)(?::(\d+))?/proxy(/.*)?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        return

    def setup(self):
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle + delayed ACK add 40 ms per request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        api = self.server.api
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = self._body()
        try:
            stall = api.gate(
                self.command, path, query, self.headers.get("Content-Type"), self.headers.get("Authorization")
            )
            if stall:
                time.sleep(stall)
            proxy = _PROXY.match(path)
            if proxy:
                self._proxy(api, proxy, parts.query, body)
                return
            code, payload = api.handle(self.command, path, query, self.headers.get("Content-Type"), body)
        except ApiError as exc:
            code, payload = exc.code, exc.body
        except (ValueError, yaml.YAMLError, AttributeError, TypeError) as exc:
            code, payload = 400, status_body(400, f"the request body could not be decoded: {exc!r}")
        try:
            self._send_json(code, payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def _proxy(self, api: KubeApiServer, match: re.Match, raw_query: str, body: bytes) -> None:
        namespace, pod_name, port, rest = match.group(1), match.group(2), match.group(3), match.group(4) or "/"
        upstream = api.upstream_for(namespace, pod_name)
        if not upstream:
            raise ApiError(
                503,
                f"error trying to reach service: dial tcp 10.244.0.2:{port or 80}: connect: connection refused",
                reason="ServiceUnavailable",
            )
        target = urlsplit(upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            connection.request(
                self.command,
                target.path.rstrip("/") + rest + (f"?{raw_query}" if raw_query else ""),
                body=body or None,
                headers=headers,
            )
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            raise ApiError(503, f"error trying to reach service: {exc}", reason="ServiceUnavailable") from None
        try:
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(response.read())
            else:
                # Stream as it arrives (server-sent events from a chat completion).
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    api: KubeApiServer

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, rejected certificates) are part of the tests, not server errors.
        return


@contextlib.contextmanager
def run_kube_api(*, tls: str | None = None, **options):
    """Start the test API server on an ephemeral 127.0.0.1 port in a background thread.

    tls: None (plain HTTP), "valid" (self-signed CA in the kubeconfig) or "expired" (that certificate has expired).
    Other options go to KubeApiServer (nodes, lws, default_storage_class, priority_classes, tokens, start_after,
    ready_after, terminate_after, git_version).
    """
    api = KubeApiServer(**options)
    httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.api = api
    scheme = "http"
    files = []
    if tls:
        if tls not in ("valid", "expired"):
            raise ValueError("tls must be None, 'valid' or 'expired'")
        cert_pem, key_pem = make_certificate(expired=tls == "expired")
        api.ca_pem = cert_pem
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        for content in (cert_pem, key_pem):
            handle = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)
            handle.write(content)
            handle.close()
            files.append(handle.name)
        context.load_cert_chain(files[0], files[1])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    api.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(name)
