r"""Race-specific count DiDs, which ask whether focal-race stops rose or reference-race stops fell.

Users call :func:`fit_counts`; it returns a frozen :class:`CountsResult` with a DESIGN.md ``tidy()``.

``twfe-poisson`` (``form="race-specific"``, the default). For the focal and the reference race
separately, a Poisson model of the stop count :math:`y_{ctr}` with county effects, state × period
effects (period effects with one state), the policy indicator and, optionally, an exposure offset
:math:`\log \text{population}_{ctr}`:
:math:`\log E[y_{ctr}] = o_{ctr} + \alpha_{cr} + \gamma_{s(c)tr} + \beta_r D_{ct}`. Each
:math:`\beta_r` is an ATT on the log of expected stops (a log rate per resident with the offset)
under parallel trends in log rates; their difference :math:`\beta_f - \beta_r` says whether a change
in the race composition of stops (the headline) comes from more focal-race stops or fewer
reference-race stops — the composition objection of van Tiem (2023). The Poisson quasi-likelihood
needs only the conditional mean to be right; over-dispersion is handled by the cluster-robust SEs.

``form="two-race"``: one Poisson on both races' rows with county × period effects, county × race
effects, group × period × race effects and :math:`D_{ct}\cdot 1[r = \text{focal}]`. The county ×
period effects profile out the cell totals, leaving the binomial likelihood of the focal share:
this is **exactly the twfe-logit model** (Baker 1994) — same coefficient, same cluster scores — not
independent evidence. It is offered to show that identity (the tests check it); it takes no exposure
offset (a race-specific offset would add :math:`\log(\text{pop}_f/\text{pop}_r)` to the logit).

Inference
---------
Each race's row is its own Poisson fit with CR1 = G/(G-1)·(N-1)/(N-K)·CR0 (pyfixest ``CRV1``; N
the race's rows, K its coefficient plus its non-nested fixed effects), equal to
``pyfixest.fepois`` on that race's rows. The ``difference`` row takes its variance from the stacked
per-cluster influences of the two fits (so the covariance between the races within a county is
included) with the small-sample factor of the stacked model — N and K summed over the two fits,
equal to ``pyfixest.fepois`` on the stacked rows with race-interacted fixed effects. Fixed-effect
levels whose count is zero throughout (a county with no focal stops) have an infinite effect and are
dropped, per race, and listed. p-values and intervals are CR2 with Bell–McCaffrey degrees of freedom
by default (every row; ``inference="cluster"``: normal, as pyfixest for GLMs).

With few treated clusters, :func:`stopdisparity.models.inference.apply_inference` replaces the
p-values and intervals of every row (``std_error`` stays the analytical one): ``cr3`` (cluster
jackknife), ``score`` (Kline & Santos 2012 score bootstrap of each Poisson; the difference from the
stacked Poisson's cluster scores) and ``ri`` (randomization inference over adoption paths); the wild
bootstrap is for linear models only. The result's ``with_inference`` attaches them.

References
----------
Baker, S. G. (1994). The multinomial-Poisson transformation. Journal of the Royal Statistical Society
D 43(4), 495-504. https://doi.org/10.2307/2348134
Wooldridge, J. M. (1999). Distribution-free estimation of some nonlinear panel data models. Journal of
Econometrics 90(1), 77-97. https://doi.org/10.1016/S0304-4076(98)00033-5
Correia, S., Guimarães, P. & Zylkin, T. (2020). Fast Poisson estimation with high-dimensional fixed
effects. Stata Journal 20(1), 95-115. https://doi.org/10.1177/1536867X20909691
van Tiem, J. (2023). Immigration enforcement and traffic stops: 287(g) in North Carolina.
Criminology & Public Policy (driver composition changes under 287(g)).
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. 64 Arizona Law Review 463.
de Chaisemartin, C. & D'Haultfœuille, X. (2020). Two-way fixed effects estimators with heterogeneous
treatment effects. American Economic Review 110(9), 2964-2996. https://doi.org/10.1257/aer.20181169
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import polars as pl

from stopdisparity.errors import DroppedRowsWarning, SparseCellWarning, SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.models._fe import (
    CLUSTER,
    GROUP,
    PERIOD,
    POPULATION,
    RACE,
    STOPS,
    TREATED,
    UNIT,
    ClusterSummary,
    Inference,
    Missing,
    SmallSample,
    VcovType,
)
from stopdisparity.results import TidyRow, tidy_frame

Form = Literal["race-specific", "two-race"]
Exposure = Literal["auto", "population", "none"]
FORMS: tuple[Form, ...] = ("race-specific", "two-race")
EXPOSURES: tuple[Exposure, ...] = ("auto", "population", "none")


@dataclass(frozen=True, eq=False)
class _CountsCore:
    """One estimation: terms, estimates, per-cluster influences (G × terms) and small-sample factors."""

    terms: tuple[str, ...]
    estimates: np.ndarray
    influence: np.ndarray
    small_samples: tuple[SmallSample, ...]
    nobs: tuple[int, ...]
    n_clusters: tuple[int, ...]
    cluster_labels: tuple[str, ...]
    clusters: ClusterSummary
    #: G* of each term (:func:`~stopdisparity.models._fe.effective_clusters`).
    effective: tuple[float, ...]
    fits: tuple[_fe.GlmFit, ...]
    rows: tuple[pl.DataFrame, ...]
    converged: bool
    iterations: int

    def std_errors(self, vcov_type: VcovType) -> np.ndarray:
        var0 = np.sum(self.influence**2, axis=0)
        factor = np.array([s.factor if vcov_type == "CR1" else 1.0 for s in self.small_samples])
        return np.sqrt(var0 * factor)


def _fit_rows(
    rows: pl.DataFrame,
    factors: list[np.ndarray],
    x: np.ndarray,
    offset: np.ndarray | None,
    eta_start: np.ndarray | None = None,
) -> _fe.GlmFit:
    projector = _fe.WithinProjector(factors)
    y = rows.get_column(STOPS).to_numpy()
    return _fe.fit_glm(y, x, projector, family="poisson", offset=offset, eta_start=eta_start)


def _estimate_race_specific(
    rows_by_race: tuple[pl.DataFrame, pl.DataFrame],
    *,
    terms: tuple[str, str],
    multi_group: bool,
    use_offset: bool,
    names: Mapping[str, str | None],
    cluster_labels: tuple[str, ...],
    eta_start: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> _CountsCore:
    g_all = len(cluster_labels)
    lookup = {c: i for i, c in enumerate(cluster_labels)}
    fits, infl, info, smalls, nobs, gs = [], [], [], [], [], []
    unit_name = str(names["unit"])
    gp_name = f"{names['group']}×{names['period']}" if multi_group else str(names["period"])
    fe_levels_sum = [0, 0]
    fe_nested_all = [True, True]
    for rows, start in zip(rows_by_race, eta_start, strict=True):
        unit_codes = _fe.codes_of(rows.get_column(UNIT))
        gp_codes = _fe.codes_of(rows.get_column(_fe.GP))
        cl = np.array([lookup[c] for c in rows.get_column(CLUSTER).cast(pl.String).to_list()], dtype=np.int64)
        offset = np.log(rows.get_column(POPULATION).to_numpy()) if use_offset else None
        fit = _fit_rows(
            rows, [unit_codes, gp_codes], rows.get_column(TREATED).to_numpy()[:, None], offset, start
        )
        fits.append(fit)
        infl.append(_fe.cluster_influence(fit, cl, g_all)[:, 0])
        info.append(_fe.cluster_information(fit, cl, g_all))
        g = int(np.unique(cl).size)
        nested = tuple(_fe.nested_in(c, cl) for c in (unit_codes, gp_codes))
        levels = (int(unit_codes.max()) + 1, int(gp_codes.max()) + 1)
        smalls.append(
            SmallSample(
                n=rows.height,
                n_coef=1,
                fe_names=(unit_name, gp_name),
                fe_levels=levels,
                fe_nested=nested,
                g=g,
                n_label="unit-periods",
            )
        )
        fe_levels_sum = [a + b for a, b in zip(fe_levels_sum, levels, strict=True)]
        fe_nested_all = [a and b for a, b in zip(fe_nested_all, nested, strict=True)]
        nobs.append(rows.height)
        gs.append(g)
    both = pl.concat([r.select(CLUSTER, TREATED, STOPS) for r in rows_by_race])
    g_union = int(both.get_column(CLUSTER).cast(pl.String).n_unique())
    stacked = SmallSample(
        n=sum(nobs),
        n_coef=2,
        fe_names=(f"{unit_name}×race", f"{gp_name}×race"),
        fe_levels=(fe_levels_sum[0], fe_levels_sum[1]),
        fe_nested=(fe_nested_all[0], fe_nested_all[1]),
        g=g_union,
        n_label="unit-period-race rows (stacked)",
    )
    influence = np.column_stack([infl[0], infl[1], infl[0] - infl[1]])
    estimates = np.array([fits[0].beta[0], fits[1].beta[0], fits[0].beta[0] - fits[1].beta[0]])
    cl_codes = np.array(
        [lookup[c] for c in both.get_column(CLUSTER).cast(pl.String).to_list()], dtype=np.int64
    )
    summary = _fe.summarize_clusters(
        str(names["cluster"]),
        cluster_labels,
        cl_codes,
        both.get_column(TREATED).to_numpy(),
        both.get_column(STOPS).to_numpy(),
    )
    # with rho = 0 every observation's working error is independent (the two races' too), so the
    # difference's information is the sum of the races'
    effective = tuple(_fe.effective_clusters(i) for i in (info[0], info[1], info[0] + info[1]))
    smallest = min((e for e in effective if not math.isnan(e)), default=math.nan)
    summary = dataclasses.replace(summary, g=g_union, effective=smallest, effective_label="smallest G*")
    return _CountsCore(
        terms=(*terms, "difference"),
        estimates=estimates,
        influence=influence,
        small_samples=(smalls[0], smalls[1], stacked),
        nobs=(nobs[0], nobs[1], sum(nobs)),
        n_clusters=(gs[0], gs[1], g_union),
        cluster_labels=cluster_labels,
        clusters=summary,
        effective=effective,
        fits=tuple(fits),
        rows=rows_by_race,
        converged=all(f.converged for f in fits),
        iterations=max(f.iterations for f in fits),
    )


def _estimate_two_race(
    pairs: pl.DataFrame,
    *,
    multi_group: bool,
    names: Mapping[str, str | None],
    cluster_labels: tuple[str, ...],
) -> _CountsCore:
    """Poisson on both races with unit × period, unit × race and group × period × race effects."""
    long = pl.concat(
        [
            pairs.with_columns(pl.col("focal").alias(STOPS), pl.lit(1).alias("_focal")),
            pairs.with_columns(pl.col("reference").alias(STOPS), pl.lit(0).alias("_focal")),
        ]
    ).with_columns(_fe.gp_expr(multi_group, "_focal"))
    cell = _fe.codes_of(long.get_column(UNIT), long.get_column(PERIOD))
    unit_race = _fe.codes_of(long.get_column(UNIT), long.get_column("_focal"))
    gp_race = _fe.codes_of(long.get_column(_fe.GP))
    x = (long.get_column(TREATED) * long.get_column("_focal")).to_numpy().astype(float)[:, None]
    fit = _fit_rows(long, [cell, unit_race, gp_race], x, None)
    lookup = {c: i for i, c in enumerate(cluster_labels)}
    cl = np.array([lookup[c] for c in long.get_column(CLUSTER).cast(pl.String).to_list()], dtype=np.int64)
    g = len(cluster_labels)
    infl = _fe.cluster_influence(fit, cl, g)
    unit_name = str(names["unit"])
    gp_name = f"{names['group']}×{names['period']}" if multi_group else str(names["period"])
    levels = tuple(int(c.max()) + 1 for c in (cell, unit_race, gp_race))
    small = SmallSample(
        n=long.height,
        n_coef=1,
        fe_names=(f"{unit_name}×{names['period']}", f"{unit_name}×race", f"{gp_name}×race"),
        fe_levels=levels,
        fe_nested=tuple(_fe.nested_in(c, cl) for c in (cell, unit_race, gp_race)),
        g=g,
        n_label="unit-period-race rows",
    )
    summary = _fe.summarize_clusters(
        str(names["cluster"]),
        cluster_labels,
        cl,
        long.get_column(TREATED).to_numpy(),
        long.get_column(STOPS).to_numpy(),
    )
    effective = _fe.effective_clusters(_fe.cluster_information(fit, cl, g))
    summary = dataclasses.replace(summary, effective=effective)
    return _CountsCore(
        terms=("difference",),
        estimates=fit.beta.copy(),
        influence=infl,
        small_samples=(small,),
        nobs=(long.height,),
        n_clusters=(g,),
        cluster_labels=cluster_labels,
        clusters=summary,
        effective=(effective,),
        fits=(fit,),
        rows=(long,),
        converged=fit.converged,
        iterations=fit.iterations,
    )


@dataclass(frozen=True, eq=False)
class CountsResult(_fe.ClusteredResult):
    """Race-specific Poisson DiDs and their difference (from :func:`fit_counts`).

    Attributes
    ----------
    estimator, form
        ``twfe-poisson`` (race-specific) or ``twfe-poisson-two-race``; the form asked for.
    terms, estimates
        ``in_force:<focal>``, ``in_force:<reference>``, ``difference`` (race-specific) or
        ``difference`` alone (two-race); log rate ratios.
    influence
        Per-cluster influence (G × terms); the CR0 variance of each term is its column's sum of
        squares (the difference's column is the focal minus the reference column).
    small_samples
        The CR1 factor of each term (see the module docstring).
    effective_by_term
        Each term's effective number of clusters G* (Carter, Schnepel & Steigerwald 2017); the
        cluster summary carries the smallest.
    exposure
        ``log population`` or ``none``; ``exposure_reason`` says why.
    dropped_units
        Per race, units dropped because their count is zero throughout (infinite fixed effect).
    sample
        The estimation rows with ``race``, ``fitted`` (expected stops), ``eta``, ``weight`` and
        ``treated_resid``.
    """

    estimator: str
    form: Form
    race_pair: tuple[str, str]
    columns: Mapping[str, str | None]
    vcov_type: VcovType
    terms: tuple[str, ...]
    estimands: tuple[str, ...]
    estimates: np.ndarray
    influence: np.ndarray
    small_samples: tuple[SmallSample, ...]
    nobs_by_term: tuple[int, ...]
    n_clusters_by_term: tuple[int, ...]
    clusters: ClusterSummary
    effective_by_term: tuple[float, ...]
    cluster_labels: tuple[str, ...]
    exposure: str
    exposure_reason: str
    fixed_effects: tuple[str, ...]
    dropped_units: Mapping[str, tuple[str, ...]]
    n_dropped: int
    dropped_columns: tuple[str, ...]
    converged: bool
    iterations: int
    multi_group: bool
    sample: pl.DataFrame
    lineage: Mapping[str, Any]
    inference: Inference | None = None

    @property
    def nobs(self) -> int:
        """Rows used over both races."""
        return self.sample.height

    @property
    def variances_cr0(self) -> np.ndarray:
        """CR0 variance of each term."""
        return np.sum(self.influence**2, axis=0)

    @property
    def std_errors(self) -> np.ndarray:
        """Cluster-robust SE of each term under ``vcov_type``."""
        factor = np.array([s.factor if self.vcov_type == "CR1" else 1.0 for s in self.small_samples])
        return np.sqrt(self.variances_cr0 * factor)

    @property
    def vcov_description(self) -> str:
        """Which covariance, clustered by what, and each term's small-sample factor."""
        if self.vcov_type == "CR0":
            return f"{self._vcov_head}; no small-sample factor"
        parts = [f"{t}: {s.describe()}" for t, s in zip(self.terms, self.small_samples, strict=True)]
        return self._vcov_head + "; " + "; ".join(parts)

    @property
    def inference_label(self) -> str:
        """The ``inference`` column of ``tidy()`` (analytical rows)."""
        return f"{self.vcov_type} by {self.columns['cluster']} ({self.clusters.g} clusters)"

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """Rows ``in_force:<focal>``, ``in_force:<reference>``, ``difference`` (log rate ratios).

        Extra keys: ``rate_ratio`` (exp of the estimate), ``exposure``, ``n_treated_clusters``,
        ``largest_treated_share``, ``effective_clusters`` (the term's G*, Carter, Schnepel & Steigerwald
        2017).
        """
        rows = []
        for i, term in enumerate(self.terms):
            est, se = float(self.estimates[i]), float(self.std_errors[i])
            stat, p, lo, hi = _fe.inference_stats(est, se, alpha)
            p, lo, hi, label = _fe.attached(self.inference, term, p, lo, hi, self.inference_label, alpha)
            extra = {
                "rate_ratio": math.exp(est),
                "exposure": self.exposure,
                "n_treated_clusters": self.clusters.g_treated,
                "largest_treated_share": self.clusters.largest_share,
                "effective_clusters": self.effective_by_term[i],
            }
            rows.append(
                TidyRow(
                    term,
                    est,
                    se,
                    stat,
                    p,
                    lo,
                    hi,
                    self.nobs_by_term[i],
                    self.n_clusters_by_term[i],
                    self.estimator,
                    self.estimands[i],
                    label,
                    extra,
                )
            )
        return tidy_frame(rows)

    def with_inference(self, inference: Inference) -> CountsResult:
        """A copy whose ``tidy()`` takes p-values, intervals and label from ``inference``."""
        return dataclasses.replace(self, inference=inference)

    def effective_weights(self) -> pl.DataFrame:
        """Each treated unit's weight in each race's coefficient, beside its share of treated stops.

        The weights are those of :meth:`stopdisparity.models.did.DidResult.effective_weights` with the
        Poisson IRLS weights (expected counts); ``term`` says which fit.

        Returns
        -------
        polars.DataFrame
            Columns: term, unit (named like the unit column), treated_cells, treated_stops,
            stop_share, weight, negative_cells.
        """
        return self._weights.rename({"unit": str(self.columns["unit"])})

    @cached_property
    def _weights(self) -> pl.DataFrame:
        if self.form == "two-race":
            rows = self.sample.filter(pl.col("_focal") == 1)  # the regressor's rows; n = the cell's stops
            frame = _fe.effective_weights(rows, treated="regressor", stops="n")
            return frame.select(pl.lit(self.terms[0]).alias("term"), pl.all())
        frames = []
        for term, race in zip(self.terms[:2], self.race_pair, strict=True):
            rows = self.sample.filter(pl.col(RACE) == race)
            frame = _fe.effective_weights(rows, treated="regressor", stops=STOPS)
            frames.append(frame.select(pl.lit(term).alias("term"), pl.all()))
        return pl.concat(frames)

    def leave_one_out(self, alpha: float = 0.05) -> pl.DataFrame:
        """Refit without each treated unit in turn; flag sign or significance flips per term.

        Returns
        -------
        polars.DataFrame
            One row per treated unit × term, columns as
            :meth:`stopdisparity.models.did.DidResult.leave_one_out`.
        """
        full = {}
        for i, term in enumerate(self.terms):
            _, p, _, _ = _fe.inference_stats(float(self.estimates[i]), float(self.std_errors[i]), alpha)
            full[term] = (float(self.estimates[i]), p)
        rows = []
        for label, core in self._loo:
            ses = core.std_errors(self.vcov_type)
            for i, term in enumerate(core.terms):
                _, p, lo, hi = _fe.inference_stats(float(core.estimates[i]), float(ses[i]), alpha)
                rows.append(
                    {
                        "dropped_unit": str(label),
                        "term": term,
                        "estimate": float(core.estimates[i]),
                        "std_error": float(ses[i]),
                        "p_value": p,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n_clusters": core.n_clusters[i],
                        "n_treated_clusters": core.clusters.g_treated,
                    }
                )
        return _fe.leave_one_out_table(rows, full, unit_name=str(self.columns["unit"]), alpha=alpha)

    @cached_property
    def _loo(self) -> list[tuple[Any, _CountsCore]]:
        treated = self.sample.filter(pl.col(TREATED) > 0).get_column(UNIT).unique().sort().to_list()
        return [(u, refit_counts(self, self.sample.filter(pl.col(UNIT) != u))) for u in treated]


def refit_counts(result: CountsResult, rows: pl.DataFrame) -> _CountsCore:
    """Refit ``result``'s model on a subset of its estimation rows (internal: leave-one-out, CR3).

    The separation drops of :func:`fit_counts` are repeated on the subset; the cluster coding (and so
    the influence's rows) stays that of ``result``.

    Raises
    ------
    SpecificationError
        When the subset leaves a treatment coefficient unidentified.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if result.form == "two-race":
            pairs = _pairs_from_long(rows)
            pairs, _ = _fe.drop_separated(
                pairs.with_columns(_fe.gp_expr(result.multi_group)),
                [UNIT, _fe.GP],
                ["focal", "reference"],
            )
            return _estimate_two_race(
                pairs.drop(_fe.GP),
                multi_group=result.multi_group,
                names=result.columns,
                cluster_labels=result.cluster_labels,
            )
        parts = []
        for r in result.race_pair:
            kept, _ = _fe.drop_separated(rows.filter(pl.col(RACE) == r), [UNIT, _fe.GP], [STOPS])
            parts.append(kept)
        return _estimate_race_specific(
            (parts[0], parts[1]),
            terms=(result.terms[0], result.terms[1]),
            multi_group=result.multi_group,
            use_offset=result.exposure != "none",
            names=result.columns,
            cluster_labels=result.cluster_labels,
            eta_start=(parts[0].get_column("eta").to_numpy(), parts[1].get_column("eta").to_numpy()),
        )


def _pairs_from_long(long: pl.DataFrame) -> pl.DataFrame:
    return (
        long.group_by(UNIT, PERIOD, maintain_order=True)
        .agg(
            pl.col(GROUP).first(),
            pl.col(CLUSTER).first(),
            pl.col(TREATED).first(),
            pl.col(STOPS).filter(pl.col("_focal") == 1).sum().alias("focal"),
            pl.col(STOPS).filter(pl.col("_focal") == 0).sum().alias("reference"),
        )
        .with_columns((pl.col("focal") + pl.col("reference")).alias("n"))
    )


def fit_counts(
    data: pl.DataFrame,
    *,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    unit: str = "county_fips",
    period: str = "period",
    treatment: str = "in_force",
    group: str | None = "state",
    exposure: Exposure = "auto",
    population: str = "population",
    cluster: str = "county_fips",
    missing: Missing = "raise",
    vcov: VcovType = "CR1",
    inference: _fe.DefaultInference = _fe.DEFAULT_INFERENCE,
    form: Form = "race-specific",
    race: str = "race",
    stops: str = "stops",
) -> CountsResult:
    """Poisson count DiDs for the focal and the reference race, and their difference.

    Parameters
    ----------
    data
        Long panel, one row per unit × period × race with stop counts (``Panel.frame``).
    race_pair
        (focal, reference).
    unit, period, treatment, group, cluster, missing, vcov, inference, race, stops
        As in :func:`stopdisparity.models.did.fit_did` (``inference="cr2"``: every race's row and the
        difference).
    exposure
        ``auto`` (default): offset log(population) when the ``population`` column exists and is
        positive for every used row, else no offset (``exposure_reason`` says which);
        ``population``: require the offset (missing values follow ``missing``); ``none``.
    population
        The race-specific population column (the Panel's ``population``).
    form
        ``race-specific`` (default): the two Poisson fits and their difference; ``two-race``: the
        Poisson with unit × period effects, which *is* the twfe-logit (Baker 1994).

    Returns
    -------
    CountsResult

    Raises
    ------
    SpecificationError
        For unknown options, bad columns or values (see ``fit_did``), ``exposure="population"``
        without a usable population column, or ``exposure="population"`` with ``form="two-race"``.

    Warns
    -----
    FewClustersWarning
        When fewer than 10 clusters are treated or one holds more than 30% of treated stops.
    SparseCellWarning
        When units are dropped because a race's count is zero throughout.
    DroppedRowsWarning
        When ``missing="drop"`` dropped rows.
    """
    check_choice("form", form, FORMS)
    check_choice("exposure", exposure, EXPOSURES)
    check_choice("vcov", vcov, _fe.VCOV_TYPES)
    check_choice("inference", inference, _fe.DEFAULT_INFERENCES)
    if form == "two-race" and exposure == "population":
        raise SpecificationError(
            "form='two-race' takes no exposure offset: with unit × period effects a race-specific offset "
            "changes the model (it adds log(pop_focal/pop_reference) to the log odds); use exposure='auto' "
            "or 'none'"
        )
    has_pop = isinstance(population, str) and population in data.columns
    if exposure == "population" and not has_pop:
        raise SpecificationError(
            f"exposure='population' needs a population column; {population!r} is not among {data.columns}"
        )
    want_pop = has_pop and exposure != "none" and form == "race-specific"
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
        population=population if want_pop else None,
        stacklevel=3,
    )
    focal, reference = cells.race_pair
    frame = cells.frame
    n_dropped, dropped_cols = cells.n_dropped, cells.dropped_columns
    use_offset = False
    if form == "two-race":
        reason = "two-race form: no offset (the unit × period effects absorb common exposure)"
    elif exposure == "none":
        reason = "exposure='none'"
    elif not has_pop:
        reason = f"no {population!r} column"
    else:
        pop = frame.get_column(POPULATION)
        bad = int((pop.is_null() | pop.is_nan() | (pop <= 0)).sum())
        if exposure == "auto":
            use_offset = bad == 0
            reason = (
                f"offset log({population}) (population available and positive for every row)"
                if use_offset
                else f"no offset: {bad} rows lack a positive {population!r} (exposure='auto')"
            )
        else:
            if bad and missing == "raise":
                raise SpecificationError(
                    f"exposure='population' needs a positive {population!r} on every used row; {bad} rows "
                    "lack one. Pass missing='drop' to drop them or exposure='auto'"
                )
            if bad:
                frame = frame.filter(
                    pl.col(POPULATION).is_not_null() & ~pl.col(POPULATION).is_nan() & (pl.col(POPULATION) > 0)
                )
                warnings.warn(
                    f"dropped {bad} {focal}/{reference} rows without a positive {population!r} "
                    "(exposure='population', missing='drop')",
                    DroppedRowsWarning,
                    stacklevel=2,
                )
                n_dropped += bad
                dropped_cols = (*dropped_cols, population)
            use_offset = True
            reason = f"offset log({population}) (exposure='population')"
    cluster_labels = tuple(sorted(frame.get_column(CLUSTER).cast(pl.String).unique().to_list()))
    dropped_units: dict[str, tuple[str, ...]] = {}
    if form == "two-race":
        pairs = _fe.pair_cells(dataclasses.replace(cells, frame=frame))
        pairs = pairs.filter(pl.col("n") > 0).with_columns(_fe.gp_expr(cells.multi_group))
        pairs, dropped = _fe.drop_separated(pairs, [UNIT, _fe.GP], ["focal", "reference"])
        dropped_units = {"both": tuple(str(u) for u in dropped[UNIT])}
        _warn_dropped(dropped_units, unit)
        core = _estimate_two_race(
            pairs.drop(_fe.GP),
            multi_group=cells.multi_group,
            names=cells.columns,
            cluster_labels=cluster_labels,
        )
        fit = core.fits[0]
        long = core.rows[0]
        sample = long.with_columns(
            pl.when(pl.col("_focal") == 1).then(pl.lit(focal)).otherwise(pl.lit(reference)).alias(RACE),
            (pl.col(TREATED) * pl.col("_focal")).alias("regressor"),
            pl.Series("fitted", fit.mu),
            pl.Series("eta", fit.eta),
            pl.Series("weight", fit.weights),
            pl.Series("treated_resid", fit.x_tilde[:, 0]),
        )
        estimator = "twfe-poisson-two-race"
        terms: tuple[str, ...] = core.terms
        estimands: tuple[str, ...] = (
            f"ATT on the log odds that a {focal}-or-{reference} stop is {focal} (two-race Poisson with "
            f"{unit} × {period} effects: identical to twfe-logit, Baker 1994; not independent evidence), "
            "under parallel trends in log odds",
        )
        fixed = tuple(core.small_samples[0].fe_names)
    else:
        frame = frame.with_columns(_fe.gp_expr(cells.multi_group))
        parts = []
        for label in (focal, reference):
            rows, dropped = _fe.drop_separated(frame.filter(pl.col(RACE) == label), [UNIT, _fe.GP], [STOPS])
            dropped_units[label] = tuple(str(u) for u in dropped[UNIT])
            parts.append(rows.sort(UNIT, PERIOD))
        _warn_dropped(dropped_units, unit)
        terms = (f"{treatment}:{focal}", f"{treatment}:{reference}")
        core = _estimate_race_specific(
            (parts[0], parts[1]),
            terms=(terms[0], terms[1]),
            multi_group=cells.multi_group,
            use_offset=use_offset,
            names=cells.columns,
            cluster_labels=cluster_labels,
        )
        sample = pl.concat(
            [
                rows.with_columns(
                    pl.col(TREATED).alias("regressor"),
                    pl.Series("fitted", fit.mu),
                    pl.Series("eta", fit.eta),
                    pl.Series("weight", fit.weights),
                    pl.Series("treated_resid", fit.x_tilde[:, 0]),
                )
                for rows, fit in zip(parts, core.fits, strict=True)
            ]
        )
        estimator = "twfe-poisson"
        scale = "log stops per resident" if use_offset else "log expected stops"
        estimands = (
            f"ATT on {scale} of {focal} drivers (Poisson, {unit} and group × {period} effects), under "
            f"parallel trends in log {'rates' if use_offset else 'counts'}",
            f"ATT on {scale} of {reference} drivers (Poisson, {unit} and group × {period} effects), under "
            f"parallel trends in log {'rates' if use_offset else 'counts'}",
            f"difference of the two ({focal} minus {reference}); ≈ the change in the log odds that a stop "
            f"is {focal}, from separate models (not twfe-logit)",
        )
        terms = core.terms
        fixed = tuple(core.small_samples[0].fe_names)
    _fe.warn_few_clusters(core.clusters, stacklevel=3, inference=inference)
    lineage = {
        "function": "stopdisparity.models.counts.fit_counts",
        "input_columns": list(data.columns),
        "input_rows": cells.n_input_rows,
        "columns": dict(cells.columns),
        "options": {
            "form": form,
            "exposure": exposure,
            "race_pair": [focal, reference],
            "missing": missing,
            "vcov": vcov,
            "inference": inference,
            "group_effects": cells.multi_group,
        },
        "exposure_used": "log population" if use_offset else "none",
        "fixed_effects": list(fixed),
        "engine": "IRLS with exact fixed-effect projection (stopdisparity.models._fe); statsmodels families",
        "versions": _fe.package_versions(),
    }
    result = CountsResult(
        estimator=estimator,
        form=form,
        race_pair=(focal, reference),
        columns=dict(cells.columns),
        vcov_type=vcov,
        terms=terms,
        estimands=estimands,
        estimates=core.estimates,
        influence=core.influence,
        small_samples=core.small_samples,
        nobs_by_term=core.nobs,
        n_clusters_by_term=core.n_clusters,
        clusters=core.clusters,
        effective_by_term=core.effective,
        cluster_labels=cluster_labels,
        exposure="log population" if use_offset else "none",
        exposure_reason=reason,
        fixed_effects=fixed,
        dropped_units=dropped_units,
        n_dropped=n_dropped,
        dropped_columns=tuple(dict.fromkeys(dropped_cols)),
        converged=core.converged,
        iterations=core.iterations,
        multi_group=cells.multi_group,
        sample=sample,
        lineage=lineage,
    )
    return _fe.with_default_inference(result, inference)


def _warn_dropped(dropped: Mapping[str, tuple[str, ...]], unit: str) -> None:
    parts = [f"{len(v)} for {k}" for k, v in dropped.items() if v]
    if parts:
        listed = sorted({u for v in dropped.values() for u in v})
        warnings.warn(
            f"{unit} value(s) whose count is zero in every period have an infinite fixed effect and were "
            f"dropped ({', '.join(parts)}): {listed[:20]}",
            SparseCellWarning,
            stacklevel=3,
        )
