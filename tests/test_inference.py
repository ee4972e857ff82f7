"""Tests of stopdisparity.models.inference: CR3, wild and score bootstraps, randomization inference.

References: the wild cluster restricted bootstrap's full enumeration (all 2^G Rademacher sign vectors)
is checked against explicit statsmodels refits over every sign vector; every method is also checked
against a brute-force implementation written here (explicit loops with
statsmodels WLS/GLM refits on dummy-variable designs, or refits through ``fit_did``), and a small Monte
Carlo checks size under the null with few treated clusters.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.linalg
import statsmodels.api as sm
from scipy import stats

from stopdisparity.errors import SpecificationError
from stopdisparity.models import inference as inf
from stopdisparity.models.did import DidResult, fit_did

# Both sides are closed-form linear algebra on the same draws: agreement to rounding (~1e-14 seen).
ATOL_T_EXACT = 1e-10
# Brute force with statsmodels on explicit dummies vs the fast projection: rounding of two different
# factorisations of an ill-conditioned dummy design (~1e-12 seen).
RTOL_BRUTE = 1e-7
# GLM refits iterate (IRLS, ours and statsmodels'): statistics agree to ~1e-8.
RTOL_GLM = 1e-6


# ----------------------------------------------------------------------------------------- helpers
def make_panel(
    *,
    seed: int = 0,
    units: int = 12,
    periods: int = 8,
    states: tuple[str, ...] = ("AA", "BB"),
    treated: dict[int, tuple[int, int | None]] | None = None,
    effect: float = 0.0,
    size: float = 60.0,
    rho: float = 0.7,
    shock: float = 0.25,
    treated_size: float = 1.0,
) -> pl.DataFrame:
    """Long hispanic/white stop counts; ``treated`` maps unit -> (start, end or None); AR(1) unit shocks.

    ``treated_size`` multiplies the expected stops of treated units (unequal cluster sizes).
    """
    rng = np.random.default_rng(seed)
    treated = {0: (3, None), 1: (4, 7), 6: (5, None)} if treated is None else treated
    alpha = rng.normal(-1.0, 0.4, units)
    gamma = rng.normal(0.0, 0.2, (len(states), periods))
    e = np.zeros((units, periods))
    e[:, 0] = rng.normal(0, shock, units)
    for t in range(1, periods):
        e[:, t] = rho * e[:, t - 1] + rng.normal(0, shock * math.sqrt(1 - rho**2), units)
    t_idx = np.arange(periods)
    d = np.zeros((units, periods), dtype=np.int64)
    for u, (start, end) in treated.items():
        d[u] = (t_idx >= start) & ((t_idx < end) if end is not None else True)
    st = np.arange(units) % len(states)
    eta = alpha[:, None] + gamma[st] + effect * d + e
    scale = np.where(np.isin(np.arange(units), list(treated)), treated_size, 1.0)
    n = rng.poisson(size * scale[:, None], (units, periods)) + 5
    f = rng.binomial(n, 1 / (1 + np.exp(-eta)))
    base = {
        "county_fips": np.repeat([f"c{u:02d}" for u in range(units)], periods),
        "period": np.tile(t_idx, units),
        "state": np.repeat(np.array(states)[st], periods),
        "in_force": d.ravel(),
    }
    return pl.concat(
        [
            pl.DataFrame({**base, "race": "hispanic", "stops": f.ravel()}),
            pl.DataFrame({**base, "race": "white", "stops": (n - f).ravel()}),
        ]
    )


def fit(frame: pl.DataFrame, estimator: str = "twfe-linear", **kw: object) -> DidResult:
    """The analytical CR1 fit (``inference="cluster"`` unless given) the methods here start from."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_did(frame, estimator=estimator, **{"inference": "cluster", **kw})  # type: ignore[arg-type]


def dummies(sample: pl.DataFrame) -> np.ndarray:
    """Unit and state × period dummies of a result's sample, redundant columns dropped (full rank)."""
    unit = pd.get_dummies(sample.get_column("unit").to_pandas()).to_numpy(float)
    gp = pd.get_dummies(
        (
            sample.get_column("group").cast(pl.String) + ":" + sample.get_column("period").cast(pl.String)
        ).to_pandas()
    ).to_numpy(float)
    f = np.column_stack([unit, gp])
    _, r, piv = scipy.linalg.qr(f, mode="economic", pivoting=True)
    rank = int(np.sum(np.abs(np.diag(r)) > 1e-9 * abs(r[0, 0])))
    return f[:, np.sort(piv[:rank])]


