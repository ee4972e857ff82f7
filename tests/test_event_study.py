"""Tests of the event study (issue 5, section 2).

Estimand checked against the synthetic truth: the TWFE event-study coefficient with never-treated
controls, which is unbiased when effects vary by event time only. The synthetic designs here are
therefore ``design="random"`` with never-treated counties and no cohort heterogeneity
(``cohort_slope=0``); the default ``dynamic`` scenario (all counties treated, cohort-varying effects)
is the staggered estimators' test, not this one's.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit

from effective_reference import dense_effective_clusters
from stopdisparity.errors import FewClustersWarning, SparseCellWarning, SpecificationError
from stopdisparity.models import _event
from stopdisparity.models.event_study import EventStudyResult, fit_event_study
from stopdisparity.results import TIDY_COLUMNS, check_tidy
from stopdisparity.synth import SynthSpec, cells, truth

RTOL_GLM = 1e-6
RTOL_OLS_COEF = 1e-8
RTOL_OLS_SE = 1e-6


# ----------------------------------------------------------------------------------------- helpers
def make_panel(
    *,
    seed: int = 0,
    units: int = 14,
    years: tuple[int, int] = (2000, 2011),
    states: tuple[str, ...] = ("AA", "BB"),
    adoption: dict[int, int] | None = None,
    effect: float = 0.4,
    size: float = 30.0,
) -> pl.DataFrame:
    """A yearly panel of 'hispanic' and 'white' stops; ``adoption`` maps unit -> adoption year."""
    rng = np.random.default_rng(seed)
    adoption = (
        {0: 2004, 1: 2005, 2: 2006, 3: 2007, 4: 2009, 5: 2010, 6: 2005} if adoption is None else adoption
    )
    periods = list(range(years[0], years[1] + 1))
    alpha = rng.normal(-1.2, 0.5, units)
    gamma = rng.normal(0, 0.2, (len(states), len(periods)))
    rows = []
    for u in range(units):
        s = u % len(states)
        ft = adoption.get(u, 0)
        for j, t in enumerate(periods):
            eff = effect * (1 + 0.2 * (t - ft)) if ft and t >= ft else 0.0
            eta = alpha[u] + gamma[s, j] + eff + rng.normal(0, 0.2)
            n = rng.poisson(size)
            f = rng.binomial(n, expit(eta))
            fips = f"{u:05d}"
            rows.append((fips, states[s], t, "hispanic", int(f), ft))
            rows.append((fips, states[s], t, "white", int(n - f), ft))
    return pl.DataFrame(
        rows,
        schema={
            "county_fips": pl.String,
            "state": pl.String,
            "period": pl.Int64,
            "race": pl.String,
            "stops": pl.Int64,
            "first_treated": pl.Int64,
        },
        orient="row",
    )


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewClustersWarning)
        return fn(*args, **kwargs)


def wide_of(panel: pl.DataFrame, *, lo: int, hi: int, ref: int) -> pd.DataFrame:
    """Cells with focal/reference/n and a hand-computed binned event time (ref for never-treated)."""
    return (
        panel.group_by("county_fips", "state", "period")
        .agg(
            pl.col("stops").filter(pl.col("race") == "hispanic").sum().alias("focal"),
            pl.col("stops").filter(pl.col("race") == "white").sum().alias("reference"),
            pl.col("first_treated").first(),
        )
        .with_columns((pl.col("focal") + pl.col("reference")).alias("n"))
        .filter(pl.col("n") > 0)
        .with_columns(
            pl.when(pl.col("first_treated") == 0)
            .then(ref)
            .otherwise((pl.col("period") - pl.col("first_treated")).clip(lo, hi))
            .alias("event_bin"),
            (pl.col("focal") / pl.col("n")).alias("share"),
        )
        .sort("county_fips", "period")
        .to_pandas()
    )


def dummy_design(wide: pd.DataFrame, events: list[int]) -> pd.DataFrame:
    """[event dummies, const, unit dummies, state×period dummies], full rank."""
    X = pd.DataFrame({f"e{e}": (wide["event_bin"] == e).astype(float).to_numpy() for e in events})
    X["const"] = 1.0
    c = pd.get_dummies(wide["county_fips"], prefix="c", dtype=float).iloc[:, 1:]
    key = wide["state"] + "_" + wide["period"].astype(str)
    p = pd.get_dummies(key, prefix="p", dtype=float)
    drop = [p.columns[0]]
    for s in sorted(wide["state"].unique())[1:]:
        drop.append(next(col for col in p.columns if col.startswith(f"p_{s}_")))
    X = pd.concat([X, c, p.drop(columns=drop)], axis=1)
    assert np.linalg.matrix_rank(X.to_numpy()) == X.shape[1]
    return X


# ------------------------------------------------------------------- equality with explicit dummies
@pytest.mark.parametrize("anticipation", [0, 1])
def test_logit_equals_statsmodels_stop_level_dummies(anticipation):
    """The cell logit equals statsmodels' stop-level logit on hand-built event, unit, state×year dummies."""
    panel = make_panel(seed=3, size=20)
    lo, hi = -4, 5
    ref = -1 - anticipation
    res = quiet(fit_event_study, panel, period_length="year", anticipation=anticipation)
    assert res.reference == ref
    wide = wide_of(panel, lo=lo, hi=hi, ref=ref)
    events = [e for e in range(lo, hi + 1) if e != ref]
    assert list(res.estimated) == events
    X = dummy_design(wide, events)
    reps = np.r_[wide["focal"].to_numpy(), wide["reference"].to_numpy()].astype(int)
    Xs = pd.concat([X, X], ignore_index=True)
    Xs = Xs.loc[Xs.index.repeat(reps)].reset_index(drop=True)
    y = np.repeat(np.r_[np.ones(len(wide)), np.zeros(len(wide))], reps)
    groups = pd.factorize(np.repeat(np.r_[wide["county_fips"], wide["county_fips"]], reps))[0]
    sm_fit = sm.GLM(y, Xs, family=sm.families.Binomial()).fit(
        tol=1e-14, maxiter=200, cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}
    )
    names = [f"e{e}" for e in events]
    np.testing.assert_allclose(res.estimates, sm_fit.params[names].to_numpy(), rtol=RTOL_GLM)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov_cr0)), sm_fit.bse[names].to_numpy(), rtol=RTOL_GLM)
    # The full CR0 covariance (the sup-t band and the Wald test use it), not only its diagonal.
    np.testing.assert_allclose(
        res.vcov_cr0, sm_fit.cov_params().loc[names, names].to_numpy(), rtol=1e-5, atol=1e-12
    )


