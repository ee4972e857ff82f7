"""Tests of the store: idempotent ingest by file identity, byte-identical output, one commit point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from stopdisparity.errors import IngestError, StopDisparityError, StoreError
from stopdisparity.ingest import ingest
from stopdisparity.store import Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import COLUMNS, big_text, make_rows, opp_name, write_opp, write_text, write_zip

NC = "nc_statewide_2020_04_01.csv"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the store (relative path -> bytes), the lock file excepted."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def staging_leftovers(root: Path) -> list[str]:
    staging = root / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def stop_parts(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "stops").rglob("*.parquet"))


# -------------------------------------------------------------------------------- 5. idempotence
def test_same_file_twice_is_unchanged_and_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / NC
    write_opp(path, make_rows(30, seed=10), blank_before=(4,))
    store = tmp_path / "store"
    first = ingest([path], store)
    before = snapshot(store)
    manifest = open_store(store).manifest()
    second = ingest([path], store)
    [f] = second.files
    assert (f.status, f.rows_read, f.rows_stored, f.rows_quarantined) == ("unchanged", 0, 0, 0)
    assert f.sha256 == first.files[0].sha256
    assert snapshot(store) == before
    assert open_store(store).manifest() == manifest
    entry = manifest["sources"][NC]
    assert (entry["status"], entry["rows_read"], entry["rows_stored"]) == ("ingested", 30, 30)
    assert sorted(entry["parts"]) == stop_parts(store)


def test_changed_content_under_same_name_replaces_rows(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = tmp_path / NC
    write_text(
        path, "raw_row_number,date,subject_race\n1,2017-01-01,white\n2,2018-01-01,black\n3,2011-13-01,x\n"
    )
    r1 = ingest([path], store)
    assert (r1.files[0].rows_stored, r1.files[0].rows_quarantined) == (2, 1)
    write_text(path, "raw_row_number,date,subject_race\n10,2019-05-05,hispanic\n")
    r2 = ingest([path], store)
    [f] = r2.files
    assert (f.status, f.rows_read, f.rows_stored, f.rows_quarantined) == ("replaced", 1, 1, 0)
    st = open_store(store)
    got = st.scan().select("raw_row_number", "year", "source_file").collect()
    assert got.rows() == [("10", 2019, NC)]
    assert st.quarantine().height == 0  # the old file's rejects went with it
    assert stop_parts(store) == sorted(st.manifest()["sources"][NC]["parts"])
    assert [p.split("/")[2] for p in stop_parts(store)] == ["year=2019"]
    assert not (store / "stops" / "state=NC" / "year=2017").exists()  # no empty partition left behind
    assert st.manifest()["sources"][NC]["status"] == "replaced"
    assert st.manifest()["sources"][NC]["sha256"] == f.sha256


def test_new_name_adds_rows(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a, b = tmp_path / NC, tmp_path / "nc_durham_2019_12_17.csv"
    rows = make_rows(10, seed=11)
    write_opp(a, rows)
    write_opp(b, rows)  # same content, other identity
    ingest([a], store)
    report = ingest([a, b], store)
    assert [(f.name, f.status, f.rows_stored) for f in report.files] == [
        (NC, "unchanged", 0),
        (b.name, "ingested", 10),
    ]
    counts = open_store(store).scan().group_by("source_file").len().collect()
    assert dict(counts.rows()) == {NC: 10, b.name: 10}
    assert sorted(open_store(store).manifest()["sources"]) == sorted([NC, b.name])


def test_fresh_stores_get_byte_identical_files(tmp_path: Path) -> None:
    rows = make_rows(40, seed=12)
    inputs = []
    for fmt in ("csv", "csv.gz", "parquet"):
        p = tmp_path / opp_name(fmt, place=fmt.replace(".", ""))
        write_opp(p, rows)
        inputs.append(p)
    inputs.append(write_text(tmp_path / "nc_bad_2020_01_01.csv", "raw_row_number,date\n1,2011-13-01\n2,NA\n"))
    ingest(inputs, tmp_path / "s1")
    ingest(inputs, tmp_path / "s2", threads=1)
    one, two = snapshot(tmp_path / "s1"), snapshot(tmp_path / "s2")
    parquet = sorted(k for k in one if k.endswith(".parquet"))
    assert len(parquet) > 4 and any(k.startswith("quarantine/") for k in parquet)
    assert sorted(one) == sorted(two)
    assert {k: one[k] for k in parquet} == {k: two[k] for k in parquet}


def test_stores_of_many_row_groups_get_byte_identical_files(tmp_path: Path) -> None:
    """A parallel parse keeps each partition's rows in file order, so the files repeat byte for byte.

    300k rows over 8 years, parsed on 4 threads: DuckDB's threads finish in any order (a
    PARTITION_BY write would interleave their rows), and the stream's batches are cut anywhere.
    """
    path = write_text(tmp_path / NC, big_text(300_000, years=8))
    ingest([path], tmp_path / "s1", threads=4)
    ingest([path], tmp_path / "s2", threads=4)
    one, two = snapshot(tmp_path / "s1"), snapshot(tmp_path / "s2")
    parquet = sorted(k for k in one if k.endswith(".parquet"))
    assert len(parquet) == 8
    assert sorted(one) == sorted(two)
    assert [k for k in parquet if one[k] != two[k]] == []
    lines = open_store(tmp_path / "s1").scan().select("source_line", "year").collect()
    for _, part in lines.group_by("year"):
        assert part["source_line"].is_sorted()


def test_a_source_with_skipped_lines_stores_the_same_columns(tmp_path: Path) -> None:
    """A blank line makes the ingest rewrite the year files with corrected lines; the rewritten files
    hold the same columns as any other (not the state and year of their Hive path), so a plain
    Parquet reader reads the whole store."""
    import pyarrow.parquet as pq

    text = big_text(2_000, years=3)
    clean = write_text(tmp_path / "nc_clean_2020_01_01.csv", text)
    lines = text.splitlines(keepends=True)
    blank = write_text(tmp_path / NC, "".join([*lines[:500], "\n", *lines[500:]]))
    store = tmp_path / "store"
    [a, b] = ingest([clean, blank], store).files
    assert a.rows_stored == b.rows_stored == 2_000
    schemas = {p.name: pq.read_schema(p).names for p in (store / "stops").rglob("*.parquet")}
    assert len(schemas) == 6 and len({tuple(v) for v in schemas.values()}) == 1
    assert not {"state", "year"} & set(next(iter(schemas.values())))
    assert pq.read_table(store / "stops").num_rows == 4_000
    got = open_store(store).scan().filter(pl.col("source_file") == NC).collect()
    # record i (raw_row_number i) is line i + 1 up to the blank line 501, then one lower
    expected = got["raw_row_number"].cast(pl.Int64) + 1 + (got["raw_row_number"].cast(pl.Int64) >= 500)
    assert (got["source_line"] == expected).all()


# ------------------------------------------------------------------------------ 7. atomicity
def _bad_zip(path: Path) -> Path:
    """A zip whose .csv member is binary junk after a valid header: DuckDB cannot parse it."""
    return write_zip(path, {path.name[:-4]: b"raw_row_number,date\n" + bytes(range(256)) * 50})


def test_failing_second_file_leaves_the_store_as_before(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = tmp_path / NC
    write_opp(first, make_rows(10, seed=13))
    ingest([first], store)
    before, manifest = snapshot(store), open_store(store).manifest()
    good = tmp_path / "nc_durham_2019_12_17.csv"
    write_opp(good, make_rows(10, seed=14))
    write_opp(first, make_rows(12, seed=15))  # would be "replaced"
    bad = _bad_zip(tmp_path / "nc_junk_2020_01_01.csv.zip")
    with pytest.raises(IngestError, match="nc_junk_2020_01_01"):
        ingest([good, first, bad], store)
    assert snapshot(store) == before
    assert open_store(store).manifest() == manifest
    assert staging_leftovers(store) == []
    open_store(store)
    assert staging_leftovers(store) == []
    assert snapshot(store) == before


def test_duplicated_column_fails_without_changing_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    good = tmp_path / NC
    write_opp(good, make_rows(10, seed=16))
    ingest([good], store)
    before = snapshot(store)
    other = tmp_path / "nc_other_2020_01_01.csv"
    write_opp(other, make_rows(5, seed=17))
    dup = write_text(
        tmp_path / "nc_dup_2020_01_01.csv", "raw_row_number,date,date\n1,2017-01-01,2017-01-01\n"
    )
    with pytest.raises(StopDisparityError, match="appears twice"):
        ingest([other, dup], store)
    assert snapshot(store) == before
    assert staging_leftovers(store) == []


def test_duplicated_column_raises_ingest_error(tmp_path: Path) -> None:
    dup = write_text(
        tmp_path / "nc_dup_2020_01_01.csv", "raw_row_number,date,date\n1,2017-01-01,2017-01-01\n"
    )
    with pytest.raises(IngestError):
        ingest([dup], tmp_path / "store")


@pytest.mark.parametrize("kind", ["not_gzip", "truncated"])
def test_broken_gzip_raises_ingest_error(tmp_path: Path, kind: str) -> None:
    import gzip

    path = tmp_path / "nc_gz_2020_01_01.csv.gz"
    data = gzip.compress(b"raw_row_number,date\n" + b"1,2017-01-01\n" * 1000, mtime=0)
    path.write_bytes(b"not gzip at all" if kind == "not_gzip" else data[: len(data) // 2])
    with pytest.raises(IngestError, match="nc_gz_2020_01_01"):
        ingest([path], tmp_path / "store")
    assert stop_parts(tmp_path / "store") == []


def test_leftover_staging_from_a_crash_is_removed_on_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = tmp_path / NC
    write_opp(path, make_rows(10, seed=18))
    ingest([path], store)
    before = snapshot(store)
    crash = store / ".staging" / "0123456789abcdef"
    (crash / "stops" / "x" / "state=NC" / "year=2017").mkdir(parents=True)
    (crash / "stops" / "x" / "state=NC" / "year=2017" / "data_0.parquet").write_bytes(b"partial")
    (crash / "manifest.json").write_text("{}")
    st = open_store(store)
    assert staging_leftovers(store) == []
    assert snapshot(store) == before
    assert st.scan().collect().height == 10


def _journal_fixture(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A store holding A, a reference store holding A then B, and the reference's snapshot."""
    a, b = tmp_path / NC, tmp_path / "nc_durham_2019_12_17.csv"
    write_opp(a, make_rows(10, seed=19))
    write_text(b, "raw_row_number,date\n1,2019-03-04\n2,2011-13-01\n3,NA\n")
    ref, store = tmp_path / "ref", tmp_path / "store"
    ingest([a], ref)
    ingest([b], ref)
    ingest([a], store)
    return store, ref, snapshot(ref)


