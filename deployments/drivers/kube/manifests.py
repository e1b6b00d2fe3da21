"""Kubernetes objects for one dedicated inference service (Namespace, Deployment or LeaderWorkerSet, Service)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

MANAGED_BY = "maas"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_SERVICE_ID = "maas.io/service-id"
LABEL_ORG = "maas.io/org"
LABEL_RUNTIME = "maas.io/runtime"
ANNOTATION_SERVED_MODEL = "maas.io/served-model-name"
ANNOTATION_MODEL_SOURCE = "maas.io/model-source"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
DEFAULT_PRIORITY_CLASS = "maas-online-inference"
HUB_TOKEN_SECRET = "maas-hub-tokens"
HUB_TOKEN_KEYS = ("HF_TOKEN", "MODELSCOPE_API_TOKEN")  # Secret keys, also the engine's environment variables
NAMESPACE_QUOTA = "maas-gpus"
NAMESPACE_POLICY = "maas-access"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
CACHE_MOUNT = "/root/.cache/huggingface"
RAY_PORT = 6379
SGLANG_DIST_PORT = 20000

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Flags the platform sets itself: a user-supplied duplicate would silently change the routing contract.
_MANAGED_FLAGS = {
    "vllm": {
        "--model",
        "--served-model-name",
        "--port",
        "--host",
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--max-model-len",
        "--distributed-executor-backend",
    },
    "sglang": {
        "--model-path",
        "--model",
        "--served-model-name",
        "--port",
        "--host",
        "--tp",
        "--tp-size",
        "--tensor-parallel-size",
        "--context-length",
        "--nnodes",
        "--node-rank",
        "--dist-init-addr",
    },
}


@dataclass(frozen=True)
class WorkloadRef:
    """Where a service's workload lives; enough to observe, scale or delete it."""

    namespace: str
    name: str
    kind: str = "Deployment"  # or "LeaderWorkerSet"
    port: int = 8000


@dataclass
class WorkloadSpec:
    namespace: str
    name: str
    service_id: str
    org_namespace: str
    served_model_name: str
    runtime: str
    image: str
    model_source: str
    gpu_count: int
    gpus_per_node: int
    nodes_per_instance: int
    gpu_product: str | None
    replicas: int
    max_model_len: int
    custom_args: list[str] = field(default_factory=list)
    cpu: int = 8
    memory_gb: int = 64
    shm_gb: int = 16
    port: int = 8000
    priority_class: str | None = DEFAULT_PRIORITY_CLASS
    cache_volume: dict = field(default_factory=dict)  # {"host_path": "/mnt/hf"} | {"pvc": "claim"} | {} (emptyDir)
    extra_labels: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    # {"HF_TOKEN": ..., "MODELSCOPE_API_TOKEN": ...}: becomes the namespace's Secret; never in a repr or a log.
    hub_tokens: dict = field(default_factory=dict, repr=False)
    image_mirror: str = ""  # registry host[/path] that image references are rewritten to
    gpu_quota: int | None = None  # ResourceQuota of the namespace: GPUs all its pods may request together
    access_mode: str = "proxy"  # how the gateway reaches pods: decides who the NetworkPolicy lets in
    network_sources: tuple[str, ...] = ()  # CIDRs of the platform's access path (API server, gateway)
    ingress_namespace: str = ""  # the ingress controller's namespace (access mode "ingress")
    startup_timeout_s: int = 3600

    def __post_init__(self) -> None:
        problems = []
        if not _DNS_LABEL.match(self.namespace or "") or len(self.namespace) > 63:
            problems.append(f"namespace {self.namespace!r} is not a DNS-1123 label")
        # Service names are DNS-1035 labels; pod names append up to 17 characters.
        if not _DNS_1035.match(self.name or "") or len(self.name) > 45:
            problems.append(f"name {self.name!r} must be a lowercase DNS-1035 label of at most 45 characters")
        if self.runtime not in ("vllm", "sglang"):
            problems.append(f"runtime {self.runtime!r} is not one of vllm, sglang")
        if self.gpus_per_node < 1 or self.nodes_per_instance < 1:
            problems.append("gpus_per_node and nodes_per_instance must be at least 1")
        elif self.gpu_count != self.gpus_per_node * self.nodes_per_instance:
            problems.append(
                f"gpu_count {self.gpu_count} != gpus_per_node {self.gpus_per_node} × nodes_per_instance {self.nodes_per_instance}"  # noqa: E501
            )
        if self.replicas < 0:
            problems.append("replicas must not be negative")
        if self.max_model_len < 1:
            problems.append("max_model_len must be positive")
        if self.shm_gb >= self.memory_gb:
            problems.append(
                f"shm_gb {self.shm_gb} must be below memory_gb {self.memory_gb} (shared memory counts against the memory limit)"  # noqa: E501
            )
        for key in ("service_id", "org_namespace"):
            value = getattr(self, key)
            if not value or not _LABEL_VALUE.match(value) or len(value) > 63:
                problems.append(f"{key} {value!r} is not a valid label value")
        if not self.served_model_name or not self.model_source or not self.image:
            problems.append("served_model_name, model_source and image are required")
        if not all(isinstance(arg, str) for arg in self.custom_args):
            problems.append("custom_args must be strings")
        else:
            managed = _MANAGED_FLAGS.get(self.runtime, set())
            for arg in self.custom_args:
                flag = arg.split("=", 1)[0]
                if flag in managed:
                    problems.append(f"custom argument {flag} is set by the platform")
        unknown = set(self.cache_volume) - {"host_path", "pvc"}
        if unknown or len(self.cache_volume) > 1:
            problems.append(f"cache_volume takes one of host_path or pvc, got {sorted(self.cache_volume)}")
        unknown_tokens = set(self.hub_tokens) - set(HUB_TOKEN_KEYS)
        if unknown_tokens:
            problems.append(f"hub_tokens takes {', '.join(HUB_TOKEN_KEYS)}, got {sorted(unknown_tokens)}")
        if self.access_mode not in ("proxy", "pod_ip", "ingress"):
            problems.append(f"access_mode {self.access_mode!r} is not one of proxy, pod_ip, ingress")
        if self.gpu_quota is not None and self.gpu_quota < 0:
            problems.append("gpu_quota must not be negative")
        if problems:
            raise ValueError("invalid workload spec: " + "; ".join(problems))

    @property
    def kind(self) -> str:
        return "LeaderWorkerSet" if self.nodes_per_instance > 1 else "Deployment"

    @property
    def ref(self) -> WorkloadRef:
        return WorkloadRef(namespace=self.namespace, name=self.name, kind=self.kind, port=self.port)


