r"""Shared machinery of the fixed-effects models: input cells, exact within-projections, IRLS, sandwiches.

Users never call this module; they get its results through :func:`stopdisparity.models.did.fit_did`
and :func:`stopdisparity.models.counts.fit_counts`. Later estimators (event study, inference) reuse it.

What is here
------------
- **Input cells.** :func:`prepare_cells` validates a long county × period × race panel (one row per
  unit × period × race, as :class:`stopdisparity.panel.Panel` frames are), applies the ``missing``
  policy and renames the columns to internal names; :func:`pair_cells` reshapes it to one row per
  unit × period with ``focal`` and ``reference`` stop counts.
- **Fixed effects.** :class:`WithinProjector` projects vectors on the span of any number of
  fixed-effect dummies under observation weights, *exactly*: it solves the normal equations with the
  largest factor eliminated (its block of :math:`F'WF` is diagonal, because every row belongs to one
  level) and a dense Cholesky factorisation of the Schur complement of the remaining factors. The
  redundant dummy columns are found once from the design's structure (they do not depend on positive
  weights). At county × month (146 counties, 336 NC and SC state-months) the dense part is 146 × 146; the
  two-race Poisson with county × month effects keeps ~1,000 columns dense and eliminates the 26,000
  cell effects. No alternating projections, so no demeaning tolerance enters the estimates.
- **GLMs.** :func:`fit_glm` runs iteratively reweighted least squares (Newton's method for canonical
  links) with the fixed effects absorbed by the projector at every iteration, using statsmodels'
  families for link, variance and deviance. By Frisch–Waugh–Lovell the coefficient, the Hessian block
  :math:`\tilde X'W\tilde X` and the per-observation scores :math:`\psi_i \tilde x_i` are those of the
  GLM with explicit dummies (the tests compare with statsmodels' ``GLM`` on dummies and with pyfixest).
- **Speed.** The headline fit on the NC + SC county × month synth panel (25,760 cells, 10.2M
  stops, 6 IRLS iterations) takes 0.17 s with one BLAS thread and 0.5-0.8 s when OpenBLAS's threads
  compete with other processes for the cores (small dense LAPACK calls then wait for a core); set
  ``OPENBLAS_NUM_THREADS=1`` on a busy machine. Dummies in statsmodels' ``GLM`` would need a dense
  25,760 × 483 design refactorised at every iteration.
- **Covariances.** :func:`cluster_sums` and :class:`SmallSample` give CR0 and CR1 sandwiches
  :math:`V_0 = H^{-1} (\sum_g s_g s_g') H^{-1}` from the scores and the Hessian (computed here, not
  taken from statsmodels' defaults), with pyfixest's ``CRV1`` small-sample factor.

References
----------
Bergé, L. (2018). Efficient estimation of maximum likelihood models with multiple fixed-effects: the R
package FENmlm. CREA Discussion Paper 2018-13.
Correia, S., Guimarães, P. & Zylkin, T. (2020). Fast Poisson estimation with high-dimensional fixed
effects. Stata Journal 20(1), 95-115. https://doi.org/10.1177/1536867X20909691
Cameron, A. C. & Miller, D. L. (2015). A practitioner's guide to cluster-robust inference. Journal of
Human Resources 50(2), 317-372. https://doi.org/10.3368/jhr.50.2.317
McCullagh, P. & Nelder, J. A. (1989). Generalized Linear Models, 2nd ed. Chapman & Hall (IRLS).
de Chaisemartin, C. & D'Haultfœuille, X. (2020). Two-way fixed effects estimators with heterogeneous
treatment effects. American Economic Review 110(9), 2964-2996. https://doi.org/10.1257/aer.20181169
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.linalg
import scipy.sparse as sp
from statsmodels.genmod import families
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from stopdisparity.errors import (
    DroppedRowsWarning,
    FewClustersWarning,
    FewEffectiveClustersWarning,
    InferenceFallbackWarning,
    SpecificationError,
    StopDisparityError,
    check_choice,
)

Family = Literal["binomial", "poisson", "gaussian"]
Missing = Literal["raise", "drop"]
VcovType = Literal["CR1", "CR0"]
MISSING: tuple[Missing, ...] = ("raise", "drop")
VCOV_TYPES: tuple[VcovType, ...] = ("CR1", "CR0")
DefaultInference = Literal["cr2", "cluster"]
#: The inference a TWFE or event-study fit reports unless told otherwise: CR2 with Bell–McCaffrey df.
#: CR1 (``cluster``) under-covers at the Monte Carlo's design M (coverage 0.902 / 0.896 against the
#: 0.916-0.978 band; CR2 0.944 / 0.928): its bias with few effective clusters (issue 5).
DEFAULT_INFERENCE: DefaultInference = "cr2"
DEFAULT_INFERENCES: tuple[DefaultInference, ...] = ("cr2", "cluster")
#: The inference methods FewClustersWarning recommends: fitting for one of them heeds its G*-only form.
FEW_CLUSTER_REMEDIES = ("cr2", "wild", "score", "ri")
#: Thresholds of :class:`~stopdisparity.errors.FewClustersWarning` (issue 5, section 3).
MIN_TREATED_CLUSTERS = 10
MAX_TREATED_SHARE = 0.3
#: Below this effective number of clusters G* (:func:`effective_clusters`, rho = 0) the warning fires
#: too. Chosen in-sample on one design: on design M of the Monte Carlo (50 of 146 counties treated,
#: 2,000 draws over four county-size spreads) the CR1 interval covered 0.85 of draws with G* < 20 and
#: 0.91-0.93 above it, still short of 0.95 (``bench/effective_clusters.py``). No warning does not mean
#: CR1 is fine.
MIN_EFFECTIVE_CLUSTERS = 20.0

# ------------------------------------------------------------------------------------- input cells

#: Internal column names of prepared cells (user column names may be any string).
UNIT, PERIOD, GROUP, CLUSTER, RACE, STOPS, TREATED, POPULATION = (
    "unit",
    "period",
    "group",
    "cluster",
    "race",
    "stops",
    "treated",
    "population",
)


@dataclass(frozen=True, slots=True)
class PreparedCells:
    """A validated long panel of the race pair, with internal column names.

    ``frame`` columns: unit, period, group, cluster (strings or the user's types), race (the user's
    race label), stops (Float64), treated (Float64, 0/1), and population (Float64) when requested.
    """

    frame: pl.DataFrame
    race_pair: tuple[str, str]
    columns: Mapping[str, str | None]
    n_input_rows: int
    n_dropped: int
    dropped_columns: tuple[str, ...]
    multi_group: bool


def _dtype_ok_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def prepare_cells(
    data: pl.DataFrame,
    *,
    race_pair: tuple[str, str],
    unit: str,
    period: str,
    treatment: str,
    group: str | None,
    cluster: str,
    race: str,
    stops: str,
    missing: Missing,
    population: str | None = None,
    stacklevel: int = 3,
) -> PreparedCells:
    """Validate a long panel and keep the rows of the race pair, under an explicit missing-data policy.

    Parameters
    ----------
    data
        One row per unit × period × race (e.g. ``Panel.frame``). Other columns are ignored.
    race_pair
        (focal, reference) race labels.
    unit, period, treatment, group, cluster, race, stops
        Column names. ``group`` may be None (plain period effects).
    missing
        ``raise``: any null (or NaN) in a used column of the pair's rows raises; ``drop``: such rows,
        and unit-periods left with only one race of the pair, are dropped with a
        :class:`~stopdisparity.errors.DroppedRowsWarning`.
    population
        Column to carry as ``population`` (not subject to the missing policy; the caller decides).
    stacklevel
        Passed to :func:`warnings.warn` so that warnings point at the user's call.

    Returns
    -------
    PreparedCells

    Raises
    ------
    SpecificationError
        Wrong type, missing columns, a race of the pair absent, duplicate unit × period × race rows,
        negative or non-finite stops, a non-binary treatment, a treatment (or group, cluster) that is
        not constant within a unit-period, or missing values under ``missing="raise"``.
    """
    check_choice("missing", missing, MISSING)
    if not isinstance(data, pl.DataFrame):
        raise SpecificationError(
            f"data must be a polars DataFrame (e.g. Panel.frame); got {type(data).__name__}"
        )
    focal, reference = _check_pair(race_pair)
    used = {
        "unit": unit,
        "period": period,
        "treatment": treatment,
        "group": group,
        "cluster": cluster,
        "race": race,
        "stops": stops,
    }
    for role, name in used.items():
        if name is not None and not isinstance(name, str):
            raise SpecificationError(f"{role} must be a column name (str); got {name!r}")
    needed = list(dict.fromkeys(c for c in (unit, period, race, stops, treatment, group, cluster) if c))
    absent = [c for c in [*needed, *([population] if population else [])] if c not in data.columns]
    if absent:
        raise SpecificationError(f"data lacks column(s) {absent}; it has {data.columns}")
    for role, name in (("stops", stops), ("treatment", treatment)):
        if not _dtype_ok_numeric(data.schema[name]):
            raise SpecificationError(
                f"{role} column {name!r} must be numeric or boolean; got {data.schema[name]}"
            )
    if population and not data.schema[population].is_numeric():
        raise SpecificationError(
            f"population column {population!r} must be numeric; got {data.schema[population]}"
        )

    races = data.get_column(race).cast(pl.String)
    present = set(races.drop_nulls().unique().to_list())
    for label in (focal, reference):
        if label not in present:
            raise SpecificationError(
                f"race_pair race {label!r} does not occur in column {race!r}; "
                f"races present: {sorted(present)}"
            )
    n_input = data.height
    rel = data.with_columns(races.alias(race)).filter(
        pl.col(race).is_null() | pl.col(race).is_in([focal, reference])
    )
    null_expr = [pl.col(c).is_null() for c in needed]
    null_expr += [pl.col(c).is_nan() for c in (stops, treatment) if data.schema[c].is_float()]
    null_counts = rel.select([pl.col(c).is_null().sum().alias(c) for c in needed]).row(0, named=True)
    for c in (stops, treatment):
        if data.schema[c].is_float():
            null_counts[c] += int(rel.get_column(c).is_nan().sum())
    bad_cols = tuple(c for c, k in null_counts.items() if k)
    n_pair_rows = rel.height
    n_dropped = 0
    if bad_cols:
        described = ", ".join(f"{c!r}: {null_counts[c]}" for c in bad_cols)
        if missing == "raise":
            raise SpecificationError(
                f"missing values in the {focal}/{reference} rows ({described}); pass missing='drop' to "
                "drop those rows (with a warning), or fill them first"
            )
        keep = ~pl.any_horizontal(null_expr)
        before = rel.height
        rel = rel.filter(keep)
        n_dropped = before - rel.height

    frame = rel.select(
        pl.col(unit).alias(UNIT),
        pl.col(period).alias(PERIOD),
        (pl.col(group) if group else pl.lit("all")).alias(GROUP),
        pl.col(cluster).alias(CLUSTER),
        pl.col(race).alias(RACE),
        pl.col(stops).cast(pl.Float64).alias(STOPS),
        pl.col(treatment).cast(pl.Float64).alias(TREATED),
        *([pl.col(population).cast(pl.Float64).alias(POPULATION)] if population else []),
    )
    s = frame.get_column(STOPS)
    if frame.height and (not s.is_finite().all() or s.min() < 0):  # type: ignore[operator]
        raise SpecificationError(f"stops column {stops!r} must be finite and >= 0; got min {s.min()}")
    bad_d = frame.filter(~pl.col(TREATED).is_in([0.0, 1.0]))
    if bad_d.height:
        raise SpecificationError(
            f"treatment column {treatment!r} must be boolean or 0/1; got values "
            f"{sorted(bad_d.get_column(TREATED).unique().to_list())[:5]}"
        )

    per_cell = frame.group_by(UNIT, PERIOD).agg(
        (pl.col(RACE) == focal).sum().alias("_nf"),
        (pl.col(RACE) == reference).sum().alias("_nr"),
        pl.col(TREATED).n_unique().alias("_nd"),
        pl.col(GROUP).n_unique().alias("_ng"),
        pl.col(CLUSTER).n_unique().alias("_nc"),
    )
    dup = per_cell.filter((pl.col("_nf") > 1) | (pl.col("_nr") > 1))
    if dup.height:
        ex = dup.row(0, named=True)
        raise SpecificationError(
            f"data must have one row per {unit} × {period} × {race}; {dup.height} unit-periods repeat a race "
            f"(e.g. {unit}={ex[UNIT]!r}, {period}={ex[PERIOD]!r}). Filter first (e.g. one agency) or "
            "aggregate the stops"
        )
    for col, role, name in (
        ("_nd", "treatment", treatment),
        ("_ng", "group", group),
        ("_nc", "cluster", cluster),
    ):
        bad = per_cell.filter(pl.col(col) > 1)
        if bad.height:
            ex = bad.row(0, named=True)
            raise SpecificationError(
                f"{role} column {name!r} must be constant within a unit-period; it differs between the race "
                f"rows of {unit}={ex[UNIT]!r}, {period}={ex[PERIOD]!r}"
            )
    incomplete = per_cell.filter((pl.col("_nf") == 0) | (pl.col("_nr") == 0))
    if incomplete.height:
        if missing == "raise":
            ex = incomplete.row(0, named=True)
            raise SpecificationError(
                f"{incomplete.height} unit-periods lack the {focal} or the {reference} row (e.g. "
                f"{unit}={ex[UNIT]!r}, {period}={ex[PERIOD]!r}); a panel is balanced with 0 for no stops. "
                "Pass missing='drop' to drop them"
            )
        before = frame.height
        frame = frame.join(incomplete.select(UNIT, PERIOD), on=[UNIT, PERIOD], how="anti")
        n_dropped += before - frame.height
        bad_cols = (*bad_cols, race)
    if n_dropped:
        warnings.warn(
            f"dropped {n_dropped} of {n_pair_rows} {focal}/{reference} rows with missing values in "
            f"{list(dict.fromkeys(bad_cols))} (missing='drop')",
            DroppedRowsWarning,
            stacklevel=stacklevel,
        )
    if frame.height == 0:
        raise SpecificationError(f"no {focal}/{reference} rows left to fit")
    multi = group is not None and frame.get_column(GROUP).n_unique() > 1
    return PreparedCells(
        frame=frame,
        race_pair=(focal, reference),
        columns={
            "unit": unit,
            "period": period,
            "treatment": treatment,
            "group": group,
            "cluster": cluster,
            "race": race,
            "stops": stops,
            "population": population,
        },
        n_input_rows=n_input,
        n_dropped=n_dropped,
        dropped_columns=tuple(dict.fromkeys(bad_cols)) if n_dropped else (),
        multi_group=multi,
    )


def _check_pair(race_pair: object) -> tuple[str, str]:
    if (
        not isinstance(race_pair, tuple | list)
        or len(race_pair) != 2
        or not all(isinstance(r, str) for r in race_pair)
        or race_pair[0] == race_pair[1]
    ):
        raise SpecificationError(
            f"race_pair must be two different race labels (focal, reference); got {race_pair!r}"
        )
    return (race_pair[0], race_pair[1])


def pair_cells(cells: PreparedCells) -> pl.DataFrame:
    """One row per unit × period: unit, period, group, cluster, treated, focal, reference, n."""
    focal, reference = cells.race_pair
    return (
        cells.frame.group_by(UNIT, PERIOD, maintain_order=True)
        .agg(
            pl.col(GROUP).first(),
            pl.col(CLUSTER).first(),
            pl.col(TREATED).first(),
            pl.col(STOPS).filter(pl.col(RACE) == focal).sum().alias("focal"),
            pl.col(STOPS).filter(pl.col(RACE) == reference).sum().alias("reference"),
        )
        .with_columns((pl.col("focal") + pl.col("reference")).alias("n"))
        .sort(UNIT, PERIOD)
    )


def drop_separated(
    frame: pl.DataFrame, factors: Sequence[str], outcomes: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, list[Any]]]:
    """Drop fixed-effect levels whose rows have a zero total in any of ``outcomes``, until none is left.

    A level whose outcome total is zero has an infinite fixed effect (the likelihood has no maximum):
    for the binomial the outcomes are the focal and the reference counts (all-zero focal means the
    share is 0 throughout), for the Poisson the count. Such rows carry no information about the
    coefficients once the level's effect diverges, so dropping them leaves the estimate unchanged;
    pyfixest's ``separation_check=["fe"]`` and ppmlhdfe do the same (Correia, Guimarães & Zylkin 2020).

    Returns
    -------
    (polars.DataFrame, dict)
        The kept rows and, per factor, the dropped levels (in first-dropped order).
    """
    dropped: dict[str, list[Any]] = {f: [] for f in factors}
    while frame.height:
        changed = False
        for f in factors:
            sums = frame.group_by(f).agg([pl.col(o).sum().alias(o) for o in outcomes])
            bad = sums.filter(pl.any_horizontal([pl.col(o) <= 0 for o in outcomes]))
            if bad.height:
                dropped[f].extend(sorted(bad.get_column(f).to_list(), key=str))
                frame = frame.join(bad.select(f), on=f, how="anti")
                changed = True
        if not changed:
            break
    return frame, dropped


def codes_of(*columns: pl.Series) -> np.ndarray:
    """Integer codes 0..L-1 of the combinations of one or more columns (first-seen order is not kept)."""
    if len(columns) == 1:
        return columns[0].rank("dense").cast(pl.Int64).to_numpy() - 1
    frame = pl.DataFrame({f"c{i}": c for i, c in enumerate(columns)})
    return frame.select(pl.struct(pl.all()).rank("dense")).to_series().cast(pl.Int64).to_numpy() - 1


# ------------------------------------------------------------------------- exact within-projection
class WithinProjector:
    r"""Weighted least-squares projection on the span of fixed-effect dummies, solved exactly.

    For a weight vector :math:`w > 0` the projection of :math:`v` is :math:`F a` with
    :math:`F'WF a = F'Wv`. The largest factor :math:`E` is eliminated (its block is the diagonal of
    weight sums per level); the Schur complement :math:`S = A_{RR} - A_{RE} D_E^{-1} A_{ER}` of the
    remaining dummies is formed (by weighted counts of the cells when :math:`A_{RE}` is small, with
    sparse products otherwise) and inverted after dropping the dummy columns that are redundant
    (found once, by pivoted QR of :math:`S` at unit weights: the null space of :math:`F'WF` is that of
    :math:`F` for any positive weights). One step of iterative
    refinement makes the residuals orthogonal to the dummies to rounding error.

    Parameters
    ----------
    codes
        One integer array per factor, codes 0..L-1 with every level present, all of the same length.
    """

    def __init__(self, codes: Sequence[np.ndarray]) -> None:
        if not codes:
            raise SpecificationError("WithinProjector needs at least one fixed-effect factor")
        arrs = [np.ascontiguousarray(c, dtype=np.int64) for c in codes]
        n = arrs[0].shape[0]
        if any(a.shape != (n,) for a in arrs):
            raise SpecificationError("fixed-effect code arrays must be one-dimensional and of equal length")
        self.n = n
        self.levels = tuple(int(a.max()) + 1 if n else 0 for a in arrs)
        for a, lv in zip(arrs, self.levels, strict=True):
            if n and (a.min() < 0 or np.bincount(a, minlength=lv).min() == 0):
                raise SpecificationError("fixed-effect codes must be 0..L-1 with every level present")
        self.codes = tuple(arrs)
        order = sorted(range(len(arrs)), key=lambda i: -self.levels[i])
        e = order[0]
        self._e_codes = arrs[e]
        self._n_e = self.levels[e]
        rows, cols, offset = [], [], 0
        for i in order[1:]:
            rows.append(np.arange(n))
            cols.append(arrs[i] + offset)
            offset += self.levels[i]
        self._n_r = offset
        ones = np.ones(n)
        self._E = sp.csr_matrix((ones, (np.arange(n), arrs[e])), shape=(n, self._n_e))
        # All dummies in one CSR matrix F = [E R] with a fixed number of entries per row (one per factor):
        # the largest factor's column first, then the others' in the order of R. Its structure is reused
        # with the weights as values, so F'Wv is one streaming pass over v and F a one pass to the output.
        self._k = len(arrs)
        self._f_indices = np.stack([arrs[e], *(c + self._n_e for c in cols)], axis=1).reshape(-1)
        self._f_indptr = np.arange(0, n * self._k + 1, self._k, dtype=np.int64)
        self._F = sp.csr_matrix(
            (np.ones(n * self._k), self._f_indices, self._f_indptr), shape=(n, self._n_e + offset)
        )
        # Dense Schur blocks (A_RE, A_RR by weighted bincounts of cell indices) when A_RE is small, e.g.
        # 146 × 336 at county × month; sparse products otherwise (the Poisson's 1,000 × 26,000).
        self._dense = bool(offset) and offset * self._n_e <= min(16 * n, 4_000_000)
        if self._dense:
            self._idx_re = np.concatenate([c * self._n_e + arrs[e] for c in cols])
            self._idx_rr = np.concatenate([c * offset + c2 for c in cols for c2 in cols])
        if offset:
            r = np.concatenate(rows)
            self._R = sp.csr_matrix((np.ones(r.size), (r, np.concatenate(cols))), shape=(n, offset))
            s1 = self._schur(np.ones(n))[0]
            _, rr, piv = scipy.linalg.qr(s1, mode="economic", pivoting=True)
            diag = np.abs(np.diag(rr))
            rank = int((diag > 1e-9 * diag[0]).sum()) if diag.size and diag[0] > 0 else 0
            self._keep = np.sort(piv[:rank])
        else:
            self._R = sp.csr_matrix((n, 0))
            self._keep = np.zeros(0, dtype=np.int64)
        #: Number of linearly independent dummy columns (the rank of F).
        self.rank = self._n_e + int(self._keep.size)

    def _schur(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | sp.csr_matrix]:
        """Schur complement of the E block, E's weight sums and :math:`A_{RE} = R'WE` (dense or sparse)."""
        d = np.bincount(self._e_codes, weights=w, minlength=self._n_e)
        if d.min() <= 0:
            raise StopDisparityError(
                "a fixed-effect level has zero total weight (fitted probabilities or rates of 0): the "
                "model is separated beyond what drop_separated removes"
            )
        if self._dense:
            n_r, n_e = self._n_r, self._n_e
            k_r = self._k - 1
            a_re_d = np.bincount(self._idx_re, weights=np.tile(w, k_r), minlength=n_r * n_e)
            a_re_d = a_re_d.reshape(n_r, n_e)
            a_rr_d = np.bincount(self._idx_rr, weights=np.tile(w, k_r * k_r), minlength=n_r * n_r)
            s_d = a_rr_d.reshape(n_r, n_r) - (a_re_d / d) @ a_re_d.T
            return s_d, d, a_re_d
        wr = self._R.multiply(w[:, None]).tocsr()
        a_re = (wr.T @ self._E).tocsr()
        a_rr = (self._R.T @ wr).toarray()
        s = a_rr - (a_re @ sp.diags(1.0 / d) @ a_re.T).toarray()
        return s, d, a_re

    def solver(self, w: np.ndarray) -> WeightedProjection:
        """The projection for weights ``w`` (factorised once, applied to any number of vectors)."""
        w = np.asarray(w, dtype=float)
        if w.shape != (self.n,) or not np.all(np.isfinite(w)) or w.min() <= 0:
            raise StopDisparityError("weights must be finite and > 0, one per row")
        if self._n_r:
            s, d, a_re = self._schur(w)
            k = self._keep
            # One LAPACK call per weight vector: small dense problems pay OpenBLAS thread wake-ups per
            # call on a busy machine, and the refinement step in residualize restores full accuracy.
            chol = np.linalg.inv(s[np.ix_(k, k)])
        else:
            d = np.bincount(self._e_codes, weights=w, minlength=self._n_e)
            a_re, chol = sp.csr_matrix((0, self._n_e)), None
        return WeightedProjection(self, w, d, a_re, chol)


@dataclass(frozen=True, eq=False)
class WeightedProjection:
    r""":class:`WithinProjector` factorised for one weight vector; see :meth:`fitted` and :meth:`residualize`.

    Both apply the dummies by sparse products with the combined dummy matrix :math:`F = [E\ R]`: the
    weighted sums :math:`F'Wv` in one pass over ``v`` (the weights are the values of the sparse
    matrix, so :math:`Wv` is never formed) and the fitted values :math:`F a` in one pass that writes the
    output. Each level sum is accumulated in row order, as by separate products with :math:`E` and
    :math:`R`; with sparse Schur blocks the results equal that formulation's bit for bit (one factor
    besides the largest), with dense ones (BLAS products of the small blocks) to ~1e-15 relative.
    On a 25,760 × 128 block (county × month, 146 + 336 levels) :meth:`fitted` takes ~11 ms and
    :meth:`residualize` ~30 ms with one BLAS thread, against 33 and 70 ms with separate products.
    Arrays in C order avoid a copy: scipy's sparse products transpose Fortran-ordered blocks first.
    """

    projector: WithinProjector
    w: np.ndarray
    d: np.ndarray
    #: :math:`A_{RE} = R'WE`, dense when small (see :class:`WithinProjector`), else sparse.
    a_re: np.ndarray | sp.csr_matrix
    chol: Any
    #: :math:`(WF)'`, the transposed dummies with the weights as values (built from ``w``).
    _fw_t: sp.csc_matrix = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.projector
        data = np.repeat(np.asarray(self.w, dtype=float), p._k)
        fw = sp.csr_matrix((data, p._f_indices, p._f_indptr), shape=p._F.shape)
        object.__setattr__(self, "_fw_t", fw.T)

    def fitted(self, v: np.ndarray) -> np.ndarray:
        r"""The weighted projection :math:`F(F'WF)^{-}F'Wv` of ``v`` on the dummies, in one pass.

        No refinement step: the result is exact to the rounding of the factorisation (in practice
        ~1e-14 relative); :meth:`residualize` adds one step of iterative refinement.

        Parameters
        ----------
        v
            Shape (n,) or (n, m): one vector or m vectors as columns.

        Returns
        -------
        numpy.ndarray
            The fitted values, of the shape of ``v``.
        """
        arr = np.asarray(v, dtype=float)
        return self._fitted_2d(arr.reshape(arr.shape[0], -1)).reshape(arr.shape)

    def _fitted_2d(self, v: np.ndarray) -> np.ndarray:
        p = self.projector
        n_e = p._n_e
        b = self._fw_t @ v  # [E R]'Wv: the weighted sums of every level of every factor
        t_e = b[:n_e] / self.d[:, None]
        if p._n_r:
            rhs = b[n_e:] - self.a_re @ t_e
            a_r = np.zeros_like(rhs)
            a_r[p._keep] = self.chol @ rhs[p._keep]
            t_e -= (self.a_re.T @ a_r) / self.d[:, None]
            coef = np.concatenate([t_e, a_r])
        else:
            coef = t_e
        return np.asarray(p._F @ coef)

    #: The former name of :meth:`fitted` (kept for callers that use it).
    _fitted = fitted

    def residualize(self, v: np.ndarray) -> np.ndarray:
        """``v`` minus its weighted projection on the dummies (one step of iterative refinement).

        Parameters
        ----------
        v
            Shape (n,) or (n, m).

        Returns
        -------
        numpy.ndarray
            The residuals, of the shape of ``v``.
        """
        arr = np.asarray(v, dtype=float)
        mat = arr.reshape(arr.shape[0], -1)
        resid = self._fitted_2d(mat)
        np.subtract(mat, resid, out=resid)  # v - Mv in the buffer of Mv
        resid -= self._fitted_2d(resid)
        return resid.reshape(arr.shape)


# -------------------------------------------------------------------------------------------- GLMs
_FAMILIES: Mapping[str, Any] = {
    "binomial": families.Binomial,
    "poisson": families.Poisson,
    "gaussian": families.Gaussian,
}


@dataclass(frozen=True, eq=False)
class GlmFit:
    r"""A converged fixed-effects GLM: coefficients and the pieces of its sandwich.

    ``scores`` holds the per-observation contributions :math:`\psi_i \tilde x_i` to the score of the
    coefficients, with :math:`\psi_i = w_i (y_i-\mu_i) g'(\mu_i)` (for canonical links the prior weight
    times :math:`y_i - \mu_i`) and :math:`\tilde x` the regressors residualised on the fixed effects with
    the final IRLS weights :math:`w`; ``hessian`` is :math:`\tilde X' W \tilde X` (the expected
    information, equal to the observed one for canonical links); ``projection`` the final weighted
    projection, for delta-method gradients.
    """

    family: Family
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    weights: np.ndarray
    psi: np.ndarray
    x_tilde: np.ndarray
    hessian: np.ndarray
    scores: np.ndarray
    deviance: float
    iterations: int
    converged: bool
    projection: WeightedProjection


def fit_glm(
    y: np.ndarray,
    X: np.ndarray,
    projector: WithinProjector,
    *,
    family: Family,
    prior: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    eta_start: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
    names: Sequence[str] | None = None,
) -> GlmFit:
    r"""Fit a GLM with fixed effects by IRLS, absorbing the effects exactly at every iteration.

    Each iteration regresses the working response :math:`z = \eta - o + (y-\mu) g'(\mu)` on the
    regressors and the dummies with weights :math:`w = p / (g'(\mu)^2 V(\mu))` (``p`` the prior
    weights: binomial trials, WLS weights), by Frisch–Waugh–Lovell: both are residualised on the
    dummies and :math:`\beta = (\tilde X'W\tilde X)^{-1}\tilde X'W\tilde z`,
    :math:`\eta = o + z - (\tilde z - \tilde X\beta)`. Steps that raise the deviance are halved.

    Parameters
    ----------
    y
        Outcome: a share in [0, 1] for ``binomial`` (with ``prior`` the trials), a count for
        ``poisson``, any number for ``gaussian`` (one weighted least-squares step).
    X
        Regressors, shape (n, p); no intercept (the fixed effects hold it).
    projector
        The fixed effects.
    family
        ``binomial`` (logit link), ``poisson`` (log link) or ``gaussian`` (identity).
    prior
        Prior weights (binomial trials; WLS weights); default 1.
    offset
        Added to the linear predictor (log exposure for the Poisson).
    eta_start
        Starting linear predictor (e.g. from a fit on a superset of rows).
    tol
        Converged when the largest change of the linear predictor is below ``tol`` (Newton's method
        converges quadratically, so the estimates are then exact to rounding).
    max_iter
        Iteration limit; a fit that reaches it warns (statsmodels' ``ConvergenceWarning``) and
        records ``converged=False``.
    names
        The regressors' names (one per column of ``X``), quoted when one of them is collinear with the
        fixed effects; default: the generic message about the treatment.

    Returns
    -------
    GlmFit
    """
    check_choice("family", family, tuple(_FAMILIES))
    fam = _FAMILIES[family]()
    y = np.asarray(y, dtype=float)
    n = y.shape[0]
    X = np.asarray(X, dtype=float).reshape(n, -1)
    prior = np.ones(n) if prior is None else np.asarray(prior, dtype=float)
    off = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)

    def weights_of(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gprime = fam.link.deriv(mu)
        return prior / (gprime**2 * fam.variance(mu)), gprime

    def deviance(mu: np.ndarray) -> float:
        return float(fam.deviance(y, mu, var_weights=prior))

    if family == "gaussian":
        w = prior
        proj = projector.solver(w)
        r = proj.residualize(np.column_stack([y - off, X]))
        zt, xt = r[:, 0], r[:, 1:]
        _check_identified(X, xt, w, names)
        beta = _solve(xt, zt, w)
        eta = y - (zt - xt @ beta)
        mu = eta
        psi = w * (y - mu)
        return GlmFit(
            family,
            beta,
            eta,
            mu,
            w,
            psi,
            xt,
            _cross(xt, w, xt),
            psi[:, None] * xt,
            deviance(mu),
            1,
            True,
            proj,
        )

    if eta_start is None:
        mu = fam.starting_mu(y) if family == "poisson" else (prior * y + 0.5) / (prior + 1.0)
        eta = fam.link(mu)
    else:
        eta = np.asarray(eta_start, dtype=float)
        mu = fam.link.inverse(eta)
    dev = deviance(mu)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        w, gprime = weights_of(mu)
        z = eta - off + (y - mu) * gprime
        proj = projector.solver(w)
        r = proj.residualize(np.column_stack([z, X]))
        zt, xt = r[:, 0], r[:, 1:]
        if it == 1:
            _check_identified(X, xt, w, names)
        beta = _solve(xt, zt, w)
        eta_new = off + z - (zt - xt @ beta)
        mu_new = fam.link.inverse(eta_new)
        dev_new = deviance(mu_new)
        # Step-halving guards Newton steps that raise the deviance; the starting values are not a point
        # of the model (they are near the saturated fit), so the first step is always taken.
        step = 1.0
        while it > 1 and not (dev_new <= dev * (1 + 1e-12) + 1e-12) and step > 1e-6:
            step /= 2
            eta_new = eta + step * (eta_new - eta)
            mu_new = fam.link.inverse(eta_new)
            dev_new = deviance(mu_new)
        change = float(np.max(np.abs(eta_new - eta))) if n else 0.0
        eta, mu, dev = eta_new, mu_new, dev_new
        if change < tol and step == 1.0:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"IRLS did not converge in {max_iter} iterations (last change in the linear predictor "
            f"{change:.2e}); estimates may be unreliable",
            ConvergenceWarning,
            stacklevel=3,
        )
    w, gprime = weights_of(mu)
    proj = projector.solver(w)
    xt = proj.residualize(X)
    beta = _solve(xt, proj.residualize(eta - off), w)  # the converged coefficients, exactly
    psi = w * (y - mu) * gprime
    return GlmFit(
        family, beta, eta, mu, w, psi, xt, _cross(xt, w, xt), psi[:, None] * xt, dev, it, converged, proj
    )


def _cross(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return a' diag(w) b, without BLAS (tall-skinny products pay thread start-ups on a busy machine)."""
    return np.einsum("ij,i,ik->jk", a, w, b)


def _check_identified(
    X: np.ndarray, xt: np.ndarray, w: np.ndarray, names: Sequence[str] | None = None
) -> None:
    before = np.einsum("ij,i,ij->j", X, w, X)
    after = np.einsum("ij,i,ij->j", xt, w, xt)
    bad = after <= 1e-10 * np.maximum(before, 1e-300)
    if names is not None and np.any(bad):
        which = [str(n) for n, b in zip(names, bad, strict=True) if b]
        raise SpecificationError(
            f"regressor(s) {which} do not vary within the fixed effects in the estimation sample (e.g. a "
            "covariate constant within units, or a treatment that no cell receives): they are collinear "
            "with the fixed effects"
        )
    if np.any(bad):
        raise SpecificationError(
            "a regressor is collinear with the fixed effects (e.g. the treatment does not vary within "
            "units and group-periods in the estimation sample, or no cell is treated)"
        )


def _solve(xt: np.ndarray, zt: np.ndarray, w: np.ndarray) -> np.ndarray:
    if xt.shape[1] == 0:
        return np.zeros(0)
    xtwx = _cross(xt, w, xt)
    rhs = np.einsum("ij,i,i->j", xt, w, zt)
    if xtwx.shape == (1, 1):
        return rhs / xtwx[0]
    return np.linalg.solve(xtwx, rhs)


# ------------------------------------------------------------------------------- cluster sandwiches
def cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Column sums of ``values`` (n × m, or n) within each cluster: shape (G, m)."""
    mat = np.asarray(values, dtype=float).reshape(codes.shape[0], -1)
    out = np.zeros((n_clusters, mat.shape[1]))
    np.add.at(out, codes, mat)
    return out


def cluster_influence(fit: GlmFit, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    r"""Per-cluster influence of the coefficients, :math:`s_g H^{-1}` (G × p).

    The CR0 covariance is its cross-product, :math:`V_0 = \sum_g H^{-1} s_g s_g' H^{-1}`
    (Cameron & Miller 2015, eq. 11 with the GLM Hessian as bread).
    """
    sums = cluster_sums(fit.scores, codes, n_clusters)
    if fit.hessian.shape == (1, 1):
        return sums / fit.hessian[0, 0]
    return np.linalg.solve(fit.hessian, sums.T).T


def nested_in(fe_codes: np.ndarray, cluster_codes: np.ndarray) -> bool:
    """True when every level of the factor lies within one cluster."""
    first = np.full(int(fe_codes.max()) + 1, -1, dtype=np.int64)
    first[fe_codes[::-1]] = cluster_codes[::-1]  # any one cluster of each level
    return bool(np.all(first[fe_codes] == cluster_codes))


@dataclass(frozen=True, slots=True)
class SmallSample:
    r"""pyfixest's ``CRV1`` small-sample factor :math:`\frac{G}{G-1}\cdot\frac{N-1}{N-K}`.

    ``K`` follows pyfixest's default ``ssc(k_adj=True, k_fixef="nonnested", G_adj=True)`` (the fixest
    convention): the coefficients, plus the fixed-effect levels counted as
    :math:`\sum_f L_f - (F-1)` for :math:`F` factors, minus the levels of factors nested in the
    clusters, plus one for each such factor. With county effects, state × period effects and county
    clusters, :math:`K = p + L_{\text{state×period}}`.
    """

    n: int
    n_coef: int
    fe_names: tuple[str, ...]
    fe_levels: tuple[int, ...]
    fe_nested: tuple[bool, ...]
    g: int
    n_label: str = "observations"

    @property
    def k(self) -> int:
        """The K of (N-1)/(N-K)."""
        n_fe = len(self.fe_levels)
        k_fe = sum(self.fe_levels) - (n_fe - 1) if n_fe > 1 else sum(self.fe_levels)
        nested = [lv for lv, ok in zip(self.fe_levels, self.fe_nested, strict=True) if ok]
        return self.n_coef + k_fe - sum(nested) + len(nested)

    @property
    def factor(self) -> float:
        """G/(G-1)·(N-1)/(N-K); NaN when G < 2 or N <= K."""
        g, n, k = self.g, self.n, self.k
        if g < 2 or n <= k:
            return math.nan
        return g / (g - 1) * (n - 1) / (n - k)

    def describe(self) -> str:
        """The factor written out, with what N and K count."""
        fe = ", ".join(
            f"{name} {lv}{' (nested in clusters: counts 1)' if nested else ''}"
            for name, lv, nested in zip(self.fe_names, self.fe_levels, self.fe_nested, strict=True)
        )
        return (
            f"CR1 = G/(G-1)·(N-1)/(N-K)·CR0 = {self.factor:.6f} with G={self.g}, N={self.n} "
            f"{self.n_label}, K={self.k} ({self.n_coef} coefficient(s) + fixed-effect levels {fe}, "
            f"minus {max(len(self.fe_levels) - 1, 0)} for the extra factors; pyfixest CRV1, "
            "ssc(k_fixef='nonnested'))"
        )


# -------------------------------------------------------------------------------- cluster summary
@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """G, G₁ (clusters with any treated cell), the largest treated share and G* of the reported effect.

    ``largest_share`` is the largest treated cluster's share of the stops in treated cells;
    ``effective`` the effect's effective number of clusters (None where a model does not compute it).
    """

    name: str
    g: int
    g_treated: int
    largest: str | None
    largest_share: float
    effective: float | None = None
    #: How labels name ``effective``: "G*", or e.g. "smallest G*" when it stands for several terms'.
    effective_label: str = "G*"

    def _reasons(self) -> dict[str, str]:
        """Why cluster-robust inference is unreliable, by rule (``g_treated``, ``share``, ``effective``)."""
        reasons = {}
        if self.g_treated < MIN_TREATED_CLUSTERS:
            reasons["g_treated"] = f"only {self.g_treated} treated clusters (G₁ < {MIN_TREATED_CLUSTERS})"
        if self.largest_share > MAX_TREATED_SHARE:
            reasons["share"] = (
                f"cluster {self.largest!r} holds {self.largest_share:.0%} of treated stops "
                f"(> {MAX_TREATED_SHARE:.0%})"
            )
        e = self.effective
        if e is not None and not math.isnan(e) and e < MIN_EFFECTIVE_CLUSTERS:
            reasons["effective"] = (
                f"the effect's information sits in {self.effective_label}={e:.1f} effective clusters "
                f"(< {MIN_EFFECTIVE_CLUSTERS:.0f}; Carter, Schnepel & Steigerwald 2017)"
            )
        return reasons

    def warning_text(self) -> str | None:
        """The few-clusters message, or None when G₁ ≥ 10, the share is ≤ 0.3 and G* ≥ 20."""
        reasons = self._reasons()
        if not reasons:
            return None
        return (
            f"{' and '.join(reasons.values())} of G={self.g} clusters by {self.name}: cluster-robust "
            "standard errors are unreliable (CR1 most; CR2, the default, less); use at least CR2, and with "
            "few treated clusters a wild or score bootstrap or randomization inference"
        )

    def describe(self) -> str:
        """``G=…, G₁=…, largest treated share …[, G*=…]``: the text inference labels carry."""
        text = f"G={self.g}, G₁={self.g_treated}, largest treated share {self.largest_share:.2f}"
        if self.effective is None or math.isnan(self.effective):
            return text
        return f"{text}, {self.effective_label}={self.effective:.1f}"

    @property
    def category(self) -> type[FewClustersWarning]:
        """:class:`FewEffectiveClustersWarning` when G* is the only reason to warn, else the parent."""
        return FewEffectiveClustersWarning if set(self._reasons()) == {"effective"} else FewClustersWarning


#: Column holding the group × period key of the period fixed effects (temporary, dropped before fits).
GP = "_gp"


def gp_expr(multi_group: bool, *extra: str) -> pl.Expr:
    """The group × period key (group only when the panel has several groups), optionally × ``extra``."""
    parts = [pl.col(GROUP).cast(pl.String)] if multi_group else []
    parts += [pl.col(PERIOD).cast(pl.String), *[pl.col(c).cast(pl.String) for c in extra]]
    return pl.concat_str(parts, separator="\x1f").alias(GP)


class ClusteredResult:
    """Cluster counts and the covariance description shared by every model's result object.

    Needs ``clusters`` (:class:`ClusterSummary`), ``vcov_type``, ``columns`` (with ``"cluster"``),
    ``tidy()`` and, for the default description, ``small_sample``.
    """

    clusters: ClusterSummary
    vcov_type: str
    columns: Mapping[str, Any]

    @property
    def n_clusters(self) -> int:
        """G, the number of clusters."""
        return self.clusters.g

    @property
    def n_treated_clusters(self) -> int:
        """G₁, the clusters with any treated cell."""
        return self.clusters.g_treated

    @property
    def _vcov_head(self) -> str:
        return (
            f"{self.vcov_type} clustered by {self.columns['cluster']}, {self.clusters.g} clusters "
            f"({self.clusters.g_treated} treated)"
        )

    def coef(self) -> pl.DataFrame:
        """``term`` and ``estimate`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "estimate")  # type: ignore[attr-defined]

    def se(self) -> pl.DataFrame:
        """``term`` and ``std_error`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "std_error")  # type: ignore[attr-defined]

    @property
    def vcov_description(self) -> str:
        """Which covariance, clustered by what, with how many clusters and which small-sample factor."""
        if self.vcov_type == "CR0":
            return f"{self._vcov_head}; no small-sample factor"
        return f"{self._vcov_head}; {self.small_sample.describe()}"  # type: ignore[attr-defined]


