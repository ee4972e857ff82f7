"""Monte Carlo validation of the heterogeneity-robust estimators on synth scenario S2 (issue 6, section 3).

S2 (``dynamic``): the log-odds effect differs by adoption cohort (earlier cohorts larger) and grows
with event time; every county is eventually treated. At design M (50 counties adopting 2006-2010, the
rest 2011-2014) over 2005-2012, the counties adopting after 2012 are untreated throughout the panel.
TWFE is visibly biased there (``tests/test_monte_carlo.py::test_dynamic_twfe_biased``); these
estimators must recover the truth of *their* estimands, under the headline's rules: |mean bias| <
3·sd/√R and coverage of the 95% intervals within 0.916-0.978 at R = 500.

Each estimand's truth averages the draw's planted cell effects (:func:`stopdisparity.synth.cell_truth`)
with the estimator's own weights, at the year-cohort panel the estimators see:

- ``etwfe`` (logit, never-treated controls), ``att``: the stop-weighted mean of the county-year log-odds
  effect over treated county-years (weights: the pair's stops in the draw); scored twice, with the
  default CR2 interval (Bell-McCaffrey df) and with the CR1 option (``--inference cluster``), as is
  Sun-Abraham;
- ``bjs`` (its default leave-out variance, and the plain Theorem 3 one) and ``sun-abraham`` on the
  empirical log odds (``scale="logodds"``, weights = stops), ``att``:
  the same average; Sun–Abraham's ``e:2``: that average over the treated counties two years after
  adoption;
- ``callaway-santanna`` on the empirical log odds (never-treated controls), ``dynamic:e`` and
  ``simple``: ATT(g,t) = the unit-weighted mean of the county-year effect over cohort g at t (unit
  weight: the county's mean stops before adoption, as the estimator uses), averaged over the ATT(g,t)s
  it reports with R ``aggte``'s cohort weights.

A county-year's log-odds effect is the stop-weighted mean of its months' planted effects (the effect
grows within the year). Reproduce: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -n 2 --dist
loadgroup tests/test_monte_carlo_staggered.py``; ``STOPDISPARITY_MC_OUT=DIR`` writes the summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stopdisparity.models.staggered import (
    fit_staggered,
    prepare_staggered_race,
    race_unit_panel,
)
from stopdisparity.montecarlo import Method, MonteCarloResult, cr2_term_row, run
from stopdisparity.synth import SynthSpec

OUT = os.environ.get("STOPDISPARITY_MC_OUT")
R = 500
COVERAGE_BAND = (0.916, 0.978)
SPEC = SynthSpec(scenario="dynamic", design="random", n_treated=50)
ROWS, YEARS = 1_000_000, (2005, 2012)


def _sp(f: pl.DataFrame) -> pl.DataFrame:
    return f.filter(pl.col("agency") == "state_patrol")


_DRAW: dict[str, Any] = {}


def _per_draw(key: object, name: str, make: Callable[[], Any]) -> Any:
    """``make()`` once per draw: the methods of a draw get the same frame, effects and fit objects, so
    ``key`` (one of them, held here so its identity stays unique) identifies the draw; a new key
    replaces that name's value."""
    if _DRAW.get(f"key:{name}") is not key:
        _DRAW[f"key:{name}"], _DRAW[name] = key, make()
    return _DRAW[name]


def _fit(f: pl.DataFrame, estimator: str, scale: str, **options: Any) -> Any:
    """``fit_staggered_race(_sp(f), estimator=..., scale=...)``, the draw's panel of each scale built once."""
    panel = _per_draw(
        f,
        f"panel:{scale}",
        lambda: prepare_staggered_race(_sp(f), estimator=estimator, scale=scale),  # type: ignore[arg-type]
    )
    return fit_staggered(panel, estimator=estimator, **options)  # type: ignore[arg-type]


def etwfe(f: pl.DataFrame) -> Any:
    """The analytical CR1 fit: its own rows score CR1, ``cr2_row`` the default CR2 on the same fit."""
    return _fit(f, "etwfe", "share", control="never", inference="cluster")


