"""``falsify``: the headline and its falsification rows in one call from a store (issue 5, section 4).

The store holds ``write_opp_files`` NC + SC stops (60,000; reason_for_stop as the synth writes it: NC
``"Vehicle Equipment Violation"``, SC ``"Equipment"``, ...) plus a hand-written NC file whose stops
have missing reasons and missing arrests, so that "missing is counted, not dropped" is exercised.
Every count is checked against a brute-force polars count over ``Store.scan()``.

References
----------
Knox, D., Lowe, W. & Mummolo, J. (2020). Administrative records mask racially biased policing.
American Political Science Review 114(3), 619-637. https://doi.org/10.1017/S0003055420000039
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stopdisparity.errors import SparseCellWarning, SpecificationError, StopDisparityWarning
from stopdisparity.ingest import ingest
from stopdisparity.models.did import fit_did
from stopdisparity.models.falsification import (
    FalsificationResult,
    ReasonCategory,
    falsify,
    parse_reason_categories,
)
from stopdisparity.panel import REASON_CATEGORY_COLUMN, PanelSpec, build_panel, by_columns_sql
from stopdisparity.results import TIDY_COLUMNS
from stopdisparity.store import Store, open_store
from stopdisparity.synth import SynthSpec, write_opp_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import write_opp

SHP, SCHP = "NC State Highway Patrol", "SC Highway Patrol"
SPEC = PanelSpec(agencies=(SHP, SCHP))
#: Real-looking categories: each names the state-specific spellings the synth files use.
CATEGORIES = {
    "equipment": ["Equipment", "Vehicle Equipment Violation"],
    "investigatory": ["Investigation", "Checkpoint"],
}
EXTRA_COLUMNS = {
    "raw_row_number": "string",
    "date": "date",
    "county_name": "string",
    "subject_race": "enum",
    "department_name": "string",
    "type": "enum",
    "reason_for_stop": "string",
    "arrest_made": "boolean",
    "search_conducted": "boolean",
}


def extra_stop(day: str, county: str, race: str, reason: str | None, arrest: bool | None) -> dict[str, Any]:
    return {
        "raw_row_number": None,
        "date": dt.date.fromisoformat(day),
        "county_name": county,
        "subject_race": race,
        "department_name": SHP,
        "type": "vehicular",
        "reason_for_stop": reason,
        "arrest_made": arrest,
        "search_conducted": False,
    }


#: 12 NC state-patrol stops: 5 Hispanic with no reason, 3 Hispanic with no arrest_made recorded.
EXTRA = [
    extra_stop("2009-03-02", "Wake County", "hispanic", None, False),
    extra_stop("2009-03-03", "Wake County", "hispanic", None, True),
    extra_stop("2010-07-14", "Durham County", "hispanic", None, None),
    extra_stop("2010-07-15", "Durham County", "hispanic", None, False),
    extra_stop("2011-01-20", "Mecklenburg County", "hispanic", None, False),
    extra_stop("2011-01-21", "Mecklenburg County", "hispanic", "Vehicle Equipment Violation", None),
    extra_stop("2011-01-22", "Mecklenburg County", "hispanic", "Speed Limit Violation", None),
    extra_stop("2011-01-22", "Mecklenburg County", "white", None, None),
    extra_stop("2011-01-23", "Mecklenburg County", "white", None, False),
    extra_stop("2012-05-01", "Wake County", "white", "Checkpoint", False),
    extra_stop("2012-05-02", "Wake County", "white", "Investigation", True),
    extra_stop("2012-05-03", "Wake County", "hispanic", "Investigation", False),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    raw = tmp_path_factory.mktemp("falsify_raw")
    write_opp_files(raw, SynthSpec(scenario="constant"), rows=60_000, seed=11)
    rows = [{**r, "raw_row_number": str(i + 1)} for i, r in enumerate(EXTRA)]
    write_opp(raw / "nc_extra_2020_01_01.csv", rows, EXTRA_COLUMNS)
    root = tmp_path_factory.mktemp("falsify_store")
    ingest(sorted(raw.glob("*.csv*")), root)
    return open_store(root)


@pytest.fixture(scope="module")
def result(store: Store) -> FalsificationResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StopDisparityWarning)  # sparse cells, few treated clusters
        return falsify(store, SPEC, reason_categories=CATEGORIES)


def sample_stops(store: Store) -> pl.LazyFrame:
    """The stored stops the panels keep (agency, date and county known), brute force."""
    return store.scan().filter(
        pl.col("department_name").is_in([SHP, SCHP]),
        pl.col("date").is_not_null(),
        pl.col("county_fips").is_not_null(),
    )


def in_category(values: list[str]) -> pl.Expr:
    reason = pl.col("reason_for_stop")
    return pl.when(reason.is_null()).then(None).otherwise(reason.is_in(values))


# ------------------------------------------------------------------------------- panel: the split
def test_by_columns_sql_binds_the_values_instead_of_writing_them() -> None:
    spec = PanelSpec(by=("subject_sex",), reason_category=("Equipment", "O'Brien's list"))
    sql = by_columns_sql(spec)
    assert sql == (
        '"subject_sex", CASE WHEN reason_for_stop IS NULL THEN NULL '
        'ELSE list_contains($reason_category, reason_for_stop) END AS "in_reason_category", '
    )
    assert spec.split_columns == ("subject_sex", REASON_CATEGORY_COLUMN)
    assert by_columns_sql(PanelSpec(by=("subject_sex",))) == '"subject_sex", '
    assert PanelSpec().split_columns == ()


def test_reason_category_cells_equal_a_brute_force_count(store: Store) -> None:
    values = CATEGORIES["equipment"]
    panel = build_panel(store, PanelSpec(agencies=(SHP, SCHP), period="year", reason_category=values))
    assert panel.lineage["panel_spec"]["reason_category"] == tuple(values)
    got = (
        panel.frame.filter(pl.col("stops") > 0)
        .select("county_fips", "period", "race", REASON_CATEGORY_COLUMN, "stops")
        .sort(pl.all())
    )
    expected = (
        sample_stops(store)
        .group_by(
            "county_fips",
            pl.col("date").dt.year().cast(pl.Int64).alias("period"),
            pl.col("subject_race").fill_null("NA").alias("race"),
            in_category(values).alias(REASON_CATEGORY_COLUMN),
        )
        .agg(pl.len().cast(pl.Int64).alias("stops"))
        .collect()
        .sort(pl.all())
    )
    assert_frame_equal(got, expected)
    # the test exercises the states' own spellings and missing reasons
    by_reason = sample_stops(store).group_by("reason_for_stop").len().collect()
    counts = dict(by_reason.iter_rows())
    assert counts["Equipment"] > 100 and counts["Vehicle Equipment Violation"] > 100
    assert counts[None] == 7
    totals = dict(panel.frame.group_by(REASON_CATEGORY_COLUMN).agg(pl.col("stops").sum()).iter_rows())
    assert totals[True] == counts["Equipment"] + counts["Vehicle Equipment Violation"]
    assert totals[None] == 7


def test_panel_spec_rejects_a_repeated_or_blank_reason() -> None:
    with pytest.raises(SpecificationError, match=r"\['Equipment'\] more than once"):
        PanelSpec(reason_category=("Equipment", "Equipment"))
    with pytest.raises(SpecificationError, match="non-blank"):
        PanelSpec(reason_category=("Equipment", " "))


# ----------------------------------------------------------------------------- the one call
def test_one_call_headline_equals_fit_did_on_build_panel(store: Store, result: FalsificationResult) -> None:
    panel = build_panel(store, SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StopDisparityWarning)
        direct = fit_did(panel.frame).tidy()
    assert_frame_equal(result.headline.tidy(), direct)
    table = result.tidy()
    assert table.columns[: len(TIDY_COLUMNS)] == list(TIDY_COLUMNS)
    assert_frame_equal(table.head(1).select(direct.columns), direct)
    assert table["check"].to_list() == [
        "headline",
        "placebo_race_pair",
        "recording_placebo",
        "placebo_dates:24",
        "outcome:arrest_made",
        "outcome:search_conducted",
        "outcome:reason_category=equipment",
        "outcome:reason_category=investigatory",
    ]
    assert result.reason_categories == (
        ReasonCategory("equipment", ("Equipment", "Vehicle Equipment Violation")),
        ReasonCategory("investigatory", ("Investigation", "Checkpoint")),
    )
    # lineage and sample logs: one per panel, the headline's as build_panel's
    assert list(result.lineage["panels"]) == [
        "headline",
        "arrest_made",
        "search_conducted",
        "reason_category=equipment",
        "reason_category=investigatory",
    ]
    assert result.lineage["panels"]["headline"] == panel.lineage
    assert result.sample_logs["headline"] == panel.sample_log
    eq_spec = result.lineage["panels"]["reason_category=equipment"]["panel_spec"]
    assert eq_spec["reason_category"] == ("Equipment", "Vehicle Equipment Violation")
    assert result.lineage["panels"]["arrest_made"]["panel_spec"]["by"] == ("arrest_made",)
    doc = result.to_json()
    assert len(doc["rows"]) == 8 and doc["reason_categories"]["investigatory"] == [
        "Investigation",
        "Checkpoint",
    ]


def test_outcome_rows_are_null_without_an_effect(result: FalsificationResult) -> None:
    # the synth DGP draws arrests, searches and reasons by race and agency, never by policy
    outcomes = result.tidy().filter(pl.col("check").str.starts_with("outcome:"))
    assert outcomes.height == 4
    for row in outcomes.iter_rows(named=True):
        assert abs(row["estimate"]) < 3.5 * row["std_error"], (row["check"], row["estimate"])
        assert "conditions on being stopped" in row["estimand"]
        assert "Knox, Lowe & Mummolo 2020" in row["estimand"]
    head = result.tidy().row(0, named=True)
    assert head["outcome_missing"] is None and "conditions on being stopped" not in head["estimand"]


def hispanic_counts(store: Store, value: pl.Expr) -> tuple[int, int, int]:
    """Brute-force (with, without, missing) among the sample's Hispanic stops."""
    frame = (
        sample_stops(store)
        .filter(pl.col("subject_race") == "hispanic")
        .select(value.alias("v"))
        .collect()["v"]
    )
    return int(frame.sum()), int((~frame).sum()), frame.null_count()


