"""Money: Decimal amounts, one rounding rule, one formatter. Never floats."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Posted amounts (ledger entries, invoices) carry 2 decimals in the currency's unit...
POSTED_PLACES = Decimal("0.01")
# ...while rates and accumulated usage charges keep 6, so that many tiny per-token charges do not round to zero.
RATE_PLACES = Decimal("0.000001")

CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€"}


def quantize_posted(amount: Decimal) -> Decimal:
    return Decimal(amount).quantize(POSTED_PLACES, rounding=ROUND_HALF_UP)


def quantize_rate(amount: Decimal) -> Decimal:
    return Decimal(amount).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str, *, rate: bool = False) -> str:
    """``¥0.0006`` for rates (trailing zeros trimmed, at least 2 places), ``¥3.52`` for posted amounts."""
    if currency is None or currency == "":
        raise ValueError("format_money needs a currency")
    amount = Decimal(amount)
    symbol = CURRENCY_SYMBOLS.get(currency)
    if rate:
        value = quantize_rate(amount).normalize()
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > -2:
            value = value.quantize(POSTED_PLACES)
        text = f"{value:,f}"
    else:
        text = f"{quantize_posted(amount):,.2f}"
    if text.startswith("-"):
        return f"-{symbol}{text[1:]}" if symbol else f"-{text[1:]} {currency}"
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


# Currencies whose Stripe minor unit is not 1/100 of the unit.
ZERO_DECIMAL_CURRENCIES = {"JPY", "KRW", "VND", "CLP", "PYG", "UGX", "XAF", "XOF"}


def minor_units_factor(currency: str) -> int:
    return 1 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 100


def to_minor_units(amount: Decimal, currency: str) -> int:
    """A posted amount as Stripe's integer minor units (``¥12.34`` → 1234); refuses sub-minor amounts."""
    factor = minor_units_factor(currency)
    scaled = Decimal(amount) * factor
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not a whole number of minor units")
    return int(scaled)


def from_minor_units(value: int, currency: str) -> Decimal:
    return quantize_posted(Decimal(int(value)) / minor_units_factor(currency))


def per_1k(tokens: int, price_per_1k: Decimal) -> Decimal:
    """The unrounded cost of ``tokens`` at a per-1K-token price (callers round the total once)."""
    return Decimal(int(tokens)) * Decimal(price_per_1k) / 1000


def per_seconds(seconds: int | Decimal, hourly_price: Decimal) -> Decimal:
    """The unrounded cost of ``seconds`` instance-seconds at an hourly price."""
    return Decimal(seconds) * Decimal(hourly_price) / 3600
