"""Tests of stopdisparity.policy: registry validation, ICE-sheet import, TreatmentSpec and timing."""

from __future__ import annotations

import dataclasses
import importlib.util
from datetime import date
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from stopdisparity.errors import ReferenceDataError, SourceNotRegisteredError, SpecificationError
from stopdisparity.policy import (
    MODELS,
    REQUIRED_COLUMNS,
    IceImport,
    RegistryProblem,
    TreatmentSpec,
    TreatmentTiming,
    agency_key,
    agency_type_from_name,
    describe_registry,
    import_ice_sheet,
    list_policies,
    load_registry,
    make_periods,
    model_from_support_type,
    period_index,
    policy_timing_columns,
    resolve_policy,
    shipped_registry_path,
    show_agency,
    treatment_timing,
    validate_registry,
    write_registry,
)

FIXTURES = Path(__file__).parent / "fixtures" / "policy"
XLSX = FIXTURES / "ice_participating_2025.xlsx"
CSV = FIXTURES / "ice_participating_legacy.csv"


def M(year: int, month: int) -> int:
    """Month period index, written out independently of the package: year*12 + month - 1."""
    return year * 12 + month - 1


def months(first: tuple[int, int], last: tuple[int, int]) -> list[int]:
    return list(range(M(*first), M(*last) + 1))


@pytest.fixture(scope="module")
def shipped() -> pl.DataFrame:
    return load_registry()


# --------------------------------------------------------------------------------------------------
# The shipped registry
# --------------------------------------------------------------------------------------------------


def test_shipped_registry_validates_clean() -> None:
    raw = pl.read_csv(shipped_registry_path(), infer_schema=False).with_row_index("registry_row", offset=2)
    assert [str(p) for p in validate_registry(raw)] == []


def test_undated_rows_are_kept_beside_the_registry() -> None:
    # the two ICE rows without a SIGNED date cannot enter timing; they are kept, not dropped
    undated = shipped_registry_path().with_name("287g_agreements_undated.csv")
    raw = pl.read_csv(undated, infer_schema=False)
    assert raw.select("state", "county_fips", "model").rows() == [
        ("UT", "49045", "warrant_service_officer"),
        ("VA", "51031", "task_force"),
    ]
    assert raw["signed"].is_null().all()
    with pytest.raises(ReferenceDataError, match="missing signed date"):
        load_registry(undated)


def test_shipped_registry_loads_and_traces_lines(shipped: pl.DataFrame) -> None:
    assert shipped.height == 867
    assert shipped.schema["registry_row"] == pl.UInt32
    assert shipped.schema["signed"] == pl.Date and shipped.schema["ended"] == pl.Date
    assert shipped.columns[1:] == [*REQUIRED_COLUMNS, "renewal_dates", "confidence", "notes"]
    lines = shipped_registry_path().read_text(encoding="utf-8").splitlines()
    meck = shipped.filter(pl.col("county_fips") == "37119", pl.col("model") == "jail").row(0, named=True)
    assert lines[meck["registry_row"] - 1].startswith(
        "NC,Mecklenburg County Sheriff's Office,sheriff,37119,jail"
    )


# The 16 hand-entered NC/SC spells of 287g_agreements.SOURCES.md: agency, county, model, signed, ended.
NC_SC_HISTORY = [
    ("Alamance County Sheriff's Office", "37001", "jail", date(2007, 1, 10), date(2012, 9, 18)),
    ("Cabarrus County Sheriff's Office", "37025", "jail", date(2007, 8, 2), None),
    ("City of Durham Police Department", "37063", "task_force", date(2008, 2, 1), date(2012, 12, 31)),
    ("Cumberland County Sheriff's Office", "37051", "unknown", date(2008, 6, 25), None),
    ("Durham County Sheriff's Office", "37063", "unknown", date(2008, 2, 1), None),
    ("Gaston County Sheriff's Office", "37071", "jail", date(2007, 2, 22), None),
    ("Guilford County Sheriff's Office", "37081", "task_force", date(2009, 10, 15), date(2011, 9, 30)),
    ("Henderson County Sheriff's Office", "37089", "jail", date(2008, 6, 25), None),
    ("Mecklenburg County Sheriff's Office", "37119", "jail", date(2006, 2, 27), date(2018, 12, 1)),
    ("Nash County Sheriff's Office", "37127", "unknown", date(2018, 1, 1), None),
    ("Wake County Sheriff's Office", "37183", "jail", date(2008, 6, 25), date(2018, 12, 1)),
    ("Beaufort County Sheriff's Office", "45013", "task_force", date(2008, 6, 25), date(2012, 12, 31)),
    ("Charleston County Sheriff's Office", "45019", "jail", date(2009, 11, 9), date(2021, 1, 1)),
    ("Horry County Sheriff's Office", "45051", "jail", date(2017, 6, 30), None),
    ("Lexington County Sheriff's Office", "45063", "jail", date(2010, 8, 19), None),
    ("York County Sheriff's Office", "45091", "jail", date(2007, 10, 16), None),
]


def test_shipped_registry_has_the_nc_sc_history(shipped: pl.DataFrame) -> None:
    history = (
        shipped.filter(pl.col("state").is_in(["NC", "SC"]), pl.col("signed") < date(2019, 1, 1))
        .select("agency", "county_fips", "model", "signed", "ended")
        .sort("county_fips", "agency")
    )
    assert history.rows() == sorted(NC_SC_HISTORY, key=lambda r: (r[1], r[0]))


def test_shipped_registry_vocabularies(shipped: pl.DataFrame) -> None:
    assert set(shipped["model"]) == set(MODELS)
    assert set(shipped["agency_type"]) == {"sheriff", "police", "corrections", "state", "other"}
    assert set(shipped["confidence"]) == {"high", "medium", "low"}


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

HEADER = (
    "state,agency,agency_type,county_fips,model,signed,ended,end_basis,source,renewal_dates,confidence,notes"
)
SRC = "src"
BERKELEY = "SC,Berkeley County Sheriff's Office,sheriff,45015"

BAD_ROWS = [
    # line 2: valid
    f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,2018-12-01,press,{SRC},,high,",
    # line 3: FIPS not 5 digits
    f"NC,Gaston County Sheriff's Office,sheriff,3707,jail,2007-02-22,,x,{SRC},,high,",
    # line 4: a county of another state (Mecklenburg NC under SC)
    f"SC,Mecklenburg County Sheriff's Office,sheriff,37119,jail,2006-02-27,,x,{SRC},,high,",
    # line 5: bad signed date
    f"NC,Cabarrus County Sheriff's Office,sheriff,37025,jail,08/02/2007,,x,{SRC},,high,",
    # line 6: ended before signed
    f"NC,Alamance County Sheriff's Office,sheriff,37001,jail,2012-09-18,2007-01-10,x,{SRC},,high,",
    # line 7: unknown model
    f"NC,Henderson County Sheriff's Office,sheriff,37089,jale,2008-06-25,,x,{SRC},,high,",
    # line 8: unknown agency type
    f"NC,Durham Police Department,city police,37063,task_force,2008-02-01,2012-12-31,x,{SRC},,high,",
    # line 9: bad confidence
    f"NC,Guilford County Sheriff's Office,sheriff,37081,task_force,2009-10-15,2011-09-30,x,{SRC},,sure,",
    # line 10: missing source
    "NC,Union County Sheriff's Office,sheriff,37179,warrant_service_officer,2025-05-07,,x,,,high,",
    # line 11: exact duplicate of line 2
    f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,2018-12-01,press,{SRC},,high,",
    # line 12: overlaps line 2 (same agency, model, county; name spelled differently)
    f"NC,WAKE COUNTY SHERIFFS OFFICE,sheriff,37183,jail,2015-01-01,,x,{SRC},,high,",
    # line 13: missing signed date
    f"SC,York County Sheriff's Office,sheriff,45091,jail,,,x,{SRC},,high,",
    # line 14: unknown state
    f"XX,Nowhere Sheriff's Office,sheriff,,jail,2010-01-01,,x,{SRC},,high,",
    # line 15: bad renewal date
    f"SC,Lexington County Sheriff's Office,sheriff,45063,jail,2010-08-19,,x,{SRC},2013-6-28,high,",
    # line 16: ended the day it was signed
    f"SC,Horry County Sheriff's Office,sheriff,45051,jail,2017-06-30,2017-06-30,x,{SRC},,high,",
]

