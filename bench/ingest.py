"""Benchmark: `stopdisparity ingest` against raw DuckDB, polars and pandas on synthetic NC files.

For each size (default 5M and 20M rows) it writes an NC statewide file with `stopdisparity synth`,
extracts the member once (not timed) for the engines that cannot read zip, and times, each in a fresh
subprocess that reports its own peak RSS:

- ours, end to end (start-up, hashing, counting, checks, manifest, commit) on the .csv.zip and the .csv
- DuckDB raw: read_csv -> COPY (FORMAT parquet, PARTITION_BY (year)) on the .csv
- polars: scan_csv -> sink_parquet on the .csv
- pandas: read_csv (1M-row chunks, pyarrow) -> Parquet on the .csv

Each figure is recorded with the 1-minute load average before and after the run (`os.getloadavg`):
the machine is shared, and a figure taken under load is only comparable with one taken under the same
load. For our ingest it also records the peak size of the store's `.staging/` directory (the spill
part separately: DuckDB's temporary files) polled every 50 ms, and whether statsmodels, seaborn or
matplotlib were imported by the end of the ingest (they must not be).

Usage: python bench/ingest.py [--rows 5000000 20000000] [--repeat 3] [--workdir bench/output]
       [--modes ours_zip ours_csv duckdb_raw polars pandas] [--memory-limit 2GB] [--threads N]
Prints one table and writes WORKDIR/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured

HERE = Path(__file__).resolve().parent

RUNNER = r"""
import json, sys, time
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
extra = {}
t0 = time.perf_counter()
if mode == "ours":
    from stopdisparity.cli import app
    try:
        app(["ingest", src, "--store", out, "--quiet", "--json", *sys.argv[4:]], standalone_mode=False)
    except SystemExit:
        pass
    extra["heavy_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {"statsmodels", "seaborn", "matplotlib"})
elif mode == "duckdb":
    import duckdb
    con = duckdb.connect(config={"memory_limit": "2GB"})
    con.execute(
        "COPY (SELECT *, year(date) AS year FROM read_csv($src, nullstr='NA')) TO $out "
        "(FORMAT parquet, PARTITION_BY (year))", {"src": src, "out": out})
elif mode == "polars":
    import polars as pl
    pl.scan_csv(src, null_values="NA", infer_schema_length=10000).sink_parquet(out)
elif mode == "pandas":
    import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
    writer = None
    for chunk in pd.read_csv(src, na_values=["NA"], keep_default_na=False, chunksize=1_000_000,
                             dtype=str):
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    writer.close()
print(json.dumps({"seconds": time.perf_counter() - t0} | extra))
"""


def _tree_size(path: Path) -> tuple[int, int]:
    """(bytes under path, bytes under its spill/ directories), ignoring files that vanish meanwhile."""
    total = spill = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                size = (Path(root) / name).stat().st_size
            except OSError:
                continue
            total += size
            if f"{os.sep}spill" in root:
                spill += size
    return total, spill


class _StagingWatch:
    """Polls the peak size of a store's .staging directory while an ingest runs."""

    def __init__(self, store: Path) -> None:
        self.staging = store / ".staging"
        self.peak = self.peak_spill = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.staging.is_dir():
                total, spill = _tree_size(self.staging)
                self.peak, self.peak_spill = max(self.peak, total), max(self.peak_spill, spill)
            time.sleep(0.05)

    def __enter__(self) -> _StagingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(mode: str, src: Path, out: Path, ours_args: list[str]) -> dict:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    load_before = os.getloadavg()[0]
    args = ours_args if mode == "ours" else []
    with _StagingWatch(out) as watch:
        wall, peak, stdout, stderr, code = run_measured(
            [sys.executable, "-c", RUNNER, mode, str(src), str(out), *args]
        )
    if code != 0:
        raise SystemExit(f"{mode} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall  # includes interpreter and import start-up
    result["peak_rss_mb"] = peak  # the child's own peak RSS (psutil polling)
    result["load_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if mode == "ours":
        result["peak_staging_mb"] = round(watch.peak / 1e6, 1)
        result["peak_spill_mb"] = round(watch.peak_spill / 1e6, 1)
        result["options"] = args
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per engine")
    parser.add_argument("--workdir", type=Path, default=HERE / "output")
    parser.add_argument(
        "--modes", nargs="+", default=["ours_zip", "ours_csv", "duckdb_raw", "polars", "pandas"]
    )
    parser.add_argument("--memory-limit", default=None, help="passed to our ingest (default: its own)")
    parser.add_argument("--threads", default=None, help="passed to our ingest (default: all cores)")
    args = parser.parse_args()
    ours_args = [] if args.memory_limit is None else ["--memory-limit", args.memory_limit]
    ours_args += [] if args.threads is None else ["--threads", args.threads]
    args.workdir.mkdir(parents=True, exist_ok=True)
    from stopdisparity import synth

    results = []
    for rows in args.rows:
        raw = args.workdir / f"nc_{rows}"
        t0 = time.perf_counter()
        if not (raw / "truth.json").exists():
            shutil.rmtree(raw, ignore_errors=True)
            synth.write_opp_files(
                raw, synth.SynthSpec(scenario="constant", states=("NC",)), rows=rows, seed=7
            )
        synth_seconds = time.perf_counter() - t0
        zpath = next(raw.glob("nc_statewide_*.csv.zip"))
        csv_path = raw / zpath.name.removesuffix(".zip")
        if not csv_path.exists():
            with zipfile.ZipFile(zpath) as zf:
                zf.extract(csv_path.name, raw)
        size_mb = csv_path.stat().st_size / 1e6
        row = {
            "rows": rows,
            "csv_mb": round(size_mb, 1),
            "zip_mb": round(zpath.stat().st_size / 1e6, 1),
            "synth_seconds_or_cached": round(synth_seconds, 1),
        }
        plan = [
            ("ours_zip", "ours", zpath),
            ("ours_csv", "ours", csv_path),
            ("duckdb_raw", "duckdb", csv_path),
            ("polars", "polars", csv_path),
            ("pandas", "pandas", csv_path),
        ]
        for label, mode, src in [p for p in plan if p[0] in args.modes]:
            best = None
            for _ in range(args.repeat):
                out = args.workdir / f"out_{label}_{rows}"
                if mode == "polars" or mode == "pandas":
                    out = out.with_suffix(".parquet")
                r = run(mode, src, out, ours_args)
                if best is None or r["wall_seconds"] < best["wall_seconds"]:
                    best = r
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            row[label] = best
            print(
                f"  {rows:>11,} rows  {label:<11} {best['wall_seconds']:7.1f} s  peak RSS "
                f"{best['peak_rss_mb']:7.0f} MB  load {best['load_before_after']}"
                + (
                    f"  staging peak {best['peak_staging_mb']:.0f} MB (spill {best['peak_spill_mb']:.0f})"
                    f"  heavy modules {best['heavy_modules']}"
                    if mode == "ours"
                    else ""
                ),
                flush=True,
            )
        results.append(row)

    print("\nrows: wall seconds (best of --repeat), and DuckDB raw / ours (throughput ratio, target >= 0.7)")
    for r in results:
        raw_ = r.get("duckdb_raw", {}).get("wall_seconds")
        parts = [f"{r['rows']:>11,} rows, csv {r['csv_mb']:.0f} MB:"]
        for label in args.modes:
            if label in r:
                parts.append(f"{label} {r[label]['wall_seconds']:.1f}s")
                if raw_ and label.startswith("ours"):
                    parts.append(f"(ratio {raw_ / r[label]['wall_seconds']:.2f})")
        print(" ".join(parts))
    out_json = args.workdir / "ingest.json"
    previous = json.loads(out_json.read_text()) if out_json.exists() else []
    out_json.write_text(json.dumps(previous + results, indent=2))
    print(f"\nwritten: {args.workdir / 'ingest.json'}  (cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
