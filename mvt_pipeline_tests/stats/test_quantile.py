"""Quantile metrics: clustered (users with several events) P95 contrasts keep their coverage.

The reference is the simulation's exact population quantile: log-latency = mu + u_i + e_ij with
u_i ~ N(0, 0.3^2), e_ij ~ N(0, 0.5^2), so every event is lognormal(mu, sqrt(0.34)) marginally and
P95 = exp(mu + z_0.95 * sqrt(0.34)) exactly.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.stats.quantile import analyze_quantile_cells

Z = 1.959963984540054


def quantile_inputs(values: np.ndarray, units: np.ndarray, q: float, z: float = Z) -> dict:
    """What `agg_cell_quantiles` computes in SQL, recomputed with numpy for one cell."""
    x = np.sort(values)
    n_ev = len(x)
    half = z * math.sqrt(n_ev * q * (1 - q))
    clamp = lambda r: int(min(max(r, 1), n_ev))  # noqa: E731
    point, lower, upper = clamp(math.ceil(n_ev * q)), clamp(math.floor(n_ev * q - half)), clamp(math.ceil(n_ev * q + half))
    qv = x[point - 1]
    frame = pd.DataFrame({"u": units, "le": values <= qv})
    per_unit = frame.groupby("u")["le"].agg(["sum", "size"])
    k, m = per_unit["sum"].to_numpy(float), per_unit["size"].to_numpy(float)
    return {"n": len(per_unit), "q": q, "n_events": n_ev, "quantile_value": qv, "ci_lower_value": x[lower - 1],
            "ci_upper_value": x[upper - 1], "ci_z": z, "k_sum": k.sum(), "k_sum_sq": (k * k).sum(),
            "m_sum_sq": (m * m).sum(), "k_m_sum": (k * m).sum()}


def _cell(rng, n_users, mu, lift):
    m = 1 + rng.poisson(4, n_users)
    units = np.repeat(np.arange(n_users), m)
    u = rng.normal(0, 0.3, n_users)[units]
    values = np.exp(mu + u + rng.normal(0, 0.5, len(units))) * lift
    return values, units


def test_p95_difference_covers_the_truth_under_clustering():
    rng = np.random.default_rng(20261124)
    mu, lift, q = math.log(180.0), 1.08, 0.95
    true_p95 = math.exp(mu + stats.norm.ppf(q) * math.sqrt(0.34))
    true_diff = true_p95 * (lift - 1)
    covered, deffs, reps = 0, [], 600
    for _ in range(reps):
        rows = []
        for level, l in (("a0", 1.0), ("a1", lift)):
            values, units = _cell(rng, 800, mu, l)
            rows.append({"A": level, **quantile_inputs(values, units, q)})
        res = analyze_quantile_cells(pd.DataFrame(rows), {"A": ["a0", "a1"]})
        row = res.effects.iloc[0]
        covered += row.ci_low <= true_diff <= row.ci_high
        deffs.extend(res.cell_means["design_effect"])
    assert 0.93 <= covered / reps <= 0.97
    assert np.mean(deffs) > 1.2  # clustering matters: an i.i.d. interval would be too narrow


def test_single_event_users_have_design_effect_near_one():
    rng = np.random.default_rng(3)
    values = rng.lognormal(5, 0.5, 20000)
    units = np.arange(20000)
    rows = [{"A": "a0", **quantile_inputs(values[:10000], units[:10000], 0.5)},
            {"A": "a1", **quantile_inputs(values[10000:], units[10000:], 0.5)}]
    res = analyze_quantile_cells(pd.DataFrame(rows), {"A": ["a0", "a1"]})
    assert res.cell_means["design_effect"].to_numpy() == pytest.approx([1.0, 1.0], abs=0.05)
    # And the estimate is the plain difference of the two cell medians.
    assert res.effects.iloc[0].estimate == pytest.approx(rows[1]["quantile_value"] - rows[0]["quantile_value"])


def test_duplicate_cells_are_refused():
    row = {"A": "a0", "n": 5, "q": 0.5, "n_events": 10, "quantile_value": 1.0, "ci_lower_value": 0.5,
           "ci_upper_value": 1.5, "ci_z": Z, "k_sum": 5, "k_sum_sq": 7, "m_sum_sq": 22, "k_m_sum": 11}
    with pytest.raises(ValueError, match="one row per cell"):
        analyze_quantile_cells(pd.DataFrame([row, row | {"A": "a1"}, row]), {"A": ["a0", "a1"]})
