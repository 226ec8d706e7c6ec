"""Report plots drawn with matplotlib and returned as inline SVG strings.

The HTML reports are single files under a CSP that forbids scripts and every fetch, so a plot must
be markup inside the page: SVG with text kept as text (searchable, small, accessible), no external
reference, ids made unique per plot (several plots share one page) and byte-identical output for the
same input (reports are diffed and cached). Figures are plain `Figure` objects saved through the SVG
backend: no pyplot global state, no `matplotlib.use`, nothing left open after a call.
"""

from __future__ import annotations

import hashlib
import html
import io
import itertools
import math
import re
import textwrap
from contextlib import contextmanager
from datetime import timedelta
from statistics import NormalDist

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from .forest_plot import ForestRow
from .formatting import DASH, finite

TONES = {"good": "#1a7f37", "bad": "#cf222e", "neutral": "#59636e"}
PALETTE = ["#0969da", "#d1242f", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#bf3989", "#6e7781",
           "#9a6700", "#0550ae"]
WIDTH = 7.5  # inches: fills a report column at ~9 pt text
LABEL_WRAP = 34  # characters per label line in the forest plot's left column
CHAR_WIDTH = 0.075  # inches per character of 9 pt DejaVu Sans (a little over its average advance)
PLOT_MIN_WIDTH = 3.0  # inches kept for the forest plot's axis between its label and value columns
_RC = {
    "svg.fonttype": "none",  # text stays <text>, not glyph paths
    "svg.hashsalt": "mvt_pipeline",  # clip-path / marker ids stop depending on a random salt
    "svg.image_inline": True,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@contextmanager
def _style():
    """Matplotlib defaults plus our settings, whatever the user's matplotlibrc says; restored after."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        yield


def _plain(text) -> str:
    """Text for artists that always parse mathtext (ticks, legends): a '$' must stay a dollar."""
    return str(text).replace("$", r"\$")


def _formatter(fmt):
    """A tick formatter from a float->str callable whose output may be HTML-escaped report text."""
    return FuncFormatter(lambda value, _pos: _plain(html.unescape(str(fmt(value)))))


_TAG = re.compile(r"<[^>]+>")
_ID = re.compile(r'\sid="([^"]*)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def _to_svg(fig: Figure, title: str, tooltips: dict[str, str] | None = None) -> str:
    """The figure as an embeddable, deterministic `<svg>` element; the figure is released after.

    `tooltips` maps an artist gid to a full text added as an SVG `<title>` of its group (wrapped
    labels stay readable and searchable in one piece).
    """
    buf = io.StringIO()
    try:
        with _style():
            fig.savefig(buf, format="svg", metadata={
                "Title": title, "Date": None, "Creator": None, "Format": None, "Type": None})
    finally:
        fig.clear()
    svg = buf.getvalue()
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    # the backend's global `*{...}` rule would leak into the page: use inherited attributes instead
    svg = re.sub(r"\s*<style[^>]*>.*?</style>", "", svg, flags=re.S)
    svg = re.sub(r"\s*<defs>\s*</defs>", "", svg)
    for gid, text in (tooltips or {}).items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(text)}</title>', 1)
    prefix = "mvt" + hashlib.sha256((title + "\0" + svg).encode()).hexdigest()[:10] + "-"
    referenced = {m.group(2) for tag in _TAG.findall(svg) for m in _REF.finditer(tag)}

    def rewrite(tag_match: re.Match) -> str:
        tag = _ID.sub(lambda m: f' id="{prefix}{m.group(1)}"' if m.group(1) in referenced else "",
                      tag_match.group(0))
        return _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", tag)

    svg = _TAG.sub(rewrite, svg)
    root = re.search(r"<svg\b[^>]*>", svg)
    size = {k: re.search(rf'\s{k}="([^"]*)"', root.group(0)).group(1) for k in ("width", "height", "viewBox")}
    new_root = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'class="plot" role="img" aria-label="{html.escape(title, quote=True)}" width="{size["width"]}" '
        f'height="{size["height"]}" viewBox="{size["viewBox"]}" style="max-width:100%;height:auto" '
        'stroke-linejoin="round" stroke-linecap="butt">'
    )
    return (svg[: root.start()] + new_root + svg[root.end():]).strip()


# ---------------------------------------------------------------------------------------------
# forest plot


def _wrap_label(label: str, width: int = LABEL_WRAP) -> list[str]:
    """Label lines, breaking preferably between factor terms (' × '); nothing is ever cut."""
    lines: list[str] = []
    for term in label.split(" × "):
        candidate = f"{lines[-1]} × {term}" if lines else term
        if lines and len(candidate) <= width:
            lines[-1] = candidate
        elif len(term) <= width:
            if lines:
                lines[-1] += " ×"
            lines.append(term)
        else:
            if lines:
                lines[-1] += " ×"
            lines += textwrap.wrap(term, width, break_long_words=False, break_on_hyphens=False) or [term]
    return lines or [""]


def _forest_domain(rows: list[ForestRow]) -> tuple[float, float]:
    values = [0.0] + [v for r in rows for v in map(finite, (r.estimate, r.low, r.high, r.outer_low, r.outer_high))
                      if v is not None]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1.0, high + 1.0
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _end(value, edge: float) -> float:
    """An interval end, or the axis edge for an infinite/unknown one."""
    v = finite(value)
    return edge if v is None else v


def _forest_figure(rows: list[ForestRow], title: str, x_label: str, tick_format) -> tuple[Figure, dict]:
    labels = [_wrap_label(r.label) for r in rows]
    heights = [1.0 + 0.6 * (len(lines) - 1) for lines in labels]  # row slots grow with wrapped lines
    centres = np.cumsum(heights) - np.array(heights) / 2
    total = float(sum(heights))
    # Labels are never cut, and one term longer than LABEL_WRAP cannot wrap: the figure widens so the
    # plot keeps PLOT_MIN_WIDTH (the page scales a wide SVG down) instead of collapsing to nothing.
    text_chars = max(len(line) for lines in labels for line in lines) + max(
        len(html.unescape(r.value_text or DASH)) for r in rows)
    width = max(WIDTH, CHAR_WIDTH * text_chars + PLOT_MIN_WIDTH)
    with _style():
        fig = Figure(figsize=(width, 1.1 + 0.26 * total), layout="constrained")
        ax = fig.add_subplot()
        low, high = _forest_domain(rows)
        ax.set_xlim(low, high)
        ax.set_ylim(total, 0)
        ax.set_yticks([])
        ax.spines[["left", "top", "right"]].set_visible(False)
        ax.grid(axis="x", color="#eaeef2", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.axvline(0.0, color="#59636e", linewidth=0.9, linestyle=(0, (3, 3)), zorder=1)
        side = blended_transform_factory(ax.transAxes, ax.transData)
        tooltips = {}
        top = 0.0
        for i, (row, lines, y, h) in enumerate(zip(rows, labels, centres, heights)):
            if i % 2:
                ax.axhspan(top, top + h, color="#f6f8fa", zorder=0, linewidth=0)
            top += h
            gid = f"forest-label-{i}"
            tooltips[gid] = row.label
            ax.text(-0.02, y, "\n".join(lines), transform=side, ha="right", va="center", parse_math=False,
                    gid=gid, clip_on=False)
            value = html.unescape(row.value_text) if row.value_text else DASH
            ax.text(1.02, y, value, transform=side, ha="left", va="center", parse_math=False, clip_on=False)
            colour = TONES.get(row.tone, TONES["neutral"])
            estimate = finite(row.estimate)
            if estimate is None:
                ax.text(0.0, y, DASH, ha="center", va="center", color=TONES["neutral"], parse_math=False)
                continue
            if row.outer_low is not None or row.outer_high is not None:
                ax.hlines(y, _end(row.outer_low, low), _end(row.outer_high, high), color=colour,
                          linewidth=9, alpha=0.22, zorder=2)
            if row.low is not None or row.high is not None:
                lo, hi = _end(row.low, low), _end(row.high, high)
                ax.hlines(y, lo, hi, color=colour, linewidth=2, zorder=3)
                caps = [v for v in map(finite, (row.low, row.high)) if v is not None]
                if caps:
                    ax.vlines(caps, y - 0.22, y + 0.22, color=colour, linewidth=2, zorder=3)
            ax.plot([estimate], [y], "o", color=colour, markersize=6, zorder=4)
        ax.set_xlabel(x_label, parse_math=False)
        ax.set_title(title, loc="left", parse_math=False)
        if tick_format is not None:
            ax.xaxis.set_major_formatter(_formatter(tick_format))
    return fig, tooltips


def forest_svg(rows: list[ForestRow], *, title: str, x_label: str, tick_format=None) -> str:
    """One row per effect: fixed-horizon CI bar over the pale always-valid band, point, zero line.

    Labels are wrapped, never cut (the full label is also the row's SVG `<title>`); rows without a
    finite estimate keep their label and show a dash, so plot and table list the same rows.
    Empty `rows` gives "" (nothing to draw).
    """
    if not rows:
        return ""
    fig, tooltips = _forest_figure(rows, title, x_label, tick_format)
    return _to_svg(fig, title, tooltips)


# ---------------------------------------------------------------------------------------------
# interaction plot


def _parse_cell(cell_id) -> dict[str, str]:
    return dict(part.split("=", 1) for part in str(cell_id).split("|") if "=" in part)


def _marginal(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Equal-weight mean of the cell means per key, SE = sqrt(sum se^2) / k over the k cells present."""
    grouped = frame.groupby(keys, sort=False)
    return pd.DataFrame({
        "mean": grouped["mean"].mean(),
        "se": grouped["var"].agg(lambda v: math.sqrt(v.sum(skipna=False))) / grouped["mean"].count(),
    })


def _interaction_panel(ax, frame, x_factor, levels, line_factor, z, legend_outside: bool) -> None:
    x_levels = levels[x_factor]
    positions = np.arange(len(x_levels), dtype=float)
    line_levels = levels[line_factor] if line_factor else [None]
    marg = _marginal(frame, [x_factor, line_factor] if line_factor else [x_factor])
    dodge = 0.06 if len(line_levels) > 1 else 0.0
    for j, line_level in enumerate(line_levels):
        keys = [(lv, line_level) if line_factor else lv for lv in x_levels]
        means = np.array([marg["mean"].get(k, np.nan) for k in keys], dtype=float)
        errors = z * np.array([marg["se"].get(k, np.nan) for k in keys], dtype=float)
        ax.errorbar(positions + (j - (len(line_levels) - 1) / 2) * dodge, means, yerr=errors, marker="o",
                    markersize=4, capsize=3, linewidth=1.4, color=PALETTE[j % len(PALETTE)],
                    label=_plain(line_level) if line_factor else None)
    ax.set_xticks(positions, labels=[_plain(lv) for lv in x_levels])
    ax.set_xlim(-0.4, len(x_levels) - 0.6)
    ax.set_xlabel(x_factor, parse_math=False)
    ax.grid(axis="y", color="#eaeef2", linewidth=0.8)
    if line_factor:
        ax.set_title(f"{x_factor} × {line_factor}", parse_math=False)
        where = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if legend_outside else dict(loc="best")
        ax.legend(title=_plain(line_factor), frameon=False, **where)


def _interaction_figure(cells: pd.DataFrame, *, levels: dict[str, list[str]], metric_label: str,
                        alpha: float = 0.05, y_format=None) -> Figure:
    """The interaction Figure (kept separate so tests can read the plotted means back)."""
    levels = {str(f): [str(lv) for lv in lvs] for f, lvs in levels.items()}
    factors = list(levels)
    if not factors:
        raise ValueError("levels must name at least one factor")
    parsed = pd.DataFrame([_parse_cell(c) for c in cells["cell_id"]], index=cells.index,
                          columns=factors)
    frame = parsed.assign(mean=pd.to_numeric(cells["mean"], errors="coerce"),
                          var=pd.to_numeric(cells["std_error"], errors="coerce") ** 2)
    frame = frame[np.isfinite(frame["mean"])]
    for factor in factors:  # cells of unknown levels are not plotted
        frame = frame[frame[factor].isin(levels[factor])]
    z = NormalDist().inv_cdf(1 - alpha / 2)
    pairs = list(itertools.combinations(factors, 2)) or [(factors[0], None)]
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    with _style():
        fig = Figure(figsize=(WIDTH, 3.4 if len(pairs) == 1 else 2.8 * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (x_factor, line_factor) in zip(axes, pairs):
            _interaction_panel(ax, frame, x_factor, levels, line_factor, z, legend_outside=len(pairs) == 1)
            if y_format is not None:
                ax.yaxis.set_major_formatter(_formatter(y_format))
        for ax in axes[len(pairs):]:
            ax.set_visible(False)
        ci = f"{1 - alpha:.0%} CI"
        if len(pairs) == 1:
            axes[0].set_ylabel(metric_label, parse_math=False)
            axes[0].set_title(f"{axes[0].get_title() or factors[0]} (mean ± {ci})", parse_math=False)
        else:
            fig.supylabel(metric_label, fontsize=9, parse_math=False)
            fig.suptitle(f"Cell means averaged over the other factors (equal weight), ± {ci}", fontsize=10)
    return fig


def interaction_svg(cells: pd.DataFrame, *, levels: dict[str, list[str]], metric_label: str,
                    alpha: float = 0.05, y_format=None) -> str:
    """The factorial interaction plot: non-parallel lines are interactions.

    Two factors: x = first factor's levels, one line per level of the second. More factors: one panel
    per factor pair with equal-weight marginal means over the other factors, SE = sqrt(sum se^2)/k.
    One factor: a single line. Missing cells are missing points. Empty `cells` gives "".
    """
    if cells.empty:
        return ""
    fig = _interaction_figure(cells, levels=levels, metric_label=metric_label, alpha=alpha, y_format=y_format)
    return _to_svg(fig, f"Interaction plot: {metric_label} by {' × '.join(levels)}")


# ---------------------------------------------------------------------------------------------
# time series


def _timeseries_figure(series, title, y_label, threshold, threshold_label, zero_line, y_format) -> Figure:
    frame = series.assign(as_of=pd.to_datetime(series["as_of"]))
    bands = [(lo, hi, a) for lo, hi, a in (("av_low", "av_high", 0.10), ("low", "high", 0.25))
             if lo in frame and hi in frame]
    numeric = frame[["value"] + [c for lo, hi, _ in bands for c in (lo, hi)]].apply(pd.to_numeric, errors="coerce")
    known = [v for v in numeric.to_numpy(dtype=float).ravel() if math.isfinite(v)]
    known += [v for v in (threshold, 0.0 if zero_line else None) if v is not None and math.isfinite(v)]
    y_low, y_high = (min(known), max(known)) if known else (0.0, 1.0)
    if y_high == y_low:
        y_low, y_high = y_low - 1.0, y_high + 1.0
    pad = (y_high - y_low) * 0.06
    y_low, y_high = y_low - pad, y_high + pad
    dates = frame["as_of"].dropna()
    first, last = dates.min(), dates.max()
    single = first == last
    with _style():
        fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
        ax = fig.add_subplot()
        for i, (group, part) in enumerate(frame.groupby("group", sort=False)):
            part = part.sort_values("as_of")
            colour = PALETTE[i % len(PALETTE)]
            x = part["as_of"].to_numpy()
            if single:  # one night: nudge groups apart so their bands do not hide each other
                x = x + np.timedelta64(int((i - (frame["group"].nunique() - 1) / 2) * 90), "m")
            values = numeric.loc[part.index]
            for lo, hi, alpha in bands:  # infinite ends drawn to the axis edge, unknown ones left out
                low = values[lo].clip(y_low, y_high).to_numpy(dtype=float)
                high = values[hi].clip(y_low, y_high).to_numpy(dtype=float)
                if single:
                    ax.vlines(x, low, high, color=colour, alpha=alpha * 2, linewidth=10 if alpha < 0.2 else 5)
                else:
                    ax.fill_between(x, low, high, color=colour, alpha=alpha, linewidth=0)
            ax.plot(x, values["value"].to_numpy(dtype=float), marker="o", markersize=3, linewidth=1.5,
                    color=colour, label=_plain(group))
        if zero_line:
            ax.axhline(0.0, color="#59636e", linewidth=0.9)
        if threshold is not None:
            ax.axhline(threshold, color="#cf222e", linewidth=1.2, linestyle="--", label=_plain(threshold_label))
        handles, labels = ax.get_legend_handles_labels()
        for lo, _hi, alpha in bands:
            handles.append(Patch(color="#59636e", alpha=alpha * 1.5, linewidth=0))
            labels.append("always-valid interval" if lo == "av_low" else "fixed-horizon CI")
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_ylim(y_low, y_high)
        if pd.notna(first):
            span = (last - first).days
            if single:  # one night: a point with a day either side, not a degenerate axis
                ax.set_xlim(first - timedelta(days=1), last + timedelta(days=1))
            locator = (mdates.DayLocator(interval=max(1, math.ceil((span + 1) / 8))) if span < 60
                       else mdates.AutoDateLocator(minticks=3, maxticks=8))
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(color="#eaeef2", linewidth=0.8)
        ax.set_ylabel(y_label, parse_math=False)
        ax.set_title(title, loc="left", parse_math=False)
        if y_format is not None:
            ax.yaxis.set_major_formatter(_formatter(y_format))
    return fig


def timeseries_svg(series: pd.DataFrame, *, title: str, y_label: str, threshold: float | None = None,
                   threshold_label: str = "threshold", zero_line: bool = False, y_format=None) -> str:
    """One line per `group` over nights, with optional fixed-horizon (`low`/`high`) and paler, wider
    always-valid (`av_low`/`av_high`) bands and a dashed threshold (e.g. a guardrail margin).

    A single night renders as points with vertical bands. Empty `series` gives "".
    """
    if series.empty:
        return ""
    fig = _timeseries_figure(series, title, y_label, threshold, threshold_label, zero_line, y_format)
    return _to_svg(fig, title)