EXPECTED_PROBLEMS = [
    (3, "county_fips", "county_fips is not 5 digits", "3707"),
    (4, "county_fips", "unknown FIPS: not a county of SC (Census 2016)", "37119"),
    (5, "signed", "bad signed date (need YYYY-MM-DD)", "08/02/2007"),
    (6, "ended", "ended before signed (2012-09-18)", "2007-01-10"),
    (7, "model", "unknown model (allowed: jail, task_force, warrant_service_officer, unknown)", "jale"),
    (
        8,
        "agency_type",
        "unknown agency_type (allowed: sheriff, police, corrections, state, other)",
        "city police",
    ),
    (9, "confidence", "bad confidence (allowed: high, medium, low, empty)", "sure"),
    (10, "source", "missing source", None),
    (11, None, "exact duplicate of line 2", None),
    (12, None, "overlaps line 2 (2008-06-25..2018-12-01): same agency and model in the same county", None),
    (13, "signed", "missing signed date", None),
    (14, "state", "unknown state (allowed: 2-letter postal codes)", "XX"),
    (15, "renewal_dates", "bad renewal date (need YYYY-MM-DD; ...)", "2013-6-28"),
    (16, "ended", "ended on the day signed (empty spell) (2017-06-30)", "2017-06-30"),
]


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "policy.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_each_problem_names_its_line_column_and_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path, BAD_ROWS)
    raw = pl.read_csv(path, infer_schema=False)
    got = [(p.row, p.column, p.problem, p.value) for p in validate_registry(raw)]
    assert got == EXPECTED_PROBLEMS


def test_load_registry_strict_raises_listing_every_problem(tmp_path: Path) -> None:
    path = write_csv(tmp_path, BAD_ROWS)
    with pytest.raises(ReferenceDataError) as info:
        load_registry(path)
    message = str(info.value)
    assert "14 problem(s)" in message
    assert "line 7, column model: unknown model" in message and "'jale'" in message
    assert "line 12: overlaps line 2" in message
    assert "more" not in message  # 14 < 20: nothing elided


def test_load_registry_not_strict_returns_rows_with_null_bad_dates(tmp_path: Path) -> None:
    frame = load_registry(write_csv(tmp_path, BAD_ROWS), strict=False)
    assert frame.height == 15
    assert frame.filter(pl.col("registry_row") == 5)["signed"].to_list() == [None]
    assert frame.filter(pl.col("registry_row") == 2)["signed"].to_list() == [date(2008, 6, 25)]


def test_more_than_twenty_problems_are_counted_not_all_listed(tmp_path: Path) -> None:
    rows = [f"NC,Agency {i},sheriff,37183,jale,2008-06-25,,x,{SRC},,high," for i in range(25)]
    with pytest.raises(ReferenceDataError) as info:
        load_registry(write_csv(tmp_path, rows))
    message = str(info.value)
    assert "25 problem(s)" in message
    assert "line 21, column model" in message and "line 22, column model" not in message
    assert message.endswith("... and 5 more")


def test_missing_required_column_is_a_problem_and_always_raises(tmp_path: Path) -> None:
    header = HEADER.replace("source,", "")
    row = "NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,,x,,high,"
    path = write_csv(tmp_path, [row], header=header)
    problems = validate_registry(pl.read_csv(path, infer_schema=False))
    assert [(p.row, p.column) for p in problems] == [(None, "source")]
    assert problems[0].problem.startswith("missing required column")
    for strict in (True, False):
        with pytest.raises(ReferenceDataError, match="column source: missing required column"):
            load_registry(path, strict=strict)


def test_one_agency_with_several_models_at_once_is_valid(tmp_path: Path) -> None:
    rows = [
        f"{BERKELEY},task_force,2025-05-08,,x,{SRC},,high,",
        f"{BERKELEY},warrant_service_officer,2025-05-08,,x,{SRC},,high,",
        f"{BERKELEY},jail,2010-01-01,2025-05-08,x,{SRC},,high,",
        # consecutive spells of one model: the second is signed the day the first ends
        f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,2012-01-01,x,{SRC},,high,",
        f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2012-01-01,,x,{SRC},,high,",
        # two agencies, same model, same county, same time
        f"NC,Durham County Sheriff's Office,sheriff,37063,task_force,2008-02-01,,x,{SRC},,high,",
        f"NC,City of Durham Police Department,police,37063,task_force,2008-02-01,,x,{SRC},,high,",
        # former FIPS code of Oglala Lakota (Shannon County) is accepted
        f"SD,Shannon County Sheriff's Office,sheriff,46113,jail,2010-01-01,,x,{SRC},,,",
    ]
    assert validate_registry(pl.read_csv(write_csv(tmp_path, rows), infer_schema=False)) == []


def test_overlap_of_same_agency_and_model_is_flagged_open_ended_too(tmp_path: Path) -> None:
    rows = [
        f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,,x,{SRC},,high,",
        f"NC,Wake Co. Sheriff's Office,sheriff,37183,jail,2020-01-01,2021-01-01,x,{SRC},,high,",
        f"NC,Kenneth Police Department,police,,task_force,2020-01-01,,x,{SRC},,high,",
        f"NC,Kenneth Police Department,police,,task_force,2021-01-01,,x,{SRC},,high,",
    ]
    problems = validate_registry(pl.read_csv(write_csv(tmp_path, rows), infer_schema=False))
    assert [(p.row, p.problem) for p in problems] == [
        (3, "overlaps line 2 (2008-06-25..open): same agency and model in the same county"),
        (5, "overlaps line 4 (2020-01-01..open): same agency and model in the same county"),
    ]


def test_validate_accepts_a_loaded_frame_and_problem_str(shipped: pl.DataFrame) -> None:
    nc = shipped.filter(pl.col("state") == "NC")
    assert validate_registry(nc) == []
    problem = RegistryProblem(7, "model", "unknown model", "jale")
    assert str(problem) == "line 7, column model: unknown model (got 'jale')"
    assert str(RegistryProblem(None, "source", "missing required column", None)) == (
        "file, column source: missing required column"
    )
    with pytest.raises(SpecificationError, match="polars DataFrame"):
        validate_registry("not a frame")  # type: ignore[arg-type]


def test_load_registry_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReferenceDataError, match="cannot be opened"):
        load_registry(tmp_path / "nope.csv")


