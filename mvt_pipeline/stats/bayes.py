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

Both are computed by Monte Carlo with ``draws`` joint draws (default 200,000; the Monte Carlo
standard error of a probability is at most ``0.5 / sqrt(draws)`` ~ 0.001) and a fixed
``seed`` so the nightly tables are reproducible. ``direction="lower"`` (e.g. latency) flips
"best" to the smallest mean and the loss to ``E[theta_i - min_j theta_j]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .cells import as_pandas

BAYES_COLUMNS = ["posterior_mean", "posterior_sd", "prob_best", "expected_loss"]
_CHUNK = 20_000


def _posterior(df: pd.DataFrame, kind: str):
    n = pd.to_numeric(df["n"], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(df["sum"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(n).all() and np.isfinite(s).all()) or np.any(n < 1):
        raise ValueError("every cell needs finite n >= 1 and a finite sum")
    if kind == "binary":
        if np.any((s < 0) | (s > n)):
            raise ValueError("binary cells need 0 <= sum <= n (sum = number of successes)")
        a, b = 1.0 + s, 1.0 + n - s
        mean = a / (a + b)
        sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        return ("beta", a, b), mean, sd
    if "sum_sq" not in df.columns:
        raise ValueError("kind='mean' needs a sum_sq column")
    ss = pd.to_numeric(df["sum_sq"], errors="coerce").to_numpy(dtype=float)
    if np.any(n < 2):
        raise ValueError("kind='mean' needs n >= 2 in every cell for a sample variance")
    var = np.maximum(ss - s * s / n, 0.0) / (n - 1)
    mean, sd = s / n, np.sqrt(var / n)
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
    ``kind="mean"``); every other column (factor levels, labels) is passed through. Rows are
    taken as distinct cells (collapse duplicates first). See the module docstring.
    """
    if kind not in ("binary", "mean"):
        raise ValueError(f"kind must be 'binary' or 'mean', got {kind!r}")
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if int(draws) < 1000:
        raise ValueError("draws must be at least 1000")
    cols = list(cells.columns)
    df = as_pandas(cells, cols).reset_index(drop=True)
    for c in ("n", "sum"):
        if c not in df.columns:
            raise ValueError(f"missing column {c!r}; columns are {cols}")
    if len(df) < 2:
        raise ValueError("prob_best needs at least two cells")
    (family, p1, p2), mean, sd = _posterior(df, kind)
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
        best = t.max(axis=1)
        wins += np.bincount(t.argmax(axis=1), minlength=k)
        loss += (best[:, None] - t).sum(axis=0)
        done += m
    out = df.drop(columns=[c for c in BAYES_COLUMNS if c in df.columns])
    out["posterior_mean"] = mean
    out["posterior_sd"] = sd
    out["prob_best"] = wins / draws
    out["expected_loss"] = loss / draws
    return out
