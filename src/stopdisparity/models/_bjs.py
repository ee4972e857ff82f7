r"""Borusyak, Jaravel & Spiess (2024) imputation estimator on a :class:`StaggeredPanel`.

Users get it through the ``bjs`` estimator (``did --estimator bjs``) and :func:`bjs`; it returns a
frozen :class:`BjsResult`.

Estimator (BJS 2024, Theorem 2)
-------------------------------
1. Fit :math:`y_{it} = \alpha_i + \lambda_t + x_{it}'\gamma + \varepsilon_{it}` by weighted least
   squares on the untreated observations :math:`\Omega_0` (``treated == 0``: never-treated units and
   not-yet-treated periods), with observation weights :math:`\omega_{it}` (the row weight ``n``, or 1).
2. Impute :math:`\hat y_{it}(0) = \hat\alpha_i + \hat\lambda_t + x_{it}'\hat\gamma` for the treated
   observations :math:`\Omega_1` and set :math:`\hat\tau_{it} = y_{it} - \hat y_{it}(0)`.
3. Average: the static ATT :math:`\sum_{\Omega_1} w_{it}\hat\tau_{it}` with
   :math:`w_{it} = \omega_{it}/\sum_{\Omega_1}\omega`, and per horizon :math:`h` the same over the
   treated observations with :math:`t - g_i = h`.

Each estimate is linear in the outcomes, :math:`\hat\tau_w = \sum_{it} v_{it} y_{it}`, with implied
weights :math:`v_{it} = w_{it}` on :math:`\Omega_1` and
:math:`v_{it} = -\omega_{it} z_{it}'(Z_0'\Omega Z_0)^{-1} Z_1'w` on :math:`\Omega_0` (:math:`z` the
fixed-effect dummies and covariates; BJS eq. 6).

Variance (BJS 2024, Theorem 3: conservative, clustered)
-------------------------------------------------------
:math:`\hat V = \sum_c \big(\sum_{it \in c} v_{it}\tilde\varepsilon_{it}\big)^2` with
:math:`\tilde\varepsilon_{it} = y_{it} - \hat y_{it}(0)` on :math:`\Omega_0` (the first-stage residual)
and :math:`\tilde\varepsilon_{it} = \hat\tau_{it} - \bar\tau_{g,e}` on :math:`\Omega_1`, where
:math:`\bar\tau_{g,e} = \sum v^2\hat\tau / \sum v^2` averages the imputed effects within the
observation's cohort × event time (BJS eq. 10 with the cohort × horizon partition, as R
``didimputation`` and Stata ``did_imputation`` by default). No small-sample factor; normal intervals.
This equals R ``didimputation`` (0.5.0) on unweighted data; with weights it solves the first stage as
weighted least squares (:math:`Z_0'\Omega Z_0`), where ``didimputation`` multiplies the design by the
weights before forming :math:`Z_0'Z_0`.

Pre-trend test (BJS 2024, Test 1)
---------------------------------
On :math:`\Omega_0` only, regress :math:`y` on the same fixed effects and covariates plus indicators of
the ``pretrends`` periods before adoption, :math:`1[t - g_i = -k]`, :math:`k = 1..K` (weights
:math:`\omega`), with CR1 clustered SEs (pyfixest CRV1 / fixest's default ``ssc()``, as
``didimputation``'s ``pretrends`` rows), and test that the leads are jointly zero with the cluster-robust
Wald statistic :math:`W = \hat\beta'\hat V^{-1}\hat\beta`, reported as :math:`W/K` against
:math:`F(K, G-1)` and :math:`W` against :math:`\chi^2_K`. Testing on :math:`\Omega_0` keeps the
treatment-effect estimates free of the test (BJS Sec. 4.4).

References
----------
Borusyak, K., Jaravel, X. & Spiess, J. (2024). Revisiting event-study designs: robust and efficient
estimation. Review of Economic Studies 91(6), 3253-3285. https://doi.org/10.1093/restud/rdae007
Gardner, J. (2022). Two-stage differences in differences. arXiv:2207.05943 (the same point estimates).
Butts, K. didimputation: Imputation Estimator from Borusyak, Jaravel, and Spiess (2021). R package 0.5.0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp
from scipy import stats

from stopdisparity.errors import (
    InferenceFallbackWarning,
    SpecificationError,
    StopDisparityWarning,
    check_choice,
)
from stopdisparity.models import _fe
from stopdisparity.models._staggered_data import (
    CLUSTER,
    PERIOD,
    TID,
    TREATED,
    UID,
    G,
    N,
    StaggeredPanel,
    Y,
    drop_always_treated,
    on_scale,
    warn_thin_cells,
)
from stopdisparity.models._sunab import cluster_codes, fe_wls
from stopdisparity.results import TidyRow, tidy_frame

Weights = Literal["n", "equal"]
ESTIMAND = (
    "ATT: weighted average of imputed effects y - Y(0)-hat over treated cells on the outcome level; "
    "parallel trends in levels, no anticipation"
)


@dataclass(frozen=True, slots=True)
class PretrendTest:
    """BJS Test 1: the leads' joint Wald test on untreated observations."""

    leads: tuple[int, ...]
    estimates: np.ndarray
    vcov: np.ndarray
    wald: float
    df: int
    f_statistic: float
    f_df2: int
    p_value: float
    p_value_chi2: float
    nobs: int


