"""Tests of stopdisparity.ingest: files → store, quarantine, reconciliation, casts.

Input files are written in the exact OPP text format by ``opp_files``; expected values are typed
out or derived from the same typed rows that were written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from stopdisparity.errors import IngestError
from stopdisparity.ingest import IngestReport, ingest
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import (
    COLUMNS,
    FORMATS,
    NC_COUNTIES,
    csv_text,
    expected_county_fips,
    expected_frame,
    make_rows,
    opp_name,
    write_opp,
    write_text,
)

NULL_YEAR = "year=__HIVE_DEFAULT_PARTITION__"
LINEAGE = ("source_file", "source_line", "county_fips", "state", "year")


# ------------------------------------------------------------------------------------------ helpers
def assert_reconciled(report: IngestReport) -> None:
    for f in report.files:
        assert f.rows_read == f.rows_stored + f.rows_quarantined, f
        assert sum(f.quarantine_reasons.values()) == f.rows_quarantined, f


def stored(store: Path, source_file: str | None = None) -> pl.DataFrame:
    """Stored rows (of one source), sorted by line, with ``year`` as Int64."""
    lf = open_store(store).scan()
    if source_file is not None:
        lf = lf.filter(pl.col("source_file") == source_file)
    return lf.sort("source_file", "source_line").collect().with_columns(pl.col("year").cast(pl.Int64))


def quarantined(store: Path) -> list[tuple[Any, ...]]:
    q = open_store(store).quarantine()
    return sorted(q.select("source_file", "source_line", "column", "reason").rows(), key=lambda r: r[:2])


def expected_store_frame(
    rows: list[dict[str, Any]], *, name: str, lines: list[int], state: str = "NC", fips: list | None = None
) -> pl.DataFrame:
    exp = expected_frame(rows)
    return exp.with_columns(
        pl.lit(name).alias("source_file"),
        pl.Series("source_line", lines, dtype=pl.Int64),
        pl.Series("county_fips", expected_county_fips(rows) if fips is None else fips, dtype=pl.String),
        pl.lit(state).alias("state"),
        pl.col("date").dt.year().cast(pl.Int64).alias("year"),
    )


# --------------------------------------------------------------------------------- 1. round trip
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_value_every_format(tmp_path: Path, fmt: str) -> None:
    rows = make_rows(40, seed=1)
    path = tmp_path / opp_name(fmt)
    lines = write_opp(path, rows, blank_before=(5, 17))
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.name, f.status, f.state, f.rows_read, f.rows_stored, f.rows_quarantined) == (
        path.name, "ingested", "NC", 40, 40, 0,
    )  # fmt: skip
    assert f.extra_columns == ["agency_code"]
    # NA county (row 0 and random NAs) and "Nowhere County" have no FIPS
    fips = expected_county_fips(rows)
    assert f.rows_without_county == sum(x is None for x in fips)
    assert [u["county_name"] for u in f.unresolved_counties] == ["Nowhere County"]

    exp = expected_store_frame(rows, name=path.name, lines=lines)
    got = stored(tmp_path / "store")
    assert_frame_equal(got.select(exp.columns), exp)
    # canonical columns the file lacks are present, typed, and NULL
    for col, dtype in {"precinct": pl.String, "subject_dob": pl.Date, "speed": pl.Float64,
                       "search_person": pl.Boolean, "officer_race": pl.String}.items():  # fmt: skip
        assert got.schema[col] == dtype
        assert got[col].null_count() == got.height


def test_round_trip_sanity_of_generated_rows() -> None:
    """The generated table covers what the round trip claims to cover."""
    rows = make_rows(40, seed=1)
    assert all(v is None for v in rows[0].values())
    for col, vocab in {
        "subject_race": 7,
        "subject_sex": 2,
        "type": 2,
        "outcome": 4,
        "search_basis": 5,
    }.items():
        assert len({r[col] for r in rows} - {None}) == vocab
    text = csv_text(rows).text
    assert '""' in text and '",' in text and "\n\n" in text
    for col in COLUMNS:
        assert any(r[col] is None for r in rows[17:]) or col == "raw_row_number"
    assert {r["county_name"] for r in rows} - {None} == set(NC_COUNTIES)


def test_round_trip_typed_out(tmp_path: Path) -> None:
    text = (
        "raw_row_number,date,time,county_name,subject_age,subject_race,arrest_made,lat,raw_x\n"  # 1
        '1,2017-01-02,10:00:00,WAKE,30,white,TRUE,35.7796,"a,b"\n'  # 2
        "2,NA,NA,NA,NA,NA,NA,NA,NA\n"  # 3
        "\n"  # 4
        '3,2017-12-31,23:59:59,Nowhere County,17.5,black,FALSE,-0.5,"x\ny"\n'  # 5-6
        '4,2018-02-03,07:05,Mc Dowell County,1e2,other/unknown,FALSE,1.25e-3,"he said ""hi"""\n'  # 7
    )
    path = write_text(tmp_path / "nc_statewide_2020_04_01.csv", text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined, f.rows_without_county) == (4, 4, 0, 2)
    cols = ["raw_row_number", "date", "time", "county_name", "county_fips", "subject_age", "subject_race",
            "arrest_made", "lat", "raw_x", "source_file", "source_line", "state", "year"]  # fmt: skip
    assert stored(tmp_path / "store").select(cols).rows() == [
        ("1", dt.date(2017, 1, 2), dt.time(10), "WAKE", "37183", 30.0, "white", True, 35.7796, "a,b",
         path.name, 2, "NC", 2017),
        ("2", None, None, None, None, None, None, None, None, None, path.name, 3, "NC", None),
        ("3", dt.date(2017, 12, 31), dt.time(23, 59, 59), "Nowhere County", None, 17.5, "black", False,
         -0.5, "x\ny", path.name, 5, "NC", 2017),
        ("4", dt.date(2018, 2, 3), dt.time(7, 5), "Mc Dowell County", "37111", 100.0, "other/unknown",
         False, 0.00125, 'he said "hi"', path.name, 7, "NC", 2018),
    ]  # fmt: skip


