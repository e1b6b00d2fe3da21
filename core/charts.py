"""Server-side SVG charts (no JavaScript): a bar chart and a multi-series line chart, accessible via <title>/<desc>."""

from __future__ import annotations

import math
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
PALETTE = ["#2457f5", "#e8710a", "#137a3a", "#b3261e", "#7b3fe4", "#00838f", "#8a5a00", "#c2185b"]


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


def _frame(title: str, top: float, body: str, labels: list[str], plot_w: float) -> SafeString:
    grid = []
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        grid.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#e3e6ef"/>'
                '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#5a6275">{}</text>',
                LEFT,
                f"{y:.1f}",
                LEFT + plot_w,
                f"{y:.1f}",
                LEFT - 6,
                f"{y + 4:.1f}",
                _fmt(top * i / 4),
            )
        )
    ticks = []
    if labels:
        every = max(1, len(labels) // 8)
        step = plot_w / len(labels)
        for i, label in enumerate(labels):
            if i % every == 0:
                ticks.append(
                    format_html(
                        '<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="#5a6275">{}</text>',
                        f"{LEFT + step * (i + 0.5):.1f}",
                        HEIGHT - 8,
                        label,
                    )
                )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" preserveAspectRatio="xMidYMid meet">'
        "<title>{}</title>{}{}{}</svg>",
        WIDTH,
        HEIGHT,
        title,
        title,
        mark_safe("".join(grid)),
        mark_safe("".join(ticks)),
        body,
    )


def bar_chart(points: list[tuple[str, Decimal | float]], *, title: str) -> SafeString:
    """One bar per (label, value); each bar carries a <title> tooltip with its exact value."""
    values = [float(v) for _l, v in points]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(points), 1)
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" rx="2" fill="#2457f5"><title>{}: {}</title></rect>',
        (
            (
                f"{LEFT + step * i + step * 0.15:.1f}",
                f"{TOP + plot_h - plot_h * v / top:.1f}",
                f"{step * 0.7:.1f}",
                f"{plot_h * v / top:.1f}",
                label,
                _fmt(v),
            )
            for i, ((label, _raw), v) in enumerate(zip(points, values, strict=False))
        ),
    )
    return _frame(title, top, bars, [label for label, _v in points], plot_w)


def line_chart(labels: list[str], series: dict[str, list[float | None]], *, title: str) -> SafeString:
    """Lines over shared x labels; None leaves a gap. A legend lists the series with their colours."""
    values = [v for line in series.values() for v in line if v is not None]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)
    parts = []
    for index, (name, line) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        coords = [
            (LEFT + step * (i + 0.5), TOP + plot_h - plot_h * v / top) for i, v in enumerate(line) if v is not None
        ]
        if len(coords) > 1:
            parts.append(
                format_html(
                    '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>',
                    colour,
                    " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
                )
            )
        for (x, y), v in zip(coords, [v for v in line if v is not None], strict=False):
            parts.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}: {}</title></circle>',
                    f"{x:.1f}",
                    f"{y:.1f}",
                    colour,
                    name,
                    _fmt(v),
                )
            )
    legend = format_html_join(
        "",
        # An SVG swatch: its colour is a presentation attribute, which the CSP allows (a style attribute it refuses).
        '<span class="legend-item"><svg class="legend-swatch" viewBox="0 0 10 10" aria-hidden="true">'
        '<rect width="10" height="10" rx="2" fill="{}"/></svg>{}</span>',
        ((PALETTE[i % len(PALETTE)], name) for i, name in enumerate(series)),
    )
    svg = _frame(title, top, mark_safe("".join(parts)), labels, plot_w)
    return format_html('{}<div class="legend">{}</div>', svg, legend)
