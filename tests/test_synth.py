"""Tests of stopdisparity.synth: OPP text format, determinism, planted truth, and the two draw levels."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import zipfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stopdisparity.errors import SpecificationError
from stopdisparity.geo import county_centroids
from stopdisparity.policy import load_registry
from stopdisparity.schema import CANONICAL_COLUMNS, VOCABULARIES
from stopdisparity.synth import SCENARIOS, SynthSpec, cells, truth, write_opp_files
from stopdisparity.synth.plan import HISP, SP, WHITE, build_plan

NC = "nc_statewide_2020_04_01"
SC = "sc_statewide_2019_02_25"
NC_COLUMNS = [
    "raw_row_number", "date", "time", "location", "lat", "lng", "county_name", "district", "subject_age",
    "subject_race", "subject_sex", "officer_id_hash", "department_name", "type", "arrest_made",
    "citation_issued", "warning_issued", "outcome", "contraband_found", "contraband_drugs",
    "contraband_weapons", "frisk_performed", "search_conducted", "search_person", "search_vehicle",
    "search_basis", "reason_for_stop", "raw_Ethnicity", "raw_Race", "raw_action_description",
]  # fmt: skip
SC_COLUMNS = [
    "raw_row_number", "date", "location", "lat", "lng", "county_name", "subject_age", "subject_race",
    "subject_sex", "officer_id_hash", "officer_race", "officer_sex", "department_id", "department_name",
    "type", "violation", "arrest_made", "citation_issued", "warning_issued", "outcome", "contraband_found",
    "contraband_drugs", "contraband_weapons", "search_conducted", "search_vehicle", "search_basis",
    "reason_for_stop", "raw_Race", "raw_Disposition",
]  # fmt: skip
BOOLEAN_COLUMNS = [c for c, kind in CANONICAL_COLUMNS.items() if kind == "boolean"]
STATE_PATROLS = {"NC State Highway Patrol", "SC Highway Patrol"}


def member_text(directory: Path, stem: str) -> str:
    with zipfile.ZipFile(directory / f"{stem}.csv.zip") as zf:
        assert zf.namelist() == [f"{stem}.csv"]
        return zf.read(f"{stem}.csv").decode("utf-8")


def read_frame(directory: Path, stem: str) -> pl.DataFrame:
    """All columns as strings, ``NA`` kept as text."""
    return pl.read_csv(io.StringIO(member_text(directory, stem)), infer_schema=False, null_values=[])


def county_lookup(state: str) -> dict[str, str]:
    """The three written forms of every county name of ``state`` -> FIPS (independent of synth)."""
    geo = county_centroids().filter(pl.col("state") == state)
    out = {}
    for fips, name in geo.select("county_fips", "county_name").iter_rows():
        out[f"{name} County"] = fips
        out[name.upper()] = fips
        if name.startswith("Mc"):
            out[f"Mc {name[2:]} County"] = fips
    return out


def agency_of(department: pl.Expr) -> pl.Expr:
    return (
        pl.when(department.is_in(list(STATE_PATROLS)))
        .then(pl.lit("state_patrol"))
        .when(department.str.ends_with("Sheriff's Office"))
        .then(pl.lit("sheriff"))
        .otherwise(pl.lit("police"))
    )


def aggregate_files(directory: Path) -> pl.DataFrame:
    """Stops with a recorded county as county_fips x month x agency x race counts."""
    frames = []
    for stem, state in ((NC, "NC"), (SC, "SC")):
        if not (directory / f"{stem}.csv.zip").exists():
            continue
        lookup = county_lookup(state)
        df = read_frame(directory, stem).filter(pl.col("county_name") != "NA")
        frames.append(
            df.select(
                pl.col("county_name").replace_strict(lookup).alias("county_fips"),
                pl.col("date").str.to_date().dt.truncate("1mo").alias("period_start"),
                agency_of(pl.col("department_name")).alias("agency"),
                pl.col("subject_race").alias("race"),
            )
        )
    return pl.concat(frames).group_by("county_fips", "period_start", "agency", "race").len("stops")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_small")
    result = write_opp_files(out, SynthSpec(scenario="constant"), rows=60_000, seed=3)
    return out, result


# --- the OPP text format ---------------------------------------------------------------------------


def test_file_names_truth_and_exact_rows(small: tuple[Path, dict]) -> None:
    out, result = small
    assert sorted(p.name for p in out.iterdir()) == [f"{NC}.csv.zip", f"{SC}.csv.zip", "truth.json"]
    assert json.loads((out / "truth.json").read_text()) == json.loads(json.dumps(result))
    for stem, state in ((NC, "NC"), (SC, "SC")):
        lines = member_text(out, stem).split("\n")
        assert lines[-1] == ""  # ends with a line feed
        assert len(lines) - 2 == result["rows_by_state"][state]
    assert sum(result["rows_by_state"].values()) == 60_000
    # 9.56 : 8.44 split
    assert result["rows_by_state"]["NC"] == round(60_000 * 9.56 / 18.0)


@pytest.mark.parametrize(("stem", "expected"), [(NC, NC_COLUMNS), (SC, SC_COLUMNS)])
def test_exact_opp_text(small: tuple[Path, dict], stem: str, expected: list[str]) -> None:
    out, _ = small
    text = member_text(out, stem)
    assert "\r" not in text
    header, *rows = text.rstrip("\n").split("\n")
    columns = header.split(",")
    assert columns == expected
    canonical = [c for c in CANONICAL_COLUMNS if c in columns]
    assert columns[: len(canonical)] == canonical
    assert all(c.startswith("raw_") for c in columns[len(canonical) :])
    if stem == SC:
        assert "time" not in columns

    def minimal(field: str) -> str:  # OPP quoting: only when needed
        return '"' + field.replace('"', '""') + '"' if any(ch in field for ch in ',"\n') else field

    parsed = list(csv.reader(rows))
    for line, fields in zip(rows, parsed, strict=True):
        assert len(fields) == len(columns)
        assert ",".join(minimal(f) for f in fields) == line
    frame = dict(zip(columns, zip(*parsed, strict=True), strict=True))
    assert "" not in {v for values in frame.values() for v in values}  # missing is NA, never empty
    assert [int(v) for v in frame["raw_row_number"]] == list(range(1, len(rows) + 1))
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) for v in frame["date"])
    if "time" in frame:
        assert all(v == "NA" or re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", v) for v in frame["time"])
    for col in BOOLEAN_COLUMNS:
        if col in frame:
            assert set(frame[col]) <= {"TRUE", "FALSE", "NA"}, col
    ages = [v for v in frame["subject_age"] if v != "NA"]
    assert all(re.fullmatch(r"[1-9]\d", v) for v in ages)
    assert min(map(int, ages)) >= 16 and max(map(int, ages)) <= 90
    for col in ("lat", "lng"):
        assert all(v == "NA" or re.fullmatch(r"-?\d+\.\d+", v) for v in frame[col])
    for col, vocabulary in VOCABULARIES.items():
        if col in frame:
            assert set(frame[col]) - {"NA"} <= set(vocabulary), col
    assert any('"' in line for line in rows) == (stem == SC)  # SC violations hold commas


@pytest.mark.parametrize("stem", [NC, SC])
def test_rows_sorted_and_consistent(small: tuple[Path, dict], stem: str) -> None:
    out, _ = small
    df = read_frame(out, stem)
    dates = df["date"].to_list()
    assert dates == sorted(dates)
    if "time" in df.columns:
        key = df.select(pl.col("date"), pl.when(pl.col("time") == "NA").then(pl.lit("99")).otherwise("time"))
        assert key.rows() == sorted(key.rows())
    searched = df["search_conducted"] == "TRUE"
    assert (df.filter(~searched)["search_basis"] == "NA").all()
    for col in ("contraband_found", "contraband_drugs", "contraband_weapons", "search_vehicle"):
        assert (df.filter(~searched)[col] == "NA").all()
        assert (df.filter(searched)[col] != "NA").all()
    assert (df.filter(pl.col("contraband_found") == "FALSE")["contraband_drugs"] == "FALSE").all()
    severity = (
        pl.when(pl.col("arrest_made") == "TRUE")
        .then(pl.lit("arrest"))
        .when(pl.col("citation_issued") == "TRUE")
        .then(pl.lit("citation"))
        .when(pl.col("warning_issued") == "TRUE")
        .then(pl.lit("warning"))
        .otherwise(pl.lit("NA"))
    )
    assert (df.select(severity == pl.col("outcome")).to_series()).all()


def test_recording_shares_and_county_names(small: tuple[Path, dict]) -> None:
    out, _ = small
    nc, sc = read_frame(out, NC), read_frame(out, SC)
    assert 0.47 < (nc["time"] == "NA").mean() < 0.53
    assert 0.005 < (nc["county_name"] == "NA").mean() < 0.025
    assert (nc.filter(pl.col("county_name") == "NA")["district"] != "NA").all()
    assert (sc["county_name"] != "NA").all()
    assert 0.20 < (sc["lat"] != "NA").mean() < 0.26
    assert ((sc["lat"] == "NA") == (sc["lng"] == "NA")).all()
    for df, state in ((nc, "NC"), (sc, "SC")):
        assert 0.02 <= (df["subject_race"] == "unknown").mean() <= 0.05
        assert (df["department_name"].is_in(list(STATE_PATROLS))).mean() > 0.75
        names = set(df["county_name"].unique()) - {"NA"}
        assert names <= set(county_lookup(state))  # only the three documented forms
        forms = {"title": 0, "upper": 0}
        for n in df["county_name"]:
            if n.endswith(" County"):
                forms["title"] += 1
            elif n != "NA":
                forms["upper"] += 1
        assert forms["title"] > 5 * forms["upper"] > 0
    assert "Charlotte-Mecklenburg Police Department" in set(nc["department_name"])
    mc = {"Mc Dowell County"} & set(nc["county_name"]) or {"Mc Cormick County"} & set(sc["county_name"])
    assert mc


# --- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    spec = SynthSpec(scenario="dynamic")
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_opp_files(tmp_path / name, spec, rows=8_000, seed=seed)
    for file in (f"{NC}.csv.zip", f"{SC}.csv.zip", "truth.json"):
        a, b, c = ((tmp_path / d / file).read_bytes() for d in "abc")
        assert a == b, file
        assert a != c, file


def test_states_restriction_and_plain_call(tmp_path: Path) -> None:
    result = write_opp_files(tmp_path, SynthSpec(scenario="constant", states=("SC",)), rows=5_001, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SC}.csv.zip", "truth.json"]
    assert result["rows_by_state"] == {"SC": 5_001}
    assert member_text(tmp_path, SC).count("\n") == 5_002
    assert {t["state"] for t in result["treatment"]["counties"]} == {"SC"}


# --- the planted effect ----------------------------------------------------------------------------


def hispanic_did(directory: Path, result: dict) -> float:
    """Log odds Hispanic/(Hispanic+White), state patrol: (on - off) in treated counties minus
    (2008+ - before) in never-treated counties. Treatment months recomputed from truth.json."""
    stops = aggregate_files(directory).filter(
        (pl.col("agency") == "state_patrol") & pl.col("race").is_in(["hispanic", "white"])
    )
    spans = []
    for county in result["treatment"]["counties"]:
        for agreement in county["agreements"]:
            start = date.fromisoformat(agreement["start"])
            end = date.fromisoformat(agreement["end"]) if agreement["end"] else date(2100, 1, 1)
            spans.append((county["county_fips"], start, end))
    treated = {s[0] for s in spans}
    months = stops.select("county_fips", "period_start").unique()
    on = {
        (c, m)
        for c, m in months.iter_rows()
        if any(c == f and s <= m < e for f, s, e in spans)  # first day of the month in force
    }
    stops = stops.with_columns(
        on=pl.struct("county_fips", "period_start").map_elements(
            lambda r: (r["county_fips"], r["period_start"]) in on, return_dtype=pl.Boolean
        ),
        treated_county=pl.col("county_fips").is_in(list(treated)),
        late=pl.col("period_start") >= date(2008, 1, 1),
    )

    def log_odds(frame: pl.DataFrame) -> float:
        h = frame.filter(pl.col("race") == "hispanic")["stops"].sum()
        w = frame.filter(pl.col("race") == "white")["stops"].sum()
        return math.log(h / w)

    t = stops.filter("treated_county")
    c = stops.filter(~pl.col("treated_county"))
    return (log_odds(t.filter("on")) - log_odds(t.filter(~pl.col("on")))) - (
        log_odds(c.filter("late")) - log_odds(c.filter(~pl.col("late")))
    )


def test_planted_effect_visible_in_files(tmp_path: Path) -> None:
    base = SynthSpec(scenario="constant", theta=1.0)
    effects = {}
    for theta in (1.0, 0.0):
        out = tmp_path / f"theta{theta}"
        result = write_opp_files(out, replace(base, theta=theta), rows=300_000, seed=7)
        assert result["estimands"]["att_logodds"] == pytest.approx(theta)
        effects[theta] = hispanic_did(out, result)
    assert 0.75 < effects[1.0] < 1.25
    assert abs(effects[0.0]) < 0.2


# --- the two levels agree --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def level_draw(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthSpec, pl.DataFrame]:
    spec = SynthSpec(scenario="composition")
    out = tmp_path_factory.mktemp("synth_levels")
    write_opp_files(out, spec, rows=120_000, seed=5)
    return spec, aggregate_files(out)


def test_cells_equal_aggregated_files_for_same_seed(level_draw: tuple[SynthSpec, pl.DataFrame]) -> None:
    spec, files = level_draw
    drawn = cells(spec, seed=5, rows=120_000).filter(pl.col("stops") > 0)
    key = ["county_fips", "period_start", "agency", "race"]
    joined = drawn.select(*key, "stops").join(files, on=key, how="full", coalesce=True, suffix="_files")
    assert joined["stops"].null_count() == 0 and joined["stops_files"].null_count() == 0
    assert (joined["stops"] == joined["stops_files"]).all()


def test_cells_and_files_agree_in_distribution(level_draw: tuple[SynthSpec, pl.DataFrame]) -> None:
    """File totals by state x agency x race lie within the spread of cells() draws of other seeds."""
    spec, files = level_draw
    state_of = pl.col("county_fips").str.slice(0, 2).replace_strict({"37": "NC", "45": "SC"})
    key = ["state", "agency", "race"]
    observed = files.with_columns(state=state_of).group_by(key).agg(pl.col("stops").sum())
    draws = pl.concat(
        [
            cells(spec, seed=s, rows=120_000)
            .group_by(key)
            .agg(pl.col("stops").sum())
            .with_columns(draw=pl.lit(s))
            for s in range(100, 120)
        ]
    )
    spread = draws.group_by(key).agg(mean=pl.col("stops").mean(), sd=pl.col("stops").std())
    cmp = spread.join(observed, on=key, how="left").with_columns(pl.col("stops").fill_null(0))
    big = cmp.filter(pl.col("mean") > 30)
    z = ((big["stops"] - big["mean"]) / big["sd"]).to_numpy()
    assert np.all(np.abs(z) < 5), big.with_columns(z=pl.Series(z))
    # The Hispanic share of state-patrol Hispanic+White stops, by state.
    for state in ("NC", "SC"):

        def share(frame: pl.DataFrame, state: str = state) -> float:
            sp = frame.filter((pl.col("state") == state) & (pl.col("agency") == "state_patrol"))
            h = sp.filter(pl.col("race") == "hispanic")["stops"].sum()
            return h / (h + sp.filter(pl.col("race") == "white")["stops"].sum())

        shares = np.array([share(draws.filter(pl.col("draw") == s)) for s in range(100, 120)])
        assert abs(share(observed) - shares.mean()) < 5 * shares.std()


def test_cells_subset_is_fast_and_balanced() -> None:
    spec = SynthSpec(scenario="null")
    frame = cells(spec, seed=1, counties=["37119", "37063", "45019"], years=(2006, 2010), period="quarter")
    assert frame.columns == [
        "county_fips", "state", "period", "period_start", "agency", "race", "stops", "in_force", "treated",
        "first_treated",
    ]  # fmt: skip
    # 20 quarters x 6 races x agencies (Mecklenburg and Charleston have a police department, Durham
    # none in the process), zeros kept
    assert frame.height == 20 * 6 * (3 + 2 + 3)
    meck = frame.filter(pl.col("county_fips") == "37119")
    assert meck["first_treated"].unique().to_list() == [2006 * 4 + 1]  # signed 2006-02-27 -> 2006Q2
    assert meck.filter(pl.col("period") == 2006 * 4 + 1)["in_force"].all()
    assert not meck.filter(pl.col("period") == 2006 * 4)["in_force"].any()


# --- truth.json ------------------------------------------------------------------------------------


def test_truth_has_every_planted_parameter(small: tuple[Path, dict]) -> None:
    _, result = small
    spec = SynthSpec(scenario="constant")
    assert result["spec"] == json.loads(json.dumps(spec.to_dict()))
    assert set(result["spec"]) >= {"theta", "shock_sd", "shock_rho", "dispersion", "design", "exit"}
    assert result["seed"] == 3 and result["rows"] == 60_000
    assert result["scenario"]["code"] == "S1"
    assert [f["file"] for f in result["files"]] == [f"{NC}.csv.zip", f"{SC}.csv.zip"]
    reg = load_registry()
    expected = reg.filter(
        pl.col("county_fips").is_not_null()
        & (
            ((pl.col("state") == "NC") & pl.col("signed").dt.year().is_between(2000, 2015))
            | ((pl.col("state") == "SC") & pl.col("signed").dt.year().is_between(2005, 2016))
        )
    )
    used = result["treatment"]["registry_rows"]
    assert sorted(r["registry_row"] for r in used) == sorted(expected["registry_row"].to_list())
    assert len(used) == 14
    counties = {c["county_fips"]: c for c in result["treatment"]["counties"]}
    assert len(counties) == 13
    assert counties["37001"]["agreements"] == [{"start": "2007-01-10", "end": "2012-09-18"}]
    assert counties["37001"]["adoption_month"] == "2007-02-01"  # first-day rule
    est = result["estimands"]
    for k in ("att_logodds", "att_logodds_officer", "att_logodds_composition", "att_share", "att_pp"):
        assert isinstance(est[k], float), k
    assert est["att_logodds"] == pytest.approx(0.3)
    assert est["att_pp"] == pytest.approx(100 * est["att_share"])
    assert result["event_time_years"][0]["event_year"] < 0


def test_pp_truth_recomputed_on_tiny_spec() -> None:
    spec = SynthSpec(scenario="switch_off", design="random", states=("SC",), n_treated=5, theta=0.7)
    plan = build_plan(spec, seed=4, rows=20_000, years=(2006, 2012))
    p = plan.states["SC"]
    num = den = lo = 0.0
    lam = p.lam.sum()
    for c in range(p.n.shape[0]):
        for t in range(p.n.shape[1]):
            mh, mw = p.mu[c, t, SP, HISP], p.mu[c, t, SP, WHITE]
            if not p.on[c, t] or mh + mw == 0:  # effect off, or a county-month with no stops
                continue
            n = p.rows * (mh + mw) / lam * (1 - spec.unknown_race_share)
            mh0 = mh * math.exp(-p.officer_effect[c, t])  # the same intensity without the effect
            num += n * (mh / (mh + mw) - mh0 / (mh0 + mw))
            lo += n * p.officer_effect[c, t]
            den += n
    got = truth(spec, seed=4, rows=20_000, years=(2006, 2012))["estimands"]
    assert den > 0
    assert got["att_pp"] == pytest.approx(100 * num / den, rel=1e-9)
    assert got["att_logodds"] == pytest.approx(lo / den) == pytest.approx(0.7)
    assert got["treated_counties"] <= 5


def test_scenario_truths() -> None:
    comp = truth(SynthSpec(scenario="composition"), seed=1, rows=100_000)["estimands"]
    assert comp["att_logodds"] == pytest.approx(-0.3)
    assert comp["att_logodds_officer"] == 0.0
    assert comp["att_pp"] < 0
    dyn = truth(SynthSpec(scenario="dynamic"), seed=1, rows=100_000)
    assert len(dyn["treatment"]["counties"]) == 146  # every county eventually treated
    assert {c["origin"] for c in dyn["treatment"]["counties"]} == {"registry", "late"}
    by_k = {e["event_year"]: e for e in dyn["event_time_years"]}
    assert by_k[-1]["att_logodds"] == 0.0
    path = [by_k[k]["att_logodds"] for k in range(0, 5)]
    assert all(b > a for a, b in itertools.pairwise(path))  # grows with event time
    pre = truth(SynthSpec(scenario="pretrend"), seed=1, rows=100_000)
    pre_k = {e["event_year"]: e["pretrend_logodds"] for e in pre["event_time_years"]}
    assert pre_k[-4] < pre_k[-1] < 0 and pre_k[0] == 0.0
    rnd = truth(SynthSpec(scenario="switch_off", design="random"), seed=2, rows=100_000)
    starts = [date.fromisoformat(c["agreements"][0]["start"]) for c in rnd["treatment"]["counties"]]
    assert len(starts) == 50 and all(date(2006, 1, 1) <= s <= date(2010, 12, 31) for s in starts)
    assert 10 < sum(c["agreements"][0]["end"] is not None for c in rnd["treatment"]["counties"]) < 40


# --- the spec --------------------------------------------------------------------------------------


def test_spec_presets_and_overrides() -> None:
    assert set(SCENARIOS) == {"null", "constant", "dynamic", "pretrend", "composition", "switch_off"}
    assert SynthSpec(scenario="null").theta == 0.0
    dyn = SynthSpec(scenario="dynamic")
    assert dyn.exit == "absorbing" and dyn.all_treated and dyn.effect_growth > 0
    assert SynthSpec(scenario="dynamic", exit="in_force").exit == "in_force"
    assert SynthSpec(theta=1).theta == 1.0
    assert SynthSpec(states=["SC", "NC"]).states == ("NC", "SC")
    with pytest.raises(AttributeError):
        dyn.theta = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"theta": 9.0}, ["9.0", "[-5.0, 5.0]"]),
        ({"scenario": "S9"}, ["'S9'", "constant"]),
        ({"states": ("TX",)}, ["'TX'", "NC"]),
        ({"n_treated": 500}, ["500", "146"]),
        ({"states": ("SC",), "design": "random", "n_treated": 50}, ["50", "46"]),
        ({"shock_rho": 1.0}, ["1.0", "0.99"]),
        ({"adoption_years": (2010, 2006)}, ["(2010, 2006)", "2000"]),
        ({"unknown_race_share": -0.1}, ["-0.1", "[0.0, 0.5]"]),
    ],
)
def test_spec_errors_quote_value_and_range(kwargs: dict, quoted: list[str]) -> None:
    with pytest.raises(SpecificationError) as info:
        SynthSpec(**kwargs)
    for text in quoted:
        assert text in str(info.value)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SpecificationError, match="rows"):
        write_opp_files(tmp_path, SynthSpec(), rows=-1, seed=1)
    with pytest.raises(SpecificationError, match="seed"):
        cells(SynthSpec(), seed=-3)
    with pytest.raises(SpecificationError, match="period"):
        cells(SynthSpec(), seed=1, period="week")
    with pytest.raises(SpecificationError, match="99999"):
        cells(SynthSpec(), seed=1, counties=["99999"])
