r"""Two-way fixed-effects difference-in-differences on the race composition of stops, or on any panel.

Users call :func:`fit_did` (long race layout) or :func:`fit_did_panel` (any unit × period panel),
both re-exported by :mod:`stopdisparity.api`; each returns a frozen :class:`DidResult` with a
DESIGN.md ``tidy()`` table.

Estimators
----------
``twfe-logit`` (the headline; the Texas A&M design, Pham & Van 2022). On county × period cells, the
share of focal-race stops among focal + reference stops, :math:`y_{ct} = F_{ct}/n_{ct}`, is modelled as
binomial with :math:`\operatorname{logit} p_{ct} = \alpha_c + \gamma_{s(c)t} + \beta D_{ct}`: county
effects, state × period effects (period effects when the panel has one state), and :math:`D_{ct}` the
policy in force. With :math:`n_{ct}` as binomial trials this is exactly the stop-level logit of "the
driver is of the focal race" on the same dummies (Grosjean, Masera & Yousaf 2023 use that form): same
likelihood, same coefficients, same scores — the tests expand cells to stops and compare.
:math:`\beta` is the ATT on the log odds under parallel trends in log odds; the result also gives the
odds ratio and the stop-weighted percentage-point effect
:math:`100\sum_{D=1} n(\hat p - \hat p^0)/\sum_{D=1} n` with :math:`\hat p^0` the prediction with the
policy switched off, and its delta-method SE over all parameters (fixed effects included).

The two-race Poisson "triple difference" with county × period effects
(:func:`stopdisparity.models.counts.fit_counts` with ``form="two-race"``) is the *same model* — its
likelihood profiles to this one (Baker 1994) — and is not additional evidence.

``twfe-linear``. The share on the same fixed effects by weighted least squares, weighted by stops
(default), county-equal (each county's weights sum to one, cells within it by stops) or unit-equal
(unweighted cells). It assumes parallel trends in levels of the share, a different assumption
(Roth & Sant'Anna 2023).

Generic panels
--------------
:func:`fit_did_panel` takes one row per unit × period with the standard DiD names (``yname``,
``idname``, ``tname``, ``gname``; R's ``did``, pyfixest's ``event_study``) and an absorbing treatment
:math:`D_{it} = 1[t \ge g_i]` (``gname`` 0 or null: never treated). With ``trials`` the logit models
``yname`` successes out of ``trials``; without, the linear model regresses ``yname`` (optionally with
analytic weights). Time-varying covariates (``xnames``) enter beside the treatment. It runs the same
estimation code as :func:`fit_did` — the race layout *is* the generic logit with successes = focal
stops and trials = focal + reference stops (tested to 1e-10). Unit and period effects by default;
``group`` adds group × period effects.

Computation and inference
-------------------------
The fixed effects are absorbed exactly (:mod:`stopdisparity.models._fe`): IRLS with a weighted
projection that eliminates the larger factor and factorises the Schur complement of the smaller one.
The NC + SC county × month panel (about 26,000 cells, 146 county and 336 state-month effects) fits in
under a second (0.2 s on an idle core). Standard errors are cluster-robust sandwiches computed here
from the scores and the Hessian: CR0, and CR1 = G/(G-1)·(N-1)/(N-K)·CR0 with pyfixest's ``CRV1``
conventions (K counts the coefficients and the non-nested fixed effects; see
:class:`~stopdisparity.models._fe.SmallSample`).
For the logit, **N is the number of stops** (Bernoulli trials), so CR1 equals pyfixest's
``feglm(family="logit")`` CRV1 on the stop-level data exactly and does not depend on aggregation; for
the linear model N is the number of cells (analytic weights, as pyfixest ``feols(weights=...)``).
Under ``inference="cluster"`` p-values and intervals use the normal for the logit and t(G-1) for the
linear model, as pyfixest. By default (``inference="cr2"``) they come from CR2 with Bell–McCaffrey
degrees of freedom (:func:`stopdisparity.models.inference.cr2`; Bell & McCaffrey 2002, Imbens &
Kolesár 2016): with stop-weighted county cells the treatment's information sits in few effective
clusters and CR1 under-covers (issue 5's Monte Carlo: 0.90 where CR2 gives 0.93-0.94). ``std_error``
stays the analytical CR1 (or CR0) SE.

Every fit reports G, G₁ (clusters with any treated cell) and the largest treated cluster's share of
treated stops, and warns (:class:`~stopdisparity.errors.FewClustersWarning`) when G₁ < 10 or that
share exceeds 0.3; :meth:`DidResult.effective_weights` and :meth:`DidResult.leave_one_out` show how
much each treated county drives the estimate.

References
----------
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. 64 Arizona Law Review 463.
Grosjean, P., Masera, F. & Yousaf, H. (2023). Inflammatory political campaigns and racial bias in
policing. Quarterly Journal of Economics 138(1), 413-463. https://doi.org/10.1093/qje/qjac037
Baker, S. G. (1994). The multinomial-Poisson transformation. Journal of the Royal Statistical Society
D 43(4), 495-504. https://doi.org/10.2307/2348134
de Chaisemartin, C. & D'Haultfœuille, X. (2020). Two-way fixed effects estimators with heterogeneous
treatment effects. American Economic Review 110(9), 2964-2996. https://doi.org/10.1257/aer.20181169
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
Wooldridge, J. M. (2023). Simple approaches to nonlinear difference-in-differences with panel data.
Econometrics Journal 26(3), C31-C66. https://doi.org/10.1093/ectj/utad016
Roth, J. & Sant'Anna, P. H. C. (2023). When is parallel trends sensitive to functional form?
Econometrica 91(2), 737-747. https://doi.org/10.3982/ECTA19402
Cameron, A. C. & Miller, D. L. (2015). A practitioner's guide to cluster-robust inference. Journal of
Human Resources 50(2), 317-372. https://doi.org/10.3368/jhr.50.2.317
Pierson, E. et al. (2020). A large-scale analysis of racial disparities in police stops across the
United States. Nature Human Behaviour 4, 736-745. https://doi.org/10.1038/s41562-020-0858-1
For 287(g) timing: ICE, "Delegation of Immigration Authority Section 287(g)" agreement lists, as
imported by :mod:`stopdisparity.policy`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy.special import expit

from stopdisparity.errors import SparseCellWarning, SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.models._fe import (
    CLUSTER,
    GROUP,
    PERIOD,
    TREATED,
    UNIT,
    ClusterSummary,
    Inference,
    Missing,
    SmallSample,
    VcovType,
)
from stopdisparity.models._panel import TREATMENT_TERM, covariate_columns, prepare_panel
from stopdisparity.results import TidyRow, tidy_frame

Estimator = Literal["twfe-logit", "twfe-linear"]
Weights = Literal["stops", "county", "unit-equal"]
Layout = Literal["race", "panel"]
ESTIMATORS: tuple[Estimator, ...] = ("twfe-logit", "twfe-linear")
#: The inference key of the percentage-point effect: an attached inference that lists it (CR2) gives
#: ``pp_ci_low``/``pp_ci_high`` its own interval.
PP_TERM = "pp_change"
WEIGHTS: tuple[Weights, ...] = ("stops", "county", "unit-equal")


@dataclass(frozen=True, eq=False)
class _Core:
    """The numbers of one fit on one sample (shared by the full fit and the leave-one-out refits)."""

    fit: _fe.GlmFit
    pairs: pl.DataFrame
    unit_labels: tuple[Any, ...]
    unit_codes: np.ndarray
    cluster_labels: tuple[str, ...]
    cluster_codes: np.ndarray
    influence: np.ndarray
    pp_change: float
    pp_influence: np.ndarray
    small_sample: SmallSample
    clusters: ClusterSummary
    fe_names: tuple[str, ...]
    covariate_influence: np.ndarray

    @property
    def estimate(self) -> float:
        return float(self.fit.beta[0])

    @property
    def variance_cr0(self) -> float:
        return float(np.sum(self.influence**2))

    def std_error(self, vcov_type: VcovType) -> float:
        factor = self.small_sample.factor if vcov_type == "CR1" else 1.0
        return math.sqrt(self.variance_cr0 * factor)


def _regressors(pairs: pl.DataFrame, names: Mapping[str, Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The design's regressors: the treatment, then the covariates (``_x0``, ...), and their names."""
    xcols = covariate_columns(names)
    lost = [c for c in xcols if c not in pairs.columns]
    if lost:
        raise SpecificationError(
            f"these cells lack the covariate columns of the fit ({list(names['covariates'])}): the calling "
            "procedure does not carry covariates (yet)"
        )
    d = pairs.get_column(TREATED).to_numpy()
    X = np.column_stack([d, *[pairs.get_column(c).to_numpy() for c in xcols]])
    return X, (str(names.get("treatment") or TREATMENT_TERM), *map(str, names.get("covariates") or ()))


