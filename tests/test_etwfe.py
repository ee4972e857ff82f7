"""Wooldridge's extended TWFE (models/_etwfe.py): published etwfe numbers, independent fits, equivalences.

What is checked and against what:

- R ``etwfe`` 0.6.2's own full-precision known outputs on mpdta (its ``inst/tinytest/test_emfx.R``) and
  its README table: simple, calendar, group and event aggregations (not-yet controls), the event study
  with never-treated controls (placebo pre-periods), and the Poisson event study on both scales.
- pyfixest 0.60 ``feols`` / ``feglm`` / ``fepois`` and statsmodels GLM on the spelled-out dummy regression
  (cohort and period effects, one dummy per treated cohort × period cell, covariates with their cohort and
  period slopes and demeaned interactions): cell coefficients and their CR1 / CR0 standard errors, and the
  percentage-point aggregate with a numerical delta method.
- Equivalences that hold exactly: unit vs cohort effects in the linear model; with one cohort, constant
  weights and never-treated controls the linear simple ATT equals the TWFE coefficient; with
  ``control="never"`` the linear cells equal Callaway–Sant'Anna's ATT(g,t) with never-treated controls
  and base period g-1; with one cohort, one post period and cohort-level units, the logit cell equals the
  headline TWFE logit's coefficient.
- A planted heterogeneous, dynamic log-odds effect: ETWFE recovers it (and its pp version) where the
  headline TWFE logit is biased; 95% intervals cover at about the nominal rate.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy.special import expit

from stopdisparity.errors import DroppedRowsWarning, SparseCellWarning, SpecificationError
from stopdisparity.models._etwfe import EtwfeResult, etwfe
from stopdisparity.models._staggered_data import prepare_staggered
from stopdisparity.models.did import fit_did_panel
from stopdisparity.results import TIDY_COLUMNS, check_tidy

HERE = Path(__file__).parent
MPDTA = HERE / "reference" / "mpdta" / "mpdta.csv"
PUBLISHED = HERE / "reference" / "etwfe" / "published.json"

#: Relative tolerances against etwfe's full-precision known outputs, as measured plus a margin: linear
#: estimates agree to 2e-13 (both exact least squares); linear SEs to 6.2e-7 because marginaleffects'
#: delta method differentiates numerically (ours is analytic; etwfe's own tests use 5e-4). The Poisson
#: estimates agree to 2.7e-8 (fixest's feglm stops at a deviance tolerance of 1e-8, we iterate to
#: 1e-11 on the linear predictor) and their SEs to 1.0e-5 (numerical derivatives of a nonlinear map).
RTOL_PUBLISHED = {"linear": (1e-10, 2e-6), "poisson": (1e-7, 3e-5)}
#: Same model, same sandwich, two exact solvers (IRLS to 1e-12 in pyfixest/statsmodels, Newton here).
RTOL_ORACLE = 1e-6


def _mpdta(poisson: bool = False) -> pl.DataFrame:
    d = pl.read_csv(MPDTA)
    return d.with_columns(pl.col("lemp").exp().alias("emp")) if poisson else d


def _mpdta_panel(yname: str = "lemp") -> object:
    d = _mpdta(poisson=yname == "emp")
    return prepare_staggered(
        d, yname=yname, idname="countyreal", tname="year", gname="first.treat", xnames=["lpop"]
    )


def _row(res: EtwfeResult, term: str) -> dict:
    return res.tidy().filter(pl.col("term") == term).row(0, named=True)


# ------------------------------------------------------------------------------------ published
@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(PUBLISHED.read_text())


@pytest.fixture(scope="module")
def mpdta_fits() -> dict[str, EtwfeResult]:
    return {
        "m3": etwfe(_mpdta_panel(), family="linear", control="not_yet"),
        "m3n": etwfe(_mpdta_panel(), family="linear", control="never"),
        "m3p": etwfe(_mpdta_panel("emp"), family="poisson", control="not_yet"),
    }


def _term(case: dict) -> str:
    if case["type"] == "simple":
        return "att"
    return f"{case['type']}:{case['by']}"


@pytest.mark.reference
def test_published_etwfe_known_outputs(published: dict, mpdta_fits: dict[str, EtwfeResult]) -> None:
    assert len(published["known"]) == 25
    for case in published["known"]:
        row = _row(mpdta_fits[case["model"]], _term(case))
        if case["model"] == "m3p" and case["predict"] == "response":
            est, se = row["response_change"], row["response_std_error"]
        else:
            est, se = row["estimate"], row["std_error"]
        rtol_est, rtol_se = RTOL_PUBLISHED["poisson" if case["model"] == "m3p" else "linear"]
        assert est == pytest.approx(case["estimate"], rel=rtol_est), case
        assert se == pytest.approx(case["std_error"], rel=rtol_se), case


@pytest.mark.reference
def test_published_readme_event_table(published: dict, mpdta_fits: dict[str, EtwfeResult]) -> None:
    for case in published["readme_event"]:
        row = _row(mpdta_fits["m3"], f"event:{case['event']}")
        assert round(row["estimate"], 4) == case["estimate"]
        assert round(row["std_error"], 4) == case["std_error"]


@pytest.mark.reference
def test_published_small_sample_convention(mpdta_fits: dict[str, EtwfeResult]) -> None:
    # fixest CRV1: G/(G-1)(N-1)/(N-K), K = 30 coefficients (14 cell + 8 covariate + 4 cohort + 5 year - 1)
    ss = mpdta_fits["m3"].small_sample
    assert (ss.g, ss.n, ss.k) == (500, 2500, 30)
    assert mpdta_fits["m3n"].small_sample.k == 40
    # the linear, never-treated version: only the pre-period placebo cells e <= -2 and posts are reported
    assert mpdta_fits["m3n"].event_times == (-4, -3, -2, 0, 1, 2, 3)
    assert mpdta_fits["m3"].event_times == (0, 1, 2, 3)


# ------------------------------------------------------------------------- spelled-out dummy design
def _spelled_out(
    d: pd.DataFrame, *, y: str, unit: str, t: str, g: str, x: list[str], control: str
) -> tuple[pd.DataFrame, list[str], list[tuple[int, int]], list[str]]:
    """The etwfe regression written out: cell dummies (and cell × demeaned x), x, x × cohort, x × period."""
    d = d.copy()
    periods = sorted(d[t].unique())
    cohorts = sorted(c for c in d[g].unique() if c > 0)
    cells = []
    for c in cohorts:
        for s in periods:
            treated = s >= c if control == "not_yet" else s != periods[periods.index(c) - 1]
            if treated:
                cells.append((int(c), int(s)))
    names, cov_names = [], []
    for c, s in cells:
        name = f"d_{c}_{s}"
        d[name] = ((d[g] == c) & (d[t] == s)).astype(float)
        names.append(name)
    for v in x:
        d[f"{v}_dm"] = d[v] - d.groupby(g)[v].transform("mean")
        for c, s in cells:
            d[f"d_{c}_{s}_{v}"] = d[f"d_{c}_{s}"] * d[f"{v}_dm"]
            cov_names.append(f"d_{c}_{s}_{v}")
        cov_names.append(v)
        for c in cohorts:
            d[f"{v}_g{c}"] = d[v] * (d[g] == c)
            cov_names.append(f"{v}_g{c}")
        for s in periods[1:]:
            d[f"{v}_t{s}"] = d[v] * (d[t] == s)
            cov_names.append(f"{v}_t{s}")
    return d, names, cells, cov_names


@pytest.mark.reference
def test_linear_matches_pyfixest_feols_on_mpdta(mpdta_fits: dict[str, EtwfeResult]) -> None:
    pf = pytest.importorskip("pyfixest")
    d = _mpdta().to_pandas().rename(columns={"first.treat": "first_treat"})
    for model, control in (("m3", "not_yet"), ("m3n", "never")):
        dd, names, cells, cov = _spelled_out(
            d, y="lemp", unit="countyreal", t="year", g="first_treat", x=["lpop"], control=control
        )
        fml = f"lemp ~ {' + '.join(names + cov)} | first_treat + year"
        fit = pf.feols(fml, data=dd, vcov={"CRV1": "countyreal"})
        coef, se = fit.coef(), fit.se()
        res = mpdta_fits[model].cells
        for (c, s), name in zip(cells, names, strict=True):
            r = res.filter((pl.col("g") == c) & (pl.col("t") == s)).row(0, named=True)
            # demeaned lpop averages to 0 in each cell of the balanced panel: the cell effect is tau
            assert r["estimate"] == pytest.approx(coef[name], rel=RTOL_ORACLE, abs=1e-10)
            assert r["std_error"] == pytest.approx(se[name], rel=RTOL_ORACLE)


def _binomial_panel(
    seed: int,
    *,
    n_units: int = 40,
    n_periods: int = 8,
    cohorts: tuple[int, ...] = (0, 4, 5, 6),
    tau: float = 0.3,
    slope: float = 0.1,
    trials: float = 40.0,
    covariate: bool = False,
) -> tuple[pl.DataFrame, dict]:
    """Cells with logit p = a_g + c_t + tau_gt (+ 0.3 x): the pooled ETWFE logit is the true model.

    tau_gt = tau + slope·(t - g) + 0.05·(g - min cohort): dynamic and heterogeneous across cohorts.
    Units differ in their trials (volume), not in their log odds given the cohort.
    """
    rng = np.random.default_rng(seed)
    g_unit = np.asarray(cohorts)[np.arange(n_units) % len(cohorts)]
    uid = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(1, n_periods + 1), n_units)
    g = g_unit[uid]
    a = {c: -0.5 + 0.2 * i for i, c in enumerate(cohorts)}
    ct = 0.08 * t + 0.1 * np.sin(t)
    gmin = min(c for c in cohorts if c > 0)
    on = (g > 0) & (t >= g)
    tau_it = np.where(on, tau + slope * (t - g) + 0.05 * (g - gmin), 0.0)
    x = rng.normal(size=uid.size) if covariate else np.zeros(uid.size)
    eta0 = np.array([a[c] for c in g]) + ct + 0.3 * x
    n = rng.poisson(trials, uid.size) + 5
    succ = rng.binomial(n, expit(eta0 + tau_it))
    frame = pl.DataFrame({"unit": uid, "t": t, "g": g, "succ": succ, "n": n, "x": x})
    w = n[on]
    truth = {
        "att": float(np.sum(w * tau_it[on]) / w.sum()),
        "pp": float(100 * np.sum(w * (expit(eta0 + tau_it) - expit(eta0))[on]) / w.sum()),
        "cell": {
            (int(c), int(s)): float(tau + slope * (s - c) + 0.05 * (c - gmin))
            for c, s in set(zip(g[on], t[on], strict=True))
        },
    }
    return frame, truth


def _prep(frame: pl.DataFrame, **kw: object) -> object:
    return prepare_staggered(frame, yname="succ", idname="unit", tname="t", gname="g", trials="n", **kw)


@pytest.mark.reference
@pytest.mark.parametrize("control", ["not_yet", "never"])
def test_logit_matches_pyfixest_feglm_on_stops(control: str) -> None:
    """The logit on cells = the stop-level logit; CR1 with N = stops equals pyfixest's feglm CRV1."""
    pf = pytest.importorskip("pyfixest")
    frame, _ = _binomial_panel(3, n_units=16, n_periods=6, cohorts=(0, 4, 5), trials=12)
    res = etwfe(_prep(frame), family="logit", control=control)
    cells = frame.to_pandas()
    rep = np.repeat(np.arange(len(cells)), cells["n"].to_numpy())
    stops = cells.iloc[rep].reset_index(drop=True)
    first = stops.groupby(["unit", "t"]).cumcount()  # the first succ stops of a cell are successes
    stops["y"] = (first < stops["succ"]).astype(float)
    dd, names, cells_list, _ = _spelled_out(stops, y="y", unit="unit", t="t", g="g", x=[], control=control)
    fml = f"y ~ {' + '.join(names)} + C(g) + C(t)"
    fit = pf.feglm(fml, data=dd, family="logit", vcov={"CRV1": "unit"}, iwls_tol=1e-12, iwls_maxiter=100)
    coef, se = fit.coef(), fit.se()
    for (c, s), name in zip(cells_list, names, strict=True):
        r = res.cells.filter((pl.col("g") == c) & (pl.col("t") == s)).row(0, named=True)
        assert r["estimate"] == pytest.approx(coef[name], rel=RTOL_ORACLE)
        assert r["std_error"] == pytest.approx(se[name], rel=RTOL_ORACLE)


