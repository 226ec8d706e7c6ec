"""Every setting that comes from the environment, read here and nowhere else (docs/architecture.md §7).

Read at call time, not import time, so tests can point each run at a tmp directory. The one
exception is what Dagster needs when the code location loads (the partitions' start, the schedule's
cron and timezone): `settings()` is called then, so a change needs a reload of the code location.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"

# Defaults, defined once. DuckDB's memory cap applies to the Python connections and to dbt alike
# (dbt receives it through the environment, see `dbt_environment`): a large night spills to disk.
DEFAULT_DUCKDB_MEMORY_LIMIT = "4GB"
# The engine of the dbt models (docs/scale-out.md): DuckDB in the warehouse file, or Apache Spark
# through dbt-spark reading the raw tables as Parquet (the dbt target of the same name).
WAREHOUSES = ("duckdb", "spark")
DEFAULT_WAREHOUSE = "duckdb"
DEFAULT_SPARK_MASTER = "local[2]"
DEFAULT_SPARK_DRIVER_MEMORY = "4g"
# the night dbt builds, handed to the dbt subprocess (night_environment; dbt/macros/as_of.sql)
AS_OF_VARIABLE = "MVT_AS_OF"
DEFAULT_PARTITIONS_START = "2026-10-01"
DEFAULT_NIGHTLY_CRON = "0 3 * * *"  # 03:00 every day, for the previous (last complete) day
DEFAULT_NIGHTLY_TIMEZONE = "UTC"
SLACK_API = "https://slack.com/api/chat.postMessage"

_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)$", re.IGNORECASE)


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use (the message names it)."""


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    path = Path(value) if value else default
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    return path


def _text(var: str, default: str | None = None) -> str | None:
    value = os.environ.get(var, "").strip()
    return value or default


def _date(var: str, default: str) -> dt.date:
    value = _text(var, default)
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise SettingsError(f"{var}={value!r} is not a date (YYYY-MM-DD)") from exc


DEFAULT_QUIET_PERIOD_HOURS = 12.0  # a night's re-runs and backfills alert once; the next night reminds
DEFAULT_DELIVERY_DEADLINE_S = 10.0


def _float(var: str, default: float, low: float, high: float) -> float:
    value = _text(var)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise SettingsError(f"{var}={value!r} is not a number") from exc
    if not low <= number <= high:
        raise SettingsError(f"{var}={value!r} must be between {low:g} and {high:g}")
    return number


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go besides the log and `analysis.alerts` (secrets: never logged or stored).

    Pages (guardrail harm, budget burn, failed runs) go to the webhook and to Slack, in the experiment
    owner's channel from the registry's `owners:` map or `slack_channel`; tickets (business-metric
    degradations, SRM, WARN checks) to the ticket webhook / channel, or only to the table."""

    webhook_url: str | None = None
    slack_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str = SLACK_API
    ticket_webhook_url: str | None = None
    slack_ticket_channel: str | None = None
    quiet_period_hours: float = DEFAULT_QUIET_PERIOD_HOURS  # the same (experiment, symptom) is not re-sent
    delivery_deadline_s: float = DEFAULT_DELIVERY_DEADLINE_S  # one deadline per delivery, all retries included
    report_base_url: str | None = None  # e.g. https://reports.example.com -> links to <base>/<as_of>/<experiment>.html
    dagster_base_url: str | None = None  # e.g. http://dagster:3000 -> links to <base>/runs/<run_id>


DEFAULT_MAX_LINE_BYTES = 1_048_576  # one JSON line, decompressed: longer is `oversized_line`
DEFAULT_MAX_FILE_BYTES = 4 * 1024**3  # one dump file, decompressed: reading stops there (`oversized_file`)
DEFAULT_MAX_JSON_DEPTH = 32  # nesting of one JSON line / flagd rule / YAML document: deeper is `too_deep`
DEFAULT_RUN_TIMEOUT_S = 6 * 3600.0  # a run still going after this is failed by the run monitor
DEFAULT_LOCK_WAIT_S = 24 * 3600.0  # how long a run waits for the warehouse writer lock before giving up


def _flag(var: str) -> bool:
    value = (_text(var) or "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{var}={value!r} is not a boolean (1/0, true/false)")


def _int(var: str, default: int, low: int, high: int) -> int:
    value = _text(var)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise SettingsError(f"{var}={value!r} is not an integer") from exc
    if not low <= number <= high:
        raise SettingsError(f"{var}={value!r} must be between {low} and {high}")
    return number


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on what one dump may make the night read or hold (docs/telemetry.md, "Limits")."""

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


