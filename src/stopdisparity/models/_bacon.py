r"""What a TWFE coefficient averages: Goodman-Bacon's 2×2s and de Chaisemartin–D'Haultfœuille's weights.

Two diagnostics of the TWFE regression :math:`y_{it} = \alpha_i + \gamma_t + \beta D_{it} + e_{it}`
under staggered or switching treatment (issue 6). Neither is an estimator of a causal effect; both say
which comparisons and which treated cells the TWFE :math:`\hat\beta` is made of, so a reader can see
whether already-treated units serve as controls ("forbidden comparisons") and whether treated cells
enter with negative weight.

- :func:`bacon_decomposition` (``--estimator bacon``): Goodman-Bacon (2021), Theorem 1. On a balanced
  panel with absorbing treatment and no covariates, the *unweighted* TWFE :math:`\hat\beta` is exactly
  a weighted average of every 2×2 DiD between two timing groups (timing cohorts, never-treated units,
  units treated from the first period), with weights proportional to the group sizes and the variance
  of treatment within each 2×2; they are non-negative and sum to one.
- :func:`twfe_weights` (``--estimator twfe-weights``): de Chaisemartin & D'Haultfœuille (2020),
  Theorem 1 (the ``feTR`` weights of R/Stata ``twowayfeweights``). On any panel, balanced or not, with
  treatment that may switch on and off and cells that may be weighted,
  :math:`\hat\beta = \sum_{D_{it}=1} \omega_{it}\,\tau_{it}` under parallel trends, where
  :math:`\tau_{it}` is the cell's treatment effect and :math:`\omega_{it} = n_{it}\varepsilon_{it} /
  \sum_{D=1} n\varepsilon` with :math:`\varepsilon` the treatment residualised on the two sets of fixed
  effects; the weights sum to one and may be negative.

References
----------
Goodman-Bacon, A. (2021). Difference-in-differences with variation in treatment timing. Journal of
Econometrics 225(2), 254-277. https://doi.org/10.1016/j.jeconom.2021.03.014
de Chaisemartin, C. & D'Haultfœuille, X. (2020). Two-way fixed effects estimators with heterogeneous
treatment effects. American Economic Review 110(9), 2964-2996. https://doi.org/10.1257/aer.20181169
Flack, E. & Jee, E. (2020). bacondecomp: Goodman-Bacon Decomposition. R package 0.1.1 (the
published numbers the tests match).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from stopdisparity.errors import SpecificationError
from stopdisparity.models import _fe
from stopdisparity.models._staggered_data import (
    CLUSTER,
    GID,
    TREATED,
    StaggeredPanel,
    Y,
    on_scale,
    warn_thin_cells,
)
from stopdisparity.results import TidyRow, tidy_frame

#: Comparison types of the Goodman-Bacon decomposition, in the order of the tidy table.
BACON_TYPES: tuple[str, ...] = (
    "earlier_vs_later",
    "later_vs_earlier",
    "treated_vs_untreated",
    "treated_vs_already_treated",
)
#: A cell weight of absolute value below this counts as zero in the positive/negative tallies, as in
#: Stata/R ``twowayfeweights`` (their ``LIMIT_SENSITIVITY``); it keeps cells whose weight is zero up to
#: rounding (e.g. an always-treated unit in a period whose treated share equals the panel's) out of
#: both counts.
ZERO_WEIGHT = 1e-10

_BACON_ESTIMAND = (
    "unweighted TWFE coefficient on the outcome level (unit and period effects) and the 2×2 DiDs it "
    "averages (Goodman-Bacon 2021); parallel trends in levels"
)
_TWFE_W_ESTIMAND = (
    "TWFE coefficient on the outcome level and the weights it puts on each treated cell's effect (de "
    "Chaisemartin & D'Haultfœuille 2020, feTR); parallel trends in levels"
)


# ================================================================================== Goodman-Bacon
@dataclass(frozen=True, eq=False)
class BaconResult:
    """The Goodman-Bacon decomposition of an unweighted TWFE coefficient (from :func:`bacon_decomposition`).

    Attributes
    ----------
    beta, std_error
        The TWFE coefficient on ``treated`` (unit and period effects, unweighted) and its CR1 standard
        error clustered by the panel's cluster (the unit by default), pyfixest's ``CRV1`` convention.
    two_by_twos
        One row per 2×2: ``type``, ``treated`` and ``control`` (adoption period as text, or ``never`` /
        ``always``), ``estimate``, ``weight``, ``n_treated_units``, ``n_control_units``, ``first_period``
        and ``last_period`` of the 2×2's window, ``n_periods``.
    by_type
        One row per comparison type (:data:`BACON_TYPES`): ``type``, ``estimate`` (weight-averaged 2×2;
        NaN when the type is absent), ``weight`` (total), ``n_comparisons``.
    """

    beta: float
    std_error: float
    two_by_twos: pl.DataFrame
    by_type: pl.DataFrame
    n_obs: int
    n_units: int
    n_clusters: int
    small_sample: _fe.SmallSample
    vcov_description: str
    columns: Mapping[str, Any]
    lineage: Mapping[str, Any]
    outcome_scale: str = "level"

    def coef(self) -> pl.DataFrame:
        """``term`` and ``estimate`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "estimate")

    def se(self) -> pl.DataFrame:
        """``term`` and ``std_error`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "std_error")

    @property
    def weighted_sum(self) -> float:
        """Σ weight × 2×2 estimate: equals :attr:`beta` (Theorem 1), to rounding."""
        f = self.two_by_twos
        return float((f.get_column("estimate") * f.get_column("weight")).sum())

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """``twfe`` (β, CR1 SE, t(G-1) inference), then one row per comparison type, then every 2×2.

        Type and 2×2 rows carry ``estimate`` and the extra key ``weight`` and no inference (the
        decomposition is descriptive); 2×2 rows also ``type``, ``treated``, ``control`` and the numbers
        of treated and control units.
        """
        stat, p, lo, hi = _fe.inference_stats(self.beta, self.std_error, alpha, df=self.n_clusters - 1)
        none = "none: a decomposition of the TWFE coefficient, not an estimate with its own inference"
        rows = [
            TidyRow(
                "twfe",
                self.beta,
                self.std_error,
                stat,
                p,
                lo,
                hi,
                self.n_obs,
                self.n_clusters,
                "bacon",
                on_scale(_BACON_ESTIMAND, self.outcome_scale),
                f"analytical: {self.vcov_description}; t({self.n_clusters - 1})",
                {"weight": 1.0},
            )
        ]
        for r in self.by_type.iter_rows(named=True):
            rows.append(
                TidyRow(
                    r["type"],
                    r["estimate"],
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    self.n_obs,
                    self.n_clusters,
                    "bacon",
                    on_scale(_BACON_ESTIMAND, self.outcome_scale),
                    none,
                    {"weight": r["weight"], "type": r["type"], "n_comparisons": r["n_comparisons"]},
                )
            )
        for r in self.two_by_twos.iter_rows(named=True):
            n_units = r["n_treated_units"] + r["n_control_units"]
            rows.append(
                TidyRow(
                    f"2x2:{r['treated']} vs {r['control']}",
                    r["estimate"],
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    n_units * r["n_periods"],
                    n_units,
                    "bacon",
                    on_scale(_BACON_ESTIMAND, self.outcome_scale),
                    none,
                    {
                        "weight": r["weight"],
                        "type": r["type"],
                        "treated": r["treated"],
                        "control": r["control"],
                        "n_treated_units": r["n_treated_units"],
                        "n_control_units": r["n_control_units"],
                    },
                )
            )
        return tidy_frame(rows)


