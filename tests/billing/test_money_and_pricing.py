"""Rounding rules and pricing arithmetic, in one place and exact."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from billing import pricing
from core.money import (
    format_money,
    from_minor_units,
    quantize_posted,
    quantize_rate,
    to_minor_units,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def price(**overrides):
    values = dict(
        input_per_1k=Decimal("0.0006"),
        output_per_1k=Decimal("0.0012"),
        cached_input_per_1k=None,
        long_context_threshold=None,
        long_input_per_1k=None,
        long_output_per_1k=None,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def test_rounding_is_half_up_at_two_and_six_places():
    assert quantize_posted(Decimal("0.005")) == Decimal("0.01")
    assert quantize_posted(Decimal("-0.005")) == Decimal("-0.01")
    assert quantize_rate(Decimal("0.0000005")) == Decimal("0.000001")
    assert format_money(Decimal("3.52"), "CNY") == "¥3.52"
    assert format_money(Decimal("0.0006"), "CNY", rate=True) == "¥0.0006"
    assert format_money(Decimal("-12.5"), "USD") == "-$12.50"
    with pytest.raises(ValueError):
        format_money(Decimal("1"), "")


def test_minor_units_at_the_stripe_boundary():
    assert to_minor_units(Decimal("12.34"), "CNY") == 1234
    assert to_minor_units(Decimal("500"), "JPY") == 500
    assert from_minor_units(1234, "CNY") == Decimal("12.34")
    with pytest.raises(ValueError):
        to_minor_units(Decimal("0.001"), "CNY")


def test_token_amount_uses_input_and_output_prices():
    # 1000 in × 0.0006 + 500 out × 0.0012 per 1K = 0.0006 + 0.0006
    assert pricing.token_amount(price(), prompt_tokens=1000, completion_tokens=500) == Decimal("0.001200")
    # rounded once per request at 6 places: 7 in tokens × 0.0006/1K = 0.0000042 → 0.000004
    assert pricing.token_amount(price(), prompt_tokens=7, completion_tokens=0) == Decimal("0.000004")


def test_cached_tokens_pay_the_cached_price_or_the_input_price():
    p = price(cached_input_per_1k=Decimal("0.0001"))
    assert pricing.token_amount(p, prompt_tokens=1000, completion_tokens=0, cached_tokens=400) == Decimal("0.000400")
    assert pricing.token_amount(price(), prompt_tokens=1000, completion_tokens=0, cached_tokens=400) == Decimal(
        "0.000600"
    )
    # cached can never exceed the prompt
    assert pricing.token_amount(p, prompt_tokens=10, completion_tokens=0, cached_tokens=99) == Decimal("0.000001")


def test_long_context_tier_prices_the_whole_request_above_the_threshold():
    p = price(long_context_threshold=32000, long_input_per_1k=Decimal("0.0012"), long_output_per_1k=Decimal("0.0024"))
    assert pricing.token_amount(p, prompt_tokens=32000, completion_tokens=1000) == Decimal("0.020400")
    assert pricing.token_amount(p, prompt_tokens=32001, completion_tokens=1000) == Decimal("0.040801")


def test_the_worst_case_reserved_covers_every_charge_the_request_can_get():
    tiered = price(
        cached_input_per_1k=Decimal("0.0009"),  # above the input price: the worst case takes it
        long_context_threshold=100,
        long_input_per_1k=Decimal("0.0012"),
        long_output_per_1k=Decimal("0.0024"),
    )
    for p in (price(), price(cached_input_per_1k=Decimal("0.0001")), tiered):
        for bound in (7, 100, 101, 5000):
            worst = pricing.token_worst_case(p, prompt_tokens=bound, completion_tokens=300)
            for prompt in {0, 1, bound // 2, bound}:
                for cached in {0, prompt // 2, prompt}:
                    charged = pricing.token_amount(p, prompt_tokens=prompt, completion_tokens=300, cached_tokens=cached)
                    assert charged <= worst
    # rounded up, never down: 7 × 0.0006 / 1K = 0.0000042 reserves 0.000005
    assert pricing.token_worst_case(price(), prompt_tokens=7, completion_tokens=0) == Decimal("0.000005")


def test_a_price_history_gives_the_price_in_force_and_the_first_before_it_began():
    first = pricing.TokenRates(currency="CNY", input_per_1k=Decimal("0.0006"), output_per_1k=Decimal("0.0012"))
    second = pricing.TokenRates(currency="CNY", input_per_1k=Decimal("0.0010"), output_per_1k=Decimal("0.0012"))
    history = pricing.PriceHistory.of([(T0 + timedelta(hours=1), second), (T0, first)])
    assert history.at(T0 - timedelta(days=1)) is first
    assert history.at(T0 + timedelta(minutes=59)) is first
    assert history.at(T0 + timedelta(hours=1)) is second
    assert history.at(T0 + timedelta(days=1)) is second


def test_instance_timeline_integrates_meter_steps_less_subscribed_instances():
    timeline = pricing.InstanceTimeline(
        [(T0, 2), (T0 + timedelta(minutes=30), 3), (T0 + timedelta(minutes=45), 0)],
        [pricing.Coverage(T0 + timedelta(minutes=40), T0 + timedelta(days=30), 1)],
    )
    # 30 min × 2 + 10 min × 3 + 5 min × (3 - 1) = 3600 + 1800 + 600 instance-seconds
    assert timeline.billable_seconds(T0, T0 + timedelta(hours=1)) == Decimal(6000)
    assert timeline.billable_seconds(T0 - timedelta(hours=1), T0) == 0
    assert timeline.window_cost(T0, T0 + timedelta(hours=1), Decimal("3.60")) == Decimal("6.000000")


def test_partial_window_settlements_add_up_to_the_whole_window():
    timeline = pricing.InstanceTimeline([(T0 + timedelta(seconds=1, microseconds=7), 1)])
    hourly = Decimal("3.52")
    cut = T0 + timedelta(minutes=17, seconds=3, microseconds=333)
    first = timeline.window_cost(T0, cut, hourly)
    second = timeline.window_cost(T0, T0 + timedelta(hours=1), hourly) - first
    assert first + second == timeline.window_cost(T0, T0 + timedelta(hours=1), hourly)


def test_monthly_price_and_proration():
    assert pricing.monthly_price(Decimal("3.52")) == Decimal("1774.08")  # 3.52 × 720 × 0.7
    assert pricing.prorated(Decimal("100"), remaining=timedelta(days=15), period=timedelta(days=30)) == Decimal("50.00")
    assert pricing.prorated(Decimal("100"), remaining=timedelta(0), period=timedelta(days=30)) == Decimal("0.00")
