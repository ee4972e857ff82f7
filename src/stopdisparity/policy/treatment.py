"""Treatment timing: a frozen :class:`TreatmentSpec` turns registry rows into county × period timing.

The output follows the staggered-adoption conventions of R's ``did`` and pyfixest (STYLE point 4):
``first_treated`` is the ``gname`` (the period index of a county's first adoption, 0 = never treated),
``rel_period`` the event time. Period indexes are ``year*12 + month - 1`` (month), ``year*4 + quarter
- 1`` (quarter) or ``year`` (year), so a real index is never 0.

References
----------
.. [1] Callaway, B. and Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time
   periods. Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
   (anticipation: Assumption 3; R package ``did``, argument ``anticipation``).
.. [2] Sun, L. and Abraham, S. (2021). Estimating dynamic treatment effects in event studies with
   heterogeneous treatment effects. Journal of Econometrics 225(2), 175-199.
   https://doi.org/10.1016/j.jeconom.2020.09.006
.. [3] U.S. Immigration and Customs Enforcement, 287(g) participating-agencies sheets (the source of
   the registry's ``signed`` dates). https://www.ice.gov/identify-and-arrest/287g
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.geo import canonical_fips, state_from_fips
from stopdisparity.periods import (
    FREQUENCIES,
    Frequency,
    make_periods,
    period_index,
    period_start,
    periods_range,
)
from stopdisparity.policy.registry import AGENCY_TYPES, CONFIDENCE_LEVELS, _agency_key

__all__ = [
    "EXIT_RULES",
    "FREQUENCIES",
    "KNOWN_MODELS",
    "MID_PERIOD_RULES",
    "UNKNOWN_MODEL_RULES",
    "TimingColumns",
    "TreatmentSpec",
    "TreatmentTiming",
    "make_periods",
    "period_index",
    "period_start",
    "policy_timing_columns",
    "treatment_timing",
]

KNOWN_MODELS = ("jail", "task_force", "warrant_service_officer")
"""The models a :class:`TreatmentSpec` can select; rows with ``model="unknown"`` follow ``unknown_model``."""
UNKNOWN_MODEL_RULES = ("treat_as_jail", "exclude_county", "treat_as_control")
EXIT_RULES = ("in_force", "absorbing", "censor")
MID_PERIOD_RULES = ("first_day", "any_day", "majority")

_OPEN_END = date(9999, 12, 31)
_CONFIDENCE_RANK = {level: i for i, level in enumerate(CONFIDENCE_LEVELS)}
_POLICY_NAME = re.compile(r"[a-z][a-z0-9_]*")
_FIPS = re.compile(r"\d{5}")


def _detect_frequency(periods: pl.DataFrame) -> Frequency | None:
    rows = list(periods.select("period", "period_start", "period_end").iter_rows())
    for freq in FREQUENCIES:
        try:
            if all(period_start(p, freq) == ps and period_start(p + 1, freq) == pe for p, ps, pe in rows):
                return freq
        except ValueError:  # an index outside the calendar
            continue
    return None


def _check_periods(periods: object) -> pl.DataFrame:
    if not isinstance(periods, pl.DataFrame):
        raise SpecificationError(f"periods must be a polars DataFrame; got {type(periods).__name__}")
    for name, ok, want in (
        ("period", lambda d: d.is_integer(), "an integer type"),
        ("period_start", lambda d: d == pl.Date, "Date"),
        ("period_end", lambda d: d == pl.Date, "Date"),
    ):
        if name not in periods.columns:
            raise SpecificationError(f"periods lacks column {name!r}; it has {periods.columns}")
        if not ok(periods.schema[name]):
            raise SpecificationError(f"periods column {name!r} must be {want}; got {periods.schema[name]}")
        if periods[name].null_count():
            raise SpecificationError(f"periods column {name!r} has null values")
    if periods.height == 0:
        raise SpecificationError("periods is empty; it needs at least one period")
    p = periods.select(pl.col("period").cast(pl.Int64), "period_start", "period_end").sort("period")
    idx = p["period"].to_list()
    if idx[0] <= 0:
        raise SpecificationError(
            f"period indexes must be positive (0 means never treated in first_treated); got {idx[0]}"
        )
    if any(b - a != 1 for a, b in itertools.pairwise(idx)):
        raise SpecificationError(
            f"periods must be consecutive integers; got {idx[:10]}{'...' if len(idx) > 10 else ''}"
        )
    starts, ends = p["period_start"].to_list(), p["period_end"].to_list()
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        if e <= s:
            raise SpecificationError(f"period {idx[i]}: period_end {e} is not after period_start {s}")
        if i + 1 < len(starts) and starts[i + 1] != e:
            raise SpecificationError(
                f"periods must be contiguous: period {idx[i]} ends {e} but period {idx[i + 1]} starts "
                f"{starts[i + 1]}"
            )
    return p


# --------------------------------------------------------------------------------------------------
# Column names for several policies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimingColumns:
    """Names of one policy's timing columns in a panel; see :func:`policy_timing_columns`."""

    in_force: str
    first_treated: str
    rel_period: str
    censored: str

    def mapping(self) -> dict[str, str]:
        """Base column name → this policy's column name (for ``DataFrame.rename``)."""
        return {
            "in_force": self.in_force,
            "first_treated": self.first_treated,
            "rel_period": self.rel_period,
            "censored": self.censored,
        }


