"""What a connected cluster offers: version, GPU nodes, GPU usage and the preflight checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deployments.drivers.kube.config import api_client, request
from deployments.drivers.kube.errors import KubeError
from deployments.drivers.kube.manifests import DEFAULT_PRIORITY_CLASS, GPU_MEMORY_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from deployments.drivers.kube.rbac import CLUSTER_ROLE_NAME, can_i, missing_permissions

LWS_CRD = "leaderworkersets.leaderworkerset.x-k8s.io"
# Where the released LeaderWorkerSet manifests (and its Helm chart's default release) run the controller, and the
# label both put on its Deployment.
LWS_CONTROLLER_NAMESPACE = "lws-system"
LWS_CONTROLLER_SELECTOR = "control-plane=controller-manager"
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


@dataclass
class GpuNode:
    name: str
    ready: bool
    unschedulable: bool
    gpu_product: str | None
    gpu_memory_mb: int | None
    gpu_capacity: int
    gpu_allocatable: int
    gpu_allocated: int
    taints: list[dict] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    address: str = ""  # InternalIP

    @property
    def schedulable(self) -> bool:
        """Ready, not cordoned, and tainted with nothing but the GPU taint the platform tolerates."""
        blocking = [
            t for t in self.taints if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != GPU_RESOURCE
        ]
        return self.ready and not self.unschedulable and not blocking

    @property
    def gpu_free(self) -> int:
        return max(self.gpu_allocatable - self.gpu_allocated, 0) if self.schedulable else 0


@dataclass
class PreflightCheck:
    key: str
    ok: bool
    message: str
    fix: str
    blocking: bool = True  # False: the platform works without it, with less (e.g. no multi-node services)


@dataclass
class ClusterProbe:
    server_url: str
    server_version: str
    nodes: list[GpuNode]
    checks: list[PreflightCheck]

    def gpu_inventory(self) -> dict[str, dict]:
        """GPU totals per product, counting free GPUs only on nodes the platform can schedule onto."""
        inventory: dict[str, dict] = {}
        for node in self.nodes:
            if node.gpu_capacity <= 0:
                continue
            entry = inventory.setdefault(
                node.gpu_product or "unknown",
                {
                    "total": 0,
                    "allocatable": 0,
                    "allocated": 0,
                    "free": 0,
                    "memory_mb": node.gpu_memory_mb,
                    "nodes": 0,
                    "max_per_node": 0,
                    "max_free_per_node": 0,
                },
            )
            entry["total"] += node.gpu_capacity
            entry["allocated"] += node.gpu_allocated
            entry["nodes"] += 1
            if entry["memory_mb"] is None:
                entry["memory_mb"] = node.gpu_memory_mb
            if node.schedulable:
                entry["allocatable"] += node.gpu_allocatable
                entry["free"] += node.gpu_free
                entry["max_per_node"] = max(entry["max_per_node"], node.gpu_allocatable)
                entry["max_free_per_node"] = max(entry["max_free_per_node"], node.gpu_free)
        return inventory

    def check(self, key: str) -> PreflightCheck | None:
        return next((c for c in self.checks if c.key == key), None)

    @property
    def has_lws(self) -> bool:
        """Multi-node services can run: the LeaderWorkerSet CRD is installed and its controller is running."""
        crd, controller = self.check("lws_crd"), self.check("lws_controller")
        return bool(crd and crd.ok and controller and controller.ok)

    @property
    def ready(self) -> bool:
        """Every blocking preflight check passed."""
        return all(c.ok for c in self.checks if c.blocking)


def _int(value) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _gpu_request(pod: dict) -> int:
    """GPUs a pod holds: per container the larger of request and limit, like the scheduler's effective request."""
    spec = pod.get("spec") or {}
    total = 0
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        total += max(
            _int((resources.get("requests") or {}).get(GPU_RESOURCE)),
            _int((resources.get("limits") or {}).get(GPU_RESOURCE)),
        )
    init = [
        max(
            _int(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE)),
            _int(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE)),
        )
        for c in spec.get("initContainers") or []
    ]
    return max([total, *init])


def gpu_nodes(node_list: dict, pod_list: dict) -> list[GpuNode]:
    allocated: dict[str, int] = {}
    for pod in pod_list.get("items") or []:
        node_name = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        # A pod being deleted (a stopped service's) gives its GPUs back within its grace period: counting them
        # would refuse deploys for that long, while a pod placed meanwhile only waits a little in Pending.
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if node_name and phase not in ("Succeeded", "Failed"):
            allocated[node_name] = allocated.get(node_name, 0) + _gpu_request(pod)
    nodes = []
    for item in node_list.get("items") or []:
        meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        labels = meta.get("labels") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        memory = labels.get(GPU_MEMORY_LABEL)
        nodes.append(
            GpuNode(
                name=meta.get("name", ""),
                ready=ready,
                unschedulable=bool(spec.get("unschedulable")),
                gpu_product=labels.get(GPU_PRODUCT_LABEL),
                gpu_memory_mb=_int(memory) if memory and str(memory).isdigit() else None,
                gpu_capacity=_int((status.get("capacity") or {}).get(GPU_RESOURCE)),
                gpu_allocatable=_int((status.get("allocatable") or {}).get(GPU_RESOURCE)),
                gpu_allocated=allocated.get(meta.get("name", ""), 0),
                taints=list(spec.get("taints") or []),
                labels=dict(labels),
                address=next(
                    (a.get("address", "") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), ""
                ),
            )
        )
    return nodes


