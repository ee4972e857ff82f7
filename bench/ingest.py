"""Benchmark: `stopdisparity ingest` against raw DuckDB, polars and pandas on synthetic NC files.

For each size (default 5M and 20M rows) it writes an NC statewide file with `stopdisparity synth`,
extracts the member once (not timed) for the engines that cannot read zip, and times, each in a fresh
subprocess that reports its own peak RSS:

- ours, end to end (start-up, hashing, counting, checks, manifest, commit) on the .csv.zip and the .csv
- DuckDB raw: read_csv -> COPY (FORMAT parquet, PARTITION_BY (year)) on the .csv
- polars: scan_csv -> sink_parquet on the .csv
- pandas: read_csv (1M-row chunks, pyarrow) -> Parquet on the .csv

Usage: python bench/ingest.py [--rows 5000000 20000000] [--repeat 1] [--workdir bench/output]
Prints one table and writes bench/output/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured

HERE = Path(__file__).resolve().parent

RUNNER = r"""
import json, sys, time
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if mode == "ours":
    from stopdisparity.cli import app
    try:
        app(["ingest", src, "--store", out, "--quiet", "--json", "--memory-limit", "2GB"], standalone_mode=False)
    except SystemExit:
        pass
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
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def run(mode: str, src: Path, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    wall, peak, stdout, stderr, code = run_measured([sys.executable, "-c", RUNNER, mode, str(src), str(out)])
    if code != 0:
        raise SystemExit(f"{mode} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall  # includes interpreter and import start-up
    result["peak_rss_mb"] = peak  # the child's own peak RSS (psutil polling)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per engine")
    parser.add_argument("--workdir", type=Path, default=HERE / "output")
    args = parser.parse_args()
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
        for label, mode, src in plan:
            best = None
            for _ in range(args.repeat):
                out = args.workdir / f"out_{label}_{rows}"
                if mode == "polars" or mode == "pandas":
                    out = out.with_suffix(".parquet")
                r = run(mode, src, out)
                if best is None or r["wall_seconds"] < best["wall_seconds"]:
                    best = r
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            row[label] = best
            print(
                f"  {rows:>11,} rows  {label:<11} {best['wall_seconds']:7.1f} s  peak RSS {best['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
        results.append(row)

    print(
        "\nrows        csv MB   ours(zip)  ours(csv)  duckdb raw  polars  pandas   ours/duckdb throughput  peak RSS ours MB"
    )
    for r in results:
        ours, raw_ = r["ours_zip"]["wall_seconds"], r["duckdb_raw"]["wall_seconds"]
        print(
            f"{r['rows']:>11,} {r['csv_mb']:>7.0f} {ours:>9.1f}s {r['ours_csv']['wall_seconds']:>9.1f}s "
            f"{raw_:>9.1f}s {r['polars']['wall_seconds']:>7.1f}s {r['pandas']['wall_seconds']:>7.1f}s "
            f"{raw_ / ours:>12.2f} (zip) {raw_ / r['ours_csv']['wall_seconds']:.2f} (csv) "
            f"{r['ours_zip']['peak_rss_mb']:>10.0f}"
        )
    (args.workdir / "ingest.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {args.workdir / 'ingest.json'}  (cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