def test_agency_key() -> None:
    assert agency_key("Mecklenburg County Sheriff's Office") == "mecklenburgcountysheriffsoffice"
    assert agency_key("MECKLENBURG CO. SHERIFFS OFFICE") == "mecklenburgcountysheriffsoffice"
    assert agency_key("Mecklenburg County Sheriff\u2019s Office") == "mecklenburgcountysheriffsoffice"
    assert agency_key("Durham PD") == agency_key("Durham Police Dept.") == "durhampolicedepartment"
    assert agency_key("City of Durham Police Department") == "citydurhampolicedepartment"
    with pytest.raises(SpecificationError):
        agency_key(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# CLI support
# --------------------------------------------------------------------------------------------------


def test_list_and_resolve_policies(tmp_path: Path) -> None:
    listed = list_policies()
    assert listed.columns == ["name", "description", "path", "rows"]
    assert listed["name"].to_list() == ["287g"]
    assert listed["rows"].to_list() == [867]
    assert resolve_policy("287g") == shipped_registry_path()
    path = write_csv(tmp_path, [BAD_ROWS[0]])
    assert resolve_policy(path) == path
    assert resolve_policy(str(path)) == path
    with pytest.raises(SourceNotRegisteredError, match="'secure_communities'"):
        resolve_policy("secure_communities")


def test_describe_registry(tmp_path: Path) -> None:
    rows = [
        f"{BERKELEY},task_force,2025-05-08,,x,{SRC},,high,",
        f"{BERKELEY},warrant_service_officer,2025-05-08,,x,{SRC},,high,",
        f"SC,Chester County Sheriff's Office,sheriff,45023,task_force,2025-06-12,,x,{SRC},,high,",
        f"SC,Coward Police Department,police,,task_force,2025-06-13,,x,{SRC},,high,",
        f"NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-06-25,2018-12-01,x,{SRC},,high,",
    ]
    got = describe_registry(load_registry(write_csv(tmp_path, rows)))
    assert got.columns == ["state", "model", "agency_type", "agreements", "agencies", "counties", "open"]
    assert got.rows() == [
        ("NC", "jail", "sheriff", 1, 1, 1, 0),
        ("SC", "task_force", "police", 1, 1, 0, 1),
        ("SC", "task_force", "sheriff", 2, 2, 2, 2),
        ("SC", "warrant_service_officer", "sheriff", 1, 1, 1, 1),
    ]


def test_show_agency(shipped: pl.DataFrame) -> None:
    meck = show_agency(shipped, "mecklenburg county sheriffs")
    assert meck.select("state", "county_fips", "model", "signed", "ended").rows() == [
        ("NC", "37119", "jail", date(2006, 2, 27), date(2018, 12, 1)),
        ("VA", "51117", "task_force", date(2025, 5, 13), None),
    ]
    alamance = show_agency(shipped, "37001")
    assert alamance.select("model", "signed", "ended").rows() == [
        ("jail", date(2007, 1, 10), date(2012, 9, 18)),
        ("warrant_service_officer", date(2020, 5, 21), None),
    ]
    assert show_agency(shipped, "no such agency anywhere").height == 0
    with pytest.raises(SpecificationError, match="non-empty"):
        show_agency(shipped, " '. ")


# --------------------------------------------------------------------------------------------------
# ICE sheet import
# --------------------------------------------------------------------------------------------------

XLSX_LABEL = "ice_participating_2025.xlsx [sheet Participating Agencies]"

# state, agency, agency_type, county_fips, model, signed, notes
XLSX_EXPECTED = [
    (
        "NC",
        "Mc Dowell County Sheriff's Office",
        "sheriff",
        "37111",
        "warrant_service_officer",
        date(2025, 5, 8),
        None,
    ),
    ("NC", "McDowell County Sheriff's Office", "sheriff", "37111", "jail", date(2020, 6, 9), None),
    ("MD", "St. Mary's County Sheriff's Office", "sheriff", "24037", "task_force", date(2025, 3, 26), None),
    ("LA", "Ouachita Parish Sheriff's Office", "sheriff", "22073", "jail", date(2020, 6, 8), None),
    ("VA", "Virginia Beach Sheriff's Office", "sheriff", "51810", "jail", date(2020, 6, 8), None),
    ("FL", "Kenneth City Police Department", "police", None, "task_force", date(2025, 2, 28), None),
    ("FL", "Florida Department of Law Enforcement", "state", None, "task_force", date(2025, 2, 14), None),
    (
        "FL",
        "Jackson County Correctional Facility",
        "corrections",
        "12063",
        "warrant_service_officer",
        date(2025, 2, 26),
        None,
    ),
    (
        "NC",
        "Burke County Sheriff's Office",
        "sheriff",
        "37023",
        "warrant_service_officer",
        date(2025, 3, 10),
        "county taken from the agency name (Burke)",
    ),
    (
        "SC",
        "Berkeley County Sheriff's Office",
        "sheriff",
        "45015",
        "unknown",
        date(2025, 5, 8),
        "ICE support type 'Detention Support Model'",
    ),
    (
        "FL",
        "University of West Florida Board of Trustees",
        "state",
        None,
        "task_force",
        date(2025, 4, 15),
        None,
    ),
]
XLSX_SHEET_ROWS = [5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 19]

# sheet_row, reason, imported
XLSX_UNRESOLVED = [
    (14, "county 'Lampass County' not resolved in TX: no county of that name in state", False),
    (
        15,
        "support type 'Detention Support Model' is not a known 287(g) model; imported with model 'unknown'",
        True,
    ),
    (16, "unknown state 'NORTH CAROLNA'", False),
    (17, "unreadable signed date 'TBD' (expected MM/DD/YYYY, YYYY-MM-DD or an Excel serial)", False),
    (18, "same agency and model as row 6; not imported (overlapping spell)", False),
    (21, "no agency name (a note or total row?)", False),
]

CSV_EXPECTED = [
    (
        "NC",
        "Alamance County Sheriff's Office",
        "sheriff",
        "37001",
        "warrant_service_officer",
        date(2020, 5, 21),
        None,
    ),
    (
        "SC",
        "Charleston County Sheriff's Office",
        "sheriff",
        "45019",
        "warrant_service_officer",
        date(2025, 3, 10),
        None,
    ),
    ("SC", "York County Sheriff's Office", "sheriff", "45091", "jail", date(2020, 6, 9), None),
    ("NC", "Mc Dowell County Sheriff's Office", "sheriff", "37111", "task_force", date(2025, 3, 5), None),
    ("MD", "St Marys County Sheriffs Office", "sheriff", "24037", "jail", date(2020, 6, 26), None),
    ("LA", "East Baton Rouge Parish Sheriff's Office", "sheriff", "22033", "jail", date(2020, 6, 9), None),
    ("VA", "Richmond City Sheriff's Office", "sheriff", "51760", "jail", date(2020, 6, 9), None),
    (
        "VA",
        "Richmond County Sheriff's Office",
        "sheriff",
        "51159",
        "warrant_service_officer",
        date(2020, 6, 9),
        None,
    ),
    ("NC", "Durham Police Department", "police", None, "task_force", date(2008, 2, 1), None),
    (
        "NC",
        "Nash County Sheriff's Office",
        "sheriff",
        "37127",
        "unknown",
        date(2020, 1, 29),
        "ICE support type '287(g) Pilot'",
    ),
    ("TX", "Texas Department of Public Safety", "state", None, "task_force", date(2025, 2, 20), None),
    (
        "NC",
        "Albemarle District Jail",
        "corrections",
        None,
        "warrant_service_officer",
        date(2020, 3, 19),
        None,
    ),
    (
        "NC",
        "Wake County Sheriff's Office",
        "sheriff",
        "37183",
        "jail",
        date(2008, 6, 25),
        "county taken from the agency name (Wake)",
    ),
]

CSV_UNRESOLVED = [
    (14, "support type '287(g) Pilot' is not a known 287(g) model; imported with model 'unknown'", True),
    (15, "county 'Bogus' not resolved in NC: no county of that name in state", False),
    (16, "missing signed date", False),
    (20, "unreadable signed date '13/45/2020' (expected MM/DD/YYYY, YYYY-MM-DD or an Excel serial)", False),
]

ROW_COLUMNS = ["state", "agency", "agency_type", "county_fips", "model", "signed", "notes"]


def test_import_xlsx_finds_header_below_title_rows_and_reads_every_variant() -> None:
    got = import_ice_sheet(XLSX)
    assert isinstance(got, IceImport)
    assert got.header_row == 4
    assert got.source == XLSX_LABEL
    assert got.rows.columns == [*REQUIRED_COLUMNS, "renewal_dates", "confidence", "notes"]
    assert got.rows.schema["signed"] == pl.Date and got.rows.schema["ended"] == pl.Date
    assert got.rows.select(ROW_COLUMNS).rows() == XLSX_EXPECTED
    assert got.rows["source"].to_list() == [
        f"ICE 287(g) participating-agencies sheet {XLSX_LABEL}, row {r}" for r in XLSX_SHEET_ROWS
    ]
    assert set(got.rows["confidence"]) == {"high"}
    assert got.rows["ended"].null_count() == got.rows.height
    assert set(got.rows["end_basis"]) == {f"listed on ICE sheet {XLSX_LABEL}"}
    assert got.unresolved.select("sheet_row", "reason", "imported").rows() == XLSX_UNRESOLVED
    # the cells are listed as read, so a person can fix the sheet
    lampass = got.unresolved.row(0, named=True)
    assert (lampass["state"], lampass["agency"], lampass["county"], lampass["signed"]) == (
        "TEXAS",
        "Lampass County Sheriff's Office",
        "Lampass County",
        "45762",
    )
    assert validate_registry(got.rows) == []


def test_import_every_sheet_row_is_imported_or_listed() -> None:
    for path, data_rows in ((XLSX, set(range(5, 20)) | {21}), (CSV, set(range(5, 21)))):
        got = import_ice_sheet(path)
        imported = {int(s.rsplit("row ", 1)[1]) for s in got.rows["source"]}
        listed = set(got.unresolved.filter(~pl.col("imported"))["sheet_row"])
        assert imported | listed == data_rows
        assert not imported & listed


def test_import_xlsx_second_sheet_by_name_or_index() -> None:
    for sheet in ("Pending", 1):
        got = import_ice_sheet(XLSX, sheet=sheet, confidence="medium")
        assert got.header_row == 1
        assert got.source == "ice_participating_2025.xlsx [sheet Pending]"
        assert got.rows.select(ROW_COLUMNS).rows() == [
            ("TN", "Knox County Sheriff's Office", "sheriff", "47093", "jail", date(2025, 7, 1), None)
        ]
        assert got.rows["confidence"].to_list() == ["medium"]
        assert got.unresolved.height == 0
    with pytest.raises(SpecificationError, match="Pending"):
        import_ice_sheet(XLSX, sheet="Nope")


def test_import_csv_with_variant_header_and_type_as_support_type() -> None:
    got = import_ice_sheet(CSV)
    assert got.header_row == 4
    assert got.source == "ice_participating_legacy.csv"
    assert got.rows.select(ROW_COLUMNS).rows() == CSV_EXPECTED
    assert got.unresolved.select("sheet_row", "reason", "imported").rows() == CSV_UNRESOLVED
    assert validate_registry(got.rows) == []


def test_imported_rows_round_trip_through_a_policy_file(tmp_path: Path) -> None:
    rows = import_ice_sheet(CSV).rows
    path = write_registry(rows, tmp_path / "imported.csv")
    loaded = load_registry(path)  # strict: must validate
    assert loaded.drop("registry_row").rows() == rows.rows()
    assert loaded["registry_row"].to_list() == list(range(2, 2 + rows.height))


def test_import_errors(tmp_path: Path) -> None:
    no_header = tmp_path / "no_header.csv"
    no_header.write_text("Participating agencies\nNC,Wake County Sheriff's Office,Jail Enforcement Model\n")
    with pytest.raises(ReferenceDataError, match="no header row"):
        import_ice_sheet(no_header)
    xls = tmp_path / "old.xls"
    xls.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(SpecificationError, match=r"\.xlsx or \.csv"):
        import_ice_sheet(xls)
    with pytest.raises(SpecificationError, match="xlsx workbooks only"):
        import_ice_sheet(CSV, sheet="Sheet1")
    with pytest.raises(SpecificationError, match="confidence"):
        import_ice_sheet(CSV, confidence="certain")
    with pytest.raises(ReferenceDataError, match="does not exist"):
        import_ice_sheet(tmp_path / "missing.xlsx")


def test_import_cp1252_csv(tmp_path: Path) -> None:
    path = tmp_path / "cp1252.csv"
    text = "STATE,AGENCY,SUPPORT TYPE,SIGNED\r\nNC,Wake County Sheriff\u2019s Office,JEM,6/25/2008\r\n"
    path.write_bytes(text.encode("cp1252"))
    got = import_ice_sheet(path)
    assert got.header_row == 1
    assert got.rows.select(ROW_COLUMNS).rows() == [
        (
            "NC",
            "Wake County Sheriff's Office",
            "sheriff",
            "37183",
            "jail",
            date(2008, 6, 25),
            "county taken from the agency name (Wake)",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("Jail Enforcement Model", "jail"),
        ("  jail enforcement model ", "jail"),
        ("JEM", "jail"),
        ("Task Force Model", "task_force"),
        ("TFM", "task_force"),
        ("Warrant Service Officer", "warrant_service_officer"),
        ("Warrant Service Officer (WSO)", "warrant_service_officer"),
        ("Jail Enforcement Model / Task Force Model", "unknown"),
        ("Hybrid", "unknown"),
        ("", "unknown"),
    ],
)
def test_model_from_support_type(text: str, model: str) -> None:
    assert model_from_support_type(text) == model


@pytest.mark.parametrize(
    ("name", "state", "jurisdiction", "expected"),
    [
        ("Mecklenburg County Sheriff's Office", "NC", None, "sheriff"),
        ("Jacksonville Sheriff's Office", "FL", "County", "sheriff"),
        ("City of Durham Police Department", "NC", None, "police"),
        ("Florida Gulf Coast University Police Department", "FL", "State Agency", "police"),
        ("Jackson County Correctional Facility", "FL", None, "corrections"),
        ("Albemarle District Jail", "NC", None, "corrections"),
        ("Bullitt County Detention Center", "KY", None, "corrections"),
        ("Florida Department of Corrections", "FL", "State Agency", "corrections"),
        ("Texas Department of Public Safety", "TX", None, "state"),
        ("Louisiana State Patrol", "LA", None, "state"),
        ("Missouri Highway Patrol", "MO", None, "state"),
        ("Florida National Guard", "FL", "State Agency", "state"),
        ("Gulf County Board of County Commissioners", "FL", "County", "other"),
        ("Luzerne County District Attorney's Office", "PA", None, "other"),
    ],
)
def test_agency_type_from_name(name: str, state: str, jurisdiction: str | None, expected: str) -> None:
    assert agency_type_from_name(name, state=state, jurisdiction=jurisdiction) == expected


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_ice_fixtures", FIXTURES / "make_ice_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixture_generator_reproduces_the_committed_fixtures(tmp_path: Path) -> None:
    xlsx, csv_path = _load_generator().build(tmp_path)
    assert csv_path.read_bytes() == CSV.read_bytes()
    for sheet in ("Participating Agencies", "Pending"):
        fresh = openpyxl.load_workbook(xlsx)[sheet]
        committed = openpyxl.load_workbook(XLSX)[sheet]
        assert list(fresh.iter_rows(values_only=True)) == list(committed.iter_rows(values_only=True))


# --------------------------------------------------------------------------------------------------
# TreatmentSpec
# --------------------------------------------------------------------------------------------------


def test_spec_defaults_count_everything() -> None:
    spec = TreatmentSpec()
    assert spec.models == ("jail", "task_force", "warrant_service_officer")
    assert spec.agency_types == ("sheriff", "police", "corrections", "state", "other")
    assert (spec.min_confidence, spec.unknown_model, spec.exit, spec.mid_period) == (
        "low",
        "treat_as_jail",
        "in_force",
        "first_day",
    )
    assert (spec.start_lag, spec.anticipation, spec.exclude_agencies, spec.only_agencies) == (0, 0, (), None)
    assert spec.to_dict()["models"] == ["jail", "task_force", "warrant_service_officer"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.exit = "absorbing"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TreatmentSpec("jail")  # type: ignore[misc]  # keyword-only


def test_spec_normalises_sequences() -> None:
    spec = TreatmentSpec(
        models=["warrant_service_officer", "jail"], agency_types="sheriff", only_agencies=["X"]
    )
    assert spec.models == ("jail", "warrant_service_officer")
    assert spec.agency_types == ("sheriff",)
    assert spec.only_agencies == ("X",)
    assert TreatmentSpec(models=("jail", "task_force")) == TreatmentSpec(models=["task_force", "jail"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"models": ("jail", "jale")},
            "models must hold values in ['jail', 'task_force', 'warrant_service_officer']; got ['jale']",
        ),
        ({"models": ("unknown",)}, "governed by unknown_model"),
        ({"models": ()}, "models must not be empty"),
        ({"agency_types": ("sheriffs",)}, "got ['sheriffs']"),
        (
            {"min_confidence": "certain"},
            "min_confidence must be one of ['low', 'medium', 'high']; got 'certain'",
        ),
        (
            {"unknown_model": "drop"},
            "unknown_model must be one of "
            "['treat_as_jail', 'exclude_county', 'treat_as_control']; got 'drop'",
        ),
        ({"exit": "absorb"}, "exit must be one of ['in_force', 'absorbing', 'censor']; got 'absorb'"),
        (
            {"mid_period": "last_day"},
            "mid_period must be one of ['first_day', 'any_day', 'majority']; got 'last_day'",
        ),
        ({"start_lag": -1}, "start_lag must be an integer >= 0 (periods); got -1"),
        ({"start_lag": 1.5}, "got 1.5"),
        ({"anticipation": True}, "anticipation must be an integer >= 0 (periods); got True"),
        ({"only_agencies": ()}, "only_agencies must be None or name at least one agency"),
        ({"exclude_agencies": ("...",)}, "without letters or digits: '...'"),
        ({"exclude_agencies": (1,)}, "must be a sequence of strings"),
    ],
)
def test_spec_rejects_bad_values_quoting_them(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecificationError) as info:
        TreatmentSpec(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------

A, B, C, D = "37001", "37025", "37063", "37119"  # Alamance, Cabarrus, Durham, Mecklenburg


def reg(*rows: tuple) -> pl.DataFrame:  # type: ignore[type-arg]
    """Registry rows: (county_fips, agency, model, signed, ended[, agency_type[, confidence]])."""
    records = []
    for i, r in enumerate(rows):
        fips, agency, model, signed, ended = r[:5]
        agency_type = r[5] if len(r) > 5 else "sheriff"
        confidence = r[6] if len(r) > 6 else "high"
        records.append(
            {
                "registry_row": 100 + i,
                "state": "NC",
                "agency": agency,
                "agency_type": agency_type,
                "county_fips": fips,
                "model": model,
                "signed": signed,
                "ended": ended,
                "confidence": confidence,
            }
        )
    return pl.DataFrame(
        records,
        schema={
            "registry_row": pl.UInt32,
            "state": pl.String,
            "agency": pl.String,
            "agency_type": pl.String,
            "county_fips": pl.String,
            "model": pl.String,
            "signed": pl.Date,
            "ended": pl.Date,
            "confidence": pl.String,
        },
    )


MONTHS_2010_2013 = make_periods(date(2010, 1, 1), date(2013, 12, 31), freq="month")


def timing(
    registry: pl.DataFrame,
    counties: list[str] | None = None,
    periods: pl.DataFrame = MONTHS_2010_2013,
    **spec: object,
) -> TreatmentTiming:
    return treatment_timing(registry, TreatmentSpec(**spec), periods, counties=counties or [A, B, C, D])  # type: ignore[arg-type]


def on(t: TreatmentTiming, county: str) -> list[int]:
    return t.frame.filter(pl.col("county_fips") == county, pl.col("in_force"))["period"].to_list()


def first(t: TreatmentTiming, county: str) -> int:
    values = t.frame.filter(pl.col("county_fips") == county)["first_treated"].unique().to_list()
    assert len(values) == 1
    return values[0]


def test_make_periods_and_period_index() -> None:
    p = make_periods(date(2010, 11, 15), date(2011, 2, 1), freq="month")
    assert p.rows() == [
        (24130, date(2010, 11, 1), date(2010, 12, 1)),
        (24131, date(2010, 12, 1), date(2011, 1, 1)),
        (24132, date(2011, 1, 1), date(2011, 2, 1)),
        (24133, date(2011, 2, 1), date(2011, 3, 1)),
    ]
    q = make_periods(date(2010, 2, 1), date(2010, 8, 1), freq="quarter")
    assert q.rows() == [
        (8040, date(2010, 1, 1), date(2010, 4, 1)),
        (8041, date(2010, 4, 1), date(2010, 7, 1)),
        (8042, date(2010, 7, 1), date(2010, 10, 1)),
    ]
    assert make_periods(date(2010, 6, 1), date(2011, 6, 1), freq="year").rows() == [
        (2010, date(2010, 1, 1), date(2011, 1, 1)),
        (2011, date(2011, 1, 1), date(2012, 1, 1)),
    ]
    assert period_index(date(2006, 2, 27), "month") == 24073
    with pytest.raises(SpecificationError, match="freq must be one of"):
        make_periods(date(2010, 1, 1), date(2011, 1, 1), freq="week")  # type: ignore[arg-type]


def test_frame_shape_columns_and_never_treated() -> None:
    t = timing(reg((D, "Mecklenburg County Sheriff's Office", "jail", date(2011, 3, 1), None)))
    assert t.frame.columns == ["county_fips", "period", "in_force", "first_treated", "rel_period", "censored"]
    assert t.frame.schema == pl.Schema(
        {
            "county_fips": pl.String,
            "period": pl.Int64,
            "in_force": pl.Boolean,
            "first_treated": pl.Int64,
            "rel_period": pl.Int64,
            "censored": pl.Boolean,
        }
    )
    assert t.frame.height == 4 * 48
    never = t.frame.filter(pl.col("county_fips") == A)
    assert never["first_treated"].unique().to_list() == [0]
    assert never["rel_period"].null_count() == 48
    assert not never["in_force"].any()
    meck = t.frame.filter(pl.col("county_fips") == D)
    assert first(t, D) == M(2011, 3) == 24134
    assert meck.filter(pl.col("period") == M(2011, 1))["rel_period"].to_list() == [-2]
    assert meck.filter(pl.col("period") == M(2013, 12))["rel_period"].to_list() == [33]
    assert not t.frame["censored"].any()


# Signed on the 1st, 2nd, 16th and 17th of March 2010 (31 days), never ended.
BOUNDARY = reg(
    (A, "Alamance County Sheriff's Office", "jail", date(2010, 3, 1), None),
    (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 3, 2), None),
    (C, "Durham County Sheriff's Office", "jail", date(2010, 3, 16), None),  # 16 of 31 days: majority
    (D, "Mecklenburg County Sheriff's Office", "jail", date(2010, 3, 17), None),  # 15 of 31 days: not
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("first_day", {A: M(2010, 3), B: M(2010, 4), C: M(2010, 4), D: M(2010, 4)}),
        ("any_day", {A: M(2010, 3), B: M(2010, 3), C: M(2010, 3), D: M(2010, 3)}),
        ("majority", {A: M(2010, 3), B: M(2010, 3), C: M(2010, 3), D: M(2010, 4)}),
    ],
)
def test_adoption_at_month_boundaries(rule: str, expected: dict[str, int]) -> None:
    t = timing(BOUNDARY, mid_period=rule)
    assert {c: first(t, c) for c in (A, B, C, D)} == expected
    for c in (A, B, C, D):
        start = (expected[c] // 12, expected[c] % 12 + 1)
        assert on(t, c) == months(start, (2013, 12))


# Signed 2010-01-01; ended 1st, 15th (14 of 30 days) and 18th (17 of 30 days) of September 2012.
ENDINGS = reg(
    (A, "Alamance County Sheriff's Office", "jail", date(2010, 1, 1), date(2012, 9, 18)),
    (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 1, 1), date(2012, 9, 15)),
    (C, "Durham County Sheriff's Office", "jail", date(2010, 1, 1), date(2012, 9, 1)),
)


