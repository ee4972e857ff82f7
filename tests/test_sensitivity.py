"""Rambachan & Roth (2023) bounds (``stopdisparity.models.sensitivity``).

Reference numbers (``tests/reference/honestdid/``, see its SOURCE.md) come from the R HonestDiD
README (Medicaid expansion): the printed tables and the full-precision values of the README's own
knitr cache. The smoothness FLCI is checked twice: with the exact folded-normal quantile (this
package) against R within R's simulation error, and with R's own simulated quantile (R's
Mersenne-Twister + inversion ``rnorm`` reproduced below, checked against the README's ``rnorm``
draws) to ~1e-8.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import optimize, stats
from scipy.special import ndtri

from stopdisparity.errors import SpecificationError
from stopdisparity.models.event_study import fit_event_study_panel
from stopdisparity.models.sensitivity import (
    SensitivityResult,
    _Flci,
    _folded_normal_quantile,
    honest_bounds,
    sensitivity,
)
from stopdisparity.results import check_tidy

REF = Path(__file__).parent / "reference" / "honestdid"
# R simulates the folded-normal quantile from 1e6 normal draws; its standard error at the 0.95
# quantile is ~0.002 on c = 1.96, i.e. ~2e-5 on these half-lengths (sd(theta) ~ 0.009): 3e-5 covers it.
ATOL_FLCI_EXACT = 3e-5
# With R's own draws the only differences left are solver tolerances: R's CVXR/ECOS vs our SLSQP.
ATOL_FLCI_RRNG = 1e-7
# At M = 0 R solves min-bias-given-h at h = h_min with ECOS, whose solution moves the center by ~1e-5;
# ours is the closed-form minimum-variance estimator (checked independently below).
ATOL_FLCI_RRNG_M0 = 2e-5


def _load(name: str) -> dict:
    return json.loads((REF / name).read_text())


def _grid_step(sd: float, points: int = 1000) -> float:
    return 40 * sd / (points - 1)


def r_rnorm(n: int, seed: int = 0) -> np.ndarray:
    """R's ``set.seed(seed); rnorm(n)`` (Mersenne-Twister, Inversion): R's RNG.c scrambling + MT19937."""
    s = seed & 0xFFFFFFFF
    for _ in range(50):
        s = (69069 * s + 1) & 0xFFFFFFFF
    key = []
    for _ in range(625):
        s = (69069 * s + 1) & 0xFFFFFFFF
        key.append(s)
    bg = np.random.MT19937()
    bg.state = {"bit_generator": "MT19937", "state": {"key": np.array(key[1:], dtype=np.uint32), "pos": 624}}
    u = bg.random_raw(2 * n).astype(np.float64) * 2.3283064365386963e-10
    u = np.clip(u, 0.5 * 2.328306437080797e-10, 1 - 0.5 * 2.328306437080797e-10)
    big = 134217728.0
    return ndtri((np.floor(big * u[0::2]) + u[1::2]) / big)


# ----------------------------------------------------------------------------- published numbers
@pytest.mark.reference
def test_r_rng_reproduces_readme_draws() -> None:
    """The README's fake control is ``set.seed(0); rnorm(N)``: our R RNG gives the same numbers."""
    df = pl.read_csv(REF / "df_nonstaggered.csv")
    np.testing.assert_allclose(r_rnorm(df.height), df.get_column("control").to_numpy(), rtol=0, atol=1e-12)


@pytest.mark.reference
def test_medicaid_betahat_from_data_matches_r() -> None:
    """pyfixest on the README's data reproduces R fixest's cached betahat/sigma (controls variant)."""
    pf = pytest.importorskip("pyfixest")
    df = pl.read_csv(REF / "df_nonstaggered.csv").to_pandas()
    cols = []
    for y in (2008, 2009, 2010, 2011, 2012, 2014, 2015):
        df[f"ev{y}"] = ((df.year == y) & (df.D == 1)).astype(float)
        cols.append(f"ev{y}")
    ctrl = _load("medicaid_controls.json")
    fit = pf.feols(
        "dins ~ " + "+".join(cols) + " + control | stfips + year", data=df, vcov={"CRV1": "stfips"}
    )
    np.testing.assert_allclose(fit.coef()[cols].to_numpy(), ctrl["betahat"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(fit._vcov)[:7, :7], ctrl["sigma"], rtol=1e-6, atol=1e-14)
    main = _load("medicaid.json")
    fit0 = pf.feols("dins ~ " + "+".join(cols) + " | stfips + year", data=df, vcov={"CRV1": "stfips"})
    np.testing.assert_allclose(fit0.coef()[cols].to_numpy(), main["betahat"], rtol=1e-8, atol=1e-12)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["medicaid.json", "medicaid_controls.json"])
