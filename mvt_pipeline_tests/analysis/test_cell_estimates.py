"""Per-cell estimates of the guardrail / decision contrasts (analysis/cell_contrasts.py) from
`agg_cell_stats`-shaped rows, against numpy on the per-unit values."""

import numpy as np
import pandas as pd

from mvt_pipeline.analysis.cell_contrasts import cell_estimates


def _ratio_rows(units: pd.DataFrame, r0: float, k_d: float) -> pd.DataFrame:
    rows = []
    for cell, part in units.groupby("cell_id"):
        m, d = part["num"] - r0 * part["den"], part["den"] - k_d
        rows.append({"cell_id": cell, "n_units": len(part), "n": int((part["den"] > 0).sum()),
                     "num_sum": m.sum(), "den_sum": d.sum(), "num_sum_sq": (m * m).sum(),
                     "den_sum_sq": (d * d).sum(), "num_den_sum": (m * d).sum(), "num_shift": r0, "den_shift": k_d})
    return pd.DataFrame(rows)


def test_ratio_cells_count_units_without_a_denominator_and_read_shifted_sums():
    rng = np.random.default_rng(11)
    den = rng.integers(0, 5, 400).astype(float)  # a quarter of the units have no request
    units = pd.DataFrame({"cell_id": np.repeat(["a", "b"], 200), "den": den,
                          "num": rng.binomial(den.astype(int), 0.03).astype(float)})
    out = cell_estimates("ratio", _ratio_rows(units, r0=0.031, k_d=2.0)).set_index("cell_id")
    for cell, part in units.groupby("cell_id"):
        r = part["num"].sum() / part["den"].sum()
        lin = part["num"] - r * part["den"]  # every unit, D = 0 ones included (the effects' method)
        var = lin.var(ddof=1) / (len(part) * part["den"].mean() ** 2)
        assert np.isclose(out.loc[cell, "value"], r, rtol=1e-12)
        assert np.isclose(out.loc[cell, "variance"], var, rtol=1e-10)
        assert out.loc[cell, "n"] == len(part)


def test_mean_cells_add_the_shift_back():
    rng = np.random.default_rng(12)
    y = 1e8 + rng.normal(0, 1, 300)
    k = 1e8 + 0.25
    rows = pd.DataFrame([{"cell_id": c, "n": 150, "sum": (v - k).sum(), "sum_sq": ((v - k) ** 2).sum(), "shift": k}
                         for c, v in (("a", y[:150]), ("b", y[150:]))])
    out = cell_estimates("continuous", rows).set_index("cell_id")
    for c, v in (("a", y[:150]), ("b", y[150:])):
        centred = v - 1e8
        assert abs(out.loc[c, "value"] - 1e8 - centred.mean()) < 1e-7
        assert np.isclose(out.loc[c, "variance"], centred.var(ddof=1) / 150, rtol=1e-8)
