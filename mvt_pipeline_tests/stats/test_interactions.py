"""Interaction overload (stats/interactions.py), validated by simulation.

A 2^5 factorial (26 interactions) is simulated at the cell level: cell sample means ~ N(mu_c,
sigma^2/n) and within-cell sums of squares ~ sigma^2 chi^2(n-1), exactly the distribution of
per-unit sufficient statistics. The true interactions are known by construction: the cell
means are additive plus ``gamma`` in the cells where both fa and fb are treated, so the fa:fb
interaction (difference of differences) is ``gamma`` and every other interaction is 0.
"""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.stats import analyze_cells
from mvt_pipeline.stats.interactions import LIMITED_TRANSLATION, add_shrinkage, lenth, shrink_interactions

FACTORS = {f"f{i}": ["c", "t"] for i in range(5)}
N, SIGMA = 50, 1.0


def simulate(rng, gamma: float, others_sd: float = 0.0):
    """Effects of one simulated experiment and the true interaction per term."""
    grid = list(itertools.product(*FACTORS.values()))
    truth = {}
    mu = np.array([0.3 * (c[2] == "t") for c in grid]) + gamma * np.array([c[0] == c[1] == "t" for c in grid])
    if others_sd:  # extra non-null interactions: f2:f3 and f3:f4 patterns with random sizes
        for a, b in ((2, 3), (3, 4)):
            g = rng.normal(0, others_sd)
            truth[f"f{a}:f{b}"] = g
            mu = mu + g * np.array([c[a] == c[b] == "t" for c in grid])
    means = rng.normal(mu, SIGMA / np.sqrt(N))
    ss = SIGMA**2 * rng.chisquare(N - 1, len(grid))
    cells = pd.DataFrame(grid, columns=list(FACTORS)).assign(n=N, sum=N * means, sum_sq=ss + N * means**2)
    eff = analyze_cells(cells, FACTORS).effects
    inter = eff[eff["term"].str.contains(":")].copy()
    inter["truth"] = [truth.get(t, gamma if t == "f0:f1" else 0.0) for t in inter["term"]]
    return add_shrinkage(inter)


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(20261202)
    return pd.concat([simulate(rng, gamma=0.8).assign(rep=r) for r in range(300)], ignore_index=True)


def test_shrinkage_lowers_the_squared_error_when_most_interactions_are_null(runs):
    assert runs.groupby("rep").size().eq(26).all()
    raw = ((runs["estimate"] - runs["truth"]) ** 2)
    shrunk = ((runs["shrunk_estimate"] - runs["truth"]) ** 2)
    null = runs["truth"] == 0
    assert shrunk[null].mean() < 0.6 * raw[null].mean()
    assert shrunk.mean() < 0.7 * raw.mean()


def test_a_large_true_interaction_is_never_shrunk_below_its_interval(runs):
    big = runs[runs["term"] == "f0:f1"]
    se = big["std_error"]
    assert (0.8 / se).min() > 7  # a large interaction: ~8 SE
    assert (big["shrunk_estimate"] >= big["ci_low"]).all() and (big["shrunk_estimate"] <= big["ci_high"]).all()
    assert ((big["estimate"] - big["shrunk_estimate"]).abs() <= LIMITED_TRANSLATION * se + 1e-12).all()
    # the move is capped at one SE, so the bias is at most one SE (plus Monte Carlo error)
    assert abs(big["shrunk_estimate"].mean() - 0.8) < 1.1 * LIMITED_TRANSLATION * se.mean()


def test_little_shrinkage_when_interactions_are_real():
    rng = np.random.default_rng(5)
    frames = [simulate(rng, gamma=0.8, others_sd=1.0).assign(rep=r) for r in range(150)]
    runs = pd.concat(frames, ignore_index=True)
    raw = ((runs["estimate"] - runs["truth"]) ** 2).mean()
    shrunk = ((runs["shrunk_estimate"] - runs["truth"]) ** 2).mean()
    assert shrunk < raw  # still no worse in total


def test_main_effects_and_small_families_are_not_shrunk():
    b, f, tau2 = shrink_interactions([3.0, -1.0], [1.0, 1.0])
    assert np.array_equal(b, [3.0, -1.0]) and np.isnan(tau2) and (f == 1).all()
    eff = pd.DataFrame({"term": ["fa", "fa:fb", "fa:fc", "fb:fc"], "estimate": [1.0, 0.1, -0.2, 0.05],
                        "std_error": [0.1, 0.3, 0.3, 0.3], "status": "ok"})
    out = add_shrinkage(eff)
    assert np.isnan(out.loc[0, "shrunk_estimate"])
    # all three within noise: tau^2 = 0, each moved towards 0 by at most one SE
    np.testing.assert_allclose(out.loc[1:, "shrunk_estimate"], [0.0, 0.0, 0.0])


def test_lenth_pse_by_hand_and_its_null_calibration():
    c = np.array([-1.0, 0.5, 2.0, 30.0, -0.8, 1.2, 0.3])  # one active contrast
    s0 = 1.5 * np.median(np.abs(c))  # 1.5 * 1.0
    pse = 1.5 * np.median(np.abs(c)[np.abs(c) < 2.5 * s0])  # 30 trimmed: median of 6 = 0.9
    res = lenth(c)
    assert res.pse == pytest.approx(pse) and res.df == pytest.approx(7 / 3)
    assert res.me == pytest.approx(stats.t.ppf(0.975, 7 / 3) * pse)
    assert list(res.active(c)) == [False, False, False, True, False, False, False]
    # Under the null (m = 15 iid N(0, 1) contrasts) the 95th percentile of |c|/PSE is about
    # 2.16 (Ye & Hamada 2000, J. Quality Technology 32, Table 1: IER critical value for m = 15);
    # Lenth's ME (t_{0.975, 5} = 2.57) is therefore conservative: IER below 5 %.
    rng = np.random.default_rng(1)
    sims = rng.standard_normal((20000, 15))
    ratios = np.array([abs(row[0]) / lenth(row).pse for row in sims])
    assert 2.05 < np.quantile(ratios, 0.95) < 2.3
    ier = np.mean(ratios > stats.t.ppf(0.975, 5))
    assert 0.01 < ier < 0.05
