"""A service's scaling policy: its rules, the organization's GPU quota, and what the policy may cost.

The policy (``Service.scaling_mode`` … ``max_wake_wait_s``) is written only by ``deployments.services``
(``service_set_policy``, and ``service_create`` / ``service_scale``, which apply the same rules); this module holds
the rules themselves and the reads the pages show, so the console, ``/api/services`` and the services agree:

- ``policy_check``: the bounds and ranges (min ≤ max ≤ ``MAX_INSTANCES``; min 0, scale-to-zero, only for
  pay-as-you-go, since a subscription pays for a floor of running instances; the target's range per kind; the
  windows' ranges). All values are checked whatever the mode: they are what autoscaling uses when it is switched on.
- ``quota_check``: the GPUs an organization's live services hold in a region, counted at their maximum when they
  autoscale (the autoscaler may go there without asking anyone) and at instances × GPUs otherwise, stay within its
  quota: the ``GpuQuota`` row a platform admin set, else ``DEPLOY_DEFAULT_GPU_QUOTA``. Stopped services count (they
  start again without a check); deleted and deleting ones do not. The platform's own public services are limited
  only by a row set for the platform organization. Callers hold the region's row lock, so two writes in one region
  cannot both take the last GPUs of the quota.
- ``manual_scale_outcome``: a manual scale never fights the autoscaler. On an autoscaling service it either
  switches it to ``fixed`` at that count, or keeps autoscaling with the bounds moved so the count stands: a scale-up
  raises the minimum to the count, a scale-down lowers the maximum to it.
- ``price_range``: min…max instances × the hourly price, per hour and per month (the estimate from the last days'
  instance-hours is billing's: ``billing.selectors.ChargeQuote.recent_monthly``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Case, F, IntegerField, Sum, When
from django.utils.translation import gettext as _

from core.errors import ApplicationError
from core.money import quantize_posted
from deployments.models import (
    PUBLIC_NAMESPACE,
    BillingMode,
    GpuQuota,
    ManualScale,
    Region,
    ScalingMode,
    ScalingTarget,
    Service,
    ServiceStatus,
)
from deployments.placement import HOURS_PER_MONTH

MAX_INSTANCES = 32  # per service, by hand or by the autoscaler

# The target's allowed range per kind, in its unit (requests per instance, milliseconds, percent).
TARGET_RANGES: dict[str, tuple[int, int]] = {
    ScalingTarget.CONCURRENCY: (1, 1000),
    ScalingTarget.TTFT_P95: (50, 60_000),
    ScalingTarget.KV_CACHE: (10, 95),
}
# Seconds.
WINDOW_RANGES: dict[str, tuple[int, int]] = {
    "scale_down_window_s": (0, 3600),
    "idle_to_zero_s": (60, 86_400),
    "max_wake_wait_s": (5, 600),
}
ESTIMATE_DAYS = 7
NOT_HOLDING = (ServiceStatus.DELETING, ServiceStatus.DELETED)


@dataclass(frozen=True)
class ScalingPolicy:
    """The policy fields of a ``Service``, under the same names (forms, serializers and errors use them too)."""

    scaling_mode: str = ScalingMode.FIXED
    min_instances: int = 1
    max_instances: int = 1
    scaling_target: str = ScalingTarget.CONCURRENCY
    target_value: int = 8
    scale_down_window_s: int = 300
    idle_to_zero_s: int = 600
    max_wake_wait_s: int = 120

    @classmethod
    def of(cls, service: Service) -> ScalingPolicy:
        return cls(**{f.name: getattr(service, f.name) for f in fields(cls)})

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def merged(self, **changes: Any) -> ScalingPolicy:
        """This policy with the given fields replaced (None leaves a field as it is)."""
        return ScalingPolicy(**{**asdict(self), **{k: v for k, v in changes.items() if v is not None}})

    def apply_to(self, service: Service) -> None:
        for name, value in asdict(self).items():
            setattr(service, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def autoscale(self) -> bool:
        return self.scaling_mode == ScalingMode.AUTOSCALE


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(name: str, value: Any, low: int, high: int, message: str) -> None:
    if not _whole(value) or not low <= value <= high:
        raise ApplicationError(message % {"low": low, "high": high}, field=name)


def policy_check(policy: ScalingPolicy, *, billing_mode: str) -> None:
    """Raise ApplicationError (with the offending field) unless ``policy`` is within the platform's rules."""
    if policy.scaling_mode not in ScalingMode.values:
        raise ApplicationError(_("The scaling mode is fixed or autoscale."), field="scaling_mode")
    _in_range(
        "max_instances",
        policy.max_instances,
        1,
        MAX_INSTANCES,
        _("The maximum is a whole number of instances from %(low)d to %(high)d."),
    )
    _in_range(
        "min_instances",
        policy.min_instances,
        0,
        MAX_INSTANCES,
        _("The minimum is a whole number of instances from %(low)d to %(high)d."),
    )
    if policy.min_instances > policy.max_instances:
        raise ApplicationError(
            _("The minimum (%(min)d) is above the maximum (%(max)d) instances.")
            % {"min": policy.min_instances, "max": policy.max_instances},
            field="min_instances",
        )
    if policy.min_instances == 0 and billing_mode != BillingMode.PAYG:
        raise ApplicationError(
            _(
                "A monthly subscription pays for a floor of running instances: its minimum is at least 1. "
                "Scaling to zero is for pay-as-you-go services."
            ),
            field="min_instances",
        )
    if policy.scaling_target not in TARGET_RANGES:
        raise ApplicationError(_("The scaling target is concurrency, ttft_p95 or kv_cache."), field="scaling_target")
    low, high = TARGET_RANGES[policy.scaling_target]
    messages: dict[str, str] = {
        ScalingTarget.CONCURRENCY: _("The target is %(low)d to %(high)d concurrent requests per instance."),
        ScalingTarget.TTFT_P95: _("The time-to-first-token goal is %(low)d to %(high)d ms."),
        ScalingTarget.KV_CACHE: _("The KV-cache usage target is %(low)d to %(high)d %%."),
    }
    _in_range("target_value", policy.target_value, low, high, messages[policy.scaling_target])
    window_messages = {
        "scale_down_window_s": _("The scale-down window is %(low)d to %(high)d seconds."),
        "idle_to_zero_s": _("The idle time before scaling to zero is %(low)d to %(high)d seconds."),
        "max_wake_wait_s": _("The longest wait while waking is %(low)d to %(high)d seconds."),
    }
    for name, (low, high) in WINDOW_RANGES.items():
        _in_range(name, getattr(policy, name), low, high, window_messages[name])


