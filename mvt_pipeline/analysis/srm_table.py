"""Sample-ratio-mismatch per experiment: units per cell against the planned allocation."""

from __future__ import annotations

import json

import pandas as pd

from ..registry import Registry
from ..stats import srm_test
from .cells import planned_cells

SRM_ALPHA = 0.001  # DESIGN.md 5a: flag at p < 0.001


def all_srm(registry: Registry, dq_assignment: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment. Units counted are exposed, non-bot units with a complete cell
    (before the flip exclusion, which could itself create imbalance)."""
    rows = []
    for experiment in registry.experiments:
        if experiment.status == "draft":
            continue
        planned = planned_cells(experiment)
        observed = dq_assignment[dq_assignment["experiment_id"] == experiment.id]
        counts = observed.set_index("cell_id")["n_srm_units"].to_dict()
        unexpected = {c: int(n) for c, n in counts.items() if c not in planned and n > 0}
        cells = sorted(planned)
        obs = [int(counts.get(c, 0)) for c in cells]
        total = sum(obs)
        row = {
            "experiment_id": experiment.id, "n_units": total, "n_cells": len(cells),
            "observed": json.dumps(dict(zip(cells, obs))),
            "expected_share": json.dumps({c: planned[c] for c in cells}),
            "unexpected_cells": json.dumps(unexpected),
        }
        if total == 0:
            row.update(chi2=None, df=None, p_value=None, passed=None, status="no exposed units yet")
        else:
            res = srm_test(obs, [planned[c] for c in cells])
            row.update(chi2=float(res.chi2), df=int(res.df), p_value=float(res.p_value),
                       passed=bool(res.p_value >= SRM_ALPHA and not unexpected),
                       status="ok" if not unexpected else "cells outside the design were exposed")
        rows.append(row)
    return pd.DataFrame(rows)
