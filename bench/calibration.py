"""Calibration of the stats engine by simulation (results recorded in docs/validation.md).

Every experiment is simulated from per-unit numpy draws reduced to per-cell sufficient
statistics (n, sum, sum_sq[, covariate sums]) exactly as the warehouse would hand them over,
then analysed with the public API. Truths are computed from the simulation parameters by the
*definition* of each estimand (equal-weight marginal means), never by the engine.

    .venv/bin/python bench/calibration.py            # full run (a few minutes on 2 cores)
    .venv/bin/python bench/calibration.py --quick    # the sizes the tests use

The test-suite imports this file and runs each check with small ``reps``
(``mvt_pipeline_tests/stats/test_calibration.py``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvt_pipeline.stats import (  # noqa: E402
    add_shrinkage, analyze_cells, mde_factorial, power_factorial, segment_effects, sequential_ci, srm_test,
)

SEED = 20240613


def _grid(levels):
    return list(itertools.product(*levels.values()))


def _frame(levels, cells, n, s, ss, extra=None):
    df = pd.DataFrame(cells, columns=list(levels))
    df["n"], df["sum"], df["sum_sq"] = n, s, ss
    for k, v in (extra or {}).items():
        df[k] = v
    return df


def _marginal_truth(levels, mu: dict, term, combo):
    """Definition: equal-weight average over the other factors of the alternating cell sum."""
    names = list(levels)
    control = {f: levels[f][0] for f in names}
    others = [f for f in names if f not in term]
    n_other = int(np.prod([len(levels[f]) for f in others])) if others else 1
    tot = 0.0
    for cell in _grid(levels):
        g = dict(zip(names, cell))
        w = 1.0
        for f, l in zip(term, combo):
            w *= 1.0 if g[f] == l else (-1.0 if g[f] == control[f] else 0.0)
        tot += w * mu[cell]
    return tot / n_other


# --------------------------------------------------------------------------- coverage
def coverage(reps: int, seed: int = SEED) -> pd.DataFrame:
    """95% CI coverage of every main effect and interaction of a 2x3 factorial with unequal,
    random cell sizes and a skewed, heteroskedastic (log-normal) outcome; robust and pooled."""
    rng = np.random.default_rng(seed)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"]}
    cells = _grid(levels)
    loc = {c: 0.1 * i for i, c in enumerate(cells)}
    scale = {c: 0.5 + 0.1 * i for i, c in enumerate(cells)}
    mu = {c: float(np.exp(loc[c] + scale[c] ** 2 / 2)) for c in cells}
    truth = {}
    for term in [("A",), ("B",), ("A", "B")]:
        for combo in itertools.product(*(levels[f][1:] for f in term)):
            truth[(":".join(term), ":".join(combo))] = _marginal_truth(levels, mu, term, combo)
    hits = {se: {k: 0 for k in truth} for se in ("robust", "pooled")}
    for _ in range(reps):
        n = rng.integers(150, 400, len(cells))
        s, ss = np.empty(len(cells)), np.empty(len(cells))
        for i, c in enumerate(cells):
            y = rng.lognormal(loc[c], scale[c], n[i])
            s[i], ss[i] = y.sum(), (y * y).sum()
        df = _frame(levels, cells, n, s, ss)
        for se in hits:
            eff = analyze_cells(df, levels, se=se).effects
            for r in eff.itertuples():
                t = truth[(r.term, r.level)]
                hits[se][(r.term, r.level)] += r.ci_low <= t <= r.ci_high
    rows = [
        {"se": se, "term": k[0], "level": k[1], "coverage": v / reps, "reps": reps}
        for se, d in hits.items() for k, v in d.items()
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- small cells
def small_cell_coverage(reps: int, n_per_cell: int, covariate: bool = False, sds=(1.0, 1.0, 1.0, 3.0),
                        seed: int = SEED + 6) -> pd.DataFrame:
    """95% CI coverage of a 2x2's effects (robust default) with a few units per cell and one
    noisy cell (normal outcomes, sd 3 vs 1): the regime where the normal reference under-covers
    and the Welch-Satterthwaite t reference should not. ``covariate=True`` adds a pre-period
    x (corr 0.6 with y) and runs CUPED (cell-wise HC2). Truths: the simulated cell means."""
    rng = np.random.default_rng(seed + n_per_cell + (1000 if covariate else 0))
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    cells = _grid(levels)
    mu = {c: 0.3 * i for i, c in enumerate(cells)}
    truth = {}
    for term in [("A",), ("B",), ("A", "B")]:
        for combo in itertools.product(*(levels[f][1:] for f in term)):
            truth[(":".join(term), ":".join(combo))] = _marginal_truth(levels, mu, term, combo)
    k, sd, rho = len(cells), np.asarray(sds, float)[:, None], 0.6
    hits, dfs = {key: 0 for key in truth}, []
    for _ in range(reps):
        x = rng.standard_normal((k, n_per_cell))
        e = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((k, n_per_cell)) if covariate else x
        y = np.array([mu[c] for c in cells])[:, None] + sd * e
        extra = {"cov_sum": x.sum(1), "cov_sum_sq": (x * x).sum(1), "cross_sum": (x * y).sum(1)} if covariate else None
        eff = analyze_cells(_frame(levels, cells, np.full(k, n_per_cell), y.sum(1), (y * y).sum(1), extra),
                            levels, covariate=covariate).effects
        for r in eff.itertuples():
            hits[(r.term, r.level)] += r.ci_low <= truth[(r.term, r.level)] <= r.ci_high
        dfs.extend(eff["df"])
    return pd.DataFrame([{"n_per_cell": n_per_cell, "cuped": covariate, "term": t, "level": l,
                          "coverage": v / reps, "median_df": float(np.median(dfs)), "reps": reps}
                         for (t, l), v in hits.items()])


# --------------------------------------------------------------------------- quantile limits
Z975 = float(stats.norm.ppf(0.975))


def quantile_ab_inputs(rng, reps: int, users: int, q: float, lift: float = 1.08, mu: float = float(np.log(180.0)),
                       sd_user: float = 0.3, sd_event: float = 0.5, z: float = Z975):
    """``agg_cell_quantiles`` rows (dicts of arrays over ``reps``) of a control and a treated cell
    of ``users`` users with 1-9 events each (mean 5), log-latency = mu + u_i + e_ij (clustered),
    computed with numpy exactly as the SQL does; and the true difference of the cells' q-quantiles
    (every event is lognormal(mu, sqrt(sd_user^2 + sd_event^2)) marginally)."""
    m = 1 + np.arange(users) % 9
    unit, big_n = np.repeat(np.arange(users), m), int(m.sum())
    starts = np.concatenate([[0], np.cumsum(m)[:-1]])
    half = z * np.sqrt(big_n * q * (1 - q))
    clamp = lambda r: int(min(max(r, 1), big_n))  # noqa: E731
    point, lower, upper = clamp(np.ceil(big_n * q)), clamp(np.floor(big_n * q - half)), clamp(np.ceil(big_n * q + half))

    def cell(scale: float) -> dict:
        v = np.exp(mu + sd_user * rng.standard_normal((reps, users))[:, unit]
                   + sd_event * rng.standard_normal((reps, big_n))) * scale
        x = np.sort(v, axis=1)
        qv = x[:, point - 1]
        k = np.add.reduceat((v <= qv[:, None]).astype(float), starts, axis=1)
        full = lambda c: np.full(reps, float(c))  # noqa: E731
        return {"n": full(users), "q": full(q), "n_events": full(big_n), "quantile_value": qv,
                "ci_lower_value": x[:, lower - 1], "ci_upper_value": x[:, upper - 1], "ci_z": full(z),
                "k_sum": k.sum(1), "k_sum_sq": (k * k).sum(1), "m_sum_sq": full((m * m).sum()), "k_m_sum": (k * m).sum(1)}

    truth = float(np.exp(mu + stats.norm.ppf(q) * np.hypot(sd_user, sd_event))) * (lift - 1)
    return cell(1.0), cell(lift), truth


def quantile_limits(reps: int, users=(39, 62, 80, 160, 400), q: float = 0.99, seed: int = SEED + 7) -> pd.DataFrame:
    """A/B on a clustered latency quantile through ``analyze_quantile_cells``: per cell size, the
    share of effect rows flagged ``quantile_rank_clamped`` and the 95% CI coverage of the true
    difference among flagged and unflagged rows."""
    from mvt_pipeline.stats.quantile import RANK_CLAMPED, analyze_quantile_cells, min_events_per_cell

    rng = np.random.default_rng(seed)
    rows = []
    for n_users in users:
        ctrl, treat, truth = quantile_ab_inputs(rng, reps, n_users, q)
        hit = {True: [], False: []}
        for i in range(reps):
            frame = pd.DataFrame([{"A": "a0", **{c: v[i] for c, v in ctrl.items()}},
                                  {"A": "a1", **{c: v[i] for c, v in treat.items()}}])
            r = analyze_quantile_cells(frame, {"A": ["a0", "a1"]}).effects.iloc[0]
            hit[r.status == RANK_CLAMPED].append(r.ci_low <= truth <= r.ci_high)
        cov = lambda h: float(np.mean(h)) if h else np.nan  # noqa: E731
        rows.append({"q": q, "users": n_users, "events_per_cell": int(ctrl["n_events"][0]),
                     "min_events": min_events_per_cell(q, Z975), "flagged_share": len(hit[True]) / reps,
                     "coverage_flagged": cov(hit[True]), "coverage_unflagged": cov(hit[False]), "reps": reps})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- sequential A/A
def aa_sequential(reps: int, looks: int = 14, daily_per_cell: int = 150, seed: int = SEED + 1) -> pd.DataFrame:
    """A/A 2x2 on a skewed metric, analysed every night on cumulative sums: share of
    experiments where an effect's interval excludes 0 on at least one night, for the
    asymptotic CS (N* = planned 14-day sample) and for fixed-horizon 95% intervals."""
    rng = np.random.default_rng(seed)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    cells = _grid(levels)
    k = len(cells)
    n_star = looks * daily_per_cell * k
    any_hit = {m: np.zeros(3, dtype=int) for m in ("asymptotic_cs", "fixed")}
    family = {m: 0 for m in any_hit}
    last_night = {m: np.zeros(3, dtype=int) for m in any_hit}
    for _ in range(reps):
        y = rng.exponential(1.0, (looks, k, daily_per_cell))
        s, ss = np.cumsum(y.sum(axis=2), axis=0), np.cumsum((y * y).sum(axis=2), axis=0)
        ever = {m: np.zeros(3, dtype=bool) for m in any_hit}
        for d in range(looks):
            n = np.full(k, (d + 1) * daily_per_cell)
            eff = analyze_cells(_frame(levels, cells, n, s[d], ss[d]), levels).effects
            for m in any_hit:
                lo, hi = sequential_ci(eff["estimate"].to_numpy(), eff["std_error"].to_numpy(), n.sum(), n_star=n_star, method=m)
                rej = (lo > 0) | (hi < 0)
                ever[m] |= rej
                if d == looks - 1:
                    last_night[m] += rej
        for m in any_hit:
            any_hit[m] += ever[m]
            family[m] += bool(ever[m].any())
    rows = []
    for m in any_hit:
        for j, name in enumerate(["A", "B", "A:B"]):
            rows.append({"method": m, "effect": name, "fpr_any_look": any_hit[m][j] / reps,
                         "fpr_last_look": last_night[m][j] / reps, "reps": reps, "looks": looks})
        rows.append({"method": m, "effect": "any of the 3", "fpr_any_look": family[m] / reps,
                     "fpr_last_look": np.nan, "reps": reps, "looks": looks})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- CUPED
def cuped_reduction(reps: int, rhos=(0.3, 0.5, 0.7, 0.9), n_per_cell: int = 400, seed: int = SEED + 2) -> pd.DataFrame:
    """Variance of the A main effect with vs without the pre-period covariate, (x, y)
    bivariate normal with correlation rho: ratio should be ~ 1 - rho^2."""
    rng = np.random.default_rng(seed)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    cells = _grid(levels)
    k = len(cells)
    rows = []
    for rho in rhos:
        plain, adj, se2_plain, se2_adj, vr = [], [], [], [], []
        for _ in range(reps):
            x = rng.standard_normal((k, n_per_cell))
            y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((k, n_per_cell)) + 0.1 * np.arange(k)[:, None]
            n = np.full(k, n_per_cell)
            df = _frame(levels, cells, n, y.sum(1), (y * y).sum(1),
                        {"cov_sum": x.sum(1), "cov_sum_sq": (x * x).sum(1), "cross_sum": (x * y).sum(1)})
            r0 = analyze_cells(df, levels).effects.iloc[0]
            res = analyze_cells(df, levels, covariate=True)
            r1 = res.effects.iloc[0]
            plain.append(r0.estimate), adj.append(r1.estimate)
            se2_plain.append(r0.std_error**2), se2_adj.append(r1.std_error**2)
            vr.append(res.cuped["variance_reduction"])
        rows.append({
            "rho": rho, "expected_ratio": 1 - rho**2,
            "empirical_var_ratio": np.var(adj, ddof=1) / np.var(plain, ddof=1),
            "reported_se2_ratio": np.mean(se2_adj) / np.mean(se2_plain),
            "reported_variance_reduction": float(np.mean(vr)), "reps": reps,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- power
def power_check(reps: int, seed: int = SEED + 3) -> pd.DataFrame:
    """Rejection rate of analyze_cells (robust, alpha 0.05) vs power_factorial on a 2x2x3
    design with equal allocation, for a main effect and a 2-way interaction."""
    rng = np.random.default_rng(seed)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"], "C": ["c0", "c1", "c2"]}
    cells = _grid(levels)
    k, n_total, sd = len(cells), 2400, 1.0
    m = n_total // k
    rows = []
    for term, target in [("main", 0.8), ("main", 0.5), ("interaction2", 0.8)]:
        if term == "main":  # A main effect: shift A=a1 cells by delta
            delta = mde_factorial(levels, n_total, sd, power=target, term="A")
            shift = np.array([delta if c[0] == "a1" else 0.0 for c in cells])
            pick = ("A", "a1")
            planned = power_factorial(levels, n_total, delta, sd, term="A")
        else:  # A:B interaction: difference of differences = delta
            delta = mde_factorial(levels, n_total, sd, power=target, term="A:B")
            shift = np.array([delta if c[:2] == ("a1", "b1") else 0.0 for c in cells])
            pick = ("A:B", "a1:b1")
            planned = power_factorial(levels, n_total, delta, sd, term="A:B")
        hits = 0
        for _ in range(reps):
            y = rng.standard_normal((k, m)) * sd + shift[:, None]
            eff = analyze_cells(_frame(levels, cells, np.full(k, m), y.sum(1), (y * y).sum(1)), levels, max_order=2).effects
            r = eff[(eff.term == pick[0]) & (eff.level == pick[1])].iloc[0]
            hits += r.p_value < 0.05
        rows.append({"term": pick[0], "effect": delta, "planned_power": planned,
                     "simulated_power": hits / reps, "reps": reps})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- HTE
def hte_check(reps: int, n_seg: int = 5, n_per_cell: int = 200, seed: int = SEED + 4) -> pd.DataFrame:
    """Cochran's Q (via segment_effects) on a 2x2 per segment: rejection rate at 0.05 with a
    common effect (level) and with one segment's A effect shifted by delta (power), delta
    set so the noncentral chi-square power of Q is 0.8 (computed here, independently)."""
    rng = np.random.default_rng(seed)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    cells = _grid(levels)
    k = len(cells)
    se_a = np.sqrt(4.0 / (k * n_per_cell))  # SE of A's main effect per segment, sd = 1
    df_q, crit = n_seg - 1, stats.chi2.ppf(0.95, n_seg - 1)
    # one segment shifted by delta: lambda = sum w (theta - mean)^2 = (delta/se)^2 (1 - 1/n_seg)
    ncp = optimize.brentq(lambda l: stats.ncx2.sf(crit, df_q, l) - 0.8, 1e-6, 100)
    delta = np.sqrt(ncp / (1 - 1 / n_seg)) * se_a
    rows = []
    for label, seg_shift in [("no heterogeneity", 0.0), ("one segment shifted", delta)]:
        rej, rej_seg = 0, 0
        for _ in range(reps):
            parts = []
            for sgi in range(n_seg):
                eff_a = 0.1 + (seg_shift if sgi == n_seg - 1 else 0.0)
                shift = np.array([eff_a if c[0] == "a1" else 0.0 for c in cells])
                y = rng.standard_normal((k, n_per_cell)) + shift[:, None]
                parts.append(_frame(levels, cells, np.full(k, n_per_cell), y.sum(1), (y * y).sum(1), {"segment": f"s{sgi}"}))
            res = segment_effects(pd.concat(parts, ignore_index=True), levels, "segment", min_cell_units=1)
            h = res.heterogeneity
            rej += h.loc[h.term == "A", "p_value"].iloc[0] < 0.05
            rej_seg += h.loc[h.term == "B", "p_value"].iloc[0] < 0.05
        rows.append({"scenario": label, "designed": 0.05 if seg_shift == 0 else 0.8,
                     "q_reject_rate_A": rej / reps, "q_reject_rate_B_null": rej_seg / reps,
                     "delta": seg_shift, "reps": reps})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- SRM re-run nightly
def srm_nightly(reps: int, cells: int = 16, nights=(14, 30), daily_per_cell: int = 1000, seed: int = SEED + 5) -> pd.DataFrame:
    """Healthy experiments (true allocation = plan) checked every night on cumulative counts
    with srm_test at p < 0.001: how often does at least one night raise a false SRM?"""
    rng = np.random.default_rng(seed)
    w = np.full(cells, 1.0 / cells)
    rows = []
    for horizon in nights:
        ever = last = 0
        for _ in range(reps):
            counts = rng.multinomial(daily_per_cell * cells, w, size=horizon).cumsum(axis=0)
            flags = [srm_test(c, w).flagged for c in counts]
            ever += any(flags)
            last += flags[-1]
        rows.append({"cells": cells, "nights": horizon, "false_flag_any_night": ever / reps,
                     "false_flag_last_night": last / reps, "bonferroni_bound": min(1.0, horizon * 0.001), "reps": reps})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- interaction overload

SHRINK_LEVELS = {f"f{i}": ["c", "t"] for i in range(5)}  # 2^5: 26 interactions


def shrinkage_runs(reps: int, gamma: float = 0.8, others_sd: float = 0.0, n_per_cell: int = 50,
                   seed: int = SEED + 8) -> pd.DataFrame:
    """Interaction rows (raw, shrunk, truth) of ``reps`` 2^5 experiments, sigma 1, per-unit draws.

    Cell means: f2 main effect 0.3, ``gamma`` where f0 and f1 are both treated (the f0:f1
    interaction) and, with ``others_sd``, random ``N(0, others_sd)`` terms where f2&f3 and f3&f4
    are both treated. Truths by the estimands' definition (:func:`_marginal_truth`).
    """
    rng = np.random.default_rng(seed)
    levels, grid = SHRINK_LEVELS, _grid(SHRINK_LEVELS)
    frames = []
    for rep in range(reps):
        both = lambda a, b: np.array([c[a] == c[b] == "t" for c in grid], dtype=float)  # noqa: E731
        mu = 0.3 * np.array([c[2] == "t" for c in grid], dtype=float) + gamma * both(0, 1)
        if others_sd:
            mu = mu + rng.normal(0, others_sd) * both(2, 3) + rng.normal(0, others_sd) * both(3, 4)
        y = rng.normal(mu[:, None], 1.0, (len(grid), n_per_cell))
        eff = analyze_cells(_frame(levels, grid, n_per_cell, y.sum(1), (y * y).sum(1)), levels).effects
        inter = add_shrinkage(eff[eff["term"].str.contains(":")])
        mu_d = dict(zip(grid, mu))
        inter["truth"] = [_marginal_truth(levels, mu_d, t.split(":"), lv.split(":"))
                          for t, lv in zip(inter["term"], inter["level"])]
        frames.append(inter.assign(rep=rep))
    return pd.concat(frames, ignore_index=True)


def interaction_shrinkage(reps: int) -> pd.DataFrame:
    """MSE of shrunk vs raw interactions (null ones, all) and the large interaction's fate."""
    rows = []
    for label, others in (("one large (8 SE), 25 null", 0.0), ("plus two of sd 10 SE", 1.0)):
        runs = shrinkage_runs(reps, others_sd=others)
        err_raw = (runs["estimate"] - runs["truth"]) ** 2
        err_eb = (runs["shrunk_estimate"] - runs["truth"]) ** 2
        null = runs["truth"].abs() < 1e-12
        big = runs[runs["term"] == "f0:f1"]
        rows.append({"scenario": label, "mse_ratio_null": err_eb[null].mean() / err_raw[null].mean(),
                     "mse_ratio_all": err_eb.mean() / err_raw.mean(),
                     "large_in_raw_ci": float(((big["shrunk_estimate"] >= big["ci_low"])
                                               & (big["shrunk_estimate"] <= big["ci_high"])).mean()),
                     "large_mean_shrunk": big["shrunk_estimate"].mean(), "large_se": big["std_error"].mean()})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small replication counts (as in the tests)")
    ap.add_argument("--only", nargs="*", help="run only these checks (function names)")
    args = ap.parse_args(argv)
    r = (lambda full, quick: quick if args.quick else full)
    pd.set_option("display.width", 160)
    for name, fn, reps in [
        ("coverage", coverage, r(4000, 300)),
        ("aa_sequential", aa_sequential, r(2000, 150)),
        ("cuped_reduction", cuped_reduction, r(2000, 200)),
        ("power_check", power_check, r(3000, 400)),
        ("hte_check", hte_check, r(2000, 200)),
        ("srm_nightly", srm_nightly, r(20000, 500)),
        ("small_cells", lambda reps: pd.concat([small_cell_coverage(reps, n, cv) for n in (5, 10, 20)
                                                for cv in (False, True)], ignore_index=True), r(10000, 300)),
        ("interaction_shrinkage", interaction_shrinkage, r(2000, 150)),
        ("quantile_limits", lambda reps: pd.concat([quantile_limits(reps), quantile_limits(reps, (8, 15, 20, 40), 0.95)],
                                                   ignore_index=True), r(4000, 300)),
    ]:
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        out = fn(reps)
        print(f"\n## {name} (reps={reps}, seed={SEED}, {time.perf_counter() - t:.0f} s)\n")
        print(out.to_markdown(index=False, floatfmt=".4f"))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
