"""Writes for billing: the ledger, per-token and per-instance charging, subscriptions, top-ups, enforcement.

Every balance change goes through ``ledger_post``: the account row is locked (``select_for_update``), the entry is
inserted under its natural key (UNIQUE, so a replay changes nothing) and the balance is updated in the same
transaction. After commit the new spendable balance is published to the gateway.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import pricing
from billing import stripe as stripe_api
from billing.models import (
    ZERO,
    BillingAccount,
    EntryKind,
    LedgerEntry,
    MeterCursor,
    StripeEvent,
    Subscription,
    SubscriptionStatus,
    TokenPrice,
    TopUp,
    TopUpStatus,
    UsageCharge,
)
from core import signals
from core.errors import ApplicationError
from core.money import from_minor_units, quantize_posted
from tenancy.services import audit_record

logger = logging.getLogger(__name__)

ADJUSTMENT_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # names one admin adjustment submission
# Usage before the first recorded price is charged with the first price (prices are seeded lazily).
PRICE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


# --- accounts and the ledger -----------------------------------------------------------------------------------


def account_get_or_create(*, org) -> BillingAccount:
    account, _created = BillingAccount.objects.get_or_create(org=org, defaults={"currency": settings.CURRENCY})
    return account


def _lock_account(org_id) -> BillingAccount:
    BillingAccount.objects.get_or_create(org_id=org_id, defaults={"currency": settings.CURRENCY})
    return BillingAccount.objects.select_for_update().get(org_id=org_id)


def _publish_after_commit(org_id) -> None:
    transaction.on_commit(lambda: balance_publish(org_id=org_id))


def balance_publish(*, org_id) -> None:
    """Tell the gateway's reservations what the org may spend now (balance + credit limit)."""
    from billing.selectors import org_spendable_balance

    try:
        signals.balance_changed.send(sender=None, org_id=org_id, available=org_spendable_balance(org_id))
    except Exception:  # Redis down: the gateway falls back to the loader; the next ledger change republishes
        logger.exception("publishing the spendable balance of %s failed", org_id)


