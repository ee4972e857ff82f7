"""Tests of stopdisparity.models.did: TWFE logit and linear DiDs on the race composition of stops.

Equalities (the stop-level logit in statsmodels, pyfixest on a stored panel and live), the planted
effect of synth, separation, few-cluster warnings, leave-one-out, weights and missing-data options.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import polars as pl
import pytest
import statsmodels.api as sm
from scipy.special import expit

from effective_reference import dense_effective_clusters, dense_information, effective_of
from stopdisparity.errors import (
    DroppedRowsWarning,
    FewClustersWarning,
    FewEffectiveClustersWarning,
    SparseCellWarning,
    SpecificationError,
)
from stopdisparity.models._fe import Inference
from stopdisparity.models.did import DidResult, fit_did
from stopdisparity.results import TIDY_COLUMNS, check_tidy
from stopdisparity.synth import SynthSpec, cells, truth

REFERENCE = Path(__file__).parent / "reference"
# pyfixest's OLS and ours are both exact linear algebra (its demeaning run to 1e-12): agreement is ~1e-14.
RTOL_OLS_COEF = 1e-8
RTOL_OLS_SE = 1e-6
# GLMs: both sides iterate (IRLS); with tight stopping rules they agree to ~1e-9; the tolerances.
RTOL_GLM_COEF = 1e-6
RTOL_GLM_SE = 1e-5
# Two of our own fits, or ours against statsmodels on the same design, converged to rounding.
RTOL_EXACT = 1e-8


# ----------------------------------------------------------------------------------------- helpers
def make_panel(
    *,
    seed: int = 0,
    units: int = 12,
    periods: int = 10,
    states: tuple[str, ...] = ("AA",),
    treated: dict[int, int] | None = None,
    effect: float | dict[int, float] = 0.4,
    size: float = 40.0,
    shock: float = 0.3,
) -> pl.DataFrame:
    """A long panel of focal ('hispanic') and reference ('white') stops; ``treated`` maps unit -> start."""
    rng = np.random.default_rng(seed)
    treated = {0: 3, 1: 5, 2: 6} if treated is None else treated
    rows = []
    alpha = rng.normal(-1.5, 0.5, units)
    gamma = rng.normal(0, 0.2, (len(states), periods))
    for u in range(units):
        state = states[u % len(states)]
        s = u % len(states)
        for t in range(periods):
            d = u in treated and t >= treated[u]
            eff = effect.get(u, 0.0) if isinstance(effect, dict) else effect
            eta = alpha[u] + gamma[s, t] + (eff if d else 0.0) + rng.normal(0, shock)
            n = rng.poisson(size)
            f = rng.binomial(n, expit(eta))
            fips = f"{u:05d}"
            rows.append((fips, state, t, "hispanic", int(f), d))
            rows.append((fips, state, t, "white", int(n - f), d))
    return pl.DataFrame(
        rows,
        schema={
            "county_fips": pl.String,
            "state": pl.String,
            "period": pl.Int64,
            "race": pl.String,
            "stops": pl.Int64,
            "in_force": pl.Boolean,
        },
        orient="row",
    )


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with the package's few-cluster warnings silenced (tests that are not about them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewClustersWarning)
        return fn(*args, **kwargs)


def wide_of(panel: pl.DataFrame) -> pd.DataFrame:
    return (
        panel.group_by("county_fips", "state", "period")
        .agg(
            pl.col("stops").filter(pl.col("race") == "hispanic").sum().alias("focal"),
            pl.col("stops").filter(pl.col("race") == "white").sum().alias("reference"),
            pl.col("in_force").first().cast(pl.Float64),
        )
        .with_columns((pl.col("focal") + pl.col("reference")).alias("n"))
        .filter(pl.col("n") > 0)
        .sort("county_fips", "period")
        .to_pandas()
    )


def dummy_design(wide: pd.DataFrame, *, by_state: bool) -> pd.DataFrame:
    """[in_force, const, county dummies, (state ×) period dummies], full rank (first level of each dropped,
    and one period level per extra state)."""
    X = pd.DataFrame({"in_force": wide["in_force"].to_numpy(), "const": 1.0})
    c = pd.get_dummies(wide["county_fips"], prefix="c", dtype=float).iloc[:, 1:]
    key = wide["state"] + "_" + wide["period"].astype(str) if by_state else wide["period"].astype(str)
    p = pd.get_dummies(key, prefix="p", dtype=float)
    drop = [p.columns[0]]
    if by_state:
        for s in sorted(wide["state"].unique())[1:]:
            drop.append(next(col for col in p.columns if col.startswith(f"p_{s}_")))
    X = pd.concat([X, c, p.drop(columns=drop)], axis=1)
    assert np.linalg.matrix_rank(X.to_numpy()) == X.shape[1]
    return X


def load_make_reference():
    spec = importlib.util.spec_from_file_location("make_reference", REFERENCE / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref_panel() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "panel.csv", schema_overrides={"county_fips": pl.String})


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "pyfixest_reference.csv")


def ref_row(reference: pl.DataFrame, model: str, term: str) -> dict:
    return reference.filter(pl.col("model") == model, pl.col("term") == term).row(0, named=True)


# ------------------------------------------------------------------------- the stop-level logit
@pytest.fixture(scope="module", params=[("AA",), ("AA", "BB")], ids=["period-fe", "state-period-fe"])
def stop_level_case(request):
    """Our cell fit and statsmodels' GLM on the expanded stops with explicit dummies (CR0 and CR1)."""
    states = request.param
    panel = make_panel(seed=7, units=10, periods=8, states=states, treated={0: 3, 1: 4, 2: 2, 3: 6}, size=25)
    res = quiet(fit_did, panel)
    wide = wide_of(panel)
    X = dummy_design(wide, by_state=len(states) > 1)
    reps = np.r_[wide["focal"].to_numpy(), wide["reference"].to_numpy()].astype(int)
    Xs = pd.concat([X, X], ignore_index=True)
    Xs = Xs.loc[Xs.index.repeat(reps)].reset_index(drop=True)
    y = np.repeat(np.r_[np.ones(len(wide)), np.zeros(len(wide))], reps)
    groups = pd.factorize(
        np.repeat(np.r_[wide["county_fips"].to_numpy(), wide["county_fips"].to_numpy()], reps)
    )[0]
    model = sm.GLM(y, Xs, family=sm.families.Binomial())
    cr0 = model.fit(
        tol=1e-14, maxiter=200, cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}
    )
    cr1 = model.fit(
        tol=1e-14, maxiter=200, cov_type="cluster", cov_kwds={"groups": groups, "use_correction": True}
    )
    return res, cr0, cr1, Xs.shape, wide, X


