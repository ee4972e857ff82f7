"""Falsification and mechanism checks beside the headline: one call, one tidy table.

Each check re-uses the headline estimator (:func:`~stopdisparity.models.did.fit_did`) on a
transformed panel, so every row shares the headline's fixed effects, clustering and inference:

- **placebo race pair** (default Black vs White): a policy aimed at Hispanic drivers should not move
  the Black share among Black + White stops;
- **recording placebo**: the share of stops whose race is unknown, among all stops — a change in how
  troopers record race would masquerade as a change in whom they stop;
- **placebo adoption dates**: on pre-period data only (treated units' periods before adoption and all
  never-treated periods), adoption is moved ``shift`` periods earlier; an "effect" there is a pre-trend;
- **post-stop outcomes** (arrest, search, a stop-reason category) as binomial DiDs *within* the focal
  race: the share of focal-race stops with the outcome. These condition on being stopped, so they are
  descriptive of what happens to the drivers who are stopped, not causal effects of the policy on
  outcomes (Knox, Lowe & Mummolo 2020); the rows say so.

Check labels (the ``check`` column): ``headline``, ``placebo_race_pair``, ``recording_placebo``,
``placebo_dates:<shift>``, ``outcome:<column>`` for a boolean stop column (``outcome:arrest_made``),
and ``outcome:reason_category=<name>`` for a stop-reason category.

Stop-reason categories
----------------------
OPP's ``reason_for_stop`` is free text whose values differ by state (North Carolina writes
``"Vehicle Equipment Violation"``, South Carolina ``"Equipment"``). A category is a name and the set of
reason values it stands for, e.g. ``{"equipment": ["Equipment", "Vehicle Equipment Violation"]}``; each
category is one boolean outcome: the stop's reason is in the set (TRUE), another value (FALSE), or
missing (NULL). Stops with a missing outcome — a missing reason, a missing ``arrest_made`` — are left
out of that outcome's row and *counted*: the ``outcome_missing`` column, and a sample-log step per
outcome. The values are bound as a query parameter (``PanelSpec.reason_category``); cells are counted
in DuckDB.

One call from the store
-----------------------
:func:`falsify` builds the headline panel and one panel per outcome with
:func:`~stopdisparity.panel.build_panel` (aggregation in DuckDB; no stop-level rows reach Python) and
returns a frozen :class:`FalsificationResult` whose ``tidy()`` is the headline with every
falsification row beside it, with each panel's sample log and lineage. :func:`falsification_table` does
the same on panels the caller built.

References
----------
Knox, D., Lowe, W. & Mummolo, J. (2020). Administrative records mask racially biased policing.
American Political Science Review 114(3), 619-637. https://doi.org/10.1017/S0003055420000039
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. 64 Arizona Law Review 463.
Rubalcaba, J. A., Ortega, F. & Dantzler, P. (2024). AEA Papers and Proceedings (stop purpose as an
outcome after the 2012 Alamance findings).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from stopdisparity.errors import SpecificationError
from stopdisparity.models.did import DidResult, fit_did
from stopdisparity.sample import SampleLog, SampleStep
from stopdisparity.schema import CANONICAL_COLUMNS, UNKNOWN_RACES

if TYPE_CHECKING:
    from stopdisparity.panel import PanelSpec
    from stopdisparity.store import Store

#: Labels of the synthetic "races" the transformed panels use.
_YES, _NO, _UNKNOWN, _KNOWN = "outcome", "no_outcome", "race_unknown", "race_known"
#: Stop-level columns a post-stop outcome row may use: the boolean canonical columns.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(n for n, k in CANONICAL_COLUMNS.items() if k == "boolean")
#: Placebo adoption shift of two years, in each period type's units.
_TWO_YEARS = {"month": 24, "quarter": 8, "year": 2}
_CONDITIONING = (
    "conditions on being stopped (Knox, Lowe & Mummolo 2020): descriptive, not a causal effect on outcomes"
)


def recording_panel(data: pl.DataFrame, *, race: str = "race", stops: str = "stops") -> pl.DataFrame:
    """The panel with races collapsed to unknown (``unknown``, ``other/unknown``, ``NA``) vs known."""
    unknown = pl.col(race).is_in([*UNKNOWN_RACES, "NA"]) | pl.col(race).is_null()
    keys = [c for c in data.columns if c not in (race, stops, "population")]
    return (
        data.with_columns(pl.when(unknown).then(pl.lit(_UNKNOWN)).otherwise(pl.lit(_KNOWN)).alias(race))
        .group_by(*keys, race)
        .agg(pl.col(stops).sum())
    )


def placebo_dates_panel(
    data: pl.DataFrame,
    *,
    shift: int,
    period: str = "period",
    first_treated: str = "first_treated",
    treatment: str = "in_force",
) -> pl.DataFrame:
    """Pre-period data with adoption moved ``shift`` periods earlier (a fake policy before the real one).

    Keeps never-treated units and treated units' periods before their real adoption; the fake
    treatment is on from ``first_treated - shift`` to the real adoption.
    """
    if shift <= 0:
        raise SpecificationError(f"shift must be a positive number of periods; got {shift!r}")
    pre = data.filter((pl.col(first_treated) == 0) | (pl.col(period) < pl.col(first_treated)))
    fake = (pl.col(first_treated) != 0) & (pl.col(period) >= pl.col(first_treated) - shift)
    return pre.with_columns(fake.alias(treatment))


def _check_outcome_column(data: pl.DataFrame, outcome: str) -> None:
    if outcome not in data.columns:
        raise SpecificationError(
            f"the panel has no {outcome!r} column; build it with PanelSpec(by=({outcome!r},))"
        )


def outcome_panel(
    data: pl.DataFrame,
    *,
    outcome: str,
    focal: str,
    race: str = "race",
    stops: str = "stops",
) -> pl.DataFrame:
    """Within one race, stops with the outcome (``outcome`` True) vs without, as a two-"race" panel.

    ``data`` must be a panel built with ``by=(outcome,)`` (a boolean stop column such as
    ``arrest_made`` or ``search_conducted``, or ``in_reason_category``); stops with a missing outcome
    are left out (:func:`outcome_counts` counts them).
    """
    _check_outcome_column(data, outcome)
    rows = data.filter(pl.col(race) == focal, pl.col(outcome).is_not_null())
    label = pl.when(pl.col(outcome).cast(pl.Boolean)).then(pl.lit(_YES)).otherwise(pl.lit(_NO))
    keys = [c for c in rows.columns if c not in (race, stops, outcome, "population")]
    return rows.with_columns(label.alias(race)).group_by(*keys, race).agg(pl.col(stops).sum())


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """The focal race's stops in an outcome panel: with the outcome, without it, and missing it."""

    outcome: str
    race: str
    n_with: int
    n_without: int
    n_missing: int

    @property
    def n_stops(self) -> int:
        """All stops of the race in the panel (missing outcome included)."""
        return self.n_with + self.n_without + self.n_missing