def _model(spec: WorkloadSpec) -> tuple[str, bool]:
    """The model id the engine loads and whether it comes from ModelScope."""
    if spec.model_source.startswith("modelscope:"):
        return spec.model_source.removeprefix("modelscope:"), True
    return spec.model_source.removeprefix("huggingface:").removeprefix("hf:"), False


def labels_for(spec: WorkloadSpec) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in spec.extra_labels.items()}
    labels.update(
        {
            LABEL_NAME: spec.name,
            LABEL_COMPONENT: "inference",
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_SERVICE_ID: spec.service_id,
            LABEL_ORG: spec.org_namespace,
            LABEL_RUNTIME: spec.runtime,
        }
    )
    return labels


def selector_for(name: str) -> dict[str, str]:
    return {LABEL_NAME: name, LABEL_MANAGED_BY: MANAGED_BY}


def _annotations(spec: WorkloadSpec) -> dict[str, str]:
    return {
        LABEL_SERVICE_ID: spec.service_id,
        ANNOTATION_SERVED_MODEL: spec.served_model_name,
        ANNOTATION_MODEL_SOURCE: spec.model_source,
    }


def _metadata(spec: WorkloadSpec, name: str | None = None) -> dict:
    return {
        "name": name or spec.name,
        "namespace": spec.namespace,
        "labels": labels_for(spec),
        "annotations": _annotations(spec),
    }


def engine_args(spec: WorkloadSpec, *, node_rank: str | None = None) -> list[str]:
    """The OpenAI server's command line (command included) for one node of an instance."""
    model, _ = _model(spec)
    if spec.runtime == "vllm":
        args = [
            "python3",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--served-model-name",
            spec.served_model_name,
            "--tensor-parallel-size",
            str(spec.gpus_per_node),
            "--max-model-len",
            str(spec.max_model_len),
            "--host",
            "0.0.0.0",
            "--port",
            str(spec.port),
        ]
        if spec.nodes_per_instance > 1:
            args += ["--pipeline-parallel-size", str(spec.nodes_per_instance), "--distributed-executor-backend", "ray"]
    else:
        args = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            model,
            "--served-model-name",
            spec.served_model_name,
            "--tp",
            str(spec.gpu_count),
            "--context-length",
            str(spec.max_model_len),
            "--host",
            "0.0.0.0",
            "--port",
            str(spec.port),
        ]
        if spec.nodes_per_instance > 1:
            args += [
                "--nnodes",
                str(spec.nodes_per_instance),
                "--node-rank",
                node_rank or "0",
                "--dist-init-addr",
                f"$(LWS_LEADER_ADDRESS):{SGLANG_DIST_PORT}",
            ]
    return args + list(spec.custom_args)