def test_smoothness_flci_matches_printed_readme(name: str) -> None:
    """FLCI (exact quantile) vs the README's printed tables and R's full-precision cache."""
    d = _load(name)
    r = d["results"]["sd_first_post"]
    res = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=5,
        num_post=2,
        method="smoothness",
        m=[x["m"] for x in r["printed"]],
        l_vec=np.array(r["l_vec"], dtype=float),
    )
    for row, (lo, hi) in zip(r["printed"], res.ci, strict=True):
        for ours, pub in ((lo, row["lb"]), (hi, row["ub"])):
            # printed to 3 significant digits: within half a unit of the last digit + R's simulation error
            digit = 10 ** (math.floor(math.log10(abs(pub))) - 2)
            assert abs(ours - pub) <= digit / 2 + ATOL_FLCI_EXACT, (row, ours)
    cached = r.get("cached_full_precision", [])
    for row, (lo, hi) in zip(cached, res.ci[: len(cached)], strict=True):
        assert abs(lo - row["lb"]) < ATOL_FLCI_EXACT and abs(hi - row["ub"]) < ATOL_FLCI_EXACT, (row, lo, hi)


@pytest.mark.reference
def test_smoothness_flci_with_r_draws_matches_r_exactly() -> None:
    """With R's simulated folded-normal quantile the FLCI equals R's to solver precision."""
    name = "medicaid.json"
    draws = r_rnorm(10**6)

    def r_quantile(p: float, mu: float) -> float:
        return float(np.quantile(np.abs(draws + mu), p))

    d = _load(name)
    r = d["results"]["sd_first_post"]
    flci = _Flci(np.array(d["sigma"]), 5, 2, np.array(r["l_vec"], dtype=float), 0.05, quantile=r_quantile)
    b = np.array(d["betahat"])
    for row in r["cached_full_precision"]:
        if row["m"] not in (0.0, 0.01, 0.02, 0.05):  # 0.03, 0.04: same regime as 0.05 (h = h_max)
            continue
        c, h = flci.interval(b, row["m"])
        tol = ATOL_FLCI_RRNG_M0 if row["m"] == 0 else ATOL_FLCI_RRNG
        assert abs(c - h - row["lb"]) < tol and abs(c + h - row["ub"]) < tol, (row, c - h, c + h)
    printed = {x["m"]: x for x in r["printed"]}
    for m in (0.01, 0.04):  # rounded to 3 significant digits, ours reproduces the printed table exactly
        c, h = flci.interval(b, m)
        assert float(f"{c - h:.3g}") == pytest.approx(printed[m]["lb"], abs=1e-12)
        assert float(f"{c + h:.3g}") == pytest.approx(printed[m]["ub"], abs=1e-12)


@pytest.mark.reference
def test_relative_magnitudes_matches_r_cache_exactly() -> None:
    """C-LF vs R's cached run on the same 1000-point grid (README cache chunk 5): the same grid points."""
    d = _load("medicaid.json")
    r = d["results"]["rm_first_post_rerun"]
    res = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=5,
        num_post=2,
        method="relative_magnitudes",
        m=[x["m"] for x in r["cached_full_precision"]],
        l_vec=np.array(r["l_vec"], dtype=float),
        breakdown=False,
    )
    for row, (lo, hi) in zip(r["cached_full_precision"], res.ci, strict=True):
        assert lo == pytest.approx(row["lb"], abs=1e-9) and hi == pytest.approx(row["ub"], abs=1e-9), (
            row,
            lo,
            hi,
        )


