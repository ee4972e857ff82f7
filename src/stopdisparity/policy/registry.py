"""Policy files: reading, validating, describing and writing registry rows.

A policy file is a CSV with the columns of :data:`REQUIRED_COLUMNS` (plus, optionally,
:data:`OPTIONAL_COLUMNS`); the shipped 287(g) registry is one. An agreement is in force on
``[signed, ended)``; an empty ``ended`` means in force to this day (or end unknown).

References
----------
.. [1] U.S. Immigration and Customs Enforcement, "Delegation of Immigration Authority Section 287(g)
   Immigration and Nationality Act", participating-agencies sheets.
   https://www.ice.gov/identify-and-arrest/287g
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from types import MappingProxyType

import polars as pl

from stopdisparity.errors import (
    ReferenceDataError,
    SourceNotRegisteredError,
    SpecificationError,
)
from stopdisparity.geo import STATE_FIPS, canonical_fips, county_centroids
from stopdisparity.resources import data_path

__all__ = [
    "AGENCY_TYPES",
    "CONFIDENCE_LEVELS",
    "MODELS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "RegistryProblem",
    "agency_key",
    "describe_registry",
    "list_policies",
    "load_registry",
    "resolve_policy",
    "shipped_registry_path",
    "show_agency",
    "validate_registry",
    "write_registry",
]

MODELS = ("jail", "task_force", "warrant_service_officer", "unknown")
"""The ``model`` vocabulary: ICE's Jail Enforcement, Task Force and Warrant Service Officer models."""

AGENCY_TYPES = ("sheriff", "police", "corrections", "state", "other")
"""The ``agency_type`` vocabulary."""

CONFIDENCE_LEVELS = ("low", "medium", "high")
"""The ``confidence`` vocabulary, weakest first; an empty value means "not rated"."""

REQUIRED_COLUMNS = (
    "state", "agency", "agency_type", "county_fips", "model", "signed", "ended", "end_basis", "source",
)  # fmt: skip
OPTIONAL_COLUMNS = ("renewal_dates", "confidence", "notes")

#: Named policies that ship with the package (``--policy NAME``); anything else is a path.
POLICIES: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType(
    {
        "287g": (
            ("policies", "287g_agreements.csv"),
            "287(g) agreements: NC/SC history 2006-2025 and ICE's 2025 nationwide roster",
        ),
    }
)

_MAX_LISTED = 20
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIPS = re.compile(r"\d{5}")


def shipped_registry_path() -> Path:
    """Path of the shipped 287(g) registry CSV (``data/policies/287g_agreements.csv``)."""
    return data_path(*POLICIES["287g"][0])


# --------------------------------------------------------------------------------------------------
# Agency names
# --------------------------------------------------------------------------------------------------

_AGENCY_WORDS: Mapping[str, str] = MappingProxyType(
    {"dept": "department", "co": "county", "cnty": "county", "pd": "police department",
     "so": "sheriffs office", "ofc": "office", "and": "", "of": "", "the": ""}
)  # fmt: skip


def agency_key(name: str) -> str:
    """Reduce an agency name to the key used to compare agency names.

    Parameters
    ----------
    name : str
        An agency name as written anywhere ("Mecklenburg County Sheriff's Office", "MECKLENBURG CO.
        SHERIFFS OFFICE", "Mecklenburg County Sheriff’s Office").

    Returns
    -------
    str
        Lower-case letters and digits only. Case, accents, punctuation and spacing are ignored; the
        abbreviations Dept, Co, Cnty, PD, SO and Ofc are spelled out; "and", "of", "the" are dropped.

    Raises
    ------
    SpecificationError
        If ``name`` is not a string.

    Examples
    --------
    >>> agency_key("Mecklenburg Co. Sheriff's Office") == agency_key("MECKLENBURG COUNTY SHERIFFS OFFICE")
    True
    """
    if not isinstance(name, str):
        raise SpecificationError(f"agency name must be a str; got {type(name).__name__} {name!r}")
    return _agency_key(name)


