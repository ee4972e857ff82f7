"""Census benchmarks: precedence, coverage, interpolation, approximations and the per-capita guard.

Expected numbers are typed out from the shipped files (data/census/*.csv) and from published Census
totals (NC 2000: 8,049,313; NC Hispanic 2000: 378,963; SC 2000: 4,012,012; NC 2010: 9,535,483; NC
Hispanic 2010: 800,120), never recomputed with the code under test.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from stopdisparity import census
from stopdisparity.errors import SpecificationError

MECK = "37119"  # Mecklenburg NC
YORK_SC = "45091"
COLUMNS = ["county_fips", "year", "race", "population", "basis", "filled", "reason"]


def cell(frame: pl.DataFrame, county: str, year: int, race: str) -> dict:
    rows = frame.filter(
        (pl.col("county_fips") == county) & (pl.col("year") == year) & (pl.col("race") == race)
    )
    assert rows.height == 1, rows
    return rows.row(0, named=True)


# --------------------------------------------------------------------------------------------------
# load_population: the synth module's contract
# --------------------------------------------------------------------------------------------------


def test_load_population_default_is_the_2010_2019_estimates():
    pop = census.load_population()
    assert pop.columns == ["county_fips", "year", "race", "population", "basis"]
    assert pop["year"].min() == 2010 and pop["year"].max() == 2019
    assert pop["basis"].unique().to_list() == ["pep2019_x_acs2017"]
    assert pop["county_fips"].n_unique() == 3142
    nc_2010 = pop.filter(pl.col("county_fips").str.starts_with("37") & (pl.col("year") == 2010))
    assert nc_2010["population"].sum() == 9_574_310  # DATA.md: July-1 estimate


def test_load_population_each_basis_and_unknown_basis():
    c2000 = census.load_population("census2000_sf1")
    assert c2000["year"].unique().to_list() == [2000]
    assert c2000.height == 3141 * 5
    assert c2000["population"].sum() == 281_421_906  # US 2000 census count
    nc = c2000.filter(pl.col("county_fips").str.starts_with("37"))
    assert nc["county_fips"].n_unique() == 100
    assert nc["population"].sum() == 8_049_313
    assert nc.filter(pl.col("race") == "hispanic")["population"].sum() == 378_963
    sc = c2000.filter(pl.col("county_fips").str.starts_with("45"))
    assert sc["county_fips"].n_unique() == 46
    assert sc["population"].sum() == 4_012_012
    with pytest.raises(SpecificationError, match="basis must be one of"):
        census.load_population("acs2030")


def test_census2000_file_has_every_race_for_every_county():
    c2000 = census.load_population("census2000_sf1")
    per_county = c2000.group_by("county_fips").agg(pl.col("race").sort())
    assert per_county["race"].to_list() == [sorted(census.CENSUS_RACES)] * per_county.height
    assert c2000["population"].min() >= 0


# --------------------------------------------------------------------------------------------------
# population(): shape, precedence, coverage
# --------------------------------------------------------------------------------------------------


def test_population_columns_and_types():
    frame = census.population([MECK], (2010, 2011))
    assert frame.columns == COLUMNS
    assert frame.schema["population"] == pl.Int64
    assert frame.schema["filled"] == pl.Boolean
    assert frame.height == 2 * 5
    assert frame["race"].to_list()[:5] == list(census.CENSUS_RACES)


def test_census_count_beats_estimate_for_nc_2010():
    frame = census.population([MECK], [2010, 2011], ["hispanic"])
    r2010 = cell(frame, MECK, 2010, "hispanic")
    # census2010 file: 111,944; the pep2019_x_acs2017 file has 118,675 for the same cell
    assert (r2010["population"], r2010["basis"], r2010["filled"]) == (111_944, "census2010_pl94171", False)
    r2011 = cell(frame, MECK, 2011, "hispanic")
    assert (r2011["population"], r2011["basis"]) == (121_320, "pep2019_x_acs2017")


def test_nc_2010_totals_come_from_the_census():
    frame = census.population(
        [f"37{n:03d}" for n in range(1, 200, 2)], [2010], ["total", "hispanic"]
    )  # NC county codes are the odd numbers 001-199
    assert frame["basis"].unique().to_list() == ["census2010_pl94171"]
    assert frame.filter(pl.col("race") == "total")["population"].sum() == 9_535_483
    assert frame.filter(pl.col("race") == "hispanic")["population"].sum() == 800_120


def test_sc_2010_is_the_estimate():
    row = cell(census.population([YORK_SC], [2010], ["white"]), YORK_SC, 2010, "white")
    assert row["basis"] == "pep2019_x_acs2017"


def test_2000_is_the_census_count():
    frame = census.population([MECK], [2000], ["hispanic", "white", "total"])
    assert cell(frame, MECK, 2000, "hispanic")["population"] == 44_871
    assert cell(frame, MECK, 2000, "white")["population"] == 425_144
    total = cell(frame, MECK, 2000, "total")
    assert (total["population"], total["basis"], total["filled"]) == (695_454, "census2000_sf1", False)


def test_years_before_coverage_are_null_with_reason_never_carried_back():
    frame = census.population([MECK], (1995, 1999))
    assert frame["population"].null_count() == frame.height
    assert frame["basis"].null_count() == frame.height
    assert not frame["filled"].any()
    assert frame["reason"].unique().to_list() == ["no population data before 2000 in the shipped benchmarks"]


def test_years_after_coverage_are_null_with_reason():
    frame = census.population([MECK], [2020], ["black"])
    row = cell(frame, MECK, 2020, "black")
    assert row["population"] is None
    assert row["reason"] == "no population data after 2019 in the shipped benchmarks"


def test_unknown_county_is_null_with_reason():
    row = cell(census.population(["99999"], [2012], ["white"]), "99999", 2012, "white")
    assert row["population"] is None
    assert row["reason"] == "county 99999 is not in the shipped benchmarks"


def test_renamed_county_2000_count_under_current_code():
    # Shannon County SD (46113 in 2000) is Oglala Lakota (46102) in the vintage-2019 series
    frame = census.population(["46102", "46113"], [2000, 2005], ["white"])
    assert cell(frame, "46102", 2000, "white")["basis"] == "census2000_sf1"
    assert cell(frame, "46102", 2005, "white")["basis"] == "interp_2000_2010"
    assert cell(frame, "46113", 2000, "white")["population"] is None


def test_boundary_changed_counties_are_not_interpolated():
    frame = census.population(["08014", "08001"], [2000, 2005, 2010], ["white"])
    broomfield_2000 = cell(frame, "08014", 2000, "white")
    assert broomfield_2000["population"] is None
    assert "before 2010" in broomfield_2000["reason"]
    for county in ("08014", "08001"):
        row = cell(frame, county, 2005, "white")
        assert row["population"] is None
        assert row["reason"].startswith("county boundaries changed between 2000 and 2010")
    assert cell(frame, "08001", 2000, "white")["population"] == 230_500
    assert cell(frame, "08001", 2010, "white")["population"] == 226_678


def test_retired_code_after_its_last_year():
    row = cell(census.population(["51515"], [2012], ["white"]), "51515", 2012, "white")
    assert row["population"] is None
    assert "no population data after 2000" in row["reason"]


def test_argument_forms_and_errors():
    a = census.population([MECK], (2010, 2012), ["white"])
    b = census.population(MECK, [2012, 2010, 2011], "white")
    assert a.equals(b)
    assert census.population([MECK], 2013, ["white"]).height == 1
    with pytest.raises(SpecificationError, match="race must be one of"):
        census.population([MECK], 2013, ["latino"])
    with pytest.raises(SpecificationError, match="approximate must be one of"):
        census.population([MECK], 2013, approximate="backfill")  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="5-digit"):
        census.population(["3711"], 2013)
    with pytest.raises(SpecificationError, match="first <= last"):
        census.population([MECK], (2019, 2010))


def test_default_counties_cover_the_2019_counties():
    frame = census.population(years=[2015], races=["total"])
    assert frame.filter(pl.col("population").is_not_null())["county_fips"].n_unique() == 3142


# --------------------------------------------------------------------------------------------------
# Interpolation between censuses
# --------------------------------------------------------------------------------------------------


def two_censuses(p0: list[int], p1: list[int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    races = [f"r{i}" for i in range(len(p0))]
    first = pl.DataFrame({"county_fips": "00001", "year": 2000, "race": races, "population": p0})
    second = pl.DataFrame({"county_fips": "00001", "year": 2010, "race": races, "population": p1})
    return first, second


def test_log_linear_midpoint_is_geometric_mean():
    out = census.interpolate_log_linear(*two_censuses([100, 900], [400, 100]))
    assert out["year"].unique().sort().to_list() == list(range(2001, 2010))
    assert out.columns == ["county_fips", "year", "race", "population", "basis", "filled"]
    mid = out.filter(pl.col("year") == 2005).sort("race")["population"].to_list()
    assert mid == [200, 300]  # sqrt(100*400), sqrt(900*100)
    assert out["basis"].unique().to_list() == ["interp_2000_2010"]
    assert out["filled"].all()


def test_log_linear_constant_growth_rate():
    out = census.interpolate_log_linear(*two_censuses([1000], [2000])).sort("year")
    expected = [round(1000 * 2 ** (k / 10)) for k in range(1, 10)]
    assert out["population"].to_list() == expected
    assert expected[0] == 1072 and expected[-1] == 1866  # typed out: 1000 * 2**0.1, 1000 * 2**0.9


def test_zero_endpoint_falls_back_to_linear():
    out = census.interpolate_log_linear(*two_censuses([0], [50])).sort("year")
    assert out["population"].to_list() == [5, 10, 15, 20, 25, 30, 35, 40, 45]


def test_interpolation_needs_both_endpoints_and_ordered_years():
    first, second = two_censuses([100, 10], [400, 10])
    out = census.interpolate_log_linear(first, second.filter(pl.col("race") == "r0"))
    assert out["race"].unique().to_list() == ["r0"]
    with pytest.raises(SpecificationError, match="precede"):
        census.interpolate_log_linear(second, first)
    with pytest.raises(SpecificationError, match="one year"):
        census.interpolate_log_linear(pl.concat([first, second]), second)


def test_shipped_interpolation_mecklenburg():
    frame = census.population([MECK], (2000, 2010), ["hispanic"])
    r2005 = cell(frame, MECK, 2005, "hispanic")
    # geometric mean of 44,871 (2000 census) and 111,944 (2010 census)
    assert r2005["population"] == 70_873 == round(math.sqrt(44_871 * 111_944))
    assert (r2005["basis"], r2005["filled"], r2005["reason"]) == ("interp_2000_2010", True, None)
    assert frame.filter(pl.col("year").is_between(2001, 2009))["filled"].all()
    assert frame["population"].null_count() == 0


# --------------------------------------------------------------------------------------------------
# Approximations (opt-in)
# --------------------------------------------------------------------------------------------------


def test_nearest_carries_the_nearest_year_and_flags_it():
    frame = census.population([MECK], [1999, 2020], ["hispanic"], approximate="nearest")
    before = cell(frame, MECK, 1999, "hispanic")
    assert (before["population"], before["basis"]) == (44_871, "census2000_sf1+nearest")
    assert before["filled"]
    assert before["reason"] is None
    after = cell(frame, MECK, 2020, "hispanic")
    assert (after["population"], after["basis"]) == (142_727, "pep2019_x_acs2017+nearest")


def test_nearest_does_not_touch_covered_years():
    plain = census.population([MECK], (2000, 2019))
    approx = census.population([MECK], (2000, 2019), approximate="nearest")
    assert plain.equals(approx)


def test_nearest_never_crosses_a_boundary_change():
    frame = census.population(["08001", "08014"], [2003], ["white"], approximate="nearest")
    # 2000 is nearer to 2003, but Adams County lost area to Broomfield in 2001: the 2010 value is used
    adams = cell(frame, "08001", 2003, "white")
    assert (adams["population"], adams["basis"]) == (226_678, "pep2019_x_acs2017+nearest")
    assert cell(frame, "08014", 2003, "white")["population"] == 43_638


def test_carry_2010_shares():
    frame = census.population([MECK], [1995], ["white", "total"], approximate="carry_2010_shares")
    white = cell(frame, MECK, 1995, "white")
    # 2000 census total 695,454 x 2010 census white share 465,372 / 919,628
    assert white["population"] == 351_930
    assert (white["basis"], white["filled"]) == ("census2000_sf1+carry_2010_shares", True)
    assert cell(frame, MECK, 1995, "total")["filled"]


def test_approximation_leaves_null_when_nothing_to_carry():
    row = cell(census.population(["99999"], [2012], ["white"], approximate="nearest"), "99999", 2012, "white")
    assert row["population"] is None and row["reason"] is not None


# --------------------------------------------------------------------------------------------------
# Total and Hispanic share
# --------------------------------------------------------------------------------------------------


def test_total_is_sum_of_races_and_null_if_any_race_null():
    frame = census.population([MECK], [2010, 1999], None)
    with_total = census.population([MECK], [2010, 1999], [*census.CENSUS_RACES, "total"])
    assert cell(with_total, MECK, 2010, "total")["population"] == 919_628
    assert frame.filter(pl.col("year") == 2010)["population"].sum() == 919_628
    total_1999 = cell(with_total, MECK, 1999, "total")
    assert total_1999["population"] is None and "before 2000" in total_1999["reason"]


def test_hispanic_share():
    share = census.hispanic_share([MECK, YORK_SC], (1999, 2011))
    assert share.columns == ["county_fips", "year", "hispanic_share", "basis", "filled"]
    assert share.height == 2 * 13
    row = share.filter((pl.col("county_fips") == MECK) & (pl.col("year") == 2010)).row(0, named=True)
    assert row["hispanic_share"] == pytest.approx(111_944 / 919_628)
    assert (row["basis"], row["filled"]) == ("census2010_pl94171", False)
    r2000 = share.filter((pl.col("county_fips") == MECK) & (pl.col("year") == 2000)).row(0, named=True)
    assert r2000["hispanic_share"] == pytest.approx(44_871 / 695_454)
    r2005 = share.filter((pl.col("county_fips") == MECK) & (pl.col("year") == 2005)).row(0, named=True)
    assert r2005["filled"] and r2005["basis"] == "interp_2000_2010"
    assert 44_871 / 695_454 < r2005["hispanic_share"] < 111_944 / 919_628
    r1999 = share.filter((pl.col("county_fips") == MECK) & (pl.col("year") == 1999)).row(0, named=True)
    assert r1999["hispanic_share"] is None


# --------------------------------------------------------------------------------------------------
# require_population
# --------------------------------------------------------------------------------------------------


def test_require_population_passes_covered_frames_including_interpolated():
    frame = census.population([MECK], (2000, 2019))
    assert census.require_population(frame, allow_approximation=False) is frame


def test_require_population_names_null_counties_and_years():
    frame = census.population([MECK, YORK_SC], (1998, 2001))
    with pytest.raises(SpecificationError) as info:
        census.require_population(frame, allow_approximation=False)
    message = str(info.value)
    assert "37119 1998" in message and "37119 1999" in message and "45091 1999" in message
    assert "37119 2000" not in message
    assert "approximate='nearest'" in message
    assert "before 2000" in message


def test_require_population_refuses_unconsented_approximation():
    frame = census.population([MECK], (1999, 2000), approximate="nearest")
    with pytest.raises(SpecificationError, match=r"approximated.*37119 1999"):
        census.require_population(frame, allow_approximation=False)
    assert census.require_population(frame, allow_approximation=True) is frame


def test_require_population_works_on_panel_like_frames():
    panel = pl.DataFrame(
        {"county_fips": ["37119", "37119"], "period": [24120, 24121], "population": [None, 5]},
        schema={"county_fips": pl.String, "period": pl.Int64, "population": pl.Int64},
    )
    with pytest.raises(SpecificationError, match="37119 24120"):
        census.require_population(panel, allow_approximation=True)
    with pytest.raises(SpecificationError, match="'population' column"):
        census.require_population(panel.drop("population"), allow_approximation=True)
