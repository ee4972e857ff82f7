"""Tests of the generic-panel entry points: fit_did_panel and fit_event_study_panel (issue 5, section 5).

Equalities: the generic logit on a pivoted synth panel equals the race-layout fit_did (one estimation
path); the linear model with covariates equals pyfixest ``feols``; the logit with a covariate equals
statsmodels' GLM on explicit dummies (CR0, with our CR1 factor written out); the event study matches
pyfixest ``i(rel_time, ref=-1)`` and recovers a planted effect. Also: validation messages, the missing
policy, inference methods on generic results and ``EventStudyResult.with_inference``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
import statsmodels.api as sm
from scipy.special import expit

from stopdisparity.errors import (
    DroppedRowsWarning,
    FewClustersWarning,
    SparseCellWarning,
    SpecificationError,
)
from stopdisparity.models._fe import Inference
from stopdisparity.models.did import fit_did, fit_did_panel
from stopdisparity.models.event_study import fit_event_study, fit_event_study_panel
from stopdisparity.results import TIDY_COLUMNS, check_tidy
from stopdisparity.synth import SynthSpec, cells

# One estimation path: the race layout and the generic form run the same arithmetic on the same cells.
RTOL_SAME_PATH = 1e-10
# pyfixest's OLS and ours are both exact linear algebra (as in tests/test_models_did.py).
RTOL_OLS_COEF = 1e-8
RTOL_OLS_SE = 1e-6
# GLMs: both sides iterate (IRLS) to tight tolerances; the tolerances.
RTOL_GLM_COEF = 1e-6
RTOL_GLM_SE = 1e-5

# Column names a formula parser would choke on: dots, spaces, non-ASCII.
UNIT, PERIOD, FIRST, Y, X1, X2 = "county id", "año", "first.treat", "log emp", "x.1", "x 2"
SUCC, TRIALS, W, STATE = "hisp stops", "n.total", "weight w", "state"


# ----------------------------------------------------------------------------------------- helpers
def quiet(fn, *args, **kwargs):
    """Call ``fn`` with the few-cluster warnings silenced (tests that are not about them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewClustersWarning)
        return fn(*args, **kwargs)


def make_generic(
    *,
    seed: int = 0,
    units: int = 36,
    periods: int = 10,
    start: int = 2000,
    cohorts: tuple[int, ...] = (0, 3, 5, 7),
    effect: float = 0.5,
    dynamic: float = 0.0,
    size: float = 60.0,
) -> pl.DataFrame:
    """A unit × period panel with both a continuous and a binomial outcome and two covariates.

    Unit ``u`` adopts at period ``start + cohorts[u % len(cohorts)]`` (0: never treated; every
    fourth never-treated unit codes that as null instead of 0). The effect at event time e >= 0 is
    ``effect + dynamic * e`` (on the level of ``log emp`` and on the log odds of ``hisp stops``).
    """
    rng = np.random.default_rng(seed)
    alpha = rng.normal(0, 1, units)
    gamma = rng.normal(0, 0.3, periods)
    rows = []
    for u in range(units):
        c = cohorts[u % len(cohorts)]
        g = start + c if c else 0
        shock = 0.0
        for j in range(periods):
            t = start + j
            shock = 0.5 * shock + rng.normal(0, 0.15)  # AR(1) within unit: clustering matters
            d = bool(g and t >= g)
            eff = effect + dynamic * (t - g) if d else 0.0
            x1, x2 = rng.normal(), rng.normal() + 0.05 * j
            y = alpha[u] + gamma[j] + eff + 0.3 * x1 - 0.2 * x2 + shock + rng.normal(0, 0.2)
            n = int(rng.poisson(size))
            p = expit(-1.0 + 0.5 * alpha[u] + gamma[j] + eff + 0.3 * x1 + shock)
            rows.append(
                {
                    UNIT: f"u{u:02d}",
                    STATE: "AA" if u % 2 else "BB",
                    PERIOD: t,
                    FIRST: None if (not g and u % 8 == 0) else g,
                    Y: y,
                    X1: x1,
                    X2: x2,
                    W: float(rng.uniform(0.5, 2.0)),
                    TRIALS: n,
                    SUCC: int(rng.binomial(n, p)),
                }
            )
    return pl.DataFrame(rows)


