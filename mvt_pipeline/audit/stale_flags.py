"""Stale-flag audit: which feature flags are experiment leftovers, broken, idle or missing.

Flags outlive the experiments they served; each one left behind is a code path nobody tests. The
audit joins flag definitions with the registry (factor -> flag_key) and the last exposure per
experiment, and gives every flag one classification, a sentence saying why, and what to do.

Classification (first match wins, per flag):

1. `permanent`        kill switches / ops flags (metadata `permanent: true`, metadata `type`/`kind`
                      kill_switch|ops|operational|permanent, or a key such as `ops-...`,
                      `...kill-switch...`): left alone even if a factor uses them.
2. `fully_rolled_out` the flag gives everyone one variant (`FlagDefinition.rollout_variant`:
                      DISABLED, no targeting, or e.g. a 100% `fractional`), no draft/running
                      experiment uses it, and its rollout date (metadata `rolled_out_at`, else
                      `last_modified`; CSV columns of the same names) is at least `rollout_days`
                      old: remove the flag, keep that code path. Without a date the age is unknown
                      and the flag falls through (a recent rollout may still be rolled back, so
                      removal is never guessed).
3. `orphan`           no registry factor uses the flag key.
4. `stale_concluded`  every experiment using the flag is stopped/concluded and the flag still splits
                      traffic (serves more than one variant; no `rollout_variant`).
5. `invalid_targeting` targeting names a variant that is not in `variants` (flagd errors at runtime).
6. `inactive`         a running experiment uses it, but the last exposure is older than
                      `inactive_days`, or there was none by `start_date + inactive_days`.
7. `active`           fine (includes a flag of an ended experiment rolled out less than
                      `rollout_days` ago, or with no rollout date; the reason says which).

A flag whose targeting names an unknown variant is never `fully_rolled_out`. A running experiment
whose flag serves one variant stays `active`/`inactive` with a note in the reason: the registry says
it is live, so removing the flag would be the wrong advice.

`missing` is per registry factor, not per flag: a draft/running experiment's factor whose flag_key
has no flag definition. Stopped/concluded experiments are skipped there on purpose: their flag being
gone is the end state this audit pushes towards, not a defect.

Rows are sorted by severity (`SEVERITY_ORDER`) then flag key, experiment and file, so re-runs over
the same inputs give identical frames (row order of the inputs does not matter). `age_days` (nullable
Int64) is days since the rollout date for `fully_rolled_out`; otherwise days since the linked
experiment's end for stopped/concluded experiments whose end date has passed, otherwise days since
its last exposure; unknown (<NA>) when none applies.
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
SEVERITY_ORDER = [
    "invalid_targeting", "missing", "stale_concluded", "inactive", "fully_rolled_out", "orphan", "active", "permanent",
]
# Classes the asset check should WARN about (everything but `active` and `permanent`).
NEEDS_ACTION = frozenset(SEVERITY_ORDER) - {"active", "permanent"}
ENDED_STATUSES = {"stopped", "concluded"}
_PERMANENT_KINDS = {"kill_switch", "killswitch", "kill-switch", "ops", "operational", "permanent"}
_PERMANENT_KEY_MARKERS = ("kill-switch", "kill_switch", "killswitch")
_PERMANENT_KEY_PREFIXES = ("ops-", "ops_", "ops.")

ACTIONS = {
    "permanent": "none: permanent operational flag, keep it",
    "orphan": "find the owner; remove the flag (and its code path) or register the experiment that uses it",
    "missing": "create the flag in data/flags or correct flag_key in the registry before launch",
    "stale_concluded": "roll out the winning variant and remove the flag",
    "fully_rolled_out": "remove the flag, keep the {variant} code path",
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


def _rollout_action(flag: FlagDefinition, variant: str) -> str:
    if flag.state == "DISABLED":  # flagd treats a disabled flag as absent: the SDK's in-code default wins
        return ("remove the flag, keep the code path of the application's in-code default (what a DISABLED "
                f"flag serves; its defaultVariant is {variant!r})")
    return ACTIONS["fully_rolled_out"].format(variant=repr(variant))


def _rollout_note(flag: FlagDefinition, today: dt.date, rollout_days: int) -> str:
    """For a one-variant flag that is not (yet) `fully_rolled_out`: how far it is from that class."""
    if flag.rollout_variant is None:
        return ""
    since = flag.changed_on
    if since is None:
        return (f" It gives everyone {flag.rollout_variant!r} but has no metadata rolled_out_at/last_modified, "
                "so the rollout age is unknown; add one so the audit can tell when to remove it.")
    if since > today:
        return f" It gives everyone {flag.rollout_variant!r}; its rollout date {since.isoformat()} is in the future."
    return (f" It gives everyone {flag.rollout_variant!r} since {since.isoformat()} "
            f"({(today - since).days} days; removal is advised after {rollout_days}).")


def _classify_flag(
    flag: FlagDefinition, users: list[Experiment], exposures: dict, today: dt.date, inactive_days: int,
    rollout_days: int,
) -> dict:
    row = {"flag_key": flag.key, "source_file": flag.source_file, "experiment_id": None,
           "owner": flag.metadata.get("owner"), "age_days": None}

    def done(classification: str, reason: str, action: str | None = None) -> dict:
        return {**row, "classification": classification, "reason": reason,
                "recommended_action": action or ACTIONS[classification]}

    if is_permanent_flag(flag):
        return done("permanent", "Marked as a permanent kill switch / operational flag; not an experiment flag.")
    variant, since = flag.rollout_variant, flag.changed_on
    if (variant is not None and since is not None and (today - since).days >= rollout_days
            and not flag.unknown_targeted_variants and all(e.status in ENDED_STATUSES for e in users)):
        if users:
            exp = _pick_experiment(users)
            row.update(experiment_id=exp.id, owner=exp.owner)
            context = f"experiment {exp.id!r} is {exp.status}"
        else:
            context = "no experiment in the registry uses it"
        row["age_days"] = (today - since).days
        how = ("has been DISABLED (flagd treats it as absent)" if flag.state == "DISABLED"
               else f"has given every evaluation {variant!r}")
        return done("fully_rolled_out",
                    f"The flag {how} since at least {since.isoformat()} ({row['age_days']} days, limit "
                    f"{rollout_days}) and {context}.", _rollout_action(flag, variant))
    if not users:
        note = _rollout_note(flag, today, rollout_days) or f" It serves {_names(flag.served_variants)}."
        return done("orphan", f"No experiment in the registry uses this flag.{note}")
    exp = _pick_experiment(users)
    row.update(experiment_id=exp.id, owner=exp.owner, age_days=_experiment_age(exp, exposures, today))
    notes = _serving_notes(flag, exp)
    if (all(e.status in ENDED_STATUSES for e in users) and len(flag.served_variants) > 1
            and flag.rollout_variant is None):
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
    # Ended experiment, flag rolled out to one variant but too recently (or undated) to advise removal.
    note = _rollout_note(flag, today, rollout_days) or f" The flag serves {_names(flag.served_variants)}."
    action = None
    if flag.rollout_variant is not None:
        since = flag.changed_on
        action = ("add metadata.rolled_out_at to the flag so the audit can schedule its removal" if since is None
                  else f"none yet: remove the flag from {since + dt.timedelta(days=rollout_days)} on")
    return done("active", f"Experiment {exp.id!r} is {exp.status}.{note}{notes}", action)


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
    rollout_days: int = 14,
) -> pd.DataFrame:
    """One row per flag (plus one per missing flag), columns `AUDIT_COLUMNS`, deterministic order.

    `last_exposure` has columns experiment_id, last_exposure_at (UTC), units; None or empty means no
    exposure has been seen for any experiment. `inactive_days`: exposure silence that makes a running
    experiment's flag `inactive`; `rollout_days`: how long a flag must have served one variant before
    it is `fully_rolled_out` (the bake-in period during which a rollback is still plausible).
    """
    if inactive_days < 0 or rollout_days < 0:
        raise ValueError("inactive_days and rollout_days must be >= 0")
    exposures = _last_exposures(last_exposure)
    users: dict[str, list[Experiment]] = {}
    for exp in registry.experiments:
        for factor in exp.factors:
            if factor.flag_key and exp not in users.setdefault(factor.flag_key, []):
                users[factor.flag_key].append(exp)
    flags_by_key = {f.key: f for f in flags}
    rows = [_classify_flag(f, users.get(f.key, []), exposures, today, inactive_days, rollout_days)
            for f in flags]
    rows += _missing_rows(flags_by_key, registry, exposures, today)
    frame = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    frame["age_days"] = pd.array(frame["age_days"].tolist(), dtype="Int64")
    frame["_rank"] = frame["classification"].map({c: i for i, c in enumerate(SEVERITY_ORDER)})
    frame = frame.sort_values(["_rank", "flag_key", "experiment_id", "source_file"], na_position="first",
                              kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)
