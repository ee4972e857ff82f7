"""OPP canonical columns, types and vocabularies: the one source of truth.

Every other module asks this one which columns exist, how they are typed in the store and which
values they may take. Identifiers that reach SQL text come only from the allow-lists here.

References
----------
Pierson, E. et al. (2020). A large-scale analysis of racial disparities in police stops across the
United States. Nature Human Behaviour 4, 736-745. Column standard: stanford-policylab/opp
``lib/standards.R`` and the data readme of the Open Policing Project.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from stopdisparity.errors import SchemaError

SCHEMA_VERSION: Final = 1

ColumnKind = Literal["string", "date", "time", "double", "boolean", "enum"]

#: DuckDB type of each column kind in the store.
DUCKDB_TYPE: Final[Mapping[ColumnKind, str]] = {
    "string": "VARCHAR",
    "enum": "VARCHAR",
    "date": "DATE",
    "time": "TIME",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
}

RACES: Final = (
    "asian/pacific islander",
    "black",
    "hispanic",
    "white",
    "other",
    "unknown",
    "other/unknown",  # pre-2020 OPP releases; kept verbatim
)
SEXES: Final = ("male", "female")
STOP_TYPES: Final = ("vehicular", "pedestrian")
OUTCOMES: Final = ("warning", "citation", "summons", "arrest")
SEARCH_BASES: Final = ("k9", "plain view", "consent", "probable cause", "other")

#: Vocabulary of each enum column.
VOCABULARIES: Final[Mapping[str, tuple[str, ...]]] = {
    "subject_race": RACES,
    "officer_race": RACES,
    "subject_sex": SEXES,
    "officer_sex": SEXES,
    "type": STOP_TYPES,
    "outcome": OUTCOMES,
    "search_basis": SEARCH_BASES,
}

#: Races that say nothing about the driver (for recording checks).
UNKNOWN_RACES: Final = ("unknown", "other/unknown")

# Canonical OPP columns in the order OPP releases write them, with their kind.
_CANONICAL: Final[tuple[tuple[str, ColumnKind], ...]] = (
    ("raw_row_number", "string"),
    ("date", "date"),
    ("time", "time"),
    ("location", "string"),
    ("lat", "double"),
    ("lng", "double"),
    ("county_name", "string"),
    ("neighborhood", "string"),
    ("beat", "string"),
    ("district", "string"),
    ("subdistrict", "string"),
    ("division", "string"),
    ("subdivision", "string"),
    ("police_grid_number", "string"),
    ("precinct", "string"),
    ("region", "string"),
    ("reporting_area", "string"),
    ("sector", "string"),
    ("subsector", "string"),
    ("substation", "string"),
    ("service_area", "string"),
    ("zone", "string"),
    ("subject_age", "double"),
    ("subject_dob", "date"),
    ("subject_race", "enum"),
    ("subject_sex", "enum"),
    ("officer_id", "string"),
    ("officer_id_hash", "string"),
    ("officer_age", "double"),
    ("officer_dob", "date"),
    ("officer_race", "enum"),
    ("officer_sex", "enum"),
    ("officer_first_name", "string"),
    ("officer_last_name", "string"),
    ("officer_years_of_service", "double"),
    ("officer_assignment", "string"),
    ("department_id", "string"),
    ("department_name", "string"),
    ("unit", "string"),
    ("type", "enum"),
    ("disposition", "string"),
    ("violation", "string"),
    ("arrest_made", "boolean"),
    ("citation_issued", "boolean"),
    ("warning_issued", "boolean"),
    ("outcome", "enum"),
    ("contraband_found", "boolean"),
    ("contraband_drugs", "boolean"),
    ("contraband_weapons", "boolean"),
    ("contraband_alcohol", "boolean"),
    ("contraband_other", "boolean"),
    ("frisk_performed", "boolean"),
    ("search_conducted", "boolean"),
    ("search_person", "boolean"),
    ("search_vehicle", "boolean"),
    ("search_basis", "enum"),
    ("reason_for_frisk", "string"),
    ("reason_for_search", "string"),
    ("reason_for_stop", "string"),
    ("speed", "double"),
    ("posted_speed", "double"),
    ("use_of_force_description", "string"),
    ("use_of_force_reason", "string"),
    ("vehicle_color", "string"),
    ("vehicle_make", "string"),
    ("vehicle_model", "string"),
    ("vehicle_type", "string"),
    ("vehicle_registration_state", "string"),
    ("vehicle_year", "double"),
    ("notes", "string"),
)

#: Canonical column -> kind, in canonical order.
CANONICAL_COLUMNS: Final[Mapping[str, ColumnKind]] = dict(_CANONICAL)

#: Columns the ingest adds to every stored row, with their DuckDB types.
LINEAGE_COLUMNS: Final[Mapping[str, str]] = {
    "source_file": "VARCHAR",
    "source_line": "BIGINT",
    "county_fips": "VARCHAR",
}

#: Hive partition keys of the store, outermost first.
PARTITION_COLUMNS: Final = ("state", "year")

#: Columns of the quarantine table, in order (DESIGN.md), plus ``message`` (human text).
QUARANTINE_COLUMNS: Final[Mapping[str, str]] = {
    "source_file": "VARCHAR",
    "source_line": "BIGINT",
    "column": "VARCHAR",
    "reason": "VARCHAR",
    "raw_text": "VARCHAR",
    "message": "VARCHAR",
}

#: Reason codes a quarantined row may carry.
REJECT_REASONS: Final = (
    "field_count",
    "type_cast",
    "enum",
    "encoding",
    "quote",
    "line_too_long",
    "repeated_header",
)

#: Columns whose value is only meaningful when another is TRUE (OPP ``predicated_columns``).
PREDICATED_COLUMNS: Final[Mapping[str, str]] = {
    "search_basis": "search_conducted",
    "search_person": "search_conducted",
    "search_vehicle": "search_conducted",
    "reason_for_search": "search_conducted",
    "contraband_found": "search_conducted",
    "reason_for_frisk": "frisk_performed",
}

US_STATES: Final = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "PR",
)  # fmt: skip

_RAW_COLUMN = re.compile(r"^raw_[A-Za-z0-9_. \-]+$")
_EXTRA_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a source file as the store will hold it."""

    name: str
    kind: ColumnKind | Literal["raw", "extra"]

    @property
    def duckdb_type(self) -> str:
        """DuckDB type the column is stored as (raw and extra columns stay strings)."""
        if self.kind in ("raw", "extra"):
            return "VARCHAR"
        return DUCKDB_TYPE[self.kind]


