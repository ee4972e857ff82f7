"""Callaway & Sant'Anna (2021): R ``did``'s published numbers, the csdid oracle, a planted effect, bootstrap.

References live in ``tests/reference/did_mpdta/``: ``published.json`` (R ``did``'s README output on
``mpdta``, with its URL) and ``csdid_reference.json`` (the independent csdid implementation, written by
``make_reference.py`` there, with its version and calls).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stopdisparity.errors import DroppedRowsWarning, SparseCellWarning, SpecificationError
from stopdisparity.models._cs import CallawaySantAnnaResult, callaway_santanna
from stopdisparity.models._staggered_data import StaggeredPanel, prepare_staggered
from stopdisparity.results import check_tidy

REF = Path(__file__).parent / "reference"
MPDTA = REF / "mpdta" / "mpdta.csv"
PUBLISHED = json.loads((REF / "did_mpdta" / "published.json").read_text())
CSDID = json.loads((REF / "did_mpdta" / "csdid_reference.json").read_text())


def _mpdta() -> pl.DataFrame:
    # lpop_w: a copy of lpop used as a weight; xtv: a time-varying covariate (as in make_reference.py)
    return pl.read_csv(MPDTA).with_columns(
        pl.col("lpop").alias("lpop_w"),
        (pl.col("lpop") + 0.1 * (pl.col("countyreal") * 0.37 + pl.col("year") * 1.3).sin()).alias("xtv"),
    )


def _panel(data: pl.DataFrame | None = None, **kw: object) -> StaggeredPanel:
    d = _mpdta() if data is None else data
    return prepare_staggered(d, yname="lemp", idname="countyreal", tname="year", gname="first.treat", **kw)


def _by_term(res: CallawaySantAnnaResult) -> dict[str, tuple[float, float]]:
    return {t: (float(e), float(s)) for t, e, s in zip(res.terms, res.estimates, res.std_errors, strict=True)}


# ---------------------------------------------------------------------------------- published (R did)
@pytest.mark.reference
def test_published_readme_numbers() -> None:
    """R did's README: every ATT(g,t), the dynamic and the group aggregations, to the printed digits."""
    res = callaway_santanna(_panel(), n_boot=999, seed=1)
    got = _by_term(res)
    tidy = {r["term"]: r for r in res.tidy().iter_rows(named=True)}
    boot = dict(zip(res.terms, res.boot_se, strict=True))
    checks: list[tuple[str, float, float, int]] = []
    for r in PUBLISHED["att_gt"]:
        checks.append((f"gt:{r['g']}:{r['t']}", r["estimate"], r["boot_se"], 4))
    for r in PUBLISHED["dynamic"]["event_times"]:
        checks.append((f"dynamic:{r['e']}", r["estimate"], r["boot_se"], 4))
    checks.append(("dynamic:overall", PUBLISHED["dynamic"]["overall"]["estimate"], 0.0196, 4))
    for r in PUBLISHED["group"]["groups"]:
        checks.append((f"group:{r['g']}", r["estimate"], r["boot_se"], 4))
    for term, est, se, digits in checks:
        assert round(got[term][0], digits) == pytest.approx(est, abs=1e-12), term
        # the README's SEs are bootstrap SEs (1000 draws, unknown seed): Monte Carlo agreement only
        assert boot[term] == pytest.approx(se, rel=0.15), term
        assert tidy[term]["estimate"] == pytest.approx(got[term][0])
    assert round(res.pretrend_test()["p_value"], 5) == PUBLISHED["pretest_pvalue"]
    # group overall is printed with 3 significant digits: -0.031
    assert float(f"{got['group:overall'][0]:.3g}") == PUBLISHED["group"]["overall"]["estimate"]
    assert boot["group:overall"] == pytest.approx(PUBLISHED["group"]["overall"]["boot_se"], rel=0.15)