def _check_gpus(nodes: list[GpuNode]) -> PreflightCheck:
    gpu = [n for n in nodes if n.gpu_capacity > 0]
    if not gpu:
        return PreflightCheck(
            "gpu_device_plugin",
            False,
            f"none of the {len(nodes)} nodes advertises {GPU_RESOURCE}",
            "install the NVIDIA GPU Operator (or the NVIDIA device plugin) so GPU nodes report nvidia.com/gpu capacity",
        )
    unlabelled = [n.name for n in gpu if not n.gpu_product]
    message = f"{len(gpu)} GPU node(s), {sum(n.gpu_capacity for n in gpu)} GPUs"
    if unlabelled:
        message += f"; {len(unlabelled)} without the {GPU_PRODUCT_LABEL} label (GPU Feature Discovery missing?)"
    return PreflightCheck("gpu_device_plugin", True, message, "")


def _check_priority_class(client, name: str, value: int, preemption_policy: str) -> PreflightCheck:
    wanted = f"value {value}, preemptionPolicy {preemption_policy}"
    found = request(client, "GET", f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}", not_found_ok=True)
    if found is not None:
        has = f"value {found.get('value')}, preemptionPolicy {found.get('preemptionPolicy', 'PreemptLowerPriority')}"
        if has == wanted:
            return PreflightCheck("priority_class", True, f"PriorityClass {name} exists ({has})", "")
        return PreflightCheck(
            "priority_class", True, f"PriorityClass {name} exists ({has}); the platform will replace it ({wanted})", ""
        )
    allowed, _ = can_i(client, "create", "priorityclasses", group="scheduling.k8s.io")
    if allowed:
        return PreflightCheck(
            "priority_class", True, f"PriorityClass {name} is missing; the platform will create it ({wanted})", ""
        )
    return PreflightCheck(
        "priority_class",
        False,
        f"PriorityClass {name} is missing and these credentials cannot create priorityclasses",
        f"create it: kubectl create priorityclass {name} --value={value} --preemption-policy={preemption_policy} "
        "--description='MaaS online inference'",
    )


def _check_rbac(client, namespace: str) -> PreflightCheck:
    """Every verb of the platform's permission list (rbac.PERMISSIONS), one SelfSubjectAccessReview each."""
    missing = missing_permissions(client, namespace=namespace)
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    if missing:
        return PreflightCheck(
            "rbac",
            False,
            f"these credentials cannot {', '.join(missing)} in {scope}",
            f"apply the ClusterRole {CLUSTER_ROLE_NAME} shown on the cluster page (kubectl apply -f) and bind it to "
            "the platform's service account",
        )
    return PreflightCheck(
        "rbac", True, f"the credentials hold every permission of ClusterRole {CLUSTER_ROLE_NAME} in {scope}", ""
    )


def _check_lws(client) -> tuple[PreflightCheck, dict | None]:
    """Whether the LeaderWorkerSet CRD is installed, and the CRD itself when it could be read."""
    crd = None
    try:
        found = crd = request(
            client, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{LWS_CRD}", not_found_ok=True
        )
    except KubeError as exc:
        if exc.kind != "forbidden":
            raise
        # Reading CRDs may be forbidden; API discovery is open to every authenticated user.
        found = request(client, "GET", "/apis/leaderworkerset.x-k8s.io/v1", not_found_ok=True)
    if found is None:
        check = PreflightCheck(
            "lws_crd",
            False,
            "the LeaderWorkerSet CRD is not installed: multi-node services are unavailable",
            "install LeaderWorkerSet: kubectl apply --server-side -f "
            "https://github.com/kubernetes-sigs/lws/releases/latest/download/manifests.yaml",
            blocking=False,
        )
        return check, None
    return PreflightCheck("lws_crd", True, "the LeaderWorkerSet CRD is installed", "", blocking=False), crd


