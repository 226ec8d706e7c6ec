"""The published report pages in a real browser (headless Debian Chromium, see `browser.py`).

The module builds pages as a user would: a small generated dataset (400 users, 2 days) through the
project's own `nightly` job for two nights, then every `*.html` under the reports directory
(found recursively: the layout is not assumed; at least the index and one experiment page). Each
page is opened from its file:// URL and must:

* be self-contained: no SEVERE console entry (errors, Content-Security-Policy violations, failed
  loads), no network request other than its own file:// URL and data: URLs, no <script> element;
  a full-page screenshot at 1280 px is saved as an artifact;
* print on A4: the PDF (saved as an artifact; A4 in the orientation of the page's `@page` rule)
  contains, per effects table (`table.effects`), every column header (`thead th`: p, q,
  always-valid q, Sig., Aliased with, ...) and the whole header row in order, so no column was cut;
* show every effects-table column on a 1280 px wide screen: the table's right edge inside the
  viewport and its scroll container not overflowing (scrollWidth <= clientWidth + 1);
* do the same in the print layout: print media emulated at the width of the printed page's
  content box, taken from the page's own `@page` size and margins (the report CSS prints A4
  landscape, see the comment in `mvt_pipeline/reports/page.py`);
* on a 390 px phone screen, keep each effects table inside the viewport: the table scrolls in its
  container, not the page.

MVT_BROWSER_REPORTS_DIR=<dir> checks the pages already in <dir> instead of running the nights.
Artifacts go to $MVT_TEST_ARTIFACTS if set, else <repo>/test-artifacts/browser/ (git-ignored).
Without /usr/bin/chromium and /usr/bin/chromedriver these tests fail; `.ci/run` installs them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

from .browser import (
    ChromiumMissing, chromium, clear_logs, console_errors, emulate_media, network_requests, print_pdf,
    require_chromium, screenshot, set_window_size,
)
from .conftest import PROJECT_ROOT, SAMPLE_FLAGS, SAMPLE_REGISTRY

USERS, DAYS, SEED = 400, 2, 8
NIGHTS = ("2026-11-02", "2026-11-03")
SCREEN = (1280, 900)
PHONE = (390, 844)
PX_PER_MM = 96 / 25.4
A4_MM = (210.0, 297.0)
A4_PT = (595.28, 841.89)

# Effects tables, one entry per table: where it ends against the viewport and its scroll container,
# and the header cells that end beyond the visible part of either.
TABLES_JS = """
const norm = s => s.replace(/\\s+/g, ' ').trim();
const vw = document.documentElement.clientWidth;
return [...document.querySelectorAll('table.effects')].map((table, i) => {
  const box = table.closest('.wide') || table.parentElement;
  const t = table.getBoundingClientRect(), b = box.getBoundingClientRect();
  const edge = Math.min(vw, b.right) + 1;
  const section = table.closest('section');
  const title = section && section.querySelector('h3') ? norm(section.querySelector('h3').textContent) : '';
  return {
    index: i, title: title, viewport: vw, right: t.right, box_right: b.right,
    scroll_width: box.scrollWidth, client_width: box.clientWidth,
    overflow_x: getComputedStyle(box).overflowX,
    headers: [...table.querySelectorAll('thead th')].map(th => norm(th.textContent)),
    hidden: [...table.querySelectorAll('thead th')]
      .filter(th => th.getBoundingClientRect().right > edge).map(th => norm(th.textContent)),
  };
});
"""

# The page's @page rules (also those nested in @media print): size and left/right margins.
PAGE_RULES_JS = """
const out = [];
const walk = rules => { for (const r of rules) {
  if (r instanceof CSSPageRule) out.push({size: r.style.getPropertyValue('size'),
      left: r.style.getPropertyValue('margin-left'), right: r.style.getPropertyValue('margin-right')});
  else if (r.cssRules) walk(r.cssRules);
} };
for (const sheet of document.styleSheets) walk(sheet.cssRules);
return out;
"""


@dataclass(frozen=True)
class Page:
    path: Path
    name: str  # relative to the reports directory, for messages and artifact names

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def artifact(self, suffix: str) -> Path:
        return artifacts_dir() / (self.name.removesuffix(".html").replace("/", "__") + suffix)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("MVT_TEST_ARTIFACTS") or PROJECT_ROOT / "test-artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (starting it costs seconds on a slow machine); always quit."""
    try:
        require_chromium()
    except ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with chromium(*SCREEN, log_path=artifacts_dir() / "chromedriver.log") as driver:
        yield driver


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Page]:
    """Two nights of the `nightly` job in an isolated data dir (as the `workdir` fixture sets it up);
    every HTML page the nights wrote, wherever in the reports directory it landed.

    MVT_BROWSER_REPORTS_DIR=<dir> checks the pages already in <dir> instead (e.g. `make demo`'s
    data/reports after a CSS change): a quick loop for whoever edits the report's look."""
    given = os.environ.get("MVT_BROWSER_REPORTS_DIR")
    if given:
        yield _pages_in(Path(given).resolve())
        return
    root = tmp_path_factory.mktemp("browser")
    data = root / "data"
    shutil.copytree(SAMPLE_REGISTRY, data / "registry")
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MVT_DATA_DIR", str(data))
        env.setenv("MVT_DUCKDB_PATH", str(data / "warehouse" / "mvt.duckdb"))
        env.setenv("MVT_REPORTS_DIR", str(data / "reports"))
        env.setenv("DAGSTER_HOME", str(home))
        env.delenv("MVT_DUCKDB_MEMORY_LIMIT", raising=False)
        from mvt_pipeline.config import settings
        from mvt_pipeline.nights import run_job

        from .pipeline_runner import generate

        generate(data, users=USERS, days=DAYS, seed=SEED)
        for night in NIGHTS:
            result = run_job("nightly", night)
            assert result.success, f"nightly {night} failed: {result.error}"
        yield _pages_in(settings().reports_dir)


