"""Write test input files in the exact Open Policing Project (OPP) text format.

Not a conftest: tests import it (``from opp_files import ...``). Everything here is deterministic
from a seed, so a failing test can be reproduced byte for byte.

Format (OPP standardized CSV, as readr's ``write_csv`` writes it): header first; LF line endings;
missing = ``NA`` unquoted; booleans ``TRUE``/``FALSE``; dates ``YYYY-MM-DD``; times ``HH:MM:SS``;
a field is quoted only when it holds a comma, a double quote or a newline, and a quote inside a
quoted field is doubled.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import random
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

# Column -> kind, the columns the generated table carries. Kinds: string, date, time, double,
# boolean, enum (canonical OPP columns), raw (``raw_*``) and extra (other plain identifiers).
COLUMNS: dict[str, str] = {
    "raw_row_number": "string",
    "date": "date",
    "time": "time",
    "location": "string",
    "lat": "double",
    "lng": "double",
    "county_name": "string",
    "district": "string",
    "subject_age": "double",
    "subject_race": "enum",
    "subject_sex": "enum",
    "officer_id_hash": "string",
    "department_name": "string",
    "type": "enum",
    "violation": "string",
    "arrest_made": "boolean",
    "citation_issued": "boolean",
    "warning_issued": "boolean",
    "outcome": "enum",
    "contraband_found": "boolean",
    "frisk_performed": "boolean",
    "search_conducted": "boolean",
    "search_basis": "enum",
    "reason_for_stop": "string",
    "vehicle_make": "string",
    "vehicle_year": "double",
    "raw_race": "raw",
    "raw_notes": "raw",
    "agency_code": "extra",
}

#: Vocabularies, typed out here (not imported) so a change in schema.py shows up in the tests.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "subject_race": (
        "asian/pacific islander",
        "black",
        "hispanic",
        "white",
        "other",
        "unknown",
        "other/unknown",
    ),
    "subject_sex": ("male", "female"),
    "type": ("vehicular", "pedestrian"),
    "outcome": ("warning", "citation", "summons", "arrest"),
    "search_basis": ("k9", "plain view", "consent", "probable cause", "other"),
}

#: County names as NC sources write them, with the FIPS code the store must derive (None: unknown).
NC_COUNTIES: dict[str, str | None] = {
    "Wake County": "37183",
    "WAKE": "37183",
    "Mc Dowell County": "37111",
    "Durham County": "37063",
    "Mecklenburg County": "37119",
    "Nowhere County": None,
}

#: Strings that need CSV quoting: commas, doubled quotes, embedded newlines (also a blank line
#: inside a field, and newlines at either end), plus a few plain ones.
TRICKY_STRINGS: tuple[str, ...] = (
    "100 Main St, Raleigh",
    'officer said "pull over"',
    "first line\nsecond line",
    'all of it, "quoted"\nand split',
    "para one\n\npara two",
    "\nstarts with a newline",
    "ends with a newline\n",
    '"',
    ",",
    '""',
    " padded ",
    "Peña, José",
    "plain text",
    "I-40 EB MM 289",
    "na",
    "NA-1",
)

_PL_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "raw": pl.String(),
    "extra": pl.String(),
    "enum": pl.String(),
    "date": pl.Date(),
    "time": pl.Time(),
    "double": pl.Float64(),
    "boolean": pl.Boolean(),
}


def polars_type(kind: str) -> pl.DataType:
    """The polars type the store holds a column of this kind as."""
    return _PL_TYPES[kind]


# ------------------------------------------------------------------------------------ generation
def _value(rng: random.Random, name: str, kind: str, i: int) -> Any:
    """A non-missing value for row ``i`` of column ``name``."""
    if kind == "enum":
        vocab = VOCABULARIES[name]
        return vocab[(i - 1) % len(vocab)] if i <= len(vocab) else rng.choice(vocab)
    if kind == "boolean":
        return (True, False)[(i - 1) % 2] if i <= 2 else rng.random() < 0.5
    if kind == "date":
        fixed = (dt.date(2016, 2, 29), dt.date(1999, 12, 31), dt.date(2020, 1, 1))
        if i <= len(fixed):
            return fixed[i - 1]
        return dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(7671))
    if kind == "time":
        fixed = (dt.time(0, 0, 0), dt.time(23, 59, 59), dt.time(12, 0, 1))
        if i <= len(fixed):
            return fixed[i - 1]
        return dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60))
    if name == "lat":
        return round(rng.uniform(33.8, 36.6), rng.choice((1, 4, 6, 12)))
    if name == "lng":
        return -round(rng.uniform(75.4, 84.3), rng.choice((1, 5, 6, 13)))
    if name == "subject_age":
        return float(rng.randrange(15, 91)) if rng.random() < 0.8 else rng.randrange(30, 180) / 2
    if name == "vehicle_year":
        return float(rng.randrange(1985, 2021))
    if name == "county_name":
        names = list(NC_COUNTIES)
        return names[(i - 1) % len(names)]
    if name in ("location", "raw_notes"):
        offset = 0 if name == "location" else 5
        return TRICKY_STRINGS[(i - 1 + offset) % len(TRICKY_STRINGS)]
    if name == "raw_race":
        return rng.choice(("W", "B", "H", "A", "U", "I", "O", "Black, non-Hispanic"))
    if name == "officer_id_hash":
        return f"{rng.getrandbits(40):010x}"
    if name == "department_name":
        return rng.choice(("NC State Highway Patrol", "Raleigh Police Department", 'Dept. "D", Unit 4'))
    if name == "district":
        return rng.choice(("Troop C, District 3", "D1", "East"))
    if name == "violation":
        return rng.choice(("Speeding|Seat Belt", "Equipment", "Stop Light/Sign", "DWI"))
    if name == "reason_for_stop":
        return rng.choice(("Speed Limit Violation", "Vehicle Equipment Violation", "Investigation"))
    if name == "vehicle_make":
        return rng.choice(("Toyota", "Ford", "Chevrolet", "Honda"))
    if name == "agency_code":
        return f"A{rng.randrange(1000):03d}"
    if name == "raw_row_number":
        return str(i)
    return f"{name}-{rng.randrange(10_000)}"


def make_rows(n: int, seed: int = 0, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """``n`` varied OPP rows as typed Python values (None = NA).

    Row 0 is NA in every column (``date`` included). Rows 1.. cycle through every vocabulary value,
    both booleans, every county spelling and every tricky string before drawing at random, so any
    ``n`` of at least 17 covers them all. From row 17 on, about one field in five is NA, and with
    ``n`` of at least 24 every column (but ``raw_row_number``) has an NA there.
    """
    cols = dict(columns or COLUMNS)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {}
        for j, (name, kind) in enumerate(cols.items()):
            if i == 0:
                row[name] = None
                continue
            forced = i <= max(len(TRICKY_STRINGS), len(NC_COUNTIES), 7)
            value = _value(rng, name, kind, i)
            if not forced and name != "raw_row_number" and ((i + j) % 7 == 0 or rng.random() < 0.05):
                value = None
            row[name] = value
        rows.append(row)
    return rows


def expected_frame(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """The typed table the store must hold for ``rows`` (one column per input column)."""
    cols = dict(columns or COLUMNS)
    return pl.DataFrame(
        {name: [r[name] for r in rows] for name in cols},
        schema={name: polars_type(kind) for name, kind in cols.items()},
    )


def expected_county_fips(rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The county_fips the store must derive for NC rows."""
    return [NC_COUNTIES.get(r.get("county_name")) if r.get("county_name") else None for r in rows]


