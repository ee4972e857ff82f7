"""The specification of a synthetic draw: :class:`SynthSpec` and the named scenarios.

A spec is a frozen, validated value. Fields that a scenario decides (the effect size, its dynamics,
pre-trends, composition change, exit rule, ...) default to ``None`` and are filled from the scenario's
preset in ``__post_init__``; any of them can be overridden, e.g.
``SynthSpec(scenario="constant", theta=1.0)``. After construction every field holds a concrete value,
so ``dataclasses.asdict(spec)`` is the complete list of planted parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Final, Literal

from stopdisparity.errors import SpecificationError, check_choice

#: States the generator can write, in file order.
STATES: Final = ("NC", "SC")
#: Number of counties per state (Census 2010 geography); checked against ``geo`` when drawing.
COUNTIES_PER_STATE: Final[Mapping[str, int]] = MappingProxyType({"NC": 100, "SC": 46})
#: Years covered by each state's file (OPP statewide releases used by the Texas A&M study).
STATE_YEARS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType({"NC": (2000, 2015), "SC": (2005, 2016)})

Design = Literal["registry", "random"]
Exit = Literal["in_force", "absorbing"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named preset of the scenario-dependent fields of :class:`SynthSpec`."""

    name: str
    code: str
    description: str
    values: Mapping[str, object]


_ZERO: Final = {
    "theta": 0.0,
    "effect_growth": 0.0,
    "cohort_slope": 0.0,
    "pretrend": 0.0,
    "composition": 0.0,
    "exit": "in_force",
    "all_treated": False,
    "end_share": 0.0,
}


def _scenario(name: str, code: str, description: str, **values: object) -> Scenario:
    return Scenario(name, code, description, MappingProxyType({**_ZERO, **values}))


#: The named scenarios, S0-S5.
SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {
        s.name: s
        for s in (
            _scenario("null", "S0", "no effect: theta = 0"),
            _scenario(
                "constant",
                "S1",
                "constant effect: state-patrol Hispanic-vs-White log odds +0.3 while an agreement is "
                "in force",
                theta=0.3,
            ),
            _scenario(
                "dynamic",
                "S2",
                "effect heterogeneous by adoption cohort (earlier cohorts larger) and growing with event "
                "time in years; every county is eventually treated (staggered), treatment absorbing",
                theta=0.15,
                effect_growth=0.08,
                cohort_slope=-0.02,
                exit="absorbing",
                all_treated=True,
            ),
            _scenario(
                "pretrend",
                "S3",
                "constant effect 0.3 plus a differential Hispanic trend (+0.05 log odds a year) in "
                "treated counties before adoption",
                theta=0.3,
                pretrend=0.05,
            ),
            _scenario(
                "composition",
                "S4",
                "no officer effect; Hispanic driving falls (log -0.3) in treated counties while the "
                "agreement is in force, so Hispanic stop volume falls for every agency",
                composition=0.3,
            ),
            _scenario(
                "switch_off",
                "S5",
                "constant effect 0.3 that switches off when the agreement ends (random design: half of "
                "the agreements end 2-6 years after adoption; under the registry design this equals "
                "constant, whose effect already follows the registry's end dates)",
                theta=0.3,
                end_share=0.5,
            ),
        )
    }
)

#: Fields whose default comes from the scenario preset.
SCENARIO_FIELDS: Final = tuple(_ZERO)


