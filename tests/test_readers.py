"""Tests of stopdisparity.readers: discovery, zip safety, and the parser-independent record count."""

from __future__ import annotations

import csv
import io
import itertools
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stopdisparity.errors import IngestError
from stopdisparity.ingest import ingest
from stopdisparity.readers import (
    RecordCounter,
    Source,
    count_records,
    discover,
    parse_header,
    state_from_name,
)
from stopdisparity.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import write_bytes, write_text, write_zip

CSV = "raw_row_number,date\n1,2017-01-01\n2,2018-01-01\n"


# --------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("nc_statewide_2020_04_01.csv.zip", "NC"),
        ("sc_statewide_2019_02_25.csv.zip", "SC"),
        ("ct_hartford_2020_04_01.csv", "CT"),
        ("NC_Statewide_2020_04_01.csv", "NC"),
        ("/some/dir/tx_san_antonio_2020_04_01.parquet", "TX"),
        ("xx_statewide_2020_04_01.csv", None),  # not a state
        ("statewide_2020_04_01.csv", None),
        ("nc_statewide.csv", None),  # no date
        ("nc.csv", None),
    ],
)
def test_state_from_name(name: str, state: str | None) -> None:
    assert state_from_name(name) == state


def test_discover_kinds_names_and_state(tmp_path: Path) -> None:
    paths = [
        write_text(tmp_path / "nc_statewide_2020_04_01.csv", CSV),
        write_text(tmp_path / "nc_durham_2019_12_17.csv.gz", CSV),
        write_text(tmp_path / "sc_statewide_2019_02_25.csv.zip", CSV),
    ]
    sources = discover(paths)
    assert [(s.name, s.kind, s.state, s.member) for s in sources] == [
        ("nc_statewide_2020_04_01.csv", "csv", "NC", None),
        ("nc_durham_2019_12_17.csv.gz", "csv.gz", "NC", None),
        ("sc_statewide_2019_02_25.csv.zip", "csv.zip", "SC", "sc_statewide_2019_02_25.csv"),
    ]
    assert [s.state for s in discover(paths, state="tx")] == ["TX", "TX", "TX"]
    with pytest.raises(IngestError, match="two-letter"):
        discover(paths, state="XX")
    with pytest.raises(IngestError, match="no such file"):
        discover([tmp_path / "nc_missing_2020_01_01.csv"])
    with pytest.raises(IngestError, match="format"):
        discover([write_text(tmp_path / "nc_x_2020_01_01.csv", CSV).rename(tmp_path / "nc_x_2020_01_01.txt")])
    with pytest.raises(IngestError, match="identity"):
        discover([paths[0], paths[0]])


# ------------------------------------------------------------------------------- 8. zip safety
@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../evil.csv", "parent"),
        ("data/../../evil.csv", "parent"),
        ("/etc/evil.csv", "absolute"),
        ("C:/evil.csv", "absolute"),
    ],
)
def test_unsafe_member_path_is_refused(tmp_path: Path, member: str, why: str) -> None:
    path = write_zip(tmp_path / "nc_evil_2020_01_01.zip", {"ok.csv": CSV, member: CSV})
    with pytest.raises(IngestError, match=why) as info:
        discover([path])
    assert member in str(info.value)
    with pytest.raises(IngestError, match="refused"):
        ingest([path], tmp_path / "store")
    assert not (tmp_path / "evil.csv").exists()
    assert not (tmp_path / "store" / "stops").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "nc_link_2020_01_01.zip", {"ok.csv": CSV, "link.csv": "/etc/passwd"}, symlinks=["link.csv"]
    )
    with pytest.raises(IngestError, match="symbolic link") as info:
        ingest([path], tmp_path / "store")
    assert "link.csv" in str(info.value)


def test_multi_member_zip_gives_one_source_per_csv_member(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "nc_multi_2020_01_01.zip",
        {
            "README.txt": "not data",
            "m1.csv": CSV,
            "sub/": b"",
            "sub/m2.csv": "raw_row_number,date\n9,2019-01-01\n",
            "notes.pdf": b"%PDF-1.4",
        },
    )
    sources = discover([path])
    assert [(s.name, s.member) for s in sources] == [
        ("nc_multi_2020_01_01.zip!m1.csv", "m1.csv"),
        ("nc_multi_2020_01_01.zip!sub/m2.csv", "sub/m2.csv"),
    ]
    report = ingest([path], tmp_path / "store")
    assert [(f.name, f.rows_read, f.rows_stored) for f in report.files] == [
        ("nc_multi_2020_01_01.zip!m1.csv", 2, 2),
        ("nc_multi_2020_01_01.zip!sub/m2.csv", 1, 1),
    ]
    got = open_store(tmp_path / "store").scan().sort("source_file", "source_line")
    assert got.select("source_file", "source_line").collect().rows() == [
        ("nc_multi_2020_01_01.zip!m1.csv", 2),
        ("nc_multi_2020_01_01.zip!m1.csv", 3),
        ("nc_multi_2020_01_01.zip!sub/m2.csv", 2),
    ]
    assert sorted(open_store(tmp_path / "store").manifest()["sources"]) == [s.name for s in sources]
    again = ingest([path], tmp_path / "store")
    assert [f.status for f in again.files] == ["unchanged", "unchanged"]