def test_committed_journal_is_rolled_forward_on_open(tmp_path: Path) -> None:
    """A crash after the journal rename (the commit point) but before its operations ran."""
    store, _ref, after = _journal_fixture(tmp_path)
    tx = "feedfacecafebeef"
    staging = store / ".staging" / tx
    ops = []
    new_files = [k for k in after if k.startswith(("stops/", "quarantine/")) and k not in snapshot(store)]
    assert len(new_files) == 3  # B: year=2019, NULL year, one quarantine file
    for n, rel in enumerate(new_files):
        src = staging / f"part{n}.parquet"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(after[rel])
        ops.append({"op": "move", "src": src.relative_to(store).as_posix(), "dst": rel})
    (staging / "manifest.json").write_bytes(after["manifest.json"])
    ops.append({"op": "move", "src": f".staging/{tx}/manifest.json", "dst": "manifest.json"})
    ops.append({"op": "rmtree", "path": f".staging/{tx}"})
    (store / "journal.json").write_text(json.dumps({"transaction": tx, "operations": ops}))
    # part of the journal already applied before the crash: the operations are idempotent
    first = store / ops[0]["dst"]
    first.parent.mkdir(parents=True, exist_ok=True)
    (store / ops[0]["src"]).replace(first)

    st = open_store(store)
    assert not (store / "journal.json").exists()
    assert staging_leftovers(store) == []
    assert snapshot(store) == after
    assert st.scan().collect().height == 12


