"""Stopping the pay-as-you-go services of organizations whose balance ran out.

Which organizations are overdrawn past the grace period is billing's decision (``billing.selectors.
overdrawn_org_ids``, a layer above this one); billing's periodic task hands their ids here. Subscription-mode
services are paid up front and keep running; services already stopping, stopped, failed or being deleted are left
alone. Each stop is a normal ``service_stop`` with its own reason on the service's timeline and an audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction

from core.errors import ApplicationError
from deployments.models import BillingMode, Service, ServiceStatus
from deployments.services import service_stop
from deployments.texts import TIMELINE
from tenancy.services import audit_record

logger = logging.getLogger(__name__)

OVERDRAWN_REASON = "Overdrawn"
# A service in one of these states is not running up charges (or is already on its way down).
_NOT_ENFORCED = (
    ServiceStatus.STOPPING,
    ServiceStatus.STOPPED,
    ServiceStatus.DELETING,
    ServiceStatus.DELETED,
    ServiceStatus.FAILED,
)


def overdrawn_services_stop(*, org_ids: Iterable[UUID], grace_hours: int) -> int:
    """Stop the running pay-as-you-go services of ``org_ids`` (overdrawn for ``grace_hours``); returns how many."""
    org_ids = list(org_ids)
    if not org_ids:
        return 0
    services = (
        Service.objects.filter(org_id__in=org_ids, billing_mode=BillingMode.PAYG, desired_running=True)
        .exclude(status__in=_NOT_ENFORCED)
        .select_related("org")
    )
    message = TIMELINE("overdrawn", n=grace_hours)
    stopped = 0
    for service in services:
        try:
            with transaction.atomic():
                service_stop(service=service, actor=None, reason=OVERDRAWN_REASON, message=message)
                audit_record(
                    org=service.org,
                    actor=None,
                    action="billing.stop_overdrawn",
                    target=service,
                    data={"grace_hours": grace_hours},
                )
        except ApplicationError as exc:  # deleted meanwhile: one service must not hold up the others
            logger.warning("could not stop %s of an overdrawn org: %s", service.model_id, exc.message)
            continue
        stopped += 1
    return stopped