def test_zip_without_csv_member_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "nc_none_2020_01_01.zip", {"README.txt": "x", "data.json": "{}"})
    with pytest.raises(IngestError, match=r"no \.csv member"):
        discover([path])
    junk = tmp_path / "nc_junk_2020_01_01.csv.zip"
    junk.write_bytes(b"PK not really a zip")
    with pytest.raises(IngestError, match="not a readable zip"):
        discover([junk])


# ---------------------------------------------------------------------------- header, counting
def test_parse_header_drops_bom_and_handles_quotes(tmp_path: Path) -> None:
    src = Source(tmp_path / "x.csv", "x.csv", "csv", "NC")
    assert parse_header(src, '\ufeffraw_row_number,"date",raw_a b'.encode()) == [
        "raw_row_number", "date", "raw_a b",
    ]  # fmt: skip
    assert parse_header(src, b"a;b") == ["a;b"]
    with pytest.raises(IngestError, match="line 1"):
        parse_header(src, b"\xff\xfeabc")
    with pytest.raises(IngestError, match="empty"):
        parse_header(src, b"  ")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.zip"])
def test_count_records_reads_every_format(tmp_path: Path, suffix: str) -> None:
    text = 'h1,h2\n1,"a\nb"\n\n2,c\n3,"d\n\ne"\n4,f'
    path = write_bytes(tmp_path / f"nc_x_2020_01_01{suffix}", text.encode())
    [source] = discover([path])
    count = count_records(source)
    assert (count.records, count.data_rows, count.logical_lines) == (5, 4, 6)
    assert count.blank_lines == (3,)
    assert count.multiline == ((2, 1), (5, 2))
    assert count.header == b"h1,h2"
    assert not count.unterminated_quote


def test_counter_examples() -> None:
    def run(*chunks: bytes) -> tuple:
        c = RecordCounter()
        for ch in chunks:
            c.update(ch)
        r = c.finish()
        return r.records, r.blank_lines, r.multiline, r.unterminated_quote, r.header

    assert run(b"") == (0, (), (), False, b"")
    assert run(b"h\n") == (1, (), (), False, b"h")
    assert run(b"h\r\n1\r\n\r\n2") == (3, (3,), (), False, b"h")
    assert run(b'h\n"a\n', b"b\n") == (2, (), ((2, 2),), True, b"h")
    assert run(b'h\n"a""\n', b'b"\n\n') == (2, (3,), ((2, 1),), False, b"h")
    assert run(b"he", b"ad", b"er\n1\n") == (2, (), (), False, b"header")


def test_crlf_blank_line_split_across_chunks() -> None:
    text = b"h\r\n1\r\n\r\n2\r\n"
    whole, split = RecordCounter(), RecordCounter()
    whole.update(text)
    cut = text.index(b"\r\n\r\n") + 3  # ... "\r" | "\n2"
    split.update(text[:cut])
    split.update(text[cut:])
    assert split.finish() == whole.finish()


# ------------------------------------------------------------------ 9. RecordCounter, properties
def reference_count(data: bytes) -> tuple[int, tuple[int, ...], tuple[tuple[int, int], ...], bool]:
    """Byte-by-byte reference: (records, blank lines, multiline map, unterminated quote).

    A logical line ends at a newline outside quotes; it is blank when it holds nothing or only "\\r";
    a newline inside quotes belongs to the logical line that holds it.
    """
    in_quote = False
    logical = 0
    blank: list[int] = []
    extra: dict[int, int] = {}
    content = bytearray()
    for byte in data:
        ch = bytes([byte])
        if ch == b'"':
            in_quote = not in_quote
        if ch == b"\n" and not in_quote:
            logical += 1
            if bytes(content) in (b"", b"\r"):
                blank.append(logical)
            content.clear()
            continue
        if ch == b"\n":
            extra[logical + 1] = extra.get(logical + 1, 0) + 1
        content += ch
    if content:
        logical += 1
    return logical - len(blank), tuple(blank), tuple(sorted(extra.items())), in_quote


def counted(chunks: list[bytes]) -> tuple[int, tuple[int, ...], tuple[tuple[int, int], ...], bool]:
    c = RecordCounter()
    for chunk in chunks:
        c.update(chunk)
    r = c.finish()
    return r.records, r.blank_lines, r.multiline, r.unterminated_quote