def test_missing_outcomes_are_counted_not_dropped(store: Store, result: FalsificationResult) -> None:
    counts = {r["check"]: r for r in result.outcome_counts().iter_rows(named=True)}
    expected = {
        "outcome:arrest_made": hispanic_counts(store, pl.col("arrest_made")),
        "outcome:search_conducted": hispanic_counts(store, pl.col("search_conducted")),
        "outcome:reason_category=equipment": hispanic_counts(store, in_category(CATEGORIES["equipment"])),
        "outcome:reason_category=investigatory": hispanic_counts(
            store, in_category(CATEGORIES["investigatory"])
        ),
    }
    assert {k: (r["n_with"], r["n_without"], r["n_missing"]) for k, r in counts.items()} == expected
    assert expected["outcome:reason_category=equipment"][2] == 5  # the hand file's Hispanic NA reasons
    assert expected["outcome:arrest_made"][2] == 3
    hispanic = (
        sample_stops(store).filter(pl.col("subject_race") == "hispanic").select(pl.len()).collect().item()
    )
    assert all(r["n_stops"] == hispanic for r in counts.values())
    # in the tidy rows and as a named sample-log step
    table = result.tidy()
    for check, (_, _, missing) in expected.items():
        row = table.filter(pl.col("check") == check).row(0, named=True)
        assert row["outcome_missing"] == missing
        label = check.removeprefix("outcome:")
        step = result.sample_logs[label].steps[-1]
        assert step.step == f"outcome_known:{label}"
        assert (step.n_before, step.n_dropped) == (hispanic, missing)


