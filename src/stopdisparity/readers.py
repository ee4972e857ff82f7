"""Input files as sources: discovery, hashing, zip safety, streaming, and an independent record count.

The record count is the ingest's check on the CSV parser: it is computed from the decompressed bytes
by a quote-aware scan that shares no code with DuckDB, and rows_read = rows_stored + rows_quarantined
must hold exactly. The scan also finds blank lines and records that span several physical lines, so
the ingest can give every row its 1-based physical line number (header = 1).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from stopdisparity.errors import IngestError
from stopdisparity.schema import US_STATES

SourceKind = Literal["csv", "csv.gz", "csv.zip", "parquet"]
CHUNK = 8 << 20
#: Bytes a Feeder hands to the parser at a time (the grain of its progress).
FEED_CHUNK = 1 << 20
_OPP_NAME = re.compile(r"^(?P<state>[a-z]{2})_(?P<place>[a-z0-9_]+?)_(?P<date>\d{4}_\d{2}_\d{2})\b")
_QUOTE, _NEWLINE, _COMMA, _CARRIAGE = 34, 10, 44, 13


@dataclass(frozen=True, slots=True)
class Source:
    """One input table: a CSV/Parquet file, or one CSV member of a zip archive.

    ``name`` is the source's identity in the store: the file's base name, or ``archive.zip!member.csv``
    for a member of an archive that holds several CSV files.
    """

    path: Path
    name: str
    kind: SourceKind
    state: str
    member: str | None = None
    skipped: tuple[str, ...] = ()  # the archive's members that are not CSV data, not ingested

    @property
    def label(self) -> str:
        """Human name for messages: the path, with ``!member`` for archive members."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)


def state_from_name(name: str) -> str | None:
    """State code from an OPP file name ``{state}_{place}_{YYYY_MM_DD}...``, upper case, or None."""
    m = _OPP_NAME.match(Path(name).name.lower())
    if m and m["state"].upper() in US_STATES:
        return m["state"].upper()
    return None


def _kind(path: Path) -> SourceKind:
    name = path.name.lower()
    for suffix, kind in ((".csv.zip", "csv.zip"), (".zip", "csv.zip"), (".csv.gz", "csv.gz"),
                         (".csv", "csv"), (".parquet", "parquet")):  # fmt: skip
        if name.endswith(suffix):
            return kind  # type: ignore[return-value]
    raise IngestError(
        f"{path}: cannot tell the format from the name; use .csv, .csv.gz, .csv.zip or .parquet"
    )


#: Compression methods zipfile can read (deflate64, method 9, is the common one it cannot).
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}  # fmt: skip


def _is_data_member(name: str) -> bool:
    """A CSV member that holds data: not macOS metadata (``__MACOSX/``, ``._name``)."""
    parts = Path(name).parts
    return name.lower().endswith(".csv") and "__MACOSX" not in parts and not parts[-1].startswith("._")


