r"""Inference with few treated clusters: CR3 jackknife, wild and score bootstraps, randomization inference.

Users call :func:`apply_inference` (or one method directly) on a fitted
:class:`~stopdisparity.models.did.DidResult`; each returns a *new* result through ``with_inference``:
``p_value``, ``ci_low``, ``ci_high`` and ``inference`` change, ``std_error`` stays the analytical
cluster-robust SE (DESIGN.md, Results). Every label names the method, the clusters, G, G₁ and the
largest treated cluster's share of treated stops.

Methods
-------
``cr3``
    Cluster jackknife (CV3 of MacKinnon, Nielsen & Webb 2023): leave-one-cluster-out refits
    :math:`\hat\beta_{(g)}` (the logit repeats its separation drops on each subsample),
    :math:`V_3 = \frac{G-1}{G}\sum_g(\hat\beta_{(g)}-\hat\beta)^2`, centred at the full-sample
    estimate; p-value and interval from t(G-1) for both estimators.
``wild`` (``twfe-linear`` only)
    Wild cluster restricted bootstrap of the CR1 t statistic (Cameron, Gelbach & Miller 2008;
    MacKinnon & Webb 2017), computed as in Roodman et al. (2019): with :math:`M` the weighted projection
    off the fixed effects, :math:`\tilde d = Md`, :math:`\tilde u(\beta_0) = M y - \beta_0\tilde d` the
    restricted residuals and :math:`v` the cluster weights, the bootstrap coefficient is
    :math:`\beta^*-\beta_0 = \sum_h v_h a_h/H` and the bootstrap CR1 score of cluster g is
    :math:`\sum_h A_{gh}v_h - (\beta^*-\beta_0)H_g` with :math:`A_{gh} = \tilde d_g'W_g[M(\tilde u
    1_h)]_g` — exact (the state × period effects are not nested in the clusters, so the projection of
    each cluster's residuals is kept), and linear in :math:`\beta_0`, so test inversion costs only
    B × G × G products per trial value. Rademacher weights with G ≤ 12 enumerate all :math:`2^G` sign
    vectors; otherwise ``draws`` vectors are drawn. p-value: share of :math:`|t^*| \ge |t|`.
``score`` (``twfe-logit``)
    Score bootstrap (Kline & Santos 2012) with the null imposed: the restricted logit (offset
    :math:`\beta_0 D`, only fixed effects free) is fitted once per :math:`\beta_0`; with
    :math:`s_g = \sum_{i\in g}\psi_i\tilde d_i` (the score of β with the fixed effects partialled out
    under the restricted IRLS weights) the statistic is :math:`t = \sum_g s_g/\sqrt{\sum_g s_g^2}` and
    its bootstrap :math:`t^* = \sum_g v_gs_g/\sqrt{\sum_g v_g^2s_g^2}`. The interval inverts the test by
    bisection on :math:`\beta_0` with the same weights: each trial value costs one restricted IRLS fit
    (warm-started), about 2 × (3 + log2(width/tolerance)) ≈ 40 fits at the default tolerance.
``ri``
    Randomization inference on the t statistic (MacKinnon & Webb 2020): whole adoption paths (the
    unit's treatment over all periods, exits included) are permuted across units within each level
    of the group column (state); each assignment is refitted and its CR1 t computed. When the number
    of distinct assignments, :math:`\prod_s n_s!/\prod_k m_{sk}!` (:math:`m_{sk}` units of state s
    sharing path k), is below :data:`EXACT_LIMIT` all of them are enumerated (the observed one among
    them) and p is the share with :math:`|t^*|\ge|t|`; otherwise ``draws`` random assignments are used
    and p = (1 + #{|t*| ≥ |t|}) / (1 + draws). A unit's path at periods where it has no estimation
    cell is filled from its nearest earlier (else later) observed period. Intervals invert a sharp
    constant-effect null :math:`\beta_0`: the linear model shifts the outcome, :math:`y - \beta_0D`
    (everything is linear in :math:`\beta_0`, so inversion is cheap); the logit adds
    :math:`\beta_0D` to the linear predictor as an offset and tests the permuted treatment's
    coefficient against 0 (one refit per assignment and trial value: ``ci=False`` skips it).

Scope: :class:`~stopdisparity.models.did.DidResult` (``twfe-logit``, ``twfe-linear``); the treatment
coefficient only (``pp_change`` keeps its analytical delta-method inference). Count models
(:mod:`stopdisparity.models.counts`) are not covered yet.

Speed (NC + SC county × month synth panel, 25,760 cells, G = 146, G₁ = 13, one BLAS thread, on a busy
machine): score bootstrap 999 draws 0.1 s (p) / 1.7 s (p and interval, ~40 restricted fits); wild
bootstrap 999 draws with interval 1.0 s; RI 999 permutations, linear with interval 2.0 s, logit p only
25 s (chord-method refits, 128 assignments per block); CR3 of the logit 21 s (146 refits). With
several BLAS threads competing for busy cores, small LAPACK calls slow the logit refits about
tenfold; ``threadpoolctl``, when installed, is used to hold BLAS to one thread during RI.

Ties: ``|t*| >= |t|`` is evaluated with a relative tolerance of 1e-8, so that the draw or assignment that
reproduces the sample (all weights +1, the observed paths) counts whatever the rounding.

References
----------
Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2008). Bootstrap-based improvements for inference
with clustered errors. Review of Economics and Statistics 90(3), 414-427.
https://doi.org/10.1162/rest.90.3.414
MacKinnon, J. G. & Webb, M. D. (2017). Wild bootstrap inference for wildly different cluster sizes.
Journal of Applied Econometrics 32(2), 233-254. https://doi.org/10.1002/jae.2508
MacKinnon, J. G. & Webb, M. D. (2020). Randomization inference for difference-in-differences with few
treated clusters. Journal of Econometrics 218(2), 435-450. https://doi.org/10.1016/j.jeconom.2020.04.024
Roodman, D., MacKinnon, J. G., Nielsen, M. Ø. & Webb, M. D. (2019). Fast and wild: bootstrap inference
in Stata using boottest. Stata Journal 19(1), 4-60. https://doi.org/10.1177/1536867X19830877
Kline, P. & Santos, A. (2012). A score based approach to wild bootstrap inference. Journal of
Econometric Methods 1(1), 23-41. https://doi.org/10.1515/2156-6674.1006
MacKinnon, J. G., Nielsen, M. Ø. & Webb, M. D. (2023). Cluster-robust inference: a guide to empirical
practice. Journal of Econometrics 232(2), 272-299. https://doi.org/10.1016/j.jeconom.2022.04.001
Webb, M. D. (2023). Reworking wild bootstrap-based inference for clustered errors. Canadian Journal of
Economics 56(3), 839-858. https://doi.org/10.1111/caje.12661
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.models._fe import CLUSTER, GROUP, PERIOD, TREATED, UNIT, Inference
from stopdisparity.models.did import DidResult, _estimate

Method = Literal["cluster", "cr3", "wild", "score", "ri"]
WildWeights = Literal["rademacher", "webb"]
METHODS: tuple[Method, ...] = ("cluster", "cr3", "wild", "score", "ri")
WILD_WEIGHTS: tuple[WildWeights, ...] = ("rademacher", "webb")
#: Enumerate all randomization assignments when there are fewer than this many.
EXACT_LIMIT = 100_000
#: Enumerate all Rademacher sign vectors when G is at most this.
ENUMERATE_MAX_G = 12
_TIE = 1e-8
#: Chord and preconditioned iterations of the logit RI refits: step limit and tolerance.
_CHORD_MAX = 200
_CHORD_TOL = 1e-12
_WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])


# --------------------------------------------------------------------------------------- design
@dataclass(frozen=True, eq=False)
class _Design:
    """The arrays of a fitted DiD, rebuilt from its estimation sample."""

    result: DidResult
    y: np.ndarray
    prior: np.ndarray
    d: np.ndarray
    projector: _fe.WithinProjector
    cluster_codes: np.ndarray
    g: int
    factor: float

    @property
    def indicator(self) -> sp.csr_matrix:
        """G × n cluster indicator (for cluster sums of many columns at once)."""
        n = self.y.shape[0]
        return sp.csr_matrix((np.ones(n), (self.cluster_codes, np.arange(n))), shape=(self.g, n))


def _design(result: DidResult) -> _Design:
    if not isinstance(result, DidResult):
        raise SpecificationError(
            f"this inference method needs a DidResult (from fit_did); got {type(result).__name__}"
        )
    s = result.sample
    unit_codes = _fe.codes_of(s.get_column(UNIT))
    gp_codes = (
        _fe.codes_of(s.get_column(GROUP), s.get_column(PERIOD))
        if result.multi_group
        else _fe.codes_of(s.get_column(PERIOD))
    )
    cluster_codes = _fe.codes_of(s.get_column(CLUSTER).cast(pl.String))
    n = s.get_column("n").to_numpy()
    y = s.get_column("focal").to_numpy() / n
    prior = n if result.estimator == "twfe-logit" else s.get_column("weight").to_numpy()
    factor = result.small_sample.factor if result.vcov_type == "CR1" else 1.0
    return _Design(
        result,
        y,
        prior,
        s.get_column(TREATED).to_numpy().astype(float),
        _fe.WithinProjector([unit_codes, gp_codes]),
        cluster_codes,
        int(cluster_codes.max()) + 1,
        factor,
    )


def _cluster_text(result: DidResult) -> str:
    c = result.clusters
    return (
        f"by {result.columns['cluster']} (G={c.g}, G₁={c.g_treated}, largest treated share "
        f"{c.largest_share:.2f})"
    )


def _ci_text(ci: bool, alpha: float, what: str = "") -> str:
    if not ci:
        return "no interval"
    return f"{1 - alpha:.0%} CI by test inversion{' ' + what if what else ''}"


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")


def _check_draws(draws: int) -> None:
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise SpecificationError(f"draws must be a positive integer; got {draws!r}")


def _exceed(t_star: np.ndarray, t: float) -> np.ndarray:
    """|t*| >= |t| with a relative tie tolerance (see the module notes)."""
    return np.abs(t_star) >= abs(t) * (1 - _TIE) - 1e-300


def _invert(
    pvalue: Callable[[float], float],
    estimate: float,
    scale: float,
    alpha: float,
    *,
    tol: float,
    max_expand: int = 30,
) -> tuple[float, float]:
    r"""The interval {β₀ : p(β₀) > α}, by bracketing and bisection on each side of ``estimate``.

    Starts at ``estimate ± 2·scale`` and doubles the step until p ≤ α (NaN after ``max_expand``
    doublings); bisects until the bracket is narrower than ``tol·scale`` and returns its midpoint.
    """
    ends = []
    for sign in (-1.0, 1.0):
        inner, step = estimate, 2.0 * scale
        outer = estimate + sign * step
        k = 0
        while pvalue(outer) > alpha:
            inner, step = outer, 2 * step
            outer = estimate + sign * step
            k += 1
            if k > max_expand:
                outer = math.nan
                break
        if math.isnan(outer):
            ends.append(math.nan)
            continue
        while abs(outer - inner) > tol * scale:
            mid = 0.5 * (inner + outer)
            if pvalue(mid) > alpha:
                inner = mid
            else:
                outer = mid
        ends.append(0.5 * (inner + outer))
    return (ends[0], ends[1])


def _weights(kind: str, g: int, draws: int, seed: int | None) -> tuple[np.ndarray, bool]:
    """Cluster weight vectors (B × G) and whether they enumerate all Rademacher sign vectors."""
    check_choice("weights", kind, WILD_WEIGHTS)
    if kind == "rademacher" and g <= ENUMERATE_MAX_G:
        bits = (np.arange(2**g)[:, None] >> np.arange(g)[None, :]) & 1
        return (1.0 - 2.0 * bits).astype(float), True
    rng = np.random.default_rng(seed)
    if kind == "rademacher":
        return 2.0 * rng.integers(0, 2, size=(draws, g)) - 1.0, False
    return _WEBB[rng.integers(0, 6, size=(draws, g))], False


def _weights_text(kind: str, v: np.ndarray, enumerated: bool) -> str:
    name = "Rademacher" if kind == "rademacher" else "Webb 6-point"
    if enumerated:
        return f"{name}, all {v.shape[0]} sign vectors enumerated"
    return f"{name}, {v.shape[0]} draws"


# -------------------------------------------------------------------------------------------- CR3
def cr3(result: DidResult, *, alpha: float = 0.05) -> DidResult:
    r"""CR3 (cluster jackknife) p-value and interval for the treatment coefficient.

    Each cluster is left out in turn and the model refitted on the rest (for the logit, units and
    group-periods left without focal or reference stops are dropped first, as in the full fit);
    :math:`V_3 = \frac{G-1}{G}\sum_g(\hat\beta_{(g)}-\hat\beta)^2`; p and interval from t(G-1).

    Parameters
    ----------
    result
        A fitted :class:`~stopdisparity.models.did.DidResult`.
    alpha
        Level of the interval (1 - alpha coverage).

    Returns
    -------
    DidResult
        A copy with CR3 p-value, interval and label; ``std_error`` unchanged. The jackknife SE is in
        the label.

    Raises
    ------
    SpecificationError
        When a leave-one-out sample leaves the treatment unidentified (e.g. G₁ = 1).
    """
    _check_alpha(alpha)
    if not isinstance(result, DidResult):
        raise SpecificationError(f"cr3 needs a DidResult (from fit_did); got {type(result).__name__}")
    betas = _jackknife(result)
    g = betas.size
    var3 = (g - 1) / g * float(np.sum((betas - result.estimate) ** 2))
    se3 = math.sqrt(var3)
    _, p, lo, hi = _fe.inference_stats(result.estimate, se3, alpha, g - 1)
    label = f"CR3 jackknife {_cluster_text(result)}; SE {se3:.4g}; t({g - 1})"
    return result.with_inference(Inference(label, {result.term: p}, {result.term: (lo, hi)}))


def _jackknife(result: DidResult) -> np.ndarray:
    s = result.sample
    labels = s.get_column(CLUSTER).cast(pl.String)
    out = []
    for lab in sorted(labels.unique().to_list()):
        keep = s.filter(labels != lab)
        if result.estimator == "twfe-logit":
            keep, _ = _fe.drop_separated(
                keep.with_columns(_fe.gp_expr(result.multi_group)), [UNIT, _fe.GP], ["focal", "reference"]
            )
        pairs = keep.select(UNIT, PERIOD, GROUP, CLUSTER, TREATED, "focal", "reference", "n")
        if pairs.height == 0 or pairs.get_column(TREATED).n_unique() < 2:
            raise SpecificationError(
                f"leaving out cluster {lab!r} leaves no treatment variation; CR3 needs G₁ ≥ 2"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            core = _estimate(
                pairs,
                estimator=result.estimator,
                weights=result.weights or "stops",
                multi_group=result.multi_group,
                names=result.columns,
                eta_start=keep.get_column("eta").to_numpy(),
            )
        out.append(core.estimate)
    return np.asarray(out)


# ------------------------------------------------------------------------------- wild bootstrap
@dataclass(frozen=True, eq=False)
class WildBootstrap:
    """The pieces of a wild cluster restricted bootstrap, linear in the null value β₀.

    ``t_stat(beta0)`` is the sample CR1 t of H0: β = β₀ and ``t_star(beta0)`` the B bootstrap t's
    (weights ``v``, B × G); ``p_value(beta0)`` the share of |t*| ≥ |t|.
    """

    estimate: float
    std_error: float
    v: np.ndarray
    enumerated: bool
    a_y: np.ndarray
    a_d: np.ndarray
    h_g: np.ndarray
    h: float
    factor: float

    def t_stat(self, beta0: float) -> float:
        """Sample t of H0: β = β₀."""
        return (self.estimate - beta0) / self.std_error

    def t_star(self, beta0: float) -> np.ndarray:
        """Bootstrap t's with H0: β = β₀ imposed."""
        a = self.a_y - beta0 * self.a_d  # G × G, A[g, h]
        delta = self.v @ a.sum(axis=0) / self.h  # B
        scores = self.v @ a.T - delta[:, None] * self.h_g[None, :]  # B × G
        se = np.sqrt(self.factor * np.sum(scores**2, axis=1)) / self.h
        with np.errstate(divide="ignore", invalid="ignore"):
            return delta / se

    def p_value(self, beta0: float) -> float:
        """Share of bootstrap |t*| at least |t|."""
        return float(np.mean(_exceed(self.t_star(beta0), self.t_stat(beta0))))


