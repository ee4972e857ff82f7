"""Coverage of the CR3 (cluster jackknife) interval at design M, beside CR1 (issue 5, section 6).

MacKinnon, Nielsen & Webb (2023) recommend CV3 over CV1 when the clusters are heterogeneous. CR3 needs
G leave-one-cluster-out refits per fit (146 here), which is too slow for the Monte Carlo in `make test`
(about 2 s a draw); this script measures it on the same draws as tests/test_monte_carlo.py (design M:
50 of 146 counties adopt at random dates in 2006-2010; 600,000 stops over 2005-2009; seeds 1000...).

Usage: OPENBLAS_NUM_THREADS=1 POLARS_MAX_THREADS=1 python bench/cr3_coverage.py [--draws 500]
[--scenario null constant] (about 17 min per scenario at 500 draws on one core; run scenarios in
separate processes to use more cores).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import polars as pl

from stopdisparity.models.did import fit_did
from stopdisparity.models.inference import apply_inference
from stopdisparity.montecarlo import Method, run
from stopdisparity.synth import SynthSpec


def _logit(f: pl.DataFrame) -> Any:
    return fit_did(f, inference="cluster")  # the CR1 option is what this bench scores


def _cr3_row(result: Any) -> dict[str, float]:
    row = apply_inference(result, "cr3").tidy().row(0, named=True)
    return {k: row[k] for k in ("estimate", "std_error", "p_value", "ci_low", "ci_high")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--scenario", nargs="+", default=["null", "constant"], choices=["null", "constant"])
    args = parser.parse_args()
    methods = [Method("cr1", _logit), Method("cr3", _logit, row=_cr3_row)]
    for scenario in args.scenario:
        started = time.perf_counter()
        spec = SynthSpec(scenario=scenario, design="random", n_treated=50)
        res = run(spec, methods, draws=args.draws, seed=1000, rows=600_000, years=(2005, 2009))
        seconds = time.perf_counter() - started
        for m in ("cr1", "cr3"):
            s = res.summary_of(m)
            print(
                f"design M, {scenario}, {m}: coverage {s['coverage']:.3f} (MCSE {s['mcse_coverage']:.3f}), "
                f"rejects H0: no effect {s['rejection_rate']:.3f}, R = {s['draws']} ({seconds:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
