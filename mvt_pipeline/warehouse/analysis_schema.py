"""DDL of the `analysis` schema: every table the nightly analysis writes, with its columns and types.

Why explicit: the history of nights is the product. A table is created from this list, never from a
data frame, and a column added in a later release is added by migration (`add column if not exists`)
so every earlier night survives an upgrade. Night tables hold one row set per `as_of` (the night's
partition key) plus `computed_at`; the catalogue's column schemas are built from the same list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

SCHEMA = "analysis"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class AnalysisTable:
    name: str
    description: str
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type), in table order
    night_column: str | None = "as_of"  # the column a re-run replaces rows by (None: append-only)
    primary_key: str | None = None

    @property
    def qualified(self) -> str:
        return f'{SCHEMA}."{self.name}"'

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def ddl(self) -> str:
        cols = ", ".join(f'"{c}" {t}' + (" primary key" if c == self.primary_key else "") for c, t in self.columns)
        return f"create table if not exists {self.qualified} ({cols})"


def _night(name: str, description: str, columns: str) -> AnalysisTable:
    """A per-night table: `as_of` first, the computed columns, then `computed_at`."""
    parsed = tuple(tuple(part.strip().split(" ", 1)) for part in columns.split(",") if part.strip())
    for col, _type in parsed:
        assert _NAME.match(col), col
    return AnalysisTable(name, description, (("as_of", "date"), *parsed, ("computed_at", "timestamp")))


TABLES: dict[str, AnalysisTable] = {t.name: t for t in [
    _night("effects", "Main effects and interactions per experiment x metric: fixed-horizon and always-valid "
                      "intervals, relative lift, CUPED.", """
        experiment_id varchar, metric varchar, metric_role varchar, metric_kind varchar, term varchar,
        level varchar, aliases varchar, estimate double, std_error double, ci_low double, ci_high double,
        p_value double, q_value double, seq_ci_low double, seq_ci_high double, seq_p_value double,
        seq_q_value double, n_star bigint, control_mean double, rel_lift double, rel_ci_low double,
        rel_ci_high double, rel_p_value double, n_units bigint, se_type varchar, cuped boolean,
        variance_reduction double, pre_imbalance_p double, status varchar, shrunk_estimate double,
        shrink_factor double"""),
    _night("srm", "Sample ratio mismatch per experiment: chi-square of units per cell vs the planned allocation, "
                  "factor margins and segments.", """
        experiment_id varchar, n_units bigint, n_cells bigint, observed varchar, expected_share varchar,
        unexpected_cells varchar, chi2 double, df bigint, p_value double, margin_p_values varchar,
        segments_flagged varchar, passed boolean, status varchar"""),
    _night("budget_burn", "Error-budget burn per experiment x SLO metric x cell over the multi-window burn-rate "
                          "windows (short windows pause a treated cell burning faster than control).", """
        experiment_id varchar, metric varchar, cell_id varchar, is_control boolean, window_hours bigint,
        short_window boolean, window_start timestamp, window_end timestamp, events bigint, bad_events bigint,
        bad_ratio double, objective double, period_days bigint, burn_rate double, budget_consumed double,
        control_burn_rate double, status varchar"""),
    _night("cell_bayes", "Posterior of each cell's mean, P(cell is best) and expected loss.", """
        cell_id varchar, n double, sum double, sum_sq double, posterior_mean double, posterior_sd double,
        prob_best double, expected_loss double, experiment_id varchar, metric varchar"""),
    _night("hte", "Effects per segment with BH across segments and empirical-Bayes shrinkage.", """
        term varchar, level varchar, segment varchar, estimate double, std_error double, ci_low double,
        ci_high double, p_value double, q_value double, shrunk_estimate double, shrunk_std_error double,
        shrink_factor double, n_units bigint, experiment_id varchar, metric varchar, metric_role varchar,
        segment_variable varchar"""),
    _night("hte_heterogeneity", "Cochran's Q / I-squared / tau-squared per effect and segment variable.", """
        term varchar, level varchar, k bigint, pooled_estimate double, pooled_std_error double,
        q_stat double, df bigint, p_value double, q_value double, i2 double, tau2 double, re_mean double,
        re_std_error double, experiment_id varchar, metric varchar, metric_role varchar,
        segment_variable varchar"""),
    _night("stale_flags", "Every feature flag classified against the registry and exposure activity.", """
        flag_key varchar, source_file varchar, experiment_id varchar, classification varchar, reason varchar,
        owner varchar, age_days bigint, recommended_action varchar"""),
    _night("decisions", "The night's decision per experiment: the rule that fired, the cell or flag variant to act "
                        "on, the numbers the rule read, days needed, and the report it is explained in.", """
        experiment_id varchar, decision varchar, reasons varchar, report_path varchar, label varchar,
        cell varchar, flag_key varchar, variant varchar, flags json, rule varchar, inputs json,
        days_needed bigint, degradations json, primary_metric varchar, primary_cell varchar,
        primary_control_value double, primary_estimate double, primary_ci_low double, primary_ci_high double,
        primary_interval varchar, guardrail_status varchar, days_running bigint"""),
    _night("guardrails", "Every treated cell and factor level vs control per guardrail metric: estimate, margin, "
                         "one-sided harm and non-inferiority tests (Holm across the experiment), status.", """
        experiment_id varchar, scope varchar, cell varchar, factor varchar, level varchar, flag_key varchar,
        metric varchar, metric_kind varchar, unit varchar, direction varchar, control_value double,
        treatment_value double, estimate double, std_error double, margin double, harm_bound double,
        p_harm double, p_harm_adjusted double, p_noninferiority double, decision_basis varchar,
        n_units bigint, status varchar"""),
    AnalysisTable("alerts", "Every alert (firing, resolved or suppressed in the quiet period) per run x experiment x "
                            "symptom, its route and its delivery outcome; undelivered ones are retried from here.", (
        ("alert_key", "varchar"), ("run_id", "varchar"), ("asset", "varchar"), ("check_name", "varchar"),
        ("severity", "varchar"), ("partition", "varchar"), ("message", "varchar"), ("details", "json"),
        ("delivered_to", "varchar"), ("created_at", "timestamp"), ("experiment_id", "varchar"),
        ("symptom", "varchar"), ("kind", "varchar"), ("route", "varchar"), ("owner", "varchar"),
        ("status", "varchar"), ("attempts", "integer"), ("last_error", "varchar"), ("delivered_at", "timestamp")),
        night_column=None, primary_key="alert_key"),
    AnalysisTable("gx_validations", "Great Expectations results per ingested day and suite.", (
        ("dt", "date"), ("suite", "varchar"), ("success", "boolean"), ("evaluated", "integer"),
        ("failed", "integer"), ("result", "json"), ("validated_at", "timestamp")), night_column="dt"),
]}


def table(name: str) -> AnalysisTable:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"analysis.{name} is not a table of mvt_pipeline/warehouse/analysis_schema.py") from None


def ensure_table(conn: duckdb.DuckDBPyConnection, name: str) -> AnalysisTable:
    """Create the table if missing, and add the columns an older release did not have."""
    t = table(name)
    conn.execute(f"create schema if not exists {SCHEMA}")
    conn.execute(t.ddl())
    existing = {r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_catalog = current_database()"
        " and table_schema = ? and table_name = ?", [SCHEMA, t.name]).fetchall()}
    for col, col_type in t.columns:
        if col not in existing:
            conn.execute(f'alter table {t.qualified} add column if not exists "{col}" {col_type}')
    return t


def ensure_analysis_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for name in TABLES:
        ensure_table(conn, name)
