"""One row of a forest plot (drawn by `plots.forest_svg`): an effect, its fixed-horizon interval,
an optional outer always-valid interval, and the already-escaped value text shown beside it."""

from __future__ import annotations

from dataclasses import dataclass


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