# --- the GPU quota ----------------------------------------------------------------------------------------------


def quota_gpus(*, scaling_mode: str, instances: int, max_instances: int, gpu_count: int) -> int:
    """GPUs a service counts against its organization's quota: at its maximum when it autoscales."""
    return (max_instances if scaling_mode == ScalingMode.AUTOSCALE else instances) * gpu_count


def gpu_quota_of(org: Any, region: Region) -> int | None:
    """The most GPUs ``org`` may hold in ``region``; None: no limit (the platform's own, without a row)."""
    row = GpuQuota.objects.filter(org=org, region=region).values_list("max_gpus", flat=True).first()
    if row is not None:
        return int(row)
    if org.namespace == PUBLIC_NAMESPACE:
        return None
    return int(settings.DEPLOY_DEFAULT_GPU_QUOTA)


def _held_expression() -> Sum:
    return Sum(
        Case(
            When(scaling_mode=ScalingMode.AUTOSCALE, then=F("max_instances") * F("gpu_count")),
            default=F("instances") * F("gpu_count"),
            output_field=IntegerField(),
        )
    )


def gpus_held(org: Any, region: Region, *, exclude: Any = None) -> int:
    """GPUs ``org``'s live services in ``region`` count against its quota (``exclude``: a service's id left out)."""
    services = Service.objects.for_org(org).filter(region=region).exclude(status__in=NOT_HOLDING)
    if exclude is not None:
        services = services.exclude(pk=exclude)
    return int(services.aggregate(total=_held_expression())["total"] or 0)


