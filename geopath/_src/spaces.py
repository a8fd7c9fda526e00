"""Metric spaces of representations.

A *space* turns a layer's activations ``x [n, ...]`` (``n`` inputs, any feature axes) into a *point*
(``space.point(x)``, a plain ``jax.Array``) and knows the Riemannian / metric operations between points:
``distance``, ``geodesic``, ``log``, ``exp``, ``inner``, ``norm``, ``transport``.

Every space is a frozen dataclass registered as a pytree *without leaves* (all configuration is static
auxiliary data), so a space can be passed straight into ``jax.jit``/``jax.vmap``-ed functions, is hashable,
and two equal configurations share compiled code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val


def _static_space(cls):
    """Makes ``cls`` a frozen dataclass and a leaf-less pytree (configuration in aux data)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    jax.tree_util.register_pytree_node(cls, lambda s: ((), s), lambda aux, _: aux)
    return cls


def _center(x: Array) -> Array:
    return x - jnp.mean(x, axis=0, keepdims=True)


def _raw_to_centered(x: ArrayLike, name: str) -> tuple[Array, Array]:
    x = val.as_matrix(x, name=name)
    xc = _center(x)
    val.check_values(x, xc, name=name)
    return x, xc


def _vdot(u: Array, v: Array) -> Array:
    return jnp.sum(u * v)


def _check_points(a, b, *, ndim=2, names=("a", "b")):
    for name, p in zip(names, (a, b)):
        if jnp.ndim(p) != ndim:
            raise ValueError(
                f"{name} must be a point of this space with {ndim} axes; got shape {tuple(jnp.shape(p))}. "
                "Create points with space.point(x)."
            )
    val.check_same_inputs(a, b, names=names)


# ----------------------------------------------------------------------------------------------------
# Unit-sphere geometry (angular shape metrics after alignment, angular CKA).


def _sphere_angle(a: Array, b: Array) -> Array:
    """Angle between unit vectors, accurate near 0 and pi (``atan2`` form)."""
    c = _vdot(a, b)
    return jnp.arctan2(linalg.safe_norm(b - c * a), c)


def _sphere_log(a: Array, b: Array) -> Array:
    c = _vdot(a, b)
    w = b - c * a
    theta = jnp.arctan2(linalg.safe_norm(w), c)
    return w / jnp.sinc(theta / jnp.pi)  # w * theta / sin(theta), finite at theta = 0


def _sphere_exp(a: Array, v: Array) -> Array:
    nv = linalg.safe_norm(v)
    return jnp.cos(nv) * a + jnp.sinc(nv / jnp.pi) * v  # sin(|v|) v / |v|


def _sphere_transport(a: Array, b: Array, v: Array) -> Array:
    # Parallel transport of v in T_a along the minimising great circle to b (unit a, b; not antipodal).
    return v - (_vdot(b, v) / (1.0 + _vdot(a, b))) * (a + b)


