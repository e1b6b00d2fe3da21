"""The Kubernetes driver: a service is a Deployment (or a LeaderWorkerSet) and a Service in its org's namespace.

Every step is server-side apply and reads; a whole cluster is observed with a constant number of LISTs. The
cluster's kubeconfig is decrypted for each pass and never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext as _

from core.crypto import SecretDecryptError, decrypt
from core.i18n import Text
from deployments.drivers.base import ClusterUnavailable, DriverError, Observed, ObservedReplica, ReplicaAccess
from deployments.drivers.kube.access import replica_access
from deployments.drivers.kube.config import KubeClient, api_client
from deployments.drivers.kube.errors import KubeError
from deployments.drivers.kube.inventory import ClusterProbe, probe_cluster
from deployments.drivers.kube.manifests import WorkloadSpec
from deployments.drivers.kube.workloads import (
    WAITING_FOR_GPUS,
    WorkloadStatus,
    apply_workload,
    delete_namespace,
    delete_workload,
    missing_services,
    observe_workload,
    observe_workloads,
    platform_namespaces,
)
from deployments.models import Cluster, ClusterHealth, ModelCache, Service, ServiceStatus
from deployments.texts import TIMELINE

log = logging.getLogger(__name__)

KUBE_TIMEOUT_S = 10
PROBE_TIMEOUT_S = 10


def _cache_volume(cluster: Cluster) -> dict:
    if cluster.model_cache == ModelCache.PVC:
        return {"pvc": cluster.model_cache_path}
    if cluster.model_cache == ModelCache.HOST_PATH:
        return {"host_path": cluster.model_cache_path}
    return {}


def _hub_tokens(cluster: Cluster) -> dict[str, str]:
    try:
        tokens = {
            "HF_TOKEN": decrypt(cluster.hf_token_encrypted) if cluster.hf_token_encrypted else "",
            "MODELSCOPE_API_TOKEN": decrypt(cluster.modelscope_token_encrypted)
            if cluster.modelscope_token_encrypted
            else "",
        }
    except SecretDecryptError as exc:
        raise ClusterUnavailable("HubTokenUnreadable", str(exc)) from None
    return {key: value for key, value in tokens.items() if value}


def workload_spec(service: Service) -> WorkloadSpec:
    catalog = service.catalog_model
    cluster = service.cluster
    nodes = max(service.nodes_per_instance, 1)
    namespace_settings: dict = {}
    if cluster is not None:
        namespace_settings = {
            "cache_volume": _cache_volume(cluster),
            "hub_tokens": _hub_tokens(cluster),
            "image_mirror": cluster.image_mirror,
            "gpu_quota": cluster.org_gpu_quota,
            "access_mode": cluster.access_mode,
            "network_sources": tuple(cluster.network_source_list()),
            "ingress_namespace": cluster.ingress_namespace,
        }
    return WorkloadSpec(
        namespace=service.k8s_namespace,
        name=service.k8s_name,
        service_id=str(service.pk),
        org_namespace=service.org.namespace,
        served_model_name=service.model_id,
        runtime=service.runtime,
        image=service.image,
        model_source=f"{catalog.source_hub}:{catalog.source_repo}",
        gpu_count=service.gpu_count,
        gpus_per_node=service.gpu_count // nodes,
        nodes_per_instance=nodes,
        gpu_product=service.gpu_product or None,
        replicas=service.desired_instances,
        max_model_len=service.max_model_len,
        custom_args=[str(a) for a in service.runtime_args or []],
        cpu=service.cpu,
        memory_gb=service.memory_gb,
        shm_gb=max(1, min(16, service.memory_gb // 4)),
        **namespace_settings,
    )


def kube_client(cluster: Cluster) -> KubeClient:
    try:
        text = decrypt(cluster.kubeconfig_encrypted)
    except SecretDecryptError as exc:
        raise ClusterUnavailable("KubeconfigUnreadable", str(exc)) from None
    return api_client(text, cluster.context or None, timeout=KUBE_TIMEOUT_S)


def _shape_fits(cluster: Cluster, spec: WorkloadSpec) -> bool:
    """Whether the cluster's nodes (as last checked) could hold one instance once other pods free their GPUs."""
    inventory = cluster.inventory or {}
    entries = [inventory[spec.gpu_product]] if spec.gpu_product in inventory else list(inventory.values())
    if not entries:
        return True  # nothing known: let it wait
    return any(
        e.get("max_per_node", 0) >= spec.gpus_per_node and e.get("nodes", 0) >= spec.nodes_per_instance for e in entries
    )


