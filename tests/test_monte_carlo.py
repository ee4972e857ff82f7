"""Monte Carlo validation of the headline estimator on the synth DGP (issue 5, section 6, design M).

Design M: 50 of NC+SC's 146 counties adopt at random dates in 2006-2010, the rest never do; the panel
is shrunk (2005-2009, 600k stops a draw), not the number of draws. Acceptance (issue 5):
|mean bias| < 3·sd/√R with R ≥ 200, and coverage of the 95% intervals within 0.916-0.978 at R = 500.
Each scenario's draws are made once (module fixture; one xdist group per scenario).
"""

from __future__ import annotations

from functools import cache

import pytest

from stopdisparity.models.did import fit_did
from stopdisparity.montecarlo import MonteCarloResult, run
from stopdisparity.synth import SynthSpec

R = 500
ROWS = 600_000
YEARS = (2005, 2009)
SCENARIOS = {"null": 0.0, "constant": 0.3}


@cache
def draws(scenario: str) -> MonteCarloResult:
    spec = SynthSpec(scenario=scenario, design="random", n_treated=50)
    return run(spec, fit_did, draws=R, seed=1000, rows=ROWS, years=YEARS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario", [pytest.param(s, marks=pytest.mark.xdist_group(f"mc_{s}")) for s in SCENARIOS]
)
def test_twfe_logit_design_m_unbiased(scenario: str) -> None:
    s = draws(scenario).summary
    assert s["draws"] == R
    assert s["mean_truth"] == pytest.approx(SCENARIOS[scenario])
    assert abs(s["mean_bias"]) < 3 * s["sd"] / R**0.5, s
    if scenario == "constant":
        assert s["rejection_rate"] > 0.9, s  # power against θ = 0.3 at this size


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="NOT MET (measured): CR1 by county under-covers at design M — coverage 0.902 (S0) and 0.896 (S1) "
    "at R = 500; mean CR1 SE / sd of estimates = 0.86 (0.90 without the AR(1) shock). Few effective "
    "clusters: stops concentrate in large counties. The bootstrap/CR3 inference of issue 5 section 3 "
    "is the remedy to validate next; the acceptance band is not loosened.",
)
@pytest.mark.parametrize(
    "scenario", [pytest.param(s, marks=pytest.mark.xdist_group(f"mc_{s}")) for s in SCENARIOS]
)
def test_twfe_logit_design_m_cr1_coverage(scenario: str) -> None:
    s = draws(scenario).summary
    assert 0.916 <= s["coverage"] <= 0.978, s
