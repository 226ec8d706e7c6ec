"""The HTML page shell shared by experiment reports and the index: inline CSS, no external anything.

Reports are mailed, attached to tickets and opened years later offline, so a page must render from
its own bytes alone. The Content-Security-Policy forbids every network fetch and every script, so
even a string that slipped past escaping could not execute or phone home.
"""

from __future__ import annotations

import datetime as dt

from .formatting import esc

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa;
        --good:#1a7f37; --bad:#cf222e; --warn:#9a6700; --info:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink); }
main { max-width: 1240px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; }
.decision { border: 2px solid var(--info); border-radius: 8px; padding: 12px 16px; margin: 16px 0; }
.decision .label { font-size: 22px; font-weight: 700; }
.decision.good { border-color: var(--good); } .decision.good .label { color: var(--good); }
.decision.bad { border-color: var(--bad); } .decision.bad .label { color: var(--bad); }
.decision.warn { border-color: var(--warn); } .decision.warn .label { color: var(--warn); }
.decision.info .label { color: var(--info); }
.badge { display:inline-block; padding: 1px 8px; border-radius: 10px; border: 1px solid currentColor; }
.badge.good { color: var(--good); } .badge.bad { color: var(--bad); }
.badge.warn { color: var(--warn); } .badge.info { color: var(--info); }
tr.good td.sig { color: var(--good); font-weight: 700; } tr.bad td.sig { color: var(--bad); font-weight: 700; }
tr.unavailable td { color: var(--muted); font-style: italic; }
.srm.pass { color: var(--good); } .srm.fail { color: var(--bad); font-weight: 700; }
/* Effects tables (up to 14 columns: two intervals, p, q, always-valid q, Sig., Aliased with).
   On a 1280 px screen every column shows without scrolling: small type, tight padding, headers
   wrap, and the long "Aliased with" labels (a:b:c, no spaces) may break anywhere. Narrower screens
   (phones) scroll the table inside its .wide container instead of the page. */
.wide { overflow-x: auto; max-width: 100%; }
table.effects { font-size: 12px; }
table.effects th, table.effects td { padding: 3px 5px; }
table.effects th { font-size: 11.5px; vertical-align: bottom; }
table.effects td:last-child:not(.sig) { overflow-wrap: anywhere; min-width: 8em; }
th .tag { display:block; font-weight: 400; font-size: 11px; color: var(--info); }
td.av { background: #f3f8ff; }
p.note { margin: 2px 0 6px; } p.warn-note { color: var(--warn); font-weight: 600; }
caption.note { caption-side: bottom; text-align: left; padding-top: 4px; }
.hetero b { color: var(--warn); } p.legend { margin-top: -8px; }
h4 { font-size: 14px; margin: 14px 0 4px; }
.seg-grid { display: flex; flex-wrap: wrap; gap: 4px 28px; align-items: flex-start; }
.seg-block table { margin-top: 2px; }
table.bayes tr.top td { font-weight: 700; }
svg.forest { display: block; margin: 4px 0 12px; max-width: 100%; height: auto; }
svg.forest text { font: 11px system-ui, sans-serif; fill: var(--ink); }
footer { margin-top: 32px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--muted); }
footer li { margin: 3px 0; }
/* Print: A4 LANDSCAPE, on purpose. An effects table needs ~950 px at a legible 9.5px, more than
   A4 portrait's 718 px (210 mm - 2 x 10 mm at 96 px/in) but less than landscape's 1047 px
   (297 mm - 2 x 10 mm). No column is cut: the scroll container becomes overflow: visible (a printed
   scrollbar hides columns), rows and plots do not break across pages, the header row repeats on
   every page, and the status colours and shaded always-valid columns print as on screen.
   mvt_pipeline_tests/test_browser.py reads this @page rule to size its print-layout check. */
@media print {
  @page { size: A4 landscape; margin: 10mm; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  body { font-size: 11px; }
  main { max-width: none; padding: 0; }
  h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 18px; } h3 { font-size: 13px; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  .wide { overflow: visible; }
  table.effects { font-size: 9.5px; }
  table.effects th { font-size: 9px; } table.effects th .tag { font-size: 8px; }
  table.effects th, table.effects td { padding: 2px 3px; }
  thead { display: table-header-group; }
  tr, .decision, svg.forest, dl.meta { break-inside: avoid; page-break-inside: avoid; }
}
"""


def decision_tone(label: str | None) -> str:
    """good / bad / warn / info: the colour of a decision label, from its leading word."""
    text = (label or "").strip().lower()
    if text.startswith("ship"):
        return "good"
    if text.startswith(("stop_harm", "pause", "stop:", "rollback", "roll back", "do not ship")):
        return "bad"
    if text.startswith(("invalid", "stop_futility", "investigate", "warn", "blocked")):
        return "warn"
    return "info"


def fmt_timestamp(value: dt.datetime | dt.date | None) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            return esc(value.strftime("%Y-%m-%d %H:%M UTC"))
        return esc(value.strftime("%Y-%m-%d %H:%M"))
    return esc(value.isoformat())


def page(title: str, body: str) -> str:
    """A complete HTML document. `title` is escaped here; `body` must already be safe HTML."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )
