"""Bounded memory in ingestion, and nothing read from outside the dumps (#19): a gzip bomb holding one
huge line, a flood of newlines and files over the size limit are quarantined with their reason while
the rest of the file (and the day) loads, at a peak RSS far below the file's decompressed size; links
and FIFOs in the dump tree are never followed or opened; a `dt=` folder that is not a date is skipped.

The bombs run in a fresh subprocess (so its peak RSS is its own: `ru_maxrss` of RUSAGE_SELF, printed
by the child) with small limits set through the environment, each under a subprocess timeout."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.ingest.dump_folders import day_fingerprints, dump_days
from mvt_pipeline.ingest.raw_loader import list_partition_files
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY
from .test_ingest_corpus import DAY, METRIC, _folder

MiB = 1024 * 1024
RSS_BOUND_MB = 1500
LIMITS = {"MVT_MAX_LINE_BYTES": str(1 * MiB), "MVT_MAX_FILE_BYTES": str(80 * MiB)}
TIMEOUT_S = 120

# The child: build the scenario's files under argv[1]/raw, ingest the day, print what happened.
_CHILD = textwrap.dedent('''
    import gzip, json, os, resource, sys, zlib
    from pathlib import Path
    import duckdb
    from mvt_pipeline.ingest import ingest_partition
    from mvt_pipeline.registry import load_registry

    root, scenario, day, registry_dir, good = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    MiB = 1024 * 1024
    folder = root / "raw" / "web_sdk" / f"dt={day}"
    folder.mkdir(parents=True)

    def gz_stream(path, pieces):
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        with open(path, "wb") as fh:
            for piece in pieces:
                fh.write(c.compress(piece))
            fh.write(c.flush())

    def good_lines(tag, n):
        return "".join(good.replace("m1", f"{tag}-{i}") + "\\n" for i in range(n)).encode()

    if scenario == "long_line":  # one 256 MiB line between good lines, in a 2 MB-ish gzip
        gz_stream(folder / "bomb.jsonl.gz",
                  [good_lines("a", 3), b'{"event_id":"' ] + [b"x" * (4 * MiB)] * 64 + [b'"}\\n', good_lines("b", 2)])
    elif scenario == "newlines":  # 64 MiB of newlines, good lines before and after
        with open(folder / "blank.jsonl", "wb") as fh:
            fh.write(good_lines("a", 2))
            for _ in range(16):
                fh.write(b"\\n" * (4 * MiB))
            fh.write(good_lines("b", 2))
    elif scenario == "oversized":  # over MVT_MAX_FILE_BYTES (80 MiB): decompressed, on disk, CSV
        gz_stream(folder / "big.jsonl.gz", [good_lines("g", 1000)] * 500)  # ~ 180 MiB of text
        with open(folder / "sparse.jsonl", "wb") as fh:
            fh.truncate(96 * MiB)  # never read: the size says it all
        header = b"event_id,event_type,ts,received_at,unit_id,device_id,seq,metric,value\\n"
        row = b"c1,metric,2026-11-02T10:05:00Z,2026-11-02T10:05:01Z,u1,d1,2,signup,1\\n"
        gz_stream(folder / "big.csv.gz", [header] + [row * 100_000] * 20)  # ~ 140 MiB of text
        (folder / "ok.jsonl").write_bytes(good_lines("ok", 5))
    else:
        raise SystemExit(f"unknown scenario {scenario}")

    conn = duckdb.connect()
    summary = ingest_partition(conn, root / "raw", day, load_registry(Path(registry_dir)))
    log = conn.execute("select path, rows_read, rows_accepted, rows_quarantined, file_warning from raw.ingest_log "
                       "order by path").fetchall()
    quarantine = conn.execute("select source_file, line_number, reason, strlen(raw) from raw.quarantine "
                              "order by 1, 2").fetchall()
    accepted = conn.execute("select source_file, line_number from raw.events order by 1, 2").fetchall()
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "mismatched": summary.mismatched_files, "log": log, "quarantine": quarantine,
                      "accepted": accepted, "warnings": summary.warnings}))
''')


def _run_bomb(tmp_path: Path, scenario: str, **limits: str) -> dict:
    env = {**os.environ, **LIMITS, **limits}
    good = json.dumps(METRIC, separators=(",", ":"))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), scenario, DAY, str(SAMPLE_REGISTRY), good],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mismatched"] == []
    for path, read, accepted, quarantined, _warning in out["log"]:  # rows in = accepted + quarantined, per file
        assert read == accepted + quarantined
        assert quarantined == sum(1 for q in out["quarantine"] if q[0] == path)
        assert accepted == sum(1 for a in out["accepted"] if a[0] == path)
    assert out["rss_mb"] < RSS_BOUND_MB, f"peak RSS {out['rss_mb']:.0f} MB"
    return out


def _by_file(out: dict, name: str) -> tuple[list, list]:
    q = [row[1:] for row in out["quarantine"] if row[0].endswith(name)]
    a = [row[1] for row in out["accepted"] if row[0].endswith(name)]
    return q, a


def test_gzip_of_one_huge_line_is_one_oversized_row(tmp_path):
    out = _run_bomb(tmp_path, "long_line", MVT_MAX_FILE_BYTES=str(512 * MiB))  # the line alone is 256 MiB
    quarantined, accepted = _by_file(out, "bomb.jsonl.gz")
    assert quarantined == [[4, "oversized_line", 4096]]  # only the first 4 KiB is kept
    assert accepted == [1, 2, 3, 5, 6]
    assert f"{256 * MiB + 15:,} bytes" in out["warnings"][0]  # the line's size is named


def test_a_flood_of_newlines_is_skipped_and_numbering_stays_physical(tmp_path):
    out = _run_bomb(tmp_path, "newlines")
    quarantined, accepted = _by_file(out, "blank.jsonl")
    assert quarantined == []
    assert accepted == [1, 2, 3 + 64 * MiB, 4 + 64 * MiB]
    assert out["log"][0][1] == 4  # blank lines are not counted


def test_files_over_the_size_limit_are_one_oversized_file_row(tmp_path):
    out = _run_bomb(tmp_path, "oversized")
    for name in ("big.jsonl.gz", "sparse.jsonl", "big.csv.gz"):
        quarantined, accepted = _by_file(out, name)
        assert [q[:2] for q in quarantined] == [[None, "oversized_file"]], name
        assert accepted == [], name
    assert _by_file(out, "ok.jsonl")[1] == [1, 2, 3, 4, 5]
    warnings = " ".join(out["warnings"])
    assert "100,663,296 bytes" in warnings and "83,886,080 bytes" in warnings  # the file's size and the limit


# --- links, FIFOs and folder names (the ingestion in a child under a timeout: a followed FIFO blocks) ---

def _ingest_in_child(raw: Path) -> dict:
    code = textwrap.dedent('''
        import json, sys
        from pathlib import Path
        import duckdb
        from mvt_pipeline.ingest import ingest_partition
        from mvt_pipeline.registry import load_registry
        conn = duckdb.connect()
        s = ingest_partition(conn, Path(sys.argv[1]), sys.argv[2], load_registry(Path(sys.argv[3])))
        print(json.dumps({
            "mismatched": s.mismatched_files,
            "quarantine": conn.execute("select source_file, line_number, reason, raw from raw.quarantine order by 1").fetchall(),
            "events": conn.execute("select source_file, count(*) from raw.events group by 1 order by 1").fetchall(),
            "log": conn.execute("select path, rows_read, rows_accepted, rows_quarantined from raw.ingest_log order by 1").fetchall()}))
    ''')
    proc = subprocess.run([sys.executable, "-c", code, str(raw), DAY, str(SAMPLE_REGISTRY)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_links_and_fifos_in_the_dump_tree_are_never_followed(tmp_path, caplog):
    raw = tmp_path / "raw"
    folder = _folder(raw)
    good = json.dumps(METRIC, separators=(",", ":")) + "\n"
    (folder / "ok.jsonl").write_text(good)
    secret = tmp_path / "secret.txt"
    secret.write_text('{"event_id":"leak","password":"hunter2"}\n')
    (folder / "passwd.jsonl").symlink_to(secret)
    (folder / "zero.jsonl").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.jsonl")
    (folder / "zz.csv").symlink_to(secret)
    # a linked dt= folder and a linked source folder: skipped
    elsewhere = tmp_path / "elsewhere" / f"dt={DAY}"
    elsewhere.mkdir(parents=True)
    (elsewhere / "x.jsonl").write_text(good.replace("m1", "linked"))
    (raw / "ios_sdk").mkdir()
    (raw / "ios_sdk" / f"dt={DAY}").symlink_to(elsewhere, target_is_directory=True)
    (raw / "linked_sdk").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    with caplog.at_level(logging.WARNING):
        listed = list_partition_files(raw, DAY)
    assert sorted(p.name for _, p in listed) == ["ok.jsonl", "passwd.jsonl", "pipe.jsonl", "zero.jsonl", "zz.csv"]
    assert "symbolic link, skipped" in caplog.text and "ios_sdk" in caplog.text and "linked_sdk" in caplog.text

    out = _ingest_in_child(raw)
    assert out["mismatched"] == []
    reasons = {Path(path).name: (line, reason) for path, line, reason, _ in out["quarantine"]}
    assert reasons == {"passwd.jsonl": (None, "symlink_refused"), "zero.jsonl": (None, "symlink_refused"),
                       "zz.csv": (None, "symlink_refused"), "pipe.jsonl": (None, "unreadable_file")}
    assert not any("hunter2" in (raw_text or "") for *_, raw_text in out["quarantine"])
    assert [(Path(p).name, n) for p, n in out["events"]] == [("ok.jsonl", 1)]
    assert all(r == a + q for _, r, a, q in out["log"])


def test_invalid_dt_folders_are_skipped_with_a_warning(tmp_path, caplog):
    raw = tmp_path / "raw"
    for name in ("dt=2026-13-45", "dt=yesterday", f"dt={DAY}"):
        (raw / "web_sdk" / name).mkdir(parents=True)
        (raw / "web_sdk" / name / "a.jsonl").write_text(json.dumps(METRIC) + "\n")
    (raw / "ios_sdk").mkdir()
    (raw / "ios_sdk" / "dt=2026-11-03").symlink_to(raw / "web_sdk" / f"dt={DAY}", target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        assert dump_days(raw) == [DAY]
        assert list(day_fingerprints(raw)) == [DAY]
    assert "dt=2026-13-45" in caplog.text and "dt=yesterday" in caplog.text and "ios_sdk/dt=2026-11-03" in caplog.text
    with pytest.raises(ValueError, match="not a valid date"):
        list_partition_files(raw, "2026-13-45")
    summary = ingest_partition(duckdb.connect(), raw, DAY, load_registry(SAMPLE_REGISTRY))
    assert summary.rows_accepted == 1


def test_demo_days_tolerate_an_invalid_dt_folder(tmp_path, monkeypatch):
    """`mvt demo --keep-data` lists the days with `dump_days`: a bad folder name must not abort it."""
    from mvt_pipeline import demo

    raw = tmp_path / "data" / "raw"
    (raw / "web_sdk" / "dt=2026-13-45").mkdir(parents=True)
    (raw / "web_sdk" / "dt=2026-13-45" / "a.jsonl").write_text("{}\n")
    monkeypatch.setenv("MVT_DATA_DIR", str(tmp_path / "data"))
    assert demo.main(["--keep-data"]) == 1  # "no dump folders": nothing valid to run, and no crash


# --- the streamed readers agree with the whole-file reading they replace, whatever the block size ----

def _reference_rows(data: bytes, complete: bool, max_line: int) -> list[tuple]:
    """The lines of `data` as the former whole-file fallback read them (blank lines dropped)."""
    from mvt_pipeline.ingest.file_readers import RAW_SNIPPET_CHARS, _snippet_text

    pieces = data.split(b"\n")
    ends_clean = data.endswith(b"\n")
    if ends_clean:
        pieces.pop()
    rows = []
    for i, piece in enumerate(pieces, start=1):
        reason = "truncated_file" if not complete and i == len(pieces) and not ends_clean else None
        if len(piece) > max_line:
            reason, line = reason or "oversized_line", _snippet_text(piece)
        else:
            try:
                line = piece.decode("utf-8")
                if "\x00" in line:
                    raise UnicodeError
            except UnicodeError:
                reason = reason or "encoding"
                line = piece[:RAW_SNIPPET_CHARS].replace(b"\x00", b"\\0").decode("utf-8", "backslashreplace")
        if reason is None and not line.strip():
            continue
        rows.append((i, line, reason))
    return rows


def _gunzip_reference(data: bytes) -> tuple[bytes, bool]:
    import zlib

    out, buf = [], data
    try:
        while buf:
            d = zlib.decompressobj(31)
            out.append(d.decompress(buf))
            if not d.eof:
                return b"".join(out), False
            buf = d.unused_data
    except zlib.error:
        return b"".join(out), False
    return b"".join(out), True


_PIECES = [b"\n", b"\n\n", b"\r\n", b"\r", b" ", b"{}", b'{"a":1}', b"\x00", b"\xff", b"\xc3\xa9", b"x" * 700]


def test_streamed_fallback_and_scan_match_whole_file_reading(tmp_path, monkeypatch):
    import gzip

    from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

    from mvt_pipeline.ingest import file_readers as fr

    monkeypatch.setenv("MVT_MAX_LINE_BYTES", "1024")

    @hyp_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(parts=st.lists(st.sampled_from(_PIECES), max_size=40), block=st.integers(1, 64),
           gz=st.sampled_from(["plain", "gz", "two_members", "truncated"]), cut=st.integers(1, 30))
    def check(parts, block, gz, cut):
        data = b"".join(parts)
        path = tmp_path / ("f.jsonl.gz" if gz != "plain" else "f.jsonl")
        if gz == "plain":
            raw = data
        elif gz == "gz":
            raw = gzip.compress(data)
        elif gz == "two_members":
            raw = gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2:])
        else:
            raw = gzip.compress(data)[:-cut]
        path.write_bytes(raw)
        monkeypatch.setattr(fr, "SCAN_BLOCK_BYTES", block)
        monkeypatch.setattr(fr, "_COMPRESSED_BLOCK_BYTES", max(1, block // 3))
        text, complete = (data, True) if gz == "plain" else _gunzip_reference(raw)

        scan = fr.scan_text(path, 1 << 30)
        if scan.complete:  # the strict (Arrow) inflater read it all: its figures are the text's
            assert complete
            lines = text.split(b"\n") if text else []
            if text.endswith(b"\n"):
                lines.pop()
            assert (scan.size, scan.lines) == (len(text), len(lines))
            assert scan.longest_line == max((len(x) for x in lines), default=0)
            assert scan.blank_lines == sum(1 for x in lines if x in (b"", b"\r"))

        staged = fr.StagedFile("s", path, "jsonl")
        frame = fr._python_fallback(staged, None, "test")
        expected = _reference_rows(text, complete, 1024)
        got = [r for r in frame.select("line_number", "line", "pre_reason").iter_rows()]
        if frame["line_number"].null_count() and len(got) == 1 and got[0][2] in ("empty_file", "unreadable_file"):
            return  # whole-file outcomes: decided on the same counts as before
        if not complete and not text.endswith(b"\n") and not text:
            return
        if got and got[-1][0] is None:  # truncated after a complete line: the extra row
            assert not complete and got[-1][2] == "truncated_file"
            got = got[:-1]
        assert got == expected

    check()


@pytest.mark.timeout(60)  # following the FIFO would block forever
def test_the_manifest_fingerprints_a_link_by_its_text_never_its_target(tmp_path):
    from mvt_pipeline.ingest.manifest import fingerprint_files

    target, other = tmp_path / "target.txt", tmp_path / "other.txt"
    target.write_text("a")
    other.write_text("a")
    link = tmp_path / "dump.jsonl"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opened, it would block the night

    def digest() -> tuple[str, str]:
        (a, b) = fingerprint_files([("s", link), ("s", fifo)])
        return a.sha256, b.sha256

    first = digest()
    target.write_text("changed, but never read")
    assert digest() == first
    link.unlink()
    link.symlink_to(other)
    assert digest()[0] != first[0] and digest()[1] == first[1]


def test_a_pinned_file_is_the_one_checked_even_if_the_entry_is_swapped_for_a_link(tmp_path):
    import polars as pl

    from mvt_pipeline.safe_files import pinned_path

    dump, secret = tmp_path / "a.jsonl", tmp_path / "secret.txt"
    dump.write_text('{"ok":1}\n')
    secret.write_text("hunter2\n")
    with pinned_path(dump) as pinned:
        dump.unlink()
        dump.symlink_to(secret)  # swapped after the check, before the reader opens it
        lines = pl.read_csv(pinned, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"])
    assert lines["line"].to_list() == ['{"ok":1}']
    with pytest.raises(OSError):  # and a link is never pinned
        with pinned_path(dump):
            pass