def summarize_clusters(
    name: str,
    labels: Sequence[str],
    codes: np.ndarray,
    treated: np.ndarray,
    stops: np.ndarray,
    information: np.ndarray | None = None,
    effective_label: str = "G*",
) -> ClusterSummary:
    """G, G₁, the largest treated cluster's share of the stops in treated cells, and G*.

    G* (:func:`effective_clusters`) needs the clusters' ``information`` about the effect
    (:func:`cluster_information`); without it ``effective`` is None. ``effective_label`` names it in
    labels and warnings when it is not simply the reported effect's.
    """
    g = len(labels)
    on = treated > 0
    by = np.bincount(codes[on], weights=stops[on], minlength=g)
    anyt = np.bincount(codes[on], minlength=g) > 0
    total = by.sum()
    effective = None if information is None else effective_clusters(information)
    if total > 0:
        i = int(np.argmax(by))
        largest, share = str(labels[i]), float(by[i] / total)
    else:
        largest, share = None, 0.0
    return ClusterSummary(name, g, int(anyt.sum()), largest, share, effective, effective_label)


def cluster_information(
    fit: GlmFit, codes: np.ndarray, n_clusters: int, contrast: np.ndarray | None = None, rho: float = 0.0
) -> np.ndarray:
    r"""Each cluster's :math:`\gamma_g`: its part of the variance of :math:`c'\hat\beta` (working model).

    With :math:`a_i = \tilde x_i H^{-1}c` (the regressors residualised on the fixed effects, :math:`H =
    \tilde X'W\tilde X`), :math:`c'\hat\beta - c'\beta \approx \sum_i a_i w_i \varepsilon_i` with working
    residuals of variance :math:`1/w_i` (the final IRLS or WLS weights), correlated :math:`\rho` within a
    cluster: :math:`\gamma_g = (1-\rho)\sum_{i\in g} w_ia_i^2 + \rho(\sum_{i\in g}\sqrt{w_i}a_i)^2`
    (Carter, Schnepel & Steigerwald 2017; computed from cluster blocks as in MacKinnon, Nielsen & Webb's
    summclust paper, 2023, which reports both :math:`\rho = 0` and 1). The package reports
    :math:`\rho = 0`: with unit effects nested in the clusters and equal weights the :math:`\rho` term is
    exactly zero (each cluster's residualised regressor sums to zero), and with weights it is small; R
    ``effClust`` defaults to 0.999, Carter et al.'s worst case, which gives smaller values. ``contrast``
    defaults to the first coefficient. The weights make it the GLM's working regression (for a GLM, G*
    is a guide: it is derived for linear models); for WLS with ``weights="county"`` treating the weights
    as precisions is a convention, not a fitted variance model.
    """
    if not 0.0 <= rho <= 1.0:
        raise SpecificationError(f"rho must be in [0, 1]; got {rho!r}")
    c = np.eye(fit.beta.shape[0])[0] if contrast is None else np.asarray(contrast, dtype=float)
    sa = np.sqrt(fit.weights) * (fit.x_tilde @ np.linalg.solve(fit.hessian, c))
    gamma = np.bincount(codes, weights=sa * sa, minlength=n_clusters)
    if rho:
        gamma = (1 - rho) * gamma + rho * np.bincount(codes, weights=sa, minlength=n_clusters) ** 2
    return gamma


