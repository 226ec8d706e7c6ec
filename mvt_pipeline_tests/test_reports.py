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
        {"experiment_id": "checkout_mvt", "status": "running", "decision": {"label": f"ship: {EVIL}"},
         "report_file": "checkout_mvt/report 1.html", "primary_metric": "checkout_conversion"},
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


# --- always-valid intervals, CUPED, metric kinds, segments and the Bayesian read-out ----------------------


def _with_new_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The effects frame as the pipeline now writes it: always-valid CIs, CUPED, kinds, SE type."""
    out = frame.copy()
    half = (out["ci_high"] - out["ci_low"]) / 2
    out["seq_ci_low"] = out["estimate"] - 1.6 * half
    out["seq_ci_high"] = out["estimate"] + 1.6 * half
    out["seq_p_value"] = (out["p_value"] * 20).clip(upper=1.0)
    out["seq_q_value"] = (out["q_value"] * 20).clip(upper=1.0)
    out["n_star"] = 40000
    out["metric_kind"] = out["metric"].map({"checkout_conversion": "binary", "revenue_per_user": "continuous",
                                             "latency_p95": "quantile"})
    out["se_type"] = "robust"
    out["cuped"] = out["metric"] == "revenue_per_user"
    out["variance_reduction"] = out["cuped"].map({True: 0.42, False: math.nan})
    out["pre_imbalance_p"] = out["cuped"].map({True: 0.0002, False: math.nan})
    inter = out["term"].str.contains(":")
    out["shrunk_estimate"] = (out["estimate"] * 0.25).where(inter)
    out["shrink_factor"] = pd.Series(0.25, index=out.index).where(inter)
    return out


@pytest.fixture
def new_effects(effects) -> pd.DataFrame:
    return _with_new_columns(effects)


def _hte() -> pd.DataFrame:
    rows = []
    for segment, est in (("mobile", 0.035), ("desktop", 0.008), (EVIL, 0.02)):
        rows.append(dict(experiment_id="checkout_mvt", metric="checkout_conversion", segment_variable="device",
                         segment=segment, term="cta_color", level="green", estimate=est, std_error=0.005,
                         ci_low=est - 0.01, ci_high=est + 0.01, p_value=0.01, q_value=0.0123,
                         shrunk_estimate=est * 0.8 + 0.004, shrunk_std_error=0.004, n_units=1500))
    for segment in ("US", "DE"):
        rows.append(dict(experiment_id="checkout_mvt", metric="checkout_conversion", segment_variable="country",
                         segment=segment, term="cta_color", level="green", estimate=0.02, std_error=0.005,
                         ci_low=0.01, ci_high=0.03, p_value=0.2, q_value=0.4, shrunk_estimate=0.02,
                         shrunk_std_error=0.003, n_units=2000))
    rows.append(dict(rows[-1], term="cta_color:validation", level="green:inline", segment="interaction-only"))
    rows.append(dict(rows[0], experiment_id="other_exp", segment="other-experiment-segment"))
    return pd.DataFrame(rows)


def _heterogeneity() -> pd.DataFrame:
    return pd.DataFrame([
        dict(experiment_id="checkout_mvt", metric="checkout_conversion", segment_variable="device",
             term="cta_color", level="green", k=3, q_stat=14.2, df=2, p_value=0.0008, q_value=0.0016,
             i2=0.86, tau2=0.0001),
        dict(experiment_id="checkout_mvt", metric="checkout_conversion", segment_variable="country",
             term="cta_color", level="green", k=2, q_stat=0.3, df=1, p_value=0.58, q_value=0.58,
             i2=0.0, tau2=0.0),
    ])


def _bayes() -> pd.DataFrame:
    cells = [f"cta_color={c}|validation={v}" for c in ("blue", "green") for v in ("on_submit", "inline")]
    return pd.DataFrame([
        dict(experiment_id="checkout_mvt", metric="checkout_conversion", cell_id=cid, posterior_mean=m,
             prob_best=pb, expected_loss=loss)
        for cid, m, pb, loss in zip(cells, (0.10, 0.104, 0.121, 0.119), (0.0, 0.004, 0.613, 0.383),
                                    (0.021, 0.017, 0.0004, 0.0011))
    ] + [dict(experiment_id="checkout_mvt", metric="revenue_per_user", cell_id=cells[0], posterior_mean=99.0,
              prob_best=0.25, expected_loss=1.0)])


@pytest.fixture
def full_report(experiment, metrics, new_effects, cells) -> str:
    return render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                    hte=_hte(), heterogeneity=_heterogeneity(), bayes=_bayes())


def _effects_tables(document: str) -> list[str]:
    return re.findall(r'<table class="effects">.*?</table>', document, re.S)


def test_full_report_is_well_formed_and_self_contained(full_report, new_effects):
    checker = parse(full_report)
    assert checker.errors == [] and checker.stack == []
    assert_self_contained(full_report)
    assert "<script>" not in full_report
    assert sum(len(re.findall(r"<tr class=", t)) for t in _effects_tables(full_report)) == len(new_effects)


def test_always_valid_interval_and_q_next_to_fixed(full_report):
    table = _effects_tables(full_report)[0]  # checkout_conversion, primary
    headers = re.findall(r"<th>(.*?)</th>", table)
    plain = [re.sub(r"<[^>]+>.*?</span>|<[^>]+>", "", h).strip() for h in headers]
    assert plain.index("Always-valid 95% CI") == plain.index("95% CI") + 1
    assert plain.index("Always-valid q") == plain.index("q") + 1
    assert "decides" in headers[plain.index("Always-valid q")]  # the default basis is sequential
    assert "decides" not in headers[plain.index("q")]
    # cta_color=green: estimate 2.1 pp, fixed CI +-0.8 pp, always-valid +-1.28 pp, seq q = 20 x 0.0002
    assert "[+1.30 pp, +2.90 pp]" in table and "[+0.82 pp, +3.38 pp]" in table
    assert ">0.004<" in table


def test_significance_follows_the_decision_basis(experiment, metrics, new_effects, cells):
    # validation=inline: fixed q = 0.06 (not significant); make the always-valid q significant and
    # cta_color=green's always-valid q not significant, so the two bases disagree on both rows.
    frame = new_effects.copy()
    frame.loc[3, ["q_value", "seq_q_value"]] = [0.06, 0.01]
    frame.loc[2, ["q_value", "seq_q_value"]] = [0.0002, 0.2]

    def starred(exp):
        doc = render_experiment_report(exp, metrics, frame, cells, SRM, DECISION, QUALITY, GENERATED)
        table = _effects_tables(doc)[0]
        return {term for term, row in re.findall(r"<tr class=\"\w+\"><td>([\w:]+)</td>(.*?)</tr>", table)
                if "★" in row}, doc

    seq_stars, seq_doc = starred(experiment)
    fixed_stars, fixed_doc = starred(experiment.model_copy(update={"decision_basis": "fixed"}))
    assert seq_stars == {"validation"}
    assert fixed_stars == {"cta_color"}
    assert "use the <b>always-valid</b> interval" in seq_doc and "N* = 40,000 planned units" in seq_doc
    assert "use the <b>fixed-horizon</b> interval" in fixed_doc
    assert '<tr class="good"><td>validation</td>' in seq_doc  # the colour follows the star


def test_forest_plot_draws_always_valid_band_behind_fixed_bar(full_report, report):
    from mvt_pipeline.reports.forest_plot import ForestRow
    from mvt_pipeline.reports.plots import _forest_figure

    rows = [ForestRow("a: a1 vs a0", 0.02, 0.01, 0.03, "+2", "good", -0.01, 0.05),
            ForestRow("b: b1 vs b0", -0.01, -0.02, 0.0, "-1", "neutral", -0.04, 0.02)]
    fig, _ = _forest_figure(rows, "Effects", "Effect (pp)", None)
    ax = fig.axes[0]
    segs = [(c.get_zorder(), float(c.get_linewidth()[0]), [tuple(p[:, 0]) for p in c.get_segments()])
            for c in ax.collections if c.get_segments() and len(c.get_segments()[0]) == 2
            and c.get_segments()[0][0][1] == c.get_segments()[0][1][1]]
    outer = sorted(x for z, w, ss in segs if w > 5 for x in ss)
    inner = sorted(x for z, w, ss in segs if w <= 5 for x in ss)
    assert outer == sorted([(-0.01, 0.05), (-0.04, 0.02)]) and inner == sorted([(0.01, 0.03), (-0.02, 0.0)])
    assert max(z for z, w, _ in segs if w > 5) < min(z for z, w, _ in segs if w <= 5)  # band under the bar
    assert "always-valid" in full_report.split("</svg>", 1)[1][:400]  # legend under the plot
    assert "wide pale band" not in report  # old frames: no band, no legend
    assert "(pp), treatment \u2212 control" in full_report  # the axis says its unit


def test_cuped_note_and_pre_imbalance_warning(full_report, experiment, metrics, new_effects, cells):
    assert "CUPED: variance \u221242%" in full_report
    assert full_report.count("CUPED: variance") == 1  # only the metric that used it
    assert "Pre-period imbalance (p &lt; 0.001)" in full_report
    calm = new_effects.assign(pre_imbalance_p=new_effects["pre_imbalance_p"].where(new_effects["cuped"] != True,
                                                                                   0.4))  # noqa: E712
    doc = render_experiment_report(experiment, metrics, calm, cells, SRM, DECISION, QUALITY, GENERATED)
    assert "CUPED: variance" in doc and "Pre-period imbalance" not in doc


def test_quantile_and_rate_ratio_formatting(experiment, metrics, new_effects, cells):
    assert "differences of P95 in the metric's own unit" in render_experiment_report(
        experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED)
    frame = new_effects.copy()
    frame.loc[frame["metric"] == "revenue_per_user", ["metric", "metric_kind", "control_mean"]] = \
        ["error_rate", "ratio", 0.02]
    rate_cells = pd.concat([cells, pd.DataFrame([("cta_color=blue|validation=on_submit", "error_rate", 1000, 0.021)],
                                                columns=cells.columns)])
    doc = render_experiment_report(experiment, metrics, frame, rate_cells, SRM, DECISION, QUALITY, GENERATED)
    error_table = _effects_tables(doc)[1]
    assert "+35.00 pp" in error_table and "2.00%" in error_table  # a rate: pp and percent
    assert "2.10%" in doc  # its cell mean too
    frame.loc[frame["metric"] == "error_rate", "control_mean"] = 3.5  # a ratio above 1 keeps its unit
    doc = render_experiment_report(experiment, metrics, frame, cells, SRM, DECISION, QUALITY, GENERATED)
    assert "+0.35" in _effects_tables(doc)[1] and " pp" not in _effects_tables(doc)[1]


def test_old_minimal_effects_columns_still_render(report, effects):
    assert list(effects.columns) == EFFECT_COLUMNS  # the fixture carries none of the new columns
    assert "Always-valid" not in _effects_tables(report)[0]
    assert "Always-valid intervals were not computed" in report
    assert "CUPED: variance" not in report
    assert "Effects by segment" not in report and "Which cell is best" not in report
    assert re.search(r"<td class=\"sig\"><span title=\"significant\">★</span>", report)  # fixed q still stars


def test_effects_by_segment(full_report):
    section = full_report[full_report.index("<h2>Effects by segment</h2>"):]
    section = section[:section.index("</section>")]
    text = "".join(parse(section).text)
    assert "cta_color: green vs blue" in text
    assert "by device" in text and "by country" in text
    assert "+3.50 pp" in section and "[+2.50 pp, +4.50 pp]" in section  # mobile estimate and CI
    assert "+3.20 pp" in section  # mobile shrunk: 0.035 * 0.8 + 0.004
    assert "0.012" in section  # q
    assert "The effect differs across device" in text and "p = 0.001" not in text
    assert "Cochran's Q = 14.2, df = 2, p &lt; 0.001, q = 0.002, I² = 86%" in section
    assert "No evidence that the effect differs across country" in text and "p = 0.580" in section
    assert EVIL in text and "<script>" not in section  # escaped segment value
    assert "interaction-only" not in text  # main effects only
    assert "other-experiment-segment" not in text  # other experiments' rows are dropped


def test_effects_by_segment_absent_and_empty(experiment, metrics, new_effects, cells):
    doc = render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                   hte=pd.DataFrame(), heterogeneity=pd.DataFrame())
    assert "Effects by segment" in doc and "No segment results" in doc
    no_test = render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY,
                                       GENERATED, hte=_hte())
    assert "No heterogeneity test across device" in no_test and parse(no_test).errors == []
    with pytest.raises(ValueError, match="hte is missing column"):
        render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                 hte=_hte().drop(columns=["segment"]))


def test_which_cell_is_best(full_report, experiment, metrics, new_effects, cells):
    section = full_report[full_report.index("<h2>Which cell is best</h2>"):]
    section = section[:section.index("</section>")]
    rows = re.findall(r"<tr[^>]*><td>(.*?)</td>", section)
    assert rows[0].startswith("cta_color=green · validation=on_submit")  # sorted by P(best)
    assert '<tr class="top">' in section
    assert "61.3%" in section and "12.10%" in section and "0.04 pp" in section
    assert "(control)" in rows[-1]
    assert "99" not in section  # secondary metric's rows are not shown
    evil = _bayes().assign(cell_id=EVIL)
    doc = render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                   bayes=evil)
    assert "&lt;script&gt;" in doc and "<script>" not in doc
    empty = render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                     bayes=_bayes().iloc[4:])
    assert "No Bayesian read-out for checkout_conversion" in empty


def test_best_cell_ranks_guardrail_harm_last_and_shows_the_guardrails(experiment, metrics, new_effects, cells):
    """The most likely best cell harms a guardrail: it is listed after the clean cells, never marked
    as the top, and every cell shows its worst status (its own rows and its levels' rows)."""
    from mvt_pipeline.analysis.guardrails import GUARDRAIL_COLUMNS

    top = "cta_color=green|validation=on_submit"
    guardrails = pd.DataFrame([
        {"scope": "cell", "cell": top, "metric": "latency_p95", "status": "harm"},
        {"scope": "cell", "cell": "cta_color=green|validation=inline", "metric": "latency_p95", "status": "ok"},
        {"scope": "cell", "cell": "cta_color=blue|validation=inline", "metric": "latency_p95", "status": "ok"},
        {"scope": "level", "cell": "validation=inline", "metric": "latency_p95", "status": "inconclusive"},
    ]).reindex(columns=GUARDRAIL_COLUMNS)
    doc = render_experiment_report(experiment, metrics, new_effects, cells, SRM, DECISION, QUALITY, GENERATED,
                                   bayes=_bayes(), guardrails=guardrails)
    section = doc[doc.index("<h2>Which cell is best</h2>"):]
    section = section[:section.index("</section>")]
    rows = re.findall(r"<tr([^>]*)><td>(.*?)</td>", section)
    labels = [r[1] for r in rows]
    assert labels[-1].startswith("cta_color=green · validation=on_submit")
    assert 'class="top"' not in rows[-1][0]
    assert "<th>Guardrails</th>" in section and ">harm<" in section and ">inconclusive<" in section
    assert "Guardrails" in doc[:doc.index("<h2>Which cell is best</h2>")]  # the guardrails section itself
    assert parse(doc).errors == []


def test_interactions_show_their_shrunk_estimate(full_report):
    table = _effects_tables(full_report)[0]  # checkout_conversion: cta_color:validation -0.4 pp
    row = next(r for r in re.findall(r"<tr class=.*?</tr>", table, re.S) if "cta_color:<wbr>validation" in r)
    assert "EB \u22120.10 pp" in row or "EB -0.10 pp" in row
    main = next(r for r in re.findall(r"<tr class=.*?</tr>", table, re.S) if ">cta_color</td>" in r)
    assert "EB " not in main



def test_a_clamped_quantile_row_says_how_many_events_it_needs(experiment, metrics, new_effects, cells):
    frame = new_effects.copy()
    frame.loc[(frame["metric"] == "latency_p95") & (frame["term"] == "cta_color"), "status"] = "quantile_rank_clamped"
    doc = render_experiment_report(experiment, metrics, frame, cells, SRM, DECISION, QUALITY, GENERATED)
    # P95 with the mart's 95% order-statistic interval: ceil(1.96^2 * 0.95 / 0.05) = 73 events
    assert "too few events per cell for P95 (needs at least 73 per cell" in doc
