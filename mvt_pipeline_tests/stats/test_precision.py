"""Large means against small spreads (mean/sd = 1e8): shifted sums keep every digit.

Reference: statsmodels (or numpy) on the per-unit rows translated by an exact constant (1e8 is
exactly representable and ``y - 1e8`` is exact by Sterbenz' lemma for these values), which
changes no effect, SE or p-value, so the reference is free of the cancellation it tests. The
engine gets sums of ``y - K`` per cell with a *different* ``K`` per test (and per row, to
exercise rebasing), built here with pandas.
"""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from mvt_pipeline.stats import (analyze_cells, analyze_ratio_cells, analyze_units, prob_best,
                                unit_cell_stats)
from mvt_pipeline.stats.shifts import rebase

LEVELS = {"fa": ["a0", "a1"], "fb": ["b0", "b1"]}
FORMULA = "y ~ C(fa, Sum) * C(fb, Sum)"
BIG = 1e8


def units(seed: int, n=(40, 90)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for cell in itertools.product(*LEVELS.values()):
        k = int(rng.integers(*n))
        part = pd.DataFrame(dict(zip(LEVELS, cell)), index=range(k))
        x = rng.normal(0.0, 1.0, k)
        part["x"] = BIG + x
        part["y"] = BIG + rng.normal(0.2, 0.3) + 0.6 * x + rng.normal(0.0, 0.8, k)
        part["den"] = rng.integers(1, 5, k).astype(float)
        part["num"] = BIG * part["den"] + rng.normal(0.0, 1.0, k) * part["den"]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def shifted_sums(data: pd.DataFrame, y_shift: float, x_shift: float | None = None) -> pd.DataFrame:
    y = data["y"] - y_shift
    d = data.assign(_y=y, _y2=y * y)
    cols = {"n": ("_y", "size"), "sum": ("_y", "sum"), "sum_sq": ("_y2", "sum")}
    if x_shift is not None:
        x = data["x"] - x_shift
        d = d.assign(_x=x, _x2=x * x, _xy=x * y)
        cols.update(cov_sum=("_x", "sum"), cov_sum_sq=("_x2", "sum"), cross_sum=("_xy", "sum"))
    out = d.groupby(list(LEVELS)).agg(**cols).reset_index().assign(shift=y_shift)
    return out.assign(cov_shift=x_shift) if x_shift is not None else out


def centred(data: pd.DataFrame) -> pd.DataFrame:
    return data.assign(y=data["y"] - BIG, x=data["x"] - BIG)


@pytest.fixture(scope="module")
def data():
    return units(20261202)


def test_plain_sums_lose_the_variance_the_shifted_ones_keep(data):
    """The defect: at mean/sd 1e8 ``sum_sq - sum^2/n`` has no correct digit left."""
    raw = shifted_sums(data, 0.0)
    ref = smf.ols(FORMULA, centred(data)).fit(cov_type="HC2")
    se_raw = analyze_cells(raw.drop(columns="shift"), LEVELS).effects["std_error"].to_numpy()
    se_ref = ref.bse.to_numpy()[1:] * 2  # sum coding: the +-1 coefficient is half the effect
    assert np.max(np.abs(se_raw / se_ref - 1)) > 1e-3  # the old path is visibly wrong


@pytest.mark.parametrize("se,cov_type", [("robust", "HC2"), ("pooled", "nonrobust")])
def test_means_equal_statsmodels_at_mean_over_sd_1e8(data, se, cov_type):
    ref = smf.ols(FORMULA, centred(data)).fit(cov_type=cov_type)
    for cells in (shifted_sums(data, float(data["y"].iloc[0])),
                  pd.concat([shifted_sums(data.iloc[::2], BIG + 0.37), shifted_sums(data.iloc[1::2], BIG - 2.5)])):
        res = analyze_cells(cells, LEVELS, se=se)
        eff = res.effects.set_index("term")
        for term, name in (("fa", "C(fa, Sum)[S.a0]"), ("fb", "C(fb, Sum)[S.b0]"),
                           ("fa:fb", "C(fa, Sum)[S.a0]:C(fb, Sum)[S.b0]")):
            sign = -2.0 if term != "fa:fb" else 4.0  # treatment - control = -2 * coef (a0 is +1)
            np.testing.assert_allclose(eff.loc[term, "estimate"], sign * ref.params[name], rtol=1e-7)
            np.testing.assert_allclose(eff.loc[term, "std_error"], abs(sign) * ref.bse[name], rtol=1e-7)
            np.testing.assert_allclose(eff.loc[term, "p_value"], ref.pvalues[name], rtol=1e-6)
        cell_means = data.groupby(list(LEVELS))["y"].apply(lambda v: BIG + (v - BIG).mean())
        got = res.cell_means.set_index(list(LEVELS))["mean"]
        np.testing.assert_allclose(got.loc[cell_means.index].to_numpy() - BIG, cell_means.to_numpy() - BIG, atol=1e-7)


def test_analyze_units_is_exact_at_large_means(data):
    ref = smf.ols(FORMULA, centred(data)).fit(cov_type="HC2")
    res = analyze_units(data, "y", LEVELS)
    se = res.effects.set_index("term")["std_error"]
    np.testing.assert_allclose(se["fa:fb"], 4 * ref.bse["C(fa, Sum)[S.a0]:C(fb, Sum)[S.b0]"], rtol=1e-7)
    cells = unit_cell_stats(data, "y", list(LEVELS), shifted=True)
    assert np.isclose(cells["shift"].iloc[0], data["y"].mean(), rtol=0, atol=1e-6)


def test_cuped_equals_statsmodels_ancova_at_large_means(data):
    ref = smf.ols(f"{FORMULA} + x", centred(data)).fit()
    cells = shifted_sums(data, float(data["y"].iloc[3]), float(data["x"].iloc[5]))
    res = analyze_cells(cells, LEVELS, se="pooled", covariate=True)
    np.testing.assert_allclose(res.cuped["theta"], ref.params["x"], rtol=1e-8)
    eff = res.effects.set_index("term")
    name = "C(fa, Sum)[S.a0]:C(fb, Sum)[S.b0]"
    np.testing.assert_allclose(eff.loc["fa:fb", "estimate"], 4 * ref.params[name], rtol=1e-7)
    np.testing.assert_allclose(eff.loc["fa:fb", "std_error"], 4 * ref.bse[name], rtol=1e-7)


def test_ratio_delta_variance_at_large_means(data):
    """One factor (fa), one row per arm with its own ratio shift: R = sum N / sum D per arm, delta-method
    variance var(N - R D) / (n mean_D^2) computed by numpy on centred per-unit rows."""
    k_den = 2.0
    frames, expect = [], {}
    for arm, part in data.groupby("fa"):
        k_num = BIG + (0.3 if arm == "a0" else -0.6)  # a ratio shift: sums of N - k_num D; rows differ
        num, den = part["num"] - k_num * part["den"], part["den"] - k_den
        frames.append(pd.DataFrame({"fa": [arm], "n": [len(part)], "num_sum": [num.sum()], "den_sum": [den.sum()],
                                    "num_sum_sq": [(num * num).sum()], "den_sum_sq": [(den * den).sum()],
                                    "num_den_sum": [(num * den).sum()], "num_shift": [k_num], "den_shift": [k_den]}))
        ratio = (part["num"] - BIG * part["den"]).sum() / part["den"].sum()  # R - 1e8, exactly
        lin = (part["num"] - BIG * part["den"]) - ratio * part["den"]
        expect[arm] = (ratio, lin.var(ddof=1) / (len(part) * part["den"].mean() ** 2))
    res = analyze_ratio_cells(pd.concat(frames), {"fa": LEVELS["fa"]})
    row = res.effects.iloc[0]
    se = np.sqrt(expect["a1"][1] + expect["a0"][1])
    np.testing.assert_allclose(row["std_error"], se, rtol=1e-7)
    # the ratios themselves are ~1e8: their last bit is ~1e-8, a millionth of the SE
    np.testing.assert_allclose(row["estimate"], expect["a1"][0] - expect["a0"][0], rtol=0, atol=1e-6 * se)


def test_prob_best_posterior_sd_at_large_means(data):
    cells = shifted_sums(data, BIG + 1.0).assign(cell_id=lambda d: d["fa"] + "|" + d["fb"])
    out = prob_best(cells[["cell_id", "n", "sum", "sum_sq", "shift"]], kind="mean", draws=2000)
    sd = data.groupby(list(LEVELS))["y"].apply(lambda v: (v - BIG).std(ddof=1) / np.sqrt(len(v)))
    np.testing.assert_allclose(out["posterior_sd"].to_numpy(), sd.to_numpy(), rtol=1e-8)
    means = data.groupby(list(LEVELS))["y"].apply(lambda v: (v - BIG).mean()).to_numpy()
    np.testing.assert_allclose(out["posterior_mean"].to_numpy() - BIG, means, atol=1e-7)


def test_rebase_is_exact_for_moments_and_cross_products():
    rng = np.random.default_rng(3)
    y, x = rng.normal(5, 2, 50), rng.normal(-3, 1, 50)
    parts = [(slice(0, 20), 1.5, -2.0), (slice(20, 50), 7.0, 0.5)]
    vals = {k: [] for k in ("n", "sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum", "shift", "cov_shift")}
    for sl, ky, kx in parts:
        yy, xx = y[sl] - ky, x[sl] - kx
        for k, v in zip(vals, (len(yy), yy.sum(), (yy * yy).sum(), xx.sum(), (xx * xx).sum(), (xx * yy).sum(), ky, kx)):
            vals[k].append(v)
    out = rebase({k: np.array(v, dtype=float) for k, v in vals.items()}, np.array(vals["n"], dtype=float))
    yy, xx = y - 1.5, x + 2.0
    np.testing.assert_allclose([out[k].sum() for k in ("sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum")],
                               [yy.sum(), (yy * yy).sum(), xx.sum(), (xx * xx).sum(), (xx * yy).sum()], rtol=1e-12)
    assert (out["shift"] == 1.5).all() and (out["cov_shift"] == -2.0).all()
