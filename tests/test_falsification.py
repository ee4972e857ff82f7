"""Falsification and mechanism rows beside the headline, on synth cells with a known truth.

The DGP plants θ on the Hispanic utility of state-patrol stops only (a softmax), so the Black-vs-White
log odds and the share of unknown race do not move: the placebo rows must be near zero while the
headline recovers θ; a differential pre-trend must show up in the placebo-dates row.
"""

from __future__ import annotations

import polars as pl
import pytest

from stopdisparity.models.falsification import (
    OutcomeCounts,
    falsification_table,
    outcome_counts,
    outcome_panel,
    placebo_dates_panel,
    recording_panel,
)
from stopdisparity.results import TIDY_COLUMNS
from stopdisparity.synth import SynthSpec, cells

THETA = 0.5


def trooper_cells(scenario: str, seed: int, **spec: object) -> pl.DataFrame:
    frame = cells(
        SynthSpec(scenario=scenario, design="random", n_treated=50, **spec), seed=seed, rows=3_000_000
    )
    return (
        frame.filter(pl.col("agency") == "state_patrol")
        .drop("agency", "treated")
        .with_columns(pl.col("period").cast(pl.Int64), pl.col("first_treated").cast(pl.Int64))
    )


@pytest.fixture(scope="module")
def constant() -> pl.DataFrame:
    return trooper_cells("constant", seed=7, theta=THETA)


def test_headline_recovers_theta_and_placebos_are_null(constant: pl.DataFrame) -> None:
    table = falsification_table(constant, placebo_shifts=(24,))
    assert table.columns[: len(TIDY_COLUMNS)] == list(TIDY_COLUMNS)
    by = {r["check"]: r for r in table.iter_rows(named=True)}
    assert list(by) == ["headline", "placebo_race_pair", "recording_placebo", "placebo_dates:24"]
    head = by["headline"]
    assert abs(head["estimate"] - THETA) < 3 * head["std_error"]
    assert head["p_value"] < 1e-6
    for check in ("placebo_race_pair", "recording_placebo", "placebo_dates:24"):
        row = by[check]
        assert abs(row["estimate"]) < 3.5 * row["std_error"], (check, row["estimate"], row["std_error"])
    assert "unknown race" in by["recording_placebo"]["estimand"]


def test_placebo_dates_detect_a_pretrend() -> None:
    frame = trooper_cells("pretrend", seed=3, pretrend=0.4)
    table = falsification_table(frame, placebo_shifts=(24,))
    row = table.filter(pl.col("check") == "placebo_dates:24").row(0, named=True)
    assert row["p_value"] < 0.01 and row["estimate"] > 0


def test_transforms() -> None:
    long = pl.DataFrame(
        {
            "county_fips": ["1"] * 4,
            "period": [10] * 4,
            "first_treated": [12] * 4,
            "in_force": [False] * 4,
            "race": ["hispanic", "white", "unknown", "NA"],
            "stops": [3, 5, 2, 1],
        }
    )
    rec = recording_panel(long).sort("race")
    assert rec.select("race", "stops").rows() == [("race_known", 8), ("race_unknown", 3)]
    pre = placebo_dates_panel(
        pl.DataFrame({"period": [8, 9, 10, 12], "first_treated": [11, 11, 11, 11], "in_force": [False] * 4}),
        shift=2,
    )
    assert pre["period"].to_list() == [8, 9, 10] and pre["in_force"].to_list() == [False, True, True]
    with pytest.raises(Exception, match="positive"):
        placebo_dates_panel(long, shift=0)
    by_arrest = long.with_columns(pl.Series("arrest_made", [True, False, None, False])).vstack(
        long.with_columns(pl.Series("arrest_made", [False, True, True, True]), pl.col("stops") * 10)
    )
    out = outcome_panel(by_arrest, outcome="arrest_made", focal="hispanic").sort("race")
    assert out.select("race", "stops").rows() == [("no_outcome", 30), ("outcome", 3)]
    assert outcome_counts(by_arrest, outcome="arrest_made", focal="hispanic") == OutcomeCounts(
        "arrest_made", "hispanic", 3, 30, 0
    )
    unknown = outcome_counts(by_arrest, outcome="arrest_made", focal="unknown")  # 2 stops with NA arrest
    assert unknown == OutcomeCounts("arrest_made", "unknown", 20, 0, 2) and unknown.n_stops == 22
    with pytest.raises(Exception, match="by=\\('search_conducted',\\)"):
        outcome_panel(long, outcome="search_conducted", focal="hispanic")


def test_outcome_rows_are_within_race_and_labelled_descriptive(constant: pl.DataFrame) -> None:
    # split each cell's stops into arrests, Binomial(stops, 0.2), and the rest: no effect planted
    import numpy as np

    drawn = np.random.default_rng(5).binomial(constant["stops"].to_numpy(), 0.2)
    arrests = constant.with_columns(pl.Series("stops", drawn), pl.lit(True).alias("arrest_made"))
    rest = constant.with_columns(
        (pl.col("stops") - pl.Series(drawn)).alias("stops"), pl.lit(False).alias("arrest_made")
    )
    panel = pl.concat([arrests, rest])
    table = falsification_table(constant, placebo_shifts=(), outcome_panels={"arrest_made": panel})
    row = table.filter(pl.col("check") == "outcome:arrest_made").row(0, named=True)
    assert "conditions on being stopped" in row["estimand"]
    hispanic = constant.filter(pl.col("race") == "hispanic")["stops"].sum()
    assert (row["outcome_with"], row["outcome_missing"]) == (
        int(drawn[constant["race"] == "hispanic"].sum()),
        0,
    )
    assert row["outcome_with"] + row["outcome_without"] == hispanic
    assert abs(row["estimate"]) < 3.5 * row["std_error"]
    assert table["check"].to_list() == [
        "headline",
        "placebo_race_pair",
        "recording_placebo",
        "outcome:arrest_made",
    ]


def test_outcome_row_detects_a_planted_outcome_effect(constant: pl.DataFrame) -> None:
    import numpy as np

    p = np.where(constant["in_force"].to_numpy(), 0.35, 0.2)  # arrests rise where the policy is in force
    drawn = np.random.default_rng(9).binomial(constant["stops"].to_numpy(), p)
    panel = pl.concat(
        [
            constant.with_columns(pl.Series("stops", drawn), pl.lit(True).alias("arrest_made")),
            constant.with_columns(
                (pl.col("stops") - pl.Series(drawn)).alias("stops"), pl.lit(False).alias("arrest_made")
            ),
        ]
    )
    table = falsification_table(constant, placebo_shifts=(), outcome_panels={"arrest_made": panel})
    row = table.filter(pl.col("check") == "outcome:arrest_made").row(0, named=True)
    truth = np.log(0.35 / 0.65) - np.log(0.2 / 0.8)
    assert abs(row["estimate"] - truth) < 3 * row["std_error"] and row["p_value"] < 1e-6