def outcome_counts(
    data: pl.DataFrame, *, outcome: str, focal: str, race: str = "race", stops: str = "stops"
) -> OutcomeCounts:
    """Count ``focal`` stops with ``outcome`` TRUE, FALSE and missing in a ``by=(outcome,)`` panel."""
    _check_outcome_column(data, outcome)
    value = pl.col(outcome).cast(pl.Boolean)
    row = (
        data.filter(pl.col(race) == focal)
        .select(
            pl.col(stops).filter(value).sum().alias("with"),
            pl.col(stops).filter(~value).sum().alias("without"),
            pl.col(stops).filter(value.is_null()).sum().alias("missing"),
        )
        .row(0)
    )
    return OutcomeCounts(outcome, focal, *(int(v or 0) for v in row))


# ------------------------------------------------------------------------------- reason categories
@dataclass(frozen=True, slots=True)
class ReasonCategory:
    """A named set of ``reason_for_stop`` values: one boolean post-stop outcome."""

    name: str
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        """The outcome's label: ``reason_category=<name>`` (the check is ``outcome:<label>``)."""
        return f"reason_category={self.name}"


ReasonCategories = Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]]


def parse_reason_categories(categories: ReasonCategories | None) -> tuple[ReasonCategory, ...]:
    """Validate stop-reason categories given as ``{name: [reason values]}`` or ``[(name, values)]``.

    Raises
    ------
    SpecificationError
        For a blank or repeated name, a bare string or an empty list of values, a blank value, or a
        value listed twice in one category.
    """
    if categories is None:
        return ()
    pairs = list(categories.items()) if isinstance(categories, Mapping) else list(categories)
    out: list[ReasonCategory] = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise SpecificationError(
                f"a reason category is a (name, [reason_for_stop values]) pair; got {pair!r}"
            )
        name, values = pair
        if not isinstance(name, str) or not name.strip():
            raise SpecificationError(f"a reason category's name must be a non-blank string; got {name!r}")
        if name in [c.name for c in out]:
            raise SpecificationError(f"reason category name {name!r} is used more than once")
        if isinstance(values, str) or not isinstance(values, Sequence | set | frozenset):
            raise SpecificationError(
                f"reason category {name!r} must list reason_for_stop values (e.g. [{values!r}]); "
                f"got {values!r}"
            )
        if not values:
            raise SpecificationError(f"reason category {name!r} lists no reason_for_stop values")
        vals = tuple(values)
        bad = [v for v in vals if not isinstance(v, str) or not v.strip()]
        if bad:
            raise SpecificationError(f"reason category {name!r} has blank or non-string values {bad!r}")
        repeated = sorted({v for v in vals if vals.count(v) > 1})
        if repeated:
            raise SpecificationError(f"reason category {name!r} lists {repeated!r} more than once")
        out.append(ReasonCategory(name, vals))
    return tuple(out)


