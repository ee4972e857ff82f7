"""The draw-independent skeleton of the process ("plan") and the cell-level draws built on it.

A plan holds, for one state, every county x month quantity of the data-generating process: treatment
timing, the planted effects, the expected intensity of stops by agency and race, and the number of
stops allocated to each county-month. Stop-level files (:mod:`.opp`) and cell counts
(:func:`stopdisparity.synth.cells`) both start from a plan and the same agency x race count draw
(:func:`draw_cells`), so the two levels are one process.

Random streams are keyed, not sequential (``SeedSequence(seed, spawn_key=...)``): one per county for
its volume and shock paths, one per state for the allocation of rows, one per state-month for the
stop attributes of that month, one per state for the cell counts, one for the random treatment
design. A subset of counties or years therefore sees
the same county paths and treatment dates as the full panel.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from types import MappingProxyType
from typing import Final

import numpy as np
import polars as pl
from scipy.signal import lfilter

from stopdisparity.census import load_population
from stopdisparity.errors import ReferenceDataError, SpecificationError
from stopdisparity.geo import county_centroids
from stopdisparity.policy import load_registry
from stopdisparity.synth.spec import COUNTIES_PER_STATE, STATE_YEARS, STATES, SynthSpec

#: Agencies of the process: the state patrol, the county sheriff, a city police department.
AGENCIES: Final = ("state_patrol", "sheriff", "police")
SP: Final = 0
#: Races of the census benchmark, in the order the process uses (Hispanic of any race; others not).
DGP_RACES: Final = ("asian/pacific islander", "black", "hispanic", "white", "other")
#: Races as recorded on a stop: the census races plus ``unknown``.
RECORDED_RACES: Final = (*DGP_RACES, "unknown")
HISP: Final = 2
WHITE: Final = 3

#: Relative stop rate per resident of each race, by agency (multiplies the county population share).
BASE_RATE: Final = np.array(
    [
        [0.70, 1.15, 1.10, 1.00, 0.90],  # state patrol
        [0.60, 1.40, 1.30, 0.95, 1.00],  # sheriff
        [0.80, 1.90, 1.20, 0.70, 1.00],  # police
    ]
)
#: City police departments (county FIPS -> name); they take POLICE_SHARE of their county's stops.
POLICE_DEPARTMENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "37081": "Greensboro Police Department",
        "37119": "Charlotte-Mecklenburg Police Department",
        "37183": "Raleigh Police Department",
        "45019": "Charleston Police Department",
        "45079": "Columbia Police Department",
    }
)
POLICE_SHARE: Final = 0.06
#: sd of the county level around population**pop_exponent (log scale).
LEVEL_SD: Final = 0.25
#: Relative split of rows between the two statewide files (9.56M NC : 8.44M SC stops in the study).
STATE_ROW_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType({"NC": 9.56, "SC": 8.44})
#: Total rows the cell-level draw uses by default (the study's ~18M stops).
DEFAULT_ROWS: Final = 18_000_000
#: Adoption year the cohort slope is centred on.
COHORT_CENTER: Final = 2008
#: Years of census race shares; other years take the nearest one.
CENSUS_YEARS: Final = (2010, 2019)

_STREAM_COUNTY, _STREAM_ALLOC, _STREAM_MONTH, _STREAM_CELLS, _STREAM_DESIGN = 1, 2, 3, 4, 10


def month_index(d: date) -> int:
    """Consecutive month index ``year*12 + month - 1`` (the panel's ``period`` for months)."""
    return d.year * 12 + d.month - 1


def month_start(m: int) -> date:
    """First day of month index ``m``."""
    return date(m // 12, m % 12 + 1, 1)


def days_in_month(m: int) -> int:
    """Number of days in month index ``m``."""
    return calendar.monthrange(m // 12, m % 12 + 1)[1]


def first_month_on_or_after(d: date) -> int:
    """Index of the first month whose first day is on or after ``d`` (the first-day rule)."""
    return month_index(d) + (0 if d.day == 1 else 1)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """Generator of the keyed stream ``key`` of ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True, slots=True)
class CountyTiming:
    """Treatment timing of one treated county: agreement intervals [start, end) and their origin."""

    county_fips: str
    state: str
    county_name: str
    origin: str  # "registry", "random" or "late" (all_treated fill-in)
    intervals: tuple[tuple[date, date | None], ...]
    registry_rows: tuple[int, ...]

    def month_spans(self) -> list[tuple[int, int]]:
        """In-force month spans [first, stop) under the first-day rule (stop = 10**6 if open)."""
        spans = []
        for start, end in self.intervals:
            first = first_month_on_or_after(start)
            stop = first_month_on_or_after(end) if end is not None else 10**6
            if stop > first:
                spans.append((first, stop))
        return spans

    def to_dict(self, adoption_month: int | None) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "county_fips": self.county_fips,
            "state": self.state,
            "county_name": self.county_name,
            "origin": self.origin,
            "agreements": [
                {"start": s.isoformat(), "end": e.isoformat() if e is not None else None}
                for s, e in self.intervals
            ],
            "adoption_month": month_start(adoption_month).isoformat() if adoption_month is not None else None,
            "registry_rows": list(self.registry_rows),
        }


@dataclass(frozen=True, slots=True)
class Counties:
    """The counties of the drawn states, sorted by FIPS, with what the process needs about them."""

    fips: tuple[str, ...]
    state: tuple[str, ...]
    name: tuple[str, ...]
    lat: np.ndarray
    lng: np.ndarray
    population: np.ndarray  # total, 2010
    shares: np.ndarray  # [county, year 2010..2019, race] population shares


@cache
def load_counties(states: tuple[str, ...]) -> Counties:
    """Counties of ``states`` with centroids, 2010 population and yearly race shares."""
    geo = county_centroids().filter(pl.col("state").is_in(states)).sort("county_fips")
    for s in states:
        n = geo.filter(pl.col("state") == s).height
        if n != COUNTIES_PER_STATE[s]:
            raise ReferenceDataError(
                f"geo.county_centroids() has {n} counties for {s}; the generator expects "
                f"{COUNTIES_PER_STATE[s]}"
            )
    fips = geo["county_fips"].to_list()
    pop = load_population().filter(pl.col("county_fips").is_in(fips))
    y0, y1 = CENSUS_YEARS
    grid = pl.DataFrame(
        {
            "county_fips": np.repeat(fips, (y1 - y0 + 1) * len(DGP_RACES)),
            "year": np.tile(np.repeat(np.arange(y0, y1 + 1, dtype=np.int32), len(DGP_RACES)), len(fips)),
            "race": np.tile(DGP_RACES, len(fips) * (y1 - y0 + 1)),
        }
    )
    full = grid.join(
        pop.select("county_fips", "year", "race", "population"),
        on=["county_fips", "year", "race"],
        how="left",
    )
    if full["population"].null_count():
        bad = full.filter(pl.col("population").is_null())["county_fips"].unique().sort().to_list()
        raise ReferenceDataError(f"census population lacks some years or races for counties {bad[:10]}")
    counts = full["population"].to_numpy().astype(float).reshape(len(fips), y1 - y0 + 1, len(DGP_RACES))
    totals = counts.sum(axis=2, keepdims=True)
    if (totals <= 0).any():
        raise ReferenceDataError("census population has a county-year with zero population")
    return Counties(
        fips=tuple(fips),
        state=tuple(geo["state"].to_list()),
        name=tuple(geo["county_name"].to_list()),
        lat=geo["lat"].to_numpy(),
        lng=geo["lng"].to_numpy(),
        population=counts[:, 0, :].sum(axis=1),
        shares=counts / totals,
    )


def registry_rows(spec: SynthSpec) -> pl.DataFrame:
    """Registry rows the registry design uses: a county FIPS in a drawn state, signed in its data years.

    Any model and any agency type count (a county is treated while any of its rows is in force).
    """
    return _registry_rows(spec.states)


@cache
def _registry_rows(states: tuple[str, ...]) -> pl.DataFrame:
    reg = load_registry()
    keep = pl.lit(False)
    for s in states:
        y0, y1 = STATE_YEARS[s]
        keep = keep | (
            (pl.col("state") == s)
            & pl.col("signed").dt.year().is_between(y0, y1)
            & pl.col("county_fips").is_not_null()
        )
    return reg.filter(keep).sort("registry_row")


def treatment_timing(spec: SynthSpec, counties: Counties, seed: int) -> list[CountyTiming]:
    """Treated counties and their agreement intervals under ``spec.design`` (and ``all_treated``)."""
    index = {f: i for i, f in enumerate(counties.fips)}
    timings: dict[str, CountyTiming] = {}
    rng = rng_for(seed, _STREAM_DESIGN)
    n = len(counties.fips)
    # Fixed draw order, whatever the design, so each draw means the same thing for a seed.
    order = rng.permutation(n)
    a0, a1 = date(spec.adoption_years[0], 1, 1).toordinal(), date(spec.adoption_years[1], 12, 31).toordinal()
    adopt = rng.integers(a0, a1 + 1, n)
    ends = rng.random(n) < spec.end_share
    durations = rng.uniform(2.0, 6.0, n)
    l0, l1 = (
        date(spec.late_adoption_years[0], 1, 1).toordinal(),
        date(spec.late_adoption_years[1], 12, 31).toordinal(),
    )
    late = rng.integers(l0, l1 + 1, n)

    if spec.design == "registry":
        rows = registry_rows(spec)
        for fips in sorted(set(rows["county_fips"].to_list())):
            if fips not in index:
                raise ReferenceDataError(f"registry county_fips {fips} is not a county of {spec.states}")
            sub = rows.filter(pl.col("county_fips") == fips)
            i = index[fips]
            timings[fips] = CountyTiming(
                fips,
                counties.state[i],
                counties.name[i],
                "registry",
                tuple(zip(sub["signed"].to_list(), sub["ended"].to_list(), strict=True)),
                tuple(sub["registry_row"].to_list()),
            )
    else:
        for i in sorted(order[: spec.n_treated].tolist()):
            start = date.fromordinal(int(adopt[i]))
            end = start + timedelta(days=round(durations[i] * 365.25)) if ends[i] else None
            fips = counties.fips[i]
            timings[fips] = CountyTiming(
                fips, counties.state[i], counties.name[i], "random", ((start, end),), ()
            )
    if spec.all_treated:
        for i, fips in enumerate(counties.fips):
            if fips not in timings:
                start = date.fromordinal(int(late[i]))
                timings[fips] = CountyTiming(
                    fips, counties.state[i], counties.name[i], "late", ((start, None),), ()
                )
    return [timings[f] for f in sorted(timings)]


@dataclass(frozen=True, slots=True)
class StatePlan:
    """One state's county x month skeleton; arrays are [county, month, ...] over the drawn subset."""

    state: str
    fips: tuple[str, ...]
    name: tuple[str, ...]
    lat: np.ndarray
    lng: np.ndarray
    months: np.ndarray  # month indices
    mu: np.ndarray  # [C, T, A, R] expected stops by agency and race (relative scale)
    lam: np.ndarray  # [C, T] total intensity
    n: np.ndarray  # [C, T] stops allocated to each county-month
    rows: int
    agency_share: np.ndarray  # [C, A]
    in_force: np.ndarray  # [C, T] an agreement is in force on the month's first day
    on: np.ndarray  # [C, T] the planted effect is on (in_force, or since adoption if absorbing)
    adoption: np.ndarray  # [C] first in-force month index, -1 if never
    officer_effect: np.ndarray  # [C, T] theta_ct for state-patrol stops (0 when off)
    composition: np.ndarray  # [C, T] change in Hispanic log odds from driver composition (all agencies)
    pretrend: np.ndarray  # [C, T] pre-adoption trend in the Hispanic log odds (all agencies)
    unknown_share: float
    county_na_share: float

    @property
    def state_index(self) -> int:
        """Position of the state in :data:`STATES` (part of the random-stream keys)."""
        return STATES.index(self.state)


def split_rows(rows: int, states: tuple[str, ...]) -> dict[str, int]:
    """Split ``rows`` between states in the study's proportion (all to one state if only one)."""
    if len(states) == 1:
        return {states[0]: rows}
    total = sum(STATE_ROW_WEIGHTS[s] for s in states)
    out: dict[str, int] = {}
    left = rows
    for s in states[:-1]:
        out[s] = round(rows * STATE_ROW_WEIGHTS[s] / total)
        left -= out[s]
    out[states[-1]] = left
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The skeleton of one draw: per-state plans, treatment timing and what produced them."""

    spec: SynthSpec
    seed: int
    states: Mapping[str, StatePlan]
    timing: tuple[CountyTiming, ...]
    registry: pl.DataFrame | None


def _state_arrays(
    spec: SynthSpec,
    seed: int,
    counties: Counties,
    state: str,
    timing: Mapping[str, CountyTiming],
    wanted: set[str] | None,
) -> dict[str, np.ndarray]:
    """Full-window county x month arrays of one state's counties (all, or those in ``wanted``)."""
    idx = [
        i
        for i, s in enumerate(counties.state)
        if s == state and (wanted is None or counties.fips[i] in wanted)
    ]
    if not idx:
        return {}
    y0, y1 = STATE_YEARS[state]
    months = np.arange(y0 * 12, y1 * 12 + 12)
    c_n, t_n = len(idx), len(months)
    fips = [counties.fips[i] for i in idx]

    # Volume and shock paths, one keyed stream per county.
    level = np.empty(c_n)
    trend = np.empty(c_n)
    gam = np.empty((c_n, t_n))
    missing = np.empty((c_n, t_n), dtype=bool)
    z = np.empty((c_n, t_n))
    for j, f in enumerate(fips):
        g = rng_for(seed, _STREAM_COUNTY, int(f))
        level[j] = g.normal(0.0, LEVEL_SD)
        trend[j] = g.normal(0.0, spec.trend_sd) if spec.trend_sd > 0 else 0.0
        gam[j] = g.gamma(spec.dispersion, 1.0 / spec.dispersion, t_n)
        missing[j] = g.random(t_n) < spec.missing_cell_share
        z[j] = g.standard_normal(t_n)
    # AR(1) with a stationary start: u_0 = sd z_0, u_t = rho u_{t-1} + sd sqrt(1 - rho^2) z_t.
    rho, sd = spec.shock_rho, spec.shock_sd
    e = z * sd * np.sqrt(1.0 - rho**2)
    e[:, 0] = z[:, 0] * sd
    shock = lfilter([1.0], [1.0, -rho], e, axis=1)

    years = np.clip(months // 12, *CENSUS_YEARS) - CENSUS_YEARS[0]
    moy = months % 12 + 1
    season = 1.0 + spec.seasonality * np.cos(2.0 * np.pi * (moy - 7) / 12.0)
    centre = (months[0] + months[-1]) / 2.0
    volume = (
        (counties.population[idx] ** spec.pop_exponent * np.exp(level))[:, None]
        * np.exp(trend[:, None] * (months[None, :] - centre) / 12.0)
        * season[None, :]
        * gam
        * ~missing
    )

    # Treatment timing per month (first-day rule) and the planted components.
    in_force = np.zeros((c_n, t_n), dtype=bool)
    adoption = np.full(c_n, -1)
    for j, f in enumerate(fips):
        t = timing.get(f)
        if t is None:
            continue
        spans = t.month_spans()
        if not spans:
            continue
        adoption[j] = min(s for s, _ in spans)
        for s, e_ in spans:
            in_force[j] |= (months >= s) & (months < e_)
    treated = adoption >= 0
    since = months[None, :] - adoption[:, None]  # months since adoption (meaningless if untreated)
    on = treated[:, None] & (since >= 0) if spec.exit == "absorbing" else in_force.copy()
    event_year = np.floor_divide(since, 12)
    cohort = np.where(treated, adoption // 12, COHORT_CENTER)
    effect_level = (
        spec.theta
        + spec.cohort_slope * (cohort[:, None] - COHORT_CENTER)
        + spec.effect_growth * np.clip(event_year, 0, spec.growth_cap_years)
    )
    officer = np.where(on, effect_level, 0.0)
    composition = np.where(on, -spec.composition, 0.0)
    pretrend = np.where(treated[:, None] & (since < 0), spec.pretrend * since / 12.0, 0.0)

    # Agency shares and race intensities.
    share = np.zeros((c_n, len(AGENCIES)))
    has_pd = np.array([f in POLICE_DEPARTMENTS for f in fips])
    share[:, 0] = spec.state_patrol_share
    share[:, 2] = np.where(has_pd, POLICE_SHARE, 0.0)
    share[:, 1] = 1.0 - share[:, 0] - share[:, 2]
    if (share[:, 1] < 0).any():
        # state_patrol_share close to 1: police take what is left, sheriff nothing.
        share[:, 2] = np.minimum(share[:, 2], 1.0 - share[:, 0])
        share[:, 1] = 1.0 - share[:, 0] - share[:, 2]
    pop_share = counties.shares[idx][:, years, :]  # [C, T, R]
    q = pop_share[:, :, None, :] * BASE_RATE[None, None, :, :]  # [C, T, A, R]
    q /= q.sum(axis=3, keepdims=True)
    eta = np.zeros((c_n, t_n, len(AGENCIES), len(DGP_RACES)))
    eta[:, :, :, HISP] = (shock + pretrend + composition)[:, :, None]
    eta[:, :, SP, HISP] += officer
    mu = volume[:, :, None, None] * share[:, None, :, None] * q * np.exp(eta)
    return {
        "idx": np.array(idx),
        "months": months,
        "mu": mu,
        "share": share,
        "in_force": in_force,
        "on": on,
        "adoption": adoption,
        "officer": officer,
        "composition": composition,
        "pretrend": pretrend,
    }


_LAST_PLAN: dict[tuple[object, ...], Plan] = {}


def build_plan(
    spec: SynthSpec,
    *,
    seed: int,
    rows: int | None,
    counties: Iterable[str] | None = None,
    years: tuple[int, int] | None = None,
) -> Plan:
    """The skeleton of the process for ``spec`` and ``seed`` (see :func:`_build_plan`).

    The last plan is kept: a Monte Carlo draw asks for the same plan for its cells, its truth and its
    cell truths. Its arrays are read-only, so that no caller can change what the next one gets.
    """
    key = (
        spec,
        seed,
        rows,
        None if counties is None else tuple(str(c) for c in counties),
        None if years is None else tuple(years),
    )
    plan = _LAST_PLAN.get(key)
    if plan is None:
        plan = _build_plan(spec, seed=seed, rows=rows, counties=key[3], years=years)
        for sp_ in plan.states.values():
            for value in (getattr(sp_, f) for f in sp_.__slots__):  # type: ignore[attr-defined]
                if isinstance(value, np.ndarray):
                    value.flags.writeable = False
        _LAST_PLAN.clear()
        _LAST_PLAN[key] = plan
    return plan


def _build_plan(
    spec: SynthSpec,
    *,
    seed: int,
    rows: int | None,
    counties: Iterable[str] | None = None,
    years: tuple[int, int] | None = None,
) -> Plan:
    """Draw the skeleton of the process for ``spec`` and ``seed``.

    ``rows`` is the total number of stops (split between states 9.56 : 8.44); ``None`` takes the
    study's 18M scaled to the share of the expected volume that the subset covers. ``counties``
    (FIPS) and ``years`` (first, last) restrict the panel.
    """
    check_seed(seed)
    if rows is not None:
        check_rows(rows)
    info = load_counties(spec.states)
    timing = treatment_timing(spec, info, seed)
    by_fips = {t.county_fips: t for t in timing}
    wanted = None
    if counties is not None:
        wanted = {str(c) for c in counties}
        unknown = sorted(wanted - set(info.fips))
        if unknown:
            raise SpecificationError(
                f"counties must be FIPS codes of counties in {list(spec.states)}; got unknown {unknown[:10]}"
            )
    if years is not None and (
        not isinstance(years, tuple | list) or len(years) != 2 or not int(years[0]) <= int(years[1])
    ):
        raise SpecificationError(f"years must be a pair (first, last) with first <= last; got {years!r}")

    # The default size needs every county's volume (to scale 18M to the subset); otherwise compute
    # only the counties drawn -- their keyed streams make them the same as in the full panel.
    compute = None if rows is None else wanted
    full: dict[str, dict[str, np.ndarray]] = {}
    keep: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in spec.states:
        arr = _state_arrays(spec, seed, info, s, by_fips, compute)
        if not arr:
            continue
        cmask = np.array([wanted is None or info.fips[i] in wanted for i in arr["idx"]])
        tmask = np.ones(len(arr["months"]), dtype=bool)
        if years is not None:
            y = arr["months"] // 12
            tmask = (y >= int(years[0])) & (y <= int(years[1]))
        if cmask.any() and tmask.any():
            full[s] = arr
            keep[s] = (cmask, tmask)
    if not full:
        raise SpecificationError(
            f"the subset (counties={sorted(wanted)[:5] if wanted else None}, years={years}) leaves no "
            f"county-month in {list(spec.states)} (NC 2000-2015, SC 2005-2016)"
        )
    present = tuple(full)
    if rows is None:
        target = split_rows(DEFAULT_ROWS, spec.states)
        per_state = {}
        for s in present:
            lam = full[s]["mu"].sum(axis=(2, 3))
            cm, tm = keep[s]
            per_state[s] = round(target[s] * lam[np.ix_(cm, tm)].sum() / lam.sum())
    else:
        per_state = split_rows(rows, present)

    plans: dict[str, StatePlan] = {}
    for s in present:
        arr, (cm, tm) = full[s], keep[s]
        idx = arr["idx"][cm]
        sub = np.ix_(cm, tm)
        mu = arr["mu"][cm][:, tm]
        lam = mu.sum(axis=(2, 3))
        total = lam.sum()
        if total <= 0:
            raise SpecificationError(f"the subset of {s} has no expected stops (every county-month missing)")
        alloc = rng_for(seed, _STREAM_ALLOC, STATES.index(s))
        n = alloc.multinomial(per_state[s], (lam / total).ravel()).reshape(lam.shape)
        plans[s] = StatePlan(
            state=s,
            fips=tuple(info.fips[i] for i in idx),
            name=tuple(info.name[i] for i in idx),
            lat=info.lat[idx],
            lng=info.lng[idx],
            months=arr["months"][tm],
            mu=mu,
            lam=lam,
            n=n,
            rows=int(per_state[s]),
            agency_share=arr["share"][cm],
            in_force=arr["in_force"][sub],
            on=arr["on"][sub],
            adoption=arr["adoption"][cm],
            officer_effect=arr["officer"][sub],
            composition=arr["composition"][sub],
            pretrend=arr["pretrend"][sub],
            unknown_share=spec.unknown_race_share,
            county_na_share=spec.county_na_share if s == "NC" else 0.0,
        )
    reg = registry_rows(spec) if spec.design == "registry" else None
    return Plan(spec=spec, seed=seed, states=MappingProxyType(plans), timing=tuple(timing), registry=reg)


def check_seed(seed: object) -> None:
    """Raise :class:`SpecificationError` unless ``seed`` is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecificationError(f"seed must be a non-negative integer; got {seed!r}")


def check_rows(rows: object) -> None:
    """Raise :class:`SpecificationError` unless ``rows`` is an integer in [0, 10**10]."""
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or not 0 <= rows <= 10**10:
        raise SpecificationError(f"rows must be an integer in [0, 10000000000]; got {rows!r}")


def draw_cells(plan: StatePlan, seed: int) -> np.ndarray:
    """Draw every county-month's stops as counts [county, month, agency, race, masked, county_na].

    Agency x race ~ Multinomial(n_ct, mu_ct / lambda_ct); race recorded ``unknown``
    ~ Binomial(count, unknown_share); for state-patrol stops, county recorded ``NA``
    ~ Binomial(count, county_na_share). One keyed stream per state; stop-level files expand exactly
    these counts, so files and :func:`stopdisparity.synth.cells` agree draw for draw.
    """
    rng = rng_for(seed, _STREAM_CELLS, plan.state_index)
    c_n, t_n, a_n, r_n = plan.mu.shape
    mu = plan.mu.reshape(c_n * t_n, a_n * r_n)
    lam = mu.sum(axis=1, keepdims=True)
    p = np.divide(mu, lam, out=np.full_like(mu, 1.0 / mu.shape[1]), where=lam > 0)
    x = rng.multinomial(plan.n.ravel(), p).reshape(c_n, t_n, a_n, r_n)
    unknown = rng.binomial(x, plan.unknown_share)
    known = x - unknown
    na_known = rng.binomial(known[:, :, SP], plan.county_na_share)
    na_unknown = rng.binomial(unknown[:, :, SP], plan.county_na_share)
    out = np.zeros((*x.shape, 2, 2), dtype=np.int64)
    out[..., 0, 0] = known
    out[..., 1, 0] = unknown
    out[:, :, SP, :, 0, 0] -= na_known
    out[:, :, SP, :, 1, 0] -= na_unknown
    out[:, :, SP, :, 0, 1] = na_known
    out[:, :, SP, :, 1, 1] = na_unknown
    return out


def month_rng(seed: int, plan: StatePlan, t: int) -> np.random.Generator:
    """The random stream of the stop attributes of month position ``t`` (keyed by state and month)."""
    return rng_for(seed, _STREAM_MONTH, plan.state_index, int(plan.months[t]))
