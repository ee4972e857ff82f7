"""Inference for the count models (stopdisparity.models.inference on a CountsResult).

Every row of a race-specific count model (``in_force:<race>`` per race and ``difference``) gets CR3,
score-bootstrap and randomization-inference p-values and intervals. Each is checked against a
brute-force implementation written here: leave-one-cluster-out refits through ``fit_counts``; the
Kline-Santos restricted scores from statsmodels Poisson GLMs on explicit dummies (the difference from
the stacked Poisson with race-interacted dummies and a common treatment effect); randomization t's
from refits over all 180 assignments, through ``fit_counts`` on permuted panels and with statsmodels
(offsets for the sharp nulls, the CR1 sandwich by hand). The two-race Poisson is the twfe-logit (Baker
1994), so its inference must equal the logit's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats

from stopdisparity.errors import SpecificationError
from stopdisparity.models import inference as inf
from stopdisparity.models.counts import CountsResult, fit_counts
from stopdisparity.models.did import fit_did
from test_inference import boot_p, brute_assignments, cluster_codes, dummies, exceed, make_panel

# statsmodels IRLS vs the package's IRLS and chord refits: statistics agree to ~1e-9 (seen).
RTOL_GLM = 1e-6
TERMS = ("in_force:hispanic", "in_force:white", "difference")


def counts_fit(frame: pl.DataFrame, **kw: object) -> CountsResult:
    """The analytical CR1 fit (``inference="cluster"`` unless given) the methods here start from."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_counts(frame, **{"inference": "cluster", **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """make_panel with a race-specific population (so the exposure offset is exercised)."""
    frame = make_panel()
    rng = np.random.default_rng(11)
    pop = {u: rng.uniform(2e4, 2e5) for u in frame.get_column("county_fips").unique().to_list()}
    return frame.with_columns(
        (
            pl.col("county_fips").replace_strict(pop, return_dtype=pl.Float64)
            * pl.when(pl.col("race") == "hispanic").then(0.15).otherwise(0.7)
            * (1 + 0.01 * pl.col("period"))
        ).alias("population")
    )


@pytest.fixture(scope="module")
def counts(panel: pl.DataFrame) -> CountsResult:
    res = counts_fit(panel)
    assert res.exposure == "log population" and res.terms == TERMS
    return res


# ------------------------------------------------------------------------------ brute-force pieces
def race_rows(result: CountsResult, race: str) -> pl.DataFrame:
    return result.sample.filter(pl.col("race") == race)


def log_pop(rows: pl.DataFrame) -> np.ndarray:
    return np.log(rows.get_column("population").to_numpy())


def stacked(result: CountsResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both races' rows: y, offset, D, the focal indicator and race-interacted dummies (block diagonal)."""
    parts = [race_rows(result, r) for r in result.race_pair]
    blocks = [dummies(p) for p in parts]
    f = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    f[: blocks[0].shape[0], : blocks[0].shape[1]] = blocks[0]
    f[blocks[0].shape[0] :, blocks[0].shape[1] :] = blocks[1]
    y = np.concatenate([p.get_column("stops").to_numpy() for p in parts]).astype(float)
    off = np.concatenate([log_pop(p) for p in parts])
    d = np.concatenate([p.get_column("treated").to_numpy() for p in parts]).astype(float)
    focal = np.repeat([1.0, 0.0], [parts[0].height, parts[1].height])
    return y, off, d, focal, f


