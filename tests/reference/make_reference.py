"""Regenerate the pyfixest reference values of tests/test_models_did.py and tests/test_models_counts.py.

Run from the repository root (pyfixest is a dev dependency)::

    .venv/bin/python tests/reference/make_reference.py

It writes, next to this file:

- ``panel.csv`` -- the fixture panel: a fixed synth draw (seed below), state-patrol Hispanic and White
  stops by county x quarter, 24 counties (12 NC, 12 SC), 2006-2011, with a made-up but deterministic
  race-specific ``population`` that grows at county-specific rates (so the offset matters). The tests
  read this file, not synth, so the references stay valid if the generator changes. It is only
  rewritten with ``--panel``.
- ``pyfixest_reference.csv`` -- one row per model x term: estimate, CRV1 standard error, N, G, the
  small-sample factor pyfixest applied, the exact call, and the versions that produced them.

Every pyfixest call uses its defaults for the small-sample correction (``ssc(k_adj=True,
k_fixef="nonnested", G_adj=True, G_df="min")``: CRV1 = G/(G-1)*(N-1)/(N-K)*CR0 with K = coefficients +
fixed effects not nested in the clusters) and tight tolerances (``MapDemeaner(fixef_tol=1e-12)``,
``iwls_tol=1e-14``) so that what is compared is the model, not a convergence criterion.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyfixest as pf
from pyfixest.demeaners import MapDemeaner

HERE = Path(__file__).parent
PANEL = HERE / "panel.csv"
OUT = HERE / "pyfixest_reference.csv"
SEED = 20240607
TOL = {"demeaner": MapDemeaner(fixef_tol=1e-12, fixef_maxiter=100_000)}
GLM_TOL = {**TOL, "iwls_tol": 1e-14, "iwls_maxiter": 200}


def make_panel() -> pl.DataFrame:
    """The fixture: 12 NC + 12 SC counties (10 treated, some switching off), quarters of 2006-2011."""
    from stopdisparity.synth import SynthSpec, cells

    spec = SynthSpec(scenario="switch_off", design="random", n_treated=60, adoption_years=(2007, 2009))
    frame = cells(spec, seed=SEED, period="quarter", rows=600_000, years=(2006, 2011))
    frame = frame.filter(pl.col("agency") == "state_patrol", pl.col("race").is_in(["hispanic", "white"]))
    ever = (
        frame.group_by("county_fips", "state").agg(pl.col("in_force").any().alias("ever")).sort("county_fips")
    )
    chosen = []
    for state in ("NC", "SC"):
        rows = ever.filter(pl.col("state") == state)
        chosen += rows.filter(pl.col("ever")).get_column("county_fips").to_list()[:5]
        chosen += rows.filter(~pl.col("ever")).get_column("county_fips").to_list()[:7]
    frame = frame.filter(pl.col("county_fips").is_in(chosen))
    code = pl.col("county_fips").cast(pl.Int64)
    population = (
        pl.when(pl.col("race") == "hispanic")
        .then(800 + (code % 89) * 40)
        .otherwise(20_000 + (code % 97) * 500)
        * (1 + 0.01 * (code % 7) * ((pl.col("period") - 8024) // 4))
    ).round(0)
    return frame.select(
        "county_fips", "state", "period", "race", "stops", "in_force", population.alias("population")
    ).sort("county_fips", "period", "race")


def _versions() -> dict[str, str]:
    return {
        "pyfixest_version": pf.__version__,
        "numpy_version": np.__version__,
        "pandas_version": pd.__version__,
        "python_version": platform.python_version(),
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _pair(panel: pl.DataFrame) -> pd.DataFrame:
    wide = (
        panel.group_by("county_fips", "state", "period")
        .agg(
            pl.col("stops").filter(pl.col("race") == "hispanic").sum().alias("focal"),
            pl.col("stops").filter(pl.col("race") == "white").sum().alias("reference"),
            pl.col("in_force").first().cast(pl.Int64),
        )
        .with_columns((pl.col("focal") + pl.col("reference")).alias("n"))
        .filter(pl.col("n") > 0)
        .with_columns(
            (pl.col("focal") / pl.col("n")).alias("share"),
            (pl.col("n") / pl.col("n").sum().over("county_fips")).alias("w_county"),
            pl.lit(1.0).alias("w_unit"),
            pl.concat_str("state", "period", separator="_").alias("sp"),
        )
        .sort("county_fips", "period")
    )
    return wide.to_pandas()


def stop_level(wide: pd.DataFrame) -> pd.DataFrame:
    """One row per stop: y = 1 for a focal-race stop, 0 for a reference-race stop."""
    reps = np.r_[wide["focal"].to_numpy(), wide["reference"].to_numpy()].astype(int)
    base = pd.concat([wide, wide], ignore_index=True)
    y = np.r_[np.ones(len(wide)), np.zeros(len(wide))]
    out = base.loc[base.index.repeat(reps), ["county_fips", "state", "period", "sp", "in_force"]]
    out["y"] = np.repeat(y, reps)
    return out.reset_index(drop=True)


def _rows(model: str, call: str, fit, terms: list[str], names: list[str]) -> list[dict]:
    coef = fit.coef()
    se = fit.se()
    return [
        {
            "model": model,
            "term": name,
            "estimate": float(coef[t]),
            "std_error": float(se[t]),
            "n_obs": int(fit._N),
            "n_clusters": int(np.ravel(fit._G)[0]),
            "ssc_factor": float(np.ravel(fit._ssc)[0]),
            "call": call,
        }
        for t, name in zip(terms, names, strict=True)
    ]


def reference_rows(panel: pl.DataFrame) -> list[dict]:
    """Fit every reference model with pyfixest and return the rows to store."""
    wide = _pair(panel)
    rows: list[dict] = []
    vc = {"CRV1": "county_fips"}

    long_stops = stop_level(wide)
    call = 'feglm("y ~ in_force | county_fips + sp", family="logit", vcov=CRV1 county_fips) on stops'
    fit = pf.feglm("y ~ in_force | county_fips + sp", long_stops, family="logit", vcov=vc, **GLM_TOL)
    rows += _rows("twfe-logit", call, fit, ["in_force"], ["in_force"])

    for weights, col in (("stops", "n"), ("county", "w_county"), ("unit-equal", "w_unit")):
        call = f'feols("share ~ in_force | county_fips + sp", weights="{col}", vcov=CRV1 county_fips)'
        fit = pf.feols(
            "share ~ in_force | county_fips + sp", wide, weights=col, vcov=vc, fixef_rm="none", **TOL
        )
        rows += _rows(f"twfe-linear:{weights}", call, fit, ["in_force"], ["in_force"])

    pdf = panel.with_columns(
        pl.col("in_force").cast(pl.Int64),
        pl.col("population").log().alias("log_pop"),
        pl.concat_str("state", "period", separator="_").alias("sp"),
    ).to_pandas()
    for race in ("hispanic", "white"):
        sub = pdf[pdf["race"] == race]
        call = f'fepois("stops ~ in_force | county_fips + sp", offset="log_pop", vcov=CRV1) on {race} rows'
        fit = pf.fepois(
            "stops ~ in_force | county_fips + sp", sub, offset="log_pop", vcov=vc, fixef_rm="none", **GLM_TOL
        )
        rows += _rows("twfe-poisson", call, fit, ["in_force"], [f"in_force:{race}"])

    stacked = pdf.assign(
        d_focal=pdf["in_force"] * (pdf["race"] == "hispanic"),
        d_reference=pdf["in_force"] * (pdf["race"] == "white"),
        unit_race=pdf["county_fips"] + "_" + pdf["race"],
        sp_race=pdf["sp"] + "_" + pdf["race"],
    )
    call = 'fepois("stops ~ d_focal + d_reference | unit_race + sp_race", offset="log_pop", vcov=CRV1)'
    fit = pf.fepois(
        "stops ~ d_focal + d_reference | unit_race + sp_race",
        stacked,
        offset="log_pop",
        vcov=vc,
        fixef_rm="none",
        **GLM_TOL,
    )
    v = fit._vcov
    diff = float(fit.coef()["d_focal"] - fit.coef()["d_reference"])
    rows.append(
        {
            "model": "twfe-poisson-stacked",
            "term": "difference",
            "estimate": diff,
            "std_error": float(np.sqrt(v[0, 0] + v[1, 1] - 2 * v[0, 1])),
            "n_obs": int(fit._N),
            "n_clusters": int(np.ravel(fit._G)[0]),
            "ssc_factor": float(np.ravel(fit._ssc)[0]),
            "call": call + "; difference = d_focal - d_reference, V11 + V22 - 2 V12",
        }
    )

    # The two-race Poisson with unit x period effects (pairs with n > 0 only, as the logit).
    keep = wide[["county_fips", "period"]]
    two = stacked.merge(keep, on=["county_fips", "period"]).assign(
        cell=lambda d: d["county_fips"] + "_" + d["period"].astype(str)
    )
    call = 'fepois("stops ~ d_focal | cell + unit_race + sp_race", vcov=CRV1) on cells with n > 0'
    fit = pf.fepois("stops ~ d_focal | cell + unit_race + sp_race", two, vcov=vc, fixef_rm="none", **GLM_TOL)
    rows += _rows("twfe-poisson-two-race", call, fit, ["d_focal"], ["difference"])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write panel.csv (with --panel) and pyfixest_reference.csv."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", action="store_true", help="also redraw panel.csv from synth")
    args = parser.parse_args(argv)
    if args.panel or not PANEL.exists():
        make_panel().write_csv(PANEL)
    panel = pl.read_csv(PANEL, schema_overrides={"county_fips": pl.String})
    rows = reference_rows(panel)
    versions = _versions()
    pl.DataFrame([{**r, **versions} for r in rows]).write_csv(OUT, float_precision=17)
    print(f"wrote {OUT} ({len(rows)} rows) with pyfixest {pf.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
