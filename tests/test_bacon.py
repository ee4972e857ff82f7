"""Tests of the Goodman-Bacon decomposition and the de Chaisemartin–D'Haultfœuille TWFE weights (issue 6).

What is checked:

- the decomposition's identity (Σ weight × 2×2 = the TWFE β) against direct TWFE fits (numpy least
  squares on dummies; pyfixest for the CR1 SE) on the castle data, on R did's mpdta and on a panel
  with always-treated units, to 1e-10;
- R ``bacondecomp``'s published castle-doctrine numbers to the printed precision, and a hand-computed
  three-unit example (whose numbers Stata ``bacondecomp`` also prints);
- the refusals (unbalanced panel, covariates, weights);
- the TWFE weights' exact identity β = Σ ω τ on panels built as unit + period effects + D·τ with
  heterogeneous τ, switching treatment, unbalanced and weighted cells; the package ``TwoWayFEWeights``'
  own expected numbers on its wagepan example; Corollary 1's two summary measures against their
  definitions (a constructed minimiser and a numerical minimisation).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stopdisparity.errors import SparseCellWarning, SpecificationError
from stopdisparity.models._bacon import (
    BACON_TYPES,
    ZERO_WEIGHT,
    _sigma_all_cells,
    bacon_decomposition,
    twfe_weights,
)
from stopdisparity.models._staggered_data import prepare_staggered
from stopdisparity.results import TIDY_COLUMNS, check_tidy

REFERENCE = Path(__file__).parent / "reference"
#: The decomposition and the weights are algebraic identities: only rounding separates the two sides.
ATOL_IDENTITY = 1e-10
#: pyfixest's CRV1 SE and ours are the same formula; 1e-8 relative leaves room for its demeaning.
RTOL_PYFIXEST = 1e-8


# ----------------------------------------------------------------------------------------- helpers
def twfe_lstsq(frame: pl.DataFrame, y: str, d: str, unit: str, period: str, w: str | None = None) -> float:
    """β on ``d`` from least squares on explicit unit and period dummies (independent of the module)."""
    u = frame.get_column(unit).to_numpy()
    t = frame.get_column(period).to_numpy()
    uu, ui = np.unique(u, return_inverse=True)
    tt, ti = np.unique(t, return_inverse=True)
    x = np.zeros((frame.height, 1 + uu.size + tt.size - 1))
    x[:, 0] = frame.get_column(d).cast(pl.Float64).to_numpy()
    x[np.arange(frame.height), 1 + ui] = 1.0
    keep = ti > 0
    x[np.nonzero(keep)[0], uu.size + ti[keep]] = 1.0
    yy = frame.get_column(y).cast(pl.Float64).to_numpy()
    if w is not None:
        sw = np.sqrt(frame.get_column(w).cast(pl.Float64).to_numpy())
        x, yy = x * sw[:, None], yy * sw
    return float(np.linalg.lstsq(x, yy, rcond=None)[0][0])


def castle() -> pl.DataFrame:
    c = pl.read_csv(REFERENCE / "bacondecomp" / "castle.csv")
    g = c.filter(pl.col("post") == 1).group_by("state").agg(pl.col("year").min().alias("g"))
    return c.join(g, on="state", how="left").with_columns(pl.col("g").fill_null(0))


def decompose(frame: pl.DataFrame, **kw: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SparseCellWarning)
        return bacon_decomposition(prepare_staggered(frame, **kw))  # type: ignore[arg-type]


def castle_result():
    return decompose(castle(), yname="l_homicide", idname="state", tname="year", gname="g")


def mpdta() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "mpdta" / "mpdta.csv").rename({"first.treat": "g"})


def staggered_frame(
    *, seed: int, starts: dict[int, int], periods: range, noise: float = 0.3, dynamic: bool = True
) -> pl.DataFrame:
    """A balanced panel: unit and period effects, effects growing with time since adoption, noise."""
    rng = np.random.default_rng(seed)
    rows = []
    alpha = rng.normal(0, 1, len(starts))
    gamma = rng.normal(0, 1, len(periods))
    for i, (u, g) in enumerate(starts.items()):
        for j, t in enumerate(periods):
            on = g > 0 and t >= g
            eff = (1.0 + (0.5 * (t - g) if dynamic else 0.0)) if on else 0.0
            rows.append({"u": u, "t": t, "g": g, "y": alpha[i] + gamma[j] + eff + rng.normal(0, noise)})
    return pl.DataFrame(rows).with_columns(
        ((pl.col("g") > 0) & (pl.col("t") >= pl.col("g"))).cast(pl.Int64).alias("d")
    )


# ============================================================================== Goodman-Bacon
@pytest.mark.reference
def test_castle_matches_bacondecomp_published() -> None:
    pub = json.loads((REFERENCE / "bacondecomp" / "published.json").read_text())
    res = castle_result()
    by = {r["type"]: r for r in res.by_type.iter_rows(named=True)}
    half = 0.5 * 10 ** -pub["type_table"]["printed_precision"]
    for row in pub["type_table"]["rows"]:
        ours = by[row["ours"]]
        assert abs(ours["weight"] - row["weight"]) <= half, row
        assert abs(ours["estimate"] - row["avg_est"]) <= half, row
    assert by["treated_vs_already_treated"]["weight"] == 0.0
    assert math.isnan(by["treated_vs_already_treated"]["estimate"])
    assert abs(res.weighted_sum - pub["type_table"]["weighted_sum_of_decomposition"]) <= 0.5e-4
    # lm()'s coefficient is printed to 15 significant digits, past what two different least-squares
    # algorithms agree on in double precision (ours differs in the 16th); 1e-14 is ~100 ulp
    assert res.beta == pytest.approx(pub["twfe"]["estimate"], abs=1e-14)
    nb = pub["twfe"]["weights_printed_there"]
    for theirs, ours in (
        ("Early vs Late", "earlier_vs_later"),
        ("Late vs Early", "later_vs_earlier"),
        ("Treated vs Untreated", "treated_vs_untreated"),
    ):
        assert abs(by[ours]["weight"] - nb[theirs]) <= 0.5e-8


@pytest.mark.reference
def test_castle_identity_and_se_against_pyfixest() -> None:
    import pyfixest as pf

    res = castle_result()
    c = castle().with_columns(pl.col("post").cast(pl.Float64))
    direct = twfe_lstsq(c, "l_homicide", "post", "state", "year")
    assert abs(res.beta - direct) < ATOL_IDENTITY
    assert abs(res.weighted_sum - direct) < ATOL_IDENTITY
    assert res.two_by_twos.get_column("weight").sum() == pytest.approx(1.0, abs=1e-14)
    assert (res.two_by_twos.get_column("weight") > 0).all()
    fit = pf.feols("l_homicide ~ post | state + year", data=c.to_pandas(), vcov={"CRV1": "state"})
    assert res.beta == pytest.approx(float(fit.coef()["post"]), rel=RTOL_PYFIXEST)
    assert res.std_error == pytest.approx(float(fit.se()["post"]), rel=RTOL_PYFIXEST)
    # 5 cohorts: 10 cohort pairs × 2 directions + 5 against the never-treated
    assert res.two_by_twos.height == 25


@pytest.mark.reference
def test_mpdta_identity() -> None:
    import pyfixest as pf

    m = mpdta()
    res = decompose(m, yname="lemp", idname="countyreal", tname="year", gname="g")
    m = m.with_columns(((pl.col("g") > 0) & (pl.col("year") >= pl.col("g"))).cast(pl.Float64).alias("d"))
    direct = twfe_lstsq(m, "lemp", "d", "countyreal", "year")
    assert abs(res.beta - direct) < ATOL_IDENTITY
    assert abs(res.weighted_sum - direct) < ATOL_IDENTITY
    fit = pf.feols("lemp ~ d | countyreal + year", data=m.to_pandas(), vcov={"CRV1": "countyreal"})
    assert res.std_error == pytest.approx(float(fit.se()["d"]), rel=RTOL_PYFIXEST)
    types = res.by_type.filter(pl.col("weight") > 0).get_column("type").to_list()
    assert types == ["earlier_vs_later", "later_vs_earlier", "treated_vs_untreated"]
    # cohorts 2004, 2006, 2007: 3 pairs × 2 + 3 against the 309 never-treated counties
    assert res.two_by_twos.height == 9
    never = res.two_by_twos.filter(pl.col("control") == "never")
    assert never.get_column("n_control_units").to_list() == [309, 309, 309]
    assert res.n_obs == 2500 and res.n_clusters == 500
    # clusters coarser than units: the state (countyreal is a county FIPS code)
    m = m.with_columns((pl.col("countyreal") // 1000).alias("state"))
    by_state = decompose(m, yname="lemp", idname="countyreal", tname="year", gname="g", cluster="state")
    fit = pf.feols("lemp ~ d | countyreal + year", data=m.to_pandas(), vcov={"CRV1": "state"})
    assert by_state.n_clusters == m.get_column("state").n_unique()
    assert by_state.std_error == pytest.approx(float(fit.se()["d"]), rel=RTOL_PYFIXEST)


def test_hand_computed_three_units() -> None:
    """Goodman-Bacon's textbook case: unit 1 never treated, 2 from t=5 (+2), 3 from t=8 (+4), T=10.

    Every 2×2 is exact (no noise): 2 vs never = 2, 3 vs never = 4, 2 vs 3 (earlier vs later) = 2, 3 vs
    2 (later vs earlier) = 4. With :math:`\\bar D_2 = .6`, :math:`\\bar D_3 = .3` the unnormalised
    weights are .6·.4 = .24, .3·.7 = .21, .3·(1-.6) = .12 and .3·.3 = .09 (total .66). Stata
    ``bacondecomp Y D, ddetail`` prints the same (Early_v_Late 2 / .1818, Late_v_Early 4 / .1364,
    Never_v_timing 2.9333 / .6818; Statalist thread 1751536).
    """
    rows = []
    for u, g, eff in ((1, 0, 0.0), (2, 5, 2.0), (3, 8, 4.0)):
        for t in range(1, 11):
            on = g > 0 and t >= g
            rows.append({"id": u, "t": t, "g": g, "y": 0.3 * u + 0.1 * t**2 + (eff if on else 0.0)})
    res = decompose(pl.DataFrame(rows), yname="y", idname="id", tname="t", gname="g")
    two = {(r["treated"], r["control"]): r for r in res.two_by_twos.iter_rows(named=True)}
    expect = {
        ("5", "never"): (2.0, 0.24, "treated_vs_untreated", 1, 10),
        ("8", "never"): (4.0, 0.21, "treated_vs_untreated", 1, 10),
        ("5", "8"): (2.0, 0.12, "earlier_vs_later", 1, 7),
        ("8", "5"): (4.0, 0.09, "later_vs_earlier", 5, 10),
    }
    assert set(two) == set(expect)
    for key, (est, w, kind, lo, hi) in expect.items():
        r = two[key]
        assert r["estimate"] == pytest.approx(est, abs=1e-12)
        assert r["weight"] == pytest.approx(w / 0.66, abs=1e-12)
        assert (r["type"], r["first_period"], r["last_period"]) == (kind, lo, hi)
    by = {r["type"]: r for r in res.by_type.iter_rows(named=True)}
    assert by["treated_vs_untreated"]["estimate"] == pytest.approx((0.24 * 2 + 0.21 * 4) / 0.45)
    assert by["treated_vs_untreated"]["weight"] == pytest.approx(0.45 / 0.66)
    assert res.beta == pytest.approx((0.24 * 2 + 0.21 * 4 + 0.12 * 2 + 0.09 * 4) / 0.66, abs=1e-12)


def test_always_treated_and_planted_effect() -> None:
    """Always-treated units as controls; a constant effect makes every 2×2 equal to it; identity."""
    starts = {u: g for u, g in enumerate([0, 0, 0, 2001, 2001, 2004, 2004, 2004, 2006, 2000, 2000, 2000])}
    # constant effect, no noise: every 2x2 (forbidden ones included) recovers the planted 1.0
    flat = staggered_frame(seed=3, starts=starts, periods=range(2000, 2009), noise=0.0, dynamic=False)
    res = decompose(flat, yname="y", idname="u", tname="t", gname="g")
    assert np.allclose(res.two_by_twos.get_column("estimate").to_numpy(), 1.0, atol=1e-12)
    assert res.beta == pytest.approx(1.0, abs=1e-12)
    # dynamic effects with noise: identity against the direct fit; forbidden comparisons are biased down
    dyn = staggered_frame(seed=4, starts=starts, periods=range(2000, 2009), noise=0.3)
    res = decompose(dyn, yname="y", idname="u", tname="t", gname="g")
    assert abs(res.weighted_sum - twfe_lstsq(dyn, "y", "d", "u", "t")) < ATOL_IDENTITY
    by = {r["type"]: r for r in res.by_type.iter_rows(named=True)}
    assert set(t for t in BACON_TYPES if by[t]["weight"] > 0) == set(BACON_TYPES)
    assert sum(by[t]["weight"] for t in BACON_TYPES) == pytest.approx(1.0, abs=1e-14)
    already = res.two_by_twos.filter(pl.col("type") == "treated_vs_already_treated")
    assert already.get_column("control").unique().to_list() == ["always"]
    assert already.get_column("n_control_units").to_list() == [3, 3, 3]
    assert by["later_vs_earlier"]["estimate"] < by["earlier_vs_later"]["estimate"]
    assert res.lineage["n_always_treated"] == 3


def test_refusals_say_why() -> None:
    m = mpdta()
    with pytest.raises(SpecificationError, match="covariates were given"):
        decompose(m, yname="lemp", idname="countyreal", tname="year", gname="g", xnames=["lpop"])
    weighted = m.with_columns(pl.lit(2.0).alias("pop_w"))
    with pytest.raises(SpecificationError, match=r"unweighted TWFE regression.*stop panels"):
        decompose(weighted, yname="lemp", idname="countyreal", tname="year", gname="g", weights="pop_w")
    holed = m.filter(~((pl.col("countyreal") == 8001) & (pl.col("year") == 2005)))
    with pytest.raises(SpecificationError, match="unbalanced"):
        decompose(holed, yname="lemp", idname="countyreal", tname="year", gname="g", balanced=False)


def test_tidy_contract_and_json() -> None:
    res = castle_result()
    t = check_tidy(res.tidy())
    assert tuple(t.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    terms = t.get_column("term").to_list()
    assert terms[0] == "twfe" and terms[1:5] == list(BACON_TYPES)
    assert all(x.startswith("2x2:") for x in terms[5:]) and len(terms) == 5 + 25
    assert "2x2:2005 vs 2006" in terms and "2x2:2006 vs never" in terms
    first = t.row(0, named=True)
    assert first["estimate"] == res.beta and first["weight"] == 1.0 and first["n_clusters"] == 50
    assert 0 < first["p_value"] < 1 and first["ci_low"] < res.beta < first["ci_high"]
    assert (t.get_column("estimator") == "bacon").all()
    two = t.filter(pl.col("term").str.starts_with("2x2:"))
    assert two.get_column("weight").sum() == pytest.approx(1.0, abs=1e-14)
    assert two.get_column("std_error").null_count() == two.height
    assert {"type", "treated", "control", "weight"} <= set(t.columns)
    doc = json.loads(t.write_json())
    assert doc[4]["estimate"] is None and doc[4]["weight"] == 0.0  # no always-treated units
    assert isinstance(doc[5]["estimate"], float) and doc[5]["treated"] == "2005"
    with pytest.warns(SparseCellWarning, match="2005: 1"):
        bacon_decomposition(
            prepare_staggered(castle(), yname="l_homicide", idname="state", tname="year", gname="g")
        )


# ============================================================================== TWFE weights
def switching_cells(seed: int, *, weighted: bool, holes: bool) -> pl.DataFrame:
    """Unit + period effects + D·τ with heterogeneous τ; D switches on and off; optional holes/weights."""
    rng = np.random.default_rng(seed)
    n_u, n_t = 25, 9
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(2010, 2010 + n_t), n_u)
    # staggered starts (early adopters' late cells get negative weights), some agreements ending
    start = rng.choice([2010, 2011, 2012, 2014, 2016, 9999], n_u, p=[0.25, 0.2, 0.15, 0.15, 0.1, 0.15])
    end = np.where(rng.uniform(size=n_u) < 0.3, start + rng.integers(2, 5, n_u), 9999)
    d = ((t >= start[u]) & (t < end[u])).astype(np.int64)
    tau = rng.normal(1.0, 2.0, u.size)
    y = rng.normal(0, 1, n_u)[u] + rng.normal(0, 1, n_t)[t - 2010] + d * tau
    f = pl.DataFrame({"unit": u, "period": t, "d": d, "tau": tau, "y": y})
    if weighted:
        f = f.with_columns(pl.Series("stops", rng.integers(0, 60, u.size).astype(float)))
    if holes:
        f = f.filter(pl.Series(rng.uniform(size=u.size) > 0.15))
    return f


@pytest.mark.parametrize(("weighted", "holes"), [(False, False), (True, False), (False, True), (True, True)])
def test_twfe_weights_exact_identity(weighted: bool, holes: bool) -> None:
    f = switching_cells(11, weighted=weighted, holes=holes)
    w = "stops" if weighted else None
    res = twfe_weights(f, unit="unit", period="period", treated="d", weight=w, outcome="y")
    kept = f.filter(pl.col("stops") > 0) if weighted else f
    assert abs(res.beta - twfe_lstsq(kept, "y", "d", "unit", "period", w)) < ATOL_IDENTITY
    cells = res.cells.join(f.select("unit", "period", "tau"), on=["unit", "period"], how="left")
    assert abs(res.beta - float((cells["weight"] * cells["tau"]).sum())) < ATOL_IDENTITY
    assert cells.get_column("weight").sum() == pytest.approx(1.0, abs=1e-12)
    assert (cells.get_column("share") * cells.get_column("normalized_weight")).sum() == pytest.approx(1.0)
    assert res.n_treated_cells == kept.filter(pl.col("d") == 1).height
    assert res.n_positive + res.n_negative + res.n_zero == res.n_treated_cells
    assert res.n_negative > 0 and res.sum_negative < 0
    assert res.sum_positive + res.sum_negative == pytest.approx(1.0, abs=1e-12)


@pytest.mark.reference
def test_twfe_weights_se_against_pyfixest() -> None:
    import pyfixest as pf

    f = switching_cells(5, weighted=True, holes=True).filter(pl.col("stops") > 0)
    res = twfe_weights(f, unit="unit", period="period", treated="d", weight="stops", outcome="y")
    fit = pf.feols(
        "y ~ d | unit + period", data=f.to_pandas(), weights="stops", vcov={"CRV1": "unit"}, fixef_tol=1e-13
    )
    assert res.beta == pytest.approx(float(fit.coef()["d"]), rel=RTOL_PYFIXEST)
    assert res.std_error == pytest.approx(float(fit.se()["d"]), rel=RTOL_PYFIXEST)


def test_twfe_weights_agree_with_bacon_on_absorbing_panel() -> None:
    m = mpdta()
    m = m.with_columns(((pl.col("g") > 0) & (pl.col("year") >= pl.col("g"))).cast(pl.Int64).alias("d"))
    tw = twfe_weights(m, unit="countyreal", period="year", treated="d", outcome="lemp")
    bc = decompose(m, yname="lemp", idname="countyreal", tname="year", gname="g")
    assert abs(tw.beta - bc.beta) < ATOL_IDENTITY and tw.std_error == pytest.approx(bc.std_error, rel=1e-10)
    # absorbing: the weights fall with time since adoption; the latest treated periods of the earliest
    # cohort are the ones that can turn negative (de Chaisemartin & D'Haultfœuille 2020, Section 3)
    e = tw.cells.join(m.select("countyreal", "year", "g"), on=["countyreal", "year"]).with_columns(
        (pl.col("year") - pl.col("g")).alias("e")
    )
    by_e = e.group_by("e").agg(pl.col("normalized_weight").mean()).sort("e").get_column("normalized_weight")
    assert (by_e.diff().drop_nulls() < 0).all()


def test_summary_measures_match_their_definitions() -> None:
    f = switching_cells(21, weighted=True, holes=False)
    res = twfe_weights(f, unit="unit", period="period", treated="d", weight="stops", outcome="y")
    share = res.cells.get_column("share").to_numpy()
    big_w = res.cells.get_column("normalized_weight").to_numpy()
    omega = res.cells.get_column("weight").to_numpy()
    # (i): effects proportional to W - 1 give β and ATT 0 with standard deviation sigma_fe (the minimum)
    var_w = float((share * (big_w - 1) ** 2).sum())
    delta = res.beta / var_w * (big_w - 1)
    assert float((omega * delta).sum()) == pytest.approx(res.beta, abs=1e-12)
    assert float((share * delta).sum()) == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(float((share * delta**2).sum())) == pytest.approx(res.sigma_fe, rel=1e-12)
    # (ii): numerical minimisation of the share-weighted variance of effects of the sign opposite to β
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    k = 9
    p = rng.uniform(0.5, 2.0, k)
    p /= p.sum()
    ww = np.array([2.4, 1.9, 1.5, 1.1, 0.8, 0.6, 0.0, -0.4, -1.2])
    ww = ww / float((p * ww).sum())
    om = p * ww
    beta = 0.7
    best = math.inf
    for _ in range(8):
        sol = minimize(
            lambda x: float((p * (x - (p * x).sum()) ** 2).sum()),
            -rng.uniform(0, 3, k),
            method="SLSQP",
            bounds=[(None, 0.0)] * k,
            constraints=[{"type": "eq", "fun": lambda x: float((om * x).sum()) - beta}],
            options={"ftol": 1e-15, "maxiter": 500},
        )
        if sol.success:
            best = min(best, float(sol.fun))
    assert _sigma_all_cells(beta, om, p) == pytest.approx(math.sqrt(best), rel=1e-5)
    assert math.isnan(_sigma_all_cells(beta, p * np.abs(ww) / float((p * np.abs(ww)).sum()), p))


@pytest.mark.reference
def test_wagepan_matches_twowayfeweights() -> None:
    pub = json.loads((REFERENCE / "twowayfeweights" / "published.json").read_text())["values"]
    wp = pl.read_csv(REFERENCE / "twowayfeweights" / "wagepan.csv")
    res = twfe_weights(wp, unit="nr", period="year", treated="union", outcome="lwage")
    assert res.beta == pytest.approx(pub["beta"], rel=1e-12)
    assert (res.n_positive, res.n_negative, res.n_treated_cells) == (
        pub["nr_plus"],
        pub["nr_minus"],
        pub["tot_cells"],
    )
    assert res.n_positive + res.n_negative == pub["nr_weights"] and res.n_zero == 49
    assert res.sum_positive == pytest.approx(pub["sum_plus"], abs=0.5e-6)
    assert res.sum_negative == pytest.approx(pub["sum_minus"], abs=0.5e-8)
    n = res.n_treated_cells
    assert res.sigma_fe * math.sqrt((n - 1) / n) == pytest.approx(pub["sensibility"], abs=0.5e-7)
    nonzero = res.cells.filter(pl.col("weight").abs() >= ZERO_WEIGHT)
    stata_ii = _sigma_all_cells(res.beta, nonzero["weight"].to_numpy(), nonzero["share"].to_numpy())
    assert stata_ii == pytest.approx(pub["sensibility2"], abs=0.5e-6)
    # the paper's version keeps the 49 zero-weight cells, which lowers the minimum
    assert res.sigma_fe_all_cells < stata_ii
    t = check_tidy(res.tidy())
    assert t.get_column("term").to_list() == [
        "twfe",
        "n_treated_cells",
        "n_positive",
        "n_negative",
        "sum_negative",
        "sigma_fe",
        "sigma_fe_all_cells",
    ]
    assert t.filter(pl.col("term") == "n_negative").row(0, named=True)["weight"] == pytest.approx(
        res.sum_negative
    )


def test_twfe_weights_refusals_and_no_outcome() -> None:
    f = switching_cells(2, weighted=True, holes=False)
    res = twfe_weights(f, unit="unit", period="period", treated="d")
    assert math.isnan(res.beta) and math.isnan(res.sigma_fe) and res.n_treated_cells > 0
    assert json.loads(res.tidy().write_json())[0]["estimate"] is None
    with pytest.raises(SpecificationError, match="must be 0/1"):
        twfe_weights(f.with_columns(pl.col("d") * 2), unit="unit", period="period", treated="d")
    with pytest.raises(SpecificationError, match="one row per cell"):
        twfe_weights(pl.concat([f, f.head(1)]), unit="unit", period="period", treated="d")
    with pytest.raises(SpecificationError, match="finite and >= 0"):
        twfe_weights(
            f.with_columns(-pl.col("stops")), unit="unit", period="period", treated="d", weight="stops"
        )
    with pytest.raises(SpecificationError, match="null values"):
        twfe_weights(
            f.with_columns(pl.lit(None).alias("y")), unit="unit", period="period", treated="d", outcome="y"
        )
    with pytest.raises(SpecificationError, match="not in the cells frame"):
        twfe_weights(f, unit="unit", period="quarter", treated="d")
    timing = f.with_columns((pl.col("period") >= 2014).cast(pl.Int64).alias("d"))
    with pytest.raises(SpecificationError, match="collinear"):
        twfe_weights(timing, unit="unit", period="period", treated="d")
