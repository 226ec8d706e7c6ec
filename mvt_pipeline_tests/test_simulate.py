"""mvt_pipeline.simulate: determinism, assignment, faults, and that the truth is exact."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.registry import load_registry
from mvt_pipeline.simulate import (
    Faults,
    SimulationConfig,
    assign_cells,
    default_truth,
    design_cells,
    simulate,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REGISTRY_DIR = PROJECT_ROOT / "data" / "registry"
REQUIRED = ["event_id", "event_type", "ts", "unit_id"]
TS_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z$")
BOT_RE = re.compile(r"bot|HeadlessChrome", re.I)


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY_DIR)


def _quiet(*_a, **_k):
    pass


def _files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "raw").rglob("*") if p.is_file())


def _lines(out: Path) -> list[str]:
    lines = []
    for path in _files(out):
        raw = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
        lines += raw.splitlines()
    return lines


def _classify(line: str, known: set[str]) -> str | None:
    """The malformed kind of a line, or None when it is a good event."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        return "broken_json"
    if any(k not in d for k in REQUIRED) or (d["event_type"] == "exposure" and "experiment_id" not in d):
        return "missing_field"
    if not TS_RE.match(d["ts"]):
        return "bad_timestamp"
    if d["event_type"] == "exposure" and d["experiment_id"] not in known:
        return "unknown_experiment"
    return None


@pytest.fixture(scope="module")
def faulty_run(registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("faulty")
    faults = Faults(duplicate_rate=0.03, loss_rate=0.02, late_rate=0.02, bot_share=0.02, flip_rate=0.02,
                    malformed_rate=0.005, pii_rate=0.005)
    cfg = SimulationConfig(users=2000, days=4, seed=7, faults=faults, exposure_mode={"checkout_mvt": "per_factor"})
    truth = simulate(registry, cfg, out, log=_quiet)
    return out, truth


def test_same_seed_is_byte_identical(registry, tmp_path):
    cfg = SimulationConfig(users=600, days=3, seed=3, faults=Faults.demo())
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(registry, cfg, a, log=_quiet)
    simulate(registry, cfg, b, log=_quiet)
    simulate(registry, cfg.model_copy(update={"seed": 4}), c, log=_quiet)
    fa, fb = _files(a), _files(b)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb))
    assert (a / "truth.json").read_bytes() == (b / "truth.json").read_bytes()
    assert _lines(a) != _lines(c)


def test_assignment_deterministic_salted_and_independent(registry):
    units = [f"user-{i}" for i in range(20_000)]
    checkout, pricing = registry.experiment("checkout_mvt"), registry.experiment("pricing_abn")
    a1, a2 = assign_cells(units, checkout), assign_cells(units, checkout)
    assert all((a1[f] == a2[f]).all() for f in a1)
    p = assign_cells(units, pricing)
    table = pd.crosstab(a1["cta_color"], p["pricing_banner"]).to_numpy()
    assert stats.chi2_contingency(table)[1] > 0.001
    table = pd.crosstab(a1["cta_color"], a1["validation"]).to_numpy()  # factors salted separately
    assert stats.chi2_contingency(table)[1] > 0.001
    # a prefix of the units gets the same cells (per-unit hashing, no global state)
    head = assign_cells(units[:100], checkout)
    assert (head["copy"] == a1["copy"][:100]).all()


def test_allocation_matches_planned_and_skewed_weights(registry):
    units = [f"x{i}" for i in range(20_000)]
    n = len(units)
    for exp in registry.experiments:
        a = assign_cells(units, exp)
        for f in exp.factors:
            counts = pd.Series(a[f.name]).value_counts().reindex(f.levels).to_numpy()
            expected = np.asarray([f.level_weights[lv] for lv in f.levels]) * n
            assert stats.chisquare(counts, expected)[1] > 0.001, (exp.id, f.name)
    skewed = assign_cells(units, registry.experiment("checkout_mvt"), weights_override={"cta_color": [0.6, 0.4]})
    share = (skewed["cta_color"] == "blue").mean()
    assert abs(share - 0.6) < 4 * np.sqrt(0.24 / n)
    frac = registry.experiment("search_ranking_frac")
    a = assign_cells(units, frac)
    runs = Counter(zip(*[a[f.name] for f in frac.factors]))
    assert set(runs) == set(design_cells(frac)) and len(runs) == 8
    code = {f.name: {f.control: -1, [lv for lv in f.levels if lv != f.control][0]: 1} for f in frac.factors}
    for run in runs:  # D = ABC
        s = [code[f.name][lv] for f, lv in zip(frac.factors, run)]
        assert s[3] == s[0] * s[1] * s[2]


