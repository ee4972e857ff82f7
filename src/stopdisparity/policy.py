"""Policy registry: 287(g) agreements (or any policy file in the same format) as typed rows.

An agreement is in force on [signed, ended). The shipped registry and its sources are in
``data/policies/``; see ``287g_agreements.SOURCES.md`` for how each row was established.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import polars as pl

from stopdisparity.errors import ReferenceDataError
from stopdisparity.resources import data_path

MODELS = ("jail", "task_force", "warrant_service_officer", "unknown")
REQUIRED_COLUMNS = (
    "state", "agency", "agency_type", "county_fips", "model", "signed", "ended", "end_basis", "source",
)  # fmt: skip
OPTIONAL_COLUMNS = ("renewal_dates", "confidence", "notes")


def shipped_registry_path() -> Path:
    """Path of the shipped 287(g) registry CSV."""
    return data_path("policies", "287g_agreements.csv")


@cache
def _read_registry(path: str) -> pl.DataFrame:
    frame = pl.read_csv(path, infer_schema=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ReferenceDataError(
            f"{path}: policy file lacks required columns {missing}; required: {list(REQUIRED_COLUMNS)}"
        )
    for col in OPTIONAL_COLUMNS:
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(col))
    frame = frame.with_row_index("registry_row", offset=2)  # CSV line number (header = 1)
    try:
        frame = frame.with_columns(
            pl.col("signed").str.to_date("%Y-%m-%d"),
            pl.col("ended").str.to_date("%Y-%m-%d"),
        )
    except pl.exceptions.InvalidOperationError as e:
        raise ReferenceDataError(f"{path}: signed/ended must be ISO dates (YYYY-MM-DD): {e}") from e
    return frame


def load_registry(path: str | Path | None = None) -> pl.DataFrame:
    """Rows of a policy file (default: the shipped 287(g) registry), dates parsed.

    ``registry_row`` is the row's line number in the CSV, so every use of a row can be traced back.
    """
    return _read_registry(str(path if path is not None else shipped_registry_path()))
