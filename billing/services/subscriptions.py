"""Subscriptions (包年包月): a month per instance paid up front, prorated additions, renewals."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import pricing
from billing.models import (
    EntryKind,
    Subscription,
    SubscriptionStatus,
)
from billing.services.instances import service_settle
from billing.services.ledger import ledger_post
from billing.texts import LEDGER
from core.errors import ApplicationError
from core.i18n import Text
from core.money import quantize_posted
from tenancy.permissions import require
from tenancy.services import audit_record

if TYPE_CHECKING:
    from uuid import UUID

    from django.contrib.auth.models import User

    from deployments.models import Service

logger = logging.getLogger(__name__)


def subscription_monthly_price(service: Service) -> Decimal:
    """The price of a month of one instance of ``service`` (a deployments-provided price wins)."""
    return pricing.instance_month_price(service.hourly_price, getattr(service, "monthly_price", None))


def _require_funds(org_id: UUID, amount: Decimal) -> None:
    from billing.selectors import org_spendable_balance

    if org_spendable_balance(org_id) < amount:
        raise ApplicationError(
            _("Your balance does not cover %(amount)s; top up first.") % {"amount": amount},
            code="insufficient_quota",
            status=402,
        )


def _subscription_charge(
    subscription: Subscription, amount: Decimal, key: str, description: Text, actor: User | None
) -> None:
    ledger_post(
        org=subscription.org,
        kind=EntryKind.SUBSCRIPTION_CHARGE,
        amount=-amount,
        key=key,
        description=description,
        service=subscription.service,
        period_start=subscription.period_start,
        period_end=subscription.period_end,
        actor=actor,
        data={"instances": subscription.instances, "monthly_price": str(subscription.monthly_price)},
    )


@transaction.atomic
def subscription_create(
    *, service: Service, instances: int, auto_renew: bool = True, actor: User | None = None
) -> Subscription:
    """Prepay a month of ``instances`` instances of ``service``, from now; hourly charges stop for them."""
    require(actor, service.org, "subscription.create")
    from deployments.models import ServiceStatus

    if service.status == ServiceStatus.DELETED:
        raise ApplicationError(_("This service has been deleted."), code="service_deleted")
    if not 1 <= int(instances) <= 64:
        raise ApplicationError(_("Subscribe between 1 and 64 instances."), field="instances")
    now = timezone.now()
    if Subscription.objects.filter(service=service, status=SubscriptionStatus.ACTIVE, period_end__gt=now).exists():
        raise ApplicationError(
            _("This service already has an active subscription; add instances to it instead."),
            code="subscription_exists",
        )
    service_settle(service_id=service.pk, until=now)  # time before the subscription is pay-as-you-go
    price = subscription_monthly_price(service)
    amount = quantize_posted(price * instances)
    _require_funds(service.org_id, amount)
    subscription = Subscription.objects.create(
        org=service.org,
        service=service,
        instances=instances,
        monthly_price=price,
        currency=service.currency,
        period_start=now,
        period_end=now + pricing.SUBSCRIPTION_PERIOD,
        auto_renew=auto_renew,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    _subscription_charge(
        subscription,
        amount,
        f"subscription:{subscription.pk}",
        LEDGER("subscription", service=service.model_id, n=instances),
        actor,
    )
    audit_record(
        org=service.org,
        actor=actor,
        action="subscription.create",
        target=subscription,
        data={"service": service.model_id, "instances": instances, "amount": str(amount)},
    )
    return subscription


@transaction.atomic
def subscription_add_instances(
    *, subscription: Subscription, instances: int, actor: User | None = None
) -> Subscription:
    """Buy ``instances`` more instances for the rest of the current period, prorated."""
    require(actor, subscription.org, "subscription.add")
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    now = timezone.now()
    if subscription.status != SubscriptionStatus.ACTIVE or subscription.parent_id or subscription.period_end <= now:
        raise ApplicationError(_("Only an active subscription can be extended."), code="subscription_inactive")
    if not 1 <= int(instances) <= 64:
        raise ApplicationError(_("Add between 1 and 64 instances."), field="instances")
    service_settle(service_id=subscription.service_id, until=now)
    amount = pricing.prorated(
        subscription.monthly_price * instances,
        remaining=subscription.period_end - now,
        period=subscription.period_end - subscription.period_start,
    )
    _require_funds(subscription.org_id, amount)
    addon = Subscription.objects.create(
        org_id=subscription.org_id,
        service_id=subscription.service_id,
        instances=instances,
        monthly_price=subscription.monthly_price,
        currency=subscription.currency,
        period_start=now,
        period_end=subscription.period_end,
        auto_renew=subscription.auto_renew,
        parent=subscription,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    _subscription_charge(
        addon,
        amount,
        f"subscription:{addon.pk}",
        LEDGER(
            "subscription_addition",
            n=instances,
            service=subscription.service.model_id,
            end=f"{subscription.period_end:%Y-%m-%d}",
        ),
        actor,
    )
    audit_record(
        org=subscription.org,
        actor=actor,
        action="subscription.add_instances",
        target=subscription,
        data={"instances": instances, "amount": str(amount)},
    )
    return addon


@transaction.atomic
def subscription_cover(*, service: Service, instances: int, actor: User | None = None) -> Subscription:
    """Make a subscription-mode service's active subscription cover ``instances``: subscribe, or buy the missing
    instances for the rest of the period (prorated). Raises ApplicationError when the balance does not cover it."""
    from billing.selectors import covered_instances

    now = timezone.now()
    active = (
        Subscription.objects.select_for_update()
        .filter(service=service, parent=None, status=SubscriptionStatus.ACTIVE, period_end__gt=now)
        .first()
    )
    if active is None:
        return subscription_create(service=service, instances=instances, actor=actor)
    missing = instances - covered_instances(active, now)
    if missing > 0:
        subscription_add_instances(subscription=active, instances=missing, actor=actor)
    return active


@transaction.atomic
def subscription_set_auto_renew(
    *, subscription: Subscription, auto_renew: bool, actor: User | None = None
) -> Subscription:
    require(actor, subscription.org, "subscription.auto_renew")
    Subscription.objects.filter(Q(pk=subscription.pk) | Q(parent=subscription)).update(auto_renew=auto_renew)
    subscription.auto_renew = auto_renew
    audit_record(
        org=subscription.org,
        actor=actor,
        action="subscription.auto_renew",
        target=subscription,
        data={"auto_renew": auto_renew},
    )
    return subscription


def subscription_renew_due(*, now: datetime | None = None) -> tuple[int, int]:
    """Renew (auto-renew and funds) or expire subscriptions whose period ended; returns (renewed, expired)."""
    from deployments.models import ServiceStatus

    now = now or timezone.now()
    renewed = expired = 0
    due = list(
        Subscription.objects.filter(status=SubscriptionStatus.ACTIVE, parent=None, period_end__lte=now).values_list(
            "pk", flat=True
        )
    )
    for subscription_id in due:
        with transaction.atomic():
            plan = (
                Subscription.objects.select_for_update()
                .select_related("service", "org")
                .filter(pk=subscription_id, status=SubscriptionStatus.ACTIVE)
                .first()
            )
            if plan is None:
                continue
            rows = list(Subscription.objects.select_for_update().filter(Q(pk=plan.pk) | Q(parent=plan)))
            instances = sum(r.instances for r in rows if r.period_end == plan.period_end)
            Subscription.objects.filter(pk__in=[r.pk for r in rows]).update(status=SubscriptionStatus.EXPIRED)
            service = plan.service
            amount = quantize_posted(plan.monthly_price * instances)
            from billing.selectors import org_spendable_balance

            if (
                plan.auto_renew
                and service.status != ServiceStatus.DELETED
                and org_spendable_balance(plan.org_id) >= amount
            ):
                successor = Subscription.objects.create(
                    org=plan.org,
                    service=service,
                    instances=instances,
                    monthly_price=plan.monthly_price,
                    currency=plan.currency,
                    period_start=plan.period_end,
                    period_end=plan.period_end + pricing.SUBSCRIPTION_PERIOD,
                    auto_renew=True,
                )
                _subscription_charge(
                    successor,
                    amount,
                    f"subscription:{service.pk}:{plan.period_end.isoformat()}",
                    LEDGER("subscription_renewal", service=service.model_id, n=instances),
                    None,
                )
                renewed += 1
            else:
                expired += 1
                audit_record(
                    org=plan.org,
                    actor=None,
                    action="subscription.expire",
                    target=plan,
                    data={"auto_renew": plan.auto_renew},
                )
    return renewed, expired
