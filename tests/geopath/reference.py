"""Independent float64 NumPy/SciPy reference implementations for the geopath core.

Nothing in this module imports geopath: every function here is written from the
mathematical definitions so that the test-suite compares the library against an
implementation that shares no code with it.

Conventions
-----------
* Representations ``x`` are ``[n, ...]`` arrays; trailing dims are flattened.
* Shape-space "points" here are ``[n, p]`` float64 matrices (feature route).
  Points of different widths are compared through ``X^T Y`` (which needs no
  padding) or explicitly zero-padded with :func:`pad_to`.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.spatial.distance import pdist
from scipy.spatial.distance import squareform

# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def flat(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def pad_to(a: np.ndarray, k: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape[1] == k:
        return a
    return np.concatenate([a, np.zeros((a.shape[0], k - a.shape[1]))], axis=1)


def pad_pair(a, b):
    k = max(a.shape[1], b.shape[1])
    return pad_to(a, k), pad_to(b, k)


def nuclear_norm(m) -> float:
    return float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False).sum())


def safe_arccos(c) -> float:
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def spd_fn(a, fn):
    """f(A) for a symmetric positive-definite A via eigh."""
    a = np.asarray(a, np.float64)
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    return (v * fn(w)) @ v.T


def sym_fn(a, fn):
    """f(S) for a symmetric (possibly indefinite) S via eigh."""
    return spd_fn(a, fn)


# --------------------------------------------------------------------------
# shape metrics (Williams et al. 2021 generalized shape metrics)
# --------------------------------------------------------------------------


def center_scale(x) -> np.ndarray:
    """Flatten, center columns, scale so that ||Xc||_F^2 = n."""
    X = flat(x)
    n = X.shape[0]
    Xc = X - X.mean(axis=0, keepdims=True)
    return Xc * (np.sqrt(n) / np.linalg.norm(Xc))


def shape_features(
    x, alpha: float, *, whiten_eps: float = 0.0, normalize: bool = True, rank_rtol: float = 1e-10
) -> np.ndarray:
    """Partially whitened representation (feature route, [n, p]).

    X~ = Xc (alpha I + (1 - alpha) (Xc^T Xc / n + eps I)^{-1/2}), computed via
    the SVD Xc = U S V^T so that X~ = U diag(s * w(s)) V^T with
    w(s) = alpha + (1 - alpha) / sqrt(s^2 / n + eps).  For alpha < 1 directions
    whose covariance eigenvalue is numerically zero are dropped.
    """
    Xc = center_scale(x)
    n = Xc.shape[0]
    if alpha < 1.0:
        u, s, vt = np.linalg.svd(Xc, full_matrices=False)
        lam = s**2 / n
        keep = lam > rank_rtol * lam.max()
        w = alpha + (1.0 - alpha) / np.sqrt(lam[keep] + whiten_eps)
        Xt = (u[:, keep] * (s[keep] * w)) @ vt[keep]
    else:
        Xt = Xc
    if normalize:
        Xt = Xt / np.linalg.norm(Xt)
    return Xt


def angular_shape_distance_points(a, b) -> float:
    return safe_arccos(nuclear_norm(np.asarray(a).T @ np.asarray(b)))


def angular_shape_distance(x, y, alpha: float, **kw) -> float:
    return angular_shape_distance_points(shape_features(x, alpha, **kw), shape_features(y, alpha, **kw))


def euclidean_shape_distance_points(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sq = (a * a).sum() + (b * b).sum() - 2.0 * nuclear_norm(a.T @ b)
    return float(np.sqrt(max(sq, 0.0)))


def euclidean_shape_features(x, alpha: float, **kw) -> np.ndarray:
    """EuclideanShape point: the partially whitened representation at the data's own scale.

    geopath convention (cf. netrep's ``preserve_variance``): the whitening is done on the
    representation scaled to ||Xc||_F^2 = n, and the result is multiplied back by ||Xc||_F / sqrt(n),
    so for alpha = 1 the point is the centred data itself (not scale invariant).
    """
    X = flat(x)
    Xc = X - X.mean(0)
    z = shape_features(x, alpha, normalize=False, **kw)
    return z * (np.linalg.norm(Xc) / np.sqrt(X.shape[0]))


def euclidean_shape_distance(x, y, alpha: float, **kw) -> float:
    return euclidean_shape_distance_points(
        euclidean_shape_features(x, alpha, **kw), euclidean_shape_features(y, alpha, **kw)
    )


def procrustes_align(a, b) -> np.ndarray:
    """Representative b Q of b optimally rotated onto a (scipy-based)."""
    a, b = pad_pair(np.asarray(a, np.float64), np.asarray(b, np.float64))
    r, _ = sla.orthogonal_procrustes(b, a)  # minimises ||b R - a||_F
    return b @ r


def slerp(a, b, t: float) -> np.ndarray:
    """Great circle on the unit sphere (Frobenius) from a to b (unit norm)."""
    c = np.clip(np.sum(a * b), -1.0, 1.0)
    th = np.arccos(c)
    if th < 1e-12:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * th) * a + np.sin(t * th) * b) / np.sin(th)


def angular_shape_geodesic_points(a, b, t: float) -> np.ndarray:
    a = np.asarray(a, np.float64)
    bq = procrustes_align(a, b)
    a = pad_to(a, bq.shape[1])
    return slerp(a, bq, t)


def angular_shape_log_points(a, b) -> np.ndarray:
    """Log map at a toward b on the angular shape space (generic, full-rank points of equal width): the
    horizontal great-circle direction theta / sin(theta) (b Q - cos(theta) a), with b Q aligned to a."""
    a = np.asarray(a, np.float64)
    bq = procrustes_align(a, b)
    c = np.clip(np.sum(a * bq), -1.0, 1.0)
    th = np.arccos(c)
    return th / np.sin(th) * (bq - c * a)


def angular_shape_angle_points(a, b, c) -> float:
    """Angle at b between the geodesics to a and to c (generic points: the angle of the two logs at b)."""
    u, v = angular_shape_log_points(b, a), angular_shape_log_points(b, c)
    return safe_arccos(np.sum(u * v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def euclidean_shape_geodesic_points(a, b, t: float) -> np.ndarray:
    a = np.asarray(a, np.float64)
    bq = procrustes_align(a, b)
    a = pad_to(a, bq.shape[1])
    return (1 - t) * a + t * bq


def shape_vertical(a, v) -> np.ndarray:
    """Vertical part a @ Omega, Omega skew, (a^T a) Omega + Omega (a^T a) = a^T v - v^T a."""
    a = np.asarray(a, np.float64)
    v = np.asarray(v, np.float64)
    g = a.T @ a
    rhs = a.T @ v - v.T @ a
    omega = sla.solve_sylvester(g, g, rhs)
    return a @ omega


def bures_similarity(kx, ky) -> float:
    """tr sqrt(kx^1/2 ky kx^1/2) via scipy.linalg.sqrtm."""
    kx = np.asarray(kx, np.float64)
    ky = np.asarray(ky, np.float64)
    rx = sla.sqrtm(kx)
    m = rx @ ky @ rx
    m = 0.5 * (m + m.T)
    return float(np.real(np.trace(sla.sqrtm(m))))


def normalized_gram(x) -> np.ndarray:
    Xc = center_scale(x)
    k = Xc @ Xc.T
    return k / np.trace(k)


# --------------------------------------------------------------------------
# CKA
# --------------------------------------------------------------------------


def centering_matrix(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def linear_cka(x, y) -> float:
    """Kornblith et al. linear CKA on centered data."""
    X = flat(x)
    Y = flat(y)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    num = np.linalg.norm(Y.T @ X) ** 2
    return float(num / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def u_center(k) -> np.ndarray:
    """Szekely-Rizzo U-centering (diagonal of k is zeroed first)."""
    k = np.array(k, dtype=np.float64, copy=True)
    n = k.shape[0]
    np.fill_diagonal(k, 0.0)
    r = k.sum(axis=1)
    c = k.sum(axis=0)
    tot = k.sum()
    out = k - r[:, None] / (n - 2) - c[None, :] / (n - 2) + tot / ((n - 1) * (n - 2))
    np.fill_diagonal(out, 0.0)
    return out


def hsic_unbiased(k, l) -> float:
    """Song et al. (2012) unbiased HSIC estimator (independent of u_center)."""
    k = np.array(k, dtype=np.float64, copy=True)
    l = np.array(l, dtype=np.float64, copy=True)
    n = k.shape[0]
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    t1 = np.trace(k @ l)
    t2 = (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
    t3 = 2.0 * (one @ k @ l @ one) / (n - 2)
    return float((t1 + t2 - t3) / (n * (n - 3)))


def linear_gram(x) -> np.ndarray:
    X = flat(x)
    return X @ X.T


def rbf_gram(x, sigma: float) -> np.ndarray:
    X = flat(x)
    d2 = squareform(pdist(X, "sqeuclidean"))
    return np.exp(-d2 / (2.0 * sigma**2))


def cka_point(k, unbiased: bool = False) -> np.ndarray:
    if unbiased:
        m = u_center(k)
    else:
        h = centering_matrix(k.shape[0])
        m = h @ k @ h
    return m / np.linalg.norm(m)


def unbiased_linear_cka(x, y) -> float:
    k = linear_gram(x)
    l = linear_gram(y)
    return hsic_unbiased(k, l) / np.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))


def sphere_distance(a, b) -> float:
    return safe_arccos(float(np.sum(np.asarray(a) * np.asarray(b))))


# --------------------------------------------------------------------------
# affine-invariant Riemannian metric on SPD matrices
# --------------------------------------------------------------------------


def spd_point(x, eps: float = 1e-3) -> np.ndarray:
    X = flat(x)
    n = X.shape[0]
    Xc = X - X.mean(0)
    g = n * (Xc @ Xc.T) / np.linalg.norm(Xc) ** 2
    return g + eps * np.eye(n)


def affine_invariant_distance_points(a, b) -> float:
    w = sla.eigh(np.asarray(b, np.float64), np.asarray(a, np.float64), eigvals_only=True)
    return float(np.sqrt(np.sum(np.log(w) ** 2)))


def affine_invariant_geodesic(a, b, t: float) -> np.ndarray:
    ah = spd_fn(a, np.sqrt)
    aih = spd_fn(a, lambda w: 1.0 / np.sqrt(w))
    m = spd_fn(aih @ b @ aih, lambda w: w**t)
    return ah @ m @ ah


def affine_invariant_log(a, b) -> np.ndarray:
    ah = spd_fn(a, np.sqrt)
    aih = spd_fn(a, lambda w: 1.0 / np.sqrt(w))
    return ah @ spd_fn(aih @ b @ aih, np.log) @ ah


def affine_invariant_exp(a, v) -> np.ndarray:
    ah = spd_fn(a, np.sqrt)
    aih = spd_fn(a, lambda w: 1.0 / np.sqrt(w))
    return ah @ sym_fn(aih @ v @ aih, np.exp) @ ah


def affine_invariant_inner(a, u, v) -> float:
    ai = np.linalg.inv(a)
    return float(np.trace(ai @ u @ ai @ v))


def affine_invariant_transport(a, b, v) -> np.ndarray:
    # E = (B A^{-1})^{1/2} = A^{1/2} (A^{-1/2} B A^{-1/2})^{1/2} A^{-1/2}
    ah = spd_fn(a, np.sqrt)
    aih = spd_fn(a, lambda w: 1.0 / np.sqrt(w))
    e = ah @ spd_fn(aih @ b @ aih, np.sqrt) @ aih
    return e @ v @ e.T


# --------------------------------------------------------------------------
# stress
# --------------------------------------------------------------------------


def distance_matrix(x) -> np.ndarray:
    return squareform(pdist(flat(x), "euclidean"))


def stress_distance_points(d, e) -> float:
    d = np.asarray(d, np.float64)
    e = np.asarray(e, np.float64)
    iu = np.triu_indices(d.shape[0], k=1)
    return float(np.sqrt(np.mean((d[iu] - e[iu]) ** 2)))


def stress_distance(x, y) -> float:
    return stress_distance_points(distance_matrix(x), distance_matrix(y))


def rbf_median_sigma(x, scale: float = 1.0) -> float:
    """Median heuristic: sigma^2 = scale^2 * median_{i<j} ||x_i - x_j||^2."""
    return float(scale * np.sqrt(np.median(pdist(flat(x), "sqeuclidean"))))


# --------------------------------------------------------------------------
# conventions of the reference libraries (netrep, repsim), written from their stated formulas
# --------------------------------------------------------------------------
#
# netrep (Williams et al. 2021, ``LinearMetric``): zero-pad to a common width, centre columns, whiten with
#   Z = V diag(d) V^T, C = X^T X = V diag(lam) V^T, lam floored at 1e-7, d = alpha + (1 - alpha) lam^{-1/2},
#   and (preserve_variance) d scaled by sqrt(sum lam / sum (alpha sqrt(lam) + 1 - alpha)^2); align by
#   orthogonal Procrustes; score "angular" = arccos of the normalised Frobenius inner product, "euclidean" =
#   Frobenius norm of the difference.
# repsim (Lange et al. 2022, ``ShapeMetric``): centre, whiten with C = X^T X / n, eigenvalues floored at
#   1e-9, d as above, no rescaling; "angular" divides by the Frobenius norm.


def netrep_whiten(xc, alpha: float, *, preserve_variance: bool = True) -> np.ndarray:
    """netrep's partial whitening of centred ``xc [n, p]`` (``alpha == 1``: unchanged)."""
    xc = np.asarray(xc, np.float64)
    if alpha > 1.0 - 1e-7:
        return xc
    lam, v = np.linalg.eigh(xc.T @ xc)
    lam = np.maximum(lam, 1e-7)
    d = alpha + (1.0 - alpha) / np.sqrt(lam)
    if preserve_variance:
        d = d * np.sqrt(lam.sum() / np.sum((alpha * np.sqrt(lam) + 1.0 - alpha) ** 2))
    return xc @ ((v * d) @ v.T)


def netrep_shape_distance(x, y, alpha: float, *, score: str = "angular") -> float:
    """netrep ``LinearMetric(alpha, center_columns=True, zero_pad=True, score_method=score)`` on (x, y)."""
    a, b = pad_pair(flat(x), flat(y))
    a = netrep_whiten(a - a.mean(0), alpha)
    b = netrep_whiten(b - b.mean(0), alpha)
    u, _, vt = np.linalg.svd(a.T @ b)
    a, b = a @ u, b @ vt.T
    if score == "angular":
        return safe_arccos(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.linalg.norm(a - b))


def repsim_whiten(xc, alpha: float) -> np.ndarray:
    """repsim's partial whitening of centred ``xc [n, p]``: covariance ``X^T X / n``, eigenvalues >= 1e-9."""
    xc = np.asarray(xc, np.float64)
    lam, v = np.linalg.eigh(xc.T @ xc / xc.shape[0])
    d = alpha + (1.0 - alpha) / np.sqrt(np.maximum(lam, 1e-9))
    return xc @ ((v * d) @ v.T)


def repsim_shape_distance(x, y, alpha: float, *, score: str = "angular") -> float:
    """repsim ``ShapeMetric`` (angular or euclidean) between equal-width x and y."""
    a = repsim_whiten(flat(x) - flat(x).mean(0), alpha)
    b = repsim_whiten(flat(y) - flat(y).mean(0), alpha)
    if score == "angular":
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        return angular_shape_distance_points(a, b)
    return euclidean_shape_distance_points(a, b)


# CKA conventions. repsim (AngularCKA, default use_unbiased_hsic=True): double-centre the kernel matrix,
# zero its diagonal, unit Frobenius norm. repsim's kernels: SquaredExponential exp(-|x-y|^2 / l^2),
# Laplace exp(-|x-y| / l), l = the median pairwise distance (torch.median: the lower middle value);
# SumKernel: weighted sum.


def repsim_length_scale(x) -> float:
    d = np.sort(pdist(flat(x), "euclidean"))
    return float(d[(d.size - 1) // 2])  # lower median, as torch.median


def repsim_kernel(x, name: str) -> np.ndarray:
    X = flat(x)
    X = X - X.mean(0)
    if name == "linear":
        return X @ X.T
    d = squareform(pdist(X, "euclidean"))
    ell = repsim_length_scale(X)
    return np.exp(-((d / ell) ** 2)) if name == "sqexp" else np.exp(-d / ell)


def repsim_cka_point(k) -> np.ndarray:
    h = centering_matrix(k.shape[0])
    m = h @ np.asarray(k, np.float64) @ h
    np.fill_diagonal(m, 0.0)
    return m / np.linalg.norm(m)


# repsim AffineInvariantRiemannian: centre x; mode "gram": K(x_c) + eps I (no normalisation); mode "cov":
# x_c^T x_c / (n - 1) + eps I. repsim Stress: d_ij = sqrt(k_ii + k_jj - 2 k_ij) of the kernel; rescale=True
# divides by the median of the upper triangle; distance = sqrt(mean_{i<j} (D_ij - E_ij)^2).


def repsim_spd_point(x, eps: float, *, mode: str = "gram", kernel: str = "linear") -> np.ndarray:
    X = flat(x)
    X = X - X.mean(0)
    if mode == "gram":
        k = repsim_kernel(X, kernel)
    else:
        k = X.T @ X / (X.shape[0] - 1)
    return k + eps * np.eye(k.shape[0])


def repsim_stress_point(x, *, kernel: str = "linear", rescale: bool = False) -> np.ndarray:
    k = repsim_kernel(x, kernel)
    kd = np.diag(k)
    d = np.sqrt(np.maximum(kd[:, None] + kd[None, :] - 2.0 * k, 0.0))
    np.fill_diagonal(d, 0.0)
    if rescale:
        d = d / np.median(d[np.triu_indices(d.shape[0], 1)])
    return d