@pytest.mark.reference
@pytest.mark.parametrize("key", ["rm_first_post", "rm_average"])
def test_relative_magnitudes_matches_readme_within_grid(key: str) -> None:
    """Printed README table (chunk 4) and the average-effect cache (chunk 7).

    Those two runs did not put their accepted points on the grid our (and today's R's) default builds
    from these inputs (older HonestDiD/fixest at render time), so the endpoints can differ by up to one
    step of each grid: tolerance 2 grid steps (~7e-4 here; the CIs are ~0.04-0.12 wide).
    """
    d = _load("medicaid.json")
    r = d["results"][key]
    lv = np.array(r["l_vec"], dtype=float)
    res = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=5,
        num_post=2,
        method="relative_magnitudes",
        m=[x["m"] for x in r["cached_full_precision"]],
        l_vec=lv,
    )
    tol = 2 * _grid_step(res.std_error)
    for row, (lo, hi) in zip(r["cached_full_precision"], res.ci, strict=True):
        assert abs(lo - row["lb"]) <= tol and abs(hi - row["ub"]) <= tol, (row, lo, hi)
    if "original_ci" in r:
        assert res.original[0] == pytest.approx(r["original_ci"]["lb"], abs=1e-8)
        assert res.original[1] == pytest.approx(r["original_ci"]["ub"], abs=1e-8)
    if key == "rm_first_post":
        # README: "the breakdown value for a significant effect is Mbar = 2" (CI at 1.5 excludes 0, at 2 not)
        assert 1.5 < res.breakdown <= 2.0


@pytest.mark.reference
def test_relative_magnitudes_sun_abraham_example() -> None:
    """README's Sun & Abraham example (10 pre, 6 post, 100 grid points), Mbar <= 1.

    R's cached run is off its own default grid too (its Mbar >= 1.5 upper ends exceed 20 sd, which no
    default grid reaches), so within 2 steps of a 100-point grid (~5e-3 on CIs 0.07-0.12 wide).
    """
    d = _load("sunab.json")
    r = d["results"]["rm_first_post"]
    rows = [x for x in r["cached_full_precision"] if x["m"] <= 1.0]
    res = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=10,
        num_post=6,
        method="relative_magnitudes",
        m=[x["m"] for x in rows],
        l_vec=np.array(r["l_vec"], dtype=float),
        grid_points=100,
        breakdown=False,
    )
    tol = 2 * _grid_step(res.std_error, 100)
    for row, (lo, hi) in zip(rows, res.ci, strict=True):
        assert abs(lo - row["lb"]) <= tol and abs(hi - row["ub"]) <= tol, (row, lo, hi)


# ------------------------------------------------------------------------------------ properties
def _ar_sigma(n: int, sd: float = 0.01, rho: float = 0.5) -> np.ndarray:
    idx = np.arange(n)
    return sd**2 * rho ** np.abs(idx[:, None] - idx[None, :])


def test_flci_m0_one_pre_period_is_linear_extrapolation() -> None:
    """K = 1, M = 0: the only linear-trend-free estimator is l'b_post + (sum_s s l_s) b_{-1}."""
    rng = np.random.default_rng(1)
    sig = _ar_sigma(4)
    b = rng.normal(0, 0.01, 4)
    lv = np.array([0.2, 0.3, 0.5])
    res = honest_bounds(b, sig, num_pre=1, num_post=3, method="smoothness", m=[0.0], l_vec=lv)
    v = np.concatenate([[1 * 0.2 + 2 * 0.3 + 3 * 0.5], lv])
    center = float(v @ b)
    half = 1.959963984540054 * math.sqrt(float(v @ sig @ v))
    assert res.ci[0] == pytest.approx((center - half, center + half), abs=1e-12)


