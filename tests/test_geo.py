"""Tests of county name ↔ FIPS resolution in stopdisparity.geo."""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stopdisparity import geo
from stopdisparity.errors import SpecificationError
from stopdisparity.geo import (
    STATE_FIPS,
    CountyResolution,
    canonical_fips,
    county_adjacency,
    county_centroids,
    county_key_table,
    normalize_county_name,
    resolve_counties,
    state_from_fips,
)


def resolve_one(state: str | None, name: str | None) -> tuple[str | None, str | None]:
    """Return (fips, reason) for a single pair."""
    frame = pl.DataFrame(
        {"state": [state], "county_name": [name]}, schema={"state": pl.String, "county_name": pl.String}
    )
    result = resolve_counties(frame)
    assert result.frame.height == 1
    fips = result.frame["county_fips"][0]
    reasons = result.unresolved["reason"].to_list()
    assert (fips is None) == (len(reasons) == 1)
    return fips, (reasons[0] if reasons else None)


# --------------------------------------------------------------------------------------------------
# States
# --------------------------------------------------------------------------------------------------


def test_state_fips_covers_50_states_dc_and_pr() -> None:
    assert len(STATE_FIPS) == 52
    assert len(set(STATE_FIPS.values())) == 52
    assert STATE_FIPS["NC"] == "37"
    assert STATE_FIPS["SC"] == "45"
    assert STATE_FIPS["DC"] == "11"
    assert STATE_FIPS["PR"] == "72"
    assert STATE_FIPS["WY"] == "56"
    with pytest.raises(TypeError):
        STATE_FIPS["XX"] = "99"  # type: ignore[index]


def test_state_fips_agrees_with_centroids() -> None:
    centroids = county_centroids().filter(pl.col("state").is_in(list(STATE_FIPS)))
    assert set(centroids["state"]) == set(STATE_FIPS)
    bad = centroids.filter(
        pl.col("county_fips").str.slice(0, 2) != pl.col("state").replace_strict(STATE_FIPS)
    )
    assert bad.is_empty()


@pytest.mark.parametrize(("fips", "state"), [("37", "NC"), ("37183", "NC"), ("02020", "AK"), ("72", "PR")])
def test_state_from_fips(fips: str, state: str) -> None:
    assert state_from_fips(fips) == state


@pytest.mark.parametrize("fips", ["3", "371", "99", "03001", 37, None, "ab"])
def test_state_from_fips_rejects(fips: object) -> None:
    with pytest.raises(SpecificationError, match="got"):
        state_from_fips(fips)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------

EQUAL_SPELLINGS: list[list[str]] = [
    ["Wake", "Wake County", "WAKE", "wake county", " Wake  County ", "Wake Co.", "Wake Co", "Wake,"],
    ["McDowell", "Mc Dowell County", "MCDOWELL COUNTY", "Mc Dowell", "McDowell County."],
    ["St. Mary's", "Saint Marys", "ST MARYS", "St Mary’s County", "St. Mary's County"],
    ["St. Louis", "St Louis", "Saint Louis County", "ST. LOUIS CO."],
    ["St. Louis city", "St Louis City", "SAINT LOUIS CITY"],
    ["Orleans", "Orleans Parish", "ORLEANS", "orleans parish"],
    ["Anchorage", "Anchorage Municipality"],
    ["Juneau", "Juneau City and Borough", "JUNEAU CITY AND BOROUGH"],
    ["Kusilvak", "Kusilvak Census Area"],
    ["Fairbanks North Star", "Fairbanks North Star Borough"],
    ["Richmond city", "RICHMOND CITY", "Richmond City"],
    ["Richmond", "Richmond County", "RICHMOND CO"],
    ["DeKalb", "De Kalb", "Dekalb", "DE KALB COUNTY"],
    ["LaSalle", "La Salle", "LA SALLE PARISH"],
    ["Prince George's", "Prince Georges", "PRINCE GEORGES COUNTY"],
    ["Miami-Dade", "Miami Dade", "MIAMI-DADE COUNTY"],
    ["Doña Ana", "Dona Ana", "DOÑA ANA COUNTY", "Dona Ana County"],
    ["Ste. Genevieve", "Sainte Genevieve", "STE GENEVIEVE"],
    ["James City", "James City County"],
]

