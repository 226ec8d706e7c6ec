"""Quantile CIs that know their limits: too few events for the order-statistic ranks of
`agg_cell_quantiles` (clamped to [1, N]) are flagged, the flag reaches every effect and cell
contrast that uses the cell, and unflagged intervals keep their coverage.

References: the ranks re-typed from the SQL (`floor(Nq - z sqrt(Nq(1-q)))`,
`ceil(Nq + z sqrt(Nq(1-q)))`) scanned over N, the effects' cells from their definition
(equal-weight contrasts over the grid), and a seeded simulation of clustered lognormal latencies
whose true P99 is known in closed form (bench/calibration.py, `quantile_limits`).
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from mvt_pipeline.stats.quantile import (
    RANK_CLAMPED, analyze_quantile_cells, min_events_per_cell, quantile_cell_variance, rank_clamped,
)
from mvt_pipeline_tests.stats.test_quantile import Z, quantile_inputs



def sql_ranks_fit(n: int, q: float, z: float) -> bool:
    half = z * math.sqrt(n * q * (1 - q))
    return math.floor(n * q - half) >= 1 and math.ceil(n * q + half) <= n


@pytest.mark.parametrize("q", [0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999])
@pytest.mark.parametrize("z", [Z, 2.5758293035489004])
def test_minimum_events_is_the_first_n_from_which_the_sql_ranks_fit(q, z):
    fits = np.array([sql_ranks_fit(n, q, z) for n in range(1, 40001)])
    first = int(np.flatnonzero(~fits)[-1]) + 2  # every N from here on fits
    assert min_events_per_cell(q, z) == first
    if q >= 0.6:  # the upper rank binds: N >= z^2 q / (1 - q)
        assert first == math.ceil(z * z * q / (1 - q))


def test_p99_needs_381_events():
    assert min_events_per_cell(0.99, Z) == 381 and min_events_per_cell(0.95, Z) == 73


def grid_cells(rng, levels, users, q, lift=1.0):
    rows = []
    for cell in itertools.product(*levels.values()):
        n_users = users.get(cell, 300)
        m = 1 + rng.poisson(4, n_users)
        units = np.repeat(np.arange(n_users), m)
        values = np.exp(math.log(180) + rng.normal(0, 0.3, n_users)[units] + rng.normal(0, 0.5, len(units))) * lift
        rows.append({**dict(zip(levels, cell)), **quantile_inputs(values, units, q)})
    return pd.DataFrame(rows)


def test_rows_using_a_clamped_cell_are_flagged():
    """2x3, one cell (a1, b2) with ~200 events at P99: exactly the rows whose contrast gives that
    cell a nonzero weight (by the effects' definition) carry the flag."""
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"]}
    cells = grid_cells(np.random.default_rng(1), levels, {("a1", "b2"): 40}, 0.99)
    res = analyze_quantile_cells(cells, levels)
    cm = res.cell_means.set_index(["A", "B"])
    assert cm["rank_clamped"].to_dict() == {c: c == ("a1", "b2") for c in itertools.product(*levels.values())}
    assert (cm["n_events"] == cells.set_index(["A", "B"])["n_events"]).all()
    uses_a1b2 = {("A", "a1"): True, ("B", "b1"): False, ("B", "b2"): True, ("A:B", "a1:b1"): False, ("A:B", "a1:b2"): True}
    got = {(r.term, r.level): r.status for r in res.effects.itertuples()}
    assert got == {k: RANK_CLAMPED if v else "ok" for k, v in uses_a1b2.items()}


def test_p99_simulation_flags_small_cells_and_unflagged_intervals_cover(calib):
    """3,000 seeded A/B replicates per cell size (clustered users, 1-9 events each): every cell below
    381 events is flagged, and a contrast of two unflagged cells covers the true P99 difference at
    least 93% of the time; the smallest flagged cells do need the flag (coverage far below)."""
    rng = np.random.default_rng(20261202)
    out = []
    for users in (39, 62, 80, 160):
        ctrl, treat, truth = calib.quantile_ab_inputs(rng, 3000, users, q=0.99)
        (v0, _), (v1, _) = quantile_cell_variance(ctrl), quantile_cell_variance(treat)
        est = treat["quantile_value"] - ctrl["quantile_value"]
        covered = np.abs(est - truth) <= Z * np.sqrt(v0 + v1)
        flagged = rank_clamped(ctrl["n_events"], 0.99, Z) | rank_clamped(treat["n_events"], 0.99, Z)
        assert (flagged == ((ctrl["n_events"] < 381) | (treat["n_events"] < 381))).all()
        out.append((users, ctrl["n_events"].mean(), flagged.mean(), covered.mean()))
        if users <= 62:
            assert flagged.all()
            assert users > 39 or covered.mean() < 0.9, out
        else:
            assert not flagged.any()
            assert covered.mean() >= 0.93, out


def test_p99_flags_reach_the_effects_through_the_public_api(calib):
    """The engine path (analyze_quantile_cells): every replicate's row is flagged below the minimum
    and unflagged above it; unflagged coverage >= 93% (300 replicates per size: a gross check)."""
    out = calib.quantile_limits(reps=300, users=(39, 80), q=0.99, seed=5)
    small, large = out.set_index("users").loc[39], out.set_index("users").loc[80]
    assert small["flagged_share"] == 1.0 and large["flagged_share"] == 0.0
    assert large["coverage_unflagged"] >= 0.93, out