def _estimate(
    pairs: pl.DataFrame,
    *,
    estimator: Estimator,
    weights: Weights,
    multi_group: bool,
    names: Mapping[str, Any],
    eta_start: np.ndarray | None = None,
) -> _Core:
    """Fit one estimator on prepared pair cells (no drops happen here).

    ``pairs`` holds unit, period, group, cluster, treated, focal, reference, n and, when
    ``names["covariates"]`` lists covariates, their internal columns ``_x0``, ``_x1``, ...; the logit
    models focal / n with n as trials, the linear model focal / n weighted as ``weights`` says (the
    generic linear form stores its analytic weights in n and uses ``weights="stops"``).
    """
    unit_s = pairs.get_column(UNIT)
    unit_codes = _fe.codes_of(unit_s)
    unit_labels = tuple(pl.DataFrame({"c": unit_codes, "u": unit_s}).unique("c").sort("c").get_column("u"))
    gp_codes = (
        _fe.codes_of(pairs.get_column(GROUP), pairs.get_column(PERIOD))
        if multi_group
        else _fe.codes_of(pairs.get_column(PERIOD))
    )
    cl_s = pairs.get_column(CLUSTER).cast(pl.String)
    cluster_codes = _fe.codes_of(cl_s)
    cluster_labels = tuple(
        pl.DataFrame({"c": cluster_codes, "u": cl_s}).unique("c").sort("c").get_column("u").to_list()
    )
    g = len(cluster_labels)
    projector = _fe.WithinProjector([unit_codes, gp_codes])
    X, x_names = _regressors(pairs, names)
    d = X[:, 0]
    focal = pairs.get_column("focal").to_numpy()
    n = pairs.get_column("n").to_numpy()
    y = focal / n
    # the generic error names the regressors only when there are covariates (keeps the race messages)
    labels = x_names if X.shape[1] > 1 else None
    if estimator == "twfe-logit":
        fit = _fe.fit_glm(y, X, projector, family="binomial", prior=n, eta_start=eta_start, names=labels)
    else:
        if weights == "stops":
            w = n
        elif weights == "county":
            w = n / np.bincount(unit_codes, weights=n)[unit_codes]
        else:
            w = np.ones_like(n)
        fit = _fe.fit_glm(y, X, projector, family="gaussian", prior=w, names=labels)
    influence_all = _fe.cluster_influence(fit, cluster_codes, g)
    influence = influence_all[:, 0]
    if estimator == "twfe-logit":
        pp, pp_infl = _pp_change(fit, d, n, cluster_codes, g)
        n_ssc, n_label = round(float(n.sum())), "stops (Bernoulli trials)"
    else:
        pp, pp_infl = 100.0 * float(fit.beta[0]), 100.0 * influence
        n_ssc, n_label = pairs.height, "cells"
    unit_name = names["unit"] or "unit"
    gp_name = f"{names['group']}×{names['period']}" if multi_group else str(names["period"])
    fe_names = (unit_name, gp_name)
    small = SmallSample(
        n=n_ssc,
        n_coef=X.shape[1],
        fe_names=fe_names,
        fe_levels=projector.levels,
        fe_nested=tuple(_fe.nested_in(c, cluster_codes) for c in (unit_codes, gp_codes)),
        g=g,
        n_label=n_label,
    )
    information = _fe.cluster_information(fit, cluster_codes, g)
    clusters = _fe.summarize_clusters(str(names["cluster"]), cluster_labels, cluster_codes, d, n, information)
    return _Core(
        fit,
        pairs,
        unit_labels,
        unit_codes,
        cluster_labels,
        cluster_codes,
        influence,
        pp,
        pp_infl,
        small,
        clusters,
        fe_names,
        influence_all[:, 1:],
    )


