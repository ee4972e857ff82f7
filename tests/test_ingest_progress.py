"""Ingest progress and memory (issue 7 §4): the callback advances from the input bytes the parser consumed.

A fake sink records every call on a 200k-row OPP file in each text format: the reports are many
(not one per file), strictly increasing, never beyond the total, end at the total (the whole file
was consumed), and come at least once a second while the file is read.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stopdisparity.ingest import PROGRESS_INTERVAL, ingest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opp_files import big_text, opp_name, write_text

ROWS = 200_000


@pytest.fixture(scope="module")
def text() -> str:
    return big_text(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "csv.zip"])
def test_progress_advances_from_bytes_consumed(tmp_path: Path, text: str, fmt: str) -> None:
    path = write_text(tmp_path / opp_name(fmt), text)
    calls: list[tuple[float, str, int, int | None]] = []

    def sink(name: str, done: int, total: int | None) -> None:
        calls.append((time.monotonic(), name, done, total))

    [f] = ingest([path], tmp_path / "store", progress=sink).files
    assert (f.rows_read, f.rows_stored) == (ROWS, ROWS)
    assert {c[1] for c in calls} == {path.name}
    done = [c[2] for c in calls]
    total = calls[0][3]
    expected_total = len(text.encode()) if fmt == "csv.zip" else path.stat().st_size
    assert total == expected_total and {c[3] for c in calls} == {total}
    assert len([d for d in done if d > 0]) >= 3, calls
    assert all(a < b for a, b in itertools.pairwise(done)), done  # strictly increasing
    assert done[-1] == total  # the whole input was consumed
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert max(gaps) < 1.0, gaps  # at least once a second while the input is read


def test_no_callback_means_no_reports_and_the_same_result(tmp_path: Path) -> None:
    """Quiet: without a callback nothing reports; the store is the same as with one."""
    text = big_text(2_000)
    path = write_text(tmp_path / opp_name("csv.gz"), text)
    a = ingest([path], tmp_path / "a").files[0]
    b = ingest([path], tmp_path / "b", progress=lambda *_: None).files[0]
    assert (a.rows_read, a.rows_stored, a.sha256) == (b.rows_read, b.rows_stored, b.sha256)
    assert PROGRESS_INTERVAL < 1.0


def test_cli_quiet_prints_no_progress(tmp_path: Path) -> None:
    from stopdisparity.cli import app

    path = write_text(tmp_path / opp_name("csv"), big_text(2_000))
    run = CliRunner().invoke(app, ["ingest", str(path), "--store", str(tmp_path / "s"), "--quiet"])
    assert run.exit_code == 0, run.output
    assert run.output == ""


# ---------------------------------------------------------------- §4 memory: the ingest's budget
@pytest.mark.parametrize(
    ("budget", "duckdb"),
    [("2GB", "953MiB"), ("2GiB", "1024MiB"), ("1500MB", "715MiB"), ("512 mb", "244MiB"), ("80%", "80%")],
)
def test_duckdb_gets_half_the_memory_budget(budget: str, duckdb: str) -> None:
    """DuckDB's limit bounds only its buffer manager; half the budget keeps the process under it."""
    from stopdisparity.ingest import duckdb_share

    assert duckdb_share(budget) == duckdb


def test_staging_holds_no_parsed_copy_after_the_ingest(tmp_path: Path) -> None:
    """The parsed rows go straight to the year files; the failed rows' side file is removed once staged."""
    path = write_text(tmp_path / opp_name("csv"), big_text(5_000))
    ingest([path], tmp_path / "store", memory_limit="256MB")
    staging = tmp_path / "store" / ".staging"
    assert not staging.exists() or not any(staging.rglob("*"))
