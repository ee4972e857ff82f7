"""Route a source's checked rows, streamed in file order, into one Parquet file per year.

The parse query (``queries/parse_*_source.sql``) yields the typed rows in file order, each with
``_fail`` (NULL when every check passed), ``_raw`` (the re-serialised fields of a failed row) and
``_year``. A row's ordinal in that stream is its parsed record number, so its line is known as it
arrives; rows are written straight to the store's layout (``state=XX/year=YYYY/data_0.parquet``)
and the rows that failed a check to a side file, without an intermediate copy of the source (writing
the rows twice was a third of the ingest's time).

Each file is written in row groups of exactly :data:`ROW_GROUP` rows, each made contiguous first,
whatever the sizes of the batches the stream delivers: the same input gives the same bytes on any
number of threads. Every :data:`FLUSH_ROWS` rows of the stream (fixed ordinals, so the bytes do
not change either) every file's pending rows are written, so memory stays bounded by that many rows
and the few row groups queued to the writing thread, whatever the source's size or its number of
years.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stopdisparity.store import NULL_PARTITION

#: Rows per row group of a staged file (DuckDB's default).
ROW_GROUP = 122_880
#: Every this many rows of the stream (at fixed ordinals, so the bytes stay the same), every file's
#: pending rows are written as a shorter row group: memory stays bounded however many years a
#: source spans (a junk date can give any year).
FLUSH_ROWS = 8 * ROW_GROUP
#: Row groups queued to the writing thread at most (memory: each is a contiguous copy).
_IN_FLIGHT = 4
#: Columns of the side file of rows that failed a check.
FAILED_SCHEMA = pa.schema([("_row", pa.int64()), ("_fail", pa.int32()), ("_raw", pa.string())])

#: County names -> FIPS (None when a name does not resolve), for the names not seen before.
Resolver = Callable[[list[str]], dict[str, str | None]]


def _options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet writer options: dictionaries only where values repeat, deltas for the line numbers.

    A dictionary on a column of nearly unique values (ids, coordinates, times, lines) is built and
    then abandoned on every page: a quarter of the writing time, for nothing.
    """
    unique = {
        "raw_row_number",
        "location",
        "officer_id_hash",
        "lat",
        "lng",
        "time",
        "source_line",
        "_row",
        "_raw",
    }
    options: dict[str, Any] = {
        "compression": "zstd",
        "use_dictionary": [n for n in schema.names if n not in unique],
    }
    if "source_line" in schema.names:
        options["column_encoding"] = {"source_line": "DELTA_BINARY_PACKED"}
    return options