class TestStopLevelLogit:
    """The cell-level binomial equals the stop-level logit on the same dummies (statsmodels GLM)."""

    @pytest.fixture
    def case(self, stop_level_case):
        return stop_level_case

    def test_coefficient(self, case):
        res, cr0, _, _, _, _ = case
        assert res.estimate == pytest.approx(cr0.params["in_force"], rel=RTOL_EXACT)

    def test_cr0_equal(self, case):
        res, cr0, _, _, _, _ = case
        assert math.sqrt(res.variance_cr0) == pytest.approx(cr0.bse["in_force"], rel=RTOL_EXACT)

    def test_cr1_differs_only_by_documented_factor(self, case):
        # statsmodels: G/(G-1)·(N-1)/(N-K_sm), K_sm = every dummy column; ours: K = 1 + state-period
        # levels (pyfixest nonnested), N = stops in both. The ratio of the variances is (N-K)/(N-K_sm).
        res, _, cr1, (n_stops, k_sm), _, _ = case
        assert res.small_sample.n == n_stops == res.n_stops
        ratio = (n_stops - res.small_sample.k) / (n_stops - k_sm)
        assert cr1.bse["in_force"] ** 2 == pytest.approx(res.std_error**2 * ratio, rel=RTOL_EXACT)
        assert res.small_sample.k != k_sm

    def test_pp_change_delta_method(self, case):
        # The percentage-point effect and its CR0 delta-method SE from statsmodels' full covariance of
        # every parameter (fixed effects included), on the cell design.
        res, cr0, _, _, wide, X = case
        theta = cr0.params.to_numpy()
        V = cr0.cov_params().to_numpy()
        on = wide["in_force"].to_numpy() > 0
        n = wide["n"].to_numpy()
        X1 = X.to_numpy()[on]
        X0 = X1.copy()
        X0[:, 0] = 0.0
        p1, p0 = expit(X1 @ theta), expit(X0 @ theta)
        m = n[on] / n[on].sum()
        pp = 100 * np.sum(m * (p1 - p0))
        grad = 100 * ((m * p1 * (1 - p1)) @ X1 - (m * p0 * (1 - p0)) @ X0)
        assert res.pp_change == pytest.approx(pp, rel=RTOL_EXACT)
        assert math.sqrt(res.pp_variance_cr0) == pytest.approx(math.sqrt(grad @ V @ grad), rel=1e-7)
        # and the fitted form equals the observed one (the treatment's score equation)
        share = wide["focal"].to_numpy()[on] / n[on]
        assert res.pp_change == pytest.approx(100 * np.sum(m * (share - p0)), rel=1e-7)


