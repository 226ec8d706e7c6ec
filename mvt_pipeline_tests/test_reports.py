"""HTML decision reports: well-formed, self-contained, escaped, and complete."""

from __future__ import annotations

import datetime as dt
import math
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from mvt_pipeline.registry.models import Experiment, Metric
from mvt_pipeline.reports import EFFECT_COLUMNS, render_experiment_report, render_index

EVIL = '<script>alert("x")</script>'
GENERATED = dt.datetime(2026, 12, 1, 6, 30, tzinfo=dt.timezone.utc)


class _Checker(HTMLParser):
    """Collects tags and checks that the structural tags are balanced."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr", "circle",
            "line", "rect", "path"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    return checker


def assert_self_contained(document: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", document, re.I)
    assert not re.search(r"@import", document, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", document, re.I)
    assert "<script" not in document.lower()
    assert "<link" not in document.lower()


@pytest.fixture
def experiment() -> Experiment:
    return Experiment.model_validate({
        "id": "checkout_mvt", "owner": f"team {EVIL}", "hypothesis": f"Green wins {EVIL} & more",
        "status": "running", "start_date": "2026-11-01", "end_date": "2026-12-15",
        "factors": [
            {"name": "cta_color", "levels": ["blue", "green"], "control": "blue", "flag_key": "checkout-cta-color"},
            {"name": "validation", "levels": ["on_submit", "inline"], "control": "on_submit"},
        ],
        "metrics": {"primary": ["checkout_conversion"], "secondary": ["revenue_per_user"],
                    "guardrails": ["latency_p95"]},
    })


@pytest.fixture
def metrics() -> dict[str, Metric]:
    return {
        "checkout_conversion": Metric(name="checkout_conversion", kind="binary", source="checkout"),
        "revenue_per_user": Metric(name="revenue_per_user", kind="continuous", source="revenue"),
        "latency_p95": Metric(name="latency_p95", kind="quantile", source="latency_ms", q=0.95, direction="lower"),
    }


def _effect(metric, role, term, level, estimate, *, status="ok", aliases=None, p=0.01, control=0.1):
    nan = math.nan
    if status != "ok":
        return dict(experiment_id="checkout_mvt", metric=metric, metric_role=role, term=term, level=level,
                    aliases=aliases, estimate=nan, std_error=nan, ci_low=nan, ci_high=nan, p_value=nan,
                    q_value=nan, control_mean=nan, rel_lift=nan, rel_ci_low=nan, rel_ci_high=nan,
                    n_units=nan, status=status)
    return dict(experiment_id="checkout_mvt", metric=metric, metric_role=role, term=term, level=level,
                aliases=aliases, estimate=estimate, std_error=0.004, ci_low=estimate - 0.008,
                ci_high=estimate + 0.008, p_value=p, q_value=min(1.0, p * 2), control_mean=control,
                rel_lift=estimate / control, rel_ci_low=(estimate - 0.01) / control,
                rel_ci_high=(estimate + 0.01) / control, n_units=4000, status=status)


@pytest.fixture
def effects() -> pd.DataFrame:
    rows = [
        # secondary listed first on purpose: the report must put the primary metric first
        _effect("revenue_per_user", "secondary", "cta_color", "green", 0.35, p=0.2, control=12.5),
        _effect("checkout_conversion", "primary", "cta_color:validation", "green:inline", -0.004, p=0.4,
                aliases="D"),
        _effect("checkout_conversion", "primary", "cta_color", "green", 0.021, p=0.0001),
        _effect("checkout_conversion", "primary", "validation", "inline", 0.006, p=0.03),
        _effect("latency_p95", "guardrail", "validation", "inline", 0.0, status="unsupported metric kind"),
        _effect("latency_p95", "guardrail", "cta_color", "green", 3.0, p=0.5, control=180.0),
    ]
    frame = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    frame.loc[5, "ci_high"] = math.inf  # an infinite bound must not break table or plot
    return frame


@pytest.fixture
def cells() -> pd.DataFrame:
    rows = []
    for color in ("blue", "green"):
        for val in ("on_submit", "inline"):
            cid = f"cta_color={color}|validation={val}"
            rows.append((cid, "checkout_conversion", 1000, 0.1 + 0.02 * (color == "green")))
            rows.append((cid, "revenue_per_user", 1000, 12.5))
    return pd.DataFrame(rows, columns=["cell_id", "metric", "n", "mean"])


SRM = {"chi2": 1.2, "df": 3, "p_value": 0.75, "passed": True,
       "observed": {"cta_color=blue|validation=on_submit": 1000, "cta_color=green|validation=inline": 1000},
       "expected_share": {"cta_color=blue|validation=on_submit": 0.5, "cta_color=green|validation=inline": 0.5}}
DECISION = {"label": "keep running", "reasons": [f"primary metric not yet significant {EVIL}"]}
QUALITY = {"rows_ingested": 123456, "rows_quarantined": 12, "loss_rate": 0.0123, "note": EVIL}


@pytest.fixture
def report(experiment, metrics, effects, cells) -> str:
    return render_experiment_report(experiment, metrics, effects, cells, SRM, DECISION, QUALITY, GENERATED)


def test_report_is_well_formed_html(report):
    checker = parse(report)
    assert checker.errors == []
    assert checker.stack == []
    names = [t for t, _ in checker.tags]
    for tag in ("html", "head", "body", "main", "table", "svg", "style"):
        assert tag in names
    assert report.startswith("<!DOCTYPE html>")


def test_report_is_self_contained(report):
    assert_self_contained(report)
    assert "Content-Security-Policy" in report


def test_user_strings_are_escaped(report):
    assert "<script>" not in report
    assert "&lt;script&gt;" in report
    text = "".join(parse(report).text)
    assert f"Green wins {EVIL} & more" in text  # round-trips to the original text
    assert f"team {EVIL}" in text


def test_every_effect_row_and_the_decision_appear(report, effects):
    text = "".join(parse(report).text)
    assert "keep running" in text
    assert "primary metric not yet significant" in text
    tbody_rows = re.findall(r'<table class="effects">.*?</table>', report, re.S)
    assert sum(len(re.findall(r"<tr class=", t)) for t in tbody_rows) == len(effects)
    for row in effects.itertuples():
        assert row.term in text
    assert "green × inline" in text  # interaction contrast
    assert "green vs blue" in text  # main-effect contrast against the control level


def test_nan_rows_show_their_reason_and_dashes(report):
    text = "".join(parse(report).text)
    assert "not estimated: unsupported metric kind" in text
    assert "nan" not in text.lower().replace("nance", "")  # no raw NaN (but 'variance' etc. allowed)
    assert "inf" not in re.sub(r"[A-Za-z]*inf[a-z]+", "", text)  # 'infinite'/'inferiority' fine, bare inf not
    assert "–" in text


def test_primary_metric_first_and_binary_in_percent(report):
    assert report.index("checkout_conversion") < report.index("revenue_per_user")
    assert report.index(">checkout_conversion <") < report.index(">latency_p95 <")
    assert "+2.10 pp" in report  # binary effect in percentage points
    assert "10.00%" in report  # binary control mean as a percentage
    assert "+21.00%" in report  # relative lift as a percentage
    assert "&lt;0.001" in report  # small p-value


def test_svg_forest_plot_per_metric(report):
    svgs = re.findall(r"<svg\b.*?</svg>", report, re.S)
    assert len(svgs) == 3
    assert all("stroke-dasharray" in s for s in svgs)  # the zero line
    assert "Effects on checkout_conversion" in svgs[0]


def test_srm_failure_and_missing_inputs(experiment, metrics, effects, cells):
    bad_srm = {**SRM, "passed": False, "p_value": 1e-9}
    html_doc = render_experiment_report(experiment, metrics, effects, cells, bad_srm,
                                        {"label": "investigate: sample ratio mismatch", "reasons": []},
                                        None, GENERATED)
    assert "Sample ratio mismatch" in html_doc
    assert "investigate: sample ratio mismatch" in html_doc
    empty = render_experiment_report(experiment, metrics, pd.DataFrame(), pd.DataFrame(), None,
                                     {"label": "keep running", "reasons": []}, None, GENERATED)
    assert parse(empty).errors == []
    assert "No effects computed yet" in empty
    assert "SRM check not available" in empty
    assert_self_contained(empty)


def test_missing_effect_columns_is_a_clear_error(experiment, metrics, cells):
    with pytest.raises(ValueError, match="missing column"):
        render_experiment_report(experiment, metrics, pd.DataFrame({"metric": ["x"]}), cells, None,
                                 DECISION, None, GENERATED)


def test_footer_explains_estimands(report):
    text = "".join(parse(report).text)
    assert "averaged over the levels of the other factors" in text
    assert "difference of differences" in text


def test_quality_and_cells_tables(report):
    text = "".join(parse(report).text)
    assert "123,456" in text and "rows_quarantined" in text
    assert "(control)" in text
    assert "cta_color=green · validation=inline" in text


def test_index_links_relative_and_escaped():
    entries = [
        {"experiment_id": "checkout_mvt", "status": "running", "decision_label": "ship",
         "report_file": "checkout_mvt/report 1.html", "primary_metric": "checkout_conversion",
         "top_effect_text": f"cta_color=green +2.1 pp {EVIL}"},
        {"experiment_id": "pricing_abn", "status": "stopped", "decision_label": "stop: guardrail breached",
         "report_file": "pricing_abn.html", "primary_metric": "signup_conversion", "top_effect_text": None},
    ]
    doc = render_index(entries, GENERATED)
    checker = parse(doc)
    assert checker.errors == [] and checker.stack == []
    assert_self_contained(doc)
    hrefs = [a["href"] for t, a in checker.tags if t == "a"]
    assert hrefs == ["checkout_mvt/report%201.html", "pricing_abn.html"]
    assert "&lt;script&gt;" in doc and "<script>" not in doc
    assert "stop: guardrail breached" in doc


@pytest.mark.parametrize("bad", ["https://evil.example/x.html", "/etc/passwd", "javascript:alert(1)", "../up.html"])
def test_index_refuses_non_relative_links(bad):
    with pytest.raises(ValueError):
        render_index([{"experiment_id": "x", "status": "running", "decision_label": "ship", "report_file": bad,
                       "primary_metric": "m", "top_effect_text": ""}], GENERATED)


def test_index_lists_flags_that_need_action():
    import datetime as _dt

    import pandas as _pd

    from mvt_pipeline.reports import render_index

    flags = _pd.DataFrame([
        {"flag_key": "old-<b>", "classification": "stale_concluded", "experiment_id": "x", "owner": "team",
         "age_days": 30, "reason": "concluded", "recommended_action": "roll out and remove"},
        {"flag_key": "fine", "classification": "active", "experiment_id": "y", "owner": "team",
         "age_days": None, "reason": "ok", "recommended_action": "none"},
    ])
    html_text = render_index([], _dt.datetime(2026, 11, 24), flags)
    assert "Feature-flag audit" in html_text and "old-&lt;b&gt;" in html_text
    assert "roll out and remove" in html_text and ">fine<" not in html_text