def test_srm_skews_actual_allocation(registry, tmp_path):
    faults = Faults(srm={"pricing_abn": {"pricing_banner": [0.5, 0.25, 0.25]}})
    truth = simulate(registry, SimulationConfig(users=3000, days=2, seed=11, faults=faults), tmp_path, log=_quiet)
    e = truth["experiments"]["pricing_abn"]
    assert e["actual_weights"]["pricing_banner"]["control"] == pytest.approx(0.5)
    assert e["planned_weights"]["pricing_banner"]["control"] == pytest.approx(1 / 3)
    counts = np.asarray(list(e["units_per_cell"].values()))
    assert stats.chisquare(counts, counts.sum() * np.asarray([0.5, 0.25, 0.25]))[1] > 0.001
    assert stats.chisquare(counts)[1] < 0.001


def test_lines_valid_and_malformed_counted(faulty_run, registry):
    out, truth = faulty_run
    known = {e.id for e in registry.experiments}
    lines = _lines(out)
    kinds = Counter(_classify(line, known) for line in lines)
    counts = truth["counts"]
    assert len(lines) == counts["lines_written"]
    assert {k: kinds.get(k, 0) for k in counts["malformed"]} == counts["malformed"]
    assert sum(counts["malformed"].values()) > 0
    good = [json.loads(line) for line in lines if _classify(line, known) is None]
    for d in good:
        assert TS_RE.match(d["received_at"]) and d["received_at"] >= d["ts"]
        assert isinstance(d["seq"], int) and d["device_id"] and d["session_id"]
        assert set(d["context"]) >= {"device", "platform", "country", "app_version", "user_agent", "is_new_user"}
        if d["event_type"] == "exposure":
            assert d["hash_version"] in ("v1", "v2") and isinstance(d["assignment"], dict)
        else:
            assert "experiment_id" not in d and isinstance(d["value"], (int, float)) and d["metric"]
    pii = sum(1 for d in good if {"email", "phone", "client_ip"} & set(d["context"]))
    assert pii == counts["pii_lines"] > 0
    # dt folder = UTC date of received_at
    for path in _files(out)[:5]:
        day = path.parent.name.removeprefix("dt=")
        for line in gzip.open(path, "rt").read().splitlines():
            if _classify(line, known) is None:
                assert json.loads(line)["received_at"][:10] == day


def test_duplicates_and_seq_gaps_reproduce_faults(faulty_run, registry):
    out, truth = faulty_run
    known = {e.id for e in registry.experiments}
    good = [json.loads(line) for line in _lines(out) if _classify(line, known) is None]
    by_id = defaultdict(list)
    for d in good:
        by_id[d["event_id"]].append(d)
    dups = sum(len(v) - 1 for v in by_id.values())
    assert dups == truth["counts"]["duplicates"] > 0
    for copies in by_id.values():
        if len(copies) > 1:
            strip = [{k: v for k, v in c.items() if k != "received_at"} for c in copies]
            assert all(s == strip[0] for s in strip)
    seqs = defaultdict(set)
    for d in by_id.values():
        seqs[d[0]["device_id"]].add(d[0]["seq"])
    gaps = sum(max(s) - len(s) for s in seqs.values())
    c = truth["counts"]
    assert gaps == c["lost"] - c["lost_trailing"] and c["lost"] > 0
    assert c["events_written"] == len(by_id)
    late = sum(1 for v in by_id.values() if v[0]["received_at"][:10] > v[0]["ts"][:10])
    assert late >= c["late"] > 0


def test_per_factor_mode_one_event_per_factor(faulty_run, registry):
    out, _truth = faulty_run
    exp = registry.experiment("checkout_mvt")
    known = {e.id for e in registry.experiments}
    per_device = defaultdict(Counter)
    for line in _lines(out):
        if _classify(line, known) is None:
            d = json.loads(line)
            if d["event_type"] == "exposure" and d["experiment_id"] == "checkout_mvt":
                assert len(d["assignment"]) == 1 and "cell_id" not in d
                per_device[d["device_id"]][next(iter(d["assignment"]))] += 1
    assert per_device
    # without loss every visit shows all factors; with 2% loss nearly all devices still see all three
    complete = sum(set(c) == {f.name for f in exp.factors} for c in per_device.values())
    assert complete / len(per_device) > 0.9


