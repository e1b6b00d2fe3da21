"""Reads for billing: token prices (also the gateway's), spendable balance (the gateway's loader), spend summaries
and statements. Nothing here writes: in particular reading a price never creates a ``TokenPrice`` row."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings
from django.db.models import Case, CharField, Count, F, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, TruncDate, TruncHour
from django.utils import timezone

from billing import pricing
from billing.models import (
    CHARGE_KINDS,
    ZERO,
    BillingAccount,
    EntryKind,
    LedgerEntry,
    Subscription,
    SubscriptionStatus,
    TokenPrice,
    TopUp,
    TopUpStatus,
    UsageCharge,
)
from billing.pricing import PRICE_EPOCH, PriceHistory, TokenRates, token_amount
from catalog.models import CatalogModel
from core.crypto import SecretDecryptError, decrypt
from core.money import quantize_posted

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    from deployments.models import Service
    from tenancy.models import Organization


logger = logging.getLogger(__name__)
PAYABLE_TOPUP_STATUSES = (TopUpStatus.PENDING, TopUpStatus.FAILED)


def token_rates(price: TokenPrice) -> TokenRates:
    return TokenRates(
        currency=price.currency,
        input_per_1k=price.input_per_1k,
        output_per_1k=price.output_per_1k,
        cached_input_per_1k=price.cached_input_per_1k,
        long_context_threshold=price.long_context_threshold,
        long_input_per_1k=price.long_input_per_1k,
        long_output_per_1k=price.long_output_per_1k,
        token_price_id=price.pk,
    )


def token_price_histories(
    catalog_model_ids: Iterable[int], *, since: datetime | None = None
) -> dict[int, PriceHistory]:
    """Each model's token prices over time (models that do not exist are left out); two queries at most.

    A model with no ``TokenPrice`` row yet is priced at its catalog price from ``PRICE_EPOCH``: the very row that
    ``billing.services.token_prices_seed`` writes before such a model's usage is charged. With ``since``, only the
    price in force at ``since`` and the later ones.
    """
    ids = set(catalog_model_ids)
    entries: dict[int, list[tuple[datetime, TokenRates]]] = {}
    for price in TokenPrice.objects.filter(catalog_model_id__in=ids).order_by("catalog_model_id", "valid_from"):
        entries.setdefault(price.catalog_model_id, []).append((price.valid_from, token_rates(price)))
    missing = ids - entries.keys()
    if missing:
        for model in CatalogModel.objects.filter(pk__in=missing).only(
            "pk", "currency", "input_price_per_1k", "output_price_per_1k"
        ):
            rates = TokenRates(
                currency=model.currency,
                input_per_1k=model.input_price_per_1k,
                output_per_1k=model.output_price_per_1k,
            )
            entries[model.pk] = [(PRICE_EPOCH, rates)]
    if since is not None:
        for pk, rows in entries.items():
            in_force = max((i for i, (start, _r) in enumerate(rows) if start <= since), default=0)
            entries[pk] = rows[in_force:]
    return {pk: PriceHistory.of(rows) for pk, rows in entries.items()}


def token_price_history(catalog_model_id: int, *, since: datetime | None = None) -> PriceHistory | None:
    """One model's token prices (see :func:`token_price_histories`); None when there is no such model."""
    return token_price_histories({catalog_model_id}, since=since).get(catalog_model_id)


def usage_cost(
    *,
    catalog_model_id: int,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    at: datetime | None = None,
) -> Decimal:
    """What billing will charge for this usage of a public model (the price in force ``at``, default now)."""
    history = token_price_history(catalog_model_id)
    if history is None:
        raise CatalogModel.DoesNotExist(f"no catalog model {catalog_model_id}")
    return token_amount(
        history.at(at or timezone.now()),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
    )


