"""How a metric's numbers read in its unit, in every text the product writes (decision reasons,
alert messages, report tables), so the same number never reads two ways.

Values are stored in the metric's own scale. A metric with `unit: pp` is a proportion (0.016 =
1.6 %): its levels read in %, its differences and margins in percentage points (+0.6 pp). Any
other unit is appended as is (`ms`, `USD`).
"""

from __future__ import annotations

import math

DASH = "\u2013"


def _finite(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_level(x, unit: str | None, digits: int = 4) -> str:
    """A level (a cell's mean, rate or quantile, a threshold): 1.6 % or 812 ms."""
    v = _finite(x)
    if v is None:
        return DASH
    if unit == "pp":
        return f"{100 * v:.{digits}g} %"
    return f"{v:.{digits}g}" + (f" {unit}" if unit else "")


def fmt_diff(x, unit: str | None, digits: int = 4, signed: bool = True) -> str:
    """A difference or margin: +0.6 pp or +25 ms."""
    v = _finite(x)
    if v is None:
        return DASH
    if unit == "pp":
        v = 100 * v
    text = f"{v:+.{digits}g}" if signed else f"{v:.{digits}g}"
    return text + (f" {unit}" if unit else "")