def classify_columns(header: Iterable[str], *, source: str) -> list[Column]:
    """Classify a source's header into canonical, ``raw_*`` and extra columns.

    Raises
    ------
    SchemaError
        If a column name is empty, duplicated, collides with a lineage or partition column, or is
        neither canonical nor ``raw_*`` nor a plain identifier.
    """
    seen: set[str] = set()
    columns: list[Column] = []
    reserved = set(LINEAGE_COLUMNS) | set(PARTITION_COLUMNS)
    for position, name in enumerate(header, start=1):
        where = f"{source}, header column {position}"
        if not name:
            raise SchemaError(f"{where}: empty column name; every column needs a name")
        if name in seen:
            raise SchemaError(f"{where}: column {name!r} appears twice; rename one of them")
        if name in reserved:
            raise SchemaError(
                f"{where}: column {name!r} is reserved for the store "
                f"(reserved: {', '.join(sorted(reserved))}); rename it in the source"
            )
        seen.add(name)
        if name in CANONICAL_COLUMNS:
            columns.append(Column(name, CANONICAL_COLUMNS[name]))
        elif _RAW_COLUMN.match(name):
            columns.append(Column(name, "raw"))
        elif _EXTRA_COLUMN.match(name):
            columns.append(Column(name, "extra"))
        else:
            raise SchemaError(
                f"{where}: column name {name!r} is not an OPP column, not raw_*, and not a plain "
                "identifier (letters, digits, underscore); rename it"
            )
    return columns


def quote_identifier(name: str) -> str:
    """Quote a column name for SQL text; only names that passed :func:`classify_columns` get here."""
    if '"' in name or "\x00" in name:
        raise SchemaError(f"column name {name!r} cannot be used as an SQL identifier")
    return f'"{name}"'


def check_vocabulary(column: str, values: Iterable[str | None], *, source: str) -> None:
    """Raise :class:`SchemaError` listing values of ``column`` outside its vocabulary."""
    allowed = VOCABULARIES.get(column)
    if allowed is None:
        raise SchemaError(f"{column!r} has no vocabulary; columns with one: {sorted(VOCABULARIES)}")
    bad = sorted({v for v in values if v is not None and v not in allowed})
    if bad:
        raise SchemaError(
            f"{source}: {column} has values outside its vocabulary: {bad}; allowed: {list(allowed)}"
        )