def test_flci_m0_is_minimum_variance_trend_free_estimator() -> None:
    """K = 4, M = 0: the FLCI is the minimum-variance estimator unbiased for any linear trend (GLS)."""
    sig = _ar_sigma(7, rho=0.6)
    b = np.linspace(-0.01, 0.03, 7)
    t = np.array([-4, -3, -2, -1, 1, 2, 3], dtype=float)
    lv = np.full(3, 1 / 3)
    res = honest_bounds(b, sig, num_pre=4, num_post=3, method="smoothness", m=[0.0], l_vec=lv)

    # independent: minimise Var(v'b_pre + l'b_post) subject to v't_pre + l't_post = 0 (SLSQP)
    def var(v: np.ndarray) -> float:
        a = np.concatenate([v, lv])
        return float(a @ sig @ a)

    cons = {"type": "eq", "fun": lambda v: v @ t[:4] + lv @ t[4:]}
    opt = optimize.minimize(var, np.zeros(4), constraints=[cons], method="SLSQP", options={"ftol": 1e-16})
    a = np.concatenate([opt.x, lv])
    center, half = float(a @ b), 1.959963984540054 * math.sqrt(var(opt.x))
    assert res.ci[0][0] == pytest.approx(center - half, abs=1e-8)
    assert res.ci[0][1] == pytest.approx(center + half, abs=1e-8)


def test_flci_bias_formula_equals_lp_worst_case() -> None:
    """The closed-form worst-case bias equals the LP max of |v'd_pre + l'd_post| over Delta^SD(1)."""
    k, tbar = 3, 3
    lv = np.array([0.5, 0.2, 0.3])
    flci = _Flci(_ar_sigma(k + tbar), k, tbar, lv, 0.05)
    rng = np.random.default_rng(3)
    n = k + tbar + 1  # with the reference (index k, fixed at 0)
    second = np.zeros((n - 2, n))
    for i in range(n - 2):
        second[i, i : i + 3] = [1, -2, 1]
    for _ in range(5):
        w = rng.normal(size=k)
        w[-1] += flci.total - w.sum()  # meet the sum constraint
        v = flci.d @ w
        obj = np.concatenate([v, [0.0], lv])
        a_ub = np.vstack([second, -second])
        bounds = [(None, None)] * n
        bounds[k] = (0.0, 0.0)
        worst = -optimize.linprog(-obj, A_ub=a_ub, b_ub=np.ones(2 * (n - 2)), bounds=bounds).fun
        assert flci.bias_unit(w) == pytest.approx(worst, rel=1e-9)


def test_folded_normal_quantile() -> None:
    assert _folded_normal_quantile(0.95, 0.0) == pytest.approx(stats.norm.isf(0.025), abs=1e-12)
    c = _folded_normal_quantile(0.95, 3.0)
    assert stats.norm.cdf(c - 3) - stats.norm.cdf(-c - 3) == pytest.approx(0.95, abs=1e-12)


@pytest.mark.parametrize("method", ["smoothness", "relative_magnitudes"])
def test_robust_ci_widens_with_m(method: str) -> None:
    d = _load("medicaid.json")
    ms = [0.0, 0.01, 0.02, 0.04] if method == "smoothness" else [0.0, 0.5, 1.0, 2.0]
    res = honest_bounds(
        np.array(d["betahat"]), np.array(d["sigma"]), num_pre=5, num_post=2, method=method, m=ms
    )
    step = _grid_step(res.std_error) if method == "relative_magnitudes" else 1e-9
    lows = [lo for lo, _ in res.ci]
    highs = [hi for _, hi in res.ci]
    assert all(b <= a + step for a, b in itertools.pairwise(lows)), lows
    assert all(b >= a - step for a, b in itertools.pairwise(highs)), highs
    assert highs[-1] - lows[-1] > 1.5 * (highs[0] - lows[0])
    # the breakdown value separates the CIs that exclude 0 from those that include it
    for m, (lo, hi) in zip(ms, res.ci, strict=True):
        if m < res.breakdown * 0.98:
            assert lo > 0 or hi < 0
        elif m > res.breakdown * 1.02:
            assert lo <= 0 <= hi