# ------------------------------------------------------------------------------------ pyfixest
_FITS: dict[tuple, DidResult] = {}


@pytest.mark.reference
class CheckPyfixest:
    """res1 (ours) against res2 (pyfixest reference row): coefficient, SE, N, G, small-sample factor."""

    model: str
    coef_rtol: float
    se_rtol: float
    kwargs: ClassVar[dict] = {}

    @pytest.fixture
    def res(self, ref_panel) -> DidResult:
        key = tuple(sorted(self.kwargs.items()))
        if key not in _FITS:
            _FITS[key] = quiet(fit_did, ref_panel, **self.kwargs)
        return _FITS[key]

    @pytest.fixture
    def row(self, reference) -> dict:
        return ref_row(reference, self.model, "in_force")

    def test_coef(self, res, row):
        assert res.estimate == pytest.approx(row["estimate"], rel=self.coef_rtol)

    def test_se(self, res, row):
        assert res.std_error == pytest.approx(row["std_error"], rel=self.se_rtol)

    def test_nobs_and_clusters(self, res, row):
        assert res.small_sample.n == row["n_obs"]
        assert res.n_clusters == row["n_clusters"]

    def test_small_sample_factor(self, res, row):
        assert res.small_sample.factor == pytest.approx(row["ssc_factor"], rel=1e-12)


class TestPyfixestLogit(CheckPyfixest):
    model, coef_rtol, se_rtol, kwargs = "twfe-logit", RTOL_GLM_COEF, RTOL_GLM_SE, {}


class TestPyfixestLinearStops(CheckPyfixest):
    model, coef_rtol, se_rtol = "twfe-linear:stops", RTOL_OLS_COEF, RTOL_OLS_SE
    kwargs: ClassVar[dict] = {"estimator": "twfe-linear", "weights": "stops"}


class TestPyfixestLinearCounty(CheckPyfixest):
    model, coef_rtol, se_rtol = "twfe-linear:county", RTOL_OLS_COEF, RTOL_OLS_SE
    kwargs: ClassVar[dict] = {"estimator": "twfe-linear", "weights": "county"}


class TestPyfixestLinearUnitEqual(CheckPyfixest):
    model, coef_rtol, se_rtol = "twfe-linear:unit-equal", RTOL_OLS_COEF, RTOL_OLS_SE
    kwargs: ClassVar[dict] = {"estimator": "twfe-linear", "weights": "unit-equal"}


@pytest.mark.reference
def test_reference_files_record_versions(reference, ref_panel):
    for col in ("pyfixest_version", "numpy_version", "pandas_version", "python_version", "call"):
        assert reference.get_column(col).null_count() == 0
    assert ref_panel.shape == (1152, 7)
    assert ref_panel.group_by("county_fips").agg(pl.col("in_force").any()).get_column("in_force").sum() == 10


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_pyfixest_live(ref_panel):
    """Rerun the reference pyfixest calls now and compare (checks the installed pyfixest too)."""
    pytest.importorskip("pyfixest")
    rows = load_make_reference().reference_rows(ref_panel)
    fits = {
        "twfe-logit": quiet(fit_did, ref_panel),
        "twfe-linear:stops": quiet(fit_did, ref_panel, estimator="twfe-linear"),
        "twfe-linear:county": quiet(fit_did, ref_panel, estimator="twfe-linear", weights="county"),
        "twfe-linear:unit-equal": quiet(fit_did, ref_panel, estimator="twfe-linear", weights="unit-equal"),
    }
    for r in rows:
        if r["model"] not in fits:
            continue
        res = fits[r["model"]]
        glm = r["model"] == "twfe-logit"
        assert res.estimate == pytest.approx(r["estimate"], rel=RTOL_GLM_COEF if glm else RTOL_OLS_COEF)
        assert res.std_error == pytest.approx(r["std_error"], rel=RTOL_GLM_SE if glm else RTOL_OLS_SE)