@pytest.mark.reference
def test_poisson_matches_pyfixest_fepois_with_offset() -> None:
    """Counts y·n with offset log n (stop counts with exposure), CR1 over rows."""
    pf = pytest.importorskip("pyfixest")
    frame, _ = _binomial_panel(4, n_units=24, n_periods=6, cohorts=(0, 3, 5))
    res = etwfe(_prep(frame), family="poisson", control="not_yet")
    d = frame.to_pandas()
    d["logn"] = np.log(d["n"])
    dd, names, cells_list, _ = _spelled_out(d, y="succ", unit="unit", t="t", g="g", x=[], control="not_yet")
    fit = pf.fepois(
        f"succ ~ {' + '.join(names)} | g + t", data=dd, offset="logn", vcov={"CRV1": "unit"}, iwls_tol=1e-12
    )
    coef, se = fit.coef(), fit.se()
    for (c, s), name in zip(cells_list, names, strict=True):
        r = res.cells.filter((pl.col("g") == c) & (pl.col("t") == s)).row(0, named=True)
        assert r["estimate"] == pytest.approx(coef[name], rel=RTOL_ORACLE)
        assert r["std_error"] == pytest.approx(se[name], rel=RTOL_ORACLE)


@pytest.mark.reference
@pytest.mark.parametrize("control", ["not_yet", "never"])
def test_logit_with_covariate_and_pp_match_statsmodels(control: str) -> None:
    """Covariate path and the response scale: statsmodels binomial GLM on the cells, CR0 by unit.

    Link aggregates are linear in the coefficients; the pp aggregate's SE uses a central-difference
    gradient of the stop-weighted Λ(η) - Λ(η - τ - ẋ'δ) average, so the analytic gradient is checked.
    """
    sm = pytest.importorskip("statsmodels.api")
    frame, _ = _binomial_panel(5, n_units=30, n_periods=7, cohorts=(0, 4, 5, 6), covariate=True)
    res = etwfe(_prep(frame, xnames=["x"]), family="logit", control=control, vcov_type="CR0")
    d = frame.to_pandas()
    dd, names, cells_list, cov = _spelled_out(
        d, y="succ", unit="unit", t="t", g="g", x=["x"], control=control
    )
    fe = pd.get_dummies(dd["g"].astype(str), prefix="G", drop_first=False, dtype=float)
    ft = pd.get_dummies(dd["t"].astype(str), prefix="T", drop_first=True, dtype=float)
    X = pd.concat([fe, ft, dd[names + cov]], axis=1)
    endog = np.column_stack([dd["succ"], dd["n"] - dd["succ"]])
    fit = sm.GLM(endog, X, family=sm.families.Binomial()).fit(
        tol=1e-13, cov_type="cluster", cov_kwds={"groups": dd["unit"].to_numpy(), "use_correction": False}
    )
    params = fit.params.to_numpy()
    V = fit.cov_params().to_numpy()
    cols = list(X.columns)
    n = dd["n"].to_numpy(float)
    xdm = dd["x_dm"].to_numpy()

    def cell_parts(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eta = X.to_numpy() @ params
        shift = np.zeros(len(dd))
        for c_name in names:
            dv = dd[c_name].to_numpy()
            shift += dv * (params[cols.index(c_name)] + xdm * params[cols.index(f"{c_name}_x")])
        return eta, shift

    post = [(c, s) for c, s in cells_list if s >= c]
    on = np.zeros(len(dd), bool)
    for c, s in post:
        on |= (dd["g"].to_numpy() == c) & (dd["t"].to_numpy() == s)

    def pp(params: np.ndarray) -> float:
        eta, shift = cell_parts(params)
        return 100 * float(np.sum((n * (expit(eta) - expit(eta - shift)))[on]) / n[on].sum())

    # link simple ATT: sum over post cells of m_c (tau_c + xbar_c delta_c) / sum m_c
    grad_link = np.zeros(len(params))
    est_link = 0.0
    for c_name in names:
        c, s = map(int, c_name.split("_")[1:3])
        if s < c:
            continue
        sel = dd[c_name].to_numpy() > 0
        w = n[sel].sum() / n[on].sum()
        xbar = float(np.sum(n[sel] * xdm[sel]) / n[sel].sum())
        grad_link[cols.index(c_name)] += w
        grad_link[cols.index(f"{c_name}_x")] += w * xbar
        est_link += w * (params[cols.index(c_name)] + xbar * params[cols.index(f"{c_name}_x")])
    h = 1e-6
    grad_pp = np.array(
        [
            (pp(params + h * np.eye(len(params))[j]) - pp(params - h * np.eye(len(params))[j])) / (2 * h)
            for j in range(len(params))
        ]
    )
    att = _row(res, "att")
    assert att["estimate"] == pytest.approx(est_link, rel=RTOL_ORACLE)
    assert att["std_error"] == pytest.approx(float(np.sqrt(grad_link @ V @ grad_link)), rel=RTOL_ORACLE)
    assert att["pp_change"] == pytest.approx(pp(params), rel=RTOL_ORACLE)
    assert att["pp_std_error"] == pytest.approx(float(np.sqrt(grad_pp @ V @ grad_pp)), rel=1e-5)


# ----------------------------------------------------------------------------------- equivalences
def test_linear_cohort_effects_equal_unit_effects() -> None:
    """Balanced panel, unweighted linear model: cohort or unit fixed effects give the same cell effects
    (Wooldridge 2021). With weights varying within cohorts they differ, so none are used here."""
    pf = pytest.importorskip("pyfixest")
    frame, _ = _binomial_panel(6, n_units=30, n_periods=7)
    frame = frame.with_columns((pl.col("succ") / pl.col("n")).alias("share"))
    panel = prepare_staggered(frame, yname="share", idname="unit", tname="t", gname="g")
    for control in ("not_yet", "never"):
        res = etwfe(panel, family="linear", control=control)
        d = frame.to_pandas()
        dd, names, cells_list, _ = _spelled_out(
            d, y="share", unit="unit", t="t", g="g", x=[], control=control
        )
        fit = pf.feols(f"share ~ {' + '.join(names)} | unit + t", data=dd)
        for (c, s), name in zip(cells_list, names, strict=True):
            r = res.cells.filter((pl.col("g") == c) & (pl.col("t") == s)).row(0, named=True)
            assert r["estimate"] == pytest.approx(fit.coef()[name], rel=1e-8, abs=1e-12)


def test_linear_one_cohort_simple_att_equals_twfe() -> None:
    """One cohort, never-treated controls, equal weights: the linear simple ATT (not-yet form, which
    uses every pre-period) is the TWFE coefficient. The never form measures from g-1 only: it differs."""
    frame, _ = _binomial_panel(7, n_units=20, n_periods=6, cohorts=(0, 4))
    frame = frame.with_columns((pl.col("succ") / pl.col("n")).alias("share"))
    twfe = fit_did_panel(frame, yname="share", idname="unit", tname="t", gname="g")
    panel = prepare_staggered(frame, yname="share", idname="unit", tname="t", gname="g")
    res = etwfe(panel, family="linear", control="not_yet")
    assert _row(res, "att")["estimate"] == pytest.approx(twfe.estimate, abs=1e-12)
    never = etwfe(panel, family="linear", control="never")
    assert abs(_row(never, "att")["estimate"] - twfe.estimate) > 1e-4
    # with two cohorts the equality fails (forbidden comparisons): do not claim more than holds
    frame2, _ = _binomial_panel(7, n_units=21, n_periods=6, cohorts=(0, 3, 5), slope=0.2)
    frame2 = frame2.with_columns((pl.col("succ") / pl.col("n")).alias("share"))
    twfe2 = fit_did_panel(frame2, yname="share", idname="unit", tname="t", gname="g")
    res2 = etwfe(
        prepare_staggered(frame2, yname="share", idname="unit", tname="t", gname="g"), family="linear"
    )
    assert abs(_row(res2, "att")["estimate"] - twfe2.estimate) > 1e-3


def test_linear_never_cells_equal_callaway_santanna_universal_base() -> None:
    """control='never', no covariates, equal weights: τ(g,t) = CS ATT(g,t), never-treated, base g-1.

    Each cell is (ȳ_g,t - ȳ_g,g-1) - (ȳ_∞,t - ȳ_∞,g-1), the pre-period cells included (placebos).
    With control='not_yet' the cells are imputation estimates, which are not CS's in general.
    """
    frame, _ = _binomial_panel(8, n_units=24, n_periods=7, cohorts=(0, 3, 5, 6))
    frame = frame.with_columns((pl.col("succ") / pl.col("n")).alias("share"))
    res = etwfe(
        prepare_staggered(frame, yname="share", idname="unit", tname="t", gname="g"),
        family="linear",
        control="never",
    )
    means = frame.group_by("g", "t").agg(pl.col("share").mean())
    m = {(r["g"], r["t"]): r["share"] for r in means.iter_rows(named=True)}
    for r in res.cells.iter_rows(named=True):
        g, t = r["g"], r["t"]
        cs = (m[(g, t)] - m[(g, g - 1)]) - (m[(0, t)] - m[(0, g - 1)])
        assert r["estimate"] == pytest.approx(cs, abs=1e-12)


def test_logit_one_cohort_one_post_period_equals_headline_on_cohort_cells() -> None:
    """One cohort, one post period, never-treated controls: with units = cohorts (pooled cells) the
    headline TWFE logit's in_force coefficient is exactly the ETWFE cell; with county effects it is not
    (unit and cohort effects differ in a logit), so only closeness is asserted there."""
    frame, _ = _binomial_panel(9, n_units=20, n_periods=5, cohorts=(0, 5))
    pooled = (
        frame.group_by("g", "t")
        .agg(pl.col("succ").sum(), pl.col("n").sum())
        .with_columns(pl.col("g").alias("unit"))
    )
    res = etwfe(_prep(frame), family="logit", control="not_yet")
    head = fit_did_panel(pooled, yname="succ", idname="unit", tname="t", gname="g", trials="n")
    assert _row(res, "att")["estimate"] == pytest.approx(head.estimate, abs=1e-9)
    head_units = fit_did_panel(frame, yname="succ", idname="unit", tname="t", gname="g", trials="n")
    assert _row(res, "att")["estimate"] == pytest.approx(head_units.estimate, abs=0.05)


def test_poisson_exposure_form_is_rate_qmle() -> None:
    """y·n with offset log n and the rate QMLE with weights n are the same fit; response = rate change."""
    frame, _ = _binomial_panel(10, n_units=20, n_periods=6, cohorts=(0, 4))
    res = etwfe(_prep(frame), family="poisson")
    cells = res.cells.filter(pl.col("post"))
    r = cells.row(0, named=True)
    sub = frame.filter((pl.col("g") == r["g"]) & (pl.col("t") == r["t"]))
    rate1 = sub["succ"].sum() / sub["n"].sum()
    # the treated cell is fitted exactly: rate change = observed rate - rate * exp(-tau)
    assert r["response"] == pytest.approx(rate1 * (1 - np.exp(-r["estimate"])), rel=1e-10)


# ---------------------------------------------------------------------------------- planted effect
def test_planted_effect_recovered_and_twfe_biased() -> None:
    """Large draw: the cell effects, the simple ATT (log odds and pp) are recovered; TWFE is not."""
    frame, truth = _binomial_panel(11, n_units=80, n_periods=10, cohorts=(0, 4, 6, 8), trials=400, slope=0.15)
    res = etwfe(_prep(frame), family="logit", control="not_yet")
    att = _row(res, "att")
    assert abs(att["estimate"] - truth["att"]) < 3 * att["std_error"]
    assert abs(att["pp_change"] - truth["pp"]) < 3 * att["pp_std_error"]
    for r in res.cells.iter_rows(named=True):
        assert abs(r["estimate"] - truth["cell"][(r["g"], r["t"])]) < 4 * r["std_error"]
    head = fit_did_panel(frame, yname="succ", idname="unit", tname="t", gname="g", trials="n")
    assert abs(head.estimate - truth["att"]) > 8 * att["std_error"]  # forbidden comparisons


def test_coverage_over_draws() -> None:
    """100 cheap draws: mean errors near 0 for ETWFE, not for TWFE; 95% CIs cover 0.88-1.0 of the time."""
    cover_link = cover_pp = 0
    err, err_twfe = [], []
    start = time.perf_counter()
    reps = 100
    for seed in range(reps):
        frame, truth = _binomial_panel(100 + seed, n_units=40, n_periods=8, cohorts=(0, 4, 5, 6), slope=0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = etwfe(_prep(frame), family="logit", control="not_yet")
            head = fit_did_panel(frame, yname="succ", idname="unit", tname="t", gname="g", trials="n")
        att = _row(res, "att")
        cover_link += att["ci_low"] <= truth["att"] <= att["ci_high"]
        lo, hi = att["pp_change"] - 1.96 * att["pp_std_error"], att["pp_change"] + 1.96 * att["pp_std_error"]
        cover_pp += lo <= truth["pp"] <= hi
        err.append(att["estimate"] - truth["att"])
        err_twfe.append(head.estimate - truth["att"])
    assert time.perf_counter() - start < 20
    assert 0.88 <= cover_link / reps <= 1.0
    assert 0.88 <= cover_pp / reps <= 1.0
    se_mean = np.std(err) / np.sqrt(reps)
    assert abs(np.mean(err)) < 3 * se_mean + 0.005
    assert abs(np.mean(err_twfe)) > 10 * se_mean  # TWFE is biased under dynamic staggered effects


# ------------------------------------------------------------------------------ contract and errors
def test_tidy_contract_and_event_outputs() -> None:
    frame, _ = _binomial_panel(12)
    res = etwfe(_prep(frame), family="logit", control="never")
    tidy = check_tidy(res.tidy())
    assert tuple(tidy.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert tidy.columns[len(TIDY_COLUMNS) :] == [
        "aggregation",
        "n_treated_units",
        "pp_change",
        "pp_std_error",
    ]
    terms = tidy.get_column("term").to_list()
    assert terms[0] == "att"
    aggs = tidy.get_column("aggregation").to_list()
    assert aggs == sorted(aggs, key=["simple", "event", "group", "calendar"].index)
    assert set(tidy.get_column("estimator")) == {"etwfe"}
    assert "parallel trends in log odds" in tidy.get_column("estimand")[0]
    ev = tidy.filter(pl.col("aggregation") == "event")
    assert res.event_times == tuple(int(t.split(":")[1]) for t in ev.get_column("term"))
    assert -1 not in res.event_times and min(res.event_times) < -1  # placebos, reference omitted
    np.testing.assert_allclose(res.coefficients, ev.get_column("estimate").to_numpy())
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov)), ev.get_column("std_error").to_numpy(), rtol=1e-12)
    assert res.vcov.shape == (len(res.event_times),) * 2
    # group sizes: 10 units per cohort
    assert tidy.filter(pl.col("term") == "group:4")["n_treated_units"].item() == 10
    assert tidy.filter(pl.col("term") == "event:0")["n_treated_units"].item() == 30
    assert tidy.filter(pl.col("term") == "att")["n_treated_units"].item() == res.n_treated_units == 30
    assert set(res.cells["n_units"].to_list()) == {10}
    assert res.lineage["options"]["control"] == "never"
    pois = etwfe(_prep(frame), family="poisson").tidy()
    assert "response_change" in pois.columns and "pp_change" not in pois.columns
    lin = etwfe(_prep(frame), family="linear").tidy()
    assert "parallel trends in levels" in lin.get_column("estimand")[0]


