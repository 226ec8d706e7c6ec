"""The analysis tables pass the engine what it needs to refuse impossible inputs and to test SRM
over the planned cells (references: scipy)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mvt_pipeline.analysis.cells import planned_cells
from mvt_pipeline.analysis.effects_table import experiment_effects
from mvt_pipeline.analysis.srm_table import all_srm
from mvt_pipeline.registry import load_registry

from ..conftest import SAMPLE_REGISTRY
from .test_effects_table import _agg, _units


@pytest.fixture(scope="module")
def registry():
    return load_registry(SAMPLE_REGISTRY)


def test_binary_sum_above_n_is_not_analysed(registry):
    exp = registry.experiment("pricing_abn")
    agg = _agg(_units(exp, np.random.default_rng(5)), exp, registry)
    metric = exp.metrics.primary[0]
    assert registry.metric(metric).kind == "binary"
    bad = (agg.metric == metric) & (agg.cell_id == "pricing_banner=discount")
    agg.loc[bad, "sum"] = agg.loc[bad, "n"] + 5  # more conversions than units
    effects = experiment_effects(exp, registry, agg)
    status = effects[effects.metric == metric].status.iloc[0]
    assert status.startswith("not analysed: invalid sufficient statistics: sum is outside [0, n]")
    assert "pricing_banner=discount" in status
    assert (effects[effects.metric != metric].status == "ok").any()


def test_segment_missing_a_planned_cell_is_flagged(registry):
    exp = registry.experiment("pricing_abn")
    cells = sorted(planned_cells(exp))
    dq = pd.DataFrame({"experiment_id": exp.id, "cell_id": cells, "n_srm_units": [3000, 3000, 3000]})
    seg = []
    # FR has no row at all for the third cell: it lost that cell's traffic
    for country, counts in {"US": [1000, 1000, 1000], "DE": [1000, 1000, 1000], "FR": [1000, 1000]}.items():
        seg += [{"experiment_id": exp.id, "metric": exp.metrics.primary[0], "cell_id": c, "segment": "country",
                 "segment_value": country, "n_units": n} for c, n in zip(cells, counts)]
    row = all_srm(registry, dq, pd.DataFrame(seg)).set_index("experiment_id").loc[exp.id]
    assert json.loads(row.segments_flagged) == {"country": ["FR"]}
    assert sps.chisquare([1000, 1000, 0])[1] < 0.001 / 3 and not row.passed
