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
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"

# Defaults, defined once. DuckDB's memory cap applies to the Python connections and to dbt alike
# (dbt receives it through the environment, see `dbt_environment`): a large night spills to disk.
DEFAULT_DUCKDB_MEMORY_LIMIT = "4GB"
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

    def dbt_environment(self) -> dict[str, str]:
        """What the dbt subprocess reads through `env_var()` in dbt/profiles.yml."""
        return {"MVT_DUCKDB_PATH": str(self.duckdb_path), "MVT_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit}


def settings() -> Settings:
    data_dir = _path("MVT_DATA_DIR", PROJECT_ROOT / "data")
    memory = _text("MVT_DUCKDB_MEMORY_LIMIT", DEFAULT_DUCKDB_MEMORY_LIMIT)
    if not _MEMORY_LIMIT.match(memory):
        raise SettingsError(f"MVT_DUCKDB_MEMORY_LIMIT={memory!r} is not a size such as 4GB, 512MB or 80%")
    cron = _text("MVT_NIGHTLY_CRON", DEFAULT_NIGHTLY_CRON)
    if len(cron.split()) != 5:
        raise SettingsError(f"MVT_NIGHTLY_CRON={cron!r} is not a five-field cron expression")
    return Settings(
        data_dir=data_dir,
        duckdb_path=_path("MVT_DUCKDB_PATH", data_dir / "warehouse" / "mvt.duckdb"),
        reports_dir=_path("MVT_REPORTS_DIR", data_dir / "reports"),
        duckdb_memory_limit=memory,
        partitions_start=_date("MVT_PARTITIONS_START", DEFAULT_PARTITIONS_START),
        nightly_cron=cron,
        nightly_timezone=_text("MVT_NIGHTLY_TIMEZONE", DEFAULT_NIGHTLY_TIMEZONE),
        dagster_home=_path("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home"),
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