def _pp_change(
    fit: _fe.GlmFit, d: np.ndarray, n: np.ndarray, cluster_codes: np.ndarray, g: int
) -> tuple[float, np.ndarray]:
    r"""Trial-weighted percentage-point effect and its per-cluster influence (delta method).

    :math:`pp = 100\sum_i m_i(\hat\mu_i - \hat\mu^0_i)` with :math:`m_i = D_i n_i/\sum_D n`,
    :math:`\hat\mu^0 = \operatorname{expit}(\hat\eta - \hat\beta D)` (covariates, if any, kept at
    their values). Its gradient over all parameters (fixed effects included) is :math:`X'a + c\,e_\beta`
    with :math:`a = m(\mu(1-\mu) - \mu^0(1-\mu^0))` and :math:`c = \sum m\mu^0(1-\mu^0)`, so the
    influence of observation i is :math:`h_i\psi_i` with :math:`h = X H^{-1}\nabla = P_W(a/w) +
    c\tilde X(\tilde X'W\tilde X)^{-1}e_\beta`, where :math:`P_W` projects on the dummies and the
    regressors, :math:`P_W v = (v - \tilde v) + \tilde X(\tilde X'W\tilde X)^{-1}\tilde X'Wv` with
    :math:`\tilde{\cdot}` the residual on the dummies (Frisch–Waugh–Lovell; the partitioned inverse's
    row for observation i is :math:`\tilde x_i'(\tilde X'W\tilde X)^{-1}`), so no inverse of the full
    Hessian is needed. Because the treatment's score equation makes :math:`\sum_D n(y - \hat\mu) = 0`,
    the same number is :math:`100\sum_D n(y - \hat p^0)/\sum_D n`.
    """
    pp, a, c = pp_gradient(fit.eta, float(fit.beta[0]), d, n)
    w = fit.weights
    xt = fit.x_tilde
    v = a / w
    vt = fit.projection.residualize(v)
    rhs = np.einsum("ij,i->j", xt, w * v)
    rhs[0] += c
    if xt.shape[1] == 1:
        h = (v - vt) + xt[:, 0] * (rhs[0] / float(fit.hessian[0, 0]))
    else:
        h = (v - vt) + xt @ np.linalg.solve(fit.hessian, rhs)
    infl = _fe.cluster_sums(h * fit.psi, cluster_codes, g)[:, 0]
    return 100.0 * pp, 100.0 * infl


def pp_gradient(
    eta: np.ndarray, beta: float, d: np.ndarray, n: np.ndarray
) -> tuple[float, np.ndarray, float]:
    r"""The logit's percentage-point effect (as a proportion) and its gradient's pieces ``a`` and ``c``.

    :math:`pp = \sum_i m_i(\hat\mu_i - \hat\mu^0_i)`; its gradient over all coefficients of the
    design X (fixed-effect dummies included) is :math:`X'a + c\,e_\beta` (see :func:`_pp_change`; CR2
    of the pp uses it as a contrast, :func:`stopdisparity.models.inference.cr2`).
    """
    on = d > 0
    m = np.where(on, n, 0.0) / float(n[on].sum())
    mu, mu0 = expit(eta), expit(eta - beta * d)
    dmu, dmu0 = mu * (1 - mu), mu0 * (1 - mu0)
    return float(np.sum(m * (mu - mu0))), m * (dmu - dmu0), float(np.sum(m * dmu0))


def _treated_resid(fit: _fe.GlmFit) -> np.ndarray:
    """The treatment residualised on the fixed effects and the covariates, under the final weights."""
    xt = fit.x_tilde
    if xt.shape[1] == 1:
        return xt[:, 0]
    cov = xt[:, 1:]
    w = fit.weights
    coef = np.linalg.solve(np.einsum("ij,i,ik->jk", cov, w, cov), np.einsum("ij,i,i->j", cov, w, xt[:, 0]))
    return xt[:, 0] - cov @ coef