def _measure(out: Path, registry, truth) -> dict:
    """Per-cell values computed from the dump the way the warehouse does (dedup, bots and flips out)."""
    known = {e.id for e in registry.experiments}
    rows = [json.loads(line) for line in _lines(out) if _classify(line, known) is None]
    df = pd.DataFrame(rows).drop_duplicates("event_id")
    df["ts"] = pd.to_datetime(df["ts"])
    df["bot"] = df["context"].map(lambda c: bool(BOT_RE.search(c["user_agent"])))
    df = df[~df["bot"]]
    expo = df[df["event_type"] == "exposure"].copy()
    expo["pairs"] = expo["assignment"].map(lambda a: list(a.items()))
    expo = expo.explode("pairs")
    expo["factor"] = expo["pairs"].str[0]
    expo["level"] = expo["pairs"].str[1]
    met = df[df["event_type"] == "metric"]
    result = {}
    for exp in registry.experiments:
        e = expo[expo["experiment_id"] == exp.id]
        first = e.groupby("unit_id")["ts"].min()
        levels = e.groupby(["unit_id", "factor"])["level"].agg(lambda s: s.nunique())
        flipped = set(levels[levels > 1].index.get_level_values(0))
        first_level = e.sort_values("ts").groupby(["unit_id", "factor"])["level"].first().unstack()
        first_level = first_level.dropna()[[f.name for f in exp.factors]]
        cells = first_level.apply(lambda r: "|".join(f"{f}={r[f]}" for f in first_level.columns), axis=1)
        cells = cells[~cells.index.isin(flipped)]
        win = pd.Timedelta(days=exp.attribution_window_days)
        m = met[met["unit_id"].isin(cells.index)].copy()
        m["start"] = m["unit_id"].map(first)
        m = m[(m["ts"] >= m["start"]) & (m["ts"] <= m["start"] + win)]
        units = pd.DataFrame({"cell": cells})
        for mname, _role in exp.metrics.by_role():
            metric = registry.metric(mname)
            src = metric.numerator.source if metric.kind == "ratio" else metric.source
            ev = m[m["metric"] == src]
            s = ev.groupby("unit_id")["value"].agg(["sum", "count", "max"]).reindex(units.index, fill_value=0)
            per_cell = {}
            for cell, idx in units.groupby("cell").groups.items():
                x = s.loc[idx]
                n = len(x)
                truth_v = truth["experiments"][exp.id]["metrics"][mname]["cell_means"][cell]
                if metric.kind == "binary":
                    y = (x["max"] > 0).astype(float)
                    per_cell[cell] = (y.mean(), y.std(ddof=1) / np.sqrt(n), truth_v)
                elif metric.kind == "continuous":
                    per_cell[cell] = (x["sum"].mean(), x["sum"].std(ddof=1) / np.sqrt(n), truth_v)
                elif metric.kind in ("ratio", "quantile"):
                    if metric.kind == "quantile":  # share of requests <= true quantile, clustered by unit
                        vals = ev[ev["unit_id"].isin(idx)]
                        num = (vals["value"] <= truth_v).groupby(vals["unit_id"]).sum().reindex(idx, fill_value=0)
                        num, den, target = num.to_numpy(float), x["count"].to_numpy(float), metric.q
                    else:
                        num, den, target = x["sum"].to_numpy(float), x["count"].to_numpy(float), truth_v
                    r = num.sum() / den.sum()
                    resid = num - r * den
                    se = np.sqrt((resid**2).sum()) / den.sum()
                    per_cell[cell] = (r, se, target)
            result[(exp.id, mname)] = per_cell
    return result


def test_empirical_cell_means_match_truth(registry, tmp_path):
    faults = Faults(duplicate_rate=0.03, late_rate=0.02, bot_share=0.02, flip_rate=0.02, malformed_rate=0.002,
                    pii_rate=0.002)
    cfg = SimulationConfig(users=9000, days=5, seed=21, faults=faults, exposure_mode={"checkout_mvt": "per_factor"})
    truth = simulate(registry, cfg, tmp_path, log=_quiet)
    measured = _measure(tmp_path, registry, truth)
    worst = 0.0
    checked = 0
    for key, cells in measured.items():
        assert cells, key
        for cell, (est, se, target) in cells.items():
            z = abs(est - target) / se
            worst = max(worst, z)
            checked += 1
            assert z < 4, (key, cell, est, target, se)
    assert checked >= 60
    # the effect signal is visible, not only noise: green beats blue on checkout conversion
    cc = measured[("checkout_mvt", "checkout_conversion")]
    green = np.mean([v[0] for c, v in cc.items() if "cta_color=green" in c])
    blue = np.mean([v[0] for c, v in cc.items() if "cta_color=blue" in c])
    assert green > blue


