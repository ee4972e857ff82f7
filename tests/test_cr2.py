"""CR2 (bias-reduced) inference with Bell-McCaffrey degrees of freedom (``inference.cr2``, ``_cr2``).

References: a brute-force implementation written here (explicit n × n hat matrix of a full-rank
dummy design, each cluster's inverse root by ``scipy.linalg.sqrtm`` of the pseudo-inverse, the n × G
matrix G formed column by column, residuals and weights from statsmodels fits); statsmodels' HC2
(CR2 with one observation per cluster); Welch's two-sample SE and, with equal variances, Welch's df
(the Bell-McCaffrey df of a group dummy); the identity that makes CR2 "bias-reduced": under the
working model its expectation, the trace of Γ, equals the model-based variance exactly; and, for the
joint HTZ test, its moments checked by simulating the working model.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.linalg
import statsmodels.api as sm
from scipy import stats

from stopdisparity.errors import SpecificationError
from stopdisparity.models import _cr2
from stopdisparity.models import inference as inf
from stopdisparity.models._etwfe import etwfe
from stopdisparity.models.counts import CountsResult, fit_counts
from stopdisparity.models.did import DidResult
from stopdisparity.models.event_study import EventStudyResult, fit_event_study_panel
from stopdisparity.models.staggered import fit_staggered
from test_etwfe import _binomial_panel, _prep, _spelled_out
from test_inference import cluster_codes, dummies, fit, make_panel
from test_inference_covariates import make_generic
from test_inference_event_study import design as es_design
from test_inference_event_study import fit_es

# Two factorisations of the same dummy design (pseudo-inverse of all dummies vs. a full-rank subset):
# agreement to rounding (~1e-12 seen); GLM residuals from two IRLS runs agree to ~1e-9.
RTOL = 1e-6
MPDTA = Path(__file__).parent / "reference" / "mpdta" / "mpdta.csv"
# sqrtm of the pseudo-inverse of a singular block (the nested unit effect) warns; the root is exact.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")


# ------------------------------------------------------------------------------------- brute force
def brute_g(
    x: np.ndarray, w: np.ndarray, resid: np.ndarray, clusters: np.ndarray, ell: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster CR2 scores and the n × G matrix G of one contrast, explicitly (x full rank)."""
    xt = np.sqrt(w)[:, None] * x
    b = np.linalg.inv(xt.T @ xt)
    m = np.eye(w.size) - xt @ b @ xt.T
    e = np.sqrt(w) * resid
    scores, columns = [], []
    for g in np.unique(clusters):
        idx = clusters == g
        root = scipy.linalg.sqrtm(np.linalg.pinv(m[np.ix_(idx, idx)], rtol=1e-8, hermitian=True)).real
        u = root @ xt[idx] @ b @ ell
        scores.append(u @ e[idx])
        columns.append(m[:, idx] @ u)
    return np.array(scores), np.column_stack(columns)


