"""Baseline implementations that geopath is benchmarked against, written from the mathematics.

Nothing here imports geopath or copies netrep / repsim code; the definitions follow Williams et al. (2021),
"Generalized Shape Metrics on Neural Representations", with the same preprocessing conventions as
``geopath.AngularShape`` (centre; scale to ``||X||_F^2 = n``; partial whitening
``X (alpha I + (1 - alpha)(X^T X / n + eps I)^{-1/2})`` with covariance directions below the numerical-rank
tolerance ``max(n, p) * machine_eps`` left unwhitened; unit Frobenius norm). The angular shape distance is
``arccos(||A^T B||_*)`` for such unit-norm points ``A, B``.

(a) NumPy/SciPy, netrep-style (:func:`np_shape_point`, :func:`np_pair_distance`):
    per-network preprocessing done ONCE and cached, then a Python double loop over pairs with ONE
    ``scipy.linalg.svd`` (singular values only, ``gesdd``) of the cross-covariance per pair. This is
    *stronger* than netrep as shipped in two ways, both documented in the README: preprocessing is cached
    per network instead of redone per pair, and a layer wider than ``n`` is reduced once to ``n`` columns
    (``R^T`` of the QR decomposition ``X^T = Q R``: an orthogonal change of feature basis, which leaves every
    distance unchanged) so the per-pair SVD is at most ``n x n`` instead of ``p x q`` (``16384 x 16384`` for
    early ResNet layers, which would not finish). :func:`np_netrep_literal_pair` is the as-shipped per-pair
    computation (centre + zero-pad to a common width + full SVD with ``U, V`` for the Procrustes rotation),
    used only for a small side measurement.

(b) PyTorch, repsim-style (:func:`torch_gram_prepare`, :func:`torch_bures_distance`):
    works on ``n x n`` Gram (kernel) matrices. Per network (cached): ``K = X X^T / tr`` and its PSD square
    root via ``eigh``; per pair: the Bures fidelity ``tr sqrt(Kx^1/2 Ky Kx^1/2)`` from ``eigvalsh``, and
    ``d = arccos(fidelity)``. Python loop over pairs, ``torch.set_num_threads(os.cpu_count())``.

Plus PyTorch versions of the shape-space geodesic operations used by ``bench_geodesic`` and ``bench_grad``
(:func:`t_point`, :func:`t_distance`, :func:`t_geodesic`, :func:`t_angle`, :func:`t_project`,
:func:`t_path_length`), written for arbitrary leading batch axes so they run both in a Python loop and
batched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import numpy as np
import scipy.linalg as sla

# ----------------------------------------------------------------------------------------------------
# (a) NumPy / SciPy, netrep-style


def _flat(x: np.ndarray, dtype=None) -> np.ndarray:
    x = np.asarray(x)
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    elif not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x.reshape(x.shape[0], -1)


def _whiten_weights(s: np.ndarray, n: int, alpha: float, eps: float, tol: float) -> np.ndarray:
    """Multiplier of each singular value ``s`` of the scaled ``X`` under partial whitening."""
    lam = s * s / n
    keep = lam > tol
    w = np.full_like(s, alpha)
    w[keep] = alpha + (1.0 - alpha) / np.sqrt(lam[keep] + eps)
    return w


def np_shape_point(
    x, alpha: float = 1.0, *, whiten_eps: float = 1e-6, reduce: bool = True, dtype=None
) -> np.ndarray:
    """Angular-shape point of ``x [n, ...]`` with NumPy/SciPy: ``[n, k]``, unit Frobenius norm.

    ``reduce=True`` (default): a layer with ``p > n`` is first replaced by ``R^T`` (``n x n``) from the
    economic QR decomposition ``X^T = Q R`` -- i.e. by ``X Q``, an orthogonal change of feature basis, so all
    distances are unchanged. (QR rather than ``eigh(X X^T)`` because the Gram matrix squares the condition
    number: in float32 it loses every singular value below ~``sqrt(n eps) s_max``, which changes the
    nuclear norm by up to 1e-2 on activations with a long spectral tail.) For ``alpha < 1`` the whitening is
    then done in the singular basis (``k = `` rank). ``reduce=False`` keeps the ``p`` original features
    (netrep's layout).
    """
    X = _flat(x, dtype)
    n, p = X.shape
    Xc = X - X.mean(axis=0, keepdims=True)
    Xc *= math.sqrt(n) / np.linalg.norm(Xc)
    eps_m = float(np.finfo(Xc.dtype).eps)
    tol = max(n, p) * eps_m  # whitening tolerance; the covariance X^T X / n has trace 1
    if reduce and p > n:
        (r,) = sla.qr(Xc.T, mode="r", overwrite_a=True, check_finite=False)
        Xc = np.ascontiguousarray(r[:n].T)  # X = R^T Q^T
    if alpha < 1.0:
        u, s, vt = sla.svd(Xc, full_matrices=False, check_finite=False)
        w = _whiten_weights(s, n, alpha, whiten_eps, tol)
        z = u * (s * w)
        if not reduce:
            z = z @ vt
    else:
        z = Xc
    return z / np.linalg.norm(z)


def np_pair_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``arccos(||a^T b||_*)`` with ONE ``scipy.linalg.svd`` (values only) of the cross-covariance."""
    m = a.T @ b
    s = sla.svd(m, compute_uv=False, check_finite=False, lapack_driver="gesdd")
    return float(np.arccos(np.clip(s.sum(), -1.0, 1.0)))


def np_pairwise(points: Sequence[np.ndarray]) -> np.ndarray:
    """Distance matrix by a Python double loop over pairs (netrep's ``pairwise_distances`` pattern)."""
    L = len(points)
    d = np.zeros((L, L))
    for i in range(L):
        for j in range(i + 1, L):
            d[i, j] = d[j, i] = np_pair_distance(points[i], points[j])
    return d


def np_netrep_literal_pair(xc: np.ndarray, yc: np.ndarray) -> float:
    """netrep's per-pair computation as shipped (alpha = 1), from the math.

    ``xc, yc``: centred, unit-norm features. Zero-pad both to the larger width, full SVD (with ``U, V``)
    of the ``p x p`` cross-covariance to get the Procrustes rotation, then the angle between ``x R`` and ``y``.
    """
    k = max(xc.shape[1], yc.shape[1])
    xp = np.pad(xc, ((0, 0), (0, k - xc.shape[1])))
    yp = np.pad(yc, ((0, 0), (0, k - yc.shape[1])))
    u, _, vt = sla.svd(xp.T @ yp, check_finite=False, lapack_driver="gesdd")
    c = np.sum((xp @ (u @ vt)) * yp)
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def np_centered_unit(x, dtype=None) -> np.ndarray:
    X = _flat(x, dtype)
    Xc = X - X.mean(axis=0, keepdims=True)
    return Xc / np.linalg.norm(Xc)


# ----------------------------------------------------------------------------------------------------
# Budgeted all-pairs runner (shared by the NumPy and PyTorch baselines)


@dataclass
class PairwiseRun:
    """Outcome of :func:`run_pairwise_budgeted`."""

    dist: np.ndarray  # [L, L], NaN where a pair was not computed
    prep_s: dict[int, float]  # measured per-network preprocessing time
    pair_s: dict[tuple[int, int], float]  # measured per-pair time
    total_s: float  # measured total if complete, else the per-class extrapolation
    measured_s: float  # wall time actually spent
    complete: bool
    n_pairs: int
    n_pairs_done: int
    classes: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.complete:
            return "measured"
        return f"est. ({self.n_pairs_done}/{self.n_pairs} pairs)"


def run_pairwise_budgeted(
    xs: Sequence[Any],
    prep: Callable[[Any], Any],
    pair: Callable[[Any, Any], float],
    *,
    prep_key: Callable[[int], Hashable],
    pair_key: Callable[[int, int], Hashable],
    budget_s: float,
    seed: int = 0,
) -> PairwiseRun:
    """All-pairs distances with a Python loop, stopping early (and extrapolating) when over budget.

    Pairs are visited round-robin over *cost classes* (``pair_key(i, j)``: e.g. the two point widths, which
    determine the per-pair cost), so that every class is timed at least once before the budget can stop
    the loop. Preprocessing is done lazily and cached. If the loop finishes, ``total_s`` is the measured
    sum of preprocessing and pair times; otherwise it is ``sum over classes of (class size x mean measured
    time)`` for both the preprocessing (classes ``prep_key(i)``) and the pairs -- an estimate that is
    reported as such.
    """
    L = len(xs)
    pairs = [(i, j) for i in range(L) for j in range(i + 1, L)]
    rng = np.random.default_rng(seed)
    by_class: dict[Hashable, list[tuple[int, int]]] = {}
    for ij in pairs:
        by_class.setdefault(pair_key(*ij), []).append(ij)
    queues = []
    for k in sorted(by_class, key=str):
        lst = by_class[k]
        queues.append([lst[m] for m in rng.permutation(len(lst))])
    order = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    n_classes = len(by_class)
    cache: dict[int, Any] = {}
    prep_s: dict[int, float] = {}
    pair_s: dict[tuple[int, int], float] = {}
    dist = np.full((L, L), np.nan)
    np.fill_diagonal(dist, 0.0)
    t_start = time.perf_counter()

    def ensure(i):
        if i not in cache:
            t0 = time.perf_counter()
            cache[i] = prep(xs[i])
            prep_s[i] = time.perf_counter() - t0

    for idx, (i, j) in enumerate(order):
        if idx >= n_classes and time.perf_counter() - t_start > budget_s:
            break
        ensure(i)
        ensure(j)
        t0 = time.perf_counter()
        d = pair(cache[i], cache[j])
        pair_s[(i, j)] = time.perf_counter() - t0
        dist[i, j] = dist[j, i] = d
    measured = time.perf_counter() - t_start
    complete = len(pair_s) == len(pairs)
    if L == 1:
        ensure(0)
    # Preprocessing classes never touched (possible only when some layer is in no timed pair): time one.
    prep_classes: dict[Hashable, list[int]] = {}
    for i in range(L):
        prep_classes.setdefault(prep_key(i), []).append(i)
    for members in prep_classes.values():
        if not any(m in prep_s for m in members) and not complete:
            ensure(members[0])
    if complete:
        total = sum(prep_s.values()) + sum(pair_s.values())
    else:
        total = 0.0
        for members in prep_classes.values():
            ts = [prep_s[m] for m in members if m in prep_s]
            total += sum(prep_s.get(m, float(np.mean(ts))) for m in members)
        for k, lst in by_class.items():
            ts = [pair_s[ij] for ij in lst if ij in pair_s]
            total += sum(pair_s.get(ij, float(np.mean(ts))) for ij in lst)
    classes = {}
    for k, lst in by_class.items():
        ts = [pair_s[ij] for ij in lst if ij in pair_s]
        classes[str(k)] = {"pairs": len(lst), "timed": len(ts), "mean_s": float(np.mean(ts)) if ts else None}
    return PairwiseRun(
        dist=dist,
        prep_s=prep_s,
        pair_s=pair_s,
        total_s=total,
        measured_s=measured,
        complete=complete,
        n_pairs=len(pairs),
        n_pairs_done=len(pair_s),
        classes=classes,
    )


# ----------------------------------------------------------------------------------------------------
# (b) PyTorch, repsim-style (Gram matrices, Bures fidelity)


def _torch():
    import torch  # noqa: PLC0415

    return torch


def _t_dtype(dtype: str):
    torch = _torch()
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def torch_gram_prepare(
    x, alpha: float = 1.0, *, whiten_eps: float = 1e-6, dtype: str = "float32", rank_rtol: float | None = None
):
    """Per-network work of the repsim-style baseline: ``(K, K^1/2)`` with ``tr K = 1``.

    ``K = X~ X~^T`` for the centred, partially whitened ``X~`` (whitening done on the Gram eigenvalues:
    the singular values ``s`` of ``X`` become ``s w(s)``, which gives the same ``K`` as whitening the
    features). The square root uses ``eigh`` with negative round-off eigenvalues clamped to 0.
    """
    torch = _torch()
    X = torch.as_tensor(np.asarray(x)).reshape(x.shape[0], -1).to(_t_dtype(dtype))
    n, p = X.shape
    Xc = X - X.mean(dim=0, keepdim=True)
    Xc = Xc * (math.sqrt(n) / torch.linalg.norm(Xc))
    K = Xc @ Xc.T
    lam, U = torch.linalg.eigh(K)
    # Eigenvalues below the numerical-rank tolerance are round-off (K has rank <= min(n - 1, p)).
    # Eigenvalues below eps * max -> 0 (round-off). A rank tolerance such as n * eps * max would also zero
    # genuine small eigenvalues, whose square roots add up to a visible part of the fidelity in float32.
    rtol = torch.finfo(K.dtype).eps if rank_rtol is None else rank_rtol
    lam = torch.where(lam > rtol * lam.amax(), lam, torch.zeros_like(lam))
    if alpha < 1.0:
        tol = max(n, p) * torch.finfo(K.dtype).eps
        cov = lam / n
        keep = cov > tol
        w = torch.where(
            keep,
            alpha + (1.0 - alpha) / torch.sqrt(torch.where(keep, cov, 1.0) + whiten_eps),
            torch.full_like(cov, alpha),
        )
        lam = lam * w * w
    lam = lam / lam.sum()
    K = (U * lam) @ U.T
    R = (U * lam.sqrt()) @ U.T
    return K, R


def torch_bures_distance(pa, pb, rank_rtol: float | None = None) -> float:
    """``arccos(tr sqrt(Ra Kb Ra))`` from ``eigvalsh`` (values only)."""
    torch = _torch()
    _, ra = pa
    kb, _ = pb
    m = ra @ kb @ ra
    m = 0.5 * (m + m.T)
    ev = torch.linalg.eigvalsh(m)
    # Eigenvalues below eps * max are round-off (the product has rank <= min ranks); their square roots
    # would add ~sqrt(eps) each. Tuned on the benchmark data: eps * max gives the smallest float32 error
    # against a float64 reference (0 or n * eps * max are 10x-1000x worse).
    rtol = torch.finfo(ev.dtype).eps if rank_rtol is None else rank_rtol
    ev = torch.where(ev > rtol * ev.amax(), ev, torch.zeros_like(ev))
    return float(torch.arccos(torch.clamp(ev.sqrt().sum(), -1.0, 1.0)))


# ----------------------------------------------------------------------------------------------------
# PyTorch shape-space geodesic operations (angular shape metric, feature route), batched over leading axes.


def _mT(x):
    return x.transpose(-1, -2)


def _fro(x):
    return _torch().linalg.norm(x, dim=(-2, -1), keepdim=True)


def _vdot(a, b):
    return (a * b).sum(dim=(-2, -1), keepdim=True)


def t_point(x, alpha: float = 1.0, *, whiten_eps: float = 1e-6):
    """Angular-shape point of ``x [..., n, p]`` (feature route): centre, scale, partially whiten, unit norm."""
    torch = _torch()
    n, p = x.shape[-2], x.shape[-1]
    xc = x - x.mean(dim=-2, keepdim=True)
    xn = xc * (math.sqrt(n) / _fro(xc))
    if alpha < 1.0:
        tol = max(n, p) * torch.finfo(x.dtype).eps
        lam, v = torch.linalg.eigh(_mT(xn) @ xn / n)
        keep = lam > tol
        w = torch.where(
            keep,
            alpha + (1.0 - alpha) / torch.sqrt(torch.where(keep, lam, 1.0) + whiten_eps),
            torch.full_like(lam, alpha),
        )
        xn = xn @ ((v * w.unsqueeze(-2)) @ _mT(v))
    return xn / _fro(xn)


def t_rotation(a, b):
    """Orthogonal ``R`` maximising ``<b R, a>`` (polar factor of ``b^T a``)."""
    u, _, vh = _torch().linalg.svd(_mT(b) @ a, full_matrices=False)
    return u @ vh


def t_nuclear(m, mask_rtol: float | None = None):
    """Sum of singular values; with ``mask_rtol``, values below ``mask_rtol * max`` are excluded (their
    gradient would otherwise pick arbitrary null-space directions)."""
    s = _torch().linalg.svdvals(m)
    if mask_rtol is not None:
        s = s * (s > mask_rtol * s.amax(dim=-1, keepdim=True)).to(s.dtype)
    return s.sum(dim=-1)


def t_distance(a, b):
    """Angular shape distance ``2 asin(|a - b R| / 2)`` (same accurate form as geopath's ``distance``)."""
    torch = _torch()
    chord = _fro(a - b @ t_rotation(a, b))[..., 0, 0]
    return 2.0 * torch.asin(torch.clamp(0.5 * chord, max=1.0))


def t_distance_nuclear(a, b, mask_rtol: float | None = None):
    """``arccos(||a^T b||_*)`` for unit-norm points (what the pairwise baselines compute)."""
    torch = _torch()
    return torch.arccos(torch.clamp(t_nuclear(_mT(a) @ b, mask_rtol), -1.0, 1.0))


def _sinc(x):
    return _torch().special.sinc(x / math.pi)  # sin(x) / x


def t_log(a, b):
    torch = _torch()
    bs = b @ t_rotation(a, b)
    c = _vdot(a, bs)
    w = bs - c * a
    theta = torch.atan2(_fro(w), c)
    return w / _sinc(theta)


def t_exp(a, v):
    torch = _torch()
    nv = _fro(v)
    return torch.cos(nv) * a + _sinc(nv) * v


def t_geodesic(a, b, t):
    return t_exp(a, t * t_log(a, b))


def t_angle(a, b, c):
    """Angle at ``b`` between geodesics ``b -> a`` and ``b -> c`` (``2 atan2(|u - v|, |u + v|)``)."""
    torch = _torch()
    u = t_log(b, a)
    v = t_log(b, c)
    u = u / _fro(u)
    v = v / _fro(v)
    return 2.0 * torch.atan2(_fro(u - v), _fro(u + v))[..., 0, 0]


def _t_gamma(a, e, nv, t):
    """Point and velocity of the great circle ``exp_a(t v)``, ``v = nv e`` (``e`` unit)."""
    torch = _torch()
    ang = t * nv
    return torch.cos(ang) * a + torch.sin(ang) * e, nv * (-torch.sin(ang) * a + torch.cos(ang) * e)


def t_project(a, b, c, num_iters: int = 6, num_grid: int = 31):
    """Projection of ``c`` onto the geodesic through ``a, b``: ``(t, point, distance)``.

    Same algorithm as ``geopath.project`` (written from its description): start from the best of the
    tangent-space estimate at ``a`` and ``num_grid`` equally spaced ``t`` in ``[-1, 2]``; then ``num_iters``
    safeguarded Newton steps on ``f(t) = d(gamma(t), c)^2 / 2`` with ``f'(t) = -<log_gamma(t) c, gamma'(t)>``
    (analytic here) and ``f''`` by a central difference of ``f'``, steps clipped to the grid spacing; one
    final Newton step.
    """
    torch = _torch()
    v = t_log(a, b)
    nv = _fro(v)
    e = v / nv
    t_lin = _vdot(t_log(a, c), v) / (nv * nv)
    h = 3.0 / (num_grid - 1)
    grid = torch.linspace(-1.0, 2.0, num_grid, dtype=a.dtype)
    cands = [t_lin] + [torch.full_like(t_lin, float(g)) for g in grid]
    dists = torch.stack([t_distance_nuclear(_t_gamma(a, e, nv, t)[0], c) for t in cands], dim=-1)
    idx = torch.argmin(dists, dim=-1)
    t = torch.stack([x[..., 0, 0] for x in cands], dim=-1).gather(-1, idx[..., None])[..., 0]
    t = t[..., None, None]
    delta = 1e-3 * h

    def df(t):
        p, vel = _t_gamma(a, e, nv, t)
        return -_vdot(t_log(p, c), vel)

    def curvature(t):
        return (df(t + delta) - df(t - delta)) / (2 * delta)

    for _ in range(num_iters):
        g, curv = df(t), curvature(t)
        step = torch.where(
            curv > 0, -g / torch.where(curv > 0, curv, torch.ones_like(curv)), -torch.sign(g) * h
        )
        t = t + torch.clamp(step, -h, h)
    g, curv = df(t), curvature(t)
    curv = torch.where(curv > 0, curv, nv * nv)
    t = t - g / curv
    p, _ = _t_gamma(a, e, nv, t)
    return t[..., 0, 0], p, t_distance(p, c)


def t_pad(x, k: int):
    torch = _torch()
    if x.shape[-1] == k:
        return x
    return torch.nn.functional.pad(x, (0, k - x.shape[-1]))


def t_path_length(points, mask_rtol: float | None = None):
    """Sum of consecutive angular shape distances (``arccos`` of the nuclear norm; widths may differ)."""
    total = 0.0
    for a, b in zip(points[:-1], points[1:]):
        total = total + t_distance_nuclear(a, b, mask_rtol)
    return total
