"""`mvt validate-dump`: what SDK teams run on a sample before shipping (issue #17, part 6)."""

from __future__ import annotations

import json

from mvt_pipeline.cli import main

from .conftest import SAMPLE_REGISTRY
from .test_ingest_corpus import EXPOSURE, METRIC


def _write(path, objects_or_lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in objects_or_lines))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["validate-dump", *map(str, argv), "--registry", str(SAMPLE_REGISTRY)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_clean_sample_passes(tmp_path, capsys):
    sample = _write(tmp_path / "ok.jsonl", [EXPOSURE, METRIC])
    code, out, _ = _run(capsys, sample)
    assert code == 0 and "2 lines: 2 accepted, 0 quarantined" in out
    assert "not measurable" not in out  # both events carry seq and device_id


def test_a_bad_sample_lists_every_reason_with_examples_and_schema_messages(tmp_path, capsys):
    no_id = {k: v for k, v in METRIC.items() if k not in ("event_id", "seq", "device_id")}
    lines = [
        {**no_id, "ts": "2026-11-02"},                      # missing event_id + date-only ts
        {**METRIC, "event_id": "v", "value": "12"},           # value as text
        {**EXPOSURE, "event_id": "x", "experiment_id": "ghost"},
        "{broken",
    ]
    folder = tmp_path / "dump"
    _write(folder / "a" / "part-0.jsonl", lines[:2])
    _write(folder / "b" / "part-0.jsonl", lines[2:])
    code, out, _ = _run(capsys, folder)
    assert code == 1
    assert "2 file(s), 4 lines: 0 accepted, 4 quarantined (100.0%)" in out
    assert "every problem: missing_required:event_id, bad_timestamp" in out
    assert "schema: 'event_id' is a required property" in out
    assert "schema: value: '12' is not of type 'number'" in out
    assert str(folder / "b" / "part-0.jsonl") + " line 2" in out  # the user's own file and line

    code, out, _ = _run(capsys, folder, "--json")
    report = json.loads(out)
    assert code == 1 and report["rows_read"] == 4 and report["rows_quarantined"] == 4
    assert report["reasons"] == {"missing_required:event_id": 1, "bad_type:value": 1, "unknown_experiment": 1,
                                 "malformed_json": 1}
    assert report["problems"]["bad_timestamp"] == 1


def test_loss_without_seq_is_reported(tmp_path, capsys):
    plain = {k: v for k, v in METRIC.items() if k not in ("seq", "device_id")}
    code, out, _ = _run(capsys, _write(tmp_path / "s.jsonl", [plain]))
    assert code == 0 and "loss: not measurable (no event carries both seq and device_id" in out


def test_links_and_empty_folders_are_refused_clearly(tmp_path, capsys):
    target = _write(tmp_path / "real.jsonl", [METRIC])
    (tmp_path / "link.jsonl").symlink_to(target)
    code, _, err = _run(capsys, tmp_path / "link.jsonl")
    assert code == 2 and "is a symbolic link; links are refused" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, tmp_path / "empty")
    assert code == 2 and "no dump file" in err


def test_an_sdk_format_is_checked_as_its_source_would_be(tmp_path, capsys):
    gb = {"experimentId": "pricing_abn", "variationId": "discount", "hashValue": "u1",
          "timestamp": "2026-11-02T10:00:00Z"}
    sample = _write(tmp_path / "gb.jsonl", [gb, {**gb, "variationId": "nope"}])
    code, out, _ = _run(capsys, sample, "--format", "growthbook")
    assert code == 1 and "2 lines: 1 accepted, 1 quarantined" in out and "unknown_level" in out
    code, out, _ = _run(capsys, sample)  # the same lines as the contract: nothing fits
    assert code == 1 and "0 accepted, 2 quarantined" in out