@dataclass(frozen=True, eq=False)
class DidResult(_fe.ClusteredResult):
    """A fitted two-way fixed-effects DiD (from :func:`fit_did` or :func:`fit_did_panel`).

    Attributes
    ----------
    estimator, term, estimand
        ``twfe-logit`` or ``twfe-linear``; the coefficient's name (the treatment column; ``in_force``
        for generic panels, where it is derived from ``gname``); what it estimates and under which
        parallel-trends assumption.
    race_pair
        (focal, reference) for the race layout; None for generic panels.
    estimate
        The log-odds (logit) or share / outcome-level (linear) coefficient on the treatment.
    variance_cr0
        CR0 variance of ``estimate``; CR1 multiplies it by ``small_sample.factor``.
    vcov_type
        ``CR1`` (default) or ``CR0``: the one ``std_error`` and ``tidy()`` use.
    pp_change, pp_variance_cr0
        The stop- (trial-) weighted percentage-point effect (logit; 100 × the coefficient for the
        linear model, meaningful when the outcome is a share) and its CR0 delta-method variance.
    nobs, n_stops
        Cells and stops (generic panels: trials, or the linear model's summed weights) in the
        estimation sample.
    clusters
        G, G₁ and the largest treated cluster's share of treated stops.
    cluster_labels, influence, pp_influence
        Per-cluster influence of the coefficient (:math:`s_g H^{-1}`) and of ``pp_change``; the CR0
        variance is the sum of squares. Score bootstraps and randomization inference start here.
    separated_units, n_separated_cells, n_empty_cells
        Units dropped because they have no focal or no reference stops at all (logit); cells dropped
        with them or with separated group-periods; cells with no stops of either race (no trials).
    n_dropped, dropped_columns
        Rows dropped under ``missing="drop"`` and the columns with missing values.
    sample
        The estimation cells (internal names: unit, period, group, cluster, treated, focal,
        reference, n; generic panels add ``_first_treated`` and the covariates ``_x0``, ...) with
        ``weight`` (final IRLS/WLS weight), ``fitted`` (share), ``eta`` (linear predictor) and
        ``treated_resid`` (the treatment residualised on the fixed effects and the covariates).
        ``focal / n`` is the modelled outcome; for the generic linear model ``n`` holds the analytic
        weight (1 without weights).
    lineage
        Input columns, options, fixed effects and package versions.
    inference
        Bootstrap or randomization inference attached with :meth:`with_inference` (None: analytical).
    layout
        ``race`` (:func:`fit_did`: one row per unit × period × race) or ``panel``
        (:func:`fit_did_panel`: one row per unit × period, any outcome).
    covariates, covariate_estimates, covariate_influence
        The covariates' column names, coefficients and per-cluster influence (G × k); their tidy rows
        follow the treatment's.
    """

    estimator: Estimator
    term: str
    estimand: str
    race_pair: tuple[str, str] | None
    columns: Mapping[str, Any]
    weights: Weights | None
    vcov_type: VcovType
    estimate: float
    variance_cr0: float
    small_sample: SmallSample
    pp_change: float
    pp_variance_cr0: float
    nobs: int
    n_stops: int
    clusters: ClusterSummary
    cluster_labels: tuple[str, ...]
    influence: np.ndarray
    pp_influence: np.ndarray
    fixed_effects: tuple[str, ...]
    separated_units: tuple[str, ...]
    n_separated_cells: int
    n_empty_cells: int
    n_dropped: int
    dropped_columns: tuple[str, ...]
    converged: bool
    iterations: int
    deviance: float
    multi_group: bool
    sample: pl.DataFrame
    lineage: Mapping[str, Any]
    inference: Inference | None = None
    layout: Layout = "race"
    covariates: tuple[str, ...] = ()
    covariate_estimates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    covariate_influence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    # ----------------------------------------------------------------------------- standard errors
    @property
    def std_error(self) -> float:
        """Cluster-robust SE of ``estimate`` under ``vcov_type``."""
        return math.sqrt(self.variance_cr0 * self._factor)

    @property
    def pp_std_error(self) -> float:
        """Cluster-robust delta-method SE of ``pp_change`` under ``vcov_type``."""
        return math.sqrt(self.pp_variance_cr0 * self._factor)

    @property
    def odds_ratio(self) -> float | None:
        """exp(estimate) for the logit; None for the linear model."""
        return math.exp(self.estimate) if self.estimator == "twfe-logit" else None

    @property
    def _factor(self) -> float:
        return self.small_sample.factor if self.vcov_type == "CR1" else 1.0

    @property
    def _df(self) -> int | None:
        return self.clusters.g - 1 if self.estimator == "twfe-linear" else None

    @property
    def inference_label(self) -> str:
        """The ``inference`` column of ``tidy()``."""
        if self.inference is not None:
            return self.inference.label
        return self._analytical_label

    # --------------------------------------------------------------------------------------- tables
    @property
    def _analytical_label(self) -> str:
        return f"{self.vcov_type} by {self.columns['cluster']} ({self.clusters.g} clusters)"

    @property
    def _reports_pp(self) -> bool:
        """Whether the outcome is a share, so that a percentage-point effect means something."""
        return self.layout == "race" or self.columns.get("trials") is not None

    def _pp_interval(self, alpha: float) -> dict[str, float | None]:
        """``pp_ci_low``/``pp_ci_high``: the analytical (delta-method) or attached (CR2) interval.

        None under an attached inference that gives the pp effect none (the resampling methods).
        """
        if self.inference is not None and PP_TERM not in self.inference.p_value:
            return {"pp_ci_low": None, "pp_ci_high": None}
        _, p, lo, hi = _fe.inference_stats(self.pp_change, self.pp_std_error, alpha, self._df)
        _, lo, hi, _ = _fe.attached(self.inference, PP_TERM, p, lo, hi, "", alpha)
        return {"pp_ci_low": lo, "pp_ci_high": hi}

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """The treatment row (log odds or outcome scale), then one row per covariate; DESIGN.md contract.

        Extra keys of the treatment row: ``odds_ratio`` (logit), ``pp_change``, ``pp_std_error``,
        ``pp_ci_low`` and ``pp_ci_high`` (percentage points, race layout and generic panels with trials;
        the interval is the analytical or the CR2 one, null under resampling), ``n_stops`` (race layout) or
        ``n_trials`` (generic logit), ``n_treated_clusters``, ``largest_treated_share``,
        ``effective_clusters`` (G* of the treatment, Carter, Schnepel & Steigerwald 2017). Covariate rows
        carry their coefficient with the same covariance and reference distribution, null extras and
        the estimand "covariate coefficient (not a causal effect)".
        """
        stat, p, lo, hi = _fe.inference_stats(self.estimate, self.std_error, alpha, self._df)
        p, lo, hi, label = _fe.attached(self.inference, self.term, p, lo, hi, self._analytical_label, alpha)
        extra: dict[str, Any] = {"odds_ratio": self.odds_ratio}
        if self.estimator != "twfe-logit":
            del extra["odds_ratio"]
        if self._reports_pp:
            extra |= {"pp_change": self.pp_change, "pp_std_error": self.pp_std_error}
            extra |= self._pp_interval(alpha)
        if self.layout == "race":
            extra["n_stops"] = self.n_stops
        elif self.estimator == "twfe-logit":
            extra["n_trials"] = self.n_stops
        extra |= {
            "n_treated_clusters": self.clusters.g_treated,
            "largest_treated_share": self.clusters.largest_share,
            "effective_clusters": self.clusters.effective,
        }
        rows = [
            TidyRow(
                self.term,
                self.estimate,
                self.std_error,
                stat,
                p,
                lo,
                hi,
                self.nobs,
                self.clusters.g,
                self.estimator,
                self.estimand,
                label,
                extra,
            )
        ]
        for j, name in enumerate(self.covariates):
            est = float(self.covariate_estimates[j])
            se = math.sqrt(float(np.sum(self.covariate_influence[:, j] ** 2)) * self._factor)
            stat, p, lo, hi = _fe.inference_stats(est, se, alpha, self._df)
            p, lo, hi, label = _fe.attached(self.inference, name, p, lo, hi, self._analytical_label, alpha)
            rows.append(
                TidyRow(
                    name,
                    est,
                    se,
                    stat,
                    p,
                    lo,
                    hi,
                    self.nobs,
                    self.clusters.g,
                    self.estimator,
                    "covariate coefficient (not a causal effect)",
                    label,
                )
            )
        return tidy_frame(rows)

    def with_inference(self, inference: Inference) -> DidResult:
        """A copy whose ``tidy()`` takes p-values, intervals and label from ``inference``.

        Raises
        ------
        SpecificationError
            When the result has covariates that ``inference.covariates`` does not list: a bootstrap or
            randomization test that ignores them would test a different model.
        """
        _check_inference_covariates(self.covariates, inference)
        return dataclasses.replace(self, inference=inference)

    # ---------------------------------------------------------------------------------- diagnostics
    def effective_weights(self) -> pl.DataFrame:
        r"""Each treated unit's weight in the estimate, beside its share of treated stops.

        ``weight`` sums the cell weights :math:`\omega_i = w_i\tilde d_i/\sum_{D=1}w_j\tilde d_j` over
        the unit's treated cells (de Chaisemartin & D'Haultfœuille 2020; for the logit the final IRLS
        weights :math:`n\hat p(1-\hat p)`, a linearisation on the log-odds scale): under heterogeneous
        effects the estimate is :math:`\sum\omega_i\delta_i`. ``stop_share`` is the weight the
        stop-weighted ATT gives the unit; a large gap between the two, or ``negative_cells`` > 0,
        means the TWFE estimate is not that ATT when effects differ (Goodman-Bacon 2021).

        Returns
        -------
        polars.DataFrame
            Columns: unit (named like the unit column), treated_cells, treated_stops, stop_share,
            weight, negative_cells; sorted by weight, descending.
        """
        return self._weights.rename({"unit": str(self.columns["unit"])})

    @cached_property
    def _weights(self) -> pl.DataFrame:
        return _fe.effective_weights(self.sample, treated=TREATED, stops="n")

    def leave_one_out(self, alpha: float = 0.05) -> pl.DataFrame:
        """Refit without each treated unit in turn; flag units whose removal flips sign or significance.

        A unit is treated when any of its cells is. Each refit repeats the logit's separation drops
        on the remaining cells and uses this result's ``vcov_type``. The flip test compares analytical
        ``vcov_type`` p-values (normal or t(G-1)) of the full fit and each refit, whatever inference is
        attached: a sensitivity screen, not the reported test (the default CR2 p-value is usually
        the larger).

        Parameters
        ----------
        alpha
            Significance level of the flip test (p < alpha in one fit and not in the other).

        Returns
        -------
        polars.DataFrame
            One row per treated unit: ``dropped_<unit>``, term, estimate, std_error, p_value, ci_low,
            ci_high, n_clusters, n_treated_clusters, sign_flip, significance_flip, flagged; the range
            of ``estimate`` is the leave-one-out range.
        """
        _, p_full, _, _ = _fe.inference_stats(self.estimate, self.std_error, alpha, self._df)
        rows = []
        for label, core in self._loo:
            se = core.std_error(self.vcov_type)
            df = core.clusters.g - 1 if self.estimator == "twfe-linear" else None
            _, p, lo, hi = _fe.inference_stats(core.estimate, se, alpha, df)
            rows.append(
                {
                    "dropped_unit": str(label),
                    "term": self.term,
                    "estimate": core.estimate,
                    "std_error": se,
                    "p_value": p,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_clusters": core.clusters.g,
                    "n_treated_clusters": core.clusters.g_treated,
                }
            )
        return _fe.leave_one_out_table(
            rows, {self.term: (self.estimate, p_full)}, unit_name=str(self.columns["unit"]), alpha=alpha
        )

    @cached_property
    def _loo(self) -> list[tuple[Any, _Core]]:
        treated_units = self.sample.filter(pl.col(TREATED) > 0).get_column(UNIT).unique().sort().to_list()
        return [(u, self.refit(self.sample.filter(pl.col(UNIT) != u))) for u in treated_units]

    def refit(self, keep: pl.DataFrame) -> _Core:
        """The same model refitted on the estimation cells ``keep`` (a subset of :attr:`sample`).

        Separated units and group-periods are dropped again for the logit, and the fit starts from
        the full fit's linear predictor. Serves the leave-one-out table and the CR3 jackknife.
        """
        if self.estimator == "twfe-logit":
            keep, _ = _fe.drop_separated(
                keep.with_columns(_fe.gp_expr(self.multi_group)), [UNIT, _fe.GP], ["focal", "reference"]
            )
        xcols = covariate_columns(self.columns)
        pairs = keep.select(UNIT, PERIOD, GROUP, CLUSTER, TREATED, "focal", "reference", "n", *xcols)
        if pairs.height == 0 or pairs.get_column(TREATED).n_unique() < 2:
            raise SpecificationError("no treatment variation")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _estimate(
                pairs,
                estimator=self.estimator,
                weights=self.weights or "stops",
                multi_group=self.multi_group,
                names=self.columns,
                eta_start=keep.get_column("eta").to_numpy(),
            )


