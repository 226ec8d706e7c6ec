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


def render_index(entries: list[dict], generated_at: dt.datetime, flags=None) -> str:
    """HTML index of reports; each entry has experiment_id, status, decision_label, report_file,
    primary_metric, top_effect_text. Entries are listed in the order given. `flags` (the
    `analysis.stale_flags` frame) adds the flag clean-up section."""
    rows = []
    for entry in entries:
        label = entry.get("decision_label") or "no decision"
        rows.append(
            f"<tr><td><a href=\"{relative_href(entry['report_file'])}\">{esc(entry.get('experiment_id'))}</a></td>"
            f"<td>{esc(entry.get('status'))}</td>"
            f"<td><span class=\"badge {decision_tone(label)}\">{esc(label)}</span></td>"
            f"<td>{esc(entry.get('primary_metric'))}</td><td>{esc(entry.get('top_effect_text'))}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Experiment</th><th>Status</th><th>Decision</th><th>Primary metric</th>"
        f"<th>Top effect</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows else "<p class=\"muted\">No experiment reports yet.</p>"
    )
    body = (f"<header><h1>Experiment reports</h1><div class=\"muted small\">Generated "
            f"{fmt_timestamp(generated_at)}; {len(entries)} experiment(s)</div></header>{table}"
            f"{_flag_section(flags)}")
    return page("Experiment reports", body)
