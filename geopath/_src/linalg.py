"""Linear algebra with gradients that stay finite where the textbook rules blow up.

JAX differentiates ``svd`` and ``eigh`` through formulas with ``1 / (s_i**2 - s_j**2)`` or
``1 / (l_i - l_j)`` terms, which are infinite at repeated singular values / eigenvalues even when the
quantity being differentiated (a nuclear norm, a matrix square root, a polar factor) is perfectly smooth.
The functions here carry custom JVP rules built from well-conditioned formulas instead:

* spectral functions ``W f(L) W^T`` use the Daleckii-Krein divided differences, with ``f'`` on (near-)ties;
* traces of spectral functions use ``tr(W f'(L) W^T dA)`` (no eigenvector derivatives at all);
* the nuclear norm uses ``tr(U^T dM V)`` over the non-zero singular values;
* the polar factor and the PSD square root use Sylvester equations with ``1 / (s_i + s_j)``, pseudo-inverted
  on the null space.

All functions accept leading batch axes and work under ``jit``/``vmap``/``grad`` (forward and reverse mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike


def _mT(x: Array) -> Array:
    return jnp.swapaxes(x, -1, -2)


def sym(x: Array) -> Array:
    """Symmetric part ``(x + x^T) / 2`` of ``[..., m, m]`` matrices."""
    return 0.5 * (x + _mT(x))


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def safe_norm(x: ArrayLike, *, axis=None, keepdims: bool = False) -> Array:
    """Euclidean / Frobenius norm whose gradient at ``x = 0`` is 0 instead of NaN.

    NaN in ``x`` gives NaN (never 0). The entries are divided by their largest magnitude before squaring, so
    any finite ``x`` (1e-30 or 1e30 in float32) gives its norm without overflow or underflow.

    Args:
      x: an array of any shape, real.
      axis: the axes to reduce (None: all, the Frobenius norm).
      keepdims: keep the reduced axes with size 1.

    Returns:
      The norm, ``x``'s shape without ``axis`` (``[]`` for ``axis=None``), in ``x``'s floating dtype; Inf if
      ``x`` holds Inf and no NaN.

    Example:
      >>> import jax, jax.numpy as jnp, geopath as gp
      >>> round(float(gp.safe_norm(jnp.array([3e30, 4e30])) / 1e30), 4)  # no overflow in float32
      5.0
      >>> jax.grad(gp.safe_norm)(jnp.zeros(3)).tolist()  # 0, not NaN
      [0.0, 0.0, 0.0]
    """
    x = jnp.asarray(x)
    big = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    ok = jnp.isfinite(big) & (big > 0)  # NaN / Inf / 0: no rescaling, so NaN and Inf propagate
    big = jnp.where(ok, big, 1.0)
    sq = jnp.sum(jnp.square(x / big), axis=axis, keepdims=True)
    zero = sq == 0
    norm = big * jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, sq)))
    if keepdims:
        return norm
    return jnp.squeeze(norm, axis=tuple(range(x.ndim)) if axis is None else axis)


def safe_sqrt(x: ArrayLike) -> Array:
    """``sqrt(max(x, 0))`` with gradient 0 (not Inf) at ``x <= 0``; NaN stays NaN."""
    x = jnp.asarray(x)
    nonpos = x <= 0
    return jnp.where(nonpos, 0.0, jnp.sqrt(jnp.where(nonpos, 1.0, x)))


def max_exponent(*xs: ArrayLike) -> Array:
    """Integer ``e`` with ``max |x| / 2**e`` in ``[0.5, 1)`` over all ``xs``; 0 if that is 0 or not finite.

    ``jnp.ldexp(x, -e)`` then rescales exactly (a power of two) so that squares cannot overflow or underflow.
    """
    m = jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.asarray(x))) for x in xs]))
    ok = jnp.isfinite(m) & (m > 0)
    return jnp.where(ok, jnp.frexp(jnp.where(ok, m, 1.0))[1], 0)


@jax.custom_jvp
def safe_arccos(x: ArrayLike) -> Array:
    """``arccos(clip(x, -1, 1))`` with a finite derivative at ``|x| = 1``.

    The derivative ``-1 / sqrt(1 - x**2)`` is evaluated with the radicand floored at machine epsilon, so at
    the end points it is large but finite. Wherever ``x`` is a smooth function with a maximum at 1 (a cosine
    similarity at identical inputs) the incoming tangent vanishes there and the product stays small.

    Returns:
      ``arccos`` in ``[0, pi]``, shaped like ``x``, in ``x``'s floating dtype. ``|x| > 1`` is clipped (2 gives
      0, not NaN); NaN gives NaN.
    """
    x = jnp.asarray(x)
    return jnp.arccos(jnp.clip(x, -1.0, 1.0))


@safe_arccos.defjvp
def _safe_arccos_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    xc = jnp.clip(x, -1.0, 1.0)
    denom = jnp.sqrt(jnp.maximum(1.0 - xc * xc, _eps(xc.dtype)))
    return jnp.arccos(xc), -dx / denom


# ----------------------------------------------------------------------------------------------------
# Spectral functions of symmetric matrices.


def _elementwise_derivative(f, lam, params):
    _, df = jax.jvp(lambda l: f(l, *params), (lam,), (jnp.ones_like(lam),))
    return df


def _divided_differences(f, lam, flam, params):
    """Daleckii-Krein matrix ``(f(l_i) - f(l_j)) / (l_i - l_j)``, ``f'`` at (near-)ties. ``[..., m, m]``."""
    li, lj = lam[..., :, None], lam[..., None, :]
    diff = li - lj
    scale = jnp.maximum(jnp.abs(li), jnp.abs(lj))
    scale = jnp.maximum(scale, jnp.max(jnp.abs(lam), axis=-1, keepdims=True)[..., None] * 1e-3)
    close = jnp.abs(diff) <= 1e3 * _eps(lam.dtype) * jnp.maximum(scale, jnp.finfo(lam.dtype).tiny)
    mid = 0.5 * (li + lj)
    dmid = _elementwise_derivative(f, mid, params)
    quotient = (flam[..., :, None] - flam[..., None, :]) / jnp.where(close, 1.0, diff)
    return jnp.where(close, dmid, quotient)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def matrix_function(f: Callable[..., Array], a: ArrayLike, *params) -> Array:
    """``W f(L) W^T`` for symmetric ``a = W L W^T``.

    Args:
      f: elementwise function ``f(eigenvalues, *params)``; must be differentiable in both arguments.
        It is static (hashable): pass data-dependent constants through ``params``.
      a: ``[..., m, m]`` symmetric matrices (only the lower triangle is read by ``eigh``).
      *params: arrays broadcastable against the eigenvalues ``[..., m]``; differentiable.

    Returns:
      ``[..., m, m]`` symmetric matrices in ``a``'s dtype.

    NaN is not checked for: the eigen- or singular value decomposition of a matrix with NaN entries gave
    NaN on the CPU in the cases tested, but LAPACK does not promise it; validate inputs where it matters.
    """
    a = jnp.asarray(a)
    lam, w = jnp.linalg.eigh(a)
    return (w * f(lam, *params)[..., None, :]) @ _mT(w)


