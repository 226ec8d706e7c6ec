"""Stale-flag audit: which feature flags are experiment leftovers, broken, idle or missing.

Flags outlive the experiments they served; each one left behind is a code path nobody tests. The
audit joins flag definitions with the registry (factor -> flag_key) and the last exposure per
experiment, and gives every flag one classification, a sentence saying why, and what to do.

Classification (first match wins, per flag):

1. `permanent`        kill switches / ops flags (metadata `permanent: true`, metadata `type`/`kind`
                      kill_switch|ops|operational|permanent, or a key such as `ops-...`,
                      `...kill-switch...`): left alone even if a factor uses them.
2. `orphan`           no registry factor uses the flag key.
3. `stale_concluded`  every experiment using the flag is stopped/concluded and the flag still serves
                      more than one variant.
4. `invalid_targeting` targeting names a variant that is not in `variants` (flagd errors at runtime).
5. `inactive`         a running experiment uses it, but the last exposure is older than
                      `inactive_days`, or there was none by `start_date + inactive_days`.
6. `active`           fine.

`missing` is per registry factor, not per flag: a draft/running experiment's factor whose flag_key
has no flag definition. Stopped/concluded experiments are skipped there on purpose: their flag being
gone is the end state this audit pushes towards, not a defect.

Rows are sorted by severity (`SEVERITY_ORDER`) then flag key, experiment and file, so re-runs over
the same inputs give identical frames. `age_days` (nullable Int64) is days since the linked
experiment's end for stopped/concluded experiments whose end date has passed, otherwise days since
its last exposure; unknown (<NA>) when neither applies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from mvt_pipeline.registry.models import Experiment, Registry

from .flagd import FlagDefinition

AUDIT_COLUMNS = [
    "flag_key", "source_file", "experiment_id", "classification", "reason", "owner", "age_days",
    "recommended_action",
]
# Most urgent first: broken flags, then missing ones, then cleanup debt, then the harmless.
SEVERITY_ORDER = ["invalid_targeting", "missing", "stale_concluded", "inactive", "orphan", "active", "permanent"]
ENDED_STATUSES = {"stopped", "concluded"}
_PERMANENT_KINDS = {"kill_switch", "killswitch", "kill-switch", "ops", "operational", "permanent"}
_PERMANENT_KEY_MARKERS = ("kill-switch", "kill_switch", "killswitch")
_PERMANENT_KEY_PREFIXES = ("ops-", "ops_", "ops.")

ACTIONS = {
    "permanent": "none: permanent operational flag, keep it",
    "orphan": "find the owner; remove the flag (and its code path) or register the experiment that uses it",
    "missing": "create the flag in data/flags or correct flag_key in the registry before launch",
    "stale_concluded": "roll out the winning variant and remove the flag",
    "invalid_targeting": "fix the targeting to name only defined variants (or add the variant)",
    "inactive": "check the rollout and SDK integration; stop the experiment if it is no longer served",
    "active": "none",
}


def is_permanent_flag(flag: FlagDefinition) -> bool:
    """Kill switches and ops flags are meant to live forever; never ask to remove them."""
    meta = {str(k).lower(): v for k, v in flag.metadata.items()}
    if meta.get("permanent") is True or str(meta.get("permanent", "")).lower() == "true":
        return True
    if any(str(meta.get(k, "")).lower() in _PERMANENT_KINDS for k in ("type", "kind", "category")):
        return True
    key = flag.key.lower()
    return key.startswith(_PERMANENT_KEY_PREFIXES) or any(m in key for m in _PERMANENT_KEY_MARKERS)


def _last_exposures(last_exposure: pd.DataFrame | None) -> dict[str, tuple[pd.Timestamp, int | None]]:
    """experiment_id -> (latest exposure as UTC timestamp, units); several rows per id are allowed."""
    if last_exposure is None or last_exposure.empty:
        return {}
    frame = last_exposure.copy()
    frame["last_exposure_at"] = pd.to_datetime(frame["last_exposure_at"], utc=True)
    frame = frame.dropna(subset=["last_exposure_at"])
    out: dict[str, tuple[pd.Timestamp, int | None]] = {}
    for exp_id, group in frame.groupby("experiment_id", sort=True):
        latest = group["last_exposure_at"].max()
        units = group["units"].max() if "units" in group else None
        out[str(exp_id)] = (latest, None if pd.isna(units) else int(units))
    return out


def _experiment_age(exp: Experiment, exposures: dict, today: dt.date) -> int | None:
    if exp.status in ENDED_STATUSES and exp.end_date and exp.end_date <= today:
        return (today - exp.end_date).days
    if exp.id in exposures:
        return (today - exposures[exp.id][0].date()).days
    return None


def _pick_experiment(users: list[Experiment]) -> Experiment:
    """The experiment a shared flag is reported under: a live one if any, else the latest-ending."""
    live = sorted((e for e in users if e.status not in ENDED_STATUSES), key=lambda e: (e.status != "running", e.id))
    if live:
        return live[0]
    return sorted(users, key=lambda e: (e.end_date or e.start_date, e.id), reverse=True)[0]


def _names(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def _serving_notes(flag: FlagDefinition, exp: Experiment) -> str:
    """Mismatches worth a sentence, though they do not change the class."""
    notes = []
    if flag.state == "DISABLED":
        notes.append(f"The flag is DISABLED and serves only {flag.default_variant!r}.")
    elif exp.status == "running" and len(flag.served_variants) < 2:
        notes.append(f"The flag serves only {_names(flag.served_variants)}, so the flag alone assigns no treatment.")
    for factor in exp.factors:
        if factor.flag_key == flag.key:
            absent = set(factor.levels) - set(flag.variants)
            if absent:
                notes.append(f"Factor {factor.name!r} level(s) {_names(absent)} are not variants of the flag.")
    if flag.unknown_targeted_variants:
        notes.append(f"Targeting also names unknown variant(s) {_names(flag.unknown_targeted_variants)}.")
    return (" " + " ".join(notes)) if notes else ""


def _classify_flag(
    flag: FlagDefinition, users: list[Experiment], exposures: dict, today: dt.date, inactive_days: int
) -> dict:
    row = {"flag_key": flag.key, "source_file": flag.source_file, "experiment_id": None,
           "owner": flag.metadata.get("owner"), "age_days": None}

    def done(classification: str, reason: str) -> dict:
        return {**row, "classification": classification, "reason": reason,
                "recommended_action": ACTIONS[classification]}

    if is_permanent_flag(flag):
        return done("permanent", "Marked as a permanent kill switch / operational flag; not an experiment flag.")
    if not users:
        served = _names(flag.served_variants)
        return done("orphan", f"No experiment in the registry uses this flag; it serves {served}.")
    exp = _pick_experiment(users)
    row.update(experiment_id=exp.id, owner=exp.owner, age_days=_experiment_age(exp, exposures, today))
    notes = _serving_notes(flag, exp)
    if all(e.status in ENDED_STATUSES for e in users) and len(flag.served_variants) > 1:
        ended = f"ended {exp.end_date.isoformat()}" if exp.end_date else "has no end_date"
        return done("stale_concluded",
                    f"Experiment {exp.id!r} is {exp.status} ({ended}) but the flag still serves "
                    f"{len(flag.served_variants)} variants: {_names(flag.served_variants)}.")
    if flag.unknown_targeted_variants:
        return done("invalid_targeting",
                    f"Targeting names variant(s) {_names(flag.unknown_targeted_variants)} not defined in "
                    f"variants ({_names(flag.variants)}); flagd fails those evaluations.")
    if exp.status == "running":
        last = exposures.get(exp.id)
        if last is not None:
            idle = (today - last[0].date()).days
            if idle > inactive_days:
                return done("inactive", f"Experiment {exp.id!r} is running but its last exposure was "
                            f"{last[0].date().isoformat()}, {idle} days ago (limit {inactive_days}).{notes}")
            units = f", {last[1]:,} units" if last[1] is not None else ""
            return done("active", f"Experiment {exp.id!r} is running; last exposure "
                        f"{last[0].date().isoformat()}{units}.{notes}")
        since = (today - exp.start_date).days
        if since > inactive_days:
            return done("inactive", f"Experiment {exp.id!r} is running since {exp.start_date.isoformat()} "
                        f"({since} days) but has no exposure at all (limit {inactive_days} days).{notes}")
        return done("active", f"Experiment {exp.id!r} started {exp.start_date.isoformat()}; "
                    f"no exposure yet, within the {inactive_days}-day grace period.{notes}")
    if exp.status == "draft":
        return done("active", f"Experiment {exp.id!r} is a draft; the flag waits for launch.{notes}")
    return done("active", f"Experiment {exp.id!r} is {exp.status} and the flag serves only "
                f"{_names(flag.served_variants)}; remove it when the code path is cleaned up.{notes}")


def _missing_rows(flags_by_key: dict, registry: Registry, exposures: dict, today: dt.date) -> list[dict]:
    rows = []
    for exp in registry.experiments:
        if exp.status in ENDED_STATUSES:
            continue
        for factor in exp.factors:
            if factor.flag_key and factor.flag_key not in flags_by_key:
                rows.append({
                    "flag_key": factor.flag_key, "source_file": None, "experiment_id": exp.id,
                    "classification": "missing",
                    "reason": f"Factor {factor.name!r} of {exp.status} experiment {exp.id!r} uses flag "
                              f"{factor.flag_key!r}, which no flag file defines.",
                    "owner": exp.owner, "age_days": _experiment_age(exp, exposures, today),
                    "recommended_action": ACTIONS["missing"],
                })
    return rows


def audit_flags(
    flags: list[FlagDefinition],
    registry: Registry,
    last_exposure: pd.DataFrame | None,
    today: dt.date,
    *,
    inactive_days: int = 14,
) -> pd.DataFrame:
    """One row per flag (plus one per missing flag), columns `AUDIT_COLUMNS`, deterministic order.

    `last_exposure` has columns experiment_id, last_exposure_at (UTC), units; None or empty means no
    exposure has been seen for any experiment.
    """
    if inactive_days < 0:
        raise ValueError("inactive_days must be >= 0")
    exposures = _last_exposures(last_exposure)
    users: dict[str, list[Experiment]] = {}
    for exp in registry.experiments:
        for factor in exp.factors:
            if factor.flag_key and exp not in users.setdefault(factor.flag_key, []):
                users[factor.flag_key].append(exp)
    flags_by_key = {f.key: f for f in flags}
    rows = [_classify_flag(f, users.get(f.key, []), exposures, today, inactive_days) for f in flags]
    rows += _missing_rows(flags_by_key, registry, exposures, today)
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    frame["age_days"] = pd.array(frame["age_days"].tolist(), dtype="Int64")
    frame["_rank"] = frame["classification"].map({c: i for i, c in enumerate(SEVERITY_ORDER)})
    frame = frame.sort_values(["_rank", "flag_key", "experiment_id", "source_file"], na_position="first",
                              kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)
