"""Vectorized generation of the behavioural event stream (before telemetry faults).

Time model of a human unit: one visit at T0 (uniform over the period minus its last 8 hours). It is
exposed to each running experiment (whose active dates cover T0) with the experiment's exposure rate,
within the first minute of the visit; outcome events follow 2 minutes to 6 hours after T0, so they
fall inside every attribution window (>= 1 day) and inside the period. Pre-exposure events (up to
`pre_period_days` before T0, inside the period, rate ~ propensity) feed CUPED; a few events after the
longest window of the experiments measuring the source (when still inside the period) must not count.
Bots: exposed to every running experiment many times, many requests, no conversions or amounts.
Flipped units: a second device shows a different cell (hash_version v2) a few hours after T0; their
outcomes follow the first cell.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import numpy as np

from ..registry import Experiment, Registry
from .assignment import assign_cell_index, cell_id, cell_probabilities, design_cells
from .behaviour import REQUEST_KINDS, SourceModel, build_sources, unit_effects
from .population import draw_units
from .truth import SimulationConfig

SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
EXPOSURE_SPREAD = MINUTE
OUTCOME_MIN, OUTCOME_MAX = 2 * MINUTE, 6 * HOUR
TAIL_MARGIN = 8 * HOUR  # no visits in the last hours: no right-censored outcomes
REPEAT_EXPOSURE_P = 0.3
POST_WINDOW_P = 0.15
COLUMNS = ["unit", "dev", "sess", "ts", "etype", "exp", "cell", "factor", "hv", "src", "value"]
SESSIONS = ["pre", "main", "post", "alt"]


def epoch_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


@dataclass
class Generated:
    events: dict[str, np.ndarray]
    units: dict[str, np.ndarray]
    unit_ids: list[str]
    is_bot: np.ndarray
    experiments: list[Experiment]
    cell_idx: dict[str, np.ndarray]
    flipped: dict[str, np.ndarray]
    sources: dict[str, SourceModel]
    source_names: list[str]
    overlap: dict[tuple[str, str], float]
    actual_probs: dict[str, list[float]]
    start_ms: int
    end_ms: int
    extra: dict = field(default_factory=dict)


class _Buffer:
    def __init__(self):
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, unit, ts, *, dev=0, sess=1, etype=1, exp=-1, cell=-1, factor=-1, hv=0, src=-1, value=np.nan):
        unit = np.asarray(unit, dtype=np.int64)
        n = len(unit)
        if n == 0:
            return
        row = {"unit": unit, "ts": np.asarray(ts, dtype=np.int64)}
        for name, v, dtype in (("dev", dev, np.int8), ("sess", sess, np.int8), ("etype", etype, np.int8),
                               ("exp", exp, np.int16), ("cell", cell, np.int32), ("factor", factor, np.int16),
                               ("hv", hv, np.int8), ("src", src, np.int16), ("value", value, np.float64)):
            row[name] = np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()
        self.parts.append(row)

    def concat(self) -> dict[str, np.ndarray]:
        return {c: np.concatenate([p[c] for p in self.parts]) for c in COLUMNS}


def _active_window(exp: Experiment, start_ms: int, t0_max: int) -> tuple[int, int]:
    lo = max(start_ms, epoch_ms(exp.start_date))
    hi = t0_max if exp.end_date is None else min(t0_max, epoch_ms(exp.end_date) + DAY)
    return lo, hi


def generate(registry: Registry, config: SimulationConfig, truth, log=print) -> Generated:
    rng = np.random.default_rng(config.seed)
    faults = config.faults
    n = config.users
    start_ms = epoch_ms(config.start_date)
    end_ms = start_ms + config.days * DAY
    t0_max = end_ms - TAIL_MARGIN
    units = draw_units(rng, n)
    is_bot = rng.random(n) < faults.bot_share
    units["platform"][is_bot] = 0
    units["device"][is_bot] = 0
    units["bot_ua"] = np.where(is_bot, rng.integers(0, 3, n), -1)
    human = ~is_bot
    prop = units["propensity"]
    t0 = start_ms + (rng.random(n) * (t0_max - start_ms)).astype(np.int64)
    unit_ids = [f"u{config.seed}_{i:07d}" for i in range(n)]
    uid_arr = np.asarray(unit_ids, dtype=object)

    windows = {}
    experiments = []
    for exp in registry.experiments:
        if exp.status != "running":
            continue
        lo, hi = _active_window(exp, start_ms, t0_max)
        if hi > lo:
            experiments.append(exp)
            windows[exp.id] = (lo, hi)
    exps = {e.id: e for e in experiments}
    rates = {e.id: truth[e.id].exposure_rate if e.id in truth else 0.6 for e in experiments}
    overlap = {}
    for e in experiments:
        for o in experiments:
            if e.id != o.id:
                inter = max(0, min(windows[e.id][1], windows[o.id][1]) - max(windows[e.id][0], windows[o.id][0]))
                overlap[(e.id, o.id)] = rates[o.id] * inter / (windows[e.id][1] - windows[e.id][0])

    buf = _Buffer()
    cell_idx: dict[str, np.ndarray] = {}
    flipped: dict[str, np.ndarray] = {}
    actual_probs = {}
    log(f"[simulate] {n} units ({int(is_bot.sum())} bots), {len(experiments)} running experiments")
    for ei, exp in enumerate(experiments):
        lo, hi = windows[exp.id]
        in_range = (t0 >= lo) & (t0 < hi)
        exposed = in_range & (is_bot | (rng.random(n) < rates[exp.id]))
        override = faults.srm.get(exp.id)
        idx = np.full(n, -1, dtype=np.int64)
        idx[exposed] = assign_cell_index(uid_arr[exposed], exp, override)
        cell_idx[exp.id] = idx
        actual_probs[exp.id] = cell_probabilities(exp, override)
        mode = config.mode(exp.id)
        k = len(exp.factors)
        cells = design_cells(exp)

        def emit(u, ts, cells_of_u, dev=0, sess=1, hv=0):
            if mode == "cell":
                buf.add(u, ts, dev=dev, sess=sess, etype=0, exp=ei, cell=cells_of_u, factor=-1, hv=hv)
            else:
                for fi in range(k):
                    jitter = rng.integers(0, 800, len(u))
                    buf.add(u, ts + jitter, dev=dev, sess=sess, etype=0, exp=ei, cell=cells_of_u, factor=fi, hv=hv)

        hum = np.nonzero(exposed & human)[0]
        t_first = t0 + rng.integers(0, EXPOSURE_SPREAD, n)
        emit(hum, t_first[hum], idx[hum])
        rep = hum[rng.random(len(hum)) < REPEAT_EXPOSURE_P]
        emit(rep, t0[rep] + rng.integers(10 * MINUTE, 5 * HOUR, len(rep)), idx[rep])
        bots = np.nonzero(exposed & is_bot)[0]
        emit(bots, t_first[bots], idx[bots])
        reps = np.repeat(bots, rng.integers(2, 12, len(bots)))
        emit(reps, t0[reps] + rng.integers(0, OUTCOME_MAX, len(reps)), idx[reps])
        flip = hum[rng.random(len(hum)) < faults.flip_rate]
        flipped[exp.id] = flip
        if len(flip):
            new = _flip_cells(exp, cells, idx[flip], rng)
            emit(flip, t0[flip] + rng.integers(HOUR, 6 * HOUR, len(flip)), new, dev=1, sess=3, hv=1)

    sources = build_sources(registry, experiments, truth, config)
    source_names = list(sources)
    src_code = {s: i for i, s in enumerate(source_names)}
    log(f"[simulate] outcomes for {len(sources)} sources: " + ", ".join(f"{s}({m.kind})" for s, m in sources.items()))
    order = sorted(source_names, key=lambda s: ["conversion", "amount", "counter", "request_flag", "request_value"].index(sources[s].kind))
    conv: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    effects = {s: unit_effects(sources[s], exps, cell_idx, units) for s in order}
    for s in order:
        m, code, eff = sources[s], src_code[s], effects[s]
        if m.kind == "conversion":
            p = prop * (m.baseline + eff)
            _check_range(s, p[human], 0, 1)
            hit = human & (rng.random(n) < p)
            ts = t0 + rng.integers(OUTCOME_MIN, OUTCOME_MAX, n)
            conv[s] = (hit, ts, p)
            buf.add(np.nonzero(hit)[0], ts[hit], src=code, value=1.0)
        elif m.kind == "amount":
            if m.trigger:
                hit, ts, p = conv[m.trigger]
            else:
                p = 0.3 * prop
                hit = human & (rng.random(n) < p)
                ts = t0 + rng.integers(OUTCOME_MIN, OUTCOME_MAX, n)
            mean_sum = prop * (m.baseline + eff)
            _check_range(s, mean_sum[human], 0, np.inf)
            amount = np.round(mean_sum / p * rng.gamma(3.0, 1 / 3.0, n), 2)
            u = np.nonzero(hit)[0]
            buf.add(u, ts[u] + rng.integers(1, 1000, len(u)), src=code, value=amount[u])
        elif m.kind == "counter":
            lam = prop * (m.baseline + eff)
            _check_range(s, lam[human], 0, np.inf)
            k = np.where(human, rng.poisson(np.maximum(lam, 0)), 0)
            u = np.repeat(np.arange(n), k)
            buf.add(u, t0[u] + rng.integers(OUTCOME_MIN, OUTCOME_MAX, len(u)), src=code, value=1.0)
    n_req = np.where(human, 1 + rng.poisson(config.requests_per_unit, n), rng.integers(20, 60, n))
    req_u = np.repeat(np.arange(n), n_req)
    req_ts = t0[req_u] + rng.integers(OUTCOME_MIN, OUTCOME_MAX, len(req_u))
    for s in order:
        m = sources[s]
        if m.kind not in REQUEST_KINDS:
            continue
        buf.add(req_u, req_ts, src=src_code[s], value=_request_values(m, effects[s], req_u, human, rng))

    _pre_and_post(buf, rng, sources, src_code, order, experiments, cell_idx, units, human, t0, start_ms, end_ms)
    events = buf.concat()
    log(f"[simulate] {len(events['unit'])} behavioural events generated")
    return Generated(events, units, unit_ids, is_bot, experiments, cell_idx, flipped, sources, source_names,
                     overlap, actual_probs, start_ms, end_ms)


def _check_range(source: str, values: np.ndarray, lo: float, hi: float) -> None:
    if len(values) and (values.min() < lo or values.max() > hi):
        raise ValueError(
            f"source {source!r}: per-unit parameter leaves [{lo}, {hi}] (range {values.min():.4g}..{values.max():.4g}); "
            "lower the baseline/effects so the truth stays exact"
        )


def _request_values(m: SourceModel, eff: np.ndarray, req_u: np.ndarray, human: np.ndarray, rng) -> np.ndarray:
    e = eff[req_u]
    if m.kind == "request_flag":
        p = m.baseline + e
        _check_range(m.name, p[human[req_u]], 0, 1)
        return (rng.random(len(req_u)) < p).astype(np.float64)
    mult = 1.0 + e
    _check_range(m.name, mult, 1e-9, np.inf)
    return np.round(np.exp(m.baseline + m.sigma * rng.standard_normal(len(req_u))) * mult, 1)


def _baseline_values(m: SourceModel, sources, k: int, rng) -> np.ndarray:
    if m.kind in ("conversion", "counter"):
        return np.ones(k)
    if m.kind == "amount":
        p = sources[m.trigger].baseline if m.trigger else 0.3
        return np.round(m.baseline / p * rng.gamma(3.0, 1 / 3.0, k), 2)
    if m.kind == "request_flag":
        return (rng.random(k) < m.baseline).astype(np.float64)
    return np.round(np.exp(m.baseline + m.sigma * rng.standard_normal(k)), 1)


def _pre_and_post(buf, rng, sources, src_code, order, experiments, cell_idx, units, human, t0, start_ms, end_ms):
    n = len(t0)
    prop = units["propensity"]
    pre_days = max([e.pre_period_days for e in experiments] + [14])
    span = np.minimum(pre_days * DAY, t0 - start_ms)
    ok = human & (span > 5 * MINUTE)
    for s in order:
        m = sources[s]
        if m.kind in ("conversion", "counter"):
            rate = m.baseline
        elif m.kind == "amount":
            rate = sources[m.trigger].baseline if m.trigger else 0.3
        else:
            rate = 2.0  # requests per week
        k = np.where(ok, rng.poisson(prop * rate * span / (7 * DAY)), 0)
        u = np.repeat(np.arange(n), k)
        ts = t0[u] - MINUTE - (rng.random(len(u)) * (span[u] - 2 * MINUTE)).astype(np.int64)
        buf.add(u, ts, sess=0, src=src_code[s], value=_baseline_values(m, sources, len(u), rng))
    for s in order:
        m = sources[s]
        win = np.zeros(n, dtype=np.int64)
        for e in experiments:
            if e.id in m.measured_by:
                win = np.maximum(win, np.where(cell_idx[e.id] >= 0, e.attribution_window_days * DAY, 0))
        ts = t0 + win + 2 * MINUTE + rng.integers(0, 12 * HOUR, n)
        pick = human & (win > 0) & (ts < end_ms) & (rng.random(n) < POST_WINDOW_P)
        u = np.nonzero(pick)[0]
        buf.add(u, ts[u], sess=2, src=src_code[s], value=_baseline_values(m, sources, len(u), rng))


def _flip_cells(exp: Experiment, cells, idx: np.ndarray, rng) -> np.ndarray:
    """A different cell for every flipped unit (at least one factor differs)."""
    if exp.design.type == "fractional":
        return (idx + rng.integers(1, len(cells), len(idx))) % len(cells)
    sizes = [len(f.levels) for f in exp.factors]
    digits = []
    rest = idx.copy()
    for size in reversed(sizes):
        digits.append(rest % size)
        rest //= size
    digits = digits[::-1]
    which = rng.integers(0, len(sizes), len(idx))
    for fi, size in enumerate(sizes):
        sel = which == fi
        digits[fi] = np.where(sel, (digits[fi] + rng.integers(1, size, len(idx))) % size, digits[fi])
    new = np.zeros_like(idx)
    for fi, size in enumerate(sizes):
        new = new * size + digits[fi]
    return new


def assignment_tables(experiments: list[Experiment]) -> tuple[dict[tuple[int, int, int], str], dict[tuple[int, int], str]]:
    """JSON text of every (experiment, cell, factor|-1) assignment object, and every cell_id."""
    assignment, cell_ids = {}, {}
    for ei, exp in enumerate(experiments):
        for ci, cell in enumerate(design_cells(exp)):
            assignment[(ei, ci, -1)] = json.dumps({f.name: lv for f, lv in zip(exp.factors, cell)}, separators=(",", ":"))
            cell_ids[(ei, ci)] = cell_id(exp, cell)
            for fi, (f, lv) in enumerate(zip(exp.factors, cell)):
                assignment[(ei, ci, fi)] = json.dumps({f.name: lv}, separators=(",", ":"))
    return assignment, cell_ids
