"""Stress: the flat space of Euclidean distance matrices of the inputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import centered
from geopath._src.spaces.base import check_points
from geopath._src.spaces.base import sq_dists
from geopath._src.spaces.base import static_space


@static_space
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
        c = centered(x, "x")
        d = linalg.safe_sqrt(sq_dists(c.values))
        if self.normalize:
            n = d.shape[0]
            return d / jnp.sqrt(jnp.sum(d * d) / (n * (n - 1)))
        return c.unscale(d)

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