def wild_bootstrap_arrays(
    y: np.ndarray,
    d: np.ndarray,
    w: np.ndarray,
    residualize: Callable[[np.ndarray], np.ndarray],
    cluster_codes: np.ndarray,
    v: np.ndarray,
    *,
    factor: float = 1.0,
    enumerated: bool = False,
) -> WildBootstrap:
    r"""The wild cluster restricted bootstrap of the coefficient on ``d`` in a weighted regression.

    Parameters
    ----------
    y, d, w
        Outcome, the tested regressor and the regression weights (length n).
    residualize
        The weighted projection off the other regressors (fixed effects, covariates): maps an n × m
        array to its residuals.
    cluster_codes
        Cluster codes 0..G-1 (length n).
    v
        Bootstrap weights, B × G.
    factor
        Small-sample factor of the CR1 variance (1: CR0; it cancels from the p-value).
    enumerated
        Recorded on the result (whether ``v`` enumerates all sign vectors).
    """
    g = int(cluster_codes.max()) + 1
    r = residualize(np.column_stack([y, d]))
    yt, dt = r[:, 0], r[:, 1]
    h = float(np.sum(w * dt * dt))
    estimate = float(np.sum(w * dt * yt)) / h
    n = y.shape[0]
    ind = sp.csr_matrix((np.ones(n), (cluster_codes, np.arange(n))), shape=(g, n))
    score = np.asarray(ind @ (w * dt * (yt - dt * estimate))).ravel()
    std_error = math.sqrt(factor * float(np.sum(score**2))) / h
    onehot = ind.T.toarray()  # n × G
    big = residualize(np.hstack([yt[:, None] * onehot, dt[:, None] * onehot]))
    wd = (w * dt)[:, None]
    a_y = np.asarray(ind @ (wd * big[:, :g]))
    a_d = np.asarray(ind @ (wd * big[:, g:]))
    h_g = np.asarray(ind @ (w * dt * dt)).ravel()
    return WildBootstrap(estimate, std_error, v, enumerated, a_y, a_d, h_g, h, factor)