def org_spendable_balance(org_id: UUID | str) -> Decimal:
    """What the org may still spend: balance + credit limit (zero for an org that never had an account)."""
    org_pk = org_id if isinstance(org_id, UUID) else UUID(org_id)  # the gateway passes ids as strings
    row = BillingAccount.objects.filter(org_id=org_pk).values_list("balance", "credit_limit").first()
    if row is None:
        return ZERO
    return row[0] + row[1]


def org_spendable_balances(org_ids: Iterable[UUID]) -> dict[UUID, Decimal]:
    """``org_spendable_balance`` of many orgs in one query (orgs without an account are left out)."""
    rows = BillingAccount.objects.filter(org_id__in=list(org_ids)).values_list("org_id", "balance", "credit_limit")
    return {org_id: balance + credit_limit for org_id, balance, credit_limit in rows}


def account_of(org: Organization | None) -> BillingAccount | None:
    return BillingAccount.objects.for_org(org).first() if org is not None else None


@dataclass(frozen=True)
class BalanceState:
    balance: Decimal
    credit_limit: Decimal
    currency: str
    overdrawn_since: datetime | None
    stop_at: datetime | None

    @property
    def spendable(self) -> Decimal:
        return self.balance + self.credit_limit

    @property
    def low(self) -> bool:
        return self.spendable < settings.BILLING_LOW_BALANCE

    @property
    def unfunded(self) -> bool:
        """Nothing to spend and never overdrawn: a new organization that has not been credited yet."""
        return self.spendable <= 0 and self.overdrawn_since is None


def balance_state(org: Organization | None) -> BalanceState:
    account = account_of(org)
    if account is None:
        return BalanceState(ZERO, ZERO, settings.CURRENCY, None, None)
    stop_at = (
        account.overdrawn_since + timedelta(hours=settings.BILLING_GRACE_HOURS) if account.overdrawn_since else None
    )
    return BalanceState(account.balance, account.credit_limit, account.currency, account.overdrawn_since, stop_at)


def overdrawn_org_ids(*, now: datetime | None = None) -> list[UUID]:
    """Orgs whose spendable balance has been at or below zero for longer than the grace period."""
    deadline = (now or timezone.now()) - timedelta(hours=settings.BILLING_GRACE_HOURS)
    return list(BillingAccount.objects.filter(overdrawn_since__lte=deadline).values_list("org_id", flat=True))


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of ``month`` in the platform's time zone."""
    tz = timezone.get_current_timezone()
    start = datetime(month.year, month.month, 1, tzinfo=tz)
    following = datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=tz)
    return start, following


def this_month() -> date:
    return timezone.localdate().replace(day=1)


def charges(org: Organization) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.for_org(org).filter(kind__in=CHARGE_KINDS)


def spend_between(org: Organization, start: datetime, end: datetime) -> Decimal:
    total: Decimal = (
        charges(org).filter(created_at__gte=start, created_at__lt=end).aggregate(t=Coalesce(Sum("amount"), ZERO))["t"]
    )
    return -total


def spend_per_day(org: Organization, *, days: int = 30) -> list[tuple[date, Decimal]]:
    """Charges per local day for the last ``days`` days, zero-filled, oldest first."""
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.get_current_timezone())
    rows = (
        charges(org)
        .filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("amount"))
    )
    by_day = {row["day"]: -row["total"] for row in rows}
    return [(first + timedelta(days=i), by_day.get(first + timedelta(days=i), ZERO)) for i in range(days)]