def brute(
    x: np.ndarray, w: np.ndarray, resid: np.ndarray, clusters: np.ndarray, ell: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster CR2 scores (ordered by code) and Γ = G'G, explicitly (x full rank)."""
    scores, g_mat = brute_g(x, w, resid, clusters, ell)
    return scores, g_mat.T @ g_mat


def brute_htz(x: np.ndarray, w: np.ndarray, resid: np.ndarray, clusters: np.ndarray, ells: np.ndarray,
              b_hat: np.ndarray) -> tuple[float, float]:  # fmt: skip
    """HTZ F and denominator df from explicit G matrices, with loops over the entries."""
    pieces = [brute_g(x, w, resid, clusters, ell) for ell in ells.T]
    s = np.column_stack([p[0] for p in pieces])
    gs = [p[1] for p in pieces]
    q = len(gs)
    omega = np.array([[np.trace(gs[a].T @ gs[b]) for b in range(q)] for a in range(q)])
    root = np.real(scipy.linalg.sqrtm(np.linalg.inv(omega)))
    star = [sum(root[a, c] * gs[c] for c in range(q)) for a in range(q)]  # standardised G matrices
    var = 0.0
    for a in range(q):
        for b in range(q):
            aa, bb, ab = star[a].T @ star[a], star[b].T @ star[b], star[a].T @ star[b]
            var += float(np.sum(aa * bb) + np.sum(ab * ab.T))
    eta = q * (q + 1) / var
    stat = float(b_hat @ np.linalg.solve(s.T @ s, b_hat))
    return (eta - q + 1) / (eta * q) * stat, eta - q + 1


def bm_df(gamma: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(gamma)
    return float(lam.sum() ** 2 / np.sum(lam**2))


def expected(estimate: float, se: float, df: float) -> tuple[float, float, float]:
    crit = stats.t(df).isf(0.025)
    return 2 * stats.t(df).sf(abs(estimate / se)), estimate - crit * se, estimate + crit * se


def assert_row(row: dict, se: float, df: float, *, labelled: bool = True) -> None:
    """p and interval from t(df) with the CR2 SE; the label states them (``labelled``)."""
    p, lo, hi = expected(row["estimate"], se, df)
    assert (row["p_value"], row["ci_low"], row["ci_high"]) == pytest.approx((p, lo, hi), rel=RTOL)
    assert row["inference"].startswith("CR2 (Bell-McCaffrey)")
    assert (f"SE {se:.4g}, t({df:.1f})" in row["inference"]) == labelled


def did_pieces(result: DidResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, w, working residual, cluster codes) of a DiD's sample refitted by statsmodels."""
    s = result.sample
    n = s.get_column("n").to_numpy().astype(float)
    y = s.get_column("focal").to_numpy() / n
    x = np.column_stack([s.get_column("treated").to_numpy().astype(float), dummies(s)])
    if result.estimator == "twfe-linear":
        w = s.get_column("weight").to_numpy()
        return x, w, sm.WLS(y, x, weights=w).fit().resid, cluster_codes(s)
    mu = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n).fit(tol=1e-13).fittedvalues
    return x, n * mu * (1 - mu), (y - mu) / (mu * (1 - mu)), cluster_codes(s)


# ------------------------------------------------------------------------------------------ DiD
@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """Unequal clusters (treated units 4x the stops): where CR1 and CR2 differ visibly."""
    return make_panel(seed=3, units=14, treated_size=4.0)


@pytest.mark.parametrize("estimator", ["twfe-linear", "twfe-logit"])
def test_did_equals_brute_force(panel: pl.DataFrame, estimator: str) -> None:
    result = fit(panel, estimator)
    x, w, resid, codes = did_pieces(result)
    ell = np.eye(x.shape[1])[:, 0]
    scores, gamma = brute(x, w, resid, codes, ell)
    se, df = math.sqrt(np.sum(scores**2)), bm_df(gamma)
    row = inf.cr2(result).tidy().row(0, named=True)
    assert_row(row, se, df)
    assert row["inference"].startswith("CR2 (Bell-McCaffrey) by county_fips (G=14, G₁=3")
    assert row["std_error"] == result.std_error  # the analytical CR1 SE stays
    assert se > result.std_error / math.sqrt(result.small_sample.factor)  # CR2 > CR0 here
    assert df < result.clusters.g - 1  # BM df well below G - 1 with 3 treated clusters


def test_apply_inference_and_cli(panel: pl.DataFrame, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    result = fit(panel, "twfe-logit")
    via = inf.apply_inference(result, "cr2").tidy()
    assert via.equals(inf.cr2(result).tidy())
    assert inf.apply_inference(inf.cr2(result), "cluster").tidy().equals(result.tidy())
    path = tmp_path / "panel.parquet"
    panel.write_parquet(path)
    out = CliRunner().invoke(
        app, ["did", "--panel", str(path), "--estimator", "twfe-logit", "--inference", "cr2", "--json"]
    )
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)[0]
    want = via.row(0, named=True)
    default = CliRunner().invoke(app, ["did", "--panel", str(path), "--estimator", "twfe-logit", "--json"])
    assert json.loads(default.stdout) == json.loads(out.stdout)  # cr2 is did's default
    cluster = CliRunner().invoke(
        app, ["did", "--panel", str(path), "--estimator", "twfe-logit", "--inference", "cluster", "--json"]
    )
    assert json.loads(cluster.stdout)[0]["inference"] == result.tidy().item(0, "inference")  # CR1
    for key in ("estimate", "std_error", "p_value", "ci_low", "ci_high", "inference"):
        assert (
            got[key] == pytest.approx(want[key], rel=1e-12) if key != "inference" else got[key] == want[key]
        )


def test_pp_interval_is_the_cr2_of_its_gradient(panel: pl.DataFrame) -> None:
    """The logit's percentage-point interval under CR2: its gradient over all coefficients (X'a + c e_β,
    built here from a statsmodels refit on a full-rank dummy design) as a CR2 contrast, t on its own BM
    df. The same gradient's CR0 sum reproduces the delta-method variance the fit reports."""
    from scipy.special import expit, logit

    result = fit(panel, "twfe-logit")
    s = result.sample
    n = s.get_column("n").to_numpy().astype(float)
    y = s.get_column("focal").to_numpy() / n
    x, w, resid, codes = did_pieces(result)
    sm_fit = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n).fit(tol=1e-13)
    mu, beta, d = sm_fit.fittedvalues, float(sm_fit.params[0]), x[:, 0]
    mu0 = expit(logit(mu) - beta * d)
    m = d * n / n[d > 0].sum()
    a = m * (mu * (1 - mu) - mu0 * (1 - mu0))
    ell = 100.0 * (x.T @ a + float(np.sum(m * mu0 * (1 - mu0))) * np.eye(x.shape[1])[:, 0])
    scores, gamma = brute(x, w, resid, codes, ell)
    se, df = math.sqrt(np.sum(scores**2)), bm_df(gamma)
    xt, e = np.sqrt(w)[:, None] * x, np.sqrt(w) * resid
    bl = np.linalg.solve(xt.T @ xt, ell)
    cr0 = [float(bl @ xt[codes == g].T @ e[codes == g]) for g in np.unique(codes)]
    assert np.sum(np.square(cr0)) == pytest.approx(result.pp_variance_cr0, rel=RTOL)
    row = inf.cr2(result).tidy().row(0, named=True)
    crit = stats.t(df).isf(0.025)
    assert row["pp_change"] == pytest.approx(100.0 * float(np.sum(m * (mu - mu0))), rel=RTOL)
    assert row["pp_ci_low"] == pytest.approx(row["pp_change"] - crit * se, rel=RTOL)
    assert row["pp_ci_high"] == pytest.approx(row["pp_change"] + crit * se, rel=RTOL)
    assert row["pp_std_error"] == result.pp_std_error  # the delta-method CR1 SE stays
    plain = result.tidy().row(0, named=True)  # analytical: the delta-method CR1 interval, normal
    assert plain["pp_ci_low"] == pytest.approx(plain["pp_change"] - 1.959963984540054 * result.pp_std_error)
    assert inf.score_bootstrap(result, draws=19, seed=1, ci=False).tidy().item(0, "pp_ci_low") is None
    linear = fit(panel, "twfe-linear")  # pp = 100 β: the coefficient's CR2 interval, times 100
    lrow, lcr2 = inf.cr2(linear).tidy().row(0, named=True), inf.cr2(linear).tidy().row(0, named=True)
    assert lrow["pp_ci_low"] == pytest.approx(100.0 * lcr2["ci_low"], rel=1e-12)