def wild_bootstrap_setup(
    result: DidResult,
    *,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
) -> WildBootstrap:
    """Precompute the wild cluster restricted bootstrap of a ``twfe-linear`` result (see module notes)."""
    _check_draws(draws)
    if not isinstance(result, DidResult) or result.estimator != "twfe-linear":
        got = getattr(result, "estimator", type(result).__name__)
        raise SpecificationError(
            f"the wild cluster bootstrap applies to twfe-linear results; got {got!r} (use method='score' "
            "for the logit)"
        )
    des = _design(result)
    proj = des.projector.solver(des.prior)
    v, enumerated = _weights(weights, des.g, draws, seed)
    return wild_bootstrap_arrays(
        des.y,
        des.d,
        des.prior,
        proj.residualize,
        des.cluster_codes,
        v,
        factor=des.factor,
        enumerated=enumerated,
    )


def wild_cluster_bootstrap(
    result: DidResult,
    *,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
    impose_null: bool = True,
    alpha: float = 0.05,
    ci: bool = True,
) -> DidResult:
    """Wild cluster restricted (WCR) bootstrap p-value and test-inversion interval (``twfe-linear``).

    Parameters
    ----------
    result
        A ``twfe-linear`` :class:`~stopdisparity.models.did.DidResult`.
    draws
        Bootstrap draws B (ignored when Rademacher weights with G ≤ 12 are enumerated: 2^G vectors).
    weights
        ``rademacher`` or ``webb`` (six-point; Webb 2023).
    seed
        Seed of the weights (numpy ``default_rng``); the interval reuses the same draws.
    impose_null
        Must be True: only the restricted bootstrap (WCR) is implemented.
    alpha
        Level of the interval.
    ci
        Whether to compute the interval by test inversion.

    Returns
    -------
    DidResult
        A copy with the bootstrap p-value, interval and label; ``std_error`` unchanged.
    """
    _check_alpha(alpha)
    if impose_null is not True:
        raise SpecificationError(
            f"only the restricted wild bootstrap (impose_null=True, WCR) is implemented; got {impose_null!r}"
        )
    boot = wild_bootstrap_setup(result, draws=draws, weights=weights, seed=seed)
    p = boot.p_value(0.0)
    interval = (
        _invert(boot.p_value, result.estimate, result.std_error, alpha, tol=1e-6)
        if ci
        else (math.nan, math.nan)
    )
    label = (
        f"wild cluster restricted bootstrap ({_weights_text(weights, boot.v, boot.enumerated)}, "
        f"null imposed; {_ci_text(ci, alpha)}) {_cluster_text(result)}"
    )
    return result.with_inference(Inference(label, {result.term: p}, {result.term: interval}))


