"""Edge cases of input files (issue 7 §3): empty, header-only, CRLF, BOM, duplicates, zip oddities.

Each case ends either in a correct result or in an :class:`IngestError` that names the file and says
what to do; after an error the store is byte for byte what it was before. Inputs are written here in
the exact OPP format by ``opp_files``; broken archives are made by patching a valid one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import shutil
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from stopdisparity.errors import IngestError
from stopdisparity.ingest import IngestReport, ingest
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import (
    COLUMNS,
    csv_text,
    expected_county_fips,
    expected_frame,
    make_rows,
    opp_name,
    write_bytes,
    write_opp,
    write_text,
    write_zip,
)

TEXT_FORMATS = ("csv", "csv.gz", "csv.zip")
HEADER = "raw_row_number,date"
SMALL = f"{HEADER}\n1,2017-01-01\n2,2018-01-01\n"
OTHER = f"{HEADER}\n5,2020-02-02\n"  # not the baseline's bytes
BASELINE = "nc_baseline_2019_01_01.csv"

# Advice an error must give: what to do about the file (and that nothing changed).
ADVICE = r"download (it|the file) again|leave it out|unzip it|re-zip|put the file"


# ------------------------------------------------------------------------------------------ helpers
def assert_reconciled(report: IngestReport) -> None:
    """Every source's rows are stored or quarantined, and the reasons add up."""
    for f in report.files:
        assert f.rows_read == f.rows_stored + f.rows_quarantined, f
        assert sum(f.quarantine_reasons.values()) == f.rows_quarantined, f


def snapshot(store: Path) -> dict[str, str]:
    """SHA-256 of every file under the store (but the lock file), by relative path."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def store_with_baseline(tmp_path: Path) -> Path:
    """A store already holding one small source, so an error has something to leave intact."""
    store = tmp_path / "store"
    ingest([write_text(tmp_path / BASELINE, SMALL)], store)
    return store


def assert_refused(paths: list[Path], store: Path, *, names: list[str], match: str = ADVICE) -> str:
    """Ingesting ``paths`` raises an IngestError naming ``names`` and advising; the store is unchanged."""
    before = snapshot(store)
    with pytest.raises(IngestError) as info:
        ingest(paths, store)
    message = str(info.value)
    for name in names:
        assert name in message, message
    assert "store is unchanged" in message, message
    assert re.search(match, message), message
    assert snapshot(store) == before
    assert not any((store / ".staging").iterdir())
    return message


def patch_member_header(path: Path, *, flag_bits: int = 0, method: int | None = None) -> Path:
    """Set general-purpose flag bits and/or the compression method of every member, in both the
    local headers and the central directory (as an encrypting or deflate64 zip tool writes them)."""
    data = bytearray(path.read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        while start >= 0:
            (flags,) = struct.unpack_from("<H", data, start + flags_at)
            struct.pack_into("<H", data, start + flags_at, flags | flag_bits)
            if method is not None:
                struct.pack_into("<H", data, start + flags_at + 2, method)
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))
    return path


def local_extra_ids(path: Path, info: zipfile.ZipInfo) -> list[int]:
    """Header ids of the extra fields in a member's local header (1 = zip64)."""
    data = path.read_bytes()
    start = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
    extra = data[start + 30 + name_len : start + 30 + name_len + extra_len]
    ids, pos = [], 0
    while pos + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, pos)
        ids.append(header_id)
        pos += 4 + size
    return ids


def incompressible_csv(n: int, seed: int = 0) -> bytes:
    """A CSV of ``n`` rows with random hex notes: several MiB that compress poorly."""
    rng = random.Random(seed)
    lines = [f"{HEADER},raw_notes\n"] + [f"{i},2019-01-01,{rng.getrandbits(64):016x}\n" for i in range(n)]
    return "".join(lines).encode()


# --------------------------------------------------------------------------------- empty files
def _empty_plain(tmp_path: Path, fmt: str) -> Path:
    """An empty CSV text in ``fmt`` (a valid gzip stream or archive member holding 0 bytes)."""
    return write_bytes(tmp_path / opp_name(fmt, place="empty"), b"")