def cluster_codes(sample: pl.DataFrame) -> np.ndarray:
    return pd.factorize(sample.get_column("cluster").cast(pl.String).to_pandas(), sort=True)[0]


def exceed(t_star: np.ndarray, t: float) -> np.ndarray:
    return np.abs(t_star) >= abs(t) * (1 - 1e-8)


def boot_p(hits: np.ndarray, enumerated: bool = False) -> float:
    """A resampling p-value from its exceedances: their share over all sign vectors when enumerated,
    else (1 + hits) / (1 + B), the sample counted as a draw (Davison & Hinkley 1997, eq. 4.11)."""
    return float(np.mean(hits)) if enumerated else (1 + int(np.sum(hits))) / (1 + hits.size)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_panel()


@pytest.fixture(scope="module")
def linear(panel: pl.DataFrame) -> DidResult:
    return fit(panel, "twfe-linear")


@pytest.fixture(scope="module")
def logit(panel: pl.DataFrame) -> DidResult:
    return fit(panel, "twfe-logit")


# ------------------------------------------------------- WCR11 full enumeration, brute force
def test_wild_full_enumeration_matches_explicit_refits() -> None:
    """All 2^5 restricted wild bootstrap t's (CR0 score, no small-sample factor) on a simulated
    regression, against explicit statsmodels refits over the 32 sign vectors."""
    rng = np.random.default_rng(42)
    n, g = 1000, 5
    codes = rng.integers(0, g, n)
    df = pd.DataFrame({"intercept": 1.0, "X1": rng.normal(size=n), "X2": rng.normal(size=n)})
    df["Y"] = 0.005 * df["X1"] + rng.normal(size=g)[codes] * 0.5 + rng.normal(size=n)
    z = df[["intercept", "X2"]].to_numpy()

    def residualize(v: np.ndarray) -> np.ndarray:
        return v - z @ np.linalg.lstsq(z, v, rcond=None)[0]

    v, enumerated = inf._weights("rademacher", g, 999, None)
    assert enumerated and v.shape == (32, 5)
    boot = inf.wild_bootstrap_arrays(
        df["Y"].to_numpy(), df["X1"].to_numpy(), np.ones(n), residualize, codes, v, enumerated=enumerated
    )
    # brute force: restricted fit (beta_X1 = 0), flip cluster residuals, refit, CR0 t without corrections
    restricted = sm.OLS(df["Y"], z).fit()
    fitted, resid = restricted.fittedvalues.to_numpy(), restricted.resid.to_numpy()
    x = df[["intercept", "X1", "X2"]]
    expected = []
    for signs in v:
        ystar = fitted + signs[codes] * resid
        fit = sm.OLS(ystar, x).fit(
            cov_type="cluster", cov_kwds={"groups": codes, "use_correction": False, "df_correction": False}
        )
        expected.append(fit.tvalues["X1"])
    np.testing.assert_allclose(np.sort(boot.t_star(0.0)), np.sort(expected), rtol=1e-9, atol=1e-12)
    ols = sm.OLS(df["Y"], x).fit(
        cov_type="cluster", cov_kwds={"groups": codes, "use_correction": False, "df_correction": False}
    )
    assert boot.t_stat(0.0) == pytest.approx(ols.tvalues["X1"], rel=1e-10)
    assert boot.p_value(0.0) == boot_p(exceed(np.asarray(expected), boot.t_stat(0.0)), enumerated=True)


