"""power_factorial / mde_factorial / required_units vs closed forms, statsmodels and simulation.

References: the contrast-weight formula Var = sd^2 sum_c w_c^2 / n_c written out here by hand,
statsmodels ``NormalIndPower`` (a two-level main effect of a 2^k design with n units is a
comparison of two halves of n/2), and a vectorised numpy simulation of Welch-type z-tests on
the definition of each contrast.
"""

import itertools

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower

from mvt_pipeline.stats import (
    contrast_std_errors, fractional_design, mde_factorial, power_factorial, required_days, required_units,
)


def weights_se(levels, term_levels, n_total, sd):
    """SE of a level-vs-control contrast from explicit cell weights (equal allocation)."""
    names = list(levels)
    grid = list(itertools.product(*(range(levels[f]) for f in names)))
    m = n_total / len(grid)
    others = int(np.prod([levels[f] for f in names if f not in term_levels]))
    w = []
    for cell in grid:
        g = dict(zip(names, cell))
        x = 1.0
        for f, l in term_levels.items():
            x *= 1.0 if g[f] == l else (-1.0 if g[f] == 0 else 0.0)
        w.append(x / others)
    return sd * np.sqrt(np.sum(np.square(w)) / m)


def test_standard_errors_equal_the_contrast_weight_formula():
    levels = {"A": 2, "B": 3, "C": 4}
    table = contrast_std_errors(levels, 4800, 2.0).set_index(["term", "level"])["std_error"]
    assert table[("A", "A1")] == pytest.approx(weights_se(levels, {"A": 1}, 4800, 2.0), rel=1e-12)
    assert table[("C", "C3")] == pytest.approx(weights_se(levels, {"C": 3}, 4800, 2.0), rel=1e-12)
    assert table[("B:C", "B2:C1")] == pytest.approx(weights_se(levels, {"B": 2, "C": 1}, 4800, 2.0), rel=1e-12)
    # closed forms: main 2 k sd^2 / n, interaction 4 kF kG sd^2 / n
    assert table[("C", "C1")] == pytest.approx(np.sqrt(2 * 4 * 4.0 / 4800), rel=1e-12)
    assert table[("A:B", "A1:B1")] == pytest.approx(np.sqrt(4 * 2 * 3 * 4.0 / 4800), rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_two_level_main_effect_equals_statsmodels_normal_power(k):
    levels = {f"F{i}": 2 for i in range(k)}
    n, effect, sd = 3000, 0.1, 1.0
    ref = NormalIndPower().power(effect_size=effect / sd, nobs1=n / 2, alpha=0.05, ratio=1.0, alternative="two-sided")
    assert power_factorial(levels, n, effect, sd) == pytest.approx(ref, abs=1e-10)
    # a 2x2 interaction (difference of differences) has twice the SE of a main effect
    if k >= 2:
        ref_i = NormalIndPower().power(effect_size=effect / 2, nobs1=n / 2, alpha=0.05, ratio=1.0, alternative="two-sided")
        assert power_factorial(levels, n, effect, sd, term="interaction2") == pytest.approx(ref_i, abs=1e-10)


def test_mde_and_required_units_invert_power():
    levels = {"A": 2, "B": 2, "C": 3}
    mde = mde_factorial(levels, 6000, 1.5, power=0.8, term="main")
    assert power_factorial(levels, 6000, mde, 1.5, term="main") == pytest.approx(0.8, abs=1e-9)
    # main = min over factors: the 3-level factor is the hardest; textbook (z_a/2 + z_b) SE
    se_c = np.sqrt(2 * 3 * 1.5**2 / 6000)
    assert mde == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se_c, rel=1e-3)
    n = required_units(levels, 0.1, 1.0, power=0.9, term="interaction2")
    assert n % 12 == 0
    assert power_factorial(levels, n, 0.1, 1.0, term="interaction2") >= 0.9
    assert power_factorial(levels, n - 12, 0.1, 1.0, term="interaction2") < 0.9
    assert required_days(levels, 0.1, 1.0, daily_units=1000, power=0.9, term="interaction2") == int(np.ceil(n / 1000))
    seq = required_units(levels, 0.1, 1.0, sequential=True)
    assert seq > required_units(levels, 0.1, 1.0)  # the CS multiplier 3.04 > 1.96 costs units


def test_fraction_and_unequal_allocation():
    d = fractional_design(list("ABC"), ["D=ABC"])
    t = contrast_std_errors(d, 800, 1.0, max_order=None)
    np.testing.assert_allclose(t["std_error"], np.r_[[np.sqrt(4 / 800)] * 4, [np.sqrt(16 / 800)] * 3])
    # 2 cells, 1/3 vs 2/3 allocation: var = sd^2 (1/n1 + 1/n2)
    se = contrast_std_errors({"A": 2}, 900, 1.0, weights=[1, 2])["std_error"].iloc[0]
    assert se == pytest.approx(np.sqrt(1 / 300 + 1 / 600), rel=1e-12)


def test_power_by_simulation_within_3pp():
    """Vectorised z-tests (Welch SE from cell sample variances) on a 2x3 design."""
    rng = np.random.default_rng(11)
    levels, n_total, sd = {"A": 2, "B": 3}, 1800, 1.0
    m, reps = n_total // 6, 4000
    for term, cells_w in [("A", {(1, b): 1 / 3 for b in range(3)} | {(0, b): -1 / 3 for b in range(3)}),
                          ("A:B", {(1, 1): 1, (1, 0): -1, (0, 1): -1, (0, 0): 1})]:
        delta = mde_factorial(levels, n_total, sd, power=0.7, term=term)
        grid = list(itertools.product(range(2), range(3)))
        mu = np.array([delta if (term == "A" and g[0] == 1) or (term == "A:B" and g == (1, 1)) else 0.0 for g in grid])
        y = rng.standard_normal((reps, 6, m)) * sd + mu[None, :, None]
        means, var = y.mean(2), y.var(2, ddof=1)
        w = np.array([cells_w.get(g, 0.0) for g in grid])
        z = (means @ w) / np.sqrt(var @ (w**2) / m)
        sim = np.mean(np.abs(z) > stats.norm.ppf(0.975))
        assert abs(sim - power_factorial(levels, n_total, delta, sd, term=term)) < 0.03, (term, sim)


def test_errors():
    with pytest.raises(ValueError):
        power_factorial({"A": 1}, 100, 0.1, 1.0)
    with pytest.raises(ValueError):
        power_factorial({"A": 2}, 100, 0.1, 1.0, term="X")
    with pytest.raises(ValueError):
        mde_factorial({"A": 2}, 100, 1.0, power=1.2)
    with pytest.raises(ValueError):
        required_units({"A": 2}, 0.0, 1.0)
    with pytest.raises(ValueError):
        contrast_std_errors({"A": 2}, 100, 1.0, weights=[1, 2, 3])
    with pytest.raises(ValueError):
        required_days({"A": 2}, 0.1, 1.0, daily_units=0)
