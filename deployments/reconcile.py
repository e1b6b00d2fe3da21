"""The reconcile loop: make each service's cluster match its desired state and record what is observed.

Level-triggered: every pass reads the desired state from the database, drives the cluster idempotently through the
cluster's driver (server-side apply, scale, delete; or local processes) and writes the observation. A pass claims
its service with a conditional UPDATE (``reconcile_claimed_until``) so two workers never drive the same service at
once; a claim left behind by a killed worker expires. Retryable driver errors (an unreachable API server, a
conflict) propagate so the Celery task retries with backoff; the others become the service's Failed status with the
driver's reason. A failure belongs to the service that caused it: the per-cluster pass records it for that service
and goes on with the others. Only what the service wants is recorded: ``ready_instances`` and the meter never exceed
the desired count, and Ready replicas beyond it (scaled up behind the platform's back, until the driver's re-apply
removes them) are kept but not routed to.

Waiting is not failing: a service whose pods wait for GPUs is Pending ("waiting for GPUs"); one whose cluster does
not answer keeps its status and says the cluster is unreachable; one that sits in Creating, Starting or Scaling with
no reason and no progress (no status change, no new ready instance) for ``SERVICE_PROGRESS_TIMEOUT_S`` gets the
reason ``NoProgress`` with what its workload waits on (a LeaderWorkerSet that never gets pods, say), until it moves.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from core.i18n import Text
from deployments.drivers import ClusterUnavailable, DriverError, Observed, driver_for
from deployments.events import meter_set, status_set
from deployments.models import Cluster, Replica, Service, ServiceStatus
from deployments.texts import TIMELINE

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120
BILLABLE_STATUSES = (ServiceStatus.RUNNING, ServiceStatus.SCALING)
NO_PROGRESS = "NoProgress"
CLUSTER_UNREACHABLE = "ClusterUnreachable"
# Statuses in which a service is expected to move on its own; sitting in one without a reason is "no progress".
_PROGRESSING = (ServiceStatus.CREATING, ServiceStatus.STARTING, ServiceStatus.SCALING)
_PHASE_STATUS = {
    "Pending": ServiceStatus.PENDING,  # waiting for GPUs
    "Creating": ServiceStatus.CREATING,
    "Starting": ServiceStatus.STARTING,
    "Running": ServiceStatus.RUNNING,
    "Scaling": ServiceStatus.SCALING,
    "Failed": ServiceStatus.FAILED,
    "Stopped": ServiceStatus.CREATING,  # desired > 0 but nothing runs yet
    "Missing": ServiceStatus.CREATING,
}


# --- claims -------------------------------------------------------------------------------------------------


def _claimable() -> Q:
    return Q(reconcile_claimed_until__isnull=True) | Q(reconcile_claimed_until__lt=timezone.now())


def claim(service_id) -> bool:
    until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    return Service.objects.filter(_claimable(), pk=service_id).update(reconcile_claimed_until=until) == 1


def release(service_ids) -> None:
    Service.objects.filter(pk__in=list(service_ids)).update(reconcile_claimed_until=None)


# --- drivers ------------------------------------------------------------------------------------------------


def drive(service: Service) -> Observed:
    """One idempotent step towards the desired state, on whatever driver the service's cluster uses."""
    cluster = service.cluster
    if cluster is None:
        raise ClusterUnavailable("NoCluster", "the service has no cluster")
    return driver_for(cluster).drive(cluster, service)


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
    if service.instances == 0:
        # Scaled to zero by its autoscaling policy: nothing runs, nothing is billed or routed, a request wakes it.
        return ServiceStatus.IDLE
    return _PHASE_STATUS.get(observed.phase, ServiceStatus.CREATING)


def _sync_replicas(service: Service, observed: Observed, now: datetime) -> None:
    """Mirror the observed replicas; only as many Ready ones as the service wants are routed to (ready=True)."""
    names = {r.name for r in observed.replicas}
    Replica.objects.filter(service=service).exclude(name__in=names).delete()
    routable = service.desired_instances
    for r in sorted(observed.replicas, key=lambda r: r.name):
        ready = r.ready and routable > 0
        routable -= ready
        Replica.objects.update_or_create(
            service=service,
            name=r.name,
            defaults={"base_url": r.base_url, "ready": ready, "pid": r.pid, "port": r.port, "observed_at": now},
        )