def absorbing(frame: pl.DataFrame) -> np.ndarray:
    """The treatment written out independently of the package: period >= first treated, 0/null never."""
    g = frame.get_column(FIRST).fill_null(0).to_numpy()
    t = frame.get_column(PERIOD).to_numpy()
    return ((g != 0) & (t >= g)).astype(float)


def race_panel(states: tuple[str, ...], seed: int) -> pl.DataFrame:
    """A synth cell panel of one agency, with the treatment made absorbing at first_treated."""
    spec = SynthSpec(design="random", n_treated=14, states=states)
    frame = cells(spec, seed=seed, period="quarter", rows=300_000 * len(states)).filter(
        pl.col("agency") == "state_patrol"
    )
    return frame.with_columns(
        ((pl.col("first_treated") > 0) & (pl.col("period") >= pl.col("first_treated"))).alias("absorbing")
    )


def pivot(frame: pl.DataFrame) -> pl.DataFrame:
    """Race layout -> one row per county × period: successes (Hispanic) out of trials (Hispanic+White)."""
    wide = frame.filter(pl.col("race").is_in(["hispanic", "white"])).pivot(
        on="race", index=["county_fips", "state", "period", "first_treated"], values="stops"
    )
    return wide.select(
        pl.col("county_fips").alias(UNIT),
        pl.col("state").alias(STATE),
        pl.col("period").alias(PERIOD),
        pl.col("first_treated").alias(FIRST),
        pl.col("hispanic").alias(SUCC),
        (pl.col("hispanic") + pl.col("white")).alias(TRIALS),
    )


def pyfixest():
    return pytest.importorskip("pyfixest")


def to_pandas_safe(frame: pl.DataFrame) -> pd.DataFrame:
    """Formula-safe names for pyfixest and statsmodels, and the treatment written out."""
    out = frame.with_columns(pl.Series("d", absorbing(frame))).rename(
        {UNIT: "unit", PERIOD: "period", Y: "y", X1: "x1", X2: "x2", W: "w", SUCC: "succ", TRIALS: "n"}
    )
    return out.to_pandas()


# --------------------------------------------------------------------- one path: race == generic
@pytest.mark.parametrize("states", [("SC",), ("NC", "SC")], ids=["period-fe", "state-period-fe"])
def test_generic_logit_equals_race_layout(states):
    frame = race_panel(states, seed=5)
    group = "state" if len(states) > 1 else None
    race = quiet(fit_did, frame, treatment="absorbing", group=group)
    gen = quiet(
        fit_did_panel, pivot(frame), yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD, gname=FIRST,
        group=STATE if group else None,
    )  # fmt: skip
    assert race.multi_group == gen.multi_group == (len(states) > 1)
    assert gen.estimate == pytest.approx(race.estimate, rel=RTOL_SAME_PATH)
    assert gen.std_error == pytest.approx(race.std_error, rel=RTOL_SAME_PATH)
    assert gen.pp_change == pytest.approx(race.pp_change, rel=RTOL_SAME_PATH)
    assert gen.pp_std_error == pytest.approx(race.pp_std_error, rel=RTOL_SAME_PATH)
    assert (gen.nobs, gen.n_stops, gen.n_clusters) == (race.nobs, race.n_stops, race.n_clusters)
    assert gen.small_sample.factor == pytest.approx(race.small_sample.factor, rel=1e-14)
    t = gen.tidy()
    check_tidy(t)
    assert t.columns[: len(TIDY_COLUMNS)] == list(TIDY_COLUMNS)
    row = t.row(0, named=True)
    assert row["term"] == "in_force" and row["estimator"] == "twfe-logit"
    assert row["odds_ratio"] == pytest.approx(math.exp(gen.estimate))
    assert row["pp_change"] == pytest.approx(race.pp_change, rel=RTOL_SAME_PATH)
    assert row["n_trials"] == race.n_stops
    assert gen.layout == "panel" and gen.race_pair is None and race.layout == "race"


def test_generic_linear_share_equals_race_layout_linear():
    frame = race_panel(("SC",), seed=6)
    race = quiet(fit_did, frame, treatment="absorbing", estimator="twfe-linear", group=None)
    gen = quiet(
        fit_did_panel, pivot(frame), yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD, gname=FIRST,
        estimator="twfe-linear",
    )  # fmt: skip
    assert gen.estimate == pytest.approx(race.estimate, rel=RTOL_SAME_PATH)
    assert gen.std_error == pytest.approx(race.std_error, rel=RTOL_SAME_PATH)
    assert gen.tidy().item(0, "pp_change") == pytest.approx(100 * race.estimate, rel=RTOL_SAME_PATH)


