"""The wild cluster restricted bootstrap against boottest's own published output (issue 5 §3).

Four tests printed by Stata's ``boottest`` (Roodman, MacKinnon, Nielsen & Webb 2019) in the log its
author keeps in the boottest repository (``unit tests.log``; the same commands are the examples of
boottest's help file), each run twice there: by boottest's Mata code and by WildBootTests.jl
(``julia`` option). Data, commands and printed numbers: ``tests/reference/boottest/SOURCE.md``.

- ``collapsed`` (8 year clusters), H0: post_self = .04. Rademacher: 999 replications exceed the 2^8 = 256
  sign vectors, so boottest enumerates them as we do and the p-value is exact on both sides; Webb with
  9,999,999 replications, whose Monte Carlo error is negligible.
- ``nlsw88`` (12 industry clusters), H0: tenure = 0; boottest drew 999 of the 4,096 Rademacher vectors,
  we enumerate all of them.
- ``nlsw88`` with industry fixed effects and 1,217 near-singleton clusters (``areg``), 9,999 draws.

The t statistic is compared to the printed 4 decimals. It carries Stata's CRV1 factor
G/(G-1) · (N-1)/(N-K), which ``regress``/``areg`` apply and boottest inherits (its default ``small``);
K counts every regressor with the constant and, after ``areg``, the absorbed fixed-effect levels
(3 slopes + 12 industries = 15): K = 14 or 16 would move the fourth decimal. The factor cancels from the
p-value (it scales t and every t* alike).

Ties: the sign vectors ±1 reproduce the sample t exactly (null imposed). We count them as exceedances
(a tie is at least as extreme; module notes of ``inference.py``); boottest counts |t*| > |t| strictly,
so each of them lands on whichever side rounding puts it. The enumerated p-values are therefore checked
count by count: boottest's count lies between our strict count and our count with ties.

The data are the ``.dta`` files boottest ran on, written as CSV with the exact float32 values. They are
looked for in ``tests/reference/boottest/`` and in the steering repository's
``shared/data/boottest/`` beside the work tree; the tests are skipped when neither holds them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stopdisparity.models.inference import WildBootstrap, _weights, wild_bootstrap_arrays

pytestmark = pytest.mark.reference

_ROOT = Path(__file__).resolve().parents[1]
_DIRS = (_ROOT / "tests" / "reference" / "boottest", _ROOT.parent / "shared" / "data" / "boottest")
ALPHA = 0.05


def _data(name: str) -> pl.DataFrame:
    for d in _DIRS:
        if (d / name).is_file():
            return pl.read_csv(d / name)
    where = ", ".join(str(d) for d in _DIRS)
    pytest.skip(f"{name} not found in {where} (see tests/reference/boottest/SOURCE.md)")


def _ols(
    y: np.ndarray,
    d: np.ndarray,
    controls: np.ndarray,
    clusters: np.ndarray,
    v: np.ndarray,
    *,
    k: int,
    enumerated: bool = False,
) -> WildBootstrap:
    """WCR bootstrap of ``d`` in the OLS of ``y`` on ``d`` and ``controls``, with Stata's CRV1 factor."""
    q, _ = np.linalg.qr(controls)

    def residualize(a: np.ndarray) -> np.ndarray:
        return a - q @ (q.T @ a)

    codes = np.unique(clusters, return_inverse=True)[1]
    n, g = y.shape[0], int(codes.max()) + 1
    factor = g / (g - 1) * (n - 1) / (n - k)
    return wild_bootstrap_arrays(
        y, d, np.ones(n), residualize, codes, v, factor=factor, enumerated=enumerated
    )


def _counts(boot: WildBootstrap, beta0: float) -> tuple[int, int]:
    """(# |t*| > |t| beyond a 1e-8 relative tie band, # ties) over the bootstrap draws."""
    t, ts = abs(boot.t_stat(beta0)), np.abs(boot.t_star(beta0))
    ties = np.abs(ts - t) <= 1e-8 * t
    return int(np.sum((ts > t) & ~ties)), int(np.sum(ties))


def _mc_tol(p: float, *draws: int) -> float:
    """Four standard deviations of the difference of independent Monte Carlo p's with these B's."""
    return 4 * math.sqrt(p * (1 - p) * sum(1 / b for b in draws))


# ------------------------------------------------------------------------------------ collapsed
def _collapsed(v: np.ndarray, enumerated: bool = False) -> WildBootstrap:
    f = _data("collapsed.csv")
    assert f.height == 16
    col = {c: f.get_column(c).to_numpy().astype(float) for c in f.columns}
    controls = np.column_stack([np.ones(f.height), col["selfemployed"], col["post"]])
    return _ols(col["hasinsurance"], col["post_self"], controls, col["year"], v, k=4, enumerated=enumerated)