def test_committed_journal_deletes_replaced_parts(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = tmp_path / NC
    write_text(path, "raw_row_number,date\n1,2017-01-01\n")
    ingest([path], store)
    [old] = stop_parts(store)
    manifest = open_store(store).manifest()
    manifest["sources"] = {}
    tx = "00000000deadbeef"
    (store / ".staging" / tx).mkdir(parents=True)
    (store / ".staging" / tx / "manifest.json").write_text(json.dumps(manifest))
    ops = [
        {"op": "delete", "path": old},
        {"op": "move", "src": f".staging/{tx}/manifest.json", "dst": "manifest.json"},
        {"op": "rmtree", "path": f".staging/{tx}"},
    ]
    (store / "journal.json").write_text(json.dumps({"transaction": tx, "operations": ops}))
    st = open_store(store)
    assert stop_parts(store) == []
    assert not (store / "stops" / "state=NC").exists()
    assert st.manifest()["sources"] == {}
    assert not st.has_stops()
    with pytest.raises(StoreError, match="no stops"):
        st.scan()


def test_unknown_journal_operation_is_reported(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = tmp_path / NC
    write_text(path, "raw_row_number,date\n1,2017-01-01\n")
    ingest([path], store)
    (store / "journal.json").write_text(json.dumps({"transaction": "x", "operations": [{"op": "chmod"}]}))
    with pytest.raises(StoreError, match="unknown operation"):
        open_store(store)


def test_failure_after_the_commit_point_still_leaves_before_or_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ref = tmp_path / "store", tmp_path / "ref"
    path = tmp_path / NC
    write_text(path, "raw_row_number,date\n1,2017-01-01\n2,2018-01-01\n")
    ingest([path], store)
    ingest([path], ref)
    before = snapshot(store)
    write_text(path, "raw_row_number,date\n1,2019-01-01\n2,2020-01-01\n")
    ingest([path], ref)
    after = snapshot(ref)

    real_apply = Store._apply

    def apply_first_op_then_fail(self: Store, ops: list[dict[str, str]]) -> None:
        real_apply(self, ops[:1])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "_apply", apply_first_op_then_fail)
    with pytest.raises(OSError, match="No space"):
        ingest([path], store)
    monkeypatch.setattr(Store, "_apply", real_apply)
    open_store(store)
    now = snapshot(store)
    assert now in (before, after), sorted(now)


def test_open_store_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="no manifest"):
        open_store(tmp_path / "d")
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing")


