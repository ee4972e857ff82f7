"""County geography: FIPS codes, names, centroids and adjacency (Census 2010/2016 geography).

The shipped centroids (``data/geo/county_centroids.csv``) hold the Census 2016 county set; the adjacency
file (``data/geo/county_adjacency.csv``) uses 2010 codes, which differ for three counties (see
:func:`canonical_fips`).

County names in stop files are written in many ways ("Mc Dowell County", "WAKE", "Orleans Parish",
"Richmond city"). :func:`normalize_county_name` reduces a name to a matching key, and
:func:`resolve_counties` maps distinct (state, county name) pairs to 5-digit FIPS codes through the
lookup table of :func:`county_key_table`, listing every pair it cannot resolve with a reason instead of
raising.

References
----------
.. [1] U.S. Census Bureau, "ANSI/FIPS codes: states and counties".
   https://www.census.gov/library/reference/code-lists/ansi.html
.. [2] U.S. Census Bureau, "Substantial changes to counties and county equivalent entities: 1970-present".
   https://www.census.gov/programs-surveys/geography/technical-documentation/county-changes.html
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from types import MappingProxyType
from typing import NamedTuple

import polars as pl

from stopdisparity.errors import ReferenceDataError, SpecificationError
from stopdisparity.resources import data_path

__all__ = [
    "STATE_FIPS",
    "CountyResolution",
    "canonical_fips",
    "county_adjacency",
    "county_centroids",
    "county_key_table",
    "normalize_county_name",
    "resolve_counties",
    "state_from_fips",
]


@cache
def county_centroids() -> pl.DataFrame:
    """County FIPS, name, state (2-letter), and the geographic centroid (lat, lng)."""
    return pl.read_csv(
        data_path("geo", "county_centroids.csv"),
        schema={
            "county_fips": pl.String,
            "county_name": pl.String,
            "state": pl.String,
            "lat": pl.Float64,
            "lng": pl.Float64,
        },
    )


@cache
def county_adjacency() -> pl.DataFrame:
    """Ordered pairs of adjacent counties (symmetric, no self-pairs)."""
    return pl.read_csv(
        data_path("geo", "county_adjacency.csv"),
        schema={"county_fips": pl.String, "neighbor_fips": pl.String},
    )


# --------------------------------------------------------------------------------------------------
# States
# --------------------------------------------------------------------------------------------------

STATE_FIPS: Mapping[str, str] = MappingProxyType(
    {
        "AL": "01", "AK": "02", "AZ": "04", "AR": "05", "CA": "06", "CO": "08", "CT": "09", "DE": "10",
        "DC": "11", "FL": "12", "GA": "13", "HI": "15", "ID": "16", "IL": "17", "IN": "18", "IA": "19",
        "KS": "20", "KY": "21", "LA": "22", "ME": "23", "MD": "24", "MA": "25", "MI": "26", "MN": "27",
        "MS": "28", "MO": "29", "MT": "30", "NE": "31", "NV": "32", "NH": "33", "NJ": "34", "NM": "35",
        "NY": "36", "NC": "37", "ND": "38", "OH": "39", "OK": "40", "OR": "41", "PA": "42", "RI": "44",
        "SC": "45", "SD": "46", "TN": "47", "TX": "48", "UT": "49", "VT": "50", "VA": "51", "WA": "53",
        "WV": "54", "WI": "55", "WY": "56", "PR": "72",
    }
)  # fmt: skip
"""Postal code → 2-digit FIPS code for the 50 states, DC and Puerto Rico (read-only)."""

_STATE_BY_FIPS: Mapping[str, str] = MappingProxyType({v: k for k, v in STATE_FIPS.items()})


def state_from_fips(fips: str) -> str:
    """Return the postal code of the state a FIPS code belongs to.

    Parameters
    ----------
    fips : str
        A 2-digit state FIPS code (``"37"``) or a 5-digit county FIPS code (``"37183"``).

    Returns
    -------
    str
        The 2-letter postal code, e.g. ``"NC"``.

    Raises
    ------
    SpecificationError
        If ``fips`` is not a 2- or 5-digit string, or its first two digits are not a state in
        :data:`STATE_FIPS`.

    Examples
    --------
    >>> state_from_fips("37183")
    'NC'
    """
    if not isinstance(fips, str) or len(fips) not in (2, 5) or not (fips.isascii() and fips.isdigit()):
        raise SpecificationError(f"fips must be a 2-digit state or 5-digit county FIPS string; got {fips!r}")
    state = _STATE_BY_FIPS.get(fips[:2])
    if state is None:
        raise SpecificationError(
            f"fips must start with the FIPS code of a state, DC or PR ({', '.join(sorted(_STATE_BY_FIPS))}); "
            f"got {fips!r}"
        )
    return state


# --------------------------------------------------------------------------------------------------
# Former codes and names
# --------------------------------------------------------------------------------------------------


class _FormerCounty(NamedTuple):
    old_fips: str
    new_fips: str
    state: str
    old_name: str
    change: str


# Census "substantial changes" [2] that stop files and the 2010 adjacency file still use. Only renames
# and mergers into a single county are listed: each old code has exactly one 2016 successor. Splits
# (e.g. AK 02280 Wrangell-Petersburg) have no single successor and are deliberately left out.
_FORMER_COUNTIES: tuple[_FormerCounty, ...] = (
    _FormerCounty("46113", "46102", "SD", "Shannon", "renamed Oglala Lakota County, 2015"),
    _FormerCounty("02270", "02158", "AK", "Wade Hampton", "renamed Kusilvak Census Area, 2015"),
    _FormerCounty("51515", "51019", "VA", "Bedford city", "merged into Bedford County, 2013"),
    _FormerCounty("51560", "51005", "VA", "Clifton Forge city", "merged into Alleghany County, 2001"),
    _FormerCounty("51780", "51083", "VA", "South Boston city", "merged into Halifax County, 1995"),
    _FormerCounty("12025", "12086", "FL", "Dade", "renamed Miami-Dade County, 1997"),
)

_CANONICAL: Mapping[str, str] = MappingProxyType({f.old_fips: f.new_fips for f in _FORMER_COUNTIES})


def canonical_fips(fips: str) -> str:
    """Map a former county FIPS code to its Census 2016 successor.

    Parameters
    ----------
    fips : str
        A 5-digit county FIPS code.

    Returns
    -------
    str
        The 2016 code for a renamed or merged county, otherwise ``fips`` unchanged (whether or not it
        is a known county).

    Raises
    ------
    SpecificationError
        If ``fips`` is not a 5-digit string.

    Notes
    -----
    The mapping covers the renames and mergers with a single successor [2]_:

    ========  ========  ===================================================
    old       2016      change
    ========  ========  ===================================================
    46113     46102     Shannon County SD renamed Oglala Lakota County, 2015
    02270     02158     Wade Hampton Census Area AK renamed Kusilvak, 2015
    51515     51019     Bedford city VA merged into Bedford County, 2013
    51560     51005     Clifton Forge city VA merged into Alleghany County
    51780     51083     South Boston city VA merged into Halifax County
    12025     12086     Dade County FL renamed Miami-Dade County, 1997
    ========  ========  ===================================================

    The first three are the codes in which the 2010 adjacency file differs from the 2016 centroids.

    Examples
    --------
    >>> canonical_fips("46113"), canonical_fips("37183")
    ('46102', '37183')
    """
    if not isinstance(fips, str) or len(fips) != 5 or not (fips.isascii() and fips.isdigit()):
        raise SpecificationError(f"fips must be a 5-digit county FIPS string; got {fips!r}")
    return _CANONICAL.get(fips, fips)


# --------------------------------------------------------------------------------------------------
# Name normalization
# --------------------------------------------------------------------------------------------------

# Rule 3: trailing county designators, longest first (a name keeps its last word if nothing else is
# left, so "County" alone is not emptied).
_DESIGNATORS: tuple[tuple[str, ...], ...] = (
    ("city", "and", "borough"),
    ("census", "area"),
    ("municipality",),
    ("municipio",),
    ("borough",),
    ("parish",),
    ("county",),
    ("co",),
)

_SAINTS: Mapping[str, str] = MappingProxyType({"saint": "st", "sainte": "ste"})


def _fold_to_ascii(text: str) -> str:
    """Rule 1: case-fold, strip accents (NFKD, drop combining marks) and drop non-ASCII characters."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).encode("ascii", "ignore").decode()