def test_state_option_overrides_the_name_and_drives_county_resolution(tmp_path: Path) -> None:
    rows = make_rows(8, seed=2)
    path = tmp_path / "statewide_export.csv"  # no state prefix
    write_opp(path, rows)
    with pytest.raises(IngestError, match="--state"):
        ingest([path], tmp_path / "s0")
    report = ingest([path], tmp_path / "store", state="sc")
    assert_reconciled(report)
    assert report.files[0].state == "SC"
    got = stored(tmp_path / "store")
    assert got["state"].unique().to_list() == ["SC"]
    assert got["county_fips"].null_count() == 8  # NC county names do not exist in SC
    # an OPP name: --state wins over the prefix
    nc = tmp_path / opp_name("csv")
    write_opp(nc, rows)
    report = ingest([nc], tmp_path / "store2", state="SC")
    assert report.files[0].state == "SC"
    assert stored(tmp_path / "store2")["state"].unique().to_list() == ["SC"]


def test_physical_lines_with_blank_and_multiline_records_around_rejects(tmp_path: Path) -> None:
    text = (
        "raw_row_number,time,raw_x\n"  # 1
        "\n"  # 2
        "1,10:00,a\n"  # 3
        "\n"  # 4
        "\n"  # 5
        '2,10:00:00,"x\n\ny"\n'  # 6-8
        "3,1,2,3\n"  # 9 field_count
        '4,bad,"p\nq"\n'  # 10-11 type_cast
        "5,11:00:00,z\n"  # 12
        "\n"  # 13
        '6,12:00:00,"\n"\n'  # 14-15
        "7,13:00:00,end"  # 16, no final newline
    )
    path = write_text(tmp_path / "nc_lines_2020_01_01.csv", text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    assert (report.files[0].rows_read, report.files[0].rows_stored) == (7, 5)
    got = stored(tmp_path / "store")
    assert got.select("raw_row_number", "source_line", "raw_x").rows() == [
        ("1", 3, "a"), ("2", 6, "x\n\ny"), ("5", 12, "z"), ("6", 14, "\n"), ("7", 16, "end"),
    ]  # fmt: skip
    assert quarantined(tmp_path / "store") == [
        (path.name, 9, None, "field_count"),
        (path.name, 10, "time", "type_cast"),
    ]


# --------------------------------------------------------------------------------- 2. rejections
REJECTS = (
    "raw_row_number,date,time,subject_age,subject_race,arrest_made,raw_x\n"  # 1
    "1,2017-01-02,10:00:00,30,white,TRUE,ok\n"  # 2 stored
    "2,2011-13-01,10:00:00,30,white,TRUE,baddate\n"  # 3
    "3,2017-01-02,25:61:00,30,white,TRUE,badtime\n"  # 4
    "4,2017-01-02,10:00:00,abc,white,TRUE,badnumber\n"  # 5
    "5,2017-01-02,10:00:00,30,white,yes,badbool\n"  # 6
    "6,2017-01-02,10:00:00,30,martian,TRUE,badrace\n"  # 7
    "7,2017-01-02,10:00:00\n"  # 8 too few fields
    "8,2017-01-02,10:00:00,30,white,TRUE,x,surplus\n"  # 9 too many fields
    "raw_row_number,date,time,subject_age,subject_race,arrest_made,raw_x\n"  # 10
    '9,"bad"x,10:00:00,30,white,TRUE,q\n'  # 11 quote
    '10,2017-01-03,10:00:00,30,black,FALSE,"multi\nline"\n'  # 12-13 stored
    '11,2011-13-01,10:00:00,30,martian,yes,"two\nlines"\n'  # 14-15: first failing column is date
    "12,2017-01-04,10:00:00,30,hispanic,NA,last\n"  # 16 stored
)


def test_each_rejection_kind_with_line_column_and_reason(tmp_path: Path) -> None:
    name = "nc_rejects_2020_01_01.csv"
    path = write_text(tmp_path / name, REJECTS)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (13, 3, 10)
    assert f.quarantine_reasons == {
        "type_cast": 5, "enum": 1, "field_count": 2, "repeated_header": 1, "quote": 1,
    }  # fmt: skip
    assert quarantined(tmp_path / "store") == [
        (name, 3, "date", "type_cast"),
        (name, 4, "time", "type_cast"),
        (name, 5, "subject_age", "type_cast"),
        (name, 6, "arrest_made", "type_cast"),
        (name, 7, "subject_race", "enum"),
        (name, 8, None, "field_count"),
        (name, 9, None, "field_count"),
        (name, 10, None, "repeated_header"),
        (name, 11, "date", "quote"),
        (name, 14, "date", "type_cast"),
    ]
    raw = dict(open_store(tmp_path / "store").quarantine().select("source_line", "raw_text").rows())
    for line, needle in {3: "2011-13-01", 4: "25:61:00", 5: "abc", 6: "yes", 7: "martian",
                         8: "7,2017-01-02,10:00:00", 9: "surplus", 10: "raw_row_number,date",
                         11: '"bad"x', 14: "martian"}.items():  # fmt: skip
        assert needle in raw[line], (line, raw[line])
    assert stored(tmp_path / "store").select("raw_row_number", "source_line").rows() == [
        ("1", 2), ("10", 12), ("12", 16),
    ]  # fmt: skip


def test_quarantine_message_is_human_text(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nc_rejects_2020_01_01.csv", REJECTS)
    ingest([path], tmp_path / "store")
    q = open_store(tmp_path / "store").quarantine()
    assert q.columns == ["source_file", "source_line", "column", "reason", "raw_text", "message"]
    assert q["message"].null_count() == 0
    enum_msg = q.filter(pl.col("reason") == "enum")["message"].item()
    assert "subject_race" in enum_msg and "white" in enum_msg


def test_stray_quote_inside_unquoted_field_does_not_fail_the_file(tmp_path: Path) -> None:
    text = 'raw_row_number,date,raw_x\n1,2017-01-02,tire 12" wide\n2,2017-01-03,ok\n3,2017-01-04,fine\n'
    path = write_text(tmp_path / "nc_stray_2020_01_01.csv", text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    assert report.files[0].rows_read == 3
    got = stored(tmp_path / "store").select("raw_row_number", "source_line").rows()
    assert got[-2:] == [("2", 3), ("3", 4)]
    if len(got) == 2:  # quarantined rather than kept verbatim
        assert quarantined(tmp_path / "store") == [(path.name, 2, "raw_x", "quote")]


def test_time_24_00_00_is_rejected_or_readable(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nc_t_2020_01_01.csv", "raw_row_number,time\n1,24:00:00\n")
    report = ingest([path], tmp_path / "store")
    if report.files[0].rows_quarantined:
        assert quarantined(tmp_path / "store") == [(path.name, 2, "time", "type_cast")]
    else:
        assert stored(tmp_path / "store")["time"].null_count() == 0


# ----------------------------------------------------------------------- 3. valid but odd rows
def test_all_na_row_goes_to_the_null_year_partition(tmp_path: Path) -> None:
    header = ",".join(COLUMNS)
    na = ",".join(["NA"] * len(COLUMNS))
    path = write_text(tmp_path / "nc_na_2020_01_01.csv", f"{header}\n{na}\n{na}\n")
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    assert (report.files[0].rows_stored, report.files[0].rows_without_county) == (2, 2)
    assert report.files[0].unresolved_counties == []
    parts = sorted((tmp_path / "store" / "stops").rglob("*.parquet"))
    assert [p.parent.relative_to(tmp_path / "store" / "stops").as_posix() for p in parts] == [
        f"state=NC/{NULL_YEAR}"
    ]
    got = stored(tmp_path / "store")
    assert got["year"].to_list() == [None, None]
    assert got["source_line"].to_list() == [2, 3]
    for col in COLUMNS:
        assert got[col].null_count() == 2, col
    con = open_store(tmp_path / "store").connect()
    assert con.execute("SELECT count(*) FROM stops WHERE year IS NULL AND state = 'NC'").fetchone() == (2,)


def test_file_without_county_column_has_null_fips(tmp_path: Path) -> None:
    cols = {k: v for k, v in COLUMNS.items() if k != "county_name"}
    rows = make_rows(20, seed=3, columns=cols)
    path = tmp_path / "ct_hartford_2020_04_01.csv"
    lines = write_opp(path, rows, cols)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.state, f.rows_stored, f.rows_without_county, f.unresolved_counties) == ("CT", 20, 20, [])
    got = stored(tmp_path / "store")
    assert got["county_fips"].null_count() == 20
    assert got["county_name"].null_count() == 20
    assert got["source_line"].to_list() == lines


def test_odd_but_valid_values_are_kept(tmp_path: Path) -> None:
    text = (
        "raw_row_number,date,time,subject_race,subject_sex\n"
        "1,2019-06-01,07:30,other/unknown,NA\n"
        "\n"
        "2,2019-06-01,NA,other,female\n"
        "3,NA,00:00,unknown,male\n"
    )
    path = write_text(tmp_path / "nc_odd_2020_01_01.csv", text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    assert (report.files[0].rows_read, report.files[0].rows_stored) == (3, 3)
    assert stored(tmp_path / "store").select(
        "raw_row_number", "time", "subject_race", "subject_sex", "source_line", "year"
    ).rows() == [
        ("1", dt.time(7, 30), "other/unknown", None, 2, 2019),
        ("2", None, "other", "female", 4, 2019),
        ("3", dt.time(0, 0), "unknown", "male", 5, None),
    ]


def test_header_only_file_stores_nothing(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nc_empty_2020_01_01.csv", "raw_row_number,date\n")
    report = ingest([path], tmp_path / "store")
    [f] = report.files
    assert (f.status, f.rows_read, f.rows_stored, f.rows_quarantined) == ("ingested", 0, 0, 0)
    assert "nc_empty_2020_01_01.csv" in open_store(tmp_path / "store").manifest()["sources"]


# ------------------------------------------------------------------------------ 4. reconciliation
def test_rows_read_equals_records_written_for_every_file(tmp_path: Path) -> None:
    files: dict[Path, int] = {}
    rows = make_rows(30, seed=4)
    for i, fmt in enumerate(FORMATS):
        p = tmp_path / opp_name(fmt, place=f"p{i}")
        write_opp(p, rows, blank_before=(0, 3, 29))
        files[p] = 30
    files[write_text(tmp_path / "nc_rejects_2020_01_01.csv", REJECTS)] = 13
    files[write_text(tmp_path / "nc_rejects_2020_01_02.csv.gz", REJECTS)] = 13
    files[write_text(tmp_path / "nc_rejects_2020_01_03.csv.zip", REJECTS)] = 13
    report = ingest(list(files), tmp_path / "store")
    assert_reconciled(report)
    assert {Path(f.path).name: f.rows_read for f in report.files} == {p.name: n for p, n in files.items()}
    assert report.rows_read == 4 * 30 + 3 * 13
    assert report.rows_stored == 4 * 30 + 3 * 3
    counts = dict(
        open_store(tmp_path / "store")
        .connect()
        .execute("SELECT source_file, count(*) FROM stops GROUP BY ALL")
        .fetchall()
    )
    assert counts == {f.name: f.rows_stored for f in report.files}
    qcounts = open_store(tmp_path / "store").quarantine().group_by("source_file").len()
    assert dict(qcounts.rows()) == {f.name: f.rows_quarantined for f in report.files if f.rows_quarantined}


# -------------------------------------------------------------------------- 6. several sources
SC_COLUMNS = {k: v for k, v in COLUMNS.items() if k not in ("time", "county_name")} | {
    "county_name": "string"
}


def test_sc_file_without_time(tmp_path: Path) -> None:
    rows = make_rows(12, seed=5, columns=SC_COLUMNS)
    for r, county in zip(rows[1:], ["Richland County", "GREENVILLE", "Nowhere"] * 4, strict=False):
        r["county_name"] = county
    path = tmp_path / "sc_statewide_2019_02_25.csv.zip"
    lines = write_opp(path, rows, SC_COLUMNS)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.name, f.state, f.rows_read, f.rows_stored) == (path.name, "SC", 12, 12)
    got = stored(tmp_path / "store")
    assert got["time"].null_count() == 12
    assert got.schema["time"] == pl.Time
    assert got["state"].unique().to_list() == ["SC"]
    assert got["source_line"].to_list() == lines
    fips = {"Richland County": "45079", "GREENVILLE": "45045", "Nowhere": None}
    assert got["county_fips"].to_list() == [fips.get(r["county_name"]) for r in rows]
    exp = expected_frame(rows, SC_COLUMNS)
    assert_frame_equal(got.select(exp.columns), exp)


def test_many_files_in_one_call_report_per_file(tmp_path: Path) -> None:
    nc_rows = make_rows(25, seed=6)
    sc_rows = make_rows(10, seed=7, columns=SC_COLUMNS)
    nc = tmp_path / "nc_statewide_2020_04_01.csv"
    sc = tmp_path / "sc_statewide_2019_02_25.csv.zip"
    gz = tmp_path / "nc_durham_2019_12_17.csv.gz"
    pq = tmp_path / "nc_raleigh_2020_04_01.parquet"
    write_opp(nc, nc_rows)
    write_opp(sc, sc_rows, SC_COLUMNS)
    write_text(gz, REJECTS)
    write_opp(pq, nc_rows[:15])
    report = ingest([nc, sc, gz, pq], tmp_path / "store")
    assert_reconciled(report)
    doc = json.loads(json.dumps(report.to_json()))
    summary = [
        (
            Path(f["path"]).name,
            f["status"],
            f["rows_read"],
            f["rows_stored"],
            f["rows_quarantined"],
            f["state"],
        )
        for f in doc["files"]
    ]
    assert summary == [
        (nc.name, "ingested", 25, 25, 0, "NC"),
        (sc.name, "ingested", 10, 10, 0, "SC"),
        (gz.name, "ingested", 13, 3, 10, "NC"),
        (pq.name, "ingested", 15, 15, 0, "NC"),
    ]
    assert list(doc["files"][0])[:6] == ["path", "sha256", "status", "rows_read", "rows_stored",
                                         "rows_quarantined"]  # fmt: skip
    assert (doc["rows_read"], doc["rows_stored"], doc["rows_quarantined"]) == (63, 53, 10)
    assert doc["files"][2]["quarantine_reasons"]["repeated_header"] == 1
    got = stored(tmp_path / "store")
    assert dict(got.group_by("source_file").len().rows()) == {
        nc.name: 25, sc.name: 10, gz.name: 3, pq.name: 15,
    }  # fmt: skip
    assert dict(got.group_by("state").len().rows()) == {"NC": 43, "SC": 10}


# ------------------------------------------------------------------------ 10. casts, property-based
_dates = st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31))
_times = st.builds(dt.time, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
_doubles = st.floats(allow_nan=False, allow_infinity=False)
_row = st.tuples(
    st.none() | _dates, st.none() | _times, st.booleans(), st.none() | _doubles, st.none() | st.booleans()
)


def _fmt_double(x: float) -> str:
    return repr(x)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=12))
def test_casts_round_trip_exactly(rows: list[tuple[Any, ...]]) -> None:
    lines = ["raw_row_number,date,time,lat,arrest_made"]
    for i, (d, t, short, x, b) in enumerate(rows):
        if t is None:
            ttext = "NA"
        elif short and t.second == 0:
            ttext = t.strftime("%H:%M")
        else:
            ttext = t.strftime("%H:%M:%S")
        fields = [
            str(i),
            "NA" if d is None else d.isoformat(),
            ttext,
            "NA" if x is None else _fmt_double(x),
            "NA" if b is None else ("TRUE" if b else "FALSE"),
        ]
        lines.append(",".join(fields))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_text(Path(tmp) / "nc_cast_2020_01_01.csv", "\n".join(lines) + "\n")
        report = ingest([path], Path(tmp) / "store", threads=1)
        assert_reconciled(report)
        assert report.files[0].rows_quarantined == 0
        got = stored(Path(tmp) / "store").sort("source_line")
    assert got["source_line"].to_list() == list(range(2, len(rows) + 2))
    assert got["date"].to_list() == [r[0] for r in rows]
    assert got["year"].to_list() == [None if r[0] is None else r[0].year for r in rows]
    assert got["time"].to_list() == [r[1] for r in rows]
    assert got["arrest_made"].to_list() == [r[4] for r in rows]
    got_x = got["lat"].to_list()
    for want, have in zip([r[3] for r in rows], got_x, strict=True):
        if want is None:
            assert have is None
        else:
            assert (
                have is not None
                and have.hex() == want.hex()
                and math.copysign(1, have) == math.copysign(1, want)
            )
