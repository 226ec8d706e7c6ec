"""Small, fast versions of ``bench/calibration.py`` (the full runs are in docs/validation.md).

Replication counts are tiny to keep the suite fast (every replicate runs the real public API:
analyze_cells / segment_effects on a cell table), so these are gross checks with wide,
~99.9% binomial tolerances and fixed seeds; the tight targets (coverage in [94%, 96%], power
within 3 pp) are checked by the full bench, and the vectorised simulations in
test_sequential / test_power / test_hte test the same properties with thousands of
replicates. Loading the bench file here also keeps it from rotting.
"""


import numpy as np
import pytest



def test_ci_coverage_of_main_effects_and_interactions(calib):
    cov = calib.coverage(reps=100)
    robust = cov[cov.se == "robust"]
    assert 0.925 <= robust["coverage"].mean() <= 0.975, robust
    assert (cov["coverage"] >= 0.86).all(), cov


def test_aa_nightly_looks_sequential_vs_fixed(calib):
    aa = calib.aa_sequential(reps=40).set_index(["method", "effect"])["fpr_any_look"]
    assert aa["asymptotic_cs", "any of the 3"] <= 0.1, aa
    assert aa["fixed", "any of the 3"] >= 0.2, aa  # peeking inflates the fixed-horizon CI


def test_cuped_variance_reduction_is_one_minus_rho_squared(calib):
    out = calib.cuped_reduction(reps=50, rhos=(0.8,))
    np.testing.assert_allclose(out["reported_se2_ratio"], out["expected_ratio"], rtol=0.06)
    np.testing.assert_allclose(out["reported_variance_reduction"], 1 - out["expected_ratio"], rtol=0.06)
    np.testing.assert_allclose(out["empirical_var_ratio"], out["expected_ratio"], rtol=0.5)


def test_power_matches_simulation(calib):
    out = calib.power_check(reps=100)
    assert (abs(out["simulated_power"] - out["planned_power"]) < 0.15).all(), out


def test_hte_level_and_power(calib):
    out = calib.hte_check(reps=40, n_seg=4).set_index("scenario")
    assert out.loc["no heterogeneity", "q_reject_rate_A"] <= 0.175, out
    assert (out["q_reject_rate_B_null"] <= 0.175).all(), out
    assert abs(out.loc["one segment shifted", "q_reject_rate_A"] - 0.8) <= 0.2, out
