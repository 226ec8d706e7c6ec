"""Number and text formatting for reports: one place decides how a value reads to a person.

Every function here returns text that is already HTML-escaped (or purely numeric), so templates can
concatenate it without thinking; missing, NaN and infinite values all read as an en dash.
"""

from __future__ import annotations

import html
import math
from typing import Any

DASH = "\u2013"


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe inside attributes); None reads as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return html.escape(str(value), quote=True)


def finite(value: Any) -> float | None:
    """The value as a float if it is a finite number, else None (NaN, inf, None, text, pd.NA)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_number(value: Any, *, signed: bool = False, digits: int = 4) -> str:
    """A plain number with `digits` significant digits; thousands separators for big values."""
    x = finite(value)
    if x is None:
        return DASH
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{sign}{x:,.0f}"
    text = f"{x:.{digits}g}"
    if "e" in text:  # very small: keep it readable rather than scientific
        text = f"{x:.{digits}e}"
    return sign + text


def fmt_percent(value: Any, *, signed: bool = False, decimals: int = 2) -> str:
    """A share (0.1234) as a percentage ('12.34%')."""
    x = finite(value)
    if x is None:
        return DASH
    return f"{x * 100:+.{decimals}f}%" if signed else f"{x * 100:.{decimals}f}%"


def fmt_points(value: Any, *, decimals: int = 2) -> str:
    """A difference of shares as percentage points ('+1.23 pp'), the honest unit for binary effects."""
    x = finite(value)
    if x is None:
        return DASH
    return f"{x * 100:+.{decimals}f} pp"


def fmt_p(value: Any) -> str:
    """p- and q-values: three decimals, '<0.001' below that (more digits suggest false precision)."""
    x = finite(value)
    if x is None:
        return DASH
    return "&lt;0.001" if x < 0.001 else f"{x:.3f}"


def fmt_count(value: Any) -> str:
    x = finite(value)
    if x is None:
        return DASH
    return f"{x:,.0f}" if float(x).is_integer() else fmt_number(x)


def fmt_free(value: Any) -> str:
    """Free-form values (data-quality summaries): numbers formatted, everything else escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) or finite(value) is not None and not isinstance(value, str):
        return fmt_count(value)
    return esc(value)


def fmt_effect(value: Any, is_binary: bool) -> str:
    """An absolute effect: percentage points for binary metrics, a signed number otherwise."""
    return fmt_points(value) if is_binary else fmt_number(value, signed=True)


def fmt_level(value: Any, is_binary: bool) -> str:
    """A level (mean, control mean): a percentage for binary metrics."""
    return fmt_percent(value) if is_binary else fmt_number(value)


def fmt_interval(low: Any, high: Any, formatter) -> str:
    if finite(low) is None and finite(high) is None:
        return DASH
    return f"[{formatter(low)}, {formatter(high)}]"


def is_share_scale(kind: Any, values) -> bool:
    """Whether a metric reads as a share (levels in %, effects in pp) rather than in its own unit.

    Binary metrics always do. A ratio metric does when it is a rate, i.e. every known level (control
    mean, cell means) lies in [0, 1] (error_rate, click-through per view): a change from 2.0% to 2.5%
    is honestly "+0.50 pp", while "+0.005" hides the unit. Ratios above 1 (revenue per session) and
    every other kind (continuous, count, quantile: a P95 difference in ms) keep their own unit.
    """
    if kind == "binary":
        return True
    if kind != "ratio":
        return False
    known = [x for x in (finite(v) for v in values) if x is not None]
    return bool(known) and all(0.0 <= x <= 1.0 for x in known)


def fmt_share_change(value: Any, *, decimals: int = 0) -> str:
    """A signed relative change with a true minus sign ('\u221242%'): variance reductions and the like."""
    x = finite(value)
    if x is None:
        return DASH
    text = f"{abs(x) * 100:.{decimals}f}%"
    return ("\u2212" if x < 0 else "+") + text if round(abs(x) * 100, decimals) else "0%"


def fmt_p_phrase(value: Any, name: str = "p") -> str:
    """'p = 0.012' or 'p &lt; 0.001' for running text, where 'p = &lt;0.001' would read oddly."""
    x = finite(value)
    if x is not None and x < 0.001:
        return f"{name} &lt; 0.001"
    return f"{name} = {fmt_p(value)}"