def test_generic_event_study_logit_equals_race_layout():
    frame = race_panel(("SC",), seed=7)
    race = quiet(fit_event_study, frame, group=None, event_unit="period", window=(-3, 4))
    gen = quiet(
        fit_event_study_panel, pivot(frame), yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD,
        gname=FIRST, window=(-3, 4),
    )  # fmt: skip
    assert gen.estimated == race.estimated
    np.testing.assert_allclose(gen.estimates, race.estimates, rtol=RTOL_SAME_PATH)
    np.testing.assert_allclose(gen.std_errors, race.std_errors, rtol=RTOL_SAME_PATH)
    assert gen.tidy().get_column("term").to_list() == race.tidy().get_column("term").to_list()


# ------------------------------------------------------------------------------- linear: pyfixest
@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:The inplace keyword")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "aweights"])
def test_linear_with_covariates_equals_pyfixest(weighted):
    pf = pyfixest()
    panel = make_generic(seed=1)
    res = quiet(
        fit_did_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1, X2),
        weights=W if weighted else None, inference="cluster",
    )  # fmt: skip
    assert res.estimator == "twfe-linear"
    df = to_pandas_safe(panel)
    fit = pf.feols(
        "y ~ d + x1 + x2 | unit + period", data=df, vcov={"CRV1": "unit"}, weights="w" if weighted else None
    )
    t = res.tidy()
    assert t.get_column("term").to_list() == ["in_force", X1, X2]  # treatment first, then covariates
    for term, name in (("in_force", "d"), (X1, "x1"), (X2, "x2")):
        row = t.filter(pl.col("term") == term).row(0, named=True)
        assert row["estimate"] == pytest.approx(fit.coef()[name], rel=RTOL_OLS_COEF)
        assert row["std_error"] == pytest.approx(fit.se()[name], rel=RTOL_OLS_SE)
        assert row["p_value"] == pytest.approx(fit.pvalue()[name], rel=1e-6, abs=1e-12)  # t(G-1)
    assert res.nobs == fit._N and res.n_clusters == df["unit"].nunique()
    assert "pp_change" not in t.columns  # a continuous outcome has no percentage-point scale
    assert t.item(1, "estimand").startswith("covariate coefficient")


def test_linear_planted_effect_recovered():
    panel = make_generic(seed=2, units=60, effect=0.5)
    res = quiet(fit_did_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1, X2))
    assert abs(res.estimate - 0.5) < 3 * res.std_error
    assert abs(res.covariate_estimates[0] - 0.3) < 3 * res.tidy().item(1, "std_error")
    assert res.std_error < 0.1