# --------------------------------------------------------------------------------------- writing
def format_value(value: Any, kind: str = "string") -> str:
    """One field in OPP text: ``NA``, ``TRUE``/``FALSE``, ISO dates, ``HH:MM:SS``, quoting as needed."""
    if value is None:
        return "NA"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    text = str(value)
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_row(row: Mapping[str, Any], columns: Mapping[str, str]) -> str:
    """One record (without its line terminator)."""
    return ",".join(format_value(row[name], kind) for name, kind in columns.items())


@dataclass(frozen=True)
class CsvText:
    """A CSV document and, for each data record, the 1-based physical line it starts on."""

    text: str
    lines: list[int]


def csv_text(
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, str] | None = None,
    *,
    blank_before: Iterable[int] = (),
    newline: str | tuple[str, ...] = "\n",
    bom: bool = False,
) -> CsvText:
    """The OPP CSV text for ``rows``; a blank line goes before each record index in ``blank_before``.

    ``newline`` ends every line (OPP writes ``"\\n"``; ``"\\r\\n"`` is a file saved on Windows);
    newlines inside quoted fields stay as they are; a tuple of endings is cycled line by line (a file
    mixing LF and CRLF). ``bom`` starts the text with a UTF-8 byte-order mark.
    """
    cols = dict(columns or COLUMNS)
    blanks = set(blank_before)
    ends = itertools.cycle(newline if isinstance(newline, tuple) else (newline,))
    out = [("\ufeff" if bom else "") + ",".join(cols) + next(ends)]
    line = 2
    lines: list[int] = []
    for i, row in enumerate(rows):
        if i in blanks:
            out.append(next(ends))
            line += 1
        record = format_row(row, cols)
        lines.append(line)
        out.append(record + next(ends))
        line += 1 + record.count("\n")
    return CsvText("".join(out), lines)