def test_placebo_shift_defaults_to_two_years_of_the_panel_period(store: Store) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StopDisparityWarning)
        out = falsify(store, PanelSpec(agencies=(SHP, SCHP), period="quarter"), outcomes=())
    assert out.tidy()["check"].to_list() == [
        "headline",
        "placebo_race_pair",
        "recording_placebo",
        "placebo_dates:8",
    ]


# --------------------------------------------------------------------------- bad specifications
@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ({"equipment": []}, "'equipment' lists no reason_for_stop values"),
        (
            {"equipment": "Equipment"},
            r"'equipment' must list reason_for_stop values \(e.g. \['Equipment'\]\)",
        ),
        ([("stop", ["Equipment"]), ("stop", ["Checkpoint"])], "name 'stop' is used more than once"),
        ({"equipment": ["Equipment", "Equipment"]}, r"'equipment' lists \['Equipment'\] more than once"),
        ({"equipment": ["Equipment", ""]}, "blank or non-string values"),
        ({"": ["Equipment"]}, "non-blank string"),
        ([("equipment",)], r"\(name, \[reason_for_stop values\]\) pair"),
    ],
)
def test_bad_reason_categories_raise(categories: Any, message: str) -> None:
    with pytest.raises(SpecificationError, match=message):
        parse_reason_categories(categories)