def _safe_members(path: Path) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """CSV data members of a zip archive and the names of the other (skipped) files in it.

    Raises
    ------
    IngestError
        For an unreadable archive or an unsafe or unreadable member (absolute or parent path,
        symbolic link, encryption, unsupported compression, a name that appears twice), with the
        reason and what to do.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        size = path.stat().st_size
        what = "an empty file (0 bytes)" if size == 0 else f"not a readable zip archive ({e})"
        raise IngestError(
            f"{path}: {what}; it is probably truncated or corrupt: download the file again "
            "(the store is unchanged)"
        ) from e
    members: list[zipfile.ZipInfo] = []
    skipped: list[str] = []
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or re.match(r"^[A-Za-z]:", name):
            raise IngestError(f"{path}: member {name!r} has an absolute or parent path; refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise IngestError(
                f"{path}: member {name!r} is a symbolic link; refused: put the file itself in the "
                "archive, or unzip it and ingest the .csv (the store is unchanged)"
            )
        if not _is_data_member(name):
            skipped.append(name)
            continue
        if any(m.filename == name for m in members):
            raise IngestError(
                f"{path}: member {name!r} appears twice in the archive (an archive appended to); "
                "unzip it and ingest the .csv you mean (the store is unchanged)"
            )
        if info.flag_bits & 0x1:
            raise IngestError(
                f"{path}: member {name!r} is encrypted (password-protected); unzip it with the "
                "password and ingest the .csv (the store is unchanged)"
            )
        if info.compress_type not in _ZIP_METHODS:
            raise IngestError(
                f"{path}: member {name!r} uses zip compression method {info.compress_type} "
                "(9 is deflate64), which cannot be read; unzip it and ingest the .csv, or re-zip it "
                "with standard deflate (the store is unchanged)"
            )
        members.append(info)
    if not members:
        raise IngestError(
            f"{path}: the archive holds no .csv member (members: {[i.filename for i in infos]})"
        )
    return members, skipped


def discover(paths: Sequence[str | Path], *, state: str | None = None) -> list[Source]:
    """Turn input paths into sources, checking each exists and has a state.

    Raises
    ------
    IngestError
        For a missing file, an unknown format, an unsafe archive, or a file whose name carries no state
        when ``state`` is not given.
    """
    if state is not None and state.upper() not in US_STATES:
        raise IngestError(f"--state must be a two-letter US state code; got {state!r}")
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise IngestError(f"{path}: no such file")
        kind = _kind(path)
        st = state.upper() if state else state_from_name(path.name)
        if st is None:
            raise IngestError(
                f"{path}: the file name does not start with a state code (OPP names look like "
                "nc_statewide_2020_04_01.csv.zip); pass --state XX"
            )
        if kind == "csv.zip":
            members, skipped = _safe_members(path)
            for info in members:
                name = path.name if len(members) == 1 else f"{path.name}!{info.filename}"
                sources.append(Source(path, name, kind, st, info.filename, tuple(skipped)))
        else:
            sources.append(Source(path, path.name, kind, st))
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IngestError(
            f"two inputs share the identity {dupes}: a source's identity is its base name; rename one"
        )
    return sources


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def stream_errors(source: Source) -> Iterator[None]:
    """Turn a decompression error inside the block into an IngestError that says what to do.

    A broken pipe (the reader of a named pipe stopped early) is not the source's fault and passes
    through unchanged.
    """
    import zlib

    try:
        yield
    except BrokenPipeError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        what = "gzip stream" if source.kind == "csv.gz" else "zip archive"
        raise IngestError(
            f"{source.label}: the {what} is corrupt or truncated ({e}); download the file again "
            "(the store is unchanged)"
        ) from e


@contextmanager
def open_decompressed(source: Source) -> Iterator[BinaryIO]:
    """The source's decompressed CSV bytes as a stream (zip members are never written to disk)."""
    if source.kind == "csv":
        with source.path.open("rb") as f:
            yield f
    elif source.kind == "csv.gz":
        with stream_errors(source), gzip.open(source.path, "rb") as f:
            yield f  # type: ignore[misc]
    elif source.kind == "csv.zip":
        with stream_errors(source), zipfile.ZipFile(source.path) as zf, zf.open(source.member or "") as f:
            yield f  # type: ignore[misc]
    else:
        raise IngestError(f"{source.label}: parquet has no text stream")


