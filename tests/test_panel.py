"""Tests of stopdisparity.panel: counts, sample log, lineage, treatment timing, covariates, eligibility.

Three stores, each built once per module:

- ``synth``: ``write_opp_files`` NC + SC, 60,000 stops; the panel's cells are checked against a
  brute-force polars count over ``Store.scan()`` (issue 4, section 5; STYLE point 14).
- ``hand``: 21 stops written out below in the OPP text format, whose cells and sample-log counts are
  typed out in the tests.
- ``timing``: 29 NC stops over 2006-01 .. 2009-12 and a user policy file, for treatment timing at
  month and agreement boundaries, the designs, neighbours and eligibility.

Period indexes are written out independently of the package: month ``year*12 + month - 1``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stopdisparity.errors import SourceNotRegisteredError, SpecificationError
from stopdisparity.ingest import ingest
from stopdisparity.panel import Panel, PanelSpec, build_panel
from stopdisparity.policy import TreatmentSpec, policy_timing_columns
from stopdisparity.store import Store, open_store
from stopdisparity.synth import SynthSpec, write_opp_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import write_opp

SHP = "NC State Highway Patrol"
SCHP = "SC Highway Patrol"
RPD = "Raleigh Police Department"
LEAD = ["county_fips", "state", "period", "period_start", "race", "stops", "population", "in_force",
        "first_treated", "rel_period"]  # fmt: skip
FILTER_STEPS = ["states", "date_window", "agency", "stop_type", "reason_for_stop", "county_known"]
#: Every county of NC (100: odd codes 37001..37199) and SC (46: odd codes 45001..45091).
NC_COUNTIES = [f"37{i:03d}" for i in range(1, 200, 2)]
SC_COUNTIES = [f"45{i:03d}" for i in range(1, 92, 2)]

WAKE, DURHAM, MECK, MCDOWELL, GUILFORD = "37183", "37063", "37119", "37111", "37081"
GASTON, ALAMANCE, UNION, CUMBERLAND, CABARRUS, DARE = "37071", "37001", "37179", "37051", "37025", "37055"
HORRY, YORK_SC = "45051", "45091"


def M(year: int, month: int) -> int:
    """Month period index: year*12 + month - 1."""
    return year * 12 + month - 1


def Q(year: int, quarter: int) -> int:
    """Quarter period index: year*4 + quarter - 1."""
    return year * 4 + quarter - 1


# --------------------------------------------------------------------------------------- helpers
STOP_COLUMNS = {
    "raw_row_number": "string",
    "date": "date",
    "county_name": "string",
    "subject_race": "enum",
    "subject_sex": "enum",
    "department_name": "string",
    "type": "enum",
    "reason_for_stop": "string",
}


def stop(
    day: str | None,
    county: str | None,
    race: str | None,
    sex: str | None = "male",
    agency: str | None = SHP,
    kind: str | None = "vehicular",
    reason: str | None = "Speeding",
) -> dict[str, Any]:
    """One stop as typed values (None = NA); ``day`` is ISO text."""
    import datetime as dt

    return {
        "raw_row_number": None,
        "date": dt.date.fromisoformat(day) if day else None,
        "county_name": county,
        "subject_race": race,
        "subject_sex": sex,
        "department_name": agency,
        "type": kind,
        "reason_for_stop": reason,
    }


def write_stops(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as an OPP CSV (NA, TRUE/FALSE, ISO dates), numbering raw_row_number."""
    numbered = [{**r, "raw_row_number": str(i + 1)} for i, r in enumerate(rows)]
    write_opp(path, numbered, STOP_COLUMNS)
    return path


POLICY_HEADER = "state,agency,agency_type,county_fips,model,signed,ended,end_basis,source\n"