# ---------------------------------------------------------------------------------- csdid oracle
_CONFIGS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    # name in csdid_reference.json: (prepare_staggered kwargs, callaway_santanna kwargs)
    "never_varying": ({}, {}),
    "notyet_varying": ({}, {"control": "not_yet"}),
    "never_universal": ({}, {"base_period": "universal"}),
    "notyet_universal": ({}, {"control": "not_yet", "base_period": "universal"}),
    "never_varying_lpop": ({"xnames": ["lpop"]}, {}),
    "notyet_varying_lpop": ({"xnames": ["lpop"]}, {"control": "not_yet"}),
    "never_varying_anticipation1": ({}, {"anticipation": 1}),
    "notyet_universal_anticipation1": (
        {},
        {"control": "not_yet", "base_period": "universal", "anticipation": 1},
    ),
    "never_varying_weights_lpop": ({"weights": "lpop"}, {}),
    "notyet_varying_treated_only": ({}, {"control": "not_yet"}),
    "never_varying_xtv": ({"xnames": ["xtv"]}, {}),
    "never_varying_lpop_dr": ({"xnames": ["lpop"]}, {"est_method": "dr"}),
    "notyet_universal_lpop_dr": (
        {"xnames": ["lpop"]},
        {"est_method": "dr", "control": "not_yet", "base_period": "universal"},
    ),
    "never_varying_weights_lpop_lpop_dr": ({"xnames": ["lpop"], "weights": "lpop_w"}, {"est_method": "dr"}),
}
_AGG_PREFIX = {"simple": "simple", "dynamic": "dynamic", "group": "group", "calendar": "calendar"}


@pytest.mark.reference
@pytest.mark.parametrize("name", list(_CONFIGS))
def test_csdid_reference(name: str) -> None:
    """Points to 1e-9 and analytical SEs to 1e-7 (relative) against csdid: every ATT(g,t) and aggregate."""
    prep_kw, cs_kw = _CONFIGS[name]
    ref = CSDID["configs"][name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)
        data = _mpdta().filter(pl.col("first.treat") > 0) if name.endswith("treated_only") else None
        panel = _panel(data, **prep_kw)
        res = callaway_santanna(panel, n_boot=0, **cs_kw)  # type: ignore[arg-type]
    got = _by_term(res)
    gt_terms = [t for t, a in zip(res.terms, res.aggregation, strict=True) if a == "gt"]
    assert gt_terms == [f"gt:{r['g']}:{r['t']}" for r in ref["att_gt"]]
    for r in ref["att_gt"]:
        est, se = got[f"gt:{r['g']}:{r['t']}"]
        assert est == pytest.approx(r["estimate"], abs=1e-9)
        if r["std_error"] is None:  # the universal base period's own cell: 0 by construction, SE undefined
            assert est == 0.0 and math.isnan(se)
        else:
            assert se == pytest.approx(r["std_error"], rel=1e-7)
    pre = res.pretrend_test()
    assert pre["statistic"] == pytest.approx(ref["pretest"]["W"], rel=1e-7)
    assert round(pre["p_value"], 5) == pytest.approx(ref["pretest"]["Wpval"], abs=1e-12)
    for agg in ("simple", "dynamic", "group", "calendar"):
        a = ref["aggte"][agg]
        overall = "simple" if agg == "simple" else f"{agg}:overall"
        assert got[overall][0] == pytest.approx(a["overall_att"], abs=1e-9), overall
        assert got[overall][1] == pytest.approx(a["overall_se"], rel=1e-7), overall
        if agg == "simple":
            continue
        for k, e, s in zip(a["egt"], a["att_egt"], a["se_egt"], strict=True):
            assert got[f"{agg}:{k}"][0] == pytest.approx(e, abs=1e-9), (agg, k)
            if s is None:  # an aggregate of the universal base period's cells only
                assert e == 0.0 and math.isnan(got[f"{agg}:{k}"][1])
            else:
                assert got[f"{agg}:{k}"][1] == pytest.approx(s, rel=1e-7), (agg, k)


@pytest.mark.reference
@pytest.mark.parametrize(
    ("agg", "kw"), [("dynamic_balance1", {"balance_e": 1}), ("dynamic_min-2_max1", {"min_e": -2, "max_e": 1})]
)
def test_csdid_dynamic_options(agg: str, kw: dict[str, int]) -> None:
    """balance_e and min_e/max_e select the same event times and cohorts as csdid's aggte."""
    res = callaway_santanna(_panel(), n_boot=0, **kw)  # type: ignore[arg-type]
    got = _by_term(res)
    a = CSDID["configs"]["never_varying"]["aggte"][agg]
    dyn = [
        t
        for t, g in zip(res.terms, res.aggregation, strict=True)
        if g == "dynamic" and t != "dynamic:overall"
    ]
    assert dyn == [f"dynamic:{e}" for e in a["egt"]]
    for e, v, s in zip(a["egt"], a["att_egt"], a["se_egt"], strict=True):
        assert got[f"dynamic:{e}"][0] == pytest.approx(v, abs=1e-9)
        assert got[f"dynamic:{e}"][1] == pytest.approx(s, rel=1e-7)
    assert got["dynamic:overall"][0] == pytest.approx(a["overall_att"], abs=1e-9)
    assert got["dynamic:overall"][1] == pytest.approx(a["overall_se"], rel=1e-7)


