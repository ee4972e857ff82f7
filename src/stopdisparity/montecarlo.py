"""Monte Carlo harness: repeated synth draws with a planted effect, scored against the DGP's truth.

Each draw takes the cell-level process (:func:`stopdisparity.synth.cells`) with its own seed, fits an
estimator, and compares the estimate with the realised true value of the estimand it claims
(:func:`stopdisparity.synth.truth`). The summary gives the mean bias with its Monte Carlo standard
error, the spread of the estimates, the coverage of the reported confidence intervals and the
rejection rate of H0: no effect — the acceptance rules of the validation suite are stated on these.

References
----------
Morris, T. P., White, I. R. & Crowther, M. J. (2019). Using simulation studies to evaluate statistical
methods. Statistics in Medicine 38(11), 2074-2102. https://doi.org/10.1002/sim.8086
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError, StopDisparityWarning
from stopdisparity.synth import SynthSpec, cells, truth

#: Fits one draw's cells and returns a result with ``tidy()``.
FitFn = Callable[[pl.DataFrame], Any]


@dataclass(frozen=True, slots=True)
class MonteCarloResult:
    """Per-draw estimates and their summary against the truth."""

    draws: pl.DataFrame
    estimand: str
    spec: SynthSpec

    @property
    def summary(self) -> dict[str, float]:
        """R, mean estimate, truth, mean bias, sd, Monte Carlo SE of the bias, coverage, rejection rate."""
        d = self.draws
        r = d.height
        bias = d["estimate"] - d["truth"]
        sd = float(d["estimate"].std()) if r > 1 else math.nan
        covered = (d["ci_low"] <= d["truth"]) & (d["truth"] <= d["ci_high"])
        return {
            "draws": r,
            "mean_estimate": float(d["estimate"].mean()),
            "mean_truth": float(d["truth"].mean()),
            "mean_bias": float(bias.mean()),
            "sd": sd,
            "mcse_bias": sd / math.sqrt(r),
            "coverage": float(covered.mean()),
            "rejection_rate": float((d["p_value"] < 0.05).mean()),
            "mean_std_error": float(d["std_error"].mean()),
        }


def run(
    spec: SynthSpec,
    fit: FitFn,
    *,
    draws: int,
    seed: int,
    rows: int,
    years: tuple[int, int] | None = None,
    agency: str = "state_patrol",
    estimand: str = "att_logodds",
) -> MonteCarloResult:
    """Draw ``draws`` panels from ``spec`` (seeds ``seed .. seed+draws-1``), fit each, score against truth.

    Parameters
    ----------
    spec
        The data-generating process.
    fit
        Fits a long cell panel (one row per county × period × race) and returns a result whose first
        tidy row is the estimate of ``estimand``.
    draws, seed
        Number of draws and the first seed (draw ``i`` uses ``seed + i``: reproducible and disjoint).
    rows, years
        Stops per draw and the years kept (shrink the panel, not the number of draws).
    agency
        The stopping agency whose cells are fitted.
    estimand
        Key of ``truth()["estimands"]`` the estimator claims (``att_logodds``, ``att_pp``, ...).
    """
    if draws < 1:
        raise SpecificationError(f"draws must be >= 1; got {draws!r}")
    records = []
    for i in range(draws):
        s = seed + i
        frame = cells(spec, seed=s, rows=rows, years=years).filter(pl.col("agency") == agency)
        frame = frame.with_columns(pl.col("period").cast(pl.Int64), pl.col("first_treated").cast(pl.Int64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StopDisparityWarning)
            row = fit(frame).tidy().row(0, named=True)
        target = truth(spec, seed=s, rows=rows, years=years)["estimands"][estimand]
        records.append(
            {
                "draw": i,
                "seed": s,
                "estimate": row["estimate"],
                "std_error": row["std_error"],
                "p_value": row["p_value"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "truth": float(target),
            }
        )
    return MonteCarloResult(pl.DataFrame(records), estimand, spec)