def test_smoothness_covers_truth_under_linear_pretrend() -> None:
    """Planted linear violation delta_t = 0.02 t (SE 0.01): the naive CI misses, Delta^SD(0) covers."""
    rng = np.random.default_rng(20240607)
    t = np.array([-4, -3, -2, -1, 0, 1, 2], dtype=float)  # 4 leads, 3 post (event times 0..2 -> 1..3)
    t_rel = np.where(t >= 0, t + 1, t)  # periods relative to the reference
    tau = np.array([0.0, 0.0, 0.0, 0.0, 0.05, 0.06, 0.07])
    beta = tau + 0.02 * t_rel
    sig = _ar_sigma(7, sd=0.01, rho=0.3)
    chol = np.linalg.cholesky(sig)
    truth = float(np.mean(tau[4:]))
    naive = sd_cover = 0
    draws = 100
    flci = None
    for _ in range(draws):
        b = beta + chol @ rng.standard_normal(7)
        res = honest_bounds(b, sig, num_pre=4, num_post=3, method="smoothness", m=[0.0], breakdown=False)
        naive += res.original[0] <= truth <= res.original[1]
        sd_cover += res.ci[0][0] <= truth <= res.ci[0][1]
        flci = res
    assert flci is not None
    assert naive / draws < 0.05
    assert sd_cover / draws >= 0.88


def test_relative_magnitudes_no_violation_near_naive() -> None:
    """Mbar = 0 forces post violations to 0: the C-LF set is close to the naive CI (within 10%)."""
    d = _load("medicaid.json")
    res = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=5,
        num_post=2,
        method="relative_magnitudes",
        m=[0.0],
    )
    (lo, hi), (nlo, nhi) = res.ci[0], res.original
    assert abs(lo - nlo) < 0.1 * (nhi - nlo) and abs(hi - nhi) < 0.1 * (nhi - nlo)


# --------------------------------------------------------------------------------- tidy, adapter
def test_tidy_contract_and_alpha_refit() -> None:
    d = _load("medicaid.json")
    res = honest_bounds(
        np.array(d["betahat"]), np.array(d["sigma"]), num_pre=5, num_post=2, method="smoothness", m=[0, 0.01]
    )
    assert isinstance(res, SensitivityResult)
    tab = check_tidy(res.tidy())
    assert tab.get_column("term").to_list() == ["original", "sd:M=0", "sd:M=0.01"]
    assert tab.columns[12:] == ["method", "m", "breakdown", "center"]
    assert tab.get_column("inference").to_list()[1] == "Rambachan & Roth (2023) smoothness, FLCI"
    assert tab.get_column("estimate").n_unique() == 1
    assert tab.get_column("breakdown").to_list() == [res.breakdown] * 3
    wide = res.tidy(alpha=0.01)
    assert (
        wide.get_column("ci_high") - wide.get_column("ci_low")
        > tab.get_column("ci_high") - tab.get_column("ci_low")
    ).all()
    rm = honest_bounds(
        np.array(d["betahat"]),
        np.array(d["sigma"]),
        num_pre=5,
        num_post=2,
        method="relative_magnitudes",
        m=[1],
    )
    assert rm.tidy().get_column("term").to_list() == ["original", "rm:Mbar=1"]
    assert rm.inference == "Rambachan & Roth (2023) relative magnitudes, C-LF"
    assert rm.lineage["versions"]["numpy"]


def test_bad_inputs() -> None:
    b, s = np.zeros(4), np.eye(4)
    with pytest.raises(SpecificationError, match="num_pre"):
        honest_bounds(b, s, num_pre=3, num_post=2, method="smoothness", m=[0])
    with pytest.raises(SpecificationError, match="method"):
        honest_bounds(b, s, num_pre=2, num_post=2, method="other", m=[0])  # type: ignore[arg-type]
    with pytest.raises(SpecificationError, match="m must"):
        honest_bounds(b, s, num_pre=2, num_post=2, method="smoothness", m=[-1])
    with pytest.raises(SpecificationError, match="l_vec"):
        honest_bounds(b, s, num_pre=2, num_post=2, method="smoothness", m=[0], l_vec=np.zeros(2))


def _panel() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    units, periods = 40, 12
    rows = []
    for u in range(units):
        g = 5 + u % 4 if u < 28 else 0
        for t in range(periods):
            eff = 0.5 * (t - g + 1) if g and t >= g else 0.0
            rows.append({"id": u, "t": t, "g": g, "y": 0.1 * u + 0.05 * t + eff + rng.normal(0, 0.3)})
    return pl.DataFrame(rows)