def effective_clusters(information: np.ndarray) -> float:
    r"""G* = G / (1 + Γ), Γ the squared coefficient of variation of the clusters' :math:`\gamma_g`.

    Carter, Schnepel & Steigerwald (2017): the cluster-robust t statistic behaves as with G* equal
    clusters, so G* (not G) tells whether CR1 inference can be trusted. Equal to
    :math:`(\sum_g\gamma_g)^2/\sum_g\gamma_g^2`, the inverse Herfindahl index of the shares; NaN when
    no cluster carries information.
    """
    gamma = np.asarray(information, dtype=float)
    total = float(gamma.sum())
    return total * total / float(np.sum(gamma * gamma)) if total > 0 else math.nan


def warn_few_clusters(summary: ClusterSummary, stacklevel: int, inference: str = "cluster") -> None:
    """Issue :class:`~stopdisparity.errors.FewClustersWarning` when the summary calls for it.

    Its G*-only form is heeded (not issued) when ``inference`` is a remedy it recommends.
    """
    text = summary.warning_text()
    if text:
        with few_clusters_heeded(inference):
            warnings.warn(text, summary.category, stacklevel=stacklevel)


# ------------------------------------------------------------------------------ effective weights
def effective_weights(sample: pl.DataFrame, *, treated: str, stops: str) -> pl.DataFrame:
    r"""Each treated unit's weight in the coefficient on a binary treatment, beside its stop share.

    With cell effects :math:`\delta_i`, :math:`\hat\beta = \sum_{D_i=1}\omega_i\delta_i` (to first order
    for GLMs), :math:`\omega_i = w_i\tilde d_i / \sum_{D_j=1} w_j\tilde d_j`, with :math:`w` the final
    IRLS (or WLS) weights and :math:`\tilde d` the treatment residualised on the fixed effects (de
    Chaisemartin & D'Haultfœuille 2020, Theorem 1; exact for linear models, a linearisation on the link
    scale for GLMs). The weights sum to one; negative ones mark treated cells that serve as controls
    ("forbidden comparisons", Goodman-Bacon 2021).

    Parameters
    ----------
    sample
        Estimation rows with columns ``unit``, ``weight``, ``treated_resid`` and the two named below.
    treated
        The 0/1 regressor column.
    stops
        The stops that define each unit's share of treated stops (the stop-weighted ATT's weights).

    Returns
    -------
    polars.DataFrame
        Per treated unit: unit, treated_cells, treated_stops, stop_share, weight, negative_cells;
        sorted by weight, descending.
    """
    unit_s = sample.get_column(UNIT)
    codes = codes_of(unit_s)
    labels = pl.DataFrame({"c": codes, "u": unit_s.cast(pl.String)}).unique("c").sort("c").get_column("u")
    d = sample.get_column(treated).to_numpy()
    on = d > 0
    raw = np.where(
        on, sample.get_column("weight").to_numpy() * sample.get_column("treated_resid").to_numpy(), 0.0
    )
    cell = raw / raw.sum()
    n_st = sample.get_column(stops).to_numpy()
    g = labels.len()
    n_cells = np.bincount(codes[on], minlength=g)
    st = np.bincount(codes[on], weights=n_st[on], minlength=g)
    w = np.bincount(codes[on], weights=cell[on], minlength=g)
    neg = np.bincount(codes[on], weights=(cell[on] < 0).astype(float), minlength=g)
    keep = n_cells > 0
    return pl.DataFrame(
        {
            "unit": labels.filter(pl.Series(keep)),
            "treated_cells": n_cells[keep].astype(np.int64),
            "treated_stops": st[keep],
            "stop_share": st[keep] / st.sum(),
            "weight": w[keep],
            "negative_cells": neg[keep].astype(np.int64),
        }
    ).sort("weight", descending=True)