def test_random_draws_never_give_p_zero() -> None:
    """With B random weight vectors and no |t*| as large as |t|, p is 1/(B+1), not 0; with every sign
    vector enumerated the sample's own vector is among them, so the share is already at least 1/2^G."""
    rng = np.random.default_rng(7)
    n, g = 2000, 20
    codes = np.arange(n) % g
    x = rng.normal(size=n)
    y = 2.0 * x + rng.normal(size=n)  # |t| far beyond any restricted-bootstrap draw

    def centre(v: np.ndarray) -> np.ndarray:
        return v - v.mean(axis=0)

    v, enumerated = inf._weights("webb", g, 99, 1)
    boot = inf.wild_bootstrap_arrays(y, x, np.ones(n), centre, codes, v, enumerated=enumerated)
    assert not enumerated and not exceed(boot.t_star(0.0), boot.t_stat(0.0)).any()
    assert boot.p_value(0.0) == 1 / 100
    v, enumerated = inf._weights("rademacher", 6, 99, None)
    small = inf.wild_bootstrap_arrays(y, x, np.ones(n), centre, np.arange(n) % 6, v, enumerated=enumerated)
    assert enumerated and small.p_value(0.0) == pytest.approx(
        np.mean(exceed(small.t_star(0.0), small.t_stat(0.0)))
    )
    assert small.p_value(0.0) >= 2 / 2**6  # the all-ones vector and its mirror reproduce |t|


# ------------------------------------------------------------------------ wild: brute force
def brute_wild(result: DidResult, v: np.ndarray, beta0: float) -> tuple[float, np.ndarray]:
    """WCR by explicit WLS refits on dummies: (sample t, bootstrap t's) with CR1 by hand."""
    s = result.sample
    y = (s.get_column("focal") / s.get_column("n")).to_numpy()
    d = s.get_column("treated").to_numpy().astype(float)
    w = s.get_column("weight").to_numpy()
    f = dummies(s)
    x = np.column_stack([d, f])
    codes = cluster_codes(s)
    factor = result.small_sample.factor

    def t_of(yy: np.ndarray) -> float:
        m = sm.WLS(yy, x, weights=w).fit()
        bread = np.linalg.pinv(x.T @ (w[:, None] * x))
        sc = np.zeros((v.shape[1], x.shape[1]))
        np.add.at(sc, codes, (w * m.resid)[:, None] * x)
        var = factor * (bread @ sc.T @ sc @ bread)[0, 0]
        return (m.params[0] - beta0) / math.sqrt(var)

    restricted = sm.WLS(y - beta0 * d, f, weights=w).fit()
    u = restricted.resid
    base = restricted.fittedvalues + beta0 * d
    t_star = np.array([t_of(base + u * vb[codes]) for vb in v])
    return t_of(y), t_star


@pytest.mark.parametrize("beta0", [0.0, 0.02])
def test_wild_equals_brute_force(linear: DidResult, beta0: float) -> None:
    boot = inf.wild_bootstrap_setup(linear, draws=60, weights="webb", seed=5)
    assert not boot.enumerated and boot.v.shape == (60, linear.n_clusters)
    assert boot.estimate == pytest.approx(linear.estimate, rel=1e-10)
    assert boot.std_error == pytest.approx(linear.std_error, rel=1e-10)
    t, t_star = brute_wild(linear, boot.v, beta0)
    assert boot.t_stat(beta0) == pytest.approx(t, rel=RTOL_BRUTE)
    np.testing.assert_allclose(boot.t_star(beta0), t_star, rtol=RTOL_BRUTE)
    assert boot.p_value(beta0) == boot_p(exceed(t_star, t), boot.enumerated)


def test_wild_enumerates_and_inverts(linear: DidResult) -> None:
    out = inf.wild_cluster_bootstrap(linear, seed=1)
    g = linear.n_clusters
    assert g <= inf.ENUMERATE_MAX_G
    row = out.tidy().row(0, named=True)
    assert f"all {2**g} sign vectors enumerated" in row["inference"]
    assert f"G={g}, G₁={linear.n_treated_clusters}" in row["inference"]
    assert (row["p_value"] * 2**g) == pytest.approx(round(row["p_value"] * 2**g))
    boot = inf.wild_bootstrap_setup(linear, seed=1)
    lo, hi = row["ci_low"], row["ci_high"]
    assert lo < linear.estimate < hi
    eps = 1e-4 * linear.std_error
    for end, outward in ((lo, -1), (hi, 1)):
        assert boot.p_value(end - outward * eps) > 0.05 >= boot.p_value(end + outward * eps)