def _pages_in(reports: Path) -> list[Page]:
    found = [Page(p, p.relative_to(reports).as_posix()) for p in sorted(reports.rglob("*.html"))]
    assert found, f"no *.html under {reports}"
    return found


def load(driver, page: Page, size: tuple[int, int] = SCREEN) -> None:
    """A fresh look at `page`: screen media, default metrics, logs emptied, then navigate."""
    reset(driver)
    set_window_size(driver, *size)
    driver.get("about:blank")
    clear_logs(driver)
    driver.get(page.url)


def reset(driver) -> None:
    emulate_media(driver, "")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": False})


def effects_pages(pages: list[Page]) -> list[Page]:
    found = [p for p in pages if 'class="effects"' in p.path.read_text(encoding="utf-8")]
    assert found, f"no page has an effects table (table.effects): {[p.name for p in pages]}"
    return found


def normalise(text: str) -> str:
    """Whitespace and hyphenation as PDF text extraction leaves them: ligatures (ﬀ) unfolded, soft
    hyphens dropped, a line break after a hyphen joined, runs of whitespace one space."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    text = re.sub(r"[\u2010\u2011]", "-", text)
    text = re.sub(r"-\s+", "-", text)
    return " ".join(text.split())


def pdf_text(pdf: bytes) -> tuple[str, list[tuple[float, float]]]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    sizes = [(float(p.mediabox.width), float(p.mediabox.height)) for p in reader.pages]
    return normalise("\n".join(p.extract_text() or "" for p in reader.pages)), sizes


def no_problems(problems: dict[str, list[str]], note: str = "") -> None:
    """Fail with every page's problems listed (all pages are checked before failing)."""
    text = "\n".join(f"{name}:\n  " + "\n  ".join(items) for name, items in problems.items() if items)
    if text:
        pytest.fail(text + (f"\n{note}" if note else ""), pytrace=False)


def test_the_nights_wrote_an_index_and_experiment_pages(browser, pages):
    names = [p.name for p in pages]
    assert any(p.path.name == "index.html" for p in pages), f"no index.html among {names}"
    assert any(p.path.name != "index.html" for p in pages), f"no experiment page among {names}"
    effects_pages(pages)


def test_pages_are_self_contained_in_the_browser(browser, pages):
    problems: dict[str, list[str]] = {}
    for page in pages:
        load(browser, page)
        found = problems.setdefault(page.name, [])
        found += [f"console error: {m}" for m in console_errors(browser)]
        found += [f"network request: {url}" for url in network_requests(browser)
                  if url.split("#")[0] != page.url and not url.startswith("data:")]
        scripts = browser.execute_script("return document.getElementsByTagName('script').length;")
        if scripts:
            found.append(f"{scripts} <script> element(s) in the DOM")
        if not browser.execute_script("return document.querySelector('main h1') !== null;"):
            found.append("no <main><h1>: the page did not render")
        screenshot(browser, page.artifact(".png"))
    no_problems(problems)