@matrix_function.defjvp
def _matrix_function_jvp(f, primals, tangents):
    a, *params = primals
    da, *dparams = tangents
    lam, w = jnp.linalg.eigh(a)
    flam = f(lam, *params)
    out = (w * flam[..., None, :]) @ _mT(w)
    phi = _divided_differences(f, lam, flam, params)
    inner = phi * (_mT(w) @ sym(da) @ w)
    if params:
        _, dflam = jax.jvp(lambda *p: f(lam, *p), tuple(params), tuple(dparams))
        inner = inner + dflam[..., None, :] * jnp.eye(lam.shape[-1], dtype=lam.dtype)
    return out, w @ inner @ _mT(w)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def trace_function(f: Callable[..., Array], a: ArrayLike, *params) -> Array:
    """``sum_i f(l_i)`` over the eigenvalues of symmetric ``a`` ``[..., m, m]``; returns ``[...]``.

    The derivative ``tr(W diag(f'(L)) W^T dA)`` needs no eigenvector derivatives, so it is finite for
    repeated eigenvalues.

    Args:
      f: elementwise function ``f(eigenvalues, *params)`` (static), as in :func:`matrix_function`.
      a: ``[..., m, m]`` symmetric matrices (only the lower triangle is read).
      *params: arrays broadcastable against the eigenvalues ``[..., m]``.

    Returns:
      ``[...]`` in ``a``'s dtype.

    NaN is not checked for: the eigen- or singular value decomposition of a matrix with NaN entries gave
    NaN on the CPU in the cases tested, but LAPACK does not promise it; validate inputs where it matters.
    """
    lam = jnp.linalg.eigvalsh(jnp.asarray(a))
    return jnp.sum(f(lam, *params), axis=-1)


