"""Bootstrap, jackknife and randomization inference with covariates (generic panels, ``fit_did_panel``).

Every method partials the covariates out with the fixed effects (linear) or keeps them free in the
restricted fit (GLMs); each is checked against a brute-force implementation written here: explicit
statsmodels WLS/GLM fits on the full dummy design with the covariates as columns, or refits through
``fit_did_panel`` (leave-one-cluster-out; permuted ``gname``).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from stopdisparity.models import inference as inf
from stopdisparity.models._fe import Inference
from stopdisparity.models.did import DidResult, fit_did_panel
from test_inference import boot_p, cluster_codes, dummies, exceed

# Brute force with statsmodels on explicit dummies vs the fast projection (see test_inference.py).
RTOL_BRUTE = 1e-7
# GLM refits iterate (IRLS, ours and statsmodels'): statistics agree to ~1e-8.
RTOL_GLM = 1e-6
#: unit -> adoption period (0: never); AA gets units 0, 2, 4, ...; BB 1, 3, 5, ...
ADOPTION = {0: 3, 2: 5, 1: 4}


def make_generic(*, seed: int = 0, units: int = 12, periods: int = 8, effect: float = 0.0) -> pl.DataFrame:
    """Unit × period binomial panel with two time-varying covariates that shift the log odds."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(periods), units)
    g = np.array([ADOPTION.get(i, 0) for i in range(units)])[u]
    d = (g > 0) & (t >= g)
    x1 = rng.normal(size=u.size) + 0.3 * d
    x2 = rng.normal(size=u.size) + 0.1 * t
    alpha = rng.normal(-0.5, 0.4, units)[u]
    shock = np.repeat(rng.normal(0, 0.2, units), periods) + rng.normal(0, 0.15, u.size)
    eta = alpha + 0.05 * t + 0.4 * x1 - 0.3 * x2 + effect * d + shock
    trials = rng.poisson(50, u.size) + 5
    y = rng.binomial(trials, 1 / (1 + np.exp(-eta)))
    return pl.DataFrame(
        {
            "id": [f"u{i:02d}" for i in u],
            "t": t,
            "st": np.where(u % 2 == 0, "AA", "BB"),
            "g": g,
            "y": y,
            "n": trials,
            "share": y / trials,
            "x1": x1,
            "x2": x2,
        }
    )


def fit_generic(frame: pl.DataFrame, estimator: str, xnames: tuple[str, ...] = ("x1", "x2")) -> DidResult:
    kw: dict = {"yname": "y", "trials": "n"} if estimator == "twfe-logit" else {"yname": "share"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_did_panel(
            frame, idname="id", tname="t", gname="g", xnames=xnames, group="st", estimator=estimator, **kw
        )


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_generic()


@pytest.fixture(scope="module")
def linear(frame: pl.DataFrame) -> DidResult:
    return fit_generic(frame, "twfe-linear")


@pytest.fixture(scope="module")
def logit(frame: pl.DataFrame) -> DidResult:
    return fit_generic(frame, "twfe-logit")


def design(result: DidResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y, prior weight, treatment, covariates, dummies) of a result's sample."""
    s = result.sample
    n = s.get_column("n").to_numpy().astype(float)
    y = s.get_column("focal").to_numpy() / n
    w = n if result.estimator == "twfe-logit" else s.get_column("weight").to_numpy()
    cov = np.column_stack([s.get_column(c).to_numpy() for c in ("_x0", "_x1")])
    return y, w, s.get_column("treated").to_numpy().astype(float), cov, dummies(s)


def sandwich_t(x: np.ndarray, w: np.ndarray, resid: np.ndarray, codes: np.ndarray, factor: float) -> float:
    """CR1 t of the first column's coefficient, from working weights and residual scores w·u."""
    bread = np.linalg.pinv(x.T @ (w[:, None] * x))
    sc = np.zeros((codes.max() + 1, x.shape[1]))
    np.add.at(sc, codes, resid[:, None] * x)
    return math.sqrt(factor * (bread @ sc.T @ sc @ bread)[0, 0])


def wls_t(
    y: np.ndarray, x: np.ndarray, w: np.ndarray, codes: np.ndarray, factor: float, beta0: float
) -> float:
    m = sm.WLS(y, x, weights=w).fit()
    return (m.params[0] - beta0) / sandwich_t(x, w, w * m.resid, codes, factor)


def logit_t(
    y: np.ndarray, x: np.ndarray, n: np.ndarray, codes: np.ndarray, factor: float, offset: np.ndarray
) -> float:
    m = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n, offset=offset).fit(tol=1e-13)
    mu = m.fittedvalues
    return m.params[0] / sandwich_t(x, n * mu * (1 - mu), n * (y - mu), codes, factor)