def test_linear_equals_pyfixest():
    pf = pytest.importorskip("pyfixest")
    panel = make_panel(seed=5)
    res = quiet(fit_event_study, panel, estimator="linear", period_length="year", inference="cluster")
    wide = wide_of(panel, lo=-4, hi=5, ref=-1)
    fit = pf.feols(
        "share ~ i(event_bin, ref=-1) | county_fips + state^period",
        data=wide,
        weights="n",
        vcov={"CRV1": "county_fips"},
    )
    tidy = fit.tidy()
    got = {int(re.search(r"(-?\d+)\]?$", str(name)).group(1)): row for name, row in tidy.iterrows()}
    ours = res.tidy().filter(~pl.col("reference"))
    for r in ours.iter_rows(named=True):
        pr = got[r["event_time"]]
        assert r["estimate"] == pytest.approx(pr["Estimate"], rel=RTOL_OLS_COEF)
        assert r["std_error"] == pytest.approx(pr["Std. Error"], rel=RTOL_OLS_SE)
        assert r["p_value"] == pytest.approx(pr["Pr(>|t|)"], rel=1e-5, abs=1e-12)


# --------------------------------------------------------------------------- synthetic truths
@pytest.fixture(scope="module")
def dynamic_fit():
    spec = SynthSpec(scenario="dynamic", design="random", all_treated=False, cohort_slope=0.0, n_treated=50)
    kw = {"seed": 5, "rows": 3_000_000, "years": (2004, 2014)}
    frame = cells(spec, period="month", **kw).filter(pl.col("agency") == "state_patrol")
    return fit_event_study(frame), truth(spec, **kw), frame