def test_printed_a4_pdf_keeps_every_effects_column(browser, pages):
    problems: dict[str, list[str]] = {}
    with_tables = {p.name for p in effects_pages(pages)}
    for page in pages:
        load(browser, page)
        found = problems.setdefault(page.name, [])
        title = normalise(browser.execute_script("const h = document.querySelector('h1'); return h ? h.textContent : '';"))
        tables = browser.execute_script(TABLES_JS)
        landscape = any("landscape" in r["size"] for r in browser.execute_script(PAGE_RULES_JS))
        pdf = print_pdf(browser)
        page.artifact(".pdf").write_bytes(pdf)
        text, sizes = pdf_text(pdf)
        want = tuple(reversed(A4_PT)) if landscape else A4_PT
        off = [s for s in sizes if abs(s[0] - want[0]) > 2 or abs(s[1] - want[1]) > 2]
        if off or not sizes:
            found.append(f"PDF pages are not A4 {'landscape' if landscape else 'portrait'} "
                         f"({want[0]:.0f} x {want[1]:.0f} pt): {off[:3] or 'no pages'}")
        if title not in text:
            found.append(f"the title {title!r} is not in the PDF text")
        if page.name in with_tables and not tables:
            found.append("the file has class=\"effects\" but the DOM has no table.effects")
        flat = re.sub(r"\s+", "", text)
        for table in tables:
            headers = [normalise(h) for h in table["headers"]]
            missing = [h for h in headers if h not in text]
            if missing:
                found.append(f"effects table {table['index']} ({table['title']}): columns {missing} "
                             "are not in the printed PDF")
            row = re.sub(r"\s+", "", "".join(headers))
            if not missing and row not in flat:
                found.append(f"effects table {table['index']} ({table['title']}): the header row "
                             f"{headers} is not printed whole and in order")
    no_problems(problems, f"(PDFs in {artifacts_dir()})")


def _hidden_columns(tables: list[dict]) -> list[str]:
    found = []
    for t in tables:
        what = f"effects table {t['index']} ({t['title']})"
        if t["right"] > t["viewport"] + 1:
            found.append(f"{what} ends at {t['right']:.0f} px, beyond the {t['viewport']} px viewport")
        if t["scroll_width"] > t["client_width"] + 1:
            found.append(f"{what} overflows its scroll container ({t['scroll_width']} > {t['client_width']} px)")
        if t["hidden"]:
            found.append(f"{what}: columns out of sight: {t['hidden']}")
    return found


def test_no_effects_column_hidden_on_a_1280px_screen(browser, pages):
    problems: dict[str, list[str]] = {}
    for page in effects_pages(pages):
        load(browser, page, SCREEN)
        tables = browser.execute_script(TABLES_JS)
        assert tables, f"{page.name}: no table.effects in the DOM"
        problems[page.name] = _hidden_columns(tables)
    no_problems(problems)


def print_content_width(driver) -> tuple[int, str]:
    """The printed page's content width in CSS px, from the page's own @page rule (A4 default)."""
    rules = driver.execute_script(PAGE_RULES_JS)
    size = " ".join(r["size"] for r in rules if r["size"]).lower()
    landscape = "landscape" in size
    if size and not re.search(r"\ba4\b|landscape|portrait", size):
        pytest.fail(f"@page size {size!r}: this test knows A4 (portrait or landscape) only")

    def mm(value: str) -> float:
        match = re.fullmatch(r"\s*([\d.]+)\s*(mm|cm|in|px|pt)?\s*", value or "")
        if not match:
            return 0.4 * 25.4  # printToPDF's margin when the CSS names none
        number, unit = float(match.group(1)), match.group(2) or "px"
        return number * {"mm": 1, "cm": 10, "in": 25.4, "px": 25.4 / 96, "pt": 25.4 / 72}[unit]

    left = next((r["left"] for r in rules if r["left"]), "")
    right = next((r["right"] for r in rules if r["right"]), "")
    paper = A4_MM[1] if landscape else A4_MM[0]
    width = int((paper - mm(left) - mm(right)) * PX_PER_MM)
    return width, f"A4 {'landscape' if landscape else 'portrait'}, {width} px content width"


def test_no_effects_column_hidden_in_the_print_layout(browser, pages):
    problems: dict[str, list[str]] = {}
    try:
        for page in effects_pages(pages):
            load(browser, page, SCREEN)
            width, what = print_content_width(browser)
            emulate_media(browser, "print")
            browser.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": True})  # paper has none
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 1100, "deviceScaleFactor": 1, "mobile": False})
            tables = browser.execute_script(TABLES_JS)
            assert tables, f"{page.name}: no table.effects in the DOM"
            problems[f"{page.name} (print, {what})"] = _hidden_columns(tables)
    finally:
        reset(browser)
    no_problems(problems)


def test_effects_tables_scroll_inside_their_container_on_a_phone(browser, pages):
    problems: dict[str, list[str]] = {}
    try:
        for page in effects_pages(pages):
            load(browser, page, SCREEN)
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True})
            found = problems.setdefault(f"{page.name} ({PHONE[0]} px phone)", [])
            for t in browser.execute_script(TABLES_JS):
                what = f"effects table {t['index']} ({t['title']})"
                if t["box_right"] > t["viewport"] + 1:
                    found.append(f"{what}: its container ends at {t['box_right']:.0f} px, beyond the "
                                 f"{t['viewport']} px viewport")
                if t["scroll_width"] > t["client_width"] + 1 and t["overflow_x"] not in ("auto", "scroll"):
                    found.append(f"{what} is wider than its container, which does not scroll "
                                 f"(overflow-x: {t['overflow_x']})")
    finally:
        reset(browser)
    no_problems(problems)
