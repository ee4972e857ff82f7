r"""Generic panels: validate any unit × period panel and turn it into the cells the FE models fit.

Users never call this module; they get it through :func:`stopdisparity.models.did.fit_did_panel` and
:func:`stopdisparity.models.event_study.fit_event_study_panel` (and ``stopdisparity did --panel FILE
--outcome COL ...``). The race-layout functions (``fit_did``, ``fit_event_study``) reach the same cells
through :func:`stopdisparity.models._fe.prepare_cells` and :func:`~stopdisparity.models._fe.pair_cells`:
a binomial cell is *successes* (``focal``) out of *trials* (``n``), so the race form is the generic form
with successes = focal-race stops and trials = focal + reference stops.

The panel
---------
One row per unit × period, with the standard DiD argument names (R's ``did``, pyfixest's
``event_study``): ``yname`` the outcome, ``idname`` the unit, ``tname`` the integer period and
``gname`` the period in which the unit's treatment starts, 0 or null for never treated. Treatment is
**absorbing**: a unit is treated in every period :math:`t \ge g` (no exits, no anticipation; the event
study's ``anticipation`` moves only its reference period). ``gname`` must be constant within a unit, an
integer, and either 0/null or a period within the range of ``tname`` in the data. Note that 0 always
means *never treated*, even when the period index contains 0.

Outcomes:

- ``trials`` given: ``yname`` counts successes out of ``trials`` (0 ≤ y ≤ trials); the logit models
  ``y / trials`` as binomial with ``trials`` as prior weights (the unit-level logit on the expanded
  Bernoulli data); the linear model regresses the share ``y / trials``, weighted by ``trials`` unless
  ``weights`` is given.
- no ``trials``: ``yname`` is any finite number, for the linear model only, with optional analytic
  weights (pyfixest ``feols(weights=...)``, Stata ``[aweight]``).

Column names are used as given (dots, spaces, any Unicode); internally they are renamed to the names in
:mod:`stopdisparity.models._fe` plus ``focal``, ``reference``, ``n`` and ``_x0``, ``_x1``, ... for the
covariates, so no user name can collide with an internal one.

References
----------
Callaway, B. & Sant'Anna, P. H. C. (2021). Difference-in-differences with multiple time periods.
Journal of Econometrics 225(2), 200-230. https://doi.org/10.1016/j.jeconom.2020.12.001 (the ``yname``,
``idname``, ``tname``, ``gname`` convention of the R package ``did``).
Sun, L. & Abraham, S. (2021). Estimating dynamic treatment effects in event studies with heterogeneous
treatment effects. Journal of Econometrics 225(2), 175-199. https://doi.org/10.1016/j.jeconom.2020.09.006
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
For 287(g) timing (``gname``): ICE, "Delegation of Immigration Authority Section 287(g)" agreement
lists, as imported by :mod:`stopdisparity.policy`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from stopdisparity.errors import DroppedRowsWarning, SpecificationError, check_choice
from stopdisparity.models._fe import (
    CLUSTER,
    GROUP,
    MISSING,
    PERIOD,
    TREATED,
    UNIT,
    Missing,
)

#: Internal name of the adoption period (0 = never treated) in generic cells.
FIRST_TREATED = "_first_treated"
#: The term of the derived treatment indicator ``tname >= gname`` in tidy tables.
TREATMENT_TERM = "in_force"
#: The leading columns of generic cells (covariates ``_x0``, ... follow).
CELL_COLUMNS = (UNIT, PERIOD, GROUP, CLUSTER, TREATED, FIRST_TREATED, "focal", "reference", "n")
#: Working column of the filled ``gname`` (a name no panel column plausibly has).
_G = "\x1fgname_filled"


def covariate_columns(columns: Mapping[str, Any]) -> tuple[str, ...]:
    """Internal names ``_x0``, ``_x1``, ... of a fit's covariates (``columns["covariates"]``)."""
    return tuple(f"_x{i}" for i in range(len(columns.get("covariates") or ())))


@dataclass(frozen=True, slots=True)
class PreparedPanel:
    """A validated generic panel as cells (one row per unit × period), with internal column names.

    ``frame`` columns: unit, period (Int64), group, cluster, treated (Float64 0/1, absorbing),
    ``_first_treated`` (Int64, 0 = never), ``focal`` (successes; for the linear model the outcome
    times ``n``), ``reference`` (``n - focal``), ``n`` (trials; for the linear model the analytic
    weight, 1 without weights) and the covariates ``_x0``, ``_x1``, ... (Float64). ``focal / n`` is
    the modelled outcome in both cases, as the inference routines read it.
    """

    frame: pl.DataFrame
    columns: Mapping[str, Any]
    n_input_rows: int
    n_dropped: int
    dropped_columns: tuple[str, ...]
    multi_group: bool
    period_range: tuple[int, int]