def _refuse_bacon(panel: StaggeredPanel) -> None:
    why = []
    if not panel.balanced:
        why.append(
            "the panel is unbalanced (Theorem 1 needs every unit in every period; pass balanced=True, "
            "missing='drop' to prepare_staggered, or use twfe-weights, which allows unbalanced panels)"
        )
    if panel.xnames:
        why.append(
            f"covariates were given ({list(panel.columns.get('covariates') or panel.xnames)}); the "
            "decomposition here is of the regression on unit and period effects only"
        )
    if panel.columns.get("weights") is not None:
        why.append(
            f"a weights column was given ({panel.columns['weights']!r}); the decomposition is of the "
            "unweighted TWFE regression, while the stop panels' default linear TWFE weights cells by "
            "their stops, so the 2×2s would not add up to that coefficient. Drop the weights to "
            "decompose the unweighted TWFE, or use twfe-weights, which handles weighted cells"
        )
    if why:
        raise SpecificationError("the Goodman-Bacon decomposition is refused: " + "; ".join(why))


def _twfe_balanced(
    y: np.ndarray, d: np.ndarray, cluster_codes: np.ndarray
) -> tuple[float, float, _fe.SmallSample]:
    """Unweighted TWFE β on a balanced units × periods array pair and its CR1 SE.

    ``cluster_codes`` holds each cell's cluster (units × periods), so clusters need not be units.
    """
    n_u, n_t = y.shape

    def within(a: np.ndarray) -> np.ndarray:
        return a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()

    dt, yt = within(d), within(y)
    sxx = float((dt * dt).sum())
    if sxx <= 1e-12 * dt.size:
        raise SpecificationError("treatment has no variation left after unit and period effects")
    beta = float((dt * yt).sum() / sxx)
    e = yt - beta * dt
    g = int(cluster_codes.max()) + 1
    scores = np.bincount(cluster_codes.ravel(), weights=(dt * e).ravel(), minlength=g)
    v0 = float((scores**2).sum()) / sxx**2
    unit_codes = np.repeat(np.arange(n_u), n_t)
    period_codes = np.tile(np.arange(n_t), n_u)
    ss = _fe.SmallSample(
        n=n_u * n_t,
        n_coef=1,
        fe_names=("unit", "period"),
        fe_levels=(n_u, n_t),
        fe_nested=(
            _fe.nested_in(unit_codes, cluster_codes.ravel()),
            _fe.nested_in(period_codes, cluster_codes.ravel()),
        ),
        g=g,
    )
    return beta, math.sqrt(v0 * ss.factor) if math.isfinite(ss.factor) else math.nan, ss


