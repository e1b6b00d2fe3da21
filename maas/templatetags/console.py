from django import template

register = template.Library()


@register.filter
def tokens_label(value):
    """131072 → 128K, 8192 → 8K, 1000000 → 1M."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return value
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}K"
    return f"{n:,}"