def fit_did(
    data: pl.DataFrame,
    *,
    estimator: Estimator = "twfe-logit",
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    treatment: str = "in_force",
    group: str | None = "state",
    weights: Weights = "stops",
    cluster: str = "county_fips",
    missing: Missing = "raise",
    vcov: VcovType = "CR1",
    inference: _fe.DefaultInference = _fe.DEFAULT_INFERENCE,
    race: str = "race",
    stops: str = "stops",
) -> DidResult:
    """Two-way fixed-effects DiD of the focal race's share of stops on a policy in force.

    Parameters
    ----------
    data
        Long panel, one row per unit × period × race with stop counts (``Panel.frame``; a frame from
        :func:`stopdisparity.synth.cells` filtered to one agency). Only the rows of ``race_pair`` are
        used; a unit-period needs both races' rows (0 stops is a row).
    estimator
        ``twfe-logit`` (binomial GLM on cells; the headline) or ``twfe-linear`` (WLS of the share).
    race_pair
        (focal, reference): the estimate is about focal / (focal + reference) stops.
    unit, period, treatment
        Column names: the unit of the unit fixed effects, the integer period, the 0/1 (or boolean)
        policy indicator.
    group
        Column whose levels get their own period effects (group × period effects) when the sample has
        more than one level; None or a single level: plain period effects.
    weights
        ``twfe-linear`` only: ``stops`` (cells weighted by focal + reference stops), ``county``
        (cells by stops, rescaled so each unit's weights sum to 1), ``unit-equal`` (unweighted cells).
    cluster
        Column to cluster standard errors by (constant within a unit-period).
    missing
        ``raise`` (default) or ``drop`` rows with missing values in the used columns (and unit-periods
        left with one race), with a :class:`~stopdisparity.errors.DroppedRowsWarning`.
    vcov
        ``CR1`` (default) or ``CR0``: which sandwich ``std_error`` and ``tidy()`` report; both are on
        the result.
    inference
        ``cr2`` (default): p-values and intervals from CR2 with Bell–McCaffrey df
        (:func:`stopdisparity.models.inference.cr2`), because CR1 under-covers when the effect's
        information sits in few clusters (issue 5's Monte Carlo: 0.90 against 0.95); ``cluster``: the
        analytical ``vcov`` (CR1) ones. ``std_error`` is the ``vcov`` SE either way (DESIGN.md).
    race, stops
        Columns holding the race label and the stop count.

    Returns
    -------
    DidResult

    Raises
    ------
    SpecificationError
        For an unknown option, missing or mistyped columns, duplicate unit × period × race rows,
        missing values under ``missing="raise"``, or a treatment that does not vary within the fixed
        effects.

    Warns
    -----
    FewClustersWarning
        When fewer than 10 clusters are treated, one holds more than 30% of treated stops, or the
        effect's information sits in fewer than 20 effective clusters (G*; that form,
        FewEffectiveClustersWarning, is heeded under the default CR2).
    InferenceFallbackWarning
        When the default CR2 cannot be formed (too many coefficients or too much memory) and the
        p-values and intervals are CR1.
    SparseCellWarning
        When units (or group-periods) are dropped because they have no focal or no reference stops
        (logit; their fixed effect would be infinite).
    DroppedRowsWarning
        When ``missing="drop"`` dropped rows.

    Notes
    -----
    Cells with no stops of either race carry no trials and are dropped (``n_empty_cells``). The
    estimation is described in the module docstring; the equalities with the stop-level logit, with
    the two-race Poisson and with pyfixest are tested.

    Examples
    --------
    >>> import polars as pl
    >>> from stopdisparity.models.did import fit_did
    >>> from stopdisparity.synth import SynthSpec, cells
    >>> frame = cells(SynthSpec(design="random", n_treated=20, states=("SC",)), seed=3,
    ...               period="quarter", rows=400_000).filter(pl.col("agency") == "state_patrol")
    >>> res = fit_did(frame)
    >>> res.tidy().select("term", "n_clusters").row(0)
    ('in_force', 46)
    """
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("weights", weights, WEIGHTS)
    check_choice("vcov", vcov, _fe.VCOV_TYPES)
    check_choice("inference", inference, _fe.DEFAULT_INFERENCES)
    if estimator == "twfe-logit" and weights != "stops":
        raise SpecificationError(
            f"weights applies to twfe-linear only (the logit weights cells by their stops as binomial "
            f"trials); got weights={weights!r} with estimator='twfe-logit'"
        )
    cells = _fe.prepare_cells(
        data,
        race_pair=race_pair,
        unit=unit,
        period=period,
        treatment=treatment,
        group=group,
        cluster=cluster,
        race=race,
        stops=stops,
        missing=missing,
        stacklevel=3,
    )
    focal, reference = cells.race_pair
    if estimator == "twfe-logit":
        estimand = (
            f"ATT on the log odds that a {focal}-or-{reference} stop is {focal}, stop-weighted over "
            f"treated {unit}-periods (TWFE logit; exact for a constant effect), under parallel trends in "
            "log odds"
        )
    else:
        wtext = {"stops": "stop-weighted", "county": f"{unit}-equal", "unit-equal": "cell-equal"}[weights]
        estimand = (
            f"ATT on the {focal} share of {focal}+{reference} stops ({wtext} TWFE regression weights), "
            "under parallel trends in levels of the share"
        )
    return _fit_cells(
        _fe.pair_cells(cells),
        estimator=estimator,
        weights=weights,
        vcov=vcov,
        inference=inference,
        multi_group=cells.multi_group,
        columns=dict(cells.columns),
        term=treatment,
        estimand=estimand,
        separation_text=f"no {focal} or no {reference} stops",
        layout="race",
        race_pair=(focal, reference),
        n_input_rows=cells.n_input_rows,
        n_dropped=cells.n_dropped,
        dropped_columns=cells.dropped_columns,
        lineage={
            "function": "stopdisparity.models.did.fit_did",
            "input_columns": list(data.columns),
            "options": {
                "estimator": estimator,
                "race_pair": [focal, reference],
                "weights": weights,
                "missing": missing,
                "vcov": vcov,
                "inference": inference,
                "group_effects": cells.multi_group,
            },
        },
    )


