"""The benchmark store: NC+SC synth OPP files of a given size, ingested once and cached in a workdir."""

from __future__ import annotations

import time
from pathlib import Path


def ncsc_store(rows: int, workdir: Path, *, seed: int = 11) -> Path:
    """Path of a store holding ``rows`` synth stops (scenario ``constant``), building it if absent."""
    from stopdisparity import synth
    from stopdisparity.ingest import ingest

    raw = workdir / f"ncsc_{rows}"
    store = workdir / f"store_ncsc_{rows}"
    if not (store / "manifest.json").exists():
        t0 = time.perf_counter()
        if not (raw / "truth.json").exists():
            synth.write_opp_files(raw, synth.SynthSpec(scenario="constant"), rows=rows, seed=seed)
        t1 = time.perf_counter()
        report = ingest(sorted(raw.glob("*.csv.zip")), store)
        print(
            f"prepared: synth {t1 - t0:.1f} s, ingest {time.perf_counter() - t1:.1f} s, "
            f"{report.rows_stored:,} stops stored",
            flush=True,
        )
    return store