# ------------------------------------------------------------------------------ score bootstrap
@dataclass(frozen=True, eq=False)
class ScoreBootstrap:
    """Kline-Santos score bootstrap of a ``twfe-logit`` result; ``p_value(beta0)`` refits the null."""

    design: _Design
    v: np.ndarray
    enumerated: bool
    eta_start: np.ndarray

    def cluster_scores(self, beta0: float) -> np.ndarray:
        """Cluster sums of the restricted score of β (fixed effects partialled out) under β = β₀."""
        des = self.design
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = _fe.fit_glm(
                des.y,
                np.zeros((des.y.shape[0], 0)),
                des.projector,
                family="binomial",
                prior=des.prior,
                offset=beta0 * des.d,
                eta_start=self.eta_start + (beta0 - des.result.estimate) * des.d,
            )
        dt = fit.projection.residualize(des.d)
        return _fe.cluster_sums(fit.psi * dt, des.cluster_codes, des.g)[:, 0]

    def p_value(self, beta0: float) -> float:
        """Share of |t*| ≥ |t| for H0: β = β₀."""
        s = self.cluster_scores(beta0)
        den = math.sqrt(float(np.sum(s**2)))
        t = float(np.sum(s)) / den if den > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star = (self.v @ s) / np.sqrt((self.v**2) @ (s**2))
        return float(np.mean(_exceed(t_star, t)))