def _split_words(text: str) -> list[str]:
    """Rule 2: every character other than a-z and 0-9 separates words."""
    return "".join(c if c.isalnum() else " " for c in text).split()


def _drop_designator(words: list[str]) -> list[str]:
    """Rule 3: drop one trailing designator ("County", "Co", "Parish", "Borough", ...)."""
    for suffix in _DESIGNATORS:
        if len(words) > len(suffix) and tuple(words[-len(suffix) :]) == suffix:
            return words[: -len(suffix)]
    return words


def _abbreviate_saint(words: list[str]) -> list[str]:
    """Rule 4: "Saint"/"Sainte" followed by another word become "st"/"ste"."""
    return [_SAINTS.get(w, w) if i < len(words) - 1 else w for i, w in enumerate(words)]


@lru_cache(maxsize=65_536)
def _normalize(name: str) -> str:
    words = _split_words(_fold_to_ascii(name))
    words = _drop_designator(words)
    words = _abbreviate_saint(words)
    return "".join(words)  # Rule 5


def normalize_county_name(name: str) -> str:
    """Reduce a county name to the key used to match it against the official names.

    Parameters
    ----------
    name : str
        A county name as written in a source ("Mc Dowell County", "ST MARYS", "Orleans Parish").

    Returns
    -------
    str
        The key: lower-case ASCII letters and digits, no spaces (``"mcdowell"``, ``"stmarys"``,
        ``"orleans"``).

    Raises
    ------
    SpecificationError
        If ``name`` is not a string.

    Notes
    -----
    The rules, applied in this order:

    1. **fold** — case-fold, decompose accents and drop them ("Doña Ana" → "dona ana"); any other
       non-ASCII character is dropped.
    2. **split** — every character other than a letter or digit (space, ``.``, ``'``, ``-``, ``,``)
       separates words, so spacing and punctuation do not matter ("St. Mary's" → st, mary, s).
    3. **drop designator** — one trailing "City and Borough", "Census Area", "Municipality",
       "Municipio", "Borough", "Parish", "County" or "Co" is removed when another word precedes it
       ("Wake Co." → wake). "City" is *not* a designator: "Richmond city" (an independent city) keeps
       it and stays distinct from "Richmond County"; "James City" keeps it as part of its name.
    4. **saint** — "Saint"/"Sainte" before another word become "st"/"ste" ("Saint Marys" → st marys).
    5. **join** — the words are concatenated without spaces, which equates "Mc Dowell"/"McDowell",
       "De Kalb"/"DeKalb", "La Salle"/"LaSalle", "Miami-Dade"/"Miami Dade".

    The function is pure and idempotent: a key normalizes to itself.

    Examples
    --------
    >>> normalize_county_name("Mc Dowell County"), normalize_county_name("McDOWELL")
    ('mcdowell', 'mcdowell')
    >>> normalize_county_name("St. Louis city"), normalize_county_name("Saint Louis County")
    ('stlouiscity', 'stlouis')
    """
    if not isinstance(name, str):
        raise SpecificationError(f"name must be a str; got {type(name).__name__} {name!r}")
    return _normalize(name)


