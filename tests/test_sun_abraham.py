"""Sun & Abraham (2021) interaction-weighted event study: published numbers, pyfixest, planted effects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from stopdisparity.errors import SparseCellWarning, SpecificationError
from stopdisparity.models._staggered_data import prepare_staggered
from stopdisparity.models._sunab import fe_wls, sun_abraham
from stopdisparity.results import check_tidy

REF = Path(__file__).parent / "reference"
# pyfixest solves the fixed effects by alternating projections (fixef_tol 1e-8 by default); we solve them
# exactly, so estimates agree to ~1e-10 and SEs (relative) to ~1e-8 on these panels.
ATOL = 1e-8
RTOL_SE = 1e-7


def _panel(frame: pl.DataFrame | pd.DataFrame, **kw: object):
    data = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    return prepare_staggered(data, **kw)  # type: ignore[arg-type]


def _base_stagg() -> pl.DataFrame:
    d = pl.read_csv(REF / "sunab" / "base_stagg.csv")
    return d.with_columns(
        pl.when(pl.col("year_treated") > 10).then(0).otherwise(pl.col("year_treated")).alias("g")
    )


def _half_unit(printed: float) -> float:
    """Half a unit of the last printed digit of a JSON number."""
    text = repr(printed)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals + 1e-12


# ----------------------------------------------------------------------------------- published
@pytest.mark.reference
def test_fixest_walkthrough_with_covariate() -> None:
    pub = json.loads((REF / "sunab" / "published.json").read_text())["with_x1"]
    p = _panel(_base_stagg(), yname="y", idname="id", tname="year", gname="g", xnames=["x1"])
    r = sun_abraham(p)
    est, se = r.att
    assert abs(est - pub["att"]["estimate"]) < 5e-7
    assert abs(se - pub["att"]["std_error"]) < 5e-7
    assert abs(r.covariate_estimates[0] - pub["x1"]["estimate"]) < 5e-7
    assert abs(r.covariate_se[0] - pub["x1"]["std_error"]) < 5e-7
    cells = {c: i for i, c in enumerate(r.cells)}
    ses = np.sqrt(np.diag(r.cell_vcov))
    for row in pub["cells"]:
        i = cells[(row["cohort"], row["e"])]
        assert abs(r.cell_estimates[i] - row["estimate"]) <= _half_unit(row["estimate"])
        assert abs(ses[i] - row["std_error"]) <= _half_unit(row["std_error"])
    att_row = r.tidy().filter(pl.col("term") == "att").row(0, named=True)
    assert att_row["estimate"] == pytest.approx(est)


@pytest.mark.reference
def test_fixest_issue_287_event_times() -> None:
    pub = json.loads((REF / "sunab" / "published.json").read_text())["without_x1"]
    r = sun_abraham(_panel(_base_stagg(), yname="y", idname="id", tname="year", gname="g"))
    tidy = r.tidy()
    for row in pub["event_times"]:
        got = tidy.filter(pl.col("term") == f"e:{row['e']}").row(0, named=True)
        assert abs(got["estimate"] - row["estimate"]) < 5e-7
        assert abs(got["std_error"] - row["std_error"]) < 5e-7


# ----------------------------------------------------------------------------------- pyfixest
def _saturated_pyfixest(df: pd.DataFrame, y: str, unit: str, t: str, g: str, weights: str | None = None):
    import pyfixest as pf

    df = df.copy()
    df["_rel"] = np.where(df[g] > 0, df[t] - df[g], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pf.feols(
            f"{y} ~ i(_rel, {g}, ref=-1, ref2=0) | {unit} + {t}",
            data=df,
            vcov={"CRV1": unit},
            weights=weights,
        )


def _pf_cells(fit) -> dict[tuple[int, int], tuple[float, float]]:  # type: ignore[no-untyped-def]
    out = {}
    for name, b, s in zip(fit._coefnames, fit.coef().to_numpy(), fit.se().to_numpy(), strict=True):
        rel, coh = name.split(":")[2], name.split("::")[-1]
        out[(int(float(coh)), int(float(rel)))] = (float(b), float(s))
    return out


def _mpdta() -> pd.DataFrame:
    mp = pd.read_csv(REF / "mpdta" / "mpdta.csv")
    mp.columns = [c.replace(".", "_") for c in mp.columns]
    return mp


@pytest.mark.reference
@pytest.mark.parametrize("which", ["df_het", "mpdta"])
def test_cells_and_event_times_equal_pyfixest_saturated(which: str) -> None:
    import pyfixest as pf

    if which == "df_het":
        df = pd.read_csv(Path(pf.__file__).parent / "did" / "data" / "df_het.csv")
        y, unit, t, g = "dep_var", "unit", "year", "g"
    else:
        df = _mpdta()
        y, unit, t, g = "lemp", "countyreal", "year", "first_treat"
    r = sun_abraham(_panel(df[[unit, t, g, y]], yname=y, idname=unit, tname=t, gname=g))
    ref = _pf_cells(_saturated_pyfixest(df, y, unit, t, g))
    assert set(ref) == set(r.cells)
    ses = np.sqrt(np.diag(r.cell_vcov))
    for i, c in enumerate(r.cells):
        assert r.cell_estimates[i] == pytest.approx(ref[c][0], abs=ATOL)
        assert ses[i] == pytest.approx(ref[c][1], rel=RTOL_SE)
    # pyfixest's SaturatedEventStudy aggregation by period (cohort count shares, fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = pf.event_study(df, yname=y, idname=unit, tname=t, gname=g, estimator="saturated")
        agg = es.aggregate(agg="period")
    idx = {e: i for i, e in enumerate(r.event_times)}
    for e, row in agg.iterrows():
        i = idx[int(float(e))]  # type: ignore[arg-type]
        assert r.coefficients[i] == pytest.approx(float(row["Estimate"]), abs=ATOL)
        assert np.sqrt(r.vcov[i, i]) == pytest.approx(float(row["Std. Error"]), rel=RTOL_SE)


@pytest.mark.reference
def test_stop_weights_weight_regression_and_shares() -> None:
    df = _mpdta()
    df["n"] = 1.0 + (df["countyreal"] % 9) * (1 + (df["year"] - 2003) / 10)
    p = _panel(
        df[["countyreal", "year", "first_treat", "lemp", "n"]],
        yname="lemp",
        idname="countyreal",
        tname="year",
        gname="first_treat",
        weights="n",
    )
    r = sun_abraham(p)
    ref = _pf_cells(_saturated_pyfixest(df, "lemp", "countyreal", "year", "first_treat", weights="n"))
    ses = np.sqrt(np.diag(r.cell_vcov))
    for i, c in enumerate(r.cells):
        assert r.cell_estimates[i] == pytest.approx(ref[c][0], abs=ATOL)
        assert ses[i] == pytest.approx(ref[c][1], rel=RTOL_SE)
    # fixest aggregate(use_weights=TRUE): shares are the weight sums of each cohort x e cell
    tr = df[df.first_treat > 0].assign(e=lambda d: d.year - d.first_treat)
    wsum = tr.groupby(["first_treat", "e"])["n"].sum()
    for e in (-3, 0, 2):
        cohorts = [c for c in wsum.loc[(slice(None), e)].index if (c, e) in ref]
        w = np.array([wsum[(c, e)] for c in cohorts])
        b = np.array([ref[(c, e)][0] for c in cohorts])
        expect = float(w @ b / w.sum())
        assert r.coefficients[r.event_times.index(e)] == pytest.approx(expect, abs=ATOL)
    post = [(c, e) for (c, e) in ref if e >= 0]
    w = np.array([wsum[k] for k in post])
    assert r.att[0] == pytest.approx(float(w @ np.array([ref[k][0] for k in post]) / w.sum()), abs=ATOL)
    # equal weights would give a different answer: the weighting matters
    r_eq = sun_abraham(_panel(df, yname="lemp", idname="countyreal", tname="year", gname="first_treat"))
    assert abs(r_eq.att[0] - r.att[0]) > 1e-4


@pytest.mark.reference
def test_bin_ends_equals_binned_saturated_regression() -> None:
    df = _base_stagg().to_pandas()
    r = sun_abraham(
        _panel(df, yname="y", idname="id", tname="year", gname="g"), window=(-3, 3), bin_ends=True
    )
    d = df.copy()
    d["_relb"] = np.where(d.g > 0, np.clip(d.year - d.g, -3, 3), -1)
    import pyfixest as pf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.feols("y ~ i(_relb, g, ref=-1, ref2=0) | id + year", data=d, vcov={"CRV1": "id"})
    ref = _pf_cells(fit)
    assert set(ref) == set(r.cells)
    for i, c in enumerate(r.cells):
        assert r.cell_estimates[i] == pytest.approx(ref[c][0], abs=ATOL)
    assert r.event_times == (-3, -2, 0, 1, 2, 3)
    # without binning the window only selects what is reported; the regression is the full one
    full = sun_abraham(_panel(df, yname="y", idname="id", tname="year", gname="g"))
    win = sun_abraham(_panel(df, yname="y", idname="id", tname="year", gname="g"), window=(-3, 3))
    for e in win.event_times:
        i, j = win.event_times.index(e), full.event_times.index(e)
        assert win.coefficients[i] == pytest.approx(full.coefficients[j], abs=1e-12)
    assert [t for t in win.tidy().get_column("term") if t.startswith("e:")] == [
        "e:-3",
        "e:-2",
        "e:-1",
        "e:0",
        "e:1",
        "e:2",
        "e:3",
    ]


# ----------------------------------------------------------------------------------- planted effect
def _simulate(rng: np.random.Generator, cohorts: dict[int, int], n_never: int, n_t: int = 10) -> pl.DataFrame:
    units = [(g, k) for g, k in cohorts.items() for _ in range(k)] + [(0, 0)] * n_never
    rows = []
    for i, (g, _) in enumerate(units):
        a = rng.normal(0, 1) + (0.5 if g and g <= 5 else 0.0)  # selection on levels is allowed
        for t in range(1, n_t + 1):
            e = t - g if g else None
            tau = 0.0 if e is None or e < 0 else _tau(g, e)
            rows.append((i, t, g, a + 0.2 * t + tau + rng.normal(0, 1), 20 + (i % 5) * 10))
    return pl.DataFrame(rows, schema=["unit", "t", "g", "y", "n"], orient="row")


def _tau(g: int, e: int) -> float:
    """Heterogeneous dynamic effects: grow with e, larger for early cohorts."""
    return (1.0 + 0.4 * e) * (2.0 if g <= 4 else 1.0)


def _truth(frame: pl.DataFrame, reported: tuple[int, ...]) -> dict[str, float]:
    tr = frame.filter((pl.col("g") > 0) & (pl.col("t") >= pl.col("g"))).with_columns(
        (pl.col("t") - pl.col("g")).alias("e")
    )
    tau = np.array([_tau(g, e) for g, e in tr.select("g", "e").iter_rows()])
    n = tr.get_column("n").to_numpy()
    e = tr.get_column("e").to_numpy()
    out = {"att": float(n @ tau / n.sum())}
    for k in reported:
        if k >= 0:
            on = e == k
            out[f"e:{k}"] = float(n[on] @ tau[on] / n[on].sum())
    return out


def test_planted_effect_recovered_and_covered() -> None:
    rng = np.random.default_rng(20240601)
    cohorts = {4: 12, 6: 12, 8: 12}
    draws, hits, att_err, twfe_err = 100, {"att": 0, "e:0": 0, "e:2": 0}, [], []
    truth = None
    for _ in range(draws):
        frame = _simulate(rng, cohorts, n_never=14)
        p = _panel(frame, yname="y", idname="unit", tname="t", gname="g", weights="n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sun_abraham(p)
        truth = truth or _truth(frame, r.event_times)
        tidy = r.tidy().filter(pl.col("term").is_in(list(hits)))
        for term, lo, hi in tidy.select("term", "ci_low", "ci_high").iter_rows():
            hits[term] += lo <= truth[term] <= hi
        att_err.append(r.att[0] - truth["att"])
        f = p.frame
        tw = fe_wls(
            f.get_column("y").to_numpy(),
            f.get_column("treated").to_numpy()[:, None],
            unit=f.get_column("uid").to_numpy(),
            period=f.get_column("tid").to_numpy(),
            weights=f.get_column("n").to_numpy(),
            cluster=f.get_column("uid").to_numpy(),
            what="twfe",
        )
        twfe_err.append(float(tw.beta[0]) - truth["att"])
    mc_se = np.std(att_err) / np.sqrt(draws)
    assert abs(np.mean(att_err)) < 3 * mc_se  # unbiased for its estimand
    assert abs(np.mean(twfe_err)) > 10 * mc_se  # the static TWFE is not
    for term, k in hits.items():
        assert 85 <= k <= 100, (term, k)  # 95% nominal; binomial sd ~2.2 draws


# ----------------------------------------------------------------------------------- control fallback
def test_last_treated_cohort_is_the_control_when_no_never_treated() -> None:
    rng = np.random.default_rng(7)
    frame = _simulate(rng, {4: 8, 6: 8, 9: 3}, n_never=0)
    p = _panel(frame, yname="y", idname="unit", tname="t", gname="g")
    with pytest.warns(SparseCellWarning, match="last-treated cohort 9 with only 3"):
        r = sun_abraham(p)
    assert r.control == "last-treated cohort 9"
    assert r.cohorts == (4, 6)
    assert max(r.lineage["periods"]) == 8
    # the same as the saturated regression on periods < 9 with cohort 9 recoded as never treated
    d = frame.filter(pl.col("t") < 9).with_columns(
        pl.when(pl.col("g") == 9).then(0).otherwise(pl.col("g")).alias("g")
    )
    ref = _pf_cells(_saturated_pyfixest(d.to_pandas(), "y", "unit", "t", "g"))
    assert set(ref) == set(r.cells)
    for i, c in enumerate(r.cells):
        assert r.cell_estimates[i] == pytest.approx(ref[c][0], abs=ATOL)


def test_no_warning_with_a_large_last_cohort() -> None:
    frame = _simulate(np.random.default_rng(8), {4: 8, 9: 6}, n_never=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparseCellWarning)
        r = sun_abraham(_panel(frame, yname="y", idname="unit", tname="t", gname="g"))
    assert r.control == "last-treated cohort 9"


def test_single_cohort_without_never_treated_is_an_error() -> None:
    frame = _simulate(np.random.default_rng(9), {5: 10}, n_never=0)
    with pytest.raises(SpecificationError, match="no never-treated unit and only 1 adoption cohort"):
        sun_abraham(_panel(frame, yname="y", idname="unit", tname="t", gname="g"))


def test_bad_options_are_refused() -> None:
    p = _panel(_base_stagg(), yname="y", idname="id", tname="year", gname="g")
    with pytest.raises(SpecificationError, match="window must contain"):
        sun_abraham(p, window=(0, 3))
    with pytest.raises(SpecificationError, match="bin_ends=True needs a window"):
        sun_abraham(p, bin_ends=True)
    with pytest.raises(SpecificationError, match="alpha"):
        sun_abraham(p, alpha=1.5)


# ----------------------------------------------------------------------------------- tidy contract
def test_tidy_contract_and_rows() -> None:
    p = _panel(_base_stagg(), yname="y", idname="id", tname="year", gname="g")
    r = sun_abraham(p)
    tidy = check_tidy(r.tidy(alpha=0.1))
    terms = tidy.get_column("term").to_list()
    n_e = len(r.event_times) + 1
    assert terms[:n_e] == [f"e:{e}" for e in range(-9, 9)]
    assert terms[n_e] == "att"
    assert terms[n_e + 1 :] == [f"cohort:{g}" for g in r.cohorts]
    assert tidy.columns[12:] == ["e", "n_treated_units", "reference", "cohort", "weight"]
    ref = tidy.filter(pl.col("term") == "e:-1").row(0, named=True)
    assert ref["estimate"] == 0.0 and ref["std_error"] is None and ref["reference"]
    assert set(tidy.get_column("estimator")) == {"sun-abraham"}
    # the IW event-time estimates and their covariance, for the sensitivity module
    assert r.coefficients.shape == (len(r.event_times),)
    assert r.vcov.shape == (len(r.event_times),) * 2
    assert np.allclose(r.vcov, r.vcov.T)
    # cohort rows: each cohort's post cells, weighted; their weights sum to one
    cw = tidy.filter(pl.col("term").str.starts_with("cohort:")).get_column("weight").sum()
    assert cw == pytest.approx(1.0)
    assert r.lineage["versions"]["numpy"] == np.__version__


def test_covariate_collinear_with_unit_effects_is_an_error() -> None:
    mp = _mpdta()  # lpop is constant within county: absorbed by the county effects
    p = _panel(mp, yname="lemp", idname="countyreal", tname="year", gname="first_treat", xnames=["lpop"])
    with pytest.raises(SpecificationError, match="collinear"):
        sun_abraham(p)


def test_target_scale_is_fast() -> None:
    """146 units x 200 periods, 6 cohorts (~1,100 cohort x event-time cells): about 1 s."""
    import time

    rng = np.random.default_rng(0)
    n_u, n_t = 146, 200
    g_unit = rng.choice([0, 0, 0, 37, 61, 85, 109, 133, 157], n_u)
    t = np.tile(np.arange(1, n_t + 1), n_u)
    g = np.repeat(g_unit, n_t)
    frame = pl.DataFrame(
        {
            "u": np.repeat(np.arange(n_u), n_t),
            "t": t,
            "g": g,
            "y": rng.normal(size=n_u * n_t) + ((g > 0) & (t >= g)),
            "n": rng.poisson(50, n_u * n_t) + 1.0,
        }
    )
    p = _panel(frame, yname="y", idname="u", tname="t", gname="g", weights="n")
    start = time.perf_counter()
    r = sun_abraham(p)
    assert time.perf_counter() - start < 10
    assert len(r.cells) > 1000
    est, se = r.att
    assert abs(est - 1.0) < 4 * se < 1.0  # one period of reference per cohort: an imprecise ATT