# ---------------------------------------------------------------------------------- planted effect
def _tau(g: int, t: int) -> float:
    """True ATT(g,t): grows with exposure, differs by cohort (0 before adoption)."""
    return 0.0 if g == 0 or t < g else (1.0 + 0.4 * (t - g)) * (0.5 if g == 3 else 1.0 if g == 5 else 2.0)


def _draw(rng: np.random.Generator, n_units: int = 120, n_t: int = 8) -> pl.DataFrame:
    gs = rng.choice([0, 3, 5, 7], size=n_units, p=[0.3, 0.25, 0.25, 0.2])
    alpha = rng.normal(0, 1, n_units) + 0.5 * (gs > 0)  # levels differ by cohort: fine under PT
    lam = np.cumsum(rng.normal(0.2, 0.3, n_t))
    rows_u, rows_t, rows_y = [], [], []
    for i in range(n_units):
        ar = 0.0
        for t in range(1, n_t + 1):
            ar = 0.5 * ar + rng.normal(0, 0.5)
            rows_u.append(i)
            rows_t.append(t)
            rows_y.append(alpha[i] + lam[t - 1] + _tau(int(gs[i]), t) + ar)
    return pl.DataFrame({"id": rows_u, "t": rows_t, "y": rows_y, "g": np.repeat(gs, n_t)})


def _fit_sim(data: pl.DataFrame, **kw: object) -> CallawaySantAnnaResult:
    panel = prepare_staggered(data, yname="y", idname="id", tname="t", gname="g")
    return callaway_santanna(panel, **kw)  # type: ignore[arg-type]


def _truth(res: CallawaySantAnnaResult, weights: dict[int, float]) -> dict[str, float]:
    """True values of every term given the cohort shares (the aggregation weights' population values)."""
    out: dict[str, float] = {}
    cells = [(int(g), int(t)) for g, t, a in zip(res.g, res.t, res.aggregation, strict=True) if a == "gt"]
    for g, t in cells:
        out[f"gt:{g}:{t}"] = _tau(g, t)

    def wavg(cs: list[tuple[int, int]]) -> float:
        w = np.array([weights[g] for g, _ in cs])
        return float(np.sum(w * np.array([_tau(g, t) for g, t in cs])) / w.sum())

    post = [(g, t) for g, t in cells if t >= g]
    out["simple"] = wavg(post)
    es = sorted({t - g for g, t in cells})
    dyn = {e: wavg([(g, t) for g, t in cells if t - g == e]) for e in es}
    out.update({f"dynamic:{e}": v for e, v in dyn.items()})
    out["dynamic:overall"] = float(np.mean([v for e, v in dyn.items() if e >= 0]))
    grp = {g: float(np.mean([_tau(g, t) for gg, t in post if gg == g])) for g in weights}
    out.update({f"group:{g}": v for g, v in grp.items()})
    w = np.array([weights[g] for g in grp])
    out["group:overall"] = float(np.sum(w * np.array(list(grp.values()))) / w.sum())
    cal = {t: wavg([(g, tt) for g, tt in post if tt == t]) for t in sorted({t for _, t in post})}
    out.update({f"calendar:{t}": v for t, v in cal.items()})
    out["calendar:overall"] = float(np.mean(list(cal.values())))
    return out