@dataclass(frozen=True)
class BjsResult:
    """A fitted BJS imputation estimator (from :func:`bjs`).

    Attributes
    ----------
    att, att_se
        The static ATT and its Theorem 3 SE.
    horizons, horizon_estimates, horizon_se, n_treated_units
        Event-time ATTs :math:`h = t - g`, their SEs and the treated units at each.
    horizon_vcov
        Covariance of the horizon estimates from the same cluster sums (the conservative variance's
        cross terms), for sensitivity analysis.
    pretrend
        :class:`PretrendTest` (None when ``pretrends=0``).
    tau
        Per treated observation: ``unit, period, g, e, weight, y, y0_hat, tau``.
    """

    att: float
    att_se: float
    horizons: tuple[int, ...]
    horizon_estimates: np.ndarray
    horizon_se: np.ndarray
    horizon_vcov: np.ndarray
    n_treated_units: Mapping[int, int]
    n_treated_obs: int
    n_units_treated: int
    pretrend: PretrendTest | None
    tau: pl.DataFrame
    weights: str
    nobs: int
    n_untreated_obs: int
    n_clusters: int
    n_dropped_always_treated: int
    n_dropped_unimputable: int
    covariates: tuple[str, ...]
    columns: Mapping[str, Any]
    lineage: Mapping[str, Any]
    estimand: str = ESTIMAND
    outcome_scale: str = "level"
    estimator: str = "bjs"
    vcov_type: str = "BJS (2024) Theorem 3 conservative, clustered"
    #: Whether the treated residuals are centred on leave-own-cluster-out averages (Appendix A.6).
    leave_out: bool = False

    @property
    def event_times(self) -> tuple[int, ...]:
        """The horizons (for code that reads any event-study result)."""
        return self.horizons

    @property
    def coefficients(self) -> np.ndarray:
        """The horizon estimates."""
        return self.horizon_estimates

    @property
    def vcov(self) -> np.ndarray:
        """Covariance of the horizon estimates."""
        return self.horizon_vcov

    @property
    def vcov_description(self) -> str:
        """What the standard errors are."""
        mean = "leave-own-cluster-out " if self.leave_out else ""
        return (
            f"BJS (2024) Theorem 3 conservative variance clustered by {self.columns.get('cluster')}, "
            f"{self.n_clusters} clusters, residuals of treated cells centred on their cohort × event-time "
            f"{mean}v²-weighted mean; no small-sample factor; normal intervals"
        )

    def pretrend_test(self) -> PretrendTest:
        """The joint pre-trend test (BJS Test 1); raises if the fit had ``pretrends=0``."""
        if self.pretrend is None:
            raise SpecificationError("no pre-trend test: fit with pretrends=K (K >= 1 leads)")
        return self.pretrend

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """Rows ``att``, then ``e:<h>`` per horizon, then ``pre:<k>`` per lead (k < 0) when tested.

        DESIGN.md contract. Extra keys: ``e`` (event time), ``n_treated_units``. Effects use normal
        intervals (as ``didimputation``); the leads use t(G - 1) (clustered OLS, as fixest).
        """
        rows = [
            self._row(
                "att",
                self.att,
                self.att_se,
                _fe.inference_stats(self.att, self.att_se, alpha),
                {"e": None, "n_treated_units": self.n_units_treated},
                self.nobs,
            )
        ]
        for h, est, se in zip(self.horizons, self.horizon_estimates, self.horizon_se, strict=True):
            rows.append(
                self._row(
                    f"e:{h}",
                    float(est),
                    float(se),
                    _fe.inference_stats(float(est), float(se), alpha),
                    {"e": h, "n_treated_units": self.n_treated_units.get(h, 0)},
                    self.nobs,
                )
            )
        if self.pretrend is not None:
            pt = self.pretrend
            ses = np.sqrt(np.diag(pt.vcov))
            for k, est, se in zip(pt.leads, pt.estimates, ses, strict=True):
                rows.append(
                    self._row(
                        f"pre:{k}",
                        float(est),
                        float(se),
                        _fe.inference_stats(float(est), float(se), alpha, self.n_clusters - 1),
                        {"e": k, "n_treated_units": None},
                        pt.nobs,
                        estimand=(
                            "BJS Test 1 lead: deviation of untreated outcomes k periods before adoption "
                            "from the unit + period model (0 under parallel trends, no anticipation)"
                        ),
                        inference="analytical (CR1, t(G-1)), untreated observations only",
                    )
                )
        return tidy_frame(rows)

    def _row(
        self,
        term: str,
        est: float,
        se: float,
        st: tuple[float, float, float, float],
        extra: Mapping[str, Any],
        nobs: int,
        estimand: str | None = None,
        inference: str | None = None,
    ) -> TidyRow:
        stat, p, lo, hi = st
        if inference is None:
            what = "Theorem 3 conservative, leave-out" if self.leave_out else "Theorem 3 conservative"
            inference = f"analytical (BJS {what}, clustered; normal)"
        return TidyRow(
            term,
            est if math.isfinite(est) else None,
            se,
            stat,
            p,
            lo,
            hi,
            nobs,
            self.n_clusters,
            self.estimator,
            on_scale(estimand or self.estimand, self.outcome_scale),
            inference,
            extra,
        )


