r"""Event study: the race composition of stops by time since a county's adoption.

Users call :func:`fit_event_study`; it returns a frozen :class:`EventStudyResult` whose ``tidy()`` has
one row per event time (DESIGN.md, Results), with :meth:`EventStudyResult.pretrend_test` and
:meth:`EventStudyResult.plot`.

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
CR1 (default) or CR0 cluster-robust sandwiches, with the small-sample factor of
:class:`~stopdisparity.models._fe.SmallSample` (N = stops for the logit, cells for the linear model),
pointwise intervals (normal for the logit, t(G-1) for the linear model, as pyfixest), a sup-t
simultaneous band over the estimated event times (Montiel Olea & Plagborg-Møller 2019; critical value
simulated from :math:`N(0,\hat V)`, seeded), and a joint Wald test (chi-squared) that the leads — event
times before ``-anticipation`` other than the reference and the binned far lead — are zero, with its
power against a linear pre-trend :math:`\delta\,(e - r)` (Roth 2022).

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

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
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
    Missing,
    SmallSample,
    VcovType,
)
from stopdisparity.models.did import WEIGHTS, Weights
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
_FT = "_first_treated"
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
        Per event time of the window: treated units and their focal + reference stops in that bin.
    influence, cluster_labels
        Per-cluster influence (G × p, :math:`s_g H^{-1}`); its cross-product is ``vcov_cr0``.
    sample
        The estimation cells (internal names) with ``first_treated``, ``event_time`` and ``event_bin``
        (null for never-treated units).
    sup_t_draws, seed
        Draws and seed of the sup-t simulation.
    """

    estimator: Estimator
    estimand: str
    race_pair: tuple[str, str]
    columns: Mapping[str, str | None]
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
        """One row per event time of the window, ``term`` = ``event:<e>``, in the DESIGN.md contract.

        Extra keys: ``event_time``, ``binned`` (an end-point bin), ``reference`` (the omitted event
        time: estimate 0, null SE), ``n_treated_units``, ``n_treated_stops`` (focal + reference stops
        of treated units in the bin), ``band_low``, ``band_high`` (sup-t simultaneous band at level
        1 - alpha). An event time without cells has null estimate.
        """
        crit = self.sup_t_critical(alpha)
        index = {e: i for i, e in enumerate(self.estimated)}
        se_all = self.std_errors
        label = f"{self.vcov_type} by {self.columns['cluster']} ({self.clusters.g} clusters)"
        rows = []
        for e in self.event_times:
            extra: dict[str, Any] = {
                "event_time": e,
                "binned": e in self.binned,
                "reference": e == self.reference,
                "n_treated_units": self.n_treated_units.get(e, 0),
                "n_treated_stops": self.n_treated_stops.get(e, 0),
            }
            if e in index:
                est, se = float(self.estimates[index[e]]), float(se_all[index[e]])
                stat, p, lo, hi = _fe.inference_stats(est, se, alpha, self._df)
                extra |= {"band_low": est - crit * se, "band_high": est + crit * se}
            else:
                est = 0.0 if e == self.reference else math.nan
                se = stat = p = lo = hi = math.nan
                extra |= {"band_low": math.nan, "band_high": math.nan}
            rows.append(
                TidyRow(
                    f"event:{e}",
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
        return tidy_frame(rows)

    # ----------------------------------------------------------------------------------- pre-trends
    @property
    def leads(self) -> tuple[int, ...]:
        """Event times in the pre-test: before ``-anticipation``, estimated, not the reference or a bin."""
        return tuple(
            e
            for e in self.estimated
            if e < -self.anticipation and e != self.reference and e not in self.binned
        )

    def pretrend_test(self, alpha: float = 0.05, slope: float | None = None) -> dict[str, Any]:
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

        Returns
        -------
        dict
            leads, statistic, df, p_value, reject, slope_power_50, slope_power_80, slope,
            power_at_slope, alpha, reference, vcov_type.
        """
        if not (0 < alpha < 1):
            raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
        idx = [self.estimated.index(e) for e in self.leads]
        b = self.estimates[idx]
        v = self.vcov[np.ix_(idx, idx)]
        a = np.array([e - self.reference for e in self.leads], dtype=float)
        stat, k, p = _event.wald(b, v)
        ok = k > 0
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
        focal, reference = self.race_pair
        if self.estimator == "logit":
            ylab = f"log odds, {focal} vs {reference} stops"
        else:
            ylab = f"{focal} share of {focal}+{reference} stops"
        ax.set_ylabel(f"{ylab} (relative to {self.reference})")
        ax.set_xlabel(_AXIS[self.event_unit])
        ax.legend(fontsize="small", frameon=False)
        fig.tight_layout()
        return fig


def _months_per_period(data: pl.DataFrame, unit: str, period: str, period_length: str | None) -> int | None:
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
    cluster, missing, vcov, race, stops
        As in :func:`~stopdisparity.models.did.fit_did`.
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
    check_choice("event_unit", event_unit, EVENT_UNITS)
    check_choice("weights", weights, WEIGHTS)
    check_choice("vcov", vcov, _fe.VCOV_TYPES)
    if not isinstance(bin_endpoints, bool):
        raise SpecificationError(f"bin_endpoints must be True or False; got {bin_endpoints!r}")
    if not isinstance(sup_t_draws, int) or sup_t_draws < 100:
        raise SpecificationError(f"sup_t_draws must be an integer >= 100; got {sup_t_draws!r}")
    if estimator == "logit" and weights != "stops":
        raise SpecificationError(f"weights applies to estimator='linear' only; got weights={weights!r}")
    (lo, hi), anticipation, ref = _check_window(window, anticipation)
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
    k_months = _months_per_period(data, unit, period, period_length)
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
    empty = pairs.filter(pl.col("n") <= 0).height
    pairs = pairs.filter(pl.col("n") > 0)

    rel = (pairs.get_column(PERIOD).cast(pl.Int64) - pairs.get_column(_FT).cast(pl.Int64)).to_numpy()
    ever = pairs.get_column(_FT).to_numpy() != 0
    e_time = _event.event_time(rel, months_per_period=k_months or 1, event_unit=event_unit)
    e_bin = np.clip(e_time, lo, hi) if bin_endpoints else e_time
    inside = ~ever | ((e_time >= lo) & (e_time <= hi)) if not bin_endpoints else np.ones(len(rel), bool)
    pairs = pairs.with_columns(
        pl.Series("event_time", np.where(ever, e_time, 0)),
        pl.Series("event_bin", np.where(ever, e_bin, 0)),
    ).with_columns(
        pl.when(pl.col(_FT) != 0).then(pl.col("event_time")).alias("event_time"),
        pl.when(pl.col(_FT) != 0).then(pl.col("event_bin")).alias("event_bin"),
    )
    n_outside = int((~inside).sum())
    pairs = pairs.filter(pl.Series(inside)).with_columns(_fe.gp_expr(cells.multi_group))

    separated: list[Any] = []
    n_sep = 0
    if estimator == "logit":
        before = pairs.height
        pairs, dropped = _fe.drop_separated(pairs, [UNIT, _fe.GP], ["focal", "reference"])
        separated = dropped[UNIT]
        n_sep = before - pairs.height
        if n_sep:
            warnings.warn(
                f"{len(separated)} {unit} value(s) with no {focal} or no {reference} stops are perfectly "
                f"separated in the logit and were dropped ({n_sep} cells): "
                f"{[str(u) for u in separated][:20]}",
                SparseCellWarning,
                stacklevel=2,
            )
    if pairs.height == 0:
        raise SpecificationError("no cells left to fit after dropping empty and separated cells")
    pairs = pairs.drop(_fe.GP)

    event_times = tuple(range(lo, hi + 1))
    binned = (lo, hi) if bin_endpoints else ()
    treated_rows = pairs.filter(pl.col("event_bin").is_not_null())
    counts = treated_rows.group_by("event_bin").agg(
        pl.col(UNIT).n_unique().alias("units"), pl.col("n").sum().alias("stops")
    )
    n_units = {int(r["event_bin"]): int(r["units"]) for r in counts.iter_rows(named=True)}
    n_st = {int(r["event_bin"]): round(float(r["stops"])) for r in counts.iter_rows(named=True)}
    estimated = tuple(e for e in event_times if e != ref and n_units.get(e, 0) > 0)
    missing_e = [e for e in event_times if e != ref and e not in estimated]
    if not estimated:
        raise SpecificationError(f"no treated cells in the window {window!r}: nothing to estimate")
    if missing_e:
        warnings.warn(
            f"event time(s) {missing_e} have no treated cells in the sample and get no coefficient",
            SparseCellWarning,
            stacklevel=2,
        )
    if ref not in n_units:
        warnings.warn(
            f"the reference event time {ref} has no treated cells: the coefficients are identified only "
            "against the never-treated and other event times",
            SparseCellWarning,
            stacklevel=2,
        )

    eb = pairs.get_column("event_bin").fill_null(ref - 10**6).to_numpy()
    X = np.column_stack([(eb == e).astype(float) for e in estimated])
    unit_s = pairs.get_column(UNIT)
    unit_codes = _fe.codes_of(unit_s)
    gp_codes = (
        _fe.codes_of(pairs.get_column(GROUP), pairs.get_column(PERIOD))
        if cells.multi_group
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
        fit = _fe.fit_glm(y, X, projector, family="binomial", prior=n)
        n_ssc, n_label = round(float(n.sum())), "stops (Bernoulli trials)"
    else:
        if weights == "stops":
            w = n
        elif weights == "county":
            w = n / np.bincount(unit_codes, weights=n)[unit_codes]
        else:
            w = np.ones_like(n)
        fit = _fe.fit_glm(y, X, projector, family="gaussian", prior=w)
        n_ssc, n_label = pairs.height, "cells"
    influence = _fe.cluster_influence(fit, cluster_codes, g)
    gp_name = f"{group}×{period}" if cells.multi_group else str(period)
    fe_names = (unit, gp_name)
    small = SmallSample(
        n=n_ssc,
        n_coef=len(estimated),
        fe_names=fe_names,
        fe_levels=projector.levels,
        fe_nested=tuple(_fe.nested_in(c, cluster_codes) for c in (unit_codes, gp_codes)),
        g=g,
        n_label=n_label,
    )
    post = pairs.get_column("event_bin").fill_null(-1).to_numpy() >= 0
    clusters = _fe.summarize_clusters(str(cluster), cluster_labels, cluster_codes, post.astype(float), n)
    _fe.warn_few_clusters(clusters, stacklevel=3)

    unit_word = {"year": "year", "quarter": "quarter", "period": "period"}[event_unit]
    scale = "log odds" if estimator == "logit" else "share"
    estimand = (
        f"TWFE event-study coefficient: effect on the {scale} that a {focal}-or-{reference} stop is "
        f"{focal}, {unit_word}s since adoption relative to event time {ref}, never-treated units as "
        f"controls; unbiased under parallel trends on the {scale} scale and effects that vary by event "
        "time only (may be contaminated by other event times when effects differ across cohorts; Sun & "
        "Abraham 2021)"
    )
    sample = pairs.rename({_FT: "first_treated"}).with_columns(
        pl.Series("weight", fit.weights), pl.Series("fitted", fit.mu), pl.Series("eta", fit.eta)
    )
    lineage = {
        "function": "stopdisparity.models.event_study.fit_event_study",
        "input_columns": list(data.columns),
        "input_rows": cells.n_input_rows,
        "columns": {**cells.columns, "first_treated": first_treated, "treatment": None},
        "options": {
            "estimator": estimator,
            "race_pair": [focal, reference],
            "event_unit": event_unit,
            "months_per_period": k_months,
            "window": [lo, hi],
            "bin_endpoints": bin_endpoints,
            "anticipation": anticipation,
            "reference": ref,
            "weights": weights if estimator == "linear" else None,
            "missing": missing,
            "vcov": vcov,
            "sup_t_draws": sup_t_draws,
            "seed": seed,
            "group_effects": cells.multi_group,
        },
        "fixed_effects": list(fe_names),
        "engine": "IRLS with exact fixed-effect projection (stopdisparity.models._fe); statsmodels families",
        "versions": _fe.package_versions(),
    }
    return EventStudyResult(
        estimator=estimator,
        estimand=estimand,
        race_pair=(focal, reference),
        columns={**cells.columns, "first_treated": first_treated},
        event_unit=event_unit,
        months_per_period=k_months,
        window=(lo, hi),
        anticipation=anticipation,
        reference=ref,
        binned=binned,
        event_times=event_times,
        estimated=estimated,
        estimates=np.asarray(fit.beta, dtype=float),
        vcov_cr0=influence.T @ influence,
        vcov_type=vcov,
        small_sample=small,
        n_treated_units=n_units,
        n_treated_stops=n_st,
        nobs=pairs.height,
        n_stops=round(float(n.sum())),
        clusters=clusters,
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
        lineage=lineage,
    )
