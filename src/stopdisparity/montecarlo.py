"""Monte Carlo harness: repeated synth draws with a planted effect, scored against the DGP's truth.

Each draw takes the cell-level process (:func:`stopdisparity.synth.cells`) with its own seed, fits
every :class:`Method` on it (a fit shared by several methods is made once per draw), and compares each
estimate with the realised true value of the estimand the method claims
(:func:`stopdisparity.synth.truth`). The summary gives, per method, the mean bias with its Monte Carlo
standard error, the spread of the estimates, the coverage of the 95% intervals and the rejection rate
of H0: no effect — the acceptance rules of the validation suite are stated on these.

Coverage is scored on the interval the method reports. For a method whose interval is the inversion
of a test (bootstrap, randomization inference) the harness asks the test directly: the interval covers
the truth exactly when the test of H0: β = truth does not reject (up to the bisection tolerance of the
numerical inversion), so ``test(truth) >= alpha`` is the coverage event and ``test(0) < alpha`` the
rejection event, at the cost of one or two tests instead of a full inversion.

References
----------
Morris, T. P., White, I. R. & Crowther, M. J. (2019). Using simulation studies to evaluate statistical
methods. Statistics in Medicine 38(11), 2074-2102. https://doi.org/10.1002/sim.8086
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError, StopDisparityWarning
from stopdisparity.synth import SynthSpec, cell_truth, cells, truth

#: Fits one draw's cells and returns a result with ``tidy()``.
FitFn = Callable[[pl.DataFrame], Any]
#: A draw's truth (the :func:`stopdisparity.synth.truth` dictionary) to the value a method claims.
EstimandFn = Callable[[Mapping[str, Any]], float]
#: ``(result, b0) -> p-value of H0: parameter = b0`` for a test-inversion interval.
TestFn = Callable[[Any, float], float]
#: ``result -> {estimate, std_error, p_value, ci_low, ci_high}`` for methods that are not a tidy row.
RowFn = Callable[[Any], Mapping[str, float]]
#: ``(cell_truth, cells, result) -> truth`` for an estimand whose weights come from the draw itself
#: (:func:`stopdisparity.synth.cell_truth`, the fitted cells and the fitted result).
DrawTruthFn = Callable[[pl.DataFrame, pl.DataFrame, Any], float]

_SUMMARY_SCHEMA: dict[str, Any] = {
    "method": pl.String,
    "draws": pl.Int64,
    "mean_estimate": pl.Float64,
    "mean_truth": pl.Float64,
    "mean_bias": pl.Float64,
    "sd": pl.Float64,
    "sd_error": pl.Float64,
    "mcse_bias": pl.Float64,
    "mean_std_error": pl.Float64,
    "se_ratio": pl.Float64,
    "coverage": pl.Float64,
    "mcse_coverage": pl.Float64,
    "rejection_rate": pl.Float64,
    "mcse_rejection": pl.Float64,
}


def estimand(key: str) -> EstimandFn:
    """The truth of ``truth()["estimands"][key]`` (``att_logodds``, ``att_share``, ``att_pp`` ...)."""

    def get(t: Mapping[str, Any]) -> float:
        value = t["estimands"][key]
        return math.nan if value is None else float(value)

    get.__name__ = key
    return get


def event_year_estimand(event_year: int, reference: int = -1) -> EstimandFn:
    """The truth of an event-study coefficient β_e, relative to the omitted event year.

    The log-odds effect plus the planted pre-trend at ``event_year``, minus the same at ``reference``.
    """

    def get(t: Mapping[str, Any]) -> float:
        rows = {r["event_year"]: r for r in t["event_time_years"]}

        def level(e: int) -> float:
            r = rows.get(e)
            if r is None or r["att_logodds"] is None:
                return math.nan
            return float(r["att_logodds"]) + float(r["pretrend_logodds"] or 0.0)

        return level(event_year) - level(reference)

    get.__name__ = f"event_year_{event_year}"
    return get


#: The headline estimand, the default of :class:`Method`.
ATT_LOGODDS: EstimandFn = estimand("att_logodds")


def zero(_: Mapping[str, Any]) -> float:
    """A null estimand (e.g. the reference race's count change when only the focal race moves)."""
    return 0.0


def effective_clusters_row(result: Any) -> dict[str, float]:
    """A :attr:`Method.row` recording the fit's effective number of clusters G* as its estimate.

    A diagnostic, not an estimator: no SE, p-value or interval (its coverage and rejection are not
    meaningful). Pair it with a method's coverage by :meth:`MonteCarloResult.beside`.
    """
    nan = math.nan
    return {"estimate": result.clusters.effective} | dict.fromkeys(
        ("std_error", "p_value", "ci_low", "ci_high"), nan
    )


_CR2_ROWS: dict[str, Any] = {}


def _cr2_tidy(result: Any, alpha: float) -> dict[str | None, Mapping[str, Any]]:
    """The tidy rows of ``cr2(result)`` at level ``alpha`` by term (None: the first), once per fit.

    A draw's methods share the fit object, so its identity (and the level) keys the cache.
    """
    if _CR2_ROWS.get("result") is not result or _CR2_ROWS.get("alpha") != alpha:
        from stopdisparity.models.inference import cr2

        rows = cr2(result).tidy(alpha).to_dicts()
        _CR2_ROWS.update(result=result, alpha=alpha, rows={None: rows[0]} | {r["term"]: r for r in rows})
    return _CR2_ROWS["rows"]


def cr2_term_row(term: str | None = None, alpha: float = 0.05) -> Callable[[Any], dict[str, float]]:
    """A :attr:`Method.row` scoring tidy row ``term`` (None: the first) under CR2, Bell–McCaffrey df.

    It scores the draw's own fit: with fits made with ``inference="cluster"`` one fit scores both the
    CR1 option (its own rows) and the default CR2 (these rows), which is what a default fit attaches.
    The interval is at level ``alpha``: pass :func:`run`'s.
    """

    def row(result: Any) -> dict[str, float]:
        t = _cr2_tidy(result, alpha)[term]
        return {k: t[k] for k in ("estimate", "std_error", "p_value", "ci_low", "ci_high")}

    return row


#: The headline (first) row under CR2.
cr2_row = cr2_term_row()


def pp_cr2_row(result: Any) -> dict[str, float]:
    """A :attr:`Method.row` scoring a logit's percentage-point effect under CR2: ``pp_ci_low``/``pp_ci_high``.

    At the 95% level (the Monte Carlo's default ``alpha``). The effect's gradient is the CR2 contrast,
    with its own df; no p-value, so rejection is not scored.
    """
    t = _cr2_tidy(result, 0.05)[None]
    return {"estimate": t["pp_change"], "std_error": t["pp_std_error"], "p_value": math.nan,
            "ci_low": t["pp_ci_low"], "ci_high": t["pp_ci_high"]}  # fmt: skip


def score_bootstrap_test(draws: int = 999, seed: int = 1, weights: str = "rademacher") -> TestFn:
    """``test(result, b0)``: the Kline-Santos score bootstrap p-value of H0: β = b0 (``twfe-logit``)."""

    def test(result: Any, b0: float) -> float:
        from stopdisparity.models import inference

        return inference.score_bootstrap_setup(result, draws=draws, weights=weights, seed=seed).p_value(b0)  # type: ignore[arg-type]

    return test


def wild_bootstrap_test(draws: int = 999, seed: int = 1, weights: str = "webb") -> TestFn:
    """``test(result, b0)``: the wild cluster restricted bootstrap p-value of H0: β = b0 (linear)."""

    def test(result: Any, b0: float) -> float:
        from stopdisparity.models import inference

        return inference.wild_bootstrap_setup(result, draws=draws, weights=weights, seed=seed).p_value(b0)  # type: ignore[arg-type]

    return test


def ri_test(draws: int = 999, seed: int = 1, within: str | None = "state") -> TestFn:
    """``test(result, 0)``: the randomization-inference p-value of H0: no effect (adoption paths permuted).

    Only the null of no effect is available (the harness asks for it alone when the truth is 0);
    a non-zero ``b0`` raises, so RI coverage is not scored where the truth is not 0.
    """

    def test(result: Any, b0: float) -> float:
        from stopdisparity.models import inference

        if b0 != 0.0:
            raise SpecificationError(f"ri_test scores H0: no effect only; asked for b0 = {b0!r}")
        ri = inference.randomization_inference(result, draws=draws, seed=seed, within=within, ci=False)
        return float(ri.tidy().get_column("p_value")[0])

    return test


@dataclass(frozen=True, slots=True)
class Method:
    """One estimator-and-inference combination, scored against the estimand it claims.

    Parameters
    ----------
    name
        Label of the method in the draws and summary tables.
    fit
        Fits a draw's cells; methods given the *same* function object share one fit per draw.
    estimand
        The truth the method claims (:func:`estimand`, :func:`event_year_estimand`, :func:`zero`).
    term
        Tidy row to score (None: the first row, the headline term).
    column, std_error
        Tidy columns holding the estimate and its standard error (e.g. ``pp_change`` and
        ``pp_std_error``). When ``column`` is not ``estimate`` the interval is the normal one.
    test
        For a test-inversion interval: ``test(result, b0)`` gives the p-value of H0: β = b0; coverage
        and rejection are then scored from the test (see the module notes).
    row
        Instead of a tidy row: a function of the result giving estimate, std_error, p_value, ci_low and
        ci_high (e.g. a pre-trend Wald test: estimate = statistic, no interval).
    draw_truth
        Instead of ``estimand``: the truth computed from the draw's planted cell effects
        (:func:`stopdisparity.synth.cell_truth`), its cells and the fitted result — for estimators that
        average the cell effects with weights of their own (cohort sizes, unit weights, the cells a
        comparison exists for), as the staggered estimators do.
    """

    name: str
    fit: FitFn
    estimand: EstimandFn = ATT_LOGODDS
    term: str | None = None
    column: str = "estimate"
    std_error: str = "std_error"
    test: TestFn | None = None
    row: RowFn | None = None
    draw_truth: DrawTruthFn | None = None


@dataclass(frozen=True, slots=True)
class MonteCarloResult:
    """Per-draw, per-method scores (``draws``) and their summary against the truth."""

    draws: pl.DataFrame
    spec: SynthSpec
    alpha: float = 0.05

    @property
    def summaries(self) -> pl.DataFrame:
        """One row per method: the performance measures of Morris et al. (2019, table 6).

        Draws, mean estimate and truth, bias and its MCSE, the sd of the estimates and of the errors
        (estimate - truth: they differ when the realised truth varies by draw), mean SE and SE / sd of
        the errors, coverage and rejection rate with their binomial MCSEs.
        """
        rows = [self.summary_of(m) for m in self.draws.get_column("method").unique(maintain_order=True)]
        return pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)

    def summary_of(self, method: str) -> dict[str, Any]:
        """The summary row of one method."""
        d = self.draws.filter(pl.col("method") == method)
        r = d.height
        if r == 0:
            raise SpecificationError(
                f"no draws for method {method!r}; methods: {self.draws['method'].unique().to_list()}"
            )
        bias = d["estimate"] - d["truth"]
        sd = float(d["estimate"].std()) if r > 1 else math.nan
        sd_error = float(bias.std()) if r > 1 else math.nan
        mean_se = _mean(d["std_error"])
        coverage = _mean(d["covered"].cast(pl.Float64))
        rejection = _mean(d["rejected"].cast(pl.Float64))
        return {
            "method": method,
            "draws": r,
            "mean_estimate": _mean(d["estimate"]),
            "mean_truth": _mean(d["truth"]),
            "mean_bias": _mean(bias),
            "sd": sd,
            "sd_error": sd_error,
            "mcse_bias": sd_error / math.sqrt(r),
            "mean_std_error": mean_se,
            "se_ratio": mean_se / sd_error if sd_error and sd_error > 0 else math.nan,
            "coverage": coverage,
            "mcse_coverage": math.sqrt(coverage * (1 - coverage) / r),
            "rejection_rate": rejection,
            "mcse_rejection": math.sqrt(rejection * (1 - rejection) / r),
        }

    def beside(self, method: str, diagnostic: str) -> pl.DataFrame:
        """Per draw: whether ``method``'s interval covered the truth, beside a diagnostic's estimate.

        Columns ``draw``, ``covered`` and one named ``diagnostic`` holding that method's estimate in the
        draw (e.g. G* from :func:`effective_clusters_row`).
        """
        d = self.draws
        return (
            d.filter(pl.col("method") == method)
            .select("draw", "covered")
            .join(
                d.filter(pl.col("method") == diagnostic).select("draw", pl.col("estimate").alias(diagnostic)),
                on="draw",
            )
            .sort("draw")
        )

    @property
    def summary(self) -> dict[str, Any]:
        """The summary of the only method (raises when there are several: use :meth:`summary_of`)."""
        methods = self.draws.get_column("method").unique(maintain_order=True).to_list()
        if len(methods) != 1:
            raise SpecificationError(f"several methods ({methods}); use summary_of(name) or summaries")
        return self.summary_of(methods[0])