def poisson(y: np.ndarray, x: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Fitted means of a statsmodels Poisson GLM."""
    return sm.GLM(y, x, family=sm.families.Poisson(), offset=offset).fit(tol=1e-13).fittedvalues


def common_effect(result: CountsResult, delta0: float) -> float:
    """The common treatment effect of the stacked Poisson with the difference fixed at δ₀."""
    y, off, d, focal, f = stacked(result)
    m = sm.GLM(y, np.column_stack([d, f]), family=sm.families.Poisson(), offset=off + delta0 * d * focal)
    return float(m.fit(tol=1e-13).params[0])


def brute_score_t(result: CountsResult, term: str, beta0: float) -> tuple[float, np.ndarray]:
    """Kline-Santos restricted cluster scores by statsmodels: (t, s_g)."""
    if term == "difference":
        y, off, d, focal, f = stacked(result)
        mu = poisson(y, np.column_stack([d, f]), off + beta0 * d * focal)
        xt = sm.WLS(d * focal, np.column_stack([d, f]), weights=mu).fit().resid
        codes = pd.factorize(
            pl.concat([race_rows(result, r) for r in result.race_pair])
            .get_column("cluster")
            .cast(pl.String)
            .to_pandas(),
            sort=True,
        )[0]
    else:
        rows = race_rows(result, term.split(":")[1])
        y = rows.get_column("stops").to_numpy().astype(float)
        d = rows.get_column("treated").to_numpy().astype(float)
        f = dummies(rows)
        mu = poisson(y, f, log_pop(rows) + beta0 * d)
        xt = sm.WLS(d, f, weights=mu).fit().resid
        codes = cluster_codes(rows)
    sg = np.bincount(codes, weights=(y - mu) * xt)
    return float(sg.sum() / math.sqrt(np.sum(sg**2))), sg


# ------------------------------------------------------------------------------------- score bootstrap
@pytest.mark.parametrize(("term", "beta0"), [(t, b) for t in TERMS for b in (0.0, 0.15)])
def test_score_equals_brute_force(counts: CountsResult, term: str, beta0: float) -> None:
    boot = inf.score_bootstrap_setup(counts, term=term, draws=99, weights="webb", seed=3)
    t, sg = brute_score_t(counts, term, beta0)
    s = boot.cluster_scores(beta0)
    assert boot.t_stat(beta0) == pytest.approx(t, rel=RTOL_GLM)
    np.testing.assert_allclose(s / np.abs(s).max(), sg / np.abs(sg).max(), atol=1e-7)
    t_star = (boot.v @ sg) / np.sqrt((boot.v**2) @ (sg**2))
    assert boot.p_value(beta0) == boot_p(exceed(t_star, t))


def test_score_bootstrap_rows_and_inversion(counts: CountsResult) -> None:
    out = inf.score_bootstrap(counts, weights="webb", draws=199, seed=7)
    tidy = out.tidy()
    assert tidy.get_column("term").to_list() == list(TERMS)
    assert tidy.get_column("std_error").to_list() == counts.tidy().get_column("std_error").to_list()
    eps = 0.01 * tidy.get_column("std_error").to_numpy()  # the bisection tolerance is 1e-3 SE
    for i, row in enumerate(tidy.iter_rows(named=True)):
        assert row["inference"].startswith("score bootstrap (Kline-Santos; Webb 6-point, 199 draws")
        boot = inf.score_bootstrap_setup(counts, term=row["term"], weights="webb", draws=199, seed=7)
        assert row["p_value"] == boot.p_value(0.0)
        lo, hi = row["ci_low"], row["ci_high"]
        assert lo < row["estimate"] < hi
        for end, outward in ((lo, -1), (hi, 1)):
            assert boot.p_value(end - outward * eps[i]) > 0.05 >= boot.p_value(end + outward * eps[i])


# ------------------------------------------------------------------------------------------------ CR3
def test_cr3_equals_leave_one_cluster_out(panel: pl.DataFrame, counts: CountsResult) -> None:
    refits = [counts_fit(panel.filter(pl.col("county_fips") != c)) for c in counts.cluster_labels]
    betas = np.array([r.estimates for r in refits])
    out = inf.cr3(counts).tidy()
    for i, row in enumerate(out.iter_rows(named=True)):
        g = counts.n_clusters_by_term[i]
        se3 = math.sqrt((g - 1) / g * np.sum((betas[:, i] - counts.estimates[i]) ** 2))
        p = 2 * stats.t(g - 1).sf(abs(counts.estimates[i] / se3))
        assert row["p_value"] == pytest.approx(p, rel=1e-6)
        crit = stats.t(g - 1).isf(0.025)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (counts.estimates[i] - crit * se3, counts.estimates[i] + crit * se3), rel=1e-6
        )
        assert row["std_error"] == counts.tidy().item(i, "std_error")
        assert row["inference"].startswith("CR3 jackknife by county_fips (G=12, G₁=3")
        assert f"{row['term']} {se3:.4g}" in row["inference"]


def test_cr3_needs_two_treated_clusters(panel: pl.DataFrame) -> None:
    one = panel.with_columns(
        pl.when(pl.col("county_fips") == "c00").then(pl.col("in_force")).otherwise(0).alias("in_force")
    )
    with pytest.raises(SpecificationError, match="leaving out cluster 'c00'"):
        inf.cr3(counts_fit(one))


# --------------------------------------------------------------------------------- the two-race form
def test_two_race_inference_is_the_logits(panel: pl.DataFrame) -> None:
    """The two-race Poisson is the twfe-logit (Baker 1994): same scores, so the same inference."""
    two = counts_fit(panel, form="two-race")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logit = fit_did(panel)
    a = inf.score_bootstrap(two, weights="webb", draws=99, seed=2).tidy().row(0, named=True)
    b = inf.score_bootstrap(logit, weights="webb", draws=99, seed=2).tidy().row(0, named=True)
    assert a["p_value"] == b["p_value"]
    ends = (b["ci_low"], b["ci_high"])
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(ends, abs=2e-3 * logit.std_error)
    a, b = (inf.cr3(r).tidy().row(0, named=True) for r in (two, logit))
    assert (a["p_value"], a["ci_low"], a["ci_high"]) == pytest.approx(
        (b["p_value"], b["ci_low"], b["ci_high"]), rel=1e-6
    )
    a, b = (inf.randomization_inference(r, ci=False).tidy().row(0, named=True) for r in (two, logit))
    assert a["p_value"] == b["p_value"]


# ------------------------------------------------------------------------------ randomization inference
def assignment_column(rows: pl.DataFrame, assignment: dict[str, np.ndarray]) -> np.ndarray:
    units = rows.get_column("unit").to_list()
    periods = rows.get_column("period").to_list()
    return np.array([assignment[u][p] for u, p in zip(units, periods, strict=True)], dtype=float)


def brute_glm_fit(rows: pl.DataFrame, dk: np.ndarray, offset: np.ndarray) -> tuple[float, np.ndarray]:
    """Poisson on [D_k, dummies] by statsmodels: the coefficient and its cluster influence (G)."""
    y = rows.get_column("stops").to_numpy().astype(float)
    x = np.column_stack([dk, dummies(rows)])
    m = sm.GLM(y, x, family=sm.families.Poisson(), offset=offset).fit(tol=1e-13)
    mu = m.fittedvalues
    bread = np.linalg.pinv(x.T @ (mu[:, None] * x))
    sc = np.zeros((12, x.shape[1]))  # the fixture's 12 clusters, codes by sorted label
    np.add.at(sc, cluster_codes(rows), (y - mu)[:, None] * x)
    return float(m.params[0]), (bread @ sc.T)[0]


def brute_ri_t(
    result: CountsResult, assignments: list[dict[str, np.ndarray]], term: str, beta0: float
) -> np.ndarray:
    """Each assignment's CR1 t of ``term`` under its sharp null, by statsmodels refits."""
    i = result.terms.index(term)
    if term == "difference":
        nu = common_effect(result, beta0)
        theta = {result.race_pair[0]: (1.0, beta0 + nu), result.race_pair[1]: (-1.0, nu)}
    else:
        theta = {term.split(":")[1]: (1.0, beta0)}
    factor = result.small_samples[i].factor
    out = []
    for a in assignments:
        num, infl = 0.0, np.zeros(12)
        for race, (c, th) in theta.items():
            rows = race_rows(result, race)
            d_obs = rows.get_column("treated").to_numpy().astype(float)
            b, f = brute_glm_fit(rows, assignment_column(rows, a), log_pop(rows) + th * d_obs)
            num, infl = num + c * b, infl + c * f
        out.append(num / math.sqrt(factor * np.sum(infl**2)))
    return np.array(out)


@pytest.fixture(scope="module")
def assignments(panel: pl.DataFrame) -> list[dict[str, np.ndarray]]:
    return brute_assignments(panel)


def test_ri_races_equal_refits_of_permuted_panels(
    panel: pl.DataFrame, counts: CountsResult, assignments: list[dict[str, np.ndarray]]
) -> None:
    """At β₀ = 0 the races' rows are plain permutation: fit_counts on each permuted panel."""
    t_star = []
    for a in assignments:
        new = panel.with_columns(
            pl.struct("county_fips", "period")
            .map_elements(lambda s, a=a: int(a[s["county_fips"]][s["period"]]), return_dtype=pl.Int64)
            .alias("in_force")
        )
        res = counts_fit(new)
        t_star.append(res.estimates[:2] / res.std_errors[:2])
    expected = np.array(t_star)
    asg = inf.adoption_assignments(counts)
    assert asg.exact and asg.assign.shape[0] == len(assignments) == 180
    fast = inf._ri_t_star(counts, *inf._model(counts), asg)
    for i in range(2):
        np.testing.assert_allclose(np.sort(fast(i, 0.0)), np.sort(expected[:, i]), rtol=RTOL_GLM)
    out = inf.randomization_inference(counts, ci=False).tidy()
    for i in range(2):
        t = counts.estimates[i] / counts.std_errors[i]
        assert out.item(i, "p_value") == pytest.approx(
            boot_p(exceed(expected[:, i], t), enumerated=True), abs=1e-12
        )
    assert "all 180 distinct assignments enumerated" in out.item(0, "inference")


@pytest.mark.parametrize(
    ("term", "beta0"), [("difference", 0.0), ("difference", 0.2), ("in_force:white", -0.1)]
)
def test_ri_sharp_null_equals_statsmodels(
    counts: CountsResult, assignments: list[dict[str, np.ndarray]], term: str, beta0: float
) -> None:
    i = counts.terms.index(term)
    expected = brute_ri_t(counts, assignments, term, beta0)
    fast = inf._ri_t_star(counts, *inf._model(counts), inf.adoption_assignments(counts))(i, beta0)
    np.testing.assert_allclose(np.sort(fast), np.sort(expected), rtol=RTOL_GLM)
    t = (counts.estimates[i] - beta0) / counts.std_errors[i]
    assert np.isclose(expected, t, rtol=1e-8).any()  # the observed assignment reproduces the sample t
    if beta0 == 0.0:
        p = inf.randomization_inference(counts, ci=False).tidy().item(i, "p_value")
        assert p == pytest.approx(boot_p(exceed(expected, t), enumerated=True), abs=1e-12)


def test_ri_interval_ends_cross_alpha(counts: CountsResult, assignments: list[dict[str, np.ndarray]]) -> None:
    out = inf.randomization_inference(counts, tol=1e-2).tidy()
    i = 2
    lo, hi = out.item(i, "ci_low"), out.item(i, "ci_high")
    assert lo < counts.estimates[i] < hi
    se = counts.std_errors[i]

    def p_at(b: float) -> float:
        t_star = brute_ri_t(counts, assignments, "difference", b)
        return float(boot_p(exceed(t_star, (counts.estimates[i] - b) / se), enumerated=True))

    eps = 0.02 * se
    assert p_at(hi - eps) > 0.05 >= p_at(hi + eps)
    assert p_at(lo + eps) > 0.05 >= p_at(lo - eps)
    for j in range(3):
        assert out.item(j, "ci_low") < counts.estimates[j] < out.item(j, "ci_high")


# ------------------------------------------------------------------------------- contract and refusals
@pytest.mark.parametrize(
    ("method", "options"),
    [("cr3", {}), ("score", {"seed": 1, "draws": 99, "ci": False}), ("ri", {"ci": False})],
)
def test_every_row_covered_std_error_unchanged(counts: CountsResult, method: str, options: dict) -> None:
    before = counts.tidy()
    out = inf.apply_inference(counts, method, **options)  # type: ignore[arg-type]
    after = out.tidy()
    assert isinstance(out, CountsResult) and counts.inference is None
    for col in ("term", "estimate", "std_error", "statistic", "n_obs", "n_clusters", "estimand"):
        assert after.get_column(col).to_list() == before.get_column(col).to_list()
    assert after.get_column("inference").n_unique() == 1
    assert "G₁=3" in after.item(0, "inference")
    assert not np.allclose(after.get_column("p_value").to_numpy(), before.get_column("p_value").to_numpy())
    assert inf.apply_inference(out, "cluster").tidy().equals(before)


def test_refusals(counts: CountsResult) -> None:
    with pytest.raises(SpecificationError, match=r"applies to linear results \(twfe-linear.*'twfe-poisson'"):
        inf.apply_inference(counts, "wild")
    with pytest.raises(SpecificationError, match=r"needs a DidResult .*a CountsResult .*an EventStudyResult"):
        inf.cr3(counts.tidy())  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match=r"needs a DidResult .*a CountsResult .*an EventStudyResult"):
        inf.apply_inference(counts.tidy(), "cluster")  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="term"):
        inf.score_bootstrap_setup(counts, term="in_force:black")