def test_adapter_event_study_excludes_binned_endpoints() -> None:
    es = fit_event_study_panel(_panel(), yname="y", idname="id", tname="t", gname="g", window=(-4, 4))
    assert set(es.binned) == {-4, 4}
    res = sensitivity(es, method="smoothness", m=[0.0, 0.1])
    assert res.lineage["pre_event_times"] == [-3, -2]
    assert res.lineage["post_event_times"] == [0, 1, 2, 3]
    assert res.lineage["excluded_binned"] == [-4, 4]
    idx = [es.estimated.index(e) for e in (0, 1, 2, 3)]
    assert res.estimate == pytest.approx(float(np.mean(es.estimates[idx])), abs=1e-12)
    one = sensitivity(es, method="relative_magnitudes", m=[1.0], event_time=2, breakdown=False)
    assert one.estimate == pytest.approx(float(es.estimates[es.estimated.index(2)]), abs=1e-12)
    tab = check_tidy(one.tidy())
    assert tab.get_column("n_clusters").to_list()[0] == es.clusters.g
    assert "event time 2" in tab.get_column("estimand")[0]
    with pytest.raises(SpecificationError, match="event_time"):
        sensitivity(es, method="smoothness", m=[0], event_time=-2)


@dataclass(frozen=True)
class _Staggered:
    event_times: tuple[int, ...]
    coefficients: np.ndarray
    vcov: np.ndarray


def test_adapter_protocol_object() -> None:
    """An object with event_times / coefficients / vcov; a listed reference (-1, coefficient 0) is dropped."""
    d = _load("medicaid.json")
    b, sig = np.array(d["betahat"]), np.array(d["sigma"])
    full = np.zeros((8, 8))
    full[:7, :7] = sig
    times = (-6, -5, -4, -3, -2, 0, 1, -1)  # the README's 2008-2012, 2014, 2015 around 2013
    obj = _Staggered(times, np.array([*b, 0.0]), full)
    res = sensitivity(obj, method="smoothness", m=[0.0], event_time=0)
    direct = honest_bounds(
        b, sig, num_pre=5, num_post=2, method="smoothness", m=[0.0], l_vec=np.array([1.0, 0.0])
    )
    np.testing.assert_allclose(res.ci, direct.ci, rtol=0, atol=1e-12)
    assert res.post_event_times == (0, 1)
    gap = _Staggered((-7, -5, -4, -3, -2, 0, 1), b, sig)
    with pytest.raises(SpecificationError, match="consecutive"):
        sensitivity(gap, method="smoothness", m=[0])
    with pytest.raises(SpecificationError, match="event_times"):
        sensitivity(object(), method="smoothness", m=[0])


def test_arp_statistic_by_dual_vertices_equals_lp() -> None:
    """max over the dual vertices of y'lambda = min over tau of max_j (y_j - X_j tau)/sd_j (linprog)."""
    from stopdisparity.models.sensitivity import _dual_vertices

    rng = np.random.default_rng(7)
    for m_rows, k in ((6, 2), (8, 3), (4, 0)):
        x = rng.normal(size=(m_rows, k))
        sd = rng.uniform(0.5, 2.0, m_rows)
        lam = _dual_vertices(sd, x)
        for _ in range(5):
            y = rng.normal(size=m_rows)
            # variables (eta, tau): min eta s.t. sd_j eta + X_j tau >= y_j
            lp = optimize.linprog(
                np.concatenate([[1.0], np.zeros(k)]),
                A_ub=-np.column_stack([sd, x]),
                b_ub=-y,
                bounds=[(None, None)] * (k + 1),
            )
            if lp.status == 3:  # unbounded: no vertex
                assert lam.shape[1] == 0
            else:
                assert float((y @ lam).max()) == pytest.approx(lp.fun, abs=1e-9)


