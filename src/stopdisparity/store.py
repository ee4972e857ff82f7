"""The store: Hive-partitioned Parquet stops, a quarantine, a manifest, and one commit point.

Layout (DESIGN.md)::

    DIR/stops/state=XX/year=YYYY/*.parquet   stored rows (NULL year: year=__HIVE_DEFAULT_PARTITION__)
    DIR/quarantine/*.parquet                  rejected rows with line, column and reason
    DIR/manifest.json                         one entry per source (hash, counts, status, parts)
    DIR/.staging/                             work in progress; nothing else is ever partial

A write is staged under ``DIR/.staging/<id>/`` and published by a journal: the journal's atomic
rename to ``DIR/journal.json`` is the commit point; its operations (renames, deletions, the new
manifest) are idempotent, so any command that opens the store first rolls a committed journal
forward, or deletes uncommitted staging (roll back). A lock file serialises writers. Staged files
and their directories are fsynced before the journal is written (:func:`sync_staged`), so the commit
survives a power cut as well as a kill.

Test hook: :func:`crashpoint` calls mark the points where a SIGKILL is most likely to expose a
non-atomic write (:data:`CRASHPOINTS`). When the environment variable ``STOPDISPARITY_CRASHPOINT``
names one (``name``, or ``name#n`` for its n-th hit), the process kills itself there with SIGKILL,
so ``tests/test_kill_safety.py`` can prove that every interrupted ingest leaves exactly the before or
the after state. The variable is read once at import; unset, a crash point is one comparison.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from stopdisparity.errors import StoreError
from stopdisparity.schema import (
    CANONICAL_COLUMNS,
    DUCKDB_TYPE,
    LINEAGE_COLUMNS,
    QUARANTINE_COLUMNS,
    SCHEMA_VERSION,
    quote_identifier,
)

STORE_FORMAT = "stopdisparity-store"
MANIFEST = "manifest.json"
JOURNAL = "journal.json"
STAGING = ".staging"
LOCK = ".lock"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # the partition value of a NULL year (Hive convention)

#: Every crash point (test hook, see the module docstring), in the order an ingest reaches them.
CRASHPOINTS: tuple[str, ...] = (
    "parse",  # ingest: a CSV source is being parsed (its bytes are being read)
    "after_parse",  # ingest: a source is parsed into its staged year files, lines not yet corrected
    "after_stage_stops",  # ingest: a source's stops are staged (lines corrected), its quarantine not yet
    "after_stage_source",  # ingest: a source is staged and reconciled
    "before_commit",  # ingest: every source staged, the manifest not yet written
    "manifest.json_partial",  # half of the staged manifest written
    "manifest.json_written",  # staged manifest written, not yet renamed into place in staging
    "journal.json_partial",  # half of the staged journal written
    "before_journal_rename",  # staged journal complete; the commit point is next
    "after_journal_rename",  # committed, no operation applied yet
    "commit_op",  # before each operation of the commit's roll-forward (``commit_op#n``: the n-th)
    "before_journal_unlink",  # every operation applied, the journal still in place
    "recover_op",  # before each operation of a roll-forward by recover()
    "recover_before_journal_unlink",  # recover() applied the journal, has not removed it
    "recover_before_rmtree",  # recover() is about to delete leftover staging
)


def _parse_crashpoint(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition("#")
    if name not in CRASHPOINTS:
        raise StoreError(f"STOPDISPARITY_CRASHPOINT={value!r}: unknown crash point; one of {CRASHPOINTS}")
    return name, int(nth or 1)


_CRASH_AT = _parse_crashpoint(os.environ.get("STOPDISPARITY_CRASHPOINT"))
_crash_hits: dict[str, int] = {}


def crashpoint(name: str) -> None:
    """Test hook: SIGKILL this process if ``STOPDISPARITY_CRASHPOINT`` names this point (and hit)."""
    if _CRASH_AT is None or _CRASH_AT[0] != name:
        return
    _crash_hits[name] = hit = _crash_hits.get(name, 0) + 1
    if hit == _CRASH_AT[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_enabled() -> bool:
    """Whether a crash point is armed (lets callers skip work done only to reach one)."""
    return _CRASH_AT is not None


def disk_full(error: BaseException) -> str | None:
    """The "disk full" reason behind ``error`` or its causes (ENOSPC, EDQUOT, EFBIG), or None.

    DuckDB reports a failed write as an ``IOException`` whose text carries the OS error (wrapped in a
    ``QueryError``); Python file writes raise :class:`OSError` with its errno.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return os.strerror(e.errno)  # type: ignore[arg-type]
        for code in _DISK_FULL:
            if os.strerror(code) in str(e) or f'"errno":"{code}"' in str(e):
                return os.strerror(code)
        e = e.__cause__ or e.__context__
    return None


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _fsync_path(path: Path) -> None:
    """Flush a file or a directory (its entries: renames, new files) to disk, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_staged(paths: list[Path]) -> None:
    """Flush staged files and their directories to disk before the commit point.

    A SIGKILL cannot lose written pages (the kernel keeps them), but a power loss can: without this,
    a journal that reached the disk could name Parquet files whose blocks did not. Every staged file,
    then each directory holding one, is fsynced, so the journal rename commits only durable data.
    """
    for path in paths:
        _fsync_path(path)
    for d in sorted({p.parent for p in paths}):
        _fsync_path(d)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    with tmp.open("w", encoding="utf-8") as f:
        if _CRASH_AT is not None:  # test hook: die with half the file written
            f.write(text[: len(text) // 2])
            f.flush()
            crashpoint(f"{path.name}_partial")
            text = text[len(text) // 2 :]
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    crashpoint(f"{path.name}_written")
    tmp.replace(path)
    _fsync_path(path.parent)


@dataclass(frozen=True, slots=True)
class Transaction:
    """A staging area for one write; published all at once by :meth:`Store.commit`."""

    store: Store
    id: str

    @property
    def dir(self) -> Path:
        """The transaction's staging directory."""
        return self.store.root / STAGING / self.id


