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
