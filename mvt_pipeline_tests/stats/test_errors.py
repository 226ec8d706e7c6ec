"""analyze_cells refuses bad input with a reason."""

import pandas as pd
import pytest

from mvt_pipeline.stats import analyze_cells

LEVELS = {"fa": ["a0", "a1"], "fb": ["b0", "b1"]}


def cells(rows=None):
    rows = rows or [
        ("a0", "b0", 10, 10.0, 15.0), ("a0", "b1", 12, 13.0, 20.0),
        ("a1", "b0", 11, 12.0, 18.0), ("a1", "b1", 9, 11.0, 17.0),
    ]
    return pd.DataFrame(rows, columns=["fa", "fb", "n", "sum", "sum_sq"])


def test_missing_factor_column():
    with pytest.raises(ValueError, match="factor column.*fb"):
        analyze_cells(cells().drop(columns="fb"), LEVELS)


def test_unknown_level():
    df = cells()
    df.loc[0, "fa"] = "a9"
    with pytest.raises(ValueError, match="a9"):
        analyze_cells(df, LEVELS)


def test_n_below_one():
    df = cells()
    df.loc[1, "n"] = 0
    with pytest.raises(ValueError, match="n >= 1"):
        analyze_cells(df, LEVELS)


def test_missing_cell_names_the_non_estimable_term():
    with pytest.raises(ValueError, match=r"fa:fb.*not estimable"):
        analyze_cells(cells().iloc[:3], LEVELS)
    # the additive model is estimable from three cells
    assert len(analyze_cells(cells().iloc[:3], LEVELS, max_order=1).effects) == 2


def test_no_residual_df():
    rows = [("a0", "b0", 1, 1.0, 1.0), ("a0", "b1", 1, 2.0, 4.0), ("a1", "b0", 1, 3.0, 9.0), ("a1", "b1", 1, 5.0, 25.0)]
    with pytest.raises(ValueError, match="residual degrees of freedom"):
        analyze_cells(cells(rows), LEVELS)


def test_bad_arguments():
    with pytest.raises(ValueError, match="control level"):
        analyze_cells(cells(), LEVELS, control={"fa": "zz"})
    with pytest.raises(ValueError, match="se must be"):
        analyze_cells(cells(), LEVELS, se="hc3")
    with pytest.raises(ValueError, match="inconsistent"):
        analyze_cells(cells([("a0", "b0", 10, 10.0, 1.0)] + cells().values.tolist()[1:]), LEVELS)
    with pytest.raises(ValueError, match="at least 2 levels"):
        analyze_cells(cells(), {"fa": ["a0"], "fb": ["b0", "b1"]})
