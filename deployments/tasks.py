"""Celery tasks of the deployments app: thin wrappers over deployments.reconcile and deployments.services."""

from __future__ import annotations

import logging

from celery import shared_task

from deployments import reconcile
from deployments.drivers import DriverError
from deployments.models import Cluster, ServiceStatus

log = logging.getLogger(__name__)

# Transitional services are looked at again this soon; a busy service (another worker holds it) a little later.
POLL_SECONDS = 3
BUSY_RETRY_SECONDS = 2
# ...and this soon while requests wait for it (a woken service): they are sent once a pass sees a ready instance.
WAKE_POLL_SECONDS = 0.5


def _poll_seconds(service_id: str) -> float:
    from deployments.serving_signals import signals_read

    try:
        held = signals_read([service_id])[service_id].held
    except Exception as exc:  # Redis away: poll at the usual pace
        log.warning("could not read the serving signals of %s: %r", service_id, exc)
        return POLL_SECONDS
    return WAKE_POLL_SECONDS if held else POLL_SECONDS


@shared_task(bind=True, name="deployments.reconcile_service", acks_late=True, max_retries=8)
def reconcile_service_task(self, service_id: str) -> str:
    try:
        result = reconcile.reconcile_service(service_id)
    except DriverError as exc:
        # Retryable (unreachable, timeout, conflict, 5xx): exponential backoff 2, 4, 8 … 256 s, then the beat pass.
        log.warning("reconcile %s: %s (retry %d)", service_id, exc.message, self.request.retries)
        raise self.retry(exc=exc, countdown=min(2 ** (self.request.retries + 1), 256)) from None
    if result.outcome == "busy":
        reconcile_service_task.apply_async((service_id,), countdown=BUSY_RETRY_SECONDS)
    elif result.outcome == "requeue" or reconcile.needs_another_pass(result.status):
        countdown = 0 if result.outcome == "requeue" else _poll_seconds(service_id)
        reconcile_service_task.apply_async((service_id,), countdown=countdown)
    return result.outcome


@shared_task(name="deployments.reconcile_cluster", acks_late=True)
def reconcile_cluster_task(cluster_id: str) -> dict:
    try:
        return reconcile.reconcile_cluster(cluster_id)
    except DriverError as exc:
        log.warning("reconcile cluster %s: %s", cluster_id, exc.message)  # the next beat pass tries again
        return {"error": exc.message}


@shared_task(name="deployments.reconcile_all")
def reconcile_all_task() -> int:
    """Beat: one pass over every cluster that has services."""
    live = [s for s in ServiceStatus.values if s != ServiceStatus.DELETED]
    ids = list(Cluster.objects.filter(services__status__in=live).values_list("pk", flat=True).distinct())
    for cluster_id in ids:
        reconcile_cluster_task.delay(str(cluster_id))
    return len(ids)


@shared_task(name="deployments.check_cluster", acks_late=True)
def check_cluster_task(cluster_id: str) -> str:
    from deployments.services import cluster_check

    return cluster_check(cluster_id=cluster_id).health


@shared_task(name="deployments.check_clusters")
def check_clusters_task() -> int:
    """Beat, every minute: reachability, Ready nodes and GPU inventory of every cluster."""
    ids = list(Cluster.objects.values_list("pk", flat=True))
    for cluster_id in ids:
        check_cluster_task.delay(str(cluster_id))
    return len(ids)