def _check_lws_controller(client, crd: dict | None) -> PreflightCheck:
    """Whether the LeaderWorkerSet controller runs: without it a LeaderWorkerSet is accepted and never gets a pod.

    The released LWS manifests and its Helm chart run the controller as a Deployment labelled
    ``control-plane=controller-manager`` (``lws-controller-manager`` in ``lws-system``), and the same pods serve the
    CRD's conversion webhook (``spec.conversion.webhook.clientConfig.service``), so the namespace is taken from the
    CRD when it says so. The controller counts as running when one such Deployment has an available replica. When
    these credentials may not read Deployments there, the check passes with a note: a LeaderWorkerSet that then makes
    no progress is reported on its service after ``SERVICE_PROGRESS_TIMEOUT_S``.
    """
    service = (((crd or {}).get("spec") or {}).get("conversion") or {}).get("webhook") or {}
    namespace = ((service.get("clientConfig") or {}).get("service") or {}).get("namespace") or LWS_CONTROLLER_NAMESPACE
    fix = (
        f"start the LeaderWorkerSet controller: kubectl -n {namespace} get deploy,pods -l {LWS_CONTROLLER_SELECTOR} "
        "shows why it is not available (reinstall from the LWS release manifests if it is missing)"
    )
    try:
        found = (
            request(
                client,
                "GET",
                f"/apis/apps/v1/namespaces/{namespace}/deployments",
                query={"labelSelector": LWS_CONTROLLER_SELECTOR},
            ).get("items")
            or []
        )
    except KubeError as exc:
        if exc.kind != "forbidden":
            raise
        return PreflightCheck(
            "lws_controller",
            True,
            "could not verify the LeaderWorkerSet controller: "
            f"these credentials cannot list deployments in {namespace}",
            "",
            blocking=False,
        )
    available = [d for d in found if ((d.get("status") or {}).get("availableReplicas") or 0) > 0]
    if available:
        name = available[0]["metadata"]["name"]
        return PreflightCheck(
            "lws_controller",
            True,
            f"the LeaderWorkerSet controller ({namespace}/{name}) is running: multi-node services are available",
            "",
            blocking=False,
        )
    if found:
        name = found[0]["metadata"]["name"]
        message = f"the LeaderWorkerSet controller {namespace}/{name} has no available replica"
    else:
        message = f"the LeaderWorkerSet CRD is installed but its controller is not running (nothing in {namespace})"
    return PreflightCheck(
        "lws_controller", False, message + ": multi-node services are unavailable", fix, blocking=False
    )


def _check_storage_class(client) -> PreflightCheck:
    classes = request(client, "GET", "/apis/storage.k8s.io/v1/storageclasses").get("items") or []
    default = [
        c["metadata"]["name"]
        for c in classes
        if any(((c.get("metadata") or {}).get("annotations") or {}).get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)
    ]
    if default:
        return PreflightCheck("storage_class", True, f"default StorageClass {default[0]}", "", blocking=False)
    names = ", ".join(c["metadata"]["name"] for c in classes) or "none"
    return PreflightCheck(
        "storage_class",
        False,
        f"no default StorageClass (classes: {names}): model caches need a hostPath or a named claim",
        "mark one StorageClass as default: kubectl annotate storageclass <name> storageclass.kubernetes.io/is-default-class=true",  # noqa: E501
        blocking=False,
    )


def _refused_is_failed(key: str, check: Callable[[], PreflightCheck], *, blocking: bool = True) -> PreflightCheck:
    """A check whose read the credentials may not make fails with that reason; the other checks still run."""
    try:
        return check()
    except KubeError as exc:
        if exc.kind != "forbidden":
            raise
        return PreflightCheck(
            key, False, exc.message, f"apply the ClusterRole {CLUSTER_ROLE_NAME} shown on the cluster page", blocking
        )


def probe_cluster(
    kubeconfig_text: str,
    context: str | None,
    *,
    timeout: float = 10,
    namespace: str = "",
    priority_class: str = DEFAULT_PRIORITY_CLASS,
    priority_value: int = 1000,
    preemption_policy: str = "Never",
) -> ClusterProbe:
    """Connect, read version, nodes and GPU usage, and run the preflight checks.

    Raises KubeError when the cluster cannot be reached or the credentials are refused; a failing preflight
    check is reported in `checks`, not raised.
    """
    client = api_client(kubeconfig_text, context, timeout=timeout)
    try:
        version = request(client, "GET", "/version")
        node_list = request(client, "GET", "/api/v1/nodes")
        pod_list = request(
            client,
            "GET",
            "/api/v1/pods",
            query={"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"},
        )
        nodes = gpu_nodes(node_list, pod_list)
        checks = [
            _check_gpus(nodes),
            _refused_is_failed(
                "priority_class",
                lambda: _check_priority_class(client, priority_class, priority_value, preemption_policy),
            ),
            _check_rbac(client, namespace),
        ]
        lws, crd = _check_lws(client)
        checks.append(lws)
        if lws.ok:
            checks.append(_check_lws_controller(client, crd))
        checks.append(_refused_is_failed("storage_class", lambda: _check_storage_class(client), blocking=False))
    finally:
        client.close()
    return ClusterProbe(
        server_url=client.configuration.host,
        server_version=version.get("gitVersion", ""),
        nodes=nodes,
        checks=checks,
    )