def _zero_bytes(tmp_path: Path, name: str) -> Path:
    """A file of 0 bytes on disk (not even a gzip header or a zip directory): a failed download."""
    path = tmp_path / name
    path.write_bytes(b"")
    return path


EMPTY_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "csv": lambda t: (_empty_plain(t, "csv"), "nc_empty_2020_04_01.csv"),
    "csv.gz": lambda t: (_empty_plain(t, "csv.gz"), "nc_empty_2020_04_01.csv.gz"),
    "csv.zip": lambda t: (_empty_plain(t, "csv.zip"), "nc_empty_2020_04_01.csv.zip"),
    "zip member among others": lambda t: (
        write_zip(t / "nc_multi_2020_04_01.zip", {"a.csv": SMALL, "b.csv": b""}),
        "nc_multi_2020_04_01.zip!b.csv",
    ),
    "only a BOM and CRLF": lambda t: (
        write_bytes(t / "nc_bom_2020_04_01.csv", b"\xef\xbb\xbf\r\n"),
        "nc_bom_2020_04_01.csv",
    ),
    "0-byte .csv.gz": lambda t: (_zero_bytes(t, "nc_zero_2020_04_01.csv.gz"), "nc_zero_2020_04_01.csv.gz"),
    "0-byte .zip": lambda t: (_zero_bytes(t, "nc_zero_2020_04_01.csv.zip"), "nc_zero_2020_04_01.csv.zip"),
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_empty_file_is_refused_with_advice_and_the_store_unchanged(tmp_path: Path, case: str) -> None:
    store = store_with_baseline(tmp_path)
    path, name = EMPTY_CASES[case](tmp_path)
    message = assert_refused([path], store, names=[name])
    assert "empty" in message


def test_empty_file_aborts_the_whole_call(tmp_path: Path) -> None:
    """A good file passed with an empty one is not ingested either: one commit point per call."""
    store = store_with_baseline(tmp_path)
    good = write_text(tmp_path / "nc_good_2020_04_01.csv", OTHER)
    empty = _empty_plain(tmp_path, "csv")
    assert_refused([good, empty], store, names=[empty.name])
    assert "nc_good_2020_04_01.csv" not in open_store(store).manifest()["sources"]


# ------------------------------------------------------------------------------- header only
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize("ending", ["\n", "\r\n", ""], ids=["lf", "crlf", "no-newline"])
def test_header_only_file_is_a_source_with_zero_rows(tmp_path: Path, fmt: str, ending: str) -> None:
    store = store_with_baseline(tmp_path)
    path = write_text(tmp_path / opp_name(fmt, place="hdr"), "\ufeff" + ",".join(COLUMNS) + ending)
    report = ingest([path], store)
    [f] = report.files
    assert (f.name, f.status, f.rows_read, f.rows_stored, f.rows_quarantined) == (
        path.name,
        "ingested",
        0,
        0,
        0,
    )
    entry = open_store(store).manifest()["sources"][path.name]
    assert (entry["rows_read"], entry["parts"], entry["quarantine"]) == (0, [], None)
    assert entry["columns"] == list(COLUMNS)
    stored = open_store(store).scan().collect()
    assert stored["source_file"].unique().to_list() == [BASELINE]
    assert [g.status for g in ingest([path], store).files] == ["unchanged"]


