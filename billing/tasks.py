"""Celery tasks: thin wrappers over billing.services (and, for enforcement, deployments.enforcement)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing import selectors, services
from deployments import enforcement

logger = logging.getLogger(__name__)


@shared_task(name="billing.tasks.charge_usage_task")
def charge_usage_task(max_seconds: float = 9.0) -> int:
    """Charge pending per-token usage, batch after batch, until none is left or ``max_seconds`` have passed.

    Bounded by time, not by a number of batches: a fixed count (20 × 500 per 10 s beat) capped charging at 1,000
    records/s whatever the rate of the gateway. A task that runs out of time leaves the rest to the next beat; two
    tasks running at once take disjoint batches (``FOR UPDATE SKIP LOCKED``).
    """
    total, deadline = 0, time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        charged = services.usage_charge_pending()
        total += charged
        if not charged:
            break
    return total


@shared_task(name="billing.tasks.settle_service_task", autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def settle_service_task(service_id: str) -> int:
    return len(services.service_settle(service_id=service_id))


@shared_task(name="billing.tasks.settle_instances_task")
def settle_instances_task() -> int:
    """Charge every service's instance time so far (as far as observed), so balances include it within minutes."""
    until = timezone.now()
    settled = 0
    for service_id in services.services_to_settle(until):
        try:
            services.service_settle(service_id=service_id, until=until)
        except Exception:  # one broken service must not hold up everyone else's settlement
            logger.exception("settling service %s failed", service_id)
            continue
        settled += 1
    return settled


@shared_task(name="billing.tasks.renew_subscriptions_task")
def renew_subscriptions_task() -> list[int]:
    return list(services.subscription_renew_due())


@shared_task(name="billing.tasks.stop_overdrawn_task")
def stop_overdrawn_task() -> int:
    """Billing decides which orgs are overdrawn past the grace period; the control plane stops their pay-as-you-go
    services and keeps their autoscaling subscription services at what the subscription covers."""
    org_ids = selectors.overdrawn_org_ids()
    stopped = enforcement.overdrawn_services_stop(org_ids=org_ids, grace_hours=settings.BILLING_GRACE_HOURS)
    capped = enforcement.overdrawn_autoscale_cap(floors=selectors.autoscaled_subscription_floors(org_ids))
    return stopped + capped
