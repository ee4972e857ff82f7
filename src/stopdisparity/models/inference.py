r"""Inference with few treated clusters: CR2, CR3, wild and score bootstraps, randomization inference.

Users call :func:`apply_inference` (or one method directly) on a fitted
:class:`~stopdisparity.models.did.DidResult`, :class:`~stopdisparity.models.counts.CountsResult` or
:class:`~stopdisparity.models.event_study.EventStudyResult`; each returns a *new* result through
``with_inference``:
``p_value``, ``ci_low``, ``ci_high`` and ``inference`` change, ``std_error`` stays the analytical
cluster-robust SE (DESIGN.md, Results). Every label names the method, the clusters, G, G₁ and the
largest treated cluster's share of treated stops.

Methods
-------
``cr2``
    Bias-reduced cluster-robust variance (CR2; Bell & McCaffrey 2002) from the final IRLS/WLS weights
    with every fixed-effect dummy in the hat matrix, and a Student t reference with the
    Bell–McCaffrey degrees of freedom of each term (Imbens & Kolesár 2016; Pustejovsky & Tipton 2018):
    :mod:`~stopdisparity.models._cr2`. No refits. CR1 is biased down when the treatment's information
    sits in a few large clusters (design M: G* median 22 of 146, ``effective_clusters``); CR2
    is exactly unbiased under the working model and its df shrink with the effective clusters. On
    design M of the Monte Carlo it covers where CR1 does not (tests/test_monte_carlo.py).
``cr3``
    Cluster jackknife (CV3 of MacKinnon, Nielsen & Webb 2023): leave-one-cluster-out refits
    :math:`\hat\beta_{(g)}` (the logit repeats its separation drops on each subsample),
    :math:`V_3 = \frac{G-1}{G}\sum_g(\hat\beta_{(g)}-\hat\beta)^2`, centred at the full-sample
    estimate; p-value and interval from t(G-1) for every estimator. A count model refits both races
    on each leave-one-out sample; each row (each race, the difference) gets its own :math:`V_3`.
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
    vectors; otherwise ``draws`` vectors are drawn. p-value: share of :math:`|t^*| \ge |t|`, with the
    sample counted as a draw when they are random (:func:`_mc_p`), so it is never 0.
``score`` (GLMs: ``twfe-logit``, the Poisson count models)
    Score bootstrap (Kline & Santos 2012) with the null imposed: the restricted GLM (offset
    :math:`\beta_0 D`, only fixed effects free) is fitted once per :math:`\beta_0`; with
    :math:`s_g = \sum_{i\in g}\psi_i\tilde d_i` (the score of β with the fixed effects partialled out
    under the restricted IRLS weights) the statistic is :math:`t = \sum_g s_g/\sqrt{\sum_g s_g^2}` and
    its bootstrap :math:`t^* = \sum_g v_gs_g/\sqrt{\sum_g v_g^2s_g^2}`. For a count model each race's
    row is that test in its own Poisson; the difference :math:`\beta_f-\beta_r = \beta_0` is tested in
    the stacked Poisson (race-interacted fixed effects, a common effect ν free, offset
    :math:`\beta_0 D` on the focal rows) with the stacked cluster scores of :math:`D\cdot 1[\text{focal}]`
    partialled off the fixed effects and :math:`D` (:class:`_NullModel`). The interval inverts the test by
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
    (everything is linear in :math:`\beta_0`, so inversion is cheap); the GLMs add
    :math:`\beta_0D` to the linear predictor as an offset and test the permuted treatment's
    coefficient against 0 (one refit per assignment and trial value: ``ci=False`` skips it). A count
    model's race rows permute within that race's Poisson; the difference's null imposes
    :math:`\beta_f-\beta_r=\beta_0` with the common effect ν̃ refitted under it (offsets
    :math:`(\beta_0+\tilde\nu)D` on focal, :math:`\tilde\nu D` on reference rows), and each
    assignment's t is that of :math:`\beta^*_f-\beta^*_r` with the stacked-influence SE (the
    tidy() SE). The interval ends are located by :func:`_invert_ri` (exact evaluations bracketing
    each end, placed by interpolating every assignment's :math:`t^*` in β₀): about 9 evaluations
    including the p-value's, instead of bisection's 21 (``tol`` = 0.01) or 27 (0.001, the default).

Scope: :class:`~stopdisparity.models.did.DidResult` (``twfe-logit``, ``twfe-linear``), the treatment
coefficient only (``pp_change`` keeps its analytical delta-method inference);
:class:`~stopdisparity.models.counts.CountsResult` (``cr2``, ``cr3``, ``score``, ``ri``; every row);
:class:`~stopdisparity.models.event_study.EventStudyResult` (logit or linear; every estimated
event-time term, the binned end points included; the reference has no coefficient and keeps its null
row; covariate rows keep their analytical inference). The wild bootstrap is for the linear models
only and refuses the GLMs.

Event studies. Term ``event:e`` is the coefficient on the dummy :math:`D_e`; every method treats the
other event-time dummies as free regressors (:func:`_event_designs`): CR3 refits the whole event
study on each leave-one-cluster-out sample; the wild and score bootstraps impose
:math:`\beta_e=\beta_0` with the other dummies partialled out with the fixed effects (linear) or
refitted in the restricted GLM (Kline & Santos 2012, section 3). RI permutes adoption dates
(``first_treated``) within the group, which moves every dummy of a unit at once; each term's statistic
is its CR1 t in the refit, and its sharp null at β₀ is "effect β₀ at event time e, none at the others"
(:class:`_EventRI`; at β₀ = 0 the sharp null of no effect at any event time). RI needs binned end
points (with ``bin_endpoints=False`` the dropped out-of-window cells would depend on the assignment).

Covariates (generic panels, ``result.covariates``: the ``_x*`` columns of ``result.sample``) are free
regressors in every method: CR3 refits with them; the wild bootstrap and the linear RI partial them
out of y and the tested regressor together with the fixed effects (:func:`_partialler`); the score
bootstrap fits the restricted model with them free and residualises the tested regressor on the
fixed effects and them under the restricted weights; the GLM RI keeps them in the restricted fit and
in the chord projection (:func:`_glm_perm`). The attached :class:`Inference` names them, which is what
``with_inference`` checks.

Speed (NC + SC county × month synth panel, 25,760 cells, G = 146, G₁ = 13, one BLAS thread, CPU
seconds on a busy machine): score bootstrap 999 draws 0.1 s (p) / 1.7 s (p and interval, ~40
restricted fits); wild bootstrap 999 draws with interval 1.0 s; RI 999 permutations, linear with
interval 2.0 s, logit p only 5.6 s (chord-method refits, 32 assignments per block; 11 s with
blocks of 128, 21 s before converged columns left the block) and p with interval 36 s
(bench/models.py, 1-min load average 1.9 on 2 CPUs; 62 s at load 7.3; 9 evaluations of all 999
refits by :func:`_invert_ri`, each after the first warm-started from the refits at the trial
values already evaluated, :class:`_GlmRI`; 81-83 s without warm starts, 456 s with bisection to
0.001 SE); CR3 of the logit 21 s (146 refits). Count
model (twfe-poisson, both races, 51,648 rows): CR3 27 s; score bootstrap 0.3 s (p) /
6.3 s (with intervals); RI p only 40 s (four Poisson refit sets: each race, and both races under the
difference's null), with the three rows' intervals 375 s. With several BLAS threads competing for
busy cores, small LAPACK calls slow the refits about tenfold; ``threadpoolctl``, when installed, is
used to hold BLAS to one thread during RI.

Event study (SC synth panel, county × month, 6,550 cells, G = 46, G₁ = 20, nine event-time terms, one
BLAS thread): score bootstrap 999 draws with all nine intervals 4.1 s; wild 999 draws with intervals
0.6 s; CR3 of the logit 1.2 s; linear RI 199 permutations with intervals 1.2 s; logit RI p only 49
permutations 1.0 s (~20 ms per refit: every assignment is a full refit, since all dummies move
together; with intervals about 9 terms × 8 evaluations × draws refits, so ``ci=False`` for large B);
the bootstrap pre-tests (999 draws) 0.1 s.

Ties: ``|t*| >= |t|`` is evaluated with a relative tolerance of 1e-8, so that the draw or assignment that
reproduces the sample (all weights +1, the observed paths) counts whatever the rounding.

References
----------
Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2008). Bootstrap-based improvements for inference
with clustered errors. Review of Economics and Statistics 90(3), 414-427.
https://doi.org/10.1162/rest.90.3.414
Bell, R. M. & McCaffrey, D. F. (2002). Bias reduction in standard errors for linear regression with
multi-stage samples. Survey Methodology 28(2), 169-181.
Imbens, G. W. & Kolesár, M. (2016). Robust standard errors in small samples: some practical advice.
Review of Economics and Statistics 98(4), 701-712. https://doi.org/10.1162/REST_a_00552
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.models import _cr2, _event, _fe
from stopdisparity.models._etwfe import EtwfeResult
from stopdisparity.models._fe import CLUSTER, GROUP, PERIOD, POPULATION, RACE, STOPS, TREATED, UNIT, Inference
from stopdisparity.models._panel import covariate_columns
from stopdisparity.models._sunab import SunAbrahamResult
from stopdisparity.models.counts import CountsResult, refit_counts
from stopdisparity.models.did import PP_TERM, DidResult, pp_gradient
from stopdisparity.models.event_study import EventStudyResult

Method = Literal["cluster", "cr2", "cr3", "wild", "score", "ri"]
WildWeights = Literal["rademacher", "webb"]
METHODS: tuple[Method, ...] = ("cluster", "cr2", "cr3", "wild", "score", "ri")
WILD_WEIGHTS: tuple[WildWeights, ...] = ("rademacher", "webb")
#: Enumerate all randomization assignments when there are fewer than this many.
EXACT_LIMIT = 100_000
#: Enumerate all Rademacher sign vectors when G is at most this.
ENUMERATE_MAX_G = 12
_TIE = 1e-8
#: Chord and preconditioned iterations of the GLM RI refits: step limit and tolerance.
_CHORD_MAX = 200
_CHORD_TOL = 1e-11
_WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])
#: The results the methods accept.
Result = DidResult | CountsResult | EventStudyResult
#: Event-bin value of cells without an event-time dummy (never-treated units) in assignment paths.
_NO_EVENT = -1.0e6


# --------------------------------------------------------------------------------------- design
@dataclass(frozen=True, eq=False)
class _Design:
    """The arrays of one fitted model of a result: the DiD, or one Poisson fit of a count model.

    ``d`` is the observed regressor, ``mask`` what multiplies the unit's treatment to give it (1, or
    the focal-race indicator of the two-race Poisson); ``rows`` the positions of these rows in the
    result's ``sample``; ``eta`` the fitted linear predictor (offset included) and ``beta`` the
    coefficient on ``d``; ``factor`` the CR1 factor of this fit (1 under CR0); ``x`` (n × k) the
    regressors that stay free besides the fixed effects: the covariates and, for an event study's
    term, the other event-time dummies (n × 0 when there are none).
    """

    family: str
    y: np.ndarray
    prior: np.ndarray
    offset: np.ndarray
    d: np.ndarray
    mask: np.ndarray
    fe_codes: tuple[np.ndarray, ...]
    projector: _fe.WithinProjector
    cluster_codes: np.ndarray
    g: int
    factor: float
    eta: np.ndarray
    beta: float
    rows: np.ndarray
    x: np.ndarray

    @property
    def indicator(self) -> sp.csr_matrix:
        """G × n cluster indicator (for cluster sums of many columns at once)."""
        n = self.y.shape[0]
        return sp.csr_matrix((np.ones(n), (self.cluster_codes, np.arange(n))), shape=(self.g, n))

    def partialler(self, w: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """The weighted residual maker off the fixed effects and ``x`` (see :func:`_partialler`)."""
        return _partialler(self.projector, self.x, w)


def _partialler(
    projector: _fe.WithinProjector, x: np.ndarray, w: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The residual maker off the fixed effects and the columns ``x`` under weights ``w`` (n × m → n × m).

    Frisch–Waugh–Lovell: with :math:`M` the weighted projection off the dummies and
    :math:`\tilde x = Mx`, :math:`v \mapsto Mv - \tilde x(\tilde x'W\tilde x)^{-1}\tilde x'WMv`.
    """
    proj = projector.solver(w)
    if x.shape[1] == 0:
        return proj.residualize
    xt = proj.residualize(x)
    hx = np.einsum("ij,i,ik->jk", xt, w, xt)

    def residualize(v: np.ndarray) -> np.ndarray:
        vt = proj.residualize(v)
        return vt - xt @ np.linalg.solve(hx, np.einsum("ij,i,ik->jk", xt, w, vt))

    return residualize