@trace_function.defjvp
def _trace_function_jvp(f, primals, tangents):
    a, *params = primals
    da, *dparams = tangents
    lam, w = jnp.linalg.eigh(a)
    out = jnp.sum(f(lam, *params), axis=-1)
    dlam = _elementwise_derivative(f, lam, params)
    proj = jnp.einsum("...ik,...ij,...jk->...k", w, sym(da), w)
    dout = jnp.sum(dlam * proj, axis=-1)
    if params:
        _, dflam = jax.jvp(lambda *p: f(lam, *p), tuple(params), tuple(dparams))
        dout = dout + jnp.sum(dflam, axis=-1)
    return out, dout


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def gram_function(f: Callable[..., Array], m: ArrayLike, *params) -> Array:
    """``W f(L) W^T`` for the Gram matrix ``m m^T = W L W^T`` of a square ``m`` ``[..., r, r]``.

    Computed from the SVD ``m = U S V^T`` (``W = U``, ``L = S^2``) without forming ``m m^T``: the small
    eigenvalues keep a relative accuracy of about ``eps * s_max / s_i`` instead of ``eps * s_max^2 / s_i^2``,
    and they are never negative. The derivative is that of :func:`matrix_function` at ``m m^T`` (Daleckii-Krein
    divided differences with ``dC = dm m^T + m dm^T``), finite at repeated singular values.

    Args:
      f: elementwise function ``f(eigenvalues, *params)`` of the eigenvalues of ``m m^T`` (static).
      m: ``[..., r, r]``.
      *params: arrays broadcastable against the eigenvalues ``[..., r]``; differentiable.

    Returns:
      ``[..., r, r]`` symmetric matrices.
    """
    lam, w = _gram_eigh(jnp.asarray(m))
    return (w * f(lam, *params)[..., None, :]) @ _mT(w)


def _gram_eigh(m):
    if m.shape[-1] != m.shape[-2]:
        raise ValueError(f"gram_function needs square matrices; got shape {m.shape}")
    u, s, _ = jnp.linalg.svd(m, full_matrices=False)
    return s * s, u


@gram_function.defjvp
def _gram_function_jvp(f, primals, tangents):
    m, *params = primals
    dm, *dparams = tangents
    lam, w = _gram_eigh(m)
    flam = f(lam, *params)
    out = (w * flam[..., None, :]) @ _mT(w)
    phi = _divided_differences(f, lam, flam, params)
    dc = dm @ _mT(m) + m @ _mT(dm)
    inner = phi * (_mT(w) @ dc @ w)
    if params:
        _, dflam = jax.jvp(lambda *p: f(lam, *p), tuple(params), tuple(dparams))
        inner = inner + dflam[..., None, :] * jnp.eye(lam.shape[-1], dtype=lam.dtype)
    return out, w @ inner @ _mT(w)


def _psd_rank_tol(lam: Array, n: int) -> Array:
    """Eigenvalues below this are numerically zero (cf. ``numpy.linalg.matrix_rank``)."""
    return jnp.max(jnp.abs(lam), axis=-1, keepdims=True) * n * _eps(lam.dtype)


@jax.custom_jvp
def psd_sqrt(k: ArrayLike) -> Array:
    """Square root of a symmetric positive semi-definite matrix ``[..., n, n]``.

    Eigenvalues below the numerical-rank tolerance ``n * eps * max(l)`` are set to 0. The derivative solves
    ``P dP + dP P = dK`` with ``1 / (s_i + s_j)``, pseudo-inverted where ``s_i + s_j = 0`` (the null-space
    block, where ``dK`` vanishes for the Gram matrices this is used on), so it is finite for rank-deficient
    ``k`` such as the Gram matrix of centred data.

    Returns:
      ``[..., n, n]`` symmetric positive semi-definite, in ``k``'s dtype. Negative eigenvalues (round-off
      of a PSD matrix) become 0.

    NaN is not checked for: the eigen- or singular value decomposition of a matrix with NaN entries gave
    NaN on the CPU in the cases tested, but LAPACK does not promise it; validate inputs where it matters.
    """
    lam, w = jnp.linalg.eigh(jnp.asarray(k))
    s = _psd_sqrt_eigs(lam)
    return (w * s[..., None, :]) @ _mT(w)


