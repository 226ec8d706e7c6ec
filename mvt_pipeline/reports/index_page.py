"""The index page that lists every experiment report with its decision, linking by relative path.

Relative links keep the reports folder movable as a whole (zip it, copy it to a share, open it
offline); an absolute or scheme-qualified link would break that promise, so it is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import PurePosixPath
from urllib.parse import quote

from .formatting import esc
from .decision_view import STATUS_TONE, primary_lift_text, primary_share
from .page import decision_tone, fmt_timestamp, page

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def relative_href(report_file: str) -> str:
    """A safe, percent-encoded relative URL for a report path; absolute paths and URLs are refused."""
    path = str(report_file).replace("\\", "/")
    if not path or path.startswith("/") or _SCHEME.match(path):
        raise ValueError(f"report_file must be a relative path, got {report_file!r}")
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"report_file must stay inside the reports folder, got {report_file!r}")
    return esc(quote(path, safe="/"))


FLAG_COLUMNS = ["flag_key", "classification", "experiment_id", "owner", "age_days", "reason", "recommended_action"]


def _flag_section(flags) -> str:
    """The stale-flag audit: every flag that needs a clean-up, with owner and action."""
    if flags is None:
        return ""
    todo = flags[~flags["classification"].isin(["active", "permanent"])] if len(flags) else flags
    if not len(todo):
        return "<h2>Feature-flag audit</h2><p class=\"muted\">No flag needs clean-up.</p>"
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(None if str(r.get(c)) in ('nan', '<NA>', 'None') else r.get(c))}</td>"
                         for c in FLAG_COLUMNS) + "</tr>"
        for r in todo.to_dict("records")
    )
    head = "".join(f"<th>{esc(c.replace('_', ' ').capitalize())}</th>" for c in FLAG_COLUMNS)
    return (f"<h2>Feature-flag audit</h2><p class=\"muted small\">{len(todo)} of {len(flags)} flag(s) need "
            f"action.</p><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def render_index(entries: list[dict], generated_at: dt.datetime, flags=None, night=None) -> str:
    """HTML index of one night's reports; each entry has experiment_id, status, decision (the stored
    decision row), report_file and metric (the primary Metric or None); listed in the order given.
    The lift, guardrail status and days come from the decision row, as on the page. `flags` (the
    `analysis.stale_flags` frame) adds the flag clean-up section."""
    rows = []
    for entry in entries:
        decision = entry.get("decision") or {}
        label = decision.get("label") or entry.get("decision_label") or "no decision"
        metric = entry.get("metric")
        lift = primary_lift_text(decision, metric, primary_share(decision, metric))
        status = decision.get("guardrail_status")
        days = decision.get("days_running")
        rows.append(
            f"<tr><td><a href=\"{relative_href(entry['report_file'])}\">{esc(entry.get('experiment_id'))}</a></td>"
            f"<td>{esc(entry.get('status'))}</td>"
            f"<td><span class=\"badge {decision_tone(label)}\">{esc(label)}</span></td>"
            f"<td>{esc(decision.get('primary_metric') or entry.get('primary_metric'))}</td>"
            f"<td class=\"num lift\">{esc(lift)}</td>"
            f"<td><span class=\"badge {STATUS_TONE.get(status, 'info')}\">{esc(status or 'none')}</span></td>"
            f"<td class=\"num\">{esc('' if days is None or days != days else int(days))}</td></tr>"
        )
    table = (
        "<div class=\"wide\"><table class=\"index\"><thead><tr><th>Experiment</th><th>Status</th><th>Decision</th>"
        "<th>Primary metric</th><th>Primary lift [CI]</th><th>Guardrails</th><th>Days running</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows else "<p class=\"muted\">No experiment reports yet.</p>"
    )
    stated = (f"<div class=\"night\"><b>Night {esc(night.as_of.isoformat())}</b> \u00b7 generated "
              f"{fmt_timestamp(night.generated_at)} \u00b7 <a href=\"../index.html\">all nights</a></div>"
              if night is not None else f"<div class=\"muted small\">Generated {fmt_timestamp(generated_at)}</div>")
    body = (f"<header><h1>Experiment reports</h1>{stated}<div class=\"muted small\">{len(entries)} experiment(s); "
            "lift: the shipped (else the leading) combination vs control on the primary metric, with its interval on "
            f"the decision basis</div></header>{table}{_flag_section(flags)}")
    return page("Experiment reports" + (f" {night.as_of.isoformat()}" if night is not None else ""), body)


def render_nights_index(nights: list[dt.date], decisions, generated_at: dt.datetime) -> str:
    """`<reports>/index.html`: every kept night (newest first) with each experiment's decision that
    night, linking into `<as_of>/`. `decisions` holds `as_of, experiment_id, label` rows (all nights)."""
    labels: dict[tuple[str, str], str] = {}
    experiments: list[str] = []
    if decisions is not None and len(decisions):
        for r in decisions.to_dict("records"):
            night = str(r["as_of"])[:10]
            labels[(night, str(r["experiment_id"]))] = r.get("label") or r.get("decision") or "no decision"
            if str(r["experiment_id"]) not in experiments:
                experiments.append(str(r["experiment_id"]))
    head = "".join(f"<th>{esc(e)}</th>" for e in experiments)
    rows = []
    for night in nights:
        n = night.isoformat()
        cells = []
        for e in experiments:
            label = labels.get((n, e))
            cells.append(f"<td><a href=\"{relative_href(f'{n}/{e}.html')}\"><span class=\"badge {decision_tone(label)}\">"
                         f"{esc(label)}</span></a></td>" if label else "<td class=\"muted\">\u2013</td>")
        rows.append(f"<tr><td><a href=\"{relative_href(f'{n}/index.html')}\">{esc(n)}</a></td>{''.join(cells)}</tr>")
    latest = (f"<p>Newest night: <a href=\"{relative_href('latest/index.html')}\">latest/</a> "
              f"({esc(nights[0].isoformat())}).</p>" if nights else "<p class=\"muted\">No night published yet.</p>")
    table = (f"<table class=\"nights\"><thead><tr><th>Night (as_of)</th>{head}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>" if rows else "")
    body = (f"<header><h1>Experiment reports by night</h1><div class=\"muted small\">Generated "
            f"{fmt_timestamp(generated_at)}; {len(nights)} night(s) kept</div></header>{latest}{table}")
    return page("Experiment reports by night", body)