def score_bootstrap(
    result: DidResult,
    *,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
    alpha: float = 0.05,
    ci: bool = True,
    tol: float = 1e-3,
) -> DidResult:
    """Score bootstrap (Kline & Santos 2012) p-value and test-inversion interval for ``twfe-logit``.

    Parameters
    ----------
    result
        A ``twfe-logit`` :class:`~stopdisparity.models.did.DidResult`.
    draws, weights, seed
        As :func:`wild_cluster_bootstrap` (Rademacher with G ≤ 12 enumerates 2^G vectors).
    alpha
        Level of the interval.
    ci
        Whether to invert the test for an interval (about 40 restricted fits; see the module notes).
    tol
        Bisection stops when the bracket is narrower than ``tol`` × the analytical SE.

    Returns
    -------
    DidResult
        A copy with the bootstrap p-value, interval and label; ``std_error`` unchanged.
    """
    _check_alpha(alpha)
    _check_draws(draws)
    if not isinstance(result, DidResult) or result.estimator != "twfe-logit":
        got = getattr(result, "estimator", type(result).__name__)
        raise SpecificationError(
            f"the score bootstrap applies to twfe-logit results; got {got!r} (use method='wild' for "
            "twfe-linear)"
        )
    des = _design(result)
    v, enumerated = _weights(weights, des.g, draws, seed)
    eta = result.sample.get_column("eta").to_numpy()
    boot = ScoreBootstrap(des, v, enumerated, eta)
    p = boot.p_value(0.0)
    interval = (
        _invert(boot.p_value, result.estimate, result.std_error, alpha, tol=tol)
        if ci
        else (math.nan, math.nan)
    )
    label = (
        f"score bootstrap (Kline-Santos; {_weights_text(weights, v, enumerated)}, null imposed; "
        f"{_ci_text(ci, alpha)}) {_cluster_text(result)}"
    )
    return result.with_inference(Inference(label, {result.term: p}, {result.term: interval}))