@pytest.mark.parametrize(
    ("rule", "last_month"),
    [
        ("first_day", {A: (2012, 9), B: (2012, 9), C: (2012, 8)}),
        ("any_day", {A: (2012, 9), B: (2012, 9), C: (2012, 8)}),
        ("majority", {A: (2012, 9), B: (2012, 8), C: (2012, 8)}),
    ],
)
def test_ended_mid_month(rule: str, last_month: dict[str, tuple[int, int]]) -> None:
    t = timing(ENDINGS, mid_period=rule)
    for county, last in last_month.items():
        assert on(t, county) == months((2010, 1), last), county
        assert first(t, county) == M(2010, 1)


SWITCHER = reg(
    (D, "Mecklenburg County Sheriff's Office", "jail", date(2010, 1, 1), date(2011, 1, 1)),
    (D, "Mecklenburg County Sheriff's Office", "jail", date(2012, 1, 1), None),
)


def test_switch_off_and_back_on_under_each_exit_rule() -> None:
    in_force = timing(SWITCHER)
    assert on(in_force, D) == months((2010, 1), (2010, 12)) + months((2012, 1), (2013, 12))
    assert first(in_force, D) == M(2010, 1)
    assert not in_force.frame["censored"].any()

    absorbing = timing(SWITCHER, exit="absorbing")
    assert on(absorbing, D) == months((2010, 1), (2013, 12))
    assert first(absorbing, D) == M(2010, 1)

    censor = timing(SWITCHER, exit="censor")
    meck = censor.frame.filter(pl.col("county_fips") == D)
    assert meck.filter(pl.col("censored"))["period"].to_list() == months((2011, 1), (2013, 12))
    assert on(censor, D) == on(in_force, D)  # in_force keeps the true status
    assert first(censor, D) == M(2010, 1)
    assert not censor.frame.filter(pl.col("county_fips") != D)["censored"].any()


