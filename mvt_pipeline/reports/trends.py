"""The plots of an experiment's page that read kept nights and cell estimates: the interaction plot,
the cumulative effect night by night, exposures per cell per day, each guardrail per cell per night
against its threshold, and the SRM p-value over nights.

Why a module of its own: each plot is a small transformation of stored rows (no statistics are
computed here, only read: the same numbers as the tables) into the frames `plots.py` draws.
"""

from __future__ import annotations

import pandas as pd

from ..analysis.cell_contrasts import cell_estimates
from ..analysis.srm_table import SRM_ALPHA
from ..registry.models import Experiment, Metric
from .formatting import esc
from .plots import interaction_svg, timeseries_svg


def _scale(share: bool) -> float:
    return 100.0 if share else 1.0


def unit_label(metric: Metric | None, share: bool, difference: bool) -> str:
    """'pp' / '%' for shares, else the registry unit (or nothing)."""
    if share:
        return "pp" if difference else "%"
    return (metric.unit or "") if metric is not None else ""


def _with_unit(text: str, unit: str) -> str:
    return f"{text} ({unit})" if unit else text


def value_label(metric: Metric | None, name: str) -> str:
    """What a cell value of the metric is: 'P95 of latency_ms', 'mean', 'rate'."""
    if metric is None:
        return "mean"
    if metric.kind == "quantile":
        return f"P{100 * (metric.q or 0.5):g}"
    return {"binary": "rate", "ratio": "ratio"}.get(metric.kind, "mean")


def cell_values(exp: Experiment, metric: Metric, cell_stats: pd.DataFrame | None,
                cell_quantiles: pd.DataFrame | None) -> pd.DataFrame:
    """cell_id, n, value, std_error of the metric per cell: the estimates the guardrails and the
    decision compare (a quantile's cell quantile, a ratio's ratio, else the mean)."""
    source = cell_quantiles if metric.kind == "quantile" else cell_stats
    if source is None or source.empty:
        return pd.DataFrame(columns=["cell_id", "n", "value", "std_error"])
    rows = source[(source["experiment_id"] == exp.id) & (source["metric"] == metric.name)]
    est = cell_estimates(metric.kind, rows)
    return est.assign(std_error=est["variance"] ** 0.5).drop(columns="variance")


def interaction_plot(exp: Experiment, metric: Metric, share: bool, cell_stats, cell_quantiles) -> str:
    values = cell_values(exp, metric, cell_stats, cell_quantiles)
    if values.empty or len(exp.factors) < 1:
        return ""
    k = _scale(share)
    frame = pd.DataFrame({"cell_id": values["cell_id"], "mean": values["value"] * k,
                          "std_error": values["std_error"] * k})
    label = _with_unit(f"{metric.name}: {value_label(metric, metric.name)} per cell", unit_label(metric, share, False))
    svg = interaction_svg(frame, levels={f.name: list(f.levels) for f in exp.factors}, metric_label=label,
                          alpha=exp.alpha)
    return (f"<figure class=\"plot\">{svg}<figcaption class=\"muted small\">Interaction plot of {esc(metric.name)}: "
            f"cell {esc(value_label(metric, metric.name))} with {100 * (1 - exp.alpha):g}% CI; non-parallel lines "
            "mean the effect of one factor depends on the level of the other.</figcaption></figure>")


def cumulative_effect_plot(exp: Experiment, metric: Metric | None, name: str, share: bool,
                           effects: pd.DataFrame | None) -> str:
    """Each main effect of the metric as analysed night by night (all data up to that night)."""
    if effects is None or effects.empty:
        return ""
    rows = effects[(effects["metric"].astype(str) == name) & (effects["status"] == "ok")
                   & ~effects["term"].astype(str).str.contains(":")]
    if rows.empty:
        return ""
    k = _scale(share)
    series = pd.DataFrame({
        "as_of": pd.to_datetime(rows["as_of"]).dt.date, "group": rows["term"].astype(str) + "=" + rows["level"].astype(str),
        "value": rows["estimate"] * k, "low": rows["ci_low"] * k, "high": rows["ci_high"] * k})
    if {"seq_ci_low", "seq_ci_high"} <= set(rows.columns):
        series["av_low"], series["av_high"] = rows["seq_ci_low"].to_numpy() * k, rows["seq_ci_high"].to_numpy() * k
    svg = timeseries_svg(series, title=f"Cumulative effect on {name}",
                         y_label=_with_unit("treatment \u2212 control", unit_label(metric, share, True)), zero_line=True)
    return (f"<figure class=\"plot\">{svg}<figcaption class=\"muted small\">Each night's estimate on all data up to "
            "that night; inner band: fixed-horizon CI (valid at the planned end only), outer band: always-valid CI "
            "(valid at every look).</figcaption></figure>")


def exposures_plot(exp: Experiment, exposures: pd.DataFrame | None) -> str:
    if exposures is None or exposures.empty:
        return ""
    series = pd.DataFrame({"as_of": pd.to_datetime(exposures["day"]).dt.date,
                           "group": exposures["cell_id"].astype(str).str.replace("|", " \u00b7 ", regex=False),
                           "value": exposures["units"].astype(float)})
    svg = timeseries_svg(series, title=f"New analysable units per cell per day ({exp.id})", y_label="units")
    return f"<figure class=\"plot\">{svg}</figure>"


def guardrail_plots(exp: Experiment, metrics: dict[str, Metric], shares: dict[str, bool],
                    guardrails: pd.DataFrame | None) -> str:
    """Per guardrail metric: each treated cell's difference vs control per night, with the margin
    as the threshold on the harmful side."""
    if guardrails is None or guardrails.empty:
        return ""
    out = []
    cells = guardrails[guardrails["scope"] == "cell"]
    for name, rows in cells.groupby("metric", sort=False):
        metric, share = metrics.get(str(name)), shares.get(str(name), False)
        k = _scale(share)
        series = pd.DataFrame({"as_of": pd.to_datetime(rows["as_of"]).dt.date,
                               "group": rows["cell"].astype(str).str.replace("|", " \u00b7 ", regex=False),
                               "value": rows["estimate"] * k})
        margin = rows["margin"].dropna()
        threshold = None
        if len(margin):
            lower_is_better = metric is not None and metric.direction == "lower"
            threshold = float(margin.iloc[-1]) * k * (1 if lower_is_better else -1)
        svg = timeseries_svg(series, title=f"Guardrail {name} per cell", threshold=threshold,
                             threshold_label="non-inferiority margin", zero_line=True,
                             y_label=_with_unit("treatment \u2212 control", unit_label(metric, share, True)))
        out.append(f"<figure class=\"plot\">{svg}</figure>")
    return "".join(out)


def srm_plot(srm: pd.DataFrame | None) -> str:
    if srm is None or srm.empty or srm["p_value"].dropna().empty:
        return ""
    rows = srm.dropna(subset=["p_value"])
    series = pd.DataFrame({"as_of": pd.to_datetime(rows["as_of"]).dt.date, "group": "SRM p-value",
                           "value": rows["p_value"].astype(float)})
    svg = timeseries_svg(series, title="Sample ratio mismatch test per night", y_label="p-value",
                         threshold=SRM_ALPHA, threshold_label=f"alpha {SRM_ALPHA:g}")
    return f"<figure class=\"plot\">{svg}</figure>"
