"""Apply, observe, scale and delete a service's workload; level-triggered, a small constant number of API calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, overload
from urllib.parse import quote

from deployments.drivers.kube.config import (
    APPLY_PATCH,
    FIELD_MANAGER,
    MERGE_PATCH,
    KubeClient,
    api_client,
    credentials_of,
    request,
)
from deployments.drivers.kube.errors import KubeError
from deployments.drivers.kube.manifests import (
    DEFAULT_PRIORITY_CLASS,
    GPU_RESOURCE,
    HUB_TOKEN_SECRET,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_ORG,
    LABEL_SERVICE_ID,
    LWS_NAME_LABEL,
    LWS_WORKER_INDEX_LABEL,
    MANAGED_BY,
    WorkloadRef,
    WorkloadSpec,
    build_manifests,
    workload_manifest,
)

PLATFORM_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
_APPLY_QUERY = {"fieldManager": FIELD_MANAGER, "force": "true"}
_FAILING_WAIT_REASONS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
}


@dataclass
class ReplicaEndpoint:
    pod_name: str
    base_url: str  # root of the OpenAI server, without the trailing /v1
    headers: dict = field(default_factory=dict)
    tls_verify: bool | str = True  # or the path of a CA bundle
    client_cert: tuple[str, str] | None = None


@dataclass
class WorkloadStatus:
    exists: bool
    desired: int
    ready: int
    updated: int
    available: int
    phase: str  # Pending (waiting for GPUs) | Creating | Starting | Running | Scaling | Failed | Stopped | Missing
    reason: str | None = None
    message: str | None = None
    endpoints: list[ReplicaEndpoint] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # the platform's own fields that differ from its spec
    waiting_on: str = ""  # what a workload short of Running waits for when nothing failed (the first such pod)


@dataclass
class PlatformObject:
    """An object in the cluster that carries app.kubernetes.io/managed-by=maas."""

    kind: str
    namespace: str | None
    name: str
    service_id: str | None
    org: str | None
    labels: dict


def _plural(kind: str) -> tuple[str, str]:
    if kind == "LeaderWorkerSet":
        return "/apis/leaderworkerset.x-k8s.io/v1", "leaderworkersets"
    if kind == "Deployment":
        return "/apis/apps/v1", "deployments"
    raise ValueError(f"unknown workload kind {kind!r}")


def object_path(manifest: dict) -> str:
    """The URL path of a manifest's object."""
    kind, name = manifest["kind"], quote(manifest["metadata"]["name"])
    namespace = manifest["metadata"].get("namespace")
    if kind == "Namespace":
        return f"/api/v1/namespaces/{name}"
    if kind in ("Service", "ResourceQuota", "Secret"):
        return f"/api/v1/namespaces/{namespace}/{kind.lower()}s/{name}"
    if kind == "NetworkPolicy":
        return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    if kind == "PriorityClass":
        return f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}"
    prefix, plural = _plural(kind)
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}"


def _workload_path(ref: WorkloadRef) -> str:
    prefix, plural = _plural(ref.kind)
    return f"{prefix}/namespaces/{ref.namespace}/{plural}/{ref.name}"


def _ref(spec_or_ref: WorkloadSpec | WorkloadRef) -> WorkloadRef:
    return spec_or_ref.ref if isinstance(spec_or_ref, WorkloadSpec) else spec_or_ref


def apply(client, manifest: dict) -> dict:
    """Server-side apply one object as field manager "maas", taking over conflicting fields."""
    return request(client, "PATCH", object_path(manifest), query=_APPLY_QUERY, body=manifest, content_type=APPLY_PATCH)


def apply_workload(client, spec: WorkloadSpec) -> None:
    """Apply namespace, workload and Service; idempotent. Removes the other workload kind if the topology changed."""
    manifests = build_manifests(spec)
    for manifest in manifests:
        apply(client, manifest)
    if not any(m["kind"] == "Secret" for m in manifests):
        # The cluster's hub tokens were removed: so is the namespace's copy.
        request(client, "DELETE", f"/api/v1/namespaces/{spec.namespace}/secrets/{HUB_TOKEN_SECRET}", not_found_ok=True)
    # A service that moved between one node and several per instance leaves the old kind behind.
    other = WorkloadRef(
        spec.namespace, spec.name, "Deployment" if spec.kind == "LeaderWorkerSet" else "LeaderWorkerSet"
    )
    request(client, "DELETE", _workload_path(other), query={"propagationPolicy": "Background"}, not_found_ok=True)


