r"""Rambachan & Roth (2023) sensitivity of an event study to violations of parallel trends.

Users call :func:`sensitivity` on a fitted event study (or :func:`honest_bounds` on any vector of
event-study estimates with its covariance) and get a frozen :class:`SensitivityResult` whose ``tidy()``
has one row per bound ``M`` and the naive (``original``) row, plus the breakdown value.

Setting
-------
The event-study vector :math:`\hat\beta = (\hat\beta_{pre}', \hat\beta_{post}')'` (pre-periods in
order, the reference period excluded, then the post-periods) is approximately
:math:`N(\beta, \Sigma)` with :math:`\beta = (\delta_{pre}', \tau_{post}' + \delta_{post}')'`, where
:math:`\delta` is the violation of parallel trends (:math:`\delta_{pre}` is identified). The target is
:math:`\theta = l'\tau_{post}` (default: the average of the post periods). Parallel trends
(:math:`\delta_{post} = 0`) is replaced by :math:`\delta \in \Delta`:

* **Relative magnitudes** :math:`\Delta^{RM}(\bar M)`: every post-period first difference of
  :math:`\delta` is at most :math:`\bar M` times the largest pre-period first difference (with
  :math:`\delta_0 = 0` at the reference). The confidence set is the conditional-least-favorable hybrid
  test of Andrews, Roth & Pakes ("C-LF", :math:`\kappa = \alpha/10`) inverted on a grid of
  :math:`\theta`, taken as the union over the location and sign of the largest pre-period difference, as
  R ``HonestDiD::createSensitivityResults_relativeMagnitudes`` does by default (post-period moments
  only; grid of 1000 points over :math:`\pm 20\,\mathrm{sd}(l'\hat\beta_{post})`; the interval is the
  smallest and largest accepted grid point). Unlike R, the grid is centered on the estimate when the
  estimate lies within 5 sd of R's grid end, and widened at the same step when an end point is
  accepted, so a large t statistic or a large :math:`\bar M` does not cut the set off (the grids used
  are in ``lineage["theta_grids"]``).
* **Smoothness** :math:`\Delta^{SD}(M)`: the second differences of :math:`\delta` are at most
  :math:`M` in absolute value. The confidence set is the optimal fixed-length confidence interval (FLCI)
  of Armstrong & Kolesár over affine estimators :math:`\hat\theta = l'\hat\beta_{post} + v'\hat\beta_{pre}`,
  as ``HonestDiD::createSensitivityResults`` does by default: for each standard deviation bound
  :math:`h` the worst-case bias is minimised, and :math:`h` is chosen to minimise the half-length
  :math:`h\,\mathrm{cv}_\alpha(\mathrm{bias}/h)` (cv: the :math:`1-\alpha` quantile of :math:`|N(b, 1)|`).
  :math:`M = 0` allows exactly linear trends: the FLCI is then the minimum-variance estimator that
  removes any linear trend.

The **breakdown value** is the smallest :math:`\bar M` (or :math:`M`) at which the robust confidence set
contains 0 (0 when even :math:`M = 0` does; ``inf`` when none up to a large bound does); it is found by
bisection on the test of :math:`\theta = 0` (relative magnitudes) or on the FLCI (smoothness).

Differences from R ``HonestDiD`` 0.2.8, each below the printed precision of its published numbers:
the folded-normal quantile is computed exactly (R simulates it from :math:`10^6` draws); the
least-favorable critical value is simulated from 10 000 seeded draws (R: 1000); the ARP linear
program is solved exactly by enumerating the vertices of its dual (R: lpSolve, with a bisection on
the truncation points in degenerate cases).

References
----------
Rambachan, A. & Roth, J. (2023). A more credible approach to parallel trends. Review of Economic
Studies 90(5), 2555-2591. https://doi.org/10.1093/restud/rdad018
Andrews, I., Roth, J. & Pakes, A. (2023). Inference for linear conditional moment inequalities.
Review of Economic Studies 90(6), 2763-2791. https://doi.org/10.1093/restud/rdad004
Armstrong, T. B. & Kolesár, M. (2018). Optimal inference in a class of regression models.
Econometrica 86(2), 655-683. https://doi.org/10.3982/ECTA14434
R package HonestDiD 0.2.8, https://github.com/asheshrambachan/HonestDiD (the reference
implementation; tests/reference/honestdid holds its published numbers).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl
from scipy import optimize, stats
from scipy.special import ndtr, ndtri

from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.models import _fe
from stopdisparity.results import TidyRow, tidy_frame

Method = Literal["relative_magnitudes", "smoothness"]
_versions = functools.cache(_fe.package_versions)  # importlib.metadata look-ups cost ~10 ms a call
METHODS: tuple[Method, ...] = ("relative_magnitudes", "smoothness")
_PREFIX = {"relative_magnitudes": "rm:Mbar", "smoothness": "sd:M"}
_LABEL = {
    "relative_magnitudes": "Rambachan & Roth (2023) relative magnitudes, C-LF",
    "smoothness": "Rambachan & Roth (2023) smoothness, FLCI",
}
#: Largest number of candidate bases of the ARP dual (C(rows, post periods)); beyond it, refuse.
_MAX_BASES = 250_000
#: Breakdown search: stop at this multiple of the starting scale (reported as inf beyond it).
_BREAKDOWN_MAX_DOUBLINGS = 40


@runtime_checkable
class EventStudyLike(Protocol):
    """What :func:`sensitivity` needs from a staggered event-study result.

    ``event_times``: the event time of each coefficient (ints); ``coefficients``: the estimates in that
    order; ``vcov``: their covariance (an array attribute). Optional: ``reference`` (default
    ``-1 - anticipation``; a listed reference coefficient is dropped), ``binned`` (event times that pool
    several periods, dropped) or ``bin_ends`` with ``window`` (the window's ends are dropped),
    ``estimator``, ``nobs``, ``n_clusters``.
    """

    event_times: Sequence[int]
    coefficients: np.ndarray
    vcov: np.ndarray


# --------------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class SensitivityResult:
    r"""Robust confidence sets for :math:`\theta = l'\tau_{post}` (from :func:`honest_bounds`).

    Attributes
    ----------
    method
        ``relative_magnitudes`` (C-LF) or ``smoothness`` (FLCI).
    m
        The bounds :math:`\bar M` or :math:`M`, in order.
    ci
        One (low, high) robust interval per ``m`` (NaN when the test accepts no grid point).
    estimate, std_error
        :math:`l'\hat\beta_{post}` and its standard error.
    original
        The naive interval (parallel trends exact, normal critical value).
    breakdown
        Smallest bound at which the robust set contains 0 (0: already at bound 0; inf: none found).
    centers
        Smoothness: the FLCI's affine estimate per ``m`` (its interval is centered there); else NaN.
    l_vec, num_pre, num_post, alpha, grid_points
        The target weights, the numbers of pre and post coefficients, the level, the RM grid size.
    post_event_times
        The event times of the post coefficients when known (the ``term`` of a one-hot ``l_vec``).
    betahat, sigma
        The inputs (kept so that :meth:`tidy` can recompute at another level).
    estimator, estimand, n_obs, n_clusters
        Passed to every tidy row.
    lineage
        function, options, source, versions.
    """

    method: Method
    m: tuple[float, ...]
    ci: tuple[tuple[float, float], ...]
    estimate: float
    std_error: float
    original: tuple[float, float]
    breakdown: float
    centers: tuple[float, ...]
    l_vec: np.ndarray
    num_pre: int
    num_post: int
    alpha: float
    grid_points: int
    betahat: np.ndarray
    sigma: np.ndarray
    estimand: str
    lineage: Mapping[str, Any]
    post_event_times: tuple[int, ...] | None = None
    estimator: str = "sensitivity"
    n_obs: int = 0
    n_clusters: int | None = None
    seed: int = 0

    @property
    def inference(self) -> str:
        """The method's label used in the tidy ``inference`` column."""
        return _LABEL[self.method]

    def tidy(self, alpha: float | None = None) -> pl.DataFrame:
        r"""The ``original`` row, then one row per bound (``term`` ``rm:Mbar=1`` / ``sd:M=0.01``).

        DESIGN.md contract. ``estimate`` is :math:`l'\hat\beta_{post}` and ``std_error`` its SE in every
        row; the original row has the normal statistic, p-value and interval; the robust rows have the
        robust interval and null statistic and p-value. Extra keys: ``method``, ``m`` (null for the
        original row), ``breakdown``, ``center`` (the FLCI's center; null otherwise). ``alpha`` other
        than the fitted level recomputes the bounds.
        """
        if alpha is not None and not math.isclose(alpha, self.alpha):
            return self._refit(alpha).tidy()
        stat, p, _, _ = _fe.inference_stats(self.estimate, self.std_error, self.alpha)
        common = (self.n_obs, self.n_clusters, self.estimator, self.estimand)
        rows = [
            TidyRow(
                "original",
                self.estimate,
                self.std_error,
                stat,
                p,
                self.original[0],
                self.original[1],
                *common,
                "naive: parallel trends exact (normal critical value)",
                {"method": self.method, "m": math.nan, "breakdown": self.breakdown, "center": math.nan},
            )
        ]
        for m, (low, high), center in zip(self.m, self.ci, self.centers, strict=True):
            rows.append(
                TidyRow(
                    f"{_PREFIX[self.method]}={_fmt(m)}",
                    self.estimate,
                    self.std_error,
                    math.nan,
                    math.nan,
                    low,
                    high,
                    *common,
                    self.inference,
                    {"method": self.method, "m": float(m), "breakdown": self.breakdown, "center": center},
                )
            )
        return tidy_frame(rows)

    def _refit(self, alpha: float) -> SensitivityResult:
        new = honest_bounds(
            self.betahat,
            self.sigma,
            num_pre=self.num_pre,
            num_post=self.num_post,
            method=self.method,
            m=self.m,
            l_vec=self.l_vec,
            alpha=alpha,
            grid_points=self.grid_points,
            seed=self.seed,
            breakdown=not math.isnan(self.breakdown),
        )
        return _with_source(new, self)


def _fmt(m: float) -> str:
    return f"{float(m):g}"


def _with_source(new: SensitivityResult, src: SensitivityResult) -> SensitivityResult:
    return dataclasses.replace(
        new,
        estimator=src.estimator,
        estimand=src.estimand,
        n_obs=src.n_obs,
        n_clusters=src.n_clusters,
        post_event_times=src.post_event_times,
        lineage={**src.lineage, "options": {**src.lineage.get("options", {}), "alpha": new.alpha}},
    )


# ----------------------------------------------------------------------------------- public API
def honest_bounds(
    betahat: np.ndarray,
    sigma: np.ndarray,
    *,
    num_pre: int,
    num_post: int,
    method: Method,
    m: Sequence[float],
    l_vec: np.ndarray | None = None,
    alpha: float = 0.05,
    grid_points: int = 1000,
    seed: int = 0,
    breakdown: bool = True,
) -> SensitivityResult:
    r"""Rambachan & Roth (2023) robust confidence sets for :math:`\theta = l'\tau_{post}`.

    Parameters
    ----------
    betahat
        Event-study estimates: ``num_pre`` pre-period coefficients in time order (the reference period
        excluded), then ``num_post`` post-period coefficients.
    sigma
        Their covariance (symmetric positive semi-definite, with a positive-definite pre block).
    num_pre, num_post
        Numbers of pre and post coefficients (``num_pre`` ≥ 1; relative magnitudes need ≥ 1 as well).
    method
        ``relative_magnitudes`` (:math:`\Delta^{RM}(\bar M)`, C-LF hybrid test) or ``smoothness``
        (:math:`\Delta^{SD}(M)`, FLCI).
    m
        The bounds :math:`\bar M` (relative magnitudes) or :math:`M` (smoothness, in the units of
        :math:`\hat\beta` per period squared), each ≥ 0.
    l_vec
        Weights of :math:`\theta` on the post periods (default: the average, ``1/num_post`` each).
    alpha
        Level: 1 - alpha coverage.
    grid_points
        Relative magnitudes: points of the :math:`\theta` grid over :math:`\pm 20` sd (R's default 1000).
    seed
        Seed of the least-favorable critical value's simulation (relative magnitudes).
    breakdown
        Compute the breakdown value (a bisection over the bound: most of the run time); False gives NaN.

    Returns
    -------
    SensitivityResult

    Raises
    ------
    SpecificationError
        Non-conformable inputs, negative bounds, alpha outside (0, 1), an unknown method, or a
        relative-magnitudes problem too large to enumerate (more than about 12 post periods).

    Examples
    --------
    >>> import numpy as np
    >>> from stopdisparity.models.sensitivity import honest_bounds
    >>> b = np.array([0.0, 0.01, 0.0, 0.2, 0.25])
    >>> res = honest_bounds(b, np.eye(5) * 0.01**2, num_pre=3, num_post=2, method="smoothness",
    ...                     m=[0.0, 0.01])
    >>> res.tidy().get_column("term").to_list()
    ['original', 'sd:M=0', 'sd:M=0.01']
    """
    check_choice("method", method, METHODS)
    b, s, lv = _check_inputs(betahat, sigma, num_pre, num_post, l_vec, alpha)
    ms = tuple(float(x) for x in m)
    if not ms or any(not math.isfinite(x) or x < 0 for x in ms):
        raise SpecificationError(f"m must be a non-empty sequence of finite values >= 0; got {list(m)!r}")
    if grid_points < 10:
        raise SpecificationError(f"grid_points must be >= 10; got {grid_points!r}")
    post = slice(num_pre, num_pre + num_post)
    est = float(lv @ b[post])
    se = math.sqrt(max(float(lv @ s[post, post] @ lv), 0.0))
    z = float(stats.norm.isf(alpha / 2))
    original = (est - z * se, est + z * se)
    grids: list[tuple[float, float, int]] = []
    if method == "smoothness":
        flci = _Flci(s, num_pre, num_post, lv, alpha)
        fits = [flci.interval(b, mm) for mm in ms]
        ci = tuple((c - h, c + h) for c, h in fits)
        centers = tuple(c for c, _ in fits)
        bd = flci.breakdown(b, se) if breakdown else math.nan
    else:
        rm = _RelativeMagnitudes(b, s, num_pre, num_post, lv, alpha, seed)
        fits_rm = [rm.interval(mm, est, se, grid_points) for mm in ms]
        ci = tuple((lo, hi) for lo, hi, _ in fits_rm)
        grids = [g for _, _, g in fits_rm]
        centers = tuple(math.nan for _ in ms)
        bd = rm.breakdown() if breakdown else math.nan
    return SensitivityResult(
        method=method,
        m=ms,
        ci=ci,
        estimate=est,
        std_error=se,
        original=original,
        breakdown=bd,
        centers=centers,
        l_vec=lv,
        num_pre=num_pre,
        num_post=num_post,
        alpha=alpha,
        grid_points=grid_points,
        betahat=b,
        sigma=s,
        estimand=(
            f"theta = l'tau_post with l = {np.round(lv, 6).tolist()} over {num_post} post-period "
            "coefficients; parallel trends relaxed to "
            + ("Delta^RM(Mbar)" if method == "relative_magnitudes" else "Delta^SD(M)")
        ),
        lineage={
            "function": "stopdisparity.models.sensitivity.honest_bounds",
            "options": {
                "method": method,
                "m": list(ms),
                "l_vec": lv.tolist(),
                "alpha": alpha,
                "num_pre": num_pre,
                "num_post": num_post,
                "grid_points": grid_points,
                "hybrid_kappa": alpha / 10,
                "lf_simulations": _LF_SIMS,
            },
            "theta_grids": [list(g) for g in grids],
            "seed": seed,
            "versions": dict(_versions()),
        },
        seed=seed,
    )


def sensitivity(
    result: Any,
    *,
    method: Method,
    m: Sequence[float],
    event_time: int | None = None,
    alpha: float = 0.05,
    grid_points: int = 1000,
    seed: int = 0,
    breakdown: bool = True,
) -> SensitivityResult:
    r"""Rambachan & Roth (2023) bounds from a fitted event study.

    Accepts :class:`~stopdisparity.models.event_study.EventStudyResult` or any object with
    ``event_times``, ``coefficients`` and ``vcov`` (:class:`EventStudyLike`: the staggered results).
    Pre-periods are the event times below the first post period, post-periods the event times ≥ 0 (≥
    ``-anticipation`` for an event study with anticipation); the reference is not a coefficient.

    For an ``EventStudyResult`` the **binned end points are excluded**: the far lead and far lag bins
    pool every event time beyond the window, so they are not one period's violation and would break the
    period-to-period structure of :math:`\Delta^{RM}` and :math:`\Delta^{SD}`. Event times must be
    consecutive around the reference after that (an event time without a coefficient is refused).

    Parameters
    ----------
    result
        The event study.
    method, m, alpha, grid_points, seed, breakdown
        As :func:`honest_bounds`.
    event_time
        Target one post event time (a one-hot ``l``); default: the average over the post periods.

    Returns
    -------
    SensitivityResult
        With the source's ``n_obs`` and ``n_clusters``, and the event times in its lineage.

    Raises
    ------
    SpecificationError
        An object without estimates and covariance, no pre or post period left, gaps in event time, or
        an ``event_time`` that is not a post period.
    """
    times, beta, vcov, ref, source, n_obs, n_clusters, excluded = _extract(result)
    order = np.argsort(times)
    times = [times[i] for i in order]
    beta = beta[order]
    vcov = vcov[np.ix_(order, order)]
    first_post = ref + 1
    pre = [t for t in times if t < ref]
    postt = [t for t in times if t >= first_post]
    if not pre or not postt:
        raise SpecificationError(
            f"sensitivity needs at least one pre and one post event time besides the reference {ref}; "
            f"got {times} (excluded binned end points: {excluded})"
        )
    full = list(range(min(times), max(times) + 1))
    if sorted([*times, ref]) != full:
        raise SpecificationError(
            f"event times must be consecutive around the reference {ref}; got {times} "
            f"(excluded binned end points: {excluded}); refit with a window that has every event time"
        )
    num_pre, num_post = len(pre), len(postt)
    if event_time is None:
        lv = np.full(num_post, 1.0 / num_post)
        target = f"the average of event times {postt[0]}..{postt[-1]}"
    else:
        if event_time not in postt:
            raise SpecificationError(
                f"event_time must be one of the post event times {postt}; got {event_time!r}"
            )
        lv = np.zeros(num_post)
        lv[postt.index(event_time)] = 1.0
        target = f"event time {event_time}"
    res = honest_bounds(
        beta,
        vcov,
        num_pre=num_pre,
        num_post=num_post,
        method=method,
        m=m,
        l_vec=lv,
        alpha=alpha,
        grid_points=grid_points,
        seed=seed,
        breakdown=breakdown,
    )
    delta = "Delta^RM(Mbar)" if method == "relative_magnitudes" else "Delta^SD(M)"
    return dataclasses.replace(
        res,
        estimator="sensitivity",
        estimand=(
            f"{target} of the {source} event study (relative to event time {ref}), robust to violations "
            f"of parallel trends in {delta} (Rambachan & Roth 2023) on the source's scale"
        ),
        n_obs=n_obs,
        n_clusters=n_clusters,
        post_event_times=tuple(postt),
        lineage={
            **res.lineage,
            "function": "stopdisparity.models.sensitivity.sensitivity",
            "source": source,
            "reference": ref,
            "pre_event_times": pre,
            "post_event_times": postt,
            "excluded_binned": list(excluded),
            "event_time": event_time,
        },
    )


def _extract(result: Any) -> tuple[list[int], np.ndarray, np.ndarray, int, str, int, int | None, list[int]]:
    """(event_times, estimates, vcov, reference, source label, n_obs, n_clusters, excluded bins)."""
    from stopdisparity.models.event_study import EventStudyResult

    if isinstance(result, EventStudyResult):
        keep = [i for i, e in enumerate(result.estimated) if e not in result.binned]
        times = [int(result.estimated[i]) for i in keep]
        beta = np.asarray(result.estimates, dtype=float)[keep]
        vcov = np.asarray(result.vcov, dtype=float)[np.ix_(keep, keep)]
        excluded = [int(e) for e in result.binned]
        return (
            times,
            beta,
            vcov,
            int(result.reference),
            f"event-study-{result.estimator}",
            int(result.nobs),
            int(result.clusters.g),
            excluded,
        )
    if all(hasattr(result, a) for a in ("event_times", "coefficients", "vcov")):
        times = [int(e) for e in result.event_times]
        beta = np.asarray(result.coefficients, dtype=float).ravel()
        vcov = np.asarray(result.vcov, dtype=float)
        if beta.size != len(times) or vcov.shape != (beta.size, beta.size):
            raise SpecificationError(
                f"event_times ({len(times)}), coefficients ({beta.size}) and vcov {vcov.shape} do not conform"
            )
        ref = int(getattr(result, "reference", -1 - int(getattr(result, "anticipation", 0) or 0)))
        if ref in times:  # a normalised reference coefficient (0, zero variance) is not an estimate
            i = times.index(ref)
            keep = [j for j in range(len(times)) if j != i]
            times = [times[j] for j in keep]
            beta, vcov = beta[keep], vcov[np.ix_(keep, keep)]
        binned = [int(e) for e in (getattr(result, "binned", ()) or ())]
        window = getattr(result, "window", None)
        if not binned and getattr(result, "bin_ends", False) and window is not None:
            binned = [int(window[0]), int(window[1])]  # Sun-Abraham with binned end points
        if binned:
            keep = [j for j, e in enumerate(times) if e not in binned]
            times = [times[j] for j in keep]
            beta, vcov = beta[keep], vcov[np.ix_(keep, keep)]
        source = str(getattr(result, "estimator", type(result).__name__))
        n_obs = int(getattr(result, "nobs", getattr(result, "n_obs", 0)) or 0)
        n_cl = getattr(result, "n_clusters", None)
        return times, beta, vcov, ref, source, n_obs, None if n_cl is None else int(n_cl), binned
    raise SpecificationError(
        "sensitivity needs an EventStudyResult or an object with event_times, coefficients and vcov; "
        f"got {type(result).__name__}"
    )


def _check_inputs(
    betahat: np.ndarray,
    sigma: np.ndarray,
    num_pre: int,
    num_post: int,
    l_vec: np.ndarray | None,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.asarray(betahat, dtype=float).ravel()
    s = np.asarray(sigma, dtype=float)
    if num_pre < 1 or num_post < 1:
        raise SpecificationError(f"num_pre and num_post must be >= 1; got {num_pre!r}, {num_post!r}")
    if b.size != num_pre + num_post:
        raise SpecificationError(f"betahat has {b.size} entries; num_pre + num_post = {num_pre + num_post}")
    if s.shape != (b.size, b.size):
        raise SpecificationError(f"sigma must be {b.size} x {b.size}; got {s.shape}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(s))):
        raise SpecificationError("betahat and sigma must be finite")
    if not np.allclose(s, s.T, rtol=1e-8, atol=1e-14 * max(1.0, float(np.abs(s).max()))):
        raise SpecificationError("sigma must be symmetric")
    s = (s + s.T) / 2
    if not (0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    if l_vec is None:
        lv = np.full(num_post, 1.0 / num_post)
    else:
        lv = np.asarray(l_vec, dtype=float).ravel()
        if lv.size != num_post or not np.all(np.isfinite(lv)) or not np.any(lv != 0):
            raise SpecificationError(
                f"l_vec must have {num_post} finite entries, not all 0; got {lv.tolist()}"
            )
    return b, s, lv


# ------------------------------------------------------------------------------ smoothness: FLCI
def _folded_normal_quantile(p: float, mu: float) -> float:
    """The p quantile of |N(mu, 1)|: solves Phi(c - mu) - Phi(-c - mu) = p (exact, not simulated)."""
    mu = abs(mu)

    def gap(c: float) -> float:
        return float(ndtr(c - mu) - ndtr(-c - mu) - p)

    hi = mu + float(ndtri(1 - (1 - p) / 2)) + 1.0
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-14, rtol=1e-14))


class _Flci:
    r"""The Armstrong-Kolesár FLCI of :math:`l'\tau_{post}` under :math:`\Delta^{SD}(M)`.

    Affine estimators :math:`l'\hat\beta_{post} + v'\hat\beta_{pre}` with pre weights written through
    cumulative weights :math:`w` (:math:`v_1 = w_1`, :math:`v_k = w_k - w_{k-1}`); unbiasedness under
    linear trends is :math:`\sum_k w_k = \sum_s s\,l_s`; the worst-case bias over :math:`\Delta^{SD}(M)` is
    :math:`M(\sum_k |\sum_{j\le k} w_j| + \kappa_l)` (Rambachan & Roth 2023, Appendix; HonestDiD flci.R).
    """

    def __init__(
        self,
        sigma: np.ndarray,
        num_pre: int,
        num_post: int,
        l_vec: np.ndarray,
        alpha: float,
        quantile: Any = None,
    ) -> None:
        k = num_pre
        self.k, self.alpha, self.l = k, alpha, l_vec
        # the folded-normal quantile (p, mu) -> c; the tests swap in R's simulated one
        self.quantile = _folded_normal_quantile if quantile is None else quantile
        pre, post = slice(0, k), slice(k, k + num_post)
        d = np.eye(k) - np.eye(k, k=-1)  # v = D w
        self.d = d
        self.q = d.T @ sigma[pre, pre] @ d  # Var = w'Qw + 2 r'w + c0
        self.r = d.T @ sigma[pre, post] @ l_vec
        self.c0 = float(l_vec @ sigma[post, post] @ l_vec)
        s_idx = np.arange(1, num_post + 1, dtype=float)
        self.total = float(s_idx @ l_vec)
        self.const = (
            sum(abs(float(np.arange(1, s + 1) @ l_vec[num_post - s :])) for s in range(1, num_post + 1))
            - self.total
        )
        self.lower = np.tril(np.ones((k, k)))
        # minimum variance subject to sum(w) = total (no bias restriction): closed form KKT
        kkt = np.block([[2 * self.q, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
        sol = np.linalg.solve(kkt, np.concatenate([-2 * self.r, [self.total]]))
        self.w_minvar = sol[:k]
        self.h_min = math.sqrt(max(self._var(self.w_minvar), 0.0))
        self.w_minbias = np.zeros(k)
        self.w_minbias[-1] = self.total
        self.h_max = math.sqrt(max(self._var(self.w_minbias), 0.0))
        self._cache: dict[float, tuple[float, np.ndarray]] = {}

    def _var(self, w: np.ndarray) -> float:
        return float(w @ self.q @ w + 2 * self.r @ w + self.c0)

    def bias_unit(self, w: np.ndarray) -> float:
        """Worst-case bias of the estimator with cumulative weights ``w`` when M = 1."""
        return float(np.abs(self.lower @ w).sum() + self.const)

    def _min_bias_given_h(self, h: float) -> tuple[float, np.ndarray]:
        """Smallest worst-case bias (M = 1) over w with sd <= h; SLSQP on (u, w), u >= |cumsum(w)|."""
        key = round(h, 15)
        if key in self._cache:
            return self._cache[key]
        k, low = self.k, self.lower
        scale = max(self.c0, 1e-300)
        # start: the convex combination of min-variance and min-bias weights that meets sd <= h
        t = (
            0.0
            if self.h_max <= self.h_min
            else min(1.0, max(0.0, (h - self.h_min) / (self.h_max - self.h_min)))
        )
        w0 = (1 - t) * self.w_minvar + t * self.w_minbias
        x0 = np.concatenate([np.abs(low @ w0) + 1e-12, w0])
        ones_u = np.concatenate([np.ones(k), np.zeros(k)])
        a_ineq = np.block([[np.eye(k), -low], [np.eye(k), low]])  # u - Lw >= 0, u + Lw >= 0
        cons = [
            {"type": "ineq", "fun": lambda x: a_ineq @ x, "jac": lambda x: a_ineq},
            {
                "type": "eq",
                "fun": lambda x: np.array([x[k:].sum() - self.total]),
                "jac": lambda x: np.concatenate([np.zeros(k), np.ones(k)])[None, :],
            },
            {
                "type": "ineq",
                "fun": lambda x: np.array([(h * h - self._var(x[k:])) / scale]),
                "jac": lambda x: np.concatenate([np.zeros(k), -(2 * self.q @ x[k:] + 2 * self.r) / scale])[
                    None, :
                ],
            },
        ]
        res = optimize.minimize(
            lambda x: float(ones_u @ x),
            x0,
            jac=lambda x: ones_u,
            constraints=cons,
            method="SLSQP",
            options={"maxiter": 500, "ftol": 1e-15},
        )
        w = res.x[k:]
        out = (self.bias_unit(w), w)
        self._cache[key] = out
        return out

    def _half_length(self, h: float, m: float) -> float:
        bias, _ = self._min_bias_given_h(h)
        return h * self.quantile(1 - self.alpha, m * bias / h)

    def optimum(self, m: float) -> tuple[np.ndarray, float]:
        """Optimal cumulative weights and half-length at bound ``m``."""
        if m == 0 or self.h_max - self.h_min <= 1e-12 * max(self.h_max, 1e-300):
            w = self.w_minvar if m == 0 else self.w_minbias
            h = self.h_min if m == 0 else self.h_max
            return w, h * self.quantile(1 - self.alpha, m * self.bias_unit(w) / h)
        res = optimize.minimize_scalar(
            lambda h: self._half_length(h, m),
            bounds=(self.h_min, self.h_max),
            method="bounded",
            options={"xatol": 1e-10 * self.h_max},
        )
        cands = [(float(res.fun), float(res.x))] + [
            (self._half_length(h, m), h) for h in (self.h_min, self.h_max)
        ]
        half, h = min(cands)
        return self._min_bias_given_h(h)[1], half

    def interval(self, betahat: np.ndarray, m: float) -> tuple[float, float]:
        """(center, half-length) of the FLCI at bound ``m``."""
        w, half = self.optimum(m)
        v = self.d @ w
        k = self.k
        center = float(v @ betahat[:k] + self.l @ betahat[k:])
        return center, half

    def breakdown(self, betahat: np.ndarray, scale: float) -> float:
        """Smallest M at which the FLCI contains 0 (bisection on |center| - half-length)."""

        def margin(m: float) -> float:
            c, h = self.interval(betahat, m)
            return abs(c) - h

        return _root_breakdown(margin, max(scale, 1e-12))


def _root_breakdown(margin: Any, start: float, rtol: float = 1e-4) -> float:
    """Smallest m >= 0 with ``margin(m) <= 0`` for a continuous margin (doubling, then Brent's method)."""
    if margin(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, start
    f_hi = margin(hi)
    for _ in range(_BREAKDOWN_MAX_DOUBLINGS):
        if f_hi <= 0:
            break
        lo, hi = hi, hi * 2
        f_hi = margin(hi)
    else:
        return math.inf
    if f_hi == 0:
        return hi
    return float(optimize.brentq(margin, lo, hi, rtol=rtol, xtol=rtol * hi * 1e-3))


def _bisect_breakdown(excludes: Any, start: float, rtol: float = 1e-3) -> float:
    """Smallest m >= 0 with ``excludes(m)`` False, by doubling then bisection; 0 or inf at the ends."""
    if not excludes(0.0):
        return 0.0
    lo, hi = 0.0, start
    for _ in range(_BREAKDOWN_MAX_DOUBLINGS):
        if not excludes(hi):
            break
        lo, hi = hi, hi * 2
    else:
        return math.inf
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        if excludes(mid):
            lo = mid
        else:
            hi = mid
    return hi


# ---------------------------------------------------------------- relative magnitudes: C-LF (ARP)
_LF_SIMS = 10_000


def _rm_post_rows(num_pre: int, num_post: int, mbar: float, s: int, positive: bool) -> np.ndarray:
    r"""The post-period rows of :math:`A\delta \le 0` for :math:`\Delta^{RM}(\bar M)` at max location ``s``.

    Columns: :math:`\delta` of the pre then post periods (reference dropped). With :math:`\delta_0 = 0`
    and the largest pre-period difference :math:`\pm(\delta_s - \delta_{s-1})`, ``s`` in
    ``-(num_pre-1)..0``: :math:`\pm(\delta_t - \delta_{t-1}) \le \bar M (\delta_s - \delta_{s-1})` for
    every post period ``t``.
    """
    n = num_pre + num_post + 1  # with the reference at index num_pre
    diff = np.zeros((num_post, n))
    for j, t in enumerate(range(num_pre + 1, n)):
        diff[j, t], diff[j, t - 1] = 1.0, -1.0
    vmax = np.zeros(n)
    vmax[num_pre + s], vmax[num_pre + s - 1] = 1.0, -1.0
    if not positive:
        vmax = -vmax
    a = np.vstack([diff - mbar * vmax, -diff - mbar * vmax])
    return np.delete(a, num_pre, axis=1)


def _gamma_inverse(l_vec: np.ndarray) -> np.ndarray:
    """Inverse of an invertible matrix whose first row is ``l_vec`` (the rest unit vectors)."""
    t = l_vec.size
    j = int(np.argmax(np.abs(l_vec)))
    rows = [l_vec] + [np.eye(t)[i] for i in range(t) if i != j]
    return np.linalg.inv(np.vstack(rows))


def _dual_vertices(sd: np.ndarray, x: np.ndarray) -> np.ndarray:
    r"""Vertices of :math:`\{\lambda \ge 0: \sigma'\lambda = 1, X'\lambda = 0\}` as columns (m × V).

    The ARP statistic :math:`\min_\tau \max_j (y_j - X_j\tau)/\sigma_j` equals the maximum of
    :math:`y'\lambda` over these vertices (LP duality), for every ``y`` at once.
    """
    mrows, k = x.shape
    w = np.column_stack([sd, x]).T  # (k+1) × m
    size = k + 1
    n_bases = math.comb(mrows, size)
    if n_bases > _MAX_BASES:
        raise SpecificationError(
            f"relative magnitudes with {k + 1} post periods has {n_bases} candidate bases "
            f"(limit {_MAX_BASES}); use fewer post periods (a shorter window)"
        )
    bases = np.array(list(itertools.combinations(range(mrows), size)), dtype=np.int64)
    mats = w[:, bases].transpose(1, 0, 2)  # nb × (k+1) × (k+1)
    det = np.linalg.det(mats)
    ok = np.abs(det) > 1e-12 * np.prod(np.linalg.norm(mats, axis=2), axis=1)
    rhs = np.zeros(size)
    rhs[0] = 1.0
    sol = np.linalg.solve(mats[ok], np.broadcast_to(rhs, (int(ok.sum()), size))[..., None])[..., 0]
    feasible = np.all(sol >= -1e-10, axis=1)
    lam = np.zeros((int(feasible.sum()), mrows))
    np.put_along_axis(lam, bases[ok][feasible], np.clip(sol[feasible], 0.0, None), axis=1)
    if lam.size:  # drop repeats (degenerate bases give the same vertex), compared on a relative scale
        _, first = np.unique(np.round(lam / np.abs(lam).max(), 12), axis=0, return_index=True)
        lam = lam[np.sort(first)]
    return lam.T


class _RelativeMagnitudes:
    r"""C-LF test inversion for :math:`\Delta^{RM}(\bar M)`, union over the location and sign of the max."""

    def __init__(
        self,
        betahat: np.ndarray,
        sigma: np.ndarray,
        num_pre: int,
        num_post: int,
        l_vec: np.ndarray,
        alpha: float,
        seed: int,
    ) -> None:
        self.b, self.s, self.k, self.t, self.l = betahat, sigma, num_pre, num_post, l_vec
        self.alpha, self.kappa, self.seed = alpha, alpha / 10, seed
        self.ginv = _gamma_inverse(l_vec)
        self._cache: dict[float, list[dict[str, np.ndarray | float]]] = {}

    def _problems(self, mbar: float) -> list[dict[str, np.ndarray | float]]:
        if mbar in self._cache:
            return self._cache[mbar]
        out = []
        for s in range(-(self.k - 1), 1):
            for positive in (True, False):
                a = _rm_post_rows(self.k, self.t, mbar, s, positive)
                ag = a[:, self.k :] @ self.ginv
                sig = a @ self.s @ a.T
                sd = np.sqrt(np.clip(np.diag(sig), 0.0, None))
                if np.any(sd <= 0):
                    raise SpecificationError("a moment of the relative-magnitudes test has zero variance")
                lam = _dual_vertices(sd, ag[:, 1:])
                out.append(
                    {
                        "y0": a @ self.b,
                        "a1": ag[:, 0],
                        "sig": sig,
                        "lam": lam,
                        "cv": self._lf_cv(sig, lam),
                    }
                )
        self._cache[mbar] = out
        return out

    def _lf_cv(self, sig: np.ndarray, lam: np.ndarray) -> float:
        """The 1 - kappa quantile of the ARP statistic under y ~ N(0, Sigma_Y) (least favorable)."""
        if lam.shape[1] == 0:
            return math.inf
        rng = np.random.default_rng(self.seed)
        chol = np.linalg.cholesky(sig + 1e-14 * np.trace(sig) / sig.shape[0] * np.eye(sig.shape[0]))
        draws = rng.standard_normal((_LF_SIMS, sig.shape[0])) @ chol.T
        eta = (draws @ lam).max(axis=1)
        return float(np.quantile(eta, 1 - self.kappa))

    def _accept(self, prob: Mapping[str, Any], theta: np.ndarray) -> np.ndarray:
        """Accept (True) / reject of the C-LF test of each theta for one (s, sign) problem."""
        lam: np.ndarray = prob["lam"]
        if lam.shape[1] == 0:  # the statistic is -inf: the moments can always be met
            return np.ones(theta.size, dtype=bool)
        y = prob["y0"][None, :] - theta[:, None] * prob["a1"][None, :]
        vals = y @ lam
        idx = np.argmax(vals, axis=1)
        eta = vals[np.arange(theta.size), idx]
        gam = lam[:, idx].T  # G × m
        sg = gam @ prob["sig"]  # Σγ (Σ symmetric)
        s2 = np.einsum("ij,ij->i", gam, sg)
        tiny = s2 <= np.finfo(float).eps
        s2s = np.where(tiny, 1.0, s2)
        bvec = sg / s2s[:, None]
        svec = y - bvec * eta[:, None]
        s_l = svec @ lam
        b_l = bvec @ lam
        den = 1.0 - b_l
        ratio = s_l / np.where(np.abs(den) > 1e-9, den, np.nan)
        with np.errstate(invalid="ignore"):
            vlo = np.max(np.where(den > 1e-9, ratio, -np.inf), axis=1)
            vup = np.min(np.where(den < -1e-9, ratio, np.inf), axis=1)
        sd_b = np.sqrt(s2s)
        maxstat = eta / sd_b
        zlo = vlo / sd_b
        zup = np.minimum(vup, prob["cv"]) / sd_b
        size = (self.alpha - self.kappa) / (1 - self.kappa)
        inside = (zlo <= maxstat) & (maxstat <= zup)
        cval = np.zeros(theta.size)
        if np.any(inside):
            lo_i, up_i = zlo[inside], zup[inside]
            q = stats.truncnorm.ppf(1 - size, lo_i, up_i)
            q = np.where(np.isfinite(q), q, np.where(np.isfinite(up_i), up_i, lo_i))
            cval[inside] = np.maximum(0.0, q)
        reject = inside & (maxstat > cval)
        reject |= eta > prob["cv"]  # least-favorable first stage
        reject = np.where(tiny, eta > 0, reject)
        return ~reject

    def accept(self, mbar: float, theta: np.ndarray) -> np.ndarray:
        """Union over (s, sign) of the acceptance of each theta."""
        acc = np.zeros(theta.size, dtype=bool)
        for prob in self._problems(mbar):
            acc |= self._accept(prob, theta)
        return acc

    def interval(
        self, mbar: float, est: float, se: float, points: int
    ) -> tuple[float, float, tuple[float, float, int]]:
        """(smallest, largest) accepted grid point (NaN if none) and the grid (low, high, points).

        R's default grid, ±20 sd around 0, unless the estimate lies within 5 sd of its end
        (then centered on the estimate); when an end point is accepted the grid is widened at the same
        step (twice the half-width, 2n - 1 points; at most 6 times) so the set is not cut off.
        """
        half = 20 * se
        center = 0.0 if abs(est) + 5 * se <= half else est
        for _ in range(7):
            grid = np.linspace(center - half, center + half, points)
            acc = self.accept(mbar, grid)
            if not (acc[0] or acc[-1]):
                break
            half, points = 2 * half, 2 * points - 1
        used = (float(grid[0]), float(grid[-1]), int(points))
        if not acc.any():
            return (math.nan, math.nan, used)
        return (float(grid[acc].min()), float(grid[acc].max()), used)

    def breakdown(self) -> float:
        """Smallest Mbar at which theta = 0 is accepted."""
        zero = np.zeros(1)
        return _bisect_breakdown(lambda mb: not bool(self.accept(mb, zero)[0]), 1.0)