def _env(spec: WorkloadSpec) -> list[dict]:
    _, modelscope = _model(spec)
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": CACHE_MOUNT}]
    if modelscope:
        env.append(
            {"name": "VLLM_USE_MODELSCOPE" if spec.runtime == "vllm" else "SGLANG_USE_MODELSCOPE", "value": "True"}
        )
        env.append({"name": "MODELSCOPE_CACHE", "value": f"{CACHE_MOUNT}/modelscope"})
    for key in HUB_TOKEN_KEYS:
        if spec.hub_tokens.get(key):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": HUB_TOKEN_SECRET, "key": key}}})
    env += [{"name": str(k), "value": str(v)} for k, v in sorted(spec.env.items())]
    return env


def _resources(spec: WorkloadSpec) -> dict:
    # Requests equal limits: Guaranteed QoS keeps a loaded model from being the first thing evicted.
    amounts = {"cpu": str(spec.cpu), "memory": f"{spec.memory_gb}Gi", GPU_RESOURCE: str(spec.gpus_per_node)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


DRAIN_PAUSE_S = 10  # a removed pod's preStop waits this long at least: the platform stops routing to it meanwhile
STREAM_GRACE_S = 300  # then until its engine's /metrics show nothing running or waiting, this long at most
# The preStop hook (the engine images ship python3; a hook that fails only ends the wait): the pause, then the wait
# for vLLM's num_requests_running and num_requests_waiting to reach 0 (an engine without them ends it at once).
# Arguments: the engine's port, the pause, the longest wait.
DRAIN_SCRIPT = (
    "import sys,time,urllib.request\n"
    "time.sleep(float(sys.argv[2]))\n"
    "end=time.time()+float(sys.argv[3])\n"
    "while time.time()<end:\n"
    " text=urllib.request.urlopen('http://127.0.0.1:%s/metrics'%sys.argv[1],timeout=2).read().decode()\n"
    " busy=sum(float(l.rsplit(' ',1)[1]) for l in text.splitlines()"
    " if l.startswith(('vllm:num_requests_running','vllm:num_requests_waiting')))\n"
    " if busy==0: break\n"
    " time.sleep(1)\n"
)


def _probes(spec: WorkloadSpec) -> dict:
    get = {"path": "/health", "port": "http"}
    return {
        # Loading weights (and downloading them on first start) takes minutes; startup gets the whole budget.
        "startupProbe": {
            "httpGet": get,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": max(spec.startup_timeout_s // 10, 180),
        },
        "readinessProbe": {"httpGet": get, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": get, "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4},
    }


def _volumes(spec: WorkloadSpec) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_gb}Gi"}}]
    if "host_path" in spec.cache_volume:
        volumes.append(
            {"name": "model-cache", "hostPath": {"path": spec.cache_volume["host_path"], "type": "DirectoryOrCreate"}}
        )
    elif "pvc" in spec.cache_volume:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": spec.cache_volume["pvc"]}})
    else:
        volumes.append({"name": "model-cache", "emptyDir": {}})
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-cache", "mountPath": CACHE_MOUNT}]
    return volumes, mounts


def _pod_spec(spec: WorkloadSpec, container: dict) -> dict:
    volumes, mounts = _volumes(spec)
    container = {
        "image": mirrored_image(spec.image, spec.image_mirror),
        "imagePullPolicy": "IfNotPresent",
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # A crashing engine's last log lines become the termination message the console shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Drain on scale-down: a pod being removed keeps serving until the platform's next observation stops routing
        # to it (pods with a deletionTimestamp are not routed to) and its engine has finished what it runs.
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": ["python3", "-c", DRAIN_SCRIPT, str(spec.port), str(DRAIN_PAUSE_S), str(STREAM_GRACE_S)]
                }
            }
        },
        **container,
    }
    pod = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        # Service links would inject e.g. VLLM_PORT=tcp://... for a Service named "vllm" and crash the engine.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": DRAIN_PAUSE_S + STREAM_GRACE_S + 30,
    }
    if spec.gpu_product:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: spec.gpu_product}
    if spec.priority_class:
        pod["priorityClassName"] = spec.priority_class
    return pod


def _server_container(spec: WorkloadSpec, command: list[str]) -> dict:
    return {
        "name": "engine",
        "command": command[:1],
        "args": command[1:],
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        **_probes(spec),
    }