DIFFERENT_SPELLINGS: list[tuple[str, str]] = [
    ("St. Louis city", "St. Louis County"),
    ("Richmond city", "Richmond County"),
    ("Baltimore city", "Baltimore"),
    ("Bedford city", "Bedford County"),
    ("James City", "James"),
    ("Hillsborough", "Hillsb"),  # "borough" inside a word is not a designator
]


@pytest.mark.parametrize("spellings", EQUAL_SPELLINGS, ids=lambda s: s[0])
def test_spellings_share_a_key(spellings: list[str]) -> None:
    keys = {s: normalize_county_name(s) for s in spellings}
    assert len(set(keys.values())) == 1, keys


@pytest.mark.parametrize(("a", "b"), DIFFERENT_SPELLINGS)
def test_cities_stay_distinct_from_counties(a: str, b: str) -> None:
    assert normalize_county_name(a) != normalize_county_name(b)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Mc Dowell County", "mcdowell"),
        ("St. Mary's", "stmarys"),
        ("St. Louis city", "stlouiscity"),
        ("Doña Ana", "donaana"),
        ("County", "county"),  # a designator alone is kept
        ("Co", "co"),
        ("Saint", "saint"),  # "Saint" is abbreviated only before another word
        ("", ""),
        ("...", ""),
    ],
)
def test_normalized_keys(name: str, key: str) -> None:
    assert normalize_county_name(name) == key


@pytest.mark.parametrize("name", [None, 37183, b"Wake"])
def test_normalize_rejects_non_strings(name: object) -> None:
    with pytest.raises(SpecificationError, match="must be a str"):
        normalize_county_name(name)  # type: ignore[arg-type]


NAME_TEXT = st.text(
    alphabet=st.sampled_from(
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,'’-ñÑéÉüß")
    ),
    max_size=40,
)
WORDS = st.lists(
    st.sampled_from(
        [
            "St.",
            "Saint",
            "Mc",
            "Dowell",
            "County",
            "Co.",
            "Parish",
            "city",
            "and",
            "Borough",
            "Census",
            "Area",
            "Doña",
            "Ana",
            "LA",
            "salle",
            "Municipality",
        ]
    ),
    max_size=6,
)


@given(NAME_TEXT)
def test_normalize_is_idempotent(name: str) -> None:
    key = normalize_county_name(name)
    assert normalize_county_name(key) == key


@given(WORDS)
def test_normalize_is_idempotent_on_name_like_words(words: list[str]) -> None:
    key = normalize_county_name(" ".join(words))
    assert normalize_county_name(key) == key


@given(NAME_TEXT)
def test_normalize_ignores_case(name: str) -> None:
    assert (
        normalize_county_name(name.upper())
        == normalize_county_name(name.lower())
        == normalize_county_name(name)
    )


@given(WORDS, st.lists(st.sampled_from([" ", "  ", "\t", " \n "]), min_size=8, max_size=8))
def test_normalize_ignores_spacing(words: list[str], gaps: list[str]) -> None:
    single = " ".join(words)
    padded = gaps[0] + "".join(w + gaps[1 + i % 7] for i, w in enumerate(words))
    assert normalize_county_name(padded) == normalize_county_name(single)


# --------------------------------------------------------------------------------------------------
# Every NC and SC county
# --------------------------------------------------------------------------------------------------


def _mc_spaced(name: str) -> str:
    return "Mc " + name[2:] if name.startswith("Mc") else name


VARIANTS: dict[str, Callable[[str], str]] = {
    "official": lambda n: n,
    "County": lambda n: f"{n} County",
    "UPPER": lambda n: n.upper(),
    "UPPER COUNTY": lambda n: f"{n.upper()} COUNTY",
    "Mc spaced": lambda n: _mc_spaced(n),
    "Mc spaced County": lambda n: f"{_mc_spaced(n)} County",
    "MC SPACED": lambda n: _mc_spaced(n).upper(),
}


