"""Kill-safety of the store, proven (issue 7 §2): SIGKILL an ingest anywhere, the store is before or after.

Each test runs ``stopdisparity.ingest.ingest`` in a subprocess that kills itself with SIGKILL at a named
crash point (the test hook ``STOPDISPARITY_CRASHPOINT``, see :mod:`stopdisparity.store`) or is killed
by the parent at a random time, lets the next command recover the store (``open_store``, a re-run of
the ingest, or ``stopdisparity summary``), and then compares the store with stores built by
uninterrupted runs: the rows (``read_parquet('DIR/stops/**/*.parquet', hive_partitioning=true)``,
sorted), the quarantine, ``manifest.json`` and every file's bytes must equal exactly the before or
the after state. Also: two concurrent ingests are serialised by the lock and both land; a full disk
(a real tmpfs in a user namespace, 64 KiB to spare, and a patched write) gives a clear error
and the before state.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import stopdisparity.store as store_module
from stopdisparity.errors import IngestError, StoreError
from stopdisparity.ingest import ingest
from stopdisparity.store import CRASHPOINTS, Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import csv_text, make_rows, write_opp, write_text

# one worker runs the module: its module fixtures (the stores, every crash case's subprocesses) are built
# once, not once per xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("kill_safety")]

A = "nc_statewide_2020_04_01.csv"  # replaced: same base name, new content
B = "nc_durham_2019_12_17.csv.zip"  # a zip member (read through a pipe)
C = "nc_raleigh_2020_01_01.csv.gz"

DRIVER = """
import sys
from stopdisparity.errors import IngestError, StoreError
from stopdisparity.ingest import ingest
try:
    ingest(sys.argv[2:], sys.argv[1])
