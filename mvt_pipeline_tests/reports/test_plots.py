"""Report plots: embeddable, deterministic, self-contained inline SVG with full labels and the right data."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from mvt_pipeline.reports.forest_plot import ForestRow
from mvt_pipeline.reports.plots import _interaction_figure, forest_svg, interaction_svg, timeseries_svg

SVG_NS = "{http://www.w3.org/2000/svg}"
LONG_LABEL = "cta_color=green × form_validation=strict × headline=benefits"
assert len(LONG_LABEL) == 60
X_LABEL = "Effect on latency_p95 (ms), treatment − control"


def _rows() -> list[ForestRow]:
    return [
        ForestRow("cta_color=green", 1.5, 0.5, 2.5, "+1.5 ms [+0.5, +2.5]", "bad", -1.0, 4.0),
        ForestRow(LONG_LABEL, -2.0, -3.0, -1.0, "&lt;0.001 &amp; more", "good", -math.inf, 0.5),
        ForestRow("no_estimate_row", float("nan"), None, None, "\u2013"),
        ForestRow("open_ends", 0.2, -math.inf, math.inf, "+0.2 ms"),
    ]


def _cells(levels: dict[str, list[str]], seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"cell_id": "|".join(f"{f}={lv}" for f, lv in zip(levels, combo)),
             "mean": float(rng.normal(10, 2)), "std_error": float(rng.uniform(0.1, 0.5))}
            for combo in itertools.product(*levels.values())]
    return pd.DataFrame(rows)


def _series(nights: int) -> pd.DataFrame:
    start = date(2024, 3, 1)
    rows = []
    for g, group in enumerate(["a=a1", "b=b1"]):
        for n in range(nights):
            v = 0.1 * n - g
            rows.append({"as_of": start + timedelta(days=n), "group": group, "value": v, "low": v - 0.5,
                         "high": v + 0.5, "av_low": -math.inf if n == 0 else v - 1.5, "av_high": v + 1.5})
    return pd.DataFrame(rows)


PLOTS = {
    "forest": lambda: forest_svg(_rows(), title="Effects on latency_p95", x_label=X_LABEL,
                                 tick_format=lambda v: f"{v:+g} ms"),
    "interaction2": lambda: interaction_svg(_cells({"a": ["a0", "a1"], "b": ["b0", "b1", "b2"]}),
                                            levels={"a": ["a0", "a1"], "b": ["b0", "b1", "b2"]},
                                            metric_label="conversion"),
    "interaction3": lambda: interaction_svg(_cells({"a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0", "c1"]}),
                                            levels={"a": ["a0", "a1"], "b": ["b0", "b1"], "c": ["c0", "c1"]},
                                            metric_label="conversion"),
    "timeseries": lambda: timeseries_svg(_series(6), title="Cumulative effect", y_label="effect (ms)",
                                         threshold=1.0, threshold_label="margin", zero_line=True),
    "timeseries_one_night": lambda: timeseries_svg(_series(1), title="One night", y_label="units"),
}


def _text(svg: str) -> str:
    return " ".join(t.strip() for t in ET.fromstring(svg).itertext() if t.strip())


@pytest.fixture(scope="module")
def svgs() -> dict[str, str]:
    return {name: make() for name, make in PLOTS.items()}


@pytest.mark.parametrize("name", list(PLOTS))
def test_embeddable_self_contained_svg(svgs, name):
    svg = svgs[name]
    root = ET.fromstring(svg)  # parseable XML, nothing before the root element
    assert root.tag == SVG_NS + "svg" and svg.startswith("<svg")
    assert root.get("class") == "plot" and root.get("role") == "img" and root.get("aria-label")
    assert root.find(SVG_NS + "title").text == root.get("aria-label")
    assert root.get("viewBox") and "max-width:100%" in root.get("style")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<metadata" not in svg and "<style" not in svg
    urls = re.findall(r"https?://[^\s\"'<>]*", svg)
    assert sorted(set(urls)) == ["http://www.w3.org/1999/xlink", "http://www.w3.org/2000/svg"]
    assert svg.count("http") == 2
    assert "<script" not in svg.lower() and "<image" not in svg.lower()
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', svg))
    ids = set(re.findall(r'\sid="([^"]+)"', svg))
    refs = set(re.findall(r'href="#([^"]+)"', svg)) | set(re.findall(r"url\(#([^)]+)\)", svg))
    assert refs <= ids  # every reference resolves inside the plot
    assert "<text" in svg  # text stays text (svg.fonttype none), not glyph paths


@pytest.mark.parametrize("name", list(PLOTS))
def test_deterministic(svgs, name):
    assert PLOTS[name]() == svgs[name]


def test_ids_unique_across_plots_in_one_page(svgs):
    page = "<div>" + "".join(svgs.values()) + "</div>"
    ET.fromstring(page)
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert ids and len(ids) == len(set(ids))
    # the same marker shape in two plots would get the same matplotlib id without the prefix
    forest_ids = set(re.findall(r'\sid="([^"]+)"', svgs["forest"]))
    other = forest_svg(_rows()[:2], title="Other", x_label=X_LABEL)
    assert forest_ids.isdisjoint(re.findall(r'\sid="([^"]+)"', other))


def test_forest_labels_in_full_axis_title_and_rows(svgs):
    svg = svgs["forest"]
    text = _text(svg)
    assert LONG_LABEL in [t.strip() for t in ET.fromstring(svg).itertext()]  # verbatim: the row's <title>
    assert "\u2026" not in text  # nothing clipped with an ellipsis
    lines = [t.text for t in ET.fromstring(svg).iter(SVG_NS + "text")]
    assert "cta_color=green ×" in lines and "headline=benefits" in lines  # wrapped, not cut
    assert X_LABEL in lines
    assert "Effects on latency_p95" in lines
    assert "no_estimate_row" in lines  # NaN estimate still listed ...
    assert lines.count("\u2013") >= 2  # ... with a dash in the plot and the value column
    assert "<0.001 & more" in lines  # value_text unescaped before drawing, re-escaped by XML
    assert "&amp;amp;" not in svg
    assert any(t.endswith(" ms") for t in lines)  # tick_format used


def test_forest_with_an_unwrappable_label_keeps_its_plot():
    import warnings

    term = "metric_" + "x" * 150  # one term: cannot wrap, must not be cut
    rows = [ForestRow(term, 1.0, 0.5, 1.5, "+1.000 [+0.500, +1.500] p=0.0001 (long value text)"), *_rows()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = forest_svg(rows, title="t", x_label="x")
    assert not [w for w in caught if "constrained_layout" in str(w.message)], [str(w.message) for w in caught]
    assert term in [t.text for t in ET.fromstring(svg).iter(SVG_NS + "text")]


def test_forest_tones_and_empty():
    svg = forest_svg(_rows(), title="t", x_label="x")
    assert "#1a7f37" in svg and "#cf222e" in svg and "#59636e" in svg
    assert forest_svg([], title="t", x_label="x") == ""


def _plotted(fig) -> dict[tuple[str, str], dict[tuple[str, str], tuple[float, float]]]:
    """Per panel (x factor, line factor): {(x level, line level): (mean, half CI width)} read back."""
    out = {}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        legend = ax.get_legend()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        handles, labels = ax.get_legend_handles_labels()
        panel = {}
        for container, line_level in zip(handles, labels):
            y = container.lines[0].get_ydata()
            caps = container.lines[1]
            top = caps[1].get_ydata() if len(caps) > 1 else [np.nan] * len(y)
            for x_level, mean, high in zip(ticks, y, top):
                if np.isfinite(mean):
                    panel[(x_level, line_level)] = (float(mean), float(high - mean))
        out[(ax.get_xlabel(), legend.get_title().get_text())] = panel
    return out


def test_interaction_two_factors_plots_cells_with_ci():
    levels = {"a": ["a0", "a1"], "b": ["b0", "b1", "b2"]}
    cells = _cells(levels)
    fig = _interaction_figure(cells, levels=levels, metric_label="conversion", alpha=0.05)
    plotted = _plotted(fig)
    assert list(plotted) == [("a", "b")]
    for row in cells.itertuples():
        a, b = (part.split("=")[1] for part in row.cell_id.split("|"))
        mean, half = plotted[("a", "b")][(a, b)]
        assert mean == pytest.approx(row.mean)
        assert half == pytest.approx(1.959964 * row.std_error, rel=1e-5)
    assert fig.axes[0].get_ylabel() == "conversion"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a0", "a1"]  # control first


def test_interaction_three_factors_marginal_means():
    levels = {"a": ["a0", "a1"], "b": ["b0", "b1", "b2"], "c": ["c0", "c1"]}
    cells = _cells(levels, seed=3)
    fig = _interaction_figure(cells, levels=levels, metric_label="revenue")
    plotted = _plotted(fig)
    assert set(plotted) == {("a", "b"), ("a", "c"), ("b", "c")}  # one panel per factor pair
    parts = cells["cell_id"].str.split("|", expand=True)
    frame = cells.assign(**{f: parts[i].str.split("=").str[1] for i, f in enumerate(levels)})
    frame["var"] = frame["std_error"] ** 2
    for x_factor, line_factor in plotted:
        expected = frame.groupby([x_factor, line_factor]).agg(mean=("mean", "mean"), var=("var", "sum"),
                                                              k=("mean", "size"))
        assert len(plotted[(x_factor, line_factor)]) == len(expected)
        for (x_level, line_level), row in expected.iterrows():
            mean, half = plotted[(x_factor, line_factor)][(x_level, line_level)]
            assert mean == pytest.approx(row["mean"])
            assert half == pytest.approx(1.959964 * math.sqrt(row["var"]) / row["k"], rel=1e-5)
    svg = interaction_svg(cells, levels=levels, metric_label="revenue")
    lines = [t.text for t in ET.fromstring(svg).iter(SVG_NS + "text")]
    assert {"a × b", "a × c", "b × c", "revenue"} <= set(lines)


def test_interaction_missing_cells_and_one_factor():
    levels = {"a": ["a0", "a1"], "b": ["b0", "b1"]}
    cells = _cells(levels).iloc[:-1]  # a1|b1 missing
    plotted = _plotted(_interaction_figure(cells, levels=levels, metric_label="m"))
    assert set(plotted[("a", "b")]) == {("a0", "b0"), ("a0", "b1"), ("a1", "b0")}
    ET.fromstring(interaction_svg(cells, levels=levels, metric_label="m"))
    one = _cells({"a": ["a0", "a1", "a2"]})
    fig = _interaction_figure(one, levels={"a": ["a0", "a1", "a2"]}, metric_label="m")
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert list(ax.lines[0].get_ydata()) == pytest.approx(list(one["mean"]))
    ET.fromstring(interaction_svg(one, levels={"a": ["a0", "a1", "a2"]}, metric_label="m"))


def test_timeseries_bands_threshold_and_dates(svgs):
    svg = svgs["timeseries"]
    lines = [t.text for t in ET.fromstring(svg).iter(SVG_NS + "text")]
    assert {"a=a1", "b=b1", "margin", "always-valid interval", "fixed-horizon CI", "effect (ms)",
            "Cumulative effect"} <= set(lines)
    assert "stroke-dasharray" in svg  # the dashed threshold
    assert any(re.fullmatch(r"0?\d", t or "") for t in lines) and "2024-Mar" in lines  # day ticks
    assert "fill-opacity: 0.1" in svg and "fill-opacity: 0.25" in svg  # both bands drawn
    assert not re.search(r"\b(nan|inf)\b", svg)  # infinite band end clipped to the axis edge


def test_timeseries_single_night_renders_points(svgs):
    svg = svgs["timeseries_one_night"]
    lines = [t.text for t in ET.fromstring(svg).iter(SVG_NS + "text")]
    assert {"a=a1", "b=b1", "units"} <= set(lines)
    assert "Mar" in " ".join(t for t in lines if t)
    assert svg.count("<use ") >= 2  # one marker per group
    assert timeseries_svg(_series(0), title="t", y_label="y") == ""


def test_no_global_matplotlib_state_left_behind():
    import sys

    import matplotlib

    keys = ["svg.fonttype", "svg.hashsalt", "font.size", "font.sans-serif", "axes.spines.top"]
    before = {k: matplotlib.rcParams[k] for k in keys}
    PLOTS["forest"]()
    assert {k: matplotlib.rcParams[k] for k in keys} == before
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