def test_planted_effect_bias_and_coverage() -> None:
    """Heterogeneous dynamic effects are recovered (no bias beyond 4 Monte Carlo SEs for any term) and the
    analytical 95% intervals cover at close to the nominal rate (100 draws)."""
    rng = np.random.default_rng(20240607)
    n_rep = 100
    weights = {3: 0.25, 5: 0.25, 7: 0.2}
    ests: list[np.ndarray] = []
    cover: list[np.ndarray] = []
    truth_vec: np.ndarray | None = None
    terms: tuple[str, ...] = ()
    for _ in range(n_rep):
        res = _fit_sim(_draw(rng), n_boot=0)
        if truth_vec is None:
            terms = res.terms
            truth = _truth(res, weights)
            truth_vec = np.array([truth[t] for t in terms])
        assert res.terms == terms
        ests.append(res.estimates)
        cover.append(np.abs(res.estimates - truth_vec) <= 1.959964 * res.std_errors)
    assert truth_vec is not None
    est = np.vstack(ests)
    bias = est.mean(axis=0) - truth_vec
    mc_se = est.std(axis=0, ddof=1) / math.sqrt(n_rep)
    z = np.abs(bias) / mc_se
    assert z.max() < 4.0, dict(zip(terms, np.round(z, 2), strict=True))
    # the effects are large relative to the noise: an estimator ignoring heterogeneity would fail above
    assert truth_vec.max() > 20 * mc_se.max()
    cov = np.vstack(cover).mean(axis=0)
    assert 0.92 <= cov.mean() <= 0.975, cov.mean()
    assert cov.min() >= 0.85, dict(zip(terms, cov, strict=True))


# ---------------------------------------------------------------------------------- bootstrap
def test_bootstrap_reproducible_and_close_to_analytic() -> None:
    """Same seed → same p-values and bands; another seed differs; bootstrap SE ≈ analytic SE; the
    simultaneous band is wider than the pointwise interval."""
    panel = _panel()
    a = callaway_santanna(panel, n_boot=499, seed=11).tidy()
    b = callaway_santanna(panel, n_boot=499, seed=11).tidy()
    c = callaway_santanna(panel, n_boot=499, seed=12).tidy()
    assert a.equals(b)
    assert not a.get_column("cband_low").equals(c.get_column("cband_low"))
    res = callaway_santanna(panel, n_boot=999, seed=3)
    ratio = res.boot_se / res.std_errors
    assert np.all(np.abs(ratio - 1) < 0.12), ratio
    t = res.tidy()
    fam = t.filter(
        pl.col("aggregation").is_in(["gt", "dynamic", "group", "calendar"])
        & ~pl.col("term").str.ends_with("overall")
    )
    width_band = fam.get_column("cband_high") - fam.get_column("cband_low")
    width_ci = fam.get_column("ci_high") - fam.get_column("ci_low")
    assert (width_band > width_ci).all()
    # pointwise intervals use the bootstrap SE; std_error stays analytical
    row = t.filter(pl.col("term") == "simple").row(0, named=True)
    i = res.terms.index("simple")
    assert row["std_error"] == pytest.approx(res.std_errors[i])
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.959964 * res.boot_se[i], rel=1e-5)
    assert "bootstrap" in row["inference"]


