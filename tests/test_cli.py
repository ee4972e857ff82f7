"""The CLI contract: `ingest --json` prints exactly one JSON document; progress and logs stay on stderr;
exit 0 when the ingest committed, non-zero (with nothing changed) otherwise; `summary`; the notebook."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import make_rows, write_opp

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "stopdisparity.cli"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture
def opp_file(tmp_path: Path) -> Path:
    path = tmp_path / "nc_statewide_2020_04_01.csv.zip"
    write_opp(path, make_rows(60, seed=5))
    return path


def test_ingest_json_is_one_document_on_stdout(tmp_path: Path, opp_file: Path) -> None:
    proc = cli("ingest", str(opp_file), "--store", "st", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert list(report)[:4] == ["files", "rows_read", "rows_stored", "rows_quarantined"]
    (entry,) = report["files"]
    assert list(entry)[:6] == ["path", "sha256", "status", "rows_read", "rows_stored", "rows_quarantined"]
    assert entry["status"] == "ingested"
    assert entry["rows_read"] == 60 == report["rows_read"]
    assert report["rows_read"] == report["rows_stored"] + report["rows_quarantined"]
    # progress went to stderr, not stdout
    assert "nc_statewide_2020_04_01.csv.zip" in proc.stderr

    again = cli("ingest", str(opp_file), "--store", "st", "--json", "--quiet", cwd=tmp_path)
    assert again.returncode == 0
    assert json.loads(again.stdout)["files"][0]["status"] == "unchanged"
    assert again.stderr == ""  # --quiet: nothing on stderr either


def test_ingest_error_exits_nonzero_and_changes_nothing(tmp_path: Path, opp_file: Path) -> None:
    assert cli("ingest", str(opp_file), "--store", "st", "--quiet", cwd=tmp_path).returncode == 0
    manifest = (tmp_path / "st" / "manifest.json").read_bytes()
    bad = tmp_path / "nc_other_2020_04_01.csv"
    bad.write_text("date,date\n2020-01-01,2020-01-02\n")
    proc = cli("ingest", str(bad), "--store", "st", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "appears twice" in proc.stderr and "nc_other_2020_04_01.csv" in proc.stderr
    assert (tmp_path / "st" / "manifest.json").read_bytes() == manifest


def test_ingest_without_state_in_name_needs_state_flag(tmp_path: Path) -> None:
    path = tmp_path / "stops.csv"
    write_opp(path, make_rows(5, seed=1))
    proc = cli("ingest", str(path), "--store", "st", "--quiet", cwd=tmp_path)
    assert proc.returncode == 2 and "--state" in proc.stderr
    proc = cli("ingest", str(path), "--store", "st", "--state", "sc", "--json", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["files"][0]["state"] == "SC"
    assert (tmp_path / "st" / "stops" / "state=SC").is_dir()


def test_summary_and_notebook(tmp_path: Path, opp_file: Path) -> None:
    assert cli("ingest", str(opp_file), "--store", "st", "--quiet", cwd=tmp_path).returncode == 0
    proc = cli("summary", "--store", "st", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert (
        sum(r["stops"] for r in rows)
        == json.loads((tmp_path / "st" / "manifest.json").read_text())["sources"][
            "nc_statewide_2020_04_01.csv.zip"
        ]["rows_stored"]
    )
    text = cli("summary", "--store", "st", cwd=tmp_path)
    assert text.returncode == 0 and "Stops by state, year and race" in text.stdout

    # the notebook is a jupytext percent script: it runs top to bottom on a store
    os.environ["STOPDISPARITY_STORE"] = str(tmp_path / "st")
    try:
        namespace = runpy.run_path(str(ROOT / "notebooks" / "01_store_overview.py"))
    finally:
        del os.environ["STOPDISPARITY_STORE"]
    assert namespace["counts"]["stops"].sum() == sum(r["stops"] for r in rows)


def test_summary_on_missing_store_fails_clearly(tmp_path: Path) -> None:
    proc = cli("summary", "--store", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2 and "no such store" in proc.stderr


def test_panel_and_policy_commands(tmp_path: Path) -> None:
    assert cli("synth", "raw", "--rows", "6000", "--seed", "2", "--quiet", cwd=tmp_path).returncode == 0
    files = sorted(str(p) for p in (tmp_path / "raw").glob("*.csv.zip"))
    assert cli("ingest", *files, "--store", "st", "--quiet", cwd=tmp_path).returncode == 0
    proc = cli(
        "panel", "--store", "st", "--agency", "NC State Highway Patrol", "--agency", "SC Highway Patrol",
        "--period", "year", "--out", "panel.parquet", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert [s["step"] for s in meta["sample_log"]][:3] == ["states", "date_window", "agency"]
    assert meta["lineage"]["policies"]["main"]["policy"] == "287g"
    assert (tmp_path / "panel.parquet").exists() and (tmp_path / "panel.json").exists()
    import polars as pl

    frame = pl.read_parquet(tmp_path / "panel.parquet")
    assert frame.columns[:10] == [
        "county_fips", "state", "period", "period_start", "race", "stops", "population", "in_force",
        "first_treated", "rel_period",
    ]  # fmt: skip
    assert frame["stops"].sum() == meta["sample_log"][-1]["n_after"]

    assert (
        cli("panel", "--store", "st", "--period", "week", "--out", "p.parquet", cwd=tmp_path).returncode == 2
    )
    listed = cli("policy", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "287g" in listed.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "state,agency,agency_type,county_fips,model,signed,ended,end_basis,source\n"
        "NC,Wake County Sheriff's Office,sheriff,37183,jail,2010-05-01,2009-01-01,x,press\n"
    )
    proc = cli("policy", "validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 1 and "line 2" in proc.stderr and "ended" in proc.stderr


def test_did_command_store_and_panel(tmp_path: Path) -> None:
    assert cli("synth", "raw", "--rows", "20000", "--seed", "4", "--quiet", cwd=tmp_path).returncode == 0
    files = sorted(str(p) for p in (tmp_path / "raw").glob("*.csv.zip"))
    assert cli("ingest", *files, "--store", "st", "--quiet", cwd=tmp_path).returncode == 0
    agencies = ["--agency", "NC State Highway Patrol", "--agency", "SC Highway Patrol"]
    proc = cli("did", "--store", "st", *agencies, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["term"] == "in_force" and rows[0]["estimator"] == "twfe-logit"
    assert {"odds_ratio", "pp_change"} <= set(rows[0])
    # the same numbers from the panel file the panel command writes
    assert (
        cli("panel", "--store", "st", *agencies, "--out", "p.parquet", "--quiet", cwd=tmp_path).returncode
        == 0
    )
    again = json.loads(cli("did", "--panel", "p.parquet", "--json", cwd=tmp_path).stdout)
    assert again[0]["estimate"] == pytest.approx(rows[0]["estimate"], rel=1e-12)
    counts = json.loads(
        cli("did", "--panel", "p.parquet", "--estimator", "twfe-poisson", "--json", cwd=tmp_path).stdout
    )
    assert [r["term"] for r in counts] == ["in_force:hispanic", "in_force:white", "difference"]
    events = json.loads(
        cli("did", "--panel", "p.parquet", "--estimator", "event-study", "--json", cwd=tmp_path).stdout
    )
    assert [r["term"] for r in events] == [f"event:{e}" for e in range(-4, 6)]
    args = ["--estimator", "twfe-linear", "--inference", "wild", "--draws", "99", "--json"]
    wild = json.loads(cli("did", "--panel", "p.parquet", *args, cwd=tmp_path).stdout)
    assert wild[0]["inference"].startswith("wild cluster restricted bootstrap")
    bad = cli("did", "--panel", "p.parquet", "--race-pair", "hispanic", cwd=tmp_path)
    assert bad.returncode == 2 and "--race-pair" in bad.stderr
    both = cli("did", "--panel", "p.parquet", "--store", "st", cwd=tmp_path)
    assert both.returncode == 2 and "exactly one of" in both.stderr


def test_ingest_path_does_not_import_the_modelling_stack() -> None:
    code = (
        "import sys, stopdisparity, stopdisparity.cli, stopdisparity.ingest, stopdisparity.panel; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'statsmodels', 'seaborn', 'matplotlib'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    lazy = subprocess.run(
        [sys.executable, "-c", "import stopdisparity as sd; print(sd.fit_did.__module__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert lazy.stdout.strip() == "stopdisparity.models.did"


# ------------------------------------------------------------------------ did on a generic panel
def _generic_csv(path: Path) -> Path:
    """A unit × period CSV with awkward column names; 'first.treat' empty for some never-treated."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(3)
    rows = []
    for u in range(24):
        g = (0, 2003, 2005, 2007)[u % 4]
        a = rng.normal()
        for t in range(2000, 2010):
            d = bool(g and t >= g)
            x = rng.normal()
            n = int(rng.poisson(40))
            rows.append({
                "county id": f"c{u:02d}", "año": t, "first.treat": (g or None) if u % 8 else 0,
                "log emp": a + 0.02 * (t - 2000) + 0.4 * d + 0.3 * x + rng.normal(0, 0.2), "x.1": x,
                "n tot": n, "hits": int(rng.binomial(n, 0.3 + 0.1 * d)),
            })  # fmt: skip
    pl.DataFrame(rows).write_csv(path)
    return path