@dataclass(slots=True)
class RecordCounter:
    """Quote-aware count of CSV records in a byte stream, independent of any CSV parser.

    Logical lines are counted the way CSV parsers number lines: a newline inside a quoted field does
    not end a record. A quoted field opens only at the start of a field (after a comma or at the
    start of a line), so a stray quote inside an unquoted value (``12" wide``) changes nothing. The
    counter keeps the logical line numbers of blank lines and, for records that span several
    physical lines, how many newlines they hold; with those every logical line maps to its physical
    line. Bytes after the last newline are carried to the next chunk, so the result does not depend
    on where the stream is cut.
    """

    in_quote: bool = False
    logical_lines: int = 0  # completed logical lines (terminating newlines seen)
    blank_lines: list[int] = field(default_factory=list)  # 1-based logical numbers
    extra_newlines: dict[int, int] = field(default_factory=dict)  # logical line -> embedded newlines
    first_line: bytearray = field(default_factory=bytearray)
    carriage_returns: bool = False  # a CR byte anywhere (CRLF line ends, or a CR inside a value)
    _tail: bytes = b""  # bytes after the last newline, carried to the next chunk
    _continues: bool = False  # the next line continues a quoted field
    _first_done: bool = False

    def update(self, chunk: bytes) -> bytes:
        """Feed the next bytes; return the lines they complete, each record-ending CRLF as LF.

        A parser then sees one line ending whatever mix of LF and CRLF the file has (DuckDB detects
        one per file and fails on the other); a CRLF inside a quoted field is data and is kept.
        The bytes still pending (after the last newline) are :attr:`tail`.
        """
        if not chunk:
            return b""
        if not self.carriage_returns and b"\r" in chunk:
            self.carriage_returns = True
        if not self._first_done:
            end = chunk.find(b"\n")
            self.first_line += chunk if end < 0 else chunk[:end]
            self._first_done = end >= 0
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._tail = data
            return b""
        self._tail = data[end + 1 :]
        lines = data[: end + 1]
        crs = self._complete_lines(lines)
        return lines if not crs.size else np.delete(np.frombuffer(lines, dtype=np.uint8), crs).tobytes()

    @property
    def tail(self) -> bytes:
        """Bytes after the last newline seen (the stream's last line when it has no newline)."""
        return self._tail

    def _complete_lines(self, data: bytes) -> np.ndarray:
        """Account for ``data``, which starts at a physical line start and ends with a newline.

        Returns the positions in ``data`` of the carriage returns that end records (CRLF terminators).
        """
        arr = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(arr == _NEWLINE)
        n = newlines.size
        starts = np.empty(n, dtype=np.int64)
        starts[0] = 0
        starts[1:] = newlines[:-1] + 1
        lengths = newlines - starts
        embedded = np.zeros(n, dtype=bool)
        if self.in_quote or b'"' in data:
            quotes = np.flatnonzero(arr == _QUOTE)
            line_of = np.searchsorted(newlines, quotes)
            counts = np.bincount(line_of, minlength=n)
            before = np.where(quotes > 0, arr[np.maximum(quotes - 1, 0)], _NEWLINE)
            opener = (before == _COMMA) | (before == _NEWLINE)
            opens = np.bincount(line_of[opener], minlength=n) > 0
            state, pos = self.in_quote, 0
            # the quote state can change only on lines with an odd number of quotes
            for i in np.flatnonzero(counts & 1).tolist():
                if state:
                    embedded[pos:i] = True
                    state = False  # line i closes the quoted field: its newline ends the record
                elif opens[i]:
                    embedded[i] = True
                    state = True
                pos = i + 1
            if state:
                embedded[pos:] = True
            self.in_quote = state
        terminator = ~embedded
        # logical line owning each physical line = lines terminated before it + 1
        owner = self.logical_lines + np.cumsum(terminator) - terminator + 1
        if embedded.any():
            lines, extra = np.unique(owner[embedded], return_counts=True)
            for line, count in zip(lines.tolist(), extra.tolist(), strict=True):
                self.extra_newlines[line] = self.extra_newlines.get(line, 0) + count
        carriage = np.zeros(n, dtype=bool)
        has_byte = lengths > 0
        carriage[has_byte] = arr[newlines[has_byte] - 1] == _CARRIAGE
        # a blank record: a terminating line with no bytes but an optional \r, not inside a field
        continues = np.zeros(n, dtype=bool)
        continues[1:] = embedded[:-1]
        continues[0] = self._continues
        blank = terminator & ~continues & ((lengths == 0) | ((lengths == 1) & carriage))
        self.blank_lines.extend(owner[blank].tolist())
        self.logical_lines += int(terminator.sum())
        self._continues = bool(embedded[-1])
        return newlines[terminator & carriage] - 1

    def finish(self) -> RecordCount:
        """Close the count; a last line without a newline still counts."""
        if self._tail:
            tail, self._tail = self._tail, b""
            before = self.logical_lines
            self._complete_lines(tail + b"\n")
            if (
                self.logical_lines > before
                and self.blank_lines
                and self.blank_lines[-1] == self.logical_lines
            ):
                self.blank_lines.pop()  # a lone trailing "\r" is not a record
                self.logical_lines -= 1
        last = self.logical_lines + (1 if self.in_quote else 0)  # an unterminated quoted record
        return RecordCount(
            logical_lines=last,
            records=last - len(self.blank_lines),
            blank_lines=tuple(self.blank_lines),
            multiline=tuple(sorted(self.extra_newlines.items())),
            unterminated_quote=self.in_quote,
            header=bytes(self.first_line).rstrip(b"\r"),
            carriage_returns=self.carriage_returns,
        )


@dataclass(frozen=True, slots=True)
class RecordCount:
    """Result of :class:`RecordCounter`: records include the header line."""

    logical_lines: int
    records: int
    blank_lines: tuple[int, ...]
    multiline: tuple[tuple[int, int], ...]
    unterminated_quote: bool
    header: bytes
    carriage_returns: bool = False  # the stream holds a CR byte: its line ends need normalizing

    @property
    def data_rows(self) -> int:
        """Records after the header: the rows_read of a CSV source."""
        return max(self.records - 1, 0)


def parse_header(source: Source, header: bytes, encoding: str = "utf-8") -> list[str]:
    """Column names from the header line (a BOM is dropped)."""
    try:
        text = header.decode(encoding)
    except UnicodeDecodeError as e:
        raise IngestError(
            f"{source.label}, line 1: the header is not valid {encoding} ({e}); pass --encoding"
        ) from e
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise IngestError(
            f"{source.label}: the file is empty (0 bytes after decompression) or its first line is "
            "blank, so it has no header; an OPP file starts with a header line. Download it again, "
            "or leave it out (the store is unchanged)"
        )
    return next(csv.reader(io.StringIO(text)))