def test_several_agencies_and_models_in_one_county_are_united() -> None:
    registry = reg(
        (C, "Durham County Sheriff's Office", "jail", date(2010, 1, 15), date(2011, 6, 10)),
        (C, "City of Durham Police Department", "task_force", date(2011, 5, 1), date(2012, 2, 1), "police"),
        (C, "Durham County Sheriff's Office", "warrant_service_officer", date(2013, 3, 1), None),
    )
    t = timing(registry)
    assert on(t, C) == months((2010, 2), (2012, 1)) + months((2013, 3), (2013, 12))
    assert first(t, C) == M(2010, 2)
    assert t.rows_used["registry_row"].to_list() == [100, 101, 102]
    jail_only = timing(registry, models=("jail",))
    assert on(jail_only, C) == months((2010, 2), (2011, 6))
    assert jail_only.rows_used["registry_row"].to_list() == [100]
    wso = timing(registry, models="warrant_service_officer")
    assert first(wso, C) == M(2013, 3)
    sheriffs = timing(registry, agency_types=("sheriff",))
    assert on(sheriffs, C) == months((2010, 2), (2011, 6)) + months((2013, 3), (2013, 12))


def test_majority_counts_the_union_of_spells_in_a_period() -> None:
    # Two agencies each in force 10 days of April 2011 (30 days): neither alone is a majority.
    registry = reg(
        (C, "Durham County Sheriff's Office", "jail", date(2011, 4, 1), date(2011, 4, 11)),
        (C, "City of Durham Police Department", "task_force", date(2011, 4, 16), date(2011, 4, 26), "police"),
    )
    assert on(timing(registry, mid_period="majority"), C) == [M(2011, 4)]
    assert on(timing(registry[:1], mid_period="majority"), C) == []
    assert on(timing(registry, mid_period="first_day"), C) == [M(2011, 4)]
    assert on(timing(registry[1:], mid_period="first_day"), C) == []


