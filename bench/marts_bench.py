"""Benchmark: `dbt run` of all staging + marts models vs ONE hand-written DuckDB query that computes
the same `agg_cell_stats` from `raw.events` (the issue's target: dbt <= 2x the hand-written query).

Data: the simulator's telemetry (demo faults) for --base-users users, ingested once, then replicated
in SQL with suffixed event/unit/device/session ids until raw.events holds --events rows (so the mix of
duplicates, flips, bots, late and pre-exposure events is the simulator's). The hand-written result is
checked against marts.agg_cell_stats (same rows, sums equal to 1e-9 relative).

    .venv/bin/python bench/marts_bench.py --events 20000000 --workdir /tmp/mvt_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = ROOT / "dbt"

SEGMENTS = ["device", "platform", "country", "is_new_user"]

HAND_WRITTEN = """
create or replace table bench.hand_cell_stats as
with ranked as (
    select event_id, event_type, ts, unit_id, device_id, experiment_id, assignment, hash_version, metric, value,
           context->>'$.device' as device, context->>'$.platform' as platform, context->>'$.country' as country,
           context->>'$.is_new_user' as is_new_user, context->>'$.user_agent' as user_agent,
           row_number() over (partition by event_id
                              order by received_at nulls last, dt, source_file, line_number) as rk
    from raw.events
), ev as (select * exclude (rk) from ranked where rk = 1),
fx as (
    select e.event_id, e.experiment_id, e.unit_id, e.ts, e.user_agent, e.device, e.platform, e.country,
           e.is_new_user, f.factor, f.position, json_extract_string(e.assignment, '$.' || f.factor) as level
    from ev e join raw.registry_factors f on f.experiment_id = e.experiment_id
    where e.event_type = 'exposure' and json_extract_string(e.assignment, '$.' || f.factor) is not null
), unit_factor as (
    select experiment_id, unit_id, factor, any_value(position) as position,
           arg_min(level, (ts, event_id)) as level, count(distinct level) as n_levels
    from fx group by all
), unit_x as (
    select experiment_id, unit_id, string_agg(factor || '=' || level, '|' order by position) as cell_id,
           count(*) as n_factors_seen, max(n_levels) > 1 as flipped
    from unit_factor group by all
), unit_first as (
    select experiment_id, unit_id, min(ts) as first_at,
           arg_min(device, (ts, event_id)) as device, arg_min(platform, (ts, event_id)) as platform,
           arg_min(country, (ts, event_id)) as country, arg_min(is_new_user, (ts, event_id)) as is_new_user,
           bool_or(regexp_matches(lower(user_agent), '(bot|crawler|spider|headless|slurp)')) as bot_ua
    from fx group by all
), rate as (
    select unit_id, count(*) / count(distinct ts::date) as per_day from ev group by all
), units as (
    select u.experiment_id, u.unit_id, x.cell_id, u.first_at, u.device, u.platform, u.country, u.is_new_user,
           r.attribution_window_days as win, r.pre_period_days as pre
    from unit_first u join unit_x x using (experiment_id, unit_id)
    join raw.registry_experiments r using (experiment_id)
    left join rate a using (unit_id)
    where not (u.bot_ua or coalesce(a.per_day > 500, false)) and x.n_factors_seen = r.n_factors
      and not (x.flipped and r.flip_policy = 'exclude')
), defs as (
    select em.experiment_id, em.metric, em.role, m.* exclude (metric)
    from raw.registry_experiment_metrics em join raw.registry_metrics m using (metric)
), srcs as (
    select distinct experiment_id, s from defs, unnest([source_metric, numerator_source, denominator_source]) t(s)
    where s is not null
), attributed as (
    select u.experiment_id, u.unit_id, e.metric as src, e.value,
           e.ts >= u.first_at and e.ts < u.first_at + u.win * interval 1 day as post
    from units u join ev e on e.unit_id = u.unit_id and e.event_type = 'metric'
    join srcs s on s.experiment_id = u.experiment_id and s.s = e.metric
    where (e.ts >= u.first_at and e.ts < u.first_at + u.win * interval 1 day)
       or (e.ts < u.first_at and e.ts >= u.first_at - u.pre * interval 1 day)
), sums as (
    select a.experiment_id, a.unit_id, d.metric, a.post,
           sum(value) filter (where src = d.source_metric) as s_sum,
           count(*) filter (where src = d.source_metric) as s_cnt,
           max(case when src = d.source_metric and value > 0 then 1 else 0 end) as s_any,
           sum(value) filter (where src = d.numerator_source) as n_sum,
           count(*) filter (where src = d.numerator_source) as n_cnt,
           sum(value) filter (where src = d.denominator_source) as d_sum,
           count(*) filter (where src = d.denominator_source) as d_cnt
    from attributed a join defs d using (experiment_id) group by all
), per_unit as (
    select u.*, d.metric, d.role, d.kind, d.winsorize,
           {per_period}
    from units u join defs d using (experiment_id)
    left join sums p on p.experiment_id = u.experiment_id and p.unit_id = u.unit_id and p.metric = d.metric and p.post
    left join sums q on q.experiment_id = u.experiment_id and q.unit_id = u.unit_id and q.metric = d.metric and not q.post
), caps as (
    select experiment_id, metric, min(v) as cap from (
        select experiment_id, metric, winsorize, v,
               row_number() over (partition by experiment_id, metric order by v) as rn,
               count(*) over (partition by experiment_id, metric) as cnt
        from per_unit where winsorize is not null
    ) where rn >= ceil(winsorize * cnt) group by all
), final as (
    select p.*,
           case when p.kind = 'ratio' then case when p.den > 0 then p.num / p.den end
                when c.cap is not null and p.v > c.cap then c.cap else p.v end as value,
           case when c.cap is not null and p.cv > c.cap then c.cap else p.cv end as covariate
    from per_unit p left join caps c using (experiment_id, metric)
), seg as (
    select experiment_id, metric, role, kind, cell_id, 'overall' as segment, 'all' as segment_value,
           value, covariate, num, den from final
    {segment_unions}
)
select experiment_id, metric, role, kind, cell_id, segment, segment_value,
       count(*) as n_units, count(value) as n, sum(value) as sum, sum(value * value) as sum_sq,
       sum(covariate) as cov_sum, sum(covariate * covariate) as cov_sum_sq, sum(value * covariate) as cross_sum,
       sum(num) as num_sum, sum(den) as den_sum, sum(num * num) as num_sum_sq, sum(den * den) as den_sum_sq,
       sum(num * den) as num_den_sum
