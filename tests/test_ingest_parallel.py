"""The parallel parse of plain .csv files (issue 7 §4): rows keep their lines, rejects keep theirs.

A plain .csv is read by DuckDB straight from disk on several threads; every other text source goes
through the single-threaded pipe. The stored ``source_line`` comes from the parsed rows' order, so
these tests use files larger than several of DuckDB's read buffers and four threads: the order of
every row, the line of every rejected record, and the fallback to the pipe for a file whose line
ends the direct read cannot take.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import polars as pl
import pytest

from stopdisparity.ingest import ingest
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import big_text, opp_name, write_bytes

ROWS = 120_000  # about 30 MB: four of DuckDB's 8 MiB read buffers
INGEST = importlib.import_module("stopdisparity.ingest")  # the module (the package exports the function)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """Header + ROWS records spread over 8 years; record i (raw_row_number i) is line i + 1."""
    return big_text(ROWS, years=8).splitlines(keepends=True)


def _replace_field(line: str, index: int, value: str) -> str:
    fields = line.rstrip("\n").split(",")
    fields[index] = value
    return ",".join(fields) + "\n"


def test_every_row_and_reject_keeps_its_line_in_a_parallel_parse(tmp_path: Path, lines: list[str]) -> None:
    """Bad records in every buffer, and a blank line: each stored row at its physical line."""
    text = list(lines)
    bad = {  # physical line -> reason; line n holds record n - 1
        2: "type_cast",
        30_001: "type_cast",
        61_234: "field_count",
        90_500: "enum",
        119_999: "type_cast",
    }
    text[2 - 1] = _replace_field(text[1], 1, "2017-13-45")  # date
    text[30_001 - 1] = _replace_field(text[30_000], 2, "25:61:00")  # time
    text[61_234 - 1] = text[61_233].rstrip("\n") + ",surplus\n"
    text[90_500 - 1] = _replace_field(text[90_499], 9, "martian")  # subject_race
    text[119_999 - 1] = _replace_field(text[119_998], 4, "north")  # lat
    blank = 100_000  # a blank line before record 99,999: the records after it move down one line
    text.insert(blank - 1, "\n")
    path = write_bytes(tmp_path / opp_name("csv"), "".join(text).encode())

    [f] = ingest([path], tmp_path / "store", threads=4).files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (ROWS, ROWS - len(bad), len(bad))

    store = open_store(tmp_path / "store")
    stored = store.scan().select("raw_row_number", "source_line").collect()
    record = stored["raw_row_number"].cast(pl.Int64)
    expected = record + 1 + (record + 1 >= blank).cast(pl.Int64)
    assert (stored["source_line"] == expected).all()
    quarantine = store.quarantine().sort("source_line")
    moved = {line + (line >= blank): reason for line, reason in bad.items()}
    assert dict(zip(quarantine["source_line"], quarantine["reason"], strict=True)) == moved
    # each quarantined row's raw text is the record at that line
    for line, raw in zip(quarantine["source_line"], quarantine["raw_text"], strict=True):
        assert raw.split(",")[0] == text[line - 1].split(",")[0]


def test_a_plain_lf_csv_is_read_without_the_pipe(
    tmp_path: Path, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct read is the one taken for an LF file (the Feeder, which feeds the pipe, is never made)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plain LF .csv went through the pipe")

    monkeypatch.setattr(INGEST, "Feeder", refuse)
    path = write_bytes(tmp_path / opp_name("csv"), "".join(lines[:20_001]).encode())
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_read, f.rows_stored) == (20_000, 20_000)


@pytest.mark.parametrize("where", ["every third line", "the last 5,000 lines"])
def test_a_csv_with_carriage_returns_goes_through_the_pipe(
    tmp_path: Path, lines: list[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """DuckDB reads one line ending per file: a file mixing CRLF into LF is re-read through the pipe,
    which turns record-ending CRLFs into LF; every row is stored once, at its line.

    CRLFs only at the end make DuckDB fail after it has streamed rows (its error then reaches Python
    through the Arrow stream as an OSError): the rows written so far are dropped as well.
    """
    crlf = (lambda i: i % 3 == 0) if where == "every third line" else (lambda i: i > ROWS - 5_000)
    text = [line.replace("\n", "\r\n") if crlf(i) else line for i, line in enumerate(lines)]
    path = write_bytes(tmp_path / opp_name("csv"), "".join(text).encode())
    made: list[object] = []

    class Counting(INGEST.Feeder):  # type: ignore[misc, name-defined]
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(INGEST, "Feeder", Counting)
    [f] = ingest([path], tmp_path / "store", threads=4).files
    assert len(made) == 1
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (ROWS, ROWS, 0)
    stored = (
        open_store(tmp_path / "store").scan().select("raw_row_number", "source_line", "raw_notes").collect()
    )
    assert (stored["source_line"] == stored["raw_row_number"].cast(pl.Int64) + 1).all()
    assert not stored["raw_notes"].str.contains("\r").any()


def test_a_parquet_source_of_many_row_groups_keeps_its_row_order(tmp_path: Path, lines: list[str]) -> None:
    """A Parquet source is scanned by row group on four threads; each stored row is still at its row."""
    frame = pl.read_csv("".join(lines).encode(), infer_schema=False, null_values="NA")
    path = tmp_path / "nc_statewide_2020_04_01.parquet"
    frame.write_parquet(path, row_group_size=7_000)
    [f] = ingest([path], tmp_path / "store", threads=4).files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (ROWS, ROWS, 0)
    stored = open_store(tmp_path / "store").scan().select("raw_row_number", "source_line", "year").collect()
    assert (stored["source_line"] == stored["raw_row_number"].cast(pl.Int64)).all()  # row i is raw i
    for _, part in stored.group_by("year"):
        assert part["source_line"].is_sorted()