def test_overlapping_spells_are_not_counted_twice() -> None:
    # Two agencies in force on the same 10 days of April 2011: 10 of 30 days, not a majority.
    registry = reg(
        (C, "Durham County Sheriff's Office", "jail", date(2011, 4, 1), date(2011, 4, 11)),
        (C, "City of Durham Police Department", "task_force", date(2011, 4, 1), date(2011, 4, 11), "police"),
        (C, "Durham County Sheriff's Office", "warrant_service_officer", date(2011, 4, 5), date(2011, 4, 9)),
    )
    assert on(timing(registry, mid_period="majority"), C) == []
    assert on(timing(registry, mid_period="first_day"), C) == [M(2011, 4)]


def test_start_lag_delays_every_switch_on_and_can_erase_short_spells() -> None:
    registry = reg(
        (D, "Mecklenburg County Sheriff's Office", "jail", date(2010, 1, 1), date(2011, 1, 1)),
        (D, "Mecklenburg County Sheriff's Office", "jail", date(2012, 1, 1), None),
        (A, "Alamance County Sheriff's Office", "jail", date(2011, 1, 1), date(2011, 3, 1)),  # 2 months
    )
    t = timing(registry, start_lag=2)
    assert on(t, D) == months((2010, 3), (2010, 12)) + months((2012, 3), (2013, 12))
    assert first(t, D) == M(2010, 3)
    assert on(t, A) == []
    assert first(t, A) == 0
    absorbing = timing(registry, start_lag=2, exit="absorbing")
    assert on(absorbing, D) == months((2010, 3), (2013, 12))