def test_default_inference_is_cr2_of_the_cluster_fit(panel: pl.DataFrame) -> None:
    """Every TWFE fit and the event study report CR2 unless told inference="cluster" (issue 5: CR1
    under-covers at design M); the default is exactly cr2() of the CR1 fit, which the Monte Carlo
    scores, and apply_inference(..., "cluster") takes it back to CR1."""
    from stopdisparity.models.did import fit_did

    for estimator in ("twfe-logit", "twfe-linear"):
        cluster = fit(panel, estimator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = fit_did(panel, estimator=estimator)  # type: ignore[arg-type]
        assert default.tidy().equals(inf.cr2(cluster).tidy())
        assert default.inference is not None and default.inference.method == "cr2"
        assert inf.apply_inference(default, "cluster").tidy().equals(cluster.tidy())
        assert default.lineage["options"]["inference"] == "cr2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = fit_counts(panel)
    assert counts.tidy().equals(inf.cr2(fit_counts(panel, inference="cluster")).tidy())
    with pytest.raises(SpecificationError, match="inference"):
        fit(panel, "twfe-logit", inference="cr3")


def test_interval_follows_the_table_level(panel: pl.DataFrame) -> None:
    """CR2 is analytical: tidy(alpha) rescales its interval (t on the BM df) instead of keeping 95%;
    a resampled interval cannot be rescaled, so a table at another level than it was drawn is refused."""
    result = fit(panel, "twfe-logit")
    x, w, resid, codes = did_pieces(result)
    scores, gamma = brute(x, w, resid, codes, np.eye(x.shape[1])[:, 0])
    se, df = math.sqrt(np.sum(scores**2)), bm_df(gamma)
    attached = inf.cr2(result)
    for alpha in (0.05, 0.1, 0.01):
        row = attached.tidy(alpha).row(0, named=True)
        crit = stats.t.ppf(1 - alpha / 2, df)
        assert row["ci_low"] == pytest.approx(row["estimate"] - crit * se, rel=1e-9)
        assert row["ci_high"] == pytest.approx(row["estimate"] + crit * se, rel=1e-9)
        assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(row["estimate"]) / se, df), rel=1e-9)
    boot = inf.score_bootstrap(result, draws=99, seed=1)
    assert boot.tidy(0.05).row(0, named=True)["ci_low"] is not None
    with pytest.raises(SpecificationError, match=r"alpha=0.05, not 0.1: apply it again with alpha=0.1"):
        boot.tidy(0.1)
    assert inf.score_bootstrap(result, draws=99, seed=1, alpha=0.1).tidy(0.1).height == 1
    p_only = inf.score_bootstrap(result, draws=19, seed=1, ci=False)  # no interval: any level
    assert p_only.tidy(0.1).item(0, "p_value") == p_only.tidy(0.05).item(0, "p_value")


