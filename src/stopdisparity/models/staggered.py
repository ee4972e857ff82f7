r"""Staggered adoption done right: one entry point for the heterogeneity-robust estimators (issue 6).

287(g) agreements started between 2006 and 2010 and several ended, so the headline two-way
fixed-effects (TWFE) estimate alone is not defensible: with staggered timing and effects that vary
across cohorts or over time, TWFE averages 2×2 comparisons with weights that can be negative
(Goodman-Bacon 2021; de Chaisemartin & D'Haultfœuille 2020). This module fits, on the same panels as the
headline, the estimators that avoid those comparisons and the diagnostics that show them:

=====================  ======================================================================  =========
``estimator``          what                                                                    module
=====================  ======================================================================  =========
``etwfe``              Wooldridge (2023) extended TWFE logit / Poisson / linear                 ``_etwfe``
``callaway-santanna``  ATT(g,t) and its aggregations (Callaway & Sant'Anna 2021)                ``_cs``
``sun-abraham``        interaction-weighted event study (Sun & Abraham 2021)                    ``_sunab``
``bjs``                imputation estimator (Borusyak, Jaravel & Spiess 2024)                   ``_bjs``
``bacon``              decomposition of the unweighted TWFE into its 2×2s (Goodman-Bacon 2021)  ``_bacon``
``twfe-weights``       weights of the treated cells in TWFE (de Chaisemartin & D'Haultfœuille)  ``_bacon``
=====================  ======================================================================  =========

Two panel forms reach them, as for :func:`stopdisparity.models.did.fit_did_panel`:

- a generic unit × period panel (:func:`fit_staggered`, ``did --panel FILE --outcome COL
  --first-treated COL --estimator ...``), whose treatment is absorbing from ``gname``;
- the race layout of :func:`stopdisparity.panel.build_panel` (:func:`fit_staggered_race`, ``did
  --store DIR --estimator ...``): the focal race's share of the pair's stops per county × period, with
  the county's first adoption as its cohort. Treatment is taken as **absorbing from the first
  adoption** (exits are ignored: the estimand is the effect of having adopted, an intention-to-treat),
  except by ``twfe-weights``, which takes ``in_force`` as it switches on and off.

Cohorts. On a monthly panel every county would be its own cohort, so by default (``cohort="year"``)
the race layout is aggregated to calendar years (stops summed) and a county's cohort is the calendar
year of its first treated period: event time 0 is the adoption year, partly treated. ``cohort="period"``
keeps the panel's own periods. The linear estimators (Callaway–Sant'Anna, Sun–Abraham, BJS, the Bacon
decomposition) model the share in levels and assume parallel trends in levels; ``etwfe`` with the
logit assumes them in log odds, like the headline (Roth & Sant'Anna 2023: the two assumptions differ).
With ``scale="logodds"`` the linear estimators model the empirical log odds of the share instead, so
their parallel-trends assumption is the headline's. The race-layout panel has no state × period
effects: comparisons pool the states' periods.

References
----------
Borusyak, K., Jaravel, X. & Spiess, J. (2024). Revisiting event-study designs: robust and efficient
estimation. Review of Economic Studies 91(6), 3253-3285. https://doi.org/10.1093/restud/rdae007
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
Cox, D. R. (1970). The Analysis of Binary Data. London: Methuen (the empirical logistic transform).
de Chaisemartin, C. & D'Haultfœuille, X. (2020). Two-way fixed effects estimators with heterogeneous
treatment effects. American Economic Review 110(9), 2964-2996. https://doi.org/10.1257/aer.20181169
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
Roth, J. & Sant'Anna, P. H. C. (2023). When is parallel trends sensitive to functional form?
Econometrica 91(2), 737-747. https://doi.org/10.3982/ECTA19402
Sun, L. & Abraham, S. (2021). Estimating dynamic treatment effects in event studies with heterogeneous
treatment effects. Journal of Econometrics 225(2), 175-199. https://doi.org/10.1016/j.jeconom.2020.09.006
Wooldridge, J. M. (2023). Simple approaches to nonlinear difference-in-differences with panel data.
The Econometrics Journal 26(3), C31-C66. https://doi.org/10.1093/ectj/utad016
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from stopdisparity.errors import DroppedRowsWarning, SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.models._fe import Missing
from stopdisparity.models._staggered_data import StaggeredPanel, prepare_staggered

StaggeredEstimator = Literal["etwfe", "callaway-santanna", "sun-abraham", "bacon", "twfe-weights", "bjs"]
#: The estimators of this module, by their CLI names.
STAGGERED_ESTIMATORS: tuple[StaggeredEstimator, ...] = (
    "etwfe",
    "callaway-santanna",
    "sun-abraham",
    "bacon",
    "twfe-weights",
    "bjs",
)
#: The estimators with a pooled regression whose default inference is CR2 (as the TWFE models').
CR2_ESTIMATORS: tuple[StaggeredEstimator, ...] = ("etwfe", "sun-abraham")
Cohort = Literal["year", "period"]
#: How cohorts are defined on the race layout: calendar year of adoption (default) or the panel period.
COHORTS: tuple[Cohort, ...] = ("year", "period")

Scale = Literal["share", "logodds"]
#: Outcome scales of the linear estimators on the race layout.
SCALES: tuple[Scale, ...] = ("share", "logodds")

#: Internal column names of the unit × period panel built from the race layout.
FOCAL, TRIALS, FIRST, IN_FORCE, LOGODDS = "focal", "trials", "first_treated", "in_force", "logodds"
SHARE = "share"


def _core(estimator: str) -> Any:
    """The estimator's function ``f(panel: StaggeredPanel, **options)`` (imported when first used)."""
    if estimator == "callaway-santanna":
        from stopdisparity.models._cs import callaway_santanna

        return callaway_santanna
    if estimator == "sun-abraham":
        from stopdisparity.models._sunab import sun_abraham

        return sun_abraham
    if estimator == "bjs":
        from stopdisparity.models._bjs import bjs

        return bjs
    if estimator == "bacon":
        from stopdisparity.models._bacon import bacon_decomposition

        return bacon_decomposition
    if estimator == "etwfe":
        from stopdisparity.models._etwfe import etwfe

        return etwfe
    raise AssertionError(estimator)  # twfe-weights takes cells, not a StaggeredPanel