def _mean(s: pl.Series) -> float:
    v = s.drop_nulls().drop_nans() if s.dtype.is_float() else s.drop_nulls()
    return float(v.mean()) if v.len() else math.nan  # type: ignore[arg-type]


def _score(
    method: Method, result: Any, target: float, alpha: float, tidy: pl.DataFrame | None = None
) -> dict[str, Any]:
    """Score one method on one draw; ``tidy``: the result's table, made once for the methods sharing a fit."""
    if method.row is not None:
        row = dict(method.row(result))
    else:
        tidy = result.tidy(alpha=alpha) if tidy is None else tidy
        if method.term is not None:
            tidy = tidy.filter(pl.col("term") == method.term)
            if tidy.height != 1:
                raise SpecificationError(f"method {method.name!r}: no single tidy row {method.term!r}")
        t = tidy.row(0, named=True)
        est, se = t[method.column], t[method.std_error]
        if method.column == "estimate":
            row = {k: t[k] for k in ("estimate", "std_error", "p_value", "ci_low", "ci_high")}
        else:
            from stopdisparity.models._fe import inference_stats

            _, p, lo, hi = inference_stats(est, se, alpha)
            row = {"estimate": est, "std_error": se, "p_value": p, "ci_low": lo, "ci_high": hi}
    if method.test is not None:
        p0 = method.test(result, 0.0)
        null_truth = abs(target) <= 1e-12  # S0 truths are 0 up to rounding (e.g. a share difference)
        p_truth = p0 if null_truth else method.test(result, target)
        row["p_value"] = p0
        covered, rejected = p_truth >= alpha, p0 < alpha
    else:
        lo, hi = row.get("ci_low", math.nan), row.get("ci_high", math.nan)
        covered = (lo <= target <= hi) if math.isfinite(lo) and math.isfinite(hi) else None
        rejected = row["p_value"] < alpha if math.isfinite(row["p_value"]) else None
    return {
        "method": method.name,
        "estimate": float(row["estimate"]),
        "std_error": float(row.get("std_error", math.nan)),
        "p_value": float(row["p_value"]),
        "truth": float(target),
        "covered": covered,
        "rejected": rejected,
    }


