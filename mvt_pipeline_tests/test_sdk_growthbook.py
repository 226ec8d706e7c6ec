"""Events written by the GrowthBook Python SDK itself (issue #17): a 3-arm test and a 2x2 factorial
served as two flags (one SDK experiment per factor), read with `format: growthbook` and the
registry's `sdk_key` / `variations` (no renaming in the client), through the whole nightly graph.

The truth is what the SDK assigned (its tracking callback and `get_feature_value`), not our code:
units per cell, conversions per cell (generated per cell here, as the app would record them, in the
project's contract from another source) and the SRM chi-square (scipy on the SDK's counts)."""

from __future__ import annotations

import collections
import datetime as dt
import json
import shutil

import growthbook  # the dev extra's real client (`make test` installs it; missing fails, never skips)
import numpy as np
import pytest
import yaml
from scipy import stats

from .conftest import SAMPLE_REGISTRY
from .pipeline_runner import query, run_graph


DAY = "2026-11-02"
USERS = 3000
LAYOUTS = ["control", "one_page", "two_page"]
COLORS, PLACEMENTS = ["blue", "green"], ["top", "bottom"]
FEATURES = {  # what a GrowthBook server would serve; evaluated offline by the SDK
    "checkout-layout": {"defaultValue": "control", "rules": [{
        "key": "exp-checkout-layout", "hashAttribute": "id", "hashVersion": 2,
        "variations": LAYOUTS, "weights": [0.34, 0.33, 0.33], "coverage": 1.0}]},
    "button-color": {"defaultValue": "blue", "rules": [{
        "key": "mvt_checkout_2x2__button_color", "hashAttribute": "id", "hashVersion": 2,
        "variations": COLORS, "weights": [0.5, 0.5]}]},
    "button-placement": {"defaultValue": "top", "rules": [{
        "key": "mvt_checkout_2x2__placement", "hashAttribute": "id", "hashVersion": 2,
        "variations": PLACEMENTS, "weights": [0.5, 0.5]}]},
}
EXPERIMENTS = [
    {"id": "exp-checkout-layout", "owner": "team-sdk", "hypothesis": "A one-page checkout converts better.",
     "status": "running", "start_date": "2026-11-01", "hash_attribute": "id", "seed": "exp-checkout-layout",
     "factors": [{"name": "layout", "levels": LAYOUTS, "control": "control", "weights": [0.34, 0.33, 0.33],
                  "sdk_key": "exp-checkout-layout", "variations": {str(i): v for i, v in enumerate(LAYOUTS)}}],
     "metrics": {"primary": ["checkout_conversion"]}},
    {"id": "mvt_checkout_2x2", "owner": "team-sdk", "hypothesis": "Colour and placement both matter.",
     "status": "running", "start_date": "2026-11-01", "hash_attribute": "id",
     "factors": [{"name": "button_color", "levels": COLORS, "control": "blue",
                  "sdk_key": "mvt_checkout_2x2__button_color", "variations": {"0": "blue", "1": "green"}},
                 {"name": "placement", "levels": PLACEMENTS, "control": "top",
                  "sdk_key": "mvt_checkout_2x2__placement", "variations": {"0": "top", "1": "bottom"}}],
     "metrics": {"primary": ["checkout_conversion"]}},
]


def _sdk_exposures(folder) -> dict[str, dict[str, str]]:
    """Evaluate every user with the SDK; its tracking callback writes the dump lines. Returns what
    the SDK assigned: user -> {feature: value}."""
    lines, assigned = [], collections.defaultdict(dict)
    clock = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)

    def on_experiment_viewed(*, experiment, result, user_context):  # growthbook 4.x: keyword arguments
        lines.append(json.dumps({
            "experimentId": experiment.key, "variationId": result.variationId, "hashAttribute": result.hashAttribute,
            "hashValue": result.hashValue, "userId": user_context.attributes.get("id"),
            "inExperiment": result.inExperiment, "featureId": result.featureId,
            "timestamp": (clock + dt.timedelta(seconds=len(lines))).isoformat().replace("+00:00", "Z")}))

    gb = growthbook.GrowthBook(features=FEATURES, on_experiment_viewed=on_experiment_viewed)
    for i in range(USERS):
        gb.set_attributes({"id": f"user-{i}"})
        for feature in FEATURES:
            assigned[f"user-{i}"][feature] = gb.get_feature_value(feature, None)
    gb.destroy()
    folder.mkdir(parents=True)
    (folder / "exposures.jsonl").write_text("\n".join(lines) + "\n")
    return assigned