def fit_staggered(
    data: pl.DataFrame | StaggeredPanel,
    *,
    estimator: StaggeredEstimator,
    yname: str | None = None,
    idname: str | None = None,
    tname: str | None = None,
    gname: str | None = None,
    trials: str | None = None,
    weights: str | None = None,
    xnames: Sequence[str] = (),
    cluster: str | None = None,
    missing: Missing = "raise",
    inference: _fe.DefaultInference | None = None,
    **options: Any,
) -> Any:
    """Fit a heterogeneity-robust estimator on a generic unit × period panel (absorbing from ``gname``).

    Parameters
    ----------
    data
        One row per ``idname`` × ``tname`` (a polars frame), or an already prepared
        :class:`~stopdisparity.models._staggered_data.StaggeredPanel`.
    estimator
        One of :data:`STAGGERED_ESTIMATORS`.
    yname, idname, tname, gname, trials, weights, xnames, cluster, missing
        As in :func:`stopdisparity.models.did.fit_did_panel`: outcome (successes with ``trials``: the
        share is modelled, and ``etwfe`` fits the binomial logit), unit, integer period, first treated
        period (0 or null = never treated), analytic weights, covariates, cluster column, missing-data
        policy. The panel must be balanced (see ``missing``).
    inference
        ``etwfe`` and ``sun-abraham``: ``cr2`` (the default, None: CR2 with Bell–McCaffrey df from
        their pooled regression, as the TWFE models; with covariates etwfe falls back to CR1 with an
        :class:`~stopdisparity.errors.InferenceFallbackWarning`) or ``cluster`` (the analytical CR1).
        The other estimators report their own inference (None or ``cluster``: the same).
    **options
        The estimator's own options (e.g. ``control``, ``base_period``, ``anticipation``, ``n_boot``,
        ``seed`` for ``callaway-santanna``; ``family`` for ``etwfe``, by default ``logit`` with trials
        and ``linear`` without; ``horizons``, ``pretrends`` for ``bjs``); see each estimator's function.

    Returns
    -------
    The estimator's frozen result (``.tidy()``, ``lineage``).

    Examples
    --------
    >>> from stopdisparity.models.staggered import fit_staggered
    >>> import polars as pl
    >>> mpdta = pl.read_csv("tests/reference/mpdta/mpdta.csv")  # doctest: +SKIP
    >>> cs = fit_staggered(mpdta, estimator="callaway-santanna", yname="lemp", idname="countyreal",
    ...                    tname="year", gname="first.treat")  # doctest: +SKIP
    >>> cs.tidy().filter(pl.col("term") == "simple")  # doctest: +SKIP
    """
    check_choice("estimator", estimator, STAGGERED_ESTIMATORS)
    if inference is not None:
        check_choice("inference", inference, _fe.DEFAULT_INFERENCES)
        if inference == "cr2" and estimator not in CR2_ESTIMATORS:
            raise SpecificationError(
                f"inference='cr2' applies to {' and '.join(CR2_ESTIMATORS)}; {estimator} reports its own "
                "inference (inference=None or 'cluster')"
            )
    if isinstance(data, StaggeredPanel):
        panel = data
    else:
        panel = _prepare(data, yname, idname, tname, gname, trials, weights, xnames, cluster, missing)
    if estimator == "twfe-weights":
        if panel.xnames:
            raise SpecificationError("twfe-weights decomposes the TWFE without covariates; drop xnames")
        from stopdisparity.models._bacon import twfe_weights

        return twfe_weights(
            panel.frame, unit="uid", period="period", treated="treated", weight="n", outcome="y", **options
        )
    if estimator == "etwfe" and "family" not in options:
        # the headline's logit needs successes out of trials; a continuous outcome gets the linear model
        options["family"] = "logit" if panel.columns.get("trials") else "linear"
    if estimator not in CR2_ESTIMATORS:
        return _core(estimator)(panel, **options)
    method = inference or _fe.DEFAULT_INFERENCE
    with _fe.few_clusters_heeded(method):  # as the TWFE fits: CR2 heeds the G*-only warning
        result = _core(estimator)(panel, **options)
    return _fe.with_default_inference(result, method)