def _fit_cells(
    pairs: pl.DataFrame,
    *,
    estimator: Estimator,
    weights: Weights,
    vcov: VcovType,
    inference: _fe.DefaultInference,
    multi_group: bool,
    columns: Mapping[str, Any],
    term: str,
    estimand: str,
    separation_text: str,
    layout: Layout,
    race_pair: tuple[str, str] | None,
    n_input_rows: int,
    n_dropped: int,
    dropped_columns: tuple[str, ...],
    lineage: Mapping[str, Any],
    stacklevel: int = 4,
) -> DidResult:
    """The one estimation path of :func:`fit_did` and :func:`fit_did_panel`, from cells to a result.

    ``pairs`` holds one row per unit × period: unit, period, group, cluster, treated, focal
    (successes), reference (failures), n (trials, or the linear model's weight) and any covariate
    columns ``_x0``, ... named in ``columns["covariates"]``. Drops cells without trials, drops the
    logit's separated units and group-periods (with a warning), fits, and assembles the result.
    """
    unit = columns["unit"]
    empty = pairs.filter(pl.col("n") <= 0).height
    pairs = pairs.filter(pl.col("n") > 0).with_columns(_fe.gp_expr(multi_group))
    separated: list[Any] = []
    n_sep_cells = 0
    if estimator == "twfe-logit":
        before = pairs.height
        pairs, dropped = _fe.drop_separated(pairs, [UNIT, _fe.GP], ["focal", "reference"])
        separated = dropped[UNIT]
        n_sep_cells = before - pairs.height
        if n_sep_cells:
            gp_text = f" and {len(dropped[_fe.GP])} group-periods" if dropped[_fe.GP] else ""
            warnings.warn(
                f"{len(separated)} {unit} value(s) with {separation_text} in any period"
                f"{gp_text} are perfectly separated in the logit and were dropped ({n_sep_cells} cells): "
                f"{[str(u) for u in separated][:20]}",
                SparseCellWarning,
                stacklevel=stacklevel - 1,
            )
    if pairs.height == 0:
        raise SpecificationError("no cells left to fit after dropping empty and separated cells")
    pairs = pairs.drop(_fe.GP)
    core = _estimate(pairs, estimator=estimator, weights=weights, multi_group=multi_group, names=columns)
    _fe.warn_few_clusters(core.clusters, stacklevel=stacklevel, inference=inference)
    fit = core.fit
    sample = pairs.with_columns(
        pl.Series("weight", fit.weights),
        pl.Series("fitted", fit.mu),
        pl.Series("eta", fit.eta),
        pl.Series("treated_resid", _treated_resid(fit)),
    )
    full_lineage = {
        "function": lineage["function"],
        "input_columns": lineage["input_columns"],
        "input_rows": n_input_rows,
        "columns": dict(columns),
        "options": lineage["options"],
        "fixed_effects": list(core.fe_names),
        "engine": "IRLS with exact fixed-effect projection (stopdisparity.models._fe); statsmodels families",
        "versions": _fe.package_versions(),
    }
    result = DidResult(
        estimator=estimator,
        term=term,
        estimand=estimand,
        race_pair=race_pair,
        columns=dict(columns),
        weights=weights if estimator == "twfe-linear" and layout == "race" else None,
        vcov_type=vcov,
        estimate=core.estimate,
        variance_cr0=core.variance_cr0,
        small_sample=core.small_sample,
        pp_change=core.pp_change,
        pp_variance_cr0=float(np.sum(core.pp_influence**2)),
        nobs=pairs.height,
        n_stops=round(float(pairs.get_column("n").sum())),
        clusters=core.clusters,
        cluster_labels=core.cluster_labels,
        influence=core.influence,
        pp_influence=core.pp_influence,
        fixed_effects=core.fe_names,
        separated_units=tuple(str(u) for u in separated),
        n_separated_cells=n_sep_cells,
        n_empty_cells=empty,
        n_dropped=n_dropped,
        dropped_columns=dropped_columns,
        converged=fit.converged,
        iterations=fit.iterations,
        deviance=fit.deviance,
        multi_group=multi_group,
        sample=sample,
        lineage=full_lineage,
        layout=layout,
        covariates=tuple(columns.get("covariates") or ()),
        covariate_estimates=np.asarray(fit.beta[1:], dtype=float),
        covariate_influence=core.covariate_influence,
    )
    return _fe.with_default_inference(result, inference, stacklevel)


