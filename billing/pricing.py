"""Pure pricing arithmetic: token charges, instance-time integration, subscription prices. No database writes.

A token's price has one rule, :func:`token_amount`, used for the three figures that must agree: the gateway's usage
record (and the playground's answer), the ledger's charge for that record, and (through :func:`token_worst_case`)
the gateway's reservation. Its rates come from one place, the ``TokenPrice`` history read by
``billing.selectors.token_price_histories``; the gateway holds that history in its serving caches.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from django.utils import timezone

from core.money import RATE_PLACES, per_1k, per_seconds, quantize_posted, quantize_rate

HOUR = timedelta(hours=1)
# A subscription month, and the discount a month of prepaid instance time gets over pay-as-you-go.
SUBSCRIPTION_PERIOD = timedelta(days=30)
SUBSCRIPTION_HOURS = 24 * 30
SUBSCRIPTION_DISCOUNT = Decimal("0.7")
# Usage before a model's first recorded price is charged with that first price.
PRICE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.get_fixed_timezone(0))


class Rates(Protocol):
    """What pricing reads of a price: a ``TokenPrice`` row or :class:`TokenRates`."""

    @property
    def input_per_1k(self) -> Decimal: ...
    @property
    def output_per_1k(self) -> Decimal: ...
    @property
    def cached_input_per_1k(self) -> Decimal | None: ...
    @property
    def long_context_threshold(self) -> int | None: ...
    @property
    def long_input_per_1k(self) -> Decimal | None: ...
    @property
    def long_output_per_1k(self) -> Decimal | None: ...


@dataclass(frozen=True, slots=True)
class TokenRates:
    """The rates of one token price, detached from the database (what the gateway caches)."""

    currency: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None = None
    long_context_threshold: int | None = None
    long_input_per_1k: Decimal | None = None
    long_output_per_1k: Decimal | None = None
    # The TokenPrice row these rates are; None for a model with no row yet (its catalog price, from PRICE_EPOCH).
    token_price_id: int | None = None


def _tier(price: Rates, prompt_tokens: int) -> tuple[Decimal, Decimal]:
    """(input, output) rates: a prompt longer than the long-context threshold pays the long ones for everything."""
    threshold, long_input, long_output = price.long_context_threshold, price.long_input_per_1k, price.long_output_per_1k
    if threshold is not None and prompt_tokens > threshold and long_input is not None and long_output is not None:
        return long_input, long_output  # a threshold always has both (token_price_long_tier_complete)
    return price.input_per_1k, price.output_per_1k


def token_amount(price: Rates, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
    """What one request costs at ``price``, rounded once to rate precision (half up, ``core.money``).

    Cached prompt tokens pay the cached price when there is one; a prompt longer than the long-context threshold
    pays the long-context prices for the whole request.
    """
    input_rate, output_rate = _tier(price, prompt_tokens)
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = price.cached_input_per_1k if price.cached_input_per_1k is not None else input_rate
    raw = (
        per_1k(prompt_tokens - cached, input_rate)
        + per_1k(cached, cached_rate)
        + per_1k(completion_tokens, output_rate)
    )
    return quantize_rate(raw)


def token_worst_case(price: Rates, *, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The most :func:`token_amount` can be for at most these tokens (rounded up): what admission reserves.

    ``prompt_tokens`` is an upper bound, so its tier is the highest the request can reach; no cached discount is
    assumed (and a cached price above the input price is taken as the worst).
    """
    input_rate, output_rate = _tier(price, prompt_tokens)
    if price.cached_input_per_1k is not None:
        input_rate = max(input_rate, price.cached_input_per_1k)
    raw = per_1k(prompt_tokens, input_rate) + per_1k(completion_tokens, output_rate)
    return raw.quantize(RATE_PLACES, rounding=ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class PriceHistory:
    """One model's prices over time: ``rates[i]`` is in force from ``starts[i]`` (ascending) to the next start.

    A moment before the first start gets the first price (usage recorded before a model's first price row).
    """

    starts: tuple[datetime, ...]
    rates: tuple[TokenRates, ...]

    @classmethod
    def of(cls, entries: Sequence[tuple[datetime, TokenRates]]) -> PriceHistory:
        ordered = sorted(entries, key=lambda entry: entry[0])
        return cls(tuple(start for start, _r in ordered), tuple(rates for _s, rates in ordered))

    def at(self, moment: datetime) -> TokenRates:
        if len(self.rates) == 1:
            return self.rates[0]
        return self.rates[max(bisect.bisect_right(self.starts, moment) - 1, 0)]


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Coverage:
    """Instances prepaid by a subscription over [start, end)."""

    start: datetime
    end: datetime
    instances: int


class InstanceTimeline:
    """The number of billable instances of a service over time, from its meter events, less subscribed instances."""

    def __init__(self, meter: list[tuple[datetime, int]], coverage: Sequence[Coverage] = ()) -> None:
        # ``meter`` in the order it was written (created_at, id): the sort is stable, so of two changes dated the
        # same moment (a reconcile pass dates instances found gone no earlier than the latest change) the later wins.
        self.meter = sorted(meter, key=lambda item: item[0])
        self._times = [at for at, _n in self.meter]
        self.coverage = list(coverage)

    def _running_at(self, moment: datetime) -> int:
        index = bisect.bisect_right(self._times, moment)
        return self.meter[index - 1][1] if index else 0

    def _covered_at(self, moment: datetime) -> int:
        return sum(c.instances for c in self.coverage if c.start <= moment < c.end)

    def covered_at(self, moment: datetime) -> int:
        """The subscription floor at ``moment``: instances prepaid then (running ones above it are billed hourly)."""
        return self._covered_at(moment)

    def next_coverage_change(self, start: datetime, end: datetime) -> datetime:
        """The first moment in (start, end) where the subscription floor changes, else ``end``.

        Settlement cuts its segments there, so each ledger row is charged against one floor and can name it.
        """
        changes = [p for c in self.coverage for p in (c.start, c.end) if start < p < end]
        return min(changes, default=end)

    def running_seconds(self, start: datetime, end: datetime) -> Decimal:
        """Instance-seconds running in [start, end), subscribed or not (what the billing center charts)."""
        return InstanceTimeline(self.meter).billable_seconds(start, end)

    def billable_seconds(self, start: datetime, end: datetime) -> Decimal:
        """Billable instance-seconds in [start, end): the step function integrated exactly (microseconds kept)."""
        if end <= start:
            return Decimal(0)
        points = {start, end}
        points.update(self._times[bisect.bisect_right(self._times, start) : bisect.bisect_left(self._times, end)])
        for c in self.coverage:
            points.update(p for p in (c.start, c.end) if start < p < end)
        ordered = sorted(points)
        total = Decimal(0)
        for left, right in zip(ordered, ordered[1:], strict=False):
            instances = max(0, self._running_at(left) - self._covered_at(left))
            if instances:
                seconds = Decimal((right - left) // timedelta(microseconds=1)) / 1_000_000
                total += instances * seconds
        return total

    def window_cost(self, window_start: datetime, until: datetime, hourly_price: Decimal) -> Decimal:
        """Cost of [window_start, until) rounded once, so partial settlements of a window add up to the whole."""
        return quantize_rate(per_seconds(self.billable_seconds(window_start, until), hourly_price))


@dataclass(frozen=True)
class HourlyRange:
    """What a service costs per hour between its autoscaling bounds, as settlement charges it.

    Pay-as-you-go: every running instance at ``hourly``. Subscription: the floor (``covered`` instances) is prepaid
    by the month, so the hourly charge is only for instances above it, and none below it (nothing is refunded).
    """

    low: Decimal  # per hour at ``min_instances``
    high: Decimal  # per hour at ``max_instances``
    hourly: Decimal  # one instance-hour
    covered: int = 0

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def hourly_range(hourly_price: Decimal, *, min_instances: int, max_instances: int, covered: int = 0) -> HourlyRange:
    """The hourly charge at ``min_instances`` and at ``max_instances`` with ``covered`` instances prepaid (the same
    rule as :meth:`InstanceTimeline.billable_seconds`: ``max(0, running - covered)`` instances are billed)."""
    hourly = Decimal(hourly_price)
    low, high = sorted((max(0, int(min_instances)), max(0, int(max_instances))))
    floor = max(0, int(covered))
    return HourlyRange(
        low=hourly * max(0, low - floor), high=hourly * max(0, high - floor), hourly=hourly, covered=floor
    )


def monthly_price(hourly_price: Decimal) -> Decimal:
    """A month of one instance on subscription: ``hourly × 24 × 30 × 0.7``, rounded to a posted amount."""
    return quantize_posted(Decimal(hourly_price) * SUBSCRIPTION_HOURS * SUBSCRIPTION_DISCOUNT)


def instance_month_price(hourly_price: Decimal, monthly: Decimal | None = None) -> Decimal:
    """A month of one instance as a subscription charges it: the region's monthly price when it has one, else
    :func:`monthly_price` of the hourly one (both rounded to a posted amount)."""
    if monthly:
        return quantize_posted(monthly)
    return monthly_price(hourly_price)


def prorated(amount: Decimal, *, remaining: timedelta, period: timedelta) -> Decimal:
    """``amount`` for the part ``remaining`` of ``period`` (scale-up of a subscription mid-period)."""
    if remaining <= timedelta(0):
        return Decimal("0.00")
    fraction = Decimal(remaining // timedelta(seconds=1)) / Decimal(period // timedelta(seconds=1))
    return quantize_posted(Decimal(amount) * min(fraction, Decimal(1)))