# ----------------------------------------------------------------------------------- CRLF, BOM
@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@pytest.mark.parametrize(
    ("newline", "bom"),
    [("\r\n", False), ("\n", True), ("\r\n", True), (("\r\n", "\n", "\n", "\r\n"), False)],
    ids=["crlf", "bom", "crlf+bom", "mixed"],
)
def test_crlf_and_bom_give_exactly_the_lf_rows(
    tmp_path: Path, fmt: str, newline: str | tuple[str, ...], bom: bool
) -> None:
    """Every value (the last column's included: no stray ``\\r``), the line numbers and the counts; a
    file mixing LF and CRLF (DuckDB detects one per file) too: the feeder writes each record-ending
    CRLF as LF."""
    rows = make_rows(30, seed=11)
    doc = csv_text(rows, newline=newline, bom=bom, blank_before=(0, 7))
    path = write_text(tmp_path / opp_name(fmt, place="windows"), doc.text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    [f] = report.files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (30, 30, 0)
    got = open_store(tmp_path / "store").scan().sort("source_line").collect()
    assert got["source_line"].to_list() == doc.lines
    assert got["county_fips"].to_list() == expected_county_fips(rows)
    exp = expected_frame(rows)
    assert_frame_equal(got.select(exp.columns), exp)
    assert list(COLUMNS)[-1] == "agency_code"  # a string column last: a kept "\r" would show


def test_crlf_inside_a_quoted_field_is_data(tmp_path: Path) -> None:
    """Only record-ending CRLFs are normalised: one inside a quoted value is kept, byte for byte."""
    rows = make_rows(3, seed=14)
    rows[1] = dict(rows[1], location="Exit 12\r\nI-40 W")
    doc = csv_text(rows, newline=("\r\n", "\n"))
    path = write_text(tmp_path / opp_name("csv", place="quoted"), doc.text)
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    got = open_store(tmp_path / "store").scan().sort("source_line").collect()
    assert got["location"].to_list()[1] == "Exit 12\r\nI-40 W"
    assert got["source_line"].to_list() == doc.lines


# ------------------------------------------------------------------------ one file, two names
# Decision: identity is the base name (DESIGN.md), so the same file under two names is two sources,
# both stored; the report names the other source in ``same_file_as`` and the ingest logs a warning.
def test_same_file_under_two_names_in_one_call_is_stored_twice_and_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_with_baseline(tmp_path)
    first = write_text(tmp_path / "nc_statewide_2020_04_01.csv", OTHER)
    copy = tmp_path / "nc_statewide_copy_2020_04_01.csv"
    shutil.copyfile(first, copy)
    with caplog.at_level("WARNING", logger="stopdisparity.ingest"):
        report = ingest([first, copy], store)
    assert_reconciled(report)
    assert [(f.name, f.status, f.rows_stored, f.same_file_as) for f in report.files] == [
        (first.name, "ingested", 1, [copy.name]),
        (copy.name, "ingested", 1, [first.name]),
    ]
    assert "every stop twice" in caplog.text and copy.name in caplog.text
    counts = open_store(store).scan().group_by("source_file").len().collect()
    assert dict(counts.rows()) == {BASELINE: 2, first.name: 1, copy.name: 1}
    assert json.loads(json.dumps(report.to_json()))["files"][0]["same_file_as"] == [copy.name]
    manifest = open_store(store).manifest()["sources"]  # the flag is kept with the sources
    assert (manifest[first.name]["same_file_as"], manifest[copy.name]["same_file_as"]) == (
        [copy.name],
        [first.name],
    )
    assert manifest[BASELINE]["same_file_as"] == []


def test_same_file_already_stored_under_another_name_is_flagged(tmp_path: Path) -> None:
    store = store_with_baseline(tmp_path)
    copy = tmp_path / "nc_renamed_2019_01_01.csv"
    shutil.copyfile(tmp_path / BASELINE, copy)
    [f] = ingest([copy], store).files
    assert (f.status, f.rows_stored, f.same_file_as) == ("ingested", 2, [BASELINE])
    [again] = ingest([copy], store).files  # unchanged: nothing written, nothing to flag
    assert (again.status, again.same_file_as) == ("unchanged", [])
    assert open_store(store).manifest()["sources"][copy.name]["same_file_as"] == [BASELINE]


def test_members_of_one_archive_are_not_flagged_but_a_copy_of_it_is(tmp_path: Path) -> None:
    store = tmp_path / "store"
    archive = write_zip(tmp_path / "nc_multi_2020_04_01.zip", {"a.csv": SMALL, "b.csv": OTHER})
    report = ingest([archive], store)  # members of one archive share its sha256
    assert [(f.rows_stored, f.same_file_as) for f in report.files] == [(2, []), (1, [])]
    copy = tmp_path / "nc_multi_copy_2020_04_01.zip"
    shutil.copyfile(archive, copy)
    report = ingest([copy], store)
    stored_members = ["nc_multi_2020_04_01.zip!a.csv", "nc_multi_2020_04_01.zip!b.csv"]
    assert [f.same_file_as for f in report.files] == [stored_members, stored_members]


def test_same_data_in_another_container_is_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A .csv, its .csv.gz and a zip member holding the same bytes differ as files, not as data: each
    lists the others (in this call and already stored), with one content hash in report and manifest."""
    store = store_with_baseline(tmp_path)  # BASELINE holds SMALL as a plain .csv
    gz = write_text(tmp_path / "nc_packed_2020_04_01.csv.gz", SMALL)
    archive = write_zip(tmp_path / "nc_archive_2020_04_01.zip", {"inner.csv": SMALL, "other.csv": OTHER})
    with caplog.at_level("WARNING", logger="stopdisparity.ingest"):
        report = ingest([gz, archive], store)
    assert_reconciled(report)
    member, other = "nc_archive_2020_04_01.zip!inner.csv", "nc_archive_2020_04_01.zip!other.csv"
    flags = {f.name: f.same_file_as for f in report.files}
    assert flags == {gz.name: sorted([BASELINE, member]), member: sorted([BASELINE, gz.name]), other: []}
    assert "decompressed sha256" in caplog.text and member in caplog.text
    content = hashlib.sha256(SMALL.encode()).hexdigest()
    sources = open_store(store).manifest()["sources"]
    assert {n: sources[n]["content_sha256"] for n in (BASELINE, gz.name, member)} == dict.fromkeys(
        (BASELINE, gz.name, member), content
    )
    assert sources[other]["content_sha256"] == hashlib.sha256(OTHER.encode()).hexdigest()
    assert sources[gz.name]["sha256"] != content  # the file hash is the gzip's
    assert sources[gz.name]["same_file_as"] == flags[gz.name]
    assert json.loads(json.dumps(report.to_json()))["files"][0]["content_sha256"] == content
    # a later copy with other bytes (CRLF) is other data: not flagged
    crlf = write_text(tmp_path / "nc_crlf_2020_04_01.csv.gz", SMALL.replace("\n", "\r\n"))
    [f] = ingest([crlf], store).files
    assert f.same_file_as == []


def test_different_files_are_not_flagged(tmp_path: Path) -> None:
    store = store_with_baseline(tmp_path)
    [f] = ingest([write_text(tmp_path / "nc_other_2020_04_01.csv", OTHER)], store).files
    assert f.same_file_as == []


def test_same_base_name_in_two_directories_is_refused(tmp_path: Path) -> None:
    """Identity is the base name: two different files with one name cannot both be sources."""
    store = store_with_baseline(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_text(tmp_path / "a" / "nc_x_2020_04_01.csv", SMALL)
    two = write_text(tmp_path / "b" / "nc_x_2020_04_01.csv", f"{HEADER}\n9,2019-05-05\n")
    before = snapshot(store)
    with pytest.raises(IngestError, match=r"nc_x_2020_04_01\.csv.*rename one"):
        ingest([one, two], store)
    assert snapshot(store) == before


def test_same_content_under_the_same_name_is_unchanged_not_refused(tmp_path: Path) -> None:
    store = store_with_baseline(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = elsewhere / BASELINE
    shutil.copyfile(tmp_path / BASELINE, again)
    assert [f.status for f in ingest([again], store).files] == ["unchanged"]


# ------------------------------------------------------------------------- multi-member zips
def test_multi_member_zip_lists_skipped_members_in_the_report(tmp_path: Path) -> None:
    rows = make_rows(20, seed=12)
    doc = csv_text(rows)
    path = write_zip(
        tmp_path / "nc_multi_2020_04_01.zip",
        {
            "README.txt": "OPP release notes",
            "m1.csv": doc.text,
            "docs/": b"",
            "docs/m2.CSV": SMALL,
            "data.csv.gz": gzip.compress(SMALL.encode(), mtime=0),
            "__MACOSX/._m1.csv": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ",
            "docs/._m2.CSV": b"\x00\x05\x16\x07",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    skipped = ["README.txt", "data.csv.gz", "__MACOSX/._m1.csv", "docs/._m2.CSV"]
    assert [(f.name, f.rows_read, f.rows_stored, f.skipped_members) for f in report.files] == [
        ("nc_multi_2020_04_01.zip!m1.csv", 20, 20, skipped),
        ("nc_multi_2020_04_01.zip!docs/m2.CSV", 2, 2, skipped),
    ]
    doc_json = json.loads(json.dumps(report.to_json()))
    assert doc_json["files"][0]["skipped_members"] == skipped
    got = (
        open_store(tmp_path / "store")
        .scan()
        .filter(source_file="nc_multi_2020_04_01.zip!m1.csv")
        .sort("source_line")
        .collect()
    )
    assert got["source_line"].to_list() == doc.lines
    exp = expected_frame(rows)
    assert_frame_equal(got.select(exp.columns), exp)
    again = ingest([path], tmp_path / "store")
    assert [(f.status, f.skipped_members) for f in again.files] == [("unchanged", skipped)] * 2


def test_single_csv_with_readme_keeps_the_archive_name(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "nc_one_2020_04_01.csv.zip", {"README.txt": "x", "one.csv": SMALL})
    [f] = ingest([path], tmp_path / "store").files
    assert (f.name, f.rows_stored, f.skipped_members) == (path.name, 2, ["README.txt"])


# ----------------------------------------------------------------------- broken zips and gzip
def _encrypted(t: Path) -> tuple[Path, list[str]]:
    path = write_zip(t / "nc_enc_2020_04_01.zip", {"m.csv": SMALL})
    return patch_member_header(path, flag_bits=0x1), [path.name, "m.csv", "encrypted"]


def _deflate64(t: Path) -> tuple[Path, list[str]]:
    path = write_zip(t / "nc_d64_2020_04_01.zip", {"m.csv": SMALL}, compression=zipfile.ZIP_DEFLATED)
    return patch_member_header(path, method=9), [path.name, "m.csv", "deflate64"]


def _symlink(t: Path) -> tuple[Path, list[str]]:
    path = write_zip(
        t / "nc_link_2020_04_01.zip", {"m.csv": SMALL, "l.csv": "/etc/passwd"}, symlinks=["l.csv"]
    )
    return path, [path.name, "l.csv", "symbolic link"]


def _truncated_archive(t: Path) -> tuple[Path, list[str]]:
    full = write_zip(t / "full.zip", {"m.csv": incompressible_csv(20_000)}, compression=zipfile.ZIP_DEFLATED)
    path = t / "nc_cut_2020_04_01.zip"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path, [path.name, "truncated or corrupt"]


def _corrupt_member(t: Path) -> tuple[Path, list[str]]:
    path = write_zip(
        t / "nc_bad_2020_04_01.zip", {"m.csv": incompressible_csv(100_000)}, compression=zipfile.ZIP_DEFLATED
    )
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # well past the first MiB of decompressed text: DuckDB is already reading
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    return path, [f"{path.name}!m.csv", "corrupt or truncated"]


def _bad_crc(t: Path) -> tuple[Path, list[str]]:
    path = write_zip(t / "nc_crc_2020_04_01.zip", {"m.csv": SMALL})  # stored: the text is in the clear
    data = path.read_bytes().replace(b"2017-01-01", b"2017-01-02")
    path.write_bytes(data)
    return path, [f"{path.name}!m.csv", "CRC"]


def _gzip_cut(t: Path, *, corrupt: bool) -> tuple[Path, list[str]]:
    path = t / f"nc_{'bad' if corrupt else 'cut'}_2020_04_01.csv.gz"
    data = bytearray(gzip.compress(incompressible_csv(100_000), mtime=0))
    if corrupt:
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    else:
        data = data[: len(data) * 2 // 3]
    path.write_bytes(bytes(data))
    return path, [path.name, "gzip stream is corrupt or truncated"]


def _duplicate_member(t: Path) -> tuple[Path, list[str]]:
    path = t / "nc_twice_2020_04_01.zip"
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name"
        zf.writestr("m.csv", SMALL)
        zf.writestr("m.csv", OTHER)
    path.write_bytes(buf.getvalue())
    return path, [path.name, "m.csv", "appears twice"]


BROKEN: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {
    "encrypted member": _encrypted,
    "deflate64 member": _deflate64,
    "symlink member": _symlink,
    "member name twice": _duplicate_member,
    "truncated archive": _truncated_archive,
    "corrupt member data": _corrupt_member,
    "member with a bad CRC": _bad_crc,
    "truncated gzip": lambda t: _gzip_cut(t, corrupt=False),
    "corrupt gzip": lambda t: _gzip_cut(t, corrupt=True),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_input_gives_a_clear_error_and_the_store_unchanged(tmp_path: Path, case: str) -> None:
    store = store_with_baseline(tmp_path)
    path, words = BROKEN[case](tmp_path)
    message = assert_refused([path], store, names=words)
    assert "DuckDB" not in message  # the cause is the file's bytes, not its CSV


def test_zip64_members_are_read(tmp_path: Path) -> None:
    """Zip64 (archives over 4 GiB, as large OPP states need) is an ordinary archive, not an error."""
    rows = make_rows(25, seed=13)
    doc = csv_text(rows)
    path = write_zip(
        tmp_path / "nc_big_2020_04_01.zip",
        {"a.csv": doc.text, "b.csv": SMALL},
        compression=zipfile.ZIP_DEFLATED,
        zip64=True,
    )
    with zipfile.ZipFile(path) as zf:  # the members really carry zip64 extra fields
        assert all(local_extra_ids(path, i) == [1] for i in zf.infolist())
    report = ingest([path], tmp_path / "store")
    assert_reconciled(report)
    assert [(f.name, f.rows_read, f.rows_stored) for f in report.files] == [
        ("nc_big_2020_04_01.zip!a.csv", 25, 25),
        ("nc_big_2020_04_01.zip!b.csv", 2, 2),
    ]
    got = (
        open_store(tmp_path / "store")
        .scan()
        .filter(source_file="nc_big_2020_04_01.zip!a.csv")
        .sort("source_line")
        .collect()
    )
    exp = expected_frame(rows)
    assert_frame_equal(got.select(exp.columns), exp)


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    """``cat a.gz b.gz`` (or pigz) output is valid gzip: all of it is read, by DuckDB and the count."""
    path = tmp_path / "nc_cat_2020_04_01.csv.gz"
    path.write_bytes(gzip.compress(SMALL.encode(), mtime=0) + gzip.compress(b"3,2019-03-03\n", mtime=0))
    [f] = ingest([path], tmp_path / "store").files
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (3, 3, 0)
    got = open_store(tmp_path / "store").scan().sort("source_line").collect()
    assert got.select("raw_row_number", "source_line").rows() == [("1", 2), ("2", 3), ("3", 4)]


def test_cli_names_the_file_and_exits_2_on_an_empty_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    store = store_with_baseline(tmp_path)
    before = snapshot(store)
    empty = _empty_plain(tmp_path, "csv.gz")
    result = CliRunner().invoke(app, ["ingest", str(empty), "--store", str(store), "--quiet"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert empty.name in text and "empty" in text
    assert snapshot(store) == before


def test_write_opp_still_writes_lf_without_bom(tmp_path: Path) -> None:
    """The default OPP text is unchanged by the newline/bom options of the helper."""
    path = tmp_path / opp_name("csv")
    write_opp(path, make_rows(3))
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r\n" not in data


def test_cli_summary_names_skipped_members_and_duplicate_files(tmp_path: Path) -> None:
    """The text summary of `stopdisparity ingest` says what was skipped and what is stored twice."""
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    archive = write_zip(tmp_path / "nc_multi_2020_04_01.zip", {"README.txt": "notes", "m1.csv": SMALL})
    first = write_text(tmp_path / "nc_statewide_2020_04_01.csv", OTHER)
    copy = tmp_path / "nc_statewide_copy_2020_04_01.csv"
    shutil.copyfile(first, copy)
    args = ["ingest", str(archive), str(first), str(copy), "--store", str(tmp_path / "s")]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    text = " ".join(run.stderr.split())  # rich wraps long lines at the terminal width
    assert "skipped non-CSV members: README.txt" in text
    assert f"{first.name}: ingested" in text
    assert f"same file as {copy.name} (stored twice)" in text