except IngestError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
"""
RECOVER = "import sys\nfrom stopdisparity.store import open_store\nopen_store(sys.argv[1])\n"


# ---------------------------------------------------------------------------------------- helpers
def _env(crash: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STOPDISPARITY_CRASHPOINT"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    if crash is not None:
        env["STOPDISPARITY_CRASHPOINT"] = crash
    return env


def run_python(code: str, *args: Path, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a separate process, so SIGKILL ends only it)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=_env(crash),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_ingest(store: Path, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(store), *map(str, files)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sorted_parquet(pattern: str, hive: bool) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        rel = con.read_parquet(pattern, hive_partitioning=hive, union_by_name=True)
        frame = rel.pl()
    finally:
        con.close()
    frame = frame.select(sorted(frame.columns))
    return frame.sort(frame.columns, nulls_last=True)


@dataclass(frozen=True)
class StoreState:
    """What a reader sees in a store: sorted rows, sorted quarantine, manifest text, every file."""

    rows: pl.DataFrame | None
    quarantine: pl.DataFrame | None
    manifest: str | None
    files: dict[str, bytes]

    def same_as(self, other: StoreState) -> bool:
        def frames_equal(a: pl.DataFrame | None, b: pl.DataFrame | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and a.equals(b))

        return (
            frames_equal(self.rows, other.rows)
            and frames_equal(self.quarantine, other.quarantine)
            and self.manifest == other.manifest
            and self.files == other.files
        )


def state(root: Path) -> StoreState:
    """The store as a reader sees it; ``.lock`` and empty directories do not count."""
    files = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }
    rows = quarantine = None
    if any(k.startswith("stops/") for k in files):
        rows = _sorted_parquet(str(root / "stops" / "**" / "*.parquet"), hive=True)
    if any(k.startswith("quarantine/") for k in files):
        quarantine = _sorted_parquet(str(root / "quarantine" / "*.parquet"), hive=False)
    manifest = files.get("manifest.json")
    return StoreState(rows, quarantine, None if manifest is None else manifest.decode(), files)


def which(root: Path, before: StoreState, after: StoreState) -> str:
    """'before' or 'after': which reference state the recovered store equals (fails otherwise)."""
    now = state(root)
    assert not (root / "journal.json").exists()
    assert not (root / ".staging").exists() or not any((root / ".staging").iterdir())
    if now.same_as(after):
        return "after"
    if now.same_as(before):
        return "before"
    extra = sorted(set(now.files) - set(after.files) - set(before.files))
    rows = None if now.rows is None else now.rows.height
    raise AssertionError(
        f"neither before nor after: rows={rows}, files not in either {extra}, "
        f"missing from before {sorted(set(before.files) - set(now.files))}, "
        f"missing from after {sorted(set(after.files) - set(now.files))}"
    )


# --------------------------------------------------------------------------------------- fixtures
def _rows_with_rejects(n: int, seed: int) -> list[dict[str, Any]]:
    rows = make_rows(n, seed=seed)
    rows[5]["date"] = "2011-13-01"  # type_cast: the quarantine gets a row
    rows[9]["subject_race"] = "purple"  # enum
    return rows


@dataclass(frozen=True)
class World:
    """Input files, and reference stores built by uninterrupted runs with their states."""

    root: Path
    a1: Path
    a2: Path
    b: Path
    c: Path
    base: Path  # A (first version) ingested: the "before" of the replacing ingest
    replaced: Path  # base, then [A (second version), B, C]: its "after"
    fresh: Path  # [A (first version), B] into a new store: the "after" of a first ingest
    n_moves: int  # operations of the replacing ingest's journal: moves, then deletions, manifest, rmtree
    n_deletes: int
    states: dict[str, StoreState]  # "empty", "base", "replaced", "fresh", "bc"

    def scenario(self, first_ingest: bool) -> tuple[Path | None, list[Path], StoreState, StoreState]:
        """(store to start from or None, files to ingest, before state, after state)."""
        if first_ingest:
            return None, [self.a1, self.b], self.states["empty"], self.states["fresh"]
        return self.base, [self.a2, self.b, self.c], self.states["base"], self.states["replaced"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("kill")
    (root / "v1").mkdir()
    (root / "v2").mkdir()
    (root / "empty").mkdir()
    a1, a2 = root / "v1" / A, root / "v2" / A
    write_opp(a1, _rows_with_rejects(400, seed=1))
    write_opp(a2, _rows_with_rejects(300, seed=2))
    b, c = root / B, root / C
    write_opp(b, make_rows(300, seed=3))
    write_text(c, csv_text(_rows_with_rejects(300, seed=4)).text + "1,2\n")  # + a field_count reject
    base, replaced, fresh = root / "base", root / "replaced", root / "fresh"
    ingest([a1], base)
    shutil.copytree(base, replaced)
    report = ingest([a2, b, c], replaced)
    assert [f.status for f in report.files] == ["replaced", "ingested", "ingested"]
    ingest([a1, b], fresh)
    ingest([b], root / "bc")  # the two ingests of the concurrency tests, one after the other
    ingest([c], root / "bc")
    old, new = (
        json.loads((base / "manifest.json").read_text()),
        json.loads((replaced / "manifest.json").read_text()),
    )
    assert len(new["sources"]) == 3  # every source of the store was written by the replacing ingest
    n_moves = sum(len(e["parts"]) + bool(e["quarantine"]) for e in new["sources"].values())
    n_deletes = len(old["sources"][A]["parts"]) + bool(old["sources"][A]["quarantine"])
    assert n_moves >= 6 and n_deletes >= 2  # several partitions each, so "between renames" means something
    states = {name: state(root / name) for name in ("empty", "base", "replaced", "fresh", "bc")}
    assert not states["base"].same_as(states["replaced"]) and not states["empty"].same_as(states["fresh"])
    return World(root, a1, a2, b, c, base, replaced, fresh, n_moves, n_deletes, states)


# ------------------------------------------------------------------------------ 1. crash points
@dataclass(frozen=True)
class Case:
    crash: str  # STOPDISPARITY_CRASHPOINT of the killed ingest
    expect: str  # "before" or "after"
    recover_by: str = "open"  # open | rerun | summary | crash (a recovery killed at `recover_crash`)
    first_ingest: bool = False  # into a new store (else: replacing A, adding B and C)
    recover_crash: str | None = None

    @property
    def id(self) -> str:
        how = self.recover_crash if self.recover_by == "crash" else self.recover_by
        return f"{self.crash}-{how}{'-new' if self.first_ingest else ''}"


def _point(world: World, spec: str) -> str:
    """Resolve symbolic operation numbers: ``commit_op#first_delete`` etc."""
    name, _, nth = spec.partition("#")
    table = {
        "first_delete": world.n_moves + 1,  # every new file moved in, no old one deleted
        "manifest_move": world.n_moves + world.n_deletes + 1,  # old rows gone, old manifest still in place
        "rmtree": world.n_moves + world.n_deletes + 2,
        "mid_moves": world.n_moves // 2 + 1,
    }
    return f"{name}#{table.get(nth, nth)}" if nth else name


