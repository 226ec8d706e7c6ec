"""Speed: analyze_cells on cell sums vs statsmodels OLS on per-unit rows (2^4, 5M units).

    .venv/bin/python bench/stats_speed_bench.py [--units 5000000] [--sm-runs 1] [--cells-runs 30]

Simulates a 2^4 factorial with ``--units`` units and three metrics (revenue: log-normal,
conversion: 0/1, sessions: Poisson), reduces them to per-cell n/sum/sum_sq (numpy bincount,
timed separately: in the pipeline the warehouse does this), then times

* ``analyze_cells`` for the three metrics (HC2 robust effects, Type II ANOVA, relative lifts);
* statsmodels ``ols("y ~ C(fa, Sum) * C(fb, Sum) * C(fc, Sum) * C(fd, Sum)").fit(cov_type="HC2")``
  on the per-unit rows for the first metric, plus the same 15 effect contrasts (``t_test``).

and asserts that the 15 estimates and standard errors agree to a relative 1e-9. Prints the
medians and the ratio (statsmodels one metric / analyze_cells one metric) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvt_pipeline.stats import analyze_cells  # noqa: E402

LEVELS = {f"f{x}": [f"{x}0", f"{x}1"] for x in "abcd"}  # not "C": patsy reserves C()
FORMULA = "y ~ " + " * ".join(f"C({f}, Sum)" for f in LEVELS)


def simulate(units: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, 16, units)
    bits = (cell[:, None] >> np.arange(3, -1, -1)) & 1  # A slowest, matches itertools.product
    lift = 0.02 * bits[:, 0] + 0.01 * bits[:, 1] - 0.015 * bits[:, 0] * bits[:, 2]
    metrics = {
        "revenue": rng.lognormal(1.0 + lift, 1.0),
        "conversion": (rng.random(units) < 0.1 * (1 + lift)).astype(float),
        "sessions": rng.poisson(3.0 * (1 + lift)).astype(float),
    }
    return cell, bits, metrics


def cell_table(cell: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    grid = list(itertools.product(*LEVELS.values()))
    df = pd.DataFrame(grid, columns=list(LEVELS))
    df["n"] = np.bincount(cell, minlength=16)
    df["sum"] = np.bincount(cell, weights=y, minlength=16)
    df["sum_sq"] = np.bincount(cell, weights=y * y, minlength=16)
    return df


def statsmodels_effects(cell, bits, y):
    """Per-unit OLS with HC2 and the effect contrasts built from the estimand's definition."""
    import statsmodels.formula.api as smf  # noqa: PLC0415

    data = pd.DataFrame({f: pd.Categorical(np.where(bits[:, i] == 1, LEVELS[f][1], LEVELS[f][0]), categories=LEVELS[f])
                         for i, f in enumerate(LEVELS)})
    data["y"] = y
    fit = smf.ols(FORMULA, data=data).fit(cov_type="HC2")
    exog = fit.model.exog
    _, first = np.unique(cell, return_index=True)  # one unit per cell (cells in grid order)
    rows = []
    for order in range(1, 5):
        for term in itertools.combinations(range(4), order):
            w = np.array([np.prod([1 if (c >> (3 - f)) & 1 else -1 for f in term]) for c in range(16)], dtype=float)
            L = (w / 2 ** (4 - order)) @ exog[first]
            t = fit.t_test(L)
            rows.append((":".join(list(LEVELS)[f] for f in term), float(t.effect[0]), float(t.sd[0][0])))
    return pd.DataFrame(rows, columns=["term", "estimate", "std_error"])


def median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=5_000_000)
    ap.add_argument("--cells-runs", type=int, default=30)
    ap.add_argument("--sm-runs", type=int, default=1)
    args = ap.parse_args(argv)
    cell, bits, metrics = simulate(args.units)
    t_agg, tables = median_time(lambda: {m: cell_table(cell, y) for m, y in metrics.items()}, 3)
    analyze_cells(tables["revenue"], LEVELS)  # warm-up (imports, caches)
    t_one, res = median_time(lambda: analyze_cells(tables["revenue"], LEVELS), args.cells_runs)
    t_three, _ = median_time(lambda: [analyze_cells(t, LEVELS) for t in tables.values()], args.cells_runs)
    t_sm, ref = median_time(lambda: statsmodels_effects(cell, bits, metrics["revenue"]), args.sm_runs)
    ours = res.effects[["term", "estimate", "std_error"]].reset_index(drop=True)
    assert list(ours["term"]) == list(ref["term"]), (list(ours["term"]), list(ref["term"]))
    rel = np.abs(ours[["estimate", "std_error"]].to_numpy() - ref[["estimate", "std_error"]].to_numpy())
    rel = rel / np.abs(ref[["estimate", "std_error"]].to_numpy())
    assert rel.max() < 1e-9, rel.max()
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()} "
          f"python {platform.python_version()} numpy {np.__version__} pandas {pd.__version__}")
    print(f"units={args.units:,} cells=16 metrics=3; max relative difference of 15 estimates+SEs vs statsmodels: {rel.max():.1e}")
    print("| step | median time |")
    print("|---|---|")
    print(f"| per-unit rows -> cell sums, 3 metrics (numpy bincount; the warehouse's job) | {t_agg * 1e3:.0f} ms |")
    print(f"| analyze_cells, 1 metric (median of {args.cells_runs}) | {t_one * 1e3:.1f} ms |")
    print(f"| analyze_cells, 3 metrics (median of {args.cells_runs}) | {t_three * 1e3:.1f} ms |")
    print(f"| statsmodels ols + HC2 + 15 contrasts on per-unit rows, 1 metric (median of {args.sm_runs}) | {t_sm:.1f} s |")
    print(f"| ratio statsmodels / analyze_cells (1 metric) | {t_sm / t_one:,.0f}x |")


if __name__ == "__main__":
    main()