def test_dynamic_effects_track_event_year_truths(dynamic_fit):
    """Monthly synth panel, effects growing by event year (no cohort heterogeneity, never-treated
    controls): each coefficient is within 3 SE of the stop-weighted truth for its event year; the
    binned +5 bin pools years with the same (capped) effect, the binned -4 bin zero effects."""
    res, tr, _ = dynamic_fit
    by_year = {e["event_year"]: e["att_logodds"] for e in tr["event_time_years"]}
    assert by_year[5] == pytest.approx(by_year[7])  # the effect is capped from year 5: binning is harmless
    assert res.months_per_period == 1 and res.event_unit == "year"
    t = res.tidy().filter(~pl.col("reference"))
    assert t.height == 9
    for r in t.iter_rows(named=True):
        assert abs(r["estimate"] - by_year[r["event_time"]]) < 3 * r["std_error"], r
        assert r["band_low"] < r["ci_low"] < r["ci_high"] < r["band_high"]
    post = t.filter(pl.col("event_time") >= 0).get_column("estimate").to_numpy()
    assert np.all(np.diff(post) > -0.05)  # the growth is visible
    pre = res.pretrend_test()
    assert pre["leads"] == [-3, -2] and pre["df"] == 2
    assert not pre["reject"] and pre["p_value"] > 0.05


def test_event_years_from_monthly_periods(dynamic_fit):
    """Event year = floor((period - first_treated) / 12) on a monthly panel."""
    res, _, _ = dynamic_fit
    s = res.sample.filter(pl.col("first_treated") > 0)
    rel = s.get_column("period") - s.get_column("first_treated")
    np.testing.assert_array_equal(s.get_column("event_time").to_numpy(), np.floor_divide(rel.to_numpy(), 12))
    by_rel = dict(zip(rel.to_list(), s.get_column("event_time").to_list(), strict=True))
    assert (by_rel[-1], by_rel[-12], by_rel[-13], by_rel[0], by_rel[11], by_rel[12]) == (-1, -1, -2, 0, 0, 1)
    never = res.sample.filter(pl.col("first_treated") == 0)
    assert never.height > 0 and never.get_column("event_bin").null_count() == never.height
    # N treated units per event time counts the counties with a cell in the bin.
    n_units = s.group_by("event_bin").agg(pl.col("unit").n_unique())
    assert dict(n_units.iter_rows()) == dict(res.n_treated_units)


def test_constant_effect_flat_and_leads_zero():
    spec = SynthSpec(scenario="constant", design="random", n_treated=50)
    kw = {"seed": 5, "rows": 3_000_000, "years": (2004, 2014)}
    frame = cells(spec, period="month", **kw).filter(pl.col("agency") == "state_patrol")
    res = fit_event_study(frame)
    t = res.tidy().filter(~pl.col("reference"))
    for r in t.iter_rows(named=True):
        target = 0.3 if r["event_time"] >= 0 else 0.0
        assert abs(r["estimate"] - target) < 3 * r["std_error"], r
    assert res.pretrend_test()["p_value"] > 0.05


def test_wald_rejects_strong_pretrend():
    spec = SynthSpec(scenario="pretrend", design="random", n_treated=50, pretrend=0.2)
    kw = {"seed": 2, "rows": 3_000_000, "years": (2004, 2014)}
    frame = cells(spec, period="month", **kw).filter(pl.col("agency") == "state_patrol")
    res = fit_event_study(frame)
    pre = res.pretrend_test(slope=0.2)
    assert pre["reject"] and pre["p_value"] < 1e-4
    # Leads fall linearly towards the reference (pretrend * (t - adoption) / 12 < 0 before adoption).
    lead = dict(res.tidy().select("event_time", "estimate").iter_rows())
    assert lead[-3] < lead[-2] < 0
    assert pre["power_at_slope"] > 0.95


# ----------------------------------------------------------------------- reference and binning
def test_reference_row_and_anticipation():
    panel = make_panel(seed=1)
    res = quiet(fit_event_study, panel, period_length="year", anticipation=1)
    t = res.tidy()
    ref = t.filter(pl.col("reference"))
    assert ref.get_column("term").to_list() == ["event:-2"]
    assert ref.item(0, "estimate") == 0.0 and ref.item(0, "std_error") is None
    assert ref.item(0, "band_low") is None and ref.item(0, "n_treated_units") > 0
    assert "event:-1" in t.filter(pl.col("estimate").is_not_null() & ~pl.col("reference"))["term"].to_list()
    # The anticipation year -1 is allowed an effect, so it is not a lead of the pre-test; -4 is binned.
    assert res.pretrend_test()["leads"] == [-3]
    base = quiet(fit_event_study, panel, period_length="year")
    assert base.tidy().filter(pl.col("reference"))["term"].to_list() == ["event:-1"]
    assert base.pretrend_test()["leads"] == [-3, -2]


