"""Encodings (issue 7 §1): invalid UTF-8 is quarantined with reason ``encoding``; a Latin-1 file is read
exactly with ``--encoding latin-1``. The files are written byte by byte, as a Windows export would be."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from stopdisparity.ingest import ingest
from stopdisparity.store import open_store

# Three records; lines 2 and 4 hold Latin-1 bytes (0xF1 n-tilde, 0xE9 e-acute) that are not UTF-8.
LATIN1 = (
    b"raw_row_number,date,location\n"
    b"1,2017-01-01,Pe\xf1asco Rd\n2,2017-01-02,Main St\n3,2017-01-03,Caf\xe9 Ave\n"
)
NAME = "nc_latin_2020_04_01.csv"


def _file(tmp_path: Path) -> Path:
    path = tmp_path / NAME
    path.write_bytes(LATIN1)
    return path


def test_latin1_file_is_read_exactly_with_the_encoding_option(tmp_path: Path) -> None:
    report = ingest([_file(tmp_path)], tmp_path / "store", encoding="latin-1")
    f = report.files[0]
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (3, 3, 0)
    got = (
        open_store(tmp_path / "store").scan().sort("source_line").select("source_line", "location").collect()
    )
    assert got.rows() == [(2, "Peñasco Rd"), (3, "Main St"), (4, "Café Ave")]


def test_invalid_utf8_is_quarantined_with_its_line_column_and_advice(tmp_path: Path) -> None:
    report = ingest([_file(tmp_path)], tmp_path / "store")
    f = report.files[0]
    assert (f.rows_read, f.rows_stored, f.rows_quarantined) == (3, 1, 2)
    assert f.quarantine_reasons == {"encoding": 2}
    store = open_store(tmp_path / "store")
    assert store.scan().select("location").collect().get_column("location").to_list() == ["Main St"]
    q = store.quarantine().sort("source_line")
    assert q.select("source_file", "source_line", "column", "reason").rows() == [
        (NAME, 2, "location", "encoding"),
        (NAME, 4, "location", "encoding"),
    ]
    assert all("--encoding latin-1" in m for m in q.get_column("message").to_list())


def test_cli_encoding_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stopdisparity.cli import app

    path = _file(tmp_path)
    run = CliRunner().invoke(
        app, ["ingest", str(path), "--store", str(tmp_path / "s"), "--encoding", "latin-1", "--json"]
    )
    assert run.exit_code == 0, run.output
    files = json.loads(run.stdout)["files"]
    assert [(x["rows_read"], x["rows_stored"]) for x in files] == [(3, 3)]
    locations = open_store(tmp_path / "s").scan().select(pl.col("location").sort()).collect()
    assert locations.get_column("location").to_list() == ["Café Ave", "Main St", "Peñasco Rd"]