# --------------------------------------------------------------------- randomization inference
@dataclass(frozen=True, eq=False)
class Assignments:
    """Adoption paths and the assignments of paths to units used by randomization inference.

    ``paths`` is (K distinct paths × periods); ``unit_path`` the observed path of each unit;
    ``assign`` (A × units) the path index each unit gets in each assignment; ``n_distinct`` the number
    of distinct assignments; ``exact`` whether ``assign`` enumerates all of them.
    """

    paths: np.ndarray
    unit_path: np.ndarray
    assign: np.ndarray
    n_distinct: int
    exact: bool
    row_unit: np.ndarray
    row_period: np.ndarray

    def treatment(self, k: int) -> np.ndarray:
        """The treatment column (one value per estimation row) under assignment ``k``."""
        return self.paths[self.assign[k][self.row_unit], self.row_period]


def _multiset_permutations(items: list[int]) -> Iterator[tuple[int, ...]]:
    """Distinct permutations of a multiset, in lexicographic order."""
    a = sorted(items)
    n = len(a)
    while True:
        yield tuple(a)
        i = n - 2
        while i >= 0 and a[i] >= a[i + 1]:
            i -= 1
        if i < 0:
            return
        j = n - 1
        while a[j] <= a[i]:
            j -= 1
        a[i], a[j] = a[j], a[i]
        a[i + 1 :] = reversed(a[i + 1 :])


def adoption_assignments(
    result: DidResult, *, within: str | None = "state", draws: int = 999, seed: int | None = None
) -> Assignments:
    """Adoption paths of the estimation sample and the assignments RI evaluates (see module notes)."""
    _check_draws(draws)
    s = result.sample
    group_col = result.columns.get("group")
    if within is not None and within != group_col:
        raise SpecificationError(
            f"within must be the result's group column ({group_col!r}) or None; got {within!r}"
        )
    unit_codes = _fe.codes_of(s.get_column(UNIT))
    period_codes = _fe.codes_of(s.get_column(PERIOD))
    n_units, n_periods = int(unit_codes.max()) + 1, int(period_codes.max()) + 1
    grid = np.full((n_units, n_periods), np.nan)
    grid[unit_codes, period_codes] = s.get_column(TREATED).to_numpy()
    for row in grid:  # fill periods without a cell: nearest earlier, else later, observed value
        ok = np.flatnonzero(~np.isnan(row))
        idx = np.searchsorted(ok, np.arange(n_periods), side="right") - 1
        row[:] = row[ok[np.clip(idx, 0, None)]]
    paths, unit_path = np.unique(grid, axis=0, return_inverse=True)
    unit_path = unit_path.ravel()
    if within is None:
        strata = np.zeros(n_units, dtype=np.int64)
    else:
        per_unit = s.select(pl.Series("u", unit_codes), pl.col(GROUP).cast(pl.String)).unique()
        if per_unit.height != n_units:
            raise SpecificationError(
                f"within={within!r} must be constant within each unit to permute paths within it"
            )
        per_unit = per_unit.sort("u")
        strata = _fe.codes_of(per_unit.get_column(GROUP))
    members = [np.flatnonzero(strata == k) for k in range(int(strata.max()) + 1)]
    n_distinct = 1
    for m in members:
        counts = np.bincount(unit_path[m])
        n_distinct *= math.factorial(m.size) // math.prod(math.factorial(int(c)) for c in counts)
    if n_distinct < EXACT_LIMIT:
        per_stratum = [list(_multiset_permutations(unit_path[m].tolist())) for m in members]
        assign = np.empty((n_distinct, n_units), dtype=np.int64)
        for k, combo in enumerate(itertools.product(*per_stratum)):
            for m, perm in zip(members, combo, strict=True):
                assign[k, m] = perm
        exact = True
    else:
        rng = np.random.default_rng(seed)
        assign = np.empty((draws, n_units), dtype=np.int64)
        for k in range(draws):
            for m in members:
                assign[k, m] = unit_path[m][rng.permutation(m.size)]
        exact = False
    return Assignments(paths, unit_path, assign, n_distinct, exact, unit_codes, period_codes)


def _blas_single_thread() -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True, eq=False)
class _LinearRI:
    """Per-assignment pieces of the linear RI t statistic, linear in the sharp-null value β₀."""

    beta_y: np.ndarray
    beta_d: np.ndarray
    hp: np.ndarray
    c: np.ndarray
    f: np.ndarray
    factor: float

    def t_star(self, beta0: float) -> np.ndarray:
        sc = self.c - beta0 * self.f
        se = np.sqrt(self.factor * np.sum(sc**2, axis=1)) / self.hp
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.beta_y - beta0 * self.beta_d) / se