def bacon_decomposition(panel: StaggeredPanel) -> BaconResult:
    r"""Decompose the unweighted TWFE coefficient into every 2×2 DiD (Goodman-Bacon 2021, Theorem 1).

    Timing groups are the adoption cohorts, the never-treated units (``g = 0``) and the units treated
    from the panel's first period ("always treated"). For two cohorts :math:`k` (earlier, adopting at
    :math:`t_k`) and :math:`l` (later, :math:`t_l`) there are two 2×2s: ``earlier_vs_later`` (window
    :math:`[\min t, t_l)`, :math:`l` not yet treated is the control) and ``later_vs_earlier`` (window
    :math:`[t_k, \max t]`, the already-treated :math:`k` is the control: the "forbidden" comparison);
    each cohort is also compared with the never-treated (``treated_vs_untreated``) and with the always
    treated (``treated_vs_already_treated``) over the whole panel. With :math:`n` the group sizes and
    :math:`\bar D` the share of periods a group is treated, the weights are proportional to
    :math:`n_k n_l (\bar D_k - \bar D_l)(1 - \bar D_k)` and :math:`n_k n_l (\bar D_k - \bar D_l)\bar D_l`
    (cohort pairs) and :math:`n_k n_u \bar D_k (1 - \bar D_k)` (against a group without within-unit
    variation), normalised to sum to one; then :math:`\hat\beta = \sum` weight × 2×2 exactly. Each
    2×2 is the difference between the two groups of the change in mean outcome from the window's
    untreated to its treated periods.

    Parameters
    ----------
    panel
        From :func:`~stopdisparity.models._staggered_data.prepare_staggered`: balanced, without
        covariates and without a weights column. With trials the outcome is the share and the
        regression decomposed is still the unweighted one.

    Returns
    -------
    BaconResult

    Raises
    ------
    SpecificationError
        For an unbalanced panel, covariates or a weights column (the message says why), or when the
        treatment does not vary after the fixed effects.
    """
    _refuse_bacon(panel)
    frame = panel.frame
    n_u, n_t = panel.n_units, len(panel.periods)
    y = panel.matrix(Y)
    d = panel.matrix(TREATED)
    units = panel.units()
    gid = units.get_column(GID).to_numpy()
    # the frame is balanced and sorted by unit, period: its cluster column reshapes to units × periods
    cluster_codes = _fe.codes_of(frame.get_column(CLUSTER)).reshape(n_u, n_t)
    beta, se, ss = _twfe_balanced(y, d, cluster_codes)

    # timing groups: cohorts by start period (tid >= 1), never (-1), always (0)
    starts = np.array(sorted({int(s) for s in gid if s >= 1}), dtype=np.int64)
    cohort_idx = np.searchsorted(starts, gid)
    n_c = starts.size
    onehot = np.zeros((n_c, n_u))
    is_c = gid >= 1
    onehot[cohort_idx[is_c], np.nonzero(is_c)[0]] = 1.0
    sizes = onehot.sum(axis=1)
    cum = np.concatenate([np.zeros((n_c, 1)), np.cumsum((onehot @ y) / sizes[:, None], axis=1)], axis=1)

    def wmean(c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mean outcome of cohort rows ``c`` (or a fixed group's cumsum rows) over periods [a, b)."""
        return (c[np.arange(c.shape[0]), b] - c[np.arange(c.shape[0]), a]) / (b - a)

    labels = {int(t): str(panel.periods[int(t)]) for t in starts}
    per = panel.periods
    rows: list[dict[str, Any]] = []
    raw_w: list[np.ndarray] = []
    est: list[np.ndarray] = []

    def add(
        kind: str,
        tr: np.ndarray,
        co: list[str],
        n_tr: np.ndarray,
        n_co: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        w: np.ndarray,
        b: np.ndarray,
    ) -> None:
        for i in range(tr.size):
            rows.append(
                {
                    "type": kind,
                    "treated": labels[int(tr[i])],
                    "control": co[i],
                    "n_treated_units": int(n_tr[i]),
                    "n_control_units": int(n_co[i]),
                    "first_period": int(per[int(lo[i])]),
                    "last_period": int(per[int(hi[i]) - 1]),
                    "n_periods": int(hi[i] - lo[i]),
                }
            )
        raw_w.append(w)
        est.append(b)

    # cohort pairs k < l (k earlier)
    kk, ll = np.triu_indices(n_c, k=1)
    if kk.size:
        sk, sl = starts[kk], starts[ll]
        ck, cl_ = cum[kk], cum[ll]
        zero, end = np.zeros_like(sk), np.full_like(sk, n_t)
        p = (sl - sk) / n_t
        base = sizes[kk] * sizes[ll] * p
        # earlier vs later: window [0, t_l); k treated from t_k, l untreated
        b_el = (wmean(ck, sk, sl) - wmean(ck, zero, sk)) - (wmean(cl_, sk, sl) - wmean(cl_, zero, sk))
        add(
            "earlier_vs_later",
            sk,
            [labels[int(t)] for t in sl],
            sizes[kk],
            sizes[ll],
            zero,
            sl,
            base * sk / n_t,
            b_el,
        )
        # later vs earlier: window [t_k, T); l treated from t_l, k already treated
        b_le = (wmean(cl_, sl, end) - wmean(cl_, sk, sl)) - (wmean(ck, sl, end) - wmean(ck, sk, sl))
        add(
            "later_vs_earlier",
            sl,
            [labels[int(t)] for t in sk],
            sizes[ll],
            sizes[kk],
            sk,
            end,
            base * (n_t - sl) / n_t,
            b_le,
        )
    # cohorts against groups without within-unit variation in treatment
    for kind, code, name in (
        ("treated_vs_untreated", -1, "never"),
        ("treated_vs_already_treated", 0, "always"),
    ):
        members = gid == code
        m = int(members.sum())
        if m == 0 or n_c == 0:
            continue
        cy = np.concatenate([[0.0], np.cumsum(y[members].mean(axis=0))])[None, :].repeat(n_c, axis=0)
        sk = starts
        zero, end = np.zeros_like(sk), np.full_like(sk, n_t)
        dbar = (n_t - sk) / n_t
        b = (wmean(cum, sk, end) - wmean(cum, zero, sk)) - (wmean(cy, sk, end) - wmean(cy, zero, sk))
        add(kind, sk, [name] * n_c, sizes, np.full(n_c, m), zero, end, sizes * m * dbar * (1 - dbar), b)

    weights = np.concatenate(raw_w) if raw_w else np.zeros(0)
    estimates = np.concatenate(est) if est else np.zeros(0)
    total = weights.sum()
    if not total > 0:
        raise SpecificationError("no 2×2 comparison has treatment variation: nothing to decompose")
    weights = weights / total
    schema = {
        "type": pl.String,
        "treated": pl.String,
        "control": pl.String,
        "n_treated_units": pl.Int64,
        "n_control_units": pl.Int64,
        "first_period": pl.Int64,
        "last_period": pl.Int64,
        "n_periods": pl.Int64,
    }
    order = {t: i for i, t in enumerate(BACON_TYPES)}
    two = (
        pl.DataFrame(rows, schema=schema)
        .with_columns(pl.Series("estimate", estimates), pl.Series("weight", weights))
        .with_columns(pl.col("type").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o", "treated", "control")
        .drop("_o")
        .select(
            "type",
            "treated",
            "control",
            "estimate",
            "weight",
            *[c for c in schema if c not in ("type", "treated", "control")],
        )
    )
    agg = two.group_by("type").agg(
        ((pl.col("estimate") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("estimate"),
        pl.col("weight").sum(),
        pl.len().cast(pl.Int64).alias("n_comparisons"),
    )
    by_type = (
        pl.DataFrame({"type": list(BACON_TYPES)})
        .join(agg, on="type", how="left")
        .with_columns(
            pl.col("estimate").fill_null(float("nan")),
            pl.col("weight").fill_null(0.0),
            pl.col("n_comparisons").fill_null(0),
        )
    )
    warn_thin_cells(
        pl.DataFrame({"g": [labels[int(t)] for t in starts], "n_units": sizes.astype(np.int64)}),
        label="Bacon treated cohort",
    )
    cluster_name = panel.columns.get("cluster") or panel.columns.get("unit")
    vdesc = f"CR1 clustered by {cluster_name}, {ss.g} clusters; {ss.describe()}"
    lineage = {
        "function": "stopdisparity.models._bacon.bacon_decomposition",
        "options": {},
        "columns": dict(panel.columns),
        "unit_weight_rule": "none: the decomposition is of the unweighted TWFE regression",
        "periods": list(panel.periods),
        "cohorts": list(panel.cohorts),
        "n_units": panel.n_units,
        "n_never_treated": panel.n_never_treated,
        "n_always_treated": int((gid == 0).sum()),
        "versions": _fe.package_versions(),
    }
    return BaconResult(
        outcome_scale=panel.outcome_scale,
        beta=beta,
        std_error=se,
        two_by_twos=two,
        by_type=by_type,
        n_obs=frame.height,
        n_units=n_u,
        n_clusters=ss.g,
        small_sample=ss,
        vcov_description=vdesc,
        columns=dict(panel.columns),
        lineage=lineage,
    )


# ===================================================================== de Chaisemartin–D'Haultfœuille
@dataclass(frozen=True, eq=False)
class TwfeWeightsResult:
    r"""The weights a TWFE coefficient puts on each treated cell's effect (from :func:`twfe_weights`).

    Attributes
    ----------
    beta, std_error
        The (weighted) TWFE coefficient on the treatment and its CR1 SE clustered by unit; NaN without
        an outcome.
    cells
        One row per treated cell: the unit and period (the user's column names), ``n`` (the cell's
        regression weight), ``share`` (:math:`n_{it}/N_1`, its share of the treated cells' weight),
        ``weight`` (:math:`\omega_{it}`, its weight in :math:`\hat\beta`; the column sums to one) and
        ``normalized_weight`` (:math:`\omega_{it}/\text{share}`, the paper's :math:`w_{g,t}`, whose
        share-weighted mean is one).
    n_treated_cells, n_positive, n_negative, n_zero
        Treated cells, and those with weight above, below and within :data:`ZERO_WEIGHT` of zero.
    sum_positive, sum_negative
        Sums of the positive and of the negative weights.
    sigma_fe
        Corollary 1(i): :math:`|\hat\beta| / \sigma(w)`, the smallest standard deviation (across
        treated cells, share-weighted) of cell effects compatible with :math:`\hat\beta` and an ATT of
        zero (hence of the opposite sign). NaN without an outcome or when all weights are equal.
    sigma_fe_all_cells
        Corollary 1(ii): the smallest such standard deviation compatible with :math:`\hat\beta` and
        every treated cell's effect having the sign opposite to :math:`\hat\beta`; NaN when no weight
        is negative (then no such effects exist) or without an outcome.
    """

    beta: float
    std_error: float
    cells: pl.DataFrame
    n_treated_cells: int
    n_positive: int
    n_negative: int
    n_zero: int
    sum_positive: float
    sum_negative: float
    sigma_fe: float
    sigma_fe_all_cells: float
    n_obs: int
    n_units: int
    n_clusters: int
    vcov_description: str
    columns: Mapping[str, Any]
    lineage: Mapping[str, Any]

    def coef(self) -> pl.DataFrame:
        """``term`` and ``estimate`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "estimate")

    def se(self) -> pl.DataFrame:
        """``term`` and ``std_error`` columns of :meth:`tidy`."""
        return self.tidy().select("term", "std_error")

    def tidy(self, alpha: float = 0.05) -> pl.DataFrame:
        """``twfe`` (β with CR1 inference), then the summary rows, each with its number in ``estimate``.

        ``n_treated_cells``, ``n_positive`` and ``n_negative`` carry counts (``n_positive`` and
        ``n_negative`` with the sum of their weights in the extra key ``weight``), ``sum_negative`` the
        sum of the negative weights, ``sigma_fe`` and ``sigma_fe_all_cells`` the two summary measures
        of de Chaisemartin & D'Haultfœuille's Corollary 1 (on the outcome's scale). Summary rows have
        no inference (NaN).
        """
        g = self.n_clusters
        stat, p, lo, hi = _fe.inference_stats(self.beta, self.std_error, alpha, df=g - 1)
        none = "none: a property of the TWFE regression's weights, not an estimate"
        inf = f"analytical: {self.vcov_description}; t({g - 1})" if math.isfinite(self.beta) else none
        rows = [
            TidyRow(
                "twfe",
                self.beta,
                self.std_error,
                stat,
                p,
                lo,
                hi,
                self.n_obs,
                g,
                "twfe-weights",
                _TWFE_W_ESTIMAND,
                inf,
                {"weight": 1.0},
            )
        ]
        summary: list[tuple[str, float, float]] = [
            ("n_treated_cells", float(self.n_treated_cells), 1.0),
            ("n_positive", float(self.n_positive), self.sum_positive),
            ("n_negative", float(self.n_negative), self.sum_negative),
            ("sum_negative", self.sum_negative, self.sum_negative),
            ("sigma_fe", self.sigma_fe, math.nan),
            ("sigma_fe_all_cells", self.sigma_fe_all_cells, math.nan),
        ]
        for term, value, weight in summary:
            rows.append(
                TidyRow(
                    term,
                    value,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    self.n_obs,
                    g,
                    "twfe-weights",
                    _TWFE_W_ESTIMAND,
                    none,
                    {"weight": weight},
                )
            )
        return tidy_frame(rows)


def _sigma_all_cells(beta: float, weight: np.ndarray, share: np.ndarray) -> float:
    r"""Corollary 1(ii) of de Chaisemartin & D'Haultfœuille (2020).

    With the normalised weights sorted decreasingly, :math:`w_{(1)} \ge \dots \ge w_{(n)}`, and the
    tail sums :math:`P_s = \sum_{k \ge s} p_{(k)}`, :math:`S_s = \sum_{k \ge s} p_{(k)} w_{(k)}`,
    :math:`T_s = \sum_{k \ge s} p_{(k)} w_{(k)}^2`, let :math:`s^*` be the smallest :math:`s \ge 2`
    with :math:`w_{(s)} < -S_s / (1 - P_s)`; the measure is
    :math:`|\hat\beta| / (T_{s^*} + S_{s^*}^2 / (1 - P_{s^*}))^{1/2}`.
    """
    if not (weight < -ZERO_WEIGHT).any():
        return math.nan
    w = weight / share
    order = np.argsort(-w, kind="stable")
    w, p, om = w[order], share[order], weight[order]
    tail_p = np.cumsum(p[::-1])[::-1]
    tail_s = np.cumsum(om[::-1])[::-1]
    tail_t = np.cumsum((p * w * w)[::-1])[::-1]
    one_minus = 1.0 - tail_p
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(one_minus > 0, tail_s / one_minus, np.nan)
        ok = (w < -q) & np.isfinite(q)
    ok[0] = False
    hits = np.nonzero(ok)[0]
    if hits.size == 0:
        return math.nan
    s = int(hits[0])
    inner = tail_t[s] + tail_s[s] ** 2 / one_minus[s]
    return abs(beta) / math.sqrt(inner) if inner > 0 else math.nan


def _check_cells(cells: pl.DataFrame, names: dict[str, str | None]) -> None:
    missing = [c for c in names.values() if c is not None and c not in cells.columns]
    if missing:
        raise SpecificationError(f"column(s) {missing} not in the cells frame; it has {cells.columns}")
    used = [c for c in names.values() if c is not None]
    nulls = {c: n for c, n in zip(used, cells.select(pl.col(used).null_count()).row(0), strict=True) if n}
    if nulls:
        raise SpecificationError(f"null values in {nulls} (column: count); drop or fill those cells first")
    for role in ("treated", "weight", "outcome"):
        col = names.get(role)
        if col is not None and not cells.schema[col].is_numeric() and cells.schema[col] != pl.Boolean:
            raise SpecificationError(f"{role} column {col!r} must be numeric; got {cells.schema[col]}")


def twfe_weights(
    cells: pl.DataFrame,
    *,
    unit: str,
    period: str,
    treated: str,
    weight: str | None = None,
    outcome: str | None = None,
) -> TwfeWeightsResult:
    r"""Each treated cell's weight in the TWFE coefficient (de Chaisemartin & D'Haultfœuille 2020).

    The TWFE regression of the outcome on ``treated`` with unit and period effects (weighted by
    ``weight`` if given) has :math:`\hat\beta = \sum_{it} n_{it}\varepsilon_{it}y_{it} / \sum_{it}
    n_{it}\varepsilon_{it}D_{it}`, where :math:`\varepsilon` is the residual of the treatment on the
    fixed effects (Frisch–Waugh–Lovell). If :math:`y_{it} = \alpha_i + \gamma_t + D_{it}\tau_{it}` up
    to noise, the fixed effects drop out (:math:`\varepsilon` is orthogonal to them) and
    :math:`\hat\beta = \sum_{D_{it}=1}\omega_{it}\tau_{it}` with :math:`\omega_{it} =
    n_{it}\varepsilon_{it}/\sum_{D=1} n\varepsilon` (Theorem 1; the ``feTR`` weights of Stata/R
    ``twowayfeweights``). A negative :math:`\omega` means the cell's effect is subtracted: it serves as
    a control for other cells. Works on unbalanced panels and with treatment that switches on and off.

    Parameters
    ----------
    cells
        One row per unit × period.
    unit, period
        Columns identifying the unit and the period (any type; the period need not be consecutive).
    treated
        The 0/1 (or boolean) treatment column.
    weight
        Optional non-negative cell weights (e.g. stops); cells of weight 0 are left out.
    outcome
        Optional outcome column: with it, :math:`\hat\beta`, its CR1 SE clustered by unit and the two
        summary measures (which scale with :math:`\hat\beta`) are computed; without it they are NaN.

    Returns
    -------
    TwfeWeightsResult

    Raises
    ------
    SpecificationError
        Missing columns, nulls, duplicated unit × period rows, a treatment not 0/1, negative or
        non-finite weights, no treated cell, or a treatment collinear with the fixed effects.

    Notes
    -----
    ``sigma_fe`` is the paper's :math:`|\hat\beta|/\sigma(w)` with :math:`\sigma(w)` the share-weighted
    population standard deviation of the normalised weights over treated cells. Stata/R
    ``twowayfeweights`` print it with Stata's ``aweight`` standard deviation, whose divisor is
    :math:`n-1` for :math:`n` treated cells, so theirs is :math:`\sigma_{fe}\sqrt{(n-1)/n}`; the tests
    check both.
    """
    names = {"unit": unit, "period": period, "treated": treated, "weight": weight, "outcome": outcome}
    _check_cells(cells, names)
    dup = cells.select(unit, period).is_duplicated()
    if dup.any():
        ex = cells.filter(dup).row(0, named=True)
        raise SpecificationError(
            f"{int(dup.sum())} rows share a unit × period ({unit}={ex[unit]!r}, {period}={ex[period]!r}); "
            "twfe_weights needs one row per cell: aggregate first"
        )
    d_all = cells.get_column(treated).cast(pl.Float64).to_numpy()
    if not np.isin(d_all, (0.0, 1.0)).all():
        bad = np.unique(d_all[~np.isin(d_all, (0.0, 1.0))])[:5].tolist()
        raise SpecificationError(f"treated column {treated!r} must be 0/1; got values such as {bad}")
    if weight is not None:
        n_all = cells.get_column(weight).cast(pl.Float64).to_numpy()
        if not np.all(np.isfinite(n_all)) or (n_all < 0).any():
            raise SpecificationError(f"weight column {weight!r} must be finite and >= 0")
    else:
        n_all = np.ones(cells.height)
    keep = n_all > 0
    sample = cells.filter(pl.Series(keep))
    d, n = d_all[keep], n_all[keep]
    if not (d > 0).any():
        raise SpecificationError(f"no treated cell ({treated!r} is 0 wherever the weight is positive)")
    u_codes = _fe.codes_of(sample.get_column(unit))
    t_codes = _fe.codes_of(sample.get_column(period))
    sol = _fe.WithinProjector([u_codes, t_codes]).solver(n)
    eps = sol.residualize(d)
    denom = float((n * eps * d).sum())
    if not denom > 1e-12 * float(n.sum()):
        raise SpecificationError(
            f"treatment {treated!r} is (nearly) collinear with the unit and period effects: every unit's "
            "treatment is explained by them, so the TWFE coefficient is not identified"
        )
    on = d > 0
    omega = n * eps / denom
    n1 = float(n[on].sum())
    share = n[on] / n1
    w_on = omega[on]
    g = int(u_codes.max()) + 1
    beta = se = sigma_i = sigma_ii = math.nan
    if outcome is not None:
        y = sample.get_column(outcome).cast(pl.Float64).to_numpy()
        if not np.all(np.isfinite(y)):
            raise SpecificationError(f"outcome column {outcome!r} has non-finite values")
        beta = float((n * eps * y).sum() / denom)
        e = sol.residualize(y) - beta * eps
        scores = np.bincount(u_codes, weights=n * eps * e, minlength=g)
        ss = _fe.SmallSample(
            n=sample.height,
            n_coef=1,
            fe_names=(unit, period),
            fe_levels=(g, int(t_codes.max()) + 1),
            fe_nested=(True, False),
            g=g,
        )
        se = (
            math.sqrt(float((scores**2).sum()) / denom**2 * ss.factor)
            if math.isfinite(ss.factor)
            else math.nan
        )
        big_w = w_on / share
        sd = math.sqrt(float((share * (big_w - 1.0) ** 2).sum()))
        sigma_i = abs(beta) / sd if sd > 0 else math.nan
        sigma_ii = _sigma_all_cells(beta, w_on, share)
        vdesc = f"CR1 clustered by {unit}, {g} clusters; {ss.describe()}"
    else:
        vdesc = "no outcome given: no coefficient"
    pos, neg = w_on > ZERO_WEIGHT, w_on < -ZERO_WEIGHT
    table = sample.filter(pl.Series(on)).select(
        pl.col(unit),
        pl.col(period),
        pl.Series("n", n[on]),
        pl.Series("share", share),
        pl.Series("weight", w_on),
        pl.Series("normalized_weight", w_on / share),
    )
    lineage = {
        "function": "stopdisparity.models._bacon.twfe_weights",
        "options": {"type": "feTR", "zero_weight_tolerance": ZERO_WEIGHT},
        "columns": names,
        "unit_weight_rule": f"cell weights from {weight!r}" if weight else "unweighted (1 per cell)",
        "periods": sorted(sample.get_column(period).unique().to_list()),
        "n_units": g,
        "n_dropped_zero_weight": int((~keep).sum()),
        "versions": _fe.package_versions(),
    }
    return TwfeWeightsResult(
        beta=beta,
        std_error=se,
        cells=table,
        n_treated_cells=int(on.sum()),
        n_positive=int(pos.sum()),
        n_negative=int(neg.sum()),
        n_zero=int(on.sum() - pos.sum() - neg.sum()),
        sum_positive=float(w_on[pos].sum()),
        sum_negative=float(w_on[neg].sum()),
        sigma_fe=sigma_i,
        sigma_fe_all_cells=sigma_ii,
        n_obs=sample.height,
        n_units=g,
        n_clusters=g,
        vcov_description=vdesc,
        columns=names,
        lineage=lineage,
    )