def test_thin_cells_warn() -> None:
    frame, _ = _binomial_panel(13, n_units=9, cohorts=(0, 0, 0, 0, 4, 4, 4, 4, 6))
    with pytest.warns(SparseCellWarning, match="fewer than 2 treated units"):
        etwfe(_prep(frame), family="logit")


def test_not_yet_without_never_treated_uses_last_cohort() -> None:
    frame, _ = _binomial_panel(14, cohorts=(3, 5, 7))
    res = etwfe(_prep(frame), family="logit", control="not_yet")
    assert set(res.cells["g"].to_list()) == {3, 5}
    assert res.cells["t"].max() < 7  # periods from the last cohort's adoption on are dropped (etwfe)
    with pytest.raises(SpecificationError, match="never-treated"):
        etwfe(_prep(frame), control="never")


def test_errors_and_drops() -> None:
    frame, _ = _binomial_panel(15, cohorts=(0, 1, 4, 6))
    with pytest.warns(DroppedRowsWarning, match="treated from the first period"):
        res = etwfe(_prep(frame), family="logit")
    assert 1 not in res.cells["g"].to_list()
    with pytest.raises(SpecificationError, match="family"):
        etwfe(_prep(frame), family="probit")  # type: ignore[arg-type]
    frame0, _ = _binomial_panel(16)
    frame0 = frame0.with_columns(
        pl.when((pl.col("g") == 4) & (pl.col("t") == 5)).then(0).otherwise(pl.col("succ")).alias("succ")
    )
    with pytest.raises(SpecificationError, match="infinite"):
        etwfe(_prep(frame0), family="logit")