def test_linear_p_value_matches_t_with_g_minus_1(ref_panel, reference):
    from scipy import stats

    res = quiet(fit_did, ref_panel, estimator="twfe-linear", inference="cluster")
    row = ref_row(reference, "twfe-linear:stops", "in_force")
    t = row["estimate"] / row["std_error"]
    expected = 2 * stats.t(row["n_clusters"] - 1).sf(abs(t))
    assert res.tidy().item(0, "p_value") == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------ planted effects
def test_planted_effect_recovered():
    spec = SynthSpec(scenario="constant", design="random", n_treated=50, adoption_years=(2006, 2010))
    kw = {"seed": 11, "rows": 3_000_000, "years": (2004, 2012)}
    frame = cells(spec, period="month", **kw).filter(pl.col("agency") == "state_patrol")
    res = fit_did(frame)
    tr = truth(spec, **kw)["estimands"]
    assert tr["att_logodds"] == pytest.approx(0.3)
    assert res.multi_group and res.fixed_effects == ("county_fips", "state×period")
    assert abs(res.estimate - tr["att_logodds"]) < 3 * res.std_error
    assert abs(res.pp_change - tr["att_pp"]) < 3 * res.pp_std_error
    assert res.std_error < 0.05  # a moderate panel pins the effect down
    assert res.odds_ratio == pytest.approx(math.exp(res.estimate))


def test_coverage_quick_check():
    """50 small draws of the constant scenario: the default (CR2) intervals cover θ; naive binomial SEs
    would not.

    County AR(1) shocks make cells of a county correlated, so SEs that ignore clustering are far too
    small at this size (stops per cell large): the coverage threshold separates the two. The full
    Monte Carlo harness (R ≥ 200, designs M and F) is a separate test suite.
    """
    spec = SynthSpec(
        scenario="constant", design="random", n_treated=20, states=("SC",), adoption_years=(2007, 2010)
    )
    theta = spec.theta
    hits = naive_hits = 0
    estimates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewClustersWarning)
        for seed in range(50):
            frame = cells(spec, seed=seed, period="month", rows=2_000_000, years=(2005, 2012))
            res = fit_did(frame.filter(pl.col("agency") == "state_patrol"))
            estimates.append(res.estimate)
            lo, hi = res.tidy().select("ci_low", "ci_high").row(0)
            hits += lo <= theta <= hi
            s = res.sample
            naive = 1 / math.sqrt(float((s["weight"] * s["treated_resid"] ** 2).sum()))
            naive_hits += abs(res.estimate - theta) <= 1.96 * naive
    est = np.asarray(estimates)
    assert abs(est.mean() - theta) < 3 * est.std(ddof=1) / math.sqrt(est.size)
    assert hits >= 40, f"the default 95% intervals covered θ in {hits}/50 draws"
    assert naive_hits < 40, "the check must be able to fail: non-clustered SEs should undercover here"


