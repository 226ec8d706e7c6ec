"""Registry lint: one YAML fixture per rule, the sample registry is clean, and the lint never raises."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from mvt_pipeline.audit import load_flag_files
from mvt_pipeline.audit.flagd import FlagDefinition
from mvt_pipeline.registry import load_registry
from mvt_pipeline.registry.lint import LINT_COLUMNS, RULES, lint_registry, lint_registry_dir
from mvt_pipeline.registry.loader import RegistryError

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "data"
TODAY = dt.date(2026, 12, 20)
METRICS = [{"name": "conv", "kind": "binary", "source": "conv"}]


def _flag(key: str, variants: list[str]) -> FlagDefinition:
    return FlagDefinition(key=key, state="ENABLED", variants={v: v for v in variants}, default_variant=variants[0],
                          targeting={}, source_file="flags/test.json", served_variants=frozenset(variants))


FLAGS = [_flag("flag-a", ["a", "b"]), _flag("flag-b", ["a", "b"]), _flag("flag-c", ["a", "b"])]


def _exp(exp_id: str, flag_key: str | None = "flag-a", **overrides) -> dict:
    factor = {"name": "f", "levels": ["a", "b"], "control": "a"}
    if flag_key:
        factor["flag_key"] = flag_key
    exp = {"id": exp_id, "owner": "team-x", "hypothesis": "b beats a", "status": "running",
           "start_date": "2026-12-01", "end_date": "2027-01-31", "factors": [factor],
           "metrics": {"primary": ["conv"]}}
    exp.update(overrides)
    return exp


def _lint(tmp_path: Path, experiments: list, metrics: list | None = None, flags=FLAGS, today=TODAY):
    (tmp_path / "experiments.yaml").write_text(yaml.safe_dump({"experiments": experiments}, sort_keys=False))
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump({"metrics": METRICS if metrics is None else metrics}))
    return lint_registry_dir(tmp_path, flags, today)


def _rules(frame) -> set[tuple[str, str, str | None]]:
    return set(zip(frame["severity"], frame["rule"], frame["experiment_id"]))


def test_clean_registry_has_no_rows(tmp_path):
    frame = _lint(tmp_path, [_exp("one", "flag-a"), _exp("two", "flag-b", layer="other")])
    assert list(frame.columns) == LINT_COLUMNS
    assert frame.empty


def test_sample_registry_and_flags_lint_without_errors():
    flags = load_flag_files(SAMPLE_DATA / "flags")
    during = lint_registry_dir(SAMPLE_DATA / "registry", flags, dt.date(2026, 11, 5))
    assert during.empty, during.to_string()
    after = lint_registry_dir(SAMPLE_DATA / "registry", flags, dt.date(2027, 1, 10))
    assert set(after["rule"]) == {"past_end_running"} and set(after["severity"]) == {"WARN"}
    loaded = lint_registry(load_registry(SAMPLE_DATA / "registry"), flags, dt.date(2026, 11, 5))
    assert loaded.empty


def test_duplicate_id(tmp_path):
    frame = _lint(tmp_path, [_exp("one", "flag-a"), _exp("two", "flag-b", layer="l2"),
                             _exp("one", "flag-c", layer="l3")])
    dup = frame[frame["rule"] == "duplicate_id"]
    assert _rules(dup) == {("ERROR", "duplicate_id", "one")}
    assert "experiments[0], experiments[2]" in dup["detail"].iloc[0]
    assert "invalid_registry" not in set(frame["rule"])  # the pydantic failure is not reported twice
    assert "overlap_without_orthogonality" not in set(frame["rule"])  # a duplicate is not an overlap


def test_duplicate_metric_name(tmp_path):
    frame = _lint(tmp_path, [_exp("one")], metrics=METRICS * 2)
    assert _rules(frame) == {("ERROR", "duplicate_id", None)}
    assert "metrics.yaml: metric name 'conv' is defined 2 times" in frame["detail"].iloc[0]


def test_unknown_metric(tmp_path):
    frame = _lint(tmp_path, [_exp("one", metrics={"primary": ["conv"], "guardrails": ["nope"]})])
    assert _rules(frame) == {("ERROR", "unknown_metric", "one")}
    assert "experiments[0].metrics.guardrails[0]: 'nope'" in frame["detail"].iloc[0]


@pytest.mark.parametrize("control", [None, "c"])
def test_missing_control(tmp_path, control):
    factor = {"name": "f", "levels": ["a", "b"], "flag_key": "flag-a"}
    if control:
        factor["control"] = control
    frame = _lint(tmp_path, [_exp("one", factors=[factor])])
    assert _rules(frame) == {("ERROR", "missing_control", "one")}
    assert "experiments[0].factors[0].control" in frame["detail"].iloc[0]


@pytest.mark.parametrize(("field", "value"), [("owner", None), ("owner", "  "), ("hypothesis", "TBD"),
                                              ("hypothesis", None)])
def test_missing_owner_or_hypothesis(tmp_path, field, value):
    exp = _exp("one")
    if value is None:
        del exp[field]
    else:
        exp[field] = value
    frame = _lint(tmp_path, [exp])
    assert _rules(frame) == {("ERROR", f"missing_{field}", "one")}


def test_past_end_running_is_a_warning_and_only_for_running(tmp_path):
    frame = _lint(tmp_path, [_exp("late", end_date="2026-12-10"),
                             _exp("done", "flag-b", status="concluded", end_date="2026-12-10")])
    assert _rules(frame) == {("WARN", "past_end_running", "late")}
    assert "10 days ago" in frame["detail"].iloc[0]


def test_overlap_on_the_same_flag_is_an_error_even_across_layers(tmp_path):
    frame = _lint(tmp_path, [_exp("b_exp", "flag-a", layer="x"), _exp("a_exp", "flag-a", layer="y")])
    assert _rules(frame) == {("ERROR", "overlap_without_orthogonality", "a_exp")}
    assert "'flag-a'" in frame["detail"].iloc[0] and "'b_exp'" in frame["detail"].iloc[0]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({}, {}, True),                                   # both without a layer: the same default layer
        ({"layer": "x"}, {"layer": "x"}, True),           # same layer, same unit
        ({"layer": "x"}, {"layer": "y"}, False),          # different layers are orthogonal
        ({"layer": "x"}, {}, False),                      # a layer vs the default layer
        ({"unit": "account"}, {}, False),                 # different unit types
        ({"end_date": "2026-12-09"}, {"start_date": "2026-12-10"}, False),  # no date overlap
        ({"status": "draft"}, {}, False),                 # only running experiments count
        ({"end_date": None}, {"start_date": "2027-06-01", "end_date": None}, True),  # open-ended
        # SDKs that hash with their own seed (GrowthBook: the experiment key by default)
        ({"seed": "exp-a"}, {"seed": "exp-b"}, False),    # different seeds are independent
        ({"seed": "s1"}, {"seed": "s1"}, True),           # the same seed correlates them
        ({"seed": "s1", "layer": "x"}, {"layer": "x"}, False),  # a seed replaces the layer as the salt
        ({"hash_attribute": "id"}, {"hash_attribute": "deviceId"}, False),  # different attributes hashed
        ({"hash_attribute": "id"}, {"hash_attribute": "id"}, True),
    ],
)
def test_overlap_on_the_same_unit_and_layer_is_a_warning(tmp_path, a, b, expected):
    frame = _lint(tmp_path, [_exp("exp_a", "flag-a", **a), _exp("exp_b", "flag-b", **b)])
    overlap = frame[frame["rule"] == "overlap_without_orthogonality"]
    assert _rules(overlap) == ({("WARN", "overlap_without_orthogonality", "exp_a")} if expected else set())


def test_level_not_in_flag_variants(tmp_path):
    factor = {"name": "f", "levels": ["a", "z"], "control": "a", "flag_key": "flag-a"}
    frame = _lint(tmp_path, [_exp("one", factors=[factor]),
                             _exp("old", "flag-b", status="concluded", end_date="2026-12-10", factors=[
                                 {**factor, "flag_key": "flag-b"}])])
    assert _rules(frame) == {("ERROR", "level_not_in_flag_variants", "one")}  # ended experiments are skipped
    assert "'z'" in frame["detail"].iloc[0] and "flags/test.json" in frame["detail"].iloc[0]


def test_factor_without_flag(tmp_path):
    frame = _lint(tmp_path, [_exp("no_key", None), _exp("ghost", "flag-ghost", layer="g"),
                             _exp("gone", "flag-gone", status="stopped", end_date="2026-12-10")])
    assert _rules(frame) == {("WARN", "factor_without_flag", "no_key"), ("WARN", "factor_without_flag", "ghost")}
    assert frame.set_index("experiment_id").loc["ghost", "detail"].endswith("is not defined in any flag file")
    unknown_flags = _lint(tmp_path, [_exp("no_key", None)], flags=None)
    assert unknown_flags.empty  # flags=None: flag files unreadable, flag rules skipped


def test_schema_errors_become_rows_and_other_entries_are_still_linted(tmp_path):
    frame = _lint(tmp_path, [_exp("bad", status="paused"), _exp("late", "flag-b", layer="l", end_date="2026-12-01")])
    assert ("ERROR", "invalid_registry", "bad") in _rules(frame)
    assert ("WARN", "past_end_running", "late") in _rules(frame)
    detail = frame.loc[frame["rule"] == "invalid_registry", "detail"].iloc[0]
    assert detail.startswith("experiments.yaml: experiments[0].status:")


def test_unreadable_files_give_error_rows_not_exceptions(tmp_path):
    (tmp_path / "experiments.yaml").write_text("experiments: [\n  {id: one,\n")
    frame = lint_registry_dir(tmp_path, FLAGS, TODAY)  # metrics.yaml is absent too
    assert set(frame["rule"]) == {"invalid_registry"}
    details = " | ".join(frame["detail"])
    assert "experiments.yaml: not valid YAML" in details and "metrics.yaml: file not found" in details


def test_every_load_failure_is_an_error(tmp_path):
    cases = [[_exp("one"), _exp("one")], [_exp("one", owner="")], [_exp("one", metrics={"primary": ["x"]})],
             [_exp("one", start_date="2027-02-01")], [_exp("one", design={"type": "fractional"})]]
    for experiments in cases:
        frame = _lint(tmp_path, experiments)
        with pytest.raises(RegistryError):
            load_registry(tmp_path)
        assert (frame["severity"] == "ERROR").any(), experiments


def test_order_is_deterministic_and_documented(tmp_path):
    experiments = [_exp("zeta", None, end_date="2026-12-10"), _exp("alpha", "flag-a", owner=""),
                   _exp("beta", "flag-a", layer="q", metrics={"primary": ["nope"]})]
    first = _lint(tmp_path, experiments)
    second = _lint(tmp_path, list(reversed(experiments)))
    key = ["severity", "rule", "experiment_id"]
    assert first[key].equals(second[key])
    ranks = [(["ERROR", "WARN"].index(s), RULES.index(r)) for s, r in zip(first["severity"], first["rule"])]
    assert ranks == sorted(ranks)
    assert first["severity"].iloc[0] == "ERROR" and first["severity"].iloc[-1] == "WARN"


def test_cross_rules_still_run_on_an_experiment_missing_its_owner(tmp_path):
    frame = _lint(tmp_path, [_exp("alpha", "flag-a", owner=""), _exp("beta", "flag-a", layer="q")])
    assert _rules(frame) == {("ERROR", "missing_owner", "alpha"), ("ERROR", "overlap_without_orthogonality", "alpha")}


@pytest.mark.parametrize("bucket, correlated", [
    ([{"var": "targetingKey"}], True),                                        # every flag: the same buckets
    ([{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}], False),  # salted with the flag key
    ([], False),                                                              # flagd's default: salted
])
def test_factors_served_by_identically_bucketed_flags_are_an_error(tmp_path, bucket, correlated):
    import dataclasses

    targeting = {"fractional": [*bucket, ["a", 50], ["b", 50]]}
    flags = [dataclasses.replace(_flag(k, ["a", "b"]), targeting=targeting) for k in ("flag-a", "flag-b")]
    factors = [{"name": "f", "levels": ["a", "b"], "control": "a", "flag_key": "flag-a"},
               {"name": "g", "levels": ["a", "b"], "control": "a", "flag_key": "flag-b"}]
    frame = _lint(tmp_path, [_exp("two_factors", factors=factors)], flags=flags)
    rows = frame[frame["rule"] == "correlated_flag_buckets"]
    assert _rules(rows) == ({("ERROR", "correlated_flag_buckets", "two_factors")} if correlated else set())
    if correlated:
        assert "'flag-a'" in rows["detail"].iloc[0] and "$flagd.flagKey" in rows["detail"].iloc[0]


def test_the_sample_flags_serve_independent_factors():
    """The project's own flag files once bucketed every checkout flag by targetingKey alone."""
    frame = lint_registry_dir(SAMPLE_DATA / "registry", load_flag_files(SAMPLE_DATA / "flags"), TODAY)
    assert "correlated_flag_buckets" not in set(frame["rule"])
