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
Tipton, E. & Pustejovsky, J. E. (2015). Small-sample adjustments for tests of moderators and model fit
using robust variance estimation in meta-regression. Journal of Educational and Behavioral Statistics
40(6), 604-634. https://doi.org/10.3102/1076998615606099
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
#: Largest memory the dense arrays may take: (X'WX) and its pseudo-inverse (with eigh's workspace, about
#: 4 k² floats) and the m × k × G cluster matrices Z and BZ. CR2 is a fit's default, so it must stay
#: bounded whatever the panel (the fit then reports CR1 and says why).
MAX_BYTES = 1 << 30
#: Eigenvalues of I - H_gg below this are treated as 0 in the Moore–Penrose inverse root.
_EIG_TOL = 1e-8
#: Dense cluster rows (size × coefficients) stacked per batch: 4M floats, 32 MB per array.
_BATCH_FLOATS = 1 << 22


@dataclass(frozen=True, slots=True)
class Cr2Fit:
    """One weighted fit in whitened form, ready for :func:`cr2_parts`.

    ``fe_codes`` are integer codes of each fixed effect (dummies are built from them, all levels:
    the pseudo-inverse absorbs the collinearity), ``z`` (n × q, dense or sparse) the other
    regressors, ``w`` the final IRLS/WLS weights, ``resid`` the working residuals (y − μ)/(dμ/dη)
    (WLS: y − ŷ), ``cluster_codes`` 0..G-1 and ``contrasts`` (q × m) the contrasts of ``z``'s
    coefficients to report. ``fe_contrasts`` (levels × m, the fixed effects' dummies in ``fe_codes``
    order) extends them to contrasts that also weigh the fixed effects — the gradient of a function
    of the fitted values (the percentage-point effect); it must be estimable (a function of ``Xβ``).
    """

    fe_codes: tuple[np.ndarray, ...]
    z: np.ndarray | sp.spmatrix
    w: np.ndarray
    resid: np.ndarray
    cluster_codes: np.ndarray
    g: int
    contrasts: np.ndarray
    fe_contrasts: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Cr2Parts:
    r"""Per-cluster CR2 scores (G × m) of one fit and what :math:`\Gamma_{st} = G_s'G_t` is built from.

    ``uu[g]`` holds :math:`u_{sg}'u_{tg}` (m × m), ``z[s]`` the k × G matrix :math:`Z_s` and ``bz[s]``
    :math:`BZ_s`, so that :math:`\Gamma_{st} = \mathrm{diag}_g(u_{sg}'u_{tg}) - Z_s'BZ_t`.
    """

    scores: np.ndarray
    uu: np.ndarray
    z: np.ndarray
    bz: np.ndarray

    def cross(self, s: int, t: int) -> np.ndarray:
        r""":math:`\Gamma_{st}` (G × G): contrasts s and t's cluster-term covariance (working model)."""
        return np.diag(self.uu[:, s, t]) - self.z[s].T @ self.bz[t]

    @property
    def gamma(self) -> np.ndarray:
        r""":math:`\Gamma_{ss}` of every contrast (m × G × G)."""
        return np.stack([self.cross(j, j) for j in range(self.scores.shape[1])])


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


