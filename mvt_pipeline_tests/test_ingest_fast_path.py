"""The validation fast path (compact lines decoded by one `json_transform`, the others handed to the
general path) must give exactly what the general path alone gives, line for line, on canonical lines
and on every near miss; and canonical lines must really be accepted by it (else ingestion silently
slows down to the general path)."""

import json

import duckdb
import pytest

from mvt_pipeline.ingest.manifest import registry_cell_texts, registry_levels
from mvt_pipeline.ingest.fast_path_sql import (CONTRACT_SHAPES, FAST_COLUMNS, FAST_CONSTANTS, MAX_SHAPES,
                                               fast_line_sql, fast_select_sql, observed_shapes, pending_lines_sql,
                                               transform_type)
from mvt_pipeline.ingest.validation_sql import CHECKED_COLUMNS, checked_select_sql, utc_timestamp_sql
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY
from .test_ingest_corpus import EXPOSURE, JSONL_CORPUS, METRIC

CHECKOUT = {**EXPOSURE, "event_id": "c1", "experiment_id": "checkout_mvt",
            "assignment": {"cta_color": "green", "validation": "inline", "copy": "urgency"}}


def compact(obj, **kw) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, **kw)


def _near_misses() -> list[str]:
    m = {**METRIC, "context": {"device": "mobile", "user_agent": "Mozilla/5.0"}}
    lines = [
        compact(EXPOSURE), compact(METRIC), compact(m), compact(CHECKOUT),
        compact({**METRIC, "event_id": "num-unit", "unit_id": 12345}),
        compact({**METRIC, "event_id": "num-eid"}).replace('"num-eid"', "987"),
        compact({**METRIC, "event_id": "esc", "unit_id": 'u"1'}),
        json.dumps({**METRIC, "event_id": "ascii-esc", "unit_id": "café"}, separators=(",", ":")),  # \u00e9
        compact({**METRIC, "event_id": "raw-utf8", "unit_id": "café ✓"}),
        compact({**METRIC, "event_id": "slash"}).replace('"slash"', '"sl\\/ash"'),
        compact({**METRIC, "event_id": "null-dev", "device_id": None}),
        compact({**METRIC, "event_id": "null-ctx", "context": None}),
        compact({**METRIC, "event_id": "null-val", "value": None}),
        compact({**METRIC, "event_id": "dup"})[:-1] + ',"event_id":"dup2"}',
        compact({**METRIC, "event_id": "extra", "sdk": {"v": 1}}),
        compact({"sdk": "first", **METRIC, "event_id": "extra-first"}),
        compact({**dict(reversed(list(METRIC.items()))), "event_id": "reordered"}),
        compact({**METRIC, "event_id": "ws"}) + " ",
        " " + compact({**METRIC, "event_id": "lead-ws"}),
        compact({**METRIC, "event_id": "exp-num"}).replace('"value":1', '"value":1E2'),
        compact({**METRIC, "event_id": "frac"}).replace('"value":1', '"value":-0.0015'),
        compact({**METRIC, "event_id": "neg-zero"}).replace('"value":1', '"value":-0'),
        compact({**METRIC, "event_id": "big-int"}).replace('"value":1', '"value":123456789012345678901234567890'),
        compact({**METRIC, "event_id": "str-val", "value": "12"}),
        compact({**METRIC, "event_id": "bool-val", "value": True}),
        compact({**METRIC, "event_id": "seq-float", "seq": 1.0}),
        compact({**METRIC, "event_id": "seq-exp"}).replace('"seq":2', '"seq":2e0'),
        compact({**METRIC, "event_id": "seq-neg", "seq": -3}),
        compact({**METRIC, "event_id": "seq-huge"}).replace('"seq":2', '"seq":99999999999999999999'),
        compact({**METRIC, "event_id": "seq-str", "seq": "5"}),
        compact({**METRIC, "event_id": "seq-bool", "seq": True}),
        compact({**METRIC, "event_id": "seq-negzero"}).replace('"seq":2', '"seq":-0'),
        compact({**METRIC, "event_id": "seq-max", "seq": 2 ** 63 - 1}),
        compact({**METRIC, "event_id": "seq-over", "seq": 2 ** 63}),
        compact({**METRIC, "event_id": "seq-min", "seq": -(2 ** 63)}),
        compact({**METRIC, "event_id": "seq-obj", "seq": {"n": 1}}),
        compact({**METRIC, "event_id": "obj-metric", "metric": {"n": "signup"}}),
        compact({**METRIC, "event_id": "arr-ctx", "context": ["mobile"]}),
        compact({**METRIC, "event_id": "empty-ctx", "context": {}}),
        compact({**METRIC, "event_id": "ts-offset", "ts": "2026-11-02T12:00:00+02:00"}),
        compact({**METRIC, "event_id": "ts-bad", "ts": "2026-02-30T00:00:00Z"}),
        compact({**METRIC, "event_id": "ts-num", "ts": 1793527200}),
        compact({**METRIC, "event_id": "et-bad", "event_type": "click"}),
        compact({**METRIC, "event_id": "empty-unit", "unit_id": ""}),
        compact({**METRIC, "event_id": ""}),
        compact({**CHECKOUT, "event_id": "order",
                 "assignment": {"copy": "urgency", "cta_color": "green", "validation": "inline"}}),
        compact({**CHECKOUT, "event_id": "partial", "assignment": {"cta_color": "green"}}),
        compact({**CHECKOUT, "event_id": "bad-level", "assignment": {**CHECKOUT["assignment"], "copy": "gold"}}),
        compact({**CHECKOUT, "event_id": "level-num", "assignment": {**CHECKOUT["assignment"], "copy": 3}}),
        compact({**CHECKOUT, "event_id": "no-asg", "assignment": {}}),
        compact({**CHECKOUT, "event_id": "asg-arr", "assignment": ["green"]}),
        compact({**CHECKOUT, "event_id": "ghost", "experiment_id": "ghost"}),
        compact({**EXPOSURE, "event_id": "pii", "context": {"email": "ann@example.com", "ip": "10.1.2.3"}}),
        compact({**METRIC, "event_id": "nan"}).replace('"value":1', '"value":NaN'),
        compact({**METRIC, "event_id": "tab"}).replace('"seq":2', '"seq":\t2'),
        # hostile lines (#19): too deep, duplicate key, seq and timestamps out of bounds, PII in ids
        compact({**METRIC, "event_id": "deep", "context": json.loads('{"a":' * 40 + "1" + "}" * 40)}),
        compact({**METRIC, "event_id": "dup-key"})[:-1] + ',"unit_id":"u9"}',
        compact({**METRIC, "event_id": "seq-2^53", "seq": 2 ** 53}),
        compact({**METRIC, "event_id": "ts-huge", "ts": "294247-01-01T00:00:00Z"}),
        compact({**METRIC, "event_id": "ts-date", "ts": "2026-11-02"}),
        compact({**METRIC, "event_id": "rcv-early", "received_at": "2026-10-30T00:00:00Z"}),
        compact({**METRIC, "event_id": "unit-email", "unit_id": "ann@example.com"}),
        compact({**METRIC, "event_id": "dev-ipv6", "device_id": "2001:db8::7334"}),
        compact({**METRIC, "event_id": "metric-card", "metric": "4111 1111 1111 1111"}),
        compact({**METRIC, "event_id": "ctx-card", "context": {"country": "5500-0000-0000-0004"}}),
        compact({**METRIC, "event_id": "ctx-noluhn", "context": {"n": "4111 1111 1111 1112"}}),
        '{"event_id":"broken"',
        "{}",
        '{"event_id":"x"}',
    ]
    # the shared corpus, each line also written compactly where it parses as JSON
    for line, _reason in JSONL_CORPUS:
        lines.append(line)
        try:
            lines.append(compact(json.loads(line, parse_constant=lambda c: {"NaN": float("nan")}.get(c, c))))
        except (ValueError, TypeError):
            pass
    return lines