def _linear_ri(des: _Design, asg: Assignments, chunk: int = 256) -> _LinearRI:
    w = des.prior
    proj = des.projector.solver(w)
    r = proj.residualize(np.column_stack([des.y, des.d]))
    yt, dt = r[:, 0], r[:, 1]
    ind = des.indicator
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("by", "bd", "hp", "c", "f")}
    n_a = asg.assign.shape[0]
    for start in range(0, n_a, chunk):
        ks = range(start, min(start + chunk, n_a))
        dmat = np.column_stack([asg.treatment(k) for k in ks])
        dp = proj.residualize(dmat)
        wdp = w[:, None] * dp
        hp = np.sum(wdp * dp, axis=0)
        by = (wdp.T @ yt) / hp
        bd = (wdp.T @ dt) / hp
        c = np.asarray(ind @ (wdp * (yt[:, None] - dp * by[None, :]))).T
        f = np.asarray(ind @ (wdp * (dt[:, None] - dp * bd[None, :]))).T
        for key, val in zip(("by", "bd", "hp", "c", "f"), (by, bd, hp, c, f), strict=True):
            out[key].append(val)
    return _LinearRI(
        np.concatenate(out["by"]),
        np.concatenate(out["bd"]),
        np.concatenate(out["hp"]),
        np.vstack(out["c"]),
        np.vstack(out["f"]),
        des.factor,
    )


def _logit_t_star(
    des: _Design, asg: Assignments, beta0: float, eta_start: np.ndarray, chunk: int = 128
) -> np.ndarray:
    r"""CR1 t of the permuted treatment in the logit with offset :math:`\beta_0 D`, every assignment.

    All assignments start from one restricted fit (fixed effects only, offset :math:`\beta_0D`) with
    IRLS weights :math:`w_0` and its exact projection :math:`M_0`, and are solved together (columns of
    a matrix) by the chord method: Newton steps with the Hessian frozen at :math:`w_0`, i.e. weighted
    least squares of the working residual on the dummies and the permuted treatment, which by
    Frisch–Waugh–Lovell needs only :math:`M_0` applied to the n × b block. Its fixed point solves the
    score equations exactly, so the estimates are the maximum-likelihood ones. The sandwich needs the
    treatment residualised under each column's final weights :math:`w`; it is computed by the
    preconditioned iteration :math:`r \leftarrow r - (I-M_0)((w/w_0)r)`, whose fixed point satisfies
    :math:`F'Wr = 0`. Both iterations converge linearly at a rate set by :math:`\max|w/w_0-1|` (small
    for permuted assignments); columns that have not converged after ``_CHORD_MAX`` steps are refitted
    by :func:`~stopdisparity.models._fe.fit_glm`.
    """
    from scipy.special import expit

    off = beta0 * des.d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit0 = _fe.fit_glm(
            des.y,
            np.zeros((des.y.shape[0], 0)),
            des.projector,
            family="binomial",
            prior=des.prior,
            offset=off,
            eta_start=eta_start + off,
        )
    w0, eta0, proj0 = fit0.weights, fit0.eta, fit0.projection
    n_tr, y = des.prior, des.y
    ind = des.indicator
    n_a = asg.assign.shape[0]
    out = np.full(n_a, np.nan)
    for start in range(0, n_a, chunk):
        ks = np.arange(start, min(start + chunk, n_a))
        dmat = np.column_stack([asg.treatment(int(k)) for k in ks])
        dt0 = proj0.residualize(dmat)
        h0 = np.sum(w0[:, None] * dt0 * dt0, axis=0)
        before = np.sum(w0[:, None] * dmat * dmat, axis=0)
        ok = h0 > 1e-10 * np.maximum(before, 1e-300)
        dt0, dmat, ks = dt0[:, ok], dmat[:, ok], ks[ok]
        h0 = h0[ok]
        eta = np.repeat(eta0[:, None], ks.size, axis=1)
        beta = np.zeros(ks.size)
        done = np.zeros(ks.size, dtype=bool)
        for _ in range(_CHORD_MAX):
            mu = expit(eta)
            z = (n_tr[:, None] * (y[:, None] - mu)) / w0[:, None]
            db = np.sum(w0[:, None] * dt0 * z, axis=0) / h0
            step = (z - proj0.residualize(z)) + dt0 * db[None, :]
            eta += step
            beta += db
            done = np.max(np.abs(step), axis=0) < _CHORD_TOL
            if done.all():
                break
        mu = expit(eta)
        w = n_tr[:, None] * mu * (1 - mu)
        ratio = w / w0[:, None]
        r = dt0.copy()
        for _ in range(_CHORD_MAX):
            u = ratio * r
            change = u - proj0.residualize(u)
            r -= change
            conv = np.max(np.abs(change), axis=0) < _CHORD_TOL * np.max(np.abs(r), axis=0)
            if conv.all():
                break
        done &= conv
        psi = n_tr[:, None] * (y[:, None] - mu)
        hess = np.sum(w * r * r, axis=0)
        sc = np.asarray(ind @ (psi * r))
        se = np.sqrt(des.factor * np.sum(sc**2, axis=0)) / hess
        out[ks[done]] = (beta / se)[done]
        for j in np.flatnonzero(~done):  # fallback: an ordinary IRLS fit
            out[ks[j]] = _logit_t_one(des, dmat[:, j], off, eta0)
    return out