# --------------------------------------------------------------------- logit: statsmodels dummies
def test_logit_with_covariate_equals_statsmodels_dummies():
    """Cells as binomial (successes, failures) on explicit unit and period dummies: the stop-level
    logit's likelihood and scores. CR0 is compared directly; our CR1 factor is spelled out."""
    panel = make_generic(seed=3, units=24, periods=8, size=40)
    res = quiet(
        fit_did_panel, panel, yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1,)
    )
    df = to_pandas_safe(panel)
    X = pd.DataFrame({"d": df["d"], "x1": df["x1"], "const": 1.0})
    X = pd.concat(
        [
            X,
            pd.get_dummies(df["unit"], prefix="u", dtype=float).iloc[:, 1:],
            pd.get_dummies(df["period"], prefix="p", dtype=float).iloc[:, 1:],
        ],
        axis=1,
    )
    endog = np.column_stack([df["succ"], df["n"] - df["succ"]])
    groups = pd.factorize(df["unit"])[0]
    model = sm.GLM(endog, X, family=sm.families.Binomial())
    cr0 = model.fit(
        tol=1e-14, maxiter=200, cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}
    )
    assert res.estimate == pytest.approx(cr0.params["d"], rel=RTOL_GLM_COEF)
    assert res.covariate_estimates[0] == pytest.approx(cr0.params["x1"], rel=RTOL_GLM_COEF)
    assert math.sqrt(res.variance_cr0) == pytest.approx(cr0.bse["d"], rel=RTOL_GLM_SE)
    x1_se0 = math.sqrt(float(np.sum(res.covariate_influence[:, 0] ** 2)))
    assert x1_se0 == pytest.approx(cr0.bse["x1"], rel=RTOL_GLM_SE)
    # CR1 = G/(G-1)·(N-1)/(N-K)·CR0 with N = trials (Bernoulli observations), K = 2 coefficients + the
    # period levels (unit effects are nested in the unit clusters and count 1, cancelling the -1 for
    # the second factor): pyfixest's feglm CRV1 with ssc(k_fixef="nonnested") on the stop-level data.
    g, n_trials, periods = 24, int(df["n"].sum()), 8
    k = 2 + periods
    factor = g / (g - 1) * (n_trials - 1) / (n_trials - k)
    assert (res.small_sample.n, res.small_sample.k) == (n_trials, k)
    assert res.small_sample.factor == pytest.approx(factor, rel=1e-14)
    assert res.std_error == pytest.approx(cr0.bse["d"] * math.sqrt(factor), rel=RTOL_GLM_SE)
    assert res.tidy().item(1, "std_error") == pytest.approx(
        cr0.bse["x1"] * math.sqrt(factor), rel=RTOL_GLM_SE
    )
    # the percentage-point effect with a covariate: delta method over every parameter (statsmodels)
    theta, V = cr0.params.to_numpy(), cr0.cov_params().to_numpy()
    on = df["d"].to_numpy() > 0
    x_on = X.to_numpy()[on]
    x_off = x_on.copy()
    x_off[:, 0] = 0.0
    p1, p0 = expit(x_on @ theta), expit(x_off @ theta)
    m = df["n"].to_numpy()[on] / df["n"].to_numpy()[on].sum()
    grad = 100 * ((m * p1 * (1 - p1)) @ x_on - (m * p0 * (1 - p0)) @ x_off)
    assert res.pp_change == pytest.approx(100 * np.sum(m * (p1 - p0)), rel=1e-7)
    assert math.sqrt(res.pp_variance_cr0) == pytest.approx(math.sqrt(grad @ V @ grad), rel=1e-6)


# -------------------------------------------------------------------------------- event study
@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_event_study_recovers_planted_effect_and_matches_pyfixest():
    pf = pyfixest()
    panel = make_generic(seed=4, units=48, periods=10, cohorts=(0, 3, 5, 7), effect=0.4, dynamic=0.1)
    # periods 2000..2009, adoptions 2003/05/07: event times -7..6 all inside the window, so binning
    # the end points changes nothing and the dummies equal pyfixest's i(rel_time, ref=-1)
    res = quiet(
        fit_event_study_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1,),
        window=(-7, 6),
    )  # fmt: skip
    t = res.tidy()
    est = t.filter(pl.col("estimate").is_not_null() & ~pl.col("reference"))
    for row in est.iter_rows(named=True):
        e = row["event_time"]
        truth = 0.4 + 0.1 * e if e >= 0 else 0.0
        assert abs(row["estimate"] - truth) < 3 * row["std_error"], (e, row["estimate"], truth)
    df = to_pandas_safe(panel)
    g = df[FIRST].fillna(0).to_numpy()
    df["rel_time"] = np.where(g != 0, df["period"] - g, -1).astype(int)
    fit = pf.feols("y ~ i(rel_time, ref=-1) + x1 | unit + period", data=df, vcov={"CRV1": "unit"})
    for row in est.iter_rows(named=True):
        name = f"rel_time::{row['event_time']}"
        assert row["estimate"] == pytest.approx(fit.coef()[name], rel=RTOL_OLS_COEF)
        assert row["std_error"] == pytest.approx(fit.se()[name], rel=RTOL_OLS_SE)
    x_row = t.filter(pl.col("term") == X1).row(0, named=True)
    assert x_row["estimate"] == pytest.approx(fit.coef()["x1"], rel=RTOL_OLS_COEF)
    assert x_row["std_error"] == pytest.approx(fit.se()["x1"], rel=RTOL_OLS_SE)
    assert t.get_column("term").to_list()[-1] == X1  # covariates after the event times
    assert res.pretrend_test()["df"] == len(res.leads)  # bands and pre-test cover event times only


