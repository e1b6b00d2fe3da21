"""The reconcile loop: make each service's cluster match its desired state and record what is observed.

Level-triggered: every pass reads the desired state from the database, drives the cluster idempotently (server-side
apply, scale, delete; or local processes) and writes the observation. A pass claims its service with a conditional
UPDATE (``reconcile_claimed_until``) so two workers never drive the same service at once; a claim left behind by a
killed worker expires. Retryable Kubernetes errors propagate so the Celery task retries with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.crypto import SecretDecryptError, decrypt
from deployments.drivers import local
from deployments.drivers.kube import (
    KubeError,
    WorkloadSpec,
    api_client,
    apply_workload,
    delete_workload,
    observe_workload,
    observe_workloads,
)
from deployments.models import Cluster, ClusterDriver, Replica, Service, ServiceStatus
from deployments.services import meter_set, status_set

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120
KUBE_TIMEOUT_S = 10
BILLABLE_STATUSES = (ServiceStatus.RUNNING, ServiceStatus.SCALING)
_PHASE_STATUS = {
    "Creating": ServiceStatus.CREATING,
    "Starting": ServiceStatus.STARTING,
    "Running": ServiceStatus.RUNNING,
    "Scaling": ServiceStatus.SCALING,
    "Failed": ServiceStatus.FAILED,
    "Stopped": ServiceStatus.CREATING,  # desired > 0 but nothing runs yet
    "Missing": ServiceStatus.CREATING,
}


@dataclass
class ObservedReplica:
    name: str
    base_url: str
    ready: bool
    pid: int | None = None
    port: int | None = None


@dataclass
class Observed:
    phase: str
    ready: int = 0
    reason: str = ""
    message: str = ""
    replicas: list[ObservedReplica] = field(default_factory=list)
    gone: bool = False  # deleting: nothing of the service is left


class ClusterUnavailable(Exception):
    """The service's cluster cannot be driven now (no cluster, undecryptable kubeconfig)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


# --- claims -------------------------------------------------------------------------------------------------


def _claimable() -> Q:
    return Q(reconcile_claimed_until__isnull=True) | Q(reconcile_claimed_until__lt=timezone.now())


def claim(service_id) -> bool:
    until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    return Service.objects.filter(_claimable(), pk=service_id).update(reconcile_claimed_until=until) == 1


def release(service_ids) -> None:
    Service.objects.filter(pk__in=list(service_ids)).update(reconcile_claimed_until=None)


# --- drivers ------------------------------------------------------------------------------------------------


def workload_spec(service: Service) -> WorkloadSpec:
    catalog = service.catalog_model
    nodes = max(service.nodes_per_instance, 1)
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
    )


def kube_client(cluster: Cluster):
    try:
        text = decrypt(cluster.kubeconfig_encrypted)
    except SecretDecryptError as exc:
        raise ClusterUnavailable("KubeconfigUnreadable", str(exc)) from None
    return api_client(text, cluster.context or None, timeout=KUBE_TIMEOUT_S)


def _from_status(status) -> Observed:
    return Observed(
        phase=status.phase,
        ready=status.ready,
        reason=status.reason or "",
        message=status.message or "",
        replicas=[ObservedReplica(e.pod_name, e.base_url, True) for e in status.endpoints],
    )


def _observe_kube(client, service: Service, spec: WorkloadSpec, *, applied: bool) -> Observed:
    cluster = service.cluster
    options = {"access_mode": cluster.access_mode, "ingress_base_url": cluster.ingress_base_url or None}
    status = observe_workload(client, spec, **options)
    if not status.exists and not applied:
        # Someone deleted the workload behind the platform's back: level-triggered, so put it back.
        apply_workload(client, spec)
        status = observe_workload(client, spec, **options)
    return _from_status(status)