def test_bad_specifications_raise_before_any_panel_is_built(tmp_path: Path) -> None:
    missing_store = tmp_path / "no_store"  # never opened: the checks come first
    with pytest.raises(
        SpecificationError, match=r"boolean stop columns among \[.*'arrest_made'.*got \['arrested'\]"
    ):
        falsify(missing_store, outcomes=("arrest_made", "arrested"))
    with pytest.raises(SpecificationError, match=r"\['arrest_made'\] more than once"):
        falsify(missing_store, outcomes=("arrest_made", "arrest_made"))
    with pytest.raises(SpecificationError, match="reason_for_stop"):  # a reason is not a boolean column
        falsify(missing_store, outcomes=("reason_for_stop",))
    with pytest.raises(SpecificationError, match="lists no reason_for_stop values"):
        falsify(missing_store, reason_categories={"equipment": ()})
    with pytest.raises(SpecificationError, match="without by or reason_category"):
        falsify(missing_store, PanelSpec(by=("subject_sex",)))


def test_a_category_that_matches_nothing_says_so(store: Store) -> None:
    with (
        warnings.catch_warnings(),
        pytest.raises(SpecificationError, match=r"'reason_category=typo'.* 0 with .*check the column"),
    ):
        warnings.simplefilter("ignore", StopDisparityWarning)
        falsify(store, SPEC, outcomes=(), placebo_shifts=(), reason_categories={"typo": ["Equipmnt"]})


def test_warnings_name_the_check_they_are_about(store: Store) -> None:
    with pytest.warns(SparseCellWarning, match=r"^outcome:arrest_made: .* perfectly separated"):
        falsify(store, SPEC, outcomes=("arrest_made",), placebo_shifts=())


def test_cli_falsify_json_equals_the_api(store: Store, result: FalsificationResult, tmp_path: Path) -> None:
    """`stopdisparity falsify --json` prints the rows of the API's call on the same store and options."""
    import json

    from typer.testing import CliRunner

    from stopdisparity.cli import app

    out = tmp_path / "falsify.json"
    categories = tmp_path / "categories.json"
    categories.write_text(json.dumps({"investigatory": CATEGORIES["investigatory"]}))
    args = [
        "falsify",
        "--store",
        str(store.root),
        "--agency",
        SHP,
        "--agency",
        SCHP,
        "--json",
        "--out",
        str(out),
    ]
    args += [f"--reason-category=equipment={v}" for v in CATEGORIES["equipment"]]
    args += ["--reason-categories", str(categories)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert json.loads(out.read_text()) == doc
    rows = {r["check"]: r for r in doc["rows"]}
    expected = result.tidy()
    assert set(rows) == set(expected.get_column("check").to_list())
    for api in expected.iter_rows(named=True):
        assert rows[api["check"]]["estimate"] == pytest.approx(api["estimate"], rel=1e-12), api["check"]


def test_cli_falsify_refuses_an_unknown_outcome(store: Store) -> None:
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    run = CliRunner().invoke(app, ["falsify", "--store", str(store.root), "--outcome", "arrested"])
    assert run.exit_code == 2
    assert "arrested" in run.output
