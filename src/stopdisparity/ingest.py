"""Files → store through DuckDB: parse, check, cast, partition, quarantine, reconcile, commit once.

Every input row ends up either in the store or in the quarantine with a reason, and the counts
reconcile exactly against a record count made independently of the parser
(:class:`stopdisparity.readers.RecordCounter`). Nothing is published until every source has been
staged and reconciled; then one journal rename commits the whole ingest (see :mod:`store`).

A source's identity is its base name: the same SHA-256 is a no-op (``unchanged``), a new one replaces
the source's rows (``replaced``), a new name adds rows (``ingested``). The same file under two names
is therefore two sources, both stored (the store holds every stop twice): the ingest does not refuse
it, because a renamed download is still a distinct identity, but it logs a warning and names the
other source in the report's ``same_file_as`` (:func:`same_files`), so a panel over both can be
caught. Members of one archive share its SHA-256 and are not flagged against each other.

Edge cases of the input files, each a correct result or an :class:`IngestError` that names the file,
says what to do, and leaves the store unchanged:

- empty (0 bytes, or 0 bytes after decompression): error, there is no header;
- header only: ingested with 0 rows (the manifest records the source);
- CRLF line ends and a UTF-8 byte-order mark: read as LF and without the mark;
- zip archives: one source per CSV member (``a.zip!m.csv`` when there are several); other members
  (README.txt, ``__MACOSX/`` metadata) are skipped and listed in ``skipped_members``; zip64 members
  are read; encrypted, symbolic-link, deflate64, unsafe-path and twice-named members, and truncated
  or corrupt archives and gzip streams are errors (concatenated gzip members are one valid stream).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from stopdisparity import __version__
from stopdisparity.errors import IngestError, QueryError, ReconciliationError, SchemaError, StoreError
from stopdisparity.partitions import Routed, YearRouter, route
from stopdisparity.readers import (
    Feeder,
    RecordCount,
    Source,
    count_records,
    discover,
    parse_header,
    sha256_file,
)
from stopdisparity.schema import (
    CANONICAL_COLUMNS,
    DUCKDB_TYPE,
    SCHEMA_VERSION,
    VOCABULARIES,
    Column,
    classify_columns,
    quote_identifier,
)
from stopdisparity.sql import run_query, stream_query
from stopdisparity.store import (
    STORE_FORMAT,
    Store,
    Transaction,
    crash_enabled,
    crashpoint,
    disk_full,
    duckdb_config,
    open_store,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_LINE_SIZE = 2_097_152
#: Least buffer in which DuckDB reads a source (bytes).
PARSE_BUFFER = 8 << 20

#: Progress callback: (source name, input bytes consumed, bytes total or None). Input bytes are those
#: of the file on disk (compressed bytes for .csv.gz, the member's bytes for a zip member).
ProgressFn = Callable[[str, int, int | None], None]
#: Seconds between progress reports while a source is read (only when the count has grown).
PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What one ingest did with one source."""

    path: str
    name: str
    sha256: str
    status: str  # ingested | replaced | unchanged
    rows_read: int
    rows_stored: int
    rows_quarantined: int
    state: str
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    rows_without_county: int = 0
    unresolved_counties: list[dict[str, Any]] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    skipped_members: list[str] = field(default_factory=list)  # non-CSV members of the source's archive
    same_file_as: list[str] = field(default_factory=list)  # other sources with the same file or content
    #: SHA-256 of the decompressed data (a .csv's or Parquet file's own sha256): the same rows in
    #: another container (.csv, .csv.gz, a zip member) have the same content hash
    content_sha256: str | None = None
    #: data-quality flags of the stored rows (:data:`stopdisparity.quality.FLAGS`); None: not checkable
    quality: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestReport:
    """Result of :func:`ingest`: one :class:`SourceReport` per source and the totals."""

    store: str
    files: tuple[SourceReport, ...]

    @property
    def rows_read(self) -> int:
        """Rows read in this ingest (unchanged sources read none)."""
        return sum(f.rows_read for f in self.files)

    @property
    def rows_stored(self) -> int:
        """Rows stored in this ingest."""
        return sum(f.rows_stored for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        """Rows quarantined in this ingest."""
        return sum(f.rows_quarantined for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document: the contract keys first, then extras."""
        files = []
        for f in self.files:
            d = asdict(f)
            ordered = {k: d.pop(k) for k in ("path", "sha256", "status", "rows_read", "rows_stored",
                                              "rows_quarantined")}  # fmt: skip
            files.append(ordered | d)
        return {
            "files": files,
            "rows_read": self.rows_read,
            "rows_stored": self.rows_stored,
            "rows_quarantined": self.rows_quarantined,
            "store": self.store,
        }


# --------------------------------------------------------------------------------------- SQL builders
def _sql_string(text: str) -> str:
    """A SQL string literal for schema-derived text (column names on the allow-list)."""
    return "'" + text.replace("'", "''") + "'"


def _nonempty(ref: str) -> str:
    return f"{ref} IS NOT NULL AND {ref} <> ''"


def cast_expression(ref: str, kind: str) -> str:
    """SQL casting the text field ``ref`` to its store type ('' counts as missing for typed kinds)."""
    if kind in ("date", "time", "double"):
        return f"TRY_CAST(NULLIF({ref}, '') AS {DUCKDB_TYPE[kind]})"  # type: ignore[index]
    if kind == "boolean":
        return f"CASE upper({ref}) WHEN 'TRUE' THEN true WHEN 'FALSE' THEN false END"
    if kind == "enum":
        return f"NULLIF({ref}, '')"
    return ref


def failure_condition(ref: str, typed: str, column: Column) -> str | None:
    """SQL true when a present value of ``column`` does not cast or is outside its vocabulary.

    ``ref`` is the field's text and ``typed`` the result of :func:`cast_expression` on it, computed
    once in an inner query (casting twice per field was a third of the parse's time).
    """
    kind = column.kind
    if kind in ("date", "boolean"):
        return f"{_nonempty(ref)} AND {typed} IS NULL"
    if kind == "time":  # DuckDB accepts 24:00:00, which other readers cannot hold
        return f"{_nonempty(ref)} AND ({typed} IS NULL OR {typed} >= TIME '24:00:00')"
    if kind == "double":  # inf, nan and overflowing numbers are not measurements
        return f"{_nonempty(ref)} AND NOT coalesce(isfinite({typed}), false)"
    if kind == "enum":
        return f"{_nonempty(ref)} AND NOT list_contains($vocabularies[{_sql_string(column.name)}], {ref})"
    return None


def checked_fragments(columns: Sequence[Column]) -> dict[str, str]:
    """Fragments of the parse queries, three nested select lists over the text fields ``p``.

    ``typed_columns`` casts each field once (``__sd_t{i}``); ``fail_column`` is ``_fail``: 0 for a
    repeated header line, ``i`` when the i-th column fails its cast or vocabulary (the first failing
    one), NULL when the row is valid; ``output_columns`` names the typed values and adds ``_raw``, the
    parsed fields re-serialised only for failed rows (the quarantine's ``raw_text``), and ``_year``,
    the year partition. Each level reads the one below, so no expression is evaluated twice.
    """
    refs = [f"p.{quote_identifier(c.name)}" for c in columns]
    typed = [f"p.__sd_t{i}" for i in range(1, len(columns) + 1)]
    cases = [
        f"WHEN {cond} THEN {i}"
        for i, (c, ref, t) in enumerate(zip(columns, refs, typed, strict=True), start=1)
        if (cond := failure_condition(ref, t, c)) is not None
    ]
    # a repeated header: every field equals its column name (a concatenated export's header may
    # carry its own byte-order mark); field by field, without building a list per row
    header = " AND ".join(
        f"{f'ltrim({ref}, chr(65279))' if i == 1 else ref} = $header[{i}]" for i, ref in enumerate(refs, 1)
    )
    output = [f"{t} AS {quote_identifier(c.name)}" for c, t in zip(columns, typed, strict=True)]
    raw = f"CASE WHEN p._fail IS NOT NULL THEN {raw_text_expression(refs)} END"
    dates = [t for c, t in zip(columns, typed, strict=True) if c.name == "date"]
    year = f"year({dates[0]})" if dates else "CAST(NULL AS BIGINT)"
    return {
        "typed_columns": ",\n    ".join(
            f"{cast_expression(ref, c.kind)} AS __sd_t{i}"
            for i, (c, ref) in enumerate(zip(columns, refs, strict=True), start=1)
        ),
        "fail_column": f"CASE WHEN {header} THEN 0 {' '.join(cases)} END AS _fail",
        "output_columns": ",\n    ".join([*output, "p._fail", f"{raw} AS _raw", f"{year} AS _year"]),
    }


def check_params(columns: Sequence[Column]) -> dict[str, Any]:
    """Parameters the checks bind: the header, and the vocabularies if an enum column is present."""
    params: dict[str, Any] = {"header": [c.name for c in columns]}
    if any(c.kind == "enum" for c in columns):
        params["vocabularies"] = {k: list(v) for k, v in VOCABULARIES.items()}
    return params


def position_fragments(*, skips: bool, multiline: bool) -> dict[str, str]:
    """Fragments turning a parsed record's ordinal (``c._row``) into its physical line.

    ``skip_join``/``skipped_before`` add the blank and refused lines before the record (giving its
    logical line ``_logical``); ``line_join``/``extra_before`` the newlines inside earlier multi-line
    records. Without either, a record's line is its ordinal + the first data line.
    """
    return {
        "skip_join": "ASOF LEFT JOIN skip_offsets AS s ON c._row >= s.threshold" if skips else "",
        "skipped_before": "coalesce(s.k, 0)" if skips else "0",
        "line_join": "ASOF LEFT JOIN line_offsets AS o ON c._logical >= o.threshold" if multiline else "",
        "extra_before": "coalesce(o.extra, 0)" if multiline else "0",
    }


def stored_columns(columns: Sequence[Column]) -> list[str]:
    """The parsed columns a source's year files keep: canonical ones in canonical order, then raw/extra.

    Only the source's own columns are written (an all-NULL column costs a Parquet writer dearly);
    :meth:`Store.connect` and :meth:`Store.scan` add absent canonical columns as typed NULLs.
    """
    present = {c.name for c in columns}
    return [n for n in CANONICAL_COLUMNS if n in present] + [
        c.name for c in columns if c.kind in ("raw", "extra")
    ]


def raw_text_expression(refs: Sequence[str]) -> str:
    """SQL re-serialising parsed fields as one CSV line (``NA`` for missing; quoting where needed)."""
    parts = [
        f"CASE WHEN {ref} IS NULL THEN 'NA' "
        f"WHEN regexp_matches({ref}, '[\",\\n\\r]') THEN '\"' || replace({ref}, '\"', '\"\"') || '\"' "
        f"ELSE {ref} END"
        for ref in refs
    ]
    return "concat_ws(',', " + ", ".join(parts) + ")"


# ------------------------------------------------------------------------------------ per source
@dataclass(slots=True)
class _Staged:
    report: SourceReport
    parts: list[Path]
    quarantine: Path | None
    columns: list[str]


def _source_key(source: Source, sha: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name)
    digest = hashlib.sha256((source.name + "\x00" + sha).encode()).hexdigest()[:16]
    return f"{safe}.{digest}"


def _parse_csv(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    tx: Transaction,
    index: int,
    new_router: Callable[[list[Column]], YearRouter],
    *,
    encoding: str,
    max_line_size: int,
    progress: ProgressFn | None,
) -> tuple[list[Column], RecordCount, str | None, Routed]:
    """Parse a CSV source into its year files (``new_router``); count its records independently meanwhile.

    A plain .csv is read by DuckDB from disk on all its threads (:func:`_parse_direct`); every other
    text source, and a .csv with a carriage return, goes through a named pipe (:func:`_parse_piped`).
    Returns the columns, the count, the SHA-256 of the decompressed bytes (None for a plain .csv,
    whose file hash is its content hash) and what was written.
    """
    header = _read_header(source)
    columns = _classify(parse_header(source, header, encoding), source)
    routed: list[Routed] = []

    def parse(path: str) -> None:
        router = new_router(columns)
        routed.append(_run_parse(con, index, path, router, columns, encoding, max_line_size, source))

    single_byte = not encoding.lower().replace("_", "-").startswith("utf-16")  # CR, LF are one byte
    count, content = None, None
    if source.kind == "csv" and single_byte:
        count = _parse_direct(con, source, parse, progress)
        if count is None:  # a carriage return: parse again through the pipe
            _drop_parse(con, index, routed.pop() if routed else None, stops=True)
    if count is None:
        count, content = _parse_piped(
            source, tx.dir / f"pipe_{index}", parse, progress, normalize=single_byte
        )
    if count.unterminated_quote:
        log.warning("%s: the file ends inside a quoted field", source.label)
    return columns, count, content, routed[-1]


def _parse_direct(
    con: duckdb.DuckDBPyConnection, source: Source, parse: Callable[[str], None], progress: ProgressFn | None
) -> RecordCount | None:
    """Parse a plain .csv straight from disk, in parallel, while a thread counts its records.

    DuckDB splits a file it can seek in among its threads (through a pipe it parses on one). Its
    progress, the share of the file's bytes its scanner has consumed, drives ``progress``. The
    count's pass also looks for carriage returns: DuckDB reads one line ending per file, so for a
    file holding any CR this returns None, to parse it again through the normalizing pipe.
    """
    result: list[RecordCount | BaseException] = []

    def count() -> None:
        try:
            result.append(count_records(source))
        except BaseException as e:  # re-raised in the caller's thread
            result.append(e)

    counter = threading.Thread(target=count, name=f"count:{source.name}", daemon=True)
    counter.start()
    total = source.path.stat().st_size
    done = threading.Event()

    def consumed() -> int:  # DuckDB's query progress: percent of the scan, -1 before it starts
        return min(int(total * con.query_progress() / 100), total - 1)

    watcher = _watch(source.name, total, progress, consumed, done.wait)
    if crash_enabled():  # test hook: die while DuckDB parses the source
        threading.Thread(target=crashpoint, args=("parse",), daemon=True).start()
    failure: IngestError | None = None
    try:
        parse(str(source.path))
    except IngestError as e:
        failure = e
    finally:
        done.set()
        counter.join()
        if watcher is not None:
            watcher.join()  # its last report comes before the final one below
    [outcome] = result
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome.carriage_returns:
        return None
    if failure is not None:
        raise failure
    if progress is not None:
        progress(source.name, total, total)
    return outcome


def _drop_parse(con: duckdb.DuckDBPyConnection, index: int, routed: Routed | None, *, stops: bool) -> None:
    """Drop a source's rejects tables and failed rows once staged; with ``stops``, its year files too.

    The year files are dropped to parse the source again (a carriage return found by the count).
    """
    for name in (f"rejects_{index}", f"rejects_scan_{index}"):
        run_query(con, "drop_staging_table", fragments={"table": name})
    if routed is not None:  # else the parse failed, and its router removed its files
        for path in (routed.failed_file, *(routed.parts if stops else ())):
            path.unlink(missing_ok=True)


def _parse_piped(
    source: Source, fifo: Path, parse: Callable[[str], None], progress: ProgressFn | None, *, normalize: bool
) -> tuple[RecordCount, str | None]:
    """Parse a text source through a named pipe fed by a :class:`Feeder`, which counts meanwhile.

    The Feeder decompresses once and counts records on the same bytes: the input is read once, a
    zip member never touches the disk, and the bytes DuckDB has consumed are known exactly, which
    drives ``progress``. Record-ending CRLFs reach DuckDB as LF (``normalize``; not for UTF-16).
    """
    if source.kind == "csv.zip":
        import zipfile

        with zipfile.ZipFile(source.path) as zf:
            total: int | None = zf.getinfo(source.member or "").file_size
    else:  # .csv, .csv.gz: progress counts the file's bytes consumed (compressed for .csv.gz)
        total = source.path.stat().st_size
    os.mkfifo(fifo)
    feeder = Feeder(source, fifo, normalize=normalize)
    feeder.start()
    _watch(source.name, total, progress, lambda: feeder.bytes_in, feeder.wait)
    if crash_enabled():  # test hook: die once DuckDB is reading the source
        threading.Thread(target=_crash_while_feeding, args=(feeder,), daemon=True).start()
    try:
        parse(str(fifo))
    except IngestError as e:
        _drain(fifo, feeder)
        if isinstance(feeder.error, IngestError):  # a corrupt stream explains DuckDB's error
            raise feeder.error from e
        raise
    finally:
        _drain(fifo, feeder)
    return feeder.join(), feeder.content_sha256


def _classify(names: Sequence[str], source: Source) -> list[Column]:
    """Classify a source's columns; a bad header is an input problem, reported as IngestError."""
    try:
        return classify_columns(names, source=source.label)
    except SchemaError as e:
        raise IngestError(f"{e}; the store is unchanged") from e


def _watch(
    name: str,
    total: int | None,
    progress: ProgressFn | None,
    consumed: Callable[[], int],
    wait: Callable[[float], bool],
) -> threading.Thread | None:
    """Report the input bytes consumed while a source is read, every :data:`PROGRESS_INTERVAL` s it grew.

    ``wait(seconds)`` waits at most that long and says whether the reading is over. Returns the
    reporting thread (None without ``progress``), which ends after the reading.
    """
    if progress is None:
        return None

    def loop() -> None:
        last, over = 0, False
        while not over:
            over = wait(PROGRESS_INTERVAL)
            now = consumed()
            if now > last:
                progress(name, now, total)
                last = now

    thread = threading.Thread(target=loop, name=f"progress:{name}", daemon=True)
    thread.start()
    return thread


def _crash_while_feeding(feeder: Feeder) -> None:
    """Test hook: reach the ``parse`` crash point once the feeder has passed bytes to DuckDB."""
    while feeder.bytes_out == 0 and not feeder.wait(0.001):
        pass
    crashpoint("parse")


def _drain(fifo: Path, feeder: Feeder) -> None:
    """If DuckDB stopped reading early, drain the pipe so the feeder thread can finish."""
    if not feeder.wait(0):
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                while not feeder.wait(0):
                    if not f.read(1 << 20):
                        feeder.wait(0.05)
        except OSError:
            pass


def _read_header(source: Source) -> bytes:
    from stopdisparity.readers import open_decompressed

    with open_decompressed(source) as f:
        head = f.read(1 << 20)
    end = head.find(b"\n")
    return (head if end < 0 else head[:end]).rstrip(b"\r")


def _run_parse(
    con: duckdb.DuckDBPyConnection,
    index: int,
    path: str,
    router: YearRouter,
    columns: Sequence[Column],
    encoding: str,
    max_line_size: int,
    source: Source,
) -> Routed:
    batches = stream_query(
        con,
        "parse_csv_source",
        {
            "path": path,
            "columns": {c.name: "VARCHAR" for c in columns},
            "rejects_table": f"rejects_{index}",
            "rejects_scan": f"rejects_scan_{index}",
            "max_line_size": max_line_size,
            # read the pipe in 8 MiB buffers (DuckDB's default is 16 x max_line_size = 32 MiB),
            # so the bytes it has consumed track its parsing closely (progress)
            "buffer_size": max(PARSE_BUFFER, 2 * max_line_size),
            "encoding": encoding,
            "compression": "none",
        }
        | check_params(columns),
        fragments=checked_fragments(columns),
    )
    try:
        return route(batches, router)
    except QueryError as e:
        if e.__cause__ is None:  # not the engine's error: wrong parameters, a bug
            raise
        raise IngestError(
            f"{source.label}: DuckDB could not parse the file as CSV: {e.__cause__}\n"
            "Check that it is a comma-separated OPP file with a header line; the store is unchanged."
        ) from e


def _parse_parquet(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    index: int,
    new_router: Callable[[list[Column]], YearRouter],
) -> tuple[list[Column], int, Routed]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(source.path)
    names = meta.schema_arrow.names
    columns = _classify(names, source)
    text = ", ".join(
        f"CAST({quote_identifier(c.name)} AS VARCHAR) AS {quote_identifier(c.name)}" for c in columns
    )
    batches = stream_query(
        con,
        "parse_parquet_source",
        {"path": str(source.path)} | check_params(columns),
        fragments={"text_columns": text} | checked_fragments(columns),
    )
    routed = route(batches, new_router(columns))
    run_query(con, "create_empty_rejects", fragments={"rejects": f"rejects_{index}"})
    return columns, meta.metadata.num_rows, routed


def _offsets(con: duckdb.DuckDBPyConnection, index: int, count: RecordCount | None) -> tuple[bool, bool]:
    """Register skip_offsets and line_offsets for a source; return whether each is non-trivial."""
    rejected: list[int] = []
    if count is not None:
        rejected = run_query(con, "list_rejected_lines", fragments={"rejects": f"rejects_{index}"}).fetchall()
        rejected = [r[0] for r in rejected]
    skipped = sorted(set(rejected) | set(count.blank_lines if count else ()))
    skipped = [s for s in skipped if s > 1]
    thresholds: dict[int, int] = {}
    for j, s in enumerate(skipped):
        thresholds[s - 2 - j] = j + 1  # the last k for equal thresholds wins
    skip = pl.DataFrame(
        {"threshold": [-1, *thresholds.keys()], "k": [0, *thresholds.values()]},
        schema={"threshold": pl.Int64, "k": pl.Int64},
    )
    extra_rows: list[tuple[int, int]] = []
    total = 0
    for logical, extra in count.multiline if count else ():
        total += extra
        extra_rows.append((logical + 1, total))
    lines = pl.DataFrame(
        {"threshold": [0] + [t for t, _ in extra_rows], "extra": [0] + [e for _, e in extra_rows]},
        schema={"threshold": pl.Int64, "extra": pl.Int64},
    )
    con.register("skip_offsets", skip)
    con.register("line_offsets", lines)
    return bool(thresholds), bool(extra_rows)


def _stage_source(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    sha: str,
    status: str,
    tx: Transaction,
    index: int,
    *,
    encoding: str,
    max_line_size: int,
    progress: ProgressFn | None,
) -> _Staged:
    from stopdisparity.geo import resolve_counties

    def counties(names: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"state": [source.state] * len(names), "county_name": names})

    def resolve(names: list[str]) -> dict[str, str | None]:  # county names -> FIPS, once per name
        found = resolve_counties(counties(names)).frame
        return dict(zip(found["county_name"].to_list(), found["county_fips"].to_list(), strict=True))

    # a CSV's first data record is line 2 (after the header); a Parquet file's first row is row 1
    first_line = 1 if source.kind == "parquet" else 2
    key = _source_key(source, sha)

    def new_router(columns: list[Column]) -> YearRouter:  # the checked, typed rows go to year files
        return YearRouter(
            tx.dir / "stops" / key,
            tx.dir / f"failed_{index}.parquet",
            state=source.state,
            stored=stored_columns(columns),
            source_file=source.name,
            first_line=first_line,
            resolve=resolve,
        )

    content: str | None = sha  # a .csv's or Parquet file's bytes are its content
    if source.kind == "parquet":
        columns, rows_read, routed = _parse_parquet(con, source, index, new_router)
        count = None
    else:
        columns, count, fed, routed = _parse_csv(
            con, source, tx, index, new_router,
            encoding=encoding, max_line_size=max_line_size, progress=progress,
        )  # fmt: skip
        content = fed or sha
        rows_read = count.data_rows
    crashpoint("after_parse")
    has_skips, has_lines = _offsets(con, index, count)
    positions = position_fragments(skips=has_skips, multiline=has_lines)
    if has_skips or has_lines:  # lines were skipped, or records span lines: correct source_line
        for part in routed.parts:
            moved = part.with_name("repositioned.parquet")
            run_query(
                con,
                "reposition_stops",
                {"staged": str(part), "out": str(moved), "first_line": first_line},
                fragments=positions,
            )
            moved.replace(part)
    crashpoint("after_stage_stops")

    # fail codes: 0 = repeated header; i = column i failed its cast or vocabulary
    codes = pl.DataFrame(
        {
            "code": [0, *range(1, len(columns) + 1)],
            "column_name": [None, *[c.name for c in columns]],
            "reason": ["repeated_header", *["enum" if c.kind == "enum" else "type_cast" for c in columns]],
            "message": [
                "the header line appears again inside the file (concatenated exports?)",
                *[_fail_message(c) for c in columns],
            ],
        },
        schema={"code": pl.Int64, "column_name": pl.String, "reason": pl.String, "message": pl.String},
    )
    con.register("fail_codes", codes)
    parts = list(routed.parts)
    quality = _count_quality(con, parts, [c.name for c in columns], source.state)
    quarantine_out = tx.dir / "quarantine" / f"{key}.parquet"
    quarantine_out.parent.mkdir(parents=True, exist_ok=True)
    run_query(
        con,
        "stage_quarantine",
        {
            "failed": str(routed.failed_file),
            "out": str(quarantine_out),
            "source_file": source.name,
            "first_line": first_line,
        },
        fragments={
            "rejects": f"rejects_{index}",
            "skip_join": positions["skip_join"],
            "skipped_before": positions["skipped_before"],
        },
    )
    stored = without_county = 0
    if parts:  # counted again from the files written
        stored, without_county = run_query(
            con, "count_staged_stops", {"files": [str(p) for p in parts]}
        ).fetchone()  # type: ignore[misc]
    qrows = run_query(con, "count_quarantine_reasons", {"file": str(quarantine_out)}).fetchall()
    quarantined = sum(n for _, n in qrows)
    if quarantined == 0:
        quarantine_out.unlink()
    if rows_read != stored + quarantined:
        raise ReconciliationError(
            f"{source.label}: read {rows_read:,} rows (independent count) but stored {stored:,} and "
            f"quarantined {quarantined:,}; rows would be lost, so nothing was committed. "
            "Please report this with the file."
        )
    _drop_parse(con, index, routed, stops=False)
    unresolved: list[dict[str, Any]] = []
    if routed.county_names:
        unresolved = resolve_counties(counties(list(routed.county_names))).unresolved.to_dicts()
    report = SourceReport(
        path=str(source.path.resolve()),
        name=source.name,
        sha256=sha,
        status=status,
        rows_read=rows_read,
        rows_stored=stored,
        rows_quarantined=quarantined,
        state=source.state,
        quarantine_reasons=dict(qrows),
        rows_without_county=without_county,
        unresolved_counties=unresolved,
        extra_columns=[c.name for c in columns if c.kind == "extra"],
        skipped_members=list(source.skipped),
        quality=quality,
        content_sha256=content,
    )
    return _Staged(report, parts, quarantine_out if quarantined else None, [c.name for c in columns])


def _count_quality(
    con: duckdb.DuckDBPyConnection, parts: Sequence[Path], columns: Sequence[str], state: str
) -> dict[str, int | None]:
    """Count the data-quality flags of a source's stored rows in DuckDB (see :mod:`quality`)."""
    from stopdisparity.quality import FLAGS, quality_inputs

    params, fragments = quality_inputs(columns, state)
    if not parts:  # nothing stored: each flag the source's columns can check is 0
        checkable = (params["has_search_basis"], params["has_age"], params["has_location"])
        return {flag: 0 if ok else None for flag, ok in zip(FLAGS, checkable, strict=True)}
    _, *counts = run_query(
        con, "count_quality_flags", {"files": [str(p) for p in parts]} | params, fragments=fragments
    ).fetchone()  # type: ignore[misc]
    return dict(zip(FLAGS, counts, strict=True))


def _fail_message(column: Column) -> str:
    if column.kind == "enum":
        return f"{column.name} must be NA or one of {list(VOCABULARIES[column.name])}"
    expected = {
        "date": "an ISO date (YYYY-MM-DD)",
        "time": "a time HH:MM:SS or HH:MM before 24:00",
        "double": "a finite number",
        "boolean": "TRUE or FALSE",
    }.get(column.kind, "text")
    return f"{column.name} must be NA or {expected}"


# ------------------------------------------------------------------------------------------- ingest
def ingest(
    paths: Sequence[str | Path],
    store: str | Path,
    *,
    state: str | None = None,
    memory_limit: str = "2GB",
    threads: int | None = None,
    encoding: str = "utf-8",
    max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Ingest OPP files into a store; one commit point, idempotent by file identity.

    Parameters
    ----------
    paths
        ``.csv``, ``.csv.gz``, ``.csv.zip`` or ``.parquet`` files in the OPP standardized format.
    store
        Store directory (created if missing).
    state
        Two-letter state for every file; default: the OPP file name's prefix.
    memory_limit, threads
        Memory budget of the ingest (e.g. ``"2GB"``; DuckDB's buffer manager gets half, see
        :func:`duckdb_share`) and DuckDB's thread count; memory stays bounded by spilling.
    encoding
        Text encoding of CSV sources (``utf-8``, ``latin-1``, ``utf-16``).
    max_line_size
        Longest accepted line in bytes; longer records are quarantined as ``line_too_long``.
    progress
        Called with (source, bytes done, bytes total) while sources are read.

    Returns
    -------
    IngestReport
        Per source: status, sha256, rows_read / rows_stored / rows_quarantined (reconciled).

    Raises
    ------
    IngestError
        For unreadable inputs or rows that would be lost; the store is then exactly as before.
    """
    sources = discover(paths, state=state)
    st = open_store(store, create=True)
    with st.lock():
        st.recover()
        manifest = st.manifest()
        known: dict[str, Any] = manifest["sources"]
        hashes: dict[Path, str] = {}
        plan: list[tuple[Source, str, str]] = []
        for source in sources:
            if source.path not in hashes:
                hashes[source.path] = sha256_file(source.path)
            sha = hashes[source.path]
            entry = known.get(source.name)
            status = "ingested" if entry is None else ("unchanged" if entry["sha256"] == sha else "replaced")
            plan.append((source, sha, status))
        duplicates = same_files(plan, known)
        for name, others in duplicates.items():
            log.warning("%s: the same file (sha256) as %s; both are stored, every stop twice", name, others)
        for path, skipped in dict.fromkeys((s.path, s.skipped) for s in sources if s.skipped):
            log.warning("%s: skipped members that are not CSV data: %s", path, list(skipped))
        if all(status == "unchanged" for _, _, status in plan):
            return IngestReport(str(st.root), tuple(_unchanged(s, sha, known) for s, sha, _ in plan))
        try:
            tx = st.begin()
        except OSError as e:
            if (full := disk_full(e)) is None:
                raise
            raise _disk_full_error(st, full) from e
        try:
            report = _run(
                st, tx, plan, known, memory_limit, threads, encoding, max_line_size, progress, duplicates
            )
        except BaseException as e:
            committed = st.committed(tx)
            if not committed:  # after the commit point, recovery rolls forward instead
                st.abort(tx)
            full = disk_full(e)
            if full is not None and not committed:
                raise _disk_full_error(st, full) from e
            if full is not None:
                e.add_note(
                    f"{st.root}: the ingest is committed but the disk filled ({full}) while publishing "
                    "it; free space, then any command on the store (e.g. `stopdisparity summary`) "
                    "finishes it."
                )
            raise
    return report


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def duckdb_share(memory_limit: str) -> str:
    """DuckDB's memory limit for an ingest whose whole process should stay within ``memory_limit``.

    DuckDB's limit bounds only its buffer manager; the interpreter, the Feeder and DuckDB's other
    allocations come on top (measured: about 1.1 GiB of RSS with a 1 GiB limit while writing a
    partitioned store). Half the budget goes to the buffer manager. The parse's Arrow batches and
    the year files' pending rows (:data:`~stopdisparity.partitions.FLUSH_ROWS`, up to about 0.2 GB)
    come on top, so the peak RSS stays below budgets of about 1 GB and more (measured: 0.58 GB
    with 512MB, 0.5-0.6 GB with 2GB). A value that is not a plain size (e.g. ``"80%"``) is passed
    on unchanged.
    """
    m = _SIZE.match(memory_limit)
    if m is None:
        return memory_limit
    size = float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()]
    return f"{max(int(size / 2 / 2**20), 64)}MiB"


def _disk_full_error(st: Store, full: str) -> IngestError:
    return IngestError(
        f"{st.root}: the disk is full ({full}) while the ingest was writing its staging files; nothing "
        "was committed and the store is exactly as it was. Free space on the file system holding "
        f"{st.root} (the ingest stages its sources' Parquet there before publishing it) and re-run "
        "the same command."
    )


def same_files(plan: Sequence[tuple[Source, str, str]], known: dict[str, Any]) -> dict[str, list[str]]:
    """Other sources holding the same file (SHA-256) under another file name, per source written.

    Parameters
    ----------
    plan
        (source, file SHA-256, status) for each source of the ingest.
    known
        The manifest's sources: name -> entry with ``path`` and ``sha256``.

    Returns
    -------
    dict
        Source name -> names of the sources (in this call, or already stored) whose file has the
        same SHA-256 but another base name; only sources that will be written, only when non-empty.
        Members of one archive are never listed against each other.
    """
    by_sha: dict[str, dict[str, str]] = {}  # sha -> source name -> file base name
    for name, entry in known.items():
        by_sha.setdefault(entry["sha256"], {})[name] = Path(entry["path"]).name
    for source, sha, _ in plan:
        by_sha.setdefault(sha, {})[source.name] = source.path.name
    found: dict[str, list[str]] = {}
    for source, sha, status in plan:
        others = sorted(n for n, file in by_sha[sha].items() if file != source.path.name)
        if others and status != "unchanged":
            found[source.name] = others
    return found


def _flag_same_content(reports: list[SourceReport], sources: dict[str, Any]) -> list[SourceReport]:
    """Add to ``same_file_as`` the sources holding the same decompressed data in another container.

    ``same_files`` compares file hashes before anything is read; a .csv, its .csv.gz and a zip member
    holding it differ as files but not as content, which is known once each is read. Each written
    source's report and manifest entry (``sources``: the new manifest's, updated in place) list every
    other source, in this call or stored before (entries with a ``content_sha256``), with its content
    hash, besides those with its file hash (already in the entry's ``same_file_as``).
    """
    by_content: dict[str, set[str]] = {}
    for name, entry in sources.items():
        if entry.get("content_sha256"):
            by_content.setdefault(entry["content_sha256"], set()).add(name)
    out = []
    for r in reports:
        if r.status == "unchanged" or r.content_sha256 is None:
            out.append(r)
            continue
        same_file = set(sources[r.name]["same_file_as"])
        others = sorted((by_content[r.content_sha256] - {r.name}) | same_file)
        if new := sorted(set(others) - same_file):
            log.warning(
                "%s: the same data (decompressed sha256) as %s; both are stored, every stop twice",
                r.name,
                new,
            )
        sources[r.name]["same_file_as"] = others
        out.append(dataclasses.replace(r, same_file_as=others))
    return out


def _unchanged(source: Source, sha: str, known: dict[str, Any]) -> SourceReport:
    return SourceReport(
        path=str(source.path.resolve()), name=source.name, sha256=sha, status="unchanged",
        rows_read=0, rows_stored=0, rows_quarantined=0, state=known[source.name]["state"],
        skipped_members=list(source.skipped),
    )  # fmt: skip


def _run(
    st: Store,
    tx: Transaction,
    plan: list[tuple[Source, str, str]],
    known: dict[str, Any],
    memory_limit: str,
    threads: int | None,
    encoding: str,
    max_line_size: int,
    progress: ProgressFn | None,
    duplicates: dict[str, list[str]],
) -> IngestReport:
    config = duckdb_config(
        memory_limit=duckdb_share(memory_limit), threads=threads, temp_directory=tx.dir / "spill"
    )
    # the parsed rows' order is their line numbers: keep DuckDB from turning the vocabulary checks
    # (list_contains) into a join, which gives up the row order of a parallel CSV scan
    config["disabled_optimizers"] = "in_clause"
    # in memory, spilling to the transaction's directory beyond the memory limit
    con = duckdb.connect(":memory:", config=config)
    reports: list[SourceReport] = []
    moves: list[tuple[Path, Path]] = []
    deletions: list[Path] = []
    sources = dict(known)
    try:
        for index, (source, sha, status) in enumerate(plan):
            if status == "unchanged":
                reports.append(_unchanged(source, sha, known))
                continue
            staged = _stage_source(
                con, source, sha, status, tx, index,
                encoding=encoding, max_line_size=max_line_size, progress=progress,
            )  # fmt: skip
            reports.append(staged.report)
            key_dir = tx.dir / "stops" / _source_key(source, sha)
            published = []
            for n, part in enumerate(staged.parts):
                rel = part.relative_to(key_dir)  # state=XX/year=YYYY/data_0.parquet
                dst = st.stops_dir / rel.parent / f"{_source_key(source, sha)}.{n}.parquet"
                moves.append((part, dst))
                published.append(str(dst.relative_to(st.root)))
            qdst = None
            if staged.quarantine is not None:
                qdst = st.quarantine_dir / staged.quarantine.name
                moves.append((staged.quarantine, qdst))
            if status == "replaced":
                old = known[source.name]
                deletions += [st.root / p for p in old.get("parts", [])]
                if old.get("quarantine"):
                    deletions.append(st.root / old["quarantine"])
            r = staged.report
            sources[source.name] = {
                "path": r.path,
                "member": source.member,
                "kind": source.kind,
                "size": source.path.stat().st_size,
                "sha256": sha,
                "content_sha256": r.content_sha256,
                "state": source.state,
                "status": status,
                "rows_read": r.rows_read,
                "rows_stored": r.rows_stored,
                "rows_quarantined": r.rows_quarantined,
                "quarantine_reasons": r.quarantine_reasons,
                "rows_without_county": r.rows_without_county,
                "quality": r.quality,
                "same_file_as": duplicates.get(source.name, []),
                "unresolved_counties": r.unresolved_counties,
                "columns": staged.columns,
                "parts": published,
                "quarantine": str(qdst.relative_to(st.root)) if qdst else None,
            }
            crashpoint("after_stage_source")
    finally:
        con.close()
    reports = _flag_same_content(reports, sources)
    new_manifest = {
        "format": STORE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "duckdb_version": duckdb.__version__,
        "polars_version": pl.__version__,
        "sources": dict(sorted(sources.items())),
    }
    crashpoint("before_commit")
    st.commit(tx, moves, deletions, new_manifest)
    return IngestReport(str(st.root), tuple(reports))


__all__ = ["IngestReport", "SchemaError", "SourceReport", "StoreError", "ingest"]