def spend_by_model(org: Organization, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per-token spend per model id in [start, end), by when the usage was charged."""
    rows = (
        UsageCharge.objects.for_org(org)
        .filter(entry__created_at__gte=start, entry__created_at__lt=end)
        .values(model_id=F("usage_record__model_id"))
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("usage_record__prompt_tokens"),
            completion_tokens=Sum("usage_record__completion_tokens"),
            amount=Sum("amount"),
        )
        .order_by("-amount", "model_id")
    )
    return [dict(row) for row in rows]


def spend_by_service(org: Organization, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Instance-hour and subscription spend per service in [start, end)."""
    rows = (
        charges(org)
        .filter(created_at__gte=start, created_at__lt=end, service__isnull=False)
        .values("service_id", "service__name")
        .annotate(
            instance=Coalesce(Sum("amount", filter=Q(kind=EntryKind.INSTANCE_CHARGE)), ZERO),
            subscription=Coalesce(Sum("amount", filter=Q(kind=EntryKind.SUBSCRIPTION_CHARGE)), ZERO),
            total=Sum("amount"),
        )
        .order_by("total", "service__name")
    )
    return [
        {
            "service_id": r["service_id"],
            "name": r["service__name"],
            "instance": -r["instance"],
            "subscription": -r["subscription"],
            "total": -r["total"],
        }
        for r in rows
    ]


def _meter_series(service_ids: Any, start: datetime, end: datetime) -> dict[UUID, list[tuple[datetime, int]]]:
    """Each service's meter in [start, end): the count in force at ``start`` (dated ``start``) and the changes after
    it; two queries however many services."""
    from deployments.models import EventKind, ServiceEvent

    meter = ServiceEvent.objects.filter(
        service_id__in=service_ids, kind=EventKind.METER, billable_instances__isnull=False
    ).values_list("service_id", "created_at", "billable_instances")
    series: dict[UUID, list[tuple[datetime, int]]] = {}
    before = meter.filter(created_at__lt=start).order_by("service_id", "-created_at", "-id").distinct("service_id")
    for service_id, _at, instances in before:
        series.setdefault(service_id, []).append((start, instances or 0))
    for service_id, at, instances in meter.filter(created_at__gte=start, created_at__lt=end).order_by(
        "created_at", "id"
    ):
        series.setdefault(service_id, []).append((at, instances or 0))
    return series


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day), timezone.get_current_timezone())


@dataclass(frozen=True)
class ServiceHours:
    service_id: UUID
    name: str
    hours: list[Decimal]  # one per day of ``InstanceHours.days``

    @property
    def total(self) -> Decimal:
        return sum(self.hours, ZERO)


@dataclass(frozen=True)
class InstanceHours:
    """Instance-hours run per local day and service (every instance running, subscribed or not)."""

    days: list[date]
    services: list[ServiceHours]

    @property
    def totals(self) -> list[Decimal]:
        return [sum((s.hours[i] for s in self.services), ZERO) for i in range(len(self.days))]

    def rows(self) -> list[tuple[date, list[Decimal], Decimal]]:
        """(day, hours per service, total) per day, newest first: the chart's table."""
        totals = self.totals
        return [
            (day, [s.hours[i] for s in self.services], totals[i]) for i, day in reversed(list(enumerate(self.days)))
        ]


def instance_hours_per_day(org: Organization, *, days: int = 30, now: datetime | None = None) -> InstanceHours:
    """Instance-hours each of ``org``'s services ran per day over the last ``days`` days, today so far included.

    Days are those of the current time zone (the user's, ``tenancy.middleware.UserTimeZoneMiddleware``), so a day
    of a user in Shanghai starts at 00:00 there. The hours are integrated from the meter timeline settlement charges
    (``pricing.InstanceTimeline``), exact to the microsecond; services that ran nothing in the window are left out.
    """
    from deployments.models import Service

    now = now or timezone.now()
    today = timezone.localdate(now)
    first = today - timedelta(days=days - 1)
    day_list = [first + timedelta(days=i) for i in range(days)]
    bounds = [_local_midnight(d) for d in day_list] + [_local_midnight(today + timedelta(days=1))]
    window_start, window_end = bounds[0], min(bounds[-1], now)
    services = Service.objects.for_org(org)
    series = _meter_series(services.values("pk"), window_start, window_end)  # a subquery: the org's own only
    names = dict(services.filter(pk__in=list(series)).values_list("pk", "name")) if series else {}
    out = []
    for service_id, meter in series.items():
        timeline = pricing.InstanceTimeline(meter)
        hours = [
            quantize_hours(timeline.running_seconds(bounds[i], min(bounds[i + 1], window_end))) for i in range(days)
        ]
        if any(hours):
            out.append(ServiceHours(service_id, names.get(service_id, ""), hours))
    counts: dict[str, int] = {}
    for s in out:
        counts[s.name] = counts.get(s.name, 0) + 1
    # A deleted service and its successor may share a name: the chart tells them apart.
    out = [
        ServiceHours(s.service_id, f"{s.name} · {str(s.service_id)[:8]}", s.hours) if counts[s.name] > 1 else s
        for s in out
    ]
    out.sort(key=lambda s: (-s.total, s.name))
    return InstanceHours(day_list, out)