GENERIC = ["did", "--unit", "county id", "--period", "año", "--first-treated", "first.treat"]


def _invoke(*args: str):
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    return CliRunner().invoke(app, list(args))


def test_did_generic_panel_json(tmp_path: Path) -> None:
    import polars as pl

    from stopdisparity.models.did import fit_did_panel

    csv = _generic_csv(tmp_path / "panel.csv")
    res = _invoke(*GENERIC, "--panel", str(csv), "--outcome", "log emp", "--covariates", "x.1", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)  # stdout is exactly one JSON document
    assert [r["term"] for r in rows] == ["in_force", "x.1"]
    assert rows[0]["estimator"] == "twfe-linear" and rows[0]["n_clusters"] == 24
    assert "pp_change" not in rows[0]
    api = fit_did_panel(
        pl.read_csv(csv), yname="log emp", idname="county id", tname="año", gname="first.treat",
        xnames=("x.1",),
    )  # fmt: skip
    assert rows[0]["estimate"] == pytest.approx(api.estimate, rel=1e-12)
    assert rows[0]["std_error"] == pytest.approx(api.std_error, rel=1e-12)

    logit = _invoke(*GENERIC, "--panel", str(csv), "--outcome", "hits", "--trials", "n tot", "--json")
    assert logit.exit_code == 0, logit.output
    (row,) = json.loads(logit.stdout)
    assert row["estimator"] == "twfe-logit" and {"odds_ratio", "pp_change", "n_trials"} <= set(row)
    events = _invoke(
        *GENERIC, "--panel", str(csv), "--outcome", "hits", "--trials", "n tot", "--estimator",
        "event-study", "--json",
    )  # fmt: skip
    assert events.exit_code == 0, events.output
    assert [r["term"] for r in json.loads(events.stdout)] == [f"event:{e}" for e in range(-4, 6)]
    ri = _invoke(
        *GENERIC, "--panel", str(csv), "--outcome", "hits", "--trials", "n tot", "--inference", "ri",
        "--draws", "19", "--json",
    )  # fmt: skip
    assert ri.exit_code == 0, ri.output
    assert json.loads(ri.stdout)[0]["inference"].startswith("randomization inference")
    text = _invoke(*GENERIC, "--panel", str(csv), "--outcome", "log emp", "--covariates", "x.1")
    assert text.exit_code == 0 and "twfe-linear: log emp" in text.stdout and "x.1" in text.stdout