def test_event_study_with_inference():
    panel = make_generic(seed=5, units=30, periods=8)
    res = quiet(
        fit_event_study_panel,
        panel,
        yname=Y,
        idname=UNIT,
        tname=PERIOD,
        gname=FIRST,
        window=(-3, 3),
        inference="cluster",
    )
    before = res.tidy()
    inf = Inference("wild bootstrap (test)", {"event:0": 0.123, "event:-3": 0.5}, {"event:0": (-1.0, 2.0)})
    new = res.with_inference(inf)
    assert new is not res and res.inference is None and new.inference is inf
    after = new.tidy()
    assert after.columns == before.columns
    assert after.get_column("std_error").equals(before.get_column("std_error"))
    assert after.get_column("estimate").equals(before.get_column("estimate"))
    assert after.get_column("band_low").equals(before.get_column("band_low"))
    r0 = after.filter(pl.col("term") == "event:0").row(0, named=True)
    assert (r0["p_value"], r0["ci_low"], r0["ci_high"], r0["inference"]) == (0.123, -1.0, 2.0, inf.label)
    r3 = after.filter(pl.col("term") == "event:-3").row(0, named=True)
    assert r3["p_value"] == 0.5 and r3["ci_low"] is None and r3["inference"] == inf.label  # no interval given
    untouched = after.filter(~pl.col("term").is_in(["event:0", "event:-3"]))
    expected = before.filter(~pl.col("term").is_in(["event:0", "event:-3"]))
    assert untouched.equals(expected)  # other terms keep their analytical inference and label
    with pytest.raises(SpecificationError, match=r"event:-1"):  # the reference has no estimate
        res.with_inference(Inference("x", {"event:-1": 0.5}))
    with pytest.raises(dataclasses_frozen_error()):
        new.inference = None  # type: ignore[misc]
    # a fit with covariates refuses an inference that does not partial them out
    cov = quiet(
        fit_event_study_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1,),
        window=(-3, 3),
    )  # fmt: skip
    with pytest.raises(SpecificationError, match="covariates"):
        cov.with_inference(inf)
    ok = cov.with_inference(Inference("aware", {"event:0": 0.2, X1: 0.01}, covariates=(X1,)))
    assert ok.tidy().filter(pl.col("term") == X1).item(0, "p_value") == 0.01


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


# ------------------------------------------------------------------------- inference on generic
@pytest.fixture(scope="module")
def inference_panels():
    frame = race_panel(("SC",), seed=8)
    race = quiet(fit_did, frame, treatment="absorbing", group=None)
    gen = quiet(
        fit_did_panel, pivot(frame), yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD, gname=FIRST
    )
    return race, gen


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("score", {"draws": 99, "seed": 1, "ci": False}),
        ("ri", {"draws": 49, "seed": 1, "ci": False, "within": None}),
    ],
)
def test_inference_on_generic_logit_equals_race_layout(inference_panels, method, options):
    from stopdisparity.models.inference import apply_inference

    race, gen = inference_panels
    a = quiet(apply_inference, race, method, **options).tidy().row(0, named=True)
    b = quiet(apply_inference, gen, method, **options).tidy().row(0, named=True)
    assert b["p_value"] == pytest.approx(a["p_value"], rel=1e-12)
    assert b["std_error"] == pytest.approx(gen.std_error)  # std_error stays analytical
    assert b["inference"] != gen.inference_label


def test_wild_and_cr3_on_generic_linear():
    from stopdisparity.models.inference import apply_inference

    panel = make_generic(seed=6, units=24, periods=8)
    res = quiet(fit_did_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, weights=W)
    wild = quiet(apply_inference, res, "wild", draws=199, seed=2).tidy().row(0, named=True)
    assert wild["inference"].startswith("wild cluster restricted bootstrap")
    assert wild["ci_low"] < res.estimate < wild["ci_high"]
    cr3 = quiet(apply_inference, res, "cr3").tidy().row(0, named=True)
    assert cr3["inference"].startswith("CR3") and 0 <= cr3["p_value"] <= 1
    # with covariates the methods partial them out and say so; an inference computed without them
    # cannot be attached to a result that has them (it would test another model)
    cov = quiet(fit_did_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1,))
    for method, options in (("wild", {"draws": 99, "seed": 2}), ("cr3", {})):
        attached = quiet(apply_inference, cov, method, **options)
        assert attached.inference is not None and attached.inference.covariates == (X1,)
    plain = quiet(apply_inference, res, "wild", draws=199, seed=2)
    with pytest.raises(SpecificationError, match="covariates"):
        cov.with_inference(plain.inference)


