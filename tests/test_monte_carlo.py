"""Monte Carlo validation of the headline estimators on the synth DGP (issue 5, section 6).

Design M: 50 of NC+SC's 146 counties adopt at random dates in 2006-2010, the rest never do (random
design, a new draw of counties and dates each seed). Design F: the registry's real treated counties
(13 in the window). Panels are shrunk (years and stops), never the number of draws. Acceptance (issue
5): |mean bias| < 3·sd/√R with R ≥ 200 (sd of estimate − truth), coverage of the 95% intervals within
0.916-0.978 at R = 500, each estimator scored against the estimand it claims (synth truth.json).
Each scenario's draws are made once per process (one xdist group per scenario).

Reproduce: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 --dist loadgroup
tests/test_monte_carlo.py`` (a few minutes); the summaries are printed with ``-s``.
"""

from __future__ import annotations

import json
import math
import os
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stopdisparity.models._fe import MIN_EFFECTIVE_CLUSTERS
from stopdisparity.models.counts import fit_counts
from stopdisparity.models.did import fit_did
from stopdisparity.models.event_study import fit_event_study
from stopdisparity.models.sensitivity import sensitivity
from stopdisparity.montecarlo import (
    Method,
    MonteCarloResult,
    cr2_row,
    cr2_term_row,
    effective_clusters_row,
    estimand,
    event_year_estimand,
    inference_size,
    pp_cr2_row,
    run,
    score_bootstrap_test,
    wild_bootstrap_test,
    zero,
)
from stopdisparity.synth import SynthSpec

OUT = os.environ.get("STOPDISPARITY_MC_OUT")
R_COVERAGE = 500  # coverage is asserted at R = 500 (issue 5)
R_BIAS = 200  # bias-only checks need R >= 200
COVERAGE_BAND = (0.916, 0.978)


def _agency(name: str) -> Any:
    return lambda f: f.filter(pl.col("agency") == name)


_sp, _sheriff = _agency("state_patrol"), _agency("sheriff")


# The fits are the analytical CR1 ones (inference="cluster"): their own rows score the CR1 option, and
# the rows of the default CR2 come from cr2() on the same fit (cr2_row), which is what the default fit
# attaches (tests/test_models_did.py::test_default_inference_is_cr2_of_the_cluster_fit).
CR1 = {"inference": "cluster"}


def logit(f: pl.DataFrame) -> Any:
    return fit_did(_sp(f), **CR1)


def linear(f: pl.DataFrame) -> Any:
    return fit_did(_sp(f), estimator="twfe-linear", **CR1)


def counts(f: pl.DataFrame) -> Any:
    return fit_counts(_sp(f), **CR1)


def counts_sheriff(f: pl.DataFrame) -> Any:
    return fit_counts(_sheriff(f), **CR1)


def event_study(f: pl.DataFrame) -> Any:
    """Window -6..+5: four testable leads (-5..-2; -6 is the binned far lead), so a pre-trend shows."""
    return fit_event_study(_sp(f), window=(-6, 5), **CR1)


def absorbing(f: pl.DataFrame) -> Any:
    """The headline with a treatment that ignores exits (on from adoption for good): misspecified in S5."""
    adopted = (pl.col("first_treated") > 0) & (pl.col("period") >= pl.col("first_treated"))
    return fit_did(_sp(f).with_columns(post=adopted), treatment="post", **CR1)


def pretrend_wald(result: Any, **options: Any) -> dict[str, float]:
    t = result.pretrend_test(**options)
    nan = float("nan")
    return {
        "estimate": t["statistic"],
        "p_value": t["p_value"],
        "std_error": nan,
        "ci_low": nan,
        "ci_high": nan,
    }


def pretrend_htz(result: Any) -> dict[str, float]:
    """The joint pre-test with the CR2 covariance and the HTZ reference (Pustejovsky & Tipton 2018)."""
    return pretrend_wald(result, method="cr2")


def pretrend_score(result: Any) -> dict[str, float]:
    """The joint pre-test by the Kline-Santos score bootstrap with all leads = 0 imposed."""
    return pretrend_wald(result, method="score", draws=399, seed=1)