def priority_class_manifest(name: str, value: int, preemption_policy: str) -> dict:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "value": value,
        "preemptionPolicy": preemption_policy,
        "description": "MaaS online inference services",
    }


def apply_priority_class(
    client, name: str = DEFAULT_PRIORITY_CLASS, value: int = 1000, preemption_policy: str = "Never"
) -> bool:
    """Make the platform's PriorityClass (cluster-scoped) have this value and policy; True when it changed.

    Value and preemptionPolicy are immutable, so a class that differs is deleted and created again: running pods
    keep the priority they were admitted with, new pods get the new one.
    """
    wanted = priority_class_manifest(name, value, preemption_policy)
    found = request(client, "GET", object_path(wanted), not_found_ok=True)
    if found is not None:
        if found.get("value") == value and found.get("preemptionPolicy", "PreemptLowerPriority") == preemption_policy:
            return False
        request(client, "DELETE", object_path(wanted), not_found_ok=True)
    apply(client, wanted)
    return True


def scale_workload(client, spec: WorkloadSpec | WorkloadRef, replicas: int) -> None:
    """Set the replica count through the scale subresource (one call)."""
    if replicas < 0:
        raise ValueError("replicas must not be negative")
    ref = _ref(spec)
    request(
        client, "PATCH", _workload_path(ref) + "/scale", body={"spec": {"replicas": replicas}}, content_type=MERGE_PATCH
    )


def _still_there(answer: dict | None) -> bool:
    return (
        answer is not None
        and answer.get("kind") != "Status"
        and bool((answer.get("metadata") or {}).get("deletionTimestamp"))
    )


def delete_workload(client, namespace: str, name: str) -> bool:
    """Delete the workload (either kind) and its Service; True when nothing of it is left, pods included.

    Call again until True: pods terminate gracefully after their owner is gone.
    """
    background = {"propagationPolicy": "Background"}
    pending = False
    for kind in ("Deployment", "LeaderWorkerSet"):
        answer = request(
            client, "DELETE", _workload_path(WorkloadRef(namespace, name, kind)), query=background, not_found_ok=True
        )
        pending |= _still_there(answer)
    answer = request(client, "DELETE", f"/api/v1/namespaces/{namespace}/services/{name}", not_found_ok=True)
    pending |= _still_there(answer)
    pods = _list(client, f"/api/v1/namespaces/{namespace}/pods", _pod_selector(name))
    return not pending and not pods


def delete_namespace(client, namespace: str) -> bool:
    """Delete an org's namespace (everything in it goes too); True once it is gone."""
    answer = request(client, "DELETE", f"/api/v1/namespaces/{namespace}", not_found_ok=True)
    return (
        answer is None or answer.get("kind") == "Status" or not (answer.get("metadata") or {}).get("deletionTimestamp")
    )


def platform_namespaces(client) -> list[str]:
    """The namespaces the platform made (one LIST)."""
    return [(n.get("metadata") or {}).get("name", "") for n in _list(client, "/api/v1/namespaces", PLATFORM_SELECTOR)]


@overload
def _list(
    client: KubeClient, path: str, selector: str, *, not_found_ok: Literal[False] = ..., fields: str | None = ...
) -> list[dict]: ...


@overload
def _list(
    client: KubeClient, path: str, selector: str, *, not_found_ok: bool, fields: str | None = ...
) -> list[dict] | None: ...


def _list(
    client: KubeClient, path: str, selector: str, *, not_found_ok: bool = False, fields: str | None = None
) -> list[dict] | None:
    query = {"labelSelector": selector} if selector else {}
    if fields:
        query["fieldSelector"] = fields
    answer = request(client, "GET", path, query=query or None, not_found_ok=not_found_ok)
    return None if answer is None else answer.get("items") or []