@dataclass(frozen=True, slots=True)
class _Term:
    """One reported coefficient as a contrast of the designs' coefficients.

    ``weights`` over the result's designs; the estimate and analytical SE of ``tidy()``; its CR1
    factor and number of clusters.
    """

    name: str
    weights: tuple[float, ...]
    estimate: float
    std_error: float
    factor: float
    g: int


def _check_result(result: object, method: str) -> None:
    if not isinstance(result, DidResult | CountsResult | EventStudyResult):
        raise SpecificationError(
            f"{method} needs a DidResult (fit_did), a CountsResult (fit_counts) or an EventStudyResult "
            f"(fit_event_study); got {type(result).__name__}"
        )


def _multi_group(result: DidResult | EventStudyResult) -> bool:
    """Whether the period effects are group × period (as in the fit)."""
    if isinstance(result, EventStudyResult):
        return bool(result.lineage["options"]["group_effects"])
    return result.multi_group


def _fixed_effects(
    s: pl.DataFrame, multi_group: bool
) -> tuple[tuple[np.ndarray, np.ndarray], _fe.WithinProjector, np.ndarray]:
    """Unit and (group ×) period codes of cells, their projector and the cluster codes."""
    unit_codes = _fe.codes_of(s.get_column(UNIT))
    gp_codes = (
        _fe.codes_of(s.get_column(GROUP), s.get_column(PERIOD))
        if multi_group
        else _fe.codes_of(s.get_column(PERIOD))
    )
    cluster_codes = _fe.codes_of(s.get_column(CLUSTER).cast(pl.String))
    return (unit_codes, gp_codes), _fe.WithinProjector([unit_codes, gp_codes]), cluster_codes


def _event_dummies(bins: np.ndarray, estimated: tuple[int, ...]) -> np.ndarray:
    """Dummies of the estimated event times from event bins (``_NO_EVENT``: none): shape (*bins, m)."""
    return (np.asarray(bins)[..., None] == np.asarray(estimated, dtype=float)).astype(float)


def _event_designs(result: EventStudyResult) -> tuple[_Design, ...]:
    r"""One design per estimated event time ``e``: ``d`` its dummy, ``x`` the other dummies and covariates.

    All share the outcome, weights and fixed effects of the fit; the reference event time and the
    never-treated cells have no dummy, the binned end points are ordinary dummies.
    """
    s = result.sample
    fe_codes, projector, cluster_codes = _fixed_effects(s, _multi_group(result))
    logit = result.estimator == "logit"
    n = s.get_column("n").to_numpy().astype(float)
    dums = _event_dummies(s.get_column("event_bin").fill_null(_NO_EVENT).to_numpy(), result.estimated)
    cov = _covariates(s, result.columns)
    common: dict[str, Any] = {
        "family": "binomial" if logit else "gaussian",
        "y": s.get_column("focal").to_numpy() / n,
        "prior": n if logit else s.get_column("weight").to_numpy(),
        "offset": np.zeros(s.height),
        "mask": np.ones(s.height),
        "fe_codes": fe_codes,
        "projector": projector,
        "cluster_codes": cluster_codes,
        "g": result.clusters.g,
        "factor": result.small_sample.factor if result.vcov_type == "CR1" else 1.0,
        "eta": s.get_column("eta").to_numpy(),
        "rows": np.arange(s.height),
    }
    return tuple(
        _Design(
            d=dums[:, i],
            beta=float(result.estimates[i]),
            x=np.column_stack([np.delete(dums, i, axis=1), cov]),
            **common,
        )
        for i in range(len(result.estimated))
    )


def _design(result: DidResult) -> _Design:
    if not isinstance(result, DidResult):
        raise SpecificationError(
            f"this inference method needs a DidResult (from fit_did); got {type(result).__name__}"
        )
    s = result.sample
    fe_codes, projector, cluster_codes = _fixed_effects(s, result.multi_group)
    n = s.get_column("n").to_numpy()
    logit = result.estimator == "twfe-logit"
    d = s.get_column(TREATED).to_numpy().astype(float)
    return _Design(
        family="binomial" if logit else "gaussian",
        y=s.get_column("focal").to_numpy() / n,
        prior=n.astype(float) if logit else s.get_column("weight").to_numpy(),
        offset=np.zeros(s.height),
        d=d,
        mask=np.ones(s.height),
        fe_codes=fe_codes,
        projector=projector,
        cluster_codes=cluster_codes,
        g=int(cluster_codes.max()) + 1,
        factor=result.small_sample.factor if result.vcov_type == "CR1" else 1.0,
        eta=s.get_column("eta").to_numpy(),
        beta=result.estimate,
        rows=np.arange(s.height),
        x=_covariates(s, result.columns),
    )


def _covariates(s: pl.DataFrame, columns: Mapping[str, Any]) -> np.ndarray:
    """The covariate columns ``_x0``, ... of a fit's cells ``s`` (n × k; n × 0 without covariates)."""
    cols = covariate_columns(columns)
    if not cols:
        return np.zeros((s.height, 0))
    return np.column_stack([s.get_column(c).to_numpy().astype(float) for c in cols])


def _count_designs(result: CountsResult) -> tuple[_Design, ...]:
    """One design per Poisson fit: per race (race-specific form) or the two-race Poisson."""
    s = result.sample.with_row_index("_row")
    lookup = {c: i for i, c in enumerate(result.cluster_labels)}
    two_race = result.form == "two-race"
    parts = [s] if two_race else [s.filter(pl.col(RACE) == r) for r in result.race_pair]
    out = []
    for j, rows in enumerate(parts):
        if result.form == "two-race":
            fe = (
                _fe.codes_of(rows.get_column(UNIT), rows.get_column(PERIOD)),
                _fe.codes_of(rows.get_column(UNIT), rows.get_column("_focal")),
                _fe.codes_of(rows.get_column(_fe.GP)),
            )
            mask = rows.get_column("_focal").to_numpy().astype(float)
        else:
            fe = (_fe.codes_of(rows.get_column(UNIT)), _fe.codes_of(rows.get_column(_fe.GP)))
            mask = np.ones(rows.height)
        codes = np.array(
            [lookup[c] for c in rows.get_column(CLUSTER).cast(pl.String).to_list()], dtype=np.int64
        )
        offset = (
            np.log(rows.get_column(POPULATION).to_numpy())
            if result.exposure != "none"
            else np.zeros(rows.height)
        )
        out.append(
            _Design(
                family="poisson",
                y=rows.get_column(STOPS).to_numpy().astype(float),
                prior=np.ones(rows.height),
                offset=offset,
                d=rows.get_column("regressor").to_numpy().astype(float),
                mask=mask,
                fe_codes=fe,
                projector=_fe.WithinProjector(list(fe)),
                cluster_codes=codes,
                g=len(result.cluster_labels),
                factor=result.small_samples[j].factor if result.vcov_type == "CR1" else 1.0,
                eta=rows.get_column("eta").to_numpy(),
                beta=float(result.estimates[j]),
                rows=rows.get_column("_row").to_numpy(),
                x=np.zeros((rows.height, 0)),
            )
        )
    return tuple(out)


def _model(result: Result) -> tuple[tuple[_Design, ...], tuple[_Term, ...]]:
    """The designs of a result and its reported terms as contrasts of their coefficients.

    A DiD has one design and one term; an event study one design and one term per estimated event
    time (:func:`_event_designs`: each term's null leaves the other event-time dummies free). A
    race-specific count model has the focal and the reference
    Poisson and three terms, (1, 0), (0, 1) and the difference (1, -1), whose influence is the
    difference of the two fits' stacked cluster influences; the two-race form has one of each.
    """
    if isinstance(result, DidResult):
        des = _design(result)
        term = _Term(result.term, (1.0,), result.estimate, result.std_error, des.factor, result.clusters.g)
        return (des,), (term,)
    if isinstance(result, EventStudyResult):
        designs = _event_designs(result)
        m = len(designs)
        return designs, tuple(
            _Term(
                f"event:{e}",
                tuple(float(j == i) for j in range(m)),
                float(result.estimates[i]),
                float(result.std_errors[i]),
                designs[i].factor,
                result.clusters.g,
            )
            for i, e in enumerate(result.estimated)
        )
    designs = _count_designs(result)
    ses = result.std_errors
    weights = [(1.0,)] if result.form == "two-race" else [(1.0, 0.0), (0.0, 1.0), (1.0, -1.0)]
    terms = tuple(
        _Term(
            name,
            w,
            float(result.estimates[i]),
            float(ses[i]),
            result.small_samples[i].factor if result.vcov_type == "CR1" else 1.0,
            result.n_clusters_by_term[i],
        )
        for i, (name, w) in enumerate(zip(result.terms, weights, strict=True))
    )
    return designs, terms


def _cluster_text(result: Result) -> str:
    return f"by {result.columns['cluster']} ({result.clusters.describe()})"


def _attach(
    result: Result,
    label: str,
    p_values: dict[str, float],
    cis: dict[str, tuple[float, float]],
    *,
    method: Method,
    alpha: float,
    t_reference: Mapping[str, tuple[float, float, float]] | None = None,
) -> Any:
    """``result.with_inference``; the covariates, partialled out by every method, are named on it.

    ``t_reference`` (analytical methods: each term's estimate, SE and df) lets ``tidy`` rescale the
    interval to any level; resampled intervals hold at ``alpha`` only.
    """
    covariates = tuple(getattr(result, "covariates", ()))
    inference = Inference(
        label, p_values, cis, covariates=covariates, method=method, alpha=alpha, t_reference=t_reference or {}
    )
    return result.with_inference(inference)


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


def _mc_p(hits: Any, draws: int, enumerated: bool) -> Any:
    """The p-value of a resampling test with ``hits`` of ``draws`` statistics at least the sample one.

    ``hits / draws`` when the draws enumerate every assignment (the sample's own is among them, so
    p ≥ 1/draws); else ``(1 + hits) / (1 + draws)``, which counts the sample as a draw and is never 0
    (Davison & Hinkley 1997, eq. 4.11): a p of 0 from 999 random draws would claim more than they show.
    ``hits`` may be an int (a float comes back) or an array of candidate counts (elementwise).
    """
    return hits / draws if enumerated else (1 + hits) / (1 + draws)


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


def _lagrange(xs: np.ndarray, x: float) -> np.ndarray:
    """Weights of the values at nodes ``xs`` in the interpolating polynomial at ``x``."""
    out = np.ones(xs.size)
    for i in range(xs.size):
        for j in range(xs.size):
            if i != j:
                out[i] *= (x - xs[j]) / (xs[i] - xs[j])
    return out