def _conversions(folder, assigned) -> dict[str, bool]:
    """The app's own checkout events (contract format), a rate per layout and colour."""
    rng = np.random.default_rng(17)
    rate = {"control": 0.10, "one_page": 0.14, "two_page": 0.12}
    lift = {"blue": 0.0, "green": 0.03}
    converted, lines = {}, []
    for n, (user, values) in enumerate(sorted(assigned.items())):
        converted[user] = bool(rng.random() < rate[values["checkout-layout"]] + lift[values["button-color"]])
        if converted[user]:
            lines.append(json.dumps({"event_id": f"c{n}", "event_type": "metric", "ts": f"{DAY}T20:00:00Z",
                                     "unit_id": user, "metric": "checkout", "value": 1}))
    folder.mkdir(parents=True)
    (folder / "checkout.jsonl").write_text("\n".join(lines) + "\n")
    return converted


def test_growthbook_sdk_events_run_through_the_night(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "flags").mkdir()
    (data / "registry" / "experiments.yaml").write_text(yaml.safe_dump({"experiments": EXPERIMENTS}, sort_keys=False))
    (data / "registry" / "sources.yaml").write_text(yaml.safe_dump(
        {"sources": [{"name": "gb_web", "format": "growthbook"}]}))
    shutil.copy(SAMPLE_REGISTRY / "metrics.yaml", data / "registry" / "metrics.yaml")
    for var, value in {"MVT_DATA_DIR": data, "MVT_DUCKDB_PATH": data / "warehouse" / "mvt.duckdb",
                       "MVT_REPORTS_DIR": data / "reports"}.items():
        monkeypatch.setenv(var, str(value))
    assigned = _sdk_exposures(data / "raw" / "gb_web" / f"dt={DAY}")
    converted = _conversions(data / "raw" / "app" / f"dt={DAY}", assigned)

    (night,) = run_graph(data, [DAY])
    assert night.success

    quarantined = query(data, "select count(*) n from raw.quarantine").n[0]
    assert quarantined == 0
    cells = query(data, "select experiment_id, cell_id, n, sum from marts.agg_cell_stats where segment = 'overall' "
                        "and metric = 'checkout_conversion'")
    got = {(r.experiment_id, r.cell_id): (int(r.n), round(float(r.sum))) for r in cells.itertuples()}
    want: dict = collections.defaultdict(lambda: [0, 0])
    for user, values in assigned.items():
        for key in (("exp-checkout-layout", f"layout={values['checkout-layout']}"),
                    ("mvt_checkout_2x2", f"button_color={values['button-color']}|placement={values['button-placement']}")):
            want[key][0] += 1
            want[key][1] += converted[user]
    assert got == {k: tuple(v) for k, v in want.items()}  # units and conversions per cell, as the SDK assigned

    srm = query(data, "select experiment_id, p_value from analysis.srm where as_of = ?", [DAY]).set_index("experiment_id")
    layout_counts = collections.Counter(v["checkout-layout"] for v in assigned.values())
    expected = np.array([0.34, 0.33, 0.33]) * USERS
    chi2 = stats.chisquare([layout_counts[lv] for lv in LAYOUTS], expected)
    assert srm.loc["exp-checkout-layout", "p_value"] == pytest.approx(chi2.pvalue, rel=1e-9)

    effects = query(data, "select term, level, estimate from analysis.effects where as_of = ? and "
                          "experiment_id = 'mvt_checkout_2x2' and metric = 'checkout_conversion'", [DAY])
    assert "button_color:placement" in set(effects.term) and effects.estimate.notna().all()  # interaction estimated