def _prepare(
    data: pl.DataFrame,
    yname: str | None,
    idname: str | None,
    tname: str | None,
    gname: str | None,
    trials: str | None,
    weights: str | None,
    xnames: Sequence[str],
    cluster: str | None,
    missing: Missing,
) -> StaggeredPanel:
    needed = {"yname": yname, "idname": idname, "tname": tname, "gname": gname}
    absent = [k for k, v in needed.items() if v is None]
    if absent:
        raise SpecificationError(f"a generic panel needs {', '.join(absent)} (column names)")
    assert yname is not None and idname is not None and tname is not None and gname is not None
    return prepare_staggered(
        data,
        yname=yname,
        idname=idname,
        tname=tname,
        gname=gname,
        trials=trials,
        weights=weights,
        xnames=xnames,
        cluster=cluster,
        missing=missing,
        stacklevel=4,
    )


def race_unit_panel(
    data: pl.DataFrame,
    *,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    treatment: str = "in_force",
    first_treated: str = "first_treated",
    cluster: str = "county_fips",
    cohort: Cohort = "year",
    period_length: str | None = None,
    missing: Missing = "raise",
) -> pl.DataFrame:
    """The race layout as a generic unit × period panel of the race pair, cohorts by year or period.

    Returns one row per unit × period with the user's ``unit`` and ``period`` columns, ``focal`` (focal
    race stops), ``trials`` (focal + reference stops), ``first_treated`` (the period — the calendar year
    with ``cohort="year"`` — of the unit's first treated period; 0 = never treated), ``in_force`` (share
    of the period's sub-periods in force: 0/1 at the panel's own periods) and ``cluster`` (when it is
    not the unit). A unit whose first treated period lies after the panel's last one is never treated
    within the panel (``first_treated`` 0), as R ``did`` codes it. Only the periods every unit is observed
    in are kept (a :class:`DroppedRowsWarning` says which were cut), so that the panel is balanced when
    states span different years. With ``cohort="year"`` the periods become calendar years (``period //
    12`` of a monthly index ``year·12 + month − 1``, ``period // 4`` of a quarterly one) and stops are
    summed.
    """
    check_choice("cohort", cohort, COHORTS)
    from stopdisparity.models.event_study import months_per_period

    if first_treated not in data.columns:
        raise SpecificationError(
            f"the race layout needs the first-treated column {first_treated!r} (as built by "
            "`stopdisparity panel`); it has {data.columns}"
        )
    cells = _fe.prepare_cells(
        data,
        race_pair=race_pair,
        unit=unit,
        period=period,
        treatment=treatment,
        group=None,
        cluster=cluster,
        race="race",
        stops="stops",
        missing=missing,
        stacklevel=4,
    )
    pairs = _fe.pair_cells(cells)
    firsts = (
        data.group_by(unit)
        .agg(
            pl.col(first_treated).fill_null(0).n_unique().alias("k"),
            pl.col(first_treated).fill_null(0).first(),
        )
        .rename({unit: _fe.UNIT, first_treated: FIRST})
    )
    varying = firsts.filter(pl.col("k") > 1)
    if varying.height:
        raise SpecificationError(
            f"{first_treated!r} must be constant within each {unit!r}; it varies for "
            f"{varying.get_column(_fe.UNIT).head(5).to_list()}"
        )
    pairs = pairs.join(firsts.select(_fe.UNIT, FIRST), on=_fe.UNIT, how="left").with_columns(
        pl.col(FIRST).cast(pl.Int64)
    )
    if cohort == "year":
        k = months_per_period(data, unit, period, period_length)
        if k is None:
            raise SpecificationError(
                "cohort='year' needs the period length: a period_start date column (as `stopdisparity "
                "panel` writes) or period_length='month'|'quarter'|'year'; or pass cohort='period'"
            )
        per_year = 12 // k
        year = pl.col(_fe.PERIOD) // per_year
        pairs = (
            pairs.with_columns(
                year.alias(_fe.PERIOD),
                pl.when(pl.col(FIRST) > 0).then(pl.col(FIRST) // per_year).otherwise(0).alias(FIRST),
            )
            .group_by(_fe.UNIT, _fe.PERIOD, maintain_order=True)
            .agg(
                pl.col(_fe.CLUSTER).first(),
                pl.col(FIRST).first(),
                pl.col(_fe.TREATED).mean(),
                pl.col("focal").sum(),
                pl.col("n").sum(),
            )
        )
    # units of different states can span different periods (OPP: NC 2000-2015, SC 2005-2016): keep the
    # periods every unit has, so the panel is balanced, and say what was cut
    span = pairs.group_by(_fe.UNIT).agg(
        pl.col(_fe.PERIOD).min().alias("lo"), pl.col(_fe.PERIOD).max().alias("hi")
    )
    first, last = span.get_column("lo").max(), span.get_column("hi").min()
    if first is None or last is None or first > last:
        raise SpecificationError("the units share no period: fit each state (or span) separately")
    outside = pairs.filter((pl.col(_fe.PERIOD) < first) | (pl.col(_fe.PERIOD) > last))
    if outside.height:
        warnings.warn(
            f"kept periods {first}..{last}, the span every {unit!r} is observed in (units of different "
            f"states cover different periods); dropped {outside.height} of {pairs.height} unit-periods "
            f"({int(outside.get_column('n').sum())} stops of the pair)",
            DroppedRowsWarning,
            stacklevel=3,
        )
        pairs = pairs.filter(pl.col(_fe.PERIOD).is_between(first, last))
    # adoption after the panel's last period is not observed: such units are not-yet-treated throughout
    pairs = pairs.with_columns(pl.when(pl.col(FIRST) > last).then(0).otherwise(pl.col(FIRST)).alias(FIRST))
    out = pairs.select(
        pl.col(_fe.UNIT).alias(unit),
        pl.col(_fe.PERIOD).alias(period),
        pl.col("focal").alias(FOCAL),
        pl.col("n").alias(TRIALS),
        pl.col(FIRST),
        pl.col(_fe.TREATED).alias(IN_FORCE),
        *([] if cluster == unit else [pl.col(_fe.CLUSTER).alias(cluster)]),
    ).sort(unit, period)
    return out


def fit_staggered_race(
    data: pl.DataFrame,
    *,
    estimator: StaggeredEstimator,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    treatment: str = "in_force",
    first_treated: str = "first_treated",
    cluster: str = "county_fips",
    cohort: Cohort = "year",
    scale: Scale = "share",
    period_length: str | None = None,
    missing: Missing = "raise",
    **options: Any,
) -> Any:
    r"""Fit a heterogeneity-robust estimator on the race layout (``did --store DIR --estimator ...``).

    The outcome is the focal race's share of the pair's stops per unit × period (successes ``focal``
    out of ``trials``); cohorts as :func:`race_unit_panel` builds them (calendar year of the first
    treated period by default); ``twfe-weights`` uses ``in_force`` at the panel's own periods, with its
    exits, weighted by the pair's stops. Other parameters as :func:`fit_staggered`.

    ``scale`` sets the outcome of the linear estimators (callaway-santanna, sun-abraham, bjs, bacon):
    ``share`` (parallel trends in the share's level) or ``logodds``, the empirical log odds
    :math:`\log\frac{focal + 1/2}{reference + 1/2}` (Cox 1970), whose parallel trends are the
    headline logit's assumption; rows are then weighted by the pair's stops (unit weights: their mean;
    ``bacon`` stays unweighted). ``etwfe`` models the counts themselves and takes ``share`` only.
    """
    check_choice("estimator", estimator, STAGGERED_ESTIMATORS)
    check_choice("scale", scale, SCALES)
    if scale == "logodds" and estimator in ("etwfe", "twfe-weights"):
        raise SpecificationError(
            f"scale='logodds' applies to the linear estimators; {estimator} models the stop counts "
            "(etwfe's logit already assumes parallel trends in log odds)"
        )
    common: dict[str, Any] = {
        "race_pair": race_pair, "unit": unit, "period": period, "treatment": treatment,
        "first_treated": first_treated, "cluster": cluster, "period_length": period_length,
        "missing": missing,
    }  # fmt: skip
    if estimator == "twfe-weights":
        panel = race_unit_panel(data, cohort="period", **common)
        from stopdisparity.models._bacon import twfe_weights

        # a cell without stops has weight 0 (left out); its share is set to 0 only to be defined
        share = pl.when(pl.col(TRIALS) > 0).then(pl.col(FOCAL) / pl.col(TRIALS)).otherwise(0.0)
        return twfe_weights(
            panel.with_columns((pl.col(IN_FORCE) > 0).cast(pl.Float64), share.alias(SHARE)),
            unit=unit,
            period=period,
            treated=IN_FORCE,
            weight=TRIALS,
            outcome=SHARE,
            **options,
        )
    prepared = prepare_staggered_race(data, estimator=estimator, cohort=cohort, scale=scale, **common)
    return fit_staggered(prepared, estimator=estimator, **options)


def prepare_staggered_race(
    data: pl.DataFrame,
    *,
    estimator: StaggeredEstimator,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    treatment: str = "in_force",
    first_treated: str = "first_treated",
    cluster: str = "county_fips",
    cohort: Cohort = "year",
    scale: Scale = "share",
    period_length: str | None = None,
    missing: Missing = "raise",
) -> StaggeredPanel:
    """The panel :func:`fit_staggered_race` fits, for several estimators of one scale on the same data.

    ``fit_staggered(prepare_staggered_race(data, estimator=e, ...), estimator=e)`` is
    ``fit_staggered_race(data, estimator=e, ...)``; the panel is the same for every estimator but
    ``bacon`` (unweighted log odds) and ``twfe-weights`` (not a staggered panel: refused here).
    """
    check_choice("estimator", estimator, STAGGERED_ESTIMATORS)
    check_choice("scale", scale, SCALES)
    if estimator == "twfe-weights":
        raise SpecificationError("twfe-weights takes the race unit panel itself: use fit_staggered_race")
    panel = race_unit_panel(
        data,
        race_pair=race_pair,
        unit=unit,
        period=period,
        treatment=treatment,
        first_treated=first_treated,
        cluster=cluster,
        cohort=cohort,
        period_length=period_length,
        missing=missing,
    )
    outcome: dict[str, Any] = {"yname": FOCAL, "trials": TRIALS}
    if scale == "logodds":
        lo = ((pl.col(FOCAL) + 0.5) / (pl.col(TRIALS) - pl.col(FOCAL) + 0.5)).log()
        panel = panel.with_columns(lo.alias(LOGODDS))
        outcome = {"yname": LOGODDS, "weights": None if estimator == "bacon" else TRIALS}
    return prepare_staggered(
        panel,
        idname=unit,
        tname=period,
        gname=FIRST,
        cluster=None if cluster == unit else cluster,
        missing=missing,
        outcome_scale=scale,
        stacklevel=4,
        **outcome,
    )


@dataclass(frozen=True, slots=True)
class EventCoefficients:
    """Event-time estimates with their joint covariance (what :func:`~.sensitivity.sensitivity` reads).

    ``event_times`` exclude the reference period; ``reference`` is the omitted event time.
    """

    event_times: tuple[int, ...]
    coefficients: np.ndarray
    vcov: np.ndarray
    reference: int
    estimator: str
    n_obs: int
    n_clusters: int | None


def event_coefficients(result: Any) -> Any:
    """A result's event-time coefficients for the sensitivity analysis (Rambachan & Roth 2023).

    Callaway–Sant'Anna's dynamic aggregation becomes an :class:`EventCoefficients`; it must use
    ``base_period="universal"``, so that every pre-period estimate is relative to the same reference
    (-1 - anticipation) as the post ones — the varying base's pre-period terms are one-period changes,
    which the relative-magnitudes and smoothness restrictions do not describe. Other results (the event
    study, Sun–Abraham, etwfe) are returned as they are; the imputation estimator (``bjs``) has no
    pre-period coefficients in the same regression and is refused.
    """
    from stopdisparity.models._bjs import BjsResult
    from stopdisparity.models._cs import CallawaySantAnnaResult

    if isinstance(result, BjsResult):
        raise SpecificationError(
            "bjs has no pre-period coefficients estimated jointly with its horizons (its pre-trend test is "
            "a separate regression), so the sensitivity analysis cannot use it; use sun-abraham, "
            "callaway-santanna (base period universal), etwfe (never-treated controls) or event-study"
        )
    if not isinstance(result, CallawaySantAnnaResult):
        return result
    if result.base_period != "universal":
        raise SpecificationError(
            "the sensitivity analysis of callaway-santanna needs base_period='universal' (every event "
            "time against the same reference period); refit with base_period='universal'"
        )
    idx = [i for i, a in enumerate(result.aggregation) if a == "dynamic"]  # the rows of vcov("dynamic")
    reference = -1 - result.anticipation
    vcov = result.vcov("dynamic")
    keep = [
        j for j, i in enumerate(idx) if result.terms[i] != "dynamic:overall" and int(result.e[i]) != reference
    ]
    return EventCoefficients(
        event_times=tuple(int(result.e[idx[j]]) for j in keep),
        coefficients=np.asarray([result.estimates[idx[j]] for j in keep], dtype=float),
        vcov=vcov[np.ix_(keep, keep)],
        reference=reference,
        estimator=result.estimator,
        n_obs=int(result.n_units),
        n_clusters=int(result.n_clusters),
    )
