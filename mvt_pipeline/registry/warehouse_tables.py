"""The registry as small relational tables (`raw.registry_*`) so dbt models stay registry-driven:
a new experiment or metric in the YAML flows through the SQL with no code change."""

from __future__ import annotations

import pandas as pd

from .models import Registry, json_path


def registry_frames(registry: Registry) -> dict[str, pd.DataFrame]:
    experiments, factors, levels, exp_metrics, segments = [], [], [], [], []
    for e in registry.experiments:
        experiments.append({
            "experiment_id": e.id, "owner": e.owner, "status": e.status, "unit": e.unit,
            "start_date": e.start_date, "end_date": e.end_date, "design_type": e.design.type,
            "attribution_window_days": e.attribution_window_days, "pre_period_days": e.pre_period_days,
            "flip_policy": e.flip_policy, "n_factors": len(e.factors), "alpha": e.alpha,
            "min_units_per_cell": e.min_units_per_cell, "layer": e.layer,
        })
        for pos, f in enumerate(e.factors):
            factors.append({
                "experiment_id": e.id, "factor": f.name, "position": pos, "control_level": f.control,
                "flag_key": f.flag_key, "n_levels": len(f.levels),
            })
            for lpos, (level, weight) in enumerate(f.level_weights.items()):
                levels.append({
                    "experiment_id": e.id, "factor": f.name, "level": level, "position": lpos,
                    "planned_weight": weight,
                })
        for metric, role in e.metrics.by_role():
            exp_metrics.append({"experiment_id": e.id, "metric": metric, "role": role})
        for seg in e.segments:
            # the JSON paths are built here from the validated name, so dbt never builds one
            segments.append({"experiment_id": e.id, "segment": seg, "top_k": e.segment_top_k,
                             "flat_path": json_path(seg, flat=True), "nested_path": json_path(seg)})
    metrics = [
        {
            "metric": m.name, "kind": m.kind, "source_metric": m.source, "aggregation": m.aggregation,
            "numerator_source": m.numerator.source if m.numerator else None,
            "numerator_aggregation": m.numerator.aggregation if m.numerator else None,
            "denominator_source": m.denominator.source if m.denominator else None,
            "denominator_aggregation": m.denominator.aggregation if m.denominator else None,
            "q": m.q, "winsorize": m.effective_winsorize, "direction": m.direction,
            "non_inferiority_margin": m.non_inferiority_margin,
            # SLO of the metric's events (NULL: none): dbt counts good/bad events per cell and hour
            "slo_source": m.event_source if m.slo else None,
            "slo_objective": m.slo.objective if m.slo else None,
            "slo_good_below": m.slo.good_below if m.slo else None,
            "slo_period_days": m.slo.period_days if m.slo else None,
        }
        for m in registry.metrics
    ]
    schemas = {
        "registry_experiments": experiments, "registry_factors": factors, "registry_levels": levels,
        "registry_metrics": metrics, "registry_experiment_metrics": exp_metrics,
        "registry_experiment_segments": segments,
    }
    frames = {}
    for name, rows in schemas.items():
        frame = pd.DataFrame(rows)
        if frame.empty and name == "registry_experiment_segments":
            frame = pd.DataFrame({"experiment_id": pd.Series(dtype="str"), "segment": pd.Series(dtype="str"),
                                  "top_k": pd.Series(dtype="int64"), "flat_path": pd.Series(dtype="str"),
                                  "nested_path": pd.Series(dtype="str")})
        frames[name] = frame
    return frames


def write_registry_tables(conn, registry: Registry) -> dict[str, int]:
    """Replace the `raw.registry_*` tables; returns row counts for asset metadata."""
    conn.execute("create schema if not exists raw")
    counts = {}
    for name, frame in registry_frames(registry).items():
        conn.register("_frame", frame)
        conn.execute(f'create or replace table raw."{name}" as select * from _frame')
        conn.unregister("_frame")
        counts[name] = len(frame)
    return counts
