"""MVT_WAREHOUSE=spark (docs/scale-out.md): the same dbt project on Apache Spark (dbt-spark, a local
session) equals the DuckDB build row for row, every dispatched macro gives the same value on both
engines, and a night through Dagster on Spark writes the same `analysis.effects` as on DuckDB.

Run with `make test-spark` (needs `pip install -e '.[spark]'` and Java 17). Without pyspark or Java
these tests skip, except where MVT_REQUIRE_SPARK=1 (CI): there a missing engine is a failure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mvt_pipeline.config import SparkSettings, settings
from mvt_pipeline.nights import run_job
from mvt_pipeline.simulate.truth import Faults
from mvt_pipeline.registry.models import json_path
from mvt_pipeline.warehouse import lake

from .conftest import make_workdir
from .pipeline_runner import generate, ingest_again
from .test_dbt_marts import DBT_DIR, HAND_VARS, dbt, ingest, make_hand_made
from .warehouse_compare import differences, duckdb_table, spark_table

pytestmark = [pytest.mark.spark, pytest.mark.timeout(1800)]


def require_spark(find=importlib.util.find_spec) -> None:
    """Skip without pyspark, dbt-spark or Java; fail instead where MVT_REQUIRE_SPARK=1 (CI, make test-spark)."""
    problems = []
    # found, not imported: pyspark runs in dbt's process, not in this one
    missing = [m for m in ("pyspark", "dbt.adapters.spark") if find(m) is None]
    if missing:
        problems.append(f"{', '.join(missing)} not installed: make install-spark (pip install -e '.[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        problems.append("no Java (Spark needs Java 17)")
    if problems:
        if os.environ.get("MVT_REQUIRE_SPARK") == "1":
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


@pytest.fixture(autouse=True, scope="module")
def _spark_available():
    require_spark()


def spark_environment(base: Path, duckdb_path: Path) -> dict[str, str]:
    """What dbt reads for the spark target (Settings.dbt_environment), with every folder in `base`:
    each build its own warehouse and Derby metastore (Derby allows one process)."""
    s = dataclasses.replace(
        settings(), duckdb_path=duckdb_path, warehouse="spark",
        spark=SparkSettings(lake_dir=base / "lake", warehouse_dir=base / "spark", driver_memory="2g"))
    return s.dbt_environment()


# dbt commands run one after another in one process (dbt's Python API), so the Spark session
# starts once for all of them; `show` returns its compiled SQL and first row.
_DBT_SESSION = textwrap.dedent("""
    import json, sys
    from dbt.cli.main import dbtRunner
    commands, common = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = []
    for args in commands:
        res = dbtRunner().invoke(args + common)
        if not res.success:
            raise SystemExit(f"dbt {args[0]} failed: {res.exception or res.result}")
        if args[0] == "show":
            node = res.result.results[0]
            table = node.agate_table
            out.append({"sql": node.node.compiled_code, "row": dict(zip(
                table.column_names, [None if v is None else str(v) for v in table.rows[0]]))})
        else:  # what each data test of the build gave
            out.append({"success": True, "tests": {r.node.unique_id: str(r.status) for r in res.result.results
                                                   if r.node.resource_type == "test"}})
    print("DBT_SESSION " + json.dumps(out))
