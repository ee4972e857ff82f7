r"""Synthetic traffic stops with a known truth, as OPP statewide files or as county x period cells.

One data-generating process (DGP), drawn at two levels: :func:`write_opp_files` writes stop-level files
in exactly the format of the Stanford Open Policing Project's North Carolina and South Carolina
statewide releases (plus ``truth.json``); :func:`cells` draws the same process directly as county x
period x agency x race counts for fast Monte Carlo; :func:`truth` returns the planted parameters and
realised estimands without drawing stops.

The process
-----------
Counties c of the drawn states (NC 100, SC 46), months t of each state's file (NC 2000-01..2015-12,
SC 2005-01..2016-12), agencies a (state patrol, county sheriff, and a city police department in five
large counties), races r (asian/pacific islander, black, hispanic, white, other; census categories).

1. **Treatment.** ``design="registry"``: the shipped 287(g) registry's rows with a county FIPS in a
   drawn state and a signed date inside that state's data years -- any model, any agency type (14
   rows, 13 counties: Alamance, Cabarrus, Cumberland, Durham (sheriff and city police), Gaston,
   Guilford, Henderson, Mecklenburg, Wake; Beaufort, Charleston, Lexington, York). A county is in
   force while any of its rows is, and a month is treated if an agreement is in force on its first
   day. ``design="random"``: ``n_treated`` counties drawn by seed, adoption dates uniform over
   ``adoption_years``, and a share ``end_share`` of them ending 2-6 years later. With
   ``all_treated`` the remaining counties adopt in ``late_adoption_years``. The effect is on while the
   agreement is in force (``exit="in_force"``) or from adoption on (``exit="absorbing"``).
2. **Volume.** V_ct = pop_c^a * exp(l_c) * exp(tau_c (t - t_mid)/12) * s(month) * G_ct * M_ct with
   l_c ~ N(0, 0.25^2), tau_c ~ N(0, trend_sd^2) a county log-linear trend, s = 1 + seasonality *
   cos(2 pi (month - 7)/12), G_ct ~ Gamma(dispersion, 1/dispersion) (over-dispersion:
   gamma-Poisson), and M_ct = 0 for a share ``missing_cell_share`` of county-months (no stops).
3. **Race and agency.** mu_ctar = V_ct * w_ca * q_ar(c, year) * exp(eta_ctar), with w_ca the agency
   shares (state patrol ``state_patrol_share``, police 0.06 where present, sheriff the rest),
   q_ar proportional to pop_share_r(c, year) * base_rate_ar (normalised over r), and eta = 0 except for
   Hispanic: eta_ct,hisp = u_ct + pretrend_ct - composition * on_ct + 1[a = state patrol] * theta_ct.
   u_ct is a county AR(1) shock (stationary sd ``shock_sd``, autocorrelation ``shock_rho``), so cells
   of a county are correlated over time and cluster-robust SEs exceed naive ones. theta_ct = theta +
   cohort_slope * (adoption year - 2008) + effect_growth * min(event year, growth_cap_years) while
   the effect is on. pretrend_ct = pretrend * (t - adoption)/12 before adoption in treated counties.
   Because only Hispanic's eta moves, the state-patrol Hispanic-vs-White log odds is
   log(q_hisp/q_white) + eta_hisp: adding theta shifts it by exactly theta. Census race shares exist
   for 2010-2019; other years take the nearest year's shares (synth only).
4. **Counts.** A state's rows are allocated to county-months by one multinomial over lambda_ct =
   sum_ar mu_ctar (so ``rows`` is exact); each county-month's stops are split over agency x race by a
   multinomial over mu_ctar / lambda_ct. Race is then recorded ``unknown`` with probability
   ``unknown_race_share`` (independent of everything), and North Carolina state-patrol stops are coded
   by patrol district only (county ``NA``) with probability ``county_na_share``.
5. **Stop attributes** (stop level only): day uniform in the month; NC time from a daytime-heavy
   hourly profile, ``NA`` for ``time_na_share``; age 16 + floor(Gamma(2, 10)) capped at 90; sex;
   officer drawn from a pool per county x agency; search probability by race and agency, contraband
   ("hit") rate by race (lower for Hispanic drivers), arrest more likely after a find; citation and
   warning; outcome the most severe of arrest > citation > warning; search_basis, search_person,
   search_vehicle and contraband only when a search was conducted; county written mostly
   "<Name> County", sometimes "<NAME>", and "Mc Dowell County"/"Mc Cormick County" for the two Mc
   counties; SC lat/lng (centroid + jitter) for ``coords_share`` of stops, NC location/lat/lng
   always ``NA``; NC ``district`` a synthetic patrol district for state-patrol stops.

**Why it is not the fitted model.** The package fits a binomial logit on county x period cells with
county and state x period fixed effects and one coefficient on "in force". Here the Hispanic log odds
moves with a serially correlated county shock (not a fixed effect), county trends in volume and census
shares that change by year and county (not absorbed by state x period effects), over-dispersed volumes,
agency mixes, recording noise, and -- per scenario -- effects that vary by cohort and event time,
pre-trends, composition changes that move volumes, and effects that switch off. A correct estimator
recovers the truth only where its assumptions hold, which is what the scenarios test.

Scenarios (:data:`SCENARIOS`): ``null`` (S0), ``constant`` (S1, theta = 0.3), ``dynamic`` (S2),
``pretrend`` (S3), ``composition`` (S4), ``switch_off`` (S5).

Random streams are keyed by purpose from one ``numpy.random.SeedSequence(seed)`` (per county, per
state allocation, per state cell counts, per state-month stop attributes, design), so output is
byte-identical for the same seed, spec and rows, and a cell draw equals the aggregated files of the
same seed, spec and rows.

References
----------
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. Arizona Law Review 64, 463.
Pierson, E. et al. (2020). A large-scale analysis of racial disparities in police stops across the
United States. Nature Human Behaviour 4, 736-745. https://doi.org/10.1038/s41562-020-0858-1

Examples
--------
>>> from stopdisparity.synth import SynthSpec, cells
>>> frame = cells(SynthSpec(scenario="constant"), seed=1, rows=100_000)
>>> frame.columns[:7]
['county_fips', 'state', 'period', 'period_start', 'agency', 'race', 'stops']
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from stopdisparity.errors import check_choice
from stopdisparity.synth.opp import COMPRESS_LEVEL, write_state_file
from stopdisparity.synth.plan import (
    AGENCIES,
    RECORDED_RACES,
    build_plan,
    check_rows,
    draw_cells,
)
from stopdisparity.synth.spec import SCENARIOS, Scenario, SynthSpec
from stopdisparity.synth.truth import cell_quantities, truth_dict

__all__ = ["PERIODS", "SCENARIOS", "Scenario", "SynthSpec", "cell_truth", "cells", "truth", "write_opp_files"]

#: Periods :func:`cells` can aggregate to, with the number of months in each.
PERIODS: Final = {"month": 1, "quarter": 3, "year": 12}

_SUBSET_DOC = """counties
        FIPS codes to keep (default: every county of ``spec.states``).
    years
        (first, last) calendar years to keep (default: each state's whole window)."""


def truth(
    spec: SynthSpec,
    *,
    seed: int,
    rows: int | None = None,
    counties: Iterable[str] | None = None,
    years: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Planted parameters and realised estimands of a draw, without drawing stops.

    Parameters
    ----------
    spec
        The specification.
    seed
        Non-negative integer seed.
    rows
        Total stops (default: the study's 18M scaled to the subset's expected share).
    {subset}

    Returns
    -------
    dict
        The content of ``truth.json`` (without the ``files`` entries).
    """
    plan = build_plan(spec, seed=seed, rows=rows, counties=counties, years=years)
    return truth_dict(plan, rows=sum(p.rows for p in plan.states.values()))


truth.__doc__ = (truth.__doc__ or "").replace("{subset}", _SUBSET_DOC)


def cell_truth(
    spec: SynthSpec,
    *,
    seed: int,
    rows: int | None = None,
    counties: Iterable[str] | None = None,
    years: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """The planted effect in every state-patrol county-month of a draw, for estimands with own weights.

    ``truth()`` gives the headline's stop-weighted averages; the staggered estimators average the
    same cell effects with their own weights (cohort sizes, unit weights, event times), so their
    truths are computed from this table. Columns: ``county_fips, state, period`` (month index
    year·12+month−1), ``weight`` (expected recorded Hispanic + White state-patrol stops), ``delta``
    (planted change in the log odds), ``share`` and ``share0`` (Hispanic share with and without the
    treatment), ``pretrend`` (planted pre-adoption offset in the log odds), ``on`` (effect on) and
    ``adoption`` (first in-force month index; -1 = never).
    """
    plan = build_plan(spec, seed=seed, rows=rows, counties=counties, years=years)
    frames = []
    for p in plan.states.values():
        q = cell_quantities(p)
        c_n, t_n = q["weight"].shape
        frames.append(
            pl.DataFrame(
                {
                    "county_fips": np.repeat(np.asarray(p.fips), t_n),
                    "state": p.state,
                    "period": np.tile(p.months, c_n).astype(np.int64),
                    "weight": q["weight"].ravel(),
                    "delta": q["delta"].ravel(),
                    "share": q["share"].ravel(),
                    "share0": q["share0"].ravel(),
                    "pretrend": p.pretrend.ravel(),
                    "on": p.on.ravel(),
                    "adoption": np.repeat(p.adoption.astype(np.int64), t_n),
                }
            )
        )
    return pl.concat(frames)


cell_truth.__doc__ = (cell_truth.__doc__ or "").replace("{subset}", _SUBSET_DOC)


def cells(
    spec: SynthSpec,
    *,
    seed: int,
    period: str = "month",
    rows: int | None = None,
    counties: Iterable[str] | None = None,
    years: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """Draw the process directly as county x period x agency x race stop counts.

    The draw is the stop-level process aggregated: with the same spec, seed and ``rows``, it equals
    the counts of the files :func:`write_opp_files` writes (stops whose county is recorded, by
    recorded race). A subset of counties or years keeps the same county paths and treatment dates.

    Parameters
    ----------
    spec
        The specification.
    seed
        Non-negative integer seed.
    period
        ``month``, ``quarter`` or ``year``.
    rows
        Total stops before recording losses (default: the study's 18M scaled to the subset's expected
        share of the full panel's volume).
    {subset}

    Returns
    -------
    polars.DataFrame
        Balanced: county_fips, state, period (year*12+month-1, year*4+quarter-1 or year),
        period_start (Date), agency (state_patrol, sheriff, police; only agencies present in the
        county), race (census races and ``unknown``), stops, in_force (an agreement is in force on
        the period's first day), treated (the planted effect is on then), first_treated (period
        index of adoption under the first-day rule; 0 = never).

    Raises
    ------
    SpecificationError
        For a bad period, seed, rows or subset.
    """
    check_choice("period", period, PERIODS)
    plan = build_plan(spec, seed=seed, rows=rows, counties=counties, years=years)
    k = PERIODS[period]
    frames = []
    for p in plan.states.values():
        c_n, t_n = p.n.shape
        x = draw_cells(p, seed)
        rec = np.zeros((c_n, t_n, len(AGENCIES), len(RECORDED_RACES)), dtype=np.int64)
        rec[..., :-1] = x[..., 0, 0]
        rec[..., -1] = x[..., 1, 0].sum(axis=3)
        pidx = p.months // k
        starts = np.flatnonzero(np.r_[True, pidx[1:] != pidx[:-1]])
        counts = np.add.reduceat(rec, starts, axis=1)  # [C, P, A, R]
        first = np.where(p.adoption >= 0, -(-p.adoption // k), 0).astype(np.int32)
        present = p.agency_share > 0  # [C, A]
        ci, pi, ai, ri = np.nonzero(np.broadcast_to(present[:, None, :, None], counts.shape))
        frames.append(
            pl.DataFrame(
                [
                    pl.Series("county_fips", p.fips, dtype=pl.String).gather(ci),
                    pl.repeat(p.state, len(ci), dtype=pl.String, eager=True).alias("state"),
                    pl.Series("period", pidx[starts][pi].astype(np.int32)),
                    _period_start(p.months[starts][pi]),
                    pl.Series("agency", AGENCIES, dtype=pl.String).gather(ai),
                    pl.Series("race", RECORDED_RACES, dtype=pl.String).gather(ri),
                    pl.Series("stops", counts[ci, pi, ai, ri]),
                    pl.Series("in_force", p.in_force[:, starts][ci, pi]),
                    pl.Series("treated", p.on[:, starts][ci, pi]),
                    pl.Series("first_treated", first[ci]),
                ]
            )
        )
    return pl.concat(frames)


cells.__doc__ = (cells.__doc__ or "").replace("{subset}", _SUBSET_DOC)


def _period_start(months: np.ndarray) -> pl.Series:
    """Date of the first day of each month index."""
    since_1970 = (np.asarray(months, dtype=np.int64) - 1970 * 12).astype("datetime64[M]")
    days = since_1970.astype("datetime64[D]").astype(np.int64).astype(np.int32)
    return pl.Series("period_start", days, dtype=pl.Int32).cast(pl.Date)


def write_opp_files(
    out_dir: str | Path,
    spec: SynthSpec,
    *,
    rows: int,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Write OPP statewide files for ``spec.states`` and ``truth.json`` into ``out_dir``.

    Files: ``nc_statewide_2020_04_01.csv.zip`` (member ``nc_statewide_2020_04_01.csv``, 2000-2015, with
    ``time``) and ``sc_statewide_2019_02_25.csv.zip`` (2005-2016, no ``time``; lat/lng for some stops).
    Each zip is written under a ``.part`` name and renamed when complete.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing; files of the same names are replaced).
    spec
        The specification.
    rows
        Total rows over all files, split between NC and SC 9.56 : 8.44 (exact).
    seed
        Non-negative integer seed; the same seed, spec and rows give byte-identical files.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    dict
        The content of ``truth.json``.

    Notes
    -----
    Memory is bounded by chunks of about one million rows; the deflate level is
    ``COMPRESS_LEVEL`` (1, the fastest).
    """
    check_rows(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = build_plan(spec, seed=seed, rows=rows)
    files = []
    bar = None
    advance = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(file=sys.stderr), transient=False)
        bar.start()
        task = bar.add_task("synth: writing stops", total=rows)

        def advance(n: int) -> None:
            bar.update(task, advance=n)

    try:
        for p in plan.states.values():
            files.append(
                write_state_file(
                    p,
                    out,
                    seed=seed,
                    time_na=spec.time_na_share,
                    coords_share=spec.coords_share,
                    advance=advance,
                )
            )
            files[-1]["compress_level"] = COMPRESS_LEVEL
    finally:
        if bar is not None:
            bar.stop()
    result = truth_dict(plan, rows=rows, files=files)
    (out / "truth.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