def ledger_post(
    *,
    org,
    kind: str,
    amount: Decimal,
    key: str,
    description: str = "",
    service=None,
    period_start=None,
    period_end=None,
    data: dict | None = None,
    actor=None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the balance; returns ``(entry, created)``. A known ``key`` changes nothing."""
    if kind not in EntryKind.values:
        raise ApplicationError(_("Unknown ledger entry kind."), field="kind")
    amount = Decimal(amount)
    if not amount.is_finite():
        raise ApplicationError(_("Enter a valid amount."), field="amount")
    org_id = getattr(org, "pk", org)
    with transaction.atomic():
        account = _lock_account(org_id)
        entry = LedgerEntry(
            org_id=org_id,
            account=account,
            kind=kind,
            amount=amount,
            balance_after=account.balance + amount,
            currency=account.currency,
            key=key,
            description=description[:300],
            service=service,
            period_start=period_start,
            period_end=period_end,
            data=data or {},
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        try:
            with transaction.atomic():
                entry.save()
        except IntegrityError:
            existing = LedgerEntry.objects.filter(key=key).first()
            if existing is None:
                raise
            return existing, False
        account.balance = entry.balance_after
        if account.spendable <= 0:
            account.overdrawn_since = account.overdrawn_since or timezone.now()
        else:
            account.overdrawn_since = None
        account.save(update_fields=["balance", "overdrawn_since", "updated_at"])
        _publish_after_commit(org_id)
    return entry, True


def ledger_adjust(*, org, amount: Decimal, reason: str, actor, token: str | None = None) -> LedgerEntry:
    """An admin's manual credit (positive) or debit (negative), with a reason, audited.

    ``token`` names one submission (the admin form renders a fresh one): posting it again changes nothing and
    returns the first entry, so a double submit credits once; the same token with another amount or reason is
    refused rather than dropped. Without a token every call posts.
    """
    amount = quantize_posted(amount)
    if amount == 0:
        raise ApplicationError(_("An adjustment needs a non-zero amount."), field="amount")
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give a reason for the adjustment."), field="reason")
    if token is None:
        token = secrets.token_urlsafe(16)
    elif not ADJUSTMENT_TOKEN.fullmatch(token):
        raise ApplicationError(_("This adjustment form is invalid; reload the page."), field="token")
    with transaction.atomic():
        entry, created = ledger_post(
            org=org,
            kind=EntryKind.ADJUSTMENT,
            amount=amount,
            key=f"adjustment:{org.pk}:{token}",
            description=reason,
            actor=actor,
        )
        if not created:
            if entry.org_id != org.pk or entry.amount != amount or entry.description != reason[:300]:
                raise ApplicationError(
                    _(
                        "This adjustment form was already submitted with other values; reload the "
                        "page to post another adjustment."
                    ),
                    field="token",
                )
            return entry
        audit_record(
            org=org, actor=actor, action="billing.adjust", target=entry, data={"amount": str(amount), "reason": reason}
        )
    return entry


@transaction.atomic
def account_set_credit_limit(*, org, credit_limit: Decimal, actor) -> BillingAccount:
    credit_limit = quantize_posted(credit_limit)
    if credit_limit < 0:
        raise ApplicationError(_("The credit limit cannot be negative."), field="credit_limit")
    account = _lock_account(org.pk)
    previous = account.credit_limit
    account.credit_limit = credit_limit
    if account.spendable <= 0:
        account.overdrawn_since = account.overdrawn_since or timezone.now()
    else:
        account.overdrawn_since = None
    account.save(update_fields=["credit_limit", "overdrawn_since", "updated_at"])
    audit_record(
        org=org,
        actor=actor,
        action="billing.credit_limit",
        target=account,
        data={"from": str(previous), "to": str(credit_limit)},
    )
    _publish_after_commit(org.pk)
    return account


# --- token prices ----------------------------------------------------------------------------------------------

_PRICE_FIELDS = (
    "input_per_1k",
    "output_per_1k",
    "cached_input_per_1k",
    "long_context_threshold",
    "long_input_per_1k",
    "long_output_per_1k",
)


def token_price_sync(*, catalog_model) -> TokenPrice | None:
    """Record the catalog's current per-token prices if they differ from the price in force (new row from now).

    The first row of a model is valid from PRICE_EPOCH, so usage recorded before any sync is still priced.
    """
    latest = catalog_model.token_prices.order_by("-valid_from").first()
    if latest is not None and (latest.input_per_1k, latest.output_per_1k, latest.currency) == (
        catalog_model.input_price_per_1k,
        catalog_model.output_price_per_1k,
        catalog_model.currency,
    ):
        return None
    extra = {f: getattr(latest, f) for f in _PRICE_FIELDS[2:]} if latest is not None else {}
    price = TokenPrice(
        catalog_model=catalog_model,
        currency=catalog_model.currency,
        input_per_1k=catalog_model.input_price_per_1k,
        output_per_1k=catalog_model.output_price_per_1k,
        valid_from=timezone.now() if latest is not None else PRICE_EPOCH,
        **extra,
    )
    TokenPrice.objects.bulk_create([price], ignore_conflicts=True)  # a concurrent first seed wins harmlessly
    return price


@transaction.atomic
def token_price_create(
    *,
    catalog_model,
    input_per_1k: Decimal,
    output_per_1k: Decimal,
    cached_input_per_1k: Decimal | None = None,
    long_context_threshold: int | None = None,
    long_input_per_1k: Decimal | None = None,
    long_output_per_1k: Decimal | None = None,
    valid_from=None,
    actor=None,
) -> TokenPrice:
    """A new price from ``valid_from`` (default now; never in the past, which would re-price charged usage)."""
    now = timezone.now()
    valid_from = valid_from or now
    if valid_from < now - timedelta(seconds=5):
        raise ApplicationError(_("A new price cannot start in the past."), field="valid_from")
    rates = {
        "input_per_1k": input_per_1k,
        "output_per_1k": output_per_1k,
        "cached_input_per_1k": cached_input_per_1k,
        "long_input_per_1k": long_input_per_1k,
        "long_output_per_1k": long_output_per_1k,
    }
    for field, value in rates.items():
        if value is not None and Decimal(value) < 0:
            raise ApplicationError(_("Prices cannot be negative."), field=field)
    if long_context_threshold is not None and (long_input_per_1k is None or long_output_per_1k is None):
        raise ApplicationError(
            _("A long-context tier needs both its input and output price."), field="long_input_per_1k"
        )
    if catalog_model.token_prices.filter(valid_from=valid_from).exists():
        raise ApplicationError(_("A price starting at that moment already exists."), field="valid_from")
    price = TokenPrice.objects.create(
        catalog_model=catalog_model,
        currency=catalog_model.currency,
        long_context_threshold=long_context_threshold,
        valid_from=valid_from,
        created_by=actor if getattr(actor, "pk", None) else None,
        **rates,
    )
    audit_record(
        org=None,
        actor=actor,
        action="billing.token_price",
        target=price,
        data={"model": catalog_model.slug, **{k: str(v) for k, v in rates.items() if v is not None}},
    )
    return price


def _price_tables(catalog_model_ids) -> dict[int, tuple[list[datetime], list[TokenPrice]]]:
    from catalog.models import CatalogModel

    ids = set(catalog_model_ids)
    seeded = set(TokenPrice.objects.filter(catalog_model_id__in=ids).values_list("catalog_model_id", flat=True))
    for model in CatalogModel.objects.filter(pk__in=ids - seeded):
        token_price_sync(catalog_model=model)
    tables: dict[int, tuple[list, list]] = {}
    for price in TokenPrice.objects.filter(catalog_model_id__in=ids).order_by("catalog_model_id", "valid_from"):
        starts, prices = tables.setdefault(price.catalog_model_id, ([], []))
        starts.append(price.valid_from)
        prices.append(price)
    return tables


def price_in_force(tables, catalog_model_id: int, at: datetime) -> TokenPrice:
    starts, prices = tables[catalog_model_id]
    index = bisect.bisect_right(starts, at) - 1
    return prices[max(index, 0)]


# --- per-token charging ----------------------------------------------------------------------------------------


def usage_batch_key(record_ids) -> str:
    """The deterministic key of a batch: the same records always make the same key."""
    digest = hashlib.sha256(",".join(sorted(str(i) for i in record_ids)).encode()).hexdigest()
    return f"usage:{digest[:40]}"


def usage_charge_pending(*, limit: int | None = None) -> int:
    """Price and charge up to ``limit`` uncharged public usage records, exactly once; returns how many.

    Records are claimed with ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint batches; each record gets
    one UsageCharge (UNIQUE on the record) and each org one ledger entry keyed by the batch's record ids, all in one
    transaction — a worker killed mid-batch leaves nothing behind and the next run charges the same records.
    Error responses are never charged; aborted streams pay for the tokens that were streamed.
    """
    from metering.models import UsageRecord, UsageStatus

    limit = limit or settings.BILLING_CHARGE_BATCH_SIZE
    with transaction.atomic():
        records = list(
            UsageRecord.objects.filter(public=True, charge__isnull=True, catalog_model__isnull=False)
            .exclude(status=UsageStatus.ERROR)
            .order_by("created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        if not records:
            return 0
        # A record charged by a transaction that committed after our snapshot but before we locked it.
        done = set(
            UsageCharge.objects.filter(usage_record_id__in=[r.pk for r in records]).values_list(
                "usage_record_id", flat=True
            )
        )
        records = [r for r in records if r.pk not in done]
        tables = _price_tables({r.catalog_model_id for r in records})
        by_org: dict = defaultdict(list)
        for record in records:
            price = price_in_force(tables, record.catalog_model_id, record.started_at)
            amount = pricing.token_amount(
                price,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cached_tokens=record.cached_tokens,
            )
            by_org[record.org_id].append((record, price, amount))
        charged = 0
        for org_id in sorted(by_org, key=str):  # one lock order for every worker
            items = by_org[org_id]
            total = sum((amount for _r, _p, amount in items), ZERO)
            first = min(r.started_at for r, _p, _a in items)
            last = max(r.started_at for r, _p, _a in items)
            entry, created = ledger_post(
                org=org_id,
                kind=EntryKind.TOKEN_CHARGE,
                amount=-total,
                key=usage_batch_key(r.pk for r, _p, _a in items),
                description=_("Token usage: %(n)d requests") % {"n": len(items)},
                period_start=first,
                period_end=last,
                data={
                    "requests": len(items),
                    "prompt_tokens": sum(r.prompt_tokens for r, _p, _a in items),
                    "completion_tokens": sum(r.completion_tokens for r, _p, _a in items),
                },
            )
            if not created:
                # The same batch was committed before, so its records carry charges already: nothing to do.
                continue
            UsageCharge.objects.bulk_create(
                [UsageCharge(usage_record=r, org_id=org_id, token_price=p, entry=entry, amount=a) for r, p, a in items]
            )
            charged += len(items)
    return charged


# --- per-instance-hour charging --------------------------------------------------------------------------------


def _timeline(service) -> pricing.InstanceTimeline:
    meter = list(
        service.events.filter(kind="meter", billable_instances__isnull=False).values_list(
            "created_at", "billable_instances"
        )
    )
    coverage = [
        pricing.Coverage(s.period_start, s.period_end, s.instances)
        for s in Subscription.objects.filter(service=service).exclude(status=SubscriptionStatus.CANCELLED)
    ]
    return pricing.InstanceTimeline(meter, coverage)


def _is_platform_service(service) -> bool:
    from deployments.models import PUBLIC_NAMESPACE

    return service.org.namespace == PUBLIC_NAMESPACE


def service_settle(*, service_id, until: datetime | None = None) -> list[LedgerEntry]:
    """Charge a service's instance time up to ``until`` (default now), one entry per hour window touched.

    Idempotent and safe to call any time (hourly beat, scale, stop, delete): the cursor only moves forward under
    its row lock, each (service, window, segment start) posts once, and a window's partial charges are differences
    of the window's cumulative cost rounded once, so a settle-on-stop followed by the hourly run charges exactly
    what one hourly run would have.
    """
    from deployments.models import Service

    now = timezone.now()
    until = min(until or now, now)
    entries: list[LedgerEntry] = []
    with transaction.atomic():
        service = Service.objects.select_related("org").filter(pk=service_id).first()
        if service is None or _is_platform_service(service):
            return entries
        first_meter = service.events.filter(kind="meter").order_by("created_at").values_list("created_at", flat=True)
        first_meter = first_meter.first()
        if first_meter is None:
            return entries
        MeterCursor.objects.get_or_create(service=service, defaults={"charged_until": first_meter})
        cursor = MeterCursor.objects.select_for_update().get(service=service)
        if cursor.charged_until >= until:
            return entries
        timeline = _timeline(service)
        start = cursor.charged_until
        while start < until:
            window = pricing.hour_floor(start)
            end = min(window + pricing.HOUR, until)
            amount = timeline.window_cost(window, end, service.hourly_price) - timeline.window_cost(
                window, start, service.hourly_price
            )
            if amount:
                entry, _created = ledger_post(
                    org=service.org,
                    kind=EntryKind.INSTANCE_CHARGE,
                    amount=-amount,
                    key=f"instance:{service.pk}:{window:%Y%m%dT%H}:{start.isoformat()}",
                    description=_("Instance time of %(service)s") % {"service": service.model_id},
                    service=service,
                    period_start=start,
                    period_end=end,
                    data={
                        "instance_seconds": str(timeline.billable_seconds(start, end)),
                        "hourly_price": str(service.hourly_price),
                    },
                )
                entries.append(entry)
            start = end
        cursor.charged_until = until
        cursor.save(update_fields=["charged_until", "updated_at"])
    return entries


def services_to_settle(until: datetime) -> list:
    """Ids of services with instance time not yet charged up to ``until``."""
    from deployments.models import PUBLIC_NAMESPACE, Service

    metered = (
        Service.objects.exclude(org__namespace=PUBLIC_NAMESPACE)
        .filter(events__kind="meter")
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

            meter = ServiceEvent.objects.filter(service_id=service_id, kind="meter")
            last = meter.filter(created_at__lte=charged_until).order_by("-created_at", "-id").first()
            if (last is None or not last.billable_instances) and not meter.filter(
                created_at__gt=charged_until
            ).exists():
                continue
        pending.append(service_id)
    return pending


# --- subscriptions ---------------------------------------------------------------------------------------------


def subscription_monthly_price(service) -> Decimal:
    """The price of a month of one instance of ``service`` (a deployments-provided price wins)."""
    explicit = getattr(service, "monthly_price", None)
    if explicit:
        return quantize_posted(explicit)
    return pricing.monthly_price(service.hourly_price)


def _require_funds(org_id, amount: Decimal) -> None:
    from billing.selectors import org_spendable_balance

    if org_spendable_balance(org_id) < amount:
        raise ApplicationError(
            _("Your balance does not cover %(amount)s; top up first.") % {"amount": amount},
            code="insufficient_quota",
            status=402,
        )


def _subscription_charge(subscription: Subscription, amount: Decimal, key: str, description: str, actor) -> None:
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
def subscription_create(*, service, instances: int, auto_renew: bool = True, actor=None) -> Subscription:
    """Prepay a month of ``instances`` instances of ``service``, from now; hourly charges stop for them."""
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
        _("Subscription of %(service)s: %(n)d instances for a month") % {"service": service.model_id, "n": instances},
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
def subscription_add_instances(*, subscription: Subscription, instances: int, actor=None) -> Subscription:
    """Buy ``instances`` more instances for the rest of the current period, prorated."""
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
        _("%(n)d more instances of %(service)s until %(end)s (prorated)")
        % {"n": instances, "service": subscription.service.model_id, "end": f"{subscription.period_end:%Y-%m-%d}"},
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
def subscription_cover(*, service, instances: int, actor=None) -> Subscription:
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
def subscription_set_auto_renew(*, subscription: Subscription, auto_renew: bool, actor=None) -> Subscription:
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
                    _("Renewal of %(service)s: %(n)d instances for a month")
                    % {"service": service.model_id, "n": instances},
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


# --- enforcement -----------------------------------------------------------------------------------------------


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


# --- Stripe top-ups --------------------------------------------------------------------------------------------


def topup_create(*, org, amount: Decimal, actor) -> TopUp:
    """Start a top-up: a Stripe PaymentIntent for ``amount``; the balance moves only when Stripe confirms payment."""
    amount = Decimal(amount)
    if amount != quantize_posted(amount):
        raise ApplicationError(_("Use at most two decimal places."), field="amount")
    if not settings.BILLING_TOPUP_MIN <= amount <= settings.BILLING_TOPUP_MAX:
        raise ApplicationError(
            _("Top up between %(min)s and %(max)s.")
            % {"min": settings.BILLING_TOPUP_MIN, "max": settings.BILLING_TOPUP_MAX},
            field="amount",
        )
    account = account_get_or_create(org=org)
    if not account.stripe_customer_id:
        customer_id = stripe_api.customer_create(
            org_id=str(org.pk), name=org.name, email=getattr(actor, "email", "") or ""
        )
        # Two concurrent first top-ups may both create a customer; the first one stored is kept.
        BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)
        account.refresh_from_db(fields=["stripe_customer_id"])
    intent = stripe_api.payment_intent_create(
        customer_id=account.stripe_customer_id, amount=amount, currency=account.currency, metadata={"org_id": org.pk}
    )
    with transaction.atomic():
        topup = TopUp.objects.create(
            org=org,
            amount=amount,
            currency=account.currency,
            payment_intent_id=intent.id,
            client_secret=intent.client_secret,
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        audit_record(
            org=org,
            actor=actor,
            action="billing.topup_start",
            target=topup,
            data={"amount": str(amount), "payment_intent": intent.id},
        )
    return topup


def topup_refund(*, topup: TopUp, amount: Decimal | None, actor) -> str:
    """Ask Stripe to refund (part of) a paid top-up; the balance is debited when ``charge.refunded`` arrives."""
    if topup.status not in (TopUpStatus.SUCCEEDED, TopUpStatus.PARTIALLY_REFUNDED):
        raise ApplicationError(_("Only a paid top-up can be refunded."), code="not_refundable")
    if amount is not None:
        amount = quantize_posted(amount)
        if amount <= 0 or amount > topup.amount - topup.refunded_amount:
            raise ApplicationError(_("The refund must be positive and at most what is left to refund."), field="amount")
    refund_id = stripe_api.refund_create(
        payment_intent_id=topup.payment_intent_id, amount=amount, currency=topup.currency
    )
    audit_record(
        org=topup.org,
        actor=actor,
        action="billing.topup_refund",
        target=topup,
        data={"amount": str(amount) if amount is not None else "all", "refund": refund_id},
    )
    return refund_id


def stripe_event_handle(*, event: dict) -> bool:
    """Apply one verified Stripe event exactly once (by event id); returns False for a replay."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return False
        obj = (event.get("data") or {}).get("object") or {}
        handler = _STRIPE_HANDLERS.get(event["type"])
        if handler is not None:
            handler(event, obj)
    return True


def _topup_for(payment_intent_id) -> TopUp | None:
    if not payment_intent_id:
        return None
    topup = TopUp.objects.select_for_update().select_related("org").filter(payment_intent_id=payment_intent_id).first()
    if topup is None:
        logger.warning("Stripe event for unknown PaymentIntent %s ignored", payment_intent_id)
    return topup


def _on_payment_succeeded(event: dict, intent: dict) -> None:
    topup = _topup_for(intent.get("id"))
    if topup is None:
        return
    currency = (intent.get("currency") or topup.currency).upper()
    received = intent.get("amount_received") or intent.get("amount")
    amount = from_minor_units(received, currency)
    ledger_post(
        org=topup.org,
        kind=EntryKind.TOPUP,
        amount=amount,
        key=f"stripe:pi:{topup.payment_intent_id}",
        description=_("Top-up by card"),
        data={"payment_intent": topup.payment_intent_id, "event": event["id"]},
    )
    topup.status = TopUpStatus.SUCCEEDED
    topup.failure_message = ""
    topup.save(update_fields=["status", "failure_message", "updated_at"])


def _on_payment_failed(event: dict, intent: dict) -> None:
    topup = _topup_for(intent.get("id"))
    if topup is None or topup.status != TopUpStatus.PENDING:
        return
    error = intent.get("last_payment_error") or {}
    topup.status = TopUpStatus.FAILED
    topup.failure_message = (error.get("message") or _("The payment failed."))[:300]
    topup.save(update_fields=["status", "failure_message", "updated_at"])


def _on_charge_refunded(event: dict, charge: dict) -> None:
    topup = _topup_for(charge.get("payment_intent"))
    if topup is None:
        return
    currency = (charge.get("currency") or topup.currency).upper()
    refunded_total = from_minor_units(charge.get("amount_refunded") or 0, currency)
    delta = refunded_total - topup.refunded_amount
    if delta <= 0:
        return
    # Keyed by the cumulative refunded amount: each refund step of a charge debits once, whatever the event id.
    ledger_post(
        org=topup.org,
        kind=EntryKind.REFUND,
        amount=-delta,
        key=f"stripe:refund:{charge.get('id')}:{refunded_total}",
        description=_("Refund of a card top-up"),
        data={"charge": charge.get("id"), "event": event["id"]},
    )
    topup.refunded_amount = refunded_total
    topup.status = TopUpStatus.REFUNDED if refunded_total >= topup.amount else TopUpStatus.PARTIALLY_REFUNDED
    topup.save(update_fields=["refunded_amount", "status", "updated_at"])


_STRIPE_HANDLERS = {
    "payment_intent.succeeded": _on_payment_succeeded,
    "payment_intent.payment_failed": _on_payment_failed,
    "charge.refunded": _on_charge_refunded,
}
