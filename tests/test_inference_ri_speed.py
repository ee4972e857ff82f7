"""The fast GLM randomization-inference path (inference._glm_perm) gives what the cold path gives.

The GLM RI refits every assignment at every trial value of the interval search. Speed comes from warm
starts (each assignment's converged fit is kept as coefficients on the dummies and starts the refit at
the next trial value), smaller blocks and cheaper column maxima; none of it may change a number beyond
the refits' convergence tolerance. Checked here: the coefficient form of the projection reproduces
``WeightedProjection.fitted``; the column maxima are exact; warm-started refits equal cold ones and
statsmodels GLM refits (CR1 sandwich by hand) at trial values reached through warm starts; the
p-values and interval ends of ``randomization_inference`` equal those of the cold path (warm starts
switched off, the former block size) for the logit and the count model; and the warm starts do cut
the number of chord steps (so that a silently disabled warm start fails a test).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import statsmodels.api as sm

from stopdisparity.models import inference as inf
from stopdisparity.models.counts import fit_counts
from stopdisparity.models.did import DidResult, fit_did
from test_inference import cluster_codes, dummies, make_panel

# Warm and cold chord refits stop at the same step tolerance (1e-11 on the linear predictor) from
# different starts: t statistics agree to ~1e-11 (seen); statsmodels' IRLS to ~1e-9.
RTOL_WARM = 1e-8
RTOL_GLM = 1e-6


@pytest.fixture(scope="module")
def logit() -> DidResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_did(make_panel(), estimator="twfe-logit")


def _glm_ri(result: DidResult) -> inf._GlmRI:
    designs, terms = inf._model(result)
    asg = inf.adoption_assignments(result)
    return inf._GlmRI(designs, terms, tuple(inf._null_model(designs, t) for t in terms), asg)


def test_coefficient_projection_equals_fitted(logit: DidResult) -> None:
    """_fe_coef then _fe_fitted is WeightedProjection.fitted (the same arithmetic, bit for bit)."""
    des = inf._design(logit)
    rng = np.random.default_rng(3)
    proj = des.projector.solver(rng.uniform(0.5, 2.0, des.y.shape[0]))
    v = rng.normal(size=(des.y.shape[0], 7))
    coef = inf._fe_coef(proj, v)
    assert coef.shape == (des.projector._F.shape[1], 7)
    np.testing.assert_array_equal(inf._fe_fitted(des.projector, coef), proj.fitted(v))


@pytest.mark.parametrize("shape", [(5, 3), (16, 1), (37, 4), (1000, 32)])
def test_abs_colmax_is_exact(shape: tuple[int, int]) -> None:
    a = np.random.default_rng(1).normal(size=shape)
    np.testing.assert_array_equal(inf._abs_colmax(a), np.abs(a).max(axis=0))
    a[shape[0] // 2, 0] = np.nan  # a diverged column never counts as converged
    assert np.isnan(inf._abs_colmax(a)[0])


def _cold(ri: inf._GlmRI, theta: float) -> tuple[np.ndarray, np.ndarray]:
    des = ri.designs[0]
    b, f, _ = inf._glm_perm(
        des, ri.asg, des.offset + theta * des.d, des.eta + (theta - des.beta) * des.d, chunk=128
    )
    return b, f


def test_warm_refits_equal_cold_and_statsmodels(logit: DidResult) -> None:
    """Refits reached through warm starts (near and far trial values) equal cold refits and statsmodels."""
    ri = _glm_ri(logit)
    thetas = (0.0, 0.35, 0.3, 0.3 + 1e-6, -0.2)
    for theta in thetas:
        b, f = ri._perm(0, theta)
        cb, cf = _cold(ri, theta)
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, cb, rtol=RTOL_WARM, atol=1e-12)
        np.testing.assert_allclose(f, cf, rtol=RTOL_WARM, atol=1e-12)
    assert [s[0] for s in ri.states[0]] == list(thetas)
    # statsmodels at a warm-started trial value: coefficient of the permuted treatment, offset θD, CR1 t
    theta = 0.3 + 1e-6
    des = ri.designs[0]
    fast = ri.t_star(0, theta)
    s = logit.sample
    n = s.get_column("n").to_numpy()
    y = s.get_column("focal").to_numpy() / n
    fe, codes = dummies(s), cluster_codes(s)
    for k in range(0, ri.asg.assign.shape[0], 30):
        x = np.column_stack([ri.asg.treatment(k), fe])
        m = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=n, offset=theta * des.d).fit(tol=1e-13)
        mu = m.fittedvalues
        bread = np.linalg.pinv(x.T @ ((n * mu * (1 - mu))[:, None] * x))
        sc = np.zeros((codes.max() + 1, x.shape[1]))
        np.add.at(sc, codes, (n * (y - mu))[:, None] * x)
        t = m.params[0] / math.sqrt(des.factor * (bread @ sc.T @ sc @ bread)[0, 0])
        assert fast[k] == pytest.approx(t, rel=RTOL_GLM)


def test_warm_start_cuts_chord_steps(logit: DidResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a trial value next to an evaluated one, the refits take far fewer steps than from cold."""
    steps = {"n": 0}
    colmax = inf._abs_colmax

    def counted(a: np.ndarray) -> np.ndarray:  # once per chord step, twice per residual step
        steps["n"] += a.shape[1]
        return colmax(a)

    monkeypatch.setattr(inf, "_abs_colmax", counted)
    ri = _glm_ri(logit)
    ri._perm(0, 0.25)
    cold = steps["n"]
    steps["n"] = 0
    ri._perm(0, 0.25 + 1e-4)  # from the state at 0.25
    one = steps["n"]
    steps["n"] = 0
    ri._perm(0, 0.25 + 2e-4)  # on the line through the states at 0.25 and 0.2501
    two = steps["n"]
    steps["n"] = 0
    ri._perm(0, 0.25 + 1.5e-4)  # on the parabola through the three states
    three = steps["n"]
    steps["n"] = 0
    _cold(ri, 0.25 + 3e-4)
    print(cold, one, two, three, steps["n"])
    assert three <= 0.5 * cold and two <= 0.5 * cold and one <= 0.8 * cold and steps["n"] >= 0.9 * cold


