"""Server-side SVG charts (no JavaScript): a bar chart and a multi-series line chart, accessible via <title>/<desc>.

Text is drawn at its real size: the plot is an SVG without a viewBox, its height fixed in pixels and its x positions
in percent of its width, so a narrow panel squeezes the bars and lines but never shrinks the axis labels (a viewBox
scaled a 720-unit drawing into a 500-pixel panel, and 11-unit labels became 8 pixels). The y axis is a separate
fixed-width SVG beside the plot. Colours are SVG presentation attributes, which the console's CSP allows (it
refuses style attributes).

Series get distinct colours from a qualitative palette up to ``MAX_SERIES``; a caller with more groups folds the
rest into one "other" series (it is the caller who can aggregate them correctly) and names it in ``muted``, which
draws it grey.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

HEIGHT = 240  # the plot's height in CSS pixels
TOP, BOTTOM = 12, 30  # room above the plot area, and below it for the x labels
AXIS_WIDTH = 72  # the y axis' width in CSS pixels: room for "0.0000125" or "1,000,000" at FONT_SIZE
FONT_SIZE = 12
TEXT = "#4a5266"
GRID = "#e3e6ef"
# d3's category10, the brand blue first, its grey kept for "other": distinct hues, each readable on white.
PALETTE = ["#2457f5", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
OTHER_COLOUR = "#7f7f7f"
MAX_SERIES = len(PALETTE)
DASHES = ["", "6 4", "2 3"]  # the line styles of a series' variants (p50 solid, p99 dashed, ...)


@dataclass(frozen=True)
class Series:
    """One line. Lines with the same ``name`` share its colour and legend entry; ``variant`` sets the dash."""

    name: str
    values: Sequence[float | None]
    variant: str = ""


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude: float = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    # Small amounts (per-token spend is often ¥0.00002) keep three significant digits instead of rounding to 0.
    decimals = min(9, max(2, 2 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def _x(i: float, count: int) -> str:
    """The centre of slot ``i`` of ``count``, in percent of the plot's width."""
    return f"{100 * (i + 0.5) / max(count, 1):.3f}%"


def _y(value: float, top: float) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    return f"{TOP + plot_h - plot_h * value / top:.1f}"


def _ticks(labels: Sequence[str], current: int | None) -> list[tuple[int, str, bool]]:
    """The x labels to draw: about eight, always the current slot's; every other one marked minor (narrow screens
    hide those)."""
    every = max(1, math.ceil(len(labels) / 8))
    chosen = [i for i in range(len(labels)) if i % every == 0]
    if current is not None and 0 <= current < len(labels):
        chosen = [i for i in chosen if abs(i - current) >= every * 0.75] + [current]
    return [(i, labels[i], n % 2 == 1 and i != current) for n, i in enumerate(sorted(chosen))]


def _frame(title: str, top: float, body: str, labels: Sequence[str], current: int | None) -> SafeString:
    plot_h = HEIGHT - TOP - BOTTOM
    axis = []
    grid = []
    for i in range(5):
        y = f"{TOP + plot_h - plot_h * i / 4:.1f}"
        grid.append(format_html('<line x1="0" y1="{}" x2="100%" y2="{}" stroke="{}"/>', y, y, GRID))
        axis.append(
            format_html(
                '<text x="{}" y="{}" font-size="{}" text-anchor="end" dominant-baseline="middle" fill="{}">{}</text>',
                AXIS_WIDTH - 8,
                y,
                FONT_SIZE,
                TEXT,
                _fmt(top * i / 4),
            )
        )
    ticks = format_html_join(
        "",
        '<text class="{}" x="{}" y="{}" font-size="{}" font-weight="{}" text-anchor="middle" fill="{}">{}</text>',
        (
            (
                "tick tick-minor" if minor else ("tick tick-current" if i == current else "tick"),
                _x(i, len(labels)),
                HEIGHT - 10,
                FONT_SIZE,
                600 if i == current else 400,
                TEXT,
                label,
            )
            for i, label, minor in _ticks(labels, current)
        ),
    )
    return format_html(
        '<div class="chart-box">'
        '<svg class="chart-axis" width="{}" height="{}" aria-hidden="true">{}</svg>'
        '<svg class="chart" width="100%" height="{}" role="img" aria-label="{}" overflow="visible">'
        "<title>{}</title>{}{}{}</svg></div>",
        AXIS_WIDTH,
        HEIGHT,
        mark_safe("".join(axis)),
        HEIGHT,
        title,
        title,
        mark_safe("".join(grid)),
        ticks,
        body,
    )


