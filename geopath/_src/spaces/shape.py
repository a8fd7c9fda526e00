"""Generalised shape metrics (Williams et al. 2021): angular and Euclidean, any partial whitening."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import sphere
from geopath._src.spaces.base import PairTerms
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import check_points
from geopath._src.spaces.base import split_angle
from geopath._src.spaces.base import static_space
from geopath._src.spaces.base import unit_pair
from geopath._src.spaces.base import vdot

_ROUTES = ("auto", "features", "gram")
_WHITENINGS = ("scale_invariant", "netrep", "repsim")
# Eigenvalue floors of the reference implementations, in their own units (netrep: X^T X; repsim: X^T X / n).
_FLOORS = {"netrep": 1e-7, "repsim": 1e-9}


def _whiten_cov_eigs(lam, alpha, eps, tol):
    """Partial-whitening factor for eigenvalues ``lam`` of the covariance ``X^T X / n``."""
    keep = lam > tol
    lam_safe = jnp.where(keep, lam, 1.0)
    return jnp.where(keep, alpha + (1.0 - alpha) / jnp.sqrt(lam_safe + eps), alpha)


def _whiten_sv(s, alpha, eps, tol, n):
    """Partially whitened singular value for singular values ``s`` of ``X`` (Gram route)."""
    return s * _whiten_cov_eigs(s * s / n, alpha, eps, tol)


def _floored_cov_eigs(lam, alpha, unit, floor):
    """netrep/repsim factor ``alpha + (1 - alpha) / sqrt(max(unit * lam, floor))`` for trace-1 eigenvalues."""
    return alpha + (1.0 - alpha) * jax.lax.rsqrt(jnp.maximum(lam * unit, floor))


def _floored_sv(s, alpha, unit, floor, n):
    """:func:`_floored_cov_eigs` applied to the singular values ``s`` of ``X`` (Gram and PCA routes)."""
    return s * _floored_cov_eigs(s * s / n, alpha, unit, floor)


def row_space_projector(b: Array) -> Array:
    """Orthogonal projector ``[k, k]`` onto the row space of ``b [n, k]`` (numerical rank).

    Singular values above ``max(n, k) * eps * s_max`` count. The derivative is the fixed-rank one,
    ``b^+ db (I - P) + (b^+ db (I - P))^T``, so gradients are exact along perturbations that keep the rank
    (e.g. of the non-padded columns) and never involve eigenvector derivatives.
    """
    n, k = b.shape
    b0 = jax.lax.stop_gradient(b)
    u, s, vh = jnp.linalg.svd(b0, full_matrices=False)
    keep = s > jnp.max(s) * (max(n, k) * float(jnp.finfo(b.dtype).eps))
    p0 = (vh.T * keep.astype(b.dtype)) @ vh
    pinv = (vh.T * jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)) @ u.T
    e = pinv @ (b - b0) @ (jnp.eye(k, dtype=b.dtype) - p0)
    return p0 + e + e.T


@dataclasses.dataclass(frozen=True)
class _ShapeSpace(Space):
    """Shared implementation of :class:`AngularShape` and :class:`EuclideanShape` (fields documented there)."""

    alpha: float = 1.0
    method: str = "auto"
    n_components: int | None = None
    whiten_eps: float = 0.0
    whitening: str = "scale_invariant"

    variable_width: ClassVar[bool] = True
    _angular: ClassVar[bool] = True

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
        if self.whitening not in _WHITENINGS:
            raise ValueError(f"whitening must be one of {_WHITENINGS}; got {self.whitening!r}")

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
        numerical-rank tolerance ``max(n, p) * eps`` -- the covariance has trace 1 here, ``eps`` is the machine
        epsilon -- are left unwhitened, i.e. multiplied by ``alpha``; no other floor or ridge is applied by
        default); then unit Frobenius norm (angular) or the original scale ``||X_c||_F`` (Euclidean).

        ``whitening="netrep"`` / ``"repsim"`` replace the whitening step by the reference libraries' own:
        ``X_c (alpha I + (1 - alpha) max(C, f)^{-1/2})`` with ``C = X_c^T X_c``, ``f = 1e-7`` (netrep) or
        ``C = X_c^T X_c / n``, ``f = 1e-9`` (repsim), the floor applied to the eigenvalues; the Euclidean point
        with "netrep" is rescaled as netrep's ``preserve_variance=True`` does (see ``docs/conventions.md``).

        ``k`` depends on the route: ``p`` (features, used when ``p <= n``), ``n`` (Gram: the point is the
        symmetric factor ``f(sqrt(X X^T))``, computed from a QR of ``X^T`` so float32 keeps the small singular
        values, used when ``p > n``; it equals the feature-route point times a
        semi-orthogonal matrix, so all distances agree) or ``n_components`` (PCA).

        Dtypes, validation and what raises: as :meth:`Space.point`.
        """
        c = centered(x, "x")
        xc = c.values
        n, p = xc.shape
        scale = linalg.safe_norm(xc)
        xn = xc * (jnp.sqrt(jnp.asarray(n, xc.dtype)) / scale)
        # The reference conventions ("netrep", "repsim") whiten in the data's own units: ||X_c||_F unscaled.
        z = self._whitened(xn, scale if self.whitening == "scale_invariant" else c.unscale(scale))
        if self._angular:
            return z / linalg.safe_norm(z)
        z = z * (scale / jnp.sqrt(jnp.asarray(n, xc.dtype)))
        if self.whitening == "netrep" and self.alpha < 1:
            z = z * self._netrep_variance_factor(xn, c.unscale(scale))
        return c.unscale(z)

    def _whitening_fns(self, dt, n: int, p: int, scale: Array):
        """``(covariance-eigenvalue factor, singular-value map, params)`` of the selected whitening."""
        alpha = jnp.asarray(self.alpha, dt)
        if self.whitening == "scale_invariant":
            eps_m = float(jnp.finfo(dt).eps)
            weps = jnp.asarray(self.whiten_eps, dt)
            # ||xn||_F^2 = n, so the covariance X^T X / n has trace 1: eigenvalues below this are noise.
            tol = jnp.asarray(max(n, p) * eps_m, dt)
            return _whiten_cov_eigs, _whiten_sv, (alpha, weps, tol)
        # Trace-1 eigenvalues times ``unit`` are the eigenvalues of netrep's X^T X or repsim's X^T X / n.
        unit = scale * scale if self.whitening == "netrep" else scale * scale / n
        floor = jnp.asarray(_FLOORS[self.whitening], dt)
        return _floored_cov_eigs, _floored_sv, (alpha, unit, floor)

    def _netrep_variance_factor(self, xn: Array, scale: Array) -> Array:
        """netrep's ``preserve_variance`` rescaling ``sqrt(sum lam / sum (alpha sqrt(lam) + 1 - alpha)^2)``.

        ``lam`` are the ``p`` eigenvalues of ``X_c^T X_c`` floored at 1e-7, as netrep computes them.
        """
        n, p = xn.shape
        dt = xn.dtype
        s = jnp.linalg.svd(xn, compute_uv=False)
        lam = jnp.maximum(s * s / n * scale * scale, _FLOORS["netrep"])
        n_zero = p - s.shape[0]  # eigenvalues of X^T X beyond the rank bound min(n, p): floored zeros
        lam0 = jnp.asarray(_FLOORS["netrep"], dt)
        a = jnp.asarray(self.alpha, dt)
        new_var = jnp.sum(jnp.square(a * jnp.sqrt(lam) + 1.0 - a)) + n_zero * jnp.square(
            a * jnp.sqrt(lam0) + 1.0 - a
        )
        return jnp.sqrt((jnp.sum(lam) + n_zero * lam0) / new_var)

    def _whitened(self, xn: Array, scale: Array) -> Array:
        n, p = xn.shape
        dt = xn.dtype
        f_cov, f_sv, params = self._whitening_fns(dt, n, p, scale)
        route = self.route(n, p)
        if route == "pca":
            k = int(self.n_components)
            kk = min(k, n, p)
            u, s, _ = jnp.linalg.svd(xn, full_matrices=False)
            s = s[:kk]
            z = u[:, :kk] * (f_sv(s, *params, n) if self.alpha < 1 else s)
            return linalg.pad_columns(z, k)
        if route == "gram":
            z = linalg.gram_sqrt(xn)
            if self.alpha < 1:
                z = linalg.matrix_function(f_sv, z, *params, jnp.asarray(n, dt))
            return z
        if self.alpha < 1:
            cov = xn.T @ xn / n
            return xn @ linalg.matrix_function(f_cov, cov, *params)
        return xn

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
        Euclidean: ``||a - b R||_F = sqrt(||a||^2 + ||b||^2 - 2 ||a^T b||_*)``, evaluated as the norm of the
        difference (after a power-of-two rescaling, so any finite points work). Widths may differ (implicit
        zero-padding). Identical points give exactly 0. Measured accuracy against a float64 reference: float32
        inputs give about 1e-6 rad absolute error (including identical inputs); float64 about 1e-14.
        :func:`geopath.pairwise_distances` uses the same computation (:meth:`prepared_distance`).
        """
        check_points(a, b)
        a, b = self.common(a, b)
        return self._aligned_distance(a, b)

    def _aligned_distance(self, a: Array, b: Array) -> Array:
        """:meth:`distance` for same-width points ``[n, k]`` (no checks, no padding); scalar."""
        return self._distance_and_rotation(a, b)[0]

    def _distance_and_rotation(self, a: Array, b: Array) -> tuple[Array, Array]:
        """``(d(a, b), R)`` for same-width points, ``R`` the optimal rotation of ``b`` onto ``a`` (one SVD).

        The rotation is computed from the rescaled points the distance uses (unit norm, or a power-of-two
        rescaling), which have the same polar factor as ``b^T a`` up to rounding.
        """
        sa, sb, e = self._rescaled(a, b)
        r = self._rotation(sa, sb)
        return self._chord_distance(a, b, sa, sb, e, r), r

    def _rescaled(self, a: Array, b: Array) -> tuple[Array, Array, Array]:
        """``(a', b', e)``: unit-norm points (angular), or both scaled by ``2^-e`` so that ``a^T b`` cannot
        overflow (Euclidean, homogeneous of degree 1; ``e = 0`` for angular). Neither changes the rotation."""
        if self._angular:
            return a / linalg.safe_norm(a), b / linalg.safe_norm(b), jnp.zeros((), jnp.int32)
        e = linalg.max_exponent(a, b)
        return jnp.ldexp(a, -e), jnp.ldexp(b, -e), e

    def _distance_at_rotation(self, a: Array, b: Array, r: Array) -> Array:
        """:meth:`distance` of same-width points given the optimal rotation ``r`` of ``b`` onto ``a`` (the polar
        factor of ``b^T a``, from whatever decomposition already produced it). Its first derivatives are those
        of the distance even with ``r`` held constant (``r`` maximises ``<b r, a>``: the envelope theorem)."""
        return self._chord_distance(a, b, *self._rescaled(a, b), r)

    def _chord_distance(self, a: Array, b: Array, sa: Array, sb: Array, e: Array, r: Array) -> Array:
        """The distance from the rescaled points ``sa, sb`` (:meth:`_rescaled`) and the rotation ``r``."""
        chord = linalg.safe_norm(sa - sb @ r)
        d = 2.0 * jnp.arcsin(jnp.minimum(0.5 * chord, 1.0)) if self._angular else jnp.ldexp(chord, e)
        return jnp.where(jnp.all(a == b), jnp.zeros_like(d), d)

    def pair_terms(self, a: Array, b: Array) -> PairTerms:
        """``(d(a, b), log(a, b), log(b, a))`` from ONE optimal rotation ``R`` (one SVD of ``b^T a``).

        ``log(a, b)`` aligns ``b R`` to ``a``; ``log(b, a)`` aligns ``a R^T`` to ``b`` (the polar factor of
        ``a^T b`` is ``R^T``). Where the alignment is not unique (rank-deficient ``b^T a``, e.g. padded
        points) the logs may differ from separate :meth:`log` calls by a rotation that fixes the base point's
        row space, which leaves distances and the metric angles of :meth:`angle_at` unchanged.
        """
        check_points(a, b)
        a, b = self.common(a, b)
        d, r = self._distance_and_rotation(a, b)
        b_al, a_al = b @ r, a @ r.T
        if self._angular:
            return PairTerms(d, sphere.log(a, b_al), sphere.log(b, a_al))
        return PairTerms(d, b_al - a, a_al - b)

    def prepared_distance(self, a: Array, b: Array) -> Array:
        """:meth:`distance` without input checks (widths may differ); used for all-pairs, equally accurate."""
        return self._aligned_distance(*self.common(a, b))

    def log(self, a: Array, b: Array) -> Array:
        """Horizontal tangent vector at ``a`` pointing to ``b`` with length ``d(a, b)``; ``[n, max(ka, kb)]``."""
        a, b = self.common(a, b)
        b = b @ self._rotation(a, b)
        return sphere.log(a, b) if self._angular else b - a

    def exp(self, a: Array, v: Array) -> Array:
        a, v = self.common(a, v)
        return sphere.exp(a, v) if self._angular else a + v

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        a, b = self.common(a, b)
        b = b @ self._rotation(a, b)
        t = jnp.asarray(t, a.dtype)
        if self._angular:
            return sphere.exp(a, t * sphere.log(a, b))
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
        moved = sphere.transport(a, b_aligned, v) if self._angular else v
        return moved @ r.T

    def tangent_coords(self, a: Array, v: Array) -> Array:
        del a
        return v

    def inner(self, a: Array, u: Array, v: Array) -> Array:
        _, u, v = self.common(a, u, v)
        return vdot(u, v)

    def angle_at(self, b: Array, u: Array, v: Array) -> Array:
        """Metric (Alexandrov) angle at ``b`` between the geodesics with horizontal velocities ``u, v``.

        The rotations that fix ``b`` (any rotation of the orthogonal complement of its row space, non-trivial
        where ``b`` has rank ``r`` below its padded width ``k``) map geodesics from ``b`` to geodesics from
        ``b``, and the angle of the quotient is the smallest over them:
        ``cos = (<u P, v P> + ||(u (I - P))^T v (I - P)||_*) / (|u| |v|)`` with ``P`` the projector onto the
        row space of ``b`` (:func:`row_space_projector`); at ``r = k`` this is the angle between ``u`` and
        ``v``. Evaluated in an ``atan2`` form that is accurate near pi. ``pi / 2`` (zero gradient) if ``u``
        or ``v`` is shorter than ``sqrt(eps) * max(|u|, |v|, |b|)``.
        """
        b, u, v = self.common(b, u, v)
        proj = row_space_projector(b)
        uu, vv, ok = unit_pair(u, v, floor=linalg.safe_norm(b))
        pu, pv = uu @ proj, vv @ proj
        ru, rv = uu - pu, vv - pv
        ang = split_angle(pu, pv, ru, rv, linalg.nuclear_norm(ru.T @ rv))
        return jnp.where(ok, ang, 0.5 * jnp.pi)

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

    def pad_to(self, a: Array, width: int) -> Array:
        """``a [n, k]`` zero-padded to ``[n, width]`` (exact: the same point of the quotient space)."""
        return linalg.pad_columns(a, width)


@static_space
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
      whiten_eps: ridge added to covariance eigenvalues (in units where the trace is 1) before ``^(-1/2)``;
        0 (the default) reproduces netrep's numbers at ``alpha = 0``. Directions below the numerical rank are
        never whitened, so rank-deficient data needs no ridge.
      whitening: "scale_invariant" (default): the covariance is normalised to trace 1 before whitening, so the
        metric ignores the overall scale of ``X`` for every ``alpha``. "netrep" / "repsim": whiten with the
        unnormalised ``X^T X`` (netrep) or ``X^T X / n`` (repsim) and those libraries' eigenvalue floors, so
        for ``0 < alpha < 1`` the distance depends on the scale of ``X``, as theirs does. For ``alpha`` in
        ``{0, 1}`` all three agree (up to the floors). Exactly: the default angular distance of ``(X, Y)``
        equals netrep's on ``(X_c / ||X_c||_F, Y_c / ||Y_c||_F)``.

    Example:
      >>> import jax, geopath as gp
      >>> space = gp.AngularShape(alpha=1.0)
      >>> x = jax.random.normal(jax.random.key(0), (50, 8))
      >>> a, b = space.point(x), space.point(2.0 * x @ jax.random.orthogonal(jax.random.key(1), 8) + 3.0)
      >>> float(space.distance(a, b)) < 1e-2
      True
    """

    _angular: ClassVar[bool] = True


@static_space
class EuclideanShape(_ShapeSpace):
    """Euclidean generalised shape metric: ``min_R ||phi(X) - phi(Y) R||_F`` (Williams et al. 2021).

    ``phi`` centres and partially whitens (see :class:`AngularShape`) but keeps the scale: with ``alpha = 1``
    the point is the centred data itself, so the distance is the orthogonal Procrustes residual of the centred
    representations (not scale invariant). Geodesics are straight lines between ``a`` and the aligned ``b``.
    Distances are in the units of the data.

    Args:
      alpha, method, n_components, whiten_eps, whitening: as :class:`AngularShape`; ``whitening="netrep"``
        also rescales the point as netrep's ``preserve_variance=True`` does.
    """

    _angular: ClassVar[bool] = False
