"""Pure pricing arithmetic: token charges, instance-time integration, subscription prices. No database writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from core.money import per_1k, per_seconds, quantize_posted, quantize_rate

HOUR = timedelta(hours=1)
# A subscription month, and the discount a month of prepaid instance time gets over pay-as-you-go.
SUBSCRIPTION_PERIOD = timedelta(days=30)
SUBSCRIPTION_HOURS = 24 * 30
SUBSCRIPTION_DISCOUNT = Decimal("0.7")


def token_amount(price, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
    """What one request costs at ``price`` (a TokenPrice), rounded once to rate precision.

    Cached prompt tokens pay the cached price when there is one; a prompt longer than the long-context threshold
    pays the long-context prices for the whole request.
    """
    long_context = price.long_context_threshold is not None and prompt_tokens > price.long_context_threshold
    input_rate = price.long_input_per_1k if long_context else price.input_per_1k
    output_rate = price.long_output_per_1k if long_context else price.output_per_1k
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = price.cached_input_per_1k if price.cached_input_per_1k is not None else input_rate
    raw = (
        per_1k(prompt_tokens - cached, input_rate)
        + per_1k(cached, cached_rate)
        + per_1k(completion_tokens, output_rate)
    )
    return quantize_rate(raw)


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

    def __init__(self, meter: list[tuple[datetime, int]], coverage: list[Coverage] = ()):
        self.meter = sorted(meter, key=lambda item: item[0])
        self.coverage = list(coverage)

    def _running_at(self, moment: datetime) -> int:
        count = 0
        for at, instances in self.meter:
            if at > moment:
                break
            count = instances
        return count

    def _covered_at(self, moment: datetime) -> int:
        return sum(c.instances for c in self.coverage if c.start <= moment < c.end)

    def billable_seconds(self, start: datetime, end: datetime) -> Decimal:
        """Billable instance-seconds in [start, end): the step function integrated exactly (microseconds kept)."""
        if end <= start:
            return Decimal(0)
        points = {start, end}
        points.update(at for at, _n in self.meter if start < at < end)
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


def monthly_price(hourly_price: Decimal) -> Decimal:
    """A month of one instance on subscription: ``hourly × 24 × 30 × 0.7``, rounded to a posted amount."""
    return quantize_posted(Decimal(hourly_price) * SUBSCRIPTION_HOURS * SUBSCRIPTION_DISCOUNT)


def prorated(amount: Decimal, *, remaining: timedelta, period: timedelta) -> Decimal:
    """``amount`` for the part ``remaining`` of ``period`` (scale-up of a subscription mid-period)."""
    if remaining <= timedelta(0):
        return Decimal("0.00")
    fraction = Decimal(remaining // timedelta(seconds=1)) / Decimal(period // timedelta(seconds=1))
    return quantize_posted(Decimal(amount) * min(fraction, Decimal(1)))