def policy_timing_columns(name: str | None = None) -> TimingColumns:
    """Column names of a policy's timing, so several policies can enter one panel.

    Parameters
    ----------
    name : str or None, default None
        ``None`` for the main policy (``in_force``, ``first_treated``, ``rel_period``,
        ``censored``); otherwise a lower-case identifier (``"secure_communities"``) that suffixes
        each name after a double underscore.

    Returns
    -------
    TimingColumns

    Raises
    ------
    SpecificationError
        If ``name`` is not a lower-case identifier.

    Examples
    --------
    >>> policy_timing_columns("secure_communities").in_force
    'in_force__secure_communities'
    """
    if name is None:
        return TimingColumns("in_force", "first_treated", "rel_period", "censored")
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name):
        raise SpecificationError(
            f"policy name must be a lower-case identifier (letters, digits, _; starting with a letter); "
            f"got {name!r}"
        )
    return TimingColumns(
        f"in_force__{name}", f"first_treated__{name}", f"rel_period__{name}", f"censored__{name}"
    )


# --------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------


def _as_names(field: str, value: object, allowed: Sequence[str] | None) -> tuple[str, ...]:
    """A str or sequence of str as a tuple; checked against ``allowed`` (then in its order)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence | set | frozenset) or not all(isinstance(v, str) for v in value):
        raise SpecificationError(f"{field} must be a sequence of strings; got {value!r}")
    names = tuple(value)
    if allowed is not None:
        bad = [v for v in names if v not in allowed]
        if bad:
            hint = (
                "; rows with model 'unknown' are governed by unknown_model"
                if field == "models" and "unknown" in bad
                else ""
            )
            raise SpecificationError(f"{field} must hold values in {list(allowed)!r}; got {bad!r}{hint}")
        if not names:
            raise SpecificationError(f"{field} must not be empty; allowed values are {list(allowed)!r}")
        return tuple(a for a in allowed if a in names)
    return names


def _nonneg_int(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecificationError(f"{field} must be an integer >= 0 (periods); got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TreatmentSpec:
    """Which registry rows count as treatment, and how agreements become county × period timing.

    Parameters
    ----------
    models : sequence of str, default ("jail", "task_force", "warrant_service_officer")
        The known models that count: all of them by default. Stored in this canonical order. Rows
        whose model is ``"unknown"`` are not selected here but by ``unknown_model``.
    agency_types : sequence of str, default all of ("sheriff", "police", "corrections", "state", "other")
        The agency types that count. Only rows with a ``county_fips`` can treat a county, so
        municipal and state agencies (empty FIPS) never enter county timing whatever this says.
    min_confidence : {"low", "medium", "high"}, default "low"
        Rows rated below this do not count. ``"low"`` keeps every row, including unrated ones (empty
        ``confidence``, as in most user files); ``"medium"`` and ``"high"`` drop unrated rows too.
    unknown_model : {"treat_as_jail", "exclude_county", "treat_as_control"}, default "treat_as_jail"
        What a row with ``model="unknown"`` does: count as a jail agreement (and so count iff
        ``"jail"`` is in ``models``); remove its county from the timing (listed in
        :attr:`TreatmentTiming.excluded`, so the panel can log it) — neither treated nor control;
        or not count (its county is a control unless another row treats it).
    exit : {"in_force", "absorbing", "censor"}, default "in_force"
        After a county's agreements end: ``in_force`` switches it off (and on again if a new one
        starts); ``absorbing`` keeps it on from its first adoption; ``censor`` keeps ``in_force`` as
        under ``in_force`` but marks every county-period from the first switch-off on as
        ``censored`` (for the panel to drop).
    start_lag : int, default 0
        Periods between an adoption and the first treated period (training, 287(g) officers'
        certification). Each switch-on — the first and any later re-adoption — is moved ``k`` periods
        later; a spell shorter than ``k`` periods never switches the county on. The end is unchanged.
    anticipation : int, default 0
        Periods before the (lagged) first adoption in which behaviour may already change. See Notes.
    mid_period : {"first_day", "any_day", "majority"}, default "first_day"
        When a period with an adoption or end in its middle counts as treated: agreements are in
        force on ``[signed, ended)``, and a period is treated if that set (the union of the county's
        counted agreements) contains its first day (``first_day``), any of its days (``any_day``), or
        more than half of its days (``majority``).
    exclude_agencies : sequence of str, default ()
        Agencies whose rows do not count (names compared with
        :func:`~stopdisparity.policy.agency_key`: case, punctuation and common abbreviations ignored).
        The panel's spillover design passes the stopping agency here.
    only_agencies : sequence of str or None, default None
        If given, only these agencies' rows count (the panel's direct design). Applied before
        ``exclude_agencies``.

    Raises
    ------
    SpecificationError
        If any field is outside its allowed values; the message quotes the value and what is allowed.

    Notes
    -----
    **Defaults.** The defaults count *every* row: all models, all agency types, every confidence,
    unknown models as treatment, no lag, no anticipation. This is the rule for a user's policy file
    ("every row counts unless filtered") and also for the shipped 287(g) registry, whose documented
    defaults are these. ``unknown_model="treat_as_jail"`` is the default because a recorded
    agreement of unrecorded type is still an agreement: counting it as a control would put treated
    county-periods in the comparison group, which biases the DiD towards zero, while excluding the
    county discards it — that is the robustness check (``"exclude_county"``). "Jail" is the likely
    type: the NC/SC county agreements of 2006-2012 with a known type were jail agreements except
    three task-force ones (shipped registry). ``mid_period="first_day"`` makes a period treated only
    if it is treated throughout its start, so an adoption month is never half-counted;
    ``exit="in_force"`` uses the real end dates (the Texas A&M design's ``in_force``).

    **Anticipation.** ``anticipation=k`` does not move any timing column: ``first_treated`` and
    ``rel_period`` stay at the real (lagged) adoption, and ``in_force`` keeps the real dates. The
    value travels with the panel's lineage, and estimators take it as their default: an event study
    uses reference period ``-1 - k`` (DESIGN.md) and a staggered estimator uses ``g - 1 - k`` as the
    base period and only units not yet treated by ``t + k`` as controls — the convention of R's
    ``did`` (Callaway & Sant'Anna 2021, [1]_, Assumption 3), so the anticipation is applied exactly
    once, by the estimator.

    **Order of the steps.** Filter rows (counties, agency types, confidence, agencies), resolve
    unknown models, select models, take the union of each county's agreements, apply
    ``mid_period``, ``start_lag``, then ``exit`` (``anticipation`` changes no column).

    Examples
    --------
    >>> TreatmentSpec(models=("jail",), exit="absorbing").models
    ('jail',)
    """

    models: tuple[str, ...] = KNOWN_MODELS
    agency_types: tuple[str, ...] = AGENCY_TYPES
    min_confidence: str = "low"
    unknown_model: str = "treat_as_jail"
    exit: str = "in_force"
    start_lag: int = 0
    anticipation: int = 0
    mid_period: str = "first_day"
    exclude_agencies: tuple[str, ...] = ()
    only_agencies: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", _as_names("models", self.models, KNOWN_MODELS))
        object.__setattr__(self, "agency_types", _as_names("agency_types", self.agency_types, AGENCY_TYPES))
        check_choice("min_confidence", self.min_confidence, CONFIDENCE_LEVELS)
        check_choice("unknown_model", self.unknown_model, UNKNOWN_MODEL_RULES)
        check_choice("exit", self.exit, EXIT_RULES)
        check_choice("mid_period", self.mid_period, MID_PERIOD_RULES)
        _nonneg_int("start_lag", self.start_lag)
        _nonneg_int("anticipation", self.anticipation)
        exclude = _as_names("exclude_agencies", self.exclude_agencies, None)
        object.__setattr__(self, "exclude_agencies", exclude)
        if self.only_agencies is not None:
            only = _as_names("only_agencies", self.only_agencies, None)
            if not only:
                raise SpecificationError("only_agencies must be None or name at least one agency; got ()")
            object.__setattr__(self, "only_agencies", only)
        for field in ("exclude_agencies", "only_agencies"):
            for name in getattr(self, field) or ():
                if not _agency_key(name):
                    raise SpecificationError(f"{field} holds a name without letters or digits: {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples as lists), for lineage records."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreatmentTiming:
    """County × period treatment timing; returned by :func:`treatment_timing`.

    Attributes
    ----------
    frame : polars.DataFrame
        One row per county × period (counties in :attr:`excluded` left out), sorted by county and
        period: ``county_fips`` (as given), ``period`` (Int64), ``in_force`` (Boolean),
        ``first_treated`` (Int64, 0 = never treated), ``rel_period`` (Int64, null if never
        treated), ``censored`` (Boolean; only ever true with ``exit="censor"``).
    rows_used : polars.DataFrame
        The registry rows behind the timing: ``county_fips, registry_row, state, agency,
        agency_type, model, counted_as`` (the model it counted as: ``jail`` for an unknown model
        under ``treat_as_jail``), ``signed, ended, confidence``.
    summary : polars.DataFrame
        Treated counties (``first_treated`` ≠ 0) by ``state``, ``model`` (the models in force at the
        first adoption, joined with ``+``) and ``cohort_year`` (year in which the ``first_treated``
        period starts): column ``counties``.
    excluded : polars.DataFrame
        Counties removed by ``unknown_model="exclude_county"``: ``county_fips, registry_row, agency,
        reason``.
    spec : TreatmentSpec
    notes : tuple of str
        What the filters did (rows outside ``counties``, rows without a county, filtered rows,
        agency names that matched nothing, counties treated before the first period).
    """

    frame: pl.DataFrame
    rows_used: pl.DataFrame
    summary: pl.DataFrame
    excluded: pl.DataFrame
    spec: TreatmentSpec
    notes: tuple[str, ...]

    def named(self, name: str | None) -> pl.DataFrame:
        """:attr:`frame` with the timing columns renamed by :func:`policy_timing_columns`."""
        return self.frame.rename(policy_timing_columns(name).mapping())


_TIMING_SCHEMA = {
    "county_fips": pl.String,
    "period": pl.Int64,
    "in_force": pl.Boolean,
    "first_treated": pl.Int64,
    "rel_period": pl.Int64,
    "censored": pl.Boolean,
}
_ROWS_USED_SCHEMA = {
    "county_fips": pl.String,
    "registry_row": pl.Int64,
    "state": pl.String,
    "agency": pl.String,
    "agency_type": pl.String,
    "model": pl.String,
    "counted_as": pl.String,
    "signed": pl.Date,
    "ended": pl.Date,
    "confidence": pl.String,
}
_EXCLUDED_SCHEMA = {
    "county_fips": pl.String,
    "registry_row": pl.Int64,
    "agency": pl.String,
    "reason": pl.String,
}
_SUMMARY_SCHEMA = {"state": pl.String, "model": pl.String, "cohort_year": pl.Int32, "counties": pl.Int64}


def _check_registry(registry: object) -> pl.DataFrame:
    if not isinstance(registry, pl.DataFrame):
        raise SpecificationError(f"registry must be a polars DataFrame; got {type(registry).__name__}")
    needed = ("county_fips", "agency", "agency_type", "model", "signed", "ended")
    missing = [c for c in needed if c not in registry.columns]
    if missing:
        raise SpecificationError(
            f"registry lacks columns {missing}; load policy files with stopdisparity.policy.load_registry"
        )
    for c in ("signed", "ended"):
        if registry.schema[c] not in (pl.Date, pl.Null):
            raise SpecificationError(
                f"registry column {c!r} must be Date; got {registry.schema[c]} (use load_registry, "
                "which parses the dates)"
            )
    frame = registry
    if "registry_row" not in frame.columns:
        frame = frame.with_row_index("registry_row", offset=2)
    for c in ("confidence", "state"):
        if c not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(c))
    return frame.select(
        pl.col("registry_row").cast(pl.Int64),
        pl.col("state").cast(pl.String),
        pl.col("agency").cast(pl.String),
        pl.col("agency_type").cast(pl.String),
        pl.col("county_fips").cast(pl.String),
        pl.col("model").cast(pl.String),
        pl.col("signed").cast(pl.Date),
        pl.col("ended").cast(pl.Date),
        pl.col("confidence").cast(pl.String),
    )


def _check_counties(counties: object) -> list[str]:
    if isinstance(counties, str) or not isinstance(counties, Sequence | pl.Series):
        raise SpecificationError(f"counties must be a sequence of 5-digit FIPS strings; got {counties!r}")
    values = list(counties)
    bad = [c for c in values if not isinstance(c, str) or not _FIPS.fullmatch(c)]
    if bad:
        raise SpecificationError(f"counties must be 5-digit FIPS strings; got {bad[:5]!r}")
    counts: dict[str, int] = {}
    for c in values:
        counts[c] = counts.get(c, 0) + 1
    duplicates = sorted(c for c, n in counts.items() if n > 1)
    if duplicates:
        raise SpecificationError(f"counties must be distinct; {duplicates[:5]!r} appear more than once")
    return values


def _merge_spells(spells: list[tuple[date, date]]) -> list[tuple[date, date]]:
    """The union of half-open intervals ``[start, end)`` as disjoint, sorted intervals."""
    merged: list[tuple[date, date]] = []
    for start, end in sorted(spells):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _active_periods(intervals: pl.DataFrame, grid: pl.DataFrame, rule: str) -> pl.DataFrame:
    """(county, period) pairs that the mid-period rule marks as in force."""
    pairs = intervals.join(grid, how="cross")
    if rule == "first_day":
        hit = pairs.filter(
            (pl.col("start") <= pl.col("period_start")) & (pl.col("period_start") < pl.col("end"))
        )
    elif rule == "any_day":
        hit = pairs.filter(
            (pl.col("start") < pl.col("period_end")) & (pl.col("end") > pl.col("period_start"))
        )
    else:  # majority: the union's days inside the period exceed half the period's days
        overlap = (
            pl.min_horizontal("end", "period_end") - pl.max_horizontal("start", "period_start")
        ).dt.total_days()
        hit = (
            pairs.with_columns(overlap.clip(lower_bound=0).alias("days_in_force"))
            .group_by("county", "period", "period_start", "period_end")
            .agg(pl.col("days_in_force").sum())
            .filter(
                pl.col("days_in_force") * 2 > (pl.col("period_end") - pl.col("period_start")).dt.total_days()
            )
        )
    return hit.select("county", "period").unique()


def treatment_timing(
    registry: pl.DataFrame,
    spec: TreatmentSpec,
    periods: pl.DataFrame,
    *,
    counties: Sequence[str],
) -> TreatmentTiming:
    """Turn registry rows into county × period treatment timing under ``spec``.

    Parameters
    ----------
    registry : polars.DataFrame
        Policy rows as returned by :func:`~stopdisparity.policy.load_registry` (``signed`` and
        ``ended`` as Date; ``registry_row`` is carried into :attr:`TreatmentTiming.rows_used`).
    spec : TreatmentSpec
    periods : polars.DataFrame
        ``period`` (consecutive integers > 0), ``period_start`` (Date), ``period_end`` (Date,
        exclusive; each period ends where the next starts), e.g. from :func:`make_periods`.
    counties : sequence of str
        The panel's counties (5-digit FIPS). Every one gets a row per period; registry rows of other
        counties are ignored (and counted in :attr:`TreatmentTiming.notes`).

    Returns
    -------
    TreatmentTiming

    Raises
    ------
    SpecificationError
        If ``spec`` is not a TreatmentSpec, ``periods`` or ``counties`` are malformed, or the registry
        lacks a column or has undated ``signed``/``ended``.

    Notes
    -----
    A county is in force in a period if the union of its counted agreements, each in force on
    ``[signed, ended)`` (an empty ``ended`` = still in force), covers the period under
    ``spec.mid_period``. Several agencies or models in one county are united, so the county switches
    off only when no counted agreement is in force, and on again when a new one starts
    (``exit="in_force"``). Then ``start_lag`` and ``exit`` apply as described in
    :class:`TreatmentSpec`.

    ``first_treated`` is the first period in force (after ``start_lag``); it
    is computed from the full history, not just the requested periods, when the periods are months,
    quarters or years indexed as in DESIGN.md (detected from the frame), so a county adopting before
    the first period gets its real (earlier) ``first_treated`` and is "already treated" in the
    panel. A county whose first adoption comes after the last period is never treated
    (``first_treated = 0``), as R's ``did`` recodes it. For other period frames the history is cut at
    the first period, and counties in force there get that period (noted in ``notes``).
    """
    if not isinstance(spec, TreatmentSpec):
        raise SpecificationError(f"spec must be a TreatmentSpec; got {type(spec).__name__}")
    rows = _check_registry(registry)
    window = _check_periods(periods)
    wanted = _check_counties(counties)
    notes: list[str] = []
    p_first, p_last = int(window["period"][0]), int(window["period"][-1])

    # Rows → canonical county codes; keep the panel's counties.
    canon_of_wanted = {canonical_fips(c): c for c in wanted}
    no_county = rows.filter(pl.col("county_fips").is_null()).height
    if no_county:
        notes.append(
            f"{no_county} registry rows have no county_fips (municipal, state or regional agencies) "
            "and enter no county's timing"
        )
    rows = rows.filter(pl.col("county_fips").is_not_null())
    rows = rows.with_columns(
        pl.col("county_fips")
        .map_elements(lambda f: canonical_fips(f) if _FIPS.fullmatch(f) else f, return_dtype=pl.String)
        .replace_strict(canon_of_wanted, default=None)
        .alias("county_fips")
    )
    outside = rows.filter(pl.col("county_fips").is_null()).height
    if outside:
        notes.append(f"{outside} registry rows are in counties outside `counties` and were ignored")
    rows = rows.filter(pl.col("county_fips").is_not_null())

    def step(frame: pl.DataFrame, keep: pl.Expr, what: str) -> pl.DataFrame:
        kept = frame.filter(keep)
        if kept.height < frame.height:
            notes.append(f"{frame.height - kept.height} rows dropped: {what}")
        return kept

    rows = step(rows, pl.col("signed").is_not_null(), "no signed date")
    rows = step(
        rows, pl.col("agency_type").is_in(spec.agency_types), f"agency_type not in {list(spec.agency_types)}"
    )
    if spec.min_confidence != "low":
        floor = _CONFIDENCE_RANK[spec.min_confidence]
        ok = [lvl for lvl, r in _CONFIDENCE_RANK.items() if r >= floor]
        rows = step(
            rows, pl.col("confidence").is_in(ok), f"confidence below {spec.min_confidence!r} or unrated"
        )
    keys = {a: _agency_key(a) for a in rows["agency"].drop_nulls().unique().to_list()}
    agency_keys = rows["agency"].replace_strict(keys, default="", return_dtype=pl.String)
    rows = rows.with_columns(agency_keys.alias("_agency_key"))
    for field, keep_matches in (("only_agencies", True), ("exclude_agencies", False)):
        names = getattr(spec, field) or ()
        if not names:
            continue
        wanted_keys = {_agency_key(n): n for n in names}
        unmatched = [n for k, n in wanted_keys.items() if k not in set(keys.values())]
        if unmatched:
            notes.append(f"{field} names matching no registry row in these counties: {unmatched}")
        match = pl.col("_agency_key").is_in(list(wanted_keys))
        rows = step(rows, match if keep_matches else ~match, f"{field} = {list(names)}")

    # Unknown models.
    unknown = pl.col("model") == "unknown"
    excluded = pl.DataFrame(schema=_EXCLUDED_SCHEMA)
    if spec.unknown_model == "exclude_county":
        bad = rows.filter(unknown)
        excluded = bad.select(
            "county_fips", "registry_row", "agency",
            pl.lit("agreement of unknown model (unknown_model='exclude_county')").alias("reason"),
        ).sort("county_fips", "registry_row")  # fmt: skip
        bad_counties = set(bad["county_fips"].to_list())
        rows = rows.filter(~pl.col("county_fips").is_in(list(bad_counties)))
        wanted = [c for c in wanted if c not in bad_counties]
    elif spec.unknown_model == "treat_as_control":
        rows = step(rows, ~unknown, "model 'unknown' (unknown_model='treat_as_control')")
    rows = rows.with_columns(
        pl.when(unknown).then(pl.lit("jail")).otherwise(pl.col("model")).alias("counted_as")
    )
    rows = step(rows, pl.col("counted_as").is_in(spec.models), f"model not in {list(spec.models)}")
    rows_used = rows.select(list(_ROWS_USED_SCHEMA)).sort("county_fips", "signed", "registry_row")

    # Period grid: the requested periods, extended back to the earliest adoption when the frequency
    # is known, and forward by `anticipation` periods: an adoption that soon after the last period
    # already affects the window, so it keeps its real first_treated instead of 0.
    freq = _detect_frequency(window)
    if freq is not None and rows_used.height:
        earliest = period_index(rows_used["signed"].min(), freq)  # type: ignore[arg-type]
        lo = min(p_first, earliest)
        hi = p_last + spec.anticipation
        grid = periods_range(lo, hi, freq)
    else:
        grid = window

    # Union of each county's spells, then the periods in force.
    spells: dict[str, list[tuple[date, date]]] = {}
    for county, signed, ended in rows_used.select("county_fips", "signed", "ended").iter_rows():
        if ended is None or ended > signed:
            spells.setdefault(county, []).append((signed, ended or _OPEN_END))
    intervals = pl.DataFrame(
        [(c, s, e) for c, sp in spells.items() for s, e in _merge_spells(sp)],
        schema={"county": pl.String, "start": pl.Date, "end": pl.Date},
        orient="row",
    )
    active = _active_periods(intervals, grid, spec.mid_period).with_columns(pl.lit(True).alias("active"))
    treated_counties = pl.DataFrame({"county": sorted(spells)}, schema={"county": pl.String})
    g = (
        treated_counties.join(grid.select("period"), how="cross")
        .join(active, on=["county", "period"], how="left")
        .with_columns(pl.col("active").fill_null(False))
        .sort("county", "period")
    )
    # start_lag: drop the first k periods of every run of in-force periods.
    g = g.with_columns(
        (pl.col("active") & ~pl.col("active").shift(1, fill_value=False).over("county")).alias("_start")
    )
    g = g.with_columns(pl.col("_start").cast(pl.Int32).cum_sum().over("county").alias("_run"))
    g = g.with_columns(pl.int_range(pl.len()).over("county", "_run").alias("_pos"))
    g = g.with_columns((pl.col("active") & (pl.col("_pos") >= spec.start_lag)).alias("on"))
    first_on = g.filter(pl.col("on")).group_by("county").agg(pl.col("period").min().alias("p0"))
    first_off = (
        g.join(first_on, on="county")
        .filter((pl.col("period") > pl.col("p0")) & ~pl.col("on"))
        .group_by("county")
        .agg(pl.col("period").min().alias("p_off"))
    )
    g = g.join(first_on, on="county", how="left").join(first_off, on="county", how="left")
    if spec.exit == "absorbing":
        in_force = pl.col("p0").is_not_null() & (pl.col("period") >= pl.col("p0"))
    else:
        in_force = pl.col("on")
    censored = (
        pl.col("p_off").is_not_null() & (pl.col("period") >= pl.col("p_off"))
        if spec.exit == "censor"
        else pl.lit(False)
    )
    first_treated = pl.col("p0").fill_null(0)
    g = g.select(
        pl.col("county").alias("county_fips"),
        "period",
        in_force.alias("in_force"),
        first_treated.alias("first_treated"),
        censored.alias("censored"),
    )
    if freq is None and rows_used.height:
        left = g.filter((pl.col("period") == p_first) & pl.col("in_force")).height
        if left:
            notes.append(
                f"{left} counties are in force in the first period and the period frequency was not "
                "recognised; their first_treated is cut at the first period"
            )

    # Every requested county × period.
    frame = (
        pl.DataFrame({"county_fips": wanted}, schema={"county_fips": pl.String})
        .join(window.select("period"), how="cross")
        .join(g, on=["county_fips", "period"], how="left")
        .with_columns(
            pl.col("in_force").fill_null(False),
            pl.col("censored").fill_null(False),
            pl.col("first_treated").fill_null(0),
        )
        .with_columns(
            pl.when(pl.col("first_treated") != 0)
            .then(pl.col("period") - pl.col("first_treated"))
            .otherwise(None)
            .alias("rel_period")
        )
        .select(list(_TIMING_SCHEMA))
        .sort("county_fips", "period")
    )
    if (frame["first_treated"].filter(frame["first_treated"] != 0) <= 0).any():
        raise SpecificationError(
            "first_treated would be <= 0; period indexes must be real (year*12+month-1, ...)"
        )
    already = (
        frame.filter((pl.col("first_treated") != 0) & (pl.col("first_treated") <= p_first))
        .get_column("county_fips")
        .n_unique()
    )
    if already:
        notes.append(
            f"{already} counties are already treated in the first period (first_treated <= {p_first})"
        )

    summary = _summary(frame, rows_used, grid, spec)
    return TreatmentTiming(
        frame=frame.cast(_TIMING_SCHEMA),  # type: ignore[arg-type]
        rows_used=rows_used.cast(_ROWS_USED_SCHEMA),  # type: ignore[arg-type]
        summary=summary,
        excluded=excluded.cast(_EXCLUDED_SCHEMA),  # type: ignore[arg-type]
        spec=spec,
        notes=tuple(notes),
    )


def _summary(
    frame: pl.DataFrame, rows_used: pl.DataFrame, grid: pl.DataFrame, spec: TreatmentSpec
) -> pl.DataFrame:
    """Treated counties by state, models in force at the first adoption, and cohort year."""
    treated = frame.filter(pl.col("first_treated") != 0).select("county_fips", "first_treated").unique()
    if treated.height == 0:
        return pl.DataFrame(schema=_SUMMARY_SCHEMA)
    bounds = grid.select("period", "period_start", "period_end")
    adoption = treated.with_columns(pl.col("first_treated").alias("p0")).join(
        bounds.rename({"period": "p0"}), on="p0", how="left"
    )
    cohort = treated.join(
        bounds.select(
            pl.col("period").alias("first_treated"), pl.col("period_start").dt.year().alias("cohort_year")
        ),
        on="first_treated",
        how="left",
    )
    models = (
        adoption.join(rows_used.select("county_fips", "counted_as", "signed", "ended"), on="county_fips")
        .filter(
            (pl.col("signed") < pl.col("period_end"))
            & (pl.col("ended").is_null() | (pl.col("ended") > pl.col("period_start")))
        )
        .group_by("county_fips")
        .agg(pl.col("counted_as").unique().sort().str.join("+").alias("model"))
    )
    states = {c: _state_of(c) for c in treated["county_fips"].to_list()}
    return (
        cohort.join(models, on="county_fips", how="left")
        .with_columns(
            pl.col("county_fips").replace_strict(states, return_dtype=pl.String).alias("state"),
            pl.col("model").fill_null("?"),
        )
        .group_by("state", "model", "cohort_year")
        .agg(pl.len().cast(pl.Int64).alias("counties"))
        .select(list(_SUMMARY_SCHEMA))
        .cast(_SUMMARY_SCHEMA)  # type: ignore[arg-type]
        .sort("state", "cohort_year", "model")
    )


def _state_of(fips: str) -> str:
    try:
        return state_from_fips(fips)
    except SpecificationError:
        return fips[:2]
