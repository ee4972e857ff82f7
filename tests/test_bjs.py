"""BJS (2024) imputation estimator: didimputation's README, pyfixest did2s, planted effects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from stopdisparity.errors import InferenceFallbackWarning, SpecificationError, StopDisparityWarning
from stopdisparity.models._bjs import bjs
from stopdisparity.models._staggered_data import prepare_staggered
from stopdisparity.models._sunab import fe_wls
from stopdisparity.results import check_tidy

REF = Path(__file__).parent / "reference"
# pyfixest's did2s recovers the first-stage fixed effects iteratively: on its df_het its estimates differ
# from the exact solution (dense least squares, below) by ~3e-8; 1e-6 leaves room without hiding a bug
# (a wrong weight or a dropped cell moves these estimates by > 1e-3).
ATOL_DID2S = 1e-6
ATOL_EXACT = 1e-10


def _panel(frame: pl.DataFrame | pd.DataFrame, **kw: object):
    data = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    return prepare_staggered(data, **kw)  # type: ignore[arg-type]


def _df_het_published() -> pd.DataFrame:
    return pd.read_csv(REF / "didimputation" / "df_het.csv.gz")


def _half_unit(printed: float) -> float:
    """Half a unit of the last printed digit (the README prints 8 significant digits)."""
    text = f"{printed:.8g}"
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals + 1e-12


# ----------------------------------------------------------------------------------- published
@pytest.mark.reference
def test_didimputation_readme_static_and_event_study() -> None:
    pub = json.loads((REF / "didimputation" / "published.json").read_text())
    p = _panel(_df_het_published(), yname="dep_var", idname="unit", tname="year", gname="g")
    static = bjs(p, leave_out=False)  # R didimputation: the plain Theorem 3 variance
    assert abs(static.att - pub["static"]["estimate"]) <= 5e-7
    assert abs(static.att_se - pub["static"]["std_error"]) <= 5e-9
    es = bjs(p, pretrends=5, leave_out=False)
    assert es.att == static.att  # the horizons and the test do not change the static estimate
    tidy = es.tidy()
    for row in pub["event_study"]["rows"]:
        k = row["term"]
        got = tidy.filter(pl.col("term") == (f"pre:{k}" if k < 0 else f"e:{k}")).row(0, named=True)
        assert abs(got["estimate"] - row["estimate"]) <= _half_unit(row["estimate"]), k
        if k >= 0:  # the README's lead SEs are not reproducible (see published.json, pretrends_note)
            assert abs(got["std_error"] - row["std_error"]) <= _half_unit(row["std_error"]), k


@pytest.mark.reference
def test_pretrend_leads_equal_pyfixest_crv1() -> None:
    import pyfixest as pf

    df = _df_het_published()
    p = _panel(df, yname="dep_var", idname="unit", tname="year", gname="g")
    pt = bjs(p, pretrends=3).pretrend_test()
    d = df[~((df.g > 0) & (df.year >= df.g))].copy()
    for k in (3, 2, 1):
        d[f"lead{k}"] = ((d.g > 0) & (d.year - d.g == -k)).astype(float)
    fit = pf.feols("dep_var ~ lead3 + lead2 + lead1 | unit + year", data=d, vcov={"CRV1": "unit"})
    assert np.allclose(pt.estimates, fit.coef().to_numpy(), atol=1e-8)
    assert np.allclose(np.sqrt(np.diag(pt.vcov)), fit.se().to_numpy(), rtol=1e-7)
    wald = fit.wald_test(R=np.eye(3))
    assert pt.f_statistic == pytest.approx(float(wald["statistic"]), rel=1e-6)
    assert pt.leads == (-3, -2, -1) and pt.df == 3


# ----------------------------------------------------------------------------------- pyfixest did2s
@pytest.mark.reference
def test_point_estimates_equal_pyfixest_did2s() -> None:
    import pyfixest as pf

    df = pd.read_csv(Path(pf.__file__).parent / "did" / "data" / "df_het.csv")
    df["treat"] = ((df.year >= df.g) & (df.g > 0)).astype(int)
    df["rel"] = np.where(df.g > 0, df.year - df.g, -1000)
    df["w"] = 1.0 + (df.unit % 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # event-time effects, unweighted, on the first 300 units (did2s's event-study variance is slow)
        dyn = pf.did2s(
            df[df.unit <= 300],
            yname="dep_var",
            first_stage="~ 0 | unit + year",
            second_stage="~ i(rel, ref=-1000.0)",
            treatment="treat",
            cluster="state",
        )
        # the static ATT with weights (weighted first stage and weighted average)
        static_w = pf.did2s(
            df,
            yname="dep_var",
            first_stage="~ 0 | unit + year",
            second_stage="~ 0 + treat",
            treatment="treat",
            cluster="state",
            weights="w",
        )
    cols = ["unit", "year", "g", "dep_var", "w"]
    r = bjs(_panel(df.loc[df.unit <= 300, cols], yname="dep_var", idname="unit", tname="year", gname="g"))
    assert len(r.horizons) == 21
    coefs = dyn.coef()
    for h, est in zip(r.horizons, r.horizon_estimates, strict=True):
        assert est == pytest.approx(float(coefs[f"rel::{h}"]), abs=ATOL_DID2S), h
    rw = bjs(_panel(df[cols], yname="dep_var", idname="unit", tname="year", gname="g", weights="w"))
    # weighted did2s sits 3e-6 from the exact solution (its iterative first stage); 1e-5 allows it
    assert rw.att == pytest.approx(float(static_w.coef().iloc[0]), abs=1e-5)
    r_all = bjs(_panel(df[cols], yname="dep_var", idname="unit", tname="year", gname="g"))
    assert abs(rw.att - r_all.att) > 1e-3  # the weights matter here


def _dense_bjs(
    df: pd.DataFrame,
    y: str,
    unit: str,
    t: str,
    g: str,
    w: np.ndarray,
    cl: str,
    xs: tuple[str, ...] = (),
    leave_out: bool = False,
) -> tuple[float, float]:
    """Textbook BJS with dense dummies (pinv), for the exactness check (static ATT only); with
    ``leave_out`` each treated residual is centred on its cohort × event-time mean over the other
    clusters (BJS Appendix A.6), computed here by explicit group sums."""
    tr = ((df[t] >= df[g]) & (df[g] > 0)).to_numpy()
    z = np.hstack(
        [
            pd.get_dummies(df[unit]).to_numpy(float),
            pd.get_dummies(df[t]).to_numpy(float)[:, 1:],
            df[list(xs)].to_numpy(float).reshape(len(df), -1),
        ]
    )
    yy = df[y].to_numpy(float)
    sw = np.sqrt(w[~tr])
    zinv = np.linalg.pinv(z[~tr] * sw[:, None]) * sw[None, :]  # (Z0'WZ0)^{-1} Z0'W
    beta = zinv @ yy[~tr]
    resid = yy - z @ beta
    w1 = w[tr] / w[tr].sum()
    v = np.zeros(len(df))
    v[tr] = w1
    v[~tr] = -(w1 @ z[tr] @ zinv)
    e = np.where(tr, df[t] - df[g], 0)
    cells = pd.DataFrame(
        {
            "g": df[g].to_numpy()[tr],
            "e": e[tr],
            "cl": df[cl].to_numpy()[tr],
            "v2": w1**2,
            "v2r": w1**2 * resid[tr],
        }
    )
    bar = cells.groupby(["g", "e"])[["v2", "v2r"]].transform("sum")
    if leave_out:  # subtract the own cluster's part of the cell sums
        bar = bar - cells.groupby(["g", "e", "cl"])[["v2", "v2r"]].transform("sum")
    eps = resid.copy()
    eps[tr] = resid[tr] - (bar["v2r"] / bar["v2"]).to_numpy()
    sums = pd.Series(v * eps).groupby(df[cl].to_numpy()).sum().to_numpy()
    return float(w1 @ resid[tr]), float(np.sqrt(np.sum(sums**2)))


@pytest.mark.reference
@pytest.mark.parametrize("weighted", [False, True])
def test_exact_against_dense_least_squares_on_mpdta(weighted: bool) -> None:
    mp = pd.read_csv(REF / "mpdta" / "mpdta.csv")
    mp.columns = [c.replace(".", "_") for c in mp.columns]
    mp["n"] = np.exp(mp["lpop"]) / 10 if weighted else 1.0
    p = _panel(
        mp[["countyreal", "year", "first_treat", "lemp", "n"]],
        yname="lemp",
        idname="countyreal",
        tname="year",
        gname="first_treat",
        weights="n" if weighted else None,
    )
    r = bjs(p, leave_out=False)
    est, se = _dense_bjs(mp, "lemp", "countyreal", "year", "first_treat", mp["n"].to_numpy(), "countyreal")
    assert r.att == pytest.approx(est, abs=ATOL_EXACT)
    assert r.att_se == pytest.approx(se, rel=1e-9)
    # weights="equal" ignores the row weight
    if weighted:
        eq = bjs(p, weights="equal")
        est1, _ = _dense_bjs(mp, "lemp", "countyreal", "year", "first_treat", np.ones(len(mp)), "countyreal")
        assert eq.att == pytest.approx(est1, abs=ATOL_EXACT)
        assert abs(eq.att - r.att) > 1e-4


@pytest.mark.reference
@pytest.mark.parametrize("cluster", ["countyreal", "state"])
def test_leave_out_variance_against_dense_group_sums(cluster: str) -> None:
    """leave_out=True: the SE equals explicit leave-own-cluster-out cell means, by unit (one observation
    per cluster and cell) and by groups of ~10 counties (several), and exceeds the plain Theorem 3 SE
    on mpdta."""
    mp = pd.read_csv(REF / "mpdta" / "mpdta.csv")
    mp.columns = [c.replace(".", "_") for c in mp.columns]
    mp["state"] = mp["countyreal"] // 10  # pseudo states: several counties per cluster and cell
    mp["n"] = np.exp(mp["lpop"]) / 10
    p = _panel(
        mp[["countyreal", "year", "first_treat", "lemp", "n", "state"]],
        yname="lemp",
        idname="countyreal",
        tname="year",
        gname="first_treat",
        weights="n",
        cluster=cluster,
    )
    r, plain = bjs(p, leave_out=True), bjs(p, leave_out=False)
    default = bjs(p)  # every cell has 2+ clusters: the default leaves out
    assert (
        default.att_se == r.att_se and default.leave_out and default.lineage["options"]["leave_out"] is None
    )
    est, se = _dense_bjs(
        mp, "lemp", "countyreal", "year", "first_treat", mp["n"].to_numpy(), cluster, leave_out=True
    )
    assert r.att == plain.att == pytest.approx(est, abs=ATOL_EXACT)
    assert r.att_se == pytest.approx(se, rel=1e-9)
    assert r.att_se > plain.att_se
    assert r.lineage["options"]["leave_out"] is True
    assert "leave-out" in r.tidy().item(0, "inference") and "leave-out" not in plain.tidy().item(
        0, "inference"
    )


def test_leave_out_refuses_a_cell_with_one_cluster() -> None:
    """A cohort with a single unit has no leave-out mean: a clear error when asked for, and the default
    falls back to the plain variance with a warning naming the cell."""
    rng = np.random.default_rng(3)
    frame = _simulate(rng, {4: 1, 6: 5}, n_never=6)
    p = _panel(frame, yname="y", idname="unit", tname="t", gname="g", weights="n")
    plain = bjs(p, leave_out=False)  # defined (and biased down for that cohort)
    with pytest.warns(InferenceFallbackWarning, match=r"one\s+cluster only.*\(4, 0\).*falls back"):
        default = bjs(p)
    assert default.att_se == plain.att_se and not default.leave_out
    assert default.lineage["options"]["leave_out_used"] is False
    with pytest.raises(SpecificationError, match=r"one\s+cluster only.*\(4, 0\)"):
        bjs(p, leave_out=True)


# ----------------------------------------------------------------------------------- planted effect
def _tau(g: int, e: int) -> float:
    return (1.0 + 0.4 * e) * (2.0 if g <= 4 else 1.0)


def _simulate(rng: np.random.Generator, cohorts: dict[int, int], n_never: int, n_t: int = 10) -> pl.DataFrame:
    units = [g for g, k in cohorts.items() for _ in range(k)] + [0] * n_never
    n_u = len(units)
    g = np.repeat(np.array(units), n_t)
    t = np.tile(np.arange(1, n_t + 1), n_u)
    a = np.repeat(rng.normal(0, 1, n_u) + 0.5 * (np.array(units) == 4), n_t)
    e = t - g
    on = (g > 0) & (e >= 0)
    tau = np.where(on, (1.0 + 0.4 * e) * np.where(g <= 4, 2.0, 1.0), 0.0)
    y = a + 0.2 * t + tau + rng.normal(0, 1, n_u * n_t)
    n = np.repeat(20.0 + (np.arange(n_u) % 5) * 10, n_t)
    return pl.DataFrame({"unit": np.repeat(np.arange(n_u), n_t), "t": t, "g": g, "y": y, "n": n, "tau": tau})


def test_planted_effect_recovered_and_covered() -> None:
    rng = np.random.default_rng(11)
    cohorts = {4: 12, 6: 12, 8: 12}
    draws = 100
    hits = {"att": 0, "e:0": 0, "e:2": 0}
    errs, twfe_errs = [], []
    truth: dict[str, float] = {}
    for _ in range(draws):
        frame = _simulate(rng, cohorts, n_never=14)
        if not truth:
            tr = frame.filter(pl.col("tau") != 0).with_columns((pl.col("t") - pl.col("g")).alias("e"))
            truth["att"] = float((tr["n"] * tr["tau"]).sum() / tr["n"].sum())
            for k in (0, 2):
                s = tr.filter(pl.col("e") == k)
                truth[f"e:{k}"] = float((s["n"] * s["tau"]).sum() / s["n"].sum())
        p = _panel(frame, yname="y", idname="unit", tname="t", gname="g", weights="n")
        r = bjs(p, horizons=[0, 2])
        for term, lo, hi in r.tidy().select("term", "ci_low", "ci_high").iter_rows():
            hits[term] += lo <= truth[term] <= hi
        errs.append(r.att - truth["att"])
        f = p.frame
        tw = fe_wls(
            f["y"].to_numpy(),
            f["treated"].to_numpy()[:, None],
            unit=f["uid"].to_numpy(),
            period=f["tid"].to_numpy(),
            weights=f["n"].to_numpy(),
            cluster=f["uid"].to_numpy(),
            what="twfe",
        )
        twfe_errs.append(float(tw.beta[0]) - truth["att"])
    mc_se = np.std(errs) / np.sqrt(draws)
    assert abs(np.mean(errs)) < 3 * mc_se
    assert abs(np.mean(twfe_errs)) > 10 * mc_se
    for term, k in hits.items():
        assert 85 <= k <= 100, (term, k)


def test_pretrend_test_detects_a_planted_pretrend() -> None:
    rng = np.random.default_rng(3)
    frame = _simulate(rng, {4: 15, 6: 15, 8: 15}, n_never=15)
    bump = ((frame["g"] > 0) & (frame["t"] - frame["g"] == -1)).cast(pl.Float64) * 1.5
    p0 = _panel(frame, yname="y", idname="unit", tname="t", gname="g")
    p1 = _panel(frame.with_columns(pl.col("y") + bump), yname="y", idname="unit", tname="t", gname="g")
    clean, bumped = bjs(p0, pretrends=2).pretrend_test(), bjs(p1, pretrends=2).pretrend_test()
    assert bumped.p_value < 1e-6 < clean.p_value
    assert bumped.estimates[1] - clean.estimates[1] == pytest.approx(1.5, abs=0.05)


# ----------------------------------------------------------------------------------- edge cases
def test_no_never_treated_drops_unimputable_cells() -> None:
    frame = _simulate(np.random.default_rng(5), {4: 8, 7: 8}, n_never=0)
    p = _panel(frame, yname="y", idname="unit", tname="t", gname="g")
    with pytest.warns(StopDisparityWarning, match="dropped 64 treated cell"):
        r = bjs(p)
    # cohort 4 is imputable only before cohort 7 adopts: event times 0..2
    assert r.horizons == (0, 1, 2)
    assert r.n_dropped_unimputable == 64
    assert np.isfinite(r.att_se)


def test_single_cohort_without_never_treated_is_an_error() -> None:
    frame = _simulate(np.random.default_rng(9), {5: 10}, n_never=0)
    with pytest.raises(SpecificationError, match="no never-treated unit and every unit adopts at once"):
        bjs(_panel(frame, yname="y", idname="unit", tname="t", gname="g"))


def test_bad_options_are_refused() -> None:
    frame = _simulate(np.random.default_rng(4), {4: 5, 6: 5}, n_never=5)
    p = _panel(frame, yname="y", idname="unit", tname="t", gname="g")
    with pytest.raises(SpecificationError, match="horizons must be post event times"):
        bjs(p, horizons=[0, 99])
    with pytest.raises(SpecificationError, match="no untreated cell at event time"):
        bjs(p, pretrends=6)
    with pytest.raises(SpecificationError, match="weights must be one of"):
        bjs(p, weights="stops")  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="pretrends"):
        bjs(p, pretrends=-1)
    with pytest.raises(SpecificationError, match="no pre-trend test"):
        bjs(p).pretrend_test()


def test_tidy_contract_and_rows() -> None:
    frame = _simulate(np.random.default_rng(6), {4: 6, 6: 6}, n_never=6)
    r = bjs(_panel(frame, yname="y", idname="unit", tname="t", gname="g", weights="n"), pretrends=2)
    tidy = check_tidy(r.tidy())
    assert tidy.get_column("term").to_list() == ["att", *[f"e:{h}" for h in range(7)], "pre:-2", "pre:-1"]
    assert tidy.columns[12:] == ["e", "n_treated_units"]
    assert set(tidy.get_column("estimator")) == {"bjs"}
    # horizon covariance: diagonal = the reported SEs squared, symmetric
    assert np.allclose(np.sqrt(np.diag(r.vcov)), r.horizon_se)
    assert np.allclose(r.vcov, r.vcov.T)
    assert r.event_times == r.horizons
    tau = r.tau
    assert tau.height == r.n_treated_obs and tau["weight"].sum() == pytest.approx(1.0)
    assert float((tau["weight"] * tau["tau"]).sum()) == pytest.approx(r.att)
    assert r.lineage["options"]["pretrends"] == 2


@pytest.mark.reference
def test_covariates_enter_the_first_stage() -> None:
    d = pd.read_csv(REF / "sunab" / "base_stagg.csv")
    d["g"] = np.where(d.year_treated > 10, 0, d.year_treated)
    p = _panel(d, yname="y", idname="id", tname="year", gname="g", xnames=["x1"])
    r = bjs(p, leave_out=False)
    est, se = _dense_bjs(d, "y", "id", "year", "g", np.ones(len(d)), "id", xs=("x1",))
    assert r.att == pytest.approx(est, abs=ATOL_EXACT)
    assert r.att_se == pytest.approx(se, rel=1e-9)
    without = bjs(_panel(d, yname="y", idname="id", tname="year", gname="g"))
    assert abs(without.att - r.att) > 0.01  # x1 moves y (coefficient ~1) and trends with the period
