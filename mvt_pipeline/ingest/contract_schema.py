"""The telemetry contract as JSON Schema (`docs/telemetry.schema.json`), built from the definitions
the ingestion validates with (`validation_sql`: fields, id fields, event types, seq and timestamp
bounds; `config`: the size and depth limits), so the published contract cannot drift from what a
night accepts. A test compares the file with this output; regenerate it with

    python -m mvt_pipeline.ingest.contract_schema > docs/telemetry.schema.json

The schema says what a line must look like; the registry rules (known experiment, known levels) and
the per-file rules (size, encoding) are checked by `mvt validate-dump`, which runs the ingestion
itself. A field the schema does not name is allowed: it is kept in `raw.events.extra`.
"""

from __future__ import annotations

import json
import sys

from ..config import DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_LINE_BYTES
from .validation_sql import EVENT_TYPES, ID_FIELDS, KNOWN_FIELDS, MAX_SEQ, TS_MAX, TS_MIN

SCHEMA_ID = "urn:mvt-pipeline:telemetry:1"
# A timestamp must carry a time of day (a date alone is `bad_timestamp`): RFC 3339 / ISO 8601 with
# a `T` or a space before the time; a zone (Z or an offset) is recommended, UTC is assumed without.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}"


# Fields judged only for one event type (an exposure's `metric` is ignored, not checked).
EXPOSURE_FIELDS = ("experiment_id", "assignment", "cell_id", "hash_version")
METRIC_FIELDS = ("metric", "value")
REQUIRED = ("event_id", "event_type", "ts", "unit_id")
REQUIRED_BY_TYPE = {"exposure": ("experiment_id", "assignment"), "metric": ("metric", "value")}


def _nullable(schema: dict) -> dict:
    """An optional field may be null: the ingestion reads null as absent."""
    return {"anyOf": [schema, {"type": "null"}]}


def _id(non_empty: bool = False) -> dict:
    return {"anyOf": [{"type": "string", **({"minLength": 1} if non_empty else {})}, {"type": "integer"}]}


def _timestamp() -> dict:
    return {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}


DESCRIPTIONS = {
    "event_id": "Idempotency key: copies of one event share it (retries are deduplicated).",
    "event_type": "What the line records.",
    "ts": f"When the event happened (device clock), with a time of day; within [{TS_MIN}, {TS_MAX}).",
    "received_at": f"When the collector received it; at most 24 h before `ts`; within [{TS_MIN}, {TS_MAX}).",
    "unit_id": "The randomisation unit (user, account): what the experiment assigns.",
    "device_id": "The sending device: with `seq`, what measures loss.",
    "session_id": "The session, if any.",
    "seq": "Per-device sequence number (0, 1, 2, ...; an integer literal, no fraction or exponent): gaps "
           "measure loss. Without it loss is `not measurable`.",
    "experiment_id": "Exposure: the registry's experiment id.",
    "assignment": "Exposure: factor -> level (text), one or more factors of the experiment; the levels must "
                  "be the registry's.",
    "cell_id": "Exposure: the SDK's own name for the cell (informational; kept if text or an integer).",
    "hash_version": "Exposure: the SDK's assignment hash version (informational; kept if text or an integer).",
    "metric": "Metric event: the metric's name (no PII: an email or card number is quarantined).",
    "value": "Metric event: a finite number (NaN and Infinity are quarantined `non_finite_value`).",
    "context": "Free context (device, country, app version...); PII in it is redacted.",
}


def _constraints() -> dict[str, dict]:
    """Per field, the JSON shape the ingestion accepts (`validation_sql`), before nullability."""
    out = {f: _id(non_empty=f in ("event_id", "unit_id", "experiment_id")) for f in ID_FIELDS}
    out.update({
        "cell_id": {}, "hash_version": {},  # informational: a value that is not text or an integer is dropped
        "event_type": {"enum": list(EVENT_TYPES)},
        "ts": _timestamp(),
        "received_at": _timestamp(),
        "seq": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
        "assignment": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "metric": {"type": "string", "minLength": 1},
        "value": {"type": "number"},
        "context": {"type": "object"},
    })
    assert set(out) == set(KNOWN_FIELDS) == set(DESCRIPTIONS), set(KNOWN_FIELDS) ^ set(out)
    return out


def _field(name: str, constraint: dict) -> dict:
    required = name in REQUIRED or any(name in fields for fields in REQUIRED_BY_TYPE.values())
    return constraint if required else _nullable(constraint)


def telemetry_schema() -> dict:
    """The JSON Schema (draft 2020-12) of one telemetry line."""
    constraints = _constraints()
    typed = set(EXPOSURE_FIELDS) | set(METRIC_FIELDS)
    properties = {f: {"description": DESCRIPTIONS[f], **({} if f in typed else _field(f, constraints[f]))}
                  for f in KNOWN_FIELDS}

    def branch(event_type: str, fields: tuple[str, ...]) -> dict:
        return {"if": {"properties": {"event_type": {"const": event_type}}, "required": ["event_type"]},
                "then": {"required": list(REQUIRED_BY_TYPE[event_type]),
                         "properties": {f: _field(f, constraints[f]) for f in fields}}}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "mvt_pipeline telemetry event",
        "description": (
            "One JSON object per line (JSON lines, optionally gzip), or one row of a CSV / Parquet dump. "
            f"A line is at most {DEFAULT_MAX_LINE_BYTES:,} bytes and {DEFAULT_MAX_JSON_DEPTH} levels deep by default, "
            "with no duplicate keys. A null field is an absent one. Unknown fields are kept (raw.events.extra). "
            "Identifiers may be JSON integers (kept as their text). Generated from the ingestion's definitions "
            "(mvt_pipeline.ingest.contract_schema)."),
        "type": "object",
        "required": list(REQUIRED),
        "properties": properties,
        "allOf": [branch("exposure", EXPOSURE_FIELDS), branch("metric", METRIC_FIELDS)],
        "additionalProperties": True,
    }


def schema_text() -> str:
    return json.dumps(telemetry_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