def _design(
    unit: np.ndarray, period: np.ndarray, x: np.ndarray, n_units: int, n_periods: int
) -> sp.csr_matrix:
    """Sparse [unit dummies, period dummies without the first, covariates]."""
    n = unit.shape[0]
    rows = np.arange(n)
    ud = sp.csr_matrix((np.ones(n), (rows, unit)), shape=(n, n_units))
    keep = period > 0
    pd_ = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], period[keep] - 1)), shape=(n, n_periods - 1))
    return sp.hstack([ud, pd_, sp.csr_matrix(x)], format="csr")


def _leave_out_mean(
    tau: np.ndarray,
    v2: np.ndarray,
    cell: np.ndarray,
    cluster: np.ndarray,
    num: np.ndarray,
    den: np.ndarray,
    cohort: np.ndarray,
    event: np.ndarray,
) -> np.ndarray:
    r"""Each treated observation's :math:`\bar\tau_{g,e}` without its own cluster (n₁ × m).

    :math:`\bar\tau_{-c} = (\sum_{cell} v^2\hat\tau - \sum_{cell \cap c} v^2\hat\tau) / (\sum_{cell} v^2 -
    \sum_{cell \cap c} v^2)` per estimand (``num``/``den``: the cell sums). With one observation per
    cluster and cell this is Stata ``did_imputation``'s ``leaveout`` rescaling of the residual.
    """
    pair = cell.astype(np.int64) * (int(cluster.max()) + 1) + cluster
    _, code = np.unique(pair, return_inverse=True)
    own_num = _fe.cluster_sums(v2 * tau[:, None], code, int(code.max()) + 1)[code]
    own_den = _fe.cluster_sums(v2, code, int(code.max()) + 1)[code]
    rest = den[cell] - own_den
    used = den[cell] > 0
    alone = used & (rest <= 1e-5 * den[cell])  # Stata's test: the own cluster holds > 99.999% of the weight
    if alone.any():
        rows = np.unique(np.flatnonzero(alone.any(axis=1)))
        where = sorted({(int(cohort[i]), int(event[i])) for i in rows})
        raise SpecificationError(
            f"BJS leave_out: {len(rows)} treated observations sit in cohort x event-time cells with one "
            f"cluster only (cohort, event time: {where[:5]}), so the leave-out average is undefined; "
            "drop leave_out only knowing that the variance is then biased down for those cells, or "
            "coarsen the cohorts (cohort='year')"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, (num[cell] - own_num) / np.where(used, rest, 1.0), 0.0)