# -------------------------------------------------------------------------------- inference hook
@dataclass(frozen=True, slots=True)
class Inference:
    """Non-analytical inference that replaces ``p_value``, ``ci_low``, ``ci_high`` and ``inference``.

    The bootstrap and randomization-inference routines build one and attach it with a result's
    ``with_inference``; ``std_error`` stays the analytical cluster-robust SE (DESIGN.md, Results).
    Terms not listed keep their analytical inference.
    """

    label: str
    p_value: Mapping[str, float]
    ci: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: The covariates (besides the fixed effects) the method partialled out; a result fitted with
    #: covariates accepts only an inference that names the same ones (see ``with_inference``).
    covariates: tuple[str, ...] = ()
    #: The method's name (``cr2``, ``score``, ...), for what depends on it (the event study's pre-test).
    method: str | None = None
    #: The level ``ci`` was computed at: a table at another level is refused (resampling is not redone).
    alpha: float = 0.05
    #: An analytical method's (estimate, SE, df) per term: p-value and interval follow any level.
    t_reference: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)


def attached(
    inference: Inference | None, term: str, p: float, lo: float, hi: float, label: str, alpha: float
) -> tuple[float, float, float, str]:
    """``(p_value, ci_low, ci_high, inference)`` of ``term`` in a ``tidy()`` row at level ``alpha``.

    The attached inference's values when it lists the term (its interval NaN when it gives none), else
    the analytical ones passed in; ``std_error`` is never replaced (DESIGN.md, Results).

    Raises
    ------
    SpecificationError
        When the attached interval came from resampling at another level than ``alpha`` (a p-value
        alone, with no interval, is given at any level).
    """
    if inference is None or term not in inference.p_value:
        return p, lo, hi, label
    if term in inference.t_reference:
        est, se, df = inference.t_reference[term]
        _, p, lo, hi = inference_stats(est, se, alpha, df)
        return p, lo, hi, inference.label
    stored = inference.ci.get(term, (math.nan, math.nan))
    if not math.isclose(alpha, inference.alpha) and any(map(math.isfinite, stored)):
        raise SpecificationError(
            f"the attached inference ({inference.label}) computed its intervals at "
            f"alpha={inference.alpha:g}, not {alpha:g}: apply it again with alpha={alpha:g} (resampled "
            "intervals are not rescaled)"
        )
    return inference.p_value[term], stored[0], stored[1], inference.label