@pytest.mark.parametrize(("state", "n_counties"), [("NC", 100), ("SC", 46)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_nc_sc_county_resolves(state: str, n_counties: int, variant: str) -> None:
    counties = county_centroids().filter(pl.col("state") == state)
    assert counties.height == n_counties
    spelled = pl.DataFrame(
        {
            "state": counties["state"],
            "county_name": [VARIANTS[variant](n) for n in counties["county_name"]],
            "expected": counties["county_fips"],
        }
    )
    result = resolve_counties(spelled.select("state", "county_name"))
    assert result.unresolved.is_empty(), result.unresolved
    got = spelled.join(result.frame, on=["state", "county_name"], how="left")
    wrong = got.filter(pl.col("county_fips") != pl.col("expected"))
    assert wrong.is_empty(), wrong


def test_mc_spacing_variant_exercises_mc_counties() -> None:
    names = county_centroids().filter(pl.col("state").is_in(["NC", "SC"]))["county_name"]
    assert sorted(n for n in names if _mc_spaced(n) != n) == ["McCormick", "McDowell"]


# Expected codes typed by hand and checked against data/geo/county_centroids.csv.
HAND_TYPED: list[tuple[str, str, str]] = [
    ("NC", "Mc Dowell County", "37111"),
    ("NC", "WAKE", "37183"),
    ("NC", "Mecklenburg County", "37119"),
    ("NC", "cumberland co.", "37051"),
    ("SC", "Mc Cormick", "45065"),
    ("SC", "Horry", "45051"),
    ("SC", "CHARLESTON COUNTY", "45019"),
    ("LA", "Orleans Parish", "22071"),
    ("LA", "ORLEANS", "22071"),
    ("LA", "La Salle Parish", "22059"),
    ("LA", "Saint John the Baptist Parish", "22095"),
    ("MD", "St. Mary's", "24037"),
    ("MD", "Saint Marys County", "24037"),
    ("MD", "Prince Georges", "24033"),
    ("MD", "Baltimore city", "24510"),
    ("MD", "Baltimore County", "24005"),
    ("VA", "Richmond city", "51760"),
    ("VA", "Richmond County", "51159"),
    ("VA", "James City County", "51095"),
    ("MO", "St. Louis city", "29510"),
    ("MO", "St Louis County", "29189"),
    ("MO", "Ste. Genevieve", "29186"),
    ("AK", "Anchorage Municipality", "02020"),
    ("AK", "Juneau City and Borough", "02110"),
    ("AK", "Bethel Census Area", "02050"),
    ("AK", "Fairbanks North Star Borough", "02090"),
    ("GA", "De Kalb", "13089"),
    ("IL", "La Salle", "17099"),
    ("IL", "Du Page", "17043"),
    ("TX", "LaSalle County", "48283"),
    ("FL", "Miami Dade", "12086"),
    ("NM", "Dona Ana County", "35013"),
    ("IA", "O Brien", "19141"),
    ("NV", "Carson City", "32510"),
    ("DC", "District of Columbia", "11001"),
    ("PR", "Mayaguez Municipio", "72097"),
    ("nc", " wake county ", "37183"),  # state code case and spaces are ignored
]


@pytest.mark.parametrize(("state", "name", "fips"), HAND_TYPED)
def test_real_spellings(state: str, name: str, fips: str) -> None:
    assert resolve_one(state, name) == (fips, None)


def test_real_spellings_in_one_call() -> None:
    frame = pl.DataFrame(HAND_TYPED, schema=["state", "county_name", "expected"], orient="row")
    result = resolve_counties(frame)
    assert result.frame["county_fips"].to_list() == frame["expected"].to_list()
    assert result.unresolved.is_empty()


# --------------------------------------------------------------------------------------------------
# Counties and independent cities
# --------------------------------------------------------------------------------------------------

COUNTY_CITY_PAIRS: list[tuple[str, str, str, str]] = [
    # state, bare name, county FIPS, city FIPS
    ("VA", "Richmond", "51159", "51760"),
    ("VA", "Roanoke", "51161", "51770"),
    ("VA", "Fairfax", "51059", "51600"),
    ("VA", "Franklin", "51067", "51620"),
    ("MD", "Baltimore", "24005", "24510"),
    ("MO", "St. Louis", "29189", "29510"),
]


@pytest.mark.parametrize(("state", "name", "county", "city"), COUNTY_CITY_PAIRS)
def test_bare_name_of_county_and_city_resolves_to_county(
    state: str, name: str, county: str, city: str
) -> None:
    assert resolve_one(state, name) == (county, None)
    assert resolve_one(state, name.upper()) == (county, None)
    assert resolve_one(state, f"{name} County") == (county, None)
    assert resolve_one(state, f"{name} city") == (city, None)
    assert resolve_one(state, f"{name.upper()} CITY") == (city, None)


def test_county_city_pairs_are_all_there_are() -> None:
    table = county_key_table()
    shared = (
        table.group_by("state", "key")
        .agg(pl.col("county_fips").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .sort("state", "key")
    )
    expected = sorted((s, normalize_county_name(n)) for s, n, _, _ in COUNTY_CITY_PAIRS)
    assert list(shared.select("state", "key").iter_rows()) == expected


@pytest.mark.parametrize(
    ("state", "name", "fips"),
    [
        ("VA", "Alexandria", "51510"),
        ("VA", "Norfolk", "51710"),
        ("VA", "Virginia Beach city", "51810"),
        ("NV", "Carson", "32510"),
    ],
)
def test_bare_name_of_city_alone_resolves_to_city(state: str, name: str, fips: str) -> None:
    assert resolve_one(state, name) == (fips, None)


def test_ambiguous_names_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    index = dict(geo._key_index())
    index[("NC", "twin")] = (geo._Candidate("37001", "Twin A", 0), geo._Candidate("37003", "Twin B", 0))
    monkeypatch.setattr(geo, "_key_index", lambda: index)
    assert resolve_one("NC", "Twin County") == (None, "ambiguous: Twin A (37001) or Twin B (37003)")


# --------------------------------------------------------------------------------------------------
# Unresolved names, FIPS as names, former names
# --------------------------------------------------------------------------------------------------


def test_unresolved_pairs_are_listed_with_reasons() -> None:
    frame = pl.DataFrame(
        {
            "state": ["NC", "NC", "XX", None, "NC", "NC", "NC", "NC", "SC", "NC", "NC"],
            "county_name": [
                "Atlantis",
                "Wake",
                "Wake",
                "Wake",
                None,
                "",
                "   ",
                "45051",
                "45051",
                "37999",
                "Wake",
            ],
        }
    )
    result = resolve_counties(frame)
    assert isinstance(result, CountyResolution)
    assert result.frame.columns == ["state", "county_name", "county_fips"]
    assert result.frame.height == 10  # distinct pairs: the second ("NC", "Wake") is dropped
    assert result.frame["county_fips"].to_list() == [
        None,
        "37183",
        None,
        None,
        None,
        None,
        None,
        None,
        "45051",
        None,
    ]
    assert result.unresolved.columns == ["state", "county_name", "reason"]
    assert result.unresolved.rows() == [
        ("NC", "Atlantis", "no county of that name in state"),
        ("XX", "Wake", "unknown state"),
        (None, "Wake", "unknown state"),
        ("NC", None, "missing"),
        ("NC", "", "missing"),
        ("NC", "   ", "missing"),
        ("NC", "45051", "FIPS not in state"),
        ("NC", "37999", "FIPS not in state"),
    ]


@pytest.mark.parametrize(
    ("state", "name", "fips"),
    [
        ("NC", "37183", "37183"),
        ("SC", " 45065 ", "45065"),
        ("SD", "46113", "46102"),
        ("AK", "02270", "02158"),
    ],
)
def test_name_that_is_a_fips_code(state: str, name: str, fips: str) -> None:
    assert resolve_one(state, name) == (fips, None)


@pytest.mark.parametrize(
    ("state", "name", "fips"),
    [
        ("SD", "Shannon County", "46102"),
        ("SD", "Oglala Lakota County", "46102"),
        ("AK", "Wade Hampton Census Area", "02158"),
        ("AK", "Kusilvak Census Area", "02158"),
        ("VA", "Bedford city", "51019"),
        ("VA", "Bedford County", "51019"),
        ("VA", "Clifton Forge city", "51005"),
        ("VA", "South Boston", "51083"),
        ("FL", "Dade County", "12086"),
        ("GA", "Dade County", "13083"),  # GA's Dade is not Florida's former name
    ],
)
def test_former_names_resolve_to_2016_codes(state: str, name: str, fips: str) -> None:
    assert resolve_one(state, name) == (fips, None)


def test_all_null_and_empty_input() -> None:
    nulls = pl.DataFrame({"state": [None, None], "county_name": [None, None]})
    result = resolve_counties(nulls)
    assert result.frame.height == 1
    assert result.unresolved["reason"].to_list() == ["missing"]
    empty = resolve_counties(pl.DataFrame(schema={"state": pl.String, "county_name": pl.String}))
    assert empty.frame.schema == pl.Schema(
        {"state": pl.String, "county_name": pl.String, "county_fips": pl.String}
    )
    assert empty.unresolved.is_empty()


def test_custom_column_names_and_categorical() -> None:
    frame = pl.DataFrame(
        {"st": ["NC", "NC"], "cty": ["Wake", "Durham"], "other": [1, 2]},
        schema={"st": pl.String, "cty": pl.Categorical, "other": pl.Int64},
    )
    result = resolve_counties(frame, state_col="st", name_col="cty")
    assert result.frame.rows() == [("NC", "Wake", "37183"), ("NC", "Durham", "37063")]


def test_result_is_frozen() -> None:
    result = resolve_counties(pl.DataFrame({"state": ["NC"], "county_name": ["Wake"]}))
    with pytest.raises(AttributeError):
        result.frame = result.frame  # type: ignore[misc]


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        ({"state": ["NC"], "county_name": ["Wake"]}, {}, "polars DataFrame; got dict"),
        (pl.DataFrame({"state": ["NC"], "name": ["Wake"]}), {}, "name_col='county_name' is not a column"),
        (pl.DataFrame({"state": ["NC"], "county_name": [37183]}), {}, "must hold strings.*got Int64"),
        (pl.DataFrame({"state": ["NC"]}), {"name_col": "state"}, "must differ"),
        (
            pl.DataFrame({"state": ["NC"], "county_fips": ["37183"]}),
            {"name_col": "county_fips"},
            "must not be",
        ),
    ],
)
def test_resolve_rejects_bad_arguments(frame: object, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(SpecificationError, match=match):
        resolve_counties(frame, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Key table and canonical codes
# --------------------------------------------------------------------------------------------------


def test_key_table_covers_every_county_once_officially() -> None:
    table = county_key_table()
    assert table.columns == ["state", "key", "county_fips", "county_name", "kind"]
    assert set(table["kind"]) == {"official", "former", "city without suffix", "former city without suffix"}
    official = table.filter(pl.col("kind") == "official")
    centroids = county_centroids().filter(pl.col("state").is_in(list(STATE_FIPS)))
    assert official["county_fips"].sort().to_list() == centroids["county_fips"].sort().to_list()
    assert official.filter(pl.col("county_fips") == "51760")["county_name"].to_list() == ["Richmond city"]
    assert set(table["county_fips"]) == set(centroids["county_fips"])  # aliases point to 2016 codes


def test_key_table_for_one_state() -> None:
    nc = county_key_table("NC")
    assert set(nc["state"]) == {"NC"}
    assert nc.filter(pl.col("key") == "mcdowell")["county_fips"].to_list() == ["37111"]
    assert county_key_table() is not county_key_table()  # callers get their own copy
    with pytest.raises(SpecificationError, match="got 'North Carolina'"):
        county_key_table("North Carolina")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("46113", "46102"),
        ("02270", "02158"),
        ("51515", "51019"),
        ("12025", "12086"),
        ("37183", "37183"),
        ("99999", "99999"),
    ],
)
def test_canonical_fips(old: str, new: str) -> None:
    assert canonical_fips(old) == new


@pytest.mark.parametrize("bad", ["4611", "461130", 46113, None, "4611x"])
def test_canonical_fips_rejects(bad: object) -> None:
    with pytest.raises(SpecificationError, match="5-digit"):
        canonical_fips(bad)  # type: ignore[arg-type]


def test_canonical_fips_maps_adjacency_codes_onto_centroids() -> None:
    adjacency = county_adjacency()
    codes = set(adjacency["county_fips"]) | set(adjacency["neighbor_fips"])
    known = set(county_centroids()["county_fips"])
    assert codes - known == {"02270", "46113", "51515"}  # fails if the data files change
    assert {canonical_fips(c) for c in codes} <= known


# --------------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------------


def test_resolves_thousands_of_distinct_pairs_quickly() -> None:
    official = county_key_table().filter(pl.col("kind") == "official")
    spellings = pl.concat(
        [
            official.select("state", "county_name", "county_fips"),
            official.select("state", (pl.col("county_name") + " County").alias("county_name"), "county_fips"),
            official.select("state", pl.col("county_name").str.to_uppercase(), "county_fips"),
        ]
    ).unique(["state", "county_name"])
    assert spellings.height > 5_000
    start = time.perf_counter()
    result = resolve_counties(spellings.select("state", "county_name"))
    elapsed = time.perf_counter() - start
    assert result.unresolved.is_empty()
    got = spellings.join(result.frame, on=["state", "county_name"], suffix="_got")
    assert got.height == spellings.height
    assert (got["county_fips"] == got["county_fips_got"]).all()
    assert elapsed < 2.0  # typically well under 0.1 s; generous for a loaded CI machine