def write_policy(path: Path, rows: Sequence[str]) -> Path:
    """A policy file in the registry format; each row is ``state,agency,type,fips,model,signed,ended``."""
    lines = [f"{r},{'terminated' if r.split(',')[6] else ''},test fixture\n" for r in rows]
    path.write_text(POLICY_HEADER + "".join(lines), encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statement_digest(path: Path) -> str:
    """First 12 hex digits of the SHA-256 of a query's statement (the file without its header comment)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("--"))
    return hashlib.sha256("\n".join(lines[start:]).strip().encode()).hexdigest()[:12]


def cell(frame: pl.DataFrame, fips: str, period: int, race: str | None = None, **by: Any) -> pl.DataFrame:
    """The rows of one county-period (and race, by-values; None matches null)."""
    out = frame.filter(pl.col("county_fips") == fips, pl.col("period") == period)
    if race is not None:
        out = out.filter(pl.col("race") == race)
    for col, value in by.items():
        out = out.filter(pl.col(col).is_null() if value is None else pl.col(col) == value)
    return out


def county_series(frame: pl.DataFrame, fips: str, column: str) -> dict[int, Any]:
    """period -> the value of a county-level column (the same for every race)."""
    rows = frame.filter(pl.col("county_fips") == fips).select("period", column).unique().sort("period")
    assert rows["period"].n_unique() == rows.height, f"{column} varies within a county-period of {fips}"
    return dict(rows.iter_rows())


def log_counts(panel: Panel) -> list[tuple[str, int, int, str]]:
    return [(s.step, s.n_before, s.n_after, s.unit) for s in panel.sample_log]


# ------------------------------------------------------------------------------------- 1. synth
SYNTH_AGENCIES = (SHP, SCHP)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[Path]]:
    raw = tmp_path_factory.mktemp("panel_synth_raw")
    write_opp_files(raw, SynthSpec(scenario="constant"), rows=60_000, seed=11)
    files = sorted(raw.glob("*.csv.zip"))
    assert [f.name[:2] for f in files] == ["nc", "sc"]
    root = tmp_path_factory.mktemp("panel_synth_store")
    ingest(files, root)
    return open_store(root), files


@pytest.fixture(scope="module")
def synth_panels(synth: tuple[Store, list[Path]]) -> dict[str, Panel]:
    store, _ = synth
    return {
        period: build_panel(store, PanelSpec(agencies=SYNTH_AGENCIES, period=period))  # type: ignore[arg-type]
        for period in ("month", "quarter", "year")
    }


def brute_force_cells(store: Store, period: str, agencies: Sequence[str]) -> pl.DataFrame:
    """The panel's non-zero cells, counted in polars straight from the stored stops."""
    d = pl.col("date")
    index = {
        "month": d.dt.year().cast(pl.Int64) * 12 + d.dt.month().cast(pl.Int64) - 1,
        "quarter": d.dt.year().cast(pl.Int64) * 4 + (d.dt.month().cast(pl.Int64) - 1) // 3,
        "year": d.dt.year().cast(pl.Int64),
    }[period]
    return (
        store.scan()
        .filter(pl.col("department_name").is_in(list(agencies)))
        .filter(pl.col("county_fips").is_not_null(), pl.col("date").is_not_null())
        .group_by(
            "county_fips",
            "state",
            index.alias("period"),
            pl.col("subject_race").fill_null("NA").alias("race"),
        )
        .agg(pl.len().cast(pl.Int64).alias("expected"))
        .collect()
    )


#: Each state's span in the synth files (NC 2000-2015, SC 2005-2016), per period type.
SYNTH_SPANS = {
    "month": {"NC": (M(2000, 1), M(2015, 12)), "SC": (M(2005, 1), M(2016, 12))},
    "quarter": {"NC": (Q(2000, 1), Q(2015, 4)), "SC": (Q(2005, 1), Q(2016, 4))},
    "year": {"NC": (2000, 2015), "SC": (2005, 2016)},
}


@pytest.mark.parametrize("period", ["month", "quarter", "year"])
def test_panel_counts_equal_brute_force_polars_count(
    synth: tuple[Store, list[Path]], synth_panels: dict[str, Panel], period: str
) -> None:
    store, _ = synth
    frame = synth_panels[period].frame
    brute = brute_force_cells(store, period, SYNTH_AGENCIES)
    assert brute.height > 1000  # the comparison is not vacuous

    # the synth files cover each state's documented years end to end
    spans = brute.group_by("state").agg(
        pl.col("period").min().alias("lo"), pl.col("period").max().alias("hi")
    )
    assert {s: (lo, hi) for s, lo, hi in spans.iter_rows()} == SYNTH_SPANS[period]

    # the grid: counties of the state x periods of the state's range x races, each exactly once
    races = sorted(brute["race"].unique().to_list())
    assert races == ["asian/pacific islander", "black", "hispanic", "other", "unknown", "white"]
    expected_keys = pl.concat(
        [
            pl.DataFrame({"county_fips": counties, "state": state})
            .join(pl.DataFrame({"period": list(range(lo, hi + 1))}, schema={"period": pl.Int64}), how="cross")
            .join(pl.DataFrame({"race": races}), how="cross")
            for state, counties in (("NC", NC_COUNTIES), ("SC", SC_COUNTIES))
            for lo, hi in [SYNTH_SPANS[period][state]]
        ]
    )
    assert frame.height == expected_keys.height
    assert frame.select("county_fips", "period", "race").is_duplicated().sum() == 0
    assert (
        frame.select(expected_keys.columns)
        .sort(expected_keys.columns)
        .equals(expected_keys.sort(expected_keys.columns))
    )

    # every cell equals the brute-force count; every other cell is 0
    joined = frame.join(brute, on=["county_fips", "state", "period", "race"], how="left")
    assert joined.height == frame.height
    assert brute.join(frame, on=["county_fips", "state", "period", "race"], how="anti").height == 0
    joined = joined.with_columns(pl.col("expected").fill_null(0))
    assert (joined["stops"] == joined["expected"]).all()
    assert frame["stops"].sum() == brute["expected"].sum()
    assert joined.filter(pl.col("expected") == 0)["stops"].max() == 0
    assert frame["stops"].dtype.is_integer() and frame["stops"].null_count() == 0


@pytest.mark.parametrize("period", ["month", "quarter", "year"])
def test_panel_columns_and_period_start(synth_panels: dict[str, Panel], period: str) -> None:
    frame = synth_panels[period].frame
    assert frame.columns[: len(LEAD)] == LEAD
    for col in ("hispanic_share", "neighbor_in_force", "population_basis"):
        assert col in frame.columns
    assert frame.schema["period"] == pl.Int64
    assert frame.schema["period_start"] == pl.Date
    assert frame.schema["in_force"] == pl.Boolean
    assert frame.schema["first_treated"] == pl.Int64
    ps = pl.col("period_start")
    index = {
        "month": ps.dt.year().cast(pl.Int64) * 12 + ps.dt.month().cast(pl.Int64) - 1,
        "quarter": ps.dt.year().cast(pl.Int64) * 4 + (ps.dt.month().cast(pl.Int64) - 1) // 3,
        "year": ps.dt.year().cast(pl.Int64),
    }[period]
    assert (frame["period"] == frame.select(index).to_series()).all()
    starts = {"month": list(range(1, 13)), "quarter": [1, 4, 7, 10], "year": [1]}[period]
    first_month = ps.dt.month().is_in(starts) & (ps.dt.day() == 1)
    assert frame.select(first_month.all()).item()
    # state follows the FIPS prefix; the frame is sorted
    assert (frame["state"] == frame["county_fips"].str.slice(0, 2).replace({"37": "NC", "45": "SC"})).all()
    assert frame.equals(frame.sort("state", "county_fips", "period", "race"))


def test_sample_log_steps_equal_brute_force_counts(synth: tuple[Store, list[Path]]) -> None:
    store, _ = synth
    reasons = ("Speeding", "Seatbelt", "Seat Belt Violation")
    spec = PanelSpec(
        states=("nc", "SC"), years=(2006, 2014), agencies=SYNTH_AGENCIES, stop_types=("vehicular",),
        reasons=reasons, period="quarter",
    )  # fmt: skip
    panel = build_panel(store, spec)
    stops = store.scan().collect()
    steps = [
        pl.col("state").is_in(["NC", "SC"]),
        pl.col("date").is_not_null() & pl.col("date").dt.year().is_between(2006, 2014),
        pl.col("department_name").is_in(list(SYNTH_AGENCIES)),
        pl.col("type").is_in(["vehicular"]),
        pl.col("reason_for_stop").is_in(list(reasons)),
        pl.col("county_fips").is_not_null(),
    ]
    counts = [stops.height]
    keep = pl.lit(True)
    for cond in steps:
        keep = keep & cond.fill_null(False)
        counts.append(stops.filter(keep).height)
    assert counts[0] == 60_000
    expected = [(name, counts[i], counts[i + 1], "stops") for i, name in enumerate(FILTER_STEPS)]
    assert log_counts(panel) == expected
    # every filter bites (otherwise the comparison proves little)
    assert all(b > a for _, b, a, _ in expected[1:])
    assert panel.frame["stops"].sum() == counts[-1]


# ------------------------------------------------------------------------------------ 2. hand-built
HAND_NC = [
    # kept (10 stops)
    stop("2007-01-15", "Wake County", "white"),
    stop("2007-01-20", "WAKE", "white"),
    stop("2007-01-31", "Wake County", "hispanic", reason="Seat Belt"),
    stop("2007-02-01", "Wake County", "hispanic", sex="female"),
    stop("2007-03-10", "Durham County", "black", sex="female"),
    stop("2007-03-10", "Durham County", "black", sex="female", reason="Seat Belt"),
    stop("2007-03-11", "Durham County", "black", sex=None),
    stop("2007-04-30", "Mc Dowell County", None),
    stop("2007-06-30", "Mecklenburg County", "unknown"),
    stop("2007-01-02", "Mecklenburg County", "white", sex="female"),
    # dropped, one step each
    stop("2007-02-14", "Nowhere County", "white"),  # county_known
    stop("2007-02-14", None, "white"),  # county_known
    stop("2007-02-14", "Wake County", "white", agency=RPD),  # agency
    stop(None, "Wake County", "white"),  # date_window (NA date)
    stop("2007-02-14", "Wake County", "white", kind="pedestrian"),  # stop_type
    stop("2007-02-14", "Wake County", "white", kind=None),  # stop_type (NA)
    stop("2007-02-14", "Wake County", "white", reason="Investigation"),  # reason_for_stop
    stop("2007-02-14", "Wake County", "white", reason=None),  # reason_for_stop (NA)
    stop("2008-05-05", "Wake County", "white", agency=RPD),  # agency
    stop("2006-12-31", "Durham County", "asian/pacific islander"),  # date_window (before 2007)
]
HAND_SC = [stop("2007-03-03", "Horry County", "white", agency=SCHP)]  # states
HAND_SPEC = PanelSpec(
    states=("NC",), years=(2007, 2008), agencies=(SHP,), stop_types=("vehicular",),
    reasons=("Speeding", "Seat Belt"), by=("subject_sex",),
)  # fmt: skip
#: (county, period, race, sex) -> stops: every non-zero cell of the hand-built panel.
HAND_CELLS = {
    (WAKE, M(2007, 1), "white", "male"): 2,
    (WAKE, M(2007, 1), "hispanic", "male"): 1,
    (WAKE, M(2007, 2), "hispanic", "female"): 1,
    (DURHAM, M(2007, 3), "black", "female"): 2,
    (DURHAM, M(2007, 3), "black", None): 1,
    (MCDOWELL, M(2007, 4), "NA", "male"): 1,
    (MECK, M(2007, 6), "unknown", "male"): 1,
    (MECK, M(2007, 1), "white", "female"): 1,
}
HAND_LOG = [
    ("states", 21, 20, "stops"),
    ("date_window", 20, 18, "stops"),
    ("agency", 18, 16, "stops"),
    ("stop_type", 16, 14, "stops"),
    ("reason_for_stop", 14, 12, "stops"),
    ("county_known", 12, 10, "stops"),
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[Path]]:
    raw = tmp_path_factory.mktemp("panel_hand_raw")
    files = [
        write_stops(raw / "nc_statewide_2020_04_01.csv", HAND_NC),
        write_stops(raw / "sc_statewide_2019_02_25.csv", HAND_SC),
    ]
    root = tmp_path_factory.mktemp("panel_hand_store")
    ingest(files, root)
    return open_store(root), files


@pytest.fixture(scope="module")
def hand_panel(hand: tuple[Store, list[Path]]) -> Panel:
    return build_panel(hand[0], HAND_SPEC)


def test_hand_fixture_file_is_opp_text(hand: tuple[Store, list[Path]]) -> None:
    text = hand[1][0].read_text(encoding="utf-8").splitlines()
    assert (
        text[0]
        == "raw_row_number,date,county_name,subject_race,subject_sex,department_name,type,reason_for_stop"
    )
    assert text[8] == "8,2007-04-30,Mc Dowell County,NA,male,NC State Highway Patrol,vehicular,Speeding"
    assert text[14] == "14,NA,Wake County,white,male,NC State Highway Patrol,vehicular,Speeding"


def test_hand_built_cells_are_typed_out(hand_panel: Panel) -> None:
    frame = hand_panel.frame
    assert "subject_sex" in frame.columns
    keys = frame.select("race", "subject_sex").unique()
    assert sorted(keys.iter_rows(), key=str) == sorted(
        {(race, sex) for _, _, race, sex in HAND_CELLS}, key=str
    )
    # 100 NC counties x Jan..Jun 2007 x the 8 observed (race, sex) pairs
    assert frame.height == 100 * 6 * 8
    assert sorted(frame["county_fips"].unique()) == NC_COUNTIES
    assert sorted(frame["period"].unique()) == list(range(M(2007, 1), M(2007, 6) + 1))
    assert frame["state"].unique().to_list() == ["NC"]
    nonzero = {
        (f, p, r, s): n
        for f, p, r, s, n in frame.filter(pl.col("stops") > 0)
        .select("county_fips", "period", "race", "subject_sex", "stops")
        .iter_rows()
    }
    assert nonzero == HAND_CELLS
    assert frame["stops"].sum() == 10
    # a missing sex stays a null by-value; a missing race is the race "NA"
    assert cell(frame, DURHAM, M(2007, 3), "black", subject_sex=None)["stops"].to_list() == [1]
    assert cell(frame, MCDOWELL, M(2007, 4), "NA", subject_sex="male")["stops"].to_list() == [1]
    assert cell(frame, WAKE, M(2007, 3), "white", subject_sex="male")["stops"].to_list() == [0]


def test_hand_built_sample_log_is_typed_out(hand_panel: Panel) -> None:
    assert log_counts(hand_panel) == HAND_LOG
    steps = list(hand_panel.sample_log)
    assert steps[0].details == {"states": ["NC"]}
    assert steps[1].details == {"years": [2007, 2008]}
    assert steps[2].details == {"agencies": [SHP]}
    assert [s.n_dropped for s in steps] == [1, 2, 2, 2, 2, 2]
    log = hand_panel.sample_log.to_frame()
    assert log["step"].to_list() == FILTER_STEPS
    assert log["share_dropped"][-1] == pytest.approx(2 / 12)


def test_hand_built_without_filters(hand: tuple[Store, list[Path]]) -> None:
    panel = build_panel(hand[0], PanelSpec(period="year"))
    # every stop with a date and a county: 21 - NA date - 2 without county
    assert log_counts(panel) == [
        ("states", 21, 21, "stops"),
        ("date_window", 21, 20, "stops"),
        ("agency", 20, 20, "stops"),
        ("stop_type", 20, 20, "stops"),
        ("reason_for_stop", 20, 20, "stops"),
        ("county_known", 20, 18, "stops"),
    ]
    frame = panel.frame
    assert frame["stops"].sum() == 18
    # NC spans 2006..2008, SC only 2007: each state's own range
    assert frame.group_by("state").agg(pl.col("period").min(), pl.col("period").max().alias("hi")).sort(
        "state"
    ).rows() == [("NC", 2006, 2008), ("SC", 2007, 2007)]
    assert frame.height == (100 * 3 + 46 * 1) * 6  # races: white hispanic black NA unknown asian/pi
    assert cell(frame, WAKE, 2007, "white")["stops"].item() == 2 + 1 + 1 + 1 + 2
    assert cell(frame, WAKE, 2008, "white")["stops"].item() == 1
    assert cell(frame, DURHAM, 2006, "asian/pacific islander")["stops"].item() == 1
    assert cell(frame, HORRY, 2007, "white")["stops"].item() == 1


# ------------------------------------------------------------------------------ 3. write, lineage
def test_write_parquet_json_and_lineage(
    hand: tuple[Store, list[Path]], hand_panel: Panel, tmp_path: Path
) -> None:
    from stopdisparity.policy import shipped_registry_path
    from stopdisparity.resources import queries_dir

    out = hand_panel.write(tmp_path / "out" / "panel.parquet")
    assert out == tmp_path / "out" / "panel.parquet"
    assert sorted(p.name for p in out.parent.iterdir()) == ["panel.json", "panel.parquet"]
    assert pl.read_parquet(out).equals(hand_panel.frame)

    side = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [(s["step"], s["n_before"], s["n_after"], s["unit"]) for s in side["sample_log"]] == HAND_LOG
    assert [s["n_dropped"] for s in side["sample_log"]] == [1, 2, 2, 2, 2, 2]
    lineage = side["lineage"]
    _, files = hand
    assert set(lineage["inputs"]) == {f.name for f in files}
    for f in files:
        entry = lineage["inputs"][f.name]
        assert entry["sha256"] == sha256(f)
        assert entry["rows_stored"] == entry["rows_read"]
    assert lineage["inputs"]["nc_statewide_2020_04_01.csv"]["rows_read"] == 20
    main = lineage["policies"]["main"]
    assert main["policy"] == "287g"
    assert Path(main["path"]).resolve() == shipped_registry_path().resolve()
    assert main["sha256"] == sha256(shipped_registry_path())
    assert main["treatment_spec"]["exclude_agencies"] == [SHP]  # spillover: the patrol's own rows out
    spec = lineage["panel_spec"]
    assert spec["agencies"] == [SHP] and spec["by"] == ["subject_sex"] and spec["years"] == [2007, 2008]
    assert spec["period"] == "month" and spec["design"] == "spillover"
    assert {"stopdisparity", "duckdb", "polars"} <= set(lineage["versions"])
    queries = (
        "count_stops",
        "select_panel_stops",
        "count_panel_sample_steps",
        "aggregate_stops_by_county_period_race",
    )
    assert lineage["queries"] == {q: statement_digest(queries_dir() / f"{q}.sql") for q in queries}
    # the Parquet key-value metadata holds the same lineage
    meta = pl.read_parquet_metadata(out)
    assert json.loads(meta["stopdisparity"]) == lineage
    assert side["treatment_rows"] == json.loads(
        json.dumps(hand_panel.to_json()["treatment_rows"], default=str)
    )


def test_write_rejects_other_suffixes(hand_panel: Panel, tmp_path: Path) -> None:
    with pytest.raises(SpecificationError, match=r"panel\.txt"):
        hand_panel.write(tmp_path / "panel.txt")


# ----------------------------------------------------------------------------- 4. timing store
#: 29 NC stops, 2006-01-10 .. 2009-12-31 (months 24072..24119), by the state patrol.
TIMING_STOPS = [
    *[stop("2006-01-10", "Mecklenburg County", "white") for _ in range(3)],
    stop("2007-05-05", "Mecklenburg County", "white"),
    stop("2006-06-01", "Wake County", "white"),
    *[
        stop(d, "Wake County", "white")
        for d in ("2008-05-01", "2008-06-01", "2008-07-01", "2008-08-01", "2009-01-01", "2009-02-01")
    ],
    *[stop(d, "Durham County", "unknown") for d in ("2006-03-03", "2007-03-03", "2008-03-03", "2009-03-03")],
    stop("2006-04-04", "Durham County", "white"),
    *[
        stop(d, "Guilford County", "white")
        for d in ("2006-02-02", "2007-02-02", "2008-02-02", "2009-02-02", "2009-12-31")
    ],
    *[stop(d, "Gaston County", "black") for d in ("2006-02-02", "2006-03-03", "2006-04-04")],
    *[stop("2008-01-05", "Gaston County", "unknown") for _ in range(5)],
]
T0, T1 = M(2006, 1), M(2009, 12)
TIMING_RACES = 3  # white, unknown, black
POLICY_ROWS = [
    "NC,Mecklenburg County Sheriff's Office,sheriff,37119,jail,2006-02-01,",  # on the 1st: Feb treated
    "NC,Wake County Sheriff's Office,sheriff,37183,jail,2008-03-02,",  # on the 2nd: March not treated
    "NC,Gaston County Sheriff's Office,sheriff,37071,jail,2007-01-01,2008-07-01",  # ended: off from July
    "NC,Alamance County Sheriff's Office,sheriff,37001,jail,2007-01-15,2008-01-15",  # two agencies and
    "NC,Burlington Police Department,police,37001,task_force,2007-06-01,2009-06-01",  # models, united
    "NC,NC State Highway Patrol,state,37063,task_force,2007-05-01,",  # the stopping agency's own
    "NC,Union County Sheriff's Office,sheriff,37179,unknown,2008-01-01,",  # unknown model
    "NC,Cumberland County Sheriff's Office,sheriff,37051,jail,2005-06-01,",  # before the panel starts
]
EXTRA_POLICY_ROWS = [
    "NC,ICE Secure Communities Wake,other,37183,jail,2009-01-01,",
    "NC,ICE Secure Communities Mecklenburg,other,37119,jail,2008-11-15,",
]


@pytest.fixture(scope="module")
def timing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    raw = tmp_path_factory.mktemp("panel_timing_raw")
    src = write_stops(raw / "nc_statewide_2020_04_01.csv", TIMING_STOPS)
    root = tmp_path_factory.mktemp("panel_timing_store")
    ingest([src], root)
    return {
        "store": open_store(root),
        "policy": write_policy(raw / "policy.csv", POLICY_ROWS),
        "extra": write_policy(raw / "secure_communities.csv", EXTRA_POLICY_ROWS),
        "york": write_policy(
            raw / "york.csv", ["SC,York County Sheriff's Office,sheriff,45091,jail,2006-01-01,"]
        ),
    }


def timing_panel(timing: Mapping[str, Any], spec: PanelSpec | None = None, **kwargs: Any) -> Panel:
    return build_panel(
        timing["store"], spec or PanelSpec(agencies=(SHP,)), policy=kwargs.pop("policy", timing["policy"]),
        **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def spill(timing: dict[str, Any]) -> Panel:
    return timing_panel(timing, extra_policies={"secure_communities": (timing["extra"], TreatmentSpec())})


def expected_in_force(on: Sequence[tuple[int, int]]) -> dict[int, bool]:
    return {p: any(a <= p <= b for a, b in on) for p in range(T0, T1 + 1)}


def test_timing_panel_shape(spill: Panel) -> None:
    frame = spill.frame
    assert frame.height == 100 * 48 * TIMING_RACES
    assert frame["stops"].sum() == len(TIMING_STOPS) == 29
    assert log_counts(spill)[-1] == ("county_known", 29, 29, "stops")
    assert len(spill.sample_log) == 6  # eligibility is off by default: no drop steps


def test_first_day_rule_signed_on_the_1st_vs_the_2nd(spill: Panel) -> None:
    f = spill.frame
    # Mecklenburg signed 2006-02-01: February is treated
    assert county_series(f, MECK, "in_force") == expected_in_force([(M(2006, 2), T1)])
    assert set(county_series(f, MECK, "first_treated").values()) == {M(2006, 2)}
    # Wake signed 2008-03-02: March is not (not in force on its first day), April is
    assert county_series(f, WAKE, "in_force") == expected_in_force([(M(2008, 4), T1)])
    assert set(county_series(f, WAKE, "first_treated").values()) == {M(2008, 4)}


def test_ended_agreement_switches_off_first_treated_unchanged(spill: Panel) -> None:
    f = spill.frame
    # Gaston 2007-01-01 .. 2008-07-01 (exclusive): in force Jan 2007 .. Jun 2008
    assert county_series(f, GASTON, "in_force") == expected_in_force([(M(2007, 1), M(2008, 6))])
    assert set(county_series(f, GASTON, "first_treated").values()) == {M(2007, 1)}
    rel = county_series(f, GASTON, "rel_period")
    assert rel[M(2008, 7)] == 18 and rel[M(2009, 12)] == 35 and rel[T0] == -12


def test_county_with_two_agencies_and_models(spill: Panel, timing: dict[str, Any]) -> None:
    f = spill.frame
    # jail 2007-01-15..2008-01-15 united with task force 2007-06-01..2009-06-01: Feb 2007 .. May 2009
    assert county_series(f, ALAMANCE, "in_force") == expected_in_force([(M(2007, 2), M(2009, 5))])
    assert set(county_series(f, ALAMANCE, "first_treated").values()) == {M(2007, 2)}
    used = spill.treatment_rows.filter(
        pl.col("county_fips") == ALAMANCE, pl.col("policy") != "secure_communities"
    )
    assert sorted(used["counted_as"].to_list()) == ["jail", "task_force"]
    # with the jail model only, the county is in force Feb 2007 .. Jan 2008
    jail = timing_panel(timing, treatment=TreatmentSpec(models=("jail",))).frame
    assert county_series(jail, ALAMANCE, "in_force") == expected_in_force([(M(2007, 2), M(2008, 1))])


def test_rel_period_and_never_treated(spill: Panel) -> None:
    f = spill.frame
    treated = f.filter(pl.col("first_treated") != 0)
    assert (treated["rel_period"] == treated["period"] - treated["first_treated"]).all()
    never = f.filter(pl.col("first_treated") == 0)
    assert never["rel_period"].null_count() == never.height > 0
    assert not never["in_force"].any()
    # treated counties: Mecklenburg, Wake, Gaston, Alamance, Union (unknown model as jail), Cumberland
    first = dict(
        f.select("county_fips", "first_treated").unique().filter(pl.col("first_treated") != 0).rows()
    )
    assert first == {
        MECK: M(2006, 2), WAKE: M(2008, 4), GASTON: M(2007, 1), ALAMANCE: M(2007, 2),
        UNION: M(2008, 1), CUMBERLAND: M(2005, 6),
    }  # fmt: skip
    # Cumberland adopted before the panel: in force throughout, rel_period > 0 from the start
    assert all(county_series(f, CUMBERLAND, "in_force").values())
    assert county_series(f, CUMBERLAND, "rel_period")[T0] == M(2006, 1) - M(2005, 6)


def test_spillover_excludes_the_stopping_agencys_own_agreement(spill: Panel, timing: dict[str, Any]) -> None:
    f = spill.frame
    assert set(county_series(f, DURHAM, "first_treated").values()) == {0}
    assert not any(county_series(f, DURHAM, "in_force").values())
    assert DURHAM not in spill.treatment_rows["county_fips"].to_list()
    # design="direct": only the patrol's own rows count
    direct = timing_panel(timing, PanelSpec(agencies=(SHP,), design="direct")).frame
    first = dict(
        direct.select("county_fips", "first_treated").unique().filter(pl.col("first_treated") != 0).rows()
    )
    assert first == {DURHAM: M(2007, 5)}
    assert county_series(direct, DURHAM, "in_force") == expected_in_force([(M(2007, 5), T1)])
    # with no stopping agency named, every row counts (the patrol's row treats Durham)
    every = timing_panel(timing, PanelSpec()).frame
    assert set(county_series(every, DURHAM, "first_treated").values()) == {M(2007, 5)}


def test_extra_policy_adds_its_own_timing_columns(spill: Panel) -> None:
    f = spill.frame
    names = policy_timing_columns("secure_communities")
    assert (names.in_force, names.first_treated, names.rel_period) == (
        "in_force__secure_communities", "first_treated__secure_communities", "rel_period__secure_communities",
    )  # fmt: skip
    for col in names.mapping().values():
        assert col in f.columns
    assert set(county_series(f, WAKE, names.first_treated).values()) == {M(2009, 1)}
    assert set(county_series(f, MECK, names.first_treated).values()) == {M(2008, 12)}  # signed the 15th
    assert county_series(f, MECK, names.in_force) == expected_in_force([(M(2008, 12), T1)])
    assert county_series(f, WAKE, names.rel_period)[M(2009, 3)] == 2
    assert set(county_series(f, GASTON, names.first_treated).values()) == {0}
    assert set(county_series(f, GASTON, names.rel_period).values()) == {None}
    # the main policy's columns are untouched by the extra one
    assert set(county_series(f, WAKE, "first_treated").values()) == {M(2008, 4)}
    assert set(spill.lineage["policies"]) == {"main", "secure_communities"}
    assert spill.lineage["policies"]["secure_communities"]["sha256"] == sha256(
        Path(spill.lineage["policies"]["secure_communities"]["path"])
    )


def test_exit_censor_drops_censored_cells_with_a_step(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, treatment=TreatmentSpec(exit="censor"))
    # Gaston from Jul 2008 (18 months), Alamance from Jun 2009 (7 months), x 3 races
    before = 100 * 48 * TIMING_RACES
    assert log_counts(panel)[-1] == ("censor_after_exit", before, before - (18 + 7) * TIMING_RACES, "cells")
    f = panel.frame
    assert f.height == before - 75
    assert max(county_series(f, GASTON, "in_force")) == M(2008, 6)
    assert max(county_series(f, ALAMANCE, "in_force")) == M(2009, 5)
    assert max(county_series(f, WAKE, "in_force")) == T1
    assert not f["censored"].any()


def test_unknown_model_exclude_county_drops_it_with_a_step(timing: dict[str, Any], spill: Panel) -> None:
    panel = timing_panel(timing, treatment=TreatmentSpec(unknown_model="exclude_county"))
    step = panel.sample_log.steps[-1]
    assert (step.step, step.n_before, step.n_after, step.unit) == (
        "exclude_unknown_model",
        100,
        99,
        "counties",
    )
    assert step.details == {"counties": [UNION]}
    assert UNION not in panel.frame["county_fips"].to_list()
    assert panel.frame.height == 99 * 48 * TIMING_RACES
    # the default treats the unknown model as a jail agreement
    assert set(county_series(spill.frame, UNION, "first_treated").values()) == {M(2008, 1)}


def test_extra_policy_exclude_county_is_logged(timing: dict[str, Any]) -> None:
    panel = timing_panel(
        timing, extra_policies={"x": (timing["policy"], TreatmentSpec(unknown_model="exclude_county"))}
    )
    names = policy_timing_columns("x")
    assert panel.frame.select(names.in_force, names.first_treated).null_count().sum_horizontal().item() == 0
    steps = [s for s in panel.sample_log if s.step.startswith("exclude_unknown_model")]
    assert [s.details.get("counties") for s in steps] == [[UNION]]


# ----------------------------------------------------------------------- 5. neighbours, population
def test_neighbor_in_force(spill: Panel) -> None:
    f = spill.frame
    # Cabarrus borders Mecklenburg (from Feb 2006) and Union (from Jan 2008); it is never treated itself
    assert county_series(f, CABARRUS, "neighbor_in_force") == expected_in_force([(M(2006, 2), T1)])
    assert not any(county_series(f, CABARRUS, "in_force").values())
    # Mecklenburg borders Gaston (Jan 2007 .. Jun 2008) and Union (from Jan 2008); its own agreement
    # does not count
    assert county_series(f, MECK, "neighbor_in_force") == expected_in_force([(M(2007, 1), T1)])
    # Dare borders Currituck, Hyde and Tyrrell: none treated
    assert not any(county_series(f, DARE, "neighbor_in_force").values())
    assert f.schema["neighbor_in_force"] == pl.Boolean and f["neighbor_in_force"].null_count() == 0


def test_neighbor_in_force_across_a_state_line(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, policy=timing["york"])
    assert set(county_series(panel.frame, MECK, "neighbor_in_force").values()) == {True}


def test_population_by_calendar_year_and_race(synth_panels: dict[str, Panel]) -> None:
    month = synth_panels["month"].frame
    # data/census: Mecklenburg hispanic 2000 census 44871, 2010 census 111944, 2011 estimate 121320
    assert cell(month, MECK, M(2000, 7), "hispanic")["population"].item() == 44_871
    assert cell(month, MECK, M(2010, 1), "hispanic")["population"].item() == 111_944
    assert cell(month, MECK, M(2010, 12), "hispanic")["population"].item() == 111_944
    assert cell(month, MECK, M(2011, 1), "hispanic")["population"].item() == 121_320
    assert cell(month, MECK, M(2010, 6), "white")["population"].item() == 465_372
    assert cell(month, MECK, M(2010, 6), "hispanic")["population_basis"].item() == "census2010_pl94171"
    assert cell(month, HORRY, M(2012, 3), "hispanic")["population"].item() == 16_847
    # races the census has no count for: null
    assert cell(month, MECK, M(2010, 6), "unknown")["population"].to_list() == [None]
    assert (
        month.filter(pl.col("race") == "unknown")["population"].null_count()
        == month.filter(pl.col("race") == "unknown").height
    )
    # Hispanic share of the county, for every race of the county-period
    share = cell(month, MECK, M(2010, 6))["hispanic_share"].unique().to_list()
    assert share == [pytest.approx(111_944 / (42_509 + 278_042 + 111_944 + 21_761 + 465_372))]
    assert month["hispanic_share"].null_count() == 0
    # quarter and year panels take the calendar year of the period's start
    assert cell(synth_panels["quarter"].frame, MECK, Q(2011, 2), "hispanic")["population"].item() == 121_320
    assert cell(synth_panels["year"].frame, MECK, 2010, "hispanic")["population"].item() == 111_944


# -------------------------------------------------------------------------------- 6. eligibility
def test_min_pre_stops_uses_pre_period_only(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, PanelSpec(agencies=(SHP,), min_pre_stops=3))
    step = panel.sample_log.steps[-1]
    assert (step.step, step.n_before, step.n_after, step.unit) == ("min_pre_stops", 100, 4, "counties")
    assert step.details == {"min_pre_stops": 3}
    # Wake: 7 stops, but 1 before its April 2008 adoption -> dropped; Mecklenburg: 3 of its 4 stops
    # in January 2006, before adoption -> kept; never-treated counties count all their periods
    assert sorted(panel.frame["county_fips"].unique()) == [DURHAM, GASTON, GUILFORD, MECK]


def test_max_pre_unknown_share_uses_pre_period_only(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, PanelSpec(agencies=(SHP,), max_pre_unknown_share=0.5))
    step = panel.sample_log.steps[-1]
    assert (step.step, step.n_before, step.n_after, step.unit) == ("race_coverage", 100, 4, "counties")
    # Durham (never treated): 4 of 5 stops unknown -> dropped; Gaston: 5 unknown after adoption,
    # none before -> kept; counties with no pre-period stops cannot show coverage -> dropped
    assert sorted(panel.frame["county_fips"].unique()) == [GASTON, GUILFORD, MECK, WAKE]


def test_both_eligibility_rules_are_logged_in_order(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, PanelSpec(agencies=(SHP,), min_pre_stops=3, max_pre_unknown_share=0.5))
    assert log_counts(panel)[-2:] == [
        ("min_pre_stops", 100, 4, "counties"),
        ("race_coverage", 4, 3, "counties"),
    ]
    assert [s.step for s in panel.sample_log][:6] == FILTER_STEPS
    assert sorted(panel.frame["county_fips"].unique()) == [GASTON, GUILFORD, MECK]
    assert panel.frame.height == 3 * 48 * TIMING_RACES


def test_min_pre_stops_zero_keeps_every_county(timing: dict[str, Any]) -> None:
    panel = timing_panel(timing, PanelSpec(agencies=(SHP,), min_pre_stops=0))
    assert log_counts(panel)[-1] == ("min_pre_stops", 100, 100, "counties")


# ------------------------------------------------------------------------------------- 7. errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"period": "week"}, "period must be one of .*'week'"),
        ({"design": "both"}, "design must be one of"),
        ({"by": ("subject_age",)}, "by must name .*'subject_age'"),
        ({"by": ("date",)}, "by must name .*'date'"),
        ({"years": (2010, 2005)}, r"first <= last; got \(2010, 2005\)"),
        ({"design": "direct"}, "design='direct' needs the stopping agency"),
        ({"min_pre_stops": -1}, "min_pre_stops must be >= 0"),
        ({"max_pre_unknown_share": 1.5}, r"max_pre_unknown_share must be in \[0, 1\]"),
        ({"population": "guess"}, "population must be one of"),
    ],
)
def test_panel_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecificationError, match=match):
        PanelSpec(**kwargs)


def test_panel_spec_normalises() -> None:
    spec = PanelSpec(states=("nc",), agencies=SHP, by="subject_sex")  # type: ignore[arg-type]
    assert (spec.states, spec.agencies, spec.by) == (("NC",), (SHP,), ("subject_sex",))
    assert spec.min_pre_stops is None and spec.max_pre_unknown_share is None


def test_no_stops_left_names_the_sample_log(hand: tuple[Store, list[Path]]) -> None:
    with pytest.raises(SpecificationError, match=r"sample log.*agency: 20 -> 0"):
        build_panel(hand[0], PanelSpec(agencies=("Nobody's Police Department",)))
    with pytest.raises(SpecificationError, match=r"sample log.*date_window: 21 -> 0"):
        build_panel(hand[0], PanelSpec(years=(1990, 1995)))


def test_bad_policy_and_treatment(hand: tuple[Store, list[Path]], tmp_path: Path) -> None:
    with pytest.raises(SourceNotRegisteredError, match=r"nope\.csv"):
        build_panel(hand[0], HAND_SPEC, policy=tmp_path / "nope.csv")
    with pytest.raises(SpecificationError, match="treatment must be a TreatmentSpec"):
        build_panel(hand[0], HAND_SPEC, treatment={"exit": "censor"})
