r"""Sun & Abraham (2021) interaction-weighted event study on a :class:`StaggeredPanel`.

Users get it through the ``sun-abraham`` estimator (``did --estimator sun-abraham``) and
:func:`sun_abraham`; it returns a frozen :class:`SunAbrahamResult`.

Model
-----
On the treated cohorts plus one control cohort, weighted least squares of the outcome on
cohort × relative-period indicators, unit and period fixed effects and the panel's covariates:

.. math:: y_{it} = \alpha_i + \lambda_t + \sum_{g}\sum_{e \ne -1} \delta_{g,e}\,1[G_i = g]\,1[t - g = e]
   + x_{it}'\gamma + \varepsilon_{it},

weighted by the row weight ``n`` of the panel (the stops of a cell for stop panels: the regression and
the cohort shares below are **stop-weighted**; with ``weights=None, trials=None`` every cell counts 1).
Every relative period of every treated cohort gets its own indicator, only :math:`e=-1` is omitted (per
cohort), so no relative period is pooled with the reference (SA 2021, Prop. 3: pooling contaminates the
estimates). The control cohort is the never-treated units when any exist (as fixest's ``sunab``);
otherwise the last-treated cohort :math:`g_L`, whose periods from :math:`g_L` on are dropped — for every
unit, because once the control is treated no comparison is left and the period effects of those
periods would be collinear with the other cohorts' indicators (SA 2021, Sec. 4.1; Stata's
``eventstudyinteract`` does the same). A :class:`~stopdisparity.errors.SparseCellWarning` says when that
control cohort has fewer than 5 units. Units treated in the first period (no pre-period, no reference
cell) are dropped with a warning, as fixest drops "always treated" units.

Aggregations (all linear in :math:`\hat\delta` with weights held fixed, as fixest's ``aggregate``):

- **event time** :math:`e`: :math:`\hat\nu_e = \sum_g \hat s_{g,e}\hat\delta_{g,e}` with
  :math:`\hat s_{g,e}` cohort :math:`g`'s share of the weight ``n`` of treated cells at :math:`e`
  (SA 2021, eq. 17, with stop weights; fixest's ``agg="period"``);
- **ATT**: the average of :math:`\hat\delta_{g,e}` over the reported post cells (:math:`e\ge0`),
  weighted by the weight of each cell (fixest's ``agg="att"``);
- **cohort** :math:`g`: the same over cohort :math:`g`'s reported post cells (fixest's ``agg="cohort"``).

Inference. The covariance of :math:`\hat\delta` is CR1 clustered by the panel's ``cluster``:
:math:`V = c\,H^{-1}\big(\sum_c s_c s_c'\big)H^{-1}` with :math:`H = \tilde X'W\tilde X` (regressors
residualised on the fixed effects), :math:`s_c` the cluster sums of :math:`w_{it}\tilde x_{it}\hat
\varepsilon_{it}`, and :math:`c = \frac{G}{G-1}\cdot\frac{N-1}{N-K}` where :math:`K` counts the
coefficients and the fixed-effect levels, a factor nested in the clusters counting 1 (pyfixest ``CRV1``
with ``ssc(k_fixef="nonnested")``, which equals fixest's default ``ssc()`` here: unit effects nested in
unit clusters). The aggregates' variances are :math:`RVR'` by the delta method with the shares treated
as **fixed** (as fixest's ``aggregate``; SA 2021's Prop. 6 adds the shares' estimation error, which
is omitted here, so the aggregates' SEs are conditional on the cohort composition). p-values and
intervals use Student's t with G - 1 degrees of freedom, as fixest and pyfixest do for clustered OLS.
By default (``fit_staggered``, ``did``) every reported row gets CR2 p-values and intervals with its
Bell–McCaffrey degrees of freedom instead (``inference.cr2``), from the same regression
(:attr:`SunAbrahamResult.cr2_fit`); ``inference="cluster"`` keeps the t(G-1) ones.

References
----------
Sun, L. & Abraham, S. (2021). Estimating dynamic treatment effects in event studies with heterogeneous
treatment effects. Journal of Econometrics 225(2), 175-199. https://doi.org/10.1016/j.jeconom.2020.09.006
Bergé, L. (2018). Efficient estimation of maximum likelihood models with multiple fixed-effects: the R
package FENmlm. CREA Discussion Paper 2018-13 (fixest's ``sunab`` and ``aggregate``).
Cameron, A. C. & Miller, D. L. (2015). A practitioner's guide to cluster-robust inference. Journal of
Human Resources 50(2), 317-372. https://doi.org/10.3368/jhr.50.2.317
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp

from stopdisparity.errors import SparseCellWarning, SpecificationError
from stopdisparity.models import _cr2, _fe
from stopdisparity.models._staggered_data import (
    CLUSTER,
    PERIOD,
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

#: A last-treated control cohort with fewer units than this triggers a :class:`SparseCellWarning`.
MIN_CONTROL_UNITS = 5
#: The omitted relative period (per cohort).
REFERENCE = -1
ESTIMAND = (
    "interaction-weighted ATT by event time (cohort shares of treated stop weight) on the outcome level; "
    "parallel trends in levels, no anticipation"
)


# ------------------------------------------------------------------------------- shared WLS machinery
@dataclass(frozen=True, eq=False)
class FeWls:
    """A weighted least-squares fit with unit and period effects absorbed, and its clustered pieces."""

    beta: np.ndarray
    #: :math:`H = \tilde X'W\tilde X`.
    hessian: np.ndarray
    #: Per-cluster influence :math:`s_c H^{-1}` (G × p); its cross-product is the CR0 covariance.
    influence: np.ndarray
    small_sample: _fe.SmallSample
    #: The WLS residuals (:func:`sparse_fe_wls`; None from :func:`fe_wls`).
    resid: np.ndarray | None = None

    @property
    def vcov_cr0(self) -> np.ndarray:
        """CR0 covariance of ``beta``."""
        return self.influence.T @ self.influence

    @property
    def vcov(self) -> np.ndarray:
        """CR1 covariance of ``beta`` (pyfixest CRV1 / fixest default small-sample factor)."""
        return self.vcov_cr0 * self.small_sample.factor


def fe_wls(
    y: np.ndarray,
    x: np.ndarray,
    *,
    unit: np.ndarray,
    period: np.ndarray,
    weights: np.ndarray,
    cluster: np.ndarray,
    what: str,
) -> FeWls:
    r"""Weighted OLS of ``y`` on ``x`` with unit and period effects, CR0 influence and the CR1 factor.

    ``unit``, ``period`` and ``cluster`` are integer codes (any values; recoded here). The regressors are
    residualised on the effects by :class:`stopdisparity.models._fe.WithinProjector` (exact, no
    demeaning tolerance) and the coefficients solved from :math:`\tilde X'W\tilde X` (Frisch-Waugh-
    Lovell). Raises :class:`SpecificationError` naming ``what`` when the regressors are collinear.
    """
    u = np.unique(unit, return_inverse=True)[1]
    t = np.unique(period, return_inverse=True)[1]
    c = np.unique(cluster, return_inverse=True)[1]
    n_clusters = int(c.max()) + 1
    proj = _fe.WithinProjector([u, t]).solver(weights)
    both = proj.residualize(np.column_stack([y, x]))
    yt, xt = both[:, 0], both[:, 1:]
    hess = (xt * weights[:, None]).T @ xt
    scale = np.sqrt(np.diag(hess))
    if scale.size and (np.any(scale <= 1e-12 * max(1.0, float(scale.max())))):
        raise SpecificationError(f"{what}: a regressor is constant within the fixed effects (no variation)")
    if scale.size:
        cond = np.linalg.cond(hess / np.outer(scale, scale))
        if not np.isfinite(cond) or cond > 1e12:
            raise SpecificationError(f"{what}: the regressors are collinear with each other or the effects")
    beta = np.linalg.solve(hess, xt.T @ (weights * yt)) if scale.size else np.zeros(0)
    resid = yt - xt @ beta
    sums = _fe.cluster_sums(xt * (weights * resid)[:, None], c, n_clusters)
    influence = np.linalg.solve(hess, sums.T).T if scale.size else np.zeros((n_clusters, 0))
    small = _fe.SmallSample(
        n=int(y.shape[0]),
        n_coef=int(x.shape[1]),
        fe_names=("unit", "period"),
        fe_levels=(int(u.max()) + 1, int(t.max()) + 1),
        fe_nested=(_fe.nested_in(u, c), _fe.nested_in(t, c)),
        g=n_clusters,
    )
    return FeWls(beta, hess, influence, small)


def sparse_fe_wls(
    y: np.ndarray,
    x: sp.csr_matrix,
    *,
    unit: np.ndarray,
    period: np.ndarray,
    weights: np.ndarray,
    cluster: np.ndarray,
    what: str,
) -> FeWls:
    r""":func:`fe_wls` for many sparse regressors (cohort × event-time dummies), by the full normal equations.

    The design :math:`Z = [X, \text{unit dummies}, \text{period dummies but the first}]` stays sparse
    (one or two nonzeros per row besides the covariates); :math:`Z'WZ` is dense of order
    :math:`p = k + U + T - 1` (about 1,500 at 146 counties × 200 months with 1,000 cells) and is
    factorised once by Cholesky. By Frisch-Waugh-Lovell the first :math:`k` rows of
    :math:`(Z'WZ)^{-1}Z'` are :math:`H^{-1}\tilde X'`, so the cluster sandwich of the first :math:`k`
    coefficients from the full design's scores equals :func:`fe_wls`'s; the residualised dense
    :math:`n \times k` block (hundreds of MB at that size) is never formed.
    """
    n = y.shape[0]
    u = np.unique(unit, return_inverse=True)[1]
    t = np.unique(period, return_inverse=True)[1]
    c = np.unique(cluster, return_inverse=True)[1]
    n_u, n_t, n_c = int(u.max()) + 1, int(t.max()) + 1, int(c.max()) + 1
    rows = np.arange(n)
    later = t > 0
    z = sp.hstack(
        [
            x,
            sp.csr_matrix((np.ones(n), (rows, u)), shape=(n, n_u)),
            sp.csr_matrix((np.ones(int(later.sum())), (rows[later], t[later] - 1)), shape=(n, n_t - 1)),
        ],
        format="csr",
    )
    k = x.shape[1]
    zw = sp.diags(weights) @ z
    a = (z.T @ zw).toarray()
    try:
        chol = scipy.linalg.cho_factor(a)
    except np.linalg.LinAlgError as exc:
        raise SpecificationError(
            f"{what}: the regressors are collinear with each other or with the fixed effects"
        ) from exc
    coef = scipy.linalg.cho_solve(chol, np.asarray(zw.T @ y).ravel())
    resid = y - z @ coef
    rows_k = scipy.linalg.cho_solve(chol, np.eye(a.shape[0])[:, :k])  # first k columns of (Z'WZ)^{-1}
    block = rows_k[:k]
    diag = np.abs(np.diag(chol[0]))
    if not np.all(np.isfinite(block)) or diag.min() < 1e-7 * diag.max():
        raise SpecificationError(f"{what}: the regressors are collinear with each other or the effects")
    members = sp.csr_matrix((weights * resid, (rows, c)), shape=(n, n_c))
    scores = np.asarray((z.T @ members).todense())  # p × G cluster score sums
    influence = (rows_k.T @ scores).T
    small = _fe.SmallSample(
        n=int(n),
        n_coef=int(k),
        fe_names=("unit", "period"),
        fe_levels=(n_u, n_t),
        fe_nested=(_fe.nested_in(u, c), _fe.nested_in(t, c)),
        g=n_c,
    )
    return FeWls(coef[:k], np.linalg.inv(block), influence, small, resid)


def cluster_codes(series: pl.Series) -> np.ndarray:
    """Integer codes 0..G-1 of a cluster column of any type."""
    return _fe.codes_of(series)


# ------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class SunAbrahamResult:
    r"""A fitted Sun & Abraham event study (from :func:`sun_abraham`).

    Attributes
    ----------
    event_times, coefficients, vcov
        The reported event times (the reference excluded), their IW estimates and CR1 covariance (the
        delta method with fixed shares): what :mod:`stopdisparity.models.sensitivity` reads.
    cells, cell_estimates, cell_vcov
        Every estimated cohort × relative period ``(g, e)``, its :math:`\hat\delta_{g,e}` and their CR1
        covariance.
    cell_weight, cell_units
        Per cell: the sum of the weight ``n`` of its rows (the shares' basis) and its number of units.
    shares
        Per reported event time: ``{g: share}``.
    cohorts, control
        Treated cohorts in the regression; ``"never-treated"`` or ``"last-treated cohort <g>"``.
    covariates, covariate_estimates, covariate_se
        The covariates' names and coefficients (not causal effects).
    """

    event_times: tuple[int, ...]
    coefficients: np.ndarray
    vcov: np.ndarray
    reference: int
    window: tuple[int, int] | None
    bin_ends: bool
    cells: tuple[tuple[int, int], ...]
    cell_estimates: np.ndarray
    cell_vcov: np.ndarray
    cell_weight: np.ndarray
    cell_units: np.ndarray
    shares: Mapping[int, Mapping[int, float]]
    n_treated_units: Mapping[int, int]
    att_weights: np.ndarray
    cohort_weights: Mapping[int, np.ndarray]
    cohorts: tuple[int, ...]
    control: str
    n_control_units: int
    n_dropped_always_treated: int
    nobs: int
    n_clusters: int
    small_sample: _fe.SmallSample
    covariates: tuple[str, ...]
    covariate_estimates: np.ndarray
    covariate_se: np.ndarray
    columns: Mapping[str, Any]
    lineage: Mapping[str, Any]
    estimand: str = ESTIMAND
    outcome_scale: str = "level"
    vcov_type: str = "CR1"
    estimator: str = "sun-abraham"
    #: The regression in the form :func:`stopdisparity.models.inference.cr2` needs; its contrasts are the
    #: reported event times, the ATT and the cohorts, in ``tidy()``'s order.
    cr2_fit: _cr2.Cr2Fit | None = None
    inference: _fe.Inference | None = None

    def with_inference(self, inference: _fe.Inference) -> SunAbrahamResult:
        """A copy whose ``tidy()`` takes p-values, intervals and label from ``inference``."""
        return dataclasses.replace(self, inference=inference)

    @property
    def std_errors(self) -> np.ndarray:
        """CR1 SEs of :attr:`coefficients`."""
        return np.sqrt(np.diag(self.vcov))

    @property
    def vcov_description(self) -> str:
        """Which covariance, clustered by what, and the small-sample factor."""
        return (
            f"CR1 clustered by {self.columns.get('cluster')}, {self.n_clusters} clusters; "
            f"{self.small_sample.describe()}; aggregates by the delta method with cohort shares fixed"
        )

    def _combo(self, weights: np.ndarray) -> tuple[float, float]:
        est = float(weights @ self.cell_estimates)
        var = float(weights @ self.cell_vcov @ weights)
        return est, math.sqrt(var) if var >= 0 else math.nan

    @property
    def att(self) -> tuple[float, float]:
        """(estimate, CR1 SE) of the ATT: post cells weighted by their weight ``n`` (fixest ``agg="att"``)."""
        return self._combo(self.att_weights)

    def cohort_effects(self) -> dict[int, tuple[float, float]]:
        """Per treated cohort: (estimate, SE) of its weight-averaged reported post cells."""
        return {g: self._combo(w) for g, w in self.cohort_weights.items()}

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """Rows ``e:<k>`` per event time (the reference with estimate 0), then ``att``, then ``cohort:<g>``.

        DESIGN.md contract. Extra keys: ``e``, ``n_treated_units``, ``reference``, ``cohort``, ``weight``
        (the row's share of treated weight: 1 for event times and the ATT, the cohort's share of the
        post weight for cohort rows). Inference: Student t with G - 1 degrees of freedom.
        """
        df = self.n_clusters - 1
        rows: list[TidyRow] = []
        index = {e: i for i, e in enumerate(self.event_times)}
        se_all = self.std_errors
        shown = sorted({*self.event_times, self.reference})
        if self.window is not None:
            shown = [e for e in shown if self.window[0] <= e <= self.window[1]]
        for e in shown:
            if e in index:
                est, se = float(self.coefficients[index[e]]), float(se_all[index[e]])
                stat, p, lo, hi = _fe.inference_stats(est, se, alpha, df)
            else:
                est, se, stat, p, lo, hi = 0.0, math.nan, math.nan, math.nan, math.nan, math.nan
            rows.append(
                self._row(
                    f"e:{e}",
                    est,
                    se,
                    (stat, p, lo, hi),
                    alpha,
                    {
                        "e": e,
                        "n_treated_units": self.n_treated_units.get(e, 0),
                        "reference": e == self.reference,
                        "cohort": None,
                        "weight": 1.0,
                    },
                )
            )
        est, se = self.att
        rows.append(
            self._row(
                "att",
                est,
                se,
                _fe.inference_stats(est, se, alpha, df),
                alpha,
                {"e": None, "n_treated_units": None, "reference": False, "cohort": None, "weight": 1.0},
                estimand=(
                    "ATT: average of the cohort × event-time effects over post event times, weighted by "
                    "treated stop weight (fixest agg='att') on the outcome level; parallel trends in levels"
                ),
            )
        )
        post_weight = self.cell_weight * (self.att_weights > 0)
        for g, w in self.cohort_weights.items():
            est, se = self._combo(w)
            share = float(post_weight[w > 0].sum() / post_weight.sum()) if post_weight.sum() > 0 else math.nan
            units = int(self.cell_units[w > 0].max()) if np.any(w > 0) else 0
            rows.append(
                self._row(
                    f"cohort:{g}",
                    est,
                    se,
                    _fe.inference_stats(est, se, alpha, df),
                    alpha,
                    {"e": None, "n_treated_units": units, "reference": False, "cohort": g, "weight": share},
                    estimand=(
                        "cohort average post-adoption effect (weighted by stop weight over its post event "
                        "times, fixest agg='cohort') on the outcome level; parallel trends in levels"
                    ),
                )
            )
        return tidy_frame(rows)

    def _row(
        self,
        term: str,
        est: float,
        se: float,
        stats: tuple[float, float, float, float],
        alpha: float,
        extra: Mapping[str, Any],
        estimand: str | None = None,
    ) -> TidyRow:
        stat, p, lo, hi = stats
        p, lo, hi, label = _fe.attached(
            self.inference,
            term,
            p,
            lo,
            hi,
            "analytical (CR1, t(G-1); delta method with fixed cohort shares)",
            alpha,
        )
        return TidyRow(
            term,
            est if math.isfinite(est) else None,
            se,
            stat,
            p,
            lo,
            hi,
            self.nobs,
            self.n_clusters,
            self.estimator,
            on_scale(estimand or self.estimand, self.outcome_scale),
            label,
            extra,
        )


# ----------------------------------------------------------------------------------------- fitting
def _check_window(window: tuple[int, int] | None, bin_ends: bool) -> None:
    if window is not None:
        if len(window) != 2 or not all(isinstance(v, int | np.integer) for v in window):
            raise SpecificationError(f"window must be a pair of integers (lo, hi); got {window!r}")
        lo, hi = int(window[0]), int(window[1])
        if not lo <= REFERENCE < hi:
            raise SpecificationError(
                f"window must contain the reference event time {REFERENCE} and at least event time 0 "
                f"(lo <= -1 < hi); got {window!r}"
            )
    elif bin_ends:
        raise SpecificationError("bin_ends=True needs a window=(lo, hi) whose end points are binned")


def sun_abraham(
    panel: StaggeredPanel,
    *,
    window: tuple[int, int] | None = None,
    bin_ends: bool = False,
    alpha: float = 0.05,
) -> SunAbrahamResult:
    """Sun & Abraham (2021) interaction-weighted event study, with the ATT and cohort aggregations.

    Parameters
    ----------
    panel
        From :func:`stopdisparity.models._staggered_data.prepare_staggered`; its row weight ``n`` weights
        the regression and the cohort shares, its ``cluster`` clusters the SEs, its covariates enter
        linearly.
    window
        ``(lo, hi)`` event times to report (``lo <= -1 < hi``). Without ``bin_ends`` every relative
        period is still estimated (so none is pooled with the reference) and only the window is reported;
        the ATT averages the reported post event times. None: report all.
    bin_ends
        With a window: relative periods below ``lo`` enter the ``lo`` indicator and above ``hi`` the
        ``hi`` indicator (per cohort). Binning imposes equal effects within a bin; off by default.
    alpha
        Checked here; ``tidy(alpha)`` sets the interval level.

    Returns
    -------
    SunAbrahamResult

    Raises
    ------
    SpecificationError
        No never-treated unit and fewer than two cohorts (no control), a bad window, or collinear
        regressors.

    Notes
    -----
    See the module docstring for the model, the control cohort, the weights and the variance.
    """
    if not 0 < alpha < 1:
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    _check_window(window, bin_ends)
    f = panel.frame
    first_period = panel.periods[0]
    f, n_always = drop_always_treated(
        f,
        first_period,
        why="they have no pre-adoption period and no reference cell (fixest's sunab drops them too)",
    )
    cohorts = sorted(int(g) for g in f.get_column(G).unique().to_list() if g > 0)
    if panel.has_never_treated:
        control_g, control = 0, "never-treated"
    else:
        if len(cohorts) < 2:
            raise SpecificationError(
                f"Sun-Abraham needs a control cohort: the panel has no never-treated unit and only "
                f"{len(cohorts)} adoption cohort ({cohorts}); with one cohort every unit is treated at the "
                "same time and nothing identifies the period effects after adoption"
            )
        control_g = cohorts[-1]
        control = f"last-treated cohort {control_g}"
        cohorts = cohorts[:-1]
        f = f.filter(pl.col(PERIOD) < control_g)
    n_control = int(f.filter(pl.col(G) == control_g).get_column(UID).n_unique())
    if control_g != 0 and n_control < MIN_CONTROL_UNITS:
        warnings.warn(
            f"no never-treated units: the control is the last-treated cohort {control_g} with only "
            f"{n_control} unit(s) (< {MIN_CONTROL_UNITS}); its periods from {control_g} on are dropped and "
            "every estimate rests on these few units",
            SparseCellWarning,
            stacklevel=2,
        )
    e_raw = pl.when(pl.col(G).is_in(cohorts)).then(pl.col(PERIOD) - pl.col(G)).otherwise(None)
    f = f.with_columns(e_raw.alias("_e"))
    if window is not None and bin_ends:
        f = f.with_columns(pl.col("_e").clip(window[0], window[1]).alias("_e"))
    cell_key = f.filter(pl.col("_e").is_not_null() & (pl.col("_e") != REFERENCE))
    cells_df = (
        cell_key.group_by(G, "_e")
        .agg(pl.col(N).sum().alias("weight"), pl.col(UID).n_unique().alias("units"))
        .sort("_e", G)
    )
    cells = tuple((int(g), int(e)) for g, e in cells_df.select(G, "_e").iter_rows())
    if not cells:
        raise SpecificationError("Sun-Abraham: no treated cohort × relative period cell to estimate")
    col_of = {c: j for j, c in enumerate(cells)}
    n = f.height
    g_arr = f.get_column(G).to_numpy()
    e_arr = f.get_column("_e").fill_null(REFERENCE).to_numpy()
    keys = pl.DataFrame({"g": g_arr, "e": e_arr}).with_row_index("row")
    lookup = pl.DataFrame(
        {"g": [c[0] for c in cells], "e": [c[1] for c in cells], "col": list(range(len(cells)))}
    )
    hit = keys.join(lookup, on=["g", "e"], how="inner")
    d = sp.csr_matrix(
        (np.ones(hit.height), (hit.get_column("row").to_numpy(), hit.get_column("col").to_numpy())),
        shape=(n, len(cells)),
    )
    xcov = f.select(panel.xnames).to_numpy() if panel.xnames else np.zeros((n, 0))
    w = f.get_column(N).to_numpy().astype(float)
    if np.any(w <= 0):
        raise SpecificationError("Sun-Abraham: the row weight n must be > 0 in every cell")
    regressors = sp.hstack([d, sp.csr_matrix(xcov)], format="csr")
    unit, tid, clusters = (
        f.get_column(UID).to_numpy(),
        f.get_column(TID).to_numpy(),
        cluster_codes(f.get_column(CLUSTER)),
    )
    fit = sparse_fe_wls(
        f.get_column(Y).to_numpy(),
        regressors,
        unit=unit,
        period=tid,
        weights=w,
        cluster=clusters,
        what="Sun-Abraham regression",
    )
    k = len(cells)
    vcov_all = fit.vcov
    delta, v_delta = fit.beta[:k], vcov_all[:k, :k]
    weight = cells_df.get_column("weight").to_numpy().astype(float)
    units = cells_df.get_column("units").to_numpy().astype(np.int64)

    # ------------------------------------------------------------------ aggregations (fixed shares)
    all_e = sorted({e for _, e in cells})
    reported = [e for e in all_e if window is None or window[0] <= e <= window[1]]
    r = np.zeros((len(reported), k))
    shares: dict[int, dict[int, float]] = {}
    for i, e in enumerate(reported):
        js = [col_of[(g, e)] for g in cohorts if (g, e) in col_of]
        tot = weight[js].sum()
        r[i, js] = weight[js] / tot
        shares[e] = {cells[j][0]: float(weight[j] / tot) for j in js}
    post = np.array([e >= 0 and e in set(reported) for _, e in cells])
    att_w = np.where(post, weight, 0.0)
    att_w = att_w / att_w.sum() if att_w.sum() > 0 else att_w
    cohort_w: dict[int, np.ndarray] = {}
    for g in cohorts:
        mask = post & np.array([c[0] == g for c in cells])
        if mask.any():
            cw = np.where(mask, weight, 0.0)
            cohort_w[g] = cw / cw.sum()
    units_at = (
        f.filter(pl.col("_e").is_not_null())
        .group_by("_e")
        .agg(pl.col(UID).n_unique().alias("n_units"))
        .rename({"_e": "e"})
        .sort("e")
    )
    n_treated = {int(e): int(u) for e, u in units_at.iter_rows()}
    warn_thin_cells(
        units_at.filter(pl.col("e").is_in(reported)), label="Sun-Abraham event time", stacklevel=3
    )
    contrasts = np.vstack([r, att_w[None, :], *(cw[None, :] for cw in cohort_w.values())]).T  # tidy() order
    assert fit.resid is not None
    cr2_fit = _cr2.Cr2Fit(
        (np.unique(unit, return_inverse=True)[1], np.unique(tid, return_inverse=True)[1]),
        regressors,
        w,
        fit.resid,
        clusters,
        fit.small_sample.g,
        np.vstack([contrasts, np.zeros((xcov.shape[1], contrasts.shape[1]))]),
    )
    cov_names = tuple(panel.columns.get("covariates") or ())
    cov_se = np.sqrt(np.diag(vcov_all)[k:])
    lineage = {
        "function": "stopdisparity.models._sunab.sun_abraham",
        "options": {"window": window, "bin_ends": bin_ends, "alpha": alpha, "reference": REFERENCE},
        "columns": dict(panel.columns),
        "unit_weight_rule": "row weight n (stop-weighted regression and cohort shares)",
        "control": control,
        "periods": [int(p) for p in sorted(set(f.get_column(PERIOD).to_list()))],
        "cohorts": cohorts,
        "n_units": int(f.get_column(UID).n_unique()),
        "versions": _fe.package_versions(),
    }
    return SunAbrahamResult(
        outcome_scale=panel.outcome_scale,
        event_times=tuple(reported),
        coefficients=r @ delta,
        vcov=r @ v_delta @ r.T,
        reference=REFERENCE,
        window=None if window is None else (int(window[0]), int(window[1])),
        bin_ends=bin_ends,
        cells=cells,
        cell_estimates=delta,
        cell_vcov=v_delta,
        cell_weight=weight,
        cell_units=units,
        shares=shares,
        n_treated_units=n_treated,
        att_weights=att_w,
        cohort_weights=cohort_w,
        cohorts=tuple(cohorts),
        control=control,
        n_control_units=n_control,
        n_dropped_always_treated=n_always,
        nobs=n,
        n_clusters=fit.small_sample.g,
        small_sample=fit.small_sample,
        covariates=cov_names,
        covariate_estimates=fit.beta[k:],
        covariate_se=cov_se,
        columns=dict(panel.columns),
        lineage=lineage,
        cr2_fit=cr2_fit,
    )


__all__: Sequence[str] = ("FeWls", "SunAbrahamResult", "fe_wls", "sparse_fe_wls", "sun_abraham")