def list_platform_workloads(client) -> list[PlatformObject]:
    """Every namespace, Deployment, LeaderWorkerSet and Service the platform manages, cluster-wide (four calls)."""
    found = []
    sources = [
        ("Namespace", "/api/v1/namespaces"),
        ("Deployment", "/apis/apps/v1/deployments"),
        ("LeaderWorkerSet", "/apis/leaderworkerset.x-k8s.io/v1/leaderworkersets"),
        ("Service", "/api/v1/services"),
    ]
    for kind, path in sources:
        items = _list(client, path, PLATFORM_SELECTOR, not_found_ok=kind == "LeaderWorkerSet") or []
        for item in items:
            meta = item.get("metadata") or {}
            labels = meta.get("labels") or {}
            found.append(
                PlatformObject(
                    kind=kind,
                    namespace=meta.get("namespace"),
                    name=meta.get("name", ""),
                    service_id=labels.get(LABEL_SERVICE_ID),
                    org=labels.get(LABEL_ORG),
                    labels=dict(labels),
                )
            )
    return found


# ---------------------------------------------------------------------------------------------------- drift

# Where the pod templates sit in each workload kind's spec.
_TEMPLATES = {
    "Deployment": (("", ("template",)),),
    "LeaderWorkerSet": (
        ("leader ", ("leaderWorkerTemplate", "leaderTemplate")),
        ("worker ", ("leaderWorkerTemplate", "workerTemplate")),
    ),
}
_CONTAINER_FIELDS = ("image", "command", "args")