def test_far_lead_goes_into_binned_end_point():
    # Unit 4 adopts in 2009: its 2000-2005 cells are event years -9..-4, all in the -4 bin.
    panel = make_panel(seed=2)
    res = quiet(fit_event_study, panel, period_length="year")
    s = res.sample.filter(pl.col("unit") == "00004")
    far = s.filter(pl.col("event_time") <= -4)
    assert far.height == 6 and far.get_column("event_bin").unique().to_list() == [-4]
    assert s.filter(pl.col("event_time") == 2).get_column("event_bin").to_list() == [2]
    late = res.sample.filter(pl.col("event_time") >= 5)
    assert late.height > 0 and late.get_column("event_bin").unique().to_list() == [5]
    t = res.tidy()
    assert t.filter(pl.col("binned"))["term"].to_list() == ["event:-4", "event:5"]
    n_far = res.sample.filter(pl.col("event_bin") == -4)
    assert t.filter(pl.col("term") == "event:-4").item(0, "n_treated_stops") == n_far["n"].sum()
    assert res.pretrend_test()["leads"] == [-3, -2]  # the binned far lead is not tested

    unbinned = quiet(fit_event_study, panel, period_length="year", bin_endpoints=False)
    assert unbinned.binned == () and unbinned.n_outside_window > 0
    assert unbinned.sample.filter(pl.col("event_time") < -4).height == 0
    assert not unbinned.tidy()["binned"].any()
    assert unbinned.tidy().item(0, "estimate") != t.item(0, "estimate")


def test_missing_event_time_warns_and_is_null():
    panel = make_panel(seed=2, adoption={0: 2004, 1: 2005}, years=(2000, 2007))
    with pytest.warns(SparseCellWarning, match="no treated cells"):
        res = quiet(fit_event_study, panel, period_length="year")
    t = res.tidy()
    assert t.filter(pl.col("term") == "event:5").item(0, "estimate") is None
    assert t.filter(pl.col("term") == "event:5").item(0, "n_treated_units") == 0


# ----------------------------------------------------------------------------- bands and tests
def test_sup_t_band_between_pointwise_and_bonferroni():
    res = quiet(
        fit_event_study,
        make_panel(seed=4),
        period_length="year",
        sup_t_draws=20_000,
        seed=1,
        inference="cluster",
    )
    c = res.sup_t_critical(0.05)
    p = len(res.estimated)
    assert stats.norm.isf(0.025) < c < stats.norm.isf(0.025 / p)
    again = quiet(fit_event_study, make_panel(seed=4), period_length="year", sup_t_draws=20_000, seed=1)
    assert again.sup_t_critical(0.05) == c  # seeded
    t = res.tidy().filter(~pl.col("reference"))
    np.testing.assert_allclose(t["band_high"] - t["estimate"], c * t["std_error"], rtol=1e-12)
    np.testing.assert_allclose(t["estimate"] - t["band_low"], c * t["std_error"], rtol=1e-12)
    # For independent coordinates the critical value solves (1 - 2 sf(c))^p = 0.95.
    draws = _event.sup_t_draws(np.diag([1.0, 4.0, 9.0]), 200_000, 0)
    exact = stats.norm.isf((1 - 0.95 ** (1 / 3)) / 2)
    assert np.quantile(draws, 0.95) == pytest.approx(exact, rel=0.01)