def quota_check(*, org: Any, region: Region, gpus: int, exclude: Any = None, field: str) -> None:
    """Raise unless ``gpus`` more GPUs (a service's count, ``exclude`` being that service) fit ``org``'s quota."""
    quota = gpu_quota_of(org, region)
    if quota is None:
        return
    held = gpus_held(org, region, exclude=exclude)
    if held + gpus > quota:
        raise ApplicationError(
            _(
                "Your organization's GPU quota in %(region)s is %(quota)d GPUs: its other services hold %(held)d, "
                "and this needs %(gpus)d (an autoscaling service counts at its maximum). Lower the instances, or "
                "ask the platform administrators for a larger quota."
            )
            % {"region": region.code, "quota": quota, "held": held, "gpus": gpus},
            code="quota_exceeded",
            field=field,
        )


@dataclass(frozen=True)
class QuotaRow:
    org: Any
    region: Region
    max_gpus: int | None  # None: no limit (the platform's own services without a row)
    custom: bool  # a row set by an admin (else the default)
    held: int

    @property
    def over(self) -> bool:
        return self.max_gpus is not None and self.held > self.max_gpus


def quota_overview(orgs: list[Any], regions: list[Region]) -> list[QuotaRow]:
    """Every (organization, region) pair's quota and what it holds, in three queries."""
    rows = {(q.org_id, q.region_id): q.max_gpus for q in GpuQuota.objects.filter(org__in=orgs)}
    held: dict[tuple[Any, Any], int] = {
        (r["org_id"], r["region_id"]): int(r["total"] or 0)
        for r in Service.objects.filter(org__in=orgs)
        .exclude(status__in=NOT_HOLDING)
        .values("org_id", "region_id")
        .annotate(total=_held_expression())
    }
    out = []
    for org in orgs:
        for region in regions:
            custom = (org.pk, region.pk) in rows
            if custom:
                limit: int | None = rows[(org.pk, region.pk)]
            elif org.namespace == PUBLIC_NAMESPACE:
                limit = None
            else:
                limit = settings.DEPLOY_DEFAULT_GPU_QUOTA
            out.append(QuotaRow(org, region, limit, custom, held.get((org.pk, region.pk), 0)))
    return out


# --- manual scaling -----------------------------------------------------------------------------------------


def manual_scale_outcome(service: Service, instances: int, effect: str) -> ScalingPolicy:
    """The policy ``service`` has after being scaled by hand to ``instances`` (see the module docstring)."""
    policy = ScalingPolicy.of(service)
    if not policy.autoscale:
        return policy
    if effect != ManualScale.BOUNDS:
        return policy.merged(scaling_mode=ScalingMode.FIXED)
    if instances > service.instances:
        return policy.merged(min_instances=instances, max_instances=max(policy.max_instances, instances))
    if instances < service.instances:
        return policy.merged(max_instances=instances, min_instances=min(policy.min_instances, instances))
    return policy


# --- what it may cost ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceRange:
    """What ``low``…``high`` instances cost; a subscription's floor (``low``) is paid by the month, above it by the
    hour."""

    currency: str
    hourly: Decimal  # per instance-hour
    monthly: Decimal  # per instance-month of a subscription
    low: int
    high: int
    subscription: bool = False

    def _month(self, instances: int) -> Decimal:
        if self.subscription:
            return self.monthly * self.low + self.hourly * HOURS_PER_MONTH * (instances - self.low)
        return self.hourly * HOURS_PER_MONTH * instances

    @property
    def low_hourly(self) -> Decimal:
        return self.hourly * self.low

    @property
    def high_hourly(self) -> Decimal:
        return self.hourly * self.high

    @property
    def low_monthly(self) -> Decimal:
        return quantize_posted(self._month(self.low))

    @property
    def high_monthly(self) -> Decimal:
        return quantize_posted(self._month(self.high))

    @property
    def single(self) -> bool:
        return self.low == self.high


def price_range(quote: Any, policy: ScalingPolicy, *, instances: int) -> PriceRange | None:
    """The range for ``policy`` at billing's prices (``quote``: a ChargeQuote; None without billing)."""
    if quote is None:
        return None
    low, high = (policy.min_instances, policy.max_instances) if policy.autoscale else (instances, instances)
    return PriceRange(quote.currency, quote.hourly, quote.monthly, low, high, subscription=quote.subscription)