def drive(service: Service) -> Observed:
    """One idempotent step towards the desired state, on whatever driver the service's cluster uses."""
    cluster = service.cluster
    if cluster is None:
        raise ClusterUnavailable("NoCluster", "the service has no cluster")
    deleting = service.status == ServiceStatus.DELETING
    if cluster.driver == ClusterDriver.LOCAL:
        if deleting:
            return Observed(phase="Deleting", gone=local.stop_all(service))
        found = local.converge(service, service.desired_instances)
        return Observed(
            phase=found.phase,
            ready=found.ready,
            reason=found.reason,
            message=found.message,
            replicas=[ObservedReplica(r.name, r.base_url, r.ready, r.pid, r.port) for r in found.replicas],
        )
    client = kube_client(cluster)
    try:
        if deleting:
            return Observed(phase="Deleting", gone=delete_workload(client, service.k8s_namespace, service.k8s_name))
        spec = workload_spec(service)
        applied = service.observed_generation != service.generation
        if applied:
            apply_workload(client, spec)
        return _observe_kube(client, service, spec, applied=applied)
    finally:
        client.close()


# --- recording ----------------------------------------------------------------------------------------------


def _status_for(service: Service, observed: Observed) -> str:
    if service.status == ServiceStatus.DELETING:
        return ServiceStatus.DELETED if observed.gone else ServiceStatus.DELETING
    if not service.desired_running:
        return (
            ServiceStatus.STOPPED
            if observed.ready == 0 and observed.phase in ("Stopped", "Missing")
            else ServiceStatus.STOPPING
        )
    return _PHASE_STATUS.get(observed.phase, ServiceStatus.CREATING)


def _sync_replicas(service: Service, observed: Observed) -> None:
    names = {r.name for r in observed.replicas}
    Replica.objects.filter(service=service).exclude(name__in=names).delete()
    now = timezone.now()
    for r in observed.replicas:
        Replica.objects.update_or_create(
            service=service,
            name=r.name,
            defaults={"base_url": r.base_url, "ready": r.ready, "pid": r.pid, "port": r.port, "observed_at": now},
        )


def record(service_id, observed: Observed, generation: int) -> Service | None:
    """Write one observation; skipped (None) when the desired state changed during the pass."""
    with transaction.atomic():
        service = Service.objects.select_for_update().get(pk=service_id)
        if service.generation != generation or service.status == ServiceStatus.DELETED:
            return None
        status = _status_for(service, observed)
        reason = (
            observed.reason
            if status not in (ServiceStatus.RUNNING, ServiceStatus.STOPPED, ServiceStatus.DELETED)
            or observed.reason == "ProcessRestarted"
            else ""
        )
        status_set(service=service, status=status, reason=reason, message=observed.message if reason else "")
        billable = min(observed.ready, service.desired_instances) if status in BILLABLE_STATUSES else 0
        meter_set(service=service, instances=billable)
        if status == ServiceStatus.DELETED:
            Replica.objects.filter(service=service).delete()
        else:
            _sync_replicas(service, observed)
        service.ready_replicas = observed.ready if status != ServiceStatus.DELETED else 0
        service.observed_generation = generation
        service.last_reconciled_at = timezone.now()
        service.save()
        return service


def record_failure(service_id, generation: int, reason: str, message: str) -> None:
    with transaction.atomic():
        service = Service.objects.select_for_update().get(pk=service_id)
        if service.generation != generation or service.status == ServiceStatus.DELETED:
            return
        status = ServiceStatus.DELETING if service.status == ServiceStatus.DELETING else ServiceStatus.FAILED
        status_set(service=service, status=status, reason=reason, message=message)
        meter_set(service=service, instances=0)
        service.last_reconciled_at = timezone.now()
        service.save()


def _kube_reason(exc: KubeError) -> str:
    return "Cluster" + "".join(part.title() for part in exc.kind.split("_"))


@dataclass
class PassResult:
    outcome: str  # done | busy | requeue | gone
    status: str = ""


