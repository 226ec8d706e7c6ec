"""flagd parsing (served variants, precise errors) and the stale-flag audit classes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from mvt_pipeline.audit import (
    AUDIT_COLUMNS, SEVERITY_ORDER, FlagFileError, audit_flags, load_flag_csv, load_flag_file, load_flag_files,
)
from mvt_pipeline.registry import load_registry
from mvt_pipeline.registry.models import Registry
from mvt_pipeline.simulate import SimulationConfig, simulate

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "data"
TODAY = dt.date(2026, 12, 20)


def _flag(variants, default, targeting=None, state="ENABLED", **extra):
    spec = {"state": state, "variants": {v: v for v in variants}, "defaultVariant": default, **extra}
    if targeting is not None:
        spec["targeting"] = targeting
    return spec


def _split(*names, weights=None):
    weights = weights or [50] * len(names)
    return {"fractional": [{"var": "targetingKey"}, *[[n, w] for n, w in zip(names, weights)]]}


def _write(directory: Path, name: str, flags: dict, **top) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags, **top}))
    return path


def _experiment(exp_id, status, flag_keys, *, start="2026-11-01", end="2026-12-01", owner="team-x"):
    return {
        "id": exp_id, "owner": owner, "hypothesis": "h", "status": status, "start_date": start, "end_date": end,
        "factors": [{"name": f"f{i}", "levels": ["a", "b"], "control": "a", "flag_key": key}
                    for i, key in enumerate(flag_keys)],
        "metrics": {"primary": ["conv"]},
    }


@pytest.fixture
def registry() -> Registry:
    return Registry.model_validate({
        "metrics": [{"name": "conv", "kind": "binary", "source": "conv"}],
        "experiments": [
            _experiment("exp_live", "running", ["live-flag", "paused-flag"], end="2027-01-31", owner="team-live"),
            _experiment("exp_idle", "running", ["idle-flag"], end="2027-01-31"),
            _experiment("exp_never", "running", ["never-flag"], end="2027-01-31"),
            _experiment("exp_done", "concluded", ["done-flag", "rolled-flag"], end="2026-12-05", owner="team-done"),
            _experiment("exp_broken", "running", ["broken-flag"], end="2027-01-31"),
            _experiment("exp_missing", "running", ["ghost-flag"], end="2027-01-31"),
            _experiment("exp_gone", "concluded", ["removed-flag"]),  # flag already cleaned up: not "missing"
            _experiment("exp_ops", "running", ["ops-kill-switch"], end="2027-01-31"),
            _experiment("exp_shipped", "concluded", ["shipped-flag", "baking-flag", "undated-flag", "bad-rollout"],
                        end="2026-11-30", owner="team-ship"),
        ],
    })


@pytest.fixture
def flags_dir(tmp_path: Path) -> Path:
    flags = tmp_path / "flags"
    _write(flags, "a.json", {
        "live-flag": _flag(["a", "b"], "a", _split("a", "b")),
        "idle-flag": _flag(["a", "b"], "a", _split("a", "b")),
        "never-flag": _flag(["a", "b"], "a", _split("a", "b")),
        "done-flag": _flag(["a", "b"], "a", _split("a", "b")),
        "rolled-flag": _flag(["a", "b"], "b", {}),
        "undated-flag": _flag(["a", "b"], "a", _split("a", "b", weights=[0, 100])),  # everyone gets b, no date
    })
    _write(flags, "b.json", {
        "broken-flag": _flag(["a", "b"], "a", _split("a", "c")),
        "orphan-flag": _flag(["on", "off"], "off", {}, metadata={"owner": "team-orphan"}),
        "maintenance-mode": _flag(["on", "off"], "off", {}, metadata={"permanent": True}),
        "ops-kill-switch": _flag(["on", "off"], "off", {}),
    })
    _write(flags, "c.json", {  # one-variant flags: rolled out for >= 14 days or not (yet)
        "shipped-flag": _flag(["a", "b"], "a", _split("a", "b", weights=[0, 100]),
                              metadata={"rolled_out_at": "2026-12-01T09:30:00Z", "last_modified": "2026-12-18"}),
        "baking-flag": _flag(["a", "b"], "a", {}, metadata={"last_modified": "2026-12-15"}),
        "bad-rollout": _flag(["a", "b"], "b", {"if": [{"var": "beta"}, "zzz", "b"]},
                             metadata={"rolled_out_at": "2026-01-01"}),
        "paused-flag": _flag(["a", "b"], "a", state="DISABLED", metadata={"last_modified": "2026-01-01"}),
        "legacy-off": _flag(["on", "off"], "off", state="DISABLED", metadata={"owner": "team-legacy"}),
    }, metadata={"last_modified": "2026-05-01"})  # flag-set metadata: legacy-off inherits this date
    (flags / "notes.txt").write_text("not a flag file")
    return flags


@pytest.fixture
def exposures() -> pd.DataFrame:
    return pd.DataFrame({
        "experiment_id": ["exp_live", "exp_live", "exp_idle", "exp_done"],
        "last_exposure_at": pd.to_datetime(
            ["2026-12-18T10:00:00Z", "2026-12-19T23:00:00Z", "2026-11-20T08:00:00Z", "2026-12-05T12:00:00Z"]),
        "units": [900, 1200, 40, 5000],
    })


# --- parsing ------------------------------------------------------------------------------------------


def test_sample_flag_files_parse():
    flags = load_flag_files(SAMPLE_DATA / "flags")
    by_key = {f.key: f for f in flags}
    assert by_key["checkout-copy"].served_variants == {"standard", "benefits", "urgency"}
    assert by_key["checkout-legacy-stepper"].served_variants == {"on"}
    assert by_key["checkout-cta-color"].source_file == "flags/checkout.flagd.json"
    assert all(not f.unknown_targeted_variants for f in flags)


def test_served_variants_from_targeting(tmp_path):
    path = _write(tmp_path / "flags", "t.json", {
        "zero-weight": _flag(["a", "b", "c"], "a", _split("a", "b", "c", weights=[100, 0, 0])),
        "if-branches": _flag(["a", "b", "c"], "a", {"if": [{"in": ["@corp.com", {"var": "email"}]}, "b",
                                                          {"==": [{"var": "tier"}, "c"]}, "c", None]}),
        "nested": _flag(["a", "b", "c"], "a", {"if": [{"var": "beta"}, _split("b", "c"), "a"]}),
        "by-ref": _flag(["a", "b"], "a", {"$ref": "half"}),
        "disabled": _flag(["a", "b"], "a", _split("a", "b"), state="DISABLED"),
        "no-targeting": _flag(["a", "b"], "b"),
        "bad-target": _flag(["a", "b"], "a", _split("a", "zzz")),
    }, **{"$evaluators": {"half": _split("a", "b")}})
    served = {f.key: f.served_variants for f in load_flag_file(path)}
    assert served["zero-weight"] == {"a"}
    assert served["if-branches"] == {"a", "b", "c"}  # "@corp.com" is a condition value, not a result
    assert served["nested"] == {"a", "b", "c"}
    assert served["by-ref"] == {"a", "b"}
    assert served["disabled"] == {"a"}
    assert served["no-targeting"] == {"b"}
    bad = next(f for f in load_flag_file(path) if f.key == "bad-target")
    assert bad.served_variants == {"a"} and bad.unknown_targeted_variants == {"zzz"}


def test_rollout_variant_is_what_every_evaluation_returns(tmp_path):
    cond = {"==": [{"var": "tier"}, "gold"]}
    path = _write(tmp_path / "flags", "r.json", {
        "zero-weight": _flag(["a", "b"], "a", _split("a", "b", weights=[100, 0])),
        "hundred-b": _flag(["a", "b"], "a", _split("a", "b", weights=[0, 100])),  # default only on errors
        "ref-hundred": _flag(["a", "b"], "a", {"$ref": "all_b"}),
        "if-same": _flag(["a", "b"], "a", {"if": [cond, "b", _split("b")]}),
        "if-no-else": _flag(["a", "b"], "a", {"if": [cond, "b"]}),  # no else: null -> default 'a' for some
        "split": _flag(["a", "b"], "a", _split("a", "b")),
        "disabled": _flag(["a", "b"], "b", _split("a", "b"), state="DISABLED"),
        "no-targeting": _flag(["a", "b"], "b"),
        "unknown": _flag(["a", "b"], "b", {"if": [cond, "zzz", "b"]}),
    }, **{"$evaluators": {"all_b": _split("b", "a", weights=[1, 0])}})
    got = {f.key: f.rollout_variant for f in load_flag_file(path)}
    assert got == {"zero-weight": "a", "hundred-b": "b", "ref-hundred": "b", "if-same": "b", "if-no-else": None,
                   "split": None, "disabled": "b", "no-targeting": "b", "unknown": None}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"flags": {"x": {"state": "ENABLED",,}}}', r"bad\.json: invalid JSON at line 1, column \d+"),
        ('{\n  "flags": {\n    "x": 1\n  ]\n}', r"bad\.json: invalid JSON at line 4, column 3"),
        (json.dumps({"flags": {"checkout-copy": _flag(["blue", "green"], "gold")}}),
         r"flags/bad\.json: flags\.checkout-copy\.defaultVariant: 'gold' is not a variant \(known: blue, green\)"),
        (json.dumps({"flags": {"x": _flag(["a", "b"], "a", state="ON")}}),
         r"flags/bad\.json: flags\.x\.state: 'ON' is not one of ENABLED, DISABLED"),
        (json.dumps({"flags": {"x": {"state": "ENABLED", "defaultVariant": "a"}}}),
         r"flags/bad\.json: flags\.x\.variants: missing or empty"),
        (json.dumps({"flags": {"x": _flag(["a"], "a", targeting=[1])}}), r"flags\.x\.targeting: must be"),
        (json.dumps({"flags": {"x": _flag(["a"], "a", {"$ref": "nope"})}}), r"\$ref 'nope' is not defined"),
        (json.dumps({"flag": {}}), r"flags/bad\.json: flags: missing or not an object"),
        ('{"flags": {"x": {}, "x": {}}}', r"duplicate key 'x'"),
        (json.dumps({"flags": {"x": _flag(["a", "b"], "a", metadata={"rolled_out_at": "last week"})}}),
         r"flags/bad\.json: flags\.x\.metadata\.rolled_out_at: 'last week' is not an ISO-8601 date"),
        (json.dumps({"flags": {"x": _flag(["a"], "a")}, "metadata": {"last_modified": 20261101}}),
         r"flags/bad\.json: metadata\.last_modified: 20261101 is not an ISO-8601 date"),
        (json.dumps({"flags": {"x": _flag(["a", "b"], "a", {"fractional": [{"var": "k"}, ["a", 50], ["b", "50"]]})}}),
         r"flags/bad\.json: flags\.x\.targeting: fractional bucket 2 \[\"b\", \"50\"\]: "
         r"expected \[variant, weight >= 0\]"),
        (json.dumps({"flags": {"x": _flag(["a", "b"], "a", _split("a", "b", weights=[0, 0]))}}),
         r"flags\.x\.targeting: fractional: needs at least one bucket with a positive weight"),
        (json.dumps({"flags": {"x": _flag(["a"], "a", {"$ref": "r"})}, "$evaluators": {"r": {"fractional": [[1, 2]]}}}),
         r"flags/bad\.json: \$evaluators\.r: fractional bucket 1 \[1, 2\]"),
    ],
)
def test_malformed_flag_files_name_file_and_path(tmp_path, content, expected):
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "bad.json").write_text(content)
    with pytest.raises(FlagFileError, match=expected):
        load_flag_files(flags)


def test_flag_defined_in_two_files_is_an_error(tmp_path):
    flags = tmp_path / "flags"
    _write(flags, "one.json", {"dup": _flag(["a", "b"], "a")})
    _write(flags, "two.json", {"dup": _flag(["a", "b"], "a")})
    with pytest.raises(FlagFileError, match=r"two\.json: flags\.dup: flag also defined in flags/one\.json"):
        load_flag_files(flags)


def test_flag_csv_export(tmp_path):
    path = tmp_path / "flags.csv"
    path.write_text(
        "key,state,variants,default_variant,last_modified,owner\n"
        "live-flag,ENABLED,a;b,a,2026-11-01,team-live\n"
        "off-flag,disabled,on;off,off,2026-01-01,\n"
    )
    flags = {f.key: f for f in load_flag_csv(path)}
    assert flags["live-flag"].served_variants == {"a", "b"}  # no targeting in CSV: assume all can be served
    assert flags["live-flag"].metadata == {"owner": "team-live", "last_modified": "2026-11-01"}
    assert flags["off-flag"].state == "DISABLED" and flags["off-flag"].served_variants == {"off"}
    path.write_text("key,state,variants,default_variant,last_modified,owner\nx,ENABLED,a;b,c,,\n")
    with pytest.raises(FlagFileError, match=r"flags\.csv: line 2 \(x\): default_variant: 'c' is not a variant"):
        load_flag_csv(path)
    path.write_text("key,state,variants,last_modified,owner\nx,ENABLED,a;b,01/11/2026,t\n")
    with pytest.raises(FlagFileError, match=r"flags\.csv: line 2 \(x\): last_modified: '01/11/2026' is not an ISO"):
        load_flag_csv(path)
    path.write_text("key,state,variants\nx,ENABLED,a;b\n")
    with pytest.raises(FlagFileError, match=r"flags\.csv: header: missing column\(s\) last_modified, owner"):
        load_flag_csv(path)


def test_flag_csv_in_the_issue_form_feeds_the_audit(tmp_path, registry, exposures):
    """key,state,variants,last_modified,owner (no default_variant); extra columns become metadata."""
    path = tmp_path / "export.csv"
    path.write_text(
        "key,state,variants,last_modified,owner,type\n"
        "live-flag,ENABLED,a;b,2026-11-01,team-live,\n"
        "done-flag,ENABLED,a;b,2026-11-01,,\n"
        "shipped-flag,DISABLED,a;b,2026-11-20T08:00:00Z,,\n"
        "legacy-flag,ENABLED,on,2026-12-10,team-legacy,\n"
        "panic-button,ENABLED,on;off,2026-01-01,team-sre,kill_switch\n"
    )
    flags = load_flag_csv(path)
    assert {f.key: f.default_variant for f in flags}["shipped-flag"] == "a"  # first listed variant
    audit = audit_flags(flags, registry, exposures, TODAY).set_index("flag_key")
    assert audit.loc["live-flag", "classification"] == "active"
    assert audit.loc["done-flag", "classification"] == "stale_concluded"
    assert audit.loc["shipped-flag", "classification"] == "fully_rolled_out"
    assert audit.loc["shipped-flag", "age_days"] == 30 and audit.loc["shipped-flag", "source_file"] == "export.csv"
    assert audit.loc["legacy-flag", "classification"] == "orphan"  # one variant for 10 days only: not yet
    assert "(10 days; removal is advised after 14)" in audit.loc["legacy-flag", "reason"]
    assert audit.loc["panic-button", "classification"] == "permanent"
    later = audit_flags(flags, registry, exposures, TODAY + dt.timedelta(days=4)).set_index("flag_key")
    assert later.loc["legacy-flag", "classification"] == "fully_rolled_out"
    assert later.loc["legacy-flag", "recommended_action"] == "remove the flag, keep the 'on' code path"


# --- audit --------------------------------------------------------------------------------------------


def test_audit_classifies_every_case(flags_dir, registry, exposures):
    audit = audit_flags(load_flag_files(flags_dir), registry, exposures, TODAY, inactive_days=14)
    assert list(audit.columns) == AUDIT_COLUMNS
    got = dict(zip(audit["flag_key"], audit["classification"]))
    assert got == {
        "maintenance-mode": "permanent",
        "ops-kill-switch": "permanent",
        "orphan-flag": "orphan",
        "ghost-flag": "missing",
        "done-flag": "stale_concluded",
        "broken-flag": "invalid_targeting",
        "idle-flag": "inactive",
        "never-flag": "inactive",
        "live-flag": "active",
        "rolled-flag": "active",
        "shipped-flag": "fully_rolled_out",
        "legacy-off": "fully_rolled_out",
        "baking-flag": "active",
        "undated-flag": "active",
        "bad-rollout": "invalid_targeting",
        "paused-flag": "active",
    }
    row = audit.set_index("flag_key")
    assert row.loc["done-flag", "recommended_action"] == "roll out the winning variant and remove the flag"
    assert row.loc["done-flag", "age_days"] == 15 and row.loc["done-flag", "owner"] == "team-done"
    assert "concluded" in row.loc["done-flag", "reason"] and "'a', 'b'" in row.loc["done-flag", "reason"]
    assert row.loc["orphan-flag", "owner"] == "team-orphan" and pd.isna(row.loc["orphan-flag", "experiment_id"])
    assert "No experiment in the registry" in row.loc["orphan-flag", "reason"]
    assert pd.isna(row.loc["ghost-flag", "source_file"]) and row.loc["ghost-flag", "experiment_id"] == "exp_missing"
    assert "no flag file defines" in row.loc["ghost-flag", "reason"]
    assert "'c'" in row.loc["broken-flag", "reason"]
    assert row.loc["idle-flag", "age_days"] == 30 and "30 days ago" in row.loc["idle-flag", "reason"]
    assert pd.isna(row.loc["never-flag", "age_days"]) and "no exposure at all" in row.loc["never-flag", "reason"]
    assert row.loc["live-flag", "age_days"] == 1 and "1,200 units" in row.loc["live-flag", "reason"]
    assert row.loc["live-flag", "owner"] == "team-live"
    assert "permanent" in row.loc["maintenance-mode", "reason"]
    assert "removed-flag" not in got  # concluded and cleaned up: nothing to report
    # fully rolled out: 100% fractional to 'b' (default 'a' is only the error fallback) since 2026-12-01
    assert row.loc["shipped-flag", "recommended_action"] == "remove the flag, keep the 'b' code path"
    assert row.loc["shipped-flag", "age_days"] == 19 and row.loc["shipped-flag", "owner"] == "team-ship"
    assert row.loc["shipped-flag", "experiment_id"] == "exp_shipped"
    assert "since at least 2026-12-01 (19 days, limit 14)" in row.loc["shipped-flag", "reason"]
    # DISABLED orphan, dated by the flag set's metadata; flagd treats it as absent -> in-code default
    assert row.loc["legacy-off", "owner"] == "team-legacy" and row.loc["legacy-off", "age_days"] == 233
    assert "in-code default" in row.loc["legacy-off", "recommended_action"]
    assert "no experiment in the registry uses it" in row.loc["legacy-off", "reason"]
    assert "'a' since 2026-12-15 (5 days; removal is advised after 14)" in row.loc["baking-flag", "reason"]
    assert row.loc["baking-flag", "recommended_action"] == "none yet: remove the flag from 2026-12-29 on"
    assert "rollout age is unknown" in row.loc["undated-flag", "reason"]
    assert "rolled_out_at" in row.loc["undated-flag", "recommended_action"]
    assert "DISABLED" in row.loc["paused-flag", "reason"]  # a running experiment's flag is never "rolled out"
    assert "'zzz'" in row.loc["bad-rollout", "reason"]


def test_audit_order_is_by_severity_then_key(flags_dir, registry, exposures):
    audit = audit_flags(load_flag_files(flags_dir), registry, exposures, TODAY)
    ranks = [SEVERITY_ORDER.index(c) for c in audit["classification"]]
    keys = list(zip(ranks, audit["flag_key"]))
    assert keys == sorted(keys)


def test_audit_is_identical_across_runs(flags_dir, registry, exposures):
    first = audit_flags(load_flag_files(flags_dir), registry, exposures, TODAY)
    second = audit_flags(list(reversed(load_flag_files(flags_dir))), registry,
                         exposures.sample(frac=1, random_state=3), TODAY)
    pd.testing.assert_frame_equal(first, second)


def test_rollout_days_is_configurable(flags_dir, registry, exposures):
    flags = load_flag_files(flags_dir)
    strict = audit_flags(flags, registry, exposures, TODAY, rollout_days=30).set_index("flag_key")
    assert strict.loc["shipped-flag", "classification"] == "active"
    assert strict.loc["shipped-flag", "recommended_action"] == "none yet: remove the flag from 2026-12-31 on"
    eager = audit_flags(flags, registry, exposures, TODAY, rollout_days=0).set_index("flag_key")
    assert eager.loc["baking-flag", "classification"] == "fully_rolled_out"
    assert eager.loc["paused-flag", "classification"] == "active"  # its experiment is running
    early = audit_flags(flags, registry, exposures, dt.date(2026, 11, 25)).set_index("flag_key")
    assert early.loc["shipped-flag", "classification"] == "active"  # rolled_out_at is after "today"
    assert "is in the future" in early.loc["shipped-flag", "reason"]
    with pytest.raises(ValueError, match="rollout_days"):
        audit_flags(flags, registry, exposures, TODAY, rollout_days=-1)


def test_inactive_grace_period_and_no_exposure_table(flags_dir, registry):
    early = audit_flags(load_flag_files(flags_dir), registry, None, dt.date(2026, 11, 10))
    row = early.set_index("flag_key")
    assert row.loc["never-flag", "classification"] == "active"
    assert "grace period" in row.loc["never-flag", "reason"]
    late = audit_flags(load_flag_files(flags_dir), registry, pd.DataFrame(), TODAY).set_index("flag_key")
    assert late.loc["live-flag", "classification"] == "inactive"


def test_audit_on_sample_data():
    registry = load_registry(SAMPLE_DATA / "registry")
    flags = load_flag_files(SAMPLE_DATA / "flags")
    audit = audit_flags(flags, registry, None, dt.date(2026, 11, 5))
    got = dict(zip(audit["flag_key"], audit["classification"]))
    assert got["checkout-legacy-stepper"] == "orphan"
    assert got["checkout-copy"] == "active"
    assert audit.equals(audit_flags(flags, registry, None, dt.date(2026, 11, 5)))


# --- exposure activity from the simulator -------------------------------------------------------------


def _simulated_last_exposure(out_dir: Path, seed: int = 7) -> pd.DataFrame:
    """Simulate the sample registry and aggregate exposures the way the asset does in SQL."""
    config = SimulationConfig(users=400, days=3, seed=seed, compress=False, sources=["web_sdk", "ios_sdk"],
                              exposure_mode={"checkout_mvt": "per_factor"})
    simulate(load_registry(SAMPLE_DATA / "registry"), config, out_dir, log=lambda *_: None)
    events = pd.concat([pd.read_json(f, lines=True, dtype={"ts": str})
                        for f in sorted(out_dir.glob("raw/*/dt=*/*.jsonl"))])
    exposed = events[events["event_type"] == "exposure"]
    return (exposed.groupby("experiment_id")
            .agg(last_exposure_at=("ts", "max"), units=("unit_id", "nunique")).reset_index())


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> pd.DataFrame:
    return _simulated_last_exposure(tmp_path_factory.mktemp("sim"))


def test_audit_on_simulated_exposures(simulated):
    registry = load_registry(SAMPLE_DATA / "registry")
    flags = load_flag_files(SAMPLE_DATA / "flags")
    assert set(simulated["experiment_id"]) == {"checkout_mvt", "search_ranking_frac", "pricing_abn"}
    assert pd.to_datetime(simulated["last_exposure_at"]).dt.date.max() == dt.date(2026, 11, 3)

    live = audit_flags(flags, registry, simulated, dt.date(2026, 11, 5)).set_index("flag_key")
    experiment_flags = [k for k in live.index if k != "checkout-legacy-stepper"]
    assert len(experiment_flags) == 8 and set(live.loc[experiment_flags, "classification"]) == {"active"}
    units = simulated.set_index("experiment_id")["units"]
    assert f"{units['pricing_abn']:,} units" in live.loc["pricing-banner", "reason"]
    assert live.loc["checkout-legacy-stepper", "classification"] == "orphan"

    quiet = audit_flags(flags, registry, simulated, dt.date(2026, 11, 25), inactive_days=14).set_index("flag_key")
    assert set(quiet.loc[experiment_flags, "classification"]) == {"inactive"}
    assert set(quiet.loc[experiment_flags, "age_days"]) == {22}
    patient = audit_flags(flags, registry, simulated, dt.date(2026, 11, 25), inactive_days=30)
    assert "inactive" not in set(patient["classification"])

    # pricing_abn concluded on the last simulated day while its flag still splits three ways
    ended = registry.experiment("pricing_abn").model_copy(
        update={"status": "concluded", "end_date": dt.date(2026, 11, 3)})
    concluded = Registry(experiments=[ended if e.id == "pricing_abn" else e for e in registry.experiments],
                         metrics=registry.metrics)
    audit = audit_flags(flags, concluded, simulated, dt.date(2026, 11, 5)).set_index("flag_key")
    assert audit.loc["pricing-banner", "classification"] == "stale_concluded"
    assert audit.loc["pricing-banner", "age_days"] == 2 and audit.loc["pricing-banner", "owner"] == "team-growth"
    assert "3 variants" in audit.loc["pricing-banner", "reason"]


def test_audit_is_stable_across_simulation_reruns(simulated, tmp_path):
    registry = load_registry(SAMPLE_DATA / "registry")
    flags = load_flag_files(SAMPLE_DATA / "flags")
    again = _simulated_last_exposure(tmp_path)  # same seed, fresh directory
    first = audit_flags(flags, registry, simulated, dt.date(2026, 11, 20))
    second = audit_flags(list(reversed(flags)), registry, again.iloc[::-1], dt.date(2026, 11, 20))
    pd.testing.assert_frame_equal(first, second)
