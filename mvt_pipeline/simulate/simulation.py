"""simulate(): generate, apply faults, write raw dumps and truth.json."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..registry import Registry
from .assignment import cell_id, design_cells, marginal_weights, planned_weights
from .effects import contrasts
from .expected import TruthContext
from .faults import apply_faults, sequence_and_lag
from .generator import Generated, generate
from .population import segment_table
from .truth import SimulationConfig, default_truth
from .writer import build_lines, write_lines

NOTES = [
    "cell_means are the behavioural truth for human (non-bot) units before telemetry faults: binary = "
    "P(conversion in the window), continuous = expected per-unit sum, count = expected per-unit count, "
    "ratio = E[sum numerator]/E[sum denominator] per unit, quantile = q-quantile of the pooled per-request "
    "value distribution (mixture over segments and other experiments' cells).",
    "Segment effects are averaged over the population segment mix (exact joint distribution "
    "mvt_pipeline.simulate.population.segment_table()), i.e. delta * P(segment = value).",
    "Random event loss at loss_rate lowers observed binary rates, continuous sums and counts by the "
    "factor (1 - loss_rate) (a unit whose exposure is lost drops out at random); ratio and quantile "
    "values are unbiased by random loss.",
    "Bots (user_agent with Googlebot/HeadlessChrome/bingbot) are exposed but never convert: exclude them. "
    "Flipped units (second device, different cell, hash_version v2) behave per their first cell; excluding "
    "them does not bias the truth. Continuous truth is before winsorization.",
    "Late events (received_at 1-3 days after ts) may land in dt folders after the simulated period.",
]


def _r(v):
    return None if v is None else round(float(v), 12)


def build_truth(gen: Generated, registry: Registry, config: SimulationConfig, truth_cfg) -> dict:
    exps = {e.id: e for e in gen.experiments}
    ctx = TruthContext(exps, gen.sources, gen.actual_probs, gen.overlap, config.requests_per_unit)
    out = {}
    for exp in gen.experiments:
        cells = design_cells(exp)
        idx = gen.cell_idx[exp.id]
        human = ~gen.is_bot
        counts = np.bincount(idx[(idx >= 0) & human], minlength=len(cells))
        bot_counts = np.bincount(idx[(idx >= 0) & gen.is_bot], minlength=len(cells))
        metrics = {}
        for mname, role in exp.metrics.by_role():
            metric = registry.metric(mname)
            means = {cell: ctx.cell_mean(metric, exp.id, ci) for ci, cell in enumerate(cells)}
            entry = {"kind": metric.kind, "role": role,
                     "cell_means": {cell_id(exp, c): _r(v) for c, v in means.items()}}
            if all(v is not None for v in means.values()):
                entry["effects"] = [{**e, "estimate": _r(e["estimate"])} for e in contrasts(exp, means)]
            else:
                entry["effects"] = None
                entry["note"] = "no exact truth for this metric/source combination in the simulator"
            if metric.kind == "quantile":
                entry["q"] = metric.q
            metrics[mname] = entry
        et = truth_cfg.get(exp.id)
        seg = []
        if et:
            for mname, mt in et.metrics.items():
                seg += [{"metric": mname, **s.model_dump()} for s in mt.segment_effects]
        out[exp.id] = {
            "exposure_mode": config.mode(exp.id),
            "design": exp.design.type,
            "exposure_rate": truth_cfg[exp.id].exposure_rate if exp.id in truth_cfg else 0.6,
            "planned_weights": planned_weights(exp),
            "actual_weights": marginal_weights(exp, config.faults.srm.get(exp.id)),
            "srm": exp.id in config.faults.srm,
            "units_per_cell": {cell_id(exp, c): int(n) for c, n in zip(cells, counts)},
            "bot_units_per_cell": {cell_id(exp, c): int(n) for c, n in zip(cells, bot_counts)},
            "flipped_units": len(gen.flipped.get(exp.id, [])),
            "metrics": metrics,
            "segment_effects": seg,
            "drives_sources": sorted(s for s, m in gen.sources.items() if m.owner == exp.id),
        }
    return out


def simulate(registry: Registry, config: SimulationConfig, out_dir, log=print) -> dict:
    """Write raw/<source>/dt=YYYY-MM-DD/events-<n>.jsonl[.gz] and truth.json under out_dir; return the truth."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    truth_cfg = config.truth if config.truth is not None else default_truth(registry)
    gen = generate(registry, config, truth_cfg, log=log)
    rng = np.random.default_rng([config.seed, 1])
    ev = sequence_and_lag(gen.events, rng)
    ev, fault_counts = apply_faults(ev, config.faults, rng)
    log(f"[simulate] faults applied: {fault_counts['lost']} lost, {fault_counts['duplicates']} duplicates, "
        f"{fault_counts['late']} late")
    lines = build_lines(gen, ev, config)
    raw = out_dir / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    written = write_lines(lines, out_dir, config, rng, log=log)
    experiments = build_truth(gen, registry, config, truth_cfg)
    flipped = set()
    for f in gen.flipped.values():
        flipped.update(f.tolist())
    truth = {
        "seed": config.seed,
        "users": config.users,
        "days": config.days,
        "start_date": config.start_date.isoformat(),
        "end_date_exclusive": (config.start_date + dt.timedelta(days=config.days)).isoformat(),
        "sources": config.sources,
        "compress": config.compress,
        "faults": config.faults.model_dump(),
        "counts": {
            "events_generated": fault_counts["events_generated"],
            "events_written": fault_counts["events_generated"] - fault_counts["lost"],
            "lines_written": written["lines_written"],
            "duplicates": fault_counts["duplicates"],
            "lost": fault_counts["lost"],
            "lost_trailing": fault_counts["lost_trailing"],
            "late": fault_counts["late"],
            "malformed": written["malformed"],
            "pii_lines": fault_counts["pii_lines"],
            "pii_by_kind": fault_counts["pii_by_kind"],
            "bot_units": int(gen.is_bot.sum()),
            "flipped_units": len(flipped),
            "units_per_cell": {e: v["units_per_cell"] for e, v in experiments.items()},
            "files": len(written["files"]),
        },
        "source_kinds": {s: m.kind for s, m in gen.sources.items()},
        "segment_mix": [{**seg, "p": p} for seg, p in segment_table()],
        "experiments": experiments,
        "notes": NOTES,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    log(f"[simulate] done: {truth['counts']['lines_written']} lines in {len(written['files'])} files, "
        f"{time.perf_counter() - started:.1f}s -> {out_dir}")
    return truth