def _invert_ri(
    t_star: Callable[[float], np.ndarray],
    t_obs: Callable[[float], float],
    *,
    exact: bool,
    alpha: float,
    estimate: float,
    scale: float,
    tol: float,
    start: tuple[float, float] | None = None,
    known: dict[float, np.ndarray] | None = None,
    max_expand: int = 30,
) -> tuple[float, float]:
    r"""The RI interval {β₀ : p(β₀) > α}: ends bracketed to within ``tol·scale``, midpoints returned.

    At β₀ = ``estimate`` the sample t is 0, so p = 1: it is inside without evaluation. Each side
    starts at ``start`` (:func:`randomization_inference` passes the estimate ± 1.05 × the critical
    :math:`|t^*|` at β₀ = 0; ``estimate ± 2·scale`` when None) and moves away
    from ``estimate`` until p ≤ α (NaN after ``max_expand`` steps); the bracket is then closed. Both
    steps predict the crossing from what the evaluations made so far contain — the whole vector
    :math:`t^*(\beta_0)`, not only p: each assignment's :math:`t^*_k` is smooth in β₀, so it is
    interpolated (polynomial through the three evaluated β₀ nearest the bracket; ``known`` may hold
    evaluations already made, e.g. β₀ = 0 for the p-value) and the zero of the interpolated
    :func:`_ri_gap` is found by Brent's method, at no cost. Exact evaluations just inside and just
    outside the prediction (``tol·scale`` apart) then close the bracket (a prediction made from
    evaluations more than 20 tolerances away is first evaluated alone); when the prediction misses,
    the evaluation that missed lies near the crossing and makes the next prediction accurate (after
    six rounds the steps are bisections). Every bracket end is an exact evaluation, so the result is
    that of bisection to the same tolerance (same bracket semantics, same monotonicity assumption);
    only the number of evaluations differs (about four per side instead of ten to thirteen; for the
    GLMs each costs a refit of every assignment).
    """
    from scipy.optimize import brentq

    nodes: dict[float, np.ndarray] = dict(known or {})
    width = tol * scale
    half = 0.495 * width

    def gap_of(t: np.ndarray, b: float) -> float:
        return max(min(_ri_gap(t, t_obs(b), exact, alpha), 1e300), -1e300)

    def gap(b: float) -> float:
        if b not in nodes:
            nodes[b] = t_star(b)
        return gap_of(nodes[b], b)

    def predicted(lo: float, hi: float, near: float) -> float | None:
        """The zero in [lo, hi] of the gap of the interpolated t*, or None when it has none there."""
        xs = np.array(sorted(nodes, key=lambda x: abs(x - near))[:3])
        if xs.size < 2:
            return None
        values = np.vstack([nodes[x] for x in xs])

        def g(b: float) -> float:
            return gap_of(_lagrange(xs, b) @ values, b)

        g_lo, g_hi = g(lo), g(hi)
        if not (g_lo * g_hi < 0):
            return None
        return float(brentq(g, lo, hi, xtol=0.05 * width))

    firsts = start if start is not None else (estimate - 2.0 * scale, estimate + 2.0 * scale)
    brackets = []
    for sign, first in zip((-1.0, 1.0), firsts, strict=True):  # phase 1: an outside point per side
        if not (math.isfinite(first) and sign * (first - estimate) > 0):
            first = estimate + sign * 2.0 * scale
        inner, outer = estimate, first
        for _ in range(max_expand):
            g_out = gap(outer)
            if g_out == -1e300:  # too few assignments for p to exceed alpha: no interval
                return (math.nan, math.nan)
            if g_out < 0:
                break
            inner, far = outer, estimate + 2.0 * (outer - estimate)
            guess = predicted(*sorted((inner, far)), near=inner)
            outer = far if guess is None else guess + sign * max(0.25 * abs(guess - inner), width)
            if sign * (outer - far) > 0:
                outer = far
        else:
            outer = math.nan
        brackets.append((sign, inner, outer))
    ends = []
    for sign, inner, outer in brackets:  # phase 2: close each bracket
        if math.isnan(outer):
            ends.append(math.nan)
            continue
        rounds = 0
        while abs(outer - inner) > width:
            lo, hi = sorted((inner, outer))
            guess = predicted(lo, hi, near=0.5 * (lo + hi)) if rounds < 6 else None
            guess = min(max(0.5 * (lo + hi) if guess is None else guess, lo + half), hi - half)
            rounds += 1
            # just inside, then just outside the prediction; when the first lands outside, the
            # second is out of the bracket and skipped, and the new node sharpens the next prediction.
            # A prediction from distant evaluations only (likely to miss) is evaluated alone first.
            trials = [guess - sign * half, guess + sign * half]
            if min(abs(x - guess) for x in nodes) > 20 * width and rounds < 6:
                trials = [guess]
            for x in trials:
                if min(inner, outer) < x < max(inner, outer):
                    if gap(x) >= 0:
                        inner = x
                    else:
                        outer = x
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
def cr3(result: Result, *, alpha: float = 0.05) -> Result:
    r"""CR3 (cluster jackknife) p-values and intervals for the treatment coefficients.

    Each cluster is left out in turn and the model refitted on the rest (units and group-periods
    left without focal or reference stops — logit — or without stops — Poisson — are dropped first,
    as in the full fit); for each term :math:`V_3 = \frac{G-1}{G}\sum_g(\hat\beta_{(g)}-\hat\beta)^2`
    with G the term's clusters (MacKinnon, Nielsen & Webb 2023); p and interval from t(G-1). For a
    count model every row is covered: each race's coefficient and their difference (both races
    refitted on the same leave-one-out sample).

    Parameters
    ----------
    result
        A fitted :class:`~stopdisparity.models.did.DidResult`,
        :class:`~stopdisparity.models.counts.CountsResult` or
        :class:`~stopdisparity.models.event_study.EventStudyResult` (the whole event study is refitted
        on each leave-one-cluster-out sample; every event-time term gets its :math:`V_3`).
    alpha
        Level of the interval (1 - alpha coverage).

    Returns
    -------
    DidResult or CountsResult
        A copy with CR3 p-values, intervals and label; ``std_error`` unchanged. The jackknife SEs
        are in the label.

    Raises
    ------
    SpecificationError
        When a leave-one-out sample leaves a treatment coefficient unidentified (e.g. G₁ = 1).
    """
    _check_alpha(alpha)
    _check_result(result, "cr3")
    _, terms = _model(result)
    betas = _jackknife(result)
    p_values, cis, ses, reference = {}, {}, [], {}
    for i, term in enumerate(terms):
        var3 = (term.g - 1) / term.g * float(np.sum((betas[:, i] - term.estimate) ** 2))
        se3 = math.sqrt(var3)
        _, p, lo, hi = _fe.inference_stats(term.estimate, se3, alpha, term.g - 1)
        p_values[term.name], cis[term.name] = p, (lo, hi)
        reference[term.name] = (term.estimate, se3, float(term.g - 1))
        ses.append(f"{term.name} {se3:.4g}" if len(terms) > 1 else f"{se3:.4g}")
    gs = sorted({t.g - 1 for t in terms})
    label = f"CR3 jackknife {_cluster_text(result)}; SE {', '.join(ses)}; t({', '.join(map(str, gs))})"
    return _attach(result, label, p_values, cis, method="cr3", alpha=alpha, t_reference=reference)


def _cr2_fit(des: _Design, z: np.ndarray, contrasts: np.ndarray) -> _cr2.Cr2Fit:
    """A design in the whitened form of :mod:`~stopdisparity.models._cr2` (final IRLS/WLS weights)."""
    if des.family == "gaussian":
        w, resid = des.prior, des.y - des.eta
    else:
        mu, w = _mean_weight(des.family, des.eta, des.prior)
        var = mu * (1.0 - mu) if des.family == "binomial" else mu
        resid = (des.y - mu) / var
    return _cr2.Cr2Fit(des.fe_codes, z, w, resid, des.cluster_codes, des.g, contrasts)


def _event_cr2_fit(designs: tuple[_Design, ...], terms: Iterable[int]) -> _cr2.Cr2Fit:
    """The whole event study as one CR2 fit, with a contrast per event-time term in ``terms``.

    Columns: every event-time dummy in order, then the covariates; ``terms`` index ``designs``.
    """
    first = designs[0]
    z = np.column_stack([first.d, first.x])
    return _cr2_fit(first, z, np.eye(z.shape[1])[:, list(terms)])


def pretrend_cr2(result: EventStudyResult) -> _cr2.HtzTest:
    """Joint test of the leads with the CR2 covariance and the HTZ reference (Pustejovsky & Tipton 2018).

    The analytical remedy for the CR1 Wald test's over-rejection with few effective clusters; the
    leads are :attr:`~stopdisparity.models.event_study.EventStudyResult.leads`.
    """
    designs, _ = _model(result)
    idx = [result.estimated.index(e) for e in result.leads]
    return _cr2.wald_htz(_event_cr2_fit(designs, idx), np.asarray(result.estimates)[idx])


def cr2(result: Result | EtwfeResult | SunAbrahamResult, *, alpha: float = 0.05) -> Any:
    r"""CR2 (bias-reduced) p-values and intervals with Bell–McCaffrey degrees of freedom.

    The remedy for CR1's downward bias when the treatment's information sits in a few clusters
    (Bell & McCaffrey 2002; Imbens & Kolesár 2016; Pustejovsky & Tipton 2018): CR2 variance of each
    term from the final IRLS (or WLS) weights, all fixed-effect dummies in the hat matrix, and a
    t reference with the Bell–McCaffrey df of that term (:mod:`~stopdisparity.models._cr2`). No
    refits: it costs one dense cross-product of the coefficients. The treatment term of a DiD (and its
    percentage-point effect: ``pp_ci_low``/``pp_ci_high``; covariate rows keep the analytical
    inference), every row of a count model (each race and the difference), every event-time term of an
    event study, and every link-scale aggregate of an
    ETWFE fit without covariates (:class:`~stopdisparity.models._etwfe.EtwfeResult`: the pooled
    regression with one dummy per treated cell; ``pp_change`` keeps its delta-method SE).

    Returns
    -------
    DidResult, CountsResult, EventStudyResult or EtwfeResult
        A copy with CR2 p-values, intervals and label; ``std_error`` unchanged (the CR2 SEs and dfs
        are in the label).
    """
    _check_alpha(alpha)
    if isinstance(result, EtwfeResult | SunAbrahamResult):
        return _cr2_staggered(result, alpha)
    _check_result(result, "cr2")
    designs, terms = _model(result)
    logit_did = isinstance(result, DidResult) and result.estimator == "twfe-logit"
    if isinstance(result, EventStudyResult):
        fits = [_event_cr2_fit(designs, range(len(designs)))]
        weights = np.array([[t.weights for t in terms]])  # one fit, its m contrasts: the identity
    elif logit_did:
        fits = [_logit_pp_fit(designs[0])]  # two contrasts: the coefficient and the pp effect
        weights = np.eye(2)[None]
    else:
        fits = [
            _cr2_fit(des, np.column_stack([des.d, des.x]), np.eye(1 + des.x.shape[1])[:, :1])
            for des in designs
        ]
        weights = np.array([[[t.weights[j]] for t in terms] for j in range(len(designs))])
    res = _cr2.combine([_cr2.cr2_parts(f) for f in fits], weights)
    names = [t.name for t in terms]
    estimates = [t.estimate for t in terms]
    ses, dfs = list(res.std_errors), list(res.df)
    if isinstance(result, DidResult):  # the pp effect: its own contrast (logit), 100 β (linear)
        if not logit_did:
            ses, dfs = [*ses, 100.0 * ses[0]], [*dfs, dfs[0]]
        names, estimates = [*names, PP_TERM], [*estimates, result.pp_change]
    p_values, cis, reference = _cr2_tests(names, estimates, ses, dfs, alpha)
    parts = [f"SE {se:.4g}, t({df:.1f})" for se, df in zip(ses[: len(terms)], dfs[: len(terms)], strict=True)]
    if len(terms) > 1:
        parts = [f"{name} {what}" for name, what in zip(names, parts, strict=True)]
    label = _cr2_label(_cluster_text(result), "; ".join(parts))
    return _attach(result, label, p_values, cis, method="cr2", alpha=alpha, t_reference=reference)


def _logit_pp_fit(des: _Design) -> _cr2.Cr2Fit:
    r"""The logit DiD with two CR2 contrasts: its coefficient and its percentage-point effect.

    The pp contrast is the effect's gradient over all coefficients, fixed-effect dummies included
    (:func:`~stopdisparity.models.did.pp_gradient`: :math:`X'a + c\,e_\beta`), so the pp interval
    gets its own CR2 SE and Bell–McCaffrey df.
    """
    _, a, c = pp_gradient(des.eta, des.beta, des.d, des.prior)
    z = np.column_stack([des.d, des.x])
    grad_z = z.T @ a
    grad_z[0] += c
    grad_fe = np.concatenate(
        [np.bincount(codes, weights=a, minlength=int(codes.max()) + 1) for codes in des.fe_codes]
    )
    contrasts = np.column_stack([np.eye(z.shape[1])[:, 0], 100.0 * grad_z])
    fe_contrasts = np.column_stack([np.zeros(grad_fe.size), 100.0 * grad_fe])
    return dataclasses.replace(_cr2_fit(des, z, contrasts), fe_contrasts=fe_contrasts)


