"""Heterogeneous effects for every experiment x metric (means, proportions, counts and ratios;
quantile metrics have no per-segment inputs yet and are listed as skipped) x registry segment:
per-segment effects, Cochran's Q heterogeneity, BH across segments and empirical-Bayes shrinkage
(the engine is `stats.segment_effects`; this module only selects and labels the inputs)."""

from __future__ import annotations

import pandas as pd

from ..registry import Registry
from ..stats import RATIO_COLUMNS, segment_effects
from ..stats.shifts import shifts_for
from .cells import split_cell_ids
from .effects_table import MEAN_KINDS

SEGMENT_VALUE = "__segment_value"
HTE_LABELS = ["experiment_id", "metric", "metric_role", "segment_variable"]
HETEROGENEITY_FLAG_Q = 0.05  # heterogeneity q-values below this are listed in the asset metadata


def all_hte(registry: Registry, agg_cell_stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per-segment effects, heterogeneity tests, {what: why skipped})."""
    segments, hetero, skipped = [], [], {}
    for exp in registry.experiments:
        if exp.status == "draft" or not exp.segments:
            continue
        factors = {f.name: list(f.levels) for f in exp.factors}
        control = {f.name: f.control for f in exp.factors}
        for metric_name, role in exp.metrics.by_role():
            kind = registry.metric(metric_name).kind
            if kind not in MEAN_KINDS | {"ratio"}:
                skipped[f"{exp.id}/{metric_name}"] = f"{kind} metrics: no per-segment inputs yet"
                continue
            stat_cols = list(RATIO_COLUMNS[1:]) if kind == "ratio" else ["sum", "sum_sq"]
            stat_cols += shifts_for(stat_cols, agg_cell_stats.columns)
            for seg in exp.segments:
                rows = agg_cell_stats[(agg_cell_stats["experiment_id"] == exp.id)
                                      & (agg_cell_stats["metric"] == metric_name)
                                      & (agg_cell_stats["segment"] == seg) & (agg_cell_stats["n_units"] > 0)]
                label = f"{exp.id}/{metric_name}/{seg}"
                if rows.empty:
                    skipped[label] = "no units yet"
                    continue
                frame = pd.concat([split_cell_ids(rows["cell_id"], exp), rows[stat_cols].astype(float)], axis=1)
                frame["n"] = rows["n_units" if kind == "ratio" else "n"].astype(float).to_numpy()
                # a fixed column name: a segment may be named like a factor or a statistic
                frame[SEGMENT_VALUE] = rows["segment_value"].astype(str).to_numpy()
                try:
                    result = segment_effects(
                        frame, factors, SEGMENT_VALUE, control=control, alpha=exp.alpha,
                        generators=exp.design.generators, codes=exp.factor_codes(),
                        min_cell_units=exp.min_units_per_cell,
                        metric_kind="ratio" if kind == "ratio" else "mean")
                except ValueError as exc:
                    skipped[label] = str(exc)
                    continue
                for name, reason in result.skipped.items():
                    skipped[f"{label}={name}"] = reason
                tags = dict(zip(HTE_LABELS, (exp.id, metric_name, role, seg)))
                if len(result.segments):
                    segments.append(result.segments.assign(**tags))
                if len(result.heterogeneity):
                    hetero.append(result.heterogeneity.assign(**tags))
    seg_df = pd.concat(segments, ignore_index=True) if segments else pd.DataFrame()
    het_df = pd.concat(hetero, ignore_index=True) if hetero else pd.DataFrame()
    return seg_df, het_df, skipped