""")


def dbt_session(base: Path, target: str, commands: list[list[str]], env: dict[str, str]) -> list[dict]:
    common = ["--target", target, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
              "--target-path", str(base / f"dbt_target_{target}"), "--log-path", str(base / f"dbt_logs_{target}")]
    proc = subprocess.run([sys.executable, "-c", _DBT_SESSION, json.dumps(commands), json.dumps(common)],
                          env={**os.environ, **env, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
                          capture_output=True, text=True, timeout=900, cwd=base)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("DBT_SESSION "))
    return json.loads(line[len("DBT_SESSION "):])


def show_macros() -> list[str]:
    return ["show", "--inline", macro_query(), "--limit", "1"]


def model_relations() -> list[str]:
    """schema.table of every model of the project (its manifest)."""
    manifest = json.loads((DBT_DIR / "target" / "manifest.json").read_text())
    return sorted(f"{n['schema']}.{n['alias']}" for n in manifest["nodes"].values() if n["resource_type"] == "model")


def assert_models_equal(duck_db: Path, spark_warehouse: Path, ignore: frozenset = frozenset()) -> None:
    problems = {}
    for relation in model_relations():
        diff = differences(duckdb_table(duck_db, relation), spark_table(spark_warehouse, relation), ignore=ignore)
        if diff:
            problems[relation] = diff
    assert not problems, json.dumps(problems, indent=1, default=str)[:6000]


# --- the hand-made data set: duplicates, flips, bots, late and window-edge events, PII -------

@pytest.fixture(scope="module")
def hand_on_both(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("spark_hand")
    make_hand_made(data)
    ingest(data)
    dbt(data, "build", vars_=HAND_VARS)
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        synced = lake.sync_lake(conn, data / "lake")
    assert synced.days_written and synced.registry_tables == 6
    built, shown = dbt_session(data, "spark", [["build", "--vars", json.dumps(HAND_VARS)], show_macros()],
                               spark_environment(data, data / "wh.duckdb"))
    assert built["success"]
    (data / "build_spark.json").write_text(json.dumps(built))
    (data / "macros_spark.json").write_text(json.dumps(shown))
    return data


def test_every_model_equals_duckdb_row_for_row_on_the_hand_made_data(hand_on_both):
    assert_models_equal(hand_on_both / "wh.duckdb", hand_on_both / "spark")


def test_the_lake_holds_each_day_once_and_a_rerun_writes_nothing(hand_on_both):
    data = hand_on_both
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        days = [str(r[0]) for r in conn.execute("select distinct dt from raw.events order by 1").fetchall()]
        again = lake.sync_lake(conn, data / "lake")
        lines = conn.execute("select count(*) from raw.events").fetchone()[0]
    assert again.days_written == [] and again.days_removed == []
    assert sorted(p.name for p in (data / "lake" / "events").iterdir()) == [f"dt={d}" for d in days]
    with duckdb.connect() as conn:  # the Parquet layout any engine reads: hive partitions by dt
        n, n_days = conn.execute("select count(*), count(distinct dt) from read_parquet(?, hive_partitioning = true)",
                                 [str(data / "lake" / "events" / "*" / "*.parquet")]).fetchone()
    assert (n, n_days) == (lines, len(days))


def test_build_tests_run_on_spark_too(hand_on_both):
    """dbt's data tests ran on Spark as part of `dbt build` (not skipped: none is DuckDB-only)."""
    tests = json.loads((hand_on_both / "build_spark.json").read_text())["tests"]
    manifest = json.loads((DBT_DIR / "target" / "manifest.json").read_text())
    expected = {k for k, n in manifest["nodes"].items() if n["resource_type"] == "test"}
    assert set(tests) == expected and set(tests.values()) == {"pass"}, tests


# --- each dispatched macro on both engines ------------------------------------------------------

# The literal inputs, as Jinja block variables (no quoting inside the macro calls); the JSON paths
# are the registry's own (registry_experiment_segments' flat_path / nested_path).
INPUTS = {
    "doc": """'{"device": "ios", "n": 1.5, "os": {"name": "iOS"}, "os.name": "flat"}'""",
    "nested": "'" + json_path("os.name") + "'",
    "flat": "'" + json_path("os.name", flat=True) + "'",
    "ts": "cast('2026-01-10 10:00:00.123' as timestamp)",
    "ts2": "cast('2026-01-10 10:00:01.623' as timestamp)",
    "rows": "(values (2, 'b', 10), (1, 'a', 20), (3, 'c', 5)) as t(k, v, w)",
}
# name -> (a SQL expression using the macro, the value expected, worked out by hand)
MACRO_CASES = {
    "json_text": ("{{ json_text(doc, \"'device'\") }}", "ios"),
    "json_text_number": ("{{ json_text(doc, \"'n'\") }}", "1.5"),
    "json_field": ("{{ json_field(doc, 'device') }}", "ios"),
    "json_path_text_nested": ("{{ json_path_text(doc, nested) }}", "iOS"),
    "json_path_text_flat": ("{{ json_path_text(doc, flat) }}", "flat"),
    "json_fields_get": ("(select {{ json_fields_get('f', ['device', 'n'], 'n') }} from "
                        "(select {{ json_fields(doc, ['device', 'n']) }} as f) as j)", "1.5"),
    "add_days": ("cast({{ add_days(ts, 2) }} as {{ dbt.type_string() }})", "2026-01-12 10:00:00.123"),
    "add_days_negative": ("cast({{ add_days(ts, '-1') }} as {{ dbt.type_string() }})", "2026-01-09 10:00:00.123"),
    "seconds_between": ("{{ seconds_between(ts, ts2) }}", 1.5),
    "ordered_string_agg": ("(select {{ ordered_string_agg('v', '|', 'k') }} from {{ rows }})", "a|b|c"),
    "first_by": ("(select {{ first_by('v', ['w', 'k']) }} from {{ rows }})", "c"),
    "struct_of": ("(select max(s.v) from (select {{ struct_of(['k', 'v']) }} as s from {{ rows }}) as x)", "c"),
    "regex_matches": ("case when {{ regex_matches(\"'Googlebot/2.1'\", '(bot|crawler)') }} then 'yes' else 'no' end",
                      "yes"),
    "hash_text": ("{{ hash_text(\"'abc'\") }}", "900150983cd24fb0d6963f7d28e17f72"),  # RFC 1321's test vector
    "is_redacted": ("case when {{ is_redacted(\"'x [redacted:email] y'\") }} then 'yes' else 'no' end", "yes"),
    "type_string": ("cast(42 as {{ dbt.type_string() }})", "42"),
}


