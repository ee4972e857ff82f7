r"""Wooldridge's extended two-way fixed effects (ETWFE): the heterogeneity-robust headline (issue 6).

:func:`etwfe` fits the pooled ETWFE regression of Wooldridge (2023) — logit (binomial GLM on
successes / trials), Poisson (counts with a log-exposure offset) or linear (WLS) — on a
:class:`~stopdisparity.models._staggered_data.StaggeredPanel`, and aggregates the cohort × period
effects like R ``etwfe::emfx``: ``simple``, ``event``, ``group`` and ``calendar``, on the link scale
(log odds, log rate, level) and on the response scale (percentage points, rate per unit of exposure).

Model
-----
With cohorts :math:`g` (adoption period; 0 = never treated), periods :math:`t`, and cells
:math:`(g, t)` marked "treated" as R ``etwfe`` marks ``.Dtreat``,

.. math:: h^{-1}(\mu_{it}) = \alpha_{g(i)} + \gamma_t + \sum_{(g,t)\ \text{treated}}
    D_{g}\,1\{t\}\,(\tau_{gt} + \dot x_i'\delta_{gt}) + x_i'(\beta + \xi_{g(i)} + \pi_t)

(Wooldridge 2023, eq. 6.3 and 2021 for the linear case): cohort and period effects (the pooled form;
for the linear model on a balanced panel unit effects give the same :math:`\tau`), covariates
``panel.xnames`` with cohort and period slopes, and in treated cells their demeaned values
:math:`\dot x = x - \bar x_g` (mean within cohort over all its rows, as ``etwfe`` does).

- ``control="not_yet"`` (``etwfe``'s default ``cgroup = "notyet"``): treated cells are
  :math:`t \ge g` of every treated cohort; the not-yet-treated and never-treated cells identify
  :math:`\alpha, \gamma`. Without never-treated units the last cohort is the comparison
  (``gref = max(g)``) and periods from its adoption on are dropped, as in ``etwfe``.
- ``control="never"`` (``cgroup = "never"``): every period of a treated cohort except
  :math:`t = g - 1` gets its own dummy, so the cohort's pre-period cells :math:`t < g - 1` are
  placebo effects against :math:`g - 1` and only never-treated units identify the period effects.

Computation
-----------
Each treated cell has a free intercept and free covariate slopes, so the likelihood separates: the
treated cells' score equations make their fitted values exact cell-level fits, and the remaining
parameters :math:`\phi = (\alpha, \gamma, \beta, \xi, \pi)` are the GLM on the untreated cells alone
(an imputation estimator; Wooldridge 2021, Borusyak, Jaravel & Spiess 2024 for the linear case). The
fit is therefore (1) a dense IRLS on the untreated cells — collapsed to cohort × period sums when there
are no covariates, which is exact because all regressors are constant within a cohort-period — and
(2) one small Newton problem per treated cell with the offset :math:`z_i'\hat\phi`, all cells at once.
This is the same M-estimator as the joint regression (the joint score equations are a non-singular
linear transform of these), so the coefficients and the sandwich equal the joint fit's: the tests check
both against pyfixest and statsmodels on the spelled-out dummy regression.

Inference: per-cluster influence functions :math:`\psi_\phi = S_\phi H_\phi^{-1}` and, for a cell,
:math:`\psi_{\theta_c} = (S_c - \psi_\phi J_c') H_c^{-1}` with :math:`J_c = \sum_{i \in c} w_i
\dot x_{1i} z_i'`; every aggregate is a smooth function of :math:`(\phi, \theta)` and its
delta-method influence is the chain rule through these. CR1 multiplies the CR0 variance by
:math:`G/(G-1)\cdot(N-1)/(N-K)` (fixest / pyfixest ``CRV1``), with :math:`K` all estimated
coefficients (fixed effects included; none is nested in the clusters) and :math:`N` the stops
(Bernoulli trials) for the logit, as the headline TWFE logit, else the panel rows.
By default (``fit_staggered``, ``did``) the link-scale rows' p-values and intervals are replaced by
CR2 with Bell–McCaffrey degrees of freedom (``inference.cr2``; ``inference="cluster"`` keeps CR1),
computed on the pooled regression written out (cohort and
period effects, one dummy per treated cell; :attr:`EtwfeResult.cr2_fit`), where CR1 under-covers
with stop weights concentrated in a few counties (tests/test_monte_carlo_staggered.py).

Event time :math:`e` counts panel periods from adoption (``t - g`` for consecutive integer periods, as
``etwfe``); monthly panels with yearly cohorts have monthly event times — coarsen the panel first when
yearly event times are wanted.

Aggregations (as ``emfx``): the effect in a treated cell, averaged over its rows with weights
:math:`n` (trials / exposure / WLS weights), then cells averaged with weights :math:`\sum_{i\in c} n_i`:
``simple`` over all post cells, ``group`` per cohort, ``calendar`` per period, ``event`` per
:math:`e = t - g` (post only with ``not_yet``; with ``never`` also the placebo :math:`e \le -2`). On
the link scale the cell effect is :math:`\tau_{gt} + \bar{\dot x}_c'\delta_{gt}`; on the response scale
it is the average of :math:`h(\hat\eta) - h(\hat\eta - \tau - \dot x'\delta)` — the logit's
percentage-point change :math:`100\sum n(\Lambda(\hat\eta) - \Lambda(\hat\eta^0))/\sum n`, the
Poisson's change in the rate per unit of exposure.

References
----------
Wooldridge, J. M. (2023). Simple approaches to nonlinear difference-in-differences with panel data.
Econometrics Journal 26(3), C31-C66. https://doi.org/10.1093/ectj/utad016
Wooldridge, J. M. (2021). Two-way fixed effects, the two-way Mundlak regression, and
difference-in-differences estimators. SSRN 3906345 (Empirical Economics, 2025).
https://doi.org/10.1007/s00181-025-02807-z
McDermott, G. (2023-2026). etwfe: Extended two-way fixed effects. R package, version 0.6.2.
https://grantmcdermott.com/etwfe/
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
Sun, L. & Abraham, S. (2021). Estimating dynamic treatment effects in event studies with heterogeneous
treatment effects. Journal of Econometrics 225(2), 175-199. https://doi.org/10.1016/j.jeconom.2020.09.006
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
For 287(g) timing: ICE, "Delegation of Immigration Authority Section 287(g)" agreement lists, as
imported by :mod:`stopdisparity.policy`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.linalg
import scipy.linalg.lapack
import scipy.sparse as sp
from scipy.special import expit

from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.models import _cr2, _fe
from stopdisparity.models._fe import ClusterSummary, Inference, SmallSample
from stopdisparity.models._staggered_data import (
    CLUSTER,
    GID,
    TID,
    UID,
    G,
    N,
    StaggeredPanel,
    Y,
    drop_always_treated,
    on_scale,
    warn_thin_cells,
)
from stopdisparity.results import TidyRow, tidy_frame

Family = Literal["logit", "poisson", "linear"]
Control = Literal["never", "not_yet"]
FAMILIES: tuple[Family, ...] = ("logit", "poisson", "linear")
CONTROLS: tuple[Control, ...] = ("never", "not_yet")

ESTIMANDS: Mapping[str, str] = {
    "logit": "ATT on the log odds (and in percentage points); parallel trends in log odds",
    "poisson": "ATT on the log rate (and on the rate per unit of exposure); parallel trends in log rates",
    "linear": "ATT on the outcome level; parallel trends in levels",
}
_MAX_ITER = 100
_TOL = 1e-11


# ---------------------------------------------------------------------------------------- families
def _mean(family: str, eta: np.ndarray) -> np.ndarray:
    if family == "logit":
        return expit(eta)
    if family == "poisson":
        return np.exp(eta)
    return eta


def _dmean(family: str, mu: np.ndarray) -> np.ndarray:
    """dμ/dη for the canonical links, from μ."""
    if family == "logit":
        return mu * (1.0 - mu)
    if family == "poisson":
        return mu
    return np.ones_like(mu)


def _link(family: str, mu: np.ndarray) -> np.ndarray:
    if family == "logit":
        return np.log(mu) - np.log1p(-mu)
    if family == "poisson":
        return np.log(mu)
    return mu


# ------------------------------------------------------------------------------------------ design
@dataclass(frozen=True)
class _Design:
    """Dense columns of the untreated-cell model: cohort, period, covariate × cohort / period."""

    n_cohorts: int
    n_periods: int
    k: int
    keep: np.ndarray  # indices of the linearly independent columns

    @property
    def n_full(self) -> int:
        return (self.n_cohorts + self.n_periods - 1) * (1 + self.k)

    def build(self, cohort: np.ndarray, tid: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Design rows (m × kept columns) for cohort codes, period codes and covariates (m × k)."""
        m = cohort.shape[0]
        base = np.zeros((m, self.n_cohorts + self.n_periods - 1))
        rows = np.arange(m)
        base[rows, cohort] = 1.0
        on = tid > 0
        base[rows[on], self.n_cohorts + tid[on] - 1] = 1.0
        blocks = [base] + [base * x[:, [j]] for j in range(self.k)]
        return np.hstack(blocks)[:, self.keep]