def bounds(method: str, m: float | None) -> Any:
    """Rambachan-Roth robust set (or, with ``m`` None, the naive interval) of the average post effect."""

    def row(result: Any) -> dict[str, float]:
        res = sensitivity(result, method=method, m=[1.0 if m is None else m], breakdown=False)  # type: ignore[arg-type]
        t = res.tidy().row(0 if m is None else 1, named=True)
        # robust sets have no p-value: rejection is not scored for them
        return {
            k: math.nan if t[k] is None else t[k]
            for k in ("estimate", "std_error", "p_value", "ci_low", "ci_high")
        }

    return row


PP = {"column": "pp_change", "std_error": "pp_std_error"}
HEADLINE = [
    Method("logit_cr1", logit),
    Method("g_star", logit, zero, row=effective_clusters_row),
    Method("logit_cr2", logit, row=cr2_row),
    Method("logit_pp", logit, estimand("att_pp"), **PP),
    Method("logit_pp_cr2", logit, estimand("att_pp"), row=pp_cr2_row),
    Method("logit_score", logit, test=score_bootstrap_test(draws=399)),
]
SECONDARY = [
    Method("linear_cr1", linear, estimand("att_share")),
    Method("linear_cr2", linear, estimand("att_share"), row=cr2_row),
    Method("linear_wild", linear, estimand("att_share"), test=wild_bootstrap_test(draws=399)),
    Method("counts_hispanic", counts, term="in_force:hispanic"),
    Method("counts_white", counts, zero, term="in_force:white"),
    Method("counts_difference", counts, term="difference"),
    # the count models' default CR2 rows (R = 200: measured, written with STOPDISPARITY_MC_OUT)
    Method("counts_hispanic_cr2", counts, row=cr2_term_row("in_force:hispanic")),
    Method("counts_white_cr2", counts, zero, row=cr2_term_row("in_force:white")),
    Method("counts_difference_cr2", counts, row=cr2_term_row("difference")),
]
M = {"design": "random", "n_treated": 50}


@cache
def draws(name: str) -> MonteCarloResult:
    """The draws of one scenario run (cached per process)."""
    runs = {
        # Design M, S0 and S1: the headline at R = 500 (coverage), other estimators at R = 200.
        "m_null": (SynthSpec(scenario="null", **M), HEADLINE, R_COVERAGE, 600_000, (2005, 2009)),
        "m_constant": (SynthSpec(scenario="constant", **M), HEADLINE, R_COVERAGE, 600_000, (2005, 2009)),
        "m_constant_secondary": (
            SynthSpec(scenario="constant", **M),
            SECONDARY,
            R_BIAS,
            600_000,
            (2005, 2009),
        ),
        "m_constant_event": (
            SynthSpec(scenario="constant", **M),
            [
                Method("pretrend_wald", event_study, zero, row=pretrend_wald),
                Method("pretrend_htz", event_study, zero, row=pretrend_htz),
                Method("pretrend_score", event_study, zero, row=pretrend_score),
                Method("event_0", event_study, event_year_estimand(0), term="event:0"),
                Method("event_2", event_study, event_year_estimand(2), term="event:2"),
                Method("event_0_cr2", event_study, event_year_estimand(0), row=cr2_term_row("event:0")),
                Method("event_2_cr2", event_study, event_year_estimand(2), row=cr2_term_row("event:2")),
            ],
            R_BIAS,
            1_500_000,
            (2002, 2011),
        ),
        "m_dynamic": (
            SynthSpec(scenario="dynamic", **M),
            [Method("logit_cr1", logit)],
            R_BIAS,
            1_500_000,
            (2005, 2015),
        ),
        "m_pretrend": (
            SynthSpec(scenario="pretrend", **M),
            [
                Method("logit_cr1", logit),
                Method("pretrend_wald", event_study, zero, row=pretrend_wald),
                Method("pretrend_htz", event_study, zero, row=pretrend_htz),
                Method("pretrend_score", event_study, zero, row=pretrend_score),
                Method("event_-3", event_study, event_year_estimand(-3), term="event:-3"),
                Method("es_naive_post", event_study, row=bounds("relative_magnitudes", None)),
                Method("rm_mbar_1", event_study, row=bounds("relative_magnitudes", 1.0)),
                Method("sd_m_0", event_study, row=bounds("smoothness", 0.0)),
            ],
            R_BIAS,
            1_500_000,
            (2002, 2011),
        ),
        "m_composition": (
            SynthSpec(scenario="composition", **M),
            [
                Method("logit_cr1", logit),
                Method(
                    "counts_hispanic", counts, estimand("att_logodds_composition"), term="in_force:hispanic"
                ),
                Method("counts_white", counts, zero, term="in_force:white"),
                Method(
                    "sheriff_hispanic",
                    counts_sheriff,
                    estimand("att_logodds_composition"),
                    term="in_force:hispanic",
                ),
            ],
            R_BIAS,
            600_000,
            (2005, 2009),
        ),
        "m_switch_off": (
            SynthSpec(scenario="switch_off", **M),
            [Method("logit_cr1", logit), Method("absorbing", absorbing)],
            R_BIAS,
            1_200_000,
            (2005, 2014),
        ),
    }
    spec, methods, r, rows, years = runs[name]
    result = run(spec, methods, draws=r, seed=1000, rows=rows, years=years, agency=None)
    if OUT:  # STOPDISPARITY_MC_OUT=DIR keeps every run's summary (the figures reported on the issue)
        Path(OUT).mkdir(parents=True, exist_ok=True)
        result.summaries.write_csv(Path(OUT) / f"{name}.csv")
    return result


