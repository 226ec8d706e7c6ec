"""Seeded synthetic telemetry with a known ground truth (docs/architecture.md §2 and §8).

    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.simulate import SimulationConfig, Faults, simulate
    truth = simulate(load_registry("data/registry"), SimulationConfig(users=20_000, days=7, seed=1), "data")

CLI: python -m mvt_pipeline.simulate --users N --days D --seed S --out DIR
"""

from .assignment import HASH_VERSION, assign_cells, cell_id, design_cells, fraction_runs
from .effects import contrasts
from .simulation import simulate
from .truth import ExperimentTruth, Faults, MetricTruth, SegmentEffect, SimulationConfig, default_truth

__all__ = [
    "HASH_VERSION",
    "ExperimentTruth",
    "Faults",
    "MetricTruth",
    "SegmentEffect",
    "SimulationConfig",
    "assign_cells",
    "cell_id",
    "contrasts",
    "default_truth",
    "design_cells",
    "fraction_runs",
    "simulate",
]
