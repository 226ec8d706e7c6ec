"""prob_best vs closed forms (two normal cells) and numerical integration (Beta posteriors)."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from mvt_pipeline.stats import prob_best


def normal_cells():
    # means 1.00 and 1.02, sd 1 and 1.5, n 2000 and 3000: sum_sq from the variance (n - 1 divisor)
    rows = []
    for name, n, m, sd in [("a", 2000, 1.00, 1.0), ("b", 3000, 1.02, 1.5)]:
        rows.append({"arm": name, "n": n, "sum": n * m, "sum_sq": sd**2 * (n - 1) + n * m**2})
    return pd.DataFrame(rows)


def test_two_normal_cells_match_the_closed_form():
    res = prob_best(normal_cells(), kind="mean", draws=400_000, seed=1)
    v1, v2 = 1.0 / 2000, 1.5**2 / 3000
    d, s = 0.02, np.sqrt(v1 + v2)
    p_b = stats.norm.cdf(d / s)
    np.testing.assert_allclose(res["prob_best"], [1 - p_b, p_b], atol=0.004)
    # E[(X_b - X_a)^+] = d Phi(d/s) + s phi(d/s); loss of b = E[(X_a - X_b)^+] = loss_a - d
    loss_a = d * stats.norm.cdf(d / s) + s * stats.norm.pdf(d / s)
    np.testing.assert_allclose(res["expected_loss"], [loss_a, loss_a - d], atol=2e-4)
    np.testing.assert_allclose(res["posterior_sd"], [np.sqrt(v1), np.sqrt(v2)], rtol=1e-12)
    assert list(res["arm"]) == ["a", "b"]
    low = prob_best(normal_cells(), kind="mean", direction="lower", draws=400_000, seed=1)
    np.testing.assert_allclose(low["prob_best"], [p_b, 1 - p_b], atol=0.004)
    np.testing.assert_allclose(low["expected_loss"], [loss_a - d, loss_a], atol=2e-4)


def test_beta_posteriors_match_numerical_integration():
    cells = pd.DataFrame({"A": ["x", "x", "y"], "B": ["u", "v", "u"], "n": [500, 520, 480], "sum": [50, 61, 58]})
    res = prob_best(cells, kind="binary", draws=400_000, seed=3)
    a, b = 1 + cells["sum"].to_numpy(), 1 + cells["n"].to_numpy() - cells["sum"].to_numpy()
    dists = [stats.beta(ai, bi) for ai, bi in zip(a, b)]
    lo, hi = 0.02, 0.25  # all posterior mass lies here
    p_best = []
    for i, di in enumerate(dists):
        f = lambda x, i=i, di=di: di.pdf(x) * np.prod([dj.cdf(x) for j, dj in enumerate(dists) if j != i])
        p_best.append(integrate.quad(f, lo, hi, limit=200, epsabs=1e-12)[0])
    e_max = lo + integrate.quad(lambda x: 1 - np.prod([d.cdf(x) for d in dists]), lo, hi, limit=200, epsabs=1e-12)[0]
    loss = e_max - a / (a + b)
    np.testing.assert_allclose(sum(p_best), 1.0, atol=1e-6)
    np.testing.assert_allclose(res["prob_best"], p_best, atol=0.004)
    np.testing.assert_allclose(res["expected_loss"], loss, atol=1e-4)
    np.testing.assert_allclose(res["posterior_mean"], a / (a + b), rtol=1e-12)
    assert list(res.columns[:2]) == ["A", "B"]


def test_reproducible_with_seed_and_errors():
    cells = pd.DataFrame({"n": [100, 100], "sum": [10, 12]})
    assert prob_best(cells, seed=5).equals(prob_best(cells, seed=5))
    with pytest.raises(ValueError):
        prob_best(pd.DataFrame({"n": [100, 100], "sum": [10, 120]}))
    with pytest.raises(ValueError):
        prob_best(cells, kind="mean")  # no sum_sq
    with pytest.raises(ValueError):
        prob_best(cells.iloc[:1])
    with pytest.raises(ValueError):
        prob_best(cells, kind="poisson")
    with pytest.raises(ValueError):
        prob_best(cells, direction="up")