def group(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.xdist_group(f"mc_{name}"))


def assert_unbiased(s: dict[str, Any]) -> None:
    assert s["draws"] >= R_BIAS
    assert abs(s["mean_bias"]) < 3 * s["sd_error"] / s["draws"] ** 0.5, s


@pytest.mark.slow
@pytest.mark.parametrize("name", [group("m_null"), group("m_constant")])
def test_headline_design_m_unbiased(name: str) -> None:
    res = draws(name)
    for method in ("logit_cr1", "logit_pp"):
        s = res.summary_of(method)
        assert s["draws"] == R_COVERAGE
        assert_unbiased(s)
    s = res.summary_of("logit_cr1")
    assert s["mean_truth"] == pytest.approx(0.0 if name == "m_null" else 0.3)
    if name == "m_constant":
        assert s["rejection_rate"] > 0.9, s  # power against θ = 0.3 at this size


@pytest.mark.slow
@pytest.mark.parametrize("method", ["logit_cr2", "logit_pp_cr2", "logit_score"])
@pytest.mark.parametrize("name", [group("m_null"), group("m_constant")])
def test_default_and_score_design_m_coverage(name: str, method: str) -> None:
    """The default inference - CR2 with Bell-McCaffrey df, for the log-odds coefficient and for the
    percentage-point effect (its gradient as the CR2 contrast) - and the score bootstrap cover where the
    CR1 option does not (measured: CR2 0.944 S0, 0.928 S1); all keep the fit's estimate."""
    s = draws(name).summary_of(method)
    assert s["draws"] == R_COVERAGE
    assert COVERAGE_BAND[0] <= s["coverage"] <= COVERAGE_BAND[1], s
    same = "logit_pp" if method == "logit_pp_cr2" else "logit_cr1"
    assert s["mean_bias"] == draws(name).summary_of(same)["mean_bias"]  # the same estimate


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="NOT MET by the CR1 option (inference='cluster', --inference cluster), which is why CR2 is the "
    "default (issue 5 named CR1 the default; see the note of this change). Measured: CR1 by county "
    "under-covers at design M - coverage 0.896 (S1) at R = 500, "
    "mean CR1 SE / sd of the errors 0.85; the delta-method pp interval likewise (0.894). The treatment's "
    "information (sum of n p(1-p) x~^2 by county) is concentrated: its effective number of clusters G* "
    "(Carter, Schnepel & Steigerwald 2017; tidy effective_clusters) has median 22 (9-34) of 146, and one "
    "county holds 9-19% of it; the draws with G* < 20 get a FewClustersWarning and cover 0.83. With no "
    "AR(1) shock, the model-based SE is 0.96 of the sd of the estimates while CR1 is 0.89: CR1 is biased "
    "down by the few effective clusters (MacKinnon & Webb 2017), not mis-computed (pyfixest equality "
    "tests). The default CR2 with Bell-McCaffrey df and the score bootstrap cover (tests above). "
    "The band is not loosened.",
)
@pytest.mark.parametrize("name", [group("m_null"), group("m_constant")])
def test_cr1_design_m_coverage(name: str) -> None:
    res = draws(name)
    for method in ("logit_cr1", "logit_pp"):
        s = res.summary_of(method)
        assert COVERAGE_BAND[0] <= s["coverage"] <= COVERAGE_BAND[1], s


