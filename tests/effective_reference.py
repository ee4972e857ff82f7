"""An independent G* (Carter, Schnepel & Steigerwald 2017) from a dense dummy design, as R effClust does.

Shares nothing with the package's computation (which residualises on the fixed effects and never forms
the dummies): X = [regressors, unit dummies, group × period dummies] scaled by the square root of the final
IRLS/WLS weights, γ_g = c'(X'X)⁻¹[(1-ρ)X_g'X_g + ρX_g'11'X_g](X'X)⁻¹c and G* = G / (1 + Γ), Γ the
population variance of γ over its squared mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl


def dense_information(
    sample: pl.DataFrame,
    regressors: np.ndarray,
    contrast: np.ndarray,
    rho: float = 0.0,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """γ_g by cluster label for ``contrast``'β of a fit on ``sample`` (internal columns unit, group,
    period, cluster and, unless ``weights`` are given, the fit's final weights ``weight``)."""
    s = sample.to_pandas()
    w = s["weight"].to_numpy() if weights is None else np.asarray(weights, dtype=float)
    unit = pd.get_dummies(s["unit"].astype(str), dtype=float).to_numpy()
    # the period effects are group × period (one group: period)
    key = s["group"].astype(str) + "|" + s["period"].astype(str)
    period = pd.get_dummies(key, dtype=float).to_numpy()[:, 1:]
    x = np.column_stack([regressors, unit, period]) * np.sqrt(w)[:, None]
    c = np.concatenate([contrast, np.zeros(x.shape[1] - len(contrast))])
    # least squares: a stacked design may have a dummy too many per block; c'β stays estimable
    row = np.linalg.lstsq(x.T @ x, c, rcond=None)[0]
    clusters = s["cluster"].astype(str).to_numpy()
    out = {}
    for label in sorted(set(clusters)):
        xg = x[clusters == label]
        out[label] = float((1 - rho) * row @ xg.T @ xg @ row + rho * (row @ xg.sum(axis=0)) ** 2)
    return out


def effective_of(information: dict[str, float]) -> float:
    """G* = G / (1 + Γ) from γ by cluster."""
    gam = np.array(list(information.values()))
    g = gam.size
    big_gamma = ((g - 1) / g) * np.var(gam, ddof=1) / np.mean(gam) ** 2
    return float(g / (1 + big_gamma))


def dense_effective_clusters(
    sample: pl.DataFrame, regressors: np.ndarray, contrast: np.ndarray, rho: float = 0.0
) -> float:
    """G* of ``contrast``'β for a fit on ``sample``."""
    return effective_of(dense_information(sample, regressors, contrast, rho))
