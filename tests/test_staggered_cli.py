"""`did --estimator <staggered>`: generic and race-layout panels, JSON row contracts (issue 6 §2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from stopdisparity.cli import app
from stopdisparity.errors import SpecificationError
from stopdisparity.models.staggered import fit_staggered, fit_staggered_race, prepare_staggered_race
from stopdisparity.results import TIDY_COLUMNS
from stopdisparity.synth import SynthSpec, cells

MPDTA = Path(__file__).parent / "reference" / "mpdta" / "mpdta.csv"
GENERIC = ["--panel", str(MPDTA), "--outcome", "lemp", "--unit", "countyreal", "--period", "year"]
GENERIC += ["--first-treated", "first.treat"]
runner = CliRunner()


def _json(args: list[str]) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["did", *args, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    for row in rows:
        assert list(row)[: len(TIDY_COLUMNS)] == list(TIDY_COLUMNS)
        for key, value in row.items():  # JSON numbers or null, never NaN
            assert not (isinstance(value, float) and not math.isfinite(value)), (key, row)
    return rows


@pytest.fixture(scope="module")
def race_panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SynthSpec(scenario="dynamic", design="random", n_treated=30)
    frame = cells(spec, seed=7, rows=400_000, years=(2005, 2011)).filter(pl.col("agency") == "state_patrol")
    path = tmp_path_factory.mktemp("race") / "panel.parquet"
    frame.write_parquet(path)
    return path


def test_callaway_santanna_generic_rows_and_api_equality() -> None:
    rows = _json([*GENERIC, "--estimator", "callaway-santanna", "--draws", "99", "--seed", "3"])
    terms = [r["term"] for r in rows]
    aggs = [r["aggregation"] for r in rows]
    # every ATT(g,t), then simple, dynamic (each e, overall), group (each g, overall), calendar
    order = [a for i, a in enumerate(aggs) if i == 0 or a != aggs[i - 1]]
    assert order == ["gt", "simple", "dynamic", "group", "calendar"]
    assert terms[aggs.index("simple")] == "simple"
    assert terms[aggs.index("group") - 1] == "dynamic:overall"
    assert terms[-1] == "calendar:overall"
    api = fit_staggered(
        pl.read_csv(MPDTA), estimator="callaway-santanna", yname="lemp", idname="countyreal", tname="year",
        gname="first.treat", n_boot=99, seed=3,
    ).tidy()  # fmt: skip
    assert rows == api.to_dicts()
    simple = rows[terms.index("simple")]
    assert simple["estimate"] == pytest.approx(-0.0400, abs=5e-5)  # R did's published simple ATT


@pytest.mark.parametrize(
    ("estimator", "first_term", "extra"),
    [
        ("sun-abraham", "e:", []),
        ("bjs", "att", []),
        ("bacon", "twfe", []),
        ("twfe-weights", "twfe", []),
        ("etwfe", "att", []),
        ("callaway-santanna", "gt:", ["--control", "not_yet", "--base-period", "universal", "--draws", "0"]),
    ],
)
def test_each_estimator_generic(estimator: str, first_term: str, extra: list[str]) -> None:
    rows = _json([*GENERIC, "--estimator", estimator, *extra])
    assert rows[0]["term"].startswith(first_term)
    assert {r["estimator"] for r in rows} == {estimator}


def test_bacon_json_contract() -> None:
    rows = _json([*GENERIC, "--estimator", "bacon"])
    assert [r["term"] for r in rows[:5]] == [
        "twfe", "earlier_vs_later", "later_vs_earlier", "treated_vs_untreated", "treated_vs_already_treated",
    ]  # fmt: skip
    types = rows[1:5]
    twfe = rows[0]["estimate"]
    total = sum(r["weight"] * r["estimate"] for r in types if r["estimate"] is not None)
    assert total == pytest.approx(twfe, abs=1e-10)
    assert sum(r["weight"] for r in types) == pytest.approx(1.0)
    assert all("weight" in r for r in rows[5:]) and len(rows) > 5


@pytest.mark.parametrize(
    "estimator", ["etwfe", "callaway-santanna", "sun-abraham", "bjs", "bacon", "twfe-weights"]
)
def test_race_layout(race_panel: Path, estimator: str) -> None:
    extra = ["--draws", "0"] if estimator == "callaway-santanna" else []
    rows = _json(["--panel", str(race_panel), "--estimator", estimator, *extra])
    assert rows and {r["estimator"] for r in rows} == {estimator}
    options: dict[str, Any] = {"n_boot": 0} if estimator == "callaway-santanna" else {}
    api = fit_staggered_race(pl.read_parquet(race_panel), estimator=estimator, **options).tidy()  # type: ignore[arg-type]
    assert rows == api.to_dicts()


def test_bjs_leave_out_flag_equals_the_api() -> None:
    """--leave-out reaches bjs(leave_out=True): the same rows as the API, a larger SE than
    --no-leave-out; the default leaves out here (every cohort x year cell of mpdta has 2+ counties)."""
    rows = _json([*GENERIC, "--estimator", "bjs", "--leave-out"])
    plain = _json([*GENERIC, "--estimator", "bjs", "--no-leave-out"])
    assert _json([*GENERIC, "--estimator", "bjs"]) == rows
    api = fit_staggered(
        pl.read_csv(MPDTA), estimator="bjs", yname="lemp", idname="countyreal", tname="year",
        gname="first.treat", leave_out=True,
    ).tidy()  # fmt: skip
    assert rows == api.to_dicts()
    assert rows[0]["estimate"] == plain[0]["estimate"] and rows[0]["std_error"] > plain[0]["std_error"]
    assert "leave-out" in rows[0]["inference"]


@pytest.mark.parametrize(
    ("estimator", "scale"),
    [("etwfe", "share"), ("bjs", "logodds"), ("sun-abraham", "logodds"), ("bacon", "logodds"),
     ("callaway-santanna", "share")],
)  # fmt: skip
def test_prepared_race_panel_fits_as_fit_staggered_race(race_panel: Path, estimator: str, scale: str) -> None:
    """One prepared panel serves several estimators: fitting it equals fit_staggered_race."""
    data = pl.read_parquet(race_panel)
    options: dict[str, Any] = {"n_boot": 0} if estimator == "callaway-santanna" else {}
    prepared = prepare_staggered_race(data, estimator=estimator, scale=scale)  # type: ignore[arg-type]
    got = fit_staggered(prepared, estimator=estimator, **options).tidy()  # type: ignore[arg-type]
    want = fit_staggered_race(data, estimator=estimator, scale=scale, **options).tidy()  # type: ignore[arg-type]
    assert got.to_dicts() == want.to_dicts()
    with pytest.raises(SpecificationError, match="twfe-weights takes the race unit panel"):
        prepare_staggered_race(data, estimator="twfe-weights")


def test_logodds_scale_and_month_cohorts(race_panel: Path) -> None:
    share = _json(["--panel", str(race_panel), "--estimator", "bjs"])
    logodds = _json(["--panel", str(race_panel), "--estimator", "bjs", "--scale", "logodds"])
    assert share[0]["estimate"] != logodds[0]["estimate"]
    assert abs(logodds[0]["estimate"]) > 5 * abs(share[0]["estimate"])  # log odds vs a share of a few %
    # month cohorts: cells without stops have no share, so the panel is refused unless they are dropped
    res = runner.invoke(app, ["did", "--panel", str(race_panel), "--estimator", "bjs", "--cohort", "period"])
    assert res.exit_code != 0 and "--period year" in res.output and "missing='drop'" in res.output
    months = _json(
        ["--panel", str(race_panel), "--estimator", "bjs", "--cohort", "period", "--missing", "drop"]
    )
    assert months[0]["n_obs"] > 5 * share[0]["n_obs"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimator", "bjs", "--inference", "wild"], "--inference wild applies to the TWFE"),
        (["--estimator", "bjs", "--inference", "cr2"], "--inference cr2 applies to the TWFE"),
        (["--estimator", "bjs", "--control", "never"], "--control applies to --estimator"),
        (["--estimator", "etwfe", "--leave-out"], "--leave-out applies to --estimator bjs"),
        (["--estimator", "etwfe", "--base-period", "universal"], "--base-period applies"),
        (["--estimator", "bjs", "--scale", "logodds"], "--scale and --cohort apply to the race layout"),
        (["--estimator", "bjs", "--group", "lpop"], "--group does not apply"),
        (["--estimator", "staggered"], "--estimator must be one of"),
    ],
)
def test_cli_refusals(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["did", *GENERIC, *args])
    assert res.exit_code != 0
    assert message in res.output


def test_race_layout_refusals(race_panel: Path) -> None:
    res = runner.invoke(
        app, ["did", "--panel", str(race_panel), "--estimator", "etwfe", "--scale", "logodds"]
    )
    assert res.exit_code != 0 and "scale='logodds' applies to the linear estimators" in res.output


def test_cr2_etwfe_and_sun_abraham(race_panel: Path) -> None:
    """`--inference cr2` with etwfe (every link-scale row) and sun-abraham (every row): as the API. It is
    the default of both, in the CLI and the API; `--inference cluster` / inference="cluster" give CR1."""
    from stopdisparity.models.inference import apply_inference

    rows = _json(["--panel", str(race_panel), "--estimator", "etwfe", "--inference", "cr2"])
    fit = fit_staggered_race(pl.read_parquet(race_panel), estimator="etwfe", inference="cluster")
    assert rows == apply_inference(fit, "cr2").tidy().to_dicts()
    assert rows == _json(["--panel", str(race_panel), "--estimator", "etwfe"])  # the default
    assert rows == fit_staggered_race(pl.read_parquet(race_panel), estimator="etwfe").tidy().to_dicts()
    cr1 = _json(["--panel", str(race_panel), "--estimator", "etwfe", "--inference", "cluster"])
    assert cr1 == fit.tidy().to_dicts() and cr1[0]["inference"].startswith("CR1")
    plain = fit.tidy().to_dicts()
    for got, cr1 in zip(rows, plain, strict=True):
        assert got["inference"].startswith("CR2 (Bell-McCaffrey)")
        assert got["std_error"] == cr1["std_error"] and got["ci_low"] != cr1["ci_low"]
    generic = _json([*GENERIC, "--estimator", "etwfe", "--family", "linear", "--inference", "cr2"])
    assert generic[0]["term"] == "att" and generic[0]["inference"].startswith("CR2")
    sa = _json(["--panel", str(race_panel), "--estimator", "sun-abraham", "--inference", "cr2"])
    fit_sa = fit_staggered_race(pl.read_parquet(race_panel), estimator="sun-abraham", inference="cluster")
    assert sa == apply_inference(fit_sa, "cr2").tidy().to_dicts()
    assert {r["inference"][:3] for r in sa if not r["reference"]} == {"CR2"}
