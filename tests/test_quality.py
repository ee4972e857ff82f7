"""Data-quality flags (issue 7 §1): rows kept but implausible, counted per source in the manifest.

Small OPP-format files with planted flagged rows: the counts are typed out (boundaries included) or
come from a plain-Python reference over the same typed rows that were written; flagged rows are
stored, not quarantined; ``stopdisparity quality`` lists count and share per source and flag.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stopdisparity.cli import app
from stopdisparity.ingest import ingest
from stopdisparity.quality import FLAGS, quality_table, state_bounds
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import COLUMNS, FORMATS, make_rows, opp_name, write_opp, write_text

HEADER = "raw_row_number,subject_age,lat,lng,search_conducted,search_basis\n"
# Raleigh (35.78, -78.64) lies in NC's box; each other row plants flags (marked at the end).
PLANTED = HEADER + (
    "1,30,35.78,-78.64,TRUE,consent\n"  # none
    "2,10,35.78,-78.64,FALSE,NA\n"  # none: age 10 is inside, no basis
    "3,110,NA,NA,NA,NA\n"  # none: age 110 is inside, no location
    "4,9.5,35.78,-78.64,TRUE,k9\n"  # age
    "5,110.5,35.78,-78.64,TRUE,NA\n"  # age
    "6,30,35.78,-78.64,FALSE,consent\n"  # basis (search FALSE)
    "7,30,35.78,-78.64,NA,plain view\n"  # basis (search NA)
    "8,30,-78.64,35.78,TRUE,other\n"  # location (swapped)
    "9,30,0,0,TRUE,NA\n"  # location (0/0)
    "10,30,35.78,NA,TRUE,NA\n"  # none: lat inside, lng missing
    "11,30,NA,78.64,TRUE,NA\n"  # location (sign-flipped lng, lat missing)
    "12,5,40.71,-74.01,FALSE,k9\n"  # age, basis, location (New York City)
    "13,NA,NA,NA,NA,NA\n"  # none
)
PLANTED_COUNTS = {
    "search_basis_without_search": 3,
    "subject_age_outside_10_110": 3,
    "location_outside_state": 4,
}


def _quality(store: Path, name: str) -> dict[str, Any]:
    return open_store(store).manifest()["sources"][name]["quality"]


# --------------------------------------------------------------------------------- counts, exact
@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "csv.zip"])
def test_planted_flags_are_counted_exactly_and_the_rows_kept(tmp_path: Path, fmt: str) -> None:
    path = write_text(tmp_path / opp_name(fmt, place="planted"), PLANTED)
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (13, 13, 0)
    assert f.quality == PLANTED_COUNTS
    assert _quality(tmp_path / "store", path.name) == PLANTED_COUNTS
    ids = open_store(tmp_path / "store").scan().select("raw_row_number").collect().to_series().to_list()
    assert sorted(ids, key=int) == [str(i) for i in range(1, 14)]


def test_quarantined_rows_are_not_counted(tmp_path: Path) -> None:
    """A row that fails a check is not stored, so its implausible values are not flags."""
    text = PLANTED + "14,5,0,0,maybe,k9\n"  # boolean fails: quarantined, all three flags ignored
    path = write_text(tmp_path / opp_name("csv", place="planted"), text)
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_stored, f.rows_quarantined) == (13, 1)
    assert f.quality == PLANTED_COUNTS


def test_the_box_is_the_source_state(tmp_path: Path) -> None:
    """Raleigh is inside NC's box but north of SC's; the same file flags differently by state."""
    nc = write_text(tmp_path / "nc_city_2020_01_01.csv", HEADER + "1,30,35.78,-78.64,TRUE,k9\n")
    sc = write_text(tmp_path / "sc_city_2020_01_01.csv", HEADER + "1,30,35.78,-78.64,TRUE,k9\n")
    report = ingest([nc, sc], tmp_path / "store")
    assert [f.quality["location_outside_state"] for f in report.files] == [0, 1]


def test_alaska_box_crosses_the_antimeridian(tmp_path: Path) -> None:
    """Semisopochnoi Island (51.96 N, 179.6 E) is in Alaska; 170 E and -190 are not."""
    text = "raw_row_number,lat,lng\n1,51.96,179.6\n2,61.2,-149.9\n3,51.96,170\n4,61.2,-190\n"
    path = write_text(tmp_path / "ak_statewide_2020_01_01.csv", text)
    [f] = ingest([path], tmp_path / "store").files
    assert f.quality == {
        "search_basis_without_search": None, "subject_age_outside_10_110": None, "location_outside_state": 2,
    }  # fmt: skip


def test_flags_without_their_columns_are_null_not_zero(tmp_path: Path) -> None:
    text = "raw_row_number,subject_age,search_basis\n1,200,k9\n2,30,NA\n"  # no search_conducted, no lat/lng
    path = write_text(tmp_path / "nc_partial_2020_01_01.csv", text)
    [f] = ingest([path], tmp_path / "store").files
    assert f.quality == {
        "search_basis_without_search": 1, "subject_age_outside_10_110": 1, "location_outside_state": None,
    }  # fmt: skip


# ------------------------------------------------------------------ counts, independent reference
def reference_counts(rows: list[dict[str, Any]], state: str) -> dict[str, int]:
    """The three flags in plain Python over the typed rows (box from ``state_bounds``)."""
    box = state_bounds(state)
    assert box is not None
    counts = dict.fromkeys(FLAGS, 0)
    for r in rows:
        if r["search_basis"] is not None and r["search_conducted"] is not True:
            counts["search_basis_without_search"] += 1
        if r["subject_age"] is not None and not 10 <= r["subject_age"] <= 110:
            counts["subject_age_outside_10_110"] += 1
        lat, lng = r["lat"], r["lng"]
        lat_out = lat is not None and not box.lat_min <= lat <= box.lat_max
        lng_out = lng is not None and not box.lng_min <= lng <= box.lng_max
        counts["location_outside_state"] += lat_out or lng_out
    return counts


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_rows_match_a_python_reference(tmp_path: Path, fmt: str) -> None:
    rows = make_rows(400, seed=7)
    for i, r in enumerate(rows[50:], start=50):  # plant flags beyond what make_rows draws
        if i % 11 == 0:
            r["subject_age"] = float(i % 3) + 0.5
        if i % 13 == 0:
            r["lat"], r["lng"] = r["lng"], r["lat"]
        if i % 17 == 0:
            r["search_conducted"], r["search_basis"] = False, "consent"
    path = tmp_path / opp_name(fmt)
    write_opp(path, rows, COLUMNS)
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_stored, f.rows_quarantined) == (400, 0)
    expected = reference_counts(rows, "NC")
    assert all(v > 10 for v in expected.values()), expected  # the planted rows are really there
    assert f.quality == expected
    assert _quality(tmp_path / "store", path.name) == expected


# ------------------------------------------------------------------------- manifest over time
def test_replacing_a_source_replaces_its_counts(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nc_planted_2020_01_01.csv", PLANTED)
    other = write_text(tmp_path / "nc_other_2020_01_01.csv", HEADER + "1,5,0,0,NA,k9\n")
    ingest([path, other], tmp_path / "store")
    write_text(path, HEADER + "1,30,35.78,-78.64,TRUE,k9\n2,111,35.78,-78.64,TRUE,k9\n")
    report = ingest([path, other], tmp_path / "store")
    assert [f.status for f in report.files] == ["replaced", "unchanged"]
    assert _quality(tmp_path / "store", path.name) == {
        "search_basis_without_search": 0, "subject_age_outside_10_110": 1, "location_outside_state": 0,
    }  # fmt: skip
    assert _quality(tmp_path / "store", other.name) == dict.fromkeys(FLAGS, 1)


def test_state_boxes_hold_their_counties_and_known_extremes() -> None:
    from stopdisparity.geo import county_centroids

    for row in county_centroids().iter_rows(named=True):
        box = state_bounds(row["state"])
        assert box is not None
        assert box.lat_min < row["lat"] < box.lat_max and box.lng_min < row["lng"] < box.lng_max, row
    nc = state_bounds("NC")
    assert nc is not None
    # NC's extreme points: Cape Hatteras (35.22 N, 75.53 W), the SW corner (35.0 N, 84.32 W),
    # the northern line (36.59 N) and Bald Head Island (33.84 N); Richmond VA (37.54 N) is outside.
    for lat, lng in ((35.22, -75.53), (35.0, -84.32), (36.59, -80.0), (33.84, -78.0)):
        assert nc.lat_min < lat < nc.lat_max and nc.lng_min < lng < nc.lng_max
    assert not nc.lat_min < 37.54 < nc.lat_max
    assert state_bounds("ZZ") is None


# --------------------------------------------------------------------------------------- CLI
def test_cli_lists_count_and_share_per_source_and_flag(tmp_path: Path) -> None:
    path = write_text(tmp_path / "nc_planted_2020_01_01.csv", PLANTED)
    partial = write_text(tmp_path / "nc_partial_2020_01_01.csv", "raw_row_number,subject_age\n1,200\n2,30\n")
    ingest([path, partial], tmp_path / "store")
    run = CliRunner().invoke(app, ["quality", "--store", str(tmp_path / "store"), "--json"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["flags"] == dict(FLAGS)
    got = {
        (r["source"], r["flag"]): (r["rows_flagged"], r["rows_stored"], r["share"]) for r in doc["sources"]
    }
    expected = {(path.name, k): (v, 13, v / 13) for k, v in PLANTED_COUNTS.items()} | {
        (partial.name, "search_basis_without_search"): (None, 2, None),
        (partial.name, "subject_age_outside_10_110"): (1, 2, 0.5),
        (partial.name, "location_outside_state"): (None, 2, None),
    }
    assert got == expected
    text = CliRunner().invoke(app, ["quality", "--store", str(tmp_path / "store")])
    assert text.exit_code == 0, text.output
    for flag in FLAGS:
        assert flag in text.stdout
    assert "0.3077" in text.stdout  # 4 / 13 locations outside NC
    missing = CliRunner().invoke(app, ["quality", "--store", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such store" in missing.output


def test_quality_table_of_an_empty_source_has_nan_share() -> None:
    manifest = {"sources": {"x.csv": {"rows_stored": 0, "quality": dict.fromkeys(FLAGS, 0)}}}
    table = quality_table(manifest)
    assert table.height == len(FLAGS)
    assert all(math.isnan(s) for s in table["share"].to_list())