# --------------------------------------------------------------------------------------------------
# Lookup table
# --------------------------------------------------------------------------------------------------

# Census county-equivalent codes 510-840 in these states are independent cities (Baltimore, St. Louis,
# Carson City and Virginia's cities). The centroids file writes their names without "city".
_INDEPENDENT_CITY_STATES: frozenset[str] = frozenset({"MD", "MO", "NV", "VA"})
_FIRST_CITY_CODE = 500

# Kinds of key, and their priority when a key matches several counties (lower wins).
_KIND_RANK: Mapping[str, int] = MappingProxyType(
    {"official": 0, "former": 0, "city without suffix": 1, "former city without suffix": 1}
)

_KEY_SCHEMA: dict[str, type[pl.DataType]] = {
    "state": pl.String,
    "key": pl.String,
    "county_fips": pl.String,
    "county_name": pl.String,
    "kind": pl.String,
}


def _is_independent_city(state: str, fips: str) -> bool:
    return state in _INDEPENDENT_CITY_STATES and int(fips[2:]) >= _FIRST_CITY_CODE


def _city_rows(state: str, fips: str, name: str, former: bool) -> list[tuple[str, str, str, str, str]]:
    """Keys of an independent city: "<name> city" (official) and the bare name (loses to a county)."""
    words = _split_words(_fold_to_ascii(name))
    bare = name[: -len(" city")] if words[-1] == "city" else name
    official = name if words[-1] == "city" else f"{name} city"
    prefix = "former " if former else ""
    return [
        (state, _normalize(official), fips, official, "former" if former else "official"),
        (state, _normalize(bare), fips, official, f"{prefix}city without suffix"),
    ]