def _block_diagonal(xs: sp.csr_matrix, c: int, s: int) -> sp.csr_matrix:
    r"""The c clusters of s rows as the block-diagonal :math:`\mathrm{diag}_g(\tilde X_g)` (c·s × c·k).

    Per-cluster products with it become one sparse product in C, with no per-cluster Python step.
    """
    xs = xs.tocsr()
    k = xs.shape[1]
    cluster = np.repeat(np.arange(c * s) // s, np.diff(xs.indptr))
    return sp.csr_matrix((xs.data, xs.indices + cluster * k, xs.indptr), shape=(c * s, c * k))


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
    m = fit.contrasts.shape[1]
    need = 8 * (4 * k * k + 2 * m * k * fit.g)
    if need > MAX_BYTES:
        raise SpecificationError(
            f"CR2 of {m} contrast(s) with {k} coefficients and {fit.g} clusters needs about "
            f"{need / 2**30:.1f} GiB of dense arrays; the limit is {MAX_BYTES / 2**30:.0f} GiB. Use "
            "--inference cr3, wild, score or ri, fewer event times, or a coarser period"
        )
    xtx = (xt.T @ xt).toarray()
    b = np.linalg.pinv(xtx, hermitian=True)
    ell = np.zeros((k, m))
    ell[k - q :] = fit.contrasts
    if fit.fe_contrasts is not None:
        ell[: k - q] = fit.fe_contrasts
    bl = b @ ell  # k × m
    e = np.sqrt(fit.w) * fit.resid
    order = np.argsort(fit.cluster_codes, kind="stable")
    bounds = np.searchsorted(fit.cluster_codes[order], np.arange(fit.g + 1))
    sizes = np.diff(bounds)
    scores = np.zeros((fit.g, m))
    uu = np.zeros((fit.g, m, m))
    zmat = np.zeros((m, k, fit.g))
    # clusters of one size go through together (stacked dense blocks, batched eigh), a batch holding
    # at most _BATCH_FLOATS of the dense rows
    for size in np.unique(sizes[sizes > 0]).tolist():
        same = np.flatnonzero(sizes == size)
        per_batch = max(1, _BATCH_FLOATS // (size * k))
        for start in range(0, same.size, per_batch):
            gs = same[start : start + per_batch]
            idx = order[(bounds[gs][:, None] + np.arange(size)[None, :]).ravel()]
            xs = xt[idx]
            diag = _block_diagonal(xs, gs.size, size)
            xb3 = np.asarray(xs @ b).reshape(gs.size, size, k)
            # H_gg of each cluster (c × s × s): diag(X_g) times the stacked (X_g B)' (c·k × s)
            hgg = np.asarray(diag @ xb3.transpose(0, 2, 1).reshape(gs.size * k, size))
            hgg = hgg.reshape(gs.size, size, size)
            vals, vecs = np.linalg.eigh(np.eye(size)[None] - hgg)
            root = np.where(vals > _EIG_TOL, 1.0 / np.sqrt(np.clip(vals, _EIG_TOL, None)), 0.0)
            xbl = np.asarray(xs @ bl).reshape(gs.size, size, m)
            u = vecs @ (root[:, :, None] * (vecs.transpose(0, 2, 1) @ xbl))  # A_g X_g B l (c × s × m)
            scores[gs] = np.einsum("csm,cs->cm", u, e[idx].reshape(gs.size, size))
            uu[gs] = u.transpose(0, 2, 1) @ u
            cross = np.asarray(diag.T @ u.reshape(gs.size * size, m))  # X_g'u_g stacked (c·k × m)
            zmat[:, :, gs] = cross.reshape(gs.size, k, m).transpose(2, 1, 0)
    return Cr2Parts(scores, uu, zmat, b @ zmat)  # B Z_s for every contrast (m × k × G)


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
                gamma[o] += w[o, j] ** 2 * part.cross(j, j)
    df = np.empty(m_out)
    for o in range(m_out):
        lam = np.linalg.eigvalsh(gamma[o])
        df[o] = lam.sum() ** 2 / np.sum(lam**2) if np.any(lam) else np.nan
    return Cr2(scores.T @ scores, df)


@dataclass(frozen=True, slots=True)
class HtzTest:
    """A joint CR2 Wald test with the Hotelling T² approximation (Pustejovsky & Tipton 2018)."""

    statistic: float
    f: float
    df_num: int
    df_den: float
    p_value: float


def wald_htz(fit: Cr2Fit, estimates: np.ndarray) -> HtzTest:
    r"""Joint test that the contrasts of ``fit`` are all 0, with the CR2 covariance and HTZ df.

    :math:`Q = \hat b'V_{CR2}^{-1}\hat b` is referred to :math:`\frac{\eta q}{\eta-q+1}F(q,\eta-q+1)`,
    where :math:`\eta = q(q+1)/\sum_{a,b}\mathrm{Var}(V^*_{ab})` matches the moments of the
    standardised :math:`V^* = \Omega^{-1/2}V_{CR2}\Omega^{-1/2}` (:math:`\Omega = E[V_{CR2}]`) to
    those of a Wishart under the working model (Pustejovsky & Tipton 2018, section 3.2; Tipton &
    Pustejovsky 2015). With one contrast it is the Bell–McCaffrey t test.
    """
    from scipy import stats

    q = fit.contrasts.shape[1]
    if q == 0:
        raise SpecificationError("a joint test needs at least one contrast")
    parts = cr2_parts(fit)
    v = parts.scores.T @ parts.scores
    stat = float(estimates @ np.linalg.solve(v, estimates))
    cross = np.array([[parts.cross(s, t) for t in range(q)] for s in range(q)])  # q × q × G × G
    omega = np.trace(cross, axis1=2, axis2=3)
    vals, vecs = np.linalg.eigh((omega + omega.T) / 2)
    w = (vecs / np.sqrt(vals)) @ vecs.T
    star = np.einsum("as,bt,stgh->abgh", w, w, cross)
    var = sum(
        float(np.sum(star[a, a] * star[b, b]) + np.sum(star[a, b] * star[b, a]))
        for a in range(q)
        for b in range(q)
    )
    eta = q * (q + 1) / var
    df_den = eta - q + 1
    if df_den <= 0:
        return HtzTest(stat, float("nan"), q, df_den, float("nan"))
    f = df_den / (eta * q) * stat
    return HtzTest(stat, f, q, df_den, float(stats.f.sf(f, q, df_den)))


def cr2(fit: Cr2Fit) -> Cr2:
    """CR2 covariance and Bell–McCaffrey df of one fit's contrasts."""
    m = fit.contrasts.shape[1]
    return combine([cr2_parts(fit)], np.eye(m)[None])


__all__ = [
    "MAX_BYTES",
    "MAX_COEFFICIENTS",
    "Cr2",
    "Cr2Fit",
    "Cr2Parts",
    "HtzTest",
    "combine",
    "cr2",
    "cr2_parts",
    "wald_htz",
]
