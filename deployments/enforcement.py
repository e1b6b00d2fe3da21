"""Stopping the pay-as-you-go services of organizations whose balance ran out, and keeping their autoscaling
subscription services at what the subscription covers.

Which organizations are overdrawn past the grace period is billing's decision (``billing.selectors.
overdrawn_org_ids``, a layer above this one); billing's periodic task hands their ids here. Subscription-mode
services are paid up front and keep running, but an autoscaling one may not run instances above its subscription's
floor (those are billed by the hour): its maximum is lowered to the floor (``overdrawn_autoscale_cap``). Services
already stopping, stopped, failed or being deleted are left alone. Each stop is a normal ``service_stop`` with its
own reason on the service's timeline and an audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction

from core.errors import ApplicationError
from deployments.models import BillingMode, Service, ServiceStatus
from deployments.services import service_autoscale_cap, service_stop
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


def overdrawn_autoscale_cap(*, floors: dict[UUID, int]) -> int:
    """Keep the autoscaling subscription services of overdrawn organizations (``floors``: service id → instances
    their subscription covers now, billing's figure) at that floor; returns how many were capped."""
    capped = 0
    for service_id, floor in floors.items():
        if floor < 1:  # nothing covered: the subscription lapsed, which renewal deals with
            continue
        try:
            service = service_autoscale_cap(
                service_id=service_id, high=floor, reason=OVERDRAWN_REASON, message=TIMELINE("overdrawn_cap", n=floor)
            )
        except ApplicationError as exc:
            logger.warning("could not cap service %s of an overdrawn org: %s", service_id, exc.message)
            continue
        if service is not None:
            audit_record(
                org=service.org, actor=None, action="billing.cap_overdrawn", target=service, data={"floor": floor}
            )
            capped += 1
    return capped