def _psd_sqrt_eigs(lam):
    tol = _psd_rank_tol(lam, lam.shape[-1])
    return jnp.where(lam > tol, jnp.sqrt(jnp.where(lam > tol, lam, 1.0)), 0.0)


def _pinv_pair_sum(si, sj):
    denom = si[..., :, None] + sj[..., None, :]
    tol = jnp.max(jnp.abs(denom), axis=(-2, -1), keepdims=True) * 8 * _eps(denom.dtype)
    ok = jnp.abs(denom) > tol
    return jnp.where(ok, 1.0 / jnp.where(ok, denom, 1.0), 0.0)


@psd_sqrt.defjvp
def _psd_sqrt_jvp(primals, tangents):
    (k,), (dk,) = primals, tangents
    lam, w = jnp.linalg.eigh(k)
    s = _psd_sqrt_eigs(lam)
    out = (w * s[..., None, :]) @ _mT(w)
    inner = (_mT(w) @ sym(dk) @ w) * _pinv_pair_sum(s, s)
    return out, w @ inner @ _mT(w)


@jax.custom_jvp
def gram_sqrt(x: ArrayLike) -> Array:
    """``sqrt(x x^T)`` ``[n, n]`` of ``x`` ``[n, p]``, computed without forming the Gram matrix.

    ``x^T = Q R`` (QR of the ``p x n`` transpose), then ``R^T = U S V^T``, so ``x x^T = U S^2 U^T`` and the
    result is ``U S U^T``. Forming ``x x^T`` first would square the condition number and, in float32, lose every
    singular value below about ``sqrt(n eps) s_max``. Singular values below ``max(n, p) eps s_max`` are set to
    0. The derivative is that of :func:`psd_sqrt` at ``x x^T`` (a Sylvester solve, pseudo-inverted on the null
    space), finite for rank-deficient ``x`` such as centred data.
    """
    u, s = _gram_sqrt_eigs(jnp.asarray(x))
    return (u * s[..., None, :]) @ _mT(u)


def _gram_sqrt_eigs(x):
    n, p = x.shape[-2], x.shape[-1]
    if p > n:
        r = jnp.linalg.qr(_mT(x), mode="r")[..., :n, :]
        u, s, _ = jnp.linalg.svd(_mT(r), full_matrices=False)
    else:  # full U: an orthonormal basis of R^n; the n - p extra directions get singular value 0
        u, s, _ = jnp.linalg.svd(x, full_matrices=True)
        s = jnp.concatenate([s, jnp.zeros(s.shape[:-1] + (n - p,), s.dtype)], axis=-1)
    tol = jnp.max(s, axis=-1, keepdims=True) * max(n, p) * _eps(s.dtype)
    return u, jnp.where(s > tol, s, 0.0)


@gram_sqrt.defjvp
def _gram_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    u, s = _gram_sqrt_eigs(x)
    out = (u * s[..., None, :]) @ _mT(u)
    dk = dx @ _mT(x) + x @ _mT(dx)
    inner = (_mT(u) @ dk @ u) * _pinv_pair_sum(s, s)
    return out, u @ inner @ _mT(u)


# ----------------------------------------------------------------------------------------------------
# Sylvester equations.


@jax.custom_jvp
def solve_sylvester(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Array:
    """Solves ``a X + X b = c`` for symmetric ``a`` ``[..., m, m]`` and ``b`` ``[..., q, q]``.

    Uses the eigendecompositions of ``a`` and ``b``: ``X = Wa [(Wa^T c Wb) / (la_i + lb_j)] Wb^T``. Where
    ``la_i + lb_j`` is numerically zero the system is singular and that component of ``X`` is set to 0
    (minimum-norm solution). Differentiable in all arguments by implicit differentiation:
    ``a dX + dX b = dc - da X - X db``.

    Args:
      a: ``[..., m, m]`` symmetric.
      b: ``[..., q, q]`` symmetric.
      c: ``[..., m, q]``.

    Returns:
      ``[..., m, q]`` in the promoted dtype of ``a``, ``b`` and ``c``.

    Raises:
      ValueError: the shapes do not fit ``a X + X b = c``.

    NaN: NaN in ``b`` or ``c`` gives NaN; NaN in ``a`` gave 0 on the CPU (LAPACK's ``eigh`` of a matrix with
    NaN entries is not specified): validate ``a`` where it matters.
    """
    a, b, c = jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)
    if a.shape[-1] != c.shape[-2] or b.shape[-1] != c.shape[-1]:
        raise ValueError(
            f"solve_sylvester: a {a.shape}, b {b.shape} and c {c.shape} do not fit a X + X b = c"
        )
    la, wa = jnp.linalg.eigh(a)
    lb, wb = jnp.linalg.eigh(b)
    return _sylvester_from_eigh(la, wa, lb, wb, c)