@contextlib.contextmanager
def few_clusters_heeded(inference: str) -> Iterator[None]:
    """Silence the G*-only warning (FewEffectiveClustersWarning) while fitting for a remedy it recommends.

    The labels keep G, G₁ and G*. Very few treated clusters or a dominant one still warn: resampling
    methods are themselves unreliable then (MacKinnon & Webb 2017).
    """
    with warnings.catch_warnings():
        if inference in FEW_CLUSTER_REMEDIES:
            warnings.simplefilter("ignore", FewEffectiveClustersWarning)
        yield


def with_default_inference(result: Any, inference: DefaultInference, stacklevel: int = 3) -> Any:
    """``result`` with a fit's default inference: ``cr2`` (Bell–McCaffrey df) or ``cluster`` (CR1/CR0).

    ``cluster`` attaches nothing: the analytical ``vcov`` p-values and intervals stay.

    Where CR2 cannot be formed (more coefficients than its dense cross-product allows) the result keeps
    CR1 and an :class:`InferenceFallbackWarning` says why and what to use instead.
    """
    if inference == "cluster":
        return result
    from stopdisparity.models.inference import cr2  # the inference module imports the models

    try:
        return cr2(result)
    except (SpecificationError, np.linalg.LinAlgError) as e:
        clusters = getattr(result, "clusters", None)
        where = f" ({clusters.describe()})" if isinstance(clusters, ClusterSummary) else ""
        warnings.warn(
            f"{e}. The p-values and intervals are CR1{where}, which under-covers when G* is small; pass "
            "inference='cluster' (--inference cluster) to choose CR1 and silence this, or use cr3, wild, "
            "score or ri where the estimator has them",
            InferenceFallbackWarning,
            stacklevel=stacklevel,
        )
        return result