def test_leave_one_out_and_weights_keep_covariates():
    panel = make_generic(seed=7, units=20, periods=8, cohorts=(0, 4))
    res = quiet(fit_did_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, xnames=(X1, X2))
    loo = res.leave_one_out()
    assert loo.height == 10 and f"dropped_{UNIT}" in loo.columns
    dropped = loo.row(0, named=True)[f"dropped_{UNIT}"]
    refit = quiet(
        fit_did_panel, panel.filter(pl.col(UNIT) != dropped), yname=Y, idname=UNIT, tname=PERIOD,
        gname=FIRST, xnames=(X1, X2),
    )  # fmt: skip
    assert loo.row(0, named=True)["estimate"] == pytest.approx(refit.estimate, rel=1e-9)
    w = res.effective_weights()
    assert w.get_column("weight").sum() == pytest.approx(1.0)
    # with covariates the weights residualise the treatment on them too: they reproduce the estimate
    s = res.sample
    y = (s["focal"] / s["n"]).to_numpy()
    num = float(np.sum(s["weight"].to_numpy() * s["treated_resid"].to_numpy() * y))
    den = float(np.sum(s["weight"].to_numpy() * s["treated_resid"].to_numpy() ** 2))
    assert num / den == pytest.approx(res.estimate, rel=1e-9)


# --------------------------------------------------------------------------------- validation
@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_generic(seed=9, units=16, periods=6, cohorts=(0, 2, 4, 3))


BASE = {"yname": Y, "idname": UNIT, "tname": PERIOD, "gname": FIRST}


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        (None, {"estimator": "twfe-logit"}, "needs trials"),
        (None, {"trials": TRIALS, "yname": SUCC, "weights": W}, "weights applies to the linear model"),
        (None, {"gname": "first treat"}, r"column 'first treat' \(gname\) is not in the data"),
        (None, {"xnames": ("x3",)}, r"column 'x3' \(xnames\[0\]\) is not in the data"),
        (None, {"xnames": X1}, "xnames must be a sequence"),
        (None, {"xnames": (Y,)}, "name the same column"),
        (pl.col(FIRST).cast(pl.Float64).fill_null(0) + 0.5 * (pl.col(FIRST).fill_null(0) > 0),
         {}, r"integer periods .* got 2002.5 for county id=.u01."),
        (pl.when(pl.col(FIRST).fill_null(0) > 0).then(1990).otherwise(pl.col(FIRST)),
         {}, r"0 \(never treated\) or a period in 'año''s range 2000..2005; got 1990"),
        (pl.when(pl.col(PERIOD) == 2004).then(2002).otherwise(pl.col(FIRST)), {}, "constant within each"),
        (pl.lit("x"), {}, "must hold integer periods"),
    ],
    ids=["logit-no-trials", "logit-weights", "missing-gname", "missing-x", "x-str", "dup-role",
         "gname-fraction", "gname-range", "gname-varies", "gname-string"],
)  # fmt: skip
def test_validation_messages(panel, change, kwargs, match):
    data = panel if change is None else panel.with_columns(change.alias(FIRST))
    with pytest.raises(SpecificationError, match=match):
        quiet(fit_did_panel, data, **{**BASE, **kwargs})


def test_outcome_and_trials_checks(panel):
    kw = {**BASE, "yname": SUCC, "trials": TRIALS}
    over = panel.with_columns(
        pl.when(pl.col(PERIOD) == 2001).then(pl.col(TRIALS) + 1).otherwise(pl.col(SUCC)).alias(SUCC)
    )
    with pytest.raises(
        SpecificationError, match=r"0 <= hisp stops <= n.total; got \d+ out of \d+ at county id="
    ):
        fit_did_panel(over, **kw)
    neg = panel.with_columns(pl.when(pl.col(PERIOD) == 2001).then(-1).otherwise(pl.col(TRIALS)).alias(TRIALS))
    with pytest.raises(SpecificationError, match=r"trials column 'n.total' must be finite and >= 0; got -1"):
        fit_did_panel(neg, **kw)
    negw = panel.with_columns(pl.lit(-1.0).alias(W))
    with pytest.raises(SpecificationError, match=r"weights column 'weight w' must be finite and >= 0"):
        fit_did_panel(negw, **BASE, weights=W)
    dup = pl.concat([panel, panel.head(1)])
    with pytest.raises(SpecificationError, match="one row per 'county id' × 'año'"):
        fit_did_panel(dup, **BASE)
    const = panel.with_columns(pl.col(UNIT).str.len_chars().cast(pl.Float64).alias(X2))
    with pytest.raises(SpecificationError, match=r"regressor\(s\) \['x 2'\] do not vary within the fixed"):
        quiet(fit_did_panel, const, **BASE, xnames=(X1, X2))
    with pytest.raises(SpecificationError, match="would repeat the treatment term"):
        fit_did_panel(panel.with_columns(pl.col(X1).alias("in_force")), **BASE, xnames=("in_force",))


