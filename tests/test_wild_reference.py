"""The wild cluster restricted bootstrap against an independent implementation: ``wildboottest``.

``wildboottest`` (py-econometrics; the implementation behind pyfixest's ``Feols.wildboottest``) is
itself tested against R's fwildclusterboot, the port of Stata's boottest (Roodman, MacKinnon, Nielsen &
Webb 2019). With G = 10 clusters and Rademacher weights both enumerate all 2^10 sign vectors, so the
comparison is exact, not up to Monte Carlo error:

- the sample t differs only by the small-sample factor: ours is pyfixest's CRV1 t (G/(G-1) · (N-1)/(N-K)
  with K counting the fixed effects, as ``feols`` reports), wildboottest's uses its own K; the ratio is
  one constant, and every bootstrap t* differs by the same constant (rtol 1e-6: pyfixest demeans
  iteratively);
- the p-values agree except for the two sign vectors ±1, which reproduce the sample t exactly: we count
  them as exceedances (a tie is at least as extreme; module notes of ``inference.py``), wildboottest
  counts whichever side of the tie rounding puts them, so p differs by 0 or 2/1024.

With Webb weights (random draws) the p-values agree within Monte Carlo error.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest

from stopdisparity.models.did import DidResult, fit_did
from stopdisparity.models.inference import wild_bootstrap_setup, wild_cluster_bootstrap
from stopdisparity.synth import SynthSpec, cells

pf = pytest.importorskip("pyfixest")
pytest.importorskip("wildboottest")

pytestmark = pytest.mark.reference

G = 10
# pyfixest demeans by alternating projections to a 1e-8 tolerance, ours is exact: the SE rtol of issue 5.
RTOL_T = 1e-6


def _panel(seed: int) -> DidResult:
    """10 SC counties (4 treated at random dates), unit-equal TWFE of the Hispanic share."""
    spec = SynthSpec(scenario="constant", design="random", n_treated=4, states=("SC",), theta=0.25)
    f = (
        cells(spec, seed=seed, rows=80_000, years=(2006, 2009))
        .filter(pl.col("agency") == "state_patrol")
        .with_columns(pl.col("period").cast(pl.Int64))
    )
    treated = f.filter(pl.col("in_force")).get_column("county_fips").unique().sort().to_list()
    others = [c for c in f.get_column("county_fips").unique().sort().to_list() if c not in treated]
    f = f.filter(pl.col("county_fips").is_in(treated + others[: G - len(treated)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_did(f, estimator="twfe-linear", weights="unit-equal", group=None)


def _pyfixest(result: DidResult):
    data = result.sample.select(
        (pl.col("focal") / pl.col("n")).alias("y"),
        pl.col("treated").cast(pl.Float64).alias("d"),
        "unit",
        "period",
        pl.col("cluster").rank("dense").cast(pl.Int64).alias("cluster"),  # wildboottest needs numbers
    ).to_pandas()
    return pf.feols("y ~ d | unit + period", data=data, vcov={"CRV1": "cluster"})


@pytest.mark.parametrize("seed", [3, 4, 6, 7])
def test_rademacher_full_enumeration_matches_wildboottest(seed: int) -> None:
    result = _panel(seed)
    ours = wild_bootstrap_setup(result, draws=999, weights="rademacher", seed=1)
    assert ours.enumerated and ours.v.shape == (2**G, G)
    fit = _pyfixest(result)
    # Our sample t is pyfixest's own CRV1 t.
    assert ours.t_stat(0.0) == pytest.approx(float(fit.tstat().iloc[0]), rel=RTOL_T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, t_boot = fit.wildboottest(
            reps=4 * 2**G,  # more than 2^G: wildboottest then enumerates the 2^G vectors
            param="d",
            cluster="cluster",
            weights_type="rademacher",
            impose_null=True,
            bootstrap_type="11",
            seed=1,
            return_bootstrapped_t_stats=True,
        )
    t_boot = np.asarray(t_boot, dtype=float).ravel()
    assert t_boot.size == 2**G
    ratio = ours.t_stat(0.0) / float(theirs["t value"])
    assert abs(ratio - 1) < 0.05  # only the small-sample factor differs
    np.testing.assert_allclose(
        np.sort(np.abs(ours.t_star(0.0))), np.sort(np.abs(t_boot)) * ratio, rtol=RTOL_T, atol=1e-9
    )
    gap = ours.p_value(0.0) - float(theirs["Pr(>|t|)"])
    assert gap == pytest.approx(0.0, abs=1e-12) or gap == pytest.approx(2 / 2**G, abs=1e-12), gap


def test_webb_weights_match_wildboottest_within_monte_carlo_error() -> None:
    result = _panel(6)
    draws = 19_999
    ours = wild_cluster_bootstrap(result, draws=draws, weights="webb", seed=11, ci=False)
    p_ours = float(ours.tidy()["p_value"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _pyfixest(result).wildboottest(
            reps=draws, param="d", cluster="cluster", weights_type="webb", impose_null=True, seed=5
        )
    p_theirs = float(theirs["Pr(>|t|)"])
    # Two independent draws of B each: sd of the difference sqrt(2 p (1-p) / B); allow 4 sd.
    tol = 4 * math.sqrt(2 * p_theirs * (1 - p_theirs) / draws) + 1e-4
    assert 0.005 < p_theirs < 0.5  # an informative p, not 0 or 1
    assert abs(p_ours - p_theirs) < tol, (p_ours, p_theirs, tol)