def _fast_then_general(conn, levels, cells, shapes=CONTRACT_SHAPES) -> tuple[dict[int, bool], list[tuple]]:
    """As ingestion runs them over table `lines`: the fast statement's accepted rows, the general path
    over the other lines (`pending_lines_sql`); returns (pending flag per line number, all rows in
    the general path's columns, the fast rows' constant columns added back, by line number)."""
    conn.execute(f"create or replace table fast_only as {fast_select_sql('lines', levels, cells, shapes)}")
    # the columns ingestion's insert of fast rows reads by name
    assert tuple(d[0] for d in conn.execute("select * from fast_only limit 0").description) == FAST_COLUMNS
    pending_lines = f"({pending_lines_sql('lines', 'fast_only')})"
    conn.execute(f"create or replace table general_rest as {checked_select_sql(pending_lines, levels, cells)}")
    fast_cols = ", ".join(f"{FAST_CONSTANTS[c]} as {c}" if c in FAST_CONSTANTS else c for c in CHECKED_COLUMNS)
    both = conn.execute(f"select {fast_cols} from fast_only union all select {', '.join(CHECKED_COLUMNS)} "
                        "from general_rest order by line_number")
    assert tuple(d[0] for d in both.description) == CHECKED_COLUMNS
    rows = both.fetchall()
    accepted = {n for (n,) in conn.execute("select line_number from fast_only").fetchall()}
    numbers = [n for (n,) in conn.execute("select line_number from lines").fetchall()]
    return {n: n not in accepted for n in numbers}, rows