# ----------------------------------------------------------------------- score: brute force
def brute_score(result: DidResult, v: np.ndarray, beta0: float) -> tuple[float, np.ndarray]:
    """Kline-Santos by statsmodels: restricted binomial GLM on dummies, partialled-out score."""
    s = result.sample
    n = s.get_column("n").to_numpy()
    y = s.get_column("focal").to_numpy() / n
    d = s.get_column("treated").to_numpy().astype(float)
    f = dummies(s)
    codes = cluster_codes(s)
    glm = sm.GLM(y, f, family=sm.families.Binomial(), var_weights=n, offset=beta0 * d).fit(tol=1e-13)
    mu = glm.fittedvalues
    w = n * mu * (1 - mu)
    dt = sm.WLS(d, f, weights=w).fit().resid
    sg = np.bincount(codes, weights=n * (y - mu) * dt)
    t = sg.sum() / math.sqrt(np.sum(sg**2))
    t_star = np.array([(vb @ sg) / math.sqrt(np.sum((vb * sg) ** 2)) for vb in v])
    return t, t_star


@pytest.mark.parametrize(("weights", "beta0"), [("webb", 0.0), ("rademacher", 0.1)])
def test_score_equals_brute_force(logit: DidResult, weights: str, beta0: float) -> None:
    boot = inf.score_bootstrap_setup(logit, draws=99, weights=weights, seed=3)  # type: ignore[arg-type]
    v = boot.v
    s = boot.cluster_scores(beta0)
    t, t_star = brute_score(logit, v, beta0)
    assert s.sum() / math.sqrt(np.sum(s**2)) == pytest.approx(t, rel=RTOL_GLM)
    assert boot.p_value(beta0) == boot_p(exceed(t_star, t), boot.enumerated)


def test_score_bootstrap_result_and_inversion(logit: DidResult) -> None:
    out = inf.score_bootstrap(logit, weights="webb", draws=199, seed=7)
    row = out.tidy().row(0, named=True)
    assert "score bootstrap" in row["inference"] and "199 draws" in row["inference"]
    boot = inf.score_bootstrap_setup(logit, weights="webb", draws=199, seed=7)
    assert row["p_value"] == boot.p_value(0.0)
    lo, hi = row["ci_low"], row["ci_high"]
    eps = 0.01 * logit.std_error  # the bisection tolerance is 1e-3 SE
    for end, outward in ((lo, -1), (hi, 1)):
        assert boot.p_value(end - outward * eps) > 0.05 >= boot.p_value(end + outward * eps)
    with pytest.raises(SpecificationError, match="twfe-logit"):
        inf.score_bootstrap(fit(make_panel(), "twfe-linear"))


# ------------------------------------------------------------------------------ RI: brute force
def brute_assignments(frame: pl.DataFrame) -> list[dict[str, np.ndarray]]:
    """All distinct within-state assignments of adoption paths, by plain permutations of units."""
    wide = frame.filter(pl.col("race") == "white").sort("county_fips", "period")
    units = wide.get_column("county_fips").unique(maintain_order=True).to_list()
    paths = {u: wide.filter(pl.col("county_fips") == u).get_column("in_force").to_numpy() for u in units}
    state = dict(zip(wide.get_column("county_fips"), wide.get_column("state"), strict=False))
    per_state = []
    for s in sorted(set(state.values())):
        us = [u for u in units if state[u] == s]
        seen = {tuple(tuple(paths[p]) for p in perm): perm for perm in itertools.permutations(us)}
        per_state.append([dict(zip(us, perm, strict=True)) for perm in seen.values()])
    out = []
    for combo in itertools.product(*per_state):
        m = {k: v for part in combo for k, v in part.items()}
        out.append({u: paths[m[u]] for u in units})
    return out


def t_of_assignment(frame: pl.DataFrame, assignment: dict[str, np.ndarray], estimator: str) -> float:
    units = list(assignment)
    periods = len(assignment[units[0]])
    paths = pl.DataFrame(
        {
            "county_fips": np.repeat(units, periods),
            "period": np.tile(np.arange(periods), len(units)),
            "new": np.concatenate([assignment[u] for u in units]).astype(np.int64),
        }
    )
    new = (
        frame.join(paths, on=["county_fips", "period"], how="left")
        .with_columns(pl.col("new").alias("in_force"))
        .drop("new")
    )
    res = fit(new, estimator)
    return res.estimate / res.std_error


