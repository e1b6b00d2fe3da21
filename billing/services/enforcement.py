"""Stopping the pay-as-you-go services of organizations overdrawn past the grace period."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.models import (
    BillingAccount,
)
from core.errors import ApplicationError
from tenancy.services import audit_record

logger = logging.getLogger(__name__)

ADJUSTMENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # names one admin adjustment submission
# Usage before the first recorded price is charged with the first price (prices are seeded lazily).
PRICE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


def overdrawn_services_stop(*, now: datetime | None = None) -> int:
    """Stop the pay-as-you-go services of orgs overdrawn for longer than the grace period; returns how many."""
    from deployments.models import BillingMode, Service, ServiceStatus

    now = now or timezone.now()
    deadline = now - timedelta(hours=settings.BILLING_GRACE_HOURS)
    org_ids = list(BillingAccount.objects.filter(overdrawn_since__lte=deadline).values_list("org_id", flat=True))
    if not org_ids:
        return 0
    from deployments.services import service_stop

    stopping = (
        ServiceStatus.STOPPING,
        ServiceStatus.STOPPED,
        ServiceStatus.DELETING,
        ServiceStatus.DELETED,
        ServiceStatus.FAILED,
    )
    stopped = 0
    for service in (
        Service.objects.filter(org_id__in=org_ids, billing_mode=BillingMode.PAYG, desired_running=True)
        .exclude(status__in=stopping)
        .select_related("org")
    ):
        try:
            service_stop(service=service, actor=None)
        except ApplicationError as exc:
            logger.warning("could not stop %s of an overdrawn org: %s", service.model_id, exc.message)
            continue
        audit_record(
            org=service.org,
            actor=None,
            action="billing.stop_overdrawn",
            target=service,
            data={"grace_hours": settings.BILLING_GRACE_HOURS},
        )
        stopped += 1
    return stopped