@pytest.mark.slow
@pytest.mark.parametrize("name", [group("m_null"), group("m_constant")])
def test_effective_clusters_flag_the_draws_where_cr1_under_covers(name: str) -> None:
    """The FewClustersWarning's G* rule (Carter, Schnepel & Steigerwald 2017) at design M: it fires on a
    visible share of draws, and there CR1 covers less than on the others. Measured: S0 199 of 500 draws
    warned, coverage 0.879 against 0.917 (a gap of 1.3 binomial sd); S1 162 warned, 0.833 against 0.926
    (2.9 sd). Only the direction is asserted in each scenario; bench/effective_clusters.py has the
    coverage by G* over 2,000 draws and four county-size spreads."""
    joined = draws(name).beside("logit_cr1", "g_star")
    low = pl.col("g_star") < MIN_EFFECTIVE_CLUSTERS
    warned, quiet = joined.filter(low), joined.filter(~low)
    assert joined.height == R_COVERAGE
    assert 0.1 * R_COVERAGE <= warned.height <= 0.9 * R_COVERAGE, warned.height
    assert quiet["covered"].mean() > warned["covered"].mean(), (warned.height, quiet["covered"].mean())


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_constant_secondary")
def test_linear_and_counts_design_m_unbiased() -> None:
    res = draws("m_constant_secondary")
    for method in ("linear_cr1", "counts_hispanic", "counts_white", "counts_difference"):
        assert_unbiased(res.summary_of(method))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "methods"),
    [
        pytest.param(
            "m_constant_secondary",
            ("linear_cr2", "counts_hispanic_cr2", "counts_white_cr2", "counts_difference_cr2"),
            marks=pytest.mark.xdist_group("mc_m_constant_secondary"),
        ),
        pytest.param(
            "m_constant_event",
            ("event_0_cr2", "event_2_cr2"),
            marks=pytest.mark.xdist_group("mc_m_constant_event"),
        ),
    ],
)
def test_secondary_defaults_cover(name: str, methods: tuple[str, ...]) -> None:
    """The default CR2 intervals of the linear model, every count-model row and the event study cover
    within the band already at R = 200 (measured: linear 0.965; counts 0.945, 0.930, 0.965; event times
    0 and 2 0.960 and 0.940; their CR1 options 0.885-0.955)."""
    for method in methods:
        s = draws(name).summary_of(method)
        assert s["draws"] == R_BIAS
        assert COVERAGE_BAND[0] <= s["coverage"] <= COVERAGE_BAND[1], s


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_constant_event")
def test_event_study_design_m() -> None:
    """S1: event-time coefficients recover their truths (no pre-trend planted)."""
    res = draws("m_constant_event")
    assert_unbiased(res.summary_of("event_0"))
    assert_unbiased(res.summary_of("event_2"))


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_constant_event")
@pytest.mark.xfail(
    strict=True,
    reason="NOT MET by the CR1 option's pre-test (pretrend_test(method='wald'), the default only of a fit "
    "made with inference='cluster'): the Wald pre-test of 4 leads with the CR1 covariance rejects 0.18 "
    "of 200 draws at 5% with no pre-trend (design M, S1). Same cause as the CR1 under-coverage: the leads' "
    "information is concentrated in ~20 effective clusters, so CR1 understates their covariance. No "
    "bound is loosened; the default fit's CR2-HTZ pre-test and the score bootstrap (next test) hold size.",
)
def test_event_study_pretest_size_design_m() -> None:
    wald = draws("m_constant_event").summary_of("pretrend_wald")
    assert wald["rejection_rate"] <= 0.10, wald


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_constant_event")
def test_event_study_bootstrap_pretest_size_design_m() -> None:
    """The CR2-HTZ pre-test (the default fit's default) and the score bootstrap (all leads = 0 imposed)
    hold their size where the CR1 Wald does not."""
    for test in ("pretrend_score", "pretrend_htz"):
        size = draws("m_constant_event").summary_of(test)
        assert size["draws"] == R_BIAS
        assert size["rejection_rate"] <= 0.10, size


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_dynamic")
def test_s2_twfe_visibly_biased() -> None:
    """S2 (heterogeneous, dynamic, all eventually treated): TWFE is biased — the staggered issue fixes it."""
    s = draws("m_dynamic").summary_of("logit_cr1")
    assert s["mean_bias"] < -5 * s["mcse_bias"], s
    assert s["mean_bias"] < -0.1 * s["mean_truth"], s  # a visible share of the truth, not a rounding


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_pretrend")
def test_s3_leads_detect_pretrend() -> None:
    res = draws("m_pretrend")
    for test in ("pretrend_wald", "pretrend_score", "pretrend_htz"):  # the remedies keep the power
        power = res.summary_of(test)
        assert power["rejection_rate"] > 0.8, power
    assert_unbiased(res.summary_of("event_-3"))  # the lead estimates the planted pre-trend
    s = res.summary_of("logit_cr1")  # the pre-trend biases the TWFE estimate upwards
    assert s["mean_bias"] > 5 * s["mcse_bias"], s


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_pretrend")
def test_s3_sensitivity_bounds_cover() -> None:
    """S3: the relative-magnitudes set (M̄ = 1) covers the planted effect where the TWFE interval does not.

    The target is the average post-period effect of the event study (window -6..5; the binned far lag
    excluded), whose truth is the planted 0.3. The naive event-study interval and the smoothness set
    with M = 0 (a linear pre-trend extrapolated, which this DGP does not have: its trend stops at
    adoption) are measured and reported, not asserted.
    """
    res = draws("m_pretrend")
    twfe, rm = res.summary_of("logit_cr1"), res.summary_of("rm_mbar_1")
    assert rm["mean_truth"] == pytest.approx(0.3)
    assert twfe["coverage"] < 0.5, twfe
    assert rm["coverage"] >= COVERAGE_BAND[0], rm


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_composition")
def test_s4_composition_shows_in_counts() -> None:
    """S4: the share model 'finds' the composition change; race-specific counts show where it is from:
    Hispanic stops fall, White stops do not, and the sheriff's Hispanic stops fall too."""
    res = draws("m_composition")
    for method in ("logit_cr1", "counts_hispanic", "counts_white", "sheriff_hispanic"):
        assert_unbiased(res.summary_of(method))
    s = res.summary_of("logit_cr1")
    assert s["mean_truth"] == pytest.approx(-0.3)
    assert s["rejection_rate"] > 0.9, s
    assert res.summary_of("counts_white")["rejection_rate"] <= 0.10
    assert res.summary_of("sheriff_hispanic")["rejection_rate"] > 0.5