def _independent(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Indices of a maximal set of linearly independent columns, in their original order.

    Pivoted Cholesky (LAPACK ``dpstrf``) of the weighted Gram matrix with unit-scaled columns: the
    collinearities here are exact (dummies that add up to others), so a relative tolerance of 1e-10
    on the Gram scale separates them cleanly.
    """
    zs = z * np.sqrt(w)[:, None]
    gram = zs.T @ zs
    d = np.sqrt(np.diag(gram))
    live = d > 0
    scale = np.where(live, d, 1.0)
    gram = gram / scale[:, None] / scale[None, :]
    _, piv, rank, _ = scipy.linalg.lapack.dpstrf(gram, lower=1, tol=1e-10)
    return np.sort(piv[:rank] - 1)


def _irls(
    family: str, y: np.ndarray, prior: np.ndarray, z: np.ndarray, offset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dense IRLS (Newton for canonical links); returns (coefficients, linear predictor)."""
    off = np.zeros_like(y) if offset is None else offset
    if family == "linear":
        zw = z * prior[:, None]
        phi = np.linalg.solve(zw.T @ z, zw.T @ (y - off))  # BLAS products: einsum is slow here
        return phi, off + z @ phi
    mu = (prior * y + 0.5) / (prior + 1.0) if family == "logit" else np.maximum(y, 1e-3) + 0.1
    eta = _link(family, mu)
    phi = np.zeros(z.shape[1])
    for _ in range(_MAX_ITER):
        mu = _mean(family, eta)
        w = prior * _dmean(family, mu)
        work = eta - off + (y - mu) / np.maximum(_dmean(family, mu), 1e-300)
        zw = z * w[:, None]
        phi_new = np.linalg.solve(zw.T @ z, zw.T @ work)
        eta_new = off + z @ phi_new
        change = float(np.max(np.abs(eta_new - eta))) if eta.size else 0.0
        phi, eta = phi_new, eta_new
        if change < _TOL:
            return phi, eta
    raise SpecificationError(
        f"the {family} model of the untreated cells did not converge in {_MAX_ITER} iterations (last change "
        f"{change:.2e}); a cohort or period whose untreated cells are all 0 (or all 1) separates the data"
    )


# ------------------------------------------------------------------------------------------ result
@dataclass(frozen=True, eq=False)
class EtwfeResult(_fe.ClusteredResult):
    r"""Wooldridge's extended TWFE fit and its ``emfx``-style aggregations (from :func:`etwfe`).

    Users get it from the ``did --estimator etwfe`` verbs. ``cells`` has one row per treated cell
    (``g, t, e, post, n_units, weight`` (:math:`\sum n`), ``estimate`` and ``std_error`` on the link
    scale, ``response`` and ``response_std_error``); ``aggregates`` one row per reported aggregate with
    the CR0 influence in ``influence_link`` / ``influence_response`` (G × rows). ``event_times``,
    ``coefficients`` and ``vcov`` (CR1, link scale) are the event aggregation, for
    :mod:`stopdisparity.models.sensitivity`; with ``control="never"`` they include the placebo
    :math:`e \le -2` and omit the reference :math:`e = -1`.

    Notes
    -----
    The headline TWFE logit's single coefficient is a weighted average of cell effects whose weights
    can be negative under staggered adoption with dynamic effects (Goodman-Bacon 2021); ETWFE estimates
    every cohort × period effect separately and averages them with the positive weights above.
    Wooldridge (2023), https://doi.org/10.1093/ectj/utad016.
    """

    family: Family
    control: Control
    estimator: str
    estimand: str
    cells: pl.DataFrame
    aggregates: pl.DataFrame
    influence_link: np.ndarray
    influence_response: np.ndarray
    event_times: tuple[int, ...]
    coefficients: np.ndarray
    vcov: np.ndarray
    cell_vcov: np.ndarray
    small_sample: SmallSample
    clusters: ClusterSummary
    vcov_type: str
    columns: Mapping[str, Any]
    nobs: int
    n_trials: float
    n_treated_units: int
    fit_seconds: float
    lineage: Mapping[str, Any]
    #: The pooled regression in the form :func:`stopdisparity.models.inference.cr2` needs (cohort and
    #: period effects, one dummy per treated cell, the link-scale aggregates as contrasts); None with
    #: covariates (their cell slopes make the aggregates functions of the covariate means).
    cr2_fit: _cr2.Cr2Fit | None = None
    inference: Inference | None = None

    def with_inference(self, inference: Inference) -> EtwfeResult:
        """A copy whose ``tidy()`` takes p-values, intervals and label from ``inference``."""
        return dataclasses.replace(self, inference=inference)

    @property
    def _df(self) -> int | None:
        return self.clusters.g - 1 if self.family == "linear" else None

    @property
    def _factor(self) -> float:
        return self.small_sample.factor if self.vcov_type == "CR1" else 1.0

    @property
    def inference_label(self) -> str:
        """The analytical inference's label."""
        dist = f"t({self.clusters.g - 1})" if self.family == "linear" else "normal"
        return f"{self.vcov_type} clustered by {self.columns['cluster']}, delta method; {dist}"

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """``att`` (simple), then ``event:<e>``, ``group:<g>``, ``calendar:<t>`` rows; DESIGN.md contract.

        ``estimate`` is on the link scale (log odds, log rate, level). Extra keys: ``aggregation``,
        ``n_treated_units``, and ``pp_change`` / ``pp_std_error`` (logit, percentage points) or
        ``response_change`` / ``response_std_error`` (Poisson, rate per unit of exposure).
        """
        f = self._factor
        se_link = np.sqrt(np.sum(self.influence_link**2, axis=0) * f)
        se_resp = np.sqrt(np.sum(self.influence_response**2, axis=0) * f)
        rows = []
        for j, r in enumerate(self.aggregates.iter_rows(named=True)):
            est = float(r["estimate"])
            se = float(se_link[j])
            stat, p, lo, hi = _fe.inference_stats(est, se, alpha, self._df)
            p, lo, hi, label = _fe.attached(self.inference, r["term"], p, lo, hi, self.inference_label, alpha)
            extra: dict[str, Any] = {"aggregation": r["aggregation"], "n_treated_units": r["n_treated_units"]}
            if self.family == "logit":
                extra |= {"pp_change": 100.0 * r["response"], "pp_std_error": 100.0 * float(se_resp[j])}
            elif self.family == "poisson":
                extra |= {"response_change": r["response"], "response_std_error": float(se_resp[j])}
            rows.append(
                TidyRow(
                    r["term"],
                    est,
                    se,
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
            )
        return tidy_frame(rows)


# -------------------------------------------------------------------------------------- estimation
def etwfe(
    panel: StaggeredPanel,
    *,
    family: Family = "logit",
    control: Control = "never",
    alpha: float = 0.05,
    vcov_type: Literal["CR1", "CR0"] = "CR1",
) -> EtwfeResult:
    """Fit Wooldridge's (2023) extended TWFE on a staggered panel and aggregate it as ``etwfe::emfx``.

    Parameters
    ----------
    panel
        From :func:`~stopdisparity.models._staggered_data.prepare_staggered`. With trials, ``y`` is the
        share and ``n`` the trials (logit); the Poisson models the count ``y·n`` with exposure ``n``
        (offset ``log n``: identical to the Poisson QMLE of the rate ``y`` with weights ``n``); the
        linear model is WLS of ``y`` with weights ``n``.
    family
        ``logit`` (the headline's binomial GLM), ``poisson`` or ``linear``.
    control
        ``never`` (never-treated units; pre-period placebo cells against ``g - 1``) or ``not_yet``
        (not-yet- and never-treated cells), as ``etwfe``'s ``cgroup``.
    alpha
        Checked only (``tidy(alpha)`` sets the intervals); kept for a uniform estimator signature.
    vcov_type
        ``CR1`` (default; fixest/pyfixest CRV1) or ``CR0``.

    Returns
    -------
    EtwfeResult

    Raises
    ------
    SpecificationError
        Unknown options; ``control="never"`` without never-treated units; a treated cell whose pooled
        share is 0 or 1 (logit) or whose count is 0 (Poisson): its log-odds effect is infinite.
    """
    check_choice("family", family, FAMILIES)
    check_choice("control", control, CONTROLS)
    check_choice("vcov_type", vcov_type, ("CR1", "CR0"))
    if not (0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    start = time.perf_counter()
    frame = panel.frame
    periods = panel.periods
    n_periods = len(periods)

    # ---------------------------------------------------------------- sample and treated cells
    frame, _ = drop_always_treated(
        frame, periods[0], why="they have no untreated period to identify their cohort effect"
    )
    if panel.has_never_treated:
        ref_gid = -1
    elif control == "never":
        raise SpecificationError(
            "control='never' needs never-treated units and this panel has none; use control='not_yet' "
            "(the last cohort becomes the comparison group)"
        )
    else:
        ref_gid = int(frame.get_column(GID).max())  # type: ignore[arg-type]
        frame = frame.filter(pl.col(TID) < ref_gid)
    treated_cohort = (pl.col(G) > 0) & (pl.col(GID) != ref_gid)
    if control == "not_yet":
        is_cell = treated_cohort & (pl.col(TID) >= pl.col(GID))
    else:
        is_cell = treated_cohort & (pl.col(TID) != pl.col(GID) - 1)
    frame = frame.with_columns(is_cell.alias("_cell"))
    if frame.filter(pl.col("_cell")).height == 0:
        raise SpecificationError("no treated cohort × period cell is left to estimate")

    gvals = frame.get_column(G).to_numpy()
    cohort_levels = np.unique(gvals)
    cohort = np.searchsorted(cohort_levels, gvals)
    tid = frame.get_column(TID).to_numpy().astype(np.int64)
    y = frame.get_column(Y).to_numpy().astype(float)
    n = frame.get_column(N).to_numpy().astype(float)
    xcols = list(panel.xnames)
    k = len(xcols)
    x = frame.select(xcols).to_numpy().astype(float) if k else np.zeros((frame.height, 0))
    if k:  # demeaned within cohort over all of the cohort's rows (etwfe: demean(x ~ gvar))
        xbar = np.zeros((cohort_levels.size, k))
        np.add.at(xbar, cohort, x)
        xbar /= np.bincount(cohort, minlength=cohort_levels.size)[:, None]
        xdot = x - xbar[cohort]
    else:
        xdot = x
    cl_s = frame.get_column(CLUSTER).cast(pl.String)
    cl_codes = _fe.codes_of(cl_s)
    cl_labels = pl.DataFrame({"c": cl_codes, "u": cl_s}).unique("c").sort("c").get_column("u").to_list()
    n_cl = len(cl_labels)
    is_t = frame.get_column("_cell").to_numpy()
    un = ~is_t

    # ---------------------------------------------------------------- (1) untreated-cell model
    full = _Design(
        cohort_levels.size, n_periods, k, np.arange((cohort_levels.size + n_periods - 1) * (1 + k))
    )
    if k == 0:  # collapse to cohort × period sums: exact, every regressor is constant within them
        key = cohort[un] * n_periods + tid[un]
        ukey, inv = np.unique(key, return_inverse=True)
        w_d = np.bincount(inv, weights=n[un])
        y_d = np.bincount(inv, weights=n[un] * y[un]) / w_d
        z_full = full.build(ukey // n_periods, ukey % n_periods, np.zeros((ukey.size, 0)))
        row_of = inv
    else:
        w_d, y_d = n[un], y[un]
        z_full = full.build(cohort[un], tid[un], x[un])
        row_of = np.arange(int(un.sum()))
    keep = _independent(z_full, w_d)
    design = _Design(cohort_levels.size, n_periods, k, keep)
    z_u = z_full[:, keep]
    if family == "poisson":
        phi, eta_d = _irls(family, y_d * w_d, np.ones_like(w_d), z_u, np.log(w_d))
        eta_d = eta_d - np.log(w_d)  # log rate
    else:
        phi, eta_d = _irls(family, y_d, w_d, z_u)
    p = phi.size
    eta_u = eta_d[row_of]
    mu_u = _mean(family, eta_u)
    r_u = n[un] * (y[un] - mu_u)
    h_u = (z_u * (w_d * _dmean(family, _mean(family, eta_d)))[:, None]).T @ z_u
    # cluster sums of the untreated scores: (G × rows) residual sums times the design rows
    m_u = sp.csr_matrix((r_u, (cl_codes[un], row_of)), shape=(n_cl, z_u.shape[0]))
    s_phi = np.asarray(m_u @ z_u)
    psi_phi = np.linalg.solve(h_u, s_phi.T).T  # G × p

    # ---------------------------------------------------------------- (2) treated cells, all at once
    tg, tt = cohort[is_t], tid[is_t]
    cell_key = tg * n_periods + tt
    ukeys, cell = np.unique(cell_key, return_inverse=True)
    n_cells = ukeys.size
    nt, yt = n[is_t], y[is_t]
    x1 = np.column_stack([np.ones(nt.size), xdot[is_t]])  # N_t × q
    q = x1.shape[1]
    z_t = design.build(tg, tt, x[is_t])
    off = z_t @ phi
    m_c = np.bincount(cell, weights=nt, minlength=n_cells)
    pooled = np.bincount(cell, weights=nt * yt, minlength=n_cells) / m_c
    cell_g = cohort_levels[ukeys // n_periods]
    cell_tid = ukeys % n_periods
    if family == "logit":
        bad = (pooled <= 0) | (pooled >= 1)
    elif family == "poisson":
        bad = pooled <= 0
    else:
        bad = np.zeros(n_cells, dtype=bool)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise SpecificationError(
            f"{int(bad.sum())} treated cell(s) have an outcome share of 0 or 1 (or a zero count), e.g. "
            f"cohort {int(cell_g[i])} in period {periods[cell_tid[i]]}: the {family} effect there is "
            "infinite. Aggregate to longer periods or coarser cohorts"
        )
    theta = np.zeros((n_cells, q))
    off_mean = np.bincount(cell, weights=nt * off, minlength=n_cells) / m_c
    theta[:, 0] = _link(family, pooled) - off_mean if family != "linear" else pooled - off_mean
    ind = [sp.csr_matrix((x1[:, a], (cell, np.arange(nt.size))), shape=(n_cells, nt.size)) for a in range(q)]
    for _ in range(_MAX_ITER):
        eta1 = off + np.einsum("ij,ij->i", x1, theta[cell])
        mu1 = _mean(family, eta1)
        w1 = nt * _dmean(family, mu1)
        grad = np.column_stack([ind[a] @ (nt * (yt - mu1)) for a in range(q)])
        hess = np.zeros((n_cells, q, q))
        for a in range(q):
            for b in range(a, q):
                hess[:, a, b] = hess[:, b, a] = ind[a] @ (w1 * x1[:, b])
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        theta = theta + step
        if float(np.max(np.abs(step))) < _TOL or family == "linear":
            break
    else:
        raise SpecificationError(f"the treated cells' {family} fits did not converge")
    eta1 = off + np.einsum("ij,ij->i", x1, theta[cell])
    mu1 = _mean(family, eta1)
    d1 = _dmean(family, mu1)
    w1 = nt * d1
    hess = np.zeros((n_cells, q, q))
    for a in range(q):
        for b in range(a, q):
            hess[:, a, b] = hess[:, b, a] = ind[a] @ (w1 * x1[:, b])
    hinv = np.linalg.inv(hess)
    # J_c = sum_i w_i x1_i z_i' : (cells, q, p); S_c cluster sums of the cell scores: (G, cells, q)
    jac = np.stack([np.asarray(ind[a].multiply(w1[None, :]) @ z_t) for a in range(q)], axis=1)
    r_t = nt * (yt - mu1)
    flat = cl_codes[is_t] * n_cells + cell
    s_c = np.stack(
        [np.bincount(flat, weights=r_t * x1[:, a], minlength=n_cl * n_cells) for a in range(q)], axis=1
    ).reshape(n_cl, n_cells, q)
    psi_theta = np.einsum("gcq,crq->gcr", s_c - np.tensordot(psi_phi, jac, axes=([1], [2])), hinv)

    # ---------------------------------------------------------------- cell effects, both scales
    xbar_c = np.column_stack([np.bincount(cell, weights=nt * x1[:, a], minlength=n_cells) for a in range(q)])
    xbar_c /= m_c[:, None]
    link_c = np.einsum("cq,cq->c", theta, xbar_c)
    psi_link = np.einsum("gcq,cq->gc", psi_theta, xbar_c)
    eta0 = off
    mu0 = _mean(family, eta0)
    resp_c = np.bincount(cell, weights=nt * (mu1 - mu0), minlength=n_cells) / m_c
    g_theta = (
        np.column_stack([np.bincount(cell, weights=nt * d1 * x1[:, a], minlength=n_cells) for a in range(q)])
        / m_c[:, None]
    )
    dd = nt * (d1 - _dmean(family, mu0)) / m_c[cell]
    g_phi = np.asarray(sp.csr_matrix((dd, (cell, np.arange(nt.size))), shape=(n_cells, nt.size)) @ z_t)
    psi_resp = psi_phi @ g_phi.T + np.einsum("gcq,cq->gc", psi_theta, g_theta)

    # ---------------------------------------------------------------- aggregations
    uid_all = frame.get_column(UID).to_numpy()
    # treated units behind each cell and aggregate (distinct units: right for unbalanced panels too)
    ucodes = np.unique(uid_all[is_t], return_inverse=True)[1]
    incidence = sp.csr_matrix((np.ones(ucodes.size), (cell, ucodes)), shape=(n_cells, int(ucodes.max()) + 1))
    incidence.data[:] = 1.0  # duplicates summed: back to 0/1
    cell_t = np.asarray(periods)[cell_tid]
    cell_gtid = np.array([periods.index(int(g)) for g in cell_g])
    cell_e = cell_tid - cell_gtid
    post = cell_e >= 0
    n_units_c = np.asarray((incidence > 0).sum(axis=1)).ravel()
    specs: list[tuple[str, str, np.ndarray]] = [("att", "simple", post)]
    for e in np.unique(cell_e):
        if e == -1:
            continue
        specs.append((f"event:{int(e)}", "event", cell_e == e))
    for g in np.unique(cell_g[post]):
        specs.append((f"group:{int(g)}", "group", post & (cell_g == g)))
    for t in np.unique(cell_t[post]):
        specs.append((f"calendar:{int(t)}", "calendar", post & (cell_t == t)))
    wmat = np.zeros((len(specs), n_cells))
    for j, (_, _, sel) in enumerate(specs):
        wmat[j, sel] = m_c[sel] / m_c[sel].sum()
    n_tr = np.asarray(((sp.csr_matrix(wmat > 0, dtype=float) @ incidence) > 0).sum(axis=1)).ravel()
    agg_link = wmat @ link_c
    agg_resp = wmat @ resp_c
    infl_link = psi_link @ wmat.T
    infl_resp = psi_resp @ wmat.T
    aggregates = pl.DataFrame(
        {
            "term": [s[0] for s in specs],
            "aggregation": [s[1] for s in specs],
            "estimate": agg_link,
            "response": agg_resp,
            "n_treated_units": pl.Series(n_tr, dtype=pl.Int64),
        }
    )

    # ---------------------------------------------------------------- the pooled regression, for CR2
    cr2_fit = None
    if k == 0:
        mu_all = np.empty(frame.height)
        mu_all[un], mu_all[is_t] = mu_u, mu1
        dm = _dmean(family, mu_all)
        rows_t = np.flatnonzero(is_t)
        cell_dummies = sp.csr_matrix((np.ones(rows_t.size), (rows_t, cell)), shape=(frame.height, n_cells))
        cr2_fit = _cr2.Cr2Fit((cohort, tid), cell_dummies, n * dm, (y - mu_all) / dm, cl_codes, n_cl, wmat.T)

    # ---------------------------------------------------------------- small sample, clusters, warnings
    n_ssc = round(float(n.sum())) if family == "logit" else frame.height
    # K: the cohort and period dummies (as fixed effects: C + T - 1 when all are identified) + the rest
    n_fe_cols = int(np.sum(keep < cohort_levels.size + n_periods - 1))
    full_fe = n_fe_cols == cohort_levels.size + n_periods - 1
    small = SmallSample(
        n=n_ssc,
        n_coef=p + n_cells * q - (n_fe_cols if full_fe else 0),
        fe_names=("cohort", "period") if full_fe else (),
        fe_levels=(int(cohort_levels.size), n_periods) if full_fe else (),
        fe_nested=(False, False) if full_fe else (),
        g=n_cl,
        n_label="stops (Bernoulli trials)" if family == "logit" else "rows",
    )
    factor = small.factor if vcov_type == "CR1" else 1.0
    cluster_name = str(panel.columns.get("cluster") or panel.columns.get("unit") or "unit")
    clusters = _fe.summarize_clusters(cluster_name, cl_labels, cl_codes, is_t.astype(float), n)
    _fe.warn_few_clusters(clusters, stacklevel=3)
    ev = [j for j, s in enumerate(specs) if s[1] == "event"]
    event_times = tuple(int(s[0].split(":")[1]) for s in specs if s[1] == "event")
    vcov = (infl_link[:, ev].T @ infl_link[:, ev]) * factor
    thin = aggregates.select("term", "n_treated_units")
    warn_thin_cells(thin, label="ETWFE aggregate", count="n_treated_units", stacklevel=3)
    se_c = np.sqrt(np.sum(psi_link**2, axis=0) * factor)
    se_rc = np.sqrt(np.sum(psi_resp**2, axis=0) * factor)
    cells_df = pl.DataFrame(
        {
            "g": cell_g.astype(np.int64),
            "t": cell_t.astype(np.int64),
            "e": cell_e.astype(np.int64),
            "post": post,
            "n_units": n_units_c.astype(np.int64),
            "weight": m_c,
            "estimate": link_c,
            "std_error": se_c,
            "response": resp_c,
            "response_std_error": se_rc,
        }
    )
    elapsed = time.perf_counter() - start
    cols = dict(panel.columns)
    lineage = {
        "function": "stopdisparity.models._etwfe.etwfe",
        "options": {"family": family, "control": control, "vcov_type": vcov_type, "alpha": alpha},
        "columns": cols,
        "unit_weight_rule": panel.unit_weight_rule,
        "cell_weight_rule": "n (trials, exposure or WLS weights) summed over each treated cell",
        "periods": [int(t) for t in periods],
        "cohorts": [int(g) for g in panel.cohorts],
        "n_units": int(np.unique(uid_all).size),
        "seed": None,
        "versions": _fe.package_versions(),
    }
    return EtwfeResult(
        family=family,
        control=control,
        estimator="etwfe",
        estimand=on_scale(ESTIMANDS[family], panel.outcome_scale),
        cells=cells_df,
        aggregates=aggregates,
        influence_link=infl_link,
        influence_response=infl_resp,
        event_times=event_times,
        coefficients=agg_link[ev],
        vcov=vcov,
        cell_vcov=(psi_link.T @ psi_link) * factor,
        small_sample=small,
        clusters=clusters,
        vcov_type=vcov_type,
        columns={**cols, "cluster": cluster_name},
        nobs=frame.height,
        n_trials=float(n.sum()),
        n_treated_units=int(incidence.shape[1]),
        fit_seconds=elapsed,
        lineage=lineage,
        cr2_fit=cr2_fit,
    )