def write_bytes(path: Path, data: bytes, *, member: str | None = None) -> Path:
    """Write decompressed CSV bytes as ``path``'s format (.csv, .csv.gz, .csv.zip / .zip).

    A zip holds one member named ``member`` (default: the archive's name without ``.zip``). Output is
    deterministic (gzip mtime 0, fixed zip timestamps).
    """
    name = path.name.lower()
    if name.endswith(".zip"):
        info = zipfile.ZipInfo(member or path.name[: -len(".zip")], date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(info, data)
        path.write_bytes(buf.getvalue())
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(data, mtime=0))
    elif name.endswith(".csv"):
        path.write_bytes(data)
    else:
        raise ValueError(f"write_bytes cannot write {path.name}; use .csv, .csv.gz or .csv.zip")
    return path


def write_text(path: Path, text: str, *, member: str | None = None) -> Path:
    """Write CSV text (UTF-8, as given: no newline translation) in ``path``'s format."""
    return write_bytes(path, text.encode("utf-8"), member=member)


def write_opp(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, str] | None = None,
    *,
    blank_before: Iterable[int] = (),
) -> list[int]:
    """Write ``rows`` as an OPP file in ``path``'s format; return each row's expected ``source_line``.

    CSV formats: the physical line the record starts on (header = 1). Parquet (typed columns, as the
    expected frame): the 1-based row number.
    """
    cols = dict(columns or COLUMNS)
    if path.name.lower().endswith(".parquet"):
        expected_frame(rows, cols).write_parquet(path)
        return list(range(1, len(rows) + 1))
    doc = csv_text(rows, cols, blank_before=blank_before)
    write_text(path, doc.text)
    return doc.lines


def write_zip(
    path: Path,
    members: Mapping[str, bytes | str],
    *,
    symlinks: Iterable[str] = (),
    compression: int = zipfile.ZIP_STORED,
    zip64: bool = False,
) -> Path:
    """A zip archive with the given members (names verbatim, even unsafe ones).

    ``symlinks`` are written as symbolic-link entries whose content is the link target; ``zip64``
    gives every member zip64 extra fields (as archives over 4 GiB have), whatever its size.
    """
    links = set(symlinks)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = compression
            if name in links:
                info.create_system = 3
                info.external_attr = 0o120777 << 16
            payload = data.encode("utf-8") if isinstance(data, str) else data
            if name.endswith("/"):
                zf.writestr(info, payload)  # a directory entry
                continue
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(payload)
    path.write_bytes(buf.getvalue())
    return path


FORMATS: tuple[str, ...] = ("csv", "csv.gz", "csv.zip", "parquet")


def opp_name(fmt: str, state: str = "nc", place: str = "statewide", date: str = "2020_04_01") -> str:
    """An OPP file name such as ``nc_statewide_2020_04_01.csv.zip``."""
    return f"{state}_{place}_{date}.{fmt}"


def big_text(rows: int, years: int = 1) -> str:
    """``rows`` valid records with every column of ``opp_files.COLUMNS`` (about 250 bytes each, as OPP's
    statewide files), varied enough that compression cannot shrink them away; dates spread over
    ``years`` years (2017 and before), so the store gets that many year partitions."""
    races = ("white", "black", "hispanic", "asian/pacific islander", "other", "unknown")
    bases = ("k9", "plain view", "consent", "probable cause", "other")
    body = "".join(
        f"{i},{2017 - i % years}-{1 + i % 12:02d}-{1 + i % 28:02d},"
        f"{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d},"
        f"{i * 7919 % 100000} Main St,{35 + (i % 997) / 1000:.3f},{-79 - (i % 991) / 1000:.3f},"
        f"Wake County,D{i % 9},{16 + i % 70},{races[i % 6]},{('male', 'female')[i % 2]},"
        f"{i * 2654435761 % 2**40:010x},NC State Highway Patrol,vehicular,Speeding|Seat Belt,"
        f"{b[i % 2]},{b[i % 3 == 0]},{b[i % 5 == 0]},citation,{b[i % 7 == 0]},{b[i % 11 == 0]},"
        f"{b[i % 13 == 0]},{bases[i % 5] if i % 13 == 0 else 'NA'},Speed Limit Violation,Toyota,"
        f"{1990 + i % 30},W,note {i * 104729 % 1000003},A{i % 1000:03d}\n"
        for i in range(1, rows + 1)
        for b in [("FALSE", "TRUE")]
    )
    return ",".join(COLUMNS) + "\n" + body