def quantize_hours(seconds: Decimal) -> Decimal:
    """Instance-seconds as hours with two decimals (half up): what the billing center shows."""
    return quantize_posted(Decimal(seconds) / 3600)


@dataclass(frozen=True)
class RecentUsage:
    """A service's last days (at most ``RECENT_DAYS``, fewer for a younger service): instance-hours run and the part
    billed hourly (above any subscription)."""

    days: Decimal
    instance_hours: Decimal
    billable_hours: Decimal

    @property
    def average_instances(self) -> Decimal:
        return quantize_posted(self.instance_hours / (24 * self.days)) if self.days else ZERO


def service_recent_usage(
    service: Service, *, days: int = 7, floor: int | None = None, now: datetime | None = None
) -> RecentUsage | None:
    """What ``service`` ran over the last ``days`` days, or its life if shorter (the deploy and scale pages'
    estimate), from its meter and subscriptions as settlement reads them; with ``floor``, as if that many instances
    had been subscribed all along (what the same demand would cost under the floor being chosen). None for a service
    younger than an hour: no history to go by."""
    now = now or timezone.now()
    start = max(now - timedelta(days=days), service.created_at)
    if now - start < timedelta(hours=1):
        return None
    meter = _meter_series([service.pk], start, now).get(service.pk, [])
    if floor is not None:
        coverage = [pricing.Coverage(start, now, floor)] if floor else []
    else:
        coverage = [
            pricing.Coverage(c.period_start, c.period_end, c.instances)
            for c in Subscription.objects.filter(service=service, period_end__gt=start).exclude(
                status=SubscriptionStatus.CANCELLED
            )
        ]
    timeline = pricing.InstanceTimeline(meter, coverage)
    return RecentUsage(
        days=Decimal(int((now - start).total_seconds())) / 86_400,
        instance_hours=Decimal(timeline.running_seconds(start, now)) / 3600,
        billable_hours=Decimal(timeline.billable_seconds(start, now)) / 3600,
    )


@dataclass(frozen=True)
class LedgerFilter:
    kind: str = ""
    start: date | None = None
    end: date | None = None  # inclusive


def ledger_entries(org: Organization, flt: LedgerFilter = LedgerFilter()) -> QuerySet[LedgerEntry]:
    qs = LedgerEntry.objects.for_org(org).select_related("service").order_by("-created_at", "-id")
    if flt.kind:
        qs = qs.filter(kind=flt.kind)
    tz = timezone.get_current_timezone()
    if flt.start:
        qs = qs.filter(created_at__gte=datetime(flt.start.year, flt.start.month, flt.start.day, tzinfo=tz))
    if flt.end:
        after = flt.end + timedelta(days=1)
        qs = qs.filter(created_at__lt=datetime(after.year, after.month, after.day, tzinfo=tz))
    return qs


@dataclass(frozen=True)
class LedgerLine:
    """What the ledger page and a statement show as one line: one entry, or a service's instance charges of one
    hour (ledger) or day (statement) summed. The rows stay as posted (exact, each under its key; the CSV lists
    them); only their reading is grouped. A group stands where its latest row stands, with that row's balance."""

    entry: LedgerEntry  # the latest row of the line: its kind, description, service and balance after
    amount: Decimal
    count: int = 1
    period_start: datetime | None = None
    period_end: datetime | None = None

    @property
    def grouped(self) -> bool:
        return self.count > 1