def test_anticipation_changes_no_timing_column() -> None:
    # the estimator applies anticipation (reference -1 - k, R did's convention); the panel keeps the
    # real adoption, so it is applied exactly once
    registry = reg((D, "Mecklenburg County Sheriff's Office", "jail", date(2011, 6, 1), None))
    plain, early = timing(registry), timing(registry, anticipation=3)
    assert on(early, D) == on(plain, D) == months((2011, 6), (2013, 12))
    assert first(plain, D) == first(early, D) == M(2011, 6)
    rel = early.frame.filter(
        pl.col("county_fips") == D, pl.col("period").is_in([M(2011, 2), M(2011, 3), M(2011, 6)])
    )
    assert rel["rel_period"].to_list() == [-4, -3, 0]
    both = timing(registry, anticipation=1, start_lag=2)
    assert on(both, D) == months((2011, 8), (2013, 12))
    assert first(both, D) == M(2011, 8)


def test_adoption_before_and_after_the_window() -> None:
    registry = reg(
        (D, "Mecklenburg County Sheriff's Office", "jail", date(2006, 2, 27), date(2018, 12, 1)),
        (A, "Alamance County Sheriff's Office", "jail", date(2014, 1, 1), None),  # after the window
        (B, "Cabarrus County Sheriff's Office", "jail", date(2014, 2, 1), None),  # after the window
    )
    t = timing(registry)
    assert first(t, D) == 24074  # March 2006, before the window: "already treated"
    assert on(t, D) == months((2010, 1), (2013, 12))
    assert t.frame.filter(pl.col("county_fips") == D, pl.col("period") == M(2010, 1))[
        "rel_period"
    ].to_list() == [M(2010, 1) - 24074]
    assert first(t, A) == 0 and first(t, B) == 0  # as R's did recodes cohorts after the last period
    assert "1 counties are already treated in the first period" in " ".join(t.notes)
    # an adoption within `anticipation` periods after the window keeps its real first_treated
    early = timing(registry, anticipation=1)
    assert first(early, A) == M(2014, 1)
    assert first(early, B) == 0
    assert first(timing(registry, start_lag=3), D) == 24077


def test_min_confidence_filter() -> None:
    registry = reg(
        (A, "Alamance County Sheriff's Office", "jail", date(2010, 1, 1), None, "sheriff", "high"),
        (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 1, 1), None, "sheriff", "medium"),
        (C, "Durham County Sheriff's Office", "jail", date(2010, 1, 1), None, "sheriff", "low"),
        (D, "Mecklenburg County Sheriff's Office", "jail", date(2010, 1, 1), None, "sheriff", None),
    )
    treated = {
        level: sorted(c for c in (A, B, C, D) if first(timing(registry, min_confidence=level), c))
        for level in ("low", "medium", "high")
    }
    assert treated == {"low": [A, B, C, D], "medium": [A, B], "high": [A]}


def test_exclude_and_only_agencies_match_normalised_names() -> None:
    registry = reg(
        (C, "Durham County Sheriff's Office", "jail", date(2010, 1, 1), None),
        (C, "City of Durham Police Department", "task_force", date(2012, 1, 1), None, "police"),
    )
    spill = timing(registry, exclude_agencies=("DURHAM COUNTY SHERIFFS OFFICE",))
    assert first(spill, C) == M(2012, 1)
    assert spill.rows_used["registry_row"].to_list() == [101]
    direct = timing(registry, only_agencies=("durham co. sheriff\u2019s office",))
    assert first(direct, C) == M(2010, 1)
    assert on(direct, C) == months((2010, 1), (2013, 12))
    assert direct.rows_used["registry_row"].to_list() == [100]
    nobody = timing(registry, only_agencies=("NC State Highway Patrol",))
    assert first(nobody, C) == 0
    assert (
        "only_agencies names matching no registry row in these counties: ['NC State Highway Patrol']"
        in nobody.notes
    )


UNKNOWN = reg(
    (A, "Alamance County Sheriff's Office", "unknown", date(2011, 1, 1), None),
    (B, "Cabarrus County Sheriff's Office", "task_force", date(2010, 6, 1), None),
    (B, "Cabarrus County Sheriff's Office", "unknown", date(2012, 1, 1), None),
)


def test_unknown_model_options() -> None:
    as_jail = timing(UNKNOWN)
    assert (first(as_jail, A), first(as_jail, B)) == (M(2011, 1), M(2010, 6))
    assert as_jail.rows_used.filter(pl.col("county_fips") == A).select("model", "counted_as").rows() == [
        ("unknown", "jail")
    ]
    assert first(timing(UNKNOWN, models=("task_force",)), A) == 0  # counted as jail, and jail not selected

    control = timing(UNKNOWN, unknown_model="treat_as_control")
    assert (first(control, A), first(control, B)) == (0, M(2010, 6))
    assert control.rows_used["registry_row"].to_list() == [101]

    excluded = timing(UNKNOWN, unknown_model="exclude_county")
    assert sorted(set(excluded.frame["county_fips"])) == [C, D]
    assert excluded.frame.height == 2 * 48
    assert excluded.excluded.select("county_fips", "registry_row").rows() == [(A, 100), (B, 102)]
    assert excluded.rows_used.height == 0


def test_quarter_periods() -> None:
    quarters = make_periods(date(2009, 1, 1), date(2011, 12, 31), freq="quarter")
    registry = reg(
        # Q1 2010 has 90 days: Feb 15 - Mar 31 is 45 of them (not a majority); Q2 2011 has 91 days:
        # Apr 1 - May 19 is 49 of them (a majority).
        (A, "Alamance County Sheriff's Office", "jail", date(2010, 2, 15), date(2011, 5, 20)),
        (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 2, 14), None),  # 46 of 90 days
    )
    expected = {  # rule: (first_treated, quarters A is in force); 8040 = Q1 2010 = 2010*4 + 0
        "first_day": ({A: 8041, B: 8041}, [8041, 8042, 8043, 8044, 8045]),
        "any_day": ({A: 8040, B: 8040}, [8040, 8041, 8042, 8043, 8044, 8045]),
        "majority": ({A: 8041, B: 8040}, [8041, 8042, 8043, 8044, 8045]),
    }
    for rule, (firsts, a_on) in expected.items():
        t = timing(registry, periods=quarters, mid_period=rule)
        assert {c: first(t, c) for c in (A, B)} == firsts, rule
        assert on(t, A) == a_on, rule
    assert timing(registry, periods=quarters).frame.height == 4 * 12


