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

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError
from stopdisparity.models.did import fit_did
from stopdisparity.schema import UNKNOWN_RACES

#: Labels of the synthetic "races" the transformed panels use.
_YES, _NO, _UNKNOWN, _KNOWN = "outcome", "no_outcome", "race_unknown", "race_known"


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
    ``arrest_made`` or ``search_conducted``); stops with a missing outcome are left out.
    """
    if outcome not in data.columns:
        raise SpecificationError(
            f"the panel has no {outcome!r} column; build it with PanelSpec(by=({outcome!r},))"
        )
    rows = data.filter(pl.col(race) == focal, pl.col(outcome).is_not_null())
    label = pl.when(pl.col(outcome).cast(pl.Boolean)).then(pl.lit(_YES)).otherwise(pl.lit(_NO))
    keys = [c for c in rows.columns if c not in (race, stops, outcome, "population")]
    return rows.with_columns(label.alias(race)).group_by(*keys, race).agg(pl.col(stops).sum())


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
        ``{outcome column: panel built with by=(outcome,)}`` for post-stop outcome rows.
    **options
        Passed to every :func:`fit_did` call (estimator, unit, period, cluster, ...).

    Returns
    -------
    polars.DataFrame
        The tidy rows (DESIGN.md columns) with an extra ``check`` column: ``headline``,
        ``placebo_race_pair``, ``recording_placebo``, ``placebo_dates:<shift>``, ``outcome:<column>``.
    """
    frames: list[pl.DataFrame] = []

    def add(check: str, frame: pl.DataFrame, pair: tuple[str, str], note: str | None = None) -> None:
        tidy = fit_did(frame, race_pair=pair, **options).tidy()
        tidy = tidy.with_columns(pl.lit(check).alias("check"))
        if note:
            tidy = tidy.with_columns((pl.col("estimand") + pl.lit(f" [{note}]")).alias("estimand"))
        frames.append(tidy)

    add("headline", data, race_pair)
    add("placebo_race_pair", data, placebo_pair)
    add("recording_placebo", recording_panel(data), (_UNKNOWN, _KNOWN), "share of stops with unknown race")
    for shift in placebo_shifts:
        add(f"placebo_dates:{shift}", placebo_dates_panel(data, shift=shift), race_pair,
            f"pre-period data, adoption moved {shift} periods earlier")  # fmt: skip
    for outcome, panel in (outcome_panels or {}).items():
        add(
            f"outcome:{outcome}",
            outcome_panel(panel, outcome=outcome, focal=race_pair[0]),
            (_YES, _NO),
            f"share of {race_pair[0]} stops with {outcome}; conditions on being stopped (Knox, Lowe & "
            "Mummolo 2020): descriptive, not a causal effect on outcomes",
        )
    return pl.concat(frames, how="diagonal_relaxed")