def ledger_lines(org: Organization, flt: LedgerFilter = LedgerFilter()) -> QuerySet[Any, Any]:
    """The ledger's lines, newest first, as rows of ``line``, ``last_id``, ``amount``, ``count``, ``start``,
    ``end``: a service's instance charges grouped per clock hour of the current time zone, every other entry alone.
    Grouped in the database, so a page of lines is one query (turn rows into :class:`LedgerLine` with
    :func:`ledger_lines_load`)."""
    tz = timezone.get_current_timezone()
    line = Case(
        When(
            kind=EntryKind.INSTANCE_CHARGE,
            service__isnull=False,
            period_start__isnull=False,
            then=Concat(
                Cast("service_id", CharField()),
                Value(" "),
                Cast(TruncHour("period_start", tzinfo=tz), CharField()),
            ),
        ),
        default=Concat(Value("e"), Cast("id", CharField())),
        output_field=CharField(),
    )
    return (
        ledger_entries(org, flt)
        .order_by()
        .annotate(line=line)
        .values("line")
        .annotate(
            last_id=Max("id"),
            latest=Max("created_at"),
            amount=Sum("amount"),
            count=Count("id"),
            start=Min("period_start"),
            end=Max("period_end"),
        )
        .order_by("-latest", "-last_id")
    )


def ledger_lines_load(rows: Iterable[dict[str, Any]]) -> list[LedgerLine]:
    """:class:`LedgerLine` objects for rows of :func:`ledger_lines` (one query for their latest entries)."""
    rows = list(rows)
    entries = LedgerEntry.objects.select_related("service").in_bulk([r["last_id"] for r in rows])
    return [
        LedgerLine(entries[r["last_id"]], r["amount"], r["count"], r["start"], r["end"])
        for r in rows
        if r["last_id"] in entries
    ]


def group_instance_charges(entries: Sequence[LedgerEntry], *, per: str = "day") -> list[LedgerLine]:
    """``entries`` (oldest first) as lines: a service's instance charges of one local day (``per="hour"``: hour)
    summed into one line placed at its latest row; every other entry a line of its own."""
    tz = timezone.get_current_timezone()
    groups: dict[tuple[Any, ...], list[LedgerEntry]] = {}
    order: list[tuple[Any, ...]] = []
    for e in entries:
        if e.kind == EntryKind.INSTANCE_CHARGE and e.service_id and e.period_start:
            local = timezone.localtime(e.period_start, tz)
            key: tuple[Any, ...] = (e.service_id, local.date(), local.hour if per == "hour" else None)
        else:
            key = ("entry", e.pk)
        if key not in groups:
            groups[key] = []
        groups[key].append(e)
        order.append(key)
    last_index = {key: i for i, key in enumerate(order)}
    lines = []
    for i, key in enumerate(order):
        if last_index[key] != i:
            continue
        rows = groups[key]
        starts = [r.period_start for r in rows if r.period_start]
        ends = [r.period_end for r in rows if r.period_end]
        lines.append(
            LedgerLine(
                rows[-1],
                sum((r.amount for r in rows), ZERO),
                len(rows),
                min(starts) if starts else None,
                max(ends) if ends else None,
            )
        )
    return lines


@dataclass(frozen=True)
class Statement:
    month: date
    opening: Decimal
    closing: Decimal
    credits: Decimal
    charges: Decimal
    by_kind: Sequence[tuple[str, StrOrPromise, Decimal]]
    entries: list[LedgerEntry]
    currency: str

    @property
    def lines(self) -> list[LedgerLine]:
        """The entries for reading: each service's instance charges of a day in one line (the CSV keeps every row)."""
        return group_instance_charges(self.entries, per="day")