@cache
def _full_key_table() -> pl.DataFrame:
    centroids = county_centroids().filter(pl.col("state").is_in(list(STATE_FIPS)))
    rows: list[tuple[str, str, str, str, str]] = []
    for fips, name, state in centroids.select("county_fips", "county_name", "state").iter_rows():
        if fips[:2] != STATE_FIPS[state]:
            raise ReferenceDataError(
                f"county_centroids.csv lists {fips} ({name}) under {state}, whose FIPS code is "
                f"{STATE_FIPS[state]}; the shipped geography file is damaged"
            )
        if _is_independent_city(state, fips):
            rows.extend(_city_rows(state, fips, name, former=False))
        else:
            rows.append((state, _normalize(name), fips, name, "official"))
    official_names = dict(zip(centroids["county_fips"], centroids["county_name"], strict=True))
    for f in _FORMER_COUNTIES:
        new_name = official_names[f.new_fips]
        if _split_words(_fold_to_ascii(f.old_name))[-1] == "city":
            rows.extend(
                (state, key, f.new_fips, new_name, kind)
                for state, key, _, _, kind in _city_rows(f.state, f.old_fips, f.old_name, former=True)
            )
        else:
            rows.append((f.state, _normalize(f.old_name), f.new_fips, new_name, "former"))
    return pl.DataFrame(rows, schema=_KEY_SCHEMA, orient="row").unique(maintain_order=True)


def county_key_table(state: str | None = None) -> pl.DataFrame:
    """Return the lookup table used by :func:`resolve_counties`.

    Parameters
    ----------
    state : str or None, default None
        A postal code from :data:`STATE_FIPS` to restrict the table to one state; ``None`` for all.

    Returns
    -------
    polars.DataFrame
        Columns ``state``, ``key`` (from :func:`normalize_county_name`), ``county_fips`` (Census
        2016), ``county_name`` (official name; independent cities carry " city") and ``kind``:

        - ``"official"``: the official name of a county or county equivalent;
        - ``"city without suffix"``: an independent city's name without " city"; it is used only when
          no county in the state has that key;
        - ``"former"`` / ``"former city without suffix"``: a name that changed (see
          :func:`canonical_fips`), pointing to the 2016 code.

    Raises
    ------
    SpecificationError
        If ``state`` is not ``None`` or a key of :data:`STATE_FIPS`.

    Notes
    -----
    The table is built once per process from :func:`county_centroids` (territories other than PR
    are not included) and cached.
    """
    table = _full_key_table()
    if state is None:
        return table.clone()
    if state not in STATE_FIPS:
        raise SpecificationError(
            f"state must be None or a postal code in STATE_FIPS ({', '.join(STATE_FIPS)}); got {state!r}"
        )
    return table.filter(pl.col("state") == state)


class _Candidate(NamedTuple):
    fips: str
    name: str
    rank: int


@cache
def _key_index() -> Mapping[tuple[str, str], tuple[_Candidate, ...]]:
    index: dict[tuple[str, str], list[_Candidate]] = {}
    for state, key, fips, name, kind in _full_key_table().iter_rows():
        index.setdefault((state, key), []).append(_Candidate(fips, name, _KIND_RANK[kind]))
    return MappingProxyType({k: tuple(v) for k, v in index.items()})


@cache
def _known_fips() -> frozenset[str]:
    return frozenset(_full_key_table()["county_fips"])


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountyResolution:
    """County FIPS codes for distinct (state, county name) pairs; returned by :func:`resolve_counties`.

    Attributes
    ----------
    frame : polars.DataFrame
        One row per distinct input pair: the state and name columns as received (same names) and
        ``county_fips`` (5-digit string, null when unresolved).
    unresolved : polars.DataFrame
        The pairs whose ``county_fips`` is null, with a ``reason`` column.
    """

    frame: pl.DataFrame
    unresolved: pl.DataFrame


_MISSING = "missing"
_UNKNOWN_STATE = "unknown state"
_NO_SUCH_NAME = "no county of that name in state"
_FIPS_NOT_IN_STATE = "FIPS not in state"


def _resolve_one(
    state: str | None, name: str | None, index: Mapping[tuple[str, str], tuple[_Candidate, ...]]
) -> tuple[str | None, str | None]:
    """Return ``(fips, None)`` or ``(None, reason)`` for one pair."""
    if name is None or not name.strip():
        return None, _MISSING
    code = state.strip().upper() if state is not None else None
    if code not in STATE_FIPS:
        return None, _UNKNOWN_STATE
    text = name.strip()
    if len(text) == 5 and text.isascii() and text.isdigit():
        fips = canonical_fips(text)
        if fips[:2] == STATE_FIPS[code] and fips in _known_fips():
            return fips, None
        return None, _FIPS_NOT_IN_STATE
    candidates = index.get((code, _normalize(text)), ())
    if not candidates:
        return None, _NO_SUCH_NAME
    best = min(c.rank for c in candidates)
    winners = sorted({(c.fips, c.name) for c in candidates if c.rank == best})
    if len(winners) == 1:
        return winners[0][0], None
    return None, "ambiguous: " + " or ".join(f"{n} ({f})" for f, n in winners)


