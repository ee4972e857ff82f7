r"""Event study: the race composition of stops by time since a county's adoption.

Users call :func:`fit_event_study` (long race layout) or :func:`fit_event_study_panel` (any unit ×
period panel, standard DiD argument names, optional covariates); both return a frozen
:class:`EventStudyResult` whose ``tidy()`` has one row per event time (DESIGN.md, Results), with
:meth:`EventStudyResult.pretrend_test`, :meth:`EventStudyResult.plot` and
:meth:`EventStudyResult.with_inference`. Both run one estimation path; the race layout is the
binomial model with successes = focal stops and trials = focal + reference stops.

Model
-----
On county × period cells, with the fixed effects of :func:`stopdisparity.models.did.fit_did` (county
effects and state × period effects),

.. math:: \operatorname{logit} p_{ct} = \alpha_c + \gamma_{s(c)t} + \sum_{e \ne r} \beta_e
   1[E_{ct} = e]

(``estimator="logit"``, binomial with the cell's focal + reference stops as trials: the stop-level
logit) or the same right-hand side for the share by weighted least squares (``estimator="linear"``).
:math:`E_{ct}` is the event time of a treated county's cell, in **years** by default, computed from
the period dates and not from the panel period: for a monthly panel
:math:`E = \lfloor (t - g_c)/12 \rfloor` with :math:`g_c` the adoption period (``first_treated``), so
months 0-11 after adoption are event year 0 (quarters: :math:`\lfloor (t-g_c)/4 \rfloor`). Never-treated
counties (``first_treated == 0``) are controls with every dummy 0. The window (default −4…+5) keeps its
end points **binned** in the regression: every event time ≤ −4 enters the −4 dummy and every event time
≥ +5 the +5 dummy (with ``bin_endpoints=False`` treated cells outside the window are dropped). The
reference :math:`r = -1 - \text{anticipation}` is omitted.

What :math:`\beta_e` estimates. With never-treated controls and effects that depend on event time only
(not on the adoption cohort), :math:`\beta_e` is the stop-weighted effect at event time ``e`` on the
log odds (logit) or the share (linear), relative to event time ``r``, under parallel trends on that
scale. When effects differ across cohorts, each :math:`\beta_e` can be contaminated by the effects at
other event times (Sun & Abraham 2021); the heterogeneity-robust estimators live with the staggered
estimators, not here.

Inference
---------
CR1 (default ``vcov``) or CR0 cluster-robust sandwiches give ``std_error``, with the small-sample
factor of :class:`~stopdisparity.models._fe.SmallSample` (N = stops for the logit, cells for the linear
model). Pointwise p-values and intervals are CR2 with each term's Bell–McCaffrey degrees of freedom by
default (``inference="cr2"``; :func:`stopdisparity.models.inference.cr2`), because CR1 under-covers with
few effective clusters; ``inference="cluster"`` gives the analytical ones (normal for the logit, t(G-1)
for the linear model, as pyfixest). A sup-t simultaneous band over the estimated event times (Montiel
Olea & Plagborg-Møller 2019; critical value simulated from :math:`N(0,\hat V)`, seeded; never narrower
than a term's pointwise interval), and a
joint test that the leads — event times before ``-anticipation`` other than the reference and the
binned far lead — are zero, with its power against a linear pre-trend :math:`\delta\,(e - r)` (Roth
2022): by default the CR2 Wald statistic against the HTZ reference (Pustejovsky & Tipton 2018), under
``inference="cluster"`` the chi-squared Wald test, which over-rejects with few effective clusters;
``pretrend_test(method="wild"|"score")`` bootstraps it with all leads = 0 imposed. CR3, wild and
score bootstraps and randomization inference for every event-time term come from
:func:`stopdisparity.models.inference.apply_inference` (attached with
:meth:`EventStudyResult.with_inference`).

References
----------
Sun, L. & Abraham, S. (2021). Estimating dynamic treatment effects in event studies with heterogeneous
treatment effects. Journal of Econometrics 225(2), 175-199. https://doi.org/10.1016/j.jeconom.2020.09.006
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
Borusyak, K., Jaravel, X. & Spiess, J. (2024). Revisiting event-study designs: robust and efficient
estimation. Review of Economic Studies 91(6), 3253-3285. https://doi.org/10.1093/restud/rdae007
(binning of end points).
Montiel Olea, J. L. & Plagborg-Møller, M. (2019). Simultaneous confidence bands: theory,
implementation, and an application to SVARs. Journal of Applied Econometrics 34(1), 1-17.
https://doi.org/10.1002/jae.2656
Roth, J. (2022). Pretest with caution: event-study estimates after testing for parallel trends.
American Economic Review: Insights 4(3), 305-322. https://doi.org/10.1257/aeri.20210236
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. 64 Arizona Law Review 463.
For 287(g) timing: ICE, "Delegation of Immigration Authority Section 287(g)" agreement lists, as
imported by :mod:`stopdisparity.policy` (``first_treated``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from stopdisparity.errors import SparseCellWarning, SpecificationError, check_choice
from stopdisparity.models import _event, _fe
from stopdisparity.models._fe import (
    CLUSTER,
    GROUP,
    PERIOD,
    UNIT,
    ClusterSummary,
    Inference,
    Missing,
    SmallSample,
    VcovType,
)
from stopdisparity.models._panel import FIRST_TREATED, covariate_columns, prepare_panel
from stopdisparity.models.did import WEIGHTS, Layout, Weights, _check_inference_covariates
from stopdisparity.results import TidyRow, tidy_frame

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

Estimator = Literal["logit", "linear"]
EventUnit = Literal["year", "quarter", "period"]
PeriodLength = Literal["month", "quarter", "year"]
ESTIMATORS: tuple[Estimator, ...] = ("logit", "linear")
EVENT_UNITS: tuple[EventUnit, ...] = ("year", "quarter", "period")
PERIOD_LENGTHS: tuple[PeriodLength, ...] = ("month", "quarter", "year")
_EVER = "_stopdisparity_ever_treated"
_FT = FIRST_TREATED
_AXIS = {
    "year": "years since adoption",
    "quarter": "quarters since adoption",
    "period": "periods since adoption",
}


@dataclass(frozen=True, eq=False)
class EventStudyResult(_fe.ClusteredResult):
    """A fitted event study (from :func:`fit_event_study`).

    Attributes
    ----------
    estimator
        ``logit`` or ``linear``.
    event_times
        Every event time of the window, in order (the reference included).
    estimated
        The event times with a coefficient (in the order of ``estimates`` and of the covariance).
    estimates, vcov_cr0
        Coefficients of ``estimated`` and their CR0 covariance; CR1 multiplies it by
        ``small_sample.factor``.
    reference, binned
        The omitted event time; the binned end points (empty with ``bin_endpoints=False``).
    n_treated_units, n_treated_stops
        Per event time of the window: treated units and their focal + reference stops in that bin
        (generic panels: trials, or the linear model's weights).
    influence, cluster_labels
        Per-cluster influence (G × p, :math:`s_g H^{-1}`); its cross-product is ``vcov_cr0``.
    sample
        The estimation cells (internal names) with ``first_treated``, ``event_time`` and ``event_bin``
        (null for never-treated units).
    sup_t_draws, seed
        Draws and seed of the sup-t simulation.
    inference
        Bootstrap or randomization inference attached with :meth:`with_inference` (None: analytical).
    layout
        ``race`` (:func:`fit_event_study`) or ``panel`` (:func:`fit_event_study_panel`).
    covariates, covariate_estimates, covariate_influence
        The covariates' column names, coefficients and per-cluster influence (G × k); their tidy rows
        follow the event times'. ``estimates``, ``vcov_cr0`` and the bands cover event times only.
    effective_clusters
        G* of each estimated event time's coefficient (Carter, Schnepel & Steigerwald 2017); the cluster
        summary carries that of the average post-adoption coefficient.
    """

    estimator: Estimator
    estimand: str
    race_pair: tuple[str, str] | None
    columns: Mapping[str, Any]
    event_unit: EventUnit
    months_per_period: int | None
    window: tuple[int, int]
    anticipation: int
    reference: int
    binned: tuple[int, ...]
    event_times: tuple[int, ...]
    estimated: tuple[int, ...]
    estimates: np.ndarray
    vcov_cr0: np.ndarray
    vcov_type: VcovType
    small_sample: SmallSample
    n_treated_units: Mapping[int, int]
    n_treated_stops: Mapping[int, int]
    nobs: int
    n_stops: int
    clusters: ClusterSummary
    cluster_labels: tuple[str, ...]
    influence: np.ndarray
    fixed_effects: tuple[str, ...]
    separated_units: tuple[str, ...]
    n_separated_cells: int
    n_empty_cells: int
    n_outside_window: int
    converged: bool
    iterations: int
    sup_t_draws: int
    seed: int
    sample: pl.DataFrame
    lineage: Mapping[str, Any]
    inference: Inference | None = None
    layout: Layout = "race"
    covariates: tuple[str, ...] = ()
    covariate_estimates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    covariate_influence: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    effective_clusters: Mapping[int, float] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------- covariance
    @property
    def vcov(self) -> np.ndarray:
        """Covariance of ``estimates`` under ``vcov_type``."""
        factor = self.small_sample.factor if self.vcov_type == "CR1" else 1.0
        return self.vcov_cr0 * factor

    @property
    def std_errors(self) -> np.ndarray:
        """Cluster-robust SEs of ``estimates`` under ``vcov_type``."""
        return np.sqrt(np.diag(self.vcov))

    @property
    def _df(self) -> int | None:
        return self.clusters.g - 1 if self.estimator == "linear" else None

    @cached_property
    def _max_abs_t(self) -> np.ndarray:
        return _event.sup_t_draws(self.vcov, self.sup_t_draws, self.seed)

    def sup_t_critical(self, alpha: float = 0.05) -> float:
        """The sup-t critical value: the 1 - alpha quantile of the simulated max |t| over event times."""
        if not (0 < alpha < 1):
            raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
        draws = self._max_abs_t
        return float(np.quantile(draws, 1 - alpha)) if np.all(np.isfinite(draws)) else math.nan

    # --------------------------------------------------------------------------------------- tables
    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """One row per event time of the window, ``term`` = ``event:<e>``, then one per covariate.

        DESIGN.md contract. Extra keys: ``event_time``, ``binned`` (an end-point bin), ``reference``
        (the omitted event time: estimate 0, null SE), ``n_treated_units``, ``effective_clusters`` (the
        coefficient's G*, Carter, Schnepel & Steigerwald 2017; null where none), ``n_treated_stops``
        (focal + reference stops of treated units in the bin; ``n_treated_trials`` for a generic
        logit, absent for a generic linear model), ``band_low``, ``band_high`` (sup-t simultaneous
        band at level 1 - alpha: the critical value from the analytical covariance times the attached
        analytical SE, CR2 by default, never narrower than the pointwise interval). An event time
        without cells has null estimate. Terms listed in an attached :class:`Inference` take its
        p-value, interval and label; ``std_error`` stays analytical. Covariate rows carry their
        coefficient, the estimand "covariate coefficient (not a causal effect)" and null extras.
        """
        crit = self.sup_t_critical(alpha)
        index = {e: i for i, e in enumerate(self.estimated)}
        se_all = self.std_errors
        rows = []
        for e in self.event_times:
            term = f"event:{e}"
            extra: dict[str, Any] = {
                "event_time": e,
                "binned": e in self.binned,
                "reference": e == self.reference,
                "n_treated_units": self.n_treated_units.get(e, 0),
                "effective_clusters": self.effective_clusters.get(e),
            }
            if self._size_key is not None:
                extra[self._size_key] = self.n_treated_stops.get(e, 0)
            if e in index:
                est, se = float(self.estimates[index[e]]), float(se_all[index[e]])
                stat, p, lo, hi = _fe.inference_stats(est, se, alpha, self._df)
            else:
                est = 0.0 if e == self.reference else math.nan
                se = stat = p = lo = hi = math.nan
            p, lo, hi, label = self._attached(term, p, lo, hi, alpha)
            extra |= self._band(term, est, se, crit, lo, hi)
            rows.append(
                TidyRow(
                    term,
                    est if math.isfinite(est) else None,
                    se,
                    stat,
                    p,
                    lo,
                    hi,
                    self.nobs,
                    self.clusters.g,
                    f"event-study-{self.estimator}",
                    self.estimand,
                    label,
                    extra,
                )
            )
        factor = self.small_sample.factor if self.vcov_type == "CR1" else 1.0
        for j, name in enumerate(self.covariates):
            est = float(self.covariate_estimates[j])
            se = math.sqrt(float(np.sum(self.covariate_influence[:, j] ** 2)) * factor)
            stat, p, lo, hi = _fe.inference_stats(est, se, alpha, self._df)
            p, lo, hi, label = self._attached(name, p, lo, hi, alpha)
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
                    f"event-study-{self.estimator}",
                    "covariate coefficient (not a causal effect)",
                    label,
                )
            )
        return tidy_frame(rows)

    @property
    def _size_key(self) -> str | None:
        """The tidy key of the treated size per bin: stops (race layout), trials (generic logit)."""
        if self.layout == "race":
            return "n_treated_stops"
        return "n_treated_trials" if self.estimator == "logit" else None

    def _band(self, term: str, est: float, se: float, crit: float, lo: float, hi: float) -> dict[str, float]:
        """The sup-t band of ``term``: ``crit`` times the attached analytical SE (CR2) or ``se``.

        ``crit`` comes from the analytical covariance. Under an attached analytical inference the band
        is widened to its pointwise interval where that is wider (a small-df t quantile can exceed
        ``crit``); under resampling the band stays the analytical one.
        """
        if self.inference is None or term not in self.inference.t_reference:
            return {"band_low": est - crit * se, "band_high": est + crit * se}  # analytical
        se = self.inference.t_reference[term][1]
        low, high = est - crit * se, est + crit * se
        if math.isfinite(lo) and math.isfinite(hi):
            low, high = min(low, lo), max(high, hi)
        return {"band_low": low, "band_high": high}

    def _attached(
        self, term: str, p: float, lo: float, hi: float, alpha: float
    ) -> tuple[float, float, float, str]:
        """p-value, interval and label of ``term``: from the attached inference when it lists the term."""
        analytical = f"{self.vcov_type} by {self.columns['cluster']} ({self.clusters.g} clusters)"
        return _fe.attached(self.inference, term, p, lo, hi, analytical, alpha)

    def with_inference(self, inference: Inference) -> EventStudyResult:
        """A copy whose ``tidy()`` takes p-values, intervals and label from ``inference``.

        Mirrors :meth:`stopdisparity.models.did.DidResult.with_inference`: the terms ``inference``
        lists (``event:<e>``, or covariate names) get its p-value, interval (NaN when it gives none)
        and label in ``tidy()``; the other terms keep their analytical inference; ``std_error``,
        ``estimates``, the covariance and the sup-t bands are unchanged (DESIGN.md, Results).

        Parameters
        ----------
        inference
            The p-values (and intervals) per term and the label.

        Returns
        -------
        EventStudyResult
            A frozen copy; this result is not modified.

        Raises
        ------
        SpecificationError
            When ``inference`` names a term the table does not have, or the result has covariates
            that ``inference.covariates`` does not list.
        """
        terms = {f"event:{e}" for e in self.estimated} | set(self.covariates)
        unknown = sorted(set(inference.p_value) - terms)
        if unknown:
            raise SpecificationError(
                f"inference names term(s) {unknown} that have no estimate; estimated terms: "
                f"{[f'event:{e}' for e in self.estimated] + list(self.covariates)}"
            )
        _check_inference_covariates(self.covariates, inference)
        return dataclasses.replace(self, inference=inference)

    # ----------------------------------------------------------------------------------- pre-trends
    @property
    def leads(self) -> tuple[int, ...]:
        """Event times in the pre-test: before ``-anticipation``, estimated, not the reference or a bin."""
        return tuple(
            e
            for e in self.estimated
            if e < -self.anticipation and e != self.reference and e not in self.binned
        )

    def pretrend_test(
        self,
        alpha: float = 0.05,
        slope: float | None = None,
        *,
        method: Literal["wald", "cr2", "score", "wild"] | None = None,
        draws: int = 999,
        seed: int | None = None,
    ) -> dict[str, Any]:
        r"""Joint Wald test of the leads and its power against a linear pre-trend (Roth 2022).

        The statistic :math:`\hat\beta_L'\hat V_L^{-1}\hat\beta_L` over the leads ``L`` (see
        :attr:`leads`; the binned far lead is excluded because it pools all earlier years) is compared
        with :math:`\chi^2_{|L|}`. Its power against the linear violation
        :math:`\beta_e = \delta\,(e - r)` (zero at the reference ``r``) is that of a noncentral
        :math:`\chi^2_{|L|}(\delta^2 a'\hat V_L^{-1}a)`, :math:`a_e = e - r`; the result gives the slopes
        :math:`\delta` per event-time unit at which the test has 50% and 80% power, and the power at
        ``slope`` when given. A pre-test with low power at plausible slopes says little (Roth 2022).

        Parameters
        ----------
        alpha
            Level of the test.
        slope
            A slope (per event-time unit, on the estimate's scale) at which to report the power.
        method
            None (default): ``cr2`` when CR2 is attached (the fit's default), else ``wald``.
            ``wald``: the statistic against
            :math:`\chi^2_{|L|}`; ``cr2``: the Wald statistic
            with the CR2 covariance against the HTZ reference :math:`\frac{\eta q}{\eta-q+1}F(q,
            \eta-q+1)` (Pustejovsky & Tipton 2018; :func:`stopdisparity.models.inference.pretrend_cr2`),
            which keeps its size where the CR1 Wald does not; or a bootstrap with all
            leads = 0 imposed (:func:`stopdisparity.models.inference.pretrend_bootstrap`): ``wild``
            (linear; the Wald statistic) or ``score`` (logit; the score statistic, Kline & Santos
            2012). With few effective clusters the chi-squared reference over-rejects; the HTZ or
            bootstrap p-value replaces it (``statistic`` is then the HTZ F or the bootstrapped one;
            the power figures stay those of the CR1 Wald test).
        draws, seed
            Bootstrap draws (Rademacher weights; all 2^G sign vectors when G ≤ 12) and their seed.

        Returns
        -------
        dict
            leads, statistic, df, p_value, reject, slope_power_50, slope_power_80, slope,
            power_at_slope, alpha, reference, vcov_type, method.
        """
        if not (0 < alpha < 1):
            raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
        if method is None:  # a resampled pre-test is asked for by name (its draws and seed)
            cr2 = self.inference is not None and self.inference.method == "cr2"
            method = "cr2" if cr2 else "wald"
        check_choice("method", method, ("wald", "cr2", "score", "wild"))
        idx = [self.estimated.index(e) for e in self.leads]
        b = self.estimates[idx]
        v = self.vcov[np.ix_(idx, idx)]
        a = np.array([e - self.reference for e in self.leads], dtype=float)
        stat, k, p = _event.wald(b, v)
        ok = k > 0
        if method == "cr2":
            from stopdisparity.models.inference import pretrend_cr2

            htz = pretrend_cr2(self) if ok else None
            stat, p = (htz.f, htz.p_value) if htz is not None else (math.nan, math.nan)
        elif method != "wald":
            from stopdisparity.models.inference import pretrend_bootstrap

            boot = pretrend_bootstrap(self, method=method, draws=draws, seed=seed)
            stat, p = boot.statistic, boot.p_value
        return {
            "leads": list(self.leads),
            "statistic": stat,
            "df": k,
            "p_value": p,
            "reject": bool(ok and p < alpha),
            "slope_power_50": _event.slope_for_power(a, v, 0.5, alpha) if ok else math.nan,
            "slope_power_80": _event.slope_for_power(a, v, 0.8, alpha) if ok else math.nan,
            "slope": slope,
            "power_at_slope": _event.trend_power(a, v, slope, alpha) if ok and slope is not None else None,
            "alpha": alpha,
            "reference": self.reference,
            "vcov_type": self.vcov_type,
            "method": method,
        }

    # ----------------------------------------------------------------------------------------- plot
    def plot(self, alpha: float = 0.05) -> Figure:
        """Plot the event study; every plotted number comes from :meth:`tidy` at the same ``alpha``.

        Artists (``gid``): ``band`` (sup-t simultaneous band, wide light bars), ``ci`` (pointwise
        intervals), ``estimate`` (points), ``binned`` (end-point bins, diamonds), ``reference`` (the
        omitted event time at 0, hollow), ``zero`` (horizontal line at 0), ``adoption`` (dashed line
        before event time 0).

        Returns
        -------
        matplotlib.figure.Figure
        """
        from matplotlib.figure import Figure  # lazily: the ingest path never imports matplotlib

        t = self.tidy(alpha).filter(pl.col("estimate").is_not_null())
        est = t.filter(~pl.col("reference"))
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
        x = est.get_column("event_time").to_numpy()
        ax.vlines(
            x,
            est.get_column("band_low").to_numpy(),
            est.get_column("band_high").to_numpy(),
            colors="tab:blue",
            alpha=0.25,
            linewidth=7,
            label=f"{1 - alpha:.0%} sup-t band",
            gid="band",
        )
        ax.vlines(
            x,
            est.get_column("ci_low").to_numpy(),
            est.get_column("ci_high").to_numpy(),
            colors="tab:blue",
            linewidth=1.5,
            label=f"{1 - alpha:.0%} pointwise CI",
            gid="ci",
        )
        plain = est.filter(~pl.col("binned"))
        ax.scatter(
            plain.get_column("event_time").to_numpy(),
            plain.get_column("estimate").to_numpy(),
            color="tab:blue",
            zorder=3,
            label="estimate",
            gid="estimate",
        )
        binned = est.filter(pl.col("binned"))
        ax.scatter(
            binned.get_column("event_time").to_numpy(),
            binned.get_column("estimate").to_numpy(),
            marker="D",
            facecolors="white",
            edgecolors="tab:blue",
            zorder=3,
            label="binned end point",
            gid="binned",
        )
        ref = t.filter(pl.col("reference"))
        ax.scatter(
            ref.get_column("event_time").to_numpy(),
            ref.get_column("estimate").to_numpy(),
            marker="o",
            facecolors="white",
            edgecolors="black",
            zorder=3,
            label=f"reference ({self.reference})",
            gid="reference",
        )
        ax.axhline(0.0, color="grey", linewidth=0.8, gid="zero")
        ax.axvline(-0.5 - self.anticipation, color="grey", linestyle="--", linewidth=0.8, gid="adoption")
        lo = self.window[0]
        ticks = list(self.event_times)
        names = [(f"≤{e}" if e == lo else f"≥{e}") if e in self.binned else str(e) for e in ticks]
        ax.set_xticks(ticks, names)
        if self.race_pair is None:
            outcome = str(self.columns["outcome"])
            ylab = f"log odds of {outcome}" if self.estimator == "logit" else outcome
        elif self.estimator == "logit":
            ylab = f"log odds, {self.race_pair[0]} vs {self.race_pair[1]} stops"
        else:
            ylab = f"{self.race_pair[0]} share of {self.race_pair[0]}+{self.race_pair[1]} stops"
        ax.set_ylabel(f"{ylab} (relative to {self.reference})")
        ax.set_xlabel(_AXIS[self.event_unit])
        ax.legend(fontsize="small", frameon=False)
        fig.tight_layout()
        return fig


def months_per_period(data: pl.DataFrame, unit: str, period: str, period_length: str | None) -> int | None:
    """Months per panel period: given, or inferred from a ``period_start`` date column."""
    if period_length is not None:
        check_choice("period_length", period_length, PERIOD_LENGTHS)
        return _event.MONTHS[period_length]
    if "period_start" not in data.columns or not data.schema["period_start"].is_temporal():
        return None
    steps = (
        data.select(unit, period, "period_start")
        .unique([unit, period])
        .sort(unit, period)
        .with_columns(
            months=pl.col("period_start").dt.year() * 12 + pl.col("period_start").dt.month(),
        )
        .with_columns(
            dm=pl.col("months").diff().over(unit),
            dp=pl.col(period).diff().over(unit),
        )
        .filter(pl.col("dp").is_not_null() & (pl.col("dp") != 0))
        .select((pl.col("dm") / pl.col("dp")).alias("k"))
        .get_column("k")
        .unique()
        .to_list()
    )
    if len(steps) != 1 or steps[0] not in (1.0, 3.0, 12.0):
        raise SpecificationError(
            f"cannot infer the period length from period_start (months per period {sorted(steps)[:5]}); "
            f"pass period_length as one of {list(PERIOD_LENGTHS)}"
        )
    return int(steps[0])


def _check_window(window: object, anticipation: object) -> tuple[tuple[int, int], int, int]:
    if (
        not isinstance(window, tuple | list)
        or len(window) != 2
        or not all(isinstance(w, int) and not isinstance(w, bool) for w in window)
        or not window[0] < 0 <= window[1]
    ):
        raise SpecificationError(f"window must be two integers (lo, hi) with lo < 0 <= hi; got {window!r}")
    if not isinstance(anticipation, int) or isinstance(anticipation, bool) or anticipation < 0:
        raise SpecificationError(f"anticipation must be an integer >= 0; got {anticipation!r}")
    lo, hi = int(window[0]), int(window[1])
    ref = -1 - anticipation
    if not lo < ref:
        raise SpecificationError(
            f"the reference event time -1 - anticipation = {ref} must lie above the window's lower end "
            f"{lo}; got window={window!r}, anticipation={anticipation}"
        )
    return (lo, hi), anticipation, ref


def fit_event_study(
    data: pl.DataFrame,
    *,
    estimator: Estimator = "logit",
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    first_treated: str = "first_treated",
    group: str | None = "state",
    event_unit: EventUnit = "year",
    period_length: PeriodLength | None = None,
    window: tuple[int, int] = (-4, 5),
    bin_endpoints: bool = True,
    anticipation: int = 0,
    weights: Weights = "stops",
    cluster: str = "county_fips",
    missing: Missing = "raise",
    vcov: VcovType = "CR1",
    inference: _fe.DefaultInference = _fe.DEFAULT_INFERENCE,
    sup_t_draws: int = 10_000,
    seed: int = 0,
    race: str = "race",
    stops: str = "stops",
) -> EventStudyResult:
    """Event study of the focal race's share of stops around each unit's adoption.

    Parameters
    ----------
    data
        Long panel, one row per unit × period × race with stop counts (``Panel.frame``; a
        :func:`stopdisparity.synth.cells` frame filtered to one agency).
    estimator
        ``logit`` (binomial GLM on cells, the headline's form) or ``linear`` (WLS of the share).
    race_pair
        (focal, reference).
    unit, period, first_treated
        Columns: unit of the unit effects; integer panel period; adoption period in the same index
        (0 or null = never treated; constant within a unit).
    group
        Column whose levels get their own period effects (as :func:`~stopdisparity.models.did.fit_did`).
    event_unit
        ``year`` (default), ``quarter`` or ``period``: the unit of event time. Years and quarters are
        computed from the period length, e.g. ``floor((period - first_treated) / 12)`` for months.
    period_length
        ``month``, ``quarter`` or ``year`` per panel period; default: inferred from a ``period_start``
        date column (needed unless ``event_unit="period"``).
    window
        (lo, hi) event times, lo < 0 <= hi.
    bin_endpoints
        True: event times ≤ lo enter the lo dummy and ≥ hi the hi dummy (marked ``binned``); False:
        treated cells outside the window are dropped.
    anticipation
        Event-time units before adoption in which behaviour may already change; the reference event
        time is ``-1 - anticipation`` (the panel keeps ``first_treated`` at the real adoption).
    weights
        ``linear`` only, as in :func:`~stopdisparity.models.did.fit_did`.
    cluster, missing, vcov, inference, race, stops
        As in :func:`~stopdisparity.models.did.fit_did` (``inference="cr2"``, the default, covers every
        event-time term; the pre-test then uses the CR2 covariance, see :meth:`pretrend_test`).
    sup_t_draws, seed
        Draws and seed of the sup-t band's simulation.

    Returns
    -------
    EventStudyResult

    Raises
    ------
    SpecificationError
        For unknown options, a bad window or anticipation, missing columns, a ``first_treated`` that
        varies within a unit, or no treated cells in the window.

    Warns
    -----
    FewClustersWarning, SparseCellWarning, DroppedRowsWarning
        As :func:`~stopdisparity.models.did.fit_did`; also SparseCellWarning for window event times
        without any treated cell (no coefficient; null rows in ``tidy()``).

    Examples
    --------
    >>> import polars as pl
    >>> from stopdisparity.models.event_study import fit_event_study
    >>> from stopdisparity.synth import SynthSpec, cells
    >>> frame = cells(SynthSpec(design="random", n_treated=20, states=("SC",)), seed=3,
    ...               period="quarter", rows=400_000).filter(pl.col("agency") == "state_patrol")
    >>> res = fit_event_study(frame)
    >>> res.tidy().get_column("term").to_list()[:3]
    ['event:-4', 'event:-3', 'event:-2']
    """
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("weights", weights, WEIGHTS)
    if estimator == "logit" and weights != "stops":
        raise SpecificationError(f"weights applies to estimator='linear' only; got weights={weights!r}")
    options = _check_options(
        event_unit, vcov, bin_endpoints, sup_t_draws, window, anticipation, seed, inference=inference
    )
    if not isinstance(data, pl.DataFrame):
        raise SpecificationError(f"data must be a polars DataFrame; got {type(data).__name__}")
    for role, name in (("first_treated", first_treated), ("unit", unit), ("period", period)):
        if not isinstance(name, str) or name not in data.columns:
            raise SpecificationError(f"{role} column {name!r} not in data; it has {data.columns}")
    if not data.schema[first_treated].is_integer():
        raise SpecificationError(
            f"first_treated column {first_treated!r} must be integer periods; "
            f"got {data.schema[first_treated]}"
        )
    k_months = months_per_period(data, unit, period, period_length)
    if event_unit != "period" and k_months is None:
        raise SpecificationError(
            f"event_unit={event_unit!r} needs the period length: pass period_length (one of "
            f"{list(PERIOD_LENGTHS)}) or a period_start date column, or use event_unit='period'"
        )
    ft_by_unit = data.group_by(unit).agg(pl.col(first_treated).fill_null(0).n_unique().alias("k"))
    if ft_by_unit.filter(pl.col("k") > 1).height:
        bad = ft_by_unit.filter(pl.col("k") > 1).get_column(unit).to_list()[:5]
        raise SpecificationError(f"first_treated must be constant within each {unit}; it varies for {bad}")
    work = data.with_columns(
        (pl.col(first_treated).fill_null(0) != 0).cast(pl.Int8).alias(_EVER),
    )
    cells = _fe.prepare_cells(
        work,
        race_pair=race_pair,
        unit=unit,
        period=period,
        treatment=_EVER,
        group=group,
        cluster=cluster,
        race=race,
        stops=stops,
        missing=missing,
        stacklevel=3,
    )
    focal, reference = cells.race_pair
    ft = work.select(pl.col(unit).alias(UNIT), pl.col(first_treated).fill_null(0).alias(_FT)).unique(UNIT)
    pairs = _fe.pair_cells(cells).join(ft, on=UNIT, how="left")
    scale = "log odds" if estimator == "logit" else "share"
    return _fit_event_cells(
        pairs,
        estimator=estimator,
        weights=weights,
        multi_group=cells.multi_group,
        columns={**cells.columns, "first_treated": first_treated},
        k_months=k_months,
        outcome_text=f"the {scale} that a {focal}-or-{reference} stop is {focal}",
        scale=scale,
        separation_text=f"no {focal} or no {reference} stops",
        layout="race",
        race_pair=(focal, reference),
        n_input_rows=cells.n_input_rows,
        lineage={
            "function": "stopdisparity.models.event_study.fit_event_study",
            "input_columns": list(data.columns),
            "columns": {**cells.columns, "first_treated": first_treated, "treatment": None},
            "options": {
                "estimator": estimator,
                "race_pair": [focal, reference],
                "event_unit": event_unit,
                "months_per_period": k_months,
                "window": list(options.window),
                "bin_endpoints": bin_endpoints,
                "anticipation": anticipation,
                "reference": options.reference,
                "weights": weights if estimator == "linear" else None,
                "missing": missing,
                "vcov": vcov,
                "inference": inference,
                "sup_t_draws": sup_t_draws,
                "seed": seed,
                "group_effects": cells.multi_group,
            },
        },
        options=options,
        stacklevel=4,
    )


@dataclass(frozen=True, slots=True)
class _Options:
    """Validated options shared by :func:`fit_event_study` and :func:`fit_event_study_panel`."""

    event_unit: EventUnit
    vcov: VcovType
    bin_endpoints: bool
    sup_t_draws: int
    seed: int
    window: tuple[int, int]
    anticipation: int
    reference: int
    inference: _fe.DefaultInference


def _check_options(
    event_unit: object,
    vcov: object,
    bin_endpoints: object,
    sup_t_draws: object,
    window: object,
    anticipation: object,
    seed: int = 0,
    *,
    inference: object,
) -> _Options:
    check_choice("event_unit", event_unit, EVENT_UNITS)
    check_choice("vcov", vcov, _fe.VCOV_TYPES)
    check_choice("inference", inference, _fe.DEFAULT_INFERENCES)
    if not isinstance(bin_endpoints, bool):
        raise SpecificationError(f"bin_endpoints must be True or False; got {bin_endpoints!r}")
    if not isinstance(sup_t_draws, int) or sup_t_draws < 100:
        raise SpecificationError(f"sup_t_draws must be an integer >= 100; got {sup_t_draws!r}")
    (lo, hi), ant, ref = _check_window(window, anticipation)
    return _Options(
        event_unit,  # type: ignore[arg-type]
        vcov,  # type: ignore[arg-type]
        bin_endpoints,
        sup_t_draws,
        seed,
        (lo, hi),
        ant,
        ref,
        inference,  # type: ignore[arg-type]
    )


def _fit_event_cells(
    pairs: pl.DataFrame,
    *,
    estimator: Estimator,
    weights: Weights,
    multi_group: bool,
    columns: Mapping[str, Any],
    k_months: int | None,
    outcome_text: str,
    scale: str,
    separation_text: str,
    layout: Layout,
    race_pair: tuple[str, str] | None,
    n_input_rows: int,
    lineage: Mapping[str, Any],
    options: _Options,
    stacklevel: int,
) -> EventStudyResult:
    """The one estimation path of both event-study entry points, from cells to a result.

    ``pairs`` holds one row per unit × period: unit, period, group, cluster, focal, reference, n,
    ``_first_treated`` and the covariates ``_x0``, ... named in ``columns["covariates"]``.
    """
    lo, hi = options.window
    ref = options.reference
    event_unit = options.event_unit
    sup_t_draws, seed, vcov = options.sup_t_draws, options.seed, options.vcov
    unit, period, group, cluster = (columns[k] for k in ("unit", "period", "group", "cluster"))
    empty = pairs.filter(pl.col("n") <= 0).height
    pairs = pairs.filter(pl.col("n") > 0)

    rel = (pairs.get_column(PERIOD).cast(pl.Int64) - pairs.get_column(_FT).cast(pl.Int64)).to_numpy()
    ever = pairs.get_column(_FT).to_numpy() != 0
    e_time = _event.event_time(rel, months_per_period=k_months or 1, event_unit=event_unit)
    e_bin = np.clip(e_time, lo, hi) if options.bin_endpoints else e_time
    inside = (
        ~ever | ((e_time >= lo) & (e_time <= hi)) if not options.bin_endpoints else np.ones(len(rel), bool)
    )
    pairs = pairs.with_columns(
        pl.Series("event_time", np.where(ever, e_time, 0)),
        pl.Series("event_bin", np.where(ever, e_bin, 0)),
    ).with_columns(
        pl.when(pl.col(_FT) != 0).then(pl.col("event_time")).alias("event_time"),
        pl.when(pl.col(_FT) != 0).then(pl.col("event_bin")).alias("event_bin"),
    )
    n_outside = int((~inside).sum())
    pairs = pairs.filter(pl.Series(inside)).with_columns(_fe.gp_expr(multi_group))

    separated: list[Any] = []
    n_sep = 0
    if estimator == "logit":
        before = pairs.height
        pairs, dropped = _fe.drop_separated(pairs, [UNIT, _fe.GP], ["focal", "reference"])
        separated = dropped[UNIT]
        n_sep = before - pairs.height
        if n_sep:
            warnings.warn(
                f"{len(separated)} {unit} value(s) with {separation_text} are perfectly "
                f"separated in the logit and were dropped ({n_sep} cells): "
                f"{[str(u) for u in separated][:20]}",
                SparseCellWarning,
                stacklevel=stacklevel - 1,
            )
    if pairs.height == 0:
        raise SpecificationError("no cells left to fit after dropping empty and separated cells")
    pairs = pairs.drop(_fe.GP)

    event_times = tuple(range(lo, hi + 1))
    binned = (lo, hi) if options.bin_endpoints else ()
    treated_rows = pairs.filter(pl.col("event_bin").is_not_null())
    counts = treated_rows.group_by("event_bin").agg(
        pl.col(UNIT).n_unique().alias("units"), pl.col("n").sum().alias("stops")
    )
    n_units = {int(r["event_bin"]): int(r["units"]) for r in counts.iter_rows(named=True)}
    n_st = {int(r["event_bin"]): round(float(r["stops"])) for r in counts.iter_rows(named=True)}
    estimated = tuple(e for e in event_times if e != ref and n_units.get(e, 0) > 0)
    missing_e = [e for e in event_times if e != ref and e not in estimated]
    if not estimated:
        raise SpecificationError(f"no treated cells in the window {options.window!r}: nothing to estimate")
    if missing_e:
        warnings.warn(
            f"event time(s) {missing_e} have no treated cells in the sample and get no coefficient",
            SparseCellWarning,
            stacklevel=stacklevel - 1,
        )
    if ref not in n_units:
        warnings.warn(
            f"the reference event time {ref} has no treated cells: the coefficients are identified only "
            "against the never-treated and other event times",
            SparseCellWarning,
            stacklevel=stacklevel - 1,
        )

    covariates = tuple(columns.get("covariates") or ())
    xcols = covariate_columns(columns)
    eb = pairs.get_column("event_bin").fill_null(ref - 10**6).to_numpy()
    X = np.column_stack(
        [*[(eb == e).astype(float) for e in estimated], *[pairs.get_column(c).to_numpy() for c in xcols]]
    )
    x_names = (*[f"event:{e}" for e in estimated], *covariates) if covariates else None
    m = len(estimated)
    unit_s = pairs.get_column(UNIT)
    unit_codes = _fe.codes_of(unit_s)
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
    n = pairs.get_column("n").to_numpy()
    y = pairs.get_column("focal").to_numpy() / n
    if estimator == "logit":
        fit = _fe.fit_glm(y, X, projector, family="binomial", prior=n, names=x_names)
        n_ssc, n_label = round(float(n.sum())), "stops (Bernoulli trials)"
    else:
        if weights == "stops":
            w = n
        elif weights == "county":
            w = n / np.bincount(unit_codes, weights=n)[unit_codes]
        else:
            w = np.ones_like(n)
        fit = _fe.fit_glm(y, X, projector, family="gaussian", prior=w, names=x_names)
        n_ssc, n_label = pairs.height, "cells"
    influence_all = _fe.cluster_influence(fit, cluster_codes, g)
    influence = influence_all[:, :m]
    gp_name = f"{group}×{period}" if multi_group else str(period)
    fe_names = (str(unit), gp_name)
    small = SmallSample(
        n=n_ssc,
        n_coef=X.shape[1],
        fe_names=fe_names,
        fe_levels=projector.levels,
        fe_nested=tuple(_fe.nested_in(c, cluster_codes) for c in (unit_codes, gp_codes)),
        g=g,
        n_label=n_label,
    )
    post = pairs.get_column("event_bin").fill_null(-1).to_numpy() >= 0
    unit_vectors = np.eye(X.shape[1])
    effective = {
        e: _fe.effective_clusters(_fe.cluster_information(fit, cluster_codes, g, unit_vectors[j]))
        for j, e in enumerate(estimated)
    }
    # the summary's (and the warning's) G* is that of the average post-adoption coefficient
    average_post = np.array([float(j < m and estimated[j] >= 0) for j in range(X.shape[1])])
    clusters = _fe.summarize_clusters(
        str(cluster),
        cluster_labels,
        cluster_codes,
        post.astype(float),
        n,
        _fe.cluster_information(fit, cluster_codes, g, average_post) if average_post.any() else None,
        effective_label="average-post G*",
    )
    _fe.warn_few_clusters(clusters, stacklevel=stacklevel, inference=options.inference)

    unit_word = {"year": "year", "quarter": "quarter", "period": "period"}[event_unit]
    adjusted = f", adjusting for {list(covariates)}" if covariates else ""
    estimand = (
        f"TWFE event-study coefficient: effect on {outcome_text}, "
        f"{unit_word}s since adoption relative to event time {ref}, never-treated units as "
        f"controls{adjusted}; unbiased under parallel trends on the {scale} scale and effects that vary by "
        "event time only (may be contaminated by other event times when effects differ across cohorts; "
        "Sun & Abraham 2021)"
    )
    sample = pairs.rename({_FT: "first_treated"}).with_columns(
        pl.Series("weight", fit.weights), pl.Series("fitted", fit.mu), pl.Series("eta", fit.eta)
    )
    full_lineage = {
        "function": lineage["function"],
        "input_columns": lineage["input_columns"],
        "input_rows": n_input_rows,
        "columns": lineage["columns"],
        "options": lineage["options"],
        "fixed_effects": list(fe_names),
        "engine": "IRLS with exact fixed-effect projection (stopdisparity.models._fe); statsmodels families",
        "versions": _fe.package_versions(),
    }
    result = EventStudyResult(
        estimator=estimator,
        estimand=estimand,
        race_pair=race_pair,
        columns=dict(columns),
        event_unit=event_unit,
        months_per_period=k_months,
        window=(lo, hi),
        anticipation=options.anticipation,
        reference=ref,
        binned=binned,
        event_times=event_times,
        estimated=estimated,
        estimates=np.asarray(fit.beta[:m], dtype=float),
        vcov_cr0=influence.T @ influence,
        vcov_type=vcov,
        small_sample=small,
        n_treated_units=n_units,
        n_treated_stops=n_st,
        nobs=pairs.height,
        n_stops=round(float(n.sum())),
        clusters=clusters,
        effective_clusters=effective,
        cluster_labels=cluster_labels,
        influence=influence,
        fixed_effects=fe_names,
        separated_units=tuple(str(u) for u in separated),
        n_separated_cells=n_sep,
        n_empty_cells=empty,
        n_outside_window=n_outside,
        converged=fit.converged,
        iterations=fit.iterations,
        sup_t_draws=sup_t_draws,
        seed=seed,
        sample=sample,
        lineage=full_lineage,
        layout=layout,
        covariates=covariates,
        covariate_estimates=np.asarray(fit.beta[m:], dtype=float),
        covariate_influence=influence_all[:, m:],
    )
    return _fe.with_default_inference(result, options.inference, stacklevel)


def fit_event_study_panel(
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
    event_unit: EventUnit = "period",
    period_length: PeriodLength | None = None,
    window: tuple[int, int] = (-4, 5),
    bin_endpoints: bool = True,
    anticipation: int = 0,
    missing: Missing = "raise",
    vcov: VcovType = "CR1",
    inference: _fe.DefaultInference = _fe.DEFAULT_INFERENCE,
    sup_t_draws: int = 10_000,
    seed: int = 0,
) -> EventStudyResult:
    """Event study on any unit × period panel, around each unit's ``gname``.

    The generic form of :func:`fit_event_study`, with the arguments of
    :func:`~stopdisparity.models.did.fit_did_panel`; both run the same estimation code (the race
    layout is the logit with successes = focal stops and trials = focal + reference stops).

    Parameters
    ----------
    data
        One row per ``idname`` × ``tname``. Column names may be any string.
    yname, idname, tname, gname, trials, weights, xnames, cluster, group, missing, vcov, inference
        As :func:`~stopdisparity.models.did.fit_did_panel` (``gname`` 0 or null = never treated).
    estimator
        ``logit`` (needs ``trials``) or ``linear``; default: the logit when ``trials`` is given.
    event_unit
        ``period`` (default: event time in panel periods, ``tname - gname``), or ``year`` /
        ``quarter`` with ``period_length``.
    period_length
        ``month``, ``quarter`` or ``year`` per panel period (needed unless ``event_unit="period"``).
    window, bin_endpoints, anticipation, sup_t_draws, seed
        As :func:`fit_event_study`.

    Returns
    -------
    EventStudyResult
        ``layout="panel"``; ``tidy()`` has the event-time rows, then the covariates.

    Raises
    ------
    SpecificationError
        As :func:`~stopdisparity.models.did.fit_did_panel`, and for a bad window, anticipation or
        event unit, or no treated cells in the window.

    Warns
    -----
    FewClustersWarning, SparseCellWarning, DroppedRowsWarning
        As :func:`fit_event_study`.

    Examples
    --------
    >>> import polars as pl
    >>> from stopdisparity.models.event_study import fit_event_study_panel
    >>> panel = pl.DataFrame({
    ...     "id": [u for u in range(10) for _ in range(8)],
    ...     "t": [t for _ in range(10) for t in range(8)],
    ...     "g": [3 + u % 3 if u < 6 else 0 for u in range(10) for _ in range(8)],
    ...     "y": [0.1 * u + 0.05 * t + 0.01 * ((u * t) % 5) for u in range(10) for t in range(8)],
    ... })
    >>> res = fit_event_study_panel(panel, yname="y", idname="id", tname="t", gname="g",
    ...                             window=(-3, 3))
    >>> res.tidy().get_column("term").to_list()[:3]
    ['event:-3', 'event:-2', 'event:-1']
    """
    if estimator is None:
        estimator = "logit" if trials is not None else "linear"
    check_choice("estimator", estimator, ESTIMATORS)
    options = _check_options(
        event_unit, vcov, bin_endpoints, sup_t_draws, window, anticipation, seed, inference=inference
    )
    k_months = None
    if period_length is not None:
        check_choice("period_length", period_length, PERIOD_LENGTHS)
        k_months = _event.MONTHS[period_length]
    if event_unit != "period" and k_months is None:
        raise SpecificationError(
            f"event_unit={event_unit!r} needs period_length (one of {list(PERIOD_LENGTHS)}); or use "
            "event_unit='period'"
        )
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
        binomial=estimator == "logit",
        reserved_terms=tuple(f"event:{e}" for e in range(options.window[0], options.window[1] + 1)),
        stacklevel=3,
    )
    if estimator == "logit":
        outcome_text, scale = f"the log odds of {yname!r} successes out of {trials!r} trials", "log odds"
    elif trials is not None:
        outcome_text, scale = f"the share {yname!r}/{trials!r}", "level"
    else:
        outcome_text, scale = repr(yname), "level"
    cols = prepared.columns
    return _fit_event_cells(
        prepared.frame,
        estimator=estimator,
        weights="stops",
        multi_group=prepared.multi_group,
        columns=cols,
        k_months=k_months,
        outcome_text=outcome_text,
        scale=scale,
        separation_text=f"no successes or no failures of {yname!r}",
        layout="panel",
        race_pair=None,
        n_input_rows=prepared.n_input_rows,
        lineage={
            "function": "stopdisparity.models.event_study.fit_event_study_panel",
            "input_columns": list(data.columns),
            "columns": dict(cols),
            "options": {
                "estimator": estimator,
                "event_unit": event_unit,
                "months_per_period": k_months,
                "window": list(options.window),
                "bin_endpoints": bin_endpoints,
                "anticipation": anticipation,
                "reference": options.reference,
                "missing": missing,
                "vcov": vcov,
                "inference": inference,
                "sup_t_draws": sup_t_draws,
                "seed": seed,
                "group_effects": prepared.multi_group,
                "treatment": "absorbing: tname >= gname (gname 0 or null = never treated)",
            },
        },
        options=options,
        stacklevel=4,
    )