def statement_months(org: Organization) -> list[date]:
    """Months with ledger entries, newest first."""
    months = (
        LedgerEntry.objects.for_org(org).annotate(day=TruncDate("created_at")).values_list("day", flat=True).distinct()
    )
    return sorted({d.replace(day=1) for d in months}, reverse=True)


def statement(org: Organization, month: date) -> Statement:
    start, end = month_bounds(month)
    qs = LedgerEntry.objects.for_org(org)
    opening = qs.filter(created_at__lt=start).aggregate(t=Coalesce(Sum("amount"), ZERO))["t"]
    entries = list(
        qs.filter(created_at__gte=start, created_at__lt=end).select_related("service").order_by("created_at", "id")
    )
    credits = sum((e.amount for e in entries if e.amount > 0), ZERO)
    debits = sum((e.amount for e in entries if e.amount < 0), ZERO)
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[e.kind] = totals.get(e.kind, ZERO) + e.amount
    by_kind = [(kind, label, totals[kind]) for kind, label in EntryKind.choices if kind in totals]
    account = account_of(org)
    return Statement(
        month=month,
        opening=opening,
        closing=opening + credits + debits,
        credits=credits,
        charges=-debits,
        by_kind=by_kind,
        entries=entries,
        currency=account.currency if account else settings.CURRENCY,
    )


def org_topups(org: Organization) -> QuerySet[TopUp]:
    return TopUp.objects.for_org(org).select_related("created_by").order_by("-created_at")


def topup_client_secret(topup: TopUp) -> str:
    """The PaymentIntent client secret the card page gives Stripe.js; empty once the top-up cannot be paid any more."""
    if topup.status not in PAYABLE_TOPUP_STATUSES or not topup.client_secret_encrypted:
        return ""
    try:
        return decrypt(topup.client_secret_encrypted)
    except SecretDecryptError:
        logger.warning("top-up %s: its client secret cannot be decrypted with ENCRYPTION_KEYS", topup.pk)
        return ""


def org_subscriptions(org: Organization) -> QuerySet[Subscription]:
    return (
        Subscription.objects.for_org(org)
        .filter(parent=None)
        .select_related("service")
        .prefetch_related("addons")
        .order_by("-period_start")
    )


def covered_instances(subscription: Subscription, at: datetime | None = None) -> int:
    at = at or timezone.now()
    rows = [subscription, *subscription.addons.all()]
    return sum(
        r.instances for r in rows if r.period_start <= at < r.period_end and r.status == SubscriptionStatus.ACTIVE
    )


def autoscaled_subscription_floors(org_ids: Iterable[UUID]) -> dict[UUID, int]:
    """The autoscaling subscription services of ``org_ids`` whose maximum is above what their subscription covers
    now: service id → covered instances."""
    from deployments.models import BillingMode, ScalingMode, Service

    now = timezone.now()
    services = (
        Service.objects.live()
        .filter(org_id__in=list(org_ids), billing_mode=BillingMode.SUBSCRIPTION, scaling_mode=ScalingMode.AUTOSCALE)
        .values_list("pk", "max_instances")
    )
    maxima = dict(services)
    floors = dict.fromkeys(maxima, 0)
    subscriptions = Subscription.objects.filter(service_id__in=list(maxima), parent=None).prefetch_related("addons")
    for subscription in subscriptions:
        floors[subscription.service_id] += covered_instances(subscription, now)
    return {pk: floor for pk, floor in floors.items() if maxima[pk] > floor}


def services_without_subscription(org: Organization) -> list[Service]:
    from deployments.models import BillingMode, Service

    now = timezone.now()
    covered = Subscription.objects.for_org(org).filter(status=SubscriptionStatus.ACTIVE, period_end__gt=now)
    return list(
        Service.objects.live()
        .for_org(org)
        .filter(billing_mode=BillingMode.SUBSCRIPTION)
        .exclude(pk__in=covered.values("service_id"))
        .order_by("name")
    )