CASES = [
    Case("parse#1", "before"),  # parsing the first file (the replacing version of A)
    Case("parse#2", "before", recover_by="summary"),  # parsing the zip member, A staged
    Case("after_parse#3", "before"),  # the .csv.gz parsed, A and the zip staged
    Case("after_stage_stops#2", "before"),
    Case("after_stage_source#1", "before", recover_by="rerun"),
    Case("before_commit", "before"),
    Case("manifest.json_partial", "before"),
    Case("manifest.json_written", "before"),
    Case("journal.json_partial", "before"),
    # the next three also kill the recovery (a command of its own), then a later command finishes it
    Case("before_journal_rename", "before", recover_by="crash", recover_crash="recover_before_rmtree"),
    Case("after_journal_rename", "after", recover_by="crash", recover_crash="recover_op#first_delete"),
    Case("commit_op#mid_moves", "after", recover_by="crash", recover_crash="recover_before_journal_unlink"),
    Case("commit_op#first_delete", "after"),  # old and new rows both on disk: the worst mix
    Case("commit_op#manifest_move", "after", recover_by="rerun"),
    Case("commit_op#rmtree", "after"),
    Case("before_journal_unlink", "after"),
    Case("parse#2", "before", first_ingest=True),
    Case("commit_op#2", "after", first_ingest=True),
]


@dataclass(frozen=True)
class Crashed:
    store: Path
    files: list[Path]
    runs: list[subprocess.CompletedProcess[str]]  # the killed ingest, then the recovering command


def _crash(world: World, case: Case, work: Path) -> Crashed:
    """Run one case's subprocesses: the killed ingest, and the recovery if it is a command of its own."""
    start, files, _, _ = world.scenario(case.first_ingest)
    store = work / "store"
    if start is not None:
        shutil.copytree(start, store)
    runs = [run_python(DRIVER, store, *files, crash=_point(world, case.crash))]
    if case.recover_by == "summary":
        exe = Path(sys.executable).with_name("stopdisparity")
        cmd = [str(exe), "summary", "--store", str(store), "--json"]
        runs.append(subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120))
    elif case.recover_by == "crash":
        runs.append(run_python(RECOVER, store, crash=_point(world, case.recover_crash or "")))
    return Crashed(store, files, runs)


@pytest.fixture(scope="module")
def crashed(world: World) -> dict[str, Crashed]:
    """Every case's subprocesses, run a few at a time (they mostly wait for imports and the disk)."""
    from concurrent.futures import ThreadPoolExecutor

    works = {case.id: world.root / "cases" / f"{n:02d}" for n, case in enumerate(CASES)}
    for work in works.values():
        work.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case.id: pool.submit(_crash, world, case, works[case.id]) for case in CASES}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sigkill_at_a_crash_point_leaves_before_or_after(
    world: World, crashed: dict[str, Crashed], case: Case
) -> None:
    run = crashed[case.id]
    _, files, before, after = world.scenario(case.first_ingest)
    killed = run.runs[0]
    assert killed.returncode == -signal.SIGKILL, f"the crash point was not reached: {killed.stderr[-2000:]}"
    expect = case.expect
    if case.recover_by == "summary":  # the CLI recovered the store, then counted what it holds
        done = run.runs[1]
        assert done.returncode == 0, done.stderr
        stops = sum(r["stops"] for r in json.loads(done.stdout))
        assert which(run.store, before, after) == expect
        assert stops == open_store(run.store).scan().select(pl.len()).collect().item()
    elif case.recover_by == "crash":
        again = run.runs[1]
        assert again.returncode == -signal.SIGKILL, f"recovery missed its crash point: {again.stderr[-2000:]}"
        assert (run.store / "journal.json").exists() == (expect == "after")  # recovery was interrupted
        open_store(run.store)
    elif case.recover_by == "rerun":  # the re-run recovers, then finishes the ingest if it was lost
        ingest(files, run.store)
        expect = "after"
    else:
        open_store(run.store)
    assert which(run.store, before, after) == expect