def _cold_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refits as before warm starts: each trial value from the restricted fit, blocks of 128."""
    monkeypatch.setattr(inf._GlmRI, "_warm", lambda self, j, theta: None)
    monkeypatch.setattr(inf, "_glm_perm", functools.partial(inf._glm_perm, chunk=128))


def _p_and_ci(result: object, **kw: object) -> list[tuple[float, float, float]]:
    out = inf.randomization_inference(result, **kw).tidy()  # type: ignore[arg-type]
    return list(zip(out["p_value"], out["ci_low"], out["ci_high"], strict=True))


def test_ri_interval_equals_cold_path_logit(logit: DidResult, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _p_and_ci(logit)
    with monkeypatch.context() as m:
        _cold_path(m)
        slow = _p_and_ci(logit)
    assert fast[0][0] == slow[0][0]
    assert fast[0][1:] == pytest.approx(slow[0][1:], rel=1e-9)
    assert fast[0][1] < logit.estimate < fast[0][2]


def test_ri_interval_equals_cold_path_counts_random_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two-race Poisson (race masks, the difference's null), random assignments, a loose tolerance."""
    treated = {0: (3, None), 2: (4, 7), 4: (2, None), 1: (5, None), 3: (3, None)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = fit_counts(make_panel(units=30, treated=treated, effect=0.3))
    kw = {"draws": 39, "seed": 4, "tol": 1e-2}
    assert not inf.adoption_assignments(counts, draws=39, seed=4).exact
    fast = _p_and_ci(counts, **kw)
    with monkeypatch.context() as m:
        _cold_path(m)
        slow = _p_and_ci(counts, **kw)
    assert len(fast) == 3
    for f, s in zip(fast, slow, strict=True):
        assert f[0] == s[0]
        assert f[1:] == pytest.approx(s[1:], rel=1e-9)