def _check_range(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        raise SpecificationError(f"{name} must be {kind} in [{low}, {high}]; got {value!r}")
    if not (math.isfinite(float(value)) and low <= value <= high):
        raise SpecificationError(f"{name} must be {kind} in [{low}, {high}]; got {value!r}")


def _check_years(name: str, value: object, low: int, high: int) -> tuple[int, int]:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not (low <= value[0] <= value[1] <= high)
    ):
        raise SpecificationError(
            f"{name} must be a pair of years (first, last) with {low} <= first <= last <= {high}; "
            f"got {value!r}"
        )
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True, kw_only=True, slots=True)
class SynthSpec:
    """What a synthetic draw plants: scenario, treatment design and the nuisance structure.

    Parameters
    ----------
    scenario
        One of :data:`SCENARIOS` (``null``, ``constant``, ``dynamic``, ``pretrend``, ``composition``,
        ``switch_off``). It fills every field left at ``None``.
    design
        ``registry``: the real NC/SC county agreements of the shipped 287(g) registry (rows with a
        county FIPS in a drawn state and a signed date inside that state's data years, any model and
        agency type; a county is treated while any of its rows is in force). ``random``: ``n_treated``
        counties drawn by seed, adoption dates uniform over ``adoption_years``.
    states
        States to draw, a subset of ``("NC", "SC")``.
    n_treated
        Number of treated counties under the random design (at most the number of counties drawn).
    adoption_years, late_adoption_years
        Window of random adoption dates; window of the dates given to the remaining counties when
        ``all_treated`` is true.
    theta
        Officer effect: added to the Hispanic log odds of state-patrol stops while the effect is on.
    effect_growth, growth_cap_years
        Added effect per full year since adoption, up to ``growth_cap_years`` years.
    cohort_slope
        Added effect per adoption year after 2008 (negative: earlier cohorts have larger effects).
    pretrend
        Hispanic log-odds trend per year before adoption in treated counties (every agency), reaching 0
        at adoption.
    composition
        Fall in Hispanic driving (log scale, every agency) while the effect is on.
    exit
        ``in_force``: the effect follows the agreement and switches off at ``ended``; ``absorbing``: it
        stays on from adoption.
    all_treated
        Give every county not otherwise treated an adoption date in ``late_adoption_years``.
    end_share
        Random design: share of agreements that end, 2-6 years after adoption.
    shock_sd, shock_rho
        Stationary sd and autocorrelation of the county x month AR(1) shock to the Hispanic log odds.
    dispersion
        Gamma shape of the county x month volume intensity (smaller: more over-dispersed).
    pop_exponent, trend_sd, seasonality
        County level proportional to population**pop_exponent; sd of the county log-linear trend per
        year; amplitude of the monthly cycle.
    missing_cell_share
        Share of county-months with no stops at all.
    unknown_race_share
        Share of stops whose race is recorded ``unknown`` (independent of everything else).
    county_na_share
        Share of North Carolina state-patrol stops coded by patrol district only (county ``NA``).
    time_na_share
        Share of North Carolina stops with time ``NA``.
    coords_share
        Share of South Carolina stops with lat/lng.
    state_patrol_share
        Share of a county's stops made by the state patrol at baseline.

    Raises
    ------
    SpecificationError
        If a field is outside its allowed range; the message quotes the value and the range.
    """

    scenario: str = "constant"
    design: Design = "registry"
    states: tuple[str, ...] = STATES
    n_treated: int = 50
    adoption_years: tuple[int, int] = (2006, 2010)
    late_adoption_years: tuple[int, int] = (2011, 2014)
    theta: float | None = None
    effect_growth: float | None = None
    growth_cap_years: int = 5
    cohort_slope: float | None = None
    pretrend: float | None = None
    composition: float | None = None
    exit: Exit | None = None
    all_treated: bool | None = None
    end_share: float | None = None
    shock_sd: float = 0.2
    shock_rho: float = 0.5
    dispersion: float = 4.0
    pop_exponent: float = 0.8
    trend_sd: float = 0.04
    seasonality: float = 0.1
    missing_cell_share: float = 0.003
    unknown_race_share: float = 0.03
    county_na_share: float = 0.015
    time_na_share: float = 0.5
    coords_share: float = 0.23
    state_patrol_share: float = 0.85

    def __post_init__(self) -> None:
        check_choice("scenario", self.scenario, SCENARIOS)
        check_choice("design", self.design, ("registry", "random"))
        preset = SCENARIOS[self.scenario].values
        for name in SCENARIO_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, preset[name])
        states = self.states
        if isinstance(states, str) or not isinstance(states, tuple | list) or not states:
            raise SpecificationError(f"states must be a non-empty subset of {list(STATES)}; got {states!r}")
        for s in states:
            check_choice("states element", s, STATES)
        if len(set(states)) != len(states):
            raise SpecificationError(f"states must not repeat a state; got {states!r}")
        object.__setattr__(self, "states", tuple(s for s in STATES if s in states))
        # n_treated only matters to the random design; there it cannot exceed the counties drawn.
        n_counties = sum(COUNTIES_PER_STATE[s] for s in self.states) if self.design == "random" else 146
        _check_range("n_treated", self.n_treated, 1, n_counties, integer=True)
        object.__setattr__(
            self, "adoption_years", _check_years("adoption_years", self.adoption_years, 2000, 2016)
        )
        object.__setattr__(
            self,
            "late_adoption_years",
            _check_years("late_adoption_years", self.late_adoption_years, 2000, 2016),
        )
        _check_range("theta", self.theta, -5.0, 5.0)
        _check_range("effect_growth", self.effect_growth, -2.0, 2.0)
        _check_range("growth_cap_years", self.growth_cap_years, 0, 20, integer=True)
        _check_range("cohort_slope", self.cohort_slope, -1.0, 1.0)
        _check_range("pretrend", self.pretrend, -1.0, 1.0)
        _check_range("composition", self.composition, 0.0, 3.0)
        check_choice("exit", self.exit, ("in_force", "absorbing"))
        if not isinstance(self.all_treated, bool):
            raise SpecificationError(f"all_treated must be True or False; got {self.all_treated!r}")
        _check_range("end_share", self.end_share, 0.0, 1.0)
        _check_range("shock_sd", self.shock_sd, 0.0, 2.0)
        _check_range("shock_rho", self.shock_rho, 0.0, 0.99)
        _check_range("dispersion", self.dispersion, 0.1, 1000.0)
        _check_range("pop_exponent", self.pop_exponent, 0.0, 2.0)
        _check_range("trend_sd", self.trend_sd, 0.0, 1.0)
        _check_range("seasonality", self.seasonality, 0.0, 0.9)
        _check_range("missing_cell_share", self.missing_cell_share, 0.0, 0.2)
        _check_range("unknown_race_share", self.unknown_race_share, 0.0, 0.5)
        _check_range("county_na_share", self.county_na_share, 0.0, 0.5)
        _check_range("time_na_share", self.time_na_share, 0.0, 1.0)
        _check_range("coords_share", self.coords_share, 0.0, 1.0)
        _check_range("state_patrol_share", self.state_patrol_share, 0.5, 1.0)
        for name in ("theta", "effect_growth", "cohort_slope", "pretrend", "composition", "end_share"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("shock_sd", "shock_rho", "dispersion", "pop_exponent", "trend_sd", "seasonality"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict[str, object]:
        """Every field with its resolved value (JSON-ready: tuples become lists)."""
        out: dict[str, object] = {}
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