@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_ri_exact_equals_brute_force(panel: pl.DataFrame, estimator: str) -> None:
    result = fit(panel, estimator)
    assignments = brute_assignments(panel)
    asg = inf.adoption_assignments(result)
    # AA: 6 units, 2 distinct treated paths + 4 never -> 6!/4! = 30; BB: 1 path with an exit -> 6.
    assert len(assignments) == asg.n_distinct == asg.assign.shape[0] == 180 and asg.exact
    t_star = np.array([t_of_assignment(panel, a, estimator) for a in assignments])
    t = result.estimate / result.std_error
    out = inf.randomization_inference(result, ci=False)
    row = out.tidy().row(0, named=True)
    assert row["p_value"] == pytest.approx(boot_p(exceed(t_star, t), enumerated=True), abs=1e-12)
    assert "all 180 distinct assignments enumerated" in row["inference"]
    assert row["ci_low"] is None and "no interval" in row["inference"]


def test_ri_linear_inversion_shifts_outcome(panel: pl.DataFrame, linear: DidResult) -> None:
    """The interval end is where the sharp-null p crosses alpha; check by brute force at the ends."""
    out = inf.randomization_inference(linear, tol=1e-3)
    lo, hi = out.tidy().select("ci_low", "ci_high").row(0)
    assert lo < linear.estimate < hi
    assignments = brute_assignments(panel)
    rows = linear.sample
    d_obs = rows.get_column("treated").to_numpy()

    def p_at(beta0: float) -> float:
        # shift the outcome: focal share y - beta0 * D, kept as a share on the same n
        n = rows.get_column("n").to_numpy()
        y0 = rows.get_column("focal").to_numpy() / n - beta0 * d_obs
        x_f = dummies(rows)
        w = rows.get_column("weight").to_numpy()
        codes = cluster_codes(rows)
        factor = linear.small_sample.factor

        def t_of(d: np.ndarray) -> float:
            x = np.column_stack([d, x_f])
            m = sm.WLS(y0, x, weights=w).fit()
            bread = np.linalg.pinv(x.T @ (w[:, None] * x))
            sc = np.zeros((codes.max() + 1, x.shape[1]))
            np.add.at(sc, codes, (w * m.resid)[:, None] * x)
            return m.params[0] / math.sqrt(factor * (bread @ sc.T @ sc @ bread)[0, 0])

        units = rows.get_column("unit").to_list()
        periods = rows.get_column("period").to_list()
        t_star = np.array(
            [t_of(np.array([a[u][p] for u, p in zip(units, periods, strict=True)])) for a in assignments]
        )
        return float(boot_p(exceed(t_star, t_of(d_obs.astype(float))), enumerated=True))

    eps = 1e-3 * linear.std_error
    assert p_at(hi - eps) > 0.05 >= p_at(hi + eps)
    assert p_at(lo + eps) > 0.05 >= p_at(lo - eps)


def test_ri_logit_sharp_null_offset_equals_statsmodels(logit: DidResult) -> None:
    """Logit RI under H0: beta = beta0: the permuted treatment's CR1 t with offset beta0 * D (statsmodels)."""
    beta0 = 0.2
    des = inf._design(logit)
    asg = inf.adoption_assignments(logit)
    t_star = inf._ri_t_star(logit, *inf._model(logit), asg)
    fast = t_star(0, beta0)
    s = logit.sample
    n = s.get_column("n").to_numpy()
    y = s.get_column("focal").to_numpy() / n
    f = dummies(s)
    codes = cluster_codes(s)
    for k in range(0, asg.assign.shape[0], 25):
        x = np.column_stack([asg.treatment(k), f])
        m = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n, offset=beta0 * des.d).fit(tol=1e-13)
        mu = m.fittedvalues
        bread = np.linalg.pinv(x.T @ ((n * mu * (1 - mu))[:, None] * x))
        sc = np.zeros((codes.max() + 1, x.shape[1]))
        np.add.at(sc, codes, (n * (y - mu))[:, None] * x)
        t = m.params[0] / math.sqrt(des.factor * (bread @ sc.T @ sc @ bread)[0, 0])
        assert fast[k] == pytest.approx(t, rel=RTOL_GLM)
    out = inf.randomization_inference(logit, tol=1e-2)
    lo, hi = out.tidy().select("ci_low", "ci_high").row(0)

    def p_at(b: float) -> float:
        t = (logit.estimate - b) / logit.std_error
        return float(boot_p(exceed(t_star(0, b), t), enumerated=True))

    eps = 0.02 * logit.std_error
    assert p_at(hi - eps) > 0.05 >= p_at(hi + eps)
    assert p_at(lo + eps) > 0.05 >= p_at(lo - eps)