_plain = st.text(alphabet="ab1 ;-é", min_size=0, max_size=4)
_quoted = st.text(alphabet='ab,"\n é', min_size=0, max_size=6).map(lambda s: '"' + s.replace('"', '""') + '"')
_field = _plain | _quoted
_record = st.lists(_field, min_size=1, max_size=4).map(",".join).filter(lambda r: r != "")
_line = st.one_of(_record, _record, _record, st.just(""))  # "" = a blank line


@st.composite
def csv_documents(draw: st.DrawFn, *, newline: str) -> bytes:
    lines = draw(st.lists(_line, min_size=0, max_size=12))
    text = newline.join(lines)
    if lines and draw(st.booleans()):
        text += newline
    return text.encode("utf-8")


@st.composite
def chunkings(draw: st.DrawFn, data: bytes, *, keep_crlf: bool) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    if keep_crlf:
        cuts = [c for c in cuts if not (0 < c < len(data) and data[c - 1 : c + 1] == b"\r\n")]
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def csv_module_records(data: bytes) -> int:
    rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    return sum(1 for row in rows if row != [])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), doc=csv_documents(newline="\n"))
def test_counter_matches_reference_lf(data: st.DataObject, doc: bytes) -> None:
    chunks = data.draw(chunkings(doc, keep_crlf=False))
    expected = reference_count(doc)
    assert counted(chunks) == expected
    assert counted([doc]) == expected
    assert counted([doc[i : i + 1] for i in range(len(doc))]) == expected
    assert expected[0] == csv_module_records(doc)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), doc=csv_documents(newline="\r\n"))
def test_counter_matches_reference_crlf(data: st.DataObject, doc: bytes) -> None:
    chunks = data.draw(chunkings(doc, keep_crlf=True))
    expected = reference_count(doc)
    assert counted(chunks) == expected
    assert counted([doc]) == expected
    assert expected[0] == csv_module_records(doc)


@st.composite
def mixed_documents(draw: st.DrawFn) -> bytes:
    """Lines ended by LF or CRLF at random (the last one maybe by neither)."""
    lines = draw(st.lists(_line, min_size=0, max_size=12))
    ends = [draw(st.sampled_from(["\n", "\r\n"])) for _ in lines]
    if ends and draw(st.booleans()):
        ends[-1] = ""
    return "".join(line + end for line, end in zip(lines, ends, strict=True)).encode("utf-8")


def reference_normalized(data: bytes) -> bytes:
    """Byte by byte: a CRLF outside quotes becomes LF; everything else is kept."""
    out, in_quote, i = bytearray(), False, 0
    while i < len(data):
        if data[i : i + 1] == b'"':
            in_quote = not in_quote
        if not in_quote and data[i : i + 2] == b"\r\n":
            out += b"\n"
            i += 2
            continue
        out += data[i : i + 1]
        i += 1
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), doc=mixed_documents())
def test_counter_output_ends_every_record_with_lf(data: st.DataObject, doc: bytes) -> None:
    """What the feeder writes (each update's lines, then the tail) is the file with record-ending CRLFs
    as LF wherever the stream is cut (between CR and LF too); a CSV parser reads the same rows."""
    chunks = data.draw(chunkings(doc, keep_crlf=False))
    c = RecordCounter()
    fed = b"".join(c.update(chunk) for chunk in chunks) + c.tail
    assert fed == reference_normalized(doc)
    assert counted(chunks) == reference_count(doc)  # the count is unchanged
    rows = list(csv.reader(io.StringIO(doc.decode("utf-8"), newline="")))
    assert list(csv.reader(io.StringIO(fed.decode("utf-8"), newline=""))) == rows


@settings(max_examples=100, deadline=None)
@given(doc=csv_documents(newline="\n"))
def test_counter_logical_lines_map_to_physical_lines(doc: bytes) -> None:
    """With the blank lines and the multiline map, each record's first physical line is known."""
    c = RecordCounter()
    c.update(doc)
    r = c.finish()
    extra = dict(r.multiline)
    starts, physical = [], 1
    for logical in range(1, r.logical_lines + 1):
        if logical not in r.blank_lines:
            starts.append(physical)
        physical += 1 + extra.get(logical, 0)
    # reference: the physical line where each non-blank logical line starts
    ref, line, in_quote, at_start, blank = [], 1, False, True, True
    for byte in doc:
        ch = chr(byte) if byte < 128 else "x"
        if at_start:
            start, at_start, blank = line, False, True
        if ch == '"':
            in_quote = not in_quote
        if ch == "\n":
            line += 1
            if not in_quote:
                if not blank:
                    ref.append(start)
                at_start = True
                continue
        blank = False
    if not at_start and not blank:
        ref.append(start)
    assert starts == ref