def test_speed_county_month_panel() -> None:
    """146 counties × 192 months with yearly cohorts (~1,000 treated cells) fits in well under a second."""
    rng = np.random.default_rng(0)
    units, periods = 146, 192
    g_unit = np.where(np.arange(units) < 46, 0, 24 + 12 * (np.arange(units) % 10))
    uid = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(periods), units)
    g = g_unit[uid]
    eta = -1 + 0.002 * t + np.where((g > 0) & (t >= g), 0.2, 0.0)
    n = rng.poisson(200, uid.size) + 1
    frame = pl.DataFrame({"unit": uid, "t": t, "g": g, "succ": rng.binomial(n, expit(eta)), "n": n})
    panel = _prep(frame)
    start = time.perf_counter()
    res = etwfe(panel, family="logit", control="not_yet")
    elapsed = time.perf_counter() - start
    assert res.cells.height > 900
    assert elapsed < 5.0
    assert _row(res, "att")["estimate"] == pytest.approx(0.2, abs=0.02)


@pytest.mark.reference
def test_unbalanced_weighted_linear_matches_pyfixest() -> None:
    """Unbalanced panel (cells missing at random), WLS weights n, cohort effects: pyfixest feols CRV1."""
    pf = pytest.importorskip("pyfixest")
    frame, _ = _binomial_panel(17, n_units=30, n_periods=7, cohorts=(0, 4, 5, 6))
    rng = np.random.default_rng(17)
    frame = frame.filter(pl.Series(rng.random(frame.height) > 0.15) | (pl.col("t") == 1))
    frame = frame.with_columns((pl.col("succ") / pl.col("n")).alias("share"))
    panel = prepare_staggered(
        frame, yname="share", idname="unit", tname="t", gname="g", weights="n", balanced=False
    )
    assert not panel.balanced
    res = etwfe(panel, family="linear", control="not_yet")
    dd, names, cells_list, _ = _spelled_out(
        frame.to_pandas(), y="share", unit="unit", t="t", g="g", x=[], control="not_yet"
    )
    fit = pf.feols(f"share ~ {' + '.join(names)} | g + t", data=dd, weights="n", vcov={"CRV1": "unit"})
    for (c, s), name in zip(cells_list, names, strict=True):
        r = res.cells.filter((pl.col("g") == c) & (pl.col("t") == s)).row(0, named=True)
        assert r["estimate"] == pytest.approx(fit.coef()[name], rel=RTOL_ORACLE, abs=1e-12)
        assert r["std_error"] == pytest.approx(fit.se()[name], rel=RTOL_ORACLE)
        assert r["n_units"] == int(((dd["g"] == c) & (dd["t"] == s)).sum())