def test_covariates_matter(linear: DidResult, logit: DidResult, frame: pl.DataFrame) -> None:
    """The tests below would not notice a dropped covariate unless the covariates change the fit."""
    assert linear.covariates == logit.covariates == ("x1", "x2")
    for res in (linear, logit):
        bare = fit_generic(frame, res.estimator, xnames=())
        assert abs(bare.estimate - res.estimate) > 0.05 * res.std_error


@pytest.mark.parametrize("beta0", [0.0, 0.03])
def test_wild_with_covariates_equals_brute_force(linear: DidResult, beta0: float) -> None:
    boot = inf.wild_bootstrap_setup(linear, draws=40, weights="webb", seed=5)
    assert boot.estimate == pytest.approx(linear.estimate, rel=1e-10)
    assert boot.std_error == pytest.approx(linear.std_error, rel=1e-10)
    y, w, d, cov, f = design(linear)
    codes = cluster_codes(linear.sample)
    factor = linear.small_sample.factor
    x = np.column_stack([d, cov, f])
    restricted = sm.WLS(y - beta0 * d, np.column_stack([cov, f]), weights=w).fit()
    base = restricted.fittedvalues + beta0 * d
    t_star = np.array([wls_t(base + restricted.resid * v[codes], x, w, codes, factor, beta0) for v in boot.v])
    t = wls_t(y, x, w, codes, factor, beta0)
    assert boot.t_stat(beta0) == pytest.approx(t, rel=RTOL_BRUTE)
    np.testing.assert_allclose(boot.t_star(beta0), t_star, rtol=RTOL_BRUTE)
    out = inf.wild_cluster_bootstrap(linear, draws=40, weights="webb", seed=5, ci=False)
    if beta0 == 0:
        assert out.tidy().item(0, "p_value") == boot_p(exceed(t_star, t))


@pytest.mark.parametrize("beta0", [0.0, 0.15])
def test_score_with_covariates_equals_brute_force(logit: DidResult, beta0: float) -> None:
    boot = inf.score_bootstrap_setup(logit, draws=99, weights="webb", seed=3)
    s = boot.cluster_scores(beta0)
    y, n, d, cov, f = design(logit)
    codes = cluster_codes(logit.sample)
    free = np.column_stack([cov, f])
    glm = sm.GLM(y, free, family=sm.families.Binomial(), var_weights=n, offset=beta0 * d).fit(tol=1e-13)
    mu = glm.fittedvalues
    dt = sm.WLS(d, free, weights=n * mu * (1 - mu)).fit().resid
    sg = np.bincount(codes, weights=n * (y - mu) * dt)
    np.testing.assert_allclose(s, sg, rtol=RTOL_GLM, atol=1e-9 * np.abs(sg).max())
    t = sg.sum() / math.sqrt(np.sum(sg**2))
    t_star = (boot.v @ sg) / np.sqrt((boot.v**2) @ (sg**2))
    assert boot.p_value(beta0) == boot_p(exceed(t_star, t))


@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_cr3_with_covariates_equals_leave_one_cluster_out(frame: pl.DataFrame, estimator: str) -> None:
    result = fit_generic(frame, estimator)
    betas = np.array(
        [fit_generic(frame.filter(pl.col("id") != c), estimator).estimate for c in result.cluster_labels]
    )
    g = betas.size
    se3 = math.sqrt((g - 1) / g * np.sum((betas - result.estimate) ** 2))
    row = inf.cr3(result).tidy().row(0, named=True)
    assert row["p_value"] == pytest.approx(2 * stats.t(g - 1).sf(abs(result.estimate / se3)), rel=1e-6)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * stats.t(g - 1).isf(0.025) * se3, rel=1e-6)