def test_pretrend_power_formula():
    res = quiet(fit_event_study, make_panel(seed=4), period_length="year", inference="cluster")
    pre = res.pretrend_test(slope=0.0)
    assert pre["power_at_slope"] == pytest.approx(0.05)
    s50, s80 = pre["slope_power_50"], pre["slope_power_80"]
    assert 0 < s50 < s80
    assert res.pretrend_test(slope=s50)["power_at_slope"] == pytest.approx(0.5, abs=1e-6)
    assert res.pretrend_test(slope=-s80)["power_at_slope"] == pytest.approx(0.8, abs=1e-6)
    # Monte Carlo: leads drawn from N(s80 * (e - r), V_L) reject 80% of the time.
    idx = [res.estimated.index(e) for e in res.leads]
    v = res.vcov[np.ix_(idx, idx)]
    a = np.array([e - res.reference for e in res.leads], dtype=float)
    rng = np.random.default_rng(0)
    b = rng.multivariate_normal(s80 * a, v, size=20_000)
    w = np.einsum("ij,jk,ik->i", b, np.linalg.inv(v), b)
    assert np.mean(w > stats.chi2.isf(0.05, len(a))) == pytest.approx(0.8, abs=0.015)
    # The Wald statistic itself.
    bl = res.estimates[idx]
    assert pre["statistic"] == pytest.approx(float(bl @ np.linalg.solve(v, bl)))


# --------------------------------------------------------------------------------------- plot
def test_plot_artists_equal_tidy():
    pytest.importorskip("matplotlib")
    res = quiet(fit_event_study, make_panel(seed=4), period_length="year")
    t = res.tidy(0.1)
    fig = res.plot(0.1)
    ax = fig.axes[0]
    by_gid = {a.get_gid(): a for a in ax.get_children() if a.get_gid()}
    est = t.filter(~pl.col("reference") & pl.col("estimate").is_not_null())
    plain, binned, ref = (
        est.filter(~pl.col("binned")),
        est.filter(pl.col("binned")),
        t.filter(pl.col("reference")),
    )
    for gid, frame in (("estimate", plain), ("binned", binned), ("reference", ref)):
        np.testing.assert_allclose(
            by_gid[gid].get_offsets(), frame.select("event_time", "estimate").to_numpy(), rtol=1e-12
        )
    for gid, (low, high) in (("ci", ("ci_low", "ci_high")), ("band", ("band_low", "band_high"))):
        segs = np.array(by_gid[gid].get_segments())
        x = est["event_time"].to_numpy()
        np.testing.assert_allclose(segs[:, :, 0], np.column_stack([x, x]))
        np.testing.assert_allclose(segs[:, :, 1], est.select(low, high).to_numpy(), rtol=1e-12)
    assert ref.item(0, "estimate") == 0.0
    assert list(by_gid["zero"].get_ydata()) == [0, 0]
    assert "log odds" in ax.get_ylabel() and ax.get_xlabel() == "years since adoption"
    assert by_gid["binned"].get_paths()[0] != by_gid["estimate"].get_paths()[0]  # a different marker
    lin = quiet(fit_event_study, make_panel(seed=4), period_length="year", estimator="linear")
    assert "share" in lin.plot().axes[0].get_ylabel()