@pytest.fixture(scope="module")
def checked():
    """(fast path + general path rows, general path rows, lines, connection) of the near-miss corpus."""
    registry = load_registry(SAMPLE_REGISTRY)
    levels, cells = registry_levels(registry), registry_cell_texts(registry)
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    lines = _near_misses()
    conn.execute("create table lines (file_idx integer, line_number bigint, line varchar, pre_reason varchar)")
    conn.executemany("insert into lines values (0, ?, ?, null)", [[i + 1, x] for i, x in enumerate(lines)])
    general = conn.execute(f"select * from ({checked_select_sql('lines', levels, cells)}) order by line_number")
    assert tuple(d[0] for d in general.description) == CHECKED_COLUMNS
    general = general.fetchall()
    pending, both = _fast_then_general(conn, levels, cells)
    return both, general, lines, pending


def test_fast_path_equals_general_path_line_for_line(checked):
    fast, general, lines, _ = checked
    assert len(fast) == len(general) == len(lines)
    def norm(row):  # NaN != NaN
        return tuple("NaN" if isinstance(x, float) and x != x else x for x in row)

    for f, g, line in zip(fast, general, lines):
        assert norm(f) == norm(g), line


def test_canonical_lines_take_the_fast_path_and_near_misses_do_not():
    conn = duckdb.connect()
    rebuilt = (f"select line = {fast_line_sql()} from (select line, json_transform(line, '{transform_type()}') t "
               "from (select ? as line))")

    def fast(line):
        return conn.execute(rebuilt, [line]).fetchone()[0]

    assert fast(compact(EXPOSURE)) and fast(compact(METRIC)) and fast(compact(CHECKOUT))
    assert fast(compact({**METRIC, "unit_id": "café ✓"}))
    for miss in (compact({**METRIC, "unit_id": 12345}), compact({**METRIC, "device_id": None}),
                 compact({**METRIC, "sdk": 1}), compact(METRIC) + " ", json.dumps(METRIC),
                 compact(dict(reversed(list(METRIC.items())))), compact({**METRIC, "metric": {"n": "x"}})):
        assert not fast(miss), miss


def test_fast_statement_accepts_valid_canonical_lines_and_passes_on_the_rest(checked):
    _, general, lines, pending = checked
    by_id = {}
    for number, line in enumerate(lines, start=1):
        try:
            by_id.setdefault(json.loads(line).get("event_id"), number)
        except (ValueError, AttributeError):
            pass
    # metric, whole-cell exposure, one factor's level (per-factor exposures), raw UTF-8, empty context,
    # a fraction
    for canonical in ("m1", "c1", "partial", "raw-utf8", "empty-ctx", "frac"):
        assert pending[by_id[canonical]] is False, canonical
    # not canonical (numeric id, escape, null, unknown field, whitespace, key order), or canonical but
    # rejected (unknown level or experiment, NaN, bad event type, empty unit, impossible date), or
    # PII in the context (redacted by the general path's rows)
    for miss in ("num-unit", "esc", "null-dev", "extra", "ws", "order", "bad-level", "ghost", "nan", "et-bad",
                 "empty-unit", "ts-bad", "pii"):
        assert pending[by_id[miss]] is True, miss
    # everything the fast statement accepted, the general path accepts with the same values
    accepted = {n for n, p in pending.items() if not p}
    assert accepted and all(general[n - 1][2] is None for n in accepted)


