"""Every failure kind of DESIGN.md's quarantine contract (issue 7 §1), one exact-OPP-format file each.

Each case plants one bad record between two good ones in a file written byte for byte as OPP writes
it (``opp_files``), in every text format (.csv, .csv.gz, .csv.zip), and asserts the quarantine row
exactly: (source_file, source_line, column, reason), plus the stored neighbours and the reconciliation
rows_read = rows_stored + rows_quarantined. The last tests prove that ``rows_read`` comes from the
independent record count, not from the parser: a count that disagrees stops the ingest.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from stopdisparity.errors import ReconciliationError
from stopdisparity.ingest import ingest
from stopdisparity.readers import RecordCount, RecordCounter
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import format_row, write_bytes

TEXT_FORMATS = ("csv", "csv.gz", "csv.zip")
#: One column of each kind the checks know: string, date, time, number, enum, boolean, raw.
COLUMNS = {
    "raw_row_number": "string",
    "date": "date",
    "time": "time",
    "subject_age": "double",
    "subject_race": "enum",
    "search_conducted": "boolean",
    "raw_notes": "raw",
}
HEADER = ",".join(COLUMNS)
MAX_LINE = 200  # bytes; the line_too_long case is longer, every other line far shorter


def good(n: int) -> str:
    """A valid record with raw_row_number ``n``, in OPP text."""
    row = {"raw_row_number": str(n), "date": dt.date(2017, 1, 2), "time": dt.time(10), "subject_age": 30.0,
           "subject_race": "white", "search_conducted": False, "raw_notes": "ok"}  # fmt: skip
    return format_row(row, COLUMNS)


@dataclass(frozen=True)
class Case:
    """A bad record (bytes, LF-terminated unless it ends the file) and the quarantine row it must give."""

    bad: bytes
    column: str | None
    reason: str
    lines: int = 1  # physical lines the bad record spans
    last: bool = False  # the bad record ends the file (nothing can follow an unterminated quote)


CASES: dict[str, Case] = {
    "field_count_too_few": Case(b"2,2017-01-02,10:00:00\n", None, "field_count"),
    "field_count_too_many": Case(b"2,2017-01-02,10:00:00,30,white,FALSE,ok,surplus\n", None, "field_count"),
    "type_cast_date": Case(b"2,2017-02-30,10:00:00,30,white,FALSE,ok\n", "date", "type_cast"),
    "type_cast_time": Case(b"2,2017-01-02,10:75:00,30,white,FALSE,ok\n", "time", "type_cast"),
    "type_cast_number": Case(b"2,2017-01-02,10:00:00,thirty,white,FALSE,ok\n", "subject_age", "type_cast"),
    "type_cast_boolean": Case(b"2,2017-01-02,10:00:00,30,white,no,ok\n", "search_conducted", "type_cast"),
    "enum": Case(b"2,2017-01-02,10:00:00,30,purple,FALSE,ok\n", "subject_race", "enum"),
    # Latin-1 n-tilde (0xF1) is not UTF-8
    "encoding": Case(b"2,2017-01-02,10:00:00,30,white,FALSE,Pe\xf1a\n", "raw_notes", "encoding"),
    # a quote that never closes swallows the rest of the file, newline included
    "quote_unterminated": Case(
        b'2,2017-01-02,10:00:00,30,white,FALSE,"never closed\nmore text\n', "raw_notes", "quote", 2, True
    ),
    "quote_inside_unquoted_field": Case(b'2,2017-01-02,10:00:00,30,white,FALSE,"a"b\n', "raw_notes", "quote"),
    "line_too_long": Case(
        b"2,2017-01-02,10:00:00,30,white,FALSE," + b"x" * 300 + b"\n", None, "line_too_long"
    ),
    # a concatenated export: the second file's header line, with or without its byte-order mark
    "repeated_header": Case(HEADER.encode() + b"\n", None, "repeated_header"),
    "repeated_header_with_bom": Case(b"\xef\xbb\xbf" + HEADER.encode() + b"\n", None, "repeated_header"),
    "repeated_header_quoted": Case(
        ",".join(f'"{c}"' for c in COLUMNS).encode() + b"\n", None, "repeated_header"
    ),
}


def planted_file(tmp_path: Path, case: Case, fmt: str) -> Path:
    """header, good record 1, the bad record, good record 3 (unless the bad one ends the file)."""
    data = (HEADER + "\n" + good(1) + "\n").encode() + case.bad
    if not case.last:
        data += (good(3) + "\n").encode()
    return write_bytes(tmp_path / f"nc_planted_2020_01_01.{fmt}", data)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("kind", list(CASES))
def test_each_failure_kind_gives_its_quarantine_row(tmp_path: Path, kind: str, fmt: str) -> None:
    case = CASES[kind]
    path = planted_file(tmp_path, case, fmt)
    [f] = ingest([path], tmp_path / "store", max_line_size=MAX_LINE).files
    rows_after = 0 if case.last else 1
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (2 + rows_after, 1 + rows_after, 1)
    assert f.quarantine_reasons == {case.reason: 1}
    store = open_store(tmp_path / "store")
    q = store.quarantine()
    assert q.select("source_file", "source_line", "column", "reason").rows() == [
        (path.name, 3, case.column, case.reason)
    ]
    [(raw, message)] = q.select("raw_text", "message").rows()
    assert raw and message, (raw, message)
    kept = store.scan().sort("source_line").select("raw_row_number", "source_line").collect().rows()
    assert kept == [("1", 2)] + ([] if case.last else [("3", 3 + case.lines)])


def test_every_reason_of_the_contract_is_covered() -> None:
    """The cases above exercise each reason code of DESIGN.md, and only those."""
    contract = {"field_count", "type_cast", "enum", "encoding", "quote", "line_too_long", "repeated_header"}
    assert {c.reason for c in CASES.values()} == contract
    assert {c.column for c in CASES.values() if c.reason == "type_cast"} == {
        "date", "time", "subject_age", "search_conducted",
    }  # fmt: skip


def test_every_kind_in_one_file_reconciles(tmp_path: Path) -> None:
    """All bad records in one file: each at its physical line, the good ones between them stored."""
    data = (HEADER + "\n").encode()
    expected: list[tuple[int, str | None, str]] = []
    line = 2
    kinds = [k for k, c in CASES.items() if not c.last]
    for n, kind in enumerate(kinds):
        data += (good(n) + "\n").encode()
        line += 1
        expected.append((line, CASES[kind].column, CASES[kind].reason))
        data += CASES[kind].bad
        line += CASES[kind].lines
    data += CASES["quote_unterminated"].bad
    expected.append((line, "raw_notes", "quote"))
    path = write_bytes(tmp_path / "nc_all_2020_01_01.csv.gz", data)
    [f] = ingest([path], tmp_path / "store", max_line_size=MAX_LINE).files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (
        2 * len(kinds) + 1,
        len(kinds),
        len(kinds) + 1,
    )
    q = open_store(tmp_path / "store").quarantine().sort("source_line")
    assert q.select("source_line", "column", "reason").rows() == expected
    assert q.get_column("reason").null_count() == 0


# ---------------------------------------------------------------------- rows_read, independently
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_rows_read_is_the_independent_count_and_a_mismatch_stops_the_ingest(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the quote-aware count of the decompressed bytes disagrees with stored + quarantined, nothing
    is committed: the check compares two counts, it does not derive one from the other."""
    path = planted_file(tmp_path, CASES["field_count_too_many"], fmt)
    finish = RecordCounter.finish

    def one_more(self: RecordCounter) -> RecordCount:
        count = finish(self)
        return type(count)(**{s: getattr(count, s) for s in count.__slots__} | {"records": count.records + 1})

    monkeypatch.setattr(RecordCounter, "finish", one_more)
    with pytest.raises(ReconciliationError, match=r"read 4 rows \(independent count\) but stored 2"):
        ingest([path], tmp_path / "store")
    store = open_store(tmp_path / "store")
    assert store.manifest()["sources"] == {}
    assert not store.has_stops()
    monkeypatch.undo()
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (3, 2, 1)