@pytest.mark.parametrize(
    ("edit", "args", "needle"),
    [
        (None, ("--outcome", "log emp", "--covariates", "x.2"), "'x.2' (xnames[0]) is not in the data"),
        (None, ("--outcome", "log.emp"), "column 'log.emp' (yname) is not in the data"),
        ("first.treat=2003.5", ("--outcome", "log emp"), "'first.treat' must hold integer periods"),
        ("first.treat=1990", ("--outcome", "log emp"), "got 1990 for county id="),
        (None, ("--outcome", "hits", "--estimator", "twfe-logit"), "needs trials"),
        (None, ("--outcome", "n tot", "--trials", "hits"), "0 <= n tot <= hits; got"),
        (None, ("--outcome", "log emp", "--treatment", "d"), "--treatment applies to the race layout"),
    ],
    ids=["missing-covariate", "missing-outcome", "fractional-first-treated", "first-treated-range",
         "logit-without-trials", "outcome-over-trials", "treatment-option"],
)  # fmt: skip
def test_did_generic_panel_errors(
    tmp_path: Path, edit: str | None, args: tuple[str, ...], needle: str
) -> None:
    import polars as pl

    csv = _generic_csv(tmp_path / "panel.csv")
    if edit:
        col, _, value = edit.partition("=")
        frame = pl.read_csv(csv)
        frame = frame.with_columns(
            pl.when(pl.col(col).fill_null(0) > 0).then(float(value)).otherwise(pl.col(col)).alias(col)
        )
        frame.write_csv(csv)
    res = _invoke(*GENERIC, "--panel", str(csv), *args, "--json")
    assert res.exit_code == 2
    assert res.stdout == ""
    assert needle in res.stderr, res.stderr