@dataclass(frozen=True)
class PiiSettings:
    """`key` (MVT_PII_KEY, a secret: never logged or stored) keys the hash that replaces an id that is
    PII; `quarantine_keep_original` (MVT_QUARANTINE_KEEP_PII=1) keeps quarantined lines unredacted."""

    key: str | None = None
    quarantine_keep_original: bool = False

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        return f"PiiSettings(key={'<set>' if self.key else None}, quarantine_keep_original={self.quarantine_keep_original})"


@dataclass(frozen=True)
class RunSettings:
    """How runs guard the one-writer warehouse: the writer lock's wait and a run's time limit."""

    timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S


@dataclass(frozen=True)
class SparkSettings:
    """Where MVT_WAREHOUSE=spark keeps its files: the raw tables as Parquet (`lake_dir`, written by
    ingestion, read by Spark) and Spark's own warehouse of the built models (`warehouse_dir`, with its
    Derby metastore); the local session's master and driver memory."""

    lake_dir: Path
    warehouse_dir: Path
    master: str = DEFAULT_SPARK_MASTER
    driver_memory: str = DEFAULT_SPARK_DRIVER_MEMORY


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    duckdb_path: Path
    reports_dir: Path
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    partitions_start: dt.date = dt.date.fromisoformat(DEFAULT_PARTITIONS_START)
    nightly_cron: str = DEFAULT_NIGHTLY_CRON
    nightly_timezone: str = DEFAULT_NIGHTLY_TIMEZONE
    alerts: AlertSettings = AlertSettings()
    dagster_home: Path = PROJECT_ROOT / ".dagster_home"
    limits: IngestLimits = IngestLimits()
    pii: PiiSettings = PiiSettings()
    runs: RunSettings = RunSettings()
    warehouse: str = DEFAULT_WAREHOUSE
    spark: SparkSettings | None = None

    @property
    def on_spark(self) -> bool:
        return self.warehouse == "spark"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def flags_dir(self) -> Path:
        return self.data_dir / "flags"

    @property
    def duckdb_temp_dir(self) -> Path:
        return self.duckdb_path.parent / "duckdb_tmp"

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's artifacts of the nights of this warehouse (manifest, run_results, compiled SQL): one
        folder kept from night to night, so dbt parses only what changed (its partial-parse file is
        valid for one profile, i.e. one warehouse) and nothing piles up."""
        # one per engine: the partial-parse file is valid for one profile target
        return self.duckdb_path.parent / ("dbt_target" if not self.on_spark else "dbt_target_spark")

    def duckdb_config(self) -> dict[str, str]:
        """The settings of every DuckDB connection the project opens (the warehouse's writers and
        readers, `mvt validate-dump`'s scratch database) and of dbt's (`dbt_environment`): one memory
        cap and one spill directory, so a large night slows down instead of running out of memory."""
        return {"memory_limit": self.duckdb_memory_limit, "temp_directory": str(self.duckdb_temp_dir)}

    def dbt_environment(self) -> dict[str, str]:
        """What the dbt subprocess reads through `env_var()` in dbt/profiles.yml."""
        config = self.duckdb_config()
        env = {"MVT_DUCKDB_PATH": str(self.duckdb_path), "MVT_DUCKDB_MEMORY_LIMIT": config["memory_limit"],
               "MVT_DUCKDB_TEMP_DIR": config["temp_directory"], "MVT_DBT_TARGET": self.warehouse}
        if self.on_spark and self.spark is not None:
            env.update({"MVT_RAW_PARQUET_DIR": str(self.spark.lake_dir),
                        "MVT_SPARK_WAREHOUSE_DIR": str(self.spark.warehouse_dir),
                        "MVT_SPARK_MASTER": self.spark.master, "MVT_SPARK_DRIVER_MEMORY": self.spark.driver_memory,
                        "MVT_SPARK_LOG4J_CONFIG": str(DBT_PROJECT_DIR / "spark" / "log4j2.properties")})
        return env


def settings() -> Settings:
    data_dir = _path("MVT_DATA_DIR", PROJECT_ROOT / "data")
    memory = _text("MVT_DUCKDB_MEMORY_LIMIT", DEFAULT_DUCKDB_MEMORY_LIMIT)
    if not _MEMORY_LIMIT.match(memory):
        raise SettingsError(f"MVT_DUCKDB_MEMORY_LIMIT={memory!r} is not a size such as 4GB, 512MB or 80%")
    cron = _text("MVT_NIGHTLY_CRON", DEFAULT_NIGHTLY_CRON)
    if len(cron.split()) != 5:
        raise SettingsError(f"MVT_NIGHTLY_CRON={cron!r} is not a five-field cron expression")
    warehouse = (_text("MVT_WAREHOUSE", DEFAULT_WAREHOUSE) or "").lower()
    if warehouse not in WAREHOUSES:
        raise SettingsError(f"MVT_WAREHOUSE={warehouse!r} is not one of {', '.join(WAREHOUSES)}")
    duckdb_path = _path("MVT_DUCKDB_PATH", data_dir / "warehouse" / "mvt.duckdb")
    return Settings(
        data_dir=data_dir,
        duckdb_path=duckdb_path,
        warehouse=warehouse,
        spark=SparkSettings(
            lake_dir=_path("MVT_RAW_PARQUET_DIR", data_dir / "lake" / "raw"),
            warehouse_dir=_path("MVT_SPARK_WAREHOUSE_DIR", duckdb_path.parent / "spark"),
            master=_text("MVT_SPARK_MASTER", DEFAULT_SPARK_MASTER),
            driver_memory=_text("MVT_SPARK_DRIVER_MEMORY", DEFAULT_SPARK_DRIVER_MEMORY),
        ),
        reports_dir=_path("MVT_REPORTS_DIR", data_dir / "reports"),
        duckdb_memory_limit=memory,
        partitions_start=_date("MVT_PARTITIONS_START", DEFAULT_PARTITIONS_START),
        nightly_cron=cron,
        nightly_timezone=_text("MVT_NIGHTLY_TIMEZONE", DEFAULT_NIGHTLY_TIMEZONE),
        dagster_home=_path("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home"),
        limits=IngestLimits(
            max_line_bytes=_int("MVT_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES, 1024, 256 * 1024**2),
            max_file_bytes=_int("MVT_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES, 1024, 1024**4),
            max_json_depth=_int("MVT_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH, 4, 256),
        ),
        pii=PiiSettings(key=_text("MVT_PII_KEY"), quarantine_keep_original=_flag("MVT_QUARANTINE_KEEP_PII")),
        runs=RunSettings(
            timeout_s=_float("MVT_RUN_TIMEOUT_SECONDS", DEFAULT_RUN_TIMEOUT_S, 60, 7 * 24 * 3600),
            lock_wait_s=_float("MVT_LOCK_WAIT_SECONDS", DEFAULT_LOCK_WAIT_S, 0, 7 * 24 * 3600),
        ),
        alerts=AlertSettings(
            webhook_url=_text("MVT_ALERT_WEBHOOK_URL"),
            slack_token=_text("SLACK_TOKEN"),
            slack_channel=_text("MVT_SLACK_CHANNEL"),
            slack_api_url=_text("MVT_SLACK_API_URL", SLACK_API),
            ticket_webhook_url=_text("MVT_TICKET_WEBHOOK_URL"),
            slack_ticket_channel=_text("MVT_SLACK_TICKET_CHANNEL"),
            quiet_period_hours=_float("MVT_ALERT_QUIET_HOURS", DEFAULT_QUIET_PERIOD_HOURS, 0, 24 * 31),
            delivery_deadline_s=_float("MVT_ALERT_DEADLINE_SECONDS", DEFAULT_DELIVERY_DEADLINE_S, 0.5, 60),
            report_base_url=_text("MVT_REPORT_BASE_URL"),
            dagster_base_url=_text("MVT_DAGSTER_BASE_URL"),
        ),
    )


def export_dbt_environment(s: Settings | None = None) -> None:
    """Put the warehouse path and memory cap where the dbt subprocess reads them. dagster-dbt starts
    dbt with this process's environment, so this is the one way to hand them over."""
    os.environ.update((s or settings()).dbt_environment())


@contextmanager
def night_environment(as_of: str):
    """MVT_AS_OF, the night dbt builds (dbt/macros/as_of.sql), for a dbt started inside the block."""
    previous = os.environ.get(AS_OF_VARIABLE)
    os.environ[AS_OF_VARIABLE] = as_of
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(AS_OF_VARIABLE, None)
        else:
            os.environ[AS_OF_VARIABLE] = previous


def export_dagster_home(home: Path) -> None:
    """Dagster reads DAGSTER_HOME itself: point it at the folder the project prepared."""
    os.environ["DAGSTER_HOME"] = str(home)


def quiet_third_party_telemetry() -> None:
    """No internet on the machines this runs on: dbt, Dagster and GX must not try to phone home."""
    for var, value in (("DO_NOT_TRACK", "1"), ("DBT_SEND_ANONYMOUS_USAGE_STATS", "false"),
                       ("GX_ANALYTICS_ENABLED", "false")):
        os.environ.setdefault(var, value)


def dbt_executable() -> str:
    """The dbt installed beside this Python (a venv not on PATH), else whatever PATH has. Kept out of
    `defs` so the test set-up can find dbt before anything imports `@dbt_assets` (needs the manifest)."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")