def test_ri_random_draws_and_seed() -> None:
    treated = {0: (3, None), 2: (4, 7), 4: (2, None), 1: (5, None), 3: (3, None)}
    frame = make_panel(units=30, treated=treated)
    res = fit(frame)
    asg = inf.adoption_assignments(res, draws=50, seed=2)
    # AA: 15 units, 3 distinct treated paths -> 15!/12!; BB: 15 units, 2 distinct paths -> 15!/13!.
    assert asg.n_distinct == 15 * 14 * 13 * 15 * 14 > inf.EXACT_LIMIT and not asg.exact
    a = inf.randomization_inference(res, draws=50, seed=2, ci=False).tidy()
    b = inf.randomization_inference(res, draws=50, seed=2, ci=False).tidy()
    assert a.equals(b)
    p = a.item(0, "p_value")
    assert (p * 51) == pytest.approx(round(p * 51))  # (1 + hits) / (1 + draws)
    assert "50 random of" in a.item(0, "inference")
    with pytest.raises(SpecificationError, match="within"):
        inf.adoption_assignments(res, within="county")


# ------------------------------------------------------------------------------- CR3: brute force
@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_cr3_equals_leave_one_cluster_out(panel: pl.DataFrame, estimator: str) -> None:
    result = fit(panel, estimator)
    betas = np.array(
        [fit(panel.filter(pl.col("county_fips") != c), estimator).estimate for c in result.cluster_labels]
    )
    g = betas.size
    se3 = math.sqrt((g - 1) / g * np.sum((betas - result.estimate) ** 2))
    out = inf.cr3(result).tidy().row(0, named=True)
    t = result.estimate / se3
    assert out["p_value"] == pytest.approx(2 * stats.t(g - 1).sf(abs(t)), rel=1e-6)
    crit = stats.t(g - 1).isf(0.025)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(
        (result.estimate - crit * se3, result.estimate + crit * se3), rel=1e-6
    )
    assert out["inference"].startswith("CR3 jackknife by county_fips (G=12, G₁=3")


# ------------------------------------------------------------------------ contract and options
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("cluster", {}),
        ("cr3", {}),
        ("wild", {"seed": 1, "weights": "webb", "draws": 99}),
        ("ri", {"seed": 1}),
    ],
)
def test_std_error_unchanged_linear(linear: DidResult, method: str, options: dict) -> None:
    out = inf.apply_inference(linear, method, **options)  # type: ignore[arg-type]
    before, after = linear.tidy(), out.tidy()
    assert after.item(0, "std_error") == before.item(0, "std_error")
    assert after.item(0, "estimate") == before.item(0, "estimate")
    assert after.item(0, "statistic") == before.item(0, "statistic")
    assert linear.inference is None  # the input is not modified
    if method == "cluster":
        assert after.equals(before)
    else:
        assert f"G₁={linear.n_treated_clusters}" in after.item(0, "inference")


@pytest.mark.parametrize(("method", "options"), [("cr3", {}), ("score", {"seed": 1, "ci": False})])
def test_std_error_unchanged_logit(logit: DidResult, method: str, options: dict) -> None:
    out = inf.apply_inference(logit, method, **options)  # type: ignore[arg-type]
    assert out.tidy().item(0, "std_error") == logit.tidy().item(0, "std_error")
    assert out.pp_std_error == logit.pp_std_error
    assert "largest treated share" in out.tidy().item(0, "inference")
    assert inf.apply_inference(out, "cluster").tidy().equals(logit.tidy())


