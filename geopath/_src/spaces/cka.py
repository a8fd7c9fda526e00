"""Angular CKA: the angle between centred, unit-norm kernel matrices."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import sphere
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import check_points
from geopath._src.spaces.base import sq_dists
from geopath._src.spaces.base import static_space

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


@static_space
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
        c = centered(x, "x")
        xc = c.values  # rescaled by a power of two; the kernels below are scale-free except rbf_sigma
        n = xc.shape[0]
        if self.kernel == "linear":
            k = xc @ xc.T
        else:
            d2 = sq_dists(xc)
            if self.rbf_sigma is None:
                iu = np.triu_indices(n, 1)
                s2 = self.rbf_scale**2 * jnp.maximum(jnp.median(d2[iu]), jnp.finfo(xc.dtype).tiny)
            else:
                s2 = jnp.asarray(self.rbf_sigma**2, xc.dtype)
                d2 = c.unscale(d2, 2)  # back to the units of rbf_sigma
            k = jnp.exp(-d2 / (2.0 * s2))
        kc = _u_center(k) if self.unbiased else _double_center(k)
        return kc / linalg.safe_norm(kc)

    def distance(self, a: Array, b: Array) -> Array:
        """``arccos(<a, b>_F)`` in radians, computed in the accurate ``atan2`` form; scalar."""
        check_points(a, b)
        val.check_same_shape(a, b)
        return sphere.angle(a, b)

    def log(self, a: Array, b: Array) -> Array:
        """Great-circle tangent vector ``[n, n]`` at ``a`` towards ``b``, of length ``d(a, b)``."""
        val.check_same_shape(a, b)
        return sphere.log(a, b)

    def exp(self, a: Array, v: Array) -> Array:
        """Great-circle step from ``a`` with velocity ``v [n, n]`` (``<a, v> = 0``)."""
        return sphere.exp(a, v)

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """Parallel transport of ``v`` along the great circle ``a -> b`` (not antipodal)."""
        return sphere.transport(a, b, v)

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """``v`` itself: the sphere carries the Frobenius inner product."""
        del a
        return v
