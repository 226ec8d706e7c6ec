"""Exact expected values per cell (the ground truth the warehouse should recover, before faults).

For experiment E, cell c and a source s driven by experiment O:
- O == E: the unit's effect is O's effect in cell c;
- O != E: the unit is exposed to O with probability q = P(O exposed | E exposed) (exposure rates and
  overlapping active periods), and then in O's cell c' with O's ACTUAL allocation share; otherwise 0.
Segment effects are averaged over the population segment mix (population.segment_table(), the exact
joint distribution the generator draws from): mean effect = sum_seg P(seg) * delta * 1[seg matches].
The propensity has mean 1 and is independent of everything else, so per-unit means are linear.
"""

from __future__ import annotations

import math

import numpy as np

from ..registry import Experiment, Metric
from .assignment import design_cells
from .behaviour import SourceModel, cell_effects
from .population import segment_matches, segment_table


class TruthContext:
    def __init__(self, experiments: dict[str, Experiment], sources: dict[str, SourceModel], cell_probs: dict[str, list[float]],
                 overlap: dict[tuple[str, str], float], requests_per_unit: float):
        self.experiments = experiments
        self.sources = sources
        self.cell_probs = cell_probs
        self.overlap = overlap  # (E, O) -> P(O exposed | E exposed)
        self.mean_requests = 1.0 + requests_per_unit
        self._segs = segment_table()

    # -- owner-state mixture -------------------------------------------------------------------------
    def _states(self, source: SourceModel, exp_id: str, cell: int) -> list[tuple[float, int | None]]:
        owner = source.owner
        if owner is None or owner not in self.experiments:
            return [(1.0, None)]
        if owner == exp_id:
            return [(1.0, cell)]
        q = self.overlap.get((exp_id, owner), 0.0)
        out = [(1.0 - q, None)]
        out += [(q * p, c) for c, p in enumerate(self.cell_probs[owner])]
        return out

    def _seg_deltas(self, source: SourceModel, state: int | None) -> np.ndarray:
        """Segment-effect delta for every row of the segment table, in owner state `state`."""
        deltas = np.zeros(len(self._segs))
        if state is None or source.truth is None:
            return deltas
        exp = self.experiments[source.owner]
        cell = design_cells(exp)[state]
        pos = {f.name: i for i, f in enumerate(exp.factors)}
        for se in source.truth.segment_effects:
            if cell[pos[se.factor]] != se.level:
                continue
            for i, (seg, _p) in enumerate(self._segs):
                if segment_matches(np.asarray([seg[se.segment]], dtype=object), se.segment, se.value)[0]:
                    deltas[i] += se.delta
        return deltas

    def mean_effect(self, source: SourceModel, exp_id: str, cell: int) -> float:
        """E[effect on the source | unit exposed to exp_id in `cell`]."""
        weights = np.asarray([p for _s, p in self._segs])
        total = 0.0
        table = cell_effects(self.experiments[source.owner], source.truth) if source.owner in self.experiments else None
        for w, state in self._states(source, exp_id, cell):
            if state is None or w == 0:
                continue
            total += w * (table[state] + float(weights @ self._seg_deltas(source, state)))
        return total

    # -- per-unit expected sum and count of a source's events in the window ---------------------------
    def unit_sum_count(self, source_name: str, exp_id: str, cell: int) -> tuple[float, float]:
        s = self.sources[source_name]
        m = self.mean_effect(s, exp_id, cell)
        if s.kind == "conversion":
            return s.baseline + m, s.baseline + m
        if s.kind == "counter":
            return s.baseline + m, s.baseline + m
        if s.kind == "amount":
            if s.trigger:
                p = self.unit_sum_count(s.trigger, exp_id, cell)[1]
            else:
                p = 0.3
            return s.baseline + m, p
        if s.kind == "request_flag":
            return self.mean_requests * (s.baseline + m), self.mean_requests
        if s.kind == "request_value":
            return self.mean_requests * math.exp(s.baseline + s.sigma**2 / 2) * (1 + m), self.mean_requests
        raise ValueError(s.kind)

    def quantile(self, source_name: str, exp_id: str, cell: int, q: float) -> float | None:
        s = self.sources[source_name]
        if s.kind != "request_value":
            return None
        table = cell_effects(self.experiments[s.owner], s.truth) if s.owner in self.experiments else None
        seg_w = np.asarray([p for _s, p in self._segs])
        comps: dict[float, float] = {}
        for w, state in self._states(s, exp_id, cell):
            if w == 0:
                continue
            base = 0.0 if state is None else table[state]
            mult = 1.0 + base + self._seg_deltas(s, state)
            for mu_mult, p in zip(np.round(mult, 12), seg_w):
                comps[float(mu_mult)] = comps.get(float(mu_mult), 0.0) + w * p
        mults = np.asarray(list(comps))
        wts = np.asarray(list(comps.values()))
        wts = wts / wts.sum()
        mu, sigma = s.baseline, s.sigma

        def cdf(logx: float) -> float:
            z = (logx - mu - np.log(mults)) / (sigma * math.sqrt(2))
            return float(wts @ (0.5 * (1 + np.vectorize(math.erf)(z))))

        lo, hi = mu + np.log(mults.min()) - 10 * sigma, mu + np.log(mults.max()) + 10 * sigma
        for _ in range(200):
            mid = (lo + hi) / 2
            if cdf(mid) < q:
                lo = mid
            else:
                hi = mid
        return math.exp((lo + hi) / 2)

    def cell_mean(self, metric: Metric, exp_id: str, cell: int) -> float | None:
        """Expected per-unit value (binary/continuous/count) or the ratio/quantile value of a cell."""
        if metric.kind == "binary":
            if self.sources[metric.source].kind != "conversion":
                return None
            return self.unit_sum_count(metric.source, exp_id, cell)[0]
        if metric.kind in ("continuous", "count"):
            s, c = self.unit_sum_count(metric.source, exp_id, cell)
            if metric.kind == "count" or metric.aggregation == "count":
                return c
            if metric.aggregation == "max" and self.sources[metric.source].kind != "conversion":
                return None
            return s
        if metric.kind == "ratio":
            num = self.unit_sum_count(metric.numerator.source, exp_id, cell)
            den = self.unit_sum_count(metric.denominator.source, exp_id, cell)
            n = num[0] if metric.numerator.aggregation == "sum" else num[1]
            d = den[0] if metric.denominator.aggregation == "sum" else den[1]
            return n / d if d else None
        if metric.kind == "quantile":
            return self.quantile(metric.source, exp_id, cell, metric.q)
        return None
