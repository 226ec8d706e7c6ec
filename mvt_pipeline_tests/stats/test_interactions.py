"""Interaction overload (stats/interactions.py), validated by simulation.

The simulation is `bench/calibration.py`'s `shrinkage_runs` (per-unit draws of 2^5 factorials,
26 interactions, truths by the estimands' definition) at test size; the full run and its
results are in docs/validation.md §2.9.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.stats.interactions import LIMITED_TRANSLATION, add_shrinkage, lenth, shrink_interactions


@pytest.fixture(scope="module")
def runs(calib):
    return calib.shrinkage_runs(200)


def test_the_truth_is_one_large_interaction(runs):
    assert runs.groupby("rep").size().eq(26).all()
    truth = runs.drop_duplicates("term").set_index("term")["truth"]
    assert truth["f0:f1"] == pytest.approx(0.8) and (truth.drop("f0:f1").abs() < 1e-12).all()


def test_shrinkage_lowers_the_squared_error_when_most_interactions_are_null(runs):
    raw = (runs["estimate"] - runs["truth"]) ** 2
    shrunk = (runs["shrunk_estimate"] - runs["truth"]) ** 2
    null = runs["truth"].abs() < 1e-12
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


def test_no_worse_when_several_interactions_are_real(calib):
    runs = calib.shrinkage_runs(100, others_sd=1.0, seed=5)
    raw = ((runs["estimate"] - runs["truth"]) ** 2).mean()
    shrunk = ((runs["shrunk_estimate"] - runs["truth"]) ** 2).mean()
    assert shrunk < raw


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
