from decimal import Decimal

from django import template

from core.money import format_money

register = template.Library()


@register.filter
def money(amount: Decimal | str | None, currency: str) -> str:
    """``{{ amount|money:"CNY" }}``: a rate-precision amount; the currency is required."""
    if amount is None or amount == "":
        return "—"
    return format_money(Decimal(amount), currency, rate=True)


@register.filter
def money_posted(amount: Decimal | str | None, currency: str) -> str:
    """``{{ amount|money_posted:"CNY" }}``: a posted amount with exactly two decimals."""
    if amount is None or amount == "":
        return "—"
    return format_money(Decimal(amount), currency)