def namespace_manifest(spec: WorkloadSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ORG: spec.org_namespace}},
    }


def mirrored_image(image: str, mirror: str) -> str:
    """``image`` pulled through the registry mirror ``mirror`` (e.g. ``harbor.example.com/proxy``).

    Docker Hub references lose their implicit host (``vllm/vllm-openai:v1`` → ``<mirror>/vllm/vllm-openai:v1``,
    ``nginx`` → ``<mirror>/library/nginx``); references to another registry keep its host as the first path
    component (``ghcr.io/o/i:t`` → ``<mirror>/ghcr.io/o/i:t``), the layout of pull-through caches per upstream.
    """
    mirror = mirror.strip().rstrip("/")
    if not mirror:
        return image
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        if first in ("docker.io", "index.docker.io", "registry-1.docker.io"):
            image = rest
        else:
            return f"{mirror}/{first}/{rest}"
    if "/" not in image:
        image = f"library/{image}"
    return f"{mirror}/{image}"


def resource_quota_manifest(spec: WorkloadSpec) -> dict:
    """The GPUs all pods of the organization's namespace may request together."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": NAMESPACE_QUOTA,
            "namespace": spec.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ORG: spec.org_namespace},
        },
        "spec": {"hard": {f"requests.{GPU_RESOURCE}": str(spec.gpu_quota or 0)}},
    }


def network_policy_manifest(spec: WorkloadSpec) -> dict:
    """Only the platform's access path reaches the model pods; the pods of one instance reach each other.

    proxy and pod_ip: the HTTP port admits ``network_sources`` (the API server's or gateway's addresses); ingress: the
    ingress controller's namespace. Everything else, other tenants' pods included, is refused.
    """
    http = [{"protocol": "TCP", "port": spec.port}]
    sources: list[dict[str, Any]]
    if spec.access_mode == "ingress":
        sources = [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: spec.ingress_namespace}}}]
    else:
        sources = [{"ipBlock": {"cidr": cidr}} for cidr in spec.network_sources]
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": {}}]}]  # multi-node groups talk among themselves
    if sources:
        ingress.append({"from": sources, "ports": http})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NAMESPACE_POLICY,
            "namespace": spec.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ORG: spec.org_namespace},
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_MANAGED_BY: MANAGED_BY}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def hub_token_secret_manifest(spec: WorkloadSpec) -> dict | None:
    tokens = {key: spec.hub_tokens[key] for key in HUB_TOKEN_KEYS if spec.hub_tokens.get(key)}
    if not tokens:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": HUB_TOKEN_SECRET,
            "namespace": spec.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ORG: spec.org_namespace},
        },
        "type": "Opaque",
        "stringData": tokens,
    }


def namespace_manifests(spec: WorkloadSpec) -> list[dict]:
    """The organization's namespace with its quota, network policy and (when the cluster has tokens) hub tokens."""
    manifests = [namespace_manifest(spec), network_policy_manifest(spec)]
    if spec.gpu_quota is not None:
        manifests.insert(1, resource_quota_manifest(spec))
    secret = hub_token_secret_manifest(spec)
    if secret is not None:
        manifests.append(secret)
    return manifests


def deployment_manifest(spec: WorkloadSpec) -> dict:
    pod_labels = labels_for(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_for(spec.name)},
            # Zero-downtime rollouts: one extra instance at a time; with no spare GPUs the rollout waits while the
            # old pods keep serving.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": spec.startup_timeout_s + 600,
            "template": {
                "metadata": {"labels": pod_labels, "annotations": _annotations(spec)},
                "spec": _pod_spec(spec, _server_container(spec, engine_args(spec))),
            },
        },
    }


def _shell(words: list[str]) -> str:
    # $(LWS_...) is expanded by the kubelet before the shell runs, so it stays unquoted.
    return " ".join(w if "$(LWS_" in w else shlex.quote(w) for w in words)