def _name(role: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise SpecificationError(f"{role} must be a column name (a non-empty str); got {value!r}")
    return value


def _optional_name(role: str, value: object) -> str | None:
    return None if value is None else _name(role, value)


def _numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def prepare_panel(
    data: pl.DataFrame,
    *,
    yname: str,
    idname: str,
    tname: str,
    gname: str,
    trials: str | None,
    weights: str | None,
    xnames: Sequence[str],
    cluster: str | None,
    group: str | None,
    missing: Missing,
    binomial: bool,
    reserved_terms: Sequence[str] = (TREATMENT_TERM,),
    stacklevel: int = 3,
) -> PreparedPanel:
    """Validate a generic panel and build its cells under an explicit missing-data policy.

    Parameters
    ----------
    data
        One row per ``idname`` × ``tname``; other columns are ignored.
    yname, idname, tname, gname
        Outcome, unit, integer period and first-treated period (0 or null = never treated).
    trials
        Column of binomial trials (``yname`` then counts successes), or None.
    weights
        Column of analytic weights (linear model only), or None.
    xnames
        Time-varying covariates (numeric or boolean columns).
    cluster
        Column to cluster by; None: ``idname``.
    group
        Column whose levels get their own period effects (group × period); None: period effects.
    missing
        ``raise``: a null (or NaN) in a used column raises; ``drop``: such rows are dropped with a
        :class:`~stopdisparity.errors.DroppedRowsWarning`. A null ``gname`` is not missing: it means
        never treated.
    binomial
        Whether the model is the logit (needs ``trials``, refuses ``weights``).
    reserved_terms
        Term names the covariates may not take (they would repeat a tidy row's ``term``).
    stacklevel
        Passed to :func:`warnings.warn` so that warnings point at the user's call.

    Returns
    -------
    PreparedPanel

    Raises
    ------
    SpecificationError
        When a column is missing or of the wrong type, two roles name the same column, a unit-period
        repeats, ``gname`` is not an integer, varies within a unit or lies outside the period range
        (other than 0), the outcome lies outside [0, trials], trials or weights are negative, the
        logit lacks trials or is given weights, or values are missing under ``missing="raise"``.
    """
    check_choice("missing", missing, MISSING)
    if not isinstance(data, pl.DataFrame):
        raise SpecificationError(f"data must be a polars DataFrame; got {type(data).__name__}")
    y = _name("yname", yname)
    unit = _name("idname", idname)
    period = _name("tname", tname)
    first = _name("gname", gname)
    n_col = _optional_name("trials", trials)
    w_col = _optional_name("weights", weights)
    cl = _optional_name("cluster", cluster) or unit
    grp = _optional_name("group", group)
    if isinstance(xnames, str) or not isinstance(xnames, Sequence):
        raise SpecificationError(
            f"xnames must be a sequence of column names, e.g. ('x1', 'x2'); got {xnames!r}"
        )
    xs = tuple(_name("xnames entry", x) for x in xnames)
    if binomial and n_col is None:
        raise SpecificationError(
            f"the logit (twfe-logit) needs trials: {y!r} counts successes out of a trials column; without "
            "one, use the linear model (twfe-linear) for a continuous outcome"
        )
    if binomial and w_col is not None:
        raise SpecificationError(
            f"weights applies to the linear model only (the logit weights each row by its trials); got "
            f"weights={w_col!r} with the logit"
        )
    roles = {"yname": y, "idname": unit, "tname": period, "gname": first, "trials": n_col, "weights": w_col}
    roles |= {f"xnames[{i}]": x for i, x in enumerate(xs)}
    seen: dict[str, str] = {}
    for role, col in roles.items():
        if col is None:
            continue
        if col in seen:
            raise SpecificationError(f"{role} and {seen[col]} name the same column {col!r}")
        seen[col] = role
    for x in xs:
        if x in reserved_terms:
            raise SpecificationError(
                f"covariate {x!r} would repeat the treatment term {x!r} in the tidy table; rename the column"
            )
    used = {**roles, "cluster": cl, "group": grp}
    for role, col in used.items():
        if col is not None and col not in data.columns:
            raise SpecificationError(f"column {col!r} ({role}) is not in the data; it has {data.columns}")
    numeric_roles = [("yname", y), ("trials", n_col), ("weights", w_col), *zip(
        [f"xnames[{i}]" for i in range(len(xs))], xs, strict=True
    )]  # fmt: skip
    for role, col in numeric_roles:
        if col is not None and not _numeric(data.schema[col]):
            raise SpecificationError(
                f"{role} column {col!r} must be numeric or boolean; got {data.schema[col]}"
            )
    for role, col in (("tname", period), ("gname", first)):
        if not data.schema[col].is_numeric():
            raise SpecificationError(
                f"{role} column {col!r} must hold integer periods (e.g. a year, or year*12+month-1); got "
                f"{data.schema[col]}"
            )

    n_input = data.height
    # ------------------------------------------------------------------ missing values (gname excluded)
    value_cols = list(dict.fromkeys(c for c in (unit, period, y, n_col, w_col, *xs, cl, grp) if c))
    null_counts = {c: int(data.get_column(c).is_null().sum()) for c in value_cols}
    for c in value_cols:
        if data.schema[c].is_float():
            null_counts[c] += int(data.get_column(c).is_nan().sum())
    bad_cols = tuple(c for c, k in null_counts.items() if k)
    work = data
    n_dropped = 0
    if bad_cols:
        described = ", ".join(f"{c!r}: {null_counts[c]}" for c in bad_cols)
        if missing == "raise":
            raise SpecificationError(
                f"missing values in used columns ({described}); pass missing='drop' to drop those rows "
                "(with a warning), or fill them first"
            )
        nulls = [pl.col(c).is_null() for c in bad_cols]
        nulls += [pl.col(c).is_nan() for c in bad_cols if data.schema[c].is_float()]
        work = data.filter(~pl.any_horizontal(nulls))
        n_dropped = n_input - work.height
        warnings.warn(
            f"dropped {n_dropped} of {n_input} rows with missing values in {list(bad_cols)} (missing='drop')",
            DroppedRowsWarning,
            stacklevel=stacklevel,
        )
    if work.height == 0:
        raise SpecificationError("no rows left to fit")

    # ------------------------------------------------------------------------------- periods, gname
    t = work.get_column(period)
    if t.dtype.is_float() and not (t == t.floor()).all():
        bad = work.filter(pl.col(period) != pl.col(period).floor()).row(0, named=True)
        raise SpecificationError(
            f"tname column {period!r} must hold integer periods; got {bad[period]!r} for {unit}={bad[unit]!r}"
        )
    t_all = data.get_column(period).drop_nulls()
    if t_all.dtype.is_float():
        t_all = t_all.drop_nans()
    t_lo, t_hi = int(t_all.min()), int(t_all.max())  # type: ignore[arg-type]
    g = work.get_column(first)
    g_filled = (g.fill_nan(None) if g.dtype.is_float() else g).fill_null(0)
    work = work.with_columns(g_filled.alias(_G))
    if g_filled.dtype.is_float():
        frac = work.filter(pl.col(_G) != pl.col(_G).floor())
        if frac.height:
            ex = frac.row(0, named=True)
            raise SpecificationError(
                f"gname column {first!r} must hold integer periods (0 or empty = never treated); got "
                f"{ex[first]!r} for {unit}={ex[unit]!r}"
            )
    work = work.with_columns(pl.col(_G).cast(pl.Int64), pl.col(period).cast(pl.Int64))
    varying = work.group_by(unit).agg(pl.col(_G).n_unique().alias(_G)).filter(pl.col(_G) > 1)
    if varying.height:
        ex = varying.get_column(unit).to_list()[:5]
        raise SpecificationError(
            f"gname column {first!r} must be constant within each {unit!r}; it varies for {ex}"
        )
    outside = work.filter((pl.col(_G) != 0) & ((pl.col(_G) < t_lo) | (pl.col(_G) > t_hi)))
    if outside.height:
        ex = outside.row(0, named=True)
        raise SpecificationError(
            f"gname column {first!r} must be 0 (never treated) or a period in {period!r}'s range "
            f"{t_lo}..{t_hi}; got {ex[_G]} for {unit}={ex[unit]!r}"
        )

    # ------------------------------------------------------------------------------- outcome checks
    def _example(expr: pl.Expr) -> dict[str, Any] | None:
        rows = work.filter(expr)
        return rows.row(0, named=True) if rows.height else None

    def _where(row: Mapping[str, Any]) -> str:
        return f"{unit}={row[unit]!r}, {period}={row[period]!r}"

    yv = pl.col(y).cast(pl.Float64)
    ex = _example(~yv.is_finite())
    if ex is not None:
        raise SpecificationError(f"outcome {y!r} must be finite; got {ex[y]!r} at {_where(ex)}")
    if n_col is not None:
        nv = pl.col(n_col).cast(pl.Float64)
        ex = _example(~nv.is_finite() | (nv < 0))
        if ex is not None:
            raise SpecificationError(
                f"trials column {n_col!r} must be finite and >= 0; got {ex[n_col]!r} at {_where(ex)}"
            )
        ex = _example((yv < 0) | (yv > nv))
        if ex is not None:
            raise SpecificationError(
                f"outcome {y!r} counts successes out of trials {n_col!r}, so 0 <= {y} <= {n_col}; got "
                f"{ex[y]!r} out of {ex[n_col]!r} at {_where(ex)}"
            )
    if w_col is not None:
        wv = pl.col(w_col).cast(pl.Float64)
        ex = _example(~wv.is_finite() | (wv < 0))
        if ex is not None:
            raise SpecificationError(
                f"weights column {w_col!r} must be finite and >= 0; got {ex[w_col]!r} at {_where(ex)}"
            )
    for x in xs:
        ex = _example(~pl.col(x).cast(pl.Float64).is_finite())
        if ex is not None:
            raise SpecificationError(f"covariate {x!r} must be finite; got {ex[x]!r} at {_where(ex)}")

    dup = work.group_by(unit, period).len().filter(pl.col("len") > 1)
    if dup.height:
        ex = dup.row(0, named=True)
        raise SpecificationError(
            f"data must have one row per {unit!r} × {period!r}; {dup.height} unit-periods repeat (e.g. "
            f"{unit}={ex[unit]!r}, {period}={ex[period]!r}). Aggregate first, or use the race layout (one "
            "row per unit × period × race, without --outcome)"
        )

    # --------------------------------------------------------------------------------- the cells
    if n_col is not None:
        trials_expr = pl.col(n_col).cast(pl.Float64)
        share = pl.col(y).cast(pl.Float64) / trials_expr
    else:
        trials_expr = None
        share = pl.col(y).cast(pl.Float64)
    if binomial:
        n_expr = trials_expr
        focal = pl.col(y).cast(pl.Float64)
    else:
        if w_col is not None:
            n_expr = pl.col(w_col).cast(pl.Float64)
        elif trials_expr is not None:
            n_expr = trials_expr
        else:
            n_expr = pl.lit(1.0)
        # focal / n is the outcome (as the inference routines read it); 0 where n is 0 (dropped later)
        focal = pl.when(n_expr > 0).then(share * n_expr).otherwise(0.0)
    assert n_expr is not None
    frame = (
        work.select(
            pl.col(unit).alias(UNIT),
            pl.col(period).alias(PERIOD),
            (pl.col(grp) if grp else pl.lit("all")).alias(GROUP),
            pl.col(cl).alias(CLUSTER),
            ((pl.col(_G) != 0) & (pl.col(period) >= pl.col(_G))).cast(pl.Float64).alias(TREATED),
            pl.col(_G).alias(FIRST_TREATED),
            focal.alias("focal"),
            n_expr.alias("n"),
            *[pl.col(x).cast(pl.Float64).alias(f"_x{i}") for i, x in enumerate(xs)],
        )
        .with_columns((pl.col("n") - pl.col("focal")).alias("reference"))
        .select(CELL_COLUMNS + tuple(f"_x{i}" for i in range(len(xs))))
        .sort(UNIT, PERIOD)
    )
    multi = grp is not None and frame.get_column(GROUP).n_unique() > 1
    columns: dict[str, Any] = {
        "unit": unit,
        "period": period,
        "treatment": None,
        "group": grp,
        "cluster": cl,
        "outcome": y,
        "trials": n_col,
        "weights": w_col,
        "first_treated": first,
        "covariates": xs,
    }
    return PreparedPanel(
        frame=frame,
        columns=columns,
        n_input_rows=n_input,
        n_dropped=n_dropped,
        dropped_columns=bad_cols if n_dropped else (),
        multi_group=multi,
        period_range=(t_lo, t_hi),
    )
