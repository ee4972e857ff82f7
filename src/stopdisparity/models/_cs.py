r"""Callaway & Sant'Anna (2021) group-time average treatment effects and their aggregations.

:func:`callaway_santanna` takes a :class:`~stopdisparity.models._staggered_data.StaggeredPanel` and
returns a frozen :class:`CallawaySantAnnaResult`: every ATT(g,t), the ``simple``, ``dynamic``,
``group`` and ``calendar`` aggregations of R ``did``'s ``aggte``, one influence function per unit
for each of them, analytical standard errors and a clustered multiplier bootstrap with simultaneous
(sup-t) bands. It follows R ``did`` (``att_gt`` + ``aggte``) step for step:

- ATT(g,t) is the 2×2 comparison of the long difference :math:`Y_t - Y_b` between cohort ``g`` and the
  comparison group: never-treated units (``control="never"``) or units not yet treated by
  :math:`\max(t, b) + \delta` (``"not_yet"``, cohort ``g`` itself excluded), :math:`\delta` the
  anticipation. The base period :math:`b` is the last period with :math:`b + \delta < g` for
  post-treatment cells (:math:`t \ge g`) and, for pre-treatment cells, the previous period
  (``base_period="varying"``) or the same :math:`b` (``"universal"``; the cell :math:`t = b` is 0).
- Averages are weighted by the time-invariant unit weight ``w`` (R ``weightsname``). Covariates enter
  by outcome regression (R ``est_method="reg"``, Heckman, Ichimura & Todd 1997; DRDID's
  ``reg_did_panel``): the control units' long difference is regressed on the covariates, taken in the
  earlier period of the pair, and the ATT is the treated units' mean difference minus their mean
  prediction. ``est_method="dr"`` is the locally efficient doubly robust estimator of Sant'Anna & Zhao
  (2020) (DRDID's ``drdid_panel``, R ``did``'s default): logit propensity score plus that regression.
- Units treated in the first period (or with no period before ``g - anticipation``) have no base period
  and are dropped with a warning, as R does. With ``control="not_yet"`` and no never-treated unit, as R,
  the periods from the last cohort's adoption (minus anticipation) on are dropped and that cohort is
  the comparison group.
- Aggregations: ``simple`` averages post-treatment cells with weights :math:`P(G=g)` (weighted unit
  shares); ``dynamic`` averages cells with the same event time :math:`e = t - g` with those weights,
  then averages :math:`e \ge 0` (``balance_e`` keeps cohorts observed up to that event time; ``min_e``,
  ``max_e`` trim); ``group`` averages each cohort's post cells, then across cohorts by size;
  ``calendar`` averages cohorts treated by ``t``, then across periods. Their influence functions
  include the estimation of the weights (R's ``wif``).

Inference. The analytical standard error of every term is :math:`\sqrt{\sum_c (\sum_{i \in c}
\psi_i)^2}/n`, :math:`\psi_i` the unit's influence function (``n/n_1``-scaled as R) summed within the
panel's clusters (R's ``bstrap=FALSE`` numbers with unit clusters). The multiplier bootstrap draws one
Mammen (1993) weight per cluster (the cluster's summed influence function, so the bootstrap variance
matches the analytical one; R ``mboot`` multiplies cluster *means* by :math:`\sqrt{G}` instead, which
differs only with unequal clusters) and gives the robust (interquartile) bootstrap SE, pointwise
p-values and intervals on that SE, and the simultaneous band with the :math:`1-\alpha` quantile of
:math:`\max_j |b_j|/\hat\sigma_j` over each family (all ATT(g,t); each aggregation's components).
``std_error`` stays analytical (DESIGN.md); with ``n_boot=0`` everything is analytical and normal.

References
----------
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
Sant'Anna, P. H. C. & Zhao, J. (2020). Doubly robust difference-in-differences estimators. Journal of
Econometrics 219(1), 101-122 (the outcome-regression 2×2 and its influence function).
Mammen, E. (1993). Bootstrap and wild bootstrap for high dimensional linear models. Annals of
Statistics 21(1), 255-285.
Montiel Olea, J. L. & Plagborg-Møller, M. (2019). Simultaneous confidence bands. Journal of Applied
Econometrics 34(1), 1-17.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from stopdisparity.errors import DroppedRowsWarning, SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.models._staggered_data import (
    CLUSTER,
    G,
    StaggeredPanel,
    W,
    on_scale,
    warn_thin_cells,
)
from stopdisparity.results import TidyRow, tidy_frame

ESTIMATOR = "callaway-santanna"
ESTIMAND = "ATT(g,t) on the outcome level; parallel trends in levels (conditional on covariates if given)"
#: Bootstrap columns handled at once (memory: n_boot × chunk floats).
_CHUNK = 2048
_MAMMEN_LOW = (1.0 - math.sqrt(5.0)) / 2.0
_MAMMEN_HIGH = (1.0 + math.sqrt(5.0)) / 2.0
_MAMMEN_P_LOW = (math.sqrt(5.0) + 1.0) / (2.0 * math.sqrt(5.0))


@dataclass(frozen=True, slots=True)
class CallawaySantAnnaResult:
    r"""ATT(g,t)s, aggregations, influence functions and bootstrap summaries (Callaway & Sant'Anna 2021).

    One entry per reported term, in the tidy order: every ATT(g,t), ``simple``, ``dynamic:<e>`` then
    ``dynamic:overall``, ``group:<g>`` then ``group:overall``, ``calendar:<t>`` then
    ``calendar:overall``. ``influence`` is (terms × units), in the unit order of ``unit_ids``;
    ``family`` names the set a term's simultaneous band covers (``""`` for a single term);
    ``boot_se`` is the bootstrap SE (NaN without bootstrap) and ``sup_t`` maps each family to its
    ``n_boot`` draws of :math:`\max_j |b_j|/\hat\sigma_j`.
    """

    terms: tuple[str, ...]
    aggregation: tuple[str, ...]
    estimates: np.ndarray
    std_errors: np.ndarray
    boot_se: np.ndarray
    family: tuple[str, ...]
    sup_t: Mapping[str, np.ndarray]
    g: np.ndarray
    t: np.ndarray
    e: np.ndarray
    n_treated_units: np.ndarray
    n_obs: np.ndarray
    influence: np.ndarray
    unit_ids: tuple[Any, ...]
    cluster_of_unit: np.ndarray
    n_units: int
    n_clusters: int
    control: str
    base_period: str
    anticipation: int
    balance_e: int | None
    n_boot: int
    seed: int
    alpha: float
    cluster_name: str
    dropped_units: tuple[Any, ...]
    lineage: Mapping[str, Any]
    estimator: str = ESTIMATOR
    estimand: str = ESTIMAND
    outcome_scale: str = "level"

    @property
    def n_gt(self) -> int:
        """Number of ATT(g,t) terms (they come first)."""
        return sum(1 for a in self.aggregation if a == "gt")

    def vcov(self, aggregation: str = "gt") -> np.ndarray:
        """Analytical covariance of one aggregation's terms (cluster-summed influence functions / n²)."""
        idx = [i for i, a in enumerate(self.aggregation) if a == aggregation]
        psi = self.influence[idx]
        psi_c = np.zeros((len(idx), self.n_clusters))
        np.add.at(psi_c.T, self.cluster_of_unit, psi.T)
        return (psi_c @ psi_c.T) / self.n_units**2

    def pretrend_test(self) -> dict[str, float]:
        r"""Wald pre-test that every pre-treatment ATT(g,t) is 0 (R ``did``'s ``W``/``Wpval``).

        Pre-treatment cells are those with ``t + anticipation < g`` (the anticipation periods are not
        tested, as R).

        :math:`W = \hat a' \hat V^{-1} \hat a`, chi-squared with as many degrees of freedom as
        pre-treatment cells with a defined SE, :math:`\hat V` the analytical covariance (clustered as
        the panel). Returns ``statistic, df, p_value`` (NaN when there is no such cell or V is singular).
        """
        idx = [
            i
            for i in range(self.n_gt)
            if self.t[i] + self.anticipation < self.g[i]
            and math.isfinite(self.estimates[i])
            and math.isfinite(self.std_errors[i])
        ]
        if not idx:
            return {"statistic": math.nan, "df": 0.0, "p_value": math.nan}
        psi = self.influence[idx]
        psi_c = np.zeros((len(idx), self.n_clusters))
        np.add.at(psi_c.T, self.cluster_of_unit, psi.T)
        v = psi_c @ psi_c.T / self.n_units**2
        a = self.estimates[idx]
        if np.linalg.cond(v) > 1 / np.finfo(float).eps:
            return {"statistic": math.nan, "df": float(len(idx)), "p_value": math.nan}
        w = float(a @ np.linalg.solve(v, a))
        return {"statistic": w, "df": float(len(idx)), "p_value": float(stats.chi2.sf(w, len(idx)))}

    def tidy(self, alpha: float | None = None) -> pl.DataFrame:
        """The DESIGN.md tidy table: one row per term, in the issue-6 order.

        Extra keys ``aggregation, g, t, e, n_treated_units, cband_low, cband_high`` follow the contract.
        """
        a = self.alpha if alpha is None else float(alpha)
        if not (0 < a < 1):
            raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
        z = float(stats.norm.isf(a / 2))
        boot = self.n_boot > 0
        crit: dict[str, float] = {}
        for fam, draws in self.sup_t.items():
            finite = draws[np.isfinite(draws)]
            crit[fam] = float(np.quantile(finite, 1 - a, method="inverted_cdf")) if finite.size else math.nan
        inference = (
            f"multiplier bootstrap (Mammen weights, {self.n_boot} draws, seed {self.seed}, clustered by "
            f"{self.cluster_name}): p-value, CI and simultaneous band; std_error analytical"
            if boot
            else "analytical (influence function, clustered by " + f"{self.cluster_name}), normal"
        )
        rows = []
        for i, term in enumerate(self.terms):
            est = float(self.estimates[i])
            se = float(self.std_errors[i])
            se_inf = float(self.boot_se[i]) if boot else se
            if math.isfinite(se_inf) and se_inf > 0 and math.isfinite(est):
                stat = est / se_inf
                p = float(2 * stats.norm.sf(abs(stat)))
                lo, hi = est - z * se_inf, est + z * se_inf
            else:
                stat = p = lo = hi = math.nan
            fam = self.family[i]
            if not fam:  # a single number: its band is its interval
                band = (lo, hi)
            elif boot and math.isfinite(crit.get(fam, math.nan)) and math.isfinite(se_inf):
                band = (est - crit[fam] * se_inf, est + crit[fam] * se_inf)
            else:  # no bootstrap: no simultaneous band
                band = (math.nan, math.nan)
            rows.append(
                TidyRow(
                    term=term,
                    estimate=est,
                    std_error=se,
                    statistic=stat,
                    p_value=p,
                    ci_low=lo,
                    ci_high=hi,
                    n_obs=int(self.n_obs[i]),
                    n_clusters=self.n_clusters,
                    estimator=self.estimator,
                    estimand=on_scale(self.estimand, self.outcome_scale),
                    inference=inference,
                    extra={
                        "aggregation": self.aggregation[i],
                        "g": _opt_int(self.g[i]),
                        "t": _opt_int(self.t[i]),
                        "e": _opt_int(self.e[i]),
                        "n_treated_units": int(self.n_treated_units[i]),
                        "cband_low": float(band[0]),
                        "cband_high": float(band[1]),
                    },
                )
            )
        return tidy_frame(rows)


def _opt_int(x: float) -> int | None:
    return int(x) if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------ estimation
def _reg_did(dy: np.ndarray, d: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Outcome-regression 2×2 DiD (DRDID ``reg_did_panel``) on one subsample: ATT and its influence.

    ``dy`` long differences, ``d`` 1 for treated / 0 for comparison units, ``x`` covariates with an
    intercept column, ``w`` unit weights. The influence function is per subsample unit (mean zero).
    """
    n1 = dy.shape[0]
    wt = w / w.mean()
    wc = wt * (1.0 - d)
    xtx = (x * wc[:, None]).T @ x / n1
    try:
        xtx_inv = np.linalg.inv(xtx)
    except np.linalg.LinAlgError:
        return math.nan, np.full(n1, math.nan)
    if not np.all(np.isfinite(xtx_inv)) or np.linalg.cond(xtx) > 1 / np.finfo(float).eps:
        return math.nan, np.full(n1, math.nan)
    beta = xtx_inv @ ((x * wc[:, None]).T @ dy / n1)
    fit = x @ beta
    w1 = wt * d
    p1 = w1.mean()
    eta_t = np.mean(w1 * dy) / p1
    eta_c = np.mean(w1 * fit) / p1
    lin = (wc * (dy - fit))[:, None] * x @ xtx_inv
    m1 = np.mean(w1[:, None] * x, axis=0)
    inf_t = (w1 * dy - w1 * eta_t) / p1
    inf_c = (w1 * fit - w1 * eta_c + lin @ m1) / p1
    return float(eta_t - eta_c), inf_t - inf_c


def _logit(x: np.ndarray, d: np.ndarray, w: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, bool]:
    """Weighted logistic regression by Newton-Raphson (the propensity score of the DR estimator)."""
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        info = (x * (w * p * (1 - p))[:, None]).T @ x
        try:
            step = np.linalg.solve(info, x.T @ (w * (d - p)))
        except np.linalg.LinAlgError:
            return beta, False
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            return beta, True
    return beta, False


def _dr_did(
    dy: np.ndarray, d: np.ndarray, x: np.ndarray, w: np.ndarray, trim_level: float = 0.995
) -> tuple[float, np.ndarray]:
    """Locally efficient doubly robust 2×2 DiD (Sant'Anna & Zhao 2020, eq. 3.1; DRDID ``drdid_panel``).

    Logit propensity score and a control-group outcome regression of ``dy`` on ``x``; control units
    with a score of at least ``trim_level`` get weight 0, as DRDID. Returns the ATT and its influence
    function per subsample unit (the estimation of both nuisance models included).
    """
    n1 = dy.shape[0]
    wt = w / w.mean()
    beta_ps, ok = _logit(x, d, wt)
    ps = 1.0 / (1.0 + np.exp(-(x @ beta_ps)))
    if not ok or not np.all(np.isfinite(ps)) or ps.max() >= 0.999:
        return math.nan, np.full(n1, math.nan)
    ps = np.minimum(ps, 1 - 1e-6)
    keep = np.where(d == 1, True, ps < trim_level)
    wc = wt * (1.0 - d)
    xtx = (x * wc[:, None]).T @ x / n1
    if np.linalg.cond(xtx) > 1 / np.finfo(float).eps:
        return math.nan, np.full(n1, math.nan)
    xtx_inv = np.linalg.inv(xtx)
    fit = x @ (xtx_inv @ ((x * wc[:, None]).T @ dy / n1))
    resid = dy - fit
    w_t = keep * wt * d
    w_c = keep * wt * ps * (1.0 - d) / (1.0 - ps)
    eta_t = np.mean(w_t * resid) / np.mean(w_t)
    eta_c = np.mean(w_c * resid) / np.mean(w_c)
    lin_ols = (wc * resid)[:, None] * x @ xtx_inv
    info_inv = np.linalg.inv((x * (wt * ps * (1 - ps))[:, None]).T @ x) * n1
    lin_ps = (wt * (d - ps))[:, None] * x @ info_inv
    inf_t = (w_t * resid - w_t * eta_t - lin_ols @ np.mean(w_t[:, None] * x, axis=0)) / np.mean(w_t)
    m2 = np.mean((w_c * (resid - eta_c))[:, None] * x, axis=0)
    m3 = np.mean(w_c[:, None] * x, axis=0)
    inf_c = (w_c * resid - w_c * eta_c + lin_ps @ m2 - lin_ols @ m3) / np.mean(w_c)
    return float(eta_t - eta_c), inf_t - inf_c


def callaway_santanna(
    panel: StaggeredPanel,
    *,
    control: Literal["never", "not_yet"] = "never",
    base_period: Literal["varying", "universal"] = "varying",
    anticipation: int = 0,
    balance_e: int | None = None,
    min_e: float = -math.inf,
    max_e: float = math.inf,
    n_boot: int = 999,
    seed: int = 20240607,
    alpha: float = 0.05,
    est_method: Literal["reg", "dr"] = "reg",
) -> CallawaySantAnnaResult:
    r"""Callaway & Sant'Anna (2021) ATT(g,t)s, R ``did``'s aggregations, influence functions, bootstrap.

    Parameters
    ----------
    panel
        A balanced :class:`StaggeredPanel` (:func:`prepare_staggered`); ``w`` are the unit weights,
        ``cluster`` the bootstrap clusters, ``_x*`` covariates (outcome regression).
    control
        ``"never"`` (never-treated units) or ``"not_yet"`` (not yet treated by
        :math:`\max(t, b)` + anticipation, R ``"notyettreated"``).
    base_period
        ``"varying"`` (pre-period cells compare consecutive periods) or ``"universal"`` (every cell
        against the period before ``g - anticipation``).
    anticipation
        Periods (in units of the period index) before ``g`` in which units may already react.
    balance_e, min_e, max_e
        As R ``aggte(type="dynamic")``: keep cohorts observed for event times 0..``balance_e``; trim the
        event times reported.
    n_boot, seed, alpha
        Multiplier-bootstrap draws (0: analytical inference only), their seed, and the level of the
        stored intervals (``tidy(alpha)`` can recompute them).
    est_method
        ``"reg"`` (outcome regression, R ``did``'s ``"reg"``) or ``"dr"`` (locally efficient doubly
        robust, Sant'Anna & Zhao 2020, R ``did``'s default ``"dr"``; logit propensity score, control
        units with a score ≥ 0.995 trimmed, a cell whose score reaches 0.999 is NaN as R). Without
        covariates both are the unconditional DiD.

    Raises
    ------
    SpecificationError
        Unknown options; no never-treated unit with ``control="never"``; no cohort with a base period;
        an unbalanced panel.
    """
    check_choice("control", control, ("never", "not_yet"))
    check_choice("base_period", base_period, ("varying", "universal"))
    check_choice("est_method", est_method, ("reg", "dr"))
    if not isinstance(anticipation, int) or anticipation < 0:
        raise SpecificationError(f"anticipation must be a non-negative integer; got {anticipation!r}")
    if balance_e is not None and (not isinstance(balance_e, int) or balance_e < 0):
        raise SpecificationError(f"balance_e must be a non-negative integer or None; got {balance_e!r}")
    if not isinstance(n_boot, int) or n_boot < 0:
        raise SpecificationError(f"n_boot must be a non-negative integer; got {n_boot!r}")
    if not (0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    if not panel.balanced:
        raise SpecificationError(
            "callaway_santanna needs a balanced panel (prepare_staggered(balanced=True))"
        )

    units = panel.units()
    periods = np.asarray(panel.periods, dtype=np.int64)
    y_all = panel.matrix()
    x_all = [panel.matrix(x) for x in panel.xnames]
    g_unit = units.get_column(G).to_numpy().astype(np.int64)
    w_unit = units.get_column(W).to_numpy().astype(float)
    cl_unit = units.get_column(CLUSTER).to_list()
    unit_ids = units.get_column("unit").to_list()

    if control == "never" and not panel.has_never_treated:
        raise SpecificationError(
            "control='never' needs never-treated units (first_treated 0) and this panel has none; use "
            "control='not_yet' (not-yet-treated units as the comparison group)"
        )
    keep_t = np.ones(periods.size, dtype=bool)
    if control == "not_yet" and not np.any(g_unit == 0):
        g_last = int(g_unit.max())
        keep_t = periods < g_last - anticipation
        g_unit = np.where(g_unit == g_last, 0, g_unit)
        warnings.warn(
            f"no never-treated unit: as R did, periods from {g_last - anticipation} on are dropped and the "
            f"last cohort (g={g_last}) is the comparison group",
            DroppedRowsWarning,
            stacklevel=2,
        )
    periods = periods[keep_t]
    y_all = y_all[:, keep_t]
    x_all = [x[:, keep_t] for x in x_all]
    if periods.size < 2:
        raise SpecificationError("fewer than 2 periods left: no comparison can be made")
    # units without a base period: treated in the first period (or within the anticipation window)
    no_base = (g_unit > 0) & (g_unit - anticipation <= periods[0])
    # cohorts adopting after the last period kept behave as never treated in the window (R)
    g_unit = np.where(g_unit > periods[-1] + anticipation, 0, g_unit)
    dropped: tuple[Any, ...] = ()
    if no_base.any():
        dropped = tuple(unit_ids[i] for i in np.flatnonzero(no_base))
        warnings.warn(
            f"dropped {len(dropped)} unit(s) treated in the first period {int(periods[0])} (or within the "
            f"anticipation window), as R did: they have no pre-treatment period (e.g. {list(dropped[:5])})",
            DroppedRowsWarning,
            stacklevel=2,
        )
        keep_u = ~no_base
        y_all = y_all[keep_u]
        x_all = [x[keep_u] for x in x_all]
        g_unit, w_unit = g_unit[keep_u], w_unit[keep_u]
        cl_unit = [c for c, k in zip(cl_unit, keep_u, strict=True) if k]
        unit_ids = [u for u, k in zip(unit_ids, keep_u, strict=True) if k]
    n = g_unit.size
    if n == 0 or not np.any(g_unit > 0):
        raise SpecificationError("no treated unit with a pre-treatment period is left")
    if control == "never" and not np.any(g_unit == 0):
        raise SpecificationError(
            "control='never' needs never-treated units and none is left; use control='not_yet'"
        )
    if np.any(~np.isfinite(y_all)):
        raise SpecificationError("the outcome has missing values; the panel must be balanced and complete")
    cohorts = np.unique(g_unit[g_unit > 0])
    n_t = periods.size

    # ------------------------------------------------------------------------------- ATT(g,t) cells
    cell_g: list[int] = []
    cell_t: list[int] = []
    cell_att: list[float] = []
    cell_n1: list[int] = []
    psi_rows: list[np.ndarray] = []
    cohort_size = {int(g): int(np.sum(g_unit == g)) for g in cohorts}
    t_start = 1 if base_period == "varying" else 0
    wy = w_unit[:, None] * y_all
    for g in cohorts:
        g = int(g)
        in_g = g_unit == g
        pre_idx = np.flatnonzero(periods + anticipation < g)
        b_post = int(pre_idx[-1])
        tc = np.arange(t_start, n_t)
        post = periods[tc] >= g
        base = np.where(post, b_post, tc - 1) if base_period == "varying" else np.full(tc.size, b_post)
        # comparison units per cell (units × cells)
        if control == "never":
            ctrl = np.broadcast_to((g_unit == 0)[:, None], (n, tc.size))
        else:
            thresh = np.maximum(periods[tc], periods[base]) + anticipation
            ctrl = (g_unit[:, None] == 0) | ((g_unit[:, None] > thresh[None, :]) & ~in_g[:, None])
        if not x_all:  # "reg" and "dr" coincide without covariates: the unconditional DiD
            dy = y_all[:, tc] - y_all[:, base]
            w_g = w_unit[in_g].sum()
            eta1 = (wy[in_g][:, tc] - wy[in_g][:, base]).sum(axis=0) / w_g
            wc = w_unit[:, None] * ctrl
            w_c = wc.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mu0 = (wc * dy).sum(axis=0) / w_c
                att = eta1 - mu0
                psi = n * (
                    (w_unit[:, None] * in_g[:, None]) * (dy - eta1[None, :]) / w_g
                    - wc * (dy - mu0[None, :]) / w_c[None, :]
                )
            psi[:, w_c == 0] = np.nan
            same = tc == base  # universal base: normalised cell
            att[same] = 0.0
            psi[:, same] = 0.0
            n1 = in_g.sum() + ctrl.sum(axis=0)
            cell_att.extend(att.tolist())
            psi_rows.append(psi.T)
        else:
            atts = np.empty(tc.size)
            psi = np.zeros((tc.size, n))
            n1 = np.empty(tc.size, dtype=np.int64)
            for j in range(tc.size):
                t_j, b_j = int(tc[j]), int(base[j])
                sub = in_g | ctrl[:, j]
                n1[j] = int(sub.sum())
                if t_j == b_j:
                    atts[j] = 0.0
                    continue
                early = min(t_j, b_j)
                xs = np.column_stack([np.ones(n1[j])] + [x[sub, early] for x in x_all])
                dyj = y_all[sub, t_j] - y_all[sub, b_j]
                two_by_two = _reg_did if est_method == "reg" else _dr_did
                att_j, inf_j = two_by_two(dyj, in_g[sub].astype(float), xs, w_unit[sub])
                atts[j] = att_j
                psi[j, sub] = (n / n1[j]) * inf_j
                if not math.isfinite(att_j):
                    psi[j, :] = np.nan
            cell_att.extend(atts.tolist())
            psi_rows.append(psi)
        cell_g.extend([g] * tc.size)
        cell_t.extend(periods[tc].tolist())
        cell_n1.extend(np.asarray(n1).tolist())
    att_gt = np.asarray(cell_att, dtype=float)
    psi_gt = np.vstack(psi_rows)
    gt_g = np.asarray(cell_g, dtype=np.int64)
    gt_t = np.asarray(cell_t, dtype=np.int64)

    # ------------------------------------------------------------------------------- aggregations
    sizes = np.array([cohort_size[int(g)] for g in gt_g])
    pg_of = {int(g): float(np.mean(w_unit * (g_unit == g))) for g in cohorts}
    ind_of = {int(g): w_unit * (g_unit == g) - pg_of[int(g)] for g in cohorts}  # w·1{G=g} − P(G=g)
    pgg = np.array([pg_of[int(g)] for g in gt_g])

    def wif(keep: np.ndarray) -> np.ndarray:
        """R's ``wif``: influence of estimating the weights pg[keep]/sum(pg[keep]) (units × len(keep))."""
        pk = pgg[keep]
        s = pk.sum()
        ind = np.column_stack([ind_of[int(g)] for g in gt_g[keep]])
        return ind / s - ind.sum(axis=1, keepdims=True) * (pk / s**2)[None, :]

    def agg(keep: np.ndarray, weights: np.ndarray, with_wif: bool) -> tuple[float, np.ndarray]:
        est = float(np.sum(att_gt[keep] * weights))
        psi = weights @ psi_gt[keep]
        if with_wif:
            psi = psi + wif(keep) @ att_gt[keep]
        return est, psi

    terms: list[str] = [f"gt:{g}:{t}" for g, t in zip(gt_g, gt_t, strict=True)]
    aggregation = ["gt"] * len(terms)
    family = ["gt"] * len(terms)
    ests: list[float] = att_gt.tolist()
    psis: list[np.ndarray] = [psi_gt]
    tg = gt_g.astype(float).tolist()
    tt = gt_t.astype(float).tolist()
    te = (gt_t - gt_g).astype(float).tolist()
    ntreat: list[int] = sizes.tolist()
    nobs: list[int] = cell_n1

    def add(
        term: str, kind: str, fam: str, est: float, psi: np.ndarray, gv: float, tv: float, ev: float, ntr: int
    ) -> None:
        terms.append(term)
        aggregation.append(kind)
        family.append(fam)
        ests.append(est)
        psis.append(psi[None, :])
        tg.append(gv)
        tt.append(tv)
        te.append(ev)
        ntreat.append(ntr)
        nobs.append(n)

    def n_behind(keep: np.ndarray) -> int:
        return int(sum(cohort_size[int(g)] for g in np.unique(gt_g[keep])))

    nan = math.nan
    post_cells = gt_g <= gt_t
    post_cells_e = post_cells & (gt_t <= gt_g + max_e)
    # simple
    keep = np.flatnonzero(post_cells_e)
    est, psi = agg(keep, pgg[keep] / pgg[keep].sum(), True)
    add("simple", "simple", "", est, psi, nan, nan, nan, n_behind(keep))
    # dynamic
    ev_all = gt_t - gt_g
    incl = np.ones(gt_g.size, dtype=bool)
    if balance_e is not None:
        incl = (periods[-1] - gt_g) >= balance_e
    eseq = np.unique(ev_all[incl])
    if balance_e is not None:
        eseq = eseq[(eseq <= balance_e) & (eseq >= balance_e - periods[-1] + periods[0])]
    eseq = eseq[(eseq >= min_e) & (eseq <= max_e)]
    dyn_est: list[float] = []
    dyn_psi: list[np.ndarray] = []
    for e in eseq:
        keep = np.flatnonzero((ev_all == e) & incl)
        est, psi = agg(keep, pgg[keep] / pgg[keep].sum(), True)
        dyn_est.append(est)
        dyn_psi.append(psi)
        add(f"dynamic:{int(e)}", "dynamic", "dynamic", est, psi, nan, nan, float(e), n_behind(keep))
    epos = eseq >= 0
    if epos.any():
        est = float(np.mean(np.asarray(dyn_est)[epos]))
        psi = np.mean(np.vstack(dyn_psi)[epos], axis=0)
        keep = np.flatnonzero(incl & (ev_all >= 0) & np.isin(ev_all, eseq))
        add("dynamic:overall", "dynamic", "", est, psi, nan, nan, nan, n_behind(keep))
    # group
    grp_est: list[float] = []
    grp_psi: list[np.ndarray] = []
    for g in cohorts:
        keep = np.flatnonzero((gt_g == g) & post_cells_e)
        est, psi = agg(keep, np.full(keep.size, 1.0 / keep.size), False)
        grp_est.append(est)
        grp_psi.append(psi)
        add(f"group:{int(g)}", "group", "group", est, psi, float(g), nan, nan, cohort_size[int(g)])
    pg_c = np.array([pg_of[int(g)] for g in cohorts])
    wg = pg_c / pg_c.sum()
    ind_c = np.column_stack([ind_of[int(g)] for g in cohorts])
    wif_g = ind_c / pg_c.sum() - ind_c.sum(axis=1, keepdims=True) * (pg_c / pg_c.sum() ** 2)[None, :]
    grp_est_a = np.asarray(grp_est)
    est = float(np.sum(grp_est_a * wg))
    psi = wg @ np.vstack(grp_psi) + wif_g @ grp_est_a
    add("group:overall", "group", "", est, psi, nan, nan, nan, int(sum(cohort_size.values())))
    # calendar
    cal_est: list[float] = []
    cal_psi: list[np.ndarray] = []
    for t1 in periods[periods >= cohorts.min()]:
        keep = np.flatnonzero((gt_t == t1) & post_cells)
        if keep.size == 0:
            continue
        est, psi = agg(keep, pgg[keep] / pgg[keep].sum(), True)
        cal_est.append(est)
        cal_psi.append(psi)
        add(f"calendar:{int(t1)}", "calendar", "calendar", est, psi, nan, float(t1), nan, n_behind(keep))
    est = float(np.mean(cal_est))
    psi = np.mean(np.vstack(cal_psi), axis=0)
    add("calendar:overall", "calendar", "", est, psi, nan, nan, nan, n_behind(np.flatnonzero(post_cells)))

    influence = np.vstack(psis)
    estimates = np.asarray(ests, dtype=float)

    # ------------------------------------------------------------------------------- inference
    cl_codes, cl_inv = np.unique(np.asarray(cl_unit, dtype=object).astype(str), return_inverse=True)
    n_cl = cl_codes.size
    psi_c = np.zeros((influence.shape[0], n_cl))
    np.add.at(psi_c.T, cl_inv, influence.T)
    std_errors = np.sqrt(np.sum(psi_c**2, axis=1)) / n
    # as R: an SE that is numerically 0 (the universal base period's own cell) is undefined
    std_errors[std_errors <= math.sqrt(np.finfo(float).eps) * 10 / math.sqrt(n)] = np.nan
    fam_arr = np.asarray(family)
    boot_se = np.full(estimates.size, np.nan)
    sup_t: dict[str, np.ndarray] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        v = np.where(rng.random((n_boot, n_cl)) < _MAMMEN_P_LOW, _MAMMEN_LOW, _MAMMEN_HIGH)
        fams = [f for f in dict.fromkeys(family) if f]
        running = {f: np.full(n_boot, -np.inf) for f in fams}
        q = stats.norm.ppf(0.75) - stats.norm.ppf(0.25)
        finite_rows = np.all(np.isfinite(psi_c), axis=1)
        for start in range(0, estimates.size, _CHUNK):
            sl = slice(start, min(start + _CHUNK, estimates.size))
            pc = np.where(finite_rows[sl, None], psi_c[sl], 0.0)
            b = v @ pc.T / n  # n_boot × chunk
            q75, q25 = np.quantile(b, [0.75, 0.25], axis=0, method="inverted_cdf")
            sig = (q75 - q25) / q
            sig[~finite_rows[sl]] = np.nan
            sig[sig <= math.sqrt(np.finfo(float).eps) * 10 / math.sqrt(n)] = np.nan
            boot_se[sl] = sig
            for f in fams:
                cols = np.flatnonzero((fam_arr[sl] == f) & np.isfinite(sig))
                if cols.size:
                    running[f] = np.maximum(running[f], np.max(np.abs(b[:, cols]) / sig[cols], axis=1))
        sup_t = {f: np.where(np.isfinite(r), r, np.nan) for f, r in running.items()}

    # ------------------------------------------------------------------------------- warnings, result
    warn_thin_cells(
        pl.DataFrame({"g": [int(g) for g in cohorts], "n_units": [cohort_size[int(g)] for g in cohorts]}),
        label="ATT(g,t) cohort",
        stacklevel=3,
    )
    lineage = {
        "function": "stopdisparity.models._cs.callaway_santanna",
        "options": {
            "control": control,
            "base_period": base_period,
            "anticipation": anticipation,
            "balance_e": balance_e,
            "min_e": None if not math.isfinite(min_e) else min_e,
            "max_e": None if not math.isfinite(max_e) else max_e,
            "est_method": est_method,
            "n_boot": n_boot,
            "alpha": alpha,
        },
        "seed": seed,
        "n_boot": n_boot,
        "columns": dict(panel.columns),
        "covariates": list(panel.columns.get("covariates") or ()),
        "unit_weight_rule": panel.unit_weight_rule,
        "periods": [int(p) for p in periods],
        "cohorts": [int(g) for g in cohorts],
        "n_units": n,
        "n_clusters": int(n_cl),
        "dropped_units": [str(u) for u in dropped],
        "bootstrap": "Mammen multiplier weights per cluster on the cluster-summed influence functions",
        "versions": _fe.package_versions(),
    }
    return CallawaySantAnnaResult(
        outcome_scale=panel.outcome_scale,
        terms=tuple(terms),
        aggregation=tuple(aggregation),
        estimates=estimates,
        std_errors=std_errors,
        boot_se=boot_se,
        family=tuple(family),
        sup_t=sup_t,
        g=np.asarray(tg, dtype=float),
        t=np.asarray(tt, dtype=float),
        e=np.asarray(te, dtype=float),
        n_treated_units=np.asarray(ntreat, dtype=np.int64),
        n_obs=np.asarray(nobs, dtype=np.int64),
        influence=influence,
        unit_ids=tuple(unit_ids),
        cluster_of_unit=np.asarray(cl_inv, dtype=np.int64),
        n_units=n,
        n_clusters=int(n_cl),
        control=control,
        base_period=base_period,
        anticipation=anticipation,
        balance_e=balance_e,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        cluster_name=str(panel.columns.get("cluster") or panel.columns.get("unit") or "unit"),
        dropped_units=dropped,
        lineage=lineage,
    )