def test_relative_magnitudes_covers_truth_under_bounded_violation() -> None:
    """A violation whose post changes stay within the largest pre change (Mbar = 1) and the naive CI misses.

    delta: pre changes up to 0.03 (SE 0.01), post drift 0.03 per period; tau = 0.05 at every post period.
    """
    rng = np.random.default_rng(11)
    delta = np.array([-0.09, -0.06, -0.03, 0.03, 0.06])  # event times -3, -2, -1 | 1, 2 (ref 0)
    tau = np.array([0.0, 0.0, 0.0, 0.05, 0.05])
    sig = _ar_sigma(5, sd=0.01, rho=0.3)
    chol = np.linalg.cholesky(sig)
    naive = robust = 0
    draws = 40
    for _ in range(draws):
        b = tau + delta + chol @ rng.standard_normal(5)
        res = honest_bounds(
            b,
            sig,
            num_pre=3,
            num_post=2,
            method="relative_magnitudes",
            m=[1.0],
            grid_points=200,
            breakdown=False,
        )
        naive += res.original[0] <= 0.05 <= res.original[1]
        robust += res.ci[0][0] <= 0.05 <= res.ci[0][1]
    assert naive / draws < 0.1
    assert robust / draws >= 0.85


def test_flci_two_stage_optimum_equals_direct_minimisation() -> None:
    """The h-then-bias optimisation reaches the smallest half-length over all w (Nelder-Mead, 5 starts)."""
    sig = _ar_sigma(6, sd=0.01, rho=0.5)
    lv = np.array([0.6, 0.3, 0.1])
    flci = _Flci(sig, 3, 3, lv, 0.05)
    rng = np.random.default_rng(2)
    for m in (0.002, 0.01, 0.05):
        _, half = flci.optimum(m)

        def half_of(u: np.ndarray, m: float = m) -> float:
            w = np.append(u, flci.total - u.sum())  # the sum constraint
            h = math.sqrt(flci._var(w))
            return h * _folded_normal_quantile(0.95, m * flci.bias_unit(w) / h)

        best = min(
            optimize.minimize(
                half_of, flci.w_minvar[:2] + rng.normal(0, 1, 2), method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000},
            ).fun
            for _ in range(5)
        )  # fmt: skip
        assert half <= best * (1 + 1e-6)
        assert half == pytest.approx(best, rel=1e-4)


@pytest.mark.parametrize("method", ["smoothness", "relative_magnitudes"])
def test_bounds_are_scale_equivariant(method: str) -> None:
    """Outcome in other units (x 1000): intervals scale by 1000 (smoothness: with M x 1000)."""
    d = _load("medicaid.json")
    b, sig = np.array(d["betahat"]), np.array(d["sigma"])
    ms = [0.01] if method == "smoothness" else [1.0]
    small = honest_bounds(b, sig, num_pre=5, num_post=2, method=method, m=ms, breakdown=False)
    big_m = [1000 * x for x in ms] if method == "smoothness" else ms
    big = honest_bounds(1000 * b, 1e6 * sig, num_pre=5, num_post=2, method=method, m=big_m, breakdown=False)
    np.testing.assert_allclose(np.array(big.ci), 1000 * np.array(small.ci), rtol=1e-6)


def test_relative_magnitudes_grid_follows_a_far_estimate() -> None:
    """t = 40: R's +-20 sd grid around 0 would miss the set; the grid moves to the estimate and widens."""
    sig = _ar_sigma(5, sd=0.01, rho=0.3)
    b = np.array([0.0, 0.005, -0.004, 0.4, 0.41])
    res = honest_bounds(
        b,
        sig,
        num_pre=3,
        num_post=2,
        method="relative_magnitudes",
        m=[0.0, 50.0],
        grid_points=200,
        breakdown=False,
    )
    (lo0, hi0), (lo1, hi1) = res.ci
    assert lo0 <= res.estimate <= hi0 and abs(lo0 - res.original[0]) < 0.1 * (hi0 - lo0)
    assert lo1 < lo0 and hi1 > hi0  # Mbar = 50: wider than the first grid (+-20 sd around 0.405)
    grids = res.lineage["theta_grids"]
    assert grids[0][0] > 0 and grids[1][2] > 200  # centered on the estimate; widened for Mbar = 50