class Feeder:
    """Streams a source's decompressed bytes into a named pipe for DuckDB, counting records as it goes.

    One pass over the input does both jobs, so the file is read (and decompressed) once, a zip member
    is never written to disk, and the count stays independent of DuckDB's parser. ``bytes_in`` is the
    input consumed so far (bytes of the file on disk for .csv and .csv.gz, of the member for a zip
    member); it advances by at most :data:`FEED_CHUNK` decompressed bytes at a time, each written
    to the pipe only as fast as DuckDB reads it, so it measures the parser's progress.
    """

    def __init__(self, source: Source, fifo: Path, *, normalize: bool = True) -> None:
        self.source = source
        self.fifo = fifo
        #: write each record-ending CRLF as LF (:meth:`RecordCounter.update`); only for encodings in
        #: which CR and LF are single ASCII bytes (not UTF-16)
        self.normalize = normalize
        self.counter = RecordCounter()
        # SHA-256 of the decompressed bytes: the content's identity whatever the container (a .csv's is
        # its file hash, computed elsewhere, so only compressed sources hash here)
        self._content = None if source.kind == "csv" else hashlib.sha256()
        self.error: BaseException | None = None
        self.bytes_out = 0  # decompressed bytes fed (before line endings are normalized)
        self.bytes_in = 0  # input bytes consumed (see the class docstring)
        self._thread = threading.Thread(target=self._run, name=f"feed:{source.name}", daemon=True)

    def start(self) -> Feeder:
        """Start streaming in a background thread."""
        self._thread.start()
        return self

    @contextmanager
    def _open(self) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
        """The decompressed stream and a function giving the input bytes consumed so far."""
        if self.source.kind == "csv.zip":
            with open_decompressed(self.source) as f:
                yield f, lambda: self.bytes_out
            return
        if self.source.kind == "csv.gz":
            with (
                stream_errors(self.source),
                self.source.path.open("rb") as raw,
                gzip.GzipFile(fileobj=raw) as gz,
            ):
                yield gz, raw.tell  # type: ignore[misc]
            return
        with self.source.path.open("rb") as raw:
            yield raw, raw.tell

    def _run(self) -> None:
        try:
            with self._open() as (src, consumed):
                fd = os.open(self.fifo, os.O_WRONLY)
                with os.fdopen(fd, "wb", buffering=0) as out:
                    while chunk := src.read(FEED_CHUNK):
                        lines = self.counter.update(chunk)
                        if self._content is not None:
                            self._content.update(chunk)
                        out.write(lines if self.normalize else chunk)
                        self.bytes_out += len(chunk)
                        self.bytes_in = consumed()
                    if self.normalize:
                        out.write(self.counter.tail)
        except BrokenPipeError as e:  # the reader stopped early; it reports its own error
            self.error = e
        except BaseException as e:
            self.error = e
            _unblock_reader(self.fifo)

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the stream to end; return whether it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self) -> RecordCount:
        """Wait for the stream to end and return the count (re-raising a stream error)."""
        self._thread.join()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            if isinstance(self.error, IngestError):
                raise self.error
            raise IngestError(f"{self.source.label}: reading failed: {self.error}") from self.error
        return self.counter.finish()

    @property
    def content_sha256(self) -> str | None:
        """SHA-256 of the decompressed stream once fed (None for a plain .csv: its file hash is it)."""
        return None if self._content is None else self._content.hexdigest()


def _unblock_reader(fifo: Path) -> None:
    """Open the pipe for writing once so a reader blocked in open() sees end of file."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def count_records(source: Source, *, on_bytes: Callable[[int], None] | None = None) -> RecordCount:
    """Count records of a CSV source by a full quote-aware pass over its decompressed bytes.

    ``on_bytes`` is called after each chunk with the bytes of the file on disk consumed so far
    (compressed bytes for .csv.gz, decompressed member bytes for a zip member).
    """
    counter = RecordCounter()
    if source.kind in ("csv", "csv.gz"):
        with stream_errors(source), source.path.open("rb") as raw:
            stream: BinaryIO = gzip.GzipFile(fileobj=raw) if source.kind == "csv.gz" else raw  # type: ignore[assignment]
            while chunk := stream.read(CHUNK):
                counter.update(chunk)
                if on_bytes is not None:
                    on_bytes(raw.tell())
        return counter.finish()
    done = 0
    with open_decompressed(source) as f:
        while chunk := f.read(CHUNK):
            counter.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done)
    return counter.finish()
