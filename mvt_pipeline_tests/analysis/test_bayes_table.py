"""P(cell is best) in analysis.cell_bayes does not depend on the order the warehouse returns rows in
(a re-run of a night must give the same numbers)."""

import numpy as np
import pandas as pd

from mvt_pipeline.analysis.bayes_table import all_bayes
from mvt_pipeline.analysis.cells import planned_cells
from mvt_pipeline.registry import load_registry

from ..conftest import SAMPLE_REGISTRY


def test_prob_best_is_independent_of_row_order():
    registry = load_registry(SAMPLE_REGISTRY)
    exp = next(e for e in registry.experiments if e.id == "pricing_abn")
    metric = exp.metrics.primary[0]
    cells = list(planned_cells(exp))
    rng = np.random.default_rng(1)
    n = rng.integers(300, 400, len(cells)).astype(float)
    conv = np.round(n * rng.uniform(0.04, 0.07, len(cells)))
    frame = pd.DataFrame({"experiment_id": exp.id, "metric": metric, "segment": "overall", "cell_id": cells,
                          "n": n, "sum": conv, "sum_sq": conv})
    forward = all_bayes(registry, frame).sort_values("cell_id").reset_index(drop=True)
    backward = all_bayes(registry, frame.iloc[::-1].reset_index(drop=True)).sort_values("cell_id").reset_index(drop=True)
    assert len(forward) == len(cells)
    pd.testing.assert_frame_equal(forward, backward, check_exact=True)
