"""Sample-ratio-mismatch per experiment: units per cell against the planned allocation."""

from __future__ import annotations

import json

import pandas as pd

from ..registry import Registry
from ..stats import srm_margins, srm_segments, srm_test
from .cells import planned_cells, split_cell_ids

SRM_ALPHA = 0.001  # docs/architecture.md §5a: flag at p < 0.001


def _margin_p_values(experiment, cells: list[str], observed: list[int], planned: dict) -> dict[str, float]:
    """SRM on each factor's margins (a broken flag for one factor can hide in the full table)."""
    if len(experiment.factors) < 2:
        return {}
    frame = split_cell_ids(pd.Series(cells), experiment)
    frame["n"] = observed
    plan = split_cell_ids(pd.Series(list(planned)), experiment).assign(weight=list(planned.values()))
    names = [f.name for f in experiment.factors]
    return {f: float(r.p_value) for f, r in srm_margins(frame, names, planned=plan).items()}


def _segment_flags(experiment, planned: dict, segment_counts: pd.DataFrame | None) -> dict[str, list]:
    """Per registry segment variable, the segment values whose cell table fails SRM at
    0.001 / k (Bonferroni over the k values). Counts are the analysable units of the first primary
    metric per (cell, segment value), from `agg_cell_stats`."""
    if segment_counts is None or segment_counts.empty:
        return {}
    rows = segment_counts[(segment_counts["experiment_id"] == experiment.id)
                          & (segment_counts["metric"] == experiment.metrics.primary[0])]
    flags = {}
    for seg in experiment.segments:
        # cells outside the design are reported by the full-table check (`unexpected_cells`)
        part = rows[(rows["segment"] == seg) & rows["cell_id"].isin(list(planned))]
        if part.empty:
            continue
        frame = pd.DataFrame({"cell_id": part["cell_id"], "value": part["segment_value"].astype(str),
                              "n": part["n_units"].astype(float)})
        # over every planned cell: a cell without a row in a segment value counts 0 units there
        result = srm_segments(frame, "value", cell="cell_id", planned=planned)
        flags[seg] = sorted(result.loc[result["flagged"], "segment"].tolist())
    return flags


def all_srm(registry: Registry, dq_assignment: pd.DataFrame,
            segment_counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per experiment. Units counted are exposed, non-bot units with a complete cell
    (before the flip exclusion, which could itself create imbalance); per-segment tests use the
    `agg_cell_stats` segment rows when given."""
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
            row.update(chi2=None, df=None, p_value=None, margin_p_values=None, segments_flagged=None,
                       passed=None, status="no exposed units yet")
        else:
            res = srm_test(obs, [planned[c] for c in cells])
            margins = _margin_p_values(experiment, cells, obs, planned)
            margins_ok = all(p >= SRM_ALPHA for p in margins.values())
            segment_flags = _segment_flags(experiment, planned, segment_counts)
            segments_ok = not any(segment_flags.values())
            row.update(chi2=float(res.chi2), df=int(res.df), p_value=float(res.p_value),
                       margin_p_values=json.dumps(margins), segments_flagged=json.dumps(segment_flags),
                       passed=bool(res.p_value >= SRM_ALPHA and margins_ok and segments_ok and not unexpected),
                       status="ok" if not unexpected else "cells outside the design were exposed")
        rows.append(row)
    return pd.DataFrame(rows)
