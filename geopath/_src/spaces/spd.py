"""The affine-invariant Riemannian metric on SPD matrices (Gram or covariance)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import kernels
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import raw_to_centered
from geopath._src.spaces.base import static_space

_SPD_KINDS = ("gram", "covariance")
_SPD_SCALES = ("trace", "none")


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


@static_space
class AffineInvariant(Space):
    """Affine-invariant Riemannian metric on SPD matrices: ``d(A, B) = ||log(A^{-1/2} B A^{-1/2})||_F``.

    Args:
      eps: ridge added to the normalised matrix (its eigenvalues average 1), making it positive definite.
      kind: "gram": ``n x n`` centred Gram matrix ``X_c X_c^T`` (compares layers of any width);
        "covariance": ``p x p`` covariance ``X_c^T X_c`` (only layers of equal width are comparable).
      scale: "trace" (default): the matrix is scaled to mean eigenvalue 1 before the ridge, so the metric
        ignores isotropic scaling and ``eps`` is relative. "none": repsim's convention, ``K + eps I`` (gram) or
        ``X_c^T X_c / (n - 1) + eps I`` (covariance): ``eps`` is absolute and the metric depends on the scale.
      kernel, kernel_weights, rbf_scale, rbf_sigma: the kernel of the "gram" matrix, as in
        :class:`AngularCKA` ("linear", "rbf", "laplace" or a tuple of them; default linear).
    """

    eps: float = 1e-3
    kind: str = "gram"
    scale: str = "trace"
    kernel: str | tuple[str, ...] = "linear"
    kernel_weights: tuple[float, ...] | None = None
    rbf_scale: float = 1.0
    rbf_sigma: float | None = None

    def __post_init__(self):
        kernels.normalize_fields(self)
        kernels.check_kernel(self.kernel, self.kernel_weights, self.rbf_scale, self.rbf_sigma)
        if self.scale not in _SPD_SCALES:
            raise ValueError(f"scale must be one of {_SPD_SCALES}; got {self.scale!r}")
        if self.kind == "covariance" and self.kernel != "linear":
            raise ValueError(f"kind='covariance' needs the linear kernel; got kernel={self.kernel!r}")
        if not (self.eps > 0 and np.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive number (the SPD ridge); got {self.eps!r}")
        if self.kind not in _SPD_KINDS:
            raise ValueError(f"kind must be one of {_SPD_KINDS}; got {self.kind!r}")

    def point(self, x: ArrayLike) -> Array:
        """Regularised, trace-normalised centred Gram (``[n, n]``) or covariance (``[p, p]``) matrix."""
        _, xc = raw_to_centered(x, "x")
        if self.kind == "gram":
            g = kernels.gram(
                xc, self.kernel, weights=self.kernel_weights, scale=self.rbf_scale, sigma=self.rbf_sigma
            )
        else:
            g = xc.T @ xc
        m = g.shape[0]
        if self.scale == "trace":
            g = g * (m / jnp.trace(g))
        elif self.kind == "covariance":
            g = g / (xc.shape[0] - 1)
        return linalg.sym(g) + self.eps * jnp.eye(m, dtype=g.dtype)

    def _check(self, a: Array, b: Array) -> None:
        if jnp.ndim(a) != 2 or jnp.shape(a)[0] != jnp.shape(a)[1]:
            raise ValueError(
                f"AffineInvariant points are square SPD matrices; got shape {tuple(jnp.shape(a))}"
            )
        val.check_same_shape(a, b)

    def _roots(self, a: Array) -> tuple[Array, Array]:
        """``(a^{1/2}, a^{-1/2})``, both ``[m, m]``."""
        return (linalg.matrix_function(_eig_sqrt, a), linalg.matrix_function(_eig_isqrt, a))

    def _distance_from_isqrt(self, ia: Array, b: Array) -> Array:
        """``||log(a^{-1/2} b a^{-1/2})||_F`` given ``ia = a^{-1/2}``; scalar."""
        return linalg.safe_sqrt(linalg.trace_function(_eig_log_sq, linalg.sym(ia @ b @ ia)))

    def prepare(self, a: Array) -> tuple[Array, Array]:
        """``(a, a^{-1/2})``: the inverse square root is computed once per point for all pairs."""
        return a, linalg.matrix_function(_eig_isqrt, a)

    def prepared_distance(self, pa: tuple[Array, Array], pb: tuple[Array, Array]) -> Array:
        """:meth:`distance` from two :meth:`prepare` results; scalar."""
        return self._distance_from_isqrt(pa[1], pb[0])

    def distance(self, a: Array, b: Array) -> Array:
        """Riemannian distance ``||log(a^{-1/2} b a^{-1/2})||_F`` between ``[m, m]`` points; scalar.

        Dimensionless: the root-sum-square of the logs of the generalised eigenvalues of ``(b, a)``.
        """
        self._check(a, b)
        return self._distance_from_isqrt(linalg.matrix_function(_eig_isqrt, a), b)

    def log(self, a: Array, b: Array) -> Array:
        """``a^{1/2} log(a^{-1/2} b a^{-1/2}) a^{1/2}``, a symmetric ``[m, m]`` tangent vector at ``a``."""
        self._check(a, b)
        sa, ia = self._roots(a)
        return linalg.sym(sa @ linalg.matrix_function(_eig_log, linalg.sym(ia @ b @ ia)) @ sa)

    def exp(self, a: Array, v: Array) -> Array:
        """``a^{1/2} exp(a^{-1/2} v a^{-1/2}) a^{1/2}`` for a symmetric tangent vector ``v [m, m]``."""
        self._check(a, v)
        sa, ia = self._roots(a)
        return linalg.sym(sa @ linalg.matrix_function(_eig_exp, linalg.sym(ia @ v @ ia)) @ sa)

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        """``a^{1/2} (a^{-1/2} b a^{-1/2})^t a^{1/2}``; ``[m, m]``."""
        self._check(a, b)
        sa, ia = self._roots(a)
        t = jnp.asarray(t, a.dtype)
        return linalg.sym(sa @ linalg.matrix_function(_eig_pow, linalg.sym(ia @ b @ ia), t) @ sa)

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """``E v E^T`` with ``E = a^{1/2} (a^{-1/2} b a^{-1/2})^{1/2} a^{-1/2}``; tangent at ``b``."""
        self._check(a, b)
        sa, ia = self._roots(a)
        e = sa @ linalg.matrix_function(_eig_sqrt, linalg.sym(ia @ b @ ia)) @ ia
        return linalg.sym(e @ v @ e.T)

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """``a^{-1/2} v a^{-1/2}``: coordinates in which the metric is the Frobenius inner product."""
        ia = linalg.matrix_function(_eig_isqrt, a)
        return ia @ v @ ia