def _sylvester_from_eigh(la, wa, lb, wb, c):
    return wa @ ((_mT(wa) @ c @ wb) * _pinv_pair_sum(la, lb)) @ _mT(wb)


@solve_sylvester.defjvp
def _solve_sylvester_jvp(primals, tangents):
    a, b, c = primals
    da, db, dc = tangents
    la, wa = jnp.linalg.eigh(a)
    lb, wb = jnp.linalg.eigh(b)
    x = _sylvester_from_eigh(la, wa, lb, wb, c)
    rhs = dc - sym(da) @ x - x @ sym(db)
    return x, _sylvester_from_eigh(la, wa, lb, wb, rhs)


# ----------------------------------------------------------------------------------------------------
# Singular-value based quantities.


def _svd_mask(s: Array) -> Array:
    m = max(1, max(s.shape[-1], 1))
    tol = jnp.max(s, axis=-1, keepdims=True) * 4 * m * _eps(s.dtype)
    return (s > tol).astype(s.dtype)


@jax.custom_jvp
def nuclear_norm(m: ArrayLike) -> Array:
    """Sum of singular values of ``m`` ``[..., r, c]``; returns ``[...]``.

    The derivative ``sum_k u_k^T dM v_k`` runs over the numerically non-zero singular values only, which is
    the exact derivative wherever ``m`` has full rank and a valid subgradient elsewhere; it never involves
    ``1 / (s_i^2 - s_j^2)``.

    Returns:
      ``[...]`` in ``m``'s dtype, ``>= 0``.

    NaN is not checked for: the eigen- or singular value decomposition of a matrix with NaN entries gave
    NaN on the CPU in the cases tested, but LAPACK does not promise it; validate inputs where it matters.
    """
    return jnp.sum(jnp.linalg.svd(jnp.asarray(m), compute_uv=False), axis=-1)


@nuclear_norm.defjvp
def _nuclear_norm_jvp(primals, tangents):
    (m,), (dm,) = primals, tangents
    u, s, vh = jnp.linalg.svd(m, full_matrices=False)
    mask = _svd_mask(s)
    return jnp.sum(s, axis=-1), jnp.einsum("...ik,...ij,...kj,...k->...", u, dm, vh, mask)


def after(done: Any, x: Any) -> Any:
    """``x`` unchanged, but computed after ``done``: a data dependency that orders two decompositions.

    jaxlib 0.10's batched CPU LAPACK kernels (``svd``, ``eigh``, ``cholesky``, triangular solves, ...) split
    their batch over XLA's intra-op thread pool and block the pool thread that runs them until the pieces are
    done. When XLA runs as many independent ones at once as the pool has threads (2 on a 2-core machine),
    every thread waits and the program hangs at 0% CPU (``docs/threads.md``). XLA runs independent operations
    concurrently, so a program with several independent decompositions must order them: pass the inputs of
    the later one through ``after(output of the earlier one, inputs)``. The added term is an exact zero (``0 *
    s``, ``s`` the sum of the finite elements of ``done``), which XLA does not fold away for floats.

    Differentiation orders the reverse pass too, the other way round: the cotangent of ``done`` waits for the
    cotangents of the differentiated leaves of ``x`` (a term ``select(isnan(0), ., 0)``, always 0 and finite,
    but a data dependency XLA cannot remove). Values and gradients of ``done`` and ``x`` are unchanged.
    ``done`` and ``x``: pytrees of arrays (non-float leaves of ``x`` pass through).
    """
    return _after(done, x)