def _cr2_tests(
    names: Sequence[str],
    estimates: Sequence[float] | np.ndarray,
    ses: Sequence[float] | np.ndarray,
    dfs: Sequence[float] | np.ndarray,
    alpha: float,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, tuple[float, float, float]]]:
    """p-values, intervals and (estimate, SE, df) of each term: CR2 SE, t on its Bell-McCaffrey df."""
    p_values, cis, reference = {}, {}, {}
    for j, name in enumerate(names):
        est, se, df = float(estimates[j]), float(ses[j]), float(dfs[j])
        _, p, lo, hi = _fe.inference_stats(est, se, alpha, df)
        p_values[name], cis[name], reference[name] = p, (lo, hi), (est, se, df)
    return p_values, cis, reference


def _cr2_label(where: str, detail: str) -> str:
    return f"CR2 (Bell-McCaffrey) {where}; {detail}"


def _cr2_staggered(result: EtwfeResult | SunAbrahamResult, alpha: float) -> Any:
    """CR2 of every reported aggregate of an ETWFE (link scale) or Sun-Abraham fit, from its regression."""
    if result.cr2_fit is None:
        raise SpecificationError(
            "cr2 for etwfe needs a fit without covariates (their cell slopes make each aggregate a "
            "function of the covariate means); drop --covariates or use the analytical CR1"
        )
    if isinstance(result, EtwfeResult):
        terms = result.aggregates.get_column("term").to_list()
        estimates = result.aggregates.get_column("estimate").to_numpy()
    else:
        terms = [f"e:{e}" for e in result.event_times] + ["att"]
        terms += [f"cohort:{g}" for g in result.cohort_weights]
        estimates = np.concatenate(
            [result.coefficients, [result.att[0]], [v[0] for v in result.cohort_effects().values()]]
        )
    res = _cr2.cr2(result.cr2_fit)
    p_values, cis, reference = _cr2_tests(terms, estimates, res.std_errors, res.df, alpha)
    j = terms.index("att")
    head = f"att SE {res.std_errors[j]:.4g}, t({res.df[j]:.1f}); each row its own df"
    where = (
        _cluster_text(result)  # type: ignore[arg-type]
        if isinstance(result, EtwfeResult)
        else f"by {result.columns.get('cluster')} (G={result.n_clusters})"
    )
    inference = Inference(
        _cr2_label(where, head), p_values, cis, method="cr2", alpha=alpha, t_reference=reference
    )
    return result.with_inference(inference)


def _jackknife(result: Result) -> np.ndarray:
    """Leave-one-cluster-out estimates, G × terms."""
    s = result.sample
    labels = s.get_column(CLUSTER).cast(pl.String)
    out = []
    for lab in sorted(labels.unique().to_list()):
        keep = s.filter(labels != lab)
        try:
            if isinstance(result, CountsResult):
                out.append(refit_counts(result, keep).estimates)
                continue
            if isinstance(result, EventStudyResult):
                out.append(_refit_event(result, keep))
                continue
            out.append(np.array([result.refit(keep).estimate]))
        except SpecificationError as e:
            raise SpecificationError(
                f"leaving out cluster {lab!r} leaves a treatment coefficient unidentified ({e}); CR3 needs "
                "G₁ ≥ 2"
            ) from e
    return np.vstack(out)


def _refit_event(result: EventStudyResult, keep: pl.DataFrame) -> np.ndarray:
    """The event-time coefficients of an event study refitted on cells ``keep`` (same model and drops)."""
    if result.estimator == "logit":
        keep, _ = _fe.drop_separated(
            keep.with_columns(_fe.gp_expr(_multi_group(result))), [UNIT, _fe.GP], ["focal", "reference"]
        )
        keep = keep.drop(_fe.GP)
    if keep.height == 0:
        raise SpecificationError("no cells left")
    _, projector, _ = _fixed_effects(keep, _multi_group(result))
    dums = _event_dummies(keep.get_column("event_bin").fill_null(_NO_EVENT).to_numpy(), result.estimated)
    n = keep.get_column("n").to_numpy().astype(float)
    logit = result.estimator == "logit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = _fe.fit_glm(
            keep.get_column("focal").to_numpy() / n,
            np.column_stack([dums, _covariates(keep, result.columns)]),
            projector,
            family="binomial" if logit else "gaussian",
            prior=n if logit else keep.get_column("weight").to_numpy(),
            eta_start=keep.get_column("eta").to_numpy() if logit else None,
            names=[*(f"event:{e}" for e in result.estimated), *result.covariates],
        )
    return np.asarray(fit.beta[: len(result.estimated)], dtype=float)


# ------------------------------------------------------------------------------- wild bootstrap
@dataclass(frozen=True, eq=False)
class WildBootstrap:
    """The pieces of a wild cluster restricted bootstrap, linear in the null value β₀.

    ``t_stat(beta0)`` is the sample CR1 t of H0: β = β₀ and ``t_star(beta0)`` the B bootstrap t's
    (weights ``v``, B × G); ``p_value(beta0)`` the share of |t*| ≥ |t| (:func:`_mc_p`).
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
        """Share of bootstrap |t*| at least |t| (:func:`_mc_p`: never 0 with random draws)."""
        t_star = self.t_star(beta0)
        return _mc_p(int(np.sum(_exceed(t_star, self.t_stat(beta0)))), t_star.size, self.enumerated)


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


def _check_linear(result: object) -> None:
    linear = (isinstance(result, DidResult) and result.estimator == "twfe-linear") or (
        isinstance(result, EventStudyResult) and result.estimator == "linear"
    )
    if not linear:
        got = getattr(result, "estimator", type(result).__name__)
        raise SpecificationError(
            f"the wild cluster bootstrap applies to linear results (twfe-linear, a linear event study); "
            f"got {got!r} (use method='score' for the GLMs: twfe-logit, twfe-poisson, a logit event study)"
        )


def _wild_of(des: _Design, v: np.ndarray, enumerated: bool) -> WildBootstrap:
    """The wild bootstrap of one design's ``d``, the fixed effects and ``x`` partialled out."""
    return wild_bootstrap_arrays(
        des.y,
        des.d,
        des.prior,
        des.partialler(des.prior),
        des.cluster_codes,
        v,
        factor=des.factor,
        enumerated=enumerated,
    )


def wild_bootstrap_setup(
    result: DidResult | EventStudyResult,
    *,
    term: str | None = None,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
) -> WildBootstrap:
    """Precompute the wild cluster restricted bootstrap of one term (default: the first) of a linear result.

    A ``twfe-linear`` :class:`~stopdisparity.models.did.DidResult` (its treatment) or a linear
    :class:`~stopdisparity.models.event_study.EventStudyResult` (``term`` = ``event:<e>``; the other
    event-time dummies stay free regressors); covariates are partialled out with the fixed effects
    (see the module notes).
    """
    _check_draws(draws)
    _check_linear(result)
    designs, terms = _model(result)
    names = [t.name for t in terms]
    check_choice("term", term if term is not None else names[0], tuple(names))
    des = designs[names.index(term) if term is not None else 0]
    v, enumerated = _weights(weights, des.g, draws, seed)
    return _wild_of(des, v, enumerated)


def wild_cluster_bootstrap(
    result: DidResult | EventStudyResult,
    *,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
    impose_null: bool = True,
    alpha: float = 0.05,
    ci: bool = True,
) -> DidResult | EventStudyResult:
    r"""Wild cluster restricted (WCR) bootstrap p-values and test-inversion intervals (linear models).

    Every term gets its own restricted bootstrap with the same weights: the treatment of a
    ``twfe-linear`` DiD, or each estimated event time of a linear event study, whose null
    :math:`\beta_e = \beta_0` is imposed with the other event-time dummies (and any covariates)
    free (Roodman et al. 2019: the regressors not tested are partialled out with the fixed effects).

    Parameters
    ----------
    result
        A ``twfe-linear`` :class:`~stopdisparity.models.did.DidResult` or a linear
        :class:`~stopdisparity.models.event_study.EventStudyResult`.
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
    DidResult or EventStudyResult
        A copy with the bootstrap p-values, intervals and label; ``std_error`` unchanged.
    """
    _check_alpha(alpha)
    _check_draws(draws)
    if impose_null is not True:
        raise SpecificationError(
            f"only the restricted wild bootstrap (impose_null=True, WCR) is implemented; got {impose_null!r}"
        )
    _check_linear(result)
    designs, terms = _model(result)
    v, enumerated = _weights(weights, designs[0].g, draws, seed)
    p_values, cis = {}, {}
    for des, term in zip(designs, terms, strict=True):
        boot = _wild_of(des, v, enumerated)
        p_values[term.name] = boot.p_value(0.0)
        cis[term.name] = (
            _invert(boot.p_value, term.estimate, term.std_error, alpha, tol=1e-6)
            if ci
            else (math.nan, math.nan)
        )
    label = (
        f"wild cluster restricted bootstrap ({_weights_text(weights, v, enumerated)}, "
        f"null imposed; {_ci_text(ci, alpha)}) {_cluster_text(result)}"
    )
    return _attach(result, label, p_values, cis, method="wild", alpha=alpha)


# ------------------------------------------------------------------------------ score bootstrap
@dataclass(frozen=True, eq=False)
class _NullModel:
    r"""One term's designs stacked, for fits with the term's null :math:`c'\theta = \beta_0` imposed.

    The coefficients θ of the designs in the term's support (weights c ≠ 0) are reparametrised as
    :math:`\theta = a\phi + B\nu` with :math:`a = c/c'c` and B an orthonormal basis of the
    complement of c, so that :math:`\phi = c'\theta` is the tested quantity and ν the free
    coefficients under the null. The stacked model has the designs' rows, each design's fixed effects
    (race-interacted for a count model), the regressor :math:`Xa` (``tested``) and the columns
    :math:`XB`, then each design's free regressors ``x`` (covariates; an event study's other
    event-time dummies), zero on the other designs' rows (together ``nuisance``; none for a single
    design without covariates). For a race-specific count model's difference
    (c = (1, -1)) the null model is the stacked Poisson with a common treatment effect and the offset
    :math:`\beta_0 D` on the focal rows.
    """

    family: str
    y: np.ndarray
    prior: np.ndarray
    offset: np.ndarray
    tested: np.ndarray
    nuisance: np.ndarray
    projector: _fe.WithinProjector
    cluster_codes: np.ndarray
    g: int
    eta: np.ndarray
    estimate: float
    support: tuple[int, ...]
    a: np.ndarray
    basis: np.ndarray

    def fit(self, beta0: float) -> _fe.GlmFit:
        r"""The restricted fit: offset :math:`\beta_0 Xa`, the fixed effects and ``nuisance`` free."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _fe.fit_glm(
                self.y,
                self.nuisance,
                self.projector,
                family=self.family,
                prior=self.prior,
                offset=self.offset + beta0 * self.tested,
                eta_start=self.eta + (beta0 - self.estimate) * self.tested,
            )

    def theta(self, beta0: float) -> np.ndarray:
        """The support designs' coefficients under the null (the free ones at their restricted fit)."""
        if self.basis.shape[1] == 0:
            return self.a * beta0
        return self.a * beta0 + self.basis @ self.fit(beta0).beta[: self.basis.shape[1]]

    def cluster_scores(self, beta0: float) -> np.ndarray:
        r"""Cluster sums of the restricted score of φ, the fixed effects and ν partialled out.

        :math:`s_g = \sum_{i\in g}\psi_i\tilde x_i`, :math:`\tilde x` the tested regressor
        residualised on the fixed effects and ``nuisance`` under the restricted IRLS weights (the
        efficient score of Kline & Santos 2012, section 3).
        """
        fit = self.fit(beta0)
        xt = fit.projection.residualize(self.tested)
        if self.nuisance.shape[1]:
            coef = np.linalg.solve(fit.hessian, fit.x_tilde.T @ (fit.weights * xt))
            xt = xt - fit.x_tilde @ coef
        return _fe.cluster_sums(fit.psi * xt, self.cluster_codes, self.g)[:, 0]