def _from_status(status: WorkloadStatus, cluster: Cluster, spec: WorkloadSpec) -> Observed:
    phase, reason = status.phase, status.reason or ""
    message: str | Text = status.message or ""
    if reason == WAITING_FOR_GPUS:
        if _shape_fits(cluster, spec):
            message = TIMELINE("waiting_for_gpus", scheduler=message)
        else:  # no node is big enough (nodes changed since the placement): waiting would be forever
            phase, reason = ("Failed" if phase == "Pending" else phase), "Unschedulable"
            message = TIMELINE(
                "unschedulable",
                cluster=cluster.name,
                gpus=spec.gpus_per_node,
                product=spec.gpu_product or "GPU",
                scheduler=message,
            )
    return Observed(
        phase=phase,
        ready=status.ready,
        reason=reason,
        message=message,
        replicas=[ObservedReplica(e.pod_name, e.base_url, True) for e in status.endpoints],
        waiting_on=status.waiting_on,
    )


def _drift(status: WorkloadStatus, service_missing: bool) -> list[str]:
    if not status.exists:
        return ["workload missing"]
    return status.drift + (["Service missing"] if service_missing else [])


def _observe(
    client: KubeClient, cluster: Cluster, spec: WorkloadSpec, status: WorkloadStatus | None, drift: list[str]
) -> Observed:
    """The observation of one workload, after putting back what was changed behind the platform's back.

    Level-triggered: whenever the live state differs from the desired one in the platform's own fields (scaled,
    image swapped, workload or Service deleted), the desired state is applied again (server-side apply with force
    takes those fields back) and the workload observed once more.
    """
    ingress = cluster.ingress_base_url or None
    if status is None or drift:
        if drift:
            log.warning("%s/%s drifted (%s): applying the desired state again", spec.namespace, spec.name, drift)
            apply_workload(client, spec)
        status = observe_workload(client, spec, access_mode=cluster.access_mode, ingress_base_url=ingress)
    return _from_status(status, cluster, spec)


def nodes_summary(probe: ClusterProbe) -> list[dict]:
    return [
        {
            "name": n.name,
            "ready": n.ready,
            "schedulable": n.schedulable,
            "gpu_product": n.gpu_product or "",
            "gpu_memory_mb": n.gpu_memory_mb,
            "gpu_capacity": n.gpu_capacity,
            "gpu_allocated": n.gpu_allocated,
            "address": n.address,
        }
        for n in probe.nodes
    ]


def apply_probe(cluster: Cluster, probe: ClusterProbe) -> None:
    """Write what ``probe`` found onto ``cluster`` (not saved)."""
    cluster.server_url = probe.server_url
    cluster.server_version = probe.server_version
    cluster.nodes = nodes_summary(probe)
    cluster.inventory = probe.gpu_inventory()
    cluster.checks = [
        {"key": c.key, "ok": c.ok, "message": c.message, "fix": c.fix, "blocking": c.blocking} for c in probe.checks
    ]
    cluster.has_lws = probe.has_lws
    ready_nodes = any(n.ready for n in probe.nodes)
    cluster.health = ClusterHealth.READY if probe.ready and ready_nodes else ClusterHealth.DEGRADED
    cluster.last_error = (
        ""
        if cluster.health == ClusterHealth.READY
        else "; ".join(c.message for c in probe.checks if c.blocking and not c.ok) or _("no node is Ready")
    )
    cluster.last_checked_at = timezone.now()


@dataclass
class KubeReading:
    probe: ClusterProbe | None
    error: str = ""

    def apply(self, cluster: Cluster) -> None:
        if self.probe is None:
            cluster.health = ClusterHealth.UNREACHABLE
            cluster.last_error = self.error
            cluster.last_checked_at = timezone.now()
        else:
            apply_probe(cluster, self.probe)