RECENT_DAYS = 7  # the deploy and scale pages' estimate looks this far back


@dataclass(frozen=True)
class ChargeQuote:
    """What a deploy or a scale of a dedicated service will cost, in the figures billing charges.

    Pay-as-you-go: ``hourly`` per instance-hour, charged per second of running instances. Subscription: ``monthly``
    per instance-month, ``due_now`` charged at once (a month of every instance when the service has no active
    subscription, else the added instances prorated to ``due_until``, at the subscription's own price).

    Autoscaling (``min_instances``/``max_instances`` given): ``hourly_range`` is the hourly charge at each bound. A
    subscription prepays ``covered`` instances (its floor: ``instances`` or what it already covers, whichever is
    more), and instances above it are charged hourly at ``hourly``, as settlement does. For an existing service
    ``recent`` is what it ran over the last ``RECENT_DAYS`` days (or its life, if shorter) with this floor,
    ``recent_estimate`` what that demand costs for those days at these prices and ``recent_monthly`` for a month.
    """

    currency: str
    subscription: bool
    instances: int
    hourly: Decimal
    monthly: Decimal
    current_instances: int = 0
    current_hourly: Decimal = ZERO
    current_monthly: Decimal = ZERO
    due_now: Decimal = ZERO
    due_until: datetime | None = None
    spendable: Decimal = ZERO  # the org's balance + credit limit now
    warn_hours: int = 0  # BILLING_DEPLOY_WARN_HOURS
    grace_hours: int = 0  # BILLING_GRACE_HOURS
    min_instances: int | None = None
    max_instances: int | None = None
    covered: int = 0  # a subscription's floor after this deploy or scale
    recent: RecentUsage | None = None

    @property
    def elastic(self) -> bool:
        return self.min_instances is not None and self.max_instances is not None

    @property
    def hourly_range(self) -> pricing.HourlyRange:
        """The hourly charge at the minimum and the maximum (``instances`` for both without bounds)."""
        low = self.min_instances if self.min_instances is not None else self.instances
        high = self.max_instances if self.max_instances is not None else self.instances
        return pricing.hourly_range(self.hourly, min_instances=low, max_instances=high, covered=self.covered)

    @property
    def recent_monthly(self) -> Decimal | None:
        """A month at the rate of ``recent``: its hours above the floor scaled to a month, and a subscription's floor
        for the month; None without history."""
        if self.recent is None or self.recent.days <= 0:
            return None
        amount = self.hourly * self.recent.billable_hours * pricing.SUBSCRIPTION_PERIOD.days / self.recent.days
        if self.subscription:
            amount += self.monthly * self.covered
        return quantize_posted(amount)

    @property
    def recent_estimate(self) -> Decimal | None:
        """The last ``recent.days`` days' demand at these prices: the hours above the floor, and a subscription's
        floor for those days (prorated from the month); None without history."""
        if self.recent is None:
            return None
        amount = self.hourly * self.recent.billable_hours
        if self.subscription:
            amount += self.monthly * self.covered * self.recent.days / pricing.SUBSCRIPTION_PERIOD.days
        return quantize_posted(amount)

    @property
    def covers_hours(self) -> Decimal | None:
        """Whole hours of this service's pay-as-you-go cost the balance pays for; None for a subscription."""
        if self.subscription or self.total_hourly <= 0:
            return None
        return max(self.spendable, ZERO) // self.total_hourly

    @property
    def warn(self) -> bool:
        """Pay-as-you-go: the balance runs out within ``warn_hours``; subscription: it does not pay ``due_now``."""
        if self.subscription:
            return self.spendable < self.due_now
        return self.spendable < self.total_hourly * self.warn_hours

    @property
    def total_hourly(self) -> Decimal:
        return self.hourly * self.instances

    @property
    def total_monthly(self) -> Decimal:
        return self.monthly * self.instances

    @property
    def hourly_difference(self) -> Decimal:
        return self.total_hourly - self.current_hourly * self.current_instances

    @property
    def monthly_difference(self) -> Decimal:
        return self.total_monthly - self.current_monthly * self.current_instances