def test_year_periods() -> None:
    years = make_periods(date(2008, 1, 1), date(2013, 12, 31), freq="year")
    registry = reg(
        (A, "Alamance County Sheriff's Office", "jail", date(2010, 7, 1), date(2012, 7, 3)),
        (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 7, 3), None),
    )
    # 2010-07-01..12-31 is 184 of 365 days (majority); from 07-03 it is 182 (not).
    expected = {
        "first_day": ({A: 2011, B: 2011}, [2011, 2012]),
        "any_day": ({A: 2010, B: 2010}, [2010, 2011, 2012]),
        "majority": ({A: 2010, B: 2011}, [2010, 2011, 2012]),  # 2012-01-01..07-02: 184 of 366 days
    }
    for rule, (firsts, a_on) in expected.items():
        t = timing(registry, periods=years, mid_period=rule)
        assert {c: first(t, c) for c in (A, B)} == firsts, rule
        assert on(t, A) == a_on, rule


def test_irregular_periods_are_cut_at_the_first_period() -> None:
    periods = pl.DataFrame(
        {
            "period": [1, 2, 3],
            "period_start": [date(2010, 1, 1), date(2010, 1, 11), date(2010, 1, 21)],
            "period_end": [date(2010, 1, 11), date(2010, 1, 21), date(2010, 2, 1)],
        }
    )
    registry = reg(
        (A, "Alamance County Sheriff's Office", "jail", date(2009, 6, 1), None),
        (B, "Cabarrus County Sheriff's Office", "jail", date(2010, 1, 15), None),
    )
    t = timing(registry, periods=periods)
    assert (first(t, A), first(t, B)) == (1, 3)
    assert any("period frequency was not recognised" in n for n in t.notes)


def test_rows_used_summary_and_notes_on_the_shipped_registry(shipped: pl.DataFrame) -> None:
    periods = make_periods(date(2005, 1, 1), date(2019, 12, 31))
    t = treatment_timing(
        shipped, TreatmentSpec(), periods, counties=["37119", "37001", "37063", "45019", "37179"]
    )
    assert first(t, "37119") == 24074  # Mecklenburg, signed 2006-02-27: March 2006
    assert on(t, "37119") == months((2006, 3), (2018, 11))  # ended 2018-12-01
    assert first(t, "37001") == M(2007, 2)  # Alamance, signed 2007-01-10
    assert on(t, "37001") == months((2007, 2), (2012, 9))  # ended 2012-09-18: in force on Sep 1
    assert first(t, "37063") == M(2008, 2)  # Durham PD task force and Durham SO unknown, both 2008-02-01
    assert on(t, "37063") == months((2008, 2), (2019, 12))  # the SO's open-ended unknown-model row
    assert first(t, "37179") == 0  # Union: WSO signed 2025
    assert t.rows_used.select("county_fips", "registry_row", "model", "counted_as").rows() == [
        ("37001", 505, "jail", "jail"),
        ("37001", 506, "warrant_service_officer", "warrant_service_officer"),
        ("37063", 515, "task_force", "task_force"),
        ("37063", 521, "unknown", "jail"),
        ("37119", 526, "jail", "jail"),
        ("37179", 532, "warrant_service_officer", "warrant_service_officer"),
        ("45019", 634, "jail", "jail"),
        ("45019", 635, "warrant_service_officer", "warrant_service_officer"),
    ]
    assert t.summary.rows() == [
        ("NC", "jail", 2006, 1),
        ("NC", "jail", 2007, 1),
        ("NC", "jail+task_force", 2008, 1),
        ("SC", "jail", 2009, 1),
    ]
    assert t.notes[0].endswith("enter no county's timing")
    strict = treatment_timing(
        shipped, TreatmentSpec(min_confidence="high"), periods, counties=["37063", "45019"]
    )
    assert first(strict, "37063") == M(2008, 2)  # the PD's high-confidence row still treats Durham
    assert on(strict, "37063") == months((2008, 2), (2012, 12))
    assert first(strict, "45019") == 0  # Charleston's jail row is rated medium; its WSO is 2025


def test_named_timing_columns_for_several_policies() -> None:
    cols = policy_timing_columns("secure_communities")
    assert cols.mapping() == {
        "in_force": "in_force__secure_communities",
        "first_treated": "first_treated__secure_communities",
        "rel_period": "rel_period__secure_communities",
        "censored": "censored__secure_communities",
    }
    assert policy_timing_columns().in_force == "in_force"
    t = timing(reg((D, "Mecklenburg County Sheriff's Office", "jail", date(2011, 3, 1), None)))
    assert t.named("sc").columns == [
        "county_fips",
        "period",
        "in_force__sc",
        "first_treated__sc",
        "rel_period__sc",
        "censored__sc",
    ]
    for bad in ("Secure", "1x", "a-b", "", "in force"):
        with pytest.raises(SpecificationError, match="lower-case identifier"):
            policy_timing_columns(bad)


def test_timing_input_checks() -> None:
    registry = reg((D, "Mecklenburg County Sheriff's Office", "jail", date(2011, 3, 1), None))
    spec = TreatmentSpec()
    with pytest.raises(SpecificationError, match="spec must be a TreatmentSpec"):
        treatment_timing(registry, {"exit": "in_force"}, MONTHS_2010_2013, counties=[D])  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="'signed' must be Date"):
        treatment_timing(
            registry.with_columns(pl.col("signed").cast(pl.String)), spec, MONTHS_2010_2013, counties=[D]
        )
    with pytest.raises(SpecificationError, match=r"lacks columns \['model'\]"):
        treatment_timing(registry.drop("model"), spec, MONTHS_2010_2013, counties=[D])
    gap = MONTHS_2010_2013.filter(pl.col("period") != M(2011, 5))
    with pytest.raises(SpecificationError, match="consecutive integers"):
        treatment_timing(registry, spec, gap, counties=[D])
    shifted = MONTHS_2010_2013.with_columns(
        pl.when(pl.col("period") == M(2011, 5))
        .then(date(2011, 5, 2))
        .otherwise(pl.col("period_start"))
        .alias("period_start")
    )
    with pytest.raises(SpecificationError, match="contiguous"):
        treatment_timing(registry, spec, shifted, counties=[D])
    with pytest.raises(SpecificationError, match="'period_end' must be Date"):
        treatment_timing(
            registry, spec, MONTHS_2010_2013.with_columns(pl.col("period_end").cast(pl.String)), counties=[D]
        )
    with pytest.raises(SpecificationError, match="lacks column 'period_start'"):
        treatment_timing(registry, spec, MONTHS_2010_2013.drop("period_start"), counties=[D])
    with pytest.raises(SpecificationError, match="positive"):
        treatment_timing(
            registry, spec, MONTHS_2010_2013.with_columns(pl.col("period") - M(2010, 1)), counties=[D]
        )
    with pytest.raises(SpecificationError, match="5-digit FIPS"):
        treatment_timing(registry, spec, MONTHS_2010_2013, counties=["3711"])
    with pytest.raises(SpecificationError, match="sequence of 5-digit"):
        treatment_timing(registry, spec, MONTHS_2010_2013, counties="37119")
    with pytest.raises(SpecificationError, match="distinct"):
        treatment_timing(registry, spec, MONTHS_2010_2013, counties=[D, D])


def test_registry_without_registry_row_or_confidence_columns() -> None:
    registry = reg((D, "Mecklenburg County Sheriff's Office", "jail", date(2011, 3, 1), None)).drop(
        "registry_row", "confidence", "state"
    )
    t = timing(registry)
    assert first(t, D) == M(2011, 3)
    assert t.rows_used["registry_row"].to_list() == [2]
    assert first(timing(registry, min_confidence="medium"), D) == 0  # unrated rows need min_confidence="low"