def lws_manifest(spec: WorkloadSpec) -> dict:
    labels = labels_for(spec)
    if spec.runtime == "vllm":
        # The shape of the LeaderWorkerSet vLLM example: the leader heads a Ray cluster, waits until every node of
        # the group has joined, then serves with pipeline parallelism across the nodes; workers join and block.
        leader_cmd = (
            f"ray start --head --port={RAY_PORT} && "
            'until [ "$(ray status 2>/dev/null | grep -c node_)" -ge "$LWS_GROUP_SIZE" ]; '
            "do echo waiting for $LWS_GROUP_SIZE ray nodes; sleep 5; done && "
            f"exec {_shell(engine_args(spec))}"
        )
        worker_cmd = f"ray start --address=$(LWS_LEADER_ADDRESS):{RAY_PORT} --block"
    else:
        leader_cmd = f"exec {_shell(engine_args(spec, node_rank='$(LWS_WORKER_INDEX)'))}"
        worker_cmd = f"exec {_shell(engine_args(spec, node_rank='$(LWS_WORKER_INDEX)'))}"
    leader = _server_container(spec, ["sh", "-c", leader_cmd])
    leader["args"] = ["-c", leader_cmd]
    worker = {"name": "engine", "command": ["sh"], "args": ["-c", worker_cmd]}
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(spec),
        "spec": {
            "replicas": spec.replicas,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": spec.nodes_per_instance,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": {**labels, "maas.io/role": "leader"}, "annotations": _annotations(spec)},
                    "spec": _pod_spec(spec, leader),
                },
                "workerTemplate": {
                    "metadata": {"labels": {**labels, "maas.io/role": "worker"}, "annotations": _annotations(spec)},
                    "spec": _pod_spec(spec, worker),
                },
            },
        },
    }


def service_manifest(spec: WorkloadSpec) -> dict:
    selector = selector_for(spec.name)
    if spec.nodes_per_instance > 1:
        selector[LWS_WORKER_INDEX_LABEL] = "0"  # only leaders serve HTTP
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def workload_manifest(spec: WorkloadSpec) -> dict:
    return lws_manifest(spec) if spec.nodes_per_instance > 1 else deployment_manifest(spec)


def build_manifests(spec: WorkloadSpec) -> list[dict]:
    """Namespace (with quota, policy, tokens), workload (Deployment, or LeaderWorkerSet beyond one node) and Service."""
    return [*namespace_manifests(spec), workload_manifest(spec), service_manifest(spec)]


# Two recent official schema sets shipped inside kubernetes-validate (it carries 1.25 … 1.37).
SCHEMA_VERSIONS = ("1.36.0", "1.37.0")


def _validate_lws(manifest: dict, versions) -> list[str]:
    """LeaderWorkerSet is a CRD without an official schema: check its shape and validate its pod templates."""
    problems = []
    name = (manifest.get("metadata") or {}).get("name")
    if manifest.get("apiVersion") != LWS_API_VERSION:
        problems.append(f"apiVersion must be {LWS_API_VERSION}")
    if not name:
        problems.append("metadata.name is required")
    spec = manifest.get("spec") or {}
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
        problems.append("spec.replicas must be a non-negative integer")
    template = spec.get("leaderWorkerTemplate") or {}
    if not isinstance(template.get("size"), int) or template["size"] < 1:
        problems.append("spec.leaderWorkerTemplate.size must be a positive integer")
    if template.get("restartPolicy") not in (None, "RecreateGroupOnPodRestart", "None", "Default"):
        problems.append(f"spec.leaderWorkerTemplate.restartPolicy {template.get('restartPolicy')!r} is not valid")
    if "workerTemplate" not in template:
        problems.append("spec.leaderWorkerTemplate.workerTemplate is required")
    for key in ("leaderTemplate", "workerTemplate"):
        if key not in template:
            continue
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{name}-{key.lower()}"},
            "template": template[key],
        }
        problems += [f"spec.leaderWorkerTemplate.{key}: {p}" for p in _validate_builtin(pod_template, versions)]
        if not ((template[key].get("spec") or {}).get("containers")):
            problems.append(f"spec.leaderWorkerTemplate.{key}.spec.containers must not be empty")
    return problems


def _validate_builtin(manifest: dict, versions) -> list[str]:
    import kubernetes_validate

    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
            problems.append(f"Kubernetes {version}: {where}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.VersionNotSupportedError) as exc:
            problems.append(f"Kubernetes {version}: {exc.message}")
    return problems


def validate_manifests(manifests: list[dict], versions: tuple[str, ...] = SCHEMA_VERSIONS) -> None:
    """Validate against the official strict schemas of each version, offline; raise ValueError listing every problem."""
    problems = []
    for manifest in manifests:
        label = f"{manifest.get('kind', '?')}/{(manifest.get('metadata') or {}).get('name', '?')}"
        if manifest.get("kind") == "LeaderWorkerSet":
            found = _validate_lws(manifest, versions)
        else:
            found = _validate_builtin(manifest, versions)
        problems += [f"{label}: {p}" for p in found]
    if problems:
        raise ValueError("invalid manifests:\n" + "\n".join(problems))
