"""Tests of the year router: rows streamed in file order land in their year's file, in order, in fixed
row groups, so the bytes do not depend on how the stream was cut; failures leave no files behind."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stopdisparity import partitions
from stopdisparity.partitions import FAILED_SCHEMA, YearRouter, route

N = 5_000
GROUP = 400
FLUSH = 1_800  # every file's pending rows are written every 1,800 rows of the stream


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "ROW_GROUP", GROUP)
    monkeypatch.setattr(partitions, "FLUSH_ROWS", FLUSH)


def parsed(n: int = N) -> pa.Table:
    """A parse's output: typed columns, every 97th row failed (_fail, _raw), four years and no date."""
    years = [None if i % 50 == 7 else 2010 + (i * 7919) % 4 for i in range(n)]
    fail = [3 if i % 97 == 5 else None for i in range(n)]
    return pa.table(
        {
            "raw_row_number": [str(i) for i in range(n)],
            "county_name": [["Wake County", "Durham County", "Nowhere", None][i % 4] for i in range(n)],
            "subject_age": [float(i % 80) for i in range(n)],
            "_fail": pa.array(fail, pa.int32()),
            "_raw": [None if f is None else f"{i},bad" for i, f in enumerate(fail)],
            "_year": pa.array(years, pa.int64()),
        }
    )


def cut(table: pa.Table, sizes: list[int]) -> Iterator[pa.RecordBatch]:
    """The table as record batches of the given sizes, cycled."""
    start, k = 0, 0
    while start < table.num_rows:
        size = sizes[k % len(sizes)]
        yield from table.slice(start, size).to_batches()
        start, k = start + size, k + 1


def router(root: Path, asked: list[list[str]] | None = None) -> YearRouter:
    fips = {"Wake County": "37183", "Durham County": "37063"}

    def resolve(names: list[str]) -> dict[str, str | None]:
        if asked is not None:
            asked.append(names)
        return {n: fips.get(n) for n in names}

    return YearRouter(
        root / "stops",
        root / "failed.parquet",
        state="NC",
        stored=["raw_row_number", "county_name", "subject_age"],
        source_file="nc.csv",
        first_line=2,
        resolve=resolve,
    )


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_rows_land_in_their_year_in_file_order_with_lines_and_county_codes(tmp_path: Path) -> None:
    table = parsed()
    asked: list[list[str]] = []
    routed = route(cut(table, [333, 1000, 7]), router(tmp_path, asked))
    failed = [i for i, f in enumerate(table["_fail"].to_pylist()) if f is not None]
    assert routed.failed == len(failed) and routed.stored == N - len(failed)
    assert routed.without_county == sum(
        1 for i in range(N) if i not in set(failed) and i % 4 in (2, 3)
    )  # "Nowhere" does not resolve, None has no name
    assert routed.county_names == ("Durham County", "Nowhere", "Wake County")
    assert sorted(n for names in asked for n in names) == ["Durham County", "Nowhere", "Wake County"]
    names = {p.parent.name for p in routed.parts}
    assert names == {"year=2010", "year=2011", "year=2012", "year=2013", "year=__HIVE_DEFAULT_PARTITION__"}
    years = table["_year"].to_pylist()
    seen = 0
    for part in routed.parts:
        got = pq.read_table(part)
        assert got.column_names == [
            "raw_row_number", "county_name", "subject_age", "source_file", "source_line", "county_fips"
        ]  # fmt: skip
        label = part.parent.name.removeprefix("year=")
        year = None if label == "__HIVE_DEFAULT_PARTITION__" else int(label)
        expected = [i for i in range(N) if years[i] == year and i not in set(failed)]
        assert got["source_line"].to_pylist() == [i + 2 for i in expected]  # line = ordinal + first line
        assert got["raw_row_number"].to_pylist() == [str(i) for i in expected]
        assert set(got["source_file"].to_pylist()) == {"nc.csv"}
        fips = {"Wake County": "37183", "Durham County": "37063"}
        assert got["county_fips"].to_pylist() == [fips.get(c) for c in got["county_name"].to_pylist()]
        meta = pq.ParquetFile(part).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert sum(sizes) == got.num_rows and all(0 < k <= GROUP for k in sizes)
        assert GROUP in sizes or got.num_rows < 2 * GROUP  # full groups, shorter ones at the flushes
        seen += got.num_rows
    assert seen == routed.stored
    side = pq.read_table(routed.failed_file)
    assert side.schema == FAILED_SCHEMA
    assert side["_row"].to_pylist() == failed
    assert side["_raw"].to_pylist() == [f"{i},bad" for i in failed]


@pytest.mark.parametrize("sizes", [[N], [1], [GROUP], [GROUP - 1, GROUP + 1], [17, 1200, 3]])
def test_the_bytes_do_not_depend_on_how_the_stream_is_cut(tmp_path: Path, sizes: list[int]) -> None:
    table = parsed(2_000) if sizes == [1] else parsed()
    route(cut(table, [1000]), router(tmp_path / "a"))
    route(cut(table, sizes), router(tmp_path / "b"))
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(a) == 6 and sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_a_parse_failing_midway_leaves_no_file_and_no_thread(tmp_path: Path) -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        batches = cut(parsed(), [700])
        for _ in range(5):
            yield next(batches)
        raise RuntimeError("the parse failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="the parse failed"):
        route(failing(), router(tmp_path))
    assert files(tmp_path) == {}
    assert threading.active_count() == before


def test_a_failed_write_is_raised_in_the_caller(tmp_path: Path) -> None:
    """A write on the writing thread that fails (here: the directory is a file) reaches the caller."""
    (tmp_path / "stops").write_text("not a directory")
    before = threading.active_count()
    with pytest.raises(OSError):
        route(cut(parsed(), [1000]), router(tmp_path))
    assert threading.active_count() == before
    assert files(tmp_path) == {}


def test_pending_rows_stay_bounded_however_many_years(tmp_path: Path) -> None:
    """A source spanning 600 years (junk dates do) holds at most FLUSH_ROWS rows in memory."""
    n = 6_000
    table = parsed(n).set_column(5, "_year", pa.array([1500 + (i * 7) % 600 for i in range(n)], pa.int64()))
    r = router(tmp_path)
    for batch in cut(table, [250, 999]):
        r.add(batch)
        pending = sum(s._pending_rows for s in [r._failed, *r._years.values()])
        assert pending <= FLUSH
    routed = r.close()
    assert len(routed.parts) == 600
    assert routed.stored + routed.failed == n
    lines = [line for p in routed.parts for line in pq.read_table(p)["source_line"].to_pylist()]
    assert sorted(lines) == [i + 2 for i in range(n) if table["_fail"][i].as_py() is None]


def test_a_write_failing_at_close_reports_the_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write of a small year happens at close; its ENOSPC is the error raised, not a later one.

    2010 is the first year closed, and every year holds less than a row group, so each file is
    created at close: the other files' writes and closes are queued after the failed one.
    """
    real = pq.ParquetWriter

    def writer(path: Path, *args: object, **kwargs: object) -> pq.ParquetWriter:
        if "year=2010" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(partitions.pq, "ParquetWriter", writer)
    for _ in range(5):  # the order in which the writing thread finishes its jobs varies
        with pytest.raises(OSError) as caught:
            route(cut(parsed(300), [100]), router(tmp_path))
        assert caught.value.errno == errno.ENOSPC
        assert files(tmp_path) == {}