def _logit_t_one(des: _Design, dk: np.ndarray, off: np.ndarray, eta0: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = _fe.fit_glm(
                des.y,
                dk[:, None],
                des.projector,
                family="binomial",
                prior=des.prior,
                offset=off,
                eta_start=eta0,
            )
        except SpecificationError:  # the assignment leaves the treatment collinear with the FEs
            return math.nan
    infl = _fe.cluster_influence(fit, des.cluster_codes, des.g)[:, 0]
    return float(fit.beta[0]) / math.sqrt(des.factor * float(np.sum(infl**2)))


def _ri_p(t_star: np.ndarray, t: float, exact: bool) -> float:
    ok = t_star[np.isfinite(t_star)]
    hits = int(np.sum(_exceed(ok, t)))
    if exact:
        return hits / ok.size
    return (1 + hits) / (1 + ok.size)


def randomization_inference(
    result: DidResult,
    *,
    draws: int = 999,
    seed: int | None = None,
    within: str | None = "state",
    statistic: Literal["t"] = "t",
    alpha: float = 0.05,
    ci: bool = True,
    tol: float = 1e-3,
) -> DidResult:
    """Randomization inference on the CR1 t statistic, permuting adoption paths within ``within``.

    Parameters
    ----------
    result
        A :class:`~stopdisparity.models.did.DidResult` (logit or linear).
    draws
        Random assignments when there are at least :data:`EXACT_LIMIT` distinct ones.
    seed
        Seed of the random assignments.
    within
        The result's group column (e.g. ``state``; permute within its levels) or None (across all).
    statistic
        ``t`` (the only one implemented): the CR1 t statistic of each refit.
    alpha, ci, tol
        Interval level; whether to invert the sharp constant-effect null (for the logit each trial
        value refits every assignment); bisection tolerance in analytical SEs.

    Returns
    -------
    DidResult
        A copy with the RI p-value, interval and a label giving G, G₁ and the assignments used.
    """
    _check_alpha(alpha)
    check_choice("statistic", statistic, ("t",))
    if not isinstance(result, DidResult):
        raise SpecificationError(
            f"randomization_inference needs a DidResult (from fit_did); got {type(result).__name__}"
        )
    des = _design(result)
    asg = adoption_assignments(result, within=within, draws=draws, seed=seed)

    def t_obs(beta0: float) -> float:
        return (result.estimate - beta0) / result.std_error

    with _blas_single_thread():
        if result.estimator == "twfe-linear":
            lin = _linear_ri(des, asg)

            def pvalue(beta0: float) -> float:
                return _ri_p(lin.t_star(beta0), t_obs(beta0), asg.exact)

        else:
            eta_null = result.sample.get_column("eta").to_numpy() - result.estimate * des.d

            def pvalue(beta0: float) -> float:
                return _ri_p(_logit_t_star(des, asg, beta0, eta_null), t_obs(beta0), asg.exact)

        p = pvalue(0.0)
        interval = (
            _invert(pvalue, result.estimate, result.std_error, alpha, tol=tol) if ci else (math.nan, math.nan)
        )
    used = asg.assign.shape[0]
    how = (
        f"all {used} distinct assignments enumerated"
        if asg.exact
        else f"{used} random of {asg.n_distinct:.3g} distinct assignments"
    )
    where = f"within {within}" if within else "across all units"
    label = (
        f"randomization inference on the t statistic (adoption paths permuted {where}; {how}; "
        f"{_ci_text(ci, alpha, 'of a constant-effect sharp null')}) {_cluster_text(result)}"
    )
    return result.with_inference(Inference(label, {result.term: p}, {result.term: interval}))


# ----------------------------------------------------------------------------------- dispatcher
def apply_inference(result: DidResult, method: Method, **options: Any) -> DidResult:
    """Apply one inference method to a fitted result and return the new result.

    ``cluster`` returns the analytical CR1/CR0 inference (any attached inference removed); ``cr3``,
    ``wild``, ``score`` and ``ri`` call :func:`cr3`, :func:`wild_cluster_bootstrap`,
    :func:`score_bootstrap` and :func:`randomization_inference` with ``options``.
    """
    check_choice("method", method, METHODS)
    if method == "cluster":
        if options:
            raise SpecificationError(f"method='cluster' takes no options; got {sorted(options)}")
        if not isinstance(result, DidResult):
            raise SpecificationError(f"apply_inference needs a DidResult; got {type(result).__name__}")
        return dataclasses.replace(result, inference=None)
    fn: Callable[..., DidResult] = {
        "cr3": cr3,
        "wild": wild_cluster_bootstrap,
        "score": score_bootstrap,
        "ri": randomization_inference,
    }[method]
    return fn(result, **options)


__all__ = [
    "EXACT_LIMIT",
    "METHODS",
    "Assignments",
    "ScoreBootstrap",
    "WildBootstrap",
    "adoption_assignments",
    "apply_inference",
    "cr3",
    "randomization_inference",
    "score_bootstrap",
    "wild_bootstrap_arrays",
    "wild_bootstrap_setup",
    "wild_cluster_bootstrap",
]
