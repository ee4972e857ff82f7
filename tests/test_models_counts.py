"""Tests of stopdisparity.models.counts: race-specific Poisson DiDs, their difference, the two-race form.

pyfixest references (per race, the stacked difference, the two-race Poisson), the identity of the
two-race Poisson with the twfe-logit (Baker 1994), exposure handling, zero-count units, leave-one-out.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from effective_reference import dense_information, effective_of
from stopdisparity.errors import (
    DroppedRowsWarning,
    FewClustersWarning,
    SparseCellWarning,
    SpecificationError,
)
from stopdisparity.models._fe import Inference
from stopdisparity.models.counts import fit_counts
from stopdisparity.models.did import fit_did
from stopdisparity.results import TIDY_COLUMNS, check_tidy
from stopdisparity.synth import SynthSpec, cells

REFERENCE = Path(__file__).parent / "reference"
# Poisson fits iterate on both sides; with tight stopping rules they agree to ~1e-9 (the bounds).
RTOL_GLM_COEF = 1e-6
RTOL_GLM_SE = 1e-5
# The two-race Poisson and the logit are one model: equal to rounding (the issue asks rtol 1e-6).
RTOL_SAME_MODEL = 1e-6


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewClustersWarning)
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def ref_panel() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "panel.csv", schema_overrides={"county_fips": pl.String})


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return pl.read_csv(REFERENCE / "pyfixest_reference.csv")


@pytest.fixture(scope="module")
def counts(ref_panel):
    """The analytical CR1 fit (the pyfixest CRV1 oracles' inference); the default CR2 is tested apart."""
    return quiet(fit_counts, ref_panel, inference="cluster")


@pytest.fixture(scope="module")
def two_race(ref_panel):
    return quiet(fit_counts, ref_panel, form="two-race")


def ref_row(reference: pl.DataFrame, model: str, term: str) -> dict:
    return reference.filter(pl.col("model") == model, pl.col("term") == term).row(0, named=True)


# ------------------------------------------------------------------------------------- pyfixest
@pytest.mark.parametrize(
    ("model", "term"),
    [
        ("twfe-poisson", "in_force:hispanic"),
        ("twfe-poisson", "in_force:white"),
        ("twfe-poisson-stacked", "difference"),
    ],
)
@pytest.mark.reference
def test_race_specific_against_pyfixest(counts, reference, model, term):
    row = ref_row(reference, model, term)
    i = counts.terms.index(term)
    assert counts.estimates[i] == pytest.approx(row["estimate"], rel=RTOL_GLM_COEF)
    assert counts.std_errors[i] == pytest.approx(row["std_error"], rel=RTOL_GLM_SE)
    assert counts.nobs_by_term[i] == row["n_obs"]
    assert counts.n_clusters_by_term[i] == row["n_clusters"]
    assert counts.small_samples[i].factor == pytest.approx(row["ssc_factor"], rel=1e-12)


@pytest.mark.reference
def test_two_race_against_pyfixest(two_race, reference):
    row = ref_row(reference, "twfe-poisson-two-race", "difference")
    assert two_race.estimates[0] == pytest.approx(row["estimate"], rel=RTOL_GLM_COEF)
    assert two_race.std_errors[0] == pytest.approx(row["std_error"], rel=RTOL_GLM_SE)
    assert two_race.nobs_by_term[0] == row["n_obs"]
    assert two_race.small_samples[0].factor == pytest.approx(row["ssc_factor"], rel=1e-12)


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_pyfixest_live(ref_panel, counts, two_race):
    pytest.importorskip("pyfixest")
    spec = importlib.util.spec_from_file_location("make_reference", REFERENCE / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    for r in module.reference_rows(ref_panel):
        if r["model"] in ("twfe-poisson", "twfe-poisson-stacked"):
            res, i = counts, counts.terms.index(r["term"])
        elif r["model"] == "twfe-poisson-two-race":
            res, i = two_race, 0
        else:
            continue
        assert res.estimates[i] == pytest.approx(r["estimate"], rel=RTOL_GLM_COEF)
        assert res.std_errors[i] == pytest.approx(r["std_error"], rel=RTOL_GLM_SE)


# ------------------------------------------------------------------ the same model as the logit
def test_two_race_poisson_is_the_logit(ref_panel, two_race):
    """Baker (1994): unit × period effects profile out the totals — same β, same cluster scores."""
    logit = quiet(fit_did, ref_panel)
    assert two_race.estimates[0] == pytest.approx(logit.estimate, rel=RTOL_SAME_MODEL)
    assert math.sqrt(two_race.variances_cr0[0]) == pytest.approx(math.sqrt(logit.variance_cr0), rel=1e-6)
    assert two_race.influence[:, 0] == pytest.approx(logit.influence, rel=1e-5, abs=1e-12)
    # CR1 differs only through N and K: rows and cell effects vs stops and state-quarter effects
    ratio = two_race.small_samples[0].factor / logit.small_sample.factor
    assert two_race.std_errors[0] ** 2 == pytest.approx(logit.std_error**2 * ratio, rel=1e-6)
    assert "identical to twfe-logit" in two_race.tidy().item(0, "estimand")
    assert two_race.exposure == "none"


def test_two_race_equals_logit_on_synth_with_separation():
    spec = SynthSpec(scenario="constant", design="random", n_treated=15, states=("SC",))
    frame = cells(spec, seed=5, period="quarter", rows=10_000, years=(2006, 2010))
    frame = frame.filter(pl.col("agency") == "state_patrol")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logit = fit_did(frame)
        two = fit_counts(frame, form="two-race")
    assert logit.separated_units  # small counts: some counties have no Hispanic state-patrol stops
    assert two.dropped_units["both"] == logit.separated_units
    assert two.estimates[0] == pytest.approx(logit.estimate, rel=RTOL_SAME_MODEL)
    assert math.sqrt(two.variances_cr0[0]) == pytest.approx(math.sqrt(logit.variance_cr0), rel=1e-6)


def test_difference_is_not_the_logit(counts, ref_panel):
    """Separate race models are a different estimator: the difference is near, not equal to, β."""
    logit = quiet(fit_did, ref_panel)
    diff = counts.estimates[2]
    assert diff == pytest.approx(counts.estimates[0] - counts.estimates[1])
    assert abs(diff - logit.estimate) > 1e-4
    assert "not twfe-logit" in counts.tidy().item(2, "estimand")


def test_difference_variance_uses_the_covariance(counts):
    infl = counts.influence
    cov = float(infl[:, 0] @ infl[:, 1])
    assert counts.variances_cr0[2] == pytest.approx(
        counts.variances_cr0[0] + counts.variances_cr0[1] - 2 * cov
    )
    assert abs(cov) > 1e-6  # the races share counties: ignoring the covariance would be wrong


# ---------------------------------------------------------------------------------------- exposure
def test_exposure_options(ref_panel, counts):
    assert counts.exposure == "log population"
    assert "population available" in counts.exposure_reason
    none = quiet(fit_counts, ref_panel, exposure="none")
    assert none.exposure == "none" and none.exposure_reason == "exposure='none'"
    assert not np.allclose(none.estimates, counts.estimates)
    forced = quiet(fit_counts, ref_panel, exposure="population")
    assert forced.estimates == pytest.approx(counts.estimates, rel=1e-12)
    no_col = quiet(fit_counts, ref_panel.drop("population"))
    assert no_col.exposure == "none" and "no 'population' column" in no_col.exposure_reason
    assert no_col.estimates == pytest.approx(none.estimates, rel=1e-12)
    with pytest.raises(SpecificationError, match="needs a population column"):
        fit_counts(ref_panel.drop("population"), exposure="population")
    with pytest.raises(SpecificationError, match="two-race' takes no exposure"):
        fit_counts(ref_panel, form="two-race", exposure="population")


def test_exposure_with_missing_population(ref_panel):
    gap = ref_panel.with_columns(
        pl.when((pl.col("county_fips") == "37001") & (pl.col("period") == 8030))
        .then(None)
        .otherwise(pl.col("population"))
        .alias("population")
    )
    auto = quiet(fit_counts, gap)
    assert auto.exposure == "none" and "2 rows lack a positive 'population'" in auto.exposure_reason
    with pytest.raises(SpecificationError, match="2 rows"):
        fit_counts(gap, exposure="population")
    with pytest.warns(DroppedRowsWarning, match="dropped 2"):
        dropped = quiet(fit_counts, gap, exposure="population", missing="drop")
    assert dropped.exposure == "log population" and dropped.n_dropped == 2
    assert dropped.nobs_by_term[:2] == (575, 575)


# -------------------------------------------------------------------------------- zero-count units
def test_units_with_zero_counts_are_dropped_per_race(ref_panel):
    zero = ref_panel.with_columns(
        pl.when((pl.col("county_fips") == "45001") & (pl.col("race") == "hispanic"))
        .then(0)
        .otherwise(pl.col("stops"))
        .alias("stops")
    )
    with pytest.warns(SparseCellWarning, match=r"1 for hispanic"):
        res = quiet(fit_counts, zero)
    assert res.dropped_units == {"hispanic": ("45001",), "white": ()}
    assert res.nobs_by_term == (552, 576, 1128)
    alone = quiet(fit_counts, ref_panel.filter(pl.col("county_fips") != "45001"))
    assert res.estimates[0] == pytest.approx(alone.estimates[0], rel=1e-10)
    full = quiet(fit_counts, ref_panel)
    assert res.estimates[1] == pytest.approx(full.estimates[1], rel=1e-10)


# ------------------------------------------------------------------------------- result object
def test_tidy_contract(counts):
    tidy = check_tidy(counts.tidy())
    assert tuple(tidy.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert tidy.get_column("term").to_list() == ["in_force:hispanic", "in_force:white", "difference"]
    assert tidy.get_column("n_obs").to_list() == [576, 576, 1152]
    assert tidy.get_column("estimator").unique().to_list() == ["twfe-poisson"]
    assert tidy.get_column("rate_ratio").to_list() == pytest.approx(np.exp(counts.estimates).tolist())
    assert "log stops per resident of hispanic" in tidy.item(0, "estimand")
    assert tidy.item(0, "inference") == "CR1 by county_fips (24 clusters)"
    assert counts.coef().equals(tidy.select("term", "estimate"))
    assert counts.se().equals(tidy.select("term", "std_error"))
    assert counts.vcov_description.count("G/(G-1)·(N-1)/(N-K)") == 3
    assert counts.n_treated_clusters == 10 and counts.n_clusters == 24
    assert counts.lineage["exposure_used"] == "log population"
    ri = counts.with_inference(
        Inference("randomization inference", {"difference": 0.02}, {"difference": (0, 1)})
    )
    out = ri.tidy()
    assert out.item(2, "p_value") == 0.02 and out.item(2, "inference") == "randomization inference"
    assert out.item(0, "inference").startswith("CR1")


def test_cr0_option(ref_panel, counts):
    cr0 = quiet(fit_counts, ref_panel, vcov="CR0")
    assert cr0.std_errors == pytest.approx(np.sqrt(counts.variances_cr0))
    assert cr0.vcov_description.endswith("no small-sample factor")


def test_leave_one_out_and_weights(ref_panel, counts):
    loo = counts.leave_one_out()
    assert loo.height == 3 * counts.n_treated_clusters
    assert set(loo.get_column("term")) == set(counts.terms)
    unit = loo.item(0, "dropped_county_fips")
    refit = quiet(fit_counts, ref_panel.filter(pl.col("county_fips") != unit))
    got = loo.filter(pl.col("dropped_county_fips") == unit).sort("term")
    want = refit.tidy().sort("term")
    assert got.get_column("estimate").to_list() == pytest.approx(
        want.get_column("estimate").to_list(), rel=1e-8
    )
    assert got.get_column("std_error").to_list() == pytest.approx(
        want.get_column("std_error").to_list(), rel=1e-8
    )
    w = counts.effective_weights()
    assert set(w.get_column("term")) == {"in_force:hispanic", "in_force:white"}
    sums = w.group_by("term").agg(pl.col("weight").sum()).get_column("weight").to_list()
    assert sums == pytest.approx([1.0, 1.0])


def test_two_race_leave_one_out_matches_logit(ref_panel, two_race):
    logit = quiet(fit_did, ref_panel)
    a = two_race.leave_one_out().sort("dropped_county_fips")
    b = logit.leave_one_out().sort("dropped_county_fips")
    assert a.get_column("estimate").to_list() == pytest.approx(b.get_column("estimate").to_list(), rel=1e-6)


def test_bad_options(ref_panel):
    with pytest.raises(SpecificationError, match="form must be one of"):
        fit_counts(ref_panel, form="triple")
    with pytest.raises(SpecificationError, match="exposure must be one of"):
        fit_counts(ref_panel, exposure="log")


def test_effective_clusters_by_term(counts):
    """Each race's G* equals the dense-design computation on its rows; the difference's equals the dense
    computation on the stacked design (race-specific unit and period dummies, the treatment for each
    race, contrast (1, -1)), which the package gets by adding the races' cluster information."""
    tidy = counts.tidy()
    sample = counts.sample
    expected = []
    for race in counts.race_pair:
        rows = sample.filter(pl.col("race") == race)
        x = rows.get_column("treated").cast(pl.Float64).to_numpy()
        expected.append(effective_of(dense_information(rows, x, np.ones(1))))
    focal = (pl.col("race") == counts.race_pair[0]).cast(pl.Float64)
    stacked = sample.with_columns(
        pl.concat_str(pl.col("unit").cast(pl.String), pl.col("race"), separator="|").alias("unit"),
        pl.concat_str(pl.col("group").cast(pl.String), pl.col("race"), separator="|").alias("group"),
    )
    d = sample.get_column("treated").cast(pl.Float64)
    x = np.column_stack([(d * sample.select(focal).to_series()).to_numpy(),
                         (d * (1 - sample.select(focal).to_series())).to_numpy()])  # fmt: skip
    expected.append(effective_of(dense_information(stacked, x, np.array([1.0, -1.0]))))
    got = tidy.get_column("effective_clusters").to_list()
    assert got == pytest.approx(expected, rel=1e-8)
    assert counts.clusters.effective == min(got)
    assert "smallest G*=" in counts.clusters.describe()