def _no_progress(service: Service, status: str, observed: Observed) -> Text | None:
    """The message when ``service`` (locked) sits in a progressing ``status`` past the timeout with nothing moving.

    Progress is any event on the service's timeline (a status or reason change, a ready instance more or less, a
    user's request) but the NoProgress one itself; once set, the reason stays until the service moves.
    """
    ready = min(observed.ready, service.desired_instances)
    if status not in _PROGRESSING or observed.reason or status != service.status or ready != service.ready_instances:
        return None
    moved = service.events.exclude(reason=NO_PROGRESS).aggregate(last=Max("created_at"))["last"]
    waited = timezone.now() - (moved or service.created_at)
    if service.status_reason != NO_PROGRESS and waited < timedelta(seconds=settings.SERVICE_PROGRESS_TIMEOUT_S):
        return None
    minutes = int(waited.total_seconds() // 60)
    if not observed.waiting_on:
        return TIMELINE("no_progress_unexplained", status=status, n=minutes)
    return TIMELINE("no_progress", status=status, n=minutes, waiting_on=str(observed.waiting_on))


def _enqueue_cluster_pass(cluster_id) -> None:
    """A cluster pass after a service's removal: it removes the namespace if that was its organization's last one."""
    from deployments.tasks import reconcile_cluster_task

    transaction.on_commit(lambda: reconcile_cluster_task.delay(str(cluster_id)))


def _billed_until(service: Service, observed: Observed, billable: int) -> datetime | None:
    """When fewer instances are billable because some were found gone: from when they were last seen running.

    Never before the service's last observation (``last_reconciled_at``): billing charges a running meter only up to
    the last observation, so a change dated from there never reaches into time already charged.
    """
    if observed.lost_since is None or billable >= service.billed_instances:
        return None
    return max(observed.lost_since, service.last_reconciled_at or observed.lost_since)


def record(service_id, observed: Observed, generation: int) -> Service | None:
    """Write one observation; skipped (None) when the desired state changed during the pass.

    ``last_reconciled_at`` is the service's heartbeat: billing charges running instances up to it and no further.
    """
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
        message = observed.message if reason else ""
        stalled = _no_progress(service, status, observed)
        if stalled:
            reason, message = NO_PROGRESS, stalled
        status_set(service=service, status=status, reason=reason, message=message)
        billable = min(observed.ready, service.desired_instances) if status in BILLABLE_STATUSES else 0
        meter_set(service=service, instances=billable, since=_billed_until(service, observed, billable))
        now = timezone.now()
        if status == ServiceStatus.DELETED:
            Replica.objects.filter(service=service).delete()
            if service.cluster_id is not None:
                _enqueue_cluster_pass(service.cluster_id)
        else:
            _sync_replicas(service, observed, now)
        # Replicas beyond the wanted count (scaled up behind the platform's back) are neither shown, billed nor routed.
        service.ready_instances = min(observed.ready, service.desired_instances)
        service.observed_generation = generation
        service.last_reconciled_at = now
        service.save()
        return service


def record_unreachable(service_id, error: DriverError) -> None:
    """The cluster did not answer: the status stays (nothing is known to have changed), the message says so."""
    with transaction.atomic():
        service = Service.objects.select_for_update(of=("self",)).select_related("cluster").get(pk=service_id)
        if service.status == ServiceStatus.DELETED:
            return
        cluster = service.cluster.name if service.cluster else "?"
        message = TIMELINE("unreachable", cluster=cluster, error=str(error.message))
        if status_set(service=service, status=service.status, reason=CLUSTER_UNREACHABLE, message=message):
            service.save()


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


@dataclass
class PassResult:
    outcome: str  # done | busy | requeue | gone
    status: str = ""


def reconcile_service(service_id) -> PassResult:
    """One reconcile pass for one service. Retryable DriverErrors propagate (the task retries with backoff)."""
    if not claim(service_id):
        return PassResult("busy")
    try:
        service = Service.objects.select_related("org", "cluster", "catalog_model").filter(pk=service_id).first()
        if service is None or service.status == ServiceStatus.DELETED:
            return PassResult("gone")
        generation = service.generation
        try:
            observed = drive(service)
        except DriverError as exc:
            if exc.unreachable:
                record_unreachable(service_id, exc)
            if exc.retryable:
                raise
            record_failure(service_id, generation, exc.reason, exc.message)
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


def remove_idle_namespaces(cluster: Cluster) -> list[str]:
    """Remove the namespaces of organizations with no service left on ``cluster`` (their last one is Deleted).

    A service counts until it is Deleted, so a namespace goes only after its last workload is gone. A service created
    while its namespace is being removed gets a retryable error on apply ("being terminated") and lands on the next
    pass, in a fresh namespace.
    """
    keep = {
        s.k8s_namespace
        for s in Service.objects.filter(cluster=cluster).exclude(status=ServiceStatus.DELETED).select_related("org")
    }
    removed = driver_for(cluster).remove_idle_namespaces(cluster, keep)
    if removed:
        log.info("cluster %s: removed idle namespaces %s", cluster.name, ", ".join(removed))
    return removed


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


def reconcile_cluster(cluster_id: Any) -> dict[str, int]:
    """One pass over every service of a cluster; Kubernetes reads are batched (a constant number of LISTs).

    A service whose own step failed is recorded alone (Failed, or left as it was for a retryable error) and the pass
    goes on with the others; a retryable one is raised once the rest are recorded, so the task retries. Only an
    error of the whole cluster fails the batch.
    """
    cluster = Cluster.objects.get(pk=cluster_id)
    services = _claim_cluster_services(cluster)
    counts = {"services": len(services), "applied": 0, "deleted": 0, "failed": 0, "namespaces_removed": 0}
    if not services:
        counts["namespaces_removed"] = len(remove_idle_namespaces(cluster))
        return counts
    retry: DriverError | None = None
    try:
        with closing(driver_for(cluster).drive_cluster(cluster, services, counts)) as outcomes:
            for service, outcome in outcomes:
                if not isinstance(outcome, DriverError):
                    record(service.pk, outcome, service.generation)
                elif outcome.retryable:
                    if outcome.unreachable:
                        record_unreachable(service.pk, outcome)
                    retry = retry or outcome
                else:
                    record_failure(service.pk, service.generation, outcome.reason, outcome.message)
                    counts["failed"] += 1
    except DriverError as exc:
        if exc.unreachable:
            for service in services:
                record_unreachable(service.pk, exc)
        if exc.retryable:
            raise
        for service in services:
            record_failure(service.pk, service.generation, exc.reason, exc.message)
        counts["failed"] = len(services)
        return counts  # the cluster refused the batch: nothing more to do there this pass
    finally:
        release(s.pk for s in services)
    counts["namespaces_removed"] = len(remove_idle_namespaces(cluster))
    if retry is not None:
        raise retry
    return counts