def test_every_crash_point_is_exercised() -> None:
    used = {c.crash.partition("#")[0] for c in CASES}
    used |= {c.recover_crash.partition("#")[0] for c in CASES if c.recover_crash}
    assert used == set(CRASHPOINTS)


def _run_until_staging(store: Path, files: list[Path]) -> tuple[subprocess.Popen[str], float]:
    """Start an ingest and wait until it has begun its transaction (imports and hashing done)."""
    proc = start_ingest(store, files)
    deadline = time.monotonic() + 60
    while not any((store / ".staging").glob("*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return proc, time.monotonic()


def test_random_sigkill_leaves_before_or_after(world: World, tmp_path: Path) -> None:
    """Kills from the parent at random times (seeded) across the part of the ingest that writes.

    An uninterrupted run first measures how long that part takes here (and must give the after state).
    """
    start, files, before, after = world.scenario(first_ingest=False)
    assert start is not None
    shutil.copytree(start, tmp_path / "whole")
    proc, began = _run_until_staging(tmp_path / "whole", files)
    assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    span = time.monotonic() - began
    assert which(tmp_path / "whole", before, after) == "after"
    outcomes = []
    for seed in (1, 5, 2):  # kill at 13%, 62% and 96% of the span
        store = tmp_path / f"seed{seed}"
        shutil.copytree(start, store)
        proc, _ = _run_until_staging(store, files)
        time.sleep(random.Random(seed).uniform(0.0, span))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        open_store(store)
        outcome = which(store, before, after)
        assert outcome == "after" if proc.returncode == 0 else outcome in ("before", "after")
        outcomes.append((proc.returncode, outcome))
    print(f"random kills within {span:.2f} s (exit code, state):", outcomes)


# -------------------------------------------------------------------------------- 2. concurrency
def _blocked_on_flock(pids: list[int]) -> bool:
    """Whether every process in ``pids`` waits for an flock (Linux: a ``->`` line of /proc/locks)."""
    waiting = {int(line.split()[5]) for line in Path("/proc/locks").read_text().splitlines() if "->" in line}
    return set(pids) <= waiting


def test_two_concurrent_ingests_are_serialised_and_both_land(world: World, tmp_path: Path) -> None:
    store = tmp_path / "store"
    # the test holds the writer lock: both ingests must wait for it, then race each other for it
    with Store(store).lock():
        procs = [start_ingest(store, [world.b]), start_ingest(store, [world.c])]
        if Path("/proc/locks").exists():
            deadline = time.monotonic() + 60
            while not _blocked_on_flock([p.pid for p in procs]) and time.monotonic() < deadline:
                assert all(p.poll() is None for p in procs), "an ingest ended while the lock was held"
                time.sleep(0.01)
            assert _blocked_on_flock([p.pid for p in procs]), "the ingests never waited for the lock"
        else:
            time.sleep(1.0)
        assert [p.poll() for p in procs] == [None, None], "an ingest did not wait for the lock"
        assert not any((store / ".staging").glob("*")), "an ingest wrote while another held the lock"
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert state(store).same_as(world.states["bc"])  # as if one ran after the other
    assert sorted(open_store(store).manifest()["sources"]) == [B, C]


def test_open_store_tolerates_a_concurrent_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another ingest creates the directory between open_store's existence check and its mkdir."""
    store = tmp_path / "store"
    real_exists = Path.exists

    def racing_exists(self: Path, *args: Any, **kwargs: Any) -> bool:
        if self == store and not real_exists(self):
            self.mkdir()  # the other process wins the race
            return False
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", racing_exists)
    assert open_store(store, create=True).root == store


# -------------------------------------------------------------------------------- 3. disk full
def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs /mnt",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def test_disk_full_on_a_real_small_filesystem(world: World, tmp_path: Path) -> None:
    """A tmpfs (mounted in a user namespace) holding the store with 64 KiB to spare fills up while staging.

    The replacing file's Parquet needs about 300 KiB, so DuckDB's write fails with ENOSPC.
    """
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    big = tmp_path / "nc_statewide_2020_04_01.csv"
    write_opp(big, make_rows(5000, seed=9))
    pages = sum(-(-p.stat().st_size // 4096) + 1 for p in world.base.rglob("*")) + 64 // 4  # files and dirs
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    script = (
        f'set -e; mount -t tmpfs -o size={pages * 4}k tmpfs "$1"; cp -a "$2" "$1/store"; '
        f'{sys.executable} -c "$3" "$1/store" "$4" > "$1/../ingest.out" 2>&1 '
        '|| echo "rc=$?" >> "$1/../ingest.out"; '
        'cp -a "$1/store" "$7"; '  # as the failed ingest left it
        f'{sys.executable} -c "$5" "$1/store"; cp -a "$1/store" "$6"'  # after the next command
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
         str(mnt), str(world.base), DRIVER, str(big), RECOVER, str(out), str(tmp_path / "left")],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    message = (tmp_path / "ingest.out").read_text()
    assert message.rstrip().endswith("rc=3"), message  # an IngestError, not a traceback
    assert "disk is full (No space left on device)" in message
    assert f"{mnt}/store" in message and "Free space" in message and "re-run" in message
    assert state(tmp_path / "left").same_as(world.states["base"])  # the ingest cleaned up after itself
    assert not any((tmp_path / "left" / ".staging").glob("*"))
    assert state(out).same_as(world.states["base"])


def test_disk_full_while_writing_the_manifest(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(world.base, store)
    real = store_module.write_json_atomic

    def full(path: Path, payload: Any) -> None:
        if path.name == "manifest.json":
            path.with_name(".partial").write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, payload)

    monkeypatch.setattr(store_module, "write_json_atomic", full)
    with pytest.raises(IngestError, match="disk is full") as info:
        ingest(world.scenario(first_ingest=False)[1], store)
    text = str(info.value)
    assert (
        str(store) in text
        and "Free space" in text
        and "re-run" in text
        and "store is exactly as it was" in text
    )
    assert not (store / ".staging").exists() or not any((store / ".staging").iterdir())
    monkeypatch.setattr(store_module, "write_json_atomic", real)
    open_store(store)
    assert state(store).same_as(state(world.base))


def test_disk_full_after_the_commit_point_says_the_next_command_finishes(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(world.base, store)
    real = Store._apply

    def full(self: Store, ops: list[dict[str, str]], phase: str = "commit") -> None:
        real(self, ops[:2], phase)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Store, "_apply", full)
    with pytest.raises(OSError, match="No space left") as info:
        ingest(world.scenario(first_ingest=False)[1], store)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert str(store) in notes and "committed" in notes and "free space" in notes
    monkeypatch.setattr(Store, "_apply", real)
    open_store(store)
    assert state(store).same_as(world.states["replaced"])


def test_disk_full_during_recovery_is_a_store_error_and_the_next_command_finishes(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(world.base, store)
    real = Store._apply

    def crash_after_commit(self: Store, ops: list[dict[str, str]], phase: str = "commit") -> None:
        raise KeyboardInterrupt  # past the commit point: the journal stays for recovery

    def full(self: Store, ops: list[dict[str, str]], phase: str = "commit") -> None:
        real(self, ops[:3], phase)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Store, "_apply", crash_after_commit)
    with pytest.raises(KeyboardInterrupt):
        ingest(world.scenario(first_ingest=False)[1], store)
    monkeypatch.setattr(Store, "_apply", full)
    with pytest.raises(StoreError, match="disk is full") as info:
        open_store(store)
    assert str(store) in str(info.value) and "free space" in str(info.value)
    assert (store / "journal.json").exists()
    monkeypatch.setattr(Store, "_apply", real)
    open_store(store)
    assert state(store).same_as(world.states["replaced"])