@pytest.mark.parametrize("inference", ["wild", "cr3", "ri"])
def test_did_generic_panel_inference_with_covariates(tmp_path: Path, inference: str) -> None:
    """Bootstrap, jackknife and RI partial out the covariates: the CLI row equals the API's."""
    import polars as pl

    from stopdisparity.models.did import fit_did_panel
    from stopdisparity.models.inference import apply_inference

    csv = _generic_csv(tmp_path / "panel.csv")
    args = ("--outcome", "log emp", "--covariates", "x.1", "--inference", inference, "--draws", "199")
    res = _invoke(*GENERIC, "--panel", str(csv), *args, "--seed", "7", "--json")
    assert res.exit_code == 0, res.stderr
    row = json.loads(res.stdout)[0]
    names = {"yname": "log emp", "idname": "county id", "tname": "año", "gname": "first.treat"}
    fit = fit_did_panel(pl.read_csv(csv), **names, xnames=("x.1",))
    options = {} if inference == "cr3" else {"draws": 199, "seed": 7}
    if inference == "ri":
        options["within"] = None
    api = apply_inference(fit, inference, **options).tidy().row(0, named=True)  # type: ignore[arg-type]
    assert row["p_value"] == pytest.approx(api["p_value"], rel=1e-12)
    assert row["ci_low"] == pytest.approx(api["ci_low"], rel=1e-9)
    assert row["inference"] == api["inference"]


def test_did_generic_panel_needs_first_treated_and_a_panel(tmp_path: Path) -> None:
    csv = _generic_csv(tmp_path / "panel.csv")
    res = _invoke(
        "did", "--panel", str(csv), "--outcome", "log emp", "--unit", "county id", "--period", "año"
    )
    assert res.exit_code == 2 and "--first-treated" in res.stderr
    res = _invoke("did", "--store", str(tmp_path), "--outcome", "log emp")
    assert res.exit_code == 2 and "needs --panel FILE" in res.stderr
    res = _invoke("did", "--panel", str(csv), "--trials", "n tot")
    assert res.exit_code == 2 and "--trials need(s) --outcome" in res.stderr


def test_few_clusters_warning_is_silent_once_a_remedy_is_asked_for(tmp_path: Path) -> None:
    """16 of the 24 counties (G₁ = 12, no dominant county, G* = 15.7): the default CR1 fit warns; with
    --inference cr2, a remedy the warning recommends, it does not, and the label still carries G, G₁ and
    G*. With 12 counties (G₁ = 9) the warning stays under cr2 too: too few treated clusters for any
    method."""
    import warnings

    import polars as pl

    from stopdisparity.errors import FewClustersWarning, FewEffectiveClustersWarning

    full = pl.read_csv(_generic_csv(tmp_path / "full.csv"))
    for k, cr2_warns in ((16, False), (12, True)):
        csv = tmp_path / f"panel_{k}.csv"
        full.filter(pl.col("county id").is_in(full["county id"].unique().sort()[:k].implode())).write_csv(csv)
        args = (*GENERIC, "--panel", str(csv), "--outcome", "hits", "--trials", "n tot", "--json")
        for inference, expected in (("cluster", True), ("cr2", cr2_warns)):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                res = _invoke(*args, "--inference", inference)
            assert res.exit_code == 0, res.output
            few = [w for w in seen if issubclass(w.category, FewClustersWarning)]
            assert bool(few) is expected, (k, inference)
            if k == 16 and few:
                assert few[0].category is FewEffectiveClustersWarning
        row = json.loads(res.stdout)[0]
        assert "G*=" in row["inference"] and row["effective_clusters"] < 20