def _check_outcomes(outcomes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(outcomes, str):
        outcomes = (outcomes,)
    unknown = [o for o in outcomes if o not in OUTCOME_COLUMNS]
    if unknown:
        raise SpecificationError(
            f"outcomes must be boolean stop columns among {list(OUTCOME_COLUMNS)}; got {unknown!r} "
            "(stop reasons go in reason_categories)"
        )
    repeated = sorted({o for o in outcomes if list(outcomes).count(o) > 1})
    if repeated:
        raise SpecificationError(f"outcomes lists {repeated!r} more than once")
    return tuple(outcomes)


# -------------------------------------------------------------------------------------- the fits
@dataclass(frozen=True, slots=True)
class OutcomePanel:
    """A ``by=(column,)`` panel for one post-stop outcome, the outcome's label and its description."""

    label: str
    column: str
    frame: pl.DataFrame
    description: str


@dataclass(frozen=True, slots=True)
class Check:
    """One falsification row: its label, the fit, a note on what it estimates, outcome counts."""

    check: str
    result: DidResult
    note: str | None = None
    counts: OutcomeCounts | None = None

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """The fit's tidy row with ``check`` (and the outcome's counts for post-stop outcomes)."""
        tidy = self.result.tidy(alpha).with_columns(pl.lit(self.check).alias("check"))
        if self.note:
            tidy = tidy.with_columns((pl.col("estimand") + pl.lit(f" [{self.note}]")).alias("estimand"))
        if self.counts is not None:
            tidy = tidy.with_columns(
                pl.lit(self.counts.n_with, pl.Int64).alias("outcome_with"),
                pl.lit(self.counts.n_without, pl.Int64).alias("outcome_without"),
                pl.lit(self.counts.n_missing, pl.Int64).alias("outcome_missing"),
            )
        return tidy


def fit_checks(
    data: pl.DataFrame,
    *,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    placebo_pair: tuple[str, str] = ("black", "white"),
    placebo_shifts: Sequence[int] = (24,),
    outcomes: Sequence[OutcomePanel] = (),
    **options: Any,
) -> tuple[Check, ...]:
    """Fit the headline and every falsification check (see :func:`falsification_table`)."""
    focal = race_pair[0]
    counted = [outcome_counts(out.frame, outcome=out.column, focal=focal) for out in outcomes]
    for out, counts in zip(outcomes, counted, strict=True):  # before any fit: fail fast
        if counts.n_with == 0 or counts.n_without == 0:
            raise SpecificationError(
                f"outcome {out.label!r}: {focal} stops have {counts.n_with} with and {counts.n_without} "
                f"without {out.description} ({counts.n_missing} missing) - nothing to compare; check the "
                "column or the category's values against the store's"
            )

    def fit(
        check: str,
        frame: pl.DataFrame,
        pair: tuple[str, str],
        note: str | None = None,
        counts: OutcomeCounts | None = None,
    ) -> Check:
        # the fit's warnings (sparse cells, few treated clusters) say which check they are about
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_did(frame, race_pair=pair, **options)
        for w in caught:
            warnings.warn(f"{check}: {w.message}", w.category, stacklevel=3)
        return Check(check, result, note, counts)

    checks = [
        fit("headline", data, race_pair),
        fit("placebo_race_pair", data, placebo_pair),
        fit(
            "recording_placebo", recording_panel(data), (_UNKNOWN, _KNOWN), "share of stops with unknown race"
        ),
    ]
    for shift in placebo_shifts:
        note = f"pre-period data, adoption moved {shift} periods earlier"
        checks.append(fit(f"placebo_dates:{shift}", placebo_dates_panel(data, shift=shift), race_pair, note))
    for out, counts in zip(outcomes, counted, strict=True):
        frame = outcome_panel(out.frame, outcome=out.column, focal=focal)
        note = f"share of {focal} stops with {out.description}; {_CONDITIONING}"
        checks.append(fit(f"outcome:{out.label}", frame, (_YES, _NO), note, counts))
    return tuple(checks)


def _tidy_checks(checks: Sequence[Check], alpha: float = 0.05) -> pl.DataFrame:
    return pl.concat([c.tidy(alpha) for c in checks], how="diagonal_relaxed")


def falsification_table(
    data: pl.DataFrame,
    *,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    placebo_pair: tuple[str, str] = ("black", "white"),
    placebo_shifts: Sequence[int] = (24,),
    outcome_panels: Mapping[str, pl.DataFrame] | None = None,
    **options: Any,
) -> pl.DataFrame:
    """The headline with its falsification and mechanism rows beside it, as one tidy table.

    Parameters
    ----------
    data
        The long panel (``Panel.frame``) the headline is fitted on.
    race_pair
        The headline's (focal, reference) races.
    placebo_pair
        The placebo race pair.
    placebo_shifts
        Placebo adoption shifts, in panel periods (24 = two years earlier on a monthly panel).
    outcome_panels
        ``{outcome column: panel built with by=(outcome,)}`` for post-stop outcome rows (to build
        them from a store, with stop-reason categories, use :func:`falsify`).
    **options
        Passed to every :func:`fit_did` call (estimator, unit, period, cluster, ...).

    Returns
    -------
    polars.DataFrame
        The tidy rows (DESIGN.md columns) with an extra ``check`` column: ``headline``,
        ``placebo_race_pair``, ``recording_placebo``, ``placebo_dates:<shift>``, ``outcome:<column>``;
        outcome rows also carry ``outcome_with``, ``outcome_without`` and ``outcome_missing`` (focal
        stops; the missing ones are not in the fit).

    References
    ----------
    Knox, D., Lowe, W. & Mummolo, J. (2020). Administrative records mask racially biased policing.
    American Political Science Review 114(3), 619-637. https://doi.org/10.1017/S0003055420000039
    """
    outcomes = [OutcomePanel(col, col, frame, col) for col, frame in (outcome_panels or {}).items()]
    checks = fit_checks(
        data,
        race_pair=race_pair,
        placebo_pair=placebo_pair,
        placebo_shifts=placebo_shifts,
        outcomes=outcomes,
        **options,
    )
    return _tidy_checks(checks)


@dataclass(frozen=True, slots=True)
class FalsificationResult:
    """The headline and its falsification rows, with every panel's sample log and lineage.

    Users get it from :func:`falsify`.

    Attributes
    ----------
    checks
        One :class:`Check` per row, the headline first.
    race_pair, placebo_pair
        The headline's and the placebo's (focal, reference) races.
    reason_categories
        The stop-reason categories, each with its values.
    sample_logs
        ``{panel: SampleLog}``: ``headline`` and each outcome's label; an outcome's log ends with the
        step that leaves out focal stops whose outcome is missing.
    lineage
        ``{"panels": {panel: Panel.lineage}, "options": ...}``: the panels' inputs, queries and specs,
        and the options of the fits.
    """

    checks: tuple[Check, ...]
    race_pair: tuple[str, str]
    placebo_pair: tuple[str, str]
    reason_categories: tuple[ReasonCategory, ...]
    sample_logs: Mapping[str, SampleLog]
    lineage: Mapping[str, Any]

    @property
    def headline(self) -> DidResult:
        """The headline fit."""
        return self["headline"]

    def __getitem__(self, check: str) -> DidResult:
        """The fit of one check, by its label (``headline``, ``outcome:arrest_made``, ...)."""
        for c in self.checks:
            if c.check == check:
                return c.result
        raise KeyError(f"no check {check!r}; checks: {[c.check for c in self.checks]}")

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """The rows of :func:`falsification_table`: DESIGN.md columns, ``check``, outcome counts."""
        return _tidy_checks(self.checks, alpha)

    def outcome_counts(self) -> pl.DataFrame:
        """One row per post-stop outcome: check, race, stops with / without / missing the outcome."""
        rows = [
            {"check": c.check, "outcome": c.counts.outcome, "race": c.counts.race,
             "n_with": c.counts.n_with, "n_without": c.counts.n_without,
             "n_missing": c.counts.n_missing, "n_stops": c.counts.n_stops}
            for c in self.checks
            if c.counts is not None
        ]  # fmt: skip
        schema = {"check": pl.String, "outcome": pl.String, "race": pl.String, "n_with": pl.Int64,
                  "n_without": pl.Int64, "n_missing": pl.Int64, "n_stops": pl.Int64}  # fmt: skip
        return pl.DataFrame(rows, schema=schema)

    def to_json(self) -> dict[str, Any]:
        """Rows, sample logs and lineage as JSON-ready data."""
        return {
            "rows": self.tidy().to_dicts(),
            "reason_categories": {c.name: list(c.values) for c in self.reason_categories},
            "sample_logs": {k: v.to_json() for k, v in self.sample_logs.items()},
            "lineage": dict(self.lineage),
        }


def falsify(
    store: str | Path | Store,
    spec: PanelSpec | None = None,
    *,
    policy: str | Path = "287g",
    treatment: Any = None,
    race_pair: tuple[str, str] = ("hispanic", "white"),
    placebo_pair: tuple[str, str] = ("black", "white"),
    placebo_shifts: Sequence[int] | None = None,
    outcomes: Sequence[str] = ("arrest_made", "search_conducted"),
    reason_categories: ReasonCategories | None = None,
    memory_limit: str = "2GB",
    **options: Any,
) -> FalsificationResult:
    """Build the panels from a store and fit the headline with every falsification row beside it.

    The headline panel is ``build_panel(store, spec)``; each outcome gets its own panel, with
    ``by=(outcome,)`` or ``reason_category=values``, so every count is made in DuckDB.

    Parameters
    ----------
    store
        A store directory or :class:`~stopdisparity.store.Store`.
    spec
        The headline's :class:`~stopdisparity.panel.PanelSpec` (filters, period, design,
        eligibility); without ``by`` or ``reason_category``, which each outcome panel sets itself.
    policy, treatment
        As in :func:`~stopdisparity.panel.build_panel`.
    race_pair, placebo_pair
        The headline's and the placebo's (focal, reference) races; outcome rows are within the focal
        race.
    placebo_shifts
        Placebo adoption shifts in panel periods (default: two years, i.e. 24 months, 8 quarters or
        2 years).
    outcomes
        Boolean stop columns (:data:`OUTCOME_COLUMNS`), one row each: ``outcome:<column>``.
    reason_categories
        ``{name: [reason_for_stop values]}`` (or ``[(name, values)]``), one row each:
        ``outcome:reason_category=<name>``. Values are matched exactly, as stored (NC
        ``"Vehicle Equipment Violation"``, SC ``"Equipment"``).
    memory_limit
        DuckDB's memory limit for each panel's aggregation.
    **options
        Passed to every :func:`~stopdisparity.models.did.fit_did` call (estimator, cluster, ...).

    Returns
    -------
    FalsificationResult
        ``tidy()`` is the table of :func:`falsification_table`; post-stop outcome rows condition on
        being stopped and are labelled so (Knox, Lowe & Mummolo 2020).

    Raises
    ------
    SpecificationError
        For an unknown or repeated outcome, a bad reason category, a spec with ``by`` or
        ``reason_category``, or an outcome whose focal stops all have (or all lack) it.

    Notes
    -----
    Each panel costs a scan of the store (three queries in DuckDB); nothing stop-level reaches Python.
    The function orchestrates :func:`~stopdisparity.panel.build_panel` and :func:`fit_checks`; the
    fits themselves take only panels.

    References
    ----------
    Knox, D., Lowe, W. & Mummolo, J. (2020). Administrative records mask racially biased policing.
    American Political Science Review 114(3), 619-637. https://doi.org/10.1017/S0003055420000039
    Rubalcaba, J. A., Ortega, F. & Dantzler, P. (2024). AEA Papers and Proceedings.
    """
    from stopdisparity.panel import REASON_CATEGORY_COLUMN, PanelSpec, build_panel

    spec = spec or PanelSpec()
    if spec.by or spec.reason_category:
        raise SpecificationError(
            "falsify builds its own by= panels; pass a spec without by or reason_category; got "
            f"by={spec.by!r}, reason_category={spec.reason_category!r}"
        )
    columns = _check_outcomes(outcomes)
    categories = parse_reason_categories(reason_categories)
    shifts = (_TWO_YEARS[spec.period],) if placebo_shifts is None else tuple(placebo_shifts)

    def build(panel_spec: PanelSpec) -> Any:
        return build_panel(store, panel_spec, policy=policy, treatment=treatment, memory_limit=memory_limit)

    headline = build(spec)
    built = [(col, col, col, build(dataclasses.replace(spec, by=(col,)))) for col in columns]
    for cat in categories:
        description = f"reason_for_stop in category {cat.name!r} ({len(cat.values)} values)"
        panel = build(dataclasses.replace(spec, reason_category=cat.values))
        built.append((cat.label, REASON_CATEGORY_COLUMN, description, panel))
    outcome_panels = [OutcomePanel(label, col, p.frame, desc) for label, col, desc, p in built]
    checks = fit_checks(
        headline.frame,
        race_pair=race_pair,
        placebo_pair=placebo_pair,
        placebo_shifts=shifts,
        outcomes=outcome_panels,
        **options,
    )
    logs = {"headline": headline.sample_log}
    counted = [c.counts for c in checks if c.counts is not None]  # the outcomes, in built's order
    for (label, _, desc, panel), counts in zip(built, counted, strict=True):
        step = SampleStep(
            f"outcome_known:{label}",
            f"{counts.race} stops with {desc} recorded (missing ones are not in the outcome's row)",
            counts.n_stops,
            counts.n_with + counts.n_without,
            "stops",
            {"race": counts.race, "outcome": label},
        )
        logs[label] = panel.sample_log.add(step)
    lineage = {
        "panels": {"headline": headline.lineage, **{label: p.lineage for label, _, _, p in built}},
        "options": {"race_pair": race_pair, "placebo_pair": placebo_pair, "placebo_shifts": shifts,
                    "outcomes": columns, "fit_did": dict(options)},
    }  # fmt: skip
    return FalsificationResult(checks, race_pair, placebo_pair, categories, logs, lineage)


__all__ = [
    "OUTCOME_COLUMNS",
    "Check",
    "FalsificationResult",
    "OutcomeCounts",
    "OutcomePanel",
    "ReasonCategory",
    "falsification_table",
    "falsify",
    "fit_checks",
    "outcome_counts",
    "outcome_panel",
    "parse_reason_categories",
    "placebo_dates_panel",
    "recording_panel",
]