def test_cluster_analytic_and_bootstrap() -> None:
    """Clustering by state: SE from influence functions summed within state; bootstrap agrees."""
    d = _mpdta().with_columns((pl.col("countyreal") // 1000).alias("state"))
    res = callaway_santanna(_panel(d, cluster="state"), n_boot=999, seed=5)
    unit = callaway_santanna(_panel(d), n_boot=0)
    assert res.n_clusters == d.get_column("state").n_unique() < unit.n_clusters
    np.testing.assert_allclose(res.estimates, unit.estimates, atol=1e-14)
    states = np.array([int(u) // 1000 for u in res.unit_ids])
    psi = res.influence
    manual = np.sqrt(sum((psi[:, states == s].sum(axis=1)) ** 2 for s in np.unique(states))) / res.n_units
    np.testing.assert_allclose(res.std_errors, manual, rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov("gt"))), res.std_errors[: res.n_gt], rtol=1e-12)
    assert not np.allclose(res.std_errors, unit.std_errors)
    assert np.all(np.abs(res.boot_se / res.std_errors - 1) < 0.25)


# ---------------------------------------------------------------------------------- contract, edge cases
def test_tidy_contract_order_and_json() -> None:
    res = callaway_santanna(_panel(), base_period="universal", n_boot=199)
    t = check_tidy(res.tidy(0.1))
    terms = t.get_column("term").to_list()
    kinds = t.get_column("aggregation").to_list()
    order = ["gt", "simple", "dynamic", "group", "calendar"]
    assert [order.index(k) for k in kinds] == sorted(order.index(k) for k in kinds)
    for k in ("dynamic", "group", "calendar"):
        block = [x for x, kk in zip(terms, kinds, strict=True) if kk == k]
        assert block[-1] == f"{k}:overall"
    assert t.columns[12:] == ["aggregation", "g", "t", "e", "n_treated_units", "cband_low", "cband_high"]
    assert set(t.get_column("estimator").unique()) == {"callaway-santanna"}
    assert "parallel trends in levels" in t.get_column("estimand")[0]
    json.dumps(t.to_dicts(), allow_nan=False)  # NaN → null
    # the universal base period's own cell is exactly 0 with no test statistic
    base = t.filter(pl.col("term") == "gt:2004:2003").row(0, named=True)
    assert base["estimate"] == 0.0 and base["e"] == -1
    assert base["std_error"] is None and base["p_value"] is None and base["cband_low"] is None
    assert t.filter(pl.col("term") == "gt:2007:2005").row(0, named=True)["n_treated_units"] == 131
    assert res.lineage["seed"] == 20240607 and res.lineage["n_boot"] == 199
    assert "numpy" in res.lineage["versions"]


def test_no_never_treated_needs_not_yet() -> None:
    d = _mpdta().filter(pl.col("first.treat") > 0)
    panel = _panel(d)
    with pytest.raises(SpecificationError, match="not_yet"):
        callaway_santanna(panel)
    # as R: periods from the last cohort's adoption are dropped and that cohort is the comparison group
    with pytest.warns(DroppedRowsWarning, match="comparison group"):
        res = callaway_santanna(panel, control="not_yet", n_boot=0)
    assert set(res.g[: res.n_gt].astype(int)) == {2004, 2006}
    assert res.t[: res.n_gt].max() == 2006
    y = (
        _mpdta()
        .filter(pl.col("first.treat") > 0)
        .pivot(on="year", index=["countyreal", "first.treat"], values="lemp")
    )
    dy = (y.get_column("2004") - y.get_column("2003")).to_numpy()
    g = y.get_column("first.treat").to_numpy()
    manual = dy[g == 2004].mean() - dy[g != 2004].mean()  # 2006 and 2007 cohorts not yet treated in 2004
    assert _by_term(res)["gt:2004:2004"][0] == pytest.approx(manual, abs=1e-12)


def test_first_period_treated_dropped_and_thin_cells() -> None:
    d = _mpdta()
    ids = d.filter(pl.col("first.treat") == 0).get_column("countyreal").unique().sort().head(4).to_list()
    d = d.with_columns(
        pl.when(pl.col("countyreal").is_in(ids[:3]))
        .then(2003)
        .when(pl.col("countyreal") == ids[3])
        .then(2005)
        .otherwise(pl.col("first.treat"))
        .alias("first.treat")
    )
    with (
        pytest.warns(DroppedRowsWarning, match="first period"),
        pytest.warns(SparseCellWarning, match="2005"),
    ):
        res = callaway_santanna(_panel(d), n_boot=0)
    assert res.n_units == 497 and len(res.dropped_units) == 3
    assert "gt:2005:2005" in res.terms
    i = res.terms.index("gt:2005:2005")
    assert res.n_treated_units[i] == 1


def test_anticipation_and_balance_e_semantics() -> None:
    panel = _panel()
    with pytest.warns(DroppedRowsWarning):
        res = callaway_santanna(panel, anticipation=1, n_boot=0)
    # cohort 2004 has no period before 2004 - 1: dropped; post cells of 2006 use base 2004
    assert 2004 not in set(res.g[: res.n_gt].astype(int))
    y = _mpdta().pivot(on="year", index=["countyreal", "first.treat"], values="lemp")
    g = y.get_column("first.treat").to_numpy()
    dy = (y.get_column("2006") - y.get_column("2004")).to_numpy()
    assert _by_term(res)["gt:2006:2006"][0] == pytest.approx(
        dy[g == 2006].mean() - dy[g == 0].mean(), abs=1e-12
    )
    bal = callaway_santanna(panel, balance_e=1, n_boot=0)
    dyn = [t for t, a in zip(bal.terms, bal.aggregation, strict=True) if a == "dynamic"]
    assert dyn == ["dynamic:-2", "dynamic:-1", "dynamic:0", "dynamic:1", "dynamic:overall"]
    i = bal.terms.index("dynamic:1")
    assert bal.n_treated_units[i] == 60  # cohorts 2004 and 2006 only (2007 is seen at e = 0 only)


def test_bad_options() -> None:
    panel = _panel()
    for kw in ({"control": "notyet"}, {"base_period": "fixed"}, {"anticipation": -1}, {"est_method": "ipw"}):
        with pytest.raises(SpecificationError):
            callaway_santanna(panel, **kw)  # type: ignore[arg-type]
