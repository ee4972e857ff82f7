"""`stopdisparity sensitivity`: Rambachan & Roth bounds of any event study, end to end (issue 6 §2)."""

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
from stopdisparity.models.sensitivity import sensitivity
from stopdisparity.models.staggered import event_coefficients, fit_staggered
from stopdisparity.synth import SynthSpec, cells

MPDTA = Path(__file__).parent / "reference" / "mpdta" / "mpdta.csv"
GENERIC = ["--panel", str(MPDTA), "--outcome", "lemp", "--unit", "countyreal", "--period", "year"]
GENERIC += ["--first-treated", "first.treat"]
KW = {"yname": "lemp", "idname": "countyreal", "tname": "year", "gname": "first.treat"}
runner = CliRunner()


def _json(args: list[str]) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["sensitivity", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_callaway_santanna_universal_equals_api() -> None:
    rows = _json([*GENERIC, "--estimator", "callaway-santanna", "--m", "0.5", "--m", "1"])
    cs = fit_staggered(
        pl.read_csv(MPDTA), estimator="callaway-santanna", base_period="universal", n_boot=0, **KW
    )
    api = sensitivity(event_coefficients(cs), method="relative_magnitudes", m=[0.5, 1.0]).tidy()
    assert rows == api.to_dicts()
    assert [r["term"] for r in rows] == ["original", "rm:Mbar=0.5", "rm:Mbar=1"]
    # the average post effect is the dynamic aggregation's overall effect (e = 0..3)
    overall = cs.tidy().filter(pl.col("term") == "dynamic:overall")["estimate"][0]
    assert rows[0]["estimate"] == pytest.approx(overall, rel=1e-12)
    widths = [r["ci_high"] - r["ci_low"] for r in rows]
    assert widths[0] < widths[1] < widths[2]


def test_event_coefficients_of_callaway_santanna() -> None:
    cs = fit_staggered(
        pl.read_csv(MPDTA), estimator="callaway-santanna", base_period="universal", n_boot=0, **KW
    )
    ec = event_coefficients(cs)
    assert ec.event_times == (-4, -3, -2, 0, 1, 2, 3) and ec.reference == -1
    tidy = cs.tidy().filter(pl.col("aggregation") == "dynamic")
    for e, b, v in zip(ec.event_times, ec.coefficients, ec.vcov.diagonal(), strict=True):
        row = tidy.filter(pl.col("term") == f"dynamic:{e}").row(0, named=True)
        assert b == pytest.approx(row["estimate"], rel=1e-12)
        assert math.sqrt(v) == pytest.approx(row["std_error"], rel=1e-10)
    varying = fit_staggered(pl.read_csv(MPDTA), estimator="callaway-santanna", n_boot=0, **KW)
    with pytest.raises(SpecificationError, match="base_period='universal'"):
        event_coefficients(varying)
    bjs = fit_staggered(pl.read_csv(MPDTA), estimator="bjs", **KW)
    with pytest.raises(SpecificationError, match="bjs has no pre-period coefficients"):
        event_coefficients(bjs)


@pytest.mark.parametrize("estimator", ["sun-abraham", "etwfe"])
def test_other_event_studies(estimator: str) -> None:
    rows = _json([*GENERIC, "--estimator", estimator, "--method", "smoothness", "--m", "0", "--m", "0.02"])
    assert [r["term"] for r in rows] == ["original", "sd:M=0", "sd:M=0.02"]
    assert all(r["ci_low"] <= r["ci_high"] for r in rows)


def test_race_layout_event_study(tmp_path: Path) -> None:
    spec = SynthSpec(scenario="pretrend", design="random", n_treated=30)
    frame = cells(spec, seed=11, rows=600_000, years=(2003, 2011)).filter(pl.col("agency") == "state_patrol")
    path = tmp_path / "panel.parquet"
    frame.write_parquet(path)
    rows = _json(["--panel", str(path), "--event-time", "1"])
    assert rows[0]["term"] == "original" and len(rows) == 5
    assert rows[1]["term"] == "rm:Mbar=0.5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "smoothness"], "--method smoothness needs --m"),
        (["--estimator", "bjs"], "--estimator must be one of"),
        (["--estimator", "etwfe", "--control", "not_yet"], "--control never"),
        (["--method", "curvature"], "--method must be one of"),
    ],
)
def test_refusals(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["sensitivity", *GENERIC, *args])
    assert res.exit_code != 0
    assert message in res.output