def _null_model(designs: tuple[_Design, ...], term: _Term) -> _NullModel:
    import scipy.linalg

    support = tuple(j for j, c in enumerate(term.weights) if c != 0)
    parts = [designs[j] for j in support]
    c = np.array([term.weights[j] for j in support])
    a = c / float(c @ c)
    basis = scipy.linalg.null_space(c[None, :])
    if len({len(p.fe_codes) for p in parts}) != 1 or len({p.family for p in parts}) != 1:
        raise SpecificationError("the designs of a term must share a family and a fixed-effect structure")
    if len(parts) == 1:
        projector = parts[0].projector
    else:
        codes = []
        for f in range(len(parts[0].fe_codes)):
            shift, cols = 0, []
            for p in parts:
                cols.append(p.fe_codes[f] + shift)
                shift += int(p.fe_codes[f].max()) + 1
            codes.append(np.concatenate(cols))
        projector = _fe.WithinProjector(codes)
    sizes = [p.y.shape[0] for p in parts]
    free = [np.concatenate([b[i] * p.d for i, p in enumerate(parts)]) for b in basis.T]
    for i, p in enumerate(parts):  # each design's own free regressors, zero on the others' rows
        start = sum(sizes[:i])
        for col in p.x.T:
            full = np.zeros(sum(sizes))
            full[start : start + sizes[i]] = col
            free.append(full)
    nuisance = np.column_stack(free) if free else np.zeros((sum(sizes), 0))
    return _NullModel(
        family=parts[0].family,
        y=np.concatenate([p.y for p in parts]),
        prior=np.concatenate([p.prior for p in parts]),
        offset=np.concatenate([p.offset for p in parts]),
        tested=np.concatenate([a[i] * p.d for i, p in enumerate(parts)]),
        nuisance=nuisance,
        projector=projector,
        cluster_codes=np.concatenate([p.cluster_codes for p in parts]),
        g=parts[0].g,
        eta=np.concatenate([p.eta for p in parts]),
        estimate=term.estimate,
        support=support,
        a=a,
        basis=basis,
    )


@dataclass(frozen=True, eq=False)
class ScoreBootstrap:
    """Kline-Santos score bootstrap of one term of a GLM result; ``p_value(beta0)`` refits the null."""

    null: _NullModel
    v: np.ndarray
    enumerated: bool

    def cluster_scores(self, beta0: float) -> np.ndarray:
        """Cluster sums of the restricted score under H0: term = β₀ (see :class:`_NullModel`)."""
        return self.null.cluster_scores(beta0)

    def t_stat(self, beta0: float) -> float:
        r"""The score statistic :math:`\sum_g s_g/\sqrt{\sum_g s_g^2}`."""
        s = self.cluster_scores(beta0)
        den = math.sqrt(float(np.sum(s**2)))
        return float(np.sum(s)) / den if den > 0 else 0.0

    def p_value(self, beta0: float) -> float:
        """Share of |t*| ≥ |t| for H0: term = β₀ (:func:`_mc_p`: never 0 with random draws)."""
        s = self.cluster_scores(beta0)
        den = math.sqrt(float(np.sum(s**2)))
        t = float(np.sum(s)) / den if den > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t_star = (self.v @ s) / np.sqrt((self.v**2) @ (s**2))
        return _mc_p(int(np.sum(_exceed(t_star, t))), t_star.size, self.enumerated)


def _check_glm(result: object, method: str) -> None:
    _check_result(result, method)
    if isinstance(result, DidResult | EventStudyResult) and result.estimator not in ("twfe-logit", "logit"):
        raise SpecificationError(
            f"the {method} applies to GLM results (twfe-logit, twfe-poisson, a logit event study); got "
            f"{result.estimator!r} (use method='wild' for the linear models)"
        )


def score_bootstrap_setup(
    result: Result,
    *,
    term: str | None = None,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
) -> ScoreBootstrap:
    """The score bootstrap of one term (default: the first) of a ``twfe-logit`` or count result."""
    _check_draws(draws)
    _check_glm(result, "score bootstrap")
    designs, terms = _model(result)
    names = [t.name for t in terms]
    check_choice("term", term if term is not None else names[0], tuple(names))
    chosen = terms[names.index(term)] if term is not None else terms[0]
    v, enumerated = _weights(weights, designs[0].g, draws, seed)
    return ScoreBootstrap(_null_model(designs, chosen), v, enumerated)