# ---------------------------------------------------------------------------------- separation
def test_separated_units_dropped_and_listed():
    panel = make_panel(seed=3, units=14, periods=8)
    no_focal = panel.with_columns(
        pl.when((pl.col("county_fips") == "00010") & (pl.col("race") == "hispanic"))
        .then(0)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    both = no_focal.with_columns(
        pl.when((pl.col("county_fips") == "00011") & (pl.col("race") == "white"))
        .then(0)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    with pytest.warns(SparseCellWarning, match="separated"):
        res = quiet(fit_did, both)
    assert res.separated_units == ("00010", "00011")
    assert res.n_separated_cells == 16
    clean = quiet(fit_did, panel.filter(~pl.col("county_fips").is_in(["00010", "00011"])))
    assert res.estimate == pytest.approx(clean.estimate, rel=1e-10)
    assert res.std_error == pytest.approx(clean.std_error, rel=1e-10)
    # the linear model has no separation: nothing dropped
    lin = quiet(fit_did, both, estimator="twfe-linear")
    assert lin.separated_units == () and lin.nobs == 14 * 8


def test_empty_cells_dropped():
    panel = make_panel(seed=4).with_columns(
        pl.when((pl.col("county_fips") == "00005") & (pl.col("period") == 2))
        .then(0)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    res = quiet(fit_did, panel)
    assert res.n_empty_cells == 1
    assert res.nobs == 12 * 10 - 1


# -------------------------------------------------------------------------------- few clusters
def test_few_clusters_warning_when_few_treated():
    with pytest.warns(FewClustersWarning, match=r"only 3 treated clusters"):
        res = fit_did(make_panel(seed=1))
    assert (res.n_clusters, res.n_treated_clusters) == (12, 3)


def test_few_clusters_warning_when_one_dominates():
    treated = {u: 4 for u in range(12)}
    panel = make_panel(seed=2, units=24, periods=8, treated=treated).with_columns(
        pl.when(pl.col("county_fips") == "00000")
        .then(pl.col("stops") * 30)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    with pytest.warns(FewClustersWarning, match="'00000' holds"):
        res = fit_did(panel)
    assert res.clusters.largest == "00000" and res.clusters.largest_share > 0.3


def test_no_warning_with_enough_balanced_treated_clusters():
    panel = make_panel(seed=2, units=80, periods=8, treated={u: 3 + u % 4 for u in range(32)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewClustersWarning)
        res = fit_did(panel)
    assert res.n_treated_clusters == 32 and res.clusters.largest_share <= 0.3
    assert res.clusters.effective >= 20
    assert res.tidy().item(0, "effective_clusters") == res.clusters.effective


def test_warning_when_few_effective_clusters():
    """G₁ = 12 and no dominant county, but 30 clusters carry the treatment's information like 18.8 equal
    ones (Carter, Schnepel & Steigerwald 2017): under CR1 the warning says so and names G*; the default
    CR2 is the remedy it recommends, so the default fit heeds it (the label keeps G*)."""
    panel = make_panel(seed=2, units=30, periods=8, treated={u: 3 + u % 4 for u in range(12)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewClustersWarning)
        default = fit_did(panel)
    assert "G*=18.8" in default.tidy().item(0, "inference")
    with pytest.warns(FewClustersWarning, match=r"G\*=18\.8 effective clusters \(< 20") as record:
        res = fit_did(panel, inference="cluster")
    assert len(record) == 1 and "treated clusters (G₁" not in str(record[0].message)
    assert record[0].category is FewEffectiveClustersWarning  # G* is the only reason
    assert res.n_treated_clusters == 12 and res.clusters.largest_share <= 0.3
    assert res.clusters.effective == pytest.approx(18.8, abs=0.05)


@pytest.mark.parametrize("estimator", ["twfe-logit", "twfe-linear"])
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_effective_clusters_equal_a_dense_design_matrix(estimator, rho):
    from stopdisparity.models import _fe

    panel = make_panel(seed=4, units=24, periods=9, treated={u: 2 + u % 5 for u in range(9)}, size=25)
    res = quiet(fit_did, panel, estimator=estimator)
    s = res.sample
    dense = dense_effective_clusters(s, s.get_column("treated").cast(pl.Float64).to_numpy(), np.ones(1), rho)
    assert 1 < dense < res.n_clusters
    if rho == 0.0:  # the reported G* (rho = 0)
        assert res.clusters.effective == pytest.approx(dense, rel=1e-9)
        assert res.tidy().item(0, "effective_clusters") == res.clusters.effective
    # the package's FWL form at any rho, from the sample's weights and residualised treatment
    codes = _fe.codes_of(s.get_column("cluster").cast(pl.String))
    sa = np.sqrt(s.get_column("weight").to_numpy()) * s.get_column("treated_resid").to_numpy()
    gam = (1 - rho) * np.bincount(codes, weights=sa * sa) + rho * np.bincount(codes, weights=sa) ** 2
    assert _fe.effective_clusters(gam) == pytest.approx(dense, rel=1e-9)


def test_effective_clusters_equal_g_when_clusters_are_exchangeable():
    """Balanced linear 2×2: half the units treated at one date, equal weights; every cluster carries the
    same information, so G* = G exactly (its upper bound)."""
    from stopdisparity.models import _fe

    panel = make_panel(seed=1, units=20, periods=6, treated={u: 3 for u in range(10)})
    res = quiet(fit_did, panel, estimator="twfe-linear", weights="unit-equal")
    assert res.clusters.effective == pytest.approx(20.0, rel=1e-12)
    assert _fe.effective_clusters(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert math.isnan(_fe.effective_clusters(np.zeros(3)))


# ------------------------------------------------------------------------------- leave one out
def test_leave_one_out_flags_the_driving_county():
    # One big treated county carries a large effect; the others none.
    treated = {0: 3, 1: 4, 2: 5, 3: 3, 4: 6}
    panel = make_panel(seed=5, units=16, periods=10, treated=treated, effect={0: 1.5}, shock=0.05, size=40)
    panel = panel.with_columns(
        pl.when(pl.col("county_fips") == "00000")
        .then(pl.col("stops") * 10)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    res = quiet(fit_did, panel)
    loo = res.leave_one_out()
    assert loo.columns[:3] == ["dropped_county_fips", "term", "estimate"]
    assert loo.height == 5
    first = loo.filter(pl.col("dropped_county_fips") == "00000").row(0, named=True)
    assert first["flagged"] and first["significance_flip"]
    assert first["n_treated_clusters"] == 4
    refit = quiet(fit_did, panel.filter(pl.col("county_fips") != "00000"))
    assert first["estimate"] == pytest.approx(refit.estimate, rel=1e-9)
    assert first["std_error"] == pytest.approx(refit.std_error, rel=1e-9)
    assert not loo.filter(pl.col("dropped_county_fips") != "00000").get_column("sign_flip").any()


def test_effective_weights(ref_panel):
    res = quiet(fit_did, ref_panel)
    w = res.effective_weights()
    assert w.columns == [
        "county_fips",
        "treated_cells",
        "treated_stops",
        "stop_share",
        "weight",
        "negative_cells",
    ]
    assert w.height == res.n_treated_clusters == 10
    assert w.get_column("weight").sum() == pytest.approx(1.0)
    assert w.get_column("stop_share").sum() == pytest.approx(1.0)
    # the linear, unweighted TWFE weights follow de Chaisemartin & D'Haultfœuille: Σ ω_i δ_i = β when
    # the outcome is replaced by cell effects δ on treated cells (and FE elsewhere)
    lin = quiet(fit_did, ref_panel, estimator="twfe-linear", weights="unit-equal")
    s = lin.sample
    rng = np.random.default_rng(0)
    delta = np.where(s["treated"].to_numpy() > 0, rng.normal(0.05, 0.02, s.height), 0.0)
    cell_w = np.where(s["treated"].to_numpy() > 0, s["treated_resid"].to_numpy(), 0.0)
    cell_w /= cell_w.sum()
    beta = (s["treated_resid"].to_numpy() @ delta) / (s["treated_resid"].to_numpy() @ s["treated"].to_numpy())
    assert beta == pytest.approx(float(cell_w @ delta), rel=1e-10)
    lw = lin.effective_weights()
    assert lw.get_column("weight").sum() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------- weights
def test_weights_options(ref_panel):
    fits = {
        w: quiet(fit_did, ref_panel, estimator="twfe-linear", weights=w)
        for w in ("stops", "county", "unit-equal")
    }
    assert len({round(f.estimate, 12) for f in fits.values()}) == 3
    # county-equal weights: scaling one county's stops leaves the estimate unchanged, stop weights do not
    scaled = ref_panel.with_columns(
        pl.when(pl.col("county_fips") == ref_panel["county_fips"][0])
        .then(pl.col("stops") * 3)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    assert quiet(fit_did, scaled, estimator="twfe-linear", weights="county").estimate == pytest.approx(
        fits["county"].estimate, rel=1e-10
    )
    assert quiet(fit_did, scaled, estimator="twfe-linear").estimate != pytest.approx(fits["stops"].estimate)
    assert fits["county"].weights == "county" and quiet(fit_did, ref_panel).weights is None
    with pytest.raises(SpecificationError, match="twfe-linear only"):
        fit_did(ref_panel, weights="county")
    with pytest.raises(SpecificationError, match="weights must be one of"):
        fit_did(ref_panel, estimator="twfe-linear", weights="population")


# ---------------------------------------------------------------------------------- missing data
def test_missing_raise_and_drop():
    panel = make_panel(seed=6).with_columns(
        pl.when((pl.col("county_fips") == "00004") & (pl.col("period") == 1) & (pl.col("race") == "white"))
        .then(None)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    with pytest.raises(SpecificationError, match=r"missing values .*'stops': 1"):
        quiet(fit_did, panel)
    with pytest.warns(DroppedRowsWarning, match=r"dropped 2 of 240"):
        res = quiet(fit_did, panel, missing="drop")
    assert res.n_dropped == 2 and res.dropped_columns == ("stops", "race")
    clean = quiet(fit_did, panel.filter(~((pl.col("county_fips") == "00004") & (pl.col("period") == 1))))
    assert res.estimate == pytest.approx(clean.estimate, rel=1e-10)
    # nulls in rows of other races do not matter
    other = pl.DataFrame(
        {
            "county_fips": ["00000"],
            "state": ["AA"],
            "period": [0],
            "race": ["black"],
            "stops": [None],
            "in_force": [None],
        },
        schema=panel.schema,
    )
    assert quiet(fit_did, pl.concat([make_panel(seed=6), other])).n_dropped == 0


def test_missing_race_row_is_missing_data():
    panel = make_panel(seed=6).filter(
        ~((pl.col("county_fips") == "00003") & (pl.col("period") == 4) & (pl.col("race") == "white"))
    )
    with pytest.raises(SpecificationError, match="lack the hispanic or the white row"):
        quiet(fit_did, panel)
    with pytest.warns(DroppedRowsWarning):
        assert quiet(fit_did, panel, missing="drop").n_dropped == 1


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimator": "twfe-probit"}, "estimator must be one of"),
        ({"race_pair": ("hispanic", "hispanic")}, "two different race labels"),
        ({"race_pair": ("asian", "white")}, "does not occur"),
        ({"unit": "county"}, r"lacks column\(s\) \['county'\]"),
        ({"missing": "ignore"}, "missing must be one of"),
        ({"vcov": "HC1"}, "vcov must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(SpecificationError, match=match):
        fit_did(make_panel(), **kwargs)


def test_bad_data():
    panel = make_panel()
    with pytest.raises(SpecificationError, match="one row per county_fips × period × race"):
        fit_did(pl.concat([panel, panel.head(2)]))
    with pytest.raises(SpecificationError, match="boolean or 0/1"):
        fit_did(panel.with_columns(pl.col("in_force").cast(pl.Int64) * 2))
    with pytest.raises(SpecificationError, match="constant within a unit-period"):
        fit_did(
            panel.with_columns(
                pl.when(pl.col("race") == "white").then(~pl.col("in_force")).otherwise(pl.col("in_force"))
            )
        )
    with pytest.raises(SpecificationError, match="polars DataFrame"):
        fit_did(panel.to_pandas())
    with pytest.raises(SpecificationError, match="collinear with the fixed effects"):
        fit_did(panel.with_columns(pl.lit(False).alias("in_force")))
    with pytest.raises(SpecificationError, match="finite and >= 0"):
        fit_did(panel.with_columns(pl.col("stops") - 100))


def test_arbitrary_column_names():
    panel = make_panel(seed=9).rename(
        {
            "county_fips": "county id",
            "period": "t.month",
            "in_force": "287g on",
            "stops": "n stops",
            "race": "driver race",
        }
    )
    res = quiet(
        fit_did,
        panel,
        unit="county id",
        period="t.month",
        treatment="287g on",
        cluster="county id",
        stops="n stops",
        race="driver race",
        group=None,
    )
    base = quiet(fit_did, make_panel(seed=9))
    assert res.estimate == pytest.approx(base.estimate, rel=1e-12)
    assert res.tidy().item(0, "term") == "287g on"
    assert "dropped_county id" in res.leave_one_out().columns


# ------------------------------------------------------------------------------- result object
def test_tidy_contract_and_accessors(ref_panel):
    res = quiet(fit_did, ref_panel, inference="cluster")
    tidy = check_tidy(res.tidy())
    assert tuple(tidy.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    row = tidy.row(0, named=True)
    assert row["term"] == "in_force" and row["estimator"] == "twfe-logit"
    assert "log odds" in row["estimand"] and "stop-weighted" in row["estimand"]
    assert "parallel trends in log odds" in row["estimand"]
    assert row["inference"] == "CR1 by county_fips (24 clusters)"
    assert row["n_obs"] == res.nobs == 576 and row["n_clusters"] == 24
    assert row["odds_ratio"] == pytest.approx(math.exp(row["estimate"]))
    assert row["pp_std_error"] == pytest.approx(res.pp_std_error)
    assert tidy.columns[12:15] == ["odds_ratio", "pp_change", "pp_std_error"]
    assert row["ci_low"] == pytest.approx(row["estimate"] - 1.959963984540054 * row["std_error"])
    assert res.coef().equals(tidy.select("term", "estimate"))
    assert res.se().equals(tidy.select("term", "std_error"))
    assert "CR1 clustered by county_fips, 24 clusters (10 treated)" in res.vcov_description
    assert "G/(G-1)·(N-1)/(N-K)" in res.vcov_description
    assert res.lineage["versions"]["statsmodels"] and res.lineage["columns"]["unit"] == "county_fips"
    assert res.converged and res.influence.shape == (24,)
    assert float(np.sum(res.influence**2)) == pytest.approx(res.variance_cr0)
    with pytest.raises(AttributeError):
        res.estimate = 0.0  # type: ignore[misc]
    lin = check_tidy(quiet(fit_did, ref_panel, estimator="twfe-linear").tidy())
    assert "odds_ratio" not in lin.columns and "levels of the share" in lin.item(0, "estimand")


def test_cr0_option_and_inference_hook(ref_panel):
    cr0 = quiet(fit_did, ref_panel, vcov="CR0", inference="cluster")
    cr1 = quiet(fit_did, ref_panel, inference="cluster")
    assert cr0.std_error == pytest.approx(math.sqrt(cr1.variance_cr0))
    assert cr1.std_error == pytest.approx(cr0.std_error * math.sqrt(cr1.small_sample.factor))
    assert cr0.tidy().item(0, "inference").startswith("CR0")
    boot = cr1.with_inference(
        Inference("score bootstrap (Rademacher, 999 draws)", {"in_force": 0.04}, {"in_force": (0.01, 0.5)})
    )
    row = boot.tidy().row(0, named=True)
    assert (row["p_value"], row["ci_low"], row["ci_high"]) == (0.04, 0.01, 0.5)
    assert row["inference"].startswith("score bootstrap")
    assert row["std_error"] == pytest.approx(cr1.std_error)


def _covariate_panel(seed: int = 3) -> pl.DataFrame:
    """A generic logit panel with a covariate: 30 units, 8 periods, 12 adopting in periods 3-6."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(30):
        first = 3 + u % 4 if u < 12 else 0
        a = rng.normal(-1.0, 0.5)
        for t in range(8):
            x = rng.normal()
            d = first > 0 and t >= first
            n = int(rng.poisson(15 + 3 * (u % 5)))
            rows.append(
                (f"u{u:02d}", t, first, x, n, int(rng.binomial(n, expit(a + 0.1 * t + 0.4 * d + 0.3 * x))))
            )
    return pl.DataFrame(rows, schema=["unit id", "t", "first", "x", "n", "hits"], orient="row")


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.999])
def test_effective_clusters_with_a_covariate_against_statsmodels(rho):
    """With a covariate (so H⁻¹c mixes two regressors) and any rho: the package's G* (and, at rho = 0, the
    reported one) equals the dense computation whose weights come from a statsmodels GLM fitted on the
    full dummy design, not from the package's fit."""
    from stopdisparity.models import _fe
    from stopdisparity.models.did import fit_did_panel

    frame = _covariate_panel()
    res = quiet(fit_did_panel, frame, yname="hits", idname="unit id", tname="t", gname="first",
                trials="n", xnames=("x",))  # fmt: skip
    s = res.sample
    d = s.get_column("treated").cast(pl.Float64).to_numpy()
    x = s.get_column("_x0").to_numpy()
    n = s.get_column("n").to_numpy()
    dummies = pd.get_dummies(s.get_column("unit").to_pandas().astype(str), dtype=float).to_numpy()
    periods = pd.get_dummies(s.get_column("period").to_pandas().astype(str), dtype=float).to_numpy()[:, 1:]
    glm = sm.GLM(
        s.get_column("focal").to_numpy() / n,
        np.column_stack([d, x, dummies, periods]),
        family=sm.families.Binomial(),
        var_weights=n,
    ).fit(tol=1e-13)
    mu = glm.fittedvalues
    w_sm = n * mu * (1 - mu)
    # the package's own fit, for cluster_information at any rho and contrast
    codes = _fe.codes_of(s.get_column("cluster").cast(pl.String))
    projector = _fe.WithinProjector([_fe.codes_of(s.get_column(c)) for c in ("unit", "period")])
    y = s.get_column("focal").to_numpy() / n
    fit = _fe.fit_glm(y, np.column_stack([d, x]), projector, family="binomial", prior=n)
    for contrast in (np.array([1.0, 0.0]), np.array([0.3, -1.0])):
        dense = effective_of(dense_information(s, np.column_stack([d, x]), contrast, rho, weights=w_sm))
        got = _fe.effective_clusters(_fe.cluster_information(fit, codes, res.n_clusters, contrast, rho))
        assert got == pytest.approx(dense, rel=1e-7), (rho, contrast)
        if rho == 0.0 and contrast[0] == 1.0:  # the reported G* is the treatment's at rho = 0
            assert res.clusters.effective == pytest.approx(dense, rel=1e-7)
    with pytest.raises(SpecificationError, match="rho"):
        _fe.cluster_information(fit, codes, res.n_clusters, rho=1.5)