def bjs(f: pl.DataFrame) -> Any:
    """BJS's default: leave-own-cluster-out cell means in the variance (Appendix A.6) where every cell
    has 2+ clusters, as at design M's year cohorts (it raises here otherwise: no silent fallback)."""
    return _fit(f, "bjs", "logodds", leave_out=True)


def bjs_plain(f: pl.DataFrame) -> Any:
    """BJS with the plain Theorem 3 variance (``leave_out=False``, ``--no-leave-out``)."""
    return _fit(f, "bjs", "logodds", leave_out=False)


def sa(f: pl.DataFrame) -> Any:
    return _fit(f, "sun-abraham", "logodds", inference="cluster")


def cs(f: pl.DataFrame) -> Any:
    return _fit(f, "callaway-santanna", "logodds", n_boot=0)


def _county_years(effects: pl.DataFrame, cells: pl.DataFrame) -> pl.DataFrame:
    """Per county-year: the log-odds effect (stop-weighted over months), the draw's stops, cohort.

    Computed once per draw (the methods of a draw share the same ``effects`` object).
    """

    def make() -> pl.DataFrame:
        per_year = effects.group_by("county_fips", (pl.col("period") // 12).alias("year")).agg(
            ((pl.col("weight") * pl.col("delta")).sum() / pl.col("weight").sum()).alias("delta")
        )
        panel = race_unit_panel(_sp(cells)).rename({"period": "year"})
        return panel.join(per_year, on=["county_fips", "year"], how="left")

    return _per_draw(effects, "county_years", make)


def treated_stop_weighted(effects: pl.DataFrame, cells: pl.DataFrame, _: Any) -> float:
    """Stop-weighted mean log-odds effect over treated county-years (etwfe ``att``, bjs ``att``)."""
    cy = _county_years(effects, cells).filter(
        (pl.col("first_treated") > 0) & (pl.col("year") >= pl.col("first_treated"))
    )
    return float((cy["trials"] * cy["delta"]).sum() / cy["trials"].sum())


def stop_weighted_at(e: int) -> Any:
    """Stop-weighted mean log-odds effect over treated counties at event year e (Sun–Abraham ``e:<e>``).

    With unit effects and only e = -1 left out per cohort, the cohort × e coefficient of the stop-weighted
    regression is the stop-weighted mean of the cohort's long differences, and the interaction weights
    are the cohorts' shares of treated stops at e: together, this average.
    """

    def get(effects: pl.DataFrame, cells: pl.DataFrame, _: Any) -> float:
        cy = _county_years(effects, cells).filter(
            (pl.col("first_treated") > 0) & (pl.col("year") - pl.col("first_treated") == e)
        )
        return float((cy["trials"] * cy["delta"]).sum() / cy["trials"].sum())

    return get


def _cs_cells(effects: pl.DataFrame, cells: pl.DataFrame, result: Any) -> pl.DataFrame:
    """The ATT(g,t)s the estimator reports, with their truths and R aggte's cohort weights."""
    cy = _county_years(effects, cells)
    first_cohort = cy.filter(pl.col("first_treated") > 0)["first_treated"].min()
    before = pl.when(pl.col("first_treated") > 0).then(pl.col("first_treated")).otherwise(first_cohort)
    w = cy.group_by("county_fips").agg(  # the unit weight: mean stops before adoption
        pl.col("trials").filter(pl.col("year") < before).mean().alias("w"), pl.col("first_treated").first()
    )
    cy = cy.join(w.select("county_fips", "w"), on="county_fips")
    truth = cy.group_by(pl.col("first_treated").alias("g"), pl.col("year").alias("t")).agg(
        ((pl.col("w") * pl.col("delta")).sum() / pl.col("w").sum()).alias("truth")
    )
    size = w.group_by(pl.col("first_treated").alias("g")).agg(pl.col("w").sum().alias("W"))
    gt = result.tidy().filter((pl.col("aggregation") == "gt") & pl.col("estimate").is_not_null())
    return gt.join(truth, on=["g", "t"], how="left").join(size, on="g", how="left")


def cs_dynamic(e: int) -> Any:
    def get(effects: pl.DataFrame, cells: pl.DataFrame, result: Any) -> float:
        c = _cs_cells(effects, cells, result).filter(pl.col("e") == e)
        return float((c["W"] * c["truth"]).sum() / c["W"].sum())

    return get


def cs_simple(effects: pl.DataFrame, cells: pl.DataFrame, result: Any) -> float:
    c = _cs_cells(effects, cells, result).filter(pl.col("e") >= 0)
    return float((c["W"] * c["truth"]).sum() / c["W"].sum())


METHODS = [
    # etwfe and sun-abraham: the default (CR2, Bell-McCaffrey df) and the CR1 option on the same fit
    Method("etwfe_att", etwfe, row=cr2_term_row("att"), draw_truth=treated_stop_weighted),
    Method("etwfe_att_cr1", etwfe, term="att", draw_truth=treated_stop_weighted),
    Method("bjs_att", bjs, term="att", draw_truth=treated_stop_weighted),
    Method("bjs_att_plain", bjs_plain, term="att", draw_truth=treated_stop_weighted),
    Method("sa_att", sa, row=cr2_term_row("att"), draw_truth=treated_stop_weighted),
    Method("sa_e2", sa, row=cr2_term_row("e:2"), draw_truth=stop_weighted_at(2)),
    Method("sa_att_cr1", sa, term="att", draw_truth=treated_stop_weighted),
    Method("sa_e2_cr1", sa, term="e:2", draw_truth=stop_weighted_at(2)),
    Method("cs_simple", cs, term="simple", draw_truth=cs_simple),
    Method("cs_dynamic_0", cs, term="dynamic:0", draw_truth=cs_dynamic(0)),
    Method("cs_dynamic_2", cs, term="dynamic:2", draw_truth=cs_dynamic(2)),
]


@cache
def draws() -> MonteCarloResult:
    result = run(SPEC, METHODS, draws=R, seed=1000, rows=ROWS, years=YEARS, agency=None)
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        result.summaries.write_csv(Path(OUT) / "m_dynamic_staggered.csv")
    return result


def _group(name: str, *marks: Any) -> Any:
    return pytest.param(name, marks=[pytest.mark.xdist_group("mc_m_dynamic_staggered"), *marks])


@pytest.mark.slow
@pytest.mark.parametrize("method", [_group(m.name) for m in METHODS])
def test_staggered_design_m_s2_unbiased(method: str) -> None:
    s = draws().summary_of(method)
    assert s["draws"] == R
    assert abs(s["mean_bias"]) < 3 * s["sd_error"] / s["draws"] ** 0.5, s
    assert s["mean_truth"] > 0.05, s  # a planted effect, not a null


UNDER_COVERING = ("etwfe_att_cr1", "bjs_att_plain", "sa_att_cr1", "sa_e2_cr1")
UNDER_COVER = pytest.mark.xfail(
    strict=True,
    reason="NOT MET (measured, R = 500) by options that are not the defaults - bjs's plain Theorem 3 "
    "variance (leave_out=False) and the CR1 of etwfe and sun-abraham (inference='cluster'): "
    "these analytical intervals under-cover at design M - etwfe (logit, CR1) 0.882 with SE / sd of the "
    "errors 0.81, bjs (Theorem 3 variance on the "
    "stop-weighted log odds) 0.902 with 0.85, sun-abraham (CR1, delta method) att 0.912 and e:2 0.898 with "
    "0.88 - as the headline's CR1 does (0.896): stop weights concentrate "
    "the information in a few large counties (the headline's G* has median 22 of 146), and cluster-robust "
    "variances are then biased down (MacKinnon & Webb 2017). Callaway-Sant'Anna's influence-function "
    "intervals cover (simple 0.954, dynamic e=0 0.950, e=2 0.930), and so do etwfe and sun-abraham with "
    "their default CR2 (Bell-McCaffrey df: etwfe 0.936, sun-abraham att 0.936, e:2 0.932; asserted) and "
    "bjs with its default leave-out variance (0.954, SE / sd 1.07; asserted). The band is not loosened.",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [_group(m.name, UNDER_COVER) if m.name in UNDER_COVERING else _group(m.name) for m in METHODS],
)
def test_staggered_design_m_s2_coverage(method: str) -> None:
    s = draws().summary_of(method)
    assert COVERAGE_BAND[0] <= s["coverage"] <= COVERAGE_BAND[1], s