from seg group by all
"""

PER_PERIOD = """
           case d.kind when 'binary' then coalesce({a}.s_any, 0) when 'count' then coalesce({a}.s_cnt, 0)
                when 'continuous' then case d.aggregation when 'count' then coalesce({a}.s_cnt, 0)
                                                          when 'max' then coalesce({a}.s_any, 0)
                                                          else coalesce({a}.s_sum, 0) end end as {v},
           case d.kind when 'ratio' then case when d.numerator_aggregation = 'count' then coalesce({a}.n_cnt, 0)
                                              else coalesce({a}.n_sum, 0) end
                       when 'quantile' then coalesce({a}.s_sum, 0) end as {n},
           case d.kind when 'ratio' then case when d.denominator_aggregation = 'count' then coalesce({a}.d_cnt, 0)
                                              else coalesce({a}.d_sum, 0) end
                       when 'quantile' then coalesce({a}.s_cnt, 0) end as {d}"""


def hand_written_sql() -> str:
    per_period = ",".join([PER_PERIOD.format(a="p", v="v", n="num", d="den"),
                           PER_PERIOD.format(a="q", v="cv", n="cnum", d="cden")])
    unions = "\n".join(
        f"    union all select f.experiment_id, f.metric, f.role, f.kind, f.cell_id, '{s}', coalesce(f.{s}, 'unknown'),"
        f" f.value, f.covariate, f.num, f.den from final f join raw.registry_experiment_segments g"
        f" on g.experiment_id = f.experiment_id and g.segment = '{s}'"
        for s in SEGMENTS)
    return HAND_WRITTEN.replace("{per_period}", per_period).replace("{segment_unions}", unions)


def build_base(work: Path, users: int, days: int) -> Path:
    """Simulate and ingest once; returns the base warehouse (reused across runs)."""
    from mvt_pipeline.ingest import ingest_partition
    from mvt_pipeline.ingest.dump_folders import dump_days
    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.registry.warehouse_tables import write_registry_tables
    from mvt_pipeline.simulate import SimulationConfig, simulate
    from mvt_pipeline.simulate.truth import Faults

    base = work / f"base_{users}_{days}.duckdb"
    if base.exists():
        return base
    registry = load_registry(ROOT / "data" / "registry")
    sim_dir = work / "sim"
    shutil.rmtree(sim_dir, ignore_errors=True)
    simulate(registry, SimulationConfig(users=users, days=days, seed=11, faults=Faults.demo(),
                                        start_date=dt.date(2026, 11, 2)), sim_dir, log=lambda *_: None)
    tmp = base.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as conn:
        write_registry_tables(conn, registry)
        for day in dump_days(sim_dir / "raw"):
            ingest_partition(conn, sim_dir / "raw", day, registry)
    shutil.rmtree(sim_dir)
    tmp.rename(base)
    return base


def replicate(base: Path, target: Path, events: int) -> int:
    shutil.copy(base, target)
    with duckdb.connect(str(target)) as conn:
        n0 = conn.execute("select count(*) from raw.events").fetchone()[0]
        copies = max(1, -(-events // n0))
        conn.execute("create or replace table raw.events_base as select * from raw.events")
        conn.execute("delete from raw.events")
        conn.execute(f"""
            insert into raw.events
            select b.* replace (
                b.event_id || '~' || k as event_id, b.unit_id || '~' || k as unit_id,
                b.device_id || '~' || k as device_id, b.session_id || '~' || k as session_id)
            from raw.events_base as b, range({copies}) t(k)
            order by dt, k
            limit {events}
        """)
        conn.execute("drop table raw.events_base")
        conn.execute("checkpoint")
        return conn.execute("select count(*) from raw.events").fetchone()[0]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_dbt(db: Path, *args: str) -> None:
    env = {**os.environ, "MVT_DUCKDB_PATH": str(db), "MVT_DUCKDB_TEMP_DIR": str(db.parent / "duckdb_tmp"),
           "DO_NOT_TRACK": "1"}
    dbt = str(Path(sys.executable).parent / "dbt")
    proc = subprocess.run([dbt, *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-5000:] + proc.stderr[-2000:])


def compare(db: Path) -> dict:
    keys = "experiment_id, metric, cell_id, segment, segment_value"
    stats = ["n_units", "n", "sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum", "num_sum", "den_sum",
             "num_sum_sq", "den_sum_sq", "num_den_sum"]
    with duckdb.connect(str(db), read_only=True) as conn:
        n_dbt = conn.execute("select count(*) from marts.agg_cell_stats").fetchone()[0]
        n_hand = conn.execute("select count(*) from bench.hand_cell_stats").fetchone()[0]
        cond = " or ".join(
            f"not (abs(coalesce(a.{c}, 0) - coalesce(b.{c}, 0)) <= 1e-9 * greatest(1, abs(coalesce(a.{c}, 0))))"
            f" or ((a.{c} is null) <> (b.{c} is null))" for c in stats)
        bad = conn.execute(
            f"select count(*) from marts.agg_cell_stats a full join bench.hand_cell_stats b using ({keys})"
            f" where a.n_units is null or b.n_units is null or {cond}").fetchone()[0]
    return {"rows_dbt": n_dbt, "rows_hand": n_hand, "mismatched_rows": bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--base-users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mvt_bench"))
    ap.add_argument("--memory-limit", default="8GB")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MVT_DUCKDB_MEMORY_LIMIT", args.memory_limit)

    t_base, base = timed(lambda: build_base(args.workdir, args.base_users, args.days))
    db = args.workdir / "marts_bench.duckdb"
    t_rep, n = timed(lambda: replicate(base, db, args.events))
    print(f"raw.events: {n:,} rows (base {t_base:.1f} s, replicate {t_rep:.1f} s)", flush=True)

    def hand():
        with duckdb.connect(str(db)) as conn:
            conn.execute(f"set memory_limit = '{args.memory_limit}'")
            conn.execute("set TimeZone = 'UTC'")
            conn.execute("create schema if not exists bench")
            conn.execute(hand_written_sql())

    t_hand, _ = timed(hand)
    print(f"hand-written query: {t_hand:.1f} s", flush=True)
    t_full, _ = timed(lambda: run_dbt(db, "run", "--full-refresh"))
    print(f"dbt run --full-refresh (all models): {t_full:.1f} s", flush=True)
    t_inc, _ = timed(lambda: run_dbt(db, "run"))
    print(f"dbt run, incremental with no new partition: {t_inc:.1f} s", flush=True)
    check = compare(db)
    result = {"events": n, "hand_written_s": round(t_hand, 1), "dbt_full_refresh_s": round(t_full, 1),
              "dbt_incremental_noop_s": round(t_inc, 1), "ratio_full": round(t_full / t_hand, 2), **check}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