def _check_inference_covariates(covariates: tuple[str, ...], inference: Inference) -> None:
    """Refuse an inference that does not partial out the result's covariates (see ``with_inference``)."""
    if set(covariates) != set(inference.covariates):
        raise SpecificationError(
            f"this result has covariates {list(covariates)} but the inference {inference.label!r} "
            f"partials out {list(inference.covariates)}: it would test a different model. Attach inference "
            "computed from this result (stopdisparity.models.inference.apply_inference), which partials out "
            "its covariates"
        )


def fit_did_panel(
    data: pl.DataFrame,
    *,
    yname: str,
    idname: str,
    tname: str,
    gname: str,
    trials: str | None = None,
    weights: str | None = None,
    xnames: Sequence[str] = (),
    estimator: Estimator | None = None,
    cluster: str | None = None,
    group: str | None = None,
    missing: Missing = "raise",
    vcov: VcovType = "CR1",
    inference: _fe.DefaultInference = _fe.DEFAULT_INFERENCE,
) -> DidResult:
    """Two-way fixed-effects DiD on any unit × period panel, with absorbing treatment from ``gname``.

    The generic form of :func:`fit_did`, with the standard DiD argument names (R's ``did``, pyfixest's
    ``event_study``). Both run the same estimation code: the race layout is this model with successes
    = focal-race stops and trials = focal + reference stops.

    Parameters
    ----------
    data
        One row per ``idname`` × ``tname`` (other columns are ignored). Column names may be any string.
    yname
        The outcome: successes out of ``trials`` (logit), or any number (linear).
    idname, tname
        The unit (unit fixed effects) and the integer period (period fixed effects).
    gname
        The period in which the unit's treatment starts; 0 or null = never treated. Treatment is
        absorbing: the regressor (term ``in_force``) is 1 when ``tname >= gname``. Must be an
        integer, constant within a unit, and 0 or within the range of ``tname``.
    trials
        Binomial trials; with ``twfe-logit`` the model is the unit-level logit of the expanded
        Bernoulli data, with ``twfe-linear`` the share ``yname / trials`` weighted by trials.
    weights
        ``twfe-linear`` only: analytic weights (pyfixest ``feols(weights=...)``); default 1, or
        ``trials`` when given.
    xnames
        Time-varying covariates entering as regressors beside the treatment; their rows follow the
        treatment's in ``tidy()``.
    estimator
        ``twfe-logit`` (needs ``trials``) or ``twfe-linear``; default: the logit when ``trials`` is
        given, the linear model otherwise.
    cluster
        Column to cluster by; default ``idname``.
    group
        Column whose levels get their own period effects (group × period); default none (period
        effects).
    missing
        ``raise`` (default) or ``drop`` rows with nulls or NaN in the used columns (a null ``gname``
        is never treated, not missing), with a :class:`~stopdisparity.errors.DroppedRowsWarning`.
    vcov, inference
        As :func:`fit_did`.

    Returns
    -------
    DidResult
        ``layout="panel"``; ``tidy()`` has the ``in_force`` row first, then the covariates.

    Raises
    ------
    SpecificationError
        For an impossible combination (the logit without trials or with weights), a missing or
        mistyped column (the message names it), duplicate unit-periods, a bad ``gname`` (non-integer,
        varying within a unit, outside the period range), an outcome outside [0, trials], negative
        trials or weights, missing values under ``missing="raise"``, or a regressor collinear with
        the fixed effects.

    Warns
    -----
    FewClustersWarning, SparseCellWarning, DroppedRowsWarning
        As :func:`fit_did` (SparseCellWarning: logit units with no successes or no failures).

    Notes
    -----
    Small-sample factor and reference distribution as :func:`fit_did`: for the logit N counts the
    trials (the Bernoulli observations), for the linear model the rows; K counts the treatment, the
    covariates and the fixed-effect levels not nested in the clusters (pyfixest ``CRV1``). Rows with
    zero trials or zero weight carry no information and are dropped (``n_empty_cells``). The
    percentage-point effect of the logit is weighted by trials over treated rows.

    References
    ----------
    Callaway, B. & Sant'Anna, P. H. C. (2021), https://doi.org/10.1016/j.jeconom.2020.12.001 (argument
    names); Goodman-Bacon, A. (2021), https://doi.org/10.1016/j.jeconom.2021.03.014 (what TWFE
    estimates under staggered adoption; see :meth:`DidResult.effective_weights`).

    Examples
    --------
    >>> import polars as pl
    >>> from stopdisparity.models.did import fit_did_panel
    >>> panel = pl.DataFrame({
    ...     "county id": [u for u in range(8) for _ in range(6)],
    ...     "year": [t for _ in range(8) for t in range(2000, 2006)],
    ...     "first.treat": [2003 if u < 4 else 0 for u in range(8) for _ in range(6)],
    ...     "log emp": [0.1 * u + 0.05 * t + (0.3 if u < 4 and t >= 3 else 0.0) + 0.01 * ((u * t) % 3)
    ...                 for u in range(8) for t in range(6)],
    ... })
    >>> res = fit_did_panel(panel, yname="log emp", idname="county id", tname="year",
    ...                     gname="first.treat")
    >>> res.tidy().select("term", "estimator").row(0)
    ('in_force', 'twfe-linear')
    """
    if estimator is None:
        estimator = "twfe-logit" if trials is not None else "twfe-linear"
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("vcov", vcov, _fe.VCOV_TYPES)
    check_choice("inference", inference, _fe.DEFAULT_INFERENCES)
    prepared = prepare_panel(
        data,
        yname=yname,
        idname=idname,
        tname=tname,
        gname=gname,
        trials=trials,
        weights=weights,
        xnames=xnames,
        cluster=cluster,
        group=group,
        missing=missing,
        binomial=estimator == "twfe-logit",
        stacklevel=3,
    )
    cols = prepared.columns
    absorbing = f"treatment absorbing from {gname!r} ({tname} >= {gname})"
    adjusted = f", adjusting for {list(cols['covariates'])}" if cols["covariates"] else ""
    if estimator == "twfe-logit":
        estimand = (
            f"ATT on the log odds of {yname!r} successes out of {trials!r} trials, trial-weighted over "
            f"treated {idname}-periods (TWFE logit; exact for a constant effect){adjusted}, under parallel "
            f"trends in log odds; {absorbing}"
        )
    else:
        what = f"the share {yname!r}/{trials!r}" if trials is not None else repr(yname)
        wtext = (
            f"weighted by {weights!r}"
            if weights is not None
            else ("weighted by trials" if trials is not None else "unweighted")
        )
        estimand = (
            f"ATT on {what} (TWFE regression, {wtext}){adjusted}, under parallel trends in levels; "
            f"{absorbing}"
        )
    return _fit_cells(
        prepared.frame,
        estimator=estimator,
        weights="stops",
        vcov=vcov,
        inference=inference,
        multi_group=prepared.multi_group,
        columns=cols,
        term=TREATMENT_TERM,
        estimand=estimand,
        separation_text=f"no successes or no failures of {yname!r}",
        layout="panel",
        race_pair=None,
        n_input_rows=prepared.n_input_rows,
        n_dropped=prepared.n_dropped,
        dropped_columns=prepared.dropped_columns,
        lineage={
            "function": "stopdisparity.models.did.fit_did_panel",
            "input_columns": list(data.columns),
            "options": {
                "estimator": estimator,
                "missing": missing,
                "vcov": vcov,
                "inference": inference,
                "group_effects": prepared.multi_group,
                "treatment": "absorbing: tname >= gname (gname 0 or null = never treated)",
            },
        },
    )