class Space:
    """Base class of the spaces. Points are ``jax.Array``; tangent vectors have the shape of their base point.

    Subclasses implement ``point``, ``distance``, ``log``, ``exp``, ``transport`` and ``tangent_coords``;
    ``geodesic``, ``inner`` and ``norm`` follow.
    """

    #: Whether points of one space can have different shapes (shape spaces: different widths).
    variable_width = False

    def point(self, x: ArrayLike) -> Array:
        raise NotImplementedError

    def distance(self, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def log(self, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def exp(self, a: Array, v: Array) -> Array:
        raise NotImplementedError

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        raise NotImplementedError

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """Coordinates of ``v`` in ``T_a`` in which the Riemannian inner product is the Frobenius one."""
        raise NotImplementedError

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        """Point at arc-length fraction ``t`` of the geodesic from ``a`` (t=0) to ``b`` (t=1).

        ``t`` outside ``[0, 1]`` extrapolates along the same geodesic. Returns a point shaped like ``a``
        (shape spaces: padded to the common width of ``a`` and ``b``).
        """
        a, b = self.common(a, b)
        return self.exp(a, jnp.asarray(t, a.dtype) * self.log(a, b))

    def inner(self, a: Array, u: Array, v: Array) -> Array:
        """Riemannian inner product of tangent vectors ``u, v`` at ``a``; scalar."""
        return _vdot(self.tangent_coords(a, u), self.tangent_coords(a, v))

    def norm(self, a: Array, v: Array) -> Array:
        """Riemannian norm of the tangent vector ``v`` at ``a`` (gradient-safe at 0); scalar."""
        return linalg.safe_norm(self.tangent_coords(a, v))

    def align(self, a: Array, b: Array) -> Array:
        """Representative of ``b`` optimally aligned to ``a``; ``b`` itself in spaces without a quotient."""
        del a
        return b

    def common(self, *points: Array) -> tuple[Array, ...]:
        """The points made directly comparable (shape spaces: zero-padded to a common width)."""
        return points

    # Hooks for pairwise computations: per-point work done once, then a cheap per-pair distance.
    def prepare(self, a: Array) -> Any:
        return a

    def prepared_distance(self, pa: Any, pb: Any) -> Array:
        return self.distance(pa, pb)


# ----------------------------------------------------------------------------------------------------
# Generalised shape metrics (Williams et al. 2021).

_ROUTES = ("auto", "features", "gram")


def _whiten_cov_eigs(lam, alpha, eps, tol):
    """Partial-whitening factor for eigenvalues ``lam`` of the covariance ``X^T X / n``."""
    keep = lam > tol
    lam_safe = jnp.where(keep, lam, 1.0)
    return jnp.where(keep, alpha + (1.0 - alpha) / jnp.sqrt(lam_safe + eps), alpha)


def _whiten_sv(s, alpha, eps, tol, n):
    """Partially whitened singular value for singular values ``s`` of ``X`` (Gram route)."""
    return s * _whiten_cov_eigs(s * s / n, alpha, eps, tol)


class _ShapeSpace(Space):
    """Shared implementation of :class:`AngularShape` and :class:`EuclideanShape`."""

    variable_width = True
    _angular: bool = True

    def __post_init__(self):
        val.check_unit_interval(self.alpha, name="alpha")
        if self.method not in _ROUTES:
            raise ValueError(f"method must be one of {_ROUTES}; got {self.method!r}")
        if self.n_components is not None and (
            int(self.n_components) != self.n_components or self.n_components < 1
        ):
            raise ValueError(f"n_components must be a positive integer or None; got {self.n_components!r}")
        if not (self.whiten_eps >= 0 and np.isfinite(self.whiten_eps)):
            raise ValueError(f"whiten_eps must be a finite number >= 0; got {self.whiten_eps!r}")

    def route(self, n: int, p: int) -> str:
        """Which computation ``point`` uses for ``n`` inputs and ``p`` features: "features", "gram" or "pca"."""
        if self.n_components is not None:
            return "pca"
        if self.method == "auto":
            return "gram" if p > n else "features"
        return self.method

    def point(self, x: ArrayLike) -> Array:
        """Preprocessed representation ``[n, k]``.

        Steps: flatten trailing axes to ``[n, p]``; centre columns; scale to ``||X||_F^2 = n``; partially
        whiten, ``X (alpha I + (1 - alpha)(X^T X / n + whiten_eps I)^{-1/2})`` (covariance directions below the
        numerical-rank tolerance ``max(n, p) * eps * l_max`` are left unwhitened, i.e. multiplied by ``alpha``);
        then unit Frobenius norm (angular) or the original scale ``||X_c||_F`` (Euclidean).

        ``k`` depends on the route: ``p`` (features, used when ``p <= n``), ``n`` (Gram: the point is the
        symmetric factor ``f(sqrt(X X^T))``, computed from a QR of ``X^T`` so float32 keeps the small singular
        values, used when ``p > n``; it equals the feature-route point times a
        semi-orthogonal matrix, so all distances agree) or ``n_components`` (PCA).
        """
        x, xc = _raw_to_centered(x, "x")
        n, p = xc.shape
        scale = linalg.safe_norm(xc)
        xn = xc * (jnp.sqrt(jnp.asarray(n, xc.dtype)) / scale)
        z = self._whitened(xn)
        if self._angular:
            return z / linalg.safe_norm(z)
        return z * (scale / jnp.sqrt(jnp.asarray(n, xc.dtype)))

    def _whitened(self, xn: Array) -> Array:
        n, p = xn.shape
        dt = xn.dtype
        eps_m = float(jnp.finfo(dt).eps)
        alpha = jnp.asarray(self.alpha, dt)
        weps = jnp.asarray(self.whiten_eps, dt)
        # ||xn||_F^2 = n, so the covariance X^T X / n has trace 1: eigenvalues below this are numerical noise.
        tol = jnp.asarray(max(n, p) * eps_m, dt)
        route = self.route(n, p)
        if route == "pca":
            k = int(self.n_components)
            kk = min(k, n, p)
            u, s, _ = jnp.linalg.svd(xn, full_matrices=False)
            s = s[:kk]
            z = u[:, :kk] * (_whiten_sv(s, alpha, weps, tol, n) if self.alpha < 1 else s)
            return linalg.pad_columns(z, k)
        if route == "gram":
            z = linalg.gram_sqrt(xn)
            if self.alpha < 1:
                z = linalg.matrix_function(_whiten_sv, z, alpha, weps, tol, jnp.asarray(n, dt))
            return z
        if self.alpha < 1:
            cov = xn.T @ xn / n
            return xn @ linalg.matrix_function(_whiten_cov_eigs, cov, alpha, weps, tol)
        return xn

    def common(self, *points: Array) -> tuple[Array, ...]:
        for p in points:
            if jnp.ndim(p) != 2:
                raise ValueError(
                    f"shape-space points must be [n, k] matrices; got shape {tuple(jnp.shape(p))}"
                )
        ns = {jnp.shape(p)[0] for p in points}
        if len(ns) > 1:
            raise ValueError(
                "points must describe the same inputs (same size of axis 0); got shapes "
                + ", ".join(str(tuple(jnp.shape(p))) for p in points)
            )
        k = max(jnp.shape(p)[1] for p in points)
        return tuple(linalg.pad_columns(jnp.asarray(p), k) for p in points)

    def _rotation(self, a: Array, b: Array) -> Array:
        """``R`` maximising ``<b R, a>`` for common-width ``a, b``."""
        return linalg.polar_factor(b.T @ a)

    def align(self, a: Array, b: Array) -> Array:
        """``b R`` with the orthogonal ``R`` that best aligns ``b`` to ``a`` (both padded to a common width)."""
        a, b = self.common(a, b)
        return b @ self._rotation(a, b)

    def distance(self, a: Array, b: Array) -> Array:
        """Shape distance between points ``a [n, ka]`` and ``b [n, kb]``; scalar.

        Angular: ``arccos(||a^T b||_* / (||a|| ||b||))`` in radians, in ``[0, pi/2]``, evaluated as
        ``2 arcsin(|a/|a| - b R/|b|| / 2)`` with the optimal rotation ``R`` so that it stays accurate near 0.
        Euclidean: ``||a - b R||_F = sqrt(||a||^2 + ||b||^2 - 2 ||a^T b||_*)``. Widths may differ (implicit
        zero-padding). Measured accuracy against a float64 reference: float32 inputs give about 1e-6 rad
        absolute error (including identical inputs); float64 about 1e-14.

        :func:`geopath.pairwise_distances` uses the cheaper singular-values-only form
        (:meth:`prepared_distance`), which agrees to about 1e-6 rad in float32 for distances above 0.05 rad
        but, near 0, is limited by the ``arccos`` of a number near 1 to about ``sqrt(2 * 1e-7 * k)`` rad.
        """
        _check_points(a, b)
        a, b = self.common(a, b)
        na, nb = linalg.safe_norm(a), linalg.safe_norm(b)
        b_aligned = b @ self._rotation(a, b)
        if self._angular:
            chord = linalg.safe_norm(a / na - b_aligned / nb)
            return 2.0 * jnp.arcsin(jnp.minimum(0.5 * chord, 1.0))
        return linalg.safe_norm(a - b_aligned)

    def prepared_distance(self, a: Array, b: Array) -> Array:
        """Distance from the singular values of ``a^T b`` alone (no padding, no rotation); used for all-pairs."""
        nuc = linalg.nuclear_norm(a.T @ b)
        na, nb = linalg.safe_norm(a), linalg.safe_norm(b)
        if self._angular:
            return linalg.safe_arccos(nuc / (na * nb))
        return linalg.safe_sqrt(na * na + nb * nb - 2.0 * nuc)

    def log(self, a: Array, b: Array) -> Array:
        """Horizontal tangent vector at ``a`` pointing to ``b`` with length ``d(a, b)``; ``[n, max(ka, kb)]``."""
        a, b = self.common(a, b)
        b = b @ self._rotation(a, b)
        return _sphere_log(a, b) if self._angular else b - a

    def exp(self, a: Array, v: Array) -> Array:
        a, v = self.common(a, v)
        return _sphere_exp(a, v) if self._angular else a + v

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        a, b = self.common(a, b)
        b = b @ self._rotation(a, b)
        t = jnp.asarray(t, a.dtype)
        if self._angular:
            return _sphere_exp(a, t * _sphere_log(a, b))
        return a + t * (b - a)

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """Transports ``v`` in ``T_a`` along the geodesic to ``b``; returned in ``b``'s own frame.

        The vector is moved by the Levi-Civita transport of the pre-shape sphere (angular) or of the flat
        total space (Euclidean) along the horizontal lift ``a -> b R``, then expressed at ``b`` itself by
        ``R^T``. Inner products are preserved exactly. (Transport in the quotient differs from this by a
        vertical correction, O'Neill's A-tensor; apply :meth:`horizontal` to the result if you need a
        horizontal vector.)
        """
        a, b, v = self.common(a, b, v)
        r = self._rotation(a, b)
        b_aligned = b @ r
        moved = _sphere_transport(a, b_aligned, v) if self._angular else v
        return moved @ r.T

    def tangent_coords(self, a: Array, v: Array) -> Array:
        del a
        return v

    def inner(self, a: Array, u: Array, v: Array) -> Array:
        _, u, v = self.common(a, u, v)
        return _vdot(u, v)

    def vertical(self, a: Array, v: Array) -> Array:
        """Vertical part ``a Omega`` of ``v`` at ``a`` (tangent to the rotation orbit ``{a R}``).

        ``Omega`` is the skew-symmetric solution of the Sylvester equation
        ``(a^T a) Omega + Omega (a^T a) = a^T v - v^T a`` (solved by :func:`geopath.solve_sylvester`,
        differentiable).
        """
        a, v = self.common(a, v)
        s = a.T @ a
        omega = linalg.solve_sylvester(s, s, a.T @ v - v.T @ a)
        return a @ omega

    def horizontal(self, a: Array, v: Array) -> Array:
        """Horizontal part ``v - vertical(a, v)``; ``a^T (horizontal)`` is symmetric."""
        a, v = self.common(a, v)
        return v - self.vertical(a, v)

    def pad_to(self, a: Array, k: int) -> Array:
        return linalg.pad_columns(a, k)


@_static_space
class AngularShape(_ShapeSpace):
    """Angular generalised shape metric (Williams et al. 2021) on the pre-shape sphere modulo rotations.

    ``d(X, Y) = arccos(||phi(X)^T phi(Y)||_*)``, where ``phi`` centres, partially whitens with ``alpha``
    (1: plain Procrustes on centred data; 0: fully whitened, CCA-like, invariant to invertible linear maps)
    and scales to unit Frobenius norm. Quotients out translations, isotropic scaling and orthogonal maps of the
    features. Geodesics are great circles between ``a`` and the optimally rotated ``b``.

    Args:
      alpha: partial-whitening weight in ``[0, 1]``.
      method: "auto" (Gram route when ``p > n``), "features" or "gram"; all give the same distances.
      n_components: if set, project every representation to its top ``n_components`` principal components
        (a common width) instead of zero-padding different widths.
      whiten_eps: ridge added to covariance eigenvalues (in units where the trace is 1) before ``^(-1/2)``.

    Example:
      >>> import jax, geopath as gp
      >>> space = gp.AngularShape(alpha=1.0)
      >>> x = jax.random.normal(jax.random.key(0), (50, 8))
      >>> a, b = space.point(x), space.point(2.0 * x @ jax.random.orthogonal(jax.random.key(1), 8) + 3.0)
      >>> float(space.distance(a, b)) < 1e-2
      True
    """

    alpha: float = 1.0
    method: str = "auto"
    n_components: int | None = None
    whiten_eps: float = 1e-6
    _angular = True


@_static_space
class EuclideanShape(_ShapeSpace):
    """Euclidean generalised shape metric: ``min_R ||phi(X) - phi(Y) R||_F`` (Williams et al. 2021).

    ``phi`` centres and partially whitens (see :class:`AngularShape`) but keeps the scale: with ``alpha = 1``
    the point is the centred data itself, so the distance is the orthogonal Procrustes residual of the centred
    representations (not scale invariant). Geodesics are straight lines between ``a`` and the aligned ``b``.
    """

    alpha: float = 1.0
    method: str = "auto"
    n_components: int | None = None
    whiten_eps: float = 1e-6
    _angular = False


# ----------------------------------------------------------------------------------------------------
# Angular CKA.

_KERNELS = ("linear", "rbf")


def _double_center(k: Array) -> Array:
    return k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True) + jnp.mean(k)


def _u_center(k: Array) -> Array:
    """U-centring (Szekely & Rizzo 2014); its inner products give the unbiased HSIC estimator."""
    n = k.shape[0]
    k = k * (1.0 - jnp.eye(n, dtype=k.dtype))
    rows = jnp.sum(k, axis=1, keepdims=True)
    cols = jnp.sum(k, axis=0, keepdims=True)
    tot = jnp.sum(k)
    u = k - rows / (n - 2) - cols / (n - 2) + tot / ((n - 1) * (n - 2))
    return u * (1.0 - jnp.eye(n, dtype=k.dtype))


def _sq_dists(xc: Array) -> Array:
    sq = jnp.sum(xc * xc, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T), 0.0)
    return d2 * (1.0 - jnp.eye(xc.shape[0], dtype=xc.dtype))


