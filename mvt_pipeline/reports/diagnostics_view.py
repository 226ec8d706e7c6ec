"""Parts of the *diagnostics* view (read when a number looks wrong): SRM per factor margin, the
assignment figures (bots, flips, incomplete assignments), CUPED in plain words and the telemetry
quality per day of this experiment's own sources (lines, quarantine reasons, duplicates, lag)."""

from __future__ import annotations

import json

import pandas as pd

from .formatting import esc, fmt_count, fmt_p, fmt_percent, fmt_share_change


def srm_margins(srm: dict | None) -> str:
    margins = (srm or {}).get("margin_p_values") or {}
    if not margins:
        return ""
    rows = "".join(f"<tr><td>{esc(f)}</td><td class=\"num\">{fmt_p(p)}</td></tr>" for f, p in margins.items())
    return ("<h4>Per factor margin</h4><table class=\"srm-margins\"><thead><tr><th>Factor</th><th>p (units per level "
            f"vs plan)</th></tr></thead><tbody>{rows}</tbody></table>")


def assignment_text(quality: dict | None) -> str:
    q = quality or {}
    exposed = q.get("units exposed")
    if exposed is None:
        return ""
    parts = [f"{fmt_count(exposed)} units exposed"]
    for key, words in (("units bots", "bots"), ("units flipped", "flipped between cells"),
                       ("units incomplete", "with an incomplete assignment"), ("units analysable", "analysable")):
        if q.get(key) is not None:
            share = q[key] / exposed if exposed else None
            parts.append(f"{fmt_count(q[key])} {words} ({fmt_percent(share, decimals=1)})")
    return f"<p>{'; '.join(parts)}.</p>"


def cuped_text(effects: pd.DataFrame) -> str:
    """One sentence per metric that used CUPED: how much noise the pre-period removed."""
    if effects is None or effects.empty or "cuped" not in effects:
        return ""
    used = effects[effects["cuped"].fillna(False).astype(bool) & effects["variance_reduction"].notna()]
    if used.empty:
        return "<p>CUPED: no metric had a usable pre-period covariate tonight, so no variance was removed.</p>"
    items = []
    for metric, rows in used.groupby("metric", sort=False):
        vr = float(rows["variance_reduction"].iloc[0])
        items.append(f"<li>{esc(metric)}: the pre-period value removed {fmt_share_change(vr).lstrip('+')} of the "
                     f"variance, as if the experiment had {1 / (1 - vr):.3g}\u00d7 the units.</li>"
                     if 0 <= vr < 1 else f"<li>{esc(metric)}: variance change {fmt_share_change(vr)}.</li>")
    return f"<h4>CUPED</h4><ul>{''.join(items)}</ul>"


def _reasons(value) -> str:
    try:
        reasons = json.loads(value) if isinstance(value, str) else dict(value or {})
    except (TypeError, ValueError):
        return esc(value)
    return ", ".join(f"{esc(k)} {fmt_count(v)}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "\u2013"


def source_quality_table(frame: pd.DataFrame | None, sources: list[str], loss: pd.DataFrame | None = None) -> str:
    """Per day and source of this experiment: lines, quarantined (by reason), duplicates, lag."""
    if frame is None or frame.empty:
        return "<p class=\"muted\">No telemetry-quality rows for this experiment's sources.</p>"
    body = "".join(
        f"<tr><td>{esc(str(r.day)[:10])}</td><td>{esc(r.source)}</td><td class=\"num\">{fmt_count(r.n_lines)}</td>"
        f"<td class=\"num\">{fmt_count(r.n_quarantined)}</td><td>{_reasons(r.quarantine_reasons)}</td>"
        f"<td class=\"num\">{fmt_count(r.n_duplicate_lines)}</td>"
        f"<td class=\"num\">{'' if pd.isna(r.lag_p95_seconds) else f'{r.lag_p95_seconds / 60:.3g} min'}</td></tr>"
        for r in frame.sort_values(["day", "source"]).itertuples())
    return (f"<h4>Telemetry per day ({esc(', '.join(sources))})</h4><div class=\"wide\"><table class=\"dq\"><thead><tr>"
            "<th>Day (dump)</th><th>Source</th><th>Lines accepted</th><th>Quarantined</th><th>Quarantine reasons</th>"
            f"<th>Duplicate lines</th><th>Lag P95</th></tr></thead><tbody>{body}</tbody></table></div>"
            + _loss_table(loss))


def _loss_table(loss: pd.DataFrame | None) -> str:
    if loss is None or loss.empty:
        return ""
    body = "".join(f"<tr><td>{esc(str(r.dt)[:10])}</td><td class=\"num\">{fmt_count(r.n_sequenced)}</td>"
                   f"<td class=\"num\">{fmt_count(r.n_lost)}</td><td class=\"num\">{fmt_percent(r.loss_rate, decimals=2)}</td></tr>"
                   for r in loss.itertuples())
    return ("<p class=\"muted small\">Loss is seen from gaps in each device's sequence numbers, across all sources.</p>"
            "<table class=\"loss\"><thead><tr><th>Day</th><th>Sequenced events</th><th>Lost</th><th>Loss rate</th></tr>"
            f"</thead><tbody>{body}</tbody></table>")
