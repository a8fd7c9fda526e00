"""Stress: the flat space of Euclidean distance matrices of the inputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces import kernels
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import check_points
from geopath._src.spaces.base import sq_dists
from geopath._src.spaces.base import static_space

_NORMALIZERS = ("rms", "median")


@static_space
class Stress(Space):
    """Points are Euclidean distance matrices of the inputs; ``d(D, E) = sqrt(mean_{i<j} (D_ij - E_ij)^2)``.

    A flat space: geodesics are straight lines, ``log = E - D``, ``exp = D + V``, transport is the identity.
    Invariant to translations and orthogonal maps of the features (not to scaling unless ``normalize``).

    Args:
      normalize: divide each distance matrix by a typical off-diagonal entry (scale invariance).
      normalize_by: that entry: "rms" (default), the root-mean-square of the off-diagonal distances, or
        "median", their median (repsim's ``rescale=True``; for an even number of pairs ``n (n - 1) / 2``
        this is the mean of the two middle values, where repsim's ``torch.median`` takes the lower one).
      kernel, kernel_weights, rbf_scale, rbf_sigma: distances are those of the kernel's feature space,
        ``d_ij = sqrt(k_ii + k_jj - 2 k_ij)``, as in repsim (kernels as in :class:`AngularCKA`; the default
        linear kernel gives Euclidean distances).
    """

    normalize: bool = False
    normalize_by: str = "rms"
    kernel: str | tuple[str, ...] = "linear"
    kernel_weights: tuple[float, ...] | None = None
    rbf_scale: float = 1.0
    rbf_sigma: float | None = None

    def __post_init__(self):
        kernels.normalize_fields(self)
        kernels.check_kernel(self.kernel, self.kernel_weights, self.rbf_scale, self.rbf_sigma)
        if self.normalize_by not in _NORMALIZERS:
            raise ValueError(f"normalize_by must be one of {_NORMALIZERS}; got {self.normalize_by!r}")

    def point(self, x: ArrayLike) -> Array:
        """Pairwise distance matrix ``[n, n]`` of the rows of ``x [n, ...]`` (zero diagonal).

        With the linear kernel, the Euclidean distances of the centred rows; otherwise the distances that the
        kernel induces, ``sqrt(k_ii + k_jj - 2 k_ij)``.

        Dtypes, validation and what raises: as :meth:`Space.point`.
        """
        c = centered(x, "x")
        n = c.values.shape[0]
        if self.kernel == "linear":
            d2 = sq_dists(c.values)  # rescaled units: exact, and no overflow for any finite input
        else:
            k = kernels.gram(
                c, self.kernel, weights=self.kernel_weights, scale=self.rbf_scale, sigma=self.rbf_sigma
            )
            kd = jnp.diagonal(k)
            d2 = jnp.maximum(kd[:, None] + kd[None, :] - 2.0 * k, 0.0) * (1.0 - jnp.eye(n, dtype=k.dtype))
        d = linalg.safe_sqrt(d2)
        if self.normalize:
            if self.normalize_by == "rms":
                return d / jnp.sqrt(jnp.sum(d * d) / (n * (n - 1)))
            return d / jnp.median(d[np.triu_indices(n, 1)])
        return c.unscale(d) if self.kernel == "linear" else d

    def _check(self, a: Array, b: Array) -> None:
        check_points(a, b)
        val.check_same_shape(a, b)

    def distance(self, a: Array, b: Array) -> Array:
        """``sqrt(mean_{i != j} (a_ij - b_ij)^2)`` between distance matrices ``[n, n]``; scalar."""
        self._check(a, b)
        return linalg.safe_norm(self.tangent_coords(a, b - a))

    def log(self, a: Array, b: Array) -> Array:
        """``b - a`` ``[n, n]`` (flat space)."""
        self._check(a, b)
        return b - a

    def exp(self, a: Array, v: Array) -> Array:
        """``a + v`` ``[n, n]`` (flat space)."""
        return a + v

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        """``a + t (b - a)`` ``[n, n]``."""
        self._check(a, b)
        return a + jnp.asarray(t, a.dtype) * (b - a)

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """``v`` unchanged (flat space)."""
        del a, b
        return v

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """``v / sqrt(n (n - 1))``, so that the Frobenius norm is the root-mean-square over ``i != j``."""
        n = a.shape[0]
        return v / np.sqrt(n * (n - 1))