class KubeDriver:
    has_kubeconfig = True

    def drive(self, cluster: Cluster, service: Service) -> Observed:
        # The same calls as the cluster pass: two paths reading differently (a GET here, a LIST there) made a
        # service flip between Failed and Running whenever the credentials allowed one read and not the other.
        outcomes = [o for _s, o in self.drive_cluster(cluster, [service], {"applied": 0, "deleted": 0})]
        outcome = outcomes[-1] if outcomes else Observed(phase="Missing")
        if isinstance(outcome, DriverError):
            raise outcome
        return outcome

    def drive_cluster(
        self, cluster: Cluster, services: list[Service], counts: dict[str, int]
    ) -> Generator[tuple[Service, Observed | DriverError], None, None]:
        client = kube_client(cluster)
        try:
            watched: list[tuple[Service, WorkloadSpec, bool]] = []
            for service in services:
                # A refused apply or delete is that service's outcome alone; the rest of the batch goes on.
                try:
                    if service.status == ServiceStatus.DELETING:
                        gone = delete_workload(client, service.k8s_namespace, service.k8s_name)
                        counts["deleted"] += 1
                        yield service, Observed(phase="Deleting", gone=gone)
                        continue
                    spec = workload_spec(service)
                    applied = service.observed_generation != service.generation
                    if applied:
                        apply_workload(client, spec)
                        counts["applied"] += 1
                except DriverError as exc:
                    yield service, exc
                    continue
                watched.append((service, spec, applied))
            if not watched:
                return
            statuses = observe_workloads(
                client,
                [spec for _service, spec, _applied in watched],
                access_mode=cluster.access_mode,
                ingress_base_url=cluster.ingress_base_url or None,
            )
            pairs = list(zip(watched, statuses, strict=True))
            unapplied = [spec for (_service, spec, applied), st in pairs if not applied and st.exists]
            missing = missing_services(client, unapplied) if unapplied else set()
            for (service, spec, applied), status in pairs:
                drift = [] if applied else _drift(status, (spec.namespace, spec.name) in missing)
                outcome: Observed | DriverError
                try:
                    outcome = _observe(client, cluster, spec, status, drift)
                except DriverError as exc:
                    outcome = exc
                counts["applied"] += bool(drift)
                yield service, outcome
        finally:
            client.close()

    def check(self, cluster: Cluster) -> KubeReading:
        try:
            text = decrypt(cluster.kubeconfig_encrypted)
            return KubeReading(
                probe_cluster(
                    text,
                    cluster.context,
                    timeout=PROBE_TIMEOUT_S,
                    priority_value=cluster.priority_value,
                    preemption_policy=cluster.priority_preemption,
                )
            )
        except KubeError as exc:
            return KubeReading(None, exc.message)
        except SecretDecryptError as exc:
            return KubeReading(None, str(exc))

    def reserve(self, cluster: Cluster, gpu_product: str, gpus: int) -> None:
        entry = (cluster.inventory or {}).get(gpu_product)
        if entry is not None and gpus:
            entry["allocated"] = entry.get("allocated", 0) + gpus
            entry["free"] = max(entry.get("free", 0) - gpus, 0)
            entry["max_free_per_node"] = min(entry.get("max_free_per_node", 0), entry["free"])

    def release(self, cluster: Cluster, gpu_product: str, gpus: int, gpus_per_node: int) -> None:
        # Until the next check: the node a released pod ran on has at least its GPUs free, so one instance of that
        # shape fits again. Never beyond what the nodes offer.
        entry = (cluster.inventory or {}).get(gpu_product)
        if entry is not None and gpus:
            entry["allocated"] = max(entry.get("allocated", 0) - gpus, 0)
            entry["free"] = min(entry.get("free", 0) + gpus, entry.get("allocatable", 0))
            entry["max_free_per_node"] = min(
                max(entry.get("max_free_per_node", 0), gpus_per_node), entry.get("max_per_node", 0), entry["free"]
            )

    def gpu_room(self, cluster: Cluster, service: Service, extra_instances: int) -> tuple[int, int]:
        entry = (cluster.inventory or {}).get(service.gpu_product) or {}
        return service.gpu_count * extra_instances, int(entry.get("free", 0))

    def replica_access(self, cluster: Cluster) -> ReplicaAccess:
        return replica_access(cluster)

    def remove_idle_namespaces(self, cluster: Cluster, keep: set[str]) -> list[str]:
        # Deleting the namespace takes its quota, network policy and hub-token Secret with it.
        client = kube_client(cluster)
        try:
            idle = [name for name in platform_namespaces(client) if name and name not in keep]
            for name in idle:
                delete_namespace(client, name)
            return idle
        finally:
            client.close()