@dataclass(frozen=True, slots=True)
class Store:
    """A store directory. Use :func:`open_store`; reading never changes stored rows."""

    root: Path

    # ----------------------------------------------------------------- paths
    @property
    def stops_dir(self) -> Path:
        """Directory of the Hive-partitioned stop files."""
        return self.root / "stops"

    @property
    def quarantine_dir(self) -> Path:
        """Directory of the quarantine files."""
        return self.root / "quarantine"

    @property
    def stops_glob(self) -> str:
        """Glob of every stored stop file."""
        return str(self.stops_dir / "**" / "*.parquet")

    # ------------------------------------------------------------- manifest
    def manifest(self) -> dict[str, Any]:
        """The manifest: store format, versions, and one entry per source under ``sources``."""
        path = self.root / MANIFEST
        if not path.exists():
            return {"format": STORE_FORMAT, "schema_version": SCHEMA_VERSION, "sources": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise StoreError(f"{path}: manifest is not valid JSON ({e}); the store is damaged") from e
        if data.get("format") != STORE_FORMAT:
            raise StoreError(f"{path}: not a stopdisparity manifest (format={data.get('format')!r})")
        return data

    # --------------------------------------------------------------- reading
    def has_stops(self) -> bool:
        """Whether any stop file is stored."""
        return self.stops_dir.is_dir() and any(self.stops_dir.rglob("*.parquet"))

    def connect(self, *, memory_limit: str = "2GB", threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a ``stops`` view over the store (and ``quarantine``).

        The memory limit bounds DuckDB whatever the store's size; spilling goes to a temporary
        directory.
        """
        con = duckdb.connect(config=duckdb_config(memory_limit=memory_limit, threads=threads))
        schema = self.schema()
        if self.has_stops():
            # the relation API binds the path as a value (a view's SQL text cannot take parameters)
            files = con.read_parquet(self.stops_glob, hive_partitioning=True, union_by_name=True)
            files.create_view("stop_files")
            present = set(files.columns)
            select = ", ".join(
                quote_identifier(name)
                if name in present
                else f"CAST(NULL AS {sql_type}) AS {quote_identifier(name)}"
                for name, (sql_type, _) in schema.items()
            )
            con.execute(f"CREATE VIEW stops AS SELECT {select} FROM stop_files")
        else:
            select = ", ".join(f"CAST(NULL AS {t}) AS {quote_identifier(n)}" for n, (t, _) in schema.items())
            con.execute(f"CREATE VIEW stops AS SELECT {select} WHERE false")
        return con

    def schema(self) -> dict[str, tuple[str, pl.DataType]]:
        """Every column of the stops view with its DuckDB and polars type, in order.

        All canonical OPP columns (typed NULL where no source has them), then each source's raw_* and
        extra columns (strings), then lineage and the partition keys.
        """
        extra: dict[str, None] = {}
        for entry in self.manifest()["sources"].values():
            for name in entry.get("columns", []):
                if name not in CANONICAL_COLUMNS:
                    extra[name] = None
        out: dict[str, tuple[str, pl.DataType]] = {}
        for name, kind in CANONICAL_COLUMNS.items():
            out[name] = (DUCKDB_TYPE[kind], _PL_TYPES[DUCKDB_TYPE[kind]])
        for name in extra:
            out[name] = ("VARCHAR", pl.String())
        for name, sql_type in LINEAGE_COLUMNS.items():
            out[name] = (sql_type, _PL_TYPES[sql_type])
        out["state"] = ("VARCHAR", pl.String())
        out["year"] = ("BIGINT", pl.Int64())
        return out

    def scan(self) -> pl.LazyFrame:
        """The stored stops as a polars LazyFrame (projection and partition pruning apply)."""
        if not self.has_stops():
            raise StoreError(f"{self.root}: the store holds no stops yet; run `stopdisparity ingest`")
        schema = {name: pl_type for name, (_, pl_type) in self.schema().items()}
        file_schema = {k: v for k, v in schema.items() if k not in ("state", "year")}
        return pl.scan_parquet(
            self.stops_glob,
            schema=file_schema,
            hive_partitioning=True,
            hive_schema={"state": pl.String, "year": pl.Int64},
            missing_columns="insert",
        ).select(list(schema))

    def quarantine(self) -> pl.DataFrame:
        """Every quarantined row (columns of DESIGN.md plus ``message``)."""
        files = sorted(self.quarantine_dir.glob("*.parquet")) if self.quarantine_dir.is_dir() else []
        schema = {name: _PL_TYPES[t] for name, t in QUARANTINE_COLUMNS.items()}
        if not files:
            return pl.DataFrame(schema=schema)
        return pl.concat([pl.read_parquet(f) for f in files]).cast(schema)  # type: ignore[arg-type]

    # ---------------------------------------------------------- transactions
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock (blocks until a concurrent writer finishes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def recover(self) -> str | None:
        """Finish or undo an interrupted write: roll a committed journal forward, drop other staging.

        Call with the lock held. Returns "rolled_forward", "rolled_back" or None.
        """
        journal = self.root / JOURNAL
        outcome = None
        if journal.exists():
            ops = json.loads(journal.read_text(encoding="utf-8"))
            try:
                self._apply(ops["operations"], phase="recover")
            except OSError as e:
                if (full := disk_full(e)) is None:
                    raise
                raise StoreError(
                    f"{self.root}: the disk is full ({full}) while finishing an interrupted ingest; the "
                    "store is safe and the next command finishes it: free space on its file system and "
                    "re-run."
                ) from e
            crashpoint("recover_before_journal_unlink")
            journal.unlink()
            _fsync_path(self.root)
            outcome = "rolled_forward"
        staging = self.root / STAGING
        if staging.is_dir() and any(staging.iterdir()):
            crashpoint("recover_before_rmtree")
            shutil.rmtree(staging)
            outcome = outcome or "rolled_back"
        return outcome

    def begin(self) -> Transaction:
        """Open a staging area for a new write (call with the lock held, after :meth:`recover`)."""
        tx = Transaction(self, uuid.uuid4().hex[:16])
        tx.dir.mkdir(parents=True)
        return tx

    def commit(
        self,
        tx: Transaction,
        moves: list[tuple[Path, Path]],
        deletions: list[Path],
        manifest: dict[str, Any],
    ) -> None:
        """Publish a transaction: staged files move into place, replaced ones go, the manifest last.

        The journal's rename into ``DIR/journal.json`` is the single commit point.
        """
        sync_staged([src for src, _ in moves if src.is_file()])
        staged_manifest = tx.dir / MANIFEST
        write_json_atomic(staged_manifest, manifest)
        ops: list[dict[str, str]] = [
            {"op": "move", "src": self._rel(src), "dst": self._rel(dst)} for src, dst in moves
        ]
        ops += [{"op": "delete", "path": self._rel(p)} for p in deletions]
        ops.append({"op": "move", "src": self._rel(staged_manifest), "dst": MANIFEST})
        ops.append({"op": "rmtree", "path": self._rel(tx.dir)})
        staged_journal = tx.dir / JOURNAL
        write_json_atomic(staged_journal, {"transaction": tx.id, "operations": ops})
        crashpoint("before_journal_rename")
        staged_journal.replace(self.root / JOURNAL)  # <- the commit point
        crashpoint("after_journal_rename")
        _fsync_path(self.root)
        self._apply(ops)
        crashpoint("before_journal_unlink")
        (self.root / JOURNAL).unlink()
        _fsync_path(self.root)

    def committed(self, tx: Transaction) -> bool:
        """Whether ``tx`` passed its commit point (its journal is the store's) and awaits roll-forward."""
        journal = self.root / JOURNAL
        if not journal.exists():
            return False
        try:
            return json.loads(journal.read_text(encoding="utf-8")).get("transaction") == tx.id
        except json.JSONDecodeError:
            return False

    def abort(self, tx: Transaction) -> None:
        """Drop a transaction's staging area; the store stays as it was."""
        shutil.rmtree(tx.dir, ignore_errors=True)

    def _rel(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root.resolve()))

    def _apply(self, ops: list[dict[str, str]], phase: str = "commit") -> None:
        touched: set[Path] = set()
        for op in ops:
            crashpoint(f"{phase}_op")
            if op["op"] == "move":
                src, dst = self.root / op["src"], self.root / op["dst"]
                if src.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    src.replace(dst)
                    touched.add(dst.parent)
            elif op["op"] == "delete":
                path = self.root / op["path"]
                path.unlink(missing_ok=True)
                touched.add(path.parent)
                _remove_empty_parents(path.parent, stop=self.root)
            elif op["op"] == "rmtree":
                shutil.rmtree(self.root / op["path"], ignore_errors=True)
            else:
                raise StoreError(f"journal has an unknown operation {op!r}; the store is damaged")
        for d in touched:
            if d.exists():
                _fsync_path(d)


def _remove_empty_parents(path: Path, *, stop: Path) -> None:
    while path != stop and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


_PL_TYPES: dict[str, pl.DataType] = {
    "VARCHAR": pl.String(),
    "BIGINT": pl.Int64(),
    "DOUBLE": pl.Float64(),
    "DATE": pl.Date(),
    "TIME": pl.Time(),
    "BOOLEAN": pl.Boolean(),
}


def duckdb_config(*, memory_limit: str, threads: int | None, temp_directory: Path | None = None) -> dict:
    """DuckDB settings shared by every connection: bounded memory, order kept, spill directory."""
    config: dict[str, Any] = {"memory_limit": memory_limit, "preserve_insertion_order": True}
    if threads is not None:
        config["threads"] = threads
    if temp_directory is not None:
        config["temp_directory"] = str(temp_directory)
    return config


def open_store(path: str | Path, *, create: bool = False) -> Store:
    """Open a store, finishing or undoing any interrupted write first.

    Raises
    ------
    StoreError
        If ``path`` does not exist (and ``create`` is false) or is not a store.
    """
    root = Path(path)
    if not root.exists():
        if not create:
            raise StoreError(
                f"{root}: no such store; create it with `stopdisparity ingest ... --store {root}`"
            )
        root.mkdir(parents=True, exist_ok=True)  # a concurrent first ingest may create it too
    elif not root.is_dir():
        raise StoreError(f"{root}: not a directory")
    elif any(root.iterdir()) and not (root / MANIFEST).exists() and not (root / JOURNAL).exists():
        allowed = {LOCK, STAGING, "stops", "quarantine"}
        if not {p.name for p in root.iterdir()} <= allowed:
            raise StoreError(
                f"{root}: the directory holds other files and no manifest.json; "
                "point --store at an empty or existing store directory"
            )
    store = Store(root)
    needs_recovery = (root / JOURNAL).exists() or (
        (root / STAGING).is_dir() and any((root / STAGING).iterdir())
    )
    if needs_recovery:
        with store.lock():
            store.recover()
    return store
