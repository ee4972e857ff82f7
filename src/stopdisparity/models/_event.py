r"""Small numerical helpers of the event study: event time, simultaneous bands and pre-test power.

Users never call this module; :func:`stopdisparity.models.event_study.fit_event_study` does.

References
----------
Montiel Olea, J. L. & Plagborg-Møller, M. (2019). Simultaneous confidence bands: theory,
implementation, and an application to SVARs. Journal of Applied Econometrics 34(1), 1-17.
https://doi.org/10.1002/jae.2656
Roth, J. (2022). Pretest with caution: event-study estimates after testing for parallel trends.
American Economic Review: Insights 4(3), 305-322. https://doi.org/10.1257/aeri.20210236
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from stopdisparity.errors import SpecificationError

#: Months in one panel period and in one event-time unit.
MONTHS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}


def event_time(rel: np.ndarray, *, months_per_period: int, event_unit: str) -> np.ndarray:
    r"""Event time in ``event_unit`` from the distance in panel periods to adoption (floor division).

    ``rel = period - first_treated`` in panel periods; event time is
    :math:`\lfloor \text{rel}\cdot m / M\rfloor` with ``m`` the months per panel period and ``M`` the
    months per event unit (``period``: rel itself). For a monthly panel and event years that is
    ``floor((period - first_treated) / 12)``: months 0-11 after adoption are event year 0, months
    -12..-1 event year -1.
    """
    rel = np.asarray(rel, dtype=np.int64)
    if event_unit == "period":
        return rel
    unit_months = MONTHS[event_unit]
    if months_per_period > unit_months:
        raise SpecificationError(
            f"event_unit={event_unit!r} is finer than the panel's periods ({months_per_period} months); "
            "use a coarser event_unit or 'period'"
        )
    return np.floor_divide(rel * months_per_period, unit_months)


def sup_t_draws(vcov: np.ndarray, draws: int, seed: int) -> np.ndarray:
    r"""Simulated :math:`\max_k |Z_k|/\sigma_k` for :math:`Z \sim N(0, \hat V)`, one per draw.

    Its :math:`1-\alpha` quantile is the sup-t critical value (Montiel Olea & Plagborg-Møller 2019).

    The draws are taken from the correlation matrix of ``vcov`` through its symmetric square root
    (robust to a singular matrix), with ``numpy.random.default_rng(seed)``.
    """
    se = np.sqrt(np.diag(vcov))
    p = se.size
    if p == 0 or not np.all(np.isfinite(se)) or np.any(se <= 0):
        return np.full(max(draws, 1), math.nan)
    corr = vcov / np.outer(se, se)
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((draws, p)) @ root.T
    return np.max(np.abs(z), axis=1)


def wald(beta: np.ndarray, vcov: np.ndarray) -> tuple[float, int, float]:
    """Wald statistic ``b' V^-1 b``, its degrees of freedom and its chi-squared p-value."""
    k = beta.size
    if k == 0:
        return (math.nan, 0, math.nan)
    stat = float(beta @ np.linalg.solve(vcov, beta))
    return (stat, k, float(stats.chi2.sf(stat, k)))


def trend_power(direction: np.ndarray, vcov: np.ndarray, slope: float, alpha: float) -> float:
    r"""Power of the level-``alpha`` Wald test when the leads' means are ``slope * direction``.

    The statistic is then noncentral :math:`\chi^2_k(\lambda)` with
    :math:`\lambda = \text{slope}^2\, a'V^{-1}a` (Roth 2022, section II: the power of the pre-test
    against a linear violation of parallel trends).
    """
    k = direction.size
    crit = stats.chi2.isf(alpha, k)
    lam = slope**2 * float(direction @ np.linalg.solve(vcov, direction))
    if lam == 0:
        return float(alpha)
    return float(stats.ncx2.sf(crit, k, lam))


def slope_for_power(direction: np.ndarray, vcov: np.ndarray, power: float, alpha: float) -> float:
    """The (positive) slope at which :func:`trend_power` equals ``power`` (> alpha)."""
    k = direction.size
    if k == 0 or not (alpha < power < 1):
        return math.nan
    crit = stats.chi2.isf(alpha, k)
    lam = optimize.brentq(lambda x: stats.ncx2.sf(crit, k, x) - power, 1e-12, 1e4, xtol=1e-12)
    q = float(direction @ np.linalg.solve(vcov, direction))
    return math.sqrt(lam / q)
