"""HTE glue: per-segment rows come from `agg_cell_stats` segment rows and match pandas per segment."""

import numpy as np
import pandas as pd
import pytest

from mvt_pipeline.analysis.hte_table import all_hte
from mvt_pipeline.registry import load_registry

from ..conftest import SAMPLE_REGISTRY


def test_pricing_segments_by_country_match_per_segment_differences():
    registry = load_registry(SAMPLE_REGISTRY)
    exp = registry.experiment("pricing_abn")
    rng = np.random.default_rng(8)
    n = 30000
    df = pd.DataFrame({"pricing_banner": rng.choice(exp.factors[0].levels, n),
                       "country": rng.choice(["US", "DE", "FR"], n)})
    p = 0.1 + np.where((df.pricing_banner == "discount") & (df.country == "US"), 0.05, 0.0)
    df["y"] = (rng.random(n) < p).astype(float)
    rows = []
    for (level, country), g in df.groupby(["pricing_banner", "country"]):
        rows.append({"experiment_id": exp.id, "metric": "signup_conversion", "segment": "country",
                     "segment_value": country, "cell_id": f"pricing_banner={level}", "n": len(g), "n_units": len(g),
                     "sum": g.y.sum(), "sum_sq": (g.y ** 2).sum(), "cov_sum": 0.0, "cov_sum_sq": 0.0,
                     "cross_sum": 0.0})
    segments, hetero, skipped = all_hte(registry, pd.DataFrame(rows))
    us = segments[(segments.segment == "US") & (segments.level == "discount")].iloc[0]
    means = df[df.country == "US"].groupby("pricing_banner").y.mean()
    assert us.estimate == pytest.approx(means["discount"] - means["control"], rel=1e-10)
    het = hetero[hetero.level == "discount"].iloc[0]
    assert het.p_value < 0.01  # the built-in US-only effect is detected as heterogeneity
    assert set(segments.segment_variable) == {"country"}


def test_ratio_guardrail_segments_match_per_segment_ratio_differences():
    registry = load_registry(SAMPLE_REGISTRY)
    exp = registry.experiment("pricing_abn")
    rng = np.random.default_rng(11)
    n = 12000
    df = pd.DataFrame({"pricing_banner": rng.choice(exp.factors[0].levels, n),
                       "country": rng.choice(["US", "DE"], n)})
    df["req"] = 1 + rng.poisson(3, n)
    df["err"] = rng.binomial(df["req"], 0.03)
    rows = []
    for (level, country), g in df.groupby(["pricing_banner", "country"]):
        rows.append({"experiment_id": exp.id, "metric": "error_rate", "segment": "country",
                     "segment_value": country, "cell_id": f"pricing_banner={level}", "n_units": len(g), "n": 0,
                     "num_sum": g.err.sum(), "den_sum": g.req.sum(), "num_sum_sq": (g.err ** 2).sum(),
                     "den_sum_sq": (g.req ** 2).sum(), "num_den_sum": (g.err * g.req).sum()})
    segments, hetero, skipped = all_hte(registry, pd.DataFrame(rows))
    de = segments[(segments.metric == "error_rate") & (segments.segment == "DE") & (segments.level == "discount")].iloc[0]
    part = df[df.country == "DE"]
    ratio = part.groupby("pricing_banner").apply(lambda d: d.err.sum() / d.req.sum(), include_groups=False)
    assert de.estimate == pytest.approx(ratio["discount"] - ratio["control"], rel=1e-10)
    assert len(hetero[hetero.metric == "error_rate"]) == 2