def test_collapsed_rademacher_enumerated_matches_boottest() -> None:
    # regress hasinsurance selfemployed post post_self, cluster(year); boottest post_self=.04
    v, enumerated = _weights("rademacher", 8, 999, None)
    assert enumerated and v.shape == (256, 8)
    boot = _collapsed(v, enumerated)
    assert round(boot.t_stat(0.04), 4) == 2.0194  # t(7) = 2.0194 (both runs)
    strict, ties = _counts(boot, 0.04)
    assert (strict, ties) == (18, 2)
    assert boot.p_value(0.04) == pytest.approx((strict + ties) / 256, abs=1e-15)
    # Stata printed Prob>|t| = 0.0742 (19/256), WildBootTests.jl 0.0703 (18/256).
    for p_pub in (0.0742, 0.0703):
        k_pub = round(p_pub * 256)
        assert abs(k_pub / 256 - p_pub) < 5e-5
        assert strict <= k_pub <= strict + ties, (p_pub, strict, ties)
    # Confidence sets: boottest stops its root search at a point of the step function within about
    # one step of alpha on its own tie count, so at its printed bounds our exact p is above alpha by at
    # most two symmetric pairs of sign vectors (4/256).
    for lo, hi in ((0.03874, 0.07098), (0.03815, 0.07148)):
        assert lo < boot.estimate < hi
        for bound in (lo, hi):
            p = boot.p_value(bound)
            assert ALPHA < p <= ALPHA + 4 / 256, (bound, p)


def test_collapsed_webb_matches_boottest_within_monte_carlo_error() -> None:
    # boottest post_self=.04, weight(webb) reps(9999999) noci -> Prob>|t| = 0.0757 (both runs)
    draws, p_pub, b_pub = 199_999, 0.0757, 9_999_999
    v, enumerated = _weights("webb", 8, draws, 20240607)
    assert not enumerated
    boot = _collapsed(v)
    assert round(boot.t_stat(0.04), 4) == 2.0194
    p = boot.p_value(0.04)
    assert abs(p - p_pub) < _mc_tol(p_pub, draws, b_pub) + 5e-5, (p, p_pub)


# --------------------------------------------------------------------------------------- nlsw88
def _nlsw88() -> dict[str, np.ndarray]:
    f = _data("nlsw88.csv")
    # The 2,246 women less 29 with wage, tenure, ttl_exp, collgrad or industry missing.
    assert f.height == 2217
    return {c: f.get_column(c).to_numpy().astype(float) for c in f.columns}


def test_nlsw88_industry_clusters_match_boottest_within_monte_carlo_error() -> None:
    # regress wage tenure ttl_exp collgrad, cluster(industry); boottest tenure (999 random Rademacher
    # draws); we enumerate all 2^12 sign vectors, so only boottest's p carries Monte Carlo error.
    x = _nlsw88()
    v, enumerated = _weights("rademacher", 12, 999, None)
    assert enumerated and v.shape == (4096, 12)
    controls = np.column_stack([np.ones(x["wage"].shape[0]), x["ttl_exp"], x["collgrad"]])
    boot = _ols(x["wage"], x["tenure"], controls, x["industry"], v, k=4, enumerated=True)
    assert round(boot.t_stat(0.0), 4) == 1.0772  # t(11) = 1.0772 (both runs)
    p = boot.p_value(0.0)
    # Stata: Prob>|t| = 0.2843, CI [-.03531, .1968]; WildBootTests.jl: 0.3113, [-.03654, .1864].
    for p_pub, (lo, hi) in ((0.2843, (-0.03531, 0.1968)), (0.3113, (-0.03654, 0.1864))):
        assert abs(p - p_pub) < _mc_tol(p, 999), (p, p_pub)
        # At boottest's bounds its p was alpha; ours is within Monte Carlo error of it.
        for bound in (lo, hi):
            assert abs(boot.p_value(bound) - ALPHA) < _mc_tol(ALPHA, 999), bound


def test_nlsw88_absorbed_industry_granular_clusters_match_boottest() -> None:
    # keep if e(sample); gen id = _n - cond(_n>1000, 1000, 0)
    # areg wage tenure ttl_exp collgrad, cluster(id) a(industry); boottest tenure, reps(9999)
    x = _nlsw88()
    n = x["wage"].shape[0]
    row = np.arange(1, n + 1)
    cluster = row - np.where(row > 1000, 1000, 0)  # 1,000 pairs and 217 singletons: G = 1,217
    industry = np.unique(x["industry"], return_inverse=True)[1]
    controls = np.column_stack([np.eye(int(industry.max()) + 1)[industry], x["ttl_exp"], x["collgrad"]])
    draws, b_pub = 19_999, 9_999
    v, enumerated = _weights("rademacher", 1217, draws, 20240607)
    assert not enumerated
    boot = _ols(x["wage"], x["tenure"], controls, cluster, v, k=15)
    assert round(boot.t_stat(0.0), 4) == 0.7606  # t(1216) = 0.7606 (both runs)
    p = boot.p_value(0.0)
    # Stata: Prob>|t| = 0.4440, CI [-.02671, .06292]; WildBootTests.jl: 0.4512, [-.02807, .06363].
    for p_pub, (lo, hi) in ((0.4440, (-0.02671, 0.06292)), (0.4512, (-0.02807, 0.06363))):
        assert abs(p - p_pub) < _mc_tol(p_pub, draws, b_pub), (p, p_pub)
        for bound in (lo, hi):
            assert abs(boot.p_value(bound) - ALPHA) < _mc_tol(ALPHA, draws, b_pub), bound
