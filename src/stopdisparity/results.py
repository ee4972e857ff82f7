"""Frozen result objects and the tidy-table contract shared by every model.

Every estimator returns a frozen result whose ``tidy()`` is one polars frame with the columns of
DESIGN.md, in this order: ``term, estimate, std_error, statistic, p_value, ci_low, ci_high, n_obs,
n_clusters, estimator, estimand, inference``; extra keys (``odds_ratio``, ``pp_change``, ``weight``, ...)
may follow. ``std_error`` is always the analytical cluster-robust SE; bootstrap or randomization
inference changes only ``p_value``, ``ci_low``, ``ci_high`` and ``inference``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError

#: The tidy table's leading columns, in order (DESIGN.md, Results).
TIDY_COLUMNS: tuple[str, ...] = (
    "term",
    "estimate",
    "std_error",
    "statistic",
    "p_value",
    "ci_low",
    "ci_high",
    "n_obs",
    "n_clusters",
    "estimator",
    "estimand",
    "inference",
)

TIDY_SCHEMA: Mapping[str, pl.DataType] = {
    "term": pl.String(),
    "estimate": pl.Float64(),
    "std_error": pl.Float64(),
    "statistic": pl.Float64(),
    "p_value": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "n_obs": pl.Int64(),
    "n_clusters": pl.Int64(),
    "estimator": pl.String(),
    "estimand": pl.String(),
    "inference": pl.String(),
}


@dataclass(frozen=True, slots=True)
class TidyRow:
    """One row of a tidy table; ``extra`` holds the keys that follow the contract's columns."""

    term: str
    estimate: float | None
    std_error: float | None
    statistic: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    n_obs: int
    n_clusters: int | None
    estimator: str
    estimand: str
    inference: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The row as a mapping, contract columns first, with non-finite numbers as None."""
        out: dict[str, Any] = {c: _finite(getattr(self, c)) for c in TIDY_COLUMNS}
        for key, value in self.extra.items():
            if key in out:
                raise SpecificationError(f"extra key {key!r} would overwrite a contract column")
            out[key] = _finite(value)
        return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tidy_frame(rows: Sequence[TidyRow]) -> pl.DataFrame:
    """A tidy table from rows: the contract's columns and types, then extra keys in first-seen order."""
    dicts = [r.as_dict() for r in rows]
    extra: dict[str, None] = {}
    for d in dicts:
        for key in d:
            if key not in TIDY_SCHEMA:
                extra[key] = None
    frame = pl.DataFrame(dicts, schema_overrides=dict(TIDY_SCHEMA), infer_schema_length=None)
    missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
    if missing:  # an empty row list
        frame = pl.DataFrame(schema=dict(TIDY_SCHEMA))
    return frame.select(*TIDY_COLUMNS, *[c for c in extra if c in frame.columns])


def check_tidy(frame: pl.DataFrame) -> pl.DataFrame:
    """Raise :class:`SpecificationError` unless ``frame`` starts with the contract's columns and types."""
    head = frame.columns[: len(TIDY_COLUMNS)]
    if tuple(head) != TIDY_COLUMNS:
        raise SpecificationError(f"tidy table must start with {list(TIDY_COLUMNS)}; got {head}")
    for name, dtype in TIDY_SCHEMA.items():
        if frame.schema[name] != dtype and frame.schema[name] != pl.Null:
            raise SpecificationError(f"tidy column {name!r} must be {dtype}; got {frame.schema[name]}")
    return frame
