"""Population by county × year × race from the shipped census benchmarks.

Every value carries its ``basis`` (where it comes from) and a ``filled`` flag (True when it was derived
rather than read). Races are the OPP census categories, non-Hispanic except ``hispanic``: white, black,
hispanic, asian/pacific islander (Asian + Native Hawaiian and Other Pacific Islander), other (American
Indian and Alaska Native, some other race, two or more races).

Shipped tables (``data/census/``, sources in ``data/census/SOURCES.md``):

========================  =============  ==========  ====================================================
basis                     counties       years       what it is
========================  =============  ==========  ====================================================
``census2000_sf1``        all (2000)     2000        Census 2000 SF1 table P8, 100% counts (April 1)
``census2010_pl94171``    NC only        2010        Census 2010 redistricting counts (April 1)
``pep2019_x_acs2017``     all (2019)     2010-2019   July-1 county totals (vintage 2019) × ACS 2013-17
                                                     race shares; **race shares are fixed, only totals
                                                     vary by year**
========================  =============  ==========  ====================================================

Precedence (:func:`population`): a census count beats an estimate for the same county, year and race
(NC 2010 comes from ``census2010_pl94171``, not ``pep2019_x_acs2017``); a value read from a table beats
one interpolated between censuses; nothing is ever carried backward or invented unless the caller asks
for a documented approximation with ``approximate=``.

Between two benchmark years of a county and race (2000 and 2010), the years in between are interpolated
log-linearly (basis ``interp_2000_2010``, ``filled=True``). Years outside the shipped data are NULL with
a ``reason``.

References
----------
.. [1] U.S. Census Bureau, Census 2000 Summary File 1, table P8 "Hispanic or Latino by race".
.. [2] U.S. Census Bureau, 2010 Census Redistricting Data (P.L. 94-171) Summary File.
.. [3] U.S. Census Bureau, County population totals, vintage 2019 (co-est2019-alldata); American
   Community Survey 2013-2017 5-year estimates, table B03002.
.. [4] U.S. Census Bureau, "Substantial changes to counties and county equivalent entities".
   https://www.census.gov/programs-surveys/geography/technical-documentation/county-changes.html
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Final, Literal

import polars as pl

from stopdisparity.errors import ReferenceDataError, SpecificationError, check_choice
from stopdisparity.resources import data_path

__all__ = [
    "APPROXIMATIONS",
    "CENSUS_RACES",
    "POPULATION_FILES",
    "hispanic_share",
    "interpolate_log_linear",
    "load_population",
    "population",
    "require_population",
]

POPULATION_SCHEMA = {
    "county_fips": pl.String,
    "year": pl.Int32,
    "race": pl.String,
    "population": pl.Int64,
    "basis": pl.String,
}

#: Shipped population tables by basis.
POPULATION_FILES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "pep2019_x_acs2017": "county_population_race.csv",
        "census2010_pl94171": "nc_county_population_race_census2010.csv",
        "census2000_sf1": "county_population_race_census2000.csv",
    }
)

#: Precedence of the shipped tables: lower wins when several give the same county, year and race.
#: Census counts (0) beat estimates (1).
BASIS_RANK: Final[Mapping[str, int]] = MappingProxyType(
    {"census2000_sf1": 0, "census2010_pl94171": 0, "pep2019_x_acs2017": 1}
)

#: The census race categories, non-Hispanic except ``hispanic``.
CENSUS_RACES: Final = ("white", "black", "hispanic", "asian/pacific islander", "other")

#: Pseudo-race: the sum of the five races.
TOTAL: Final = "total"

#: Approximations a caller may opt in to; see :func:`population`.
APPROXIMATIONS: Final = ("none", "nearest", "carry_2010_shares")

Approximation = Literal["none", "nearest", "carry_2010_shares"]

#: Codes that changed between the 2000 census and the vintage-2019 benchmark with the same area; 2000
#: counts are shown under the current code [4]_.
RENAMED_SINCE_2000: Final[Mapping[str, str]] = MappingProxyType(
    {
        "46113": "46102",  # Shannon County SD -> Oglala Lakota County (2015)
        "02270": "02158",  # Wade Hampton Census Area AK -> Kusilvak Census Area (2015)
    }
)

#: Counties (vintage-2019 codes) whose area changed between two benchmark years; the years between
#: are not interpolated, and approximations never take a value across the change [4]_.
BOUNDARY_CHANGES: Final[Mapping[tuple[int, int], frozenset[str]]] = MappingProxyType(
    {
        (2000, 2010): frozenset(
            {
                # Broomfield CO (08014) created in 2001 from parts of Adams, Boulder, Jefferson, Weld.
                "08001",
                "08013",
                "08014",
                "08059",
                "08123",
                # Alaska 2007-2013: Skagway-Hoonah-Angoon and Wrangell-Petersburg split; Prince of
                # Wales-Outer Ketchikan became Prince of Wales-Hyder, part went to Ketchikan Gateway.
                "02105",
                "02130",
                "02195",
                "02198",
                "02230",
                "02275",
                # Virginia: Clifton Forge city into Alleghany (2001); Bedford city into Bedford (2013;
                # the vintage-2019 series includes it in Bedford County back to 2010).
                "51005",
                "51019",
            }
        ),
    }
)

_KEYS = ("county_fips", "year", "race")
_OUT_SCHEMA = {
    "county_fips": pl.String,
    "year": pl.Int32,
    "race": pl.String,
    "population": pl.Int64,
    "basis": pl.String,
    "filled": pl.Boolean,
    "reason": pl.String,
}
_APPROXIMATED_SUFFIXES = ("+nearest", "+carry_2010_shares")


@cache
def _read(basis: str) -> pl.DataFrame:
    frame = pl.read_csv(data_path("census", POPULATION_FILES[basis]), schema=POPULATION_SCHEMA)
    bad = frame.filter(pl.col("basis") != basis)
    if bad.height:
        raise ReferenceDataError(
            f"census file {POPULATION_FILES[basis]} has basis {bad['basis'][0]!r} in some rows; "
            f"expected {basis!r} throughout"
        )
    return frame


def load_population(basis: str = "pep2019_x_acs2017") -> pl.DataFrame:
    """County population by year and race for one shipped ``basis``, as shipped.

    Parameters
    ----------
    basis : str, default "pep2019_x_acs2017"
        One of :data:`POPULATION_FILES`.

    Returns
    -------
    polars.DataFrame
        Columns county_fips (5-digit string, the table's own codes), year, race, population, basis.

    Raises
    ------
    SpecificationError
        If ``basis`` is not a shipped one.

    See Also
    --------
    population : all tables combined, with precedence, interpolation and NULL-with-reason.
    """
    check_choice("basis", basis, POPULATION_FILES)
    return _read(basis)


# --------------------------------------------------------------------------------------------------
# Interpolation between benchmark years
# --------------------------------------------------------------------------------------------------


def interpolate_log_linear(
    first: pl.DataFrame, second: pl.DataFrame, *, basis: str | None = None
) -> pl.DataFrame:
    """Fill the years between two benchmarks of each county and race by log-linear interpolation.

    Parameters
    ----------
    first, second : polars.DataFrame
        Columns county_fips, year, race, population; each frame holds one year, ``first`` before
        ``second``. Only county × race pairs present in both, with non-null population, are filled.
    basis : str, optional
        Basis of the filled values; default ``f"interp_{y0}_{y1}"``.

    Returns
    -------
    polars.DataFrame
        Columns county_fips, year, race, population (Int64), basis, filled (True) for the years strictly
        between the two benchmarks.

    Raises
    ------
    SpecificationError
        If a frame holds several years, or ``first`` is not earlier than ``second``.

    Notes
    -----
    With :math:`w = (t - y_0)/(y_1 - y_0)`, :math:`P_t = P_{y_0}^{1-w} P_{y_1}^{w}`, i.e. a constant
    annual growth rate; at the midpoint this is the geometric mean of the two counts. If either count is
    0 the log-linear path is undefined (it would stay at 0 until the last year), so that pair is
    interpolated linearly instead. Values are rounded to whole persons.

    Examples
    --------
    >>> a = pl.DataFrame({"county_fips": ["1"], "year": [2000], "race": ["white"], "population": [100]})
    >>> b = a.with_columns(year=pl.lit(2010), population=pl.lit(400))
    >>> interpolate_log_linear(a, b).filter(pl.col("year") == 2005)["population"].item()
    200
    """
    years0, years1 = first["year"].unique().to_list(), second["year"].unique().to_list()
    if len(years0) != 1 or len(years1) != 1:
        raise SpecificationError(
            f"each benchmark frame must hold one year; got {sorted(years0)} and {sorted(years1)}"
        )
    y0, y1 = int(years0[0]), int(years1[0])
    if y1 <= y0:
        raise SpecificationError(f"the first benchmark year must precede the second; got {y0} and {y1}")
    label = basis or f"interp_{y0}_{y1}"
    pairs = (
        first.select("county_fips", "race", p0=pl.col("population").cast(pl.Float64))
        .join(
            second.select("county_fips", "race", p1=pl.col("population").cast(pl.Float64)),
            on=["county_fips", "race"],
        )
        .drop_nulls(["p0", "p1"])
    )
    between = pl.DataFrame({"year": list(range(y0 + 1, y1))}, schema={"year": pl.Int32})
    w = (pl.col("year") - y0) / (y1 - y0)
    log_linear = ((1 - w) * pl.col("p0").log() + w * pl.col("p1").log()).exp()
    linear = (1 - w) * pl.col("p0") + w * pl.col("p1")
    return (
        pairs.join(between, how="cross")
        .with_columns(
            population=pl.when((pl.col("p0") > 0) & (pl.col("p1") > 0))
            .then(log_linear)
            .otherwise(linear)
            .round(0)
            .cast(pl.Int64),
            basis=pl.lit(label, pl.String),
            filled=pl.lit(True),
        )
        .select("county_fips", "year", "race", "population", "basis", "filled")
        .sort("county_fips", "year", "race")
    )


# --------------------------------------------------------------------------------------------------
# The combined table
# --------------------------------------------------------------------------------------------------


def _observed() -> pl.DataFrame:
    """All shipped tables, vintage-2019 codes, one row per key chosen by :data:`BASIS_RANK`."""
    frames = []
    for basis in POPULATION_FILES:
        frame = _read(basis)
        if basis == "census2000_sf1":
            frame = frame.with_columns(pl.col("county_fips").replace(dict(RENAMED_SINCE_2000)))
        frames.append(frame.with_columns(rank=pl.lit(BASIS_RANK[basis], pl.Int8)))
    return (
        pl.concat(frames)
        .sort([*_KEYS, "rank"])
        .unique(_KEYS, keep="first", maintain_order=True)
        .drop("rank")
        .with_columns(filled=pl.lit(False))
    )


@cache
def _resolved() -> pl.DataFrame:
    """Every known value: shipped tables by precedence, plus interpolation between benchmark years."""
    observed = _observed()
    pieces = [observed]
    for (y0, y1), changed in BOUNDARY_CHANGES.items():
        keep = ~pl.col("county_fips").is_in(list(changed))
        first = observed.filter(pl.col("year") == y0, keep)
        second = observed.filter(pl.col("year") == y1, keep)
        if first.height and second.height:
            pieces.append(interpolate_log_linear(first, second))
    merged = pl.concat(pieces, how="diagonal_relaxed")
    # An interpolated value never replaces one read from a table.
    return merged.sort([*_KEYS, "filled"]).unique(_KEYS, keep="first").sort(list(_KEYS))


def _normalize_years(years: tuple[int, int] | Sequence[int] | int) -> list[int]:
    if isinstance(years, bool):
        raise SpecificationError(f"years must be (first, last) or a sequence of years; got {years!r}")
    if isinstance(years, int):
        return [years]
    if isinstance(years, tuple) and len(years) == 2:
        first, last = years
        if not all(isinstance(y, int) and not isinstance(y, bool) for y in years) or first > last:
            raise SpecificationError(
                f"years as a tuple means (first, last) with first <= last; got {years!r}"
            )
        return list(range(first, last + 1))
    values = list(years)
    if not values or not all(isinstance(y, int) and not isinstance(y, bool) for y in values):
        raise SpecificationError(
            f"years must be (first, last) or a non-empty sequence of integer years; got {years!r}"
        )
    return sorted(set(values))


def _normalize_counties(counties: Iterable[str] | str | None, known: list[str]) -> list[str]:
    if counties is None:
        return known
    values = [counties] if isinstance(counties, str) else list(counties)
    bad = [c for c in values if not (isinstance(c, str) and len(c) == 5 and c.isdigit())]
    if bad:
        raise SpecificationError(f"counties must be 5-digit FIPS strings; got {bad[:5]!r}")
    return sorted(set(values))


def _normalize_races(races: Iterable[str] | str | None) -> list[str]:
    if races is None:
        return list(CENSUS_RACES)
    values = [races] if isinstance(races, str) else list(races)
    for race in values:
        check_choice("race", race, (*CENSUS_RACES, TOTAL))
    return list(dict.fromkeys(values))


def _changed_window(county: pl.Expr) -> pl.Expr:
    """The (first, last) benchmark years around a boundary change of ``county``, or nulls."""
    expr_first: pl.Expr = pl.lit(None, pl.Int32)
    expr_last: pl.Expr = pl.lit(None, pl.Int32)
    for (y0, y1), changed in BOUNDARY_CHANGES.items():
        hit = county.is_in(list(changed))
        expr_first = pl.when(hit).then(pl.lit(y0, pl.Int32)).otherwise(expr_first)
        expr_last = pl.when(hit).then(pl.lit(y1, pl.Int32)).otherwise(expr_last)
    return pl.struct(first=expr_first, last=expr_last)


def _reasons(grid: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """``grid`` with a ``reason`` column saying why each NULL population is NULL."""
    lo, hi = int(known["year"].min()), int(known["year"].max())  # type: ignore[arg-type]
    span = known.group_by("county_fips").agg(c_lo=pl.col("year").min(), c_hi=pl.col("year").max())
    window = _changed_window(pl.col("county_fips"))
    in_change = (pl.col("year") > window.struct.field("first")) & (
        pl.col("year") < window.struct.field("last")
    )
    reason = (
        pl.when(pl.col("population").is_not_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("c_lo").is_null())
        .then(pl.format("county {} is not in the shipped benchmarks", pl.col("county_fips")))
        .when(pl.col("year") < lo)
        .then(pl.lit(f"no population data before {lo} in the shipped benchmarks"))
        .when(pl.col("year") > hi)
        .then(pl.lit(f"no population data after {hi} in the shipped benchmarks"))
        .when(in_change.fill_null(False))
        .then(
            pl.format(
                "county boundaries changed between {} and {}; the years between are not interpolated",
                window.struct.field("first"),
                window.struct.field("last"),
            )
        )
        .when(pl.col("year") < pl.col("c_lo"))
        .then(
            pl.format(
                "county {} has no population data before {} in the shipped benchmarks (newer code)",
                pl.col("county_fips"),
                pl.col("c_lo"),
            )
        )
        .when(pl.col("year") > pl.col("c_hi"))
        .then(
            pl.format(
                "county {} has no population data after {} in the shipped benchmarks "
                "(code retired, merged or renamed)",
                pl.col("county_fips"),
                pl.col("c_hi"),
            )
        )
        .otherwise(pl.lit("no population data for this county, year and race in the shipped benchmarks"))
    )
    return grid.join(span, on="county_fips", how="left").with_columns(reason=reason).drop("c_lo", "c_hi")


def _donor_allowed(target: pl.Expr, donor: pl.Expr, county: pl.Expr) -> pl.Expr:
    """False when a boundary change of ``county`` separates the donor year from the target year."""
    window = _changed_window(county)
    first, last = window.struct.field("first"), window.struct.field("last")
    across = pl.when(target > first).then(donor < last).otherwise(donor > first)
    return first.is_null() | ~across


def _nearest(missing: pl.DataFrame, donors: pl.DataFrame) -> pl.DataFrame:
    """For each missing key, the donor row of the same county and race in the nearest allowed year.

    Ties (equally near years before and after) go to the later year.
    """
    candidates = missing.select(*_KEYS).join(
        donors.select("county_fips", "race", d_year=pl.col("year"), d_pop="population", d_basis="basis"),
        on=["county_fips", "race"],
    )
    return (
        candidates.filter(_donor_allowed(pl.col("year"), pl.col("d_year"), pl.col("county_fips")))
        .with_columns(distance=(pl.col("year") - pl.col("d_year")).abs())
        .sort([*_KEYS, "distance", "d_year"], descending=[False, False, False, False, True])
        .unique(_KEYS, keep="first")
    )


def _approximate(frame: pl.DataFrame, approximate: Approximation, known: pl.DataFrame) -> pl.DataFrame:
    missing = frame.filter(pl.col("population").is_null())
    if approximate == "none" or missing.height == 0:
        return frame
    if approximate == "nearest":
        found = _nearest(missing, known).select(
            *_KEYS,
            a_pop=pl.col("d_pop"),
            a_basis=pl.col("d_basis") + "+nearest",
        )
    else:  # carry_2010_shares: nearest complete total, split by the county's 2010 race shares
        totals = (
            known.group_by("county_fips", "year")
            .agg(
                population=pl.col("population").sum(),
                n=pl.len(),
                basis=pl.col("basis").unique().sort().str.join("|"),
            )
            .filter(pl.col("n") == len(CENSUS_RACES))
            .drop("n")
            .with_columns(race=pl.lit(TOTAL))
        )
        shares = known.filter(pl.col("year") == 2010).with_columns(
            share=pl.col("population") / pl.col("population").sum().over("county_fips")
        )
        want = missing.select("county_fips", "year", "race").unique()
        donor_total = _nearest(want.with_columns(race=pl.lit(TOTAL)).unique(), totals).select(
            "county_fips", "year", "d_pop", "d_basis"
        )
        found = (
            want.join(donor_total, on=["county_fips", "year"])
            .join(shares.select("county_fips", "race", "share"), on=["county_fips", "race"])
            .select(
                *_KEYS,
                a_pop=(pl.col("d_pop") * pl.col("share")).round(0).cast(pl.Int64),
                a_basis=pl.col("d_basis") + "+carry_2010_shares",
            )
        )
    return (
        frame.join(found, on=list(_KEYS), how="left")
        .with_columns(
            population=pl.coalesce("population", "a_pop"),
            basis=pl.coalesce("basis", "a_basis"),
            filled=pl.col("filled") | pl.col("a_pop").is_not_null(),
            reason=pl.when(pl.col("a_pop").is_not_null()).then(None).otherwise(pl.col("reason")),
        )
        .drop("a_pop", "a_basis")
    )


def _add_total(frame: pl.DataFrame) -> pl.DataFrame:
    five = frame.filter(pl.col("race").is_in(CENSUS_RACES))
    total = five.group_by("county_fips", "year").agg(
        population=pl.when(pl.col("population").null_count() == 0)
        .then(pl.col("population").sum())
        .otherwise(None),
        basis=pl.when(pl.col("population").null_count() == 0)
        .then(pl.col("basis").unique().sort().str.join("|"))
        .otherwise(None),
        filled=pl.when(pl.col("population").null_count() == 0).then(pl.col("filled").any()).otherwise(False),
        reason=pl.col("reason").drop_nulls().first(),
    )
    return pl.concat([frame, total.with_columns(race=pl.lit(TOTAL)).select(frame.columns)])


def population(
    counties: Iterable[str] | str | None = None,
    years: tuple[int, int] | Sequence[int] | int = (2010, 2019),
    races: Iterable[str] | str | None = None,
    *,
    approximate: Approximation = "none",
) -> pl.DataFrame:
    """Population by county × year × race from every shipped table, with basis, filled flag and reason.

    Parameters
    ----------
    counties : iterable of str, optional
        5-digit county FIPS codes (vintage-2019 geography). Default: every county in the shipped tables.
        A code in no table gives NULL rows with a reason.
    years : (int, int) or sequence of int or int, default (2010, 2019)
        A 2-tuple is the inclusive range (first, last); any other sequence lists the years.
    races : iterable of str, optional
        Any of :data:`CENSUS_RACES` and ``"total"`` (the sum of the five races; NULL if any is NULL).
        Default: the five races.
    approximate : {"none", "nearest", "carry_2010_shares"}, default "none"
        What to do with a county-year-race that the shipped data do not cover:

        - ``"none"``: leave it NULL, with ``reason`` saying why.
        - ``"nearest"``: take the same county and race from the nearest year that has a value (the later
          year on a tie). ``basis`` is the donor's basis + ``"+nearest"``.
        - ``"carry_2010_shares"``: take the county's total from the nearest year with all five races,
          split by the county's 2010 race shares. ``basis`` is the donor total's basis +
          ``"+carry_2010_shares"``.

        Approximated values have ``filled=True``; a value is never taken across a county boundary change
        (:data:`BOUNDARY_CHANGES`), so such cells may stay NULL.

    Returns
    -------
    polars.DataFrame
        One row per requested county × year × race, sorted, with columns county_fips, year (Int32),
        race, population (Int64, NULL when unknown), basis (NULL when population is NULL), filled
        (bool), reason (NULL, or why population is NULL).

    Raises
    ------
    SpecificationError
        If an argument is malformed or a race or approximation is unknown.

    Notes
    -----
    Precedence for one county, year and race: a census count (``census2000_sf1``,
    ``census2010_pl94171``) beats an estimate (``pep2019_x_acs2017``); a value read from a table beats
    one interpolated between benchmark years (``interp_2000_2010``, ``filled=True``, see
    :func:`interpolate_log_linear`). So NC 2010 is the April-1 census count, while 2011-2019 are July-1
    estimates × ACS 2013-17 shares: NC's race counts step between 2010 and 2011, and in the 2010-2019
    estimates only totals change by year. The 2000-2010 interpolation runs from the 2000 census to the
    2010 value chosen by this precedence (a census count in NC, an estimate × ACS shares elsewhere).
    The 2000 counts of the two renamed counties (:data:`RENAMED_SINCE_2000`) appear under their
    current codes; counties whose area changed (:data:`BOUNDARY_CHANGES`) are not interpolated.

    Examples
    --------
    >>> population(["37119"], [2010], ["hispanic"])["population"].item()
    111944
    """
    check_choice("approximate", approximate, APPROXIMATIONS)
    known = _resolved()
    wanted_years = _normalize_years(years)
    wanted_counties = _normalize_counties(counties, known["county_fips"].unique().sort().to_list())
    wanted_races = _normalize_races(races)
    base_races = [r for r in CENSUS_RACES if r in wanted_races or TOTAL in wanted_races]

    grid = (
        pl.DataFrame({"county_fips": wanted_counties}, schema={"county_fips": pl.String})
        .join(pl.DataFrame({"year": wanted_years}, schema={"year": pl.Int32}), how="cross")
        .join(pl.DataFrame({"race": base_races}, schema={"race": pl.String}), how="cross")
    )
    frame = grid.join(
        known.select(*_KEYS, "population", "basis", "filled"), on=list(_KEYS), how="left"
    ).with_columns(pl.col("filled").fill_null(False))
    frame = _reasons(frame, known)
    frame = _approximate(frame, approximate, known)
    if TOTAL in wanted_races:
        frame = _add_total(frame)
    order = {race: i for i, race in enumerate(wanted_races)}
    return (
        frame.filter(pl.col("race").is_in(wanted_races))
        .with_columns(_order=pl.col("race").replace_strict(order, return_dtype=pl.Int32))
        .sort("county_fips", "year", "_order")
        .drop("_order")
        .select(list(_OUT_SCHEMA))
        .cast(_OUT_SCHEMA)
    )


def hispanic_share(
    counties: Iterable[str] | str | None = None,
    years: tuple[int, int] | Sequence[int] | int = (2010, 2019),
    *,
    approximate: Approximation = "none",
) -> pl.DataFrame:
    """The Hispanic share of each county's population, for use as a panel covariate.

    Parameters
    ----------
    counties, years, approximate
        As in :func:`population`.

    Returns
    -------
    polars.DataFrame
        Columns county_fips, year, hispanic_share (Float64 in [0, 1]; NULL when the population is
        unknown or zero), basis (of the county's five race counts, ``|``-joined if they differ), filled
        (True if any count behind it was filled).

    Notes
    -----
    In the ``pep2019_x_acs2017`` years the race shares are the ACS 2013-17 shares, so the share is
    constant over 2011-2019 (and 2010 outside NC); it moves only between the 2000 census and 2010.
    """
    total = population(counties, years, [TOTAL, "hispanic"], approximate=approximate)
    wide = total.pivot(on="race", index=["county_fips", "year"], values=["population", "basis", "filled"])
    return wide.select(
        "county_fips",
        "year",
        hispanic_share=pl.when(pl.col(f"population_{TOTAL}") > 0).then(
            pl.col("population_hispanic") / pl.col(f"population_{TOTAL}")
        ),
        basis=pl.col(f"basis_{TOTAL}"),
        filled=pl.col(f"filled_{TOTAL}"),
    ).sort("county_fips", "year")


def require_population(
    frame: pl.DataFrame, *, allow_approximation: bool, max_listed: int = 10
) -> pl.DataFrame:
    """Refuse a frame whose population is NULL (or approximated without consent) for per-capita output.

    Share models never need population; call this only where a rate per person is computed.

    Parameters
    ----------
    frame : polars.DataFrame
        Must have ``population``; ``county_fips`` and ``year`` (or ``period``) name the offending rows.
        A ``basis`` (or ``population_basis``) column, if present, shows which values were approximated.
    allow_approximation : bool
        Whether the caller opted in to an approximation (``approximate=`` other than ``"none"``). If
        False, values whose basis ends in ``+nearest`` or ``+carry_2010_shares`` are refused too.
        Values interpolated between censuses (``interp_*``) are shipped data, not an approximation.
    max_listed : int, default 10
        How many county-years to name in the message.

    Returns
    -------
    polars.DataFrame
        ``frame`` unchanged, so the call can be chained.

    Raises
    ------
    SpecificationError
        Naming the counties and years with NULL (or unconsented approximated) population and how to
        opt in to an approximation.
    """
    if "population" not in frame.columns:
        raise SpecificationError(
            f"per-capita output needs a 'population' column; the frame has {frame.columns}"
        )
    time_col = next((c for c in ("year", "period") if c in frame.columns), None)
    where = [c for c in ("county_fips", time_col) if c is not None and c in frame.columns]

    def listing(rows: pl.DataFrame) -> str:
        if not where:
            return f"{rows.height} rows"
        keys = rows.select(where).unique().sort(where)
        shown = ", ".join(" ".join(str(v) for v in row) for row in keys.head(max_listed).iter_rows())
        more = f" and {keys.height - max_listed} more" if keys.height > max_listed else ""
        return f"{keys.height} {'/'.join(where)} ({shown}{more})"

    missing = frame.filter(pl.col("population").is_null())
    if missing.height:
        reasons = ""
        if "reason" in missing.columns:
            found = missing["reason"].drop_nulls().unique().sort().to_list()
            reasons = f" Reasons: {'; '.join(found[:3])}." if found else ""
        hint = (
            "Even with the approximation you chose, no value could be given; narrow the counties or years."
            if allow_approximation
            else "Restrict the years/counties to the benchmark coverage, or opt in to a documented "
            "approximation with approximate='nearest' or approximate='carry_2010_shares' (the lineage "
            "records it)."
        )
        raise SpecificationError(
            f"per-capita output needs population, but it is NULL for {listing(missing)}.{reasons} {hint}"
        )
    basis_col = next((c for c in ("basis", "population_basis") if c in frame.columns), None)
    if not allow_approximation and basis_col is not None:
        approximated = frame.filter(
            pl.any_horizontal(pl.col(basis_col).str.contains(s, literal=True) for s in _APPROXIMATED_SUFFIXES)
        )
        if approximated.height:
            raise SpecificationError(
                f"population was approximated ({', '.join(_APPROXIMATED_SUFFIXES)}) for "
                f"{listing(approximated)} but allow_approximation=False; pass allow_approximation=True "
                "to accept it, or rebuild with approximate='none'"
            )
    return frame
