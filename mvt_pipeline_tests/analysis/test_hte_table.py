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
                     "segment_value": country, "cell_id": f"pricing_banner={level}", "n": len(g),
                     "sum": g.y.sum(), "sum_sq": (g.y ** 2).sum(), "cov_sum": 0.0, "cov_sum_sq": 0.0,
                     "cross_sum": 0.0})
    segments, hetero, skipped = all_hte(registry, pd.DataFrame(rows))
    us = segments[(segments.segment == "US") & (segments.level == "discount")].iloc[0]
    means = df[df.country == "US"].groupby("pricing_banner").y.mean()
    assert us.estimate == pytest.approx(means["discount"] - means["control"], rel=1e-10)
    het = hetero[hetero.level == "discount"].iloc[0]
    assert het.p_value < 0.01  # the built-in US-only effect is detected as heterogeneity
    assert set(segments.segment_variable) == {"country"}