# ---------------------------------------------------------------------------------------- lineage
def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a fit depends on (a fresh dict each call)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: the metadata lookups cost ~10 ms, which adds up over Monte Carlo draws."""
    out = [("python", sys.version.split()[0])]
    for name in ("stopdisparity", "numpy", "scipy", "statsmodels", "polars"):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:  # pragma: no cover - source tree without install
            out.append((name, "unknown"))
    return tuple(out)


# -------------------------------------------------------------------------------- result helpers
def inference_stats(
    estimate: float, std_error: float, alpha: float, df: float | None = None
) -> tuple[float, float, float, float]:
    """(statistic, p_value, ci_low, ci_high): normal reference (``df=None``) or Student t with ``df``.

    pyfixest uses the normal for GLMs and t(G-1) for clustered linear models; so does this package.
    """
    from scipy import special  # the ufuncs behind stats.norm / stats.t sf and isf, without freezing

    if not (0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    if not (math.isfinite(std_error) and std_error > 0):
        return (math.nan, math.nan, math.nan, math.nan)
    stat = estimate / std_error
    if df is None:
        p, crit = 2 * special.ndtr(-abs(stat)), -special.ndtri(alpha / 2)
    else:
        p, crit = 2 * special.stdtr(df, -abs(stat)), -special.stdtrit(df, alpha / 2)
    p, crit = float(p), float(crit)
    return (stat, p, estimate - crit * std_error, estimate + crit * std_error)


def leave_one_out_table(
    rows: Sequence[Mapping[str, Any]],
    full: Mapping[str, tuple[float, float]],
    *,
    unit_name: str,
    alpha: float,
) -> pl.DataFrame:
    """Tabulate leave-one-out refits and flag sign and significance flips against the full fit.

    ``rows`` hold unit, term, estimate, std_error, p_value, ci_low, ci_high, n_clusters,
    n_treated_clusters; ``full`` maps term -> (estimate, p_value) of the full sample.
    """
    out = []
    for r in rows:
        est_full, p_full = full[r["term"]]
        sign_flip = bool(np.sign(r["estimate"]) != np.sign(est_full))
        sig_flip = bool((r["p_value"] < alpha) != (p_full < alpha))
        out.append(
            {**r, "sign_flip": sign_flip, "significance_flip": sig_flip, "flagged": sign_flip or sig_flip}
        )
    schema = {
        "dropped_unit": pl.String,
        "term": pl.String,
        "estimate": pl.Float64,
        "std_error": pl.Float64,
        "p_value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n_clusters": pl.Int64,
        "n_treated_clusters": pl.Int64,
        "sign_flip": pl.Boolean,
        "significance_flip": pl.Boolean,
        "flagged": pl.Boolean,
    }
    frame = pl.DataFrame(out, schema=schema) if out else pl.DataFrame(schema=schema)
    return frame.rename({"dropped_unit": f"dropped_{unit_name}"}) if unit_name != "unit" else frame