def bar_chart(
    points: Sequence[tuple[str, Decimal | float]],
    *,
    title: str,
    current: int | None = None,
    current_note: str = "",
) -> SafeString:
    """One bar per (label, value); each bar carries a <title> tooltip with its exact value.

    ``current`` is the index of a period still running (today): its label is always drawn, in bold, and its bar is
    outlined and paler, its tooltip reading ``current_note`` (e.g. "so far")."""
    values = [float(v) for _l, v in points]
    top = _nice_max(max(values, default=0))
    width = f"{70 / max(len(points), 1):.3f}%"
    bars = []
    for i, ((label, _raw), v) in enumerate(zip(points, values, strict=True)):
        partial = i == current
        tooltip = f"{label} ({current_note})" if partial and current_note else label
        bars.append(
            format_html(
                '<rect class="{}" x="{}" y="{}" width="{}" height="{}" rx="2" fill="{}" fill-opacity="{}" stroke="{}" '
                'stroke-dasharray="{}"><title>{}: {}</title></rect>',
                "bar bar-current" if partial else "bar",
                f"{100 * (i + 0.15) / len(points):.3f}%",
                _y(v, top),
                width,
                f"{(HEIGHT - TOP - BOTTOM) * v / top:.1f}",
                PALETTE[0],
                "0.55" if partial else "1",
                PALETTE[0] if partial else "none",
                "3 2" if partial else "none",
                tooltip,
                _fmt(v),
            )
        )
    return _frame(title, top, mark_safe("".join(bars)), [label for label, _v in points], current)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    current: int | None = None,
    muted: Collection[str] = (),
) -> SafeString:
    """Lines over shared x labels; None leaves a gap. A legend names each series once with its colour, and the
    line styles of the variants when there are several. Names in ``muted`` (an "other" group) are drawn grey."""
    values = [v for line in series for v in line.values if v is not None]
    top = _nice_max(max(values, default=0))
    count = len(labels)
    colours = _colours([s.name for s in series], muted)
    variants = list(dict.fromkeys(s.variant for s in series))
    dashes = {v: DASHES[min(i, len(DASHES) - 1)] for i, v in enumerate(variants)}
    parts = []
    for line in series:
        colour, dash = colours[line.name], dashes[line.variant]
        name = f"{line.name} {line.variant}".strip()
        points = [(i, v) for i, v in enumerate(line.values) if v is not None]
        # Segments rather than a polyline: a polyline's points cannot be percentages of the width.
        for (i, v), (j, w) in zip(points, points[1:], strict=False):
            if j == i + 1:
                parts.append(
                    format_html(
                        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>',
                        _x(i, count),
                        _y(v, top),
                        _x(j, count),
                        _y(w, top),
                        colour,
                        dash or "none",
                    )
                )
        for i, v in points:
            parts.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{} · {}: {}</title></circle>',
                    _x(i, count),
                    _y(v, top),
                    colour,
                    labels[i],
                    name,
                    _fmt(v),
                )
            )
    legend = format_html_join(
        "",
        '<span class="legend-item"><svg class="legend-swatch" width="10" height="10" aria-hidden="true">'
        '<rect width="10" height="10" rx="2" fill="{}"/></svg>{}</span>',
        ((colour, name) for name, colour in colours.items()),
    )
    if len(variants) > 1:
        legend += format_html_join(
            "",
            '<span class="legend-item legend-variant"><svg class="legend-line" width="22" height="10" '
            'aria-hidden="true"><line x1="0" y1="5" x2="22" y2="5" stroke="{}" stroke-width="2" '
            'stroke-dasharray="{}"/></svg>{}</span>',
            ((TEXT, dashes[v] or "none", v) for v in variants),
        )
    svg = _frame(title, top, mark_safe("".join(parts)), labels, current)
    return format_html('{}<div class="legend">{}</div>', svg, legend)


def stacked_bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    current: int | None = None,
    current_note: str = "",
    muted: Collection[str] = (),
) -> SafeString:
    """One bar per label, stacked from the series in order (the first at the bottom), with a legend; each segment
    carries a <title> tooltip with its series and exact value, and None or 0 draws nothing.

    ``current`` marks a period still running as :func:`bar_chart` does (paler, its tooltip reading
    ``current_note``)."""
    count = len(labels)
    totals = [sum(float(s.values[i] or 0) for s in series) for i in range(count)]
    top = _nice_max(max(totals, default=0))
    colours = _colours([s.name for s in series], muted)
    plot_h = HEIGHT - TOP - BOTTOM
    width = f"{70 / max(count, 1):.3f}%"
    parts = []
    for i, label in enumerate(labels):
        partial = i == current
        base = 0.0
        for line in series:
            value = float(line.values[i] or 0)
            if value <= 0:
                continue
            tooltip = f"{label} ({current_note})" if partial and current_note else label
            parts.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}">'
                    "<title>{} · {}: {}</title></rect>",
                    "bar bar-current" if partial else "bar",
                    f"{100 * (i + 0.15) / count:.3f}%",
                    _y(base + value, top),
                    width,
                    f"{plot_h * value / top:.1f}",
                    colours[line.name],
                    "0.55" if partial else "1",
                    tooltip,
                    line.name,
                    _fmt(value),
                )
            )
            base += value
    legend = format_html_join(
        "",
        '<span class="legend-item"><svg class="legend-swatch" width="10" height="10" aria-hidden="true">'
        '<rect width="10" height="10" rx="2" fill="{}"/></svg>{}</span>',
        ((colour, name) for name, colour in colours.items()),
    )
    svg = _frame(title, top, mark_safe("".join(parts)), labels, current)
    return format_html('{}<div class="legend">{}</div>', svg, legend)


def _colours(names: Sequence[str], muted: Collection[str]) -> dict[str, str]:
    """One colour per distinct name, in order: the palette's, grey for muted names and past the palette's end."""
    colours: dict[str, str] = {}
    palette = iter(PALETTE)
    for name in names:
        if name not in colours:
            colours[name] = OTHER_COLOUR if name in muted else next(palette, OTHER_COLOUR)
    return colours
