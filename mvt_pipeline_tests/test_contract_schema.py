"""The published contract (`docs/telemetry.schema.json`) is the ingestion's: generated from its
definitions, and on random lines never stricter than a night (an accepted line is schema-valid) and
never looser on the shape of a field (a line with a missing or mistyped field is schema-invalid)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from mvt_pipeline.ingest.contract_schema import schema_text, telemetry_schema

from .test_ingest_fast_path import _fast_and_general, compact
from .test_ingest_hostile_lines import _field_values, _json

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "telemetry.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(telemetry_schema())
# problems of one field's shape, which the schema must see as well
SHAPE_REASONS = ("missing_required:", "bad_type:", "bad_value:seq")


def test_the_published_schema_is_the_generated_one():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "docs/telemetry.schema.json is stale: python -m mvt_pipeline.ingest.contract_schema > docs/telemetry.schema.json")


_objects = st.fixed_dictionaries({}, optional={
    **_field_values, "event_type": st.sampled_from(["metric", "exposure", "exposure", "x"]),
    "experiment_id": st.sampled_from(["pricing_abn", "", None]),
    "assignment": st.one_of(_json, st.just({"pricing_banner": "discount"}), st.just({})),
    "value": st.one_of(_json, st.floats(allow_nan=False, allow_infinity=False)),
    "device_id": st.one_of(st.text(max_size=4), st.integers(), _json), "session_id": _json,
    "cell_id": _json, "hash_version": _json, "received_at": st.one_of(st.none(), st.just("2026-11-02T10:00:05Z")),
    "extra_field": _json})


def _integral_float_in_a_field(obj: dict) -> bool:
    """`1.0` is an integer to JSON Schema but not an integer literal to the ingestion (documented)."""
    return any(isinstance(v, float) and v.is_integer() for v in obj.values())


@hyp_settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_objects, min_size=1, max_size=20))
def test_schema_and_ingestion_agree_on_random_lines(objects):
    lines = [compact(o) for o in objects]
    _pending, _both, general = _fast_and_general(lines)
    for obj, line, row in zip(objects, lines, general):
        reasons = row[3] or []
        valid = VALIDATOR.is_valid(json.loads(line))
        if not reasons:
            assert valid, (line, [e.message for e in VALIDATOR.iter_errors(json.loads(line))])
        if not valid:
            assert reasons, line
        if any(r.startswith(SHAPE_REASONS) for r in reasons) and not _integral_float_in_a_field(obj):
            assert not valid, (line, reasons)
