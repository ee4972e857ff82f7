"""CR1 coverage by effective number of clusters G*: the calibration of the FewClustersWarning threshold.

Design M of the Monte Carlo (synth S1, constant log-odds effect 0.3; 50 of NC+SC's 146 counties adopt
at random dates in 2006-2010; 600,000 stops over 2005-2009, state-patrol cells), drawn at several
spreads of county size (``pop_exponent``: a county's stop level is population ** pop_exponent; 0.8 is
the synth default, 0 equal levels). Each draw fits the headline TWFE logit and records whether its
CR1 95% interval covers the truth and the treatment's G* (Carter, Schnepel & Steigerwald 2017). The
pooled draws are binned by G*; the warning threshold (stopdisparity.models._fe.MIN_EFFECTIVE_CLUSTERS)
sits where coverage falls.

Usage: OPENBLAS_NUM_THREADS=1 POLARS_MAX_THREADS=1 python bench/effective_clusters.py [--draws 500]
(about 40 s per spread and 500 draws on one core).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from typing import Any

import polars as pl

from stopdisparity.models._fe import MIN_EFFECTIVE_CLUSTERS
from stopdisparity.models.did import fit_did
from stopdisparity.montecarlo import Method, effective_clusters_row, run, zero
from stopdisparity.synth import SynthSpec

BINS = (0.0, 15.0, 20.0, 25.0, 30.0, 40.0, math.inf)


def _logit(f: pl.DataFrame) -> Any:
    return fit_did(f, inference="cluster")  # the CR1 option is what this bench scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--pop-exponents", type=float, nargs="+", default=[0.0, 0.4, 0.6, 0.8])
    args = parser.parse_args()
    methods = [Method("cr1", _logit), Method("g_star", _logit, zero, row=effective_clusters_row)]
    pooled = []
    for pe in args.pop_exponents:
        started = time.perf_counter()
        spec = SynthSpec(scenario="constant", design="random", n_treated=50, pop_exponent=pe)
        res = run(spec, methods, draws=args.draws, seed=1000, rows=600_000, years=(2005, 2009))
        joined = res.beside("cr1", "g_star").with_columns(pop_exponent=pl.lit(pe))
        pooled.append(joined)
        print(
            f"pop_exponent {pe:.1f}: CR1 coverage {joined['covered'].mean():.3f}, G* median "
            f"{joined['g_star'].median():.1f} [{joined['g_star'].min():.1f}, {joined['g_star'].max():.1f}] "
            f"({time.perf_counter() - started:.0f} s, R = {args.draws})"
        )
    every = pl.concat(pooled)
    print(f"\nCR1 coverage of the 95% interval by G* (pooled, {every.height} draws; warning below "
          f"{MIN_EFFECTIVE_CLUSTERS:.0f}):")  # fmt: skip
    for lo, hi in itertools.pairwise(BINS):
        cell = every.filter((pl.col("g_star") >= lo) & (pl.col("g_star") < hi))
        if cell.height:
            se = math.sqrt(0.95 * 0.05 / cell.height)
            print(f"  G* in [{lo:4.0f}, {hi:4.0f}): {cell.height:5d} draws, coverage {cell['covered'].mean():.3f}"
                  f" (MC se at 0.95: {se:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