# -------------------------------------------------------------------------------- counts, events
@pytest.fixture(scope="module")
def counts(panel: pl.DataFrame) -> CountsResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_counts(panel)


def test_counts_every_row_and_difference(counts: CountsResult) -> None:
    """Each race's Poisson by brute force; the difference adds the scores and the Γs of both fits."""
    labels = sorted(counts.cluster_labels)
    parts = []
    for race in counts.race_pair:
        s = counts.sample.filter(pl.col("race") == race)
        y = s.get_column("stops").to_numpy().astype(float)
        x = np.column_stack([s.get_column("treated").to_numpy().astype(float), dummies(s)])
        mu = sm.GLM(y, x, family=sm.families.Poisson()).fit(tol=1e-13).fittedvalues
        codes = np.searchsorted(labels, s.get_column("cluster").cast(pl.String).to_numpy())
        parts.append(brute(x, mu, (y - mu) / mu, codes, np.eye(x.shape[1])[:, 0]))
    (sf, gf), (sr, gr) = parts
    rows = inf.cr2(counts).tidy().rows(named=True)
    assert [r["term"] for r in rows] == ["in_force:hispanic", "in_force:white", "difference"]
    assert_row(rows[0], math.sqrt(np.sum(sf**2)), bm_df(gf))
    assert_row(rows[1], math.sqrt(np.sum(sr**2)), bm_df(gr))
    assert_row(rows[2], math.sqrt(np.sum((sf - sr) ** 2)), bm_df(gf + gr))


@pytest.mark.parametrize("estimator", ["linear", "logit"])
def test_event_study_every_term(estimator: str) -> None:
    result: EventStudyResult = fit_es(make_generic(seed=4), estimator)
    y, prior, dums, free = es_design(result)
    x = np.column_stack([dums, free])
    if estimator == "linear":
        w, resid = prior, sm.WLS(y, x, weights=prior).fit().resid
    else:
        mu = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=prior).fit(tol=1e-13).fittedvalues
        w, resid = prior * mu * (1 - mu), (y - mu) / (mu * (1 - mu))
    codes = cluster_codes(result.sample)
    out = inf.cr2(result).tidy()
    for j, e in enumerate(result.estimated):
        scores, gamma = brute(x, w, resid, codes, np.eye(x.shape[1])[:, j])
        row = out.filter(pl.col("term") == f"event:{e}").row(0, named=True)
        assert_row(row, math.sqrt(np.sum(scores**2)), bm_df(gamma))