def gname_assignments(frame: pl.DataFrame) -> list[dict[str, int]]:
    """All distinct within-state permutations of the units' adoption periods."""
    per_unit = frame.select("id", "st", "g").unique().sort("id")
    per_state = []
    for st in sorted(per_unit.get_column("st").unique().to_list()):
        part = per_unit.filter(pl.col("st") == st)
        ids, gs = part.get_column("id").to_list(), part.get_column("g").to_list()
        seen = {perm for perm in itertools.permutations(gs)}
        per_state.append([dict(zip(ids, perm, strict=True)) for perm in seen])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*per_state)]


def with_gname(frame: pl.DataFrame, assignment: dict[str, int]) -> pl.DataFrame:
    return frame.with_columns(pl.col("id").replace_strict(assignment, return_dtype=pl.Int64).alias("g"))


@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_ri_with_covariates_equals_refits(frame: pl.DataFrame, estimator: str) -> None:
    """RI p at 0: every within-state permutation of gname refitted by fit_did_panel (covariates in)."""
    result = fit_generic(frame, estimator)
    assignments = gname_assignments(frame)
    asg = inf.adoption_assignments(result, within="st")
    # AA: 6 units, adoption 3 and 5 -> 30; BB: 6 units, one adopter -> 6.
    assert len(assignments) == asg.n_distinct == 180 and asg.exact
    t_star = []
    for a in assignments:
        res = fit_generic(with_gname(frame, a), estimator)
        t_star.append(res.estimate / res.std_error)
    row = inf.randomization_inference(result, within="st", ci=False).tidy().row(0, named=True)
    t = result.estimate / result.std_error
    assert row["p_value"] == pytest.approx(boot_p(exceed(np.array(t_star), t), enumerated=True), abs=1e-12)


@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_ri_with_covariates_sharp_null_and_interval(estimator: str, request: pytest.FixtureRequest) -> None:
    """t* under H0: beta = beta0 against statsmodels (shifted outcome / offset), and the interval ends."""
    result: DidResult = request.getfixturevalue("linear" if estimator == "twfe-linear" else "logit")
    beta0 = 0.5 * result.std_error + result.estimate
    asg = inf.adoption_assignments(result, within="st")
    t_star = inf._ri_t_star(result, *inf._model(result), asg)
    fast = t_star(0, beta0)
    y, w, d, cov, f = design(result)
    codes = cluster_codes(result.sample)
    factor = result.small_sample.factor
    for k in range(0, asg.assign.shape[0], 30):
        x = np.column_stack([asg.treatment(k), cov, f])
        if estimator == "twfe-linear":
            t = wls_t(y - beta0 * d, x, w, codes, factor, 0.0)
        else:
            t = logit_t(y, x, w, codes, factor, beta0 * d)
        assert fast[k] == pytest.approx(t, rel=RTOL_GLM)
    out = inf.randomization_inference(result, within="st", tol=1e-2)
    row = out.tidy().row(0, named=True)
    assert row["ci_low"] < result.estimate < row["ci_high"]

    def p_at(b: float) -> float:
        return float(boot_p(exceed(t_star(0, b), (result.estimate - b) / result.std_error), enumerated=True))

    eps = 0.02 * result.std_error
    for end, outward in ((row["ci_low"], -1), (row["ci_high"], 1)):
        assert p_at(end - outward * eps) > 0.05 >= p_at(end + outward * eps)


def test_inference_names_the_covariates(linear: DidResult, logit: DidResult) -> None:
    """Each method's Inference lists the covariates it partialled out; one that does not is refused."""
    outs = [
        inf.cr3(linear),
        inf.wild_cluster_bootstrap(linear, draws=19, seed=1, ci=False),
        inf.score_bootstrap(logit, draws=19, seed=1, ci=False),
        inf.randomization_inference(linear, within="st", ci=False),
    ]
    for out in outs:
        assert out.inference is not None and out.inference.covariates == ("x1", "x2")
        assert out.tidy().item(0, "std_error") == pytest.approx(
            (linear if out.estimator == "twfe-linear" else logit).std_error, rel=1e-12
        )
    with pytest.raises(Exception, match="covariates"):
        linear.with_inference(Inference("x", {"in_force": 0.5}))