def bjs(
    panel: StaggeredPanel,
    *,
    horizons: Sequence[int] | None = None,
    pretrends: int = 0,
    weights: Weights = "n",
    leave_out: bool | None = None,
    alpha: float = 0.05,
) -> BjsResult:
    r"""Borusyak, Jaravel & Spiess (2024) imputation estimator: static and event-time ATTs, Test 1.

    Parameters
    ----------
    panel
        From :func:`stopdisparity.models._staggered_data.prepare_staggered`.
    horizons
        Event times :math:`h \ge 0` to estimate; None: every post event time in the data.
    pretrends
        Number of leads :math:`K` for the pre-trend test on untreated observations (0: no test).
    weights
        ``"n"``: the panel's row weight (stops) weights the first stage and the averages (stop-weighted
        ATT); ``"equal"``: every treated cell counts the same.
    leave_out
        Average the imputed effects of each cohort × event time leaving out the observation's own
        cluster (BJS 2024, Sec. 4.3 and Appendix A.6; Stata ``did_imputation, leaveout``, "recommended
        option" in its help): the Theorem 3 residuals are otherwise shrunk toward 0 where one cluster
        carries much of a cell's weight, biasing the variance down - at design M of the Monte Carlo
        the plain variance covers 0.902 and the leave-out one 0.954 (R = 500). It needs at least two
        clusters with weight in every cell an estimate uses. None (default): leave out where that
        holds, else the plain Theorem 3 variance with an
        :class:`~stopdisparity.errors.InferenceFallbackWarning` naming the cells (monthly cohorts of
        one county each); True: leave out or raise; False: the plain variance (R ``didimputation``,
        Stata without ``leaveout``).
    alpha
        Checked here; ``tidy(alpha)`` sets the interval level.

    Returns
    -------
    BjsResult

    Raises
    ------
    SpecificationError
        Bad options, a horizon with no treated cell, no treated observation that can be imputed, or a
        lead without untreated cells.

    Notes
    -----
    Units treated from the first period on have no untreated observation, so their unit effect (and
    Y(0)) is not identified: they are dropped with a warning. Treated observations in periods with no
    untreated observation (after the last cohort adopts, when no unit is never treated) cannot be
    imputed either and are dropped with a warning (R ``didimputation`` drops them silently).
    """
    check_choice("weights", weights, ("n", "equal"))
    if not 0 < alpha < 1:
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    if not isinstance(pretrends, int | np.integer) or pretrends < 0:
        raise SpecificationError(f"pretrends must be an integer >= 0; got {pretrends!r}")
    f = panel.frame
    first = panel.periods[0]
    f, n_always = drop_always_treated(f, first, why="with no untreated period their Y(0) cannot be imputed")
    untreated_periods = f.filter(pl.col(TREATED) == 0).get_column(TID).unique()
    bad = f.filter((pl.col(TREATED) == 1) & ~pl.col(TID).is_in(untreated_periods.implode()))
    if bad.height and bad.height == f.filter(pl.col(TREATED) == 1).height:
        cohorts = sorted(int(c) for c in f.filter(pl.col(G) > 0).get_column(G).unique().to_list())
        raise SpecificationError(
            f"BJS: no treated cell can be imputed: the panel has no never-treated unit and every unit adopts "
            f"at once (cohorts {cohorts}), so no untreated cell shares a period with a treated one and the "
            "period effects after adoption are not identified"
        )
    if bad.height:
        warnings.warn(
            f"dropped {bad.height} treated cell(s) in {bad.get_column(PERIOD).n_unique()} period(s) where no "
            "unit is untreated: their period effect, hence Y(0), is not identified",
            StopDisparityWarning,
            stacklevel=2,
        )
        f = f.filter(~((pl.col(TREATED) == 1) & ~pl.col(TID).is_in(untreated_periods.implode())))
    f = f.with_columns(
        pl.col(UID).rank("dense").cast(pl.Int64).sub(1).alias("_u"),
        pl.col(TID).rank("dense").cast(pl.Int64).sub(1).alias("_t"),
        pl.when(pl.col(G) > 0).then(pl.col(PERIOD) - pl.col(G)).otherwise(None).alias("_e"),
    )
    treated = f.get_column(TREATED).to_numpy() > 0
    if not treated.any():
        raise SpecificationError("BJS: no treated observation left to impute")
    u = f.get_column("_u").to_numpy()
    t = f.get_column("_t").to_numpy()
    n_u, n_t = int(u.max()) + 1, int(t.max()) + 1
    y = f.get_column(Y).to_numpy().astype(float)
    x = f.select(panel.xnames).to_numpy() if panel.xnames else np.zeros((f.height, 0))
    omega = f.get_column(N).to_numpy().astype(float) if weights == "n" else np.ones(f.height)
    if np.any(omega <= 0):
        raise SpecificationError("BJS: the row weight n must be > 0 in every cell (or use weights='equal')")
    z = _design(u, t, x, n_u, n_t)
    z0, z1 = z[~treated], z[treated]
    a = (z0.T @ sp.diags(omega[~treated]) @ z0).toarray()
    try:
        chol = scipy.linalg.cho_factor(a)
    except np.linalg.LinAlgError as exc:
        raise SpecificationError(
            "BJS first stage: the unit and period effects (and covariates) are not identified from the "
            "untreated observations (a unit or period without untreated cells, or collinear covariates)"
        ) from exc
    coef = scipy.linalg.cho_solve(chol, z0.T @ (omega[~treated] * y[~treated]))
    y0_hat = z @ coef
    resid = y - y0_hat  # first-stage residual on Omega_0, tau-hat on Omega_1
    e = f.get_column("_e").fill_null(-(10**9)).to_numpy()
    g = f.get_column(G).to_numpy()

    # ---------------------------------------------------------------- target weights (columns)
    post_e = sorted({int(v) for v in e[treated]})
    if horizons is None:
        hs = post_e
    else:
        hs = sorted({int(h) for h in horizons})
        missing = [h for h in hs if h not in post_e]
        if missing or any(h < 0 for h in hs):
            raise SpecificationError(
                f"horizons must be post event times with treated cells ({post_e[0]}..{post_e[-1]}); got "
                f"{missing or [h for h in hs if h < 0]}"
            )
    w1 = np.zeros((int(treated.sum()), 1 + len(hs)))
    om1, e1 = omega[treated], e[treated]
    w1[:, 0] = om1 / om1.sum()
    for j, h in enumerate(hs, start=1):
        on = e1 == h
        w1[on, j] = om1[on] / om1[on].sum()
    # implied weights on every observation (BJS eq. 6)
    v = np.zeros((f.height, w1.shape[1]))
    v[treated] = w1
    v[~treated] = -omega[~treated, None] * (z0 @ scipy.linalg.cho_solve(chol, z1.T @ w1))
    estimates = w1.T @ resid[treated]

    # ---------------------------------------------------------------- Theorem 3 variance
    cell = pl.DataFrame({"g": g[treated], "e": e1}).select(
        pl.struct("g", "e").rank("dense").cast(pl.Int64).sub(1).alias("c")
    )
    cc = cell.get_column("c").to_numpy()
    n_cells = int(cc.max()) + 1
    v1sq = w1**2
    num = _fe.cluster_sums(v1sq * resid[treated, None], cc, n_cells)
    den = _fe.cluster_sums(v1sq, cc, n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau_bar = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    eps = np.repeat(resid[:, None], w1.shape[1], axis=1)
    clus = cluster_codes(f.get_column(CLUSTER))
    n_clusters = int(clus.max()) + 1
    centre, used_leave_out = tau_bar[cc], False
    if leave_out is not False:
        try:
            centre = _leave_out_mean(resid[treated], v1sq, cc, clus[treated], num, den, g[treated], e1)
            used_leave_out = True
        except SpecificationError as err:
            if leave_out:
                raise
            warnings.warn(
                f"{err}. The default leave_out=None falls back to the plain Theorem 3 variance, which is "
                "biased down where one cluster carries a cell (pass leave_out=False to choose it and "
                "silence this)",
                InferenceFallbackWarning,
                stacklevel=3,
            )
    eps[treated] = resid[treated, None] - centre
    sums = _fe.cluster_sums(v * eps, clus, n_clusters)
    vmat = sums.T @ sums
    ses = np.sqrt(np.diag(vmat))

    # ---------------------------------------------------------------- Test 1
    pretrend = None
    if pretrends:
        leads = tuple(range(-pretrends, 0))
        f0 = f.filter(pl.col(TREATED) == 0)
        e0 = f0.get_column("_e").fill_null(-(10**9)).to_numpy()
        lead_x = np.column_stack([(e0 == k).astype(float) for k in leads])
        empty = [k for k, col in zip(leads, lead_x.T, strict=True) if not col.any()]
        if empty:
            raise SpecificationError(f"pretrends={pretrends}: no untreated cell at event time(s) {empty}")
        x0 = f0.select(panel.xnames).to_numpy() if panel.xnames else np.zeros((f0.height, 0))
        fit = fe_wls(
            f0.get_column(Y).to_numpy(),
            np.column_stack([lead_x, x0]),
            unit=f0.get_column(UID).to_numpy(),
            period=f0.get_column(TID).to_numpy(),
            weights=omega[~treated],
            cluster=cluster_codes(f0.get_column(CLUSTER)),
            what="BJS pre-trend regression",
        )
        kk = len(leads)
        b, vb = fit.beta[:kk], fit.vcov[:kk, :kk]
        wald = float(b @ np.linalg.solve(vb, b))
        g0 = fit.small_sample.g
        pretrend = PretrendTest(
            leads=leads,
            estimates=b,
            vcov=vb,
            wald=wald,
            df=kk,
            f_statistic=wald / kk,
            f_df2=g0 - 1,
            p_value=float(stats.f.sf(wald / kk, kk, g0 - 1)),
            p_value_chi2=float(stats.chi2.sf(wald, kk)),
            nobs=int(f0.height),
        )

    units_at = (
        f.filter(pl.col(TREATED) == 1)
        .group_by("_e")
        .agg(pl.col(UID).n_unique().alias("n_units"))
        .rename({"_e": "e"})
        .sort("e")
    )
    n_treated_units = {int(k): int(m) for k, m in units_at.iter_rows()}
    warn_thin_cells(units_at.filter(pl.col("e").is_in(hs)), label="BJS horizon", stacklevel=3)
    tau = (
        f.filter(pl.col(TREATED) == 1)
        .select(pl.col("unit"), pl.col(PERIOD), pl.col(G), pl.col("_e").alias("e"), pl.col(Y))
        .with_columns(
            pl.Series("weight", w1[:, 0]),
            pl.Series("y0_hat", y0_hat[treated]),
            pl.Series("tau", resid[treated]),
        )
    )
    lineage = {
        "function": "stopdisparity.models._bjs.bjs",
        "options": {
            "horizons": list(hs),
            "pretrends": pretrends,
            "weights": weights,
            "leave_out": leave_out,
            "leave_out_used": used_leave_out,
            "alpha": alpha,
        },
        "columns": dict(panel.columns),
        "unit_weight_rule": (
            "row weight n (stop-weighted first stage and averages)"
            if weights == "n"
            else "equal (1 per cell)"
        ),
        "periods": [int(p) for p in sorted(set(f.get_column(PERIOD).to_list()))],
        "cohorts": sorted(int(c) for c in set(g[g > 0].tolist())),
        "n_units": n_u,
        "versions": _fe.package_versions(),
    }
    return BjsResult(
        outcome_scale=panel.outcome_scale,
        att=float(estimates[0]),
        att_se=float(ses[0]),
        horizons=tuple(hs),
        horizon_estimates=estimates[1:],
        horizon_se=ses[1:],
        horizon_vcov=vmat[1:, 1:],
        n_treated_units=n_treated_units,
        n_treated_obs=int(treated.sum()),
        n_units_treated=int(f.filter(pl.col(TREATED) == 1).get_column(UID).n_unique()),
        pretrend=pretrend,
        tau=tau,
        weights=weights,
        nobs=int(f.height),
        n_untreated_obs=int((~treated).sum()),
        n_clusters=n_clusters,
        n_dropped_always_treated=n_always,
        n_dropped_unimputable=int(bad.height),
        covariates=tuple(panel.columns.get("covariates") or ()),
        leave_out=used_leave_out,
        columns=dict(panel.columns),
        lineage=lineage,
    )


__all__: Sequence[str] = ("BjsResult", "PretrendTest", "bjs")