def charge_quote(
    *,
    org: Organization,
    region: Any,
    gpu_product: str,
    gpu_count: int,
    instances: int,
    billing_mode: str,
    service: Service | None = None,
    min_instances: int | None = None,
    max_instances: int | None = None,
) -> ChargeQuote:
    """The price of ``instances`` instances (a new deploy, or ``service`` scaled), as billing will charge it.

    The per-instance prices are the ones a deploy or scale snapshots now (``deployments.placement``); the month and
    the prorated addition follow ``billing.services.subscriptions``, so the page shows what the ledger will post.
    With autoscaling bounds, also the hourly range between them (a subscription's ``instances`` is its floor) and,
    for an existing service, the estimate from its last ``RECENT_DAYS`` days.
    """
    from deployments.models import BillingMode
    from deployments.placement import instance_prices

    hourly, region_monthly, currency = instance_prices(region, gpu_product, gpu_count)
    monthly = pricing.instance_month_price(hourly, region_monthly)
    subscription = billing_mode == BillingMode.SUBSCRIPTION
    current = service.instances if service is not None else 0
    current_hourly = service.hourly_price if service is not None else ZERO
    current_monthly = (
        pricing.instance_month_price(service.hourly_price, service.monthly_price) if service is not None else ZERO
    )
    due_now, due_until, covered = ZERO, None, 0
    if subscription:
        covered = instances
        if service is not None:
            active = (
                Subscription.objects.filter(
                    service=service, parent=None, status=SubscriptionStatus.ACTIVE, period_end__gt=timezone.now()
                )
                .prefetch_related("addons")
                .first()
            )
            if active is not None:
                covered = max(instances, covered_instances(active))
    if subscription and instances > current:  # a scale-down or an unchanged count charges nothing now
        now = timezone.now()
        active = None
        if service is not None:
            active = (
                Subscription.objects.filter(
                    service=service, parent=None, status=SubscriptionStatus.ACTIVE, period_end__gt=now
                )
                .prefetch_related("addons")
                .first()
            )
        if active is None:
            due_now = quantize_posted(monthly * instances)
        else:
            monthly = current_monthly = active.monthly_price
            missing = instances - covered_instances(active, now)
            if missing > 0:
                due_now = pricing.prorated(
                    active.monthly_price * missing,
                    remaining=active.period_end - now,
                    period=active.period_end - active.period_start,
                )
                due_until = active.period_end
    return ChargeQuote(
        currency=currency,
        subscription=subscription,
        instances=instances,
        hourly=hourly,
        monthly=monthly,
        current_instances=current,
        current_hourly=current_hourly,
        current_monthly=current_monthly,
        due_now=due_now,
        due_until=due_until,
        spendable=org_spendable_balance(org.pk),
        warn_hours=settings.BILLING_DEPLOY_WARN_HOURS,
        grace_hours=settings.BILLING_GRACE_HOURS,
        min_instances=min_instances,
        max_instances=max_instances,
        covered=covered,
        recent=(
            service_recent_usage(service, days=RECENT_DAYS, floor=covered if subscription else 0)
            if service is not None
            else None
        ),
    )


def org_accounts(query: str = "") -> QuerySet[Organization]:
    """Every organization with its balance, for platform staff (those without a billing account yet included)."""
    from tenancy.models import Organization

    orgs = Organization.objects.all()
    if query:
        orgs = orgs.filter(Q(name__icontains=query) | Q(namespace__icontains=query))
    return orgs.annotate(
        balance=Coalesce(F("billing_account__balance"), ZERO),
        credit_limit=Coalesce(F("billing_account__credit_limit"), ZERO),
        overdrawn_since=F("billing_account__overdrawn_since"),
    ).order_by("namespace")