@cache
def _agency_key(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    # Apostrophes join ("Sheriff's" -> "sheriffs"); every other non-alphanumeric separates words.
    folded = re.sub(r"['’`´]", "", folded)
    words = re.sub(r"[^a-z0-9]+", " ", folded).split()
    return "".join(_AGENCY_WORDS.get(w, w).replace(" ", "") for w in words)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    """One problem found in a policy file by :func:`validate_registry`.

    Attributes
    ----------
    row : int or None
        The row's line number in the CSV (header = 1); ``None`` for a problem of the whole file (a
        missing column).
    column : str or None
        The column at fault; ``None`` for a problem of the whole row (duplicate, overlap).
    problem : str
        What is wrong, starting with a stable phrase ("unknown model", "ended before signed", ...).
    value : str or None
        The offending value as written in the file.
    """

    row: int | None
    column: str | None
    problem: str
    value: str | None

    def __str__(self) -> str:
        where = "file" if self.row is None else f"line {self.row}"
        if self.column is not None:
            where += f", column {self.column}"
        value = "" if self.value is None else f" (got {self.value!r})"
        return f"{where}: {self.problem}{value}"


def _as_text(series: pl.Series) -> list[str | None]:
    """A column as strings: dates in ISO form, everything else cast; nulls stay ``None``."""
    if series.dtype == pl.Date:
        return [None if v is None else v.isoformat() for v in series.to_list()]
    if series.dtype == pl.Null:
        return [None] * series.len()
    return series.cast(pl.String).to_list()


def _parse_iso(text: str | None) -> date | None:
    if text is None or not _ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@cache
def _counties_by_state() -> Mapping[str, frozenset[str]]:
    centroids = county_centroids()
    out: dict[str, set[str]] = {}
    for fips, state in centroids.select("county_fips", "state").iter_rows():
        out.setdefault(state, set()).add(fips)
    return MappingProxyType({k: frozenset(v) for k, v in out.items()})


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def validate_registry(frame: pl.DataFrame, *, source: str = "policy file") -> list[RegistryProblem]:
    """List every problem of a policy file's rows; an empty list means the file is valid.

    Parameters
    ----------
    frame : polars.DataFrame
        The rows, as read with ``pl.read_csv(path, infer_schema=False)`` (all strings) or as returned
        by :func:`load_registry` (``signed``/``ended`` as dates). A ``registry_row`` column, if
        present, gives each row's line number; otherwise rows are numbered from line 2.
    source : str, default "policy file"
        Name of the file, used in messages only.

    Returns
    -------
    list of RegistryProblem
        In line order; whole-file problems (missing columns) first.

    Raises
    ------
    SpecificationError
        If ``frame`` is not a polars DataFrame.

    Notes
    -----
    The checks, each reported with the line, the column and the value:

    - a required column (:data:`REQUIRED_COLUMNS`) is missing (rows are still checked on the
      columns that exist);
    - ``state`` is not a postal code of :data:`stopdisparity.geo.STATE_FIPS`;
    - ``county_fips`` (may be empty: municipal, state and regional agencies) is not 5 digits, or
      not a county of the row's state in the Census 2016 county set (former codes such as 46113 are
      mapped by :func:`stopdisparity.geo.canonical_fips` first);
    - ``signed`` is missing or not an ISO date; ``ended`` is not an ISO date; ``ended`` is on or
      before ``signed`` (an empty spell);
    - ``model`` not in :data:`MODELS`; ``agency_type`` not in :data:`AGENCY_TYPES`; ``confidence``
      not high, medium, low or empty; a ``renewal_dates`` entry that is not an ISO date
      (entries are separated by ``;``);
    - ``agency`` or ``source`` is empty;
    - a row is an exact duplicate of an earlier row;
    - two spells of the *same agency and the same model* in the same county (or, for agencies
      without a county, the same state) overlap. Agency names are compared with
      :func:`agency_key`. One agency holding several models at once (a jail and a task-force
      agreement) is valid, and so are consecutive spells (one ends the day the next is signed).
    """
    if not isinstance(frame, pl.DataFrame):
        raise SpecificationError(f"frame must be a polars DataFrame; got {type(frame).__name__}")
    problems: list[RegistryProblem] = [
        RegistryProblem(None, c, f"missing required column (required: {', '.join(REQUIRED_COLUMNS)})", None)
        for c in REQUIRED_COLUMNS
        if c not in frame.columns
    ]
    n = frame.height
    lines = (
        [int(v) for v in frame["registry_row"].to_list()]
        if "registry_row" in frame.columns
        else list(range(2, n + 2))
    )
    data_columns = [c for c in frame.columns if c != "registry_row"]
    cols = {c: _as_text(frame[c]) for c in data_columns}

    def col(name: str) -> list[str | None]:
        return cols.get(name, [None] * n)

    has = set(data_columns)
    row_problems: list[list[RegistryProblem]] = [[] for _ in range(n)]
    counties = _counties_by_state()
    signed_dates: list[date | None] = [None] * n
    ended_dates: list[date | None] = [None] * n
    ok_dates = [False] * n

    for i in range(n):
        line = lines[i]
        add = row_problems[i].append
        state = col("state")[i]
        if "state" in has and (state is None or state not in STATE_FIPS):
            add(RegistryProblem(line, "state", "unknown state (allowed: 2-letter postal codes)", state))
        if "agency" in has and _blank(col("agency")[i]):
            add(RegistryProblem(line, "agency", "missing agency", col("agency")[i]))
        fips = col("county_fips")[i]
        if "county_fips" in has and fips is not None:
            if not _FIPS.fullmatch(fips):
                add(RegistryProblem(line, "county_fips", "county_fips is not 5 digits", fips))
            elif state in STATE_FIPS and canonical_fips(fips) not in counties.get(state, frozenset()):
                add(
                    RegistryProblem(
                        line, "county_fips", f"unknown FIPS: not a county of {state} (Census 2016)", fips
                    )
                )
        signed_text, ended_text = col("signed")[i], col("ended")[i]
        signed, ended = _parse_iso(signed_text), _parse_iso(ended_text)
        if "signed" in has and signed is None:
            what = "missing signed date" if _blank(signed_text) else "bad signed date (need YYYY-MM-DD)"
            add(RegistryProblem(line, "signed", what, signed_text))
        if "ended" in has and ended_text is not None and ended is None:
            add(RegistryProblem(line, "ended", "bad ended date (need YYYY-MM-DD or empty)", ended_text))
        if signed is not None and ended is not None and ended <= signed:
            what = "ended before signed" if ended < signed else "ended on the day signed (empty spell)"
            add(RegistryProblem(line, "ended", f"{what} ({signed.isoformat()})", ended_text))
        signed_dates[i], ended_dates[i] = signed, ended
        ok_dates[i] = signed is not None and (ended_text is None or (ended is not None and ended > signed))
        model = col("model")[i]
        if "model" in has and model not in MODELS:
            add(RegistryProblem(line, "model", f"unknown model (allowed: {', '.join(MODELS)})", model))
        agency_type = col("agency_type")[i]
        if "agency_type" in has and agency_type not in AGENCY_TYPES:
            add(
                RegistryProblem(
                    line, "agency_type", f"unknown agency_type (allowed: {', '.join(AGENCY_TYPES)})",
                    agency_type,
                )
            )  # fmt: skip
        confidence = col("confidence")[i]
        if confidence is not None and confidence not in CONFIDENCE_LEVELS:
            add(RegistryProblem(line, "confidence", "bad confidence (allowed: high, medium, low, empty)",
                                confidence))  # fmt: skip
        if "source" in has and _blank(col("source")[i]):
            add(RegistryProblem(line, "source", "missing source", col("source")[i]))
        renewals = col("renewal_dates")[i]
        if renewals is not None:
            for part in renewals.split(";"):
                if _parse_iso(part.strip()) is None:
                    add(RegistryProblem(line, "renewal_dates", "bad renewal date (need YYYY-MM-DD; ...)",
                                        part.strip()))  # fmt: skip

    # Exact duplicates.
    seen: dict[tuple[str | None, ...], int] = {}
    duplicate = [False] * n
    for i in range(n):
        key = tuple(cols[c][i] for c in data_columns)
        if key in seen:
            duplicate[i] = True
            row_problems[i].append(
                RegistryProblem(lines[i], None, f"exact duplicate of line {lines[seen[key]]}", None)
            )
        else:
            seen[key] = i

    # Overlapping spells of the same agency and model in the same county.
    if {"state", "agency", "model", "county_fips"} <= has:
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for i in range(n):
            agency = col("agency")[i]
            if duplicate[i] or not ok_dates[i] or _blank(agency):
                continue
            fips = col("county_fips")[i]
            key = (col("state")[i], canonical_fips(fips) if fips and _FIPS.fullmatch(fips) else fips,
                   _agency_key(agency or ""), col("model")[i])  # fmt: skip
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            for a, b in _overlapping_pairs(members, signed_dates, ended_dates):
                sa, ea = signed_dates[a], ended_dates[a]
                span = f"{sa}..{ea if ea else 'open'}"
                what = f"overlaps line {lines[a]} ({span}): same agency and model in the same county"
                row_problems[b].append(RegistryProblem(lines[b], None, what, None))
    for rp in row_problems:
        problems.extend(rp)
    return problems


def _overlapping_pairs(
    members: list[int], signed: list[date | None], ended: list[date | None]
) -> list[tuple[int, int]]:
    """Pairs (earlier row, later row) among ``members`` whose ``[signed, ended)`` spells overlap."""
    pairs = []
    for pos, a in enumerate(members):
        for b in members[pos + 1 :]:
            sa, ea, sb, eb = signed[a], ended[a], signed[b], ended[b]
            if sa is None or sb is None:
                continue
            if (eb is None or sa < eb) and (ea is None or sb < ea):
                pairs.append((a, b))
    return pairs


def _format_problems(source: str, problems: list[RegistryProblem]) -> str:
    shown = "\n".join(f"  {p}" for p in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{source}: {len(problems)} problem(s) in policy file:\n{shown}{tail}"


# --------------------------------------------------------------------------------------------------
# Loading and writing
# --------------------------------------------------------------------------------------------------


@cache
def _read_registry(path: str, _mtime_ns: int, _size: int) -> tuple[pl.DataFrame, tuple[RegistryProblem, ...]]:
    try:
        raw = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as e:
        raise ReferenceDataError(f"{path}: cannot be read as a CSV policy file: {e}") from e
    raw = raw.with_row_index("registry_row", offset=2)  # CSV line number (header = 1)
    problems = tuple(validate_registry(raw, source=path))
    missing = [p for p in problems if p.row is None]
    if missing:  # whatever ``strict`` says, rows without these columns cannot be used
        raise ReferenceDataError(_format_problems(path, missing))
    for c in OPTIONAL_COLUMNS:
        if c not in raw.columns:
            raw = raw.with_columns(pl.lit(None, pl.String).alias(c))
    frame = raw.with_columns(
        pl.col("signed").str.to_date("%Y-%m-%d", strict=False),
        pl.col("ended").str.to_date("%Y-%m-%d", strict=False),
    )
    return frame, problems


def load_registry(path: str | Path | None = None, *, strict: bool = True) -> pl.DataFrame:
    """Rows of a policy file (default: the shipped 287(g) registry), validated, dates parsed.

    Parameters
    ----------
    path : str, Path or None, default None
        A CSV in the registry format; ``None`` for the shipped 287(g) registry.
    strict : bool, default True
        ``True``: raise if :func:`validate_registry` finds any problem (the shipped registry
        validates clean; a test checks it). ``False``: return the rows as they are (dates that
        cannot be parsed become null), for inspecting a broken file.
        A missing required column raises in every case.

    Returns
    -------
    polars.DataFrame
        ``registry_row`` (UInt32: the row's line number in the CSV, header = 1, so every use of a row
        can be traced back), then the file's columns as strings, except ``signed`` and ``ended``
        (Date). Missing optional columns are added as null strings.

    Raises
    ------
    ReferenceDataError
        If the file does not exist or cannot be read, lacks a required column, or (strict) has any
        problem; the message lists the first 20 problems with their lines and how many more there are.

    Notes
    -----
    The file is read and validated once per path, modification time and size; treat the returned
    frame as read-only.
    """
    p = shipped_registry_path() if path is None else Path(path)
    try:
        stat = p.stat()
    except OSError as e:
        raise ReferenceDataError(f"policy file {p} cannot be opened: {e}") from e
    frame, problems = _read_registry(str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    if problems and strict:
        raise ReferenceDataError(_format_problems(str(p), list(problems)))
    return frame


def write_registry(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write registry rows (e.g. :attr:`IceImport.rows`) as a policy file CSV.

    Parameters
    ----------
    frame : polars.DataFrame
        Rows with at least the :data:`REQUIRED_COLUMNS`; ``signed``/``ended`` as Date or ISO strings.
    path : str or Path
        The CSV to write (overwritten).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SpecificationError
        If a required column is missing.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SpecificationError(f"frame lacks the required registry columns {missing}")
    columns = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in frame.columns)]
    out = frame.select(
        pl.col(c).dt.to_string("%Y-%m-%d") if frame.schema[c] == pl.Date else pl.col(c).cast(pl.String)
        for c in columns
    )
    target = Path(path)
    out.write_csv(target)
    return target


# --------------------------------------------------------------------------------------------------
# CLI support: list, describe, show
# --------------------------------------------------------------------------------------------------


def list_policies() -> pl.DataFrame:
    """The named policies that ship with the package (``--policy NAME``).

    Returns
    -------
    polars.DataFrame
        One row per policy: ``name``, ``description``, ``path``, ``rows``.
    """
    records = []
    for name, (parts, description) in POLICIES.items():
        path = data_path(*parts)
        stat = path.stat()
        frame, _ = _read_registry(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        records.append({"name": name, "description": description, "path": str(path), "rows": frame.height})
    return pl.DataFrame(
        records, schema={"name": pl.String, "description": pl.String, "path": pl.String, "rows": pl.Int64}
    )


def resolve_policy(policy: str | Path) -> Path:
    """The file behind ``--policy``: a shipped policy's name (``"287g"``) or a path to a policy file.

    Parameters
    ----------
    policy : str or Path
        A key of :data:`POLICIES` or the path of an existing CSV.

    Returns
    -------
    Path

    Raises
    ------
    SourceNotRegisteredError
        If ``policy`` is neither a shipped policy nor an existing file.
    """
    if isinstance(policy, str) and policy in POLICIES:
        return data_path(*POLICIES[policy][0])
    path = Path(policy)
    if path.is_file():
        return path
    raise SourceNotRegisteredError(
        f"policy must be one of the shipped policies {list(POLICIES)} or the path of a policy CSV; "
        f"got {str(policy)!r}, which is neither"
    )


def _check_registry_frame(frame: object, needed: Iterable[str]) -> pl.DataFrame:
    if not isinstance(frame, pl.DataFrame):
        raise SpecificationError(f"frame must be a polars DataFrame; got {type(frame).__name__}")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SpecificationError(f"frame lacks registry columns {missing}; it has {frame.columns}")
    return frame


def describe_registry(frame: pl.DataFrame) -> pl.DataFrame:
    """Counts of a registry's rows by state, model and agency type.

    Parameters
    ----------
    frame : polars.DataFrame
        Rows as returned by :func:`load_registry`.

    Returns
    -------
    polars.DataFrame
        ``state, model, agency_type, agreements`` (rows), ``agencies`` (distinct names),
        ``counties`` (distinct non-empty county FIPS), ``open`` (rows without an end date), sorted
        by state, model and agency type.

    Raises
    ------
    SpecificationError
        If ``frame`` lacks a needed column.
    """
    frame = _check_registry_frame(frame, ("state", "model", "agency_type", "agency", "county_fips", "ended"))
    return (
        frame.group_by("state", "model", "agency_type")
        .agg(
            pl.len().cast(pl.Int64).alias("agreements"),
            pl.col("agency").n_unique().cast(pl.Int64).alias("agencies"),
            pl.col("county_fips").drop_nulls().n_unique().cast(pl.Int64).alias("counties"),
            pl.col("ended").is_null().sum().cast(pl.Int64).alias("open"),
        )
        .sort("state", "model", "agency_type")
    )


def show_agency(frame: pl.DataFrame, query: str) -> pl.DataFrame:
    """The rows of one agency (or county): every row whose agency name contains ``query``.

    Parameters
    ----------
    frame : polars.DataFrame
        Rows as returned by :func:`load_registry`.
    query : str
        Part of an agency name, compared with :func:`agency_key` (case and punctuation ignored), or
        a 5-digit county FIPS code (all agreements in that county).

    Returns
    -------
    polars.DataFrame
        The matching rows, sorted by state, agency, model and signed; empty if none match.

    Raises
    ------
    SpecificationError
        If ``query`` is empty or ``frame`` lacks the agency column.
    """
    frame = _check_registry_frame(frame, ("state", "agency", "county_fips", "model", "signed"))
    if not isinstance(query, str) or not _agency_key(query):
        raise SpecificationError(f"query must be a non-empty agency name or county FIPS; got {query!r}")
    text = query.strip()
    if _FIPS.fullmatch(text):
        hit = frame.filter(pl.col("county_fips") == text)
    else:
        key = _agency_key(text)
        keys = pl.Series([_agency_key(a or "") for a in frame["agency"].to_list()], dtype=pl.String)
        hit = frame.filter(keys.str.contains(key, literal=True))
    return hit.sort("state", "agency", "model", "signed")
