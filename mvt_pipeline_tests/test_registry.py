import json

import pytest
import yaml

from mvt_pipeline.registry import RegistryError, load_registry
from mvt_pipeline.registry.warehouse_tables import registry_frames

from .conftest import SAMPLE_REGISTRY


def test_sample_registry_loads_with_the_three_designs():
    reg = load_registry(SAMPLE_REGISTRY)
    checkout = reg.experiment("checkout_mvt")
    assert [len(f.levels) for f in checkout.factors] == [2, 2, 3]
    assert reg.experiment("search_ranking_frac").design.generators == ["D=ABC"]
    assert len(reg.experiment("pricing_abn").factors[0].levels) == 3


def _write(tmp_path, experiments, metrics=None):
    if metrics is None:
        metrics = yaml.safe_load((SAMPLE_REGISTRY / "metrics.yaml").read_text())["metrics"]
    (tmp_path / "experiments.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    (tmp_path / "metrics.yaml").write_text(yaml.safe_dump({"metrics": metrics}))


def _experiment(**overrides):
    exp = {
        "id": "exp_one", "owner": "team", "hypothesis": "h", "status": "running", "start_date": "2026-11-01",
        "factors": [{"name": "color", "levels": ["blue", "green"], "control": "blue"}],
        "metrics": {"primary": ["checkout_conversion"]},
    }
    exp.update(overrides)
    return exp


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"factors": [{"name": "color", "levels": ["blue", "green"], "control": "red"}]}, "control level 'red'"),
        ({"factors": [{"name": "Color; drop table", "levels": ["a", "b"], "control": "a"}]}, "factors.0.name"),
        ({"metrics": {"primary": ["nope"]}}, "unknown metric 'nope'"),
        ({"design": {"type": "fractional", "generators": ["D=ABC"]}}, "generator"),
        ({"status": "paused"}, "status"),
        # SDK keys (issue #17): variations must map to levels, keys are validated, one owner per key
        ({"factors": [{"name": "color", "levels": ["blue", "green"], "control": "blue", "sdk_key": "exp-color",
                       "variations": {"0": "blue", "1": "red"}}]}, "variations map to ['red']"),
        ({"factors": [{"name": "color", "levels": ["blue", "green"], "control": "blue",
                       "sdk_key": "bad key; drop"}]}, "factors.0.sdk_key"),
        ({"factors": [{"name": "a", "levels": ["x", "y"], "control": "x", "sdk_key": "k"},
                      {"name": "b", "levels": ["x", "y"], "control": "x", "sdk_key": "k"}]},
         "sdk_key must differ between the factors"),
        ({"hash_attribute": "id; drop"}, "hash_attribute"),
        ({"seed": ""}, "seed"),
    ],
)
def test_bad_registry_names_file_path_and_reason(tmp_path, overrides, fragment):
    _write(tmp_path, [_experiment(**overrides)])
    with pytest.raises(RegistryError) as err:
        load_registry(tmp_path)
    message = str(err.value)
    assert "experiments.yaml" in message
    assert fragment in message


def test_duplicate_ids_are_rejected(tmp_path):
    _write(tmp_path, [_experiment(), _experiment()])
    with pytest.raises(RegistryError, match="duplicate experiment ids"):
        load_registry(tmp_path)


def test_sdk_keys_map_factors_and_variations(tmp_path):
    factors = [{"name": "button_color", "levels": ["blue", "green"], "control": "blue",
                "sdk_key": "mvt_checkout_2x2__button_color"},
               {"name": "layout", "levels": ["one_page", "two_page"], "control": "one_page",
                "sdk_key": "exp-checkout-layout", "variations": {"0": "one_page", "1": "two_page"}}]
    _write(tmp_path, [_experiment(factors=factors, hash_attribute="id", seed="checkout-2x2")])
    exp = load_registry(tmp_path).experiment("exp_one")
    assert exp.factor("layout").variations == {"0": "one_page", "1": "two_page"}
    assert exp.factor("button_color").sdk_key == "mvt_checkout_2x2__button_color"
    assert exp.hash_salt == ("seed", "checkout-2x2") and exp.hash_attribute == "id"


def test_an_sdk_key_belongs_to_one_experiment(tmp_path):
    factor = {"name": "color", "levels": ["blue", "green"], "control": "blue", "sdk_key": "exp-color"}
    _write(tmp_path, [_experiment(factors=[factor]), _experiment(id="exp_two", factors=[factor])])
    with pytest.raises(RegistryError, match=r"sdk_key used by more than one experiment: \['exp-color'\]"):
        load_registry(tmp_path)


def test_registry_tables_cover_every_factor_level_and_metric():
    reg = load_registry(SAMPLE_REGISTRY)
    frames = registry_frames(reg)
    levels = frames["registry_levels"]
    assert len(levels) == sum(len(f.levels) for e in reg.experiments for f in e.factors)
    weights = levels.groupby(["experiment_id", "factor"])["planned_weight"].sum()
    assert weights.round(12).eq(1.0).all()
    assert set(frames["registry_metrics"]["metric"]) == {m.name for m in reg.metrics}


@pytest.mark.parametrize("exp_id, ok", [
    ("exp-checkout-layout", True), ("checkout.v2", True), ("2026-q4_pricing", True),
    ("Exp-Upper", False), ("a..b", False), ("ends.", False), ("index", False), ("-lead", False),
    ("has space", False), ("../etc", False), ("x" * 64, False),
])
def test_experiment_ids_may_hold_hyphens_and_dots_under_a_strict_pattern(tmp_path, exp_id, ok):
    _write(tmp_path, [_experiment(id=exp_id)])
    if ok:
        assert load_registry(tmp_path).experiments[0].id == exp_id
    else:
        with pytest.raises(RegistryError, match=r"at experiments\[0\] .*\.id"):
            load_registry(tmp_path)


def test_a_hyphenated_experiment_is_ingested_and_gets_its_report_page(tmp_path):
    import duckdb

    from mvt_pipeline.ingest import ingest_partition
    from mvt_pipeline.reports.night_files import _plain_name

    (tmp_path / "registry").mkdir()
    _write(tmp_path / "registry", [_experiment(id="exp-checkout.layout")])
    registry = load_registry(tmp_path / "registry")
    folder = tmp_path / "raw" / "web_sdk" / "dt=2026-11-02"
    folder.mkdir(parents=True)
    exposure = {"event_id": "x1", "event_type": "exposure", "ts": "2026-11-02T10:00:00Z", "unit_id": "u1",
                "experiment_id": "exp-checkout.layout", "assignment": {"color": "green"}}
    folder.joinpath("e.jsonl").write_text(json.dumps(exposure) + "\n")
    conn = duckdb.connect()
    summary = ingest_partition(conn, tmp_path / "raw", "2026-11-02", registry)
    assert summary.rows_accepted == 1
    assert conn.execute("select experiment_id from raw.events").fetchone() == ("exp-checkout.layout",)
    assert _plain_name("exp-checkout.layout.html") == "exp-checkout.layout.html"