COL = {name: i for i, name in enumerate(CHECKED_COLUMNS)}


def test_fast_rows_keep_their_values_and_reasons(checked):
    fast, _, lines, _ = checked
    by_id = {}
    for row, line in zip(fast, lines):
        try:
            by_id.setdefault(json.loads(line).get("event_id"), row)
        except (ValueError, AttributeError):
            pass
    # columns: CHECKED_COLUMNS (reason at 2)
    assert by_id["m1"][2] is None and by_id["m1"][COL["unit_id"]] == "u1" and by_id["m1"][COL["seq"]] == 2
    assert by_id["raw-utf8"][2] is None and by_id["raw-utf8"][COL["unit_id"]] == "café ✓"
    assert by_id["ascii-esc"][COL["unit_id"]] == "café"
    assert by_id["esc"][COL["unit_id"]] == 'u"1'
    assert by_id["num-unit"][2] is None and by_id["num-unit"][COL["unit_id"]] == "12345"
    assert by_id["c1"][2] is None and by_id["order"][2] is None and by_id["partial"][2] is None
    assert by_id["bad-level"][2] == "unknown_level" and by_id["level-num"][2] == "unknown_level"
    assert by_id["ghost"][2] == "unknown_experiment"
    assert by_id["str-val"][2] == "bad_type:value" and by_id["bool-val"][2] == "bad_type:value"
    assert by_id["seq-float"][2] == "bad_type:seq" and by_id["seq-exp"][2] == "bad_type:seq"
    assert by_id["ts-bad"][2] == "bad_timestamp" and by_id["ts-num"][2] == "bad_timestamp"
    assert by_id["et-bad"][2] == "bad_type:event_type"
    assert by_id["obj-metric"][2] == "bad_type:metric" and by_id["arr-ctx"][2] == "bad_type:context"
    assert by_id["empty-unit"][2] == "missing_required:unit_id"
    assert by_id["nan"][2] == "non_finite_value"
    assert str(by_id["ts-offset"][COL["ts"]]) == "2026-11-02 10:00:00"
    assert by_id["frac"][2] is None and by_id["frac"][COL["value"]] == pytest.approx(-0.0015)
    assert by_id["exp-num"][2] is None and by_id["exp-num"][COL["value"]] == 100.0
    assert json.loads(by_id["extra"][COL["extra"]]) == {"sdk": {"v": 1}}
    assert json.loads(by_id["extra-first"][COL["extra"]]) == {"sdk": "first"}


def test_utc_timestamp_shortcut_agrees_with_the_time_zone_aware_cast():
    """The plain TIMESTAMP cast used for `...Z` text ignores zone names and offsets after a space;
    the shortcut must give what the time-zone-aware cast gives on every text, valid or not."""
    import random

    rng = random.Random(7)
    alphabet = "0123456789-:T.+Z /ABCEGMPSTUaz_\t"
    texts = ["2026-11-02T12:00:00Z", "2026-11-02T12:00:00.123Z", "2026-11-02T12:00:00+02:00",
             "2026-11-02T12:00:00 Europe/ParisZ", "2026-11-02T12:00:00 +02:00Z", "2026-11-02 12:00:00 CETZ",
             "2026-11-02T12:00:00 Z", "2026-11-02T12:00:00-05:30Z", "2026-11-02T12:00:00ZZ", "infinityZ", "Z", ""]
    for _ in range(20_000):
        chars = list("2026-11-02T12:00:00.123")
        for _ in range(rng.randint(0, 4)):
            pos = rng.randint(0, len(chars) - 1)
            op = rng.random()
            if op < 0.4:
                chars.insert(pos, rng.choice(alphabet))
            elif op < 0.7:
                chars.pop(pos)
            else:
                chars[pos] = rng.choice(alphabet)
        texts.append("".join(chars) + rng.choice(["+02:00", " Europe/Paris", " UTC", "", ""]) + rng.choice(["Z", "Z", ""]))
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("create table t as select unnest(?::varchar[]) as s", [texts])
    valid, differ = conn.execute(
        f"select count(*) filter (where a is not null), count(*) filter (where a is distinct from b) from "
        f"(select try_cast(s as timestamptz)::timestamp as a, {utc_timestamp_sql('s')} as b from t)").fetchone()
    assert valid > 2_000 and differ == 0


