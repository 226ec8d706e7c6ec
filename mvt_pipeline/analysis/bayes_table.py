"""Posterior probability that each cell is best, and its expected loss, for every experiment's
primary metrics (conjugate Beta for proportions, normal approximation for means)."""

from __future__ import annotations

import zlib

import pandas as pd

from ..registry import Registry
from ..stats import prob_best
from ..stats.shifts import shifts_for

BAYES_KINDS = {"binary": "binary", "continuous": "mean", "count": "mean"}


def mc_seed(experiment_id: str, metric: str) -> int:
    """The Monte Carlo seed of one (experiment, metric): a stable hash (CRC-32, the same in every
    process and on every machine, unlike Python's salted `hash`), so a re-run draws the same
    samples and two experiments do not share one stream of draws."""
    return zlib.crc32(f"{experiment_id}\x1f{metric}".encode())


def all_bayes(registry: Registry, agg_cell_stats: pd.DataFrame) -> pd.DataFrame:
    overall = agg_cell_stats[(agg_cell_stats["segment"] == "overall") & (agg_cell_stats["n"] > 0)]
    frames = []
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        for metric_name in exp.metrics.primary:
            metric = registry.metric(metric_name)
            kind = BAYES_KINDS.get(metric.kind)
            # cells in a fixed order: the Monte Carlo draws go to the same cell whatever order the
            # warehouse returned the rows in, so a night re-run gives the same P(best)
            rows = overall[(overall["experiment_id"] == exp.id) & (overall["metric"] == metric_name)]
            rows = rows.sort_values("cell_id", kind="stable").reset_index(drop=True)
            if kind is None or len(rows) < 2:
                continue
            stats = ["n", "sum", "sum_sq"] + shifts_for(["sum"], rows.columns)
            cells = rows[["cell_id", *stats]].astype({c: float for c in stats})
            result = prob_best(cells, kind=kind, direction=metric.direction, seed=mc_seed(exp.id, metric_name))
            if "shift" in result:  # stored as plain sums of y and y^2, as documented for the table
                k, s_, n = result.pop("shift"), result["sum"], result["n"]
                result["sum_sq"] = result["sum_sq"] + 2.0 * k * s_ + n * k * k
                result["sum"] = s_ + n * k
            frames.append(result.assign(experiment_id=exp.id, metric=metric_name))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