def _string_column(frame: pl.DataFrame, column: str, argument: str) -> pl.Series:
    if column not in frame.columns:
        raise SpecificationError(
            f"{argument}={column!r} is not a column of frame; columns are {frame.columns}"
        )
    series = frame.get_column(column)
    if series.dtype in (pl.String, pl.Null, pl.Categorical) or isinstance(series.dtype, pl.Enum):
        return series.cast(pl.String)
    raise SpecificationError(
        f"column {column!r} ({argument}) must hold strings (String, Categorical, Enum or all-null); "
        f"got {series.dtype}. Cast it first; county FIPS need their leading zeros."
    )


def resolve_counties(
    frame: pl.DataFrame, *, state_col: str = "state", name_col: str = "county_name"
) -> CountyResolution:
    """Resolve the distinct (state, county name) pairs of a frame to Census 2016 county FIPS codes.

    Parameters
    ----------
    frame : polars.DataFrame
        Holds at least ``state_col`` and ``name_col`` (string columns). Typically the distinct pairs of
        one input file.
    state_col : str, default "state"
        Column with 2-letter postal codes (case and surrounding spaces ignored).
    name_col : str, default "county_name"
        Column with county names as written in the source, or 5-digit FIPS codes.

    Returns
    -------
    CountyResolution
        ``frame``: the distinct pairs, in order of first appearance, with ``county_fips``;
        ``unresolved``: the pairs without a code and the ``reason``.

    Raises
    ------
    SpecificationError
        If ``frame`` is not a polars DataFrame, a column is missing or does not hold strings, or a
        column is named ``county_fips`` or both arguments name the same column. An unresolvable
        name never raises.

    Notes
    -----
    A name is matched on its :func:`normalize_county_name` key within its state, against
    :func:`county_key_table`. A name that is a 5-digit FIPS code of a county of that state (a former
    code is mapped by :func:`canonical_fips`) resolves to that code.

    **Counties and independent cities.** A bare name matching both a county and an independent city
    of the same state ("Richmond", "Baltimore", "Roanoke", "Fairfax", "Franklin", "St. Louis")
    resolves to the **county**: sources such as OPP and the ICE lists write a county's name bare or
    with "County" and always write a city as "... city". A bare name that matches only an independent
    city ("Alexandria", VA) resolves to the city.

    The reasons in ``unresolved`` are:

    - ``"missing"``: the name is null or blank;
    - ``"unknown state"``: the state is null or not in :data:`STATE_FIPS`;
    - ``"no county of that name in state"``;
    - ``"FIPS not in state"``: a 5-digit code that is not a county of that state;
    - ``"ambiguous: A (fips) or B (fips)"``: the key matches several counties of equal priority.

    Examples
    --------
    >>> import polars as pl
    >>> names = ["Mc Dowell", "Richmond", "Richmond city"]
    >>> pairs = pl.DataFrame({"state": ["NC", "VA", "VA"], "county_name": names})
    >>> resolve_counties(pairs).frame["county_fips"].to_list()
    ['37111', '51159', '51760']
    """
    if not isinstance(frame, pl.DataFrame):
        raise SpecificationError(f"frame must be a polars DataFrame; got {type(frame).__name__}")
    if state_col == name_col:
        raise SpecificationError(f"state_col and name_col must differ; both are {state_col!r}")
    if "county_fips" in (state_col, name_col):
        raise SpecificationError(
            "state_col and name_col must not be 'county_fips' (the output column); "
            f"got state_col={state_col!r}, name_col={name_col!r}"
        )
    pairs = pl.DataFrame(
        [_string_column(frame, state_col, "state_col"), _string_column(frame, name_col, "name_col")]
    ).unique(maintain_order=True)
    index = _key_index()
    results = [_resolve_one(s, n, index) for s, n in pairs.iter_rows()]
    resolved = pairs.with_columns(
        pl.Series("county_fips", [f for f, _ in results], dtype=pl.String),
    )
    unresolved = pairs.with_columns(
        pl.Series("reason", [r for _, r in results], dtype=pl.String),
    ).filter(pl.col("reason").is_not_null())
    return CountyResolution(frame=resolved, unresolved=unresolved)
