"""Per-instance-hour charging of dedicated pay-as-you-go services, from their meter timeline.

Instance time is charged as it accrues, not when its clock hour closes: the settlement beat
(``settle_instances_task``, every few minutes) posts each service's time up to the moment it was last observed, so
the balance and the month's spend shown to the user include running services within one settle period, and what
was shown is what the ledger holds (there is no second, estimated figure).

Charged only as far as observed: while the meter says instances run, a settlement goes no further than the
service's last observation (its last meter event or reconcile heartbeat, ``Service.last_reconciled_at``). Time after
it is unknown until the next observation: instances that kept running (a Kubernetes cluster while the platform was
down) are charged then; instances found gone (local processes that died with the platform) end their meter at the
moment they were last seen, which is never before that heartbeat (``deployments.reconcile``), so it never reaches
into time already charged.

Subscription-mode services pay by the month for a floor of instances (their subscription's count, with its
add-ons); instances running above it (autoscaled up) are charged here at the pay-as-you-go rate, per second, and
time below it refunds nothing (``pricing.InstanceTimeline``: ``max(0, running - covered)``). A settlement cuts its
segments where the floor changes (a subscription starts, an add-on is bought, a period ends), so each row is charged
against one floor and says so ("above the subscription's N instances").

Exactly once: the cursor (``MeterCursor``) moves forward under its row lock, each posting's key is (service, clock
hour, segment start), and a clock hour's segments are differences of that hour's cumulative cost rounded once, so
any number of settlements of an hour add up to what one settlement of the whole hour would charge.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from billing import pricing
from billing.models import (
    EntryKind,
    LedgerEntry,
    MeterCursor,
    Subscription,
    SubscriptionStatus,
)
from billing.services.ledger import ledger_post
from billing.texts import LEDGER
from deployments.models import EventKind

if TYPE_CHECKING:
    from deployments.models import Service

logger = logging.getLogger(__name__)


def _timeline(service: Service) -> pricing.InstanceTimeline:
    rows = (
        service.events.filter(kind=EventKind.METER, billable_instances__isnull=False)
        .order_by("created_at", "id")  # the order written: of two changes at one moment the later wins
        .values_list("created_at", "billable_instances")
    )
    meter = [(at, instances) for at, instances in rows if instances is not None]
    coverage = [
        pricing.Coverage(s.period_start, s.period_end, s.instances)
        for s in Subscription.objects.filter(service=service).exclude(status=SubscriptionStatus.CANCELLED)
    ]
    return pricing.InstanceTimeline(meter, coverage)


def _is_platform_service(service: Service) -> bool:
    from deployments.models import PUBLIC_NAMESPACE

    return bool(service.org.namespace == PUBLIC_NAMESPACE)


def _observed_until(service: Service, last_meter: tuple[datetime, int | None] | None) -> datetime | None:
    """How far the meter is known: the last observation while instances run; None (no limit) while none do."""
    if last_meter is None or not last_meter[1]:
        return None
    at = last_meter[0]
    return max(at, service.last_reconciled_at) if service.last_reconciled_at else at


def service_settle(*, service_id: UUID | str, until: datetime | None = None) -> list[LedgerEntry]:
    """Charge a service's instance time up to ``until`` (default now) as far as observed, one entry per hour touched.

    Idempotent and safe to call any time (the settlement beat, scale, stop, delete): the cursor only moves forward
    under its row lock, each (service, window, segment start) posts once, and a window's partial charges are
    differences of the window's cumulative cost rounded once, so settlements every few minutes charge exactly what
    one settlement after the hour would have.
    """
    from deployments.models import Service

    now = timezone.now()
    until = min(until or now, now)
    entries: list[LedgerEntry] = []
    with transaction.atomic():
        service = Service.objects.select_related("org").filter(pk=service_id).first()
        if service is None or _is_platform_service(service):
            return entries
        first_meter = (
            service.events.filter(kind=EventKind.METER)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        if first_meter is None:
            return entries
        MeterCursor.objects.get_or_create(service=service, defaults={"charged_until": first_meter})
        cursor = MeterCursor.objects.select_for_update().get(service=service)
        # A reconcile pass dates a change no earlier than the heartbeat and the latest meter event it read, both
        # never newer than what is read here: time charged up to them is never taken back by a later change.
        last_meter = (
            service.events.filter(kind=EventKind.METER, billable_instances__isnull=False)
            .order_by("-created_at", "-id")
            .values_list("created_at", "billable_instances")
            .first()
        )
        observed = _observed_until(service, last_meter)
        if observed is not None:
            until = min(until, observed)
        if cursor.charged_until >= until:
            return entries
        timeline = _timeline(service)
        start = cursor.charged_until
        while start < until:
            window = pricing.hour_floor(start)
            end = timeline.next_coverage_change(start, min(window + pricing.HOUR, until))
            covered = timeline.covered_at(start)
            amount = timeline.window_cost(window, end, service.hourly_price) - timeline.window_cost(
                window, start, service.hourly_price
            )
            if amount:
                entry, _created = ledger_post(
                    org=service.org,
                    kind=EntryKind.INSTANCE_CHARGE,
                    amount=-amount,
                    key=f"instance:{service.pk}:{window:%Y%m%dT%H}:{start.isoformat()}",
                    description=(
                        LEDGER("instance_time_above_subscription", n=covered, service=service.model_id)
                        if covered
                        else LEDGER("instance_time", service=service.model_id)
                    ),
                    service=service,
                    period_start=start,
                    period_end=end,
                    data={
                        "instance_seconds": str(timeline.billable_seconds(start, end)),
                        "hourly_price": str(service.hourly_price),
                        "covered_instances": covered,
                    },
                )
                entries.append(entry)
            start = end
        cursor.charged_until = until
        cursor.save(update_fields=["charged_until", "updated_at"])
    return entries


def services_to_settle(until: datetime) -> list[UUID]:
    """Ids of services with instance time not yet charged up to ``until``."""
    from deployments.models import PUBLIC_NAMESPACE, Service

    metered = (
        Service.objects.exclude(org__namespace=PUBLIC_NAMESPACE)
        .filter(events__kind=EventKind.METER)
        .distinct()
        .values_list("pk", flat=True)
    )
    cursors = dict(MeterCursor.objects.filter(service_id__in=metered).values_list("service_id", "charged_until"))
    pending = []
    for service_id in metered:
        charged_until = cursors.get(service_id)
        if charged_until is not None and charged_until >= until:
            continue
        if charged_until is not None:
            # Nothing to charge when no instance ran since the cursor and none was running at it.
            from deployments.models import ServiceEvent

            meter = ServiceEvent.objects.filter(service_id=service_id, kind=EventKind.METER)
            last = meter.filter(created_at__lte=charged_until).order_by("-created_at", "-id").first()
            if (last is None or not last.billable_instances) and not meter.filter(
                created_at__gt=charged_until
            ).exists():
                continue
        pending.append(service_id)
    return pending