# --------------------------------------------------------------------------- the module itself
def random_fit(seed: int, contrasts: int = 2) -> tuple[_cr2.Cr2Fit, np.ndarray]:
    """Unbalanced clusters, unit effects nested in them, crossed period effects, two regressors."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, size=9)
    unit = np.repeat(np.arange(sizes.size), sizes)
    period = np.concatenate([np.arange(k) for k in sizes])
    z = rng.normal(size=(unit.size, 2)) + (unit[:, None] < 2)
    w = rng.uniform(0.5, 3.0, unit.size)
    fit_ = _cr2.Cr2Fit(
        (unit, period), z, w, rng.normal(size=unit.size), unit, sizes.size, np.eye(2)[:, :contrasts]
    )
    f = np.column_stack([np.eye(sizes.size)[unit], np.eye(period.max() + 1)[period][:, 1:], z])
    return fit_, f


@pytest.mark.parametrize("batch", ["default", "one cluster"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_module_equals_brute_force(seed: int, batch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clusters of several sizes, stacked per size (default) or one per batch: the same as brute force."""
    if batch == "one cluster":
        monkeypatch.setattr(_cr2, "_BATCH_FLOATS", 1)
    fit_, x = random_fit(seed)
    res = _cr2.cr2(fit_)
    for j in range(2):
        ell = np.zeros(x.shape[1])
        ell[x.shape[1] - 2 + j] = 1.0
        scores, gamma = brute(x, fit_.w, fit_.resid, fit_.cluster_codes, ell)
        assert res.vcov[j, j] == pytest.approx(np.sum(scores**2), rel=1e-9)
        assert res.df[j] == pytest.approx(bm_df(gamma), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_under_the_working_model(seed: int) -> None:
    """E[V_CR2] = tr Γ equals the model-based variance ℓ'(X'WX)⁻¹ℓ exactly (CR0's expectation is below it)."""
    fit_, x = random_fit(seed)
    parts = _cr2.cr2_parts(fit_)
    model = sm.WLS(np.zeros(x.shape[0]) + 1.0, x, weights=fit_.w).fit().normalized_cov_params
    for j in range(2):
        k = x.shape[1] - 2 + j
        assert np.trace(parts.gamma[j]) == pytest.approx(model[k, k], rel=1e-9)


def test_singleton_clusters_are_hc2() -> None:
    """One observation per cluster and no fixed effects: CR2 is statsmodels' HC2."""
    rng = np.random.default_rng(5)
    n = 40
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.exponential(size=n) ** 2])  # leverage
    y = x @ [1.0, 0.5, -0.2] + rng.normal(size=n) * (1 + x[:, 2])
    ols = sm.OLS(y, x).fit(cov_type="HC2")
    res = _cr2.cr2(_cr2.Cr2Fit((), x, np.ones(n), ols.resid, np.arange(n), n, np.eye(3)))
    np.testing.assert_allclose(res.std_errors, ols.bse, rtol=1e-10)


def test_combine_refuses_mixed_contrasts_and_large_designs(monkeypatch: pytest.MonkeyPatch) -> None:
    fit_, _ = random_fit(0)
    parts = _cr2.cr2_parts(fit_)
    with pytest.raises(SpecificationError, match="at most one contrast per fit"):
        _cr2.combine([parts], np.array([[[1.0, 1.0]]]))
    monkeypatch.setattr(_cr2, "MAX_COEFFICIENTS", 10)
    with pytest.raises(SpecificationError, match="cr3, wild, score or ri"):
        _cr2.cr2_parts(fit_)