def run(
    spec: SynthSpec,
    methods: Method | FitFn | Sequence[Method],
    *,
    draws: int,
    seed: int,
    rows: int,
    years: tuple[int, int] | None = None,
    agency: str | None = "state_patrol",
    alpha: float = 0.05,
) -> MonteCarloResult:
    """Draw ``draws`` panels from ``spec`` (seeds ``seed .. seed+draws-1``), fit, score against truth.

    Parameters
    ----------
    spec
        The data-generating process.
    methods
        The methods to score. A bare fit function is one method named ``fit`` claiming
        ``att_logodds`` from the first tidy row.
    draws, seed
        Number of draws and the first seed (draw ``i`` uses ``seed + i``: reproducible and disjoint).
    rows, years
        Stops per draw and the years kept (shrink the panel, not the number of draws).
    agency
        The stopping agency whose cells are fitted (None: every agency's cells, with ``agency``).
    alpha
        Level: intervals are 1 - alpha, rejection at alpha.

    Returns
    -------
    MonteCarloResult
        ``draws`` has one row per draw × method: draw, seed, method, estimate, std_error, p_value
        (of H0: no effect), truth, covered, rejected.
    """
    if draws < 1:
        raise SpecificationError(f"draws must be >= 1; got {draws!r}")
    if not (0 < alpha < 1):
        raise SpecificationError(f"alpha must be in (0, 1); got {alpha!r}")
    if callable(methods) and not isinstance(methods, Method):
        methods = [Method("fit", methods)]
    elif isinstance(methods, Method):
        methods = [methods]
    methods = list(methods)
    names = [m.name for m in methods]
    if not methods or len(set(names)) != len(names):
        raise SpecificationError(f"methods must be a non-empty list with distinct names; got {names}")
    records: list[dict[str, Any]] = []
    for i in range(draws):
        s = seed + i
        frame = cells(spec, seed=s, rows=rows, years=years)
        if agency is not None:
            frame = frame.filter(pl.col("agency") == agency)
        frame = frame.with_columns(pl.col("period").cast(pl.Int64), pl.col("first_treated").cast(pl.Int64))
        t = truth(spec, seed=s, rows=rows, years=years) if any(m.draw_truth is None for m in methods) else {}
        effects = None
        if any(m.draw_truth is not None for m in methods):
            effects = cell_truth(spec, seed=s, rows=rows, years=years)
        fitted: dict[int, Any] = {}
        tidies: dict[int, pl.DataFrame] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StopDisparityWarning)
            for m in methods:
                key = id(m.fit)
                if key not in fitted:
                    fitted[key] = m.fit(frame)
                if m.draw_truth is not None:
                    assert effects is not None
                    target = m.draw_truth(effects, frame, fitted[key])
                else:
                    target = m.estimand(t)
                if m.row is None and key not in tidies:
                    tidies[key] = fitted[key].tidy(alpha=alpha)
                scored = _score(m, fitted[key], target, alpha, tidies.get(key))
                records.append({"draw": i, "seed": s, **scored})
    schema = {
        "draw": pl.Int64,
        "seed": pl.Int64,
        "method": pl.String,
        "estimate": pl.Float64,
        "std_error": pl.Float64,
        "p_value": pl.Float64,
        "truth": pl.Float64,
        "covered": pl.Boolean,
        "rejected": pl.Boolean,
    }
    return MonteCarloResult(pl.DataFrame(records, schema=schema), spec, alpha)


