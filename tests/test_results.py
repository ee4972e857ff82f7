"""The tidy-table contract (DESIGN.md, Results): column order and types, extras after, NaN as null."""

from __future__ import annotations

import math

import polars as pl
import pytest

from stopdisparity.errors import SpecificationError
from stopdisparity.results import TIDY_COLUMNS, TidyRow, check_tidy, tidy_frame


def row(term: str, **extra: object) -> TidyRow:
    return TidyRow(term, 0.3, 0.1, 3.0, 0.0027, 0.1, 0.5, 1000, 146, "twfe-logit", "ATT (log odds)", "CR1",
                   extra)  # fmt: skip


def test_contract_columns_in_order_then_extras() -> None:
    frame = tidy_frame([row("in_force", odds_ratio=math.exp(0.3), pp_change=0.02), row("x", weight=0.5)])
    assert frame.columns == [*TIDY_COLUMNS, "odds_ratio", "pp_change", "weight"]
    assert frame.columns[:12] == [
        "term", "estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high", "n_obs",
        "n_clusters", "estimator", "estimand", "inference",
    ]  # fmt: skip
    assert frame.schema["n_obs"] == pl.Int64 and frame.schema["estimate"] == pl.Float64
    assert frame["weight"].to_list() == [None, 0.5]
    check_tidy(frame)


def test_non_finite_numbers_become_null() -> None:
    frame = tidy_frame(
        [TidyRow("t", float("nan"), float("inf"), None, None, None, None, 1, None, "e", "a", "i")]
    )
    assert frame["estimate"].to_list() == [None] and frame["std_error"].to_list() == [None]


def test_extra_key_cannot_overwrite_contract_column() -> None:
    with pytest.raises(SpecificationError, match="overwrite"):
        tidy_frame([row("t", estimate=1.0)])


def test_check_tidy_rejects_wrong_order() -> None:
    frame = tidy_frame([row("t")])
    with pytest.raises(SpecificationError, match="must start with"):
        check_tidy(frame.select("estimate", "term", *TIDY_COLUMNS[2:]))