# ------------------------------------------------------------------------------------------ ETWFE
@pytest.mark.parametrize(("family", "control"), [("logit", "never"), ("linear", "not_yet")])
def test_etwfe_aggregates_equal_brute_force(family: str, control: str) -> None:
    """The pooled ETWFE regression spelled out (cell, cohort and period dummies) and fitted by
    statsmodels; each aggregate's contrast puts the cells' stop weights on their dummies."""
    frame, _ = _binomial_panel(5, n_units=30, n_periods=7, cohorts=(0, 4, 5, 6), trials=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = etwfe(_prep(frame), family=family, control=control)  # type: ignore[arg-type]
    d = frame.to_pandas()
    dd, names, cells, _ = _spelled_out(d, y="succ", unit="unit", t="t", g="g", x=[], control=control)
    dd = dd.reset_index(drop=True)
    fe = np.column_stack(
        [np.eye(dd["g"].nunique())[dd["g"].rank(method="dense").astype(int) - 1]]
        + [(dd["t"] == s).to_numpy(float)[:, None] for s in sorted(dd["t"].unique())[1:]]
    )
    x = np.column_stack([dd[names].to_numpy(float), fe])
    assert np.linalg.matrix_rank(x) == x.shape[1]
    n = dd["n"].to_numpy(float)
    y = dd["succ"].to_numpy() / n
    if family == "logit":
        mu = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n).fit(tol=1e-13).fittedvalues
        w, resid = n * mu * (1 - mu), (y - mu) / (mu * (1 - mu))
    else:
        w, resid = n, sm.WLS(y, x, weights=n).fit().resid
    codes = dd["unit"].rank(method="dense").astype(int).to_numpy() - 1
    weight = {(r["g"], r["t"]): r["weight"] for r in res.cells.iter_rows(named=True)}
    out = inf.cr2(res).tidy()
    assert out.item(0, "std_error") == res.tidy().item(0, "std_error")  # CR1 stays
    for term, sel in (("att", lambda c, s: s >= c), ("event:1", lambda c, s: s - c == 1)):
        ell = np.zeros(x.shape[1])
        for j, (c, s) in enumerate(cells):
            ell[j] = weight[(c, s)] if sel(c, s) else 0.0
        ell /= ell.sum()
        scores, gamma = brute(x, w, resid, codes, ell)
        row = out.filter(pl.col("term") == term).row(0, named=True)
        assert_row(row, math.sqrt(np.sum(scores**2)), bm_df(gamma), labelled=term == "att")