def macro_query() -> str:
    prelude = "".join(f"{{% set {name} %}}{value}{{% endset %}}" for name, value in INPUTS.items())
    return prelude + "select " + ", ".join(f"{expr} as {name}" for name, (expr, _) in MACRO_CASES.items())


@pytest.fixture(scope="module")
def macros_on_both(hand_on_both, tmp_path_factory) -> dict[str, dict]:
    """The macro cases as one query run by `dbt show` on each engine (Spark's in the hand-made
    data's session, after its build)."""
    base = tmp_path_factory.mktemp("duckdb_macros")
    env = {**settings().dbt_environment(), "MVT_DUCKDB_PATH": str(base / "m.duckdb"),
           "MVT_DUCKDB_TEMP_DIR": str(base / "tmp")}
    (duck,) = dbt_session(base, "duckdb", [show_macros()], env)
    return {"duckdb": duck, "spark": json.loads((hand_on_both / "macros_spark.json").read_text())}


@pytest.mark.parametrize("case", sorted(MACRO_CASES))
def test_dispatched_macro_gives_the_same_value_on_both_engines(macros_on_both, case):
    expected = MACRO_CASES[case][1]
    for target in ("duckdb", "spark"):
        got = macros_on_both[target]["row"][case]
        if isinstance(expected, float):
            assert float(got) == pytest.approx(expected, rel=1e-12), (target, got)
        else:
            assert got == expected, (target, got, macros_on_both[target]["sql"])


def test_macros_render_in_each_engines_own_dialect(macros_on_both):
    duck, spark = macros_on_both["duckdb"]["sql"], macros_on_both["spark"]["sql"]
    assert "json_extract_string" in duck and "get_json_object" not in duck
    assert "get_json_object" in spark and "json_extract_string" not in spark
    assert "arg_min_null" in duck and "min_by" in spark
    assert "struct_pack" in duck and "named_struct" in spark
    assert "string_agg" in duck and "array_join" in spark
    assert "regexp_matches" in duck and "regexp_like" in spark
    assert "timestampadd" in spark and "unix_micros" in spark


# --- one night through Dagster on each engine -------------------------------------------------

def _night(root: Path, warehouse: str, monkeypatch) -> Path:
    data = make_workdir(root, monkeypatch)
    monkeypatch.setenv("MVT_WAREHOUSE", warehouse)
    monkeypatch.setenv("MVT_SPARK_DRIVER_MEMORY", "2g")
    generate(data, users=600, days=3, seed=11, faults=Faults.demo())
    instance = dg.DagsterInstance.ephemeral()
    ingest_again(data, instance=instance)  # every day's ingestion, then one night over all of them
    night = run_job("nightly", "2026-11-04", instance=instance)
    assert night.success, night.error
    return data


@pytest.fixture(scope="module")
def nights(tmp_path_factory) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as mp:
        duck = _night(tmp_path_factory.mktemp("night_duckdb"), "duckdb", mp)
    with pytest.MonkeyPatch.context() as mp:
        spark = _night(tmp_path_factory.mktemp("night_spark"), "spark", mp)
    return {"duckdb": duck, "spark": spark}


def test_a_spark_night_writes_the_same_effects_as_a_duckdb_night(nights):
    def effects(data: Path):
        frame = duckdb_table(data / "warehouse" / "mvt.duckdb", "analysis.effects")
        return frame.drop(columns=["computed_at"])

    duck, spark = effects(nights["duckdb"]), effects(nights["spark"])
    assert len(duck) > 20 and duck["estimate"].notna().sum() > 20
    assert differences(duck, spark) == []


def test_a_spark_night_builds_every_model_equal_to_the_duckdb_night(nights):
    # the two nights ingested the same files at different times: stg_events' watermark differs
    assert_models_equal(nights["duckdb"] / "warehouse" / "mvt.duckdb", nights["spark"] / "warehouse" / "spark",
                        ignore=frozenset({"ingested_watermark"}))


def test_a_spark_night_publishes_reports_and_decisions_from_the_mirrored_marts(nights):
    data = nights["spark"]
    with duckdb.connect(str(data / "warehouse" / "mvt.duckdb"), read_only=True) as conn:
        as_of = conn.execute(f"select max(as_of) from {lake.AS_OF_TABLE}").fetchone()[0]
        decisions = conn.execute("select count(*) from analysis.decisions").fetchone()[0]
        mirrored = {r[0] for r in conn.execute(
            "select table_schema || '.' || table_name from information_schema.tables where table_schema = 'marts'"
        ).fetchall()}
    assert as_of == dt.date(2026, 11, 4)
    assert decisions > 0
    assert mirrored == {f"marts.{t}" for t in lake.MIRRORED_MARTS["marts"]}
    assert (data / "reports" / "2026-11-04" / "index.html").is_file()
    assert (data / "warehouse" / "spark" / "spark.log").is_file()  # Spark's log, not dbt's stdout
