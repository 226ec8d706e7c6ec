"""Bayesian read-out per cell: probability of being the best cell and expected loss.

Why: product teams ask "which combination should we ship and what do we risk if we pick it?".
``prob_best`` answers the first (posterior probability that the cell's true mean is the
highest), ``expected_loss`` the second: ``E[max_j theta_j - theta_i]``, the average amount of
metric given up by shipping cell ``i`` instead of the (unknown) best one, in the metric's
units. A common stopping rule ships the cell with the smallest expected loss once it is below
a threshold of caring. Both are reported next to, not instead of, the frequentist effects.

Models (independent cells, flat priors):

* ``kind="binary"`` (proportions): conjugate ``Beta(1 + s, 1 + n - s)`` posterior, uniform
  prior, ``s`` successes (``sum``) out of ``n``;
* ``kind="mean"``: normal approximation ``theta ~ N(mean, s^2 / n)`` with the sample variance
  ``s^2`` (divisor ``n - 1``) from ``sum_sq`` — the large-sample posterior under a flat prior.

Both are computed by Monte Carlo with ``draws`` joint draws (default 200,000) and a fixed
``seed`` so the nightly tables are reproducible. The Monte Carlo *standard error* of a
probability is ``sqrt(p (1 - p) / draws)``, at most ``0.5 / sqrt(draws)`` = 0.0011 (a ~95% band
of +-1.96 SE = +-0.0022); it is not a bound. ``direction="lower"`` (e.g. latency) flips "best" to
the smallest mean and the loss to ``E[theta_i - min_j theta_j]``.

Ties are shared: when several cells draw the same best value (cells with zero within-cell
variance, e.g. a revenue metric before any purchase, have a point-mass posterior) each gets
``1/k`` of that draw, so identical cells get identical ``prob_best`` instead of the first row
taking it all; their loss on that draw is 0, consistently. Inputs go through
:func:`validation.validate_cell_stats` (NaN, ``sum`` outside ``[0, n]`` for proportions,
``sum_sq < sum^2/n`` for means are refused, naming the cell and the field).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .cells import as_pandas
from .shifts import SHIFT_COLUMNS, mean_of, raw_sum
from .validation import validate_cell_stats

BAYES_COLUMNS = ["posterior_mean", "posterior_sd", "prob_best", "expected_loss"]
_CHUNK = 20_000


def _posterior(v: pd.DataFrame, kind: str):
    n, s = v["n"].to_numpy(), v["sum"].to_numpy()
    cols = {c: v[c].to_numpy() for c in v.columns}
    if kind == "binary":
        s = raw_sum(cols, "sum", n)
        a, b = 1.0 + s, 1.0 + n - s
        mean = a / (a + b)
        sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        return ("beta", a, b), mean, sd
    var = np.maximum(v["sum_sq"].to_numpy() - s * s / n, 0.0) / (n - 1)
    mean, sd = mean_of(cols, "sum", n), np.sqrt(var / n)
    return ("normal", mean, sd), mean, sd


def prob_best(
    cells,
    kind: Literal["binary", "mean"] = "binary",
    direction: Literal["higher", "lower"] = "higher",
    draws: int = 200_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per cell ``posterior_mean``, ``posterior_sd``, ``prob_best``, ``expected_loss``.

    ``cells``: pandas/polars frame, one row per cell with ``n``, ``sum`` (and ``sum_sq`` for
    ``kind="mean"``); every other column (factor levels, labels) is passed through and names
    the cell in errors (``cell_id`` when present). Rows are taken as distinct cells (collapse
    duplicates first). Raises :class:`InvalidSufficientStatistics` on impossible cells.
    """
    if kind not in ("binary", "mean"):
        raise ValueError(f"kind must be 'binary' or 'mean', got {kind!r}")
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if int(draws) < 1000:
        raise ValueError("draws must be at least 1000")
    cols = list(cells.columns)
    df = as_pandas(cells, cols).reset_index(drop=True)
    for c in ("n", "sum") + (("sum_sq",) if kind == "mean" else ()):
        if c not in df.columns:
            raise ValueError(f"missing column {c!r}; columns are {cols}")
    if len(df) < 2:
        raise ValueError("prob_best needs at least two cells")
    stat_cols = {"n", "sum", "sum_sq", *SHIFT_COLUMNS, *BAYES_COLUMNS}
    label = "cell_id" if "cell_id" in df.columns else [c for c in df.columns if c not in stat_cols]
    v = validate_cell_stats(df, kind, cell=label, min_n=2 if kind == "mean" else 1)
    (family, p1, p2), mean, sd = _posterior(v, kind)
    rng = np.random.default_rng(seed)
    k, sign = len(df), (1.0 if direction == "higher" else -1.0)
    wins, loss = np.zeros(k), np.zeros(k)
    done = 0
    while done < draws:
        m = min(_CHUNK, int(draws) - done)
        if family == "beta":
            theta = rng.beta(p1, p2, size=(m, k))
        else:
            theta = p1 + p2 * rng.standard_normal((m, k))
        t = sign * theta
        best = t.max(axis=1, keepdims=True)
        top = t == best  # every tied cell shares the draw
        wins += (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
        loss += (best - t).sum(axis=0)
        done += m
    out = df.drop(columns=[c for c in BAYES_COLUMNS if c in df.columns])
    out["posterior_mean"] = mean
    out["posterior_sd"] = sd
    out["prob_best"] = wins / draws
    out["expected_loss"] = loss / draws
    return out