def score_bootstrap(
    result: Result,
    *,
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
    alpha: float = 0.05,
    ci: bool = True,
    tol: float = 1e-3,
) -> Result:
    r"""Score bootstrap (Kline & Santos 2012) p-values and test-inversion intervals for GLM results.

    ``twfe-logit`` (:class:`~stopdisparity.models.did.DidResult`) and the Poisson count models
    (:class:`~stopdisparity.models.counts.CountsResult`): every row is covered, each with its own
    restricted fit (:class:`_NullModel`) and the same weights ``v``. A race's row imposes
    :math:`\beta_r = \beta_0` in its own Poisson; the difference imposes
    :math:`\beta_f - \beta_r = \beta_0` in the stacked Poisson (race-interacted fixed effects, a
    common treatment effect free) and bootstraps the stacked cluster scores.

    Parameters
    ----------
    result
        A ``twfe-logit`` :class:`~stopdisparity.models.did.DidResult`, a
        :class:`~stopdisparity.models.counts.CountsResult` or a logit
        :class:`~stopdisparity.models.event_study.EventStudyResult` (each event-time term's null with
        the other event-time dummies free in the restricted fit).
    draws, weights, seed
        As :func:`wild_cluster_bootstrap` (Rademacher with G ≤ 12 enumerates 2^G vectors).
    alpha
        Level of the interval.
    ci
        Whether to invert the test for an interval (about 40 restricted fits per row; see the module
        notes).
    tol
        Bisection stops when the bracket is narrower than ``tol`` × the analytical SE.

    Returns
    -------
    DidResult or CountsResult
        A copy with the bootstrap p-values, intervals and label; ``std_error`` unchanged.

    Raises
    ------
    SpecificationError
        For a ``twfe-linear`` result (use :func:`wild_cluster_bootstrap`) or bad options.
    """
    _check_alpha(alpha)
    _check_draws(draws)
    _check_glm(result, "score bootstrap")
    designs, terms = _model(result)
    v, enumerated = _weights(weights, designs[0].g, draws, seed)
    p_values, cis = {}, {}
    for term in terms:
        boot = ScoreBootstrap(_null_model(designs, term), v, enumerated)
        p_values[term.name] = boot.p_value(0.0)
        cis[term.name] = (
            _invert(boot.p_value, term.estimate, term.std_error, alpha, tol=tol)
            if ci
            else (math.nan, math.nan)
        )
    label = (
        f"score bootstrap (Kline-Santos; {_weights_text(weights, v, enumerated)}, null imposed; "
        f"{_ci_text(ci, alpha)}) {_cluster_text(result)}"
    )
    return _attach(result, label, p_values, cis, method="score", alpha=alpha)


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

    def treatment_block(self, ks: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The treatment of estimation rows ``rows`` under assignments ``ks``: len(rows) × len(ks)."""
        units = self.assign[np.asarray(ks)][:, self.row_unit[rows]]
        return np.ascontiguousarray(self.paths[units, self.row_period[rows][None, :]].T)


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
    result: Result, *, within: str | None = "state", draws: int = 999, seed: int | None = None
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
    if isinstance(result, EventStudyResult):
        grid = _event_grid(result, unit_codes, period_codes)
    else:
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


def _event_grid(result: EventStudyResult, unit_codes: np.ndarray, period_codes: np.ndarray) -> np.ndarray:
    r"""Each unit's event-bin path over the sample's periods (units × periods), from its adoption date.

    A unit adopting at :math:`g` is at event time :math:`\lfloor (t-g)m/M\rfloor` in period t
    (:func:`~stopdisparity.models._event.event_time`), clipped to the window's binned end points;
    never-treated units are ``_NO_EVENT`` throughout. Every period has a value, so a path moved to
    another unit gives that unit's cells their event times under the assignment.
    """
    if not result.binned:
        raise SpecificationError(
            "randomization inference for an event study needs binned end points (bin_endpoints=True): "
            "with bin_endpoints=False the cells outside the window, which depend on the assignment, "
            "were dropped"
        )
    s = result.sample
    periods = np.unique(s.get_column(PERIOD).to_numpy()).astype(np.int64)
    ft = np.zeros(int(unit_codes.max()) + 1, dtype=np.int64)
    ft[unit_codes] = s.get_column("first_treated").to_numpy()
    e = _event.event_time(
        periods[None, :] - ft[:, None],
        months_per_period=result.months_per_period or 1,
        event_unit=result.event_unit,
    )
    lo, hi = result.window
    grid = np.where(ft[:, None] != 0, np.clip(e, lo, hi), _NO_EVENT).astype(float)
    observed = s.get_column("event_bin").fill_null(_NO_EVENT).to_numpy().astype(float)
    if not np.array_equal(grid[unit_codes, period_codes], observed):
        raise SpecificationError(
            "the event bins of the sample do not follow from first_treated and the period"
        )
    return grid


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

    def t_star_of(self, i: int, beta0: float) -> np.ndarray:
        """``t_star`` with the term index of :class:`_GlmRI` (a linear DiD has one term)."""
        return self.t_star(beta0)

    def t_star(self, beta0: float) -> np.ndarray:
        """The t statistics over the assignments under the sharp null β₀ (outcome y - β₀D)."""
        sc = self.c - beta0 * self.f
        se = np.sqrt(self.factor * np.sum(sc**2, axis=1)) / self.hp
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.beta_y - beta0 * self.beta_d) / se


def _linear_ri(des: _Design, asg: Assignments, chunk: int = 256) -> _LinearRI:
    w = des.prior
    partial = des.partialler(w)
    r = partial(np.column_stack([des.y, des.d]))
    yt, dt = r[:, 0], r[:, 1]
    ind = des.indicator
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("by", "bd", "hp", "c", "f")}
    n_a = asg.assign.shape[0]
    for start in range(0, n_a, chunk):
        dmat = asg.treatment_block(np.arange(start, min(start + chunk, n_a)), des.rows)
        dp = partial(dmat)
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


def _mean(family: str, eta: np.ndarray) -> np.ndarray:
    """Mean of a canonical-link GLM (logit binomial, log Poisson) at linear predictor ``eta``."""
    with np.errstate(over="ignore"):
        if family == "binomial":
            mu = np.exp(-eta)  # 1 / (1 + exp(-eta)) in place: twice as fast as scipy's expit
            mu += 1.0
            return np.reciprocal(mu, out=mu)
        return np.exp(eta)


def _mean_weight(family: str, eta: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and IRLS weight of a canonical-link GLM (logit binomial, log Poisson)."""
    mu = _mean(family, eta)
    return mu, prior * mu * (1.0 - mu) if family == "binomial" else prior * mu


def _fe_coef(proj: _fe.WeightedProjection, v: np.ndarray) -> np.ndarray:
    r"""Coefficients :math:`a` (a column per column of ``v``) of the weighted projection :math:`Fa` on F.

    The same arithmetic as :meth:`~stopdisparity.models._fe.WeightedProjection.fitted` up to its last
    product (``F @ a``, :func:`_fe_fitted`), which returns the fitted values bit for bit; the GLM RI keeps
    the coefficients so that every assignment's converged refit is stored in a few hundred numbers (a
    warm start for the next trial value, :func:`_glm_perm`).
    """
    p = proj.projector
    n_e = p._n_e
    b = proj._fw_t @ v
    t_e = b[:n_e] / proj.d[:, None]
    if not p._n_r:
        return np.asarray(t_e)
    rhs = b[n_e:] - proj.a_re @ t_e
    a_r = np.zeros_like(rhs)
    a_r[p._keep] = proj.chol @ rhs[p._keep]
    t_e -= (proj.a_re.T @ a_r) / proj.d[:, None]
    return np.concatenate([t_e, a_r])


def _fe_fitted(projector: _fe.WithinProjector, coef: np.ndarray) -> np.ndarray:
    """The dummies times coefficients from :func:`_fe_coef` (n × m)."""
    return np.asarray(projector._F @ coef)


#: A GLM RI refit set stored as coefficients, one column per assignment: the linear predictor's
#: departure from the restricted fit on the dummies (:math:`\eta_k-\eta_0-\beta_kD_k = Fa_k`), the
#: coefficients :math:`\beta_k`, and the residualised treatment :math:`r_k = D_k - Fc_k` (``(a, β, c)``;
#: NaN columns for assignments without a converged chord fit).
_PermState = tuple[np.ndarray, np.ndarray, np.ndarray]


def _glm_perm(
    des: _Design,
    asg: Assignments,
    offset: np.ndarray,
    eta_start: np.ndarray,
    chunk: int = 32,
    warm: _PermState | None = None,
) -> tuple[np.ndarray, np.ndarray, _PermState | None]:
    r"""Coefficient of the permuted treatment and its cluster influence (A × G), every assignment.

    The GLM (canonical link: logit binomial or log Poisson) has the design's fixed effects, offset
    ``offset`` and the permuted treatment :math:`D_k` (times the design's mask). All assignments start
    from one restricted fit (fixed effects only) with IRLS weights :math:`w_0` and its exact
    projection :math:`M_0`, and are solved together (columns of a matrix) by the chord method: Newton
    steps with the Hessian frozen at :math:`w_0`, i.e. weighted least squares of the working residual
    on the dummies and :math:`D_k`, which by Frisch–Waugh–Lovell needs only :math:`M_0` applied to the
    n × b block. Its fixed point solves the score equations exactly, so the estimates are the
    maximum-likelihood ones. The sandwich needs :math:`D_k` residualised under each column's final
    weights :math:`w`; it is computed by the preconditioned iteration
    :math:`r \leftarrow r - (I-M_0)((w/w_0)r)`, whose fixed point satisfies :math:`F'Wr = 0`.

    Speed: both fixed points hold whatever the rounding of the projection, so the iterations apply
    :math:`I - M_0` without its refinement step (half the cost); both converge linearly at a rate set
    by :math:`\max|w/w_0-1|`, which differs between columns (on the NC + SC panel the median column
    converges in about 6 steps, the slowest in 10), so converged columns leave the block at once
    instead of waiting for the slowest. Blocks of 32 assignments keep the working arrays near the
    cache (128 took a third longer; 8 and 16 about as long as 32). Columns that have not converged
    after ``_CHORD_MAX`` steps are refitted by :func:`~stopdisparity.models._fe.fit_glm`. The
    influence is :math:`s_g/H` (:func:`~stopdisparity.models._fe.cluster_influence`); assignments
    that leave :math:`D_k` collinear with the fixed effects give NaN.

    Warm starts (no covariates): the fits are tracked as coefficients on the dummies (:func:`_fe_coef`)
    and returned as a :data:`_PermState`; given ``warm`` (the states of earlier trial values, carried
    to this one by :class:`_GlmRI`), the chord iteration of assignment k starts at
    :math:`\eta_0 + Fa_k + \beta_kD_k` and the residual iteration at :math:`D_k - Fc_k` instead of at the
    restricted fit and :math:`M_0D_k`. The fixed points, hence the results (to the iteration
    tolerance), do not depend on the start; only the number of steps does (on the NC + SC panel
    about 7.6 chord steps per column from the restricted fit; 6 to 7 at the first trial values, which
    lie far from the evaluated ones; 1 to 3 next to evaluated ones, where :func:`_invert_ri` closes
    its brackets).

    Covariates (the design's ``x``) are free in every fit: the restricted fit has them beside the
    fixed effects, and :math:`M_0` becomes the projection off the dummies and :math:`x` under
    :math:`w_0`, :math:`v \mapsto M_0^F v - \tilde x(\tilde x'W_0\tilde x)^{-1}\tilde x'W_0v`
    (:math:`\tilde x = M_0^Fx`, Frisch–Waugh–Lovell); the chord step and the preconditioned
    iteration keep their form, so the fixed points are the full model's estimates and :math:`D_k`
    residualised on the dummies and :math:`x` under the final weights. With covariates there are no
    warm starts (``warm`` is ignored and no state is returned).
    """
    n = des.y.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit0 = _fe.fit_glm(
            des.y,
            des.x,
            des.projector,
            family=des.family,  # type: ignore[arg-type]
            prior=des.prior,
            offset=offset,
            eta_start=eta_start,
        )
    w0, eta0, proj0 = fit0.weights, fit0.eta, fit0.projection
    track = des.x.shape[1] == 0
    projector = des.projector
    if track:

        def project(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            c = _fe_coef(proj0, v)  # (I - M_0) in one pass; the fixed points do not need the refinement
            return _fe_fitted(projector, c), c

        def residualize0(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            c1 = _fe_coef(proj0, v)  # as WeightedProjection.residualize: one refinement step
            r = v - _fe_fitted(projector, c1)
            c2 = _fe_coef(proj0, r)
            r -= _fe_fitted(projector, c2)
            return r, c1 + c2

    else:
        fitted_fe = proj0._fitted
        partial0 = des.partialler(w0)
        xt0 = fit0.x_tilde
        hx_inv = np.linalg.inv(fit0.hessian)

        def project(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            return fitted_fe(v) + xt0 @ (hx_inv @ np.einsum("ij,i,ik->jk", xt0, w0, v)), None

        def residualize0(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            return partial0(v), None

    y, prior = des.y[:, None], des.prior[:, None]
    prior_w0 = (des.prior / w0)[:, None]
    y_w0 = des.y[:, None] * prior_w0

    def working(eta: np.ndarray) -> np.ndarray:
        """The working residual (y - μ)·prior/w₀, in four passes over the block."""
        with np.errstate(over="ignore"):
            if des.family == "binomial":
                z = np.exp(-eta)
                z += 1.0
                np.divide(prior_w0, z, out=z)  # prior/w0 · μ
            else:
                z = np.exp(eta)
                z *= prior_w0
        return np.subtract(y_w0, z, out=z)

    ind = des.indicator
    n_a = asg.assign.shape[0]
    beta_out = np.full(n_a, np.nan)
    infl_out = np.full((n_a, des.g), np.nan)
    n_coef = projector._F.shape[1]
    state: _PermState | None = None
    if track:
        state = (np.full((n_coef, n_a), np.nan), np.full(n_a, np.nan), np.full((n_coef, n_a), np.nan))
    for start in range(0, n_a, chunk):
        ks = np.arange(start, min(start + chunk, n_a))
        dmat = asg.treatment_block(ks, des.rows) * des.mask[:, None]
        dt0, cd = residualize0(dmat)
        h0 = np.einsum("i,ij,ij->j", w0, dt0, dt0)
        before = np.einsum("i,ij,ij->j", w0, dmat, dmat)
        ok = h0 > 1e-10 * np.maximum(before, 1e-300)
        if not ok.all():  # (column selections copy element by element: only when needed)
            dt0, dmat, ks, h0 = dt0[:, ok], dmat[:, ok], ks[ok], h0[ok]
            cd = None if cd is None else np.ascontiguousarray(cd[:, ok])
        b = ks.size
        # the start: the restricted fit, or the warm state where it has a converged column
        eta, beta = np.repeat(eta0[:, None], b, axis=1), np.zeros(b)
        a_start = np.zeros((n_coef, b))
        c_start = cd
        hot = np.zeros(b, dtype=bool)
        if cd is not None and warm is not None:
            w_a, w_b, w_c = (
                np.ascontiguousarray(warm[0][:, ks]),
                warm[1][ks],
                np.ascontiguousarray(warm[2][:, ks]),
            )
            hot = np.isfinite(w_b) & np.all(np.isfinite(w_a), axis=0) & np.all(np.isfinite(w_c), axis=0)
            if hot.all():
                a_start, beta, c_start = w_a, w_b.copy(), w_c
                eta += _fe_fitted(projector, a_start)
                eta += dmat * beta
            elif hot.any():
                a_start[:, hot], beta[hot] = w_a[:, hot], w_b[hot]
                c_start = cd.copy()
                c_start[:, hot] = w_c[:, hot]
                eta[:, hot] += _fe_fitted(projector, w_a[:, hot]) + dmat[:, hot] * w_b[hot]
        beta_start = beta.copy()
        # chord iterations; converged columns are stored and dropped from the block
        eta_fin, beta_fin, done = np.empty((n, b)), np.zeros(b), np.zeros(b, dtype=bool)
        acc_fin = np.zeros((n_coef, b))
        act, acc = np.arange(b), np.zeros((n_coef, b) if track else (0, b))
        dt, wdt, h = dt0, w0[:, None] * dt0, h0
        for _ in range(_CHORD_MAX):
            z = working(eta)
            db = np.einsum("ij,ij->j", wdt, z) / h
            step, c = project(z)
            step += dt * db[None, :]
            eta += step
            beta += db
            if c is not None:
                acc += c
            conv = _abs_colmax(step) < _CHORD_TOL
            if conv.any():
                if conv.all() and act.size == b:  # the whole block at once: no copies
                    eta_fin, beta_fin, acc_fin = eta, beta, acc
                    done[:] = True
                    break
                eta_fin[:, act[conv]] = eta[:, conv]
                beta_fin[act[conv]] = beta[conv]
                if track:
                    acc_fin[:, act[conv]] = acc[:, conv]
                done[act[conv]] = True
                if conv.all():
                    break
                keep = ~conv
                act, eta, beta, dt, wdt, h, acc = (
                    act[keep],
                    eta[:, keep],
                    beta[keep],
                    dt[:, keep],
                    wdt[:, keep],
                    h[keep],
                    acc[:, keep],
                )
        # the treatment residualised under each column's final weights, the same way (from the warm
        # state's residual where there is one)
        sel = np.flatnonzero(done)
        whole = sel.size == b
        mu, w = _mean_weight(des.family, eta_fin if whole else eta_fin[:, sel], prior)
        ratio = w / w0[:, None]
        c_sel = c_start if whole or c_start is None else c_start[:, sel]
        hot_sel = hot if whole else hot[sel]
        if c_sel is not None and hot_sel.all():
            r = (dmat if whole else dmat[:, sel]) - _fe_fitted(projector, np.ascontiguousarray(c_sel))
        else:
            r = dt0.copy() if whole else dt0[:, sel]
            if hot_sel.any() and c_sel is not None:
                r[:, hot_sel] = dmat[:, sel[hot_sel]] - _fe_fitted(projector, c_sel[:, hot_sel])
        r_fin, r_done = np.empty((n, sel.size)), np.zeros(sel.size, dtype=bool)
        act = np.arange(sel.size)
        racc = np.zeros((n_coef, sel.size) if track else (0, sel.size))
        racc_fin = np.zeros((n_coef, sel.size))
        for _ in range(_CHORD_MAX if sel.size else 0):
            change, c = project(ratio * r)
            r -= change
            if c is not None:
                racc += c
            conv = _abs_colmax(change) < _CHORD_TOL * _abs_colmax(r)
            if conv.any():
                if conv.all() and act.size == sel.size:
                    r_fin, racc_fin = r, racc
                    r_done[:] = True
                    break
                r_fin[:, act[conv]] = r[:, conv]
                if track:
                    racc_fin[:, act[conv]] = racc[:, conv]
                r_done[act[conv]] = True
                if conv.all():
                    break
                keep = ~conv
                act, r, ratio, racc = act[keep], r[:, keep], ratio[:, keep], racc[:, keep]
        hess = np.einsum("ij,ij,ij->j", w, r_fin, r_fin)
        sc = np.asarray(ind @ (prior * (y - mu) * r_fin))
        good = sel[r_done]
        beta_out[ks[good]] = beta_fin[good]
        infl_out[ks[good]] = (sc / hess[None, :]).T[r_done]
        if state is not None and c_start is not None:
            # eta = eta_0 + F a_start + beta_start D + sum of steps F c + (D - F cd) db
            a_fin = a_start + acc_fin - cd * (beta_fin - beta_start)[None, :]
            state[0][:, ks[good]] = a_fin[:, good]
            state[1][ks[good]] = beta_fin[good]
            state[2][:, ks[good]] = (c_start if whole else c_start[:, sel])[:, r_done] + racc_fin[:, r_done]
        for j in np.setdiff1d(np.arange(b), good):  # fallback: an ordinary IRLS fit
            beta_out[ks[j]], infl_out[ks[j]] = _glm_one(des, dmat[:, j], offset, eta0)
    return beta_out, infl_out, state


def _abs_colmax(a: np.ndarray) -> np.ndarray:
    """Largest |a| of each column of an n × b C-ordered block (exact; 4x faster than ``a.max(axis=0)``).

    Reductions over the rows of a narrow block loop over short rows; 16 rows at a time as one long row
    make the inner loop long.
    """
    n, b = a.shape
    m = n - n % 16
    top = a[:m].reshape(m // 16, 16 * b)
    out = np.maximum(top.max(axis=0, initial=0.0), -top.min(axis=0, initial=0.0)).reshape(16, b).max(axis=0)
    if m < n:
        out = np.maximum(out, np.abs(a[m:]).max(axis=0))
    return out


def _glm_one(des: _Design, dk: np.ndarray, offset: np.ndarray, eta0: np.ndarray) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = _fe.fit_glm(
                des.y,
                np.column_stack([dk, des.x]),
                des.projector,
                family=des.family,  # type: ignore[arg-type]
                prior=des.prior,
                offset=offset,
                eta_start=eta0,
            )
        except SpecificationError:  # the assignment leaves the treatment collinear with the FEs
            return math.nan, np.full(des.g, np.nan)
    return float(fit.beta[0]), _fe.cluster_influence(fit, des.cluster_codes, des.g)[:, 0]


@dataclass(frozen=True, eq=False)
class _GlmRI:
    r"""Randomization t statistics of every term of a GLM result under its sharp null.

    Under H0: term = β₀ each design j in the term's support gets the offset :math:`\theta_j D`
    (observed D), θ from :meth:`_NullModel.theta` (β₀ for a single design; for a count model's
    difference the focal race gets β₀ + ν̃ and the reference ν̃, ν̃ the common effect refitted under
    the null), and the permuted treatment's coefficients and influences combine as the term does:
    :math:`t^* = c'\beta^*/\sqrt{f\sum_g (c'\text{infl}_g)^2}`. For the observed assignment this is
    exactly :math:`(\hat\beta - \beta_0)/\text{SE}`. Refits are cached per (design, θ_j), so rows
    that share a null (the races at β₀ = 0) are computed once. Each refit set is also kept as
    coefficients (``states``, a few MB) and warm-starts the refits at later trial values: from the
    state at the nearest θ, or the parabola through the three nearest (the line through two when θ is
    far outside them) (:meth:`_warm`).
    """

    designs: tuple[_Design, ...]
    terms: tuple[_Term, ...]
    nulls: tuple[_NullModel, ...]
    asg: Assignments
    cache: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    states: dict[int, list[tuple[float, _PermState]]] = dataclasses.field(default_factory=dict)

    def _warm(self, j: int, theta: float) -> _PermState | None:
        """Design j's refits carried to θ: interpolated in θ through the stored states nearest to it."""
        near = sorted(self.states.get(j, []), key=lambda s: abs(s[0] - theta))[:3]
        if not near:
            return None
        if len(near) == 1 or near[0][0] == theta:
            return near[0][1]
        xs = np.array([s[0] for s in near])
        if len(near) == 3 and abs(xs[0] - theta) > 0.5 * (xs.max() - xs.min()):
            near, xs = near[:2], xs[:2]  # far outside the three: along the line through the nearest two
        lam = _lagrange(xs, theta)
        fe, beta, resid = (sum(c * s[1][part] for c, s in zip(lam, near, strict=True)) for part in range(3))
        return (np.asarray(fe), np.asarray(beta), np.asarray(resid))

    def _perm(self, j: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
        key = (j, float(theta))
        if key not in self.cache:
            des = self.designs[j]
            if len(self.cache) >= 8:
                self.cache.pop(next(iter(self.cache)))
            b, f, state = _glm_perm(
                des,
                self.asg,
                des.offset + theta * des.d,
                des.eta + (theta - des.beta) * des.d,
                warm=self._warm(j, float(theta)),
            )
            self.cache[key] = (b, f)
            if state is not None:  # the last 8 trial values (a few MB each), one state per value
                kept = [s for s in self.states.get(j, []) if s[0] != float(theta)][-7:]
                self.states[j] = [*kept, (float(theta), state)]
        return self.cache[key]

    def t_star(self, i: int, beta0: float) -> np.ndarray:
        """The t statistics of term ``i`` over the assignments under H0: term = β₀."""
        term, null = self.terms[i], self.nulls[i]
        num = np.zeros(self.asg.assign.shape[0])
        infl = np.zeros((self.asg.assign.shape[0], self.designs[0].g))
        for j, theta in zip(null.support, null.theta(beta0), strict=True):
            b, f = self._perm(j, float(theta))
            num = num + term.weights[j] * b
            infl = infl + term.weights[j] * f
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / np.sqrt(term.factor * np.sum(infl**2, axis=1))


@dataclass(frozen=True, eq=False)
class _EventRI:
    r"""Randomization t statistics of an event study's terms: every event-time dummy follows the assignment.

    Under assignment k each unit takes another unit's adoption path, which moves all its event-time
    dummies :math:`D_k` (n × m) at once; the model is refitted with :math:`D_k`, the fixed effects and
    the covariates, and term e's t is :math:`\hat\beta^*_e/\text{SE}^*_e` (CR1 of the refit). The
    sharp null of term e at β₀ is "effect β₀ at event time e, none at the others": the linear model
    shifts the outcome, :math:`y - \beta_0 D_e` (observed :math:`D_e`), so that everything is linear
    in β₀ and one pass over the assignments serves every term and trial value; the logit adds
    :math:`\beta_0 D_e` to the linear predictor as an offset (one refit per assignment, term and
    trial value; at β₀ = 0 the terms share the refits). For the observed assignment the statistic is
    exactly :math:`(\hat\beta_e - \beta_0)/\text{SE}_e`.
    """

    designs: tuple[_Design, ...]
    estimated: tuple[int, ...]
    covariates: np.ndarray
    asg: Assignments
    cache: dict[tuple[int, float], np.ndarray] = dataclasses.field(default_factory=dict)
    linear_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=list
    )

    def _dummies(self, ks: np.ndarray) -> np.ndarray:
        """Event-time dummies under assignments ``ks``: n × len(ks) × m."""
        return _event_dummies(self.asg.treatment_block(ks, self.designs[0].rows), self.estimated)

    def t_star(self, i: int, beta0: float) -> np.ndarray:
        """Term ``i``'s t statistics over the assignments under its sharp null at β₀."""
        if self.designs[0].family == "gaussian":
            by, bd, c, f = self._linear()
            sc = c[:, i, :] - beta0 * f[:, i, :]
            se = np.sqrt(self.designs[0].factor * np.sum(sc**2, axis=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                return (by[:, i] - beta0 * bd[:, i]) / se
        key = (-1, 0.0) if beta0 == 0 else (i, float(beta0))
        if key not in self.cache:
            if len(self.cache) >= 8:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self._glm(i, float(beta0))
        return self.cache[key][:, i]

    def _linear(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per assignment and term: coefficients of y and of :math:`D_e`, and their CR0 cluster scores."""
        if self.linear_parts:
            return self.linear_parts[0]
        des = self.designs[0]
        w, m, n = des.prior, len(self.designs), des.y.shape[0]
        partial = _partialler(des.projector, self.covariates, w)
        yy = partial(np.column_stack([des.y, *[d.d for d in self.designs]]))
        ind = des.indicator
        n_a = self.asg.assign.shape[0]
        by, bd = np.full((n_a, m), np.nan), np.full((n_a, m), np.nan)
        c, f = np.full((n_a, m, des.g), np.nan), np.full((n_a, m, des.g), np.nan)
        chunk = max(1, 4_000_000 // max(n * m, 1))
        for start in range(0, n_a, chunk):
            ks = np.arange(start, min(start + chunk, n_a))
            dk = self._dummies(ks)
            zk = partial(dk.reshape(n, -1)).reshape(dk.shape)
            for j, k in enumerate(ks):
                z = zk[:, j, :]
                h = np.einsum("ij,i,ik->jk", z, w, z)
                before = np.einsum("ij,i,ij->j", dk[:, j, :], w, dk[:, j, :])
                if np.any(np.diag(h) <= 1e-10 * np.maximum(before, 1e-300)):
                    continue  # an event time without cells, or collinear dummies, under this assignment
                q = np.linalg.solve(h, (w[:, None] * z).T).T  # W Z H^-1, n × m
                b = q.T @ yy  # m × (1 + m)
                u = yy - z @ b
                by[k], bd[k] = b[:, 0], np.diag(b[:, 1:])
                c[k] = np.asarray(ind @ (q * u[:, [0]])).T
                f[k] = np.asarray(ind @ (q * u[:, 1:])).T
        self.linear_parts.append((by, bd, c, f))
        return self.linear_parts[0]

    def _glm(self, i: int, beta0: float) -> np.ndarray:
        r"""Refits' t statistics (assignments × terms) with the offset :math:`\beta_0 D_e` (e = term i)."""
        des = self.designs[0]
        d_i = self.designs[i].d if i >= 0 else np.zeros_like(des.y)
        base = des.eta - sum(d.beta * d.d for d in self.designs)  # the fit without the event effects
        n_a, m = self.asg.assign.shape[0], len(self.designs)
        out = np.full((n_a, m), np.nan)
        for start in range(0, n_a, 64):
            ks = np.arange(start, min(start + 64, n_a))
            dk = self._dummies(ks)
            for j, k in enumerate(ks):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        fit = _fe.fit_glm(
                            des.y,
                            np.column_stack([dk[:, j, :], self.covariates]),
                            des.projector,
                            family=des.family,  # type: ignore[arg-type]
                            prior=des.prior,
                            offset=des.offset + beta0 * d_i,
                            eta_start=base + beta0 * d_i,
                        )
                    except SpecificationError:  # the assignment leaves a dummy without variation
                        continue
                infl = _fe.cluster_influence(fit, des.cluster_codes, des.g)[:, :m]
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[k] = fit.beta[:m] / np.sqrt(des.factor * np.sum(infl**2, axis=0))
        return out


def _ri_p(t_star: np.ndarray, t: float, exact: bool) -> float:
    ok = t_star[np.isfinite(t_star)]
    return _mc_p(int(np.sum(_exceed(ok, t))), ok.size, exact)


def _ri_gap(t_star: np.ndarray, t: float, exact: bool, alpha: float) -> float:
    r"""A continuous function of β₀ that is ≥ 0 exactly where the RI p-value exceeds ``alpha``.

    With N finite :math:`t^*`, let k be the least number of exceedances h with p(h) > α (p(h) = h/N
    when enumerated, (1+h)/(1+N) otherwise, as :func:`_mc_p`). Then p > α iff at least k of the
    :math:`|t^*|` reach the tie-tolerant threshold of :func:`_exceed`, i.e. iff the k-th largest
    :math:`|t^*|` minus that threshold is ≥ 0: that difference is returned (+inf when k = 0, -inf
    when k > N). It moves continuously with β₀; :func:`_invert_ri` finds its predicted zero.
    """
    ok = np.abs(t_star[np.isfinite(t_star)])
    h = np.arange(ok.size + 1)
    p = _mc_p(h, max(ok.size, 1), exact)  # every candidate count at once (N can be 10^5)
    above = np.flatnonzero(p > alpha)
    if not above.size or ok.size == 0:
        return -math.inf
    k = int(above[0])
    if k == 0:
        return math.inf
    kth = float(np.partition(ok, ok.size - k)[ok.size - k])
    return kth - (abs(t) * (1 - _TIE) - 1e-300)


def _ri_t_star(
    result: Result, designs: tuple[_Design, ...], terms: tuple[_Term, ...], asg: Assignments
) -> Callable[[int, float], np.ndarray]:
    """``t_star(i, beta0)``: term i's t statistics over the assignments under H0: term i = β₀."""
    if isinstance(result, EventStudyResult):
        ri = _EventRI(designs, result.estimated, _covariates(result.sample, result.columns), asg)
        return ri.t_star
    if designs[0].family == "gaussian":
        return _linear_ri(designs[0], asg).t_star_of
    return _GlmRI(designs, terms, tuple(_null_model(designs, t) for t in terms), asg).t_star


def randomization_inference(
    result: Result,
    *,
    draws: int = 999,
    seed: int | None = None,
    within: str | None = "state",
    statistic: Literal["t"] = "t",
    alpha: float = 0.05,
    ci: bool = True,
    tol: float = 1e-3,
) -> Result:
    r"""Randomization inference on the CR1 t statistic, permuting adoption paths within ``within``.

    Parameters
    ----------
    result
        A :class:`~stopdisparity.models.did.DidResult` (logit or linear), a
        :class:`~stopdisparity.models.counts.CountsResult` (every row: each race and the difference)
        or an :class:`~stopdisparity.models.event_study.EventStudyResult` (every event-time term;
        adoption dates permuted, see :class:`_EventRI`; binned end points needed).
    draws
        Random assignments when there are at least :data:`EXACT_LIMIT` distinct ones.
    seed
        Seed of the random assignments.
    within
        The result's group column (e.g. ``state``; permute within its levels) or None (across all).
    statistic
        ``t`` (the only one implemented): the CR1 t statistic of each refit.
    alpha, ci, tol
        Interval level; whether to invert the sharp constant-effect null (for the GLMs each trial
        value refits every assignment); each end is bracketed to within ``tol`` analytical SEs and
        the bracket's midpoint returned. With random assignments an end's Monte Carlo error is about
        :math:`\sqrt{\alpha(1-\alpha)/B}/(2\phi(z_{1-\alpha/2}))` ≈ 0.06 SE for B = 999 (the error
        of the (1-α) quantile of :math:`|t^*|`), so 0.01 would be honest; the default 0.001 costs
        no more, because :func:`_invert_ri` closes the bracket from interpolated predictions (9
        evaluations on the NC + SC panel at either tolerance, against about 21 and 27 by bisection).

    Returns
    -------
    DidResult or CountsResult
        A copy with the RI p-values, intervals and a label giving G, G₁ and the assignments used.
    """
    _check_alpha(alpha)
    check_choice("statistic", statistic, ("t",))
    _check_result(result, "randomization_inference")
    designs, terms = _model(result)
    asg = adoption_assignments(result, within=within, draws=draws, seed=seed)
    p_values, cis = {}, {}
    with _blas_single_thread():
        t_star = _ri_t_star(result, designs, terms, asg)
        for i, term in enumerate(terms):

            def t_obs(beta0: float, term: _Term = term) -> float:
                return (term.estimate - beta0) / term.std_error

            at_zero = t_star(i, 0.0)
            p_values[term.name] = _ri_p(at_zero, t_obs(0.0), asg.exact)
            if not ci:
                cis[term.name] = (math.nan, math.nan)
                continue
            # first trial ends: the estimate ± the critical |t*| of the assignments at β₀ = 0, slightly
            # widened (the t statistic is nearly pivotal, so the crossings lie close to these points)
            crit = _ri_gap(at_zero, 0.0, asg.exact, alpha)
            if not (math.isfinite(crit) and crit > 0):
                crit = float(stats.norm.isf(alpha / 2))
            lo, hi = (term.estimate + sign * 1.05 * crit * term.std_error for sign in (-1.0, 1.0))
            cis[term.name] = _invert_ri(
                lambda b, i=i: t_star(i, b),
                t_obs,
                exact=asg.exact,
                alpha=alpha,
                estimate=term.estimate,
                scale=term.std_error,
                tol=tol,
                start=(lo, hi),
                known={0.0: at_zero},
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
    return _attach(result, label, p_values, cis, method="ri", alpha=alpha)


# ------------------------------------------------------------------------ bootstrap pre-trend test
@dataclass(frozen=True, eq=False)
class PretrendBootstrap:
    r"""Restricted bootstrap of the joint test that an event study's leads are zero.

    ``statistic`` is the sample statistic and ``draws`` its B bootstrap values (weights ``v``), all with
    every lead's coefficient set to 0 in the restricted fit; p: share of draws ≥ the statistic, :func:`_mc_p`.
    """

    method: str
    leads: tuple[int, ...]
    statistic: float
    draws: np.ndarray
    v: np.ndarray
    enumerated: bool

    @property
    def p_value(self) -> float:
        """Share of bootstrap statistics at least the sample one (tie-tolerant; :func:`_mc_p`)."""
        ok = self.draws[np.isfinite(self.draws)]
        return _mc_p(int(np.sum(ok >= self.statistic * (1 - _TIE) - 1e-300)), ok.size, self.enumerated)


def _quadratic(b: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:math:`b_r'V_r^{-1}b_r` for stacks ``b`` (B × k) and ``v`` (B × k × k); NaN where V is singular."""
    out = np.full(b.shape[0], np.nan)
    for r in range(b.shape[0]):
        with contextlib.suppress(np.linalg.LinAlgError):
            out[r] = float(b[r] @ np.linalg.solve(v[r], b[r]))
    return out


def _lead_designs(result: EventStudyResult) -> tuple[_Design, np.ndarray, np.ndarray]:
    """The first design, the lead dummies (n × k) and the free regressors under the null (n × r)."""
    if not isinstance(result, EventStudyResult):
        raise SpecificationError(f"the pre-trend test needs an EventStudyResult; got {type(result).__name__}")
    if not result.leads:
        raise SpecificationError(
            f"no leads to test: the estimated event times {list(result.estimated)} have none before "
            f"-anticipation other than the reference {result.reference} and the binned far lead"
        )
    designs = _event_designs(result)
    lead = [result.estimated.index(e) for e in result.leads]
    rest = [i for i in range(len(designs)) if i not in lead]
    des = designs[0]
    cov = _covariates(result.sample, result.columns)
    leads = np.column_stack([designs[i].d for i in lead])
    free = np.column_stack([*[designs[i].d for i in rest], cov]) if rest or cov.shape[1] else cov
    return des, leads, free


def pretrend_bootstrap(
    result: EventStudyResult,
    *,
    method: Literal["score", "wild"] = "score",
    draws: int = 999,
    weights: WildWeights = "rademacher",
    seed: int | None = None,
) -> PretrendBootstrap:
    r"""Bootstrap joint test that the leads are zero, with the null imposed (few-cluster pre-test).

    The CR1 Wald pre-test (:meth:`~stopdisparity.models.event_study.EventStudyResult.pretrend_test`)
    over-rejects with few effective clusters; this bootstraps the test with all leads
    (:attr:`~stopdisparity.models.event_study.EventStudyResult.leads`) set to 0 in the restricted
    model, the other event-time dummies, the covariates and the fixed effects free.

    ``wild`` (linear event studies): the wild cluster restricted bootstrap of the CR1 Wald statistic
    :math:`W = \hat\beta_L'\hat V_L^{-1}\hat\beta_L` (Cameron, Gelbach & Miller 2008; Roodman et
    al. 2019, section 3.3): :math:`y^* = \tilde X\tilde\gamma + v_g\tilde u` from the restricted
    fit, each draw's W from the refit with its own CR1 covariance. As for one coefficient, the
    projection of each cluster's residuals off the fixed effects and the free regressors is computed
    once (n × G), so a draw costs O(G² k).

    ``score`` (logit event studies): the score bootstrap (Kline & Santos 2012, section 3) of the
    cluster-robust score statistic :math:`S = \bar s'(\sum_g s_gs_g')^{-1}\bar s`,
    :math:`\bar s = \sum_g s_g`, :math:`s_g = \sum_{i\in g}\psi_i\tilde L_i` (the leads' dummies
    residualised on the fixed effects and the free regressors under the restricted IRLS weights);
    :math:`S^* = (\sum_g v_gs_g)'(\sum_g v_g^2s_gs_g')^{-1}(\sum_g v_gs_g)`. S is the score (LM)
    counterpart of W; both are :math:`\chi^2_k` in large samples.

    Parameters
    ----------
    result
        An :class:`~stopdisparity.models.event_study.EventStudyResult` with at least one lead.
    method
        ``wild`` (linear) or ``score`` (logit).
    draws, weights, seed
        As :func:`wild_cluster_bootstrap` (Rademacher with G ≤ 12 enumerates all 2^G vectors).

    Returns
    -------
    PretrendBootstrap
        The statistic, its bootstrap draws and ``p_value``.

    Raises
    ------
    SpecificationError
        Without leads, for a method that does not fit the estimator, or bad options.
    """
    check_choice("method", method, ("score", "wild"))
    _check_draws(draws)
    des, leads, free = _lead_designs(result)
    if method == "wild":
        _check_linear(result)
    else:
        _check_glm(result, "score bootstrap")
    v, enumerated = _weights(weights, des.g, draws, seed)
    ind = des.indicator
    if method == "score":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = _fe.fit_glm(
                des.y,
                free,
                des.projector,
                family=des.family,
                prior=des.prior,
                offset=des.offset,  # type: ignore[arg-type]
            )
        lt = _partialler(des.projector, free, fit.weights)(leads)
        sg = np.asarray(ind @ (fit.psi[:, None] * lt))  # G × k
        total = sg.sum(axis=0)
        stat = float(total @ np.linalg.solve(sg.T @ sg, total))
        num = v @ sg  # B × k
        var = np.einsum("bg,gj,gk->bjk", v**2, sg, sg)
        return PretrendBootstrap("score", result.leads, stat, _quadratic(num, var), v, enumerated)
    w = des.prior
    partial = _partialler(des.projector, free, w)
    r = partial(np.column_stack([des.y, leads]))
    ut, lt = r[:, 0], r[:, 1:]  # restricted residuals, leads partialled
    k = lt.shape[1]
    h_inv = np.linalg.inv(np.einsum("ij,i,ik->jk", lt, w, lt))
    wl = w[:, None] * lt
    big = partial(ut[:, None] * ind.T.toarray())  # n × G: M(u 1_h)
    c = np.stack([np.asarray(ind @ (wl[:, j][:, None] * big)) for j in range(k)], axis=2)  # G × G(h) × k
    h_g = np.stack([np.asarray(ind @ (wl[:, [j]] * lt)) for j in range(k)], axis=1)  # G × k × k
    factor = des.factor

    def wald_of(vv: np.ndarray) -> np.ndarray:
        a = np.einsum("bh,ghk->bgk", vv, c)  # per draw and cluster: L_g'W_g y*_g
        beta = a.sum(axis=1) @ h_inv.T  # B × k
        scores = a - np.einsum("gjk,bk->bgj", h_g, beta)
        meat = factor * np.einsum("bgj,bgk->bjk", scores, scores)
        return _quadratic(beta, h_inv[None] @ meat @ h_inv[None])

    stat = float(wald_of(np.ones((1, des.g)))[0])
    return PretrendBootstrap("wild", result.leads, stat, wald_of(v), v, enumerated)


# ----------------------------------------------------------------------------------- dispatcher
def apply_inference(result: Result | EtwfeResult | SunAbrahamResult, method: Method, **options: Any) -> Any:
    """Apply one inference method to a fitted result and return the new result.

    ``cluster`` returns the analytical CR1/CR0 inference (any attached inference removed, the default
    CR2 included; for etwfe and sun-abraham results too); ``cr2``,
    ``cr3``, ``wild``, ``score`` and ``ri`` call :func:`cr2`, :func:`cr3`, :func:`wild_cluster_bootstrap`,
    :func:`score_bootstrap` and :func:`randomization_inference` with ``options``. Results: a
    :class:`~stopdisparity.models.did.DidResult` (all methods; ``wild`` for ``twfe-linear``, ``score``
    for ``twfe-logit``), a :class:`~stopdisparity.models.counts.CountsResult` (``cr3``, ``score``,
    ``ri``: every row) or a :class:`~stopdisparity.models.event_study.EventStudyResult` (every
    estimated event-time term; ``wild`` for a linear, ``score`` for a logit event study) or, for
    ``cr2`` only, an :class:`~stopdisparity.models._etwfe.EtwfeResult` without covariates. Results with
    covariates are accepted by every method (see the module notes).
    """
    check_choice("method", method, METHODS)
    if method in ("cr2", "cluster") and isinstance(result, EtwfeResult | SunAbrahamResult):
        return cr2(result, **options) if method == "cr2" else dataclasses.replace(result, inference=None)
    _check_result(result, "apply_inference")
    if method == "cluster":
        if options:
            raise SpecificationError(f"method='cluster' takes no options; got {sorted(options)}")
        return dataclasses.replace(result, inference=None)
    fn: Callable[..., Result] = {
        "cr2": cr2,
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
    "PretrendBootstrap",
    "ScoreBootstrap",
    "WildBootstrap",
    "adoption_assignments",
    "apply_inference",
    "cr2",
    "cr3",
    "pretrend_bootstrap",
    "pretrend_cr2",
    "randomization_inference",
    "score_bootstrap",
    "score_bootstrap_setup",
    "wild_bootstrap_arrays",
    "wild_bootstrap_setup",
    "wild_cluster_bootstrap",
]
