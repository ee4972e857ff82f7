r"""Bias-reduced cluster-robust variance (CR2) with Bell–McCaffrey degrees of freedom, on arrays.

For a weighted fit (WLS, or a GLM at its IRLS solution) with whitened regressors
:math:`\tilde X = W^{1/2}X` (fixed-effect dummies included), whitened residuals :math:`\tilde e`,
:math:`B = (\tilde X'\tilde X)^{+}` and :math:`H = \tilde XB\tilde X'`, the CR2 variance of a contrast
:math:`\ell'\beta` is :math:`\sum_g (u_g'\tilde e_g)^2` with :math:`u_g = A_g\tilde X_gB\ell` and
:math:`A_g = (I - H_{gg})^{+1/2}` (Bell & McCaffrey 2002; the Moore–Penrose root because the unit
effects, nested in the clusters, make :math:`I-H_{gg}` singular — Pustejovsky & Tipton 2018). Under the
working model (whitened errors independent with unit variance) it is exactly unbiased, where CR1 is
biased down when the treatment's information sits in a few clusters. The reference distribution is
Student t with the Bell–McCaffrey (Satterthwaite) degrees of freedom
:math:`\nu = (\sum_j\lambda_j)^2/\sum_j\lambda_j^2`, :math:`\lambda` the eigenvalues of
:math:`\Gamma = G'G` where column g of G is :math:`(I-H)_{\cdot g}u_g`; since :math:`I-H` is
idempotent, :math:`\Gamma = \mathrm{diag}_g(u_g'u_g) - Z'BZ` with :math:`Z_{\cdot g} = \tilde X_g'u_g`,
so no n × n matrix is formed (Imbens & Kolesár 2016, eq. 8). Several fits (the two races of a count
model) combine into one contrast :math:`\sum_j c_j\ell_j'\beta_j` by adding their cluster scores and
their :math:`c_j^2\Gamma_j` (the fits' working errors are independent).

References
----------
Bell, R. M. & McCaffrey, D. F. (2002). Bias reduction in standard errors for linear regression with
multi-stage samples. Survey Methodology 28(2), 169-181.
Imbens, G. W. & Kolesár, M. (2016). Robust standard errors in small samples: some practical advice.
Review of Economics and Statistics 98(4), 701-712. https://doi.org/10.1162/REST_a_00552
Pustejovsky, J. E. & Tipton, E. (2018). Small-sample methods for cluster-robust variance estimation
and hypothesis testing in fixed effects models. Journal of Business & Economic Statistics 36(4),
672-683. https://doi.org/10.1080/07350015.2016.1247004
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stopdisparity.errors import SpecificationError

#: Largest number of coefficients (fixed-effect levels included) the dense (X'WX)⁺ is formed for.
MAX_COEFFICIENTS = 4000
#: Eigenvalues of I - H_gg below this are treated as 0 in the Moore–Penrose inverse root.
_EIG_TOL = 1e-8


@dataclass(frozen=True, slots=True)
class Cr2Fit:
    """One weighted fit in whitened form, ready for :func:`cr2_parts`.

    ``fe_codes`` are integer codes of each fixed effect (dummies are built from them, all levels:
    the pseudo-inverse absorbs the collinearity), ``z`` (n × q, dense or sparse) the other
    regressors, ``w`` the final IRLS/WLS weights, ``resid`` the working residuals (y − μ)/(dμ/dη)
    (WLS: y − ŷ), ``cluster_codes`` 0..G-1 and ``contrasts`` (q × m) the contrasts of ``z``'s
    coefficients to report.
    """

    fe_codes: tuple[np.ndarray, ...]
    z: np.ndarray | sp.spmatrix
    w: np.ndarray
    resid: np.ndarray
    cluster_codes: np.ndarray
    g: int
    contrasts: np.ndarray


@dataclass(frozen=True, slots=True)
class Cr2Parts:
    """Per-cluster CR2 scores (G × m) and, per contrast, Γ (m × G × G) of one fit."""

    scores: np.ndarray
    gamma: np.ndarray


@dataclass(frozen=True, slots=True)
class Cr2:
    """CR2 covariance of the contrasts (m × m) and the Bell–McCaffrey df of each (m)."""

    vcov: np.ndarray
    df: np.ndarray

    @property
    def std_errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.vcov))


def _whitened_design(fit: Cr2Fit) -> sp.csr_matrix:
    n = fit.w.shape[0]
    blocks = [
        sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, int(codes.max()) + 1))
        for codes in fit.fe_codes
    ]
    x = sp.hstack([*blocks, sp.csr_matrix(fit.z)], format="csr")
    return sp.diags(np.sqrt(fit.w)) @ x


def cr2_parts(fit: Cr2Fit) -> Cr2Parts:
    """The CR2 cluster scores and Bell–McCaffrey Γ matrices of one fit (see the module notes)."""
    xt = _whitened_design(fit)
    k, q = xt.shape[1], fit.z.shape[1]
    if k > MAX_COEFFICIENTS:
        raise SpecificationError(
            f"CR2 needs the dense {k} × {k} cross-product of all coefficients (fixed-effect levels "
            f"included); the limit is {MAX_COEFFICIENTS}. Use --inference cr3, wild, score or ri, or "
            "a coarser period"
        )
    xtx = (xt.T @ xt).toarray()
    b = np.linalg.pinv(xtx, hermitian=True)
    m = fit.contrasts.shape[1]
    ell = np.zeros((k, m))
    ell[k - q :] = fit.contrasts
    bl = b @ ell  # k × m
    e = np.sqrt(fit.w) * fit.resid
    order = np.argsort(fit.cluster_codes, kind="stable")
    bounds = np.searchsorted(fit.cluster_codes[order], np.arange(fit.g + 1))
    scores = np.zeros((fit.g, m))
    uu = np.zeros((m, fit.g))
    zmat = np.zeros((m, k, fit.g))
    for g in range(fit.g):
        idx = order[bounds[g] : bounds[g + 1]]
        if idx.size == 0:
            continue
        xg = xt[idx]
        hgg = np.asarray(xg @ (xg @ b).T)
        vals, vecs = np.linalg.eigh(np.eye(idx.size) - hgg)
        root = np.where(vals > _EIG_TOL, 1.0 / np.sqrt(np.clip(vals, _EIG_TOL, None)), 0.0)
        u = (vecs * root) @ (vecs.T @ np.asarray(xg @ bl))  # T × m
        scores[g] = u.T @ e[idx]
        uu[:, g] = np.einsum("tj,tj->j", u, u)
        zmat[:, :, g] = np.asarray(xg.T @ u).T
    gamma = np.stack([np.diag(uu[j]) - zmat[j].T @ b @ zmat[j] for j in range(m)])
    return Cr2Parts(scores, gamma)


def combine(parts: Sequence[Cr2Parts], weights: np.ndarray) -> Cr2:
    r"""CR2 of contrasts across fits: ``weights`` (n_fits × m_out × m_in) maps each fit's contrasts.

    For one fit and its own contrasts pass an identity. Scores add across fits; Γ adds as
    :math:`\sum_j c_j^2\Gamma_j` per output contrast (a contrast mixing several of one fit's contrasts
    is not supported: each output takes at most one contrast per fit).
    """
    m_out = weights.shape[1]
    g = parts[0].scores.shape[0]
    scores = np.zeros((g, m_out))
    gamma = np.zeros((m_out, g, g))
    for part, w in zip(parts, weights, strict=True):
        if np.any(np.count_nonzero(w, axis=1) > 1):
            raise SpecificationError("each CR2 output contrast takes at most one contrast per fit")
        scores += part.scores @ w.T
        for o in range(m_out):
            for j in np.flatnonzero(w[o]):
                gamma[o] += w[o, j] ** 2 * part.gamma[j]
    df = np.empty(m_out)
    for o in range(m_out):
        lam = np.linalg.eigvalsh(gamma[o])
        df[o] = lam.sum() ** 2 / np.sum(lam**2) if np.any(lam) else np.nan
    return Cr2(scores.T @ scores, df)


def cr2(fit: Cr2Fit) -> Cr2:
    """CR2 covariance and Bell–McCaffrey df of one fit's contrasts."""
    m = fit.contrasts.shape[1]
    return combine([cr2_parts(fit)], np.eye(m)[None])


__all__ = ["MAX_COEFFICIENTS", "Cr2", "Cr2Fit", "Cr2Parts", "combine", "cr2", "cr2_parts"]