def test_etwfe_with_covariates_refused() -> None:
    frame, _ = _binomial_panel(6, n_units=20, n_periods=6, cohorts=(0, 4, 5), covariate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = etwfe(_prep(frame, xnames=("x",)), family="logit", control="never")
    with pytest.raises(SpecificationError, match="without covariates"):
        inf.cr2(res)


def test_default_falls_back_to_cr1_with_a_warning_where_cr2_cannot_be_formed(
    panel: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where CR2 cannot be formed the default fit keeps CR1 and says so (InferenceFallbackWarning): more
    coefficients than the dense cross-product allows, or etwfe with covariates; asked for by name
    (apply_inference / --inference cr2) it raises instead, and inference="cluster" is silent."""
    from stopdisparity.errors import InferenceFallbackWarning
    from stopdisparity.models.did import fit_did, fit_did_panel

    rng = np.random.default_rng(0)
    units = _cr2.MAX_COEFFICIENTS  # + 2 periods + the treatment: one coefficient too many
    big = pl.DataFrame(
        {
            "u": np.repeat(np.arange(units), 2),
            "t": np.tile([1, 2], units),
            "g": np.repeat(np.where(np.arange(units) < units // 3, 2, 0), 2),
            "y": rng.normal(size=2 * units),
        }
    )
    args = {"yname": "y", "idname": "u", "tname": "t", "gname": "g"}
    with pytest.warns(InferenceFallbackWarning, match=r"the limit is 4000.*CR1 \(G=4000, G₁=1333"):
        res = fit_did_panel(big, **args)
    assert res.inference is None and res.tidy().item(0, "inference").startswith("CR1")
    with pytest.raises(SpecificationError, match="the limit is 4000"):
        inf.apply_inference(res, "cr2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InferenceFallbackWarning)
        assert fit_did_panel(big, inference="cluster", **args).tidy().equals(res.tidy())
    frame, _ = _binomial_panel(6, n_units=20, n_periods=6, cohorts=(0, 4, 5), covariate=True)
    etwfe_args = {"estimator": "etwfe", "yname": "succ", "idname": "unit", "tname": "t", "gname": "g",
                  "trials": "n", "control": "never"}  # fmt: skip
    with pytest.warns(InferenceFallbackWarning, match="without covariates"):
        staggered = fit_staggered(frame, xnames=("x",), **etwfe_args)
    assert staggered.inference is None
    cr2_fit = fit_staggered(frame, **etwfe_args)  # the CR2 default removed after the fit, as for TWFE
    assert inf.apply_inference(cr2_fit, "cluster").inference is None
    monkeypatch.setattr(_cr2, "MAX_BYTES", 10_000)  # the memory bound: a default fit falls back too
    with pytest.warns(InferenceFallbackWarning, match=r"GiB of dense arrays"):
        bounded = fit_did(panel)
    assert bounded.inference is None


# ----------------------------------------------------------------------------------- Sun-Abraham
@pytest.mark.parametrize("weighted", [False, True])
def test_sun_abraham_rows_equal_brute_force(weighted: bool) -> None:
    """The interaction-weighted regression spelled out (cell, unit and period dummies; statsmodels WLS);
    each reported row's contrast is its fixed-share weights on the cell dummies."""
    frame = pl.read_csv(MPDTA)
    keep = frame.get_column("countyreal").unique().sort()[::3]  # a third of the counties: a quick brute force
    frame = frame.filter(pl.col("countyreal").is_in(keep.implode())).with_columns(
        (1.0 + (pl.col("countyreal") % 7).cast(pl.Float64)).alias("w")  # unequal weights
    )
    options = {"weights": "w"} if weighted else {}
    res = fit_staggered(
        frame, estimator="sun-abraham", yname="lemp", idname="countyreal", tname="year", gname="first.treat",
        **options,
    )  # fmt: skip
    d = frame.to_pandas()
    g, t = d["first.treat"].to_numpy(), d["year"].to_numpy()
    cells = [np.asarray((g == c) & (t - c == e), float) for c, e in res.cells]
    units = np.unique(d["countyreal"], return_inverse=True)[1]
    x = np.column_stack(
        [*cells, np.eye(units.max() + 1)[units], *[(t == s).astype(float) for s in sorted(set(t))[1:]]]
    )
    assert np.linalg.matrix_rank(x) == x.shape[1]
    w = d["w"].to_numpy() if weighted else np.ones(len(d))
    resid = sm.WLS(d["lemp"].to_numpy(), x, weights=w).fit().resid
    out = inf.apply_inference(res, "cr2").tidy()
    assert out.filter(pl.col("term") == "att").item(0, "std_error") == res.att[1]  # CR1 stays
    k = len(res.cells)
    checks = {"att": res.att_weights, **{f"cohort:{c}": v for c, v in res.cohort_weights.items()}}
    for i, e in enumerate(res.event_times):
        r = np.zeros(k)
        for j, (_, ej) in enumerate(res.cells):
            r[j] = res.shares[e].get(res.cells[j][0], 0.0) if ej == e else 0.0
        checks[f"e:{e}"] = r
        assert r @ res.cell_estimates == pytest.approx(res.coefficients[i])
    for term, weights in checks.items():
        ell = np.concatenate([weights, np.zeros(x.shape[1] - k)])
        scores, gamma = brute(x, w, resid, units, ell)
        row = out.filter(pl.col("term") == term).row(0, named=True)
        assert_row(row, math.sqrt(np.sum(scores**2)), bm_df(gamma), labelled=term == "att")
    assert out.filter(pl.col("reference")).item(0, "p_value") is None  # the reference row keeps no test


# ---------------------------------------------------------------------------- joint tests: HTZ
def test_htz_with_one_contrast_is_the_bm_t_test() -> None:
    fit_, _ = random_fit(1, contrasts=1)
    res = _cr2.cr2(fit_)
    b = np.array([0.37])
    htz = _cr2.wald_htz(fit_, b)
    t = b[0] / res.std_errors[0]
    assert htz.df_den == pytest.approx(res.df[0], rel=1e-10)
    assert htz.f == pytest.approx(t**2, rel=1e-10)
    assert htz.p_value == pytest.approx(2 * stats.t(res.df[0]).sf(abs(t)), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 2])
def test_htz_equals_brute_force(seed: int) -> None:
    fit_, x = random_fit(seed)
    ells = np.zeros((x.shape[1], 2))
    ells[-2:] = np.eye(2)
    b_hat = np.array([0.2, -0.1])
    f, df_den = brute_htz(x, fit_.w, fit_.resid, fit_.cluster_codes, ells, b_hat)
    htz = _cr2.wald_htz(fit_, b_hat)
    assert (htz.f, htz.df_den) == pytest.approx((f, df_den), rel=1e-8)
    assert htz.p_value == pytest.approx(stats.f.sf(f, 2, df_den), rel=1e-8)


def test_htz_moments_match_the_working_model_by_simulation() -> None:
    """Under the working model E[V*] = I and Σ Var(V*_ab) = q(q+1)/η: what η is built to match."""
    fit_, x = random_fit(3)
    xt = np.sqrt(fit_.w)[:, None] * x
    annihilator = np.eye(x.shape[0]) - xt @ np.linalg.pinv(xt)
    parts = _cr2.cr2_parts(fit_)
    q = 2
    cross = np.array([[parts.cross(s, t) for t in range(q)] for s in range(q)])
    omega = np.trace(cross, axis1=2, axis2=3)
    root = np.real(scipy.linalg.sqrtm(np.linalg.inv(omega)))
    eta = _cr2.wald_htz(fit_, np.ones(q)).df_den + q - 1
    rng = np.random.default_rng(8)
    draws = []
    for _ in range(3000):  # whitened errors N(0, I); their whitened residuals (I - H)e, unwhitened
        e = annihilator @ rng.normal(size=fit_.w.size) / np.sqrt(fit_.w)
        sim = _cr2.Cr2Fit(fit_.fe_codes, fit_.z, fit_.w, e, fit_.cluster_codes, fit_.g, fit_.contrasts)
        s = _cr2.cr2_parts(sim).scores
        draws.append(root @ (s.T @ s) @ root)
    v = np.array(draws)
    np.testing.assert_allclose(v.mean(axis=0), np.eye(q), atol=0.08)
    total = float(np.sum(v.var(axis=0)))
    assert total == pytest.approx(q * (q + 1) / eta, rel=0.12)


def test_event_study_pretrend_cr2() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_event_study_panel(
            make_generic(seed=4), idname="id", tname="t", gname="g", xnames=("x1",), group="st",
            estimator="linear", window=(-4, 2), sup_t_draws=100, yname="share",
        )  # fmt: skip
    assert len(result.leads) == 2
    out = result.pretrend_test(method="cr2")
    y, prior, dums, free = es_design(result)
    x = np.column_stack([dums, free])
    resid = sm.WLS(y, x, weights=prior).fit().resid
    idx = [result.estimated.index(e) for e in result.leads]
    ells = np.eye(x.shape[1])[:, idx]
    f, df_den = brute_htz(x, prior, resid, cluster_codes(result.sample), ells, result.estimates[idx])
    assert out["method"] == "cr2" and out["statistic"] == pytest.approx(f, rel=1e-7)
    assert out["p_value"] == pytest.approx(stats.f.sf(f, len(idx), df_den), rel=1e-7)


def test_two_sample_case_is_welch_with_the_working_model_df() -> None:
    """A regression on a group dummy with one observation per cluster: the CR2 SE is Welch's unequal-variance
    SE (statsmodels CompareMeans), and the Bell-McCaffrey df is Welch-Satterthwaite's with the working
    model's equal variances plugged in, (1/n1 + 1/n0)² / (1/(n1²(n1-1)) + 1/(n0²(n0-1))) (Imbens &
    Kolesár 2016, section 3)."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    rng = np.random.default_rng(12)
    n1, n0 = 7, 31
    y = np.concatenate([rng.normal(1.0, 3.0, n1), rng.normal(0.0, 1.0, n0)])
    d = np.repeat([1.0, 0.0], [n1, n0])
    x = np.column_stack([np.ones(n1 + n0), d])
    ols = sm.OLS(y, x).fit()
    res = _cr2.cr2(
        _cr2.Cr2Fit((), x, np.ones(n1 + n0), ols.resid, np.arange(n1 + n0), n1 + n0, np.eye(2)[:, 1:])
    )
    welch = CompareMeans(DescrStatsW(y[:n1]), DescrStatsW(y[n1:])).std_meandiff_separatevar
    assert res.std_errors[0] == pytest.approx(welch, rel=1e-10)
    df = (1 / n1 + 1 / n0) ** 2 / (1 / (n1**2 * (n1 - 1)) + 1 / (n0**2 * (n0 - 1)))
    assert res.df[0] == pytest.approx(df, rel=1e-10)