def test_truth_effects_equal_independent_contrasts(registry, tmp_path):
    truth_cfg = default_truth(registry)
    truth_cfg["checkout_mvt"].metrics["checkout_conversion"].interactions = {
        "cta_color:validation": {"green:inline": 0.01}, "validation:copy": {"inline:urgency": -0.004}}
    truth = simulate(registry, SimulationConfig(users=300, days=2, seed=1, truth=truth_cfg), tmp_path, log=_quiet)
    # full factorial 2x2x3: array formulas
    exp = registry.experiment("checkout_mvt")
    t = truth["experiments"]["checkout_mvt"]["metrics"]["checkout_conversion"]
    mu = np.zeros((2, 2, 3))
    for i, a in enumerate(exp.factors[0].levels):
        for j, b in enumerate(exp.factors[1].levels):
            for k, c in enumerate(exp.factors[2].levels):
                mu[i, j, k] = t["cell_means"][f"cta_color={a}|validation={b}|copy={c}"]
    eff = {(e["term"], e["level"]): e["estimate"] for e in t["effects"]}
    assert eff[("cta_color", "green")] == pytest.approx((mu[1] - mu[0]).mean(), abs=1e-12)
    assert eff[("validation", "inline")] == pytest.approx((mu[:, 1] - mu[:, 0]).mean(), abs=1e-12)
    assert eff[("copy", "urgency")] == pytest.approx((mu[:, :, 2] - mu[:, :, 0]).mean(), abs=1e-12)
    inter = (mu[1, 1] - mu[1, 0] - mu[0, 1] + mu[0, 0]).mean()
    assert eff[("cta_color:validation", "green:inline")] == pytest.approx(inter, abs=1e-12)
    assert eff[("cta_color:validation", "green:inline")] == pytest.approx(0.01, abs=1e-12)
    assert eff[("validation:copy", "inline:urgency")] == pytest.approx(-0.004, abs=1e-12)
    three = mu[1, 1, 2] - mu[1, 0, 2] - mu[0, 1, 2] + mu[0, 0, 2] - (mu[1, 1, 0] - mu[1, 0, 0] - mu[0, 1, 0] + mu[0, 0, 0])
    assert eff[("cta_color:validation:copy", "green:inline:urgency")] == pytest.approx(three, abs=1e-12)
    # 2^(4-1) fraction: ±1 regression on the 8 runs, effect = 2 * coefficient
    frac = registry.experiment("search_ranking_frac")
    t = truth["experiments"]["search_ranking_frac"]["metrics"]["search_click_through"]
    x, y = [], []
    for cell, v in t["cell_means"].items():
        levels = dict(p.split("=") for p in cell.split("|"))
        s = [(-1 if levels[f.name] == f.control else 1) for f in frac.factors]
        x.append([1, *s, s[0] * s[1], s[0] * s[2], s[0] * s[3]])
        y.append(v)
    beta = np.linalg.lstsq(np.asarray(x, float), np.asarray(y), rcond=None)[0]
    eff = {e["term"]: e for e in t["effects"]}
    names = [f.name for f in frac.factors]
    expected = dict(zip(names + [f"{names[0]}:{names[1]}", f"{names[0]}:{names[2]}", f"{names[0]}:{names[3]}"], 2 * beta[1:]))
    assert set(eff) == set(expected)
    for term, value in expected.items():
        assert eff[term]["estimate"] == pytest.approx(value, abs=1e-12)
    assert eff["recency_boost:typo_tolerance"]["aliases"] == ["personalization:snippet_length"]
    assert eff["personalization"]["estimate"] == pytest.approx(0.03 + 0.01 * 0.25, abs=1e-12)  # iOS share 0.25


def test_cli_smoke_and_new_registry_entry(tmp_path):
    out = tmp_path / "out"
    (out / "registry").mkdir(parents=True)
    (out / "registry" / "metrics.yaml").write_text((REGISTRY_DIR / "metrics.yaml").read_text())
    extra = """
  - id: onboarding_test
    owner: team-x
    hypothesis: A shorter form raises sign-ups.
    status: running
    start_date: 2026-11-01
    factors:
      - {name: form, control: long, levels: [long, short]}
    metrics: {primary: [signup_conversion], guardrails: [latency_p95]}
"""
    (out / "registry" / "experiments.yaml").write_text((REGISTRY_DIR / "experiments.yaml").read_text() + extra)
    proc = subprocess.run(
        [sys.executable, "-m", "mvt_pipeline.simulate", "--users", "800", "--days", "2", "--seed", "5",
         "--out", str(out), "--plain-jsonl"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stdout
    truth = json.loads((out / "truth.json").read_text())
    assert truth["users"] == 800 and truth["counts"]["duplicates"] > 0  # demo faults on by default
    assert list((out / "raw").rglob("*.jsonl"))
    onboarding = truth["experiments"]["onboarding_test"]
    assert all(e["estimate"] == 0 for e in onboarding["metrics"]["signup_conversion"]["effects"])
    assert set(onboarding["units_per_cell"]) == {"form=long", "form=short"}
