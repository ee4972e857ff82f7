"""Import ICE's 287(g) "participating agencies" sheets (xlsx or csv) into registry rows.

ICE publishes the list of agencies with a signed 287(g) memorandum of agreement as a spreadsheet [1]_.
The sheets are written for reading, not parsing: title and note rows sit above the header, the header
is spelled differently from one release to the next (``SUPPORT TYPE`` or ``TYPE``, ``SIGNED`` or
``MOA SIGNED``, trailing spaces), dates come as Excel serial numbers, real dates or ``MM/DD/YYYY``
text, states as full names or postal codes, and county names with or without "County". Every row of
the sheet either becomes a registry row or is listed in :attr:`IceImport.unresolved` with the reason;
nothing is dropped silently.

References
----------
.. [1] U.S. Immigration and Customs Enforcement, "Delegation of Immigration Authority Section 287(g)
   Immigration and Nationality Act" (participating and pending agencies).
   https://www.ice.gov/identify-and-arrest/287g
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import polars as pl

from stopdisparity.errors import ReferenceDataError, SpecificationError, check_choice
from stopdisparity.geo import STATE_FIPS, resolve_counties
from stopdisparity.policy.registry import CONFIDENCE_LEVELS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, _agency_key

__all__ = ["STATE_NAMES", "IceImport", "agency_type_from_name", "import_ice_sheet", "model_from_support_type"]

STATE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA",
        "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC",
        "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL", "INDIANA": "IN",
        "IOWA": "IA", "KANSAS": "KS", "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD",
        "MASSACHUSETTS": "MA", "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS", "MISSOURI": "MO",
        "MONTANA": "MT", "NEBRASKA": "NE", "NEVADA": "NV", "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ",
        "NEW MEXICO": "NM", "NEW YORK": "NY", "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH",
        "OKLAHOMA": "OK", "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI",
        "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD", "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT",
        "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA", "WEST VIRGINIA": "WV", "WISCONSIN": "WI",
        "WYOMING": "WY", "PUERTO RICO": "PR",
    }
)  # fmt: skip
"""Upper-case state name → postal code (the 50 states, DC and PR; the keys of ``STATE_FIPS``)."""

_NAME_BY_CODE: Mapping[str, str] = MappingProxyType({v: k for k, v in STATE_NAMES.items()})

# Header spellings seen on ICE sheets (upper-cased, spaces collapsed, trailing ":" / "*" removed).
_HEADER_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "STATE": "state",
        "LAW ENFORCEMENT AGENCY": "agency", "AGENCY": "agency", "AGENCY NAME": "agency",
        "PARTICIPATING AGENCY": "agency", "LEA": "agency",
        "SUPPORT TYPE": "support", "MODEL": "support", "287(G) MODEL": "support", "SUPPORT": "support",
        "PROGRAM": "support",
        "TYPE": "type",
        "JURISDICTION TYPE": "jurisdiction", "JURISDICTION": "jurisdiction", "AGENCY TYPE": "jurisdiction",
        "SIGNED": "signed", "SIGNED DATE": "signed", "DATE SIGNED": "signed", "MOA SIGNED": "signed",
        "MOA SIGNED DATE": "signed", "MOA DATE": "signed", "DATE OF SIGNATURE": "signed",
        "COUNTY": "county", "COUNTY NAME": "county",
    }
)  # fmt: skip
_HEADER_SCAN_ROWS = 50
_NA_CELLS = frozenset({"", "#N/A", "N/A", "NA", "-", "--", "NONE", "NULL"})
_EXCEL_EPOCH = date(1899, 12, 30)  # serial 1 = 1900-01-01 in Excel's 1900 date system (after its leap bug)
_FIRST_DATE, _LAST_DATE = date(1996, 9, 30), date(2100, 1, 1)  # 287(g) was enacted by IIRIRA, 1996-09-30
_MDY = re.compile(r"(\d{1,2})[/-](\d{1,2})[/-](\d{4})")
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]00:00(?::00(?:\.0+)?)?)?")
_SERIAL = re.compile(r"\d{4,6}(?:\.0+)?")
_COUNTY_IN_NAME = re.compile(r"^(?:city and county of\s+)?(.+?)\s+(county|parish)\b", re.IGNORECASE)
_CITY_SHERIFF = re.compile(r"^(?:city of\s+(.+?)|(.+?)\s+city)\s+sheriff", re.IGNORECASE)

_REASON_NOT_IMPORTED = "not imported"


@dataclass(frozen=True, slots=True)
class IceImport:
    """Registry rows read from one ICE participating-agencies sheet; returned by :func:`import_ice_sheet`.

    Attributes
    ----------
    rows : polars.DataFrame
        In the registry format (:data:`~stopdisparity.policy.REQUIRED_COLUMNS` then
        :data:`~stopdisparity.policy.OPTIONAL_COLUMNS`; ``signed``/``ended`` Date, the rest String),
        in sheet order. ``source`` names the file, the sheet and the row; ``ended`` is empty.
    unresolved : polars.DataFrame
        One row per sheet row that needs a person's attention: ``sheet_row`` (1-based, as a
        spreadsheet shows it), the cells as read (``state, agency, county, support_type, signed``,
        as text), ``reason`` and ``imported`` (``True`` if the row is in :attr:`rows` anyway, e.g.
        with ``model="unknown"``; ``False`` if it is not).
    header_row : int
        The 1-based row number of the header that was found.
    source : str
        The file (and sheet) the rows came from.
    """

    rows: pl.DataFrame
    unresolved: pl.DataFrame
    header_row: int
    source: str


# --------------------------------------------------------------------------------------------------
# Cell readers
# --------------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A cell as stripped text with single spaces and straight apostrophes ('' for empty)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        value = value.date() if value.time() == datetime.min.time() else value
    text = str(value).replace("\u2019", "'").replace("\u2018", "'").replace("\xa0", " ")
    return " ".join(text.split())


def _header_key(value: object) -> str:
    return _text(value).upper().rstrip(":*").strip()


def _parse_date(value: object) -> tuple[date | None, str | None]:
    """``(date, None)`` or ``(None, reason)`` for a SIGNED cell."""
    if isinstance(value, datetime):
        parsed: date | None = value.date()
    elif isinstance(value, date):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parsed = _EXCEL_EPOCH + timedelta(days=int(value)) if value >= 1 else None
    else:
        text = _text(value)
        if not text:
            return None, "missing signed date"
        parsed = None
        if m := _MDY.fullmatch(text):
            month, day, year = (int(g) for g in m.groups())
            parsed = _safe_date(year, month, day)
        elif m := _ISO.fullmatch(text):
            year, month, day = (int(g) for g in m.groups())
            parsed = _safe_date(year, month, day)
        elif _SERIAL.fullmatch(text):
            parsed = _EXCEL_EPOCH + timedelta(days=int(float(text)))
        if parsed is None:
            return (
                None,
                f"unreadable signed date {text!r} (expected MM/DD/YYYY, YYYY-MM-DD or an Excel serial)",
            )
    if parsed is None or not (_FIRST_DATE <= parsed < _LAST_DATE):
        return None, f"implausible signed date {_text(value)!r} (before 287(g) existed or after 2099)"
    return parsed, None


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _state_code(value: object) -> str | None:
    text = _text(value).upper().replace(".", "")
    if text in STATE_FIPS:
        return text
    return STATE_NAMES.get(text)


def model_from_support_type(support_type: str) -> str:
    """Map ICE's support-type text to the registry ``model``.

    Parameters
    ----------
    support_type : str
        The cell as written ("Jail Enforcement Model", "Task Force Model", "Warrant Service Officer",
        or the abbreviations JEM, TFM, WSO; case and spacing ignored).

    Returns
    -------
    str
        ``"jail"``, ``"task_force"``, ``"warrant_service_officer"``, or ``"unknown"`` for anything
        else, including a cell naming several models.

    Examples
    --------
    >>> model_from_support_type("Jail Enforcement Model "), model_from_support_type("Hybrid")
    ('jail', 'unknown')
    """
    text = _text(support_type).lower()
    found = set()
    if "jail enforcement" in text or text == "jem":
        found.add("jail")
    if "task force" in text or text == "tfm":
        found.add("task_force")
    if "warrant service" in text or text == "wso":
        found.add("warrant_service_officer")
    return found.pop() if len(found) == 1 else "unknown"


def agency_type_from_name(name: str, *, state: str | None = None, jurisdiction: str | None = None) -> str:
    """The registry ``agency_type`` implied by an agency's name.

    Parameters
    ----------
    name : str
        The agency name.
    state : str or None
        The agency's state (postal code); a name starting with that state's name is a state body.
    jurisdiction : str or None
        ICE's jurisdiction cell (``TYPE`` on the 2025 sheets: County, Municipality, State Agency), if
        the sheet has one; "State Agency" marks a state body.

    Returns
    -------
    str
        The first that applies: "Sheriff" → ``sheriff``; "Police" → ``police``; "Correction", "Jail",
        "Detention" → ``corrections``; a state body (``jurisdiction`` "State Agency", a name starting
        with the state's name, or a State/Highway Patrol) → ``state``; otherwise ``other``. These are
        the rules the shipped registry was built with (see ``287g_agreements.SOURCES.md``).

    Examples
    --------
    >>> agency_type_from_name("Texas Department of Public Safety", state="TX")
    'state'
    """
    low = _text(name).lower()
    if "sheriff" in low:
        return "sheriff"
    if re.search(r"\bpolice\b", low):
        return "police"
    if re.search(r"correction|\bjail\b|detention", low):
        return "corrections"
    state_name = _NAME_BY_CODE.get(state or "", "").lower()
    if (
        _text(jurisdiction).lower() in {"state agency", "state"}
        or (state_name and low.startswith(state_name + " "))
        or re.search(r"\b(state|highway) patrol\b", low)
    ):
        return "state"
    return "other"


# --------------------------------------------------------------------------------------------------
# Sheet reading
# --------------------------------------------------------------------------------------------------


def _read_cells(path: Path, sheet: str | int | None) -> tuple[list[tuple[object, ...]], str]:
    """All rows of the sheet (row 1 first) and a label naming the file and sheet."""
    suffix = path.suffix.lower()
    if suffix in {".xlsx", ".xlsm"}:
        import openpyxl

        try:
            book = openpyxl.load_workbook(path, data_only=True)
        except Exception as e:  # openpyxl raises several unrelated types for damaged files
            raise ReferenceDataError(f"{path}: cannot be read as an xlsx workbook: {e}") from e
        try:
            if sheet is None:
                ws = book.worksheets[0]
            elif isinstance(sheet, int):
                ws = book.worksheets[sheet]
            else:
                ws = book[sheet]
        except (KeyError, IndexError) as e:
            raise SpecificationError(
                f"sheet must be None, a sheet index or one of {book.sheetnames}; got {sheet!r}"
            ) from e
        rows = list(ws.iter_rows(min_row=1, values_only=True))
        label = f"{path.name} [sheet {ws.title}]"
        book.close()
        return rows, label
    if suffix == ".csv":
        if sheet is not None:
            raise SpecificationError(
                f"sheet applies to xlsx workbooks only; got sheet={sheet!r} for {path.name}"
            )
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")  # Excel's "CSV" export on Windows
        return [tuple(r) for r in csv.reader(text.splitlines())], path.name
    raise SpecificationError(
        f"an ICE sheet must be .xlsx or .csv; got {path.name!r} (save .xls files as .xlsx first)"
    )


def _find_header(rows: Sequence[tuple[object, ...]]) -> tuple[int, dict[str, int]]:
    """Index of the header row and field → column index."""
    for i, row in enumerate(rows[:_HEADER_SCAN_ROWS]):
        fields: dict[str, int] = {}
        for j, cell in enumerate(row):
            field = _HEADER_ALIASES.get(_header_key(cell))
            if field is not None and field not in fields:
                fields[field] = j
        if {"state", "agency"} <= fields.keys() and len(fields) >= 3:
            # Without a SUPPORT TYPE column, TYPE is the support type (older sheets); with one, TYPE is
            # the jurisdiction (County / Municipality / State Agency), as on the 2025 sheets.
            if "type" in fields:
                target = "jurisdiction" if "support" in fields else "support"
                fields.setdefault(target, fields["type"])
                del fields["type"]
            return i, fields
    raise ReferenceDataError(
        f"no header row in the first {_HEADER_SCAN_ROWS} rows: expected cells such as STATE, "
        "LAW ENFORCEMENT AGENCY, SUPPORT TYPE (or TYPE), SIGNED (or MOA SIGNED) and COUNTY"
    )


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------

_UNRESOLVED_SCHEMA = {
    "sheet_row": pl.Int64,
    "state": pl.String,
    "agency": pl.String,
    "county": pl.String,
    "support_type": pl.String,
    "signed": pl.String,
    "reason": pl.String,
    "imported": pl.Boolean,
}
_ROW_SCHEMA = {
    **{c: pl.String for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)},
    "signed": pl.Date,
    "ended": pl.Date,
}


def _county_name(agency: str, county_cell: str, agency_type: str) -> tuple[str | None, bool]:
    """The county name to resolve and whether it came from the agency name."""
    if county_cell.upper() not in _NA_CELLS:
        return county_cell, False
    if agency_type == "sheriff" and (m := _CITY_SHERIFF.match(agency)):
        return f"{m.group(1) or m.group(2)} city", True
    if m := _COUNTY_IN_NAME.match(agency):
        return m.group(1), True
    return None, False


def _is_county_agency(agency: str, agency_type: str, jurisdiction: str | None) -> bool:
    """County agencies get a county FIPS; municipal, state and regional ones do not."""
    if jurisdiction is not None:
        return _text(jurisdiction).lower() == "county"
    if agency_type == "state":
        return False
    return agency_type == "sheriff" or re.search(r"\b(county|parish)\b", agency.lower()) is not None


def import_ice_sheet(
    path: str | Path, *, sheet: str | int | None = None, confidence: str = "high"
) -> IceImport:
    """Read an ICE 287(g) participating-agencies sheet (xlsx or csv) into registry rows.

    Parameters
    ----------
    path : str or Path
        An ``.xlsx`` workbook or a ``.csv`` export of one (UTF-8, with or without BOM, or cp1252).
    sheet : str, int or None, default None
        The worksheet (name or 0-based index) of an xlsx workbook; ``None`` for the first sheet.
    confidence : {"high", "medium", "low"}, default "high"
        The ``confidence`` written on every imported row (ICE's own list is the primary source).

    Returns
    -------
    IceImport
        ``rows`` in the registry format, ``unresolved`` (every row needing attention, with the
        reason), ``header_row`` and ``source``.

    Raises
    ------
    ReferenceDataError
        If the file cannot be read or no header row is found in its first 50 rows.
    SpecificationError
        If the file type, ``sheet`` or ``confidence`` is not allowed.

    Notes
    -----
    **Header.** The header is the first of the first 50 rows holding at least STATE, an agency
    column (LAW ENFORCEMENT AGENCY, AGENCY) and one more known column; title and note rows above it
    are skipped. Cells are matched after upper-casing and collapsing spaces, so ``"Signed Date "``
    is ``SIGNED DATE``. The support-type column is ``SUPPORT TYPE`` (or MODEL); a ``TYPE`` column is
    the support type when there is no SUPPORT TYPE column, and the jurisdiction (County, Municipality,
    State Agency) when there is one, as on the 2025 sheets. The signed column is any of SIGNED,
    SIGNED DATE, DATE SIGNED, MOA SIGNED.

    **Rows.** Rows that are entirely empty are skipped. Every other row becomes a registry row or is
    listed in ``unresolved`` with ``imported=False``:

    - *state*: a postal code or full name (any case); anything else is not imported;
    - *agency*: required; spaces collapsed, curly apostrophes straightened;
    - *signed*: an Excel serial number (1900 date system), a date cell, ``MM/DD/YYYY`` (or
      ``M/D/YYYY``, ``MM-DD-YYYY``) or ``YYYY-MM-DD[ 00:00:00]`` text, between 1996-09-30 and 2099;
      otherwise not imported;
    - *model*: from :func:`model_from_support_type`; a support type that maps to ``unknown`` is
      imported with ``model="unknown"`` *and* listed (``imported=True``);
    - *agency_type*: from :func:`agency_type_from_name`;
    - *county_fips*: only for county agencies (jurisdiction "County" if the sheet has that column;
      otherwise sheriffs and agencies with "County"/"Parish" in their name), resolved from the COUNTY
      cell — or, when it is empty or ``#N/A``, from the agency name ("Burke County Sheriff's
      Office", "City of Richmond Sheriff's Office") with a note — by
      :func:`stopdisparity.geo.resolve_counties` (which handles "Mc Dowell"/"McDowell",
      "St. Mary's", parishes and independent cities). Municipal, state and regional agencies get an
      empty value, which is not an error. A county agency whose county cannot be resolved is not
      imported (a wrong or missing FIPS would silently make it a control);
    - a second row with the same state, agency (:func:`~stopdisparity.policy.agency_key`) and model
      is not imported (it would be an overlapping spell); the first one is kept.

    ``ended`` is empty (the sheet lists current agreements), ``end_basis`` says which sheet listed
    the row, and ``source`` names the file, the sheet and the row.
    """
    check_choice("confidence", confidence, CONFIDENCE_LEVELS)
    path = Path(path)
    if not path.is_file():
        raise ReferenceDataError(f"ICE sheet {path} does not exist")
    cells, label = _read_cells(path, sheet)
    header_index, fields = _find_header(cells)

    def cell(row: tuple[object, ...], field: str) -> object:
        j = fields.get(field)
        return row[j] if j is not None and j < len(row) else None

    records: list[dict[str, object]] = []
    read_cells: list[dict[str, object]] = []  # parallel to records: the cells as read
    row_notes: list[list[str]] = []  # parallel to records
    problems: list[dict[str, object]] = []
    pending_county: list[tuple[int, str, str, bool]] = []  # (record index, state, county name, from name)
    seen: dict[tuple[str, str, str], int] = {}
    for i in range(header_index + 1, len(cells)):
        row = cells[i]
        sheet_row = i + 1
        if all(_text(v) == "" for v in row):
            continue
        as_read = {
            "sheet_row": sheet_row,
            "state": _text(cell(row, "state")),
            "agency": _text(cell(row, "agency")),
            "county": _text(cell(row, "county")),
            "support_type": _text(cell(row, "support")),
            "signed": _text(cell(row, "signed")),
        }

        def problem(reason: str, *, imported: bool = False, as_read: dict[str, object] = as_read) -> None:
            problems.append({**as_read, "reason": reason, "imported": imported})

        agency = as_read["agency"]
        if not agency:
            problem("no agency name (a note or total row?)")
            continue
        state = _state_code(cell(row, "state"))
        if state is None:
            problem(f"unknown state {as_read['state']!r}")
            continue
        signed, date_reason = _parse_date(cell(row, "signed"))
        if signed is None:
            problem(date_reason or "missing signed date")
            continue
        support = as_read["support_type"]
        model = model_from_support_type(support)
        notes: list[str] = []
        if model == "unknown":
            reason = (
                "missing support type"
                if not support
                else f"support type {support!r} is not a known 287(g) model"
            )
            problem(f"{reason}; imported with model 'unknown'", imported=True)
            notes.append(f"ICE support type {support!r}")
        key = (state, _agency_key(agency), model)
        if key in seen:
            problem(f"same agency and model as row {seen[key]}; not imported (overlapping spell)")
            continue
        seen[key] = sheet_row
        jurisdiction = _text(cell(row, "jurisdiction")) if "jurisdiction" in fields else None
        agency_type = agency_type_from_name(agency, state=state, jurisdiction=jurisdiction)
        source = f"ICE 287(g) participating-agencies sheet {label}, row {sheet_row}"
        record: dict[str, object] = {
            "state": state,
            "agency": agency,
            "agency_type": agency_type,
            "county_fips": None,
            "model": model,
            "signed": signed,
            "ended": None,
            "end_basis": f"listed on ICE sheet {label}",
            "source": source,
            "renewal_dates": None,
            "confidence": confidence,
            "notes": None,
        }
        if _is_county_agency(agency, agency_type, jurisdiction):
            name, from_agency = _county_name(agency, as_read["county"], agency_type)
            if name is None:
                problem("county agency without a county (COUNTY cell empty, none in the agency name)")
                continue
            pending_county.append((len(records), state, name, from_agency))
        records.append(record)
        read_cells.append(as_read)
        row_notes.append(notes)

    # Resolve all county names at once; a county agency that does not resolve is not imported.
    drop: set[int] = set()
    if pending_county:
        pairs = pl.DataFrame(
            {
                "state": [s for _, s, _, _ in pending_county],
                "county_name": [n for _, _, n, _ in pending_county],
            },
            schema={"state": pl.String, "county_name": pl.String},
        )
        resolution = resolve_counties(pairs)
        fips_of = {(s, n): f for s, n, f in resolution.frame.iter_rows()}
        reason_of = {(s, n): r for s, n, r in resolution.unresolved.iter_rows()}
        for index, state, name, from_agency in pending_county:
            fips = fips_of.get((state, name))
            if fips is None:
                problems.append(
                    {
                        **read_cells[index],
                        "reason": f"county {name!r} not resolved in {state}: {reason_of.get((state, name))}",
                        "imported": False,
                    }
                )
                drop.add(index)
                continue
            records[index]["county_fips"] = fips
            if from_agency:
                row_notes[index].append(f"county taken from the agency name ({name})")

    kept = [
        {**record, "notes": "; ".join(row_notes[index]) or None}
        for index, record in enumerate(records)
        if index not in drop
    ]
    rows = pl.DataFrame(kept, schema=_ROW_SCHEMA) if kept else pl.DataFrame(schema=_ROW_SCHEMA)
    unresolved = (
        pl.DataFrame(problems, schema=_UNRESOLVED_SCHEMA).sort("sheet_row", maintain_order=True)
        if problems
        else pl.DataFrame(schema=_UNRESOLVED_SCHEMA)
    )
    return IceImport(rows=rows, unresolved=unresolved, header_row=header_index + 1, source=label)