class _Writes:
    """The writes of one parse, done in order on one background thread, at most a few in flight.

    Encoding and compressing row groups (the GIL released) overlaps DuckDB's parsing of the next rows.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        self._flight: deque[Future[None]] = deque()

    def submit(self, fn: Callable[[], None]) -> None:
        self._flight.append(self._pool.submit(fn))
        while len(self._flight) > _IN_FLIGHT or (self._flight and self._flight[0].done()):
            self._flight.popleft().result()  # re-raises a failed write

    def abandon(self) -> None:
        """Stop after the write under way, dropping the queued ones (the parse failed)."""
        self._flight.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> None:
        try:
            while self._flight:
                self._flight.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Sink:
    """One Parquet file written in row groups of exactly :data:`ROW_GROUP` rows (the last one shorter)."""

    def __init__(self, path: Path, schema: pa.Schema, writes: _Writes) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._writes = writes
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP:
            whole = pa.concat_tables(self._pending)
            full = self._pending_rows - self._pending_rows % ROW_GROUP
            for start in range(0, full, ROW_GROUP):
                self._write(whole.slice(start, ROW_GROUP))
            rest = whole.slice(full)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def _write(self, table: pa.Table | None) -> None:
        """Queue one row group (contiguous, so its bytes do not depend on how batches were cut)."""
        group = None if table is None else table.combine_chunks()

        def write() -> None:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = pq.ParquetWriter(self.path, self.schema, **_options(self.schema))
            if group is not None:
                self._writer.write_table(group, row_group_size=ROW_GROUP)

        self._writes.submit(write)

    def flush(self) -> None:
        """Write the pending rows as a (shorter) row group: called at fixed row ordinals only."""
        if self._pending:
            self._write(pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0

    def discard(self) -> None:
        """Close the file without finishing it, and remove it (after the writing thread stopped)."""
        with contextlib.suppress(Exception):  # an unfinished file: any error is moot
            if self._writer is not None:
                self._writer.close()
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        self._write(None)  # creates the file if no row came (the failed rows' file is always read)

        def close() -> None:
            if self._writer is not None:  # else its creation failed, and that error is raised
                self._writer.close()

        self._writes.submit(close)


@dataclass(frozen=True, slots=True)
class Routed:
    """What :class:`YearRouter` wrote for one source."""

    parts: tuple[Path, ...]  # the year files, sorted by path
    failed_file: Path  # the rows that failed a check (``_row``, ``_fail``, ``_raw``)
    stored: int
    failed: int
    without_county: int
    county_names: tuple[str, ...]  # distinct county names of the stored rows, sorted


class YearRouter:
    """Write a source's parsed rows to year files under ``root`` and its failed rows to ``failed``.

    ``stored`` names the parsed columns the store keeps, in order; ``source_file``, ``source_line``
    (``first_line`` + the row's ordinal) and ``county_fips`` (from ``resolve``, asked once per new
    name) follow them.
    """

    def __init__(
        self,
        root: Path,
        failed: Path,
        *,
        state: str,
        stored: Sequence[str],
        source_file: str,
        first_line: int,
        resolve: Resolver | None,
    ) -> None:
        self.root = root
        self.state = state
        self.stored = list(stored)
        self.source_file = source_file
        self.first_line = first_line
        self.resolve = resolve
        self._writes = _Writes()
        self._failed = _Sink(failed, FAILED_SCHEMA, self._writes)
        self._years: dict[int | None, _Sink] = {}
        self._next = 0
        self._fips: dict[str, str | None] = {}
        self._keys = pa.array([], pa.string())
        self._values = pa.array([], pa.string())
        self._without_county = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Write the next batch of the parse: failed rows aside, the others to their year's file."""
        start = 0
        while start < batch.num_rows:  # cut at the flush ordinals, which do not depend on the batches
            part = batch.slice(start, FLUSH_ROWS - self._next % FLUSH_ROWS)
            self._route(part)
            start += part.num_rows
            if self._next % FLUSH_ROWS == 0:
                for sink in (self._failed, *self._years.values()):
                    sink.flush()

    def _route(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        rows = pa.array(np.arange(self._next, self._next + n, dtype=np.int64))
        self._next += n
        fail = batch.column("_fail")
        if fail.null_count < n:
            bad = pc.is_valid(fail)
            self._failed.add(
                pa.table(
                    [rows.filter(bad), fail.filter(bad).cast(pa.int32()), batch.column("_raw").filter(bad)],
                    schema=FAILED_SCHEMA,
                )
            )
            kept = pc.is_null(fail)
            batch, rows = batch.filter(kept), rows.filter(kept)
        m = batch.num_rows
        if m == 0:
            return
        fips = self._county_fips(batch)
        self._without_county += fips.null_count
        table = pa.table(
            [batch.column(c) for c in self.stored]
            + [
                pa.repeat(pa.scalar(self.source_file, pa.string()), m),
                pc.add(rows, self.first_line),
                fips,
            ],
            names=[*self.stored, "source_file", "source_line", "county_fips"],
        )
        years = batch.column("_year")
        if pc.count_distinct(years, mode="all").as_py() > 1:  # group by year, file order kept within
            order = pc.sort_indices(years)  # stable; NULL last
            years, table = years.take(order), table.take(order)
        runs = pc.run_end_encode(years)
        start = 0
        for year, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            self._sink(year, table.schema).add(table.slice(start, end - start))
            start = end

    def _sink(self, year: int | None, schema: pa.Schema) -> _Sink:
        sink = self._years.get(year)
        if sink is None:
            name = NULL_PARTITION if year is None else str(year)
            path = self.root / f"state={self.state}" / f"year={name}" / "data_0.parquet"
            sink = self._years[year] = _Sink(path, schema, self._writes)
        return sink

    def _county_fips(self, batch: pa.RecordBatch) -> pa.Array:
        if self.resolve is None or "county_name" not in batch.schema.names:
            return pa.nulls(batch.num_rows, pa.string())
        names = batch.column("county_name")
        new = [x for x in pc.unique(names).drop_null().to_pylist() if x not in self._fips]
        if new:
            self._fips.update(self.resolve(new))
            self._keys = pa.array(list(self._fips), pa.string())
            self._values = pa.array(list(self._fips.values()), pa.string())
        return self._values.take(pc.index_in(names, value_set=self._keys))

    def abandon(self) -> None:
        """Stop writing and remove the unfinished files (the parse failed)."""
        self._writes.abandon()
        for sink in (self._failed, *self._years.values()):
            sink.discard()  # never raises: the error under way is the one to report

    def close(self) -> Routed:
        """Finish every file (the failed rows' file even when empty) and say what was written."""
        for sink in (self._failed, *self._years.values()):
            sink.close()
        self._writes.finish()  # raises the first failed write; the caller then abandons
        return Routed(
            parts=tuple(sorted(s.path for s in self._years.values())),
            failed_file=self._failed.path,
            stored=sum(s.rows for s in self._years.values()),
            failed=self._failed.rows,
            without_county=self._without_county,
            county_names=tuple(sorted(self._fips)),
        )


def route(batches: Iterable[pa.RecordBatch], router: YearRouter) -> Routed:
    """Feed every batch of a parse to ``router`` and close its files."""
    try:
        for batch in batches:
            router.add(batch)
        return router.close()
    except BaseException:
        router.abandon()
        raise