def reconcile_service(service_id) -> PassResult:
    """One reconcile pass for one service. Retryable KubeErrors propagate (the task retries with backoff)."""
    if not claim(service_id):
        return PassResult("busy")
    try:
        service = Service.objects.select_related("org", "cluster", "catalog_model").filter(pk=service_id).first()
        if service is None or service.status == ServiceStatus.DELETED:
            return PassResult("gone")
        generation = service.generation
        try:
            observed = drive(service)
        except ClusterUnavailable as exc:
            record_failure(service_id, generation, exc.reason, exc.message)
            return PassResult("done", ServiceStatus.FAILED)
        except KubeError as exc:
            if exc.retryable:
                raise
            record_failure(service_id, generation, _kube_reason(exc), exc.message)
            return PassResult("done", ServiceStatus.FAILED)
        written = record(service_id, observed, generation)
        if written is None:
            return PassResult("requeue")
        return PassResult("done", written.status)
    finally:
        release([service_id])


def needs_another_pass(status: str) -> bool:
    """Transitional states are polled again soon; steady ones wait for the periodic pass or a change."""
    return status in (
        ServiceStatus.PENDING,
        ServiceStatus.CREATING,
        ServiceStatus.STARTING,
        ServiceStatus.SCALING,
        ServiceStatus.STOPPING,
        ServiceStatus.DELETING,
    )


# --- whole clusters (periodic pass) -------------------------------------------------------------------------


def _claim_cluster_services(cluster: Cluster) -> list[Service]:
    until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    Service.objects.filter(_claimable(), cluster=cluster).exclude(status=ServiceStatus.DELETED).update(
        reconcile_claimed_until=until
    )
    return list(
        Service.objects.filter(cluster=cluster, reconcile_claimed_until=until)
        .select_related("org", "cluster", "catalog_model")
        .order_by("pk")
    )


def reconcile_cluster(cluster_id) -> dict:
    """One pass over every service of a cluster; Kubernetes reads are batched (a constant number of LISTs)."""
    cluster = Cluster.objects.get(pk=cluster_id)
    services = _claim_cluster_services(cluster)
    counts = {"services": len(services), "applied": 0, "deleted": 0, "failed": 0}
    if not services:
        return counts
    try:
        if cluster.driver == ClusterDriver.LOCAL:
            for service in services:
                generation = service.generation
                record(service.pk, drive(service), generation)
            return counts
        try:
            client = kube_client(cluster)
        except ClusterUnavailable as exc:
            for service in services:
                record_failure(service.pk, service.generation, exc.reason, exc.message)
            counts["failed"] = len(services)
            return counts
        try:
            _reconcile_kube_batch(client, cluster, services, counts)
        except KubeError as exc:
            if exc.retryable:
                raise
            for service in services:
                record_failure(service.pk, service.generation, _kube_reason(exc), exc.message)
            counts["failed"] = len(services)
        finally:
            client.close()
        return counts
    finally:
        release(s.pk for s in services)


def _reconcile_kube_batch(client, cluster: Cluster, services: list[Service], counts: dict) -> None:
    watched: list[tuple[Service, WorkloadSpec, int, bool]] = []
    for service in services:
        generation = service.generation
        if service.status == ServiceStatus.DELETING:
            gone = delete_workload(client, service.k8s_namespace, service.k8s_name)
            counts["deleted"] += 1
            record(service.pk, Observed(phase="Deleting", gone=gone), generation)
            continue
        spec = workload_spec(service)
        applied = service.observed_generation != generation
        if applied:
            apply_workload(client, spec)
            counts["applied"] += 1
        watched.append((service, spec, generation, applied))
    if not watched:
        return
    statuses = observe_workloads(
        client,
        [spec for _s, spec, _g, _a in watched],
        access_mode=cluster.access_mode,
        ingress_base_url=cluster.ingress_base_url or None,
    )
    for (service, spec, generation, applied), status in zip(watched, statuses, strict=False):
        if not status.exists and not applied:
            observed = _observe_kube(client, service, spec, applied=False)
            counts["applied"] += 1
        else:
            observed = _from_status(status)
        record(service.pk, observed, generation)