def test_store_views_agree(tmp_path: Path) -> None:
    path = tmp_path / NC
    write_opp(path, make_rows(25, seed=20))
    ingest([path], tmp_path / "store")
    st = open_store(tmp_path / "store")
    con = st.connect()
    duck = con.execute(
        "SELECT source_line, date, lat, arrest_made, year FROM stops ORDER BY source_line"
    ).fetchall()
    lazy = st.scan().sort("source_line").select("source_line", "date", "lat", "arrest_made", "year").collect()
    assert duck == lazy.rows()
    raw = con.execute(
        "SELECT count(*) FROM read_parquet($g, hive_partitioning = true)", {"g": st.stops_glob}
    ).fetchone()
    assert raw == (25,)
    assert set(COLUMNS) <= set(st.scan().collect_schema().names())
    assert st.scan().select(pl.len()).collect().item() == 25


# ------------------------------------------------------------------ durability before the commit
def test_staged_files_are_fsynced_before_the_commit_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power-loss safety: every published file and its staging directory reach the disk before the
    journal rename (a SIGKILL cannot lose written pages; a power cut can)."""
    import os

    from stopdisparity import store as store_mod

    events: list[tuple[str, str]] = []
    real_fsync, real_crashpoint = os.fsync, store_mod.crashpoint

    def fsync(fd: int) -> None:
        events.append(("fsync", str(Path(f"/proc/self/fd/{fd}").readlink())))
        real_fsync(fd)

    def crashpoint(name: str) -> None:
        events.append(("point", name))
        real_crashpoint(name)

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    monkeypatch.setattr(store_mod, "crashpoint", crashpoint)
    path = tmp_path / NC
    write_text(
        path, "raw_row_number,date,subject_race\n1,2017-01-01,white\n2,2018-01-01,black\n3,2011-13-01,x\n"
    )
    root = tmp_path / "store"
    ingest([path], root)
    commit = events.index(("point", "before_journal_rename"))
    synced = {p for kind, p in events[:commit] if kind == "fsync"}
    published = [p.relative_to(root) for p in root.rglob("*.parquet")]
    assert any(p.parts[0] == "quarantine" for p in published)  # the quarantine is published too
    staged = [p for p in synced if "/.staging/" in p and p.endswith(".parquet")]
    assert len(staged) == len(published) >= 2, (staged, published)
    assert {Path(p).parent.as_posix() for p in staged} <= synced  # their directories as well