def _exact_zero(done: Any) -> Array | None:
    """``0 * s`` (float32), ``s`` the sum of the finite elements of ``done`` (None if it has no leaves)."""
    leaves = [jax.lax.stop_gradient(jnp.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(done)]
    if not leaves:
        return None
    # every element of done counts (one of them may be a constant, e.g. a prepended zero)
    s = sum(
        jnp.sum(jnp.where(jnp.isfinite(v), v, 0.0) if jnp.issubdtype(v.dtype, jnp.inexact) else v).astype(
            jnp.float32
        )
        for v in leaves
    )
    return jnp.where(jnp.isfinite(s), s, 0.0) * 0.0  # the float32 sum may overflow: never inf * 0


def _is_float(leaf) -> bool:
    return leaf is not None and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


@jax.custom_jvp
def _after(done: Any, x: Any) -> Any:
    zero = _exact_zero(done)
    if zero is None:
        return x
    return jax.tree_util.tree_map(lambda v: v + zero.astype(jnp.result_type(v)) if _is_float(v) else v, x)


def tangent_link(primal: Any, tangents: Any) -> Array:
    """An exact zero ``[]`` (float32) that depends on ``tangents``, for the tangent rules of custom JVPs.

    Adding it to a later tangent orders both passes: forward, the later computation follows ``tangents``;
    transposed (``jax.grad``), the cotangent of ``tangents`` follows the later one's. It is ``select(isnan(z),
    sum(tangents), 0)`` with ``z`` the exact zero :func:`after` computes from ``primal`` (never NaN): linear in
    the tangents and always 0, never NaN, whatever they hold. ``tangents``: a pytree of float arrays.
    """
    never = jnp.isnan(_exact_zero(primal))
    return jnp.where(
        never, sum(jnp.sum(t).astype(jnp.float32) for t in jax.tree_util.tree_leaves(tangents)), 0.0
    )


def _after_jvp(primals, tangents):
    (done, x), (d_done, dx) = primals, tangents
    out = _after(done, x)
    symbolic = lambda t: isinstance(t, SymbolicZero)  # noqa: E731
    live = [
        t for t in jax.tree_util.tree_leaves(d_done, is_leaf=symbolic) if not symbolic(t) and _is_float(t)
    ]
    if not jax.tree_util.tree_leaves(done) or not live:
        return out, dx
    link = tangent_link(done, live)

    def tie(t):
        return t if symbolic(t) or not _is_float(t) else t + link.astype(t.dtype)

    return out, jax.tree_util.tree_map(tie, dx, is_leaf=symbolic)


_after.defjvp(_after_jvp, symbolic_zeros=True)


@jax.custom_jvp
def polar_factor(m: ArrayLike) -> Array:
    """Orthogonal polar factor ``U V^T`` of a square matrix ``m = U S V^T`` ``[..., k, k]``.

    It is the orthogonal matrix closest to ``m`` and the maximiser of ``tr(Q^T m)`` over orthogonal ``Q``.
    The derivative ``U Omega V^T`` with ``Omega_ij = (X_ij - X_ji) / (s_i + s_j)``, ``X = U^T dM V``, is finite
    for repeated singular values; where ``s_i + s_j = 0`` (rank deficiency by two or more) that component is
    set to 0.

    Returns:
      ``[..., k, k]`` orthogonal, in ``m``'s dtype. Not unique where ``m`` is singular (any valid factor is
      returned).

    NaN is not checked for: the eigen- or singular value decomposition of a matrix with NaN entries gave
    NaN on the CPU in the cases tested, but LAPACK does not promise it; validate inputs where it matters.
    """
    u, _, vh = jnp.linalg.svd(jnp.asarray(m), full_matrices=False)
    return u @ vh


@polar_factor.defjvp
def _polar_factor_jvp(primals, tangents):
    (m,), (dm,) = primals, tangents
    u, s, vh = jnp.linalg.svd(m, full_matrices=False)
    x = _mT(u) @ dm @ _mT(vh)
    omega = (x - _mT(x)) * _pinv_pair_sum(s, s)
    return u @ vh, u @ omega @ vh


class Procrustes(NamedTuple):
    """Result of :func:`orthogonal_procrustes`.

    Attributes:
      rotation: ``[k, k]`` orthogonal ``R`` minimising ``||x R - y||_F`` (``k = max(p, q)``).
      aligned: ``[n, k]`` ``x R`` (``x`` zero-padded to ``k`` columns).
      residual: ``[]`` ``||x R - y||_F`` (``y`` zero-padded to ``k`` columns).
      nuclear_norm: ``[]`` ``||x^T y||_*``, the maximised ``tr(R^T x^T y)``.
    """

    rotation: Array
    aligned: Array
    residual: Array
    nuclear_norm: Array


def pad_columns(x: Array, k: int) -> Array:
    """Zero-pads ``x`` ``[..., n, p]`` to ``[..., n, k]`` (``k >= p``)."""
    p = x.shape[-1]
    if p == k:
        return x
    if p > k:
        raise ValueError(f"cannot pad {x.shape} to {k} columns")
    pad = [(0, 0)] * (x.ndim - 1) + [(0, k - p)]
    return jnp.pad(x, pad)


def orthogonal_procrustes(x: ArrayLike, y: ArrayLike) -> Procrustes:
    """Optimal orthogonal alignment of ``x`` onto ``y``: ``R = argmin_{R^T R = I} ||x R - y||_F``.

    Same convention as :func:`scipy.linalg.orthogonal_procrustes`. Different widths are handled by zero-padding
    both to ``k = max(p, q)`` columns. No centring or scaling is done here (the shape spaces do that).

    Args:
      x: ``[n, p]``.
      y: ``[n, q]``.

    Returns:
      :class:`Procrustes` with ``rotation [k, k]``, ``aligned [n, k]``, ``residual []``, ``nuclear_norm []``,
      in the promoted floating dtype of ``x`` and ``y``. NaN in ``x`` or ``y`` gives a NaN residual.

    Raises:
      ValueError: ``x`` or ``y`` is not 2-D, or they have different numbers of rows.

    Example:
      >>> import jax.numpy as jnp, geopath as gp
      >>> x = jnp.array([[1., 0.], [0., 1.], [1., 1.]])
      >>> r = gp.orthogonal_procrustes(x, x[:, ::-1])
      >>> float(r.residual) < 1e-5
      True
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"orthogonal_procrustes needs 2-D x and y; got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows (inputs); got shapes {x.shape} and {y.shape}"
        )
    dtype = jnp.result_type(x, y, float)
    k = max(x.shape[1], y.shape[1])
    xp, yp = pad_columns(x.astype(dtype), k), pad_columns(y.astype(dtype), k)
    m = _mT(xp) @ yp
    rot = polar_factor(m)
    aligned = xp @ rot
    return Procrustes(
        rotation=rot, aligned=aligned, residual=safe_norm(aligned - yp), nuclear_norm=nuclear_norm(m)
    )


def bures_similarity(kx: ArrayLike, ky: ArrayLike) -> Array:
    """Bures fidelity ``tr sqrt(kx^{1/2} ky kx^{1/2})`` of PSD matrices ``[..., n, n]``.

    For Gram matrices ``kx = X X^T``, ``ky = Y Y^T`` this equals ``||X^T Y||_*``, so the angular shape
    distance with ``alpha = 1`` is ``arccos(bures(Kx, Ky) / sqrt(tr Kx tr Ky))``.

    Args:
      kx, ky: ``[..., n, n]`` symmetric positive semi-definite matrices of one shape.

    Returns:
      ``[...]`` in the promoted dtype, ``>= 0``.

    Raises:
      ValueError: ``kx`` and ``ky`` are not square matrices of one shape.

    NaN: NaN in ``ky`` gives NaN; NaN in ``kx`` gave 0 on the CPU (LAPACK's ``eigh`` of a matrix with NaN
    entries is not specified): validate ``kx`` where it matters.

    Example:
      >>> import jax.numpy as jnp, geopath as gp
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
      >>> y = x @ jnp.array([[0.0, 1.0], [1.0, 0.0]])  # x with its columns swapped
      >>> round(float(gp.bures_similarity(x @ x.T, y @ y.T)), 3), round(float(gp.nuclear_norm(x.T @ y)), 3)
      (7.0, 7.0)
    """
    kx, ky = jnp.asarray(kx), jnp.asarray(ky)
    if kx.shape != ky.shape or kx.shape[-1] != kx.shape[-2]:
        raise ValueError(
            f"bures_similarity needs square matrices of one shape; got {kx.shape} and {ky.shape}"
        )
    rx = psd_sqrt(kx)
    return trace_function(_sqrt_eigs, sym(rx @ ky @ rx))


def _sqrt_eigs(lam):
    return safe_sqrt(lam)