# ------------------------------------------------------------------------ contract and errors
def test_tidy_contract():
    res = quiet(fit_event_study, make_panel(seed=4), period_length="year", inference="cluster")
    assert isinstance(res, EventStudyResult)
    t = check_tidy(res.tidy())
    assert tuple(t.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    extra = [
        "event_time",
        "binned",
        "reference",
        "n_treated_units",
        "n_treated_stops",
        "band_low",
        "band_high",
    ]
    assert all(c in t.columns for c in extra)
    assert t["term"].to_list() == [f"event:{e}" for e in range(-4, 6)]
    assert set(t["estimator"]) == {"event-study-logit"}
    assert res.coef().equals(t.select("term", "estimate"))
    assert "CR1 clustered by county_fips" in res.vcov_description
    with pytest.raises(AttributeError):
        res.reference = 3  # frozen
    p = t.filter(pl.col("term") == "event:0").row(0, named=True)
    assert p["p_value"] == pytest.approx(2 * stats.norm.sf(abs(p["estimate"] / p["std_error"])))
    assert math.isfinite(p["statistic"])


def test_quarterly_event_time_and_inferred_period_length():
    spec = SynthSpec(scenario="constant", design="random", n_treated=20, states=("SC",))
    frame = cells(spec, seed=3, period="quarter", rows=400_000).filter(pl.col("agency") == "state_patrol")
    res = quiet(fit_event_study, frame, event_unit="quarter", window=(-3, 3))
    assert res.months_per_period == 3
    s = res.sample.filter(pl.col("first_treated") > 0)
    np.testing.assert_array_equal(s["event_time"], s["period"] - s["first_treated"])
    yearly = quiet(fit_event_study, frame)
    s = yearly.sample.filter(pl.col("first_treated") > 0)
    np.testing.assert_array_equal(
        s["event_time"].to_numpy(), np.floor_divide((s["period"] - s["first_treated"]).to_numpy(), 4)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimator": "probit"}, "estimator must be one of"),
        ({"window": (0, 5)}, "window must be"),
        ({"window": (-1, 5)}, "reference event time -1"),
        ({"anticipation": -1}, "anticipation must be"),
        ({"event_unit": "year"}, "period length"),
        ({"period_length": "year", "event_unit": "week"}, "event_unit must be one of"),
        ({"period_length": "year", "weights": "county"}, "weights applies"),
        ({"period_length": "year", "first_treated": "nope"}, "not in data"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(SpecificationError, match=match):
        fit_event_study(make_panel(seed=0), **kwargs)


def test_first_treated_must_be_constant_within_unit():
    panel = make_panel(seed=0).with_columns(
        pl.when((pl.col("county_fips") == "00000") & (pl.col("period") == 2001))
        .then(2003)
        .otherwise(pl.col("first_treated"))
        .alias("first_treated")
    )
    with pytest.raises(SpecificationError, match="constant within"):
        fit_event_study(panel, period_length="year")


# ---------------------------------------------------------------------------------- with_inference
def test_with_inference_replaces_listed_terms_only():
    """A frozen copy: listed terms take the attached p-value, interval and label; std_error, the
    estimates and the sup-t bands stay analytical; other rows are unchanged."""
    from stopdisparity.models._fe import Inference

    res = quiet(fit_event_study, make_panel(seed=2), period_length="year", inference="cluster")
    before = res.tidy()
    inf = Inference("score bootstrap (test)", {"event:1": 0.04}, {"event:1": (0.1, 0.9)})
    new = res.with_inference(inf)
    assert isinstance(new, EventStudyResult) and res.inference is None
    after = new.tidy()
    check_tidy(after)
    for col in ("estimate", "std_error", "statistic", "band_low", "band_high"):
        assert after.get_column(col).equals(before.get_column(col)), col
    row = after.filter(pl.col("term") == "event:1").row(0, named=True)
    assert (row["p_value"], row["ci_low"], row["ci_high"]) == (0.04, 0.1, 0.9)
    assert row["inference"] == "score bootstrap (test)"
    others = ~pl.col("term").is_in(["event:1"])
    assert after.filter(others).equals(before.filter(others))
    assert new.with_inference(Inference("other", {"event:2": 0.5})).tidy().filter(
        pl.col("term") == "event:1"
    ).item(0, "inference") == before.filter(pl.col("term") == "event:1").item(0, "inference")
    with pytest.raises(SpecificationError, match="event:9"):
        res.with_inference(Inference("bad", {"event:9": 0.5}))


@pytest.mark.parametrize("estimator", ["logit", "linear"])
def test_effective_clusters_per_event_time_equal_a_dense_design(estimator):
    """Each estimated event time's G* (tidy ``effective_clusters``) equals the dense-design computation
    with its own contrast; the summary (and the warning) use the average post-adoption coefficient."""
    res = quiet(fit_event_study, make_panel(), period_length="year", window=(-3, 3), estimator=estimator)
    bins = res.sample.get_column("event_bin").fill_null(-(10**6)).to_numpy()
    x = np.column_stack([(bins == e).astype(float) for e in res.estimated])
    tidy = res.tidy()
    for j, e in enumerate(res.estimated):
        dense = dense_effective_clusters(res.sample, x, np.eye(len(res.estimated))[j])
        assert tidy.filter(pl.col("event_time") == e).item(0, "effective_clusters") == pytest.approx(
            dense, rel=1e-9
        )
    assert tidy.filter(pl.col("reference")).item(0, "effective_clusters") is None
    post = np.array([float(e >= 0) for e in res.estimated])
    assert res.clusters.effective == pytest.approx(dense_effective_clusters(res.sample, x, post), rel=1e-9)
    assert res.clusters.effective < res.n_clusters
    assert f"average-post G*={res.clusters.effective:.1f}" in res.clusters.describe()