@pytest.mark.slow
@pytest.mark.xdist_group("mc_m_switch_off")
def test_s5_switch_off() -> None:
    """S5: half the agreements end; in_force recovers θ, an absorbing treatment is biased toward 0."""
    res = draws("m_switch_off")
    assert_unbiased(res.summary_of("logit_cr1"))
    wrong = res.summary_of("absorbing")
    assert wrong["mean_estimate"] < 0.3 - 5 * wrong["mcse_bias"], wrong


@pytest.mark.slow
@pytest.mark.xdist_group("mc_design_f")
def test_design_f_inference_size() -> None:
    """Design F (registry counties, S0): rejection rates of CR1, CR2, the bootstraps and RI; all but CR1
    <= 0.10."""
    size = inference_size(draws=R_BIAS, ri_draws=99, boot_draws=399, rows=800_000, years=(2005, 2010))
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        (Path(OUT) / "design_f.json").write_text(json.dumps(size, indent=2))
    rates = {m["method"]: m["rejection_rate"] for m in size["methods"]}
    assert set(rates) == {
        f"{model}_{method}"
        for model, methods in (
            ("logit", ("cr1", "cr2", "score", "ri")),
            ("linear", ("cr1", "cr2", "wild", "ri")),
        )
        for method in methods
    }
    # the remedies and the default CR2 (measured at R = 200: logit 0.070, linear 0.060; CR1 0.105, 0.090)
    for method in ("logit_cr2", "logit_score", "logit_ri", "linear_cr2", "linear_wild", "linear_ri"):
        assert rates[method] <= 0.10, (method, size)