def test_determinism_and_options(linear: DidResult, logit: DidResult) -> None:
    a = inf.wild_cluster_bootstrap(linear, weights="webb", draws=99, seed=4).tidy()
    b = inf.wild_cluster_bootstrap(linear, weights="webb", draws=99, seed=4).tidy()
    c = inf.wild_cluster_bootstrap(linear, weights="webb", draws=99, seed=5).tidy()
    assert a.equals(b) and not a.equals(c)
    s1 = inf.score_bootstrap(logit, weights="webb", draws=99, seed=4, ci=False).tidy()
    s2 = inf.score_bootstrap(logit, weights="webb", draws=99, seed=4, ci=False).tidy()
    assert s1.equals(s2)
    with pytest.raises(SpecificationError, match="twfe-linear"):
        inf.wild_cluster_bootstrap(logit)
    with pytest.raises(SpecificationError, match="impose_null"):
        inf.wild_cluster_bootstrap(linear, impose_null=False)
    with pytest.raises(SpecificationError, match="weights"):
        inf.wild_cluster_bootstrap(linear, weights="mammen")  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="method"):
        inf.apply_inference(linear, "jackknife")  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="draws"):
        inf.wild_cluster_bootstrap(linear, draws=0)


# ------------------------------------------------------------------------------ size under the null
def rejection_rates(reps: int, draws: int) -> dict[str, float]:
    treated = {0: (2, None), 2: (3, None), 4: (4, None), 1: (2, None), 3: (3, None), 5: (4, 6)}
    rej = {"CR1": 0, "CR2": 0, "wild": 0, "RI": 0}
    for r in range(reps):
        frame = make_panel(
            seed=1000 + r, units=30, periods=6, treated=treated, rho=0.8, shock=0.4, treated_size=10.0
        )
        res = fit(frame)
        rej["CR1"] += res.tidy().item(0, "p_value") < 0.05
        rej["CR2"] += inf.cr2(res).tidy().item(0, "p_value") < 0.05  # the fits' default
        w = inf.wild_cluster_bootstrap(res, draws=draws, seed=r, ci=False)
        rej["wild"] += w.tidy().item(0, "p_value") < 0.05
        ri = inf.randomization_inference(res, draws=draws, seed=r, ci=False)
        rej["RI"] += ri.tidy().item(0, "p_value") < 0.05
    return {k: v / reps for k, v in rej.items()}


def test_size_under_null_few_treated() -> None:
    """6 treated of 30 clusters (10× larger), AR(1) errors: wild, RI and the default CR2 hold size; CR1
    over-rejects.

    Seen at these seeds: CR1 0.100, CR2 0.067, wild 0.050, RI 0.017 (nominal 0.05; Monte Carlo sd 0.02).
    """
    rates = rejection_rates(reps=120, draws=99)
    assert rates["wild"] <= 0.10 and rates["RI"] <= 0.10 and rates["CR2"] <= 0.10, rates
    assert rates["CR2"] < rates["CR1"], rates
    assert rates["CR1"] > 0.075 and rates["CR1"] > max(rates["wild"], rates["RI"]), rates


@pytest.mark.slow
def test_size_under_null_few_treated_200() -> None:
    rates = rejection_rates(reps=200, draws=199)
    assert rates["wild"] <= 0.10 and rates["RI"] <= 0.10, rates
    assert rates["CR1"] > max(rates["wild"], rates["RI"]), rates


# ------------------------------------------------------------------------------------- CLI
@pytest.mark.filterwarnings("ignore::stopdisparity.errors.FewClustersWarning")
@pytest.mark.parametrize("method", ["cr3", "score", "ri"])
def test_cli_did_poisson_inference(tmp_path: Path, method: str) -> None:
    """`did --estimator twfe-poisson --inference cr3|score|ri` gives every count row that inference."""
    from typer.testing import CliRunner

    from stopdisparity.cli import app
    from stopdisparity.models.counts import fit_counts

    frame = make_panel()
    path = tmp_path / "panel.parquet"
    frame.write_parquet(path)
    args = ["did", "--panel", str(path), "--estimator", "twfe-poisson", "--inference", method]
    out = CliRunner().invoke(app, [*args, "--draws", "49", "--seed", "3", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = fit_counts(frame)
    options = {} if method == "cr3" else {"draws": 49, "seed": 3}
    expected = inf.apply_inference(counts, method, **options).tidy()  # type: ignore[arg-type]
    assert [r["term"] for r in rows] == ["in_force:hispanic", "in_force:white", "difference"]
    for got, want in zip(rows, expected.iter_rows(named=True), strict=True):
        for key in ("estimate", "std_error", "p_value", "ci_low", "ci_high"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
        assert got["inference"] == want["inference"] != counts.inference_label