@_static_space
class AngularCKA(Space):
    """Angular CKA: ``arccos(CKA(X, Y))`` on centred, unit-norm ``n x n`` kernel matrices (a unit sphere).

    Args:
      unbiased: use U-centred kernels with zeroed diagonal (the unbiased HSIC estimator of Song et al. 2012);
        the cosine can then be negative, so distances lie in ``[0, pi]``. Needs ``n >= 4``.
      kernel: "linear" (``X X^T``) or "rbf" (``exp(-|x_i - x_j|^2 / (2 s^2))``).
      rbf_scale: the RBF length ``s`` is ``rbf_scale`` times the median pairwise distance (``s^2 = rbf_scale^2
        * median of the squared distances``), unless ``rbf_sigma`` is given.
      rbf_sigma: a fixed RBF length ``s`` (in the units of the features) instead of the median heuristic.

    Points are ``[n, n]``; geodesics, ``log``, ``exp`` and ``transport`` are those of the unit sphere in the
    space of symmetric matrices.
    """

    unbiased: bool = False
    kernel: str = "linear"
    rbf_scale: float = 1.0
    rbf_sigma: float | None = None

    def __post_init__(self):
        if self.kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}; got {self.kernel!r}")
        if not (self.rbf_scale > 0 and np.isfinite(self.rbf_scale)):
            raise ValueError(f"rbf_scale must be a positive number; got {self.rbf_scale!r}")
        if self.rbf_sigma is not None and not (self.rbf_sigma > 0 and np.isfinite(self.rbf_sigma)):
            raise ValueError(f"rbf_sigma must be a positive number or None; got {self.rbf_sigma!r}")

    def point(self, x: ArrayLike) -> Array:
        """Centred, unit-Frobenius-norm kernel matrix ``[n, n]`` of ``x [n, ...]``."""
        x = val.as_matrix(x, name="x", min_inputs=4 if self.unbiased else 3)
        _, xc = _raw_to_centered(x, "x")
        n = xc.shape[0]
        if self.kernel == "linear":
            k = xc @ xc.T
        else:
            d2 = _sq_dists(xc)
            if self.rbf_sigma is None:
                iu = np.triu_indices(n, 1)
                s2 = self.rbf_scale**2 * jnp.maximum(jnp.median(d2[iu]), jnp.finfo(xc.dtype).tiny)
            else:
                s2 = jnp.asarray(self.rbf_sigma**2, xc.dtype)
            k = jnp.exp(-d2 / (2.0 * s2))
        kc = _u_center(k) if self.unbiased else _double_center(k)
        return kc / linalg.safe_norm(kc)

    def distance(self, a: Array, b: Array) -> Array:
        """``arccos(<a, b>_F)`` in radians, computed in the accurate ``atan2`` form; scalar."""
        _check_points(a, b)
        val.check_same_shape(a, b)
        return _sphere_angle(a, b)

    def log(self, a, b):
        val.check_same_shape(a, b)
        return _sphere_log(a, b)

    def exp(self, a, v):
        return _sphere_exp(a, v)

    def transport(self, a, b, v):
        return _sphere_transport(a, b, v)

    def tangent_coords(self, a, v):
        del a
        return v


