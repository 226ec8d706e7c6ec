"""Inline SVG forest plot: one row per effect, its CI as a bar, a point estimate, a zero line.

A forest plot answers "which effects clear zero, and by how much" faster than a table. It is drawn
as inline SVG (no plotting library, no image files) so the report stays one self-contained file.
Rows without a finite estimate are listed with their label and a dash instead of being dropped, so
the plot and the table always have the same rows. An interval with an infinite end is drawn to the
plot edge with an open end.

A row may carry a second, outer interval (the always-valid confidence sequence): it is drawn first,
as a wide pale band, so the fixed-horizon bar and the point stay readable on top of it and the
reader sees at a glance how much wider the peeking-safe interval is and whether it still clears 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .formatting import esc, finite

ROW_HEIGHT = 22
LABEL_WIDTH = 260
PLOT_WIDTH = 420
VALUE_WIDTH = 220
TOP = 10
AXIS_HEIGHT = 30


@dataclass(frozen=True)
class ForestRow:
    label: str  # raw text; escaped when drawn
    estimate: float | None
    low: float | None
    high: float | None
    value_text: str  # already-escaped text shown right of the plot
    tone: str = "neutral"  # good | bad | neutral
    outer_low: float | None = None  # always-valid interval, drawn behind the fixed one
    outer_high: float | None = None


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick positions (1, 2, 2.5, 5 x 10^k) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else round(value, 12))
        value += step
    return ticks


def _domain(rows: list[ForestRow]) -> tuple[float, float]:
    values = [0.0]
    for row in rows:
        values += [v for v in map(finite, (row.estimate, row.low, row.high, row.outer_low, row.outer_high))
                   if v is not None]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1.0, high + 1.0
    pad = (high - low) * 0.05
    return low - pad, high + pad


def render_forest_plot(rows: list[ForestRow], tick_format, title: str) -> str:
    """SVG markup for `rows`; `tick_format(x)` formats axis values (e.g. as percentage points)."""
    if not rows:
        return ""
    low, high = _domain(rows)
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    height = TOP + ROW_HEIGHT * len(rows) + AXIS_HEIGHT

    def x(value: float) -> float:
        return round(LABEL_WIDTH + (value - low) / (high - low) * PLOT_WIDTH, 2)

    parts = [
        f'<svg class="forest" role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{esc(title)}</title>",
    ]
    plot_bottom = TOP + ROW_HEIGHT * len(rows)
    for tick in nice_ticks(low, high):
        parts.append(f'<line x1="{x(tick)}" y1="{TOP}" x2="{x(tick)}" y2="{plot_bottom}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{x(tick)}" y="{plot_bottom + 14}" text-anchor="middle">{tick_format(tick)}</text>')
    parts.append(f'<line x1="{x(0.0)}" y1="{TOP - 4}" x2="{x(0.0)}" y2="{plot_bottom}" stroke="#59636e" '
                 'stroke-dasharray="3,3"/>')
    colours = {"good": "#1a7f37", "bad": "#cf222e", "neutral": "#0969da"}
    for i, row in enumerate(rows):
        y = TOP + ROW_HEIGHT * i + ROW_HEIGHT / 2
        if i % 2:
            parts.append(f'<rect x="0" y="{y - ROW_HEIGHT / 2}" width="{width}" height="{ROW_HEIGHT}" '
                         'fill="#f6f8fa" opacity="0.6"/>')
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + 4}" text-anchor="end">{esc(_clip(row.label))}</text>')
        parts.append(f'<text x="{LABEL_WIDTH + PLOT_WIDTH + 8}" y="{y + 4}">{row.value_text}</text>')
        colour = colours.get(row.tone, colours["neutral"])
        estimate = finite(row.estimate)
        if estimate is None:
            continue
        if row.outer_low is not None or row.outer_high is not None:
            o_lo = x(row.outer_low) if finite(row.outer_low) is not None else LABEL_WIDTH
            o_hi = x(row.outer_high) if finite(row.outer_high) is not None else LABEL_WIDTH + PLOT_WIDTH
            parts.append(f'<line class="outer" x1="{o_lo}" y1="{y}" x2="{o_hi}" y2="{y}" stroke="{colour}" '
                         'stroke-width="9" stroke-opacity="0.22"/>')
        lo = x(row.low) if finite(row.low) is not None else LABEL_WIDTH
        hi = x(row.high) if finite(row.high) is not None else LABEL_WIDTH + PLOT_WIDTH
        if row.low is not None or row.high is not None:
            parts.append(f'<line x1="{lo}" y1="{y}" x2="{hi}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
            for end, known in ((lo, finite(row.low) is not None), (hi, finite(row.high) is not None)):
                if known:
                    parts.append(f'<line x1="{end}" y1="{y - 5}" x2="{end}" y2="{y + 5}" stroke="{colour}" '
                                 'stroke-width="2"/>')
        parts.append(f'<circle cx="{x(estimate)}" cy="{y}" r="4" fill="{colour}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
