"""Unit-sphere geometry, shared by the angular shape metrics (after alignment) and angular CKA.

All functions take unit-norm arrays of one shape (any number of axes, treated as one flat vector).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from geopath._src import linalg
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