def test_observed_shapes_take_each_field_sets_most_common_key_order():
    reordered = dict(reversed(list(METRIC.items())))
    sample = [compact(reordered)] * 3 + [compact(METRIC)] + [
        "not json", compact({**METRIC, "sdk": 1}), compact({**METRIC, "device_id": None}), '{"a":"\\u00e9"}',
        compact([1, 2])]
    shapes = observed_shapes(sample)
    assert (tuple(reordered), False) in shapes and (tuple(METRIC), False) not in shapes  # 3 votes to 1
    assert set(CONTRACT_SHAPES) <= set(shapes)  # other field sets keep the contract order
    many = [compact({f"{k}": v for k, v in list(METRIC.items())[:n]}) for n in range(2, len(METRIC) + 1)]
    assert len(observed_shapes(many * 2)) <= MAX_SHAPES
    assert (tuple(METRIC), True) in observed_shapes([json.dumps(METRIC)])  # Python's default separators


def _fast_and_general(lines):
    """(pending flag per line, fast + general rows, general-only rows) for `lines`."""
    registry = load_registry(SAMPLE_REGISTRY)
    levels, cells = registry_levels(registry), registry_cell_texts(registry)
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("create table lines as select 0 as file_idx, unnest(range(1, ?)) as line_number, "
                 "unnest(?::varchar[]) as line, null::varchar as pre_reason", [len(lines) + 1, lines])
    pending, both = _fast_then_general(conn, levels, cells, observed_shapes(lines))
    general = conn.execute(f"select * from ({checked_select_sql('lines', levels, cells)}) order by line_number").fetchall()
    return [pending[n] for n in range(1, len(lines) + 1)], both, general


def test_lines_in_another_key_order_take_the_fast_path_with_identical_rows():
    events = [{**METRIC, "event_id": f"r{i}", "seq": i} for i in range(20)] + [
        {**CHECKOUT, "event_id": f"x{i}"} for i in range(5)]
    # an SDK that writes its own field order (and one line in yet another order)
    lines = [compact(dict(sorted(e.items()))) for e in events] + [compact(dict(reversed(list(METRIC.items()))))]
    pending, both, general = _fast_and_general(lines)
    assert not any(pending[:-1]) and pending[-1]  # the odd order: handed to the general path
    assert len(both) == len(lines) and both == general
    assert all(row[2] is None for row in both)  # all accepted


def test_python_default_separators_take_the_fast_path_with_identical_rows():
    ctx = {"device": "mobile", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko, like", "n": 3, "ok": True,
           "tags": ["a", "b"], "nested": {"k": "v: w", "z": 1.5}}
    events = [{**METRIC, "event_id": f"p{i}", "seq": i, "context": ctx} for i in range(20)] + [
        {**CHECKOUT, "event_id": f"q{i}", "context": ctx} for i in range(5)]
    lines = [json.dumps(e) for e in events] + [
        json.dumps({**METRIC, "event_id": "comma-end", "context": {"a": "x,", "b": "y"}}),  # `,"` inside a value
        json.dumps({**METRIC, "event_id": "num-list", "context": {"a": [1, 2]}}),  # `[1, 2]`: not rebuilt
        json.dumps({**METRIC, "event_id": "extra", "sdk": "v1"}),
        json.dumps({**METRIC, "event_id": "bad", "value": "x"})]
    pending, both, general = _fast_and_general(lines)
    assert not any(pending[:len(events)])
    assert all(pending[len(events):])
    assert len(both) == len(lines) and both == general
    assert [row[2] for row in both[len(events):]] == [None, None, None, "bad_type:value"]
