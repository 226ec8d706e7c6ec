"""Hostile registry and flag files (issue #19): each fails fast with a RegistryError / FlagFileError
naming the file, the place and the reason; never hangs, never another exception, never follows a link.

Every hostile case runs under `_time_limit` (SIGALRM), so a regression fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvt_pipeline.audit import FlagFileError, load_flag_csv, load_flag_file, load_flag_files
from mvt_pipeline.audit.flagd import MAX_FLAG_FILE_BYTES
from mvt_pipeline.registry import Registry, RegistryError, load_registry
from mvt_pipeline.registry.lint import lint_registry_dir
from mvt_pipeline.registry.loader import MAX_REGISTRY_FILE_BYTES

from .conftest import SAMPLE_FLAGS, SAMPLE_REGISTRY

LIMIT_S = 10  # a guard against hangs, not a timing assertion: the old code ran for minutes
CANARY = "CANARY-7f3a9"
METRICS_TEXT = (SAMPLE_REGISTRY / "metrics.yaml").read_text()
EXPERIMENTS_TEXT = (SAMPLE_REGISTRY / "experiments.yaml").read_text()
FLAGS_TEXT = (SAMPLE_FLAGS / "checkout.flagd.json").read_text()


@contextlib.contextmanager
def _time_limit(seconds: float = LIMIT_S):
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An MVT_DATA_DIR with the sample registry and flags."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_REGISTRY, data / "registry")
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    monkeypatch.setenv("MVT_DATA_DIR", str(data))
    return data


def _registry_error(registry_dir: Path) -> str:
    with _time_limit(), pytest.raises(RegistryError) as err:
        load_registry(registry_dir)
    return str(err.value)


def _experiments(data_dir: Path, text: str) -> Path:
    path = data_dir / "registry" / "experiments.yaml"
    path.write_text(text)
    return path


def _one_experiment(**overrides) -> dict:
    exp = {"id": "exp_one", "owner": "team", "hypothesis": "h", "status": "running", "start_date": "2026-11-01",
           "factors": [{"name": "color", "levels": ["blue", "green"], "control": "blue"}],
           "metrics": {"primary": ["checkout_conversion"]}}
    exp.update(overrides)
    return exp


def _alias_bomb(levels: int = 9) -> str:
    lines = ['      a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


# --- YAML ------------------------------------------------------------------------------------------


def test_alias_bomb_in_an_experiment_id_fails_fast_naming_file_line_and_column(data_dir):
    bomb = "experiments:\n  - owner: team\n    bomb:\n" + _alias_bomb() + "\n    id: *a9\n"
    assert len(bomb) < 3000
    path = _experiments(data_dir, bomb)
    message = _registry_error(data_dir / "registry")
    assert message.startswith(f"{path}: line ")
    assert "column" in message and "aliases are not allowed" in message
    assert "experiments[0].bomb" in message  # the path inside the document


def test_the_lint_refuses_the_alias_bomb_too(data_dir):
    _experiments(data_dir, "experiments:\n  - bomb:\n" + _alias_bomb() + "\n")
    with _time_limit():
        frame = lint_registry_dir(data_dir / "registry", None, dt.date(2026, 11, 5))
    assert "aliases are not allowed" in " ".join(frame["detail"])
    assert set(frame["rule"]) == {"invalid_registry"}


def test_a_few_shared_values_still_load(data_dir):
    """yaml.safe_dump writes an anchor for each object met twice: bounded aliases, not banned."""
    factor = {"name": "color", "levels": ["blue", "green"], "control": "blue"}
    doc = {"experiments": [_one_experiment(id="exp_one", factors=[factor]),
                           _one_experiment(id="exp_two", factors=[factor])]}
    text = yaml.safe_dump(doc)
    assert "&id001" in text
    _experiments(data_dir, text)
    with _time_limit():
        registry = load_registry(data_dir / "registry")
    assert [e.id for e in registry.experiments] == ["exp_one", "exp_two"]


@pytest.mark.parametrize(("text", "fragments"), [
    ("experiments:\n  - id: a\n    owner: b\n    id: c\n",
     ["line 4, column 5", "experiments[0]", "duplicate key id (first at line 2)"]),
    ("experiments: []\nowners: {}\nexperiments: []\n", ["line 3", "duplicate key experiments"]),
    ("experiments:\n  - {1: a, true: b}\n", ["duplicate key true"]),  # equal once read: 1 == True
    ("experiments:\n  - &e {id: a}\n  - *e\n  - &e {id: b}\n", ["duplicate anchor"]),
    ("base: {owner: team}\nexperiments:\n  - <<: {owner: x}\n    id: a\n",
     ["experiments[0]", "merge keys (<<) are not allowed"]),
    ("experiments: &a [*a]\n", ["aliases are not allowed inside the value they name"]),
    ("experiments:\n  - start_date: 2026-02-30\n", ["line 2", "experiments[0].start_date", "day is out of range"]),
    ("experiments:\n  - planned_units: " + "9" * 5000 + "\n",
     ["experiments[0].planned_units", "cannot read this value"]),
    ("experiments: !!python/object/apply:os.system [echo]\n", ["not valid YAML", "could not determine a constructor"]),
    ("experiments: 5\n", ["experiments: expected a list, got int"]),
    ("- just a list\n", ["expected a mapping at the top level"]),
    ("experiments: [\n", ["not valid YAML"]),
])
def test_yaml_that_plain_yaml_accepts_or_crashes_on_is_refused_with_a_place(data_dir, text, fragments):
    path = _experiments(data_dir, text)
    message = _registry_error(data_dir / "registry")
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("depth", [33, 40, 10_000])
def test_nesting_deeper_than_the_limit_is_refused_with_its_path(data_dir, depth):
    _experiments(data_dir, "experiments:\n  - factors: " + "[" * depth + "]" * depth + "\n")
    message = _registry_error(data_dir / "registry")
    assert "nested deeper than 32 levels (MVT_MAX_JSON_DEPTH)" in message
    assert "experiments[0].factors[0][0]" in message and "line 2" in message


def test_the_depth_limit_follows_the_setting_and_counts_expanded_aliases(data_dir, monkeypatch):
    monkeypatch.setenv("MVT_MAX_JSON_DEPTH", "8")
    _experiments(data_dir, "deep: &d [[[[[1]]]]]\nexperiments: [[[[*d]]]]\n")
    message = _registry_error(data_dir / "registry")
    assert "nested deeper than 8 levels" in message and "once *d is expanded" in message


def test_non_utf8_registry_names_the_file_and_the_byte(data_dir):
    path = data_dir / "registry" / "metrics.yaml"
    path.write_bytes(b"metrics:\n  - name: caf\xe9\n")
    message = _registry_error(data_dir / "registry")
    assert message.startswith(f"{path}: not UTF-8 at line 2, byte offset 22 (invalid continuation byte, byte 0xe9)")


def test_an_oversized_registry_file_is_refused_before_parsing(data_dir):
    _experiments(data_dir, "experiments: []\n" + "#" * MAX_REGISTRY_FILE_BYTES)
    assert f"larger than the limit of {MAX_REGISTRY_FILE_BYTES:,} bytes" in _registry_error(data_dir / "registry")


# --- models ----------------------------------------------------------------------------------------


def _write_registry(data_dir: Path, experiments: list, metrics: list | None = None) -> None:
    _experiments(data_dir, yaml.safe_dump({"experiments": experiments}))
    if metrics is not None:
        (data_dir / "registry" / "metrics.yaml").write_text(yaml.safe_dump({"metrics": metrics}))


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, "nan", "-.inf"])
def test_weights_must_be_finite_and_positive(data_dir, weight):
    factor = {"name": "color", "levels": ["blue", "green"], "control": "blue", "weights": [1.0, weight]}
    _write_registry(data_dir, [_one_experiment(), _one_experiment(id="exp_two", factors=[factor])])
    message = _registry_error(data_dir / "registry")
    assert "experiments[1] (id=exp_two).factors.0.weights.1: Input should be" in message
    assert "finite" in message or "greater than 0" in message


def test_weights_whose_sum_overflows_are_refused(data_dir):
    factor = {"name": "color", "levels": ["blue", "green"], "control": "blue", "weights": [1e308, 1e308]}
    _write_registry(data_dir, [_one_experiment(factors=[factor])])
    assert "their sum is not a finite number" in _registry_error(data_dir / "registry")


@pytest.mark.parametrize(("overrides", "field"), [
    ({"mde": float("inf")}, "experiments[0] (id=exp_one).mde"),
    ({"alpha": float("nan")}, "experiments[0] (id=exp_one).alpha"),
    ({"power": float("nan")}, "experiments[0] (id=exp_one).power"),
    ({"decision_rules": {"max_telemetry_lag_hours": float("inf")}},
     "experiments[0] (id=exp_one).decision_rules.max_telemetry_lag_hours"),
    ({"decision_rules": {"burn_pause_share": float("nan")}},
     "experiments[0] (id=exp_one).decision_rules.burn_pause_share"),
    ({"planned_units": 2**80}, "experiments[0] (id=exp_one).planned_units"),
])
def test_every_experiment_float_is_finite(data_dir, overrides, field):
    _write_registry(data_dir, [_one_experiment(**overrides)])
    assert field in _registry_error(data_dir / "registry")


@pytest.mark.parametrize(("overrides", "field"), [
    ({"non_inferiority_margin": float("inf")}, "metrics[0] (name=m).non_inferiority_margin"),
    ({"slo": {"objective": 0.99, "good_below": float("nan")}}, "metrics[0] (name=m).slo.good_below"),
    ({"slo": {"objective": float("nan"), "good_below": 1}}, "metrics[0] (name=m).slo.objective"),
    ({"q": float("nan"), "kind": "quantile"}, "metrics[0] (name=m).q"),
    ({"winsorize": float("nan")}, "metrics[0] (name=m).winsorize"),
])
def test_every_metric_float_is_finite(data_dir, overrides, field):
    metric = {"name": "m", "kind": "continuous", "source": "m", **overrides}
    _write_registry(data_dir, [], [metric])
    message = _registry_error(data_dir / "registry")
    assert message.startswith(str(data_dir / "registry" / "metrics.yaml")) and field in message


# --- links, special files --------------------------------------------------------------------------


def _canary_target(tmp_path: Path) -> Path:
    target = tmp_path / f"outside-{CANARY}"
    target.mkdir()
    (target / "experiments.yaml").write_text(EXPERIMENTS_TEXT + f"# {CANARY}\n")
    (target / "metrics.yaml").write_text(METRICS_TEXT)
    (target / "checkout.flagd.json").write_text(FLAGS_TEXT)
    return target


def test_a_symlinked_registry_file_is_refused_without_naming_its_target(data_dir, tmp_path):
    target = _canary_target(tmp_path)
    link = data_dir / "registry" / "experiments.yaml"
    link.unlink()
    link.symlink_to(target / "experiments.yaml")
    message = _registry_error(data_dir / "registry")
    assert message == f"{link}: is a symbolic link; links are refused"
    assert CANARY not in message


@pytest.mark.parametrize("explicit", [False, True])
def test_a_symlinked_registry_folder_is_refused(data_dir, tmp_path, explicit):
    target = _canary_target(tmp_path)
    shutil.rmtree(data_dir / "registry")
    (data_dir / "registry").symlink_to(target)
    link = (tmp_path / "elsewhere") if explicit else data_dir / "registry"
    if explicit:  # a folder given outside MVT_DATA_DIR: the folder itself must not be a link
        link.symlink_to(target)
    message = _registry_error(link)
    assert "is a symbolic link" in message and CANARY not in message


def test_a_link_or_dotdot_anywhere_below_the_data_dir_is_refused(data_dir, tmp_path):
    """The kernel resolves `registry/sub/..` through `sub`, so neither a link nor `..` may appear there."""
    target = _canary_target(tmp_path)
    (data_dir / "registry" / "sub").symlink_to(target)
    message = _registry_error(data_dir / "registry" / "sub" / "..")
    assert "is a symbolic link (its folder 'sub')" in message and CANARY not in message
    assert "'..' is not allowed" in _registry_error(data_dir / "flags" / ".." / "registry")


def test_an_explicit_registry_outside_the_data_dir_still_loads(data_dir):
    with _time_limit():
        assert isinstance(load_registry(SAMPLE_REGISTRY), Registry)  # the repo's sample, MVT_DATA_DIR elsewhere


def test_the_data_dir_itself_may_be_a_link(tmp_path, monkeypatch):
    real = tmp_path / "real"
    shutil.copytree(SAMPLE_REGISTRY, real / "registry")
    (tmp_path / "data").symlink_to(real)
    monkeypatch.setenv("MVT_DATA_DIR", str(tmp_path / "data"))
    with _time_limit():
        assert isinstance(load_registry(tmp_path / "data" / "registry"), Registry)


def test_a_fifo_is_refused_without_waiting_for_a_writer(data_dir):
    path = data_dir / "registry" / "metrics.yaml"
    path.unlink()
    os.mkfifo(path)
    assert _registry_error(data_dir / "registry") == f"{path}: not a regular file"


def test_a_missing_registry_folder_is_named(data_dir):
    assert _registry_error(data_dir / "nope") == f"{data_dir / 'nope'}: registry directory not found"


# --- flags -----------------------------------------------------------------------------------------


def _flag_file(data_dir: Path, document, name: str = "bad.json") -> Path:
    path = data_dir / "flags" / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _flag_error(data_dir: Path) -> str:
    with _time_limit(), pytest.raises(FlagFileError) as err:
        load_flag_files(data_dir / "flags")
    return str(err.value)


def _deep_targeting(depth: int) -> str:
    """`{"if": [true, {"if": [true, ... "a"]}, "b"]}` as text (json.dumps itself recurses)."""
    return '{"if": [true, ' * depth + '"a"' + ', "b"]}' * depth


@pytest.mark.parametrize("depth", [40, 10_000])
def test_deep_flag_targeting_names_the_file_and_the_flag(data_dir, depth):
    text = ('{"flags": {"deep-flag": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", '
            f'"targeting": {_deep_targeting(depth)}}}}}}}')
    _flag_file(data_dir, text)
    message = _flag_error(data_dir)
    assert message.startswith("flags/bad.json: flags.deep-flag.targeting.if[1].if[1]")
    assert message.endswith("nested deeper than 32 levels below the flag (MVT_MAX_JSON_DEPTH)")


def test_deep_evaluators_are_refused_too(data_dir):
    doc = json.loads(FLAGS_TEXT)
    node: dict = {"var": "x"}
    for _ in range(40):
        node = {"!": [node]}
    doc["$evaluators"] = {"deep": node}
    _flag_file(data_dir, doc)
    assert '$evaluators.deep["!"][0]["!"][0]' in _flag_error(data_dir)


def test_a_ref_chain_is_scanned_once_per_evaluator(data_dir):
    """Each evaluator refers to the next twice: a walk that re-expands refs takes 2**60 steps."""
    evaluators = {f"e{i}": {"if": [{"$ref": f"e{i + 1}"}, {"$ref": f"e{i + 1}"}, "a"]} for i in range(60)}
    evaluators["e60"] = {"fractional": [["a", 1], ["b", 1]]}
    flag = {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "targeting": {"$ref": "e0"}}
    _flag_file(data_dir, {"flags": {"chained": flag}, "$evaluators": evaluators})
    with _time_limit():
        flags = {f.key: f for f in load_flag_files(data_dir / "flags")}
    assert flags["chained"].served_variants == {"a", "b"}


def test_a_ref_chain_longer_than_the_recursion_limit_loads(data_dir):
    evaluators = {f"e{i}": {"$ref": f"e{i + 1}"} for i in range(3000)}
    evaluators["e3000"] = {"fractional": [["b", 1]]}
    flag = {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "targeting": {"$ref": "e0"}}
    _flag_file(data_dir, {"flags": {"long": flag}, "$evaluators": evaluators})
    with _time_limit():
        flags = {f.key: f for f in load_flag_files(data_dir / "flags")}
    assert flags["long"].rollout_variant == "b"


def test_a_ref_cycle_is_refused_with_the_cycle(data_dir):
    evaluators = {"a": {"if": [True, {"$ref": "b"}, "x"]}, "b": {"$ref": "a"}}
    flag = {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x", "targeting": {"$ref": "a"}}
    _flag_file(data_dir, {"flags": {"loop": flag}, "$evaluators": evaluators})
    assert _flag_error(data_dir) in ("flags/bad.json: $evaluators.a: $ref cycle 'a' -> 'b' -> 'a'",
                                     "flags/bad.json: $evaluators.b: $ref cycle 'b' -> 'a' -> 'b'")


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"flags": {"x": {"state": "ENABLED", "variants": {"a": NaN}, "defaultVariant": "a"}}}',
     "flags/bad.json: NaN is not a JSON number"),
    ('{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", '
     '"targeting": {"fractional": [["a", 1e400], ["b", 1]]}}}}',
     "flags/bad.json: flags.x.targeting: fractional bucket 1"),
    ('{"flags": {"x": ' + "1" * 5000 + "}}", "flags/bad.json: cannot read a value"),
    ('{"flags": {"x": {}, "x": {}}}', "flags/bad.json: duplicate key 'x'"),
])
def test_json_that_python_accepts_but_flagd_does_not_is_refused(data_dir, text, fragment):
    _flag_file(data_dir, text)
    assert _flag_error(data_dir).startswith(fragment)


def test_non_utf8_flag_file_names_the_file_and_the_byte(data_dir):
    (data_dir / "flags" / "bad.json").write_bytes(b'{"flags": {"caf\xc3": {}}}')
    assert _flag_error(data_dir).startswith("flags/bad.json: not UTF-8 at line 1, byte offset 15")


def test_an_oversized_flag_file_is_refused(data_dir):
    _flag_file(data_dir, '{"flags": {}}' + " " * MAX_FLAG_FILE_BYTES)
    assert _flag_error(data_dir) == f"flags/bad.json: larger than the limit of {MAX_FLAG_FILE_BYTES:,} bytes"


def test_symlinked_flag_files_and_folders_are_refused_without_naming_the_target(data_dir, tmp_path):
    target = _canary_target(tmp_path)
    (data_dir / "flags" / "zz.json").symlink_to(target / "checkout.flagd.json")
    message = _flag_error(data_dir)
    assert message == "flags/zz.json: is a symbolic link; links are refused"
    shutil.rmtree(data_dir / "flags")
    (data_dir / "flags").symlink_to(target)
    message = _flag_error(data_dir)
    assert "is a symbolic link" in message and CANARY not in message
    with _time_limit(), pytest.raises(FlagFileError) as err:  # a file reached through the linked folder
        load_flag_file(data_dir / "flags" / "checkout.flagd.json")
    assert "is a symbolic link" in str(err.value) and CANARY not in str(err.value)


def test_the_flag_csv_export_is_read_under_the_same_rules(data_dir, tmp_path):
    target = _canary_target(tmp_path)
    (target / "flags.csv").write_text("key,state,variants,last_modified,owner\nx,ENABLED,a;b,2026-11-01,me\n")
    link = data_dir / "flags" / "flags.csv"
    link.symlink_to(target / "flags.csv")
    with _time_limit(), pytest.raises(FlagFileError) as err:
        load_flag_csv(link)
    assert str(err.value) == "flags.csv: is a symbolic link; links are refused"
    link.unlink()
    link.write_bytes(b"key,state,variants,last_modified,owner\nx\xff,ENABLED,a;b,2026-11-01,me\n")
    with _time_limit(), pytest.raises(FlagFileError, match=r"^flags\.csv: not UTF-8 at line 2, byte offset 40"):
        load_flag_csv(link)


def test_a_bad_flag_file_fails_the_flag_audit_check_not_the_night(data_dir):
    """`stale_flag_audit` turns a FlagFileError into a failed ERROR check, so the reports still run."""
    from mvt_pipeline.defs.assets.audit import _flags_or_error

    _flag_file(data_dir, '{"flags": {"x": {}, "x": {}}}')
    logged = []

    class _Log:
        def error(self, message):
            logged.append(message)

    class _Context:
        log = _Log()

    flags, error = _flags_or_error(_Context())
    assert flags == [] and error == "flags/bad.json: duplicate key 'x' in a JSON object"
    assert logged and "stale-flag audit skipped" in logged[0]
    (data_dir / "flags" / "bad.json").unlink()
    flags, error = _flags_or_error(_Context())
    assert error is None and flags


# --- property tests --------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=200, deadline=5000, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_YAML_TOKENS = st.sampled_from(list("&*!|>-?:,[]{}#'\"%@`\\ \n\t.0123456789abeinfxyz_<=~")
                               + ["\n  ", ".nan", ".inf", "- ", ": ", "&a ", "*a", "<<: "])
_JSON_TOKENS = st.sampled_from(list('{}[]":,-.0123456789eE \n\\tuabfnrl')
                               + ["NaN", "Infinity", '"$ref"', '"if"', '"fractional"', "true", "null"])


def _tokens(tokens, max_size: int):
    """Text made of YAML- or JSON-significant characters and short keywords."""
    return st.lists(tokens, max_size=max_size).map("".join)


def _mutate(text: str, data) -> str:
    """A few random edits of `text`: replace, insert or delete a run of characters."""
    pieces = data.draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(0, 8), _tokens(_YAML_TOKENS, 6)),
                                min_size=1, max_size=4))
    for at, cut, insert in pieces:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    return text


def _check_registry(tmp: Path, experiments: str | bytes, metrics: str = METRICS_TEXT) -> None:
    registry = tmp / "registry"
    registry.mkdir(exist_ok=True)
    path = registry / "experiments.yaml"
    path.write_bytes(experiments if isinstance(experiments, bytes) else experiments.encode("utf-8", "surrogatepass"))
    (registry / "metrics.yaml").write_text(metrics)
    with _time_limit():
        try:
            result = load_registry(registry)
        except RegistryError as exc:
            assert str(exc).startswith(str(registry)), str(exc)
        else:
            assert isinstance(result, Registry)


@PROPERTY_SETTINGS
@given(text=_tokens(_YAML_TOKENS, 200))
def test_random_yaml_gives_a_registry_or_a_registry_error(tmp_path, text):
    _check_registry(tmp_path, "experiments:\n" + text)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_sample_registry_gives_a_registry_or_a_registry_error(tmp_path, data):
    _check_registry(tmp_path, _mutate(EXPERIMENTS_TEXT, data))


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=20),
                    st.dates().map(str), st.just("2026-02-30"))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_sample_registry_with_random_values_gives_a_registry_or_a_registry_error(tmp_path, data):
    """Replace a few values of the parsed sample with random ones, then dump it back (valid YAML)."""
    doc = yaml.safe_load(EXPERIMENTS_TEXT)
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
                node = child
                continue
            node[key] = data.draw(st.one_of(_LEAVES, st.lists(_LEAVES, max_size=3),
                                            st.dictionaries(st.text(max_size=5), _LEAVES, max_size=3)))
            break
    _check_registry(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


def _check_flag_file(tmp: Path, text: str | bytes) -> None:
    path = tmp / "flags.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    with _time_limit():
        try:
            flags = load_flag_file(path)
        except FlagFileError as exc:
            assert str(exc).startswith("flags.json: "), str(exc)
        else:
            assert isinstance(flags, list)


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
              st.sampled_from(["a", "b", "$ref", "if", "fractional"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["if", "fractional", "$ref", "var", "==", "a", "b"]), inner,
                                            max_size=3)),
    max_leaves=30)


@PROPERTY_SETTINGS
@given(targeting=_JSON, evaluators=st.dictionaries(st.sampled_from(["a", "b", "c"]), _JSON, max_size=3),
       state=st.sampled_from(["ENABLED", "DISABLED"]))
def test_random_targeting_gives_flags_or_a_flag_file_error(tmp_path, targeting, evaluators, state):
    flag = {"state": state, "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "targeting": targeting}
    doc = {"flags": {"x": flag},
           "$evaluators": evaluators}
    _check_flag_file(tmp_path, json.dumps(doc))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_sample_flags_give_flags_or_a_flag_file_error(tmp_path, data):
    pieces = data.draw(st.lists(st.tuples(st.integers(0, len(FLAGS_TEXT)), st.integers(0, 8),
                                          _tokens(_JSON_TOKENS, 6)), min_size=1, max_size=4))
    text = FLAGS_TEXT
    for at, cut, insert in pieces:
        text = text[:at] + insert + text[at + cut:]
    _check_flag_file(tmp_path, text)


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=200))
def test_random_bytes_give_a_registry_error_or_a_flag_file_error(tmp_path, raw):
    _check_registry(tmp_path, raw)
    _check_flag_file(tmp_path, raw)
