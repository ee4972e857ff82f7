"""Period indexes: months, quarters and years as consecutive integers (DESIGN.md, Panel).

A month is ``year*12 + month - 1``, a quarter ``year*4 + quarter - 1``, a year itself, so
consecutive periods differ by one and event times are differences of indexes.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import polars as pl

from stopdisparity.errors import SpecificationError, check_choice

FREQUENCIES = ("month", "quarter", "year")

Frequency = Literal["month", "quarter", "year"]


def period_index(day: date, freq: Frequency) -> int:
    """The index of the period holding ``day``: ``year*12+month-1``, ``year*4+quarter-1`` or ``year``.

    Parameters
    ----------
    day : datetime.date
    freq : {"month", "quarter", "year"}

    Returns
    -------
    int

    Examples
    --------
    >>> period_index(date(2006, 2, 27), "month"), period_index(date(2006, 2, 27), "quarter")
    (24073, 8024)
    """
    check_choice("freq", freq, FREQUENCIES)
    if freq == "month":
        return day.year * 12 + day.month - 1
    if freq == "quarter":
        return day.year * 4 + (day.month - 1) // 3
    return day.year


def period_start(index: int, freq: Frequency) -> date:
    """The first day of the period with this index (the inverse of :func:`period_index`).

    Parameters
    ----------
    index : int
    freq : {"month", "quarter", "year"}

    Returns
    -------
    datetime.date
    """
    check_choice("freq", freq, FREQUENCIES)
    if freq == "month":
        return date(index // 12, index % 12 + 1, 1)
    if freq == "quarter":
        return date(index // 4, (index % 4) * 3 + 1, 1)
    return date(index, 1, 1)


def periods_range(first: int, last: int, freq: Frequency) -> pl.DataFrame:
    """Consecutive periods ``first..last`` (indexes) with ``period_start`` and exclusive ``period_end``."""
    check_choice("freq", freq, FREQUENCIES)
    indexes = list(range(first, last + 1))
    return pl.DataFrame(
        {
            "period": indexes,
            "period_start": [period_start(i, freq) for i in indexes],
            "period_end": [period_start(i + 1, freq) for i in indexes],
        },
        schema={"period": pl.Int64, "period_start": pl.Date, "period_end": pl.Date},
    )


def make_periods(start: date, end: date, *, freq: Frequency = "month") -> pl.DataFrame:
    """The periods frame :func:`treatment_timing` takes, covering ``start`` to ``end``.

    Parameters
    ----------
    start, end : datetime.date
        The first and last day to cover (inclusive); the periods holding them are the first and last.
    freq : {"month", "quarter", "year"}, default "month"

    Returns
    -------
    polars.DataFrame
        ``period`` (Int64, consecutive), ``period_start`` (Date), ``period_end`` (Date, exclusive:
        the next period's start).

    Raises
    ------
    SpecificationError
        If ``freq`` is not allowed or ``end`` is before ``start``.
    """
    check_choice("freq", freq, FREQUENCIES)
    if not isinstance(start, date) or not isinstance(end, date) or end < start:
        raise SpecificationError(f"need dates with start <= end; got start={start!r}, end={end!r}")
    return periods_range(period_index(start, freq), period_index(end, freq), freq)