def test_null_first_treated_is_never_treated(panel):
    assert panel.get_column(FIRST).null_count() > 0
    a = quiet(fit_did_panel, panel, **BASE)
    b = quiet(fit_did_panel, panel.with_columns(pl.col(FIRST).fill_null(0)), **BASE)
    assert a.estimate == b.estimate and a.std_error == b.std_error
    assert a.sample.get_column("treated").to_list() == b.sample.get_column("treated").to_list()
    # float periods and first-treated periods holding integers are accepted
    c = quiet(fit_did_panel, panel.with_columns(pl.col(FIRST, PERIOD).cast(pl.Float64)), **BASE)
    assert c.estimate == pytest.approx(a.estimate, rel=1e-12)


def test_missing_policy(panel):
    holed = panel.with_columns(
        pl.when(pl.col(PERIOD) == 2002).then(None).otherwise(pl.col(X1)).alias(X1),
    )
    with pytest.raises(SpecificationError, match=r"missing values in used columns \('x.1': 16\)"):
        fit_did_panel(holed, **BASE, xnames=(X1,))
    with pytest.warns(DroppedRowsWarning, match=r"dropped 16 of 96 rows .*'x.1'"):
        res = quiet(fit_did_panel, holed, **BASE, xnames=(X1,), missing="drop")
    assert res.n_dropped == 16 and res.dropped_columns == (X1,) and res.nobs == 80
    ref = quiet(fit_did_panel, panel.filter(pl.col(PERIOD) != 2002), **BASE, xnames=(X1,))
    assert res.estimate == pytest.approx(ref.estimate, rel=1e-12)


def test_separated_units_and_empty_rows(panel):
    kw = {**BASE, "yname": SUCC, "trials": TRIALS}
    zero = panel.with_columns(
        pl.when(pl.col(UNIT) == "u03").then(0).otherwise(pl.col(SUCC)).alias(SUCC),
        pl.when((pl.col(UNIT) == "u05") & (pl.col(PERIOD) == 2001))
        .then(0)
        .otherwise(pl.col(TRIALS))
        .alias(TRIALS),
    ).with_columns(pl.min_horizontal(SUCC, TRIALS).alias(SUCC))
    with pytest.warns(SparseCellWarning, match="no successes or no failures of 'hisp stops'"):
        res = quiet(fit_did_panel, zero, **kw)
    assert res.separated_units == ("u03",) and res.n_empty_cells == 1


def test_lazy_export_keeps_ingest_free_of_statsmodels():
    code = (
        "import sys, stopdisparity as sd; before = 'statsmodels' in sys.modules; "
        "f, g = sd.fit_did_panel, sd.fit_event_study_panel; "
        "print(before, f.__module__, g.__module__, 'fit_did_panel' in sd.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "stopdisparity.models.did", "stopdisparity.models.event_study", "True"]


def test_generic_event_study_table_and_plot_name_the_outcome():
    panel = make_generic(seed=10, units=24, periods=8, cohorts=(0, 3, 5))
    logit = quiet(
        fit_event_study_panel, panel, yname=SUCC, trials=TRIALS, idname=UNIT, tname=PERIOD, gname=FIRST,
        window=(-3, 3),
    )  # fmt: skip
    t = logit.tidy()
    assert "n_treated_trials" in t.columns and "n_treated_stops" not in t.columns
    post = panel.filter(pl.col(FIRST).fill_null(0) > 0, pl.col(PERIOD) == pl.col(FIRST))
    assert t.filter(pl.col("term") == "event:0").item(0, "n_treated_trials") == post.get_column(TRIALS).sum()
    assert logit.plot().axes[0].get_ylabel().startswith(f"log odds of {SUCC}")
    linear = quiet(
        fit_event_study_panel, panel, yname=Y, idname=UNIT, tname=PERIOD, gname=FIRST, window=(-3, 3)
    )
    assert "n_treated_trials" not in linear.tidy().columns
    assert linear.plot().axes[0].get_ylabel().startswith(Y)