def inference_size(
    *,
    draws: int = 500,
    seed: int = 5000,
    rows: int = 1_000_000,
    years: tuple[int, int] = (2005, 2012),
    boot_draws: int = 999,
    ri_draws: int = 999,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Rejection rates under S0 at design F: the registry's real NC+SC treated counties.

    With 13 treated counties (one holding about a fifth of their stops) the analytical CR1 test is
    expected to over-reject (MacKinnon & Webb 2017); the score bootstrap (logit), the wild cluster
    restricted bootstrap (linear, Webb weights) and randomization inference over adoption paths within
    state are the remedies whose size this measures. Returns a JSON-ready dictionary (what
    ``bench/inference_size.py`` writes to ``bench/inference_size.json``).

    References
    ----------
    MacKinnon, J. G. & Webb, M. D. (2017). Wild bootstrap inference for wildly different cluster sizes.
    Journal of Applied Econometrics 32(2), 233-254. https://doi.org/10.1002/jae.2508
    """
    from stopdisparity.models._fe import package_versions
    from stopdisparity.models.did import fit_did

    def logit(f: pl.DataFrame) -> Any:
        return fit_did(f, inference="cluster")  # CR1: the analytical rows measured here

    def linear(f: pl.DataFrame) -> Any:
        return fit_did(f, estimator="twfe-linear", inference="cluster")

    share = estimand("att_share")
    methods = [
        Method("logit_cr1", logit),
        Method("logit_cr2", logit, row=cr2_row),
        Method("logit_score", logit, test=score_bootstrap_test(boot_draws)),
        Method("logit_ri", logit, test=ri_test(ri_draws)),
        Method("linear_cr1", linear, share),
        Method("linear_cr2", linear, share, row=cr2_row),
        Method("linear_wild", linear, share, test=wild_bootstrap_test(boot_draws)),
        Method("linear_ri", linear, share, test=ri_test(ri_draws)),
    ]
    spec = SynthSpec(scenario="null", design="registry")
    result = run(spec, methods, draws=draws, seed=seed, rows=rows, years=years, alpha=alpha)
    return {
        "what": "rejection rates of H0: no effect at level alpha under S0 (no effect), design F",
        "design": "F: SynthSpec(scenario='null', design='registry') - the shipped registry's NC+SC counties",
        "draws": draws,
        "seeds": [seed, seed + draws - 1],
        "rows_per_draw": rows,
        "years": list(years),
        "alpha": alpha,
        "bootstrap_draws": boot_draws,
        "ri_permutations": ri_draws,
        "methods": result.summaries.select(
            "method", "draws", "rejection_rate", "mcse_rejection", "mean_estimate", "sd", "mean_std_error"
        ).to_dicts(),
        "versions": package_versions(),
    }


__all__ = [
    "ATT_LOGODDS",
    "EstimandFn",
    "FitFn",
    "Method",
    "MonteCarloResult",
    "estimand",
    "event_year_estimand",
    "inference_size",
    "ri_test",
    "run",
    "score_bootstrap_test",
    "wild_bootstrap_test",
    "zero",
]
