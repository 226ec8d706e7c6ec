"""Serialize events as JSON lines (docs/architecture.md §2) into raw/<source>/dt=YYYY-MM-DD/events-<n>.jsonl[.gz].

Lines are built column-wise with polars string expressions (no per-event Python loop); files are
gzip-compressed with mtime 0 so the same seed gives byte-identical output. Within a file lines are
ordered by received_at, then event_id.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl

from .faults import MALFORMED_KINDS, PII_KINDS, malformed_line
from .generator import SESSIONS, Generated, assignment_tables
from .population import APP_VERSION, BOT_USER_AGENTS, COUNTRIES, DEVICES, PLATFORMS, USER_AGENTS
from .truth import SimulationConfig

ISO = "%Y-%m-%dT%H:%M:%S%.3fZ"
INT_KINDS = ("conversion", "counter", "request_flag")


def _contexts(gen: Generated) -> list[str]:
    u = gen.units
    cache: dict[tuple, str] = {}
    out = []
    for plat, dev, country, new, bot in zip(u["platform"].tolist(), u["device"].tolist(), u["country"].tolist(),
                                            u["is_new_user"].tolist(), u["bot_ua"].tolist()):
        key = (plat, dev, country, new, bot)
        text = cache.get(key)
        if text is None:
            p, d = PLATFORMS[plat], DEVICES[dev]
            text = json.dumps({
                "device": d, "platform": p, "country": COUNTRIES[country], "app_version": APP_VERSION[p],
                "user_agent": BOT_USER_AGENTS[bot] if bot >= 0 else USER_AGENTS[(p, d)], "is_new_user": bool(new),
            }, separators=(",", ":"))
            cache[key] = text
        out.append(text)
    return out


def build_lines(gen: Generated, ev: dict[str, np.ndarray], config: SimulationConfig) -> pl.DataFrame:
    """One row per line to write: source folder, dt, received_at (ms), event_id, line text."""
    assignment, cell_ids = assignment_tables(gen.experiments)
    max_cell = max([c for (_e, c, _f) in assignment] + [0]) + 1
    max_fac = max([f for (_e, _c, f) in assignment] + [0]) + 2
    size = max(len(gen.experiments), 1) * max_cell * max_fac
    asg_lookup: list[str | None] = [None] * size
    cid_lookup: list[str | None] = [None] * size
    for (e, c, f), text in assignment.items():
        code = (e * max_cell + c) * max_fac + f + 1
        asg_lookup[code] = text
        if f == -1:
            cid_lookup[code] = cell_ids[(e, c)]
    folder_of_unit = np.asarray([config.sources[p % len(config.sources)] for p in range(len(PLATFORMS))], dtype=object)
    kinds = [gen.sources[s].kind for s in gen.source_names]
    int_src = np.asarray([k in INT_KINDS for k in kinds] + [False])
    unit = ev["unit"]
    df = pl.DataFrame({
        "unit": unit, "dev": ev["dev"], "sess": ev["sess"], "ts": ev["ts"], "received": ev["received"],
        "etype": ev["etype"], "seq": ev["seq"], "event_no": ev["event_no"], "hv": ev["hv"], "pii": ev["pii"],
        "pii_n": ev["pii_n"], "value": ev["value"], "src": ev["src"],
        "int_value": int_src[ev["src"]],
        "code": np.where(ev["etype"] == 0, (ev["exp"].astype(np.int64) * max_cell + ev["cell"]) * max_fac + ev["factor"] + 1, 0),
        "exp": np.maximum(ev["exp"], 0), "srcc": np.maximum(ev["src"], 0),
        "folder": folder_of_unit[gen.units["platform"][unit]].astype(str),
    })
    unit_ids = pl.Series(gen.unit_ids, dtype=pl.Utf8)
    contexts = pl.Series(_contexts(gen), dtype=pl.Utf8)
    exp_names = pl.Series([e.id for e in gen.experiments] or [""], dtype=pl.Utf8)
    src_names = pl.Series(gen.source_names or [""], dtype=pl.Utf8)
    asg = pl.Series(asg_lookup, dtype=pl.Utf8)
    cid = pl.Series(cid_lookup, dtype=pl.Utf8)
    sess = pl.Series(SESSIONS, dtype=pl.Utf8)
    df = df.with_columns(
        unit_ids.gather(df["unit"]).alias("unit_id"),
        contexts.gather(df["unit"]).alias("context"),
        exp_names.gather(df["exp"]).alias("experiment_id"),
        src_names.gather(df["srcc"]).alias("metric"),
        asg.gather(df["code"]).alias("assignment"),
        cid.gather(df["code"]).alias("cell_id"),
        sess.gather(df["sess"]).alias("session"),
    )
    event_id = pl.concat_str([pl.lit(f"e{config.seed}-"), pl.col("event_no").cast(pl.Utf8).str.zfill(9)])
    suffix = pl.col("unit_id").str.slice(1)
    device_id = pl.concat_str([pl.lit("d"), suffix, pl.when(pl.col("dev") == 1).then(pl.lit("-b")).otherwise(pl.lit(""))])
    session_id = pl.concat_str([pl.lit("s"), suffix, pl.lit("-"), pl.col("session")])
    value = pl.when(pl.col("int_value")).then(pl.col("value").cast(pl.Int64).cast(pl.Utf8)).otherwise(pl.col("value").cast(pl.Utf8))
    exposure_part = pl.concat_str([
        pl.lit(',"experiment_id":"'), pl.col("experiment_id"), pl.lit('","assignment":'), pl.col("assignment"),
        pl.when(pl.col("cell_id").is_not_null()).then(pl.concat_str([pl.lit(',"cell_id":"'), pl.col("cell_id"), pl.lit('"')])).otherwise(pl.lit("")),
        pl.lit(',"hash_version":"'), pl.when(pl.col("hv") == 1).then(pl.lit("v2")).otherwise(pl.lit("v1")), pl.lit('"'),
    ])
    metric_part = pl.concat_str([pl.lit(',"metric":"'), pl.col("metric"), pl.lit('","value":'), value])
    pii_text = (
        pl.when(pl.col("pii") == 0).then(pl.concat_str([pl.lit('"email":"user'), pl.col("pii_n").cast(pl.Utf8), pl.lit('@example.com",')]))
        .when(pl.col("pii") == 1).then(pl.concat_str([pl.lit('"phone":"+1-202-555-'), pl.col("pii_n").cast(pl.Utf8).str.zfill(4), pl.lit('",')]))
        .when(pl.col("pii") == 2).then(pl.concat_str([pl.lit('"client_ip":"203.0.'), (pl.col("pii_n") % 256).cast(pl.Utf8), pl.lit("."), (pl.col("pii_n") // 256).cast(pl.Utf8), pl.lit('",')]))
        .otherwise(pl.lit(""))
    )
    context = pl.concat_str([pl.lit("{"), pii_text, pl.col("context").str.slice(1)])
    line = pl.concat_str([
        pl.lit('{"event_id":"'), event_id,
        pl.lit('","event_type":"'), pl.when(pl.col("etype") == 0).then(pl.lit("exposure")).otherwise(pl.lit("metric")),
        pl.lit('","ts":"'), pl.from_epoch("ts", time_unit="ms").dt.strftime(ISO),
        pl.lit('","received_at":"'), pl.from_epoch("received", time_unit="ms").dt.strftime(ISO),
        pl.lit('","unit_id":"'), pl.col("unit_id"),
        pl.lit('","device_id":"'), device_id,
        pl.lit('","session_id":"'), session_id,
        pl.lit('","seq":'), pl.col("seq").cast(pl.Utf8),
        pl.when(pl.col("etype") == 0).then(exposure_part).otherwise(metric_part),
        pl.lit(',"context":'), context, pl.lit("}"),
    ])
    out = df.select(
        pl.col("folder"),
        pl.from_epoch("received", time_unit="ms").dt.strftime("%Y-%m-%d").alias("dt"),
        pl.col("received"),
        event_id.alias("event_id"),
        line.alias("line"),
    )
    return out.sort(["folder", "dt", "received", "event_id"])


def write_lines(lines: pl.DataFrame, out_dir: Path, config: SimulationConfig, rng, log=print) -> dict:
    """Write every (source, dt) partition, adding malformed lines; returns line counts."""
    raw = Path(out_dir) / "raw"
    malformed = {k: 0 for k in MALFORMED_KINDS}
    written = 0
    ext = ".jsonl.gz" if config.compress else ".jsonl"
    days = sorted(lines["dt"].unique().to_list())
    parts = lines.partition_by(["folder", "dt"], maintain_order=True, as_dict=True)
    files = []
    for di, day in enumerate(days):
        for folder in config.sources:
            part = parts.get((folder, day))
            if part is None:
                continue
            text = part["line"].to_list()
            bad = np.nonzero(rng.random(len(text)) < config.faults.malformed_rate)[0]
            if len(bad):
                kinds = rng.integers(0, len(MALFORMED_KINDS), len(bad))
                for offset, (i, k) in enumerate(zip(bad.tolist(), kinds.tolist())):
                    malformed[MALFORMED_KINDS[k]] += 1
                    text.insert(i + 1 + offset, malformed_line(text[i + offset], MALFORMED_KINDS[k], rng))
            target = raw / folder / f"dt={day}"
            target.mkdir(parents=True, exist_ok=True)
            step = config.max_lines_per_file
            for n, lo in enumerate(range(0, len(text), step)):
                data = ("\n".join(text[lo:lo + step]) + "\n").encode()
                path = target / f"events-{n}{ext}"
                if config.compress:
                    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
                        gz.write(data)
                else:
                    path.write_bytes(data)
                files.append(str(path.relative_to(out_dir)))
            written += len(text)
        log(f"[simulate] day {di + 1}/{len(days)} dt={day} written ({100 * (di + 1) / len(days):.0f}%)")
    return {"lines_written": written, "malformed": malformed, "files": files}


__all__ = ["build_lines", "write_lines", "PII_KINDS"]
