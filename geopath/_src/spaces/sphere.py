"""Unit-sphere geometry, shared by the angular shape metrics (after alignment) and angular CKA.

All functions take unit-norm arrays of one shape (any number of axes, treated as one flat vector).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.spaces.base import Space
from geopath._src.spaces.base import check_points
from geopath._src.spaces.base import vdot


def angle(a: Array, b: Array) -> Array:
    """Angle between unit vectors, accurate near 0 and pi (``atan2`` form)."""
    c = vdot(a, b)
    return jnp.arctan2(linalg.safe_norm(b - c * a), c)


def log(a: Array, b: Array) -> Array:
    """Tangent vector at ``a`` along the great circle to ``b``, of length ``angle(a, b)``."""
    c = vdot(a, b)
    w = b - c * a
    theta = jnp.arctan2(linalg.safe_norm(w), c)
    return w / jnp.sinc(theta / jnp.pi)  # w * theta / sin(theta), finite at theta = 0


def exp(a: Array, v: Array) -> Array:
    """Point reached from ``a`` along the great circle with initial velocity ``v`` (tangent at ``a``)."""
    nv = linalg.safe_norm(v)
    return jnp.cos(nv) * a + jnp.sinc(nv / jnp.pi) * v  # sin(|v|) v / |v|


def transport(a: Array, b: Array, v: Array) -> Array:
    """Parallel transport of ``v`` in ``T_a`` along the minimising great circle to ``b`` (not antipodal)."""
    return v - (vdot(b, v) / (1.0 + vdot(a, b))) * (a + b)


class UnitSphereSpace(Space):
    """A space whose points are unit-Frobenius-norm ``[n, m]`` arrays with the great-circle metric.

    Subclasses implement only :meth:`point`; distance, log, exp and transport are those of the unit
    sphere (angular CKA: centred kernel matrices; the pre-shape sphere: centred, scaled representations).
    """

    def _check(self, a: Array, b: Array) -> None:
        check_points(a, b)
        val.check_same_shape(a, b)

    def distance(self, a: Array, b: Array) -> Array:
        """``arccos(<a, b>_F)`` in ``[0, pi]`` radians, computed in the accurate ``atan2`` form; scalar."""
        self._check(a, b)
        return angle(a, b)

    def log(self, a: Array, b: Array) -> Array:
        """Great-circle tangent vector at ``a`` (shaped like ``a``) towards ``b``, of length ``d(a, b)``."""
        self._check(a, b)
        return log(a, b)

    def exp(self, a: Array, v: Array) -> Array:
        """Great-circle step from ``a`` with velocity ``v`` (``<a, v> = 0``)."""
        return exp(a, v)

    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """Parallel transport of ``v`` along the great circle ``a -> b`` (not antipodal)."""
        return transport(a, b, v)

    def tangent_coords(self, a: Array, v: Array) -> Array:
        """``v`` itself: the sphere carries the Frobenius inner product."""
        del a
        return v
