"""Population by county × year × race from the shipped census benchmarks.

Shipped tables (see ``data/census/SOURCES.md``): Census population estimates 2010–2019 (vintage 2019)
times ACS 2013–17 race shares for every county (basis ``pep2019_x_acs2017``), and the 2010 census
counts for North Carolina (basis ``census2010_pl94171``). Races are non-Hispanic except ``hispanic``.
"""

from __future__ import annotations

from functools import cache

import polars as pl

from stopdisparity.resources import data_path

POPULATION_SCHEMA = {
    "county_fips": pl.String,
    "year": pl.Int32,
    "race": pl.String,
    "population": pl.Int64,
    "basis": pl.String,
}

POPULATION_FILES = {
    "pep2019_x_acs2017": "county_population_race.csv",
    "census2010_pl94171": "nc_county_population_race_census2010.csv",
}


@cache
def _read(basis: str) -> pl.DataFrame:
    return pl.read_csv(data_path("census", POPULATION_FILES[basis]), schema=POPULATION_SCHEMA)


def load_population(basis: str = "pep2019_x_acs2017") -> pl.DataFrame:
    """County population by year and race for one shipped ``basis``.

    Columns: county_fips (5-digit string), year, race, population, basis.
    """
    from stopdisparity.errors import check_choice

    check_choice("basis", basis, POPULATION_FILES)
    return _read(basis)
