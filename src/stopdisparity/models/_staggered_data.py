r"""The balanced unit × period panel every heterogeneity-robust estimator reads (issue 6).

Callaway & Sant'Anna, Sun & Abraham, Borusyak–Jaravel–Spiess, the Goodman-Bacon decomposition and the
de Chaisemartin–D'Haultfœuille weights all start from the same object: one row per unit × period with
an outcome, an absorbing adoption period ``g`` (0 = never treated), weights and a cluster. This module
validates a user's panel once (through :func:`stopdisparity.models._panel.prepare_panel`, so the error
messages and the missing-data policy are those of ``did --panel``) and hands the estimators a
:class:`StaggeredPanel` with fixed internal column names, so no estimator re-validates input and no
user column name can collide with an internal one.

Columns of :attr:`StaggeredPanel.frame` (sorted by ``uid``, ``tid``):

- ``unit`` (the user's unit value), ``uid`` (Int64 code 0..U-1 in sorted unit order), ``period``
  (Int64, the user's period), ``tid`` (Int64 position 0..T-1 of ``period`` among the sorted distinct
  periods), ``g`` (Int64 adoption period, 0 = never treated), ``gid`` (position of ``g`` among the
  periods, -1 for never treated), ``treated`` (Float64 0/1, ``period >= g > 0``);
- ``y`` (Float64 outcome: the share ``yname / trials`` when trials are given, else ``yname``);
- ``n`` (Float64 row weight: ``weights`` if given, else ``trials`` if given, else 1) — the weight of
  the regression-based estimators (Sun–Abraham, BJS) and of the stop-weighted linear TWFE;
- ``w`` (Float64 unit weight, constant within unit) — the weight of Callaway–Sant'Anna's averages
  (R ``did``'s ``weightsname``): ``weights`` when constant within unit; otherwise (varying ``weights``,
  or trials) the unit's mean over its pre-adoption periods (for never-treated units: the periods before
  the first adoption in the panel; a unit with no such period uses all its periods), so that the weight
  is not moved by the treatment; else 1;
- ``cluster`` (the cluster value; the unit by default);
- covariates ``_x0``, ``_x1``, ... (Float64).

The panel is balanced (every unit observed in every period) unless ``balanced=False`` is asked for;
with trials, a cell with zero trials has no share and is refused (``missing="raise"``) or its whole unit
dropped (``missing="drop"``), so the panel stays balanced.

References
----------
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from stopdisparity.errors import DroppedRowsWarning, SparseCellWarning, SpecificationError
from stopdisparity.models._fe import CLUSTER as _CLUSTER
from stopdisparity.models._fe import PERIOD as _PERIOD
from stopdisparity.models._fe import UNIT as _UNIT
from stopdisparity.models._fe import Missing
from stopdisparity.models._panel import FIRST_TREATED, prepare_panel

#: Internal column names of :attr:`StaggeredPanel.frame`.
UNIT, UID, PERIOD, TID, G, GID, TREATED, Y, N, W, CLUSTER = (
    "unit",
    "uid",
    "period",
    "tid",
    "g",
    "gid",
    "treated",
    "y",
    "n",
    "w",
    "cluster",
)
#: Fewer treated units than this in a reported cell triggers a :class:`SparseCellWarning`.
MIN_CELL_UNITS = 2
#: What the outcome ``y`` is: the user's outcome in levels, the race layout's share of the pair's
#: stops, or its empirical log odds.
OUTCOME_SCALES = ("level", "share", "logodds")
_SCALE_PHRASES = {
    "share": (("the outcome level", "the focal race's share of the pair's stops (level)"),),
    "logodds": (
        ("the outcome level", "the empirical log odds of the focal race's share"),
        ("parallel trends in levels", "parallel trends in log odds"),
    ),
}


def on_scale(estimand: str, outcome_scale: str) -> str:
    """An estimand's text with the scale phrases of the panel's outcome (``level``: unchanged).

    The linear estimators describe themselves "on the outcome level; parallel trends in levels"; on
    the race layout's share they name the share, and on its empirical log odds (``scale="logodds"``)
    both phrases name the log odds.
    """
    for old, new in _SCALE_PHRASES.get(outcome_scale, ()):
        estimand = estimand.replace(old, new)
    return estimand


@dataclass(frozen=True, slots=True)
class StaggeredPanel:
    """A validated panel with absorbing staggered adoption, in the internal layout above.

    ``columns`` maps roles (``unit``, ``period``, ``outcome``, ``trials``, ``weights``,
    ``first_treated``, ``cluster``, ``covariates``) to the user's column names, for labels and lineage.
    """

    frame: pl.DataFrame
    columns: Mapping[str, Any]
    xnames: tuple[str, ...]
    periods: tuple[int, ...]
    cohorts: tuple[int, ...]
    n_units: int
    n_never_treated: int
    balanced: bool
    n_input_rows: int
    n_dropped: int
    unit_weight_rule: str
    outcome_scale: str = "level"

    @property
    def has_never_treated(self) -> bool:
        """Whether some unit is never treated (the default comparison group exists)."""
        return self.n_never_treated > 0

    def units(self) -> pl.DataFrame:
        """One row per unit: ``unit, uid, g, gid, w, cluster`` (sorted by ``uid``)."""
        return (
            self.frame.group_by(UID, maintain_order=True)
            .agg(
                pl.col(UNIT).first(),
                pl.col(G).first(),
                pl.col(GID).first(),
                pl.col(W).first(),
                pl.col(CLUSTER).first(),
            )
            .select(UNIT, UID, G, GID, W, CLUSTER)
        )

    def cohort_sizes(self) -> pl.DataFrame:
        """Units per adoption cohort: ``g`` (0 = never treated) and ``n_units``, sorted by ``g``."""
        return self.units().group_by(G).agg(pl.len().cast(pl.Int64).alias("n_units")).sort(G)

    def matrix(self, column: str = Y) -> np.ndarray:
        """``column`` as a units × periods array (rows by ``uid``, columns by ``tid``); NaN where absent."""
        out = np.full((self.n_units, len(self.periods)), np.nan)
        f = self.frame
        out[f.get_column(UID).to_numpy(), f.get_column(TID).to_numpy()] = f.get_column(column).to_numpy()
        return out

    def event_support(self) -> pl.DataFrame:
        """Treated units and cohorts at each event time ``e = period - g``: ``e, n_units, n_cohorts``."""
        treated = self.frame.filter(pl.col(G) > 0)
        return (
            treated.with_columns((pl.col(PERIOD) - pl.col(G)).alias("e"))
            .group_by("e")
            .agg(
                pl.col(UID).n_unique().cast(pl.Int64).alias("n_units"),
                pl.col(G).n_unique().cast(pl.Int64).alias("n_cohorts"),
            )
            .sort("e")
        )


def warn_thin_cells(table: pl.DataFrame, *, label: str, count: str = "n_units", stacklevel: int = 3) -> None:
    """Warn (:class:`SparseCellWarning`) when a reported cell rests on fewer than 2 treated units.

    ``table`` has one row per reported cell, a ``count`` column, and the other columns name the cell
    (e.g. ``g, t`` or ``e``); ``label`` says what the cells are (``"ATT(g,t)"``, ``"event time"``).
    """
    thin = table.filter(pl.col(count) < MIN_CELL_UNITS)
    if thin.height:
        keys = [c for c in table.columns if c != count]
        shown = ", ".join(
            "(" + ", ".join(f"{k}={r[k]}" for k in keys) + f": {r[count]})"
            for r in thin.head(8).iter_rows(named=True)
        )
        more = f" and {thin.height - 8} more" if thin.height > 8 else ""
        warnings.warn(
            f"{thin.height} {label} cell(s) rest on fewer than {MIN_CELL_UNITS} treated units: "
            f"{shown}{more}; such estimates are one unit's experience, not an average",
            SparseCellWarning,
            stacklevel=stacklevel,
        )


def drop_always_treated(
    frame: pl.DataFrame, first_period: int, *, why: str, stacklevel: int = 3
) -> tuple[pl.DataFrame, int]:
    """Drop the units treated from the panel's first period on, with a warning saying ``why``.

    They have no untreated period, so no estimator here can compare them with themselves before
    adoption (R ``did``, fixest's ``sunab`` and ``didimputation`` drop them too). Returns the kept rows
    of ``frame`` (the :attr:`StaggeredPanel.frame` layout) and the number of units dropped.
    """
    always = frame.filter((pl.col(G) > 0) & (pl.col(G) <= first_period))
    n_units = always.get_column(UID).n_unique()
    if n_units:
        cohorts = sorted(int(g) for g in always.get_column(G).unique().to_list())
        warnings.warn(
            f"dropped {n_units} unit(s) treated from the first period on ({first_period}; cohort(s) "
            f"{cohorts}): {why}",
            DroppedRowsWarning,
            stacklevel=stacklevel,
        )
        frame = frame.filter(~pl.col(UID).is_in(always.get_column(UID).unique().implode()))
    return frame, n_units


def prepare_staggered(
    data: pl.DataFrame,
    *,
    yname: str,
    idname: str,
    tname: str,
    gname: str,
    trials: str | None = None,
    weights: str | None = None,
    xnames: Sequence[str] = (),
    cluster: str | None = None,
    missing: Missing = "raise",
    balanced: bool = True,
    outcome_scale: str = "level",
    stacklevel: int = 3,
) -> StaggeredPanel:
    """Validate a panel for the staggered estimators and return it in the internal layout.

    Parameters are those of :func:`stopdisparity.models.did.fit_did_panel`. With ``trials``, ``yname``
    counts successes and the outcome is the share; cells with zero trials have no share. ``balanced``
    (default) requires every unit in every period: under ``missing="drop"`` units that are not are
    dropped with a :class:`DroppedRowsWarning`, else it raises. ``outcome_scale`` (``level``,
    ``share`` or ``logodds``) says what ``yname`` is, for the estimand labels (:func:`on_scale`).

    Raises
    ------
    SpecificationError
        Everything :func:`~stopdisparity.models._panel.prepare_panel` refuses; zero trials or an
        unbalanced panel under ``missing="raise"``; no treated unit; no unit left.
    """
    if outcome_scale not in OUTCOME_SCALES:
        raise SpecificationError(
            f"outcome_scale must be one of {list(OUTCOME_SCALES)}; got {outcome_scale!r}"
        )
    if trials is not None and trials in data.columns and missing == "raise":
        zero = data.filter(pl.col(trials).cast(pl.Float64) == 0)
        if zero.height:
            ex = zero.row(0, named=True)
            raise SpecificationError(
                f"trials column {trials!r} is 0 at {idname}={ex.get(idname)!r}, {tname}={ex.get(tname)!r} "
                f"({zero.height} cells): the share {yname}/{trials} is undefined there. Aggregate to longer "
                "periods (e.g. --period year), or pass missing='drop' to drop those units"
            )
    prepared = prepare_panel(
        data,
        yname=yname,
        idname=idname,
        tname=tname,
        gname=gname,
        trials=trials if weights is None else None,
        weights=weights,
        xnames=xnames,
        cluster=cluster,
        group=None,
        missing=missing,
        binomial=False,
        stacklevel=stacklevel + 1,
    )
    cells = prepared.frame
    n_dropped = prepared.n_dropped
    cols = dict(prepared.columns)
    cols["trials"] = trials
    # the outcome from the user's columns (prepare_panel keeps focal = y·n, with n the weights when given)
    raw = [pl.col(yname).cast(pl.Float64).alias("_y")]
    if trials is not None:
        raw.append(pl.col(trials).cast(pl.Float64).alias("_trials"))
    keys = [pl.col(idname).alias(_UNIT), pl.col(tname).cast(pl.Int64).alias(_PERIOD)]
    cells = cells.join(data.select(*keys, *raw), on=[_UNIT, _PERIOD], how="left")
    if trials is not None:  # the share of successes, undefined (null) in a cell without trials
        share = pl.when(pl.col("_trials") > 0).then(pl.col("_y") / pl.col("_trials")).otherwise(None)
    else:
        share = pl.col("_y")
    cells = cells.with_columns(share.alias(Y))

    bad_units = cells.filter(pl.col(Y).is_null() | pl.col(Y).is_nan()).get_column(_UNIT).unique()
    periods = sorted(cells.get_column(_PERIOD).unique().to_list())
    counts = cells.group_by(_UNIT).len()
    unbalanced = counts.filter(pl.col("len") < len(periods)).get_column(_UNIT) if balanced else pl.Series([])
    drop = pl.concat([bad_units.cast(cells.schema[_UNIT]), unbalanced.cast(cells.schema[_UNIT])]).unique()
    if drop.len():
        what = []
        if bad_units.len():
            what.append(f"{bad_units.len()} unit(s) with a zero-trials cell")
        if unbalanced.len():
            what.append(f"{unbalanced.len()} unit(s) not observed in all {len(periods)} periods")
        if missing == "raise":
            ex = drop.sort().head(5).to_list()
            raise SpecificationError(
                f"the staggered estimators need a balanced panel with an outcome in every cell; "
                f"{' and '.join(what)} (e.g. {ex}). Pass missing='drop' to drop those units, or fill them"
            )
        before = cells.height
        cells = cells.filter(~pl.col(_UNIT).is_in(drop.implode()))
        n_dropped += before - cells.height
        warnings.warn(
            f"dropped {drop.len()} units ({' and '.join(what)}; {before - cells.height} rows) to keep "
            "the panel balanced (missing='drop')",
            DroppedRowsWarning,
            stacklevel=stacklevel,
        )
    if cells.height == 0:
        raise SpecificationError("no units left to fit")
    periods = sorted(cells.get_column(_PERIOD).unique().to_list())
    tid = {p: i for i, p in enumerate(periods)}
    cells = cells.with_columns(
        pl.col(_PERIOD).replace_strict(tid, return_dtype=pl.Int64).alias(TID),
        pl.col(FIRST_TREATED).replace_strict(tid, default=-1, return_dtype=pl.Int64).alias(GID),
    )
    # a cohort that adopts in a period absent from the (dropped) panel keeps gid -1 only if never treated
    bad_g = cells.filter((pl.col(FIRST_TREATED) != 0) & (pl.col(GID) < 0))
    if bad_g.height:
        ex = bad_g.row(0, named=True)
        raise SpecificationError(
            f"unit {ex[_UNIT]!r} adopts in period {ex[FIRST_TREATED]}, which no unit is observed in; the "
            "adoption period must be one of the panel's periods"
        )
    unit_codes = (
        cells.select(_UNIT).unique().sort(_UNIT).with_row_index(UID).with_columns(pl.col(UID).cast(pl.Int64))
    )
    cells = cells.join(unit_codes, on=_UNIT, how="left")

    # ------------------------------------------------------------------------------ unit weights
    first_cohort = cells.filter(pl.col(FIRST_TREATED) > 0).get_column(FIRST_TREATED).min()
    if first_cohort is None:
        raise SpecificationError(f"no unit is ever treated ({gname!r} is 0 or empty everywhere)")
    # a unit's pre-adoption periods (never treated: those before the first adoption in the panel)
    pre = pl.col(_PERIOD) < pl.when(pl.col(FIRST_TREATED) > 0).then(pl.col(FIRST_TREATED)).otherwise(
        pl.lit(first_cohort)
    )

    def pre_mean(column: str) -> pl.Expr:
        return pl.when(pre.any()).then(pl.col(column).filter(pre).mean()).otherwise(pl.col(column).mean())

    if weights is not None:
        varies = cells.group_by(_UNIT).agg(pl.col("n").n_unique().alias("k")).filter(pl.col("k") > 1)
        if varies.height == 0:
            w_expr = pl.col("n").first()
            rule = f"the weights column {weights!r} (constant within unit)"
        else:
            w_expr = pre_mean("n")
            rule = (
                f"the unit's mean of the weights column {weights!r} over its pre-adoption periods (all "
                f"periods if it has none; the column varies within {varies.height} units)"
            )
    elif trials is not None:
        w_expr = pre_mean("_trials")
        rule = f"the unit's mean {trials!r} over its pre-adoption periods (all periods if it has none)"
    else:
        w_expr = pl.lit(1.0)
        rule = "equal (1 per unit)"
    unit_w = cells.group_by(_UNIT).agg(w_expr.cast(pl.Float64).alias(W))
    cells = cells.join(unit_w, on=_UNIT, how="left")
    xs = tuple(f"_x{i}" for i in range(len(cols.get("covariates") or ())))
    frame = cells.select(
        pl.col(_UNIT).alias(UNIT),
        pl.col(UID),
        pl.col(_PERIOD).alias(PERIOD),
        pl.col(TID),
        pl.col(FIRST_TREATED).alias(G),
        pl.col(GID),
        ((pl.col(FIRST_TREATED) > 0) & (pl.col(_PERIOD) >= pl.col(FIRST_TREATED)))
        .cast(pl.Float64)
        .alias(TREATED),
        pl.col(Y).cast(pl.Float64),
        pl.col("n").cast(pl.Float64).alias(N),
        pl.col(W),
        pl.col(_CLUSTER).alias(CLUSTER),
        *[pl.col(x) for x in xs],
    ).sort(UID, TID)
    units = frame.group_by(UID).agg(pl.col(G).first())
    cohorts = tuple(sorted(int(g) for g in units.get_column(G).unique().to_list() if g != 0))
    return StaggeredPanel(
        frame=frame,
        columns=cols,
        xnames=xs,
        periods=tuple(int(p) for p in periods),
        cohorts=cohorts,
        n_units=units.height,
        n_never_treated=int((units.get_column(G) == 0).sum()),
        balanced=bool(frame.group_by(UID).len().get_column("len").min() == len(periods)),
        n_input_rows=prepared.n_input_rows,
        n_dropped=n_dropped,
        unit_weight_rule=rule,
        outcome_scale=outcome_scale,
    )