def _dig(obj: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        obj = obj.get(key) or {}
    return obj


def _gpu_limit(container: dict) -> str:
    # A whole number of GPUs: the API server keeps such a quantity as written ("8"), so strings compare.
    return str(((container.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, "0"))


def workload_drift(spec: WorkloadSpec, live: dict) -> list[str]:
    """How the live workload differs from what the platform applies, in its own fields (no API call).

    Replicas, the group size and each container's image, command, args and GPU limit: what ``kubectl scale``,
    ``set image``, ``set resources`` or ``edit`` change and what decides what runs and what it costs. Fields the API
    server defaults or normalizes (cpu and memory quantities, env order) are not compared, so a workload nobody
    touched never counts as drifted.
    """
    want, have = workload_manifest(spec)["spec"], live.get("spec") or {}
    drift = []
    if have.get("replicas", 1) != want["replicas"]:
        drift.append(f"replicas {have.get('replicas', 1)} (wants {want['replicas']})")
    size = (have.get("leaderWorkerTemplate") or {}).get("size", 1)
    if spec.kind == "LeaderWorkerSet" and size != spec.nodes_per_instance:
        drift.append(f"group size {size} (wants {spec.nodes_per_instance})")
    for role, path in _TEMPLATES[spec.kind]:
        live_containers = {c.get("name"): c for c in _dig(have, path).get("spec", {}).get("containers") or []}
        for container in _dig(want, path)["spec"]["containers"]:
            found = live_containers.get(container["name"])
            if found is None:
                drift.append(f"{role}container {container['name']} missing")
                continue
            drift.extend(
                f"{role}container {container['name']} {key}: {found.get(key)!r} (wants {container.get(key)!r})"
                for key in _CONTAINER_FIELDS
                if found.get(key) != container.get(key)
            )
            gpus, wanted_gpus = _gpu_limit(found), _gpu_limit(container)
            if gpus != wanted_gpus:
                drift.append(f"{role}container {container['name']} {GPU_RESOURCE}: {gpus} (wants {wanted_gpus})")
    return drift


def missing_services(client, specs_or_refs: Sequence[WorkloadSpec | WorkloadRef]) -> set[tuple[str, str]]:
    """(namespace, name) of the workloads among ``specs_or_refs`` whose Kubernetes Service is gone.

    One label-selected LIST: cluster-wide when they span several namespaces (per namespace when that is forbidden).
    """
    refs = [_ref(item) for item in specs_or_refs]
    wanted = {(r.namespace, r.name) for r in refs}
    namespaces = sorted({r.namespace for r in refs})
    if len(namespaces) > 1:
        try:
            items = _list(client, "/api/v1/services", PLATFORM_SELECTOR)
            return wanted - {(i["metadata"].get("namespace"), i["metadata"]["name"]) for i in items}
        except KubeError as exc:
            if exc.kind != "forbidden":
                raise
    present = {
        (namespace, item["metadata"]["name"])
        for namespace in namespaces
        for item in _list(client, f"/api/v1/namespaces/{namespace}/services", PLATFORM_SELECTOR)
    }
    return wanted - present


# ---------------------------------------------------------------------------------------------------- observing


def _pod_selector(name: str) -> str:
    return f"{LABEL_NAME}={name},{PLATFORM_SELECTOR}"


def _is_ready(pod: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _is_leader(pod: dict) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return LWS_NAME_LABEL not in labels or labels.get(LWS_WORKER_INDEX_LABEL) == "0"


def _memory_limit(pod: dict, container_name: str) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == container_name:
            return ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def pod_failure(pod: dict) -> tuple[str, str | None] | None:
    """Why a pod cannot serve, from its conditions and container states, or None."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("reason") or "Unschedulable", condition.get("message")
    if status.get("phase") == "Failed":
        return status.get("reason") or "Failed", status.get("message")
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state, last = container.get("state") or {}, container.get("lastState") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or last.get("terminated") or {}
        name = container.get("name", "")
        if terminated.get("reason") == "OOMKilled" and (waiting or state.get("terminated")):
            limit = _memory_limit(pod, name)
            default = (
                f"container {name} ran out of memory{f' (limit {limit})' if limit else ''} and was killed; "
                f"restarted {container.get('restartCount', 0)} times"
            )
            return "OOMKilled", terminated.get("message") or default
        if waiting.get("reason") in _FAILING_WAIT_REASONS:
            if waiting["reason"] == "CrashLoopBackOff" and terminated.get("message"):
                return "CrashLoopBackOff", terminated["message"].strip()
            return waiting["reason"], waiting.get("message")
    return None


WAITING_FOR_GPUS = "WaitingForGPUs"


def _waits_for_gpus(failure: tuple[str, str | None]) -> bool:
    """An Unschedulable pod whose only trouble is GPUs taken by others: it is placed as soon as they are freed."""
    return failure[0] == "Unschedulable" and f"Insufficient {GPU_RESOURCE}" in (failure[1] or "")


def _waiting_on(ref: WorkloadRef, live: list[dict]) -> str:
    if not live:
        if ref.kind == "LeaderWorkerSet":
            return (
                "the LeaderWorkerSet has no pods: is the LeaderWorkerSet controller running "
                "(kubectl -n lws-system get deploy lws-controller-manager)?"
            )
        return "the Deployment has no pods: its controller creates none (kubectl describe replicaset)"
    for pod in sorted(live, key=lambda p: p["metadata"]["name"]):
        if _is_ready(pod):
            continue
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        if not (pod.get("spec") or {}).get("nodeName"):
            return f"pod {name} is not scheduled yet"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting is not None:
                return (
                    f"pod {name}: container {container.get('name')} is waiting ({waiting.get('reason') or 'no reason'})"
                )
        return f"pod {name} runs but is not Ready (the engine is loading or its readiness check fails)"
    return ""


def _workload_failure(obj: dict) -> tuple[str, str | None] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return condition.get("reason") or "ReplicaFailure", condition.get("message")
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", condition.get("message")
    return None


def _event_time(event: dict) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _event_for(ref: WorkloadRef, pods: list[dict], events: list[dict]) -> dict | None:
    names = {(p.get("metadata") or {}).get("name") for p in pods}
    relevant = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("name") in names
        or (e.get("involvedObject") or {}).get("name", "").startswith(ref.name + "-")
        or (e.get("involvedObject") or {}).get("name") == ref.name
    ]
    return max(relevant, key=_event_time) if relevant else None


@dataclass
class _Access:
    mode: str
    ingress_base_url: str | None
    server: str
    headers: dict
    tls_verify: bool | str
    client_cert: tuple[str, str] | None


def _access(
    client, access_mode: str, ingress_base_url: str | None, kubeconfig_text: str | None, context: str | None
) -> _Access:
    if access_mode not in ("proxy", "pod_ip", "ingress"):
        raise ValueError(f"access_mode {access_mode!r} is not one of proxy, pod_ip, ingress")
    if access_mode == "ingress" and not ingress_base_url:
        raise ValueError("access_mode 'ingress' needs ingress_base_url")
    source = api_client(kubeconfig_text, context) if kubeconfig_text else client
    creds = credentials_of(source)
    if source is not client:
        source.close()
    return _Access(access_mode, ingress_base_url, creds.server, creds.headers, creds.tls_verify, creds.client_cert)


def _endpoints(ref: WorkloadRef, pods: list[dict], ready: int, access: _Access) -> list[ReplicaEndpoint]:
    if access.mode == "ingress":
        if ready <= 0:
            return []
        return [
            ReplicaEndpoint(
                pod_name=ref.name, base_url=f"{(access.ingress_base_url or '').rstrip('/')}/{ref.namespace}/{ref.name}"
            )
        ]
    endpoints = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or not _is_ready(pod) or not _is_leader(pod):
            continue
        if access.mode == "pod_ip":
            ip = (pod.get("status") or {}).get("podIP")
            if ip:
                host = f"[{ip}]" if ":" in ip else ip
                endpoints.append(
                    ReplicaEndpoint(pod_name=meta["name"], base_url=f"http://{host}:{ref.port}", tls_verify=False)
                )
        else:
            endpoints.append(
                ReplicaEndpoint(
                    pod_name=meta["name"],
                    base_url=f"{access.server}/api/v1/namespaces/{ref.namespace}/pods/{meta['name']}:{ref.port}/proxy",
                    headers=dict(access.headers),
                    tls_verify=access.tls_verify,
                    client_cert=access.client_cert,
                )
            )
    return endpoints


def _summarize(ref: WorkloadRef, obj: dict | None, pods: list[dict], access: _Access) -> WorkloadStatus:
    if obj is None:
        return WorkloadStatus(exists=False, desired=0, ready=0, updated=0, available=0, phase="Missing")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas", ready) if ref.kind == "Deployment" else ready
    available = available or 0
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    failure, waiting = _workload_failure(obj), None
    for pod in sorted(live, key=lambda p: p["metadata"]["name"]):
        found = pod_failure(pod)
        if found and _waits_for_gpus(found):
            waiting = waiting or (WAITING_FOR_GPUS, found[1])
            continue
        failure = found or failure
        if failure and failure[0] != "ProgressDeadlineExceeded":
            break
    if waiting and (failure is None or failure[0] == "ProgressDeadlineExceeded"):
        failure = waiting  # no pod failed: it waits for GPUs (and its progress deadline passed while it did)
    if desired == 0:
        phase = "Stopped" if not pods else "Scaling"
    elif ready >= desired and updated >= desired:
        phase = "Running"
    elif failure and ready == 0:
        phase = "Pending" if failure[0] == WAITING_FOR_GPUS else "Failed"
    elif ready > 0:
        phase = "Scaling"
    elif any(
        "running" in (c.get("state") or {})
        for p in live
        for c in (p.get("status") or {}).get("containerStatuses") or []
    ):
        phase = "Starting"  # containers run: the engine is loading weights
    else:
        phase = "Creating"  # scheduling, pulling the image
    reason, message = failure if failure and desired > 0 else (None, None)
    return WorkloadStatus(
        exists=True,
        desired=desired,
        ready=ready,
        updated=updated,
        available=available,
        phase=phase,
        reason=reason,
        message=message,
        endpoints=_endpoints(ref, live, ready, access),
        waiting_on=_waiting_on(ref, live) if desired > 0 and phase != "Running" and not reason else "",
    )


def _needs_events(result: WorkloadStatus) -> bool:
    return result.phase == "Failed" or bool(result.reason and not result.message)


def _add_event(result: WorkloadStatus, ref: WorkloadRef, pods: list[dict], events: list[dict]) -> None:
    event = _event_for(ref, pods, events)
    if event is None:
        return
    if not result.message:
        result.message = event.get("message")
    if not result.reason:
        result.reason = event.get("reason")


def observe_workload(
    client,
    spec_or_ref: WorkloadSpec | WorkloadRef,
    *,
    access_mode: str = "proxy",
    ingress_base_url: str | None = None,
    kubeconfig_text: str | None = None,
    context: str | None = None,
) -> WorkloadStatus:
    """Where one service's workload stands and how to reach its Ready replicas.

    Two API calls (workload, pods); a third (Warning events) only when the workload is failing; one when missing.
    """
    ref = _ref(spec_or_ref)
    access = _access(client, access_mode, ingress_base_url, kubeconfig_text, context)
    obj = request(client, "GET", _workload_path(ref), not_found_ok=True)
    if obj is None:
        return _summarize(ref, None, [], access)
    pods = _list(client, f"/api/v1/namespaces/{ref.namespace}/pods", _pod_selector(ref.name))
    result = _summarize(ref, obj, pods, access)
    if isinstance(spec_or_ref, WorkloadSpec):
        result.drift = workload_drift(spec_or_ref, obj)
    if _needs_events(result):
        events = _list(client, f"/api/v1/namespaces/{ref.namespace}/events", "", fields="type=Warning")
        _add_event(result, ref, pods, events)
    return result


def _owner_name(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_NAME)


def observe_workloads(
    client,
    specs_or_refs: list[WorkloadSpec | WorkloadRef],
    *,
    access_mode: str = "proxy",
    ingress_base_url: str | None = None,
    kubeconfig_text: str | None = None,
    context: str | None = None,
    cluster_wide: bool | None = None,
) -> list[WorkloadStatus]:
    """observe_workload for many services at once, in input order, with label-selected LISTs.

    Cluster-wide (default when the services span several namespaces): Deployments + pods (+ LeaderWorkerSets when
    any service is multi-node) = 2–3 calls for any number of services, plus one Warning-events LIST per namespace
    with a failing service. Falls back to the same LISTs per namespace when cluster-wide reads are forbidden.
    """
    refs = [_ref(item) for item in specs_or_refs]
    if not refs:
        return []
    access = _access(client, access_mode, ingress_base_url, kubeconfig_text, context)
    namespaces = sorted({r.namespace for r in refs})
    kinds = sorted({r.kind for r in refs})
    if cluster_wide is None:
        cluster_wide = len(namespaces) > 1

    objects: dict[tuple[str, str, str], dict] = {}
    pods_by: dict[tuple[str, str], list[dict]] = {}

    def load(scopes: Sequence[str | None]) -> None:
        for namespace in scopes:
            where = f"/namespaces/{namespace}" if namespace else ""
            for kind in kinds:
                prefix, plural = _plural(kind)
                items = _list(
                    client, f"{prefix}{where}/{plural}", PLATFORM_SELECTOR, not_found_ok=kind == "LeaderWorkerSet"
                )
                for item in items or []:
                    meta = item["metadata"]
                    objects[(kind, meta.get("namespace", namespace), meta["name"])] = item
            for pod in _list(client, f"/api/v1{where}/pods", PLATFORM_SELECTOR):
                owner = _owner_name(pod)
                if owner:
                    pods_by.setdefault((pod["metadata"].get("namespace", namespace), owner), []).append(pod)

    if cluster_wide:
        try:
            load([None])
        except KubeError as exc:
            if exc.kind != "forbidden":
                raise
            objects.clear()
            pods_by.clear()
            load(namespaces)
    else:
        load(namespaces)

    results = []
    failing_namespaces = set()
    for item, ref in zip(specs_or_refs, refs, strict=True):
        obj = objects.get((ref.kind, ref.namespace, ref.name))
        result = _summarize(ref, obj, pods_by.get((ref.namespace, ref.name), []), access)
        if obj is not None and isinstance(item, WorkloadSpec):
            result.drift = workload_drift(item, obj)
        results.append(result)
        if result.exists and _needs_events(result):
            failing_namespaces.add(ref.namespace)
    for namespace in sorted(failing_namespaces):
        events = _list(client, f"/api/v1/namespaces/{namespace}/events", "", fields="type=Warning")
        for ref, result in zip(refs, results, strict=False):
            if ref.namespace == namespace and result.exists and _needs_events(result):
                _add_event(result, ref, pods_by.get((ref.namespace, ref.name), []), events)
    return results