# ----------------------------------------------------------------------------------------------------
# Affine-invariant metric on SPD matrices.

_SPD_KINDS = ("gram", "covariance")


def _eig_floor(lam):
    return jnp.maximum(lam, jnp.finfo(lam.dtype).tiny)


def _eig_sqrt(lam):
    return jnp.sqrt(_eig_floor(lam))


def _eig_isqrt(lam):
    return jax.lax.rsqrt(_eig_floor(lam))


def _eig_log(lam):
    return jnp.log(_eig_floor(lam))


def _eig_log_sq(lam):
    return jnp.square(jnp.log(_eig_floor(lam)))


def _eig_exp(lam):
    return jnp.exp(lam)


def _eig_pow(lam, t):
    return jnp.exp(t * jnp.log(_eig_floor(lam)))


def _sym(x):
    return 0.5 * (x + x.T)


@_static_space
class AffineInvariant(Space):
    """Affine-invariant Riemannian metric on SPD matrices: ``d(A, B) = ||log(A^{-1/2} B A^{-1/2})||_F``.

    Args:
      eps: ridge added to the normalised matrix (its eigenvalues average 1), making it positive definite.
      kind: "gram": ``n x n`` centred Gram matrix ``X_c X_c^T`` (compares layers of any width);
        "covariance": ``p x p`` covariance ``X_c^T X_c`` (only layers of equal width are comparable).

    The matrix is scaled to mean eigenvalue 1 before the ridge, so the metric ignores isotropic scaling.
    """

    eps: float = 1e-3
    kind: str = "gram"

    def __post_init__(self):
        if not (self.eps > 0 and np.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive number (the SPD ridge); got {self.eps!r}")
        if self.kind not in _SPD_KINDS:
            raise ValueError(f"kind must be one of {_SPD_KINDS}; got {self.kind!r}")

    def point(self, x: ArrayLike) -> Array:
        """Regularised, trace-normalised centred Gram (``[n, n]``) or covariance (``[p, p]``) matrix."""
        _, xc = _raw_to_centered(x, "x")
        g = xc @ xc.T if self.kind == "gram" else xc.T @ xc
        m = g.shape[0]
        g = g * (m / jnp.trace(g))
        return _sym(g) + self.eps * jnp.eye(m, dtype=g.dtype)

    def _check(self, a, b):
        if jnp.ndim(a) != 2 or jnp.shape(a)[0] != jnp.shape(a)[1]:
            raise ValueError(
                f"AffineInvariant points are square SPD matrices; got shape {tuple(jnp.shape(a))}"
            )
        val.check_same_shape(a, b)

    def _roots(self, a):
        return (linalg.matrix_function(_eig_sqrt, a), linalg.matrix_function(_eig_isqrt, a))

    def prepare(self, a):
        return a, linalg.matrix_function(_eig_isqrt, a)

    def prepared_distance(self, pa, pb):
        _, ia = pa
        b, _ = pb
        return linalg.safe_sqrt(linalg.trace_function(_eig_log_sq, _sym(ia @ b @ ia)))

    def distance(self, a, b):
        """Riemannian distance (dimensionless; the generalised eigenvalues' log-spread); scalar."""
        self._check(a, b)
        return self.prepared_distance(self.prepare(a), (b, None))

    def log(self, a, b):
        self._check(a, b)
        sa, ia = self._roots(a)
        return _sym(sa @ linalg.matrix_function(_eig_log, _sym(ia @ b @ ia)) @ sa)

    def exp(self, a, v):
        self._check(a, v)
        sa, ia = self._roots(a)
        return _sym(sa @ linalg.matrix_function(_eig_exp, _sym(ia @ v @ ia)) @ sa)

    def geodesic(self, a, b, t):
        self._check(a, b)
        sa, ia = self._roots(a)
        t = jnp.asarray(t, a.dtype)
        return _sym(sa @ linalg.matrix_function(_eig_pow, _sym(ia @ b @ ia), t) @ sa)

    def transport(self, a, b, v):
        self._check(a, b)
        sa, ia = self._roots(a)
        e = sa @ linalg.matrix_function(_eig_sqrt, _sym(ia @ b @ ia)) @ ia
        return _sym(e @ v @ e.T)

    def tangent_coords(self, a, v):
        ia = linalg.matrix_function(_eig_isqrt, a)
        return ia @ v @ ia


# ----------------------------------------------------------------------------------------------------
# Stress (distance matrices).


@_static_space
class Stress(Space):
    """Points are Euclidean distance matrices of the inputs; ``d(D, E) = sqrt(mean_{i<j} (D_ij - E_ij)^2)``.

    A flat space: geodesics are straight lines, ``log = E - D``, ``exp = D + V``, transport is the identity.
    Invariant to translations and orthogonal maps of the features (not to scaling unless ``normalize``).

    Args:
      normalize: divide each distance matrix by its root-mean-square off-diagonal entry (scale invariance).
    """

    normalize: bool = False

    def point(self, x: ArrayLike) -> Array:
        """Pairwise Euclidean distance matrix ``[n, n]`` of the rows of ``x [n, ...]`` (zero diagonal)."""
        _, xc = _raw_to_centered(x, "x")
        d = linalg.safe_sqrt(_sq_dists(xc))
        if self.normalize:
            n = d.shape[0]
            d = d / jnp.sqrt(jnp.sum(d * d) / (n * (n - 1)))
        return d

    def _check(self, a, b):
        _check_points(a, b)
        val.check_same_shape(a, b)

    def distance(self, a, b):
        self._check(a, b)
        return linalg.safe_norm(self.tangent_coords(a, b - a))

    def log(self, a, b):
        self._check(a, b)
        return b - a

    def exp(self, a, v):
        return a + v

    def geodesic(self, a, b, t):
        self._check(a, b)
        return a + jnp.asarray(t, a.dtype) * (b - a)

    def transport(self, a, b, v):
        del a, b
        return v

    def tangent_coords(self, a, v):
        n = a.shape[0]
        return v / np.sqrt(n * (n - 1))
