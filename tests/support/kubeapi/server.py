"""The test API server: its options, the controls tests steer it with, and the gate every request passes."""

from __future__ import annotations

import base64
import copy
import re
import time
from dataclasses import dataclass

import yaml

from .pods import PodSim
from .resources import (
    DEFAULT_TOKEN,
    FAILURE_REASONS,
    GPU,
    LWS_CONTROLLER_NAMESPACE,
    LWS_CRD,
    LWS_GROUP,
    RESOURCES,
    ApiError,
)
from .rest import RestApi


@dataclass(frozen=True)
class Attributes:
    """What an RBAC authorizer sees of a request: verb, API group, resource[/subresource], namespace."""

    verb: str
    group: str
    resource: str
    namespace: str = ""

    @property
    def label(self) -> str:
        """As ``set_rbac`` takes it: "verb resource[/subresource]"."""
        return f"{self.verb} {self.resource}"


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict
    content_type: str | None
    attributes: Attributes | None = None  # None for non-resource URLs (/version, discovery)
    user_agent: str = ""


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_attributes(method: str, path: str, query: dict) -> Attributes | None:
    """The RBAC attributes of a request, as the real API server derives them (non-resource URLs: None)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    plural = rest[0]
    name = rest[1].split(":", 1)[0] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if method == "GET":
        verb = "watch" if query.get("watch") in ("1", "true") else ("get" if name else "list")
    else:
        verb = _VERBS.get(method, method.lower())
    return Attributes(verb, group, f"{plural}/{sub}" if sub else plural, namespace)


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


class KubeApiServer(RestApi):
    """The state and the test controls; `run_kube_api()` wraps it in a running HTTP(S) server."""

    def __init__(
        self,
        *,
        nodes: list[dict] | None = None,
        lws: bool = True,
        lws_controller: bool = True,
        default_storage_class: bool = True,
        priority_classes: tuple[str, ...] = (),
        tokens: tuple[str, ...] = (DEFAULT_TOKEN,),
        start_after: float | None = 0.0,
        ready_after: float | None = None,
        terminate_after: float = 0.0,
        git_version: str = "v1.33.1",
    ):
        super().__init__(
            git_version=git_version, start_after=start_after, ready_after=ready_after, terminate_after=terminate_after
        )
        self.url = ""
        self.ca_pem: bytes | None = None
        self.tokens = set(tokens)
        self.request_log: list[LoggedRequest] = []
        self._implied: set[tuple[str, str, str]] = set()
        self._upstreams: dict[tuple[str, str], str] = {}
        self._fail_rules: list[_FailRule] = []
        self._delay_rules: list[_DelayRule] = []
        for node in [{"name": "gpu-node-0"}, {"name": "gpu-node-1"}] if nodes is None else nodes:
            self.add_node(**node)
        if lws:
            self.install_lws(controller=lws_controller)
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
            self._pods[(namespace, name)] = PodSim(namespace, name, None, None, time.monotonic(), external=True)
            self._world += 1
            return self._put(("", "v1", "pods"), pod)

    def install_lws(self, *, controller: bool = True) -> None:
        """The LeaderWorkerSet CRD as the released manifests install it (its conversion webhook served by the
        controller's Service in lws-system), and the controller unless ``controller`` is False."""
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
                        "conversion": {
                            "strategy": "Webhook",
                            "webhook": {
                                "clientConfig": {
                                    "service": {
                                        "namespace": LWS_CONTROLLER_NAMESPACE,
                                        "name": "lws-webhook-service",
                                        "path": "/convert",
                                    }
                                },
                                "conversionReviewVersions": ["v1"],
                            },
                        },
                    },
                },
            )
        self.set_lws_controller(running=controller)

    def set_lws_controller(self, *, running: bool) -> None:
        """The lws-controller-manager Deployment, available or not; only a running one creates LeaderWorkerSet pods."""
        with self.lock:
            self._ensure_namespace(LWS_CONTROLLER_NAMESPACE)
            self._put(
                ("apps", "v1", "deployments"),
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": "lws-controller-manager",
                        "namespace": LWS_CONTROLLER_NAMESPACE,
                        "labels": {"control-plane": "controller-manager"},
                        "generation": 1,
                    },
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"control-plane": "controller-manager"}}},
                    "status": {
                        "observedGeneration": 1,
                        "replicas": 1,
                        "readyReplicas": int(running),
                        "availableReplicas": int(running),
                        "unavailableReplicas": int(not running),
                        "conditions": [
                            {
                                "type": "Available",
                                "status": "True" if running else "False",
                                "reason": "MinimumReplicasAvailable" if running else "MinimumReplicasUnavailable",
                            }
                        ],
                    },
                },
            )
            self.lws_controller_running = running
            if running:
                for lws in list(self._store[(LWS_GROUP, "v1", "leaderworkersets")].values()):
                    self._reconcile_lws(lws)

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
        """The kubeconfig's user lacks these "verb resource[/subresource]" pairs, e.g. "get pods/proxy".

        SelfSubjectAccessReviews say so, and real requests needing them are answered 403 Forbidden.
        """
        with self.lock:
            self.denied = set(denied)

    def requested_permissions(self) -> set[tuple[str, str, str]]:
        """(verb, group, resource) of every resource request logged so far; an apply that created also needs create."""
        with self.lock:
            found = set()
            for logged in self.request_log:
                if logged.attributes is not None:
                    a = logged.attributes
                    found.add((a.verb, a.group, a.resource))
            return found | self._implied

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
            self._implied.clear()

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

    def _authorize(self, attributes: Attributes, path: str, content_type: str | None) -> None:
        if attributes.label in self.denied:
            raise _forbidden(attributes)
        # A server-side apply that creates the object is authorized for create as well.
        if attributes.verb == "patch" and (content_type or "").startswith("application/apply-patch"):
            if not self._exists(path):
                create = Attributes("create", attributes.group, attributes.resource, attributes.namespace)
                self._implied.add((create.verb, create.group, create.resource))
                if create.label in self.denied:
                    raise _forbidden(create)

    def _exists(self, path: str) -> bool:
        try:
            group, version, namespace, plural, name, _sub = self._parse(path)
        except ApiError:
            return False
        if plural is None or name is None:
            return False
        _kind, namespaced = RESOURCES[(group, version, plural)]
        return ((namespace or "") if namespaced else "", name) in self._store[(group, version, plural)]

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

    def gate(
        self,
        method: str,
        path: str,
        query: dict,
        content_type: str | None,
        authorization: str | None,
        user_agent: str = "",
    ) -> float:
        """Log the request, check the token, RBAC and the injected failures; returns how long to stall first."""
        with self.lock:
            attributes = request_attributes(method, path, query)
            self.request_log.append(LoggedRequest(method, path, query, content_type, attributes, user_agent))
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
            if attributes is not None:
                self._authorize(attributes, path, content_type)
            for rule in self._fail_rules:
                if rule.times > 0 and rule.method in ("*", method) and rule.pattern.search(path):
                    rule.times -= 1
                    raise ApiError(rule.status, rule.message or _default_failure(rule.status, method, path))
            return stall


def _forbidden(attributes: Attributes) -> ApiError:
    resource, _, sub = attributes.resource.partition("/")
    where = f' in the namespace "{attributes.namespace}"' if attributes.namespace else " at the cluster scope"
    return ApiError(
        403,
        f'{resource}{"." + attributes.group if attributes.group else ""} is forbidden: User "maas" cannot '
        f'{attributes.verb} resource "{resource}"{f" subresource {sub!r}" if sub else ""} in API group '
        f'"{attributes.group}"{where}',
    )


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
