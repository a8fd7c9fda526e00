"""path_penalty: differentiable path-geometry penalties for training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import rand_rep

SPACES = {
    "angular_shape": gp.AngularShape(alpha=1.0),
    "cka": gp.AngularCKA(),
    "shape_a05": gp.AngularShape(alpha=0.5),
}


def _layers(w, x):
    """A tiny 'network': three layers of widths 4, 5, 3 (tanh keeps it smooth for finite differences)."""
    h1 = jnp.tanh(x @ w[:, :5])
    h2 = jnp.tanh(h1 @ w[:5, :5] + 0.3)
    return [x, h1, h2, h2[:, :3] * jnp.arange(1.0, 4.0)]


@pytest.mark.parametrize("kind", ["length", "excess", "turning"])
@pytest.mark.parametrize("name", list(SPACES))
def test_grad_matches_finite_differences(kind, name, rng):
    space = SPACES[name]
    x = jnp.asarray(rand_rep(rng, 12, 5))
    w = jnp.asarray(rng.standard_normal((5, 5)))
    f = jax.jit(lambda w: gp.path_penalty(space, _layers(w, x), kind=kind))
    g = np.asarray(jax.grad(f)(w))
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 1e-6
    for _ in range(2):
        v = rng.standard_normal(w.shape)
        h = 1e-5
        fd = (float(f(w + h * v)) - float(f(w - h * v))) / (2 * h)
        np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-6, atol=1e-9)


def test_values_match_path_quantities(rng):
    space = gp.AngularShape()
    xs = [rand_rep(rng, 10, p) for p in (3, 4, 6, 2)]
    pts = [space.point(x) for x in xs]
    length = float(gp.path_length(space, pts))
    np.testing.assert_allclose(float(gp.path_penalty(space, xs)), length, rtol=1e-12)
    direct = float(space.distance(*space.common(pts[0], pts[-1])))
    np.testing.assert_allclose(float(gp.path_penalty(space, xs, kind="excess")), length - direct, rtol=1e-12)
    turning = sum(np.pi - float(gp.angle(space, *pts[i - 1 : i + 2])) for i in (1, 2))
    np.testing.assert_allclose(float(gp.path_penalty(space, xs, kind="turning")), turning, rtol=1e-10)


def test_values_off_the_geodesic_match_a_numpy_reference():
    """A path far from any geodesic (unrelated layers of one width, generic points): length, excess and
    turning against the NumPy reference (tests/geopath/reference.py: Procrustes, great circles, the angle of
    the logs), with no geopath code on the reference side. Measured error <= 1.1e-15; tolerance 1e-11."""
    rng = np.random.default_rng(27)
    xs = [rand_rep(rng, 10, 4) for _ in range(4)]
    space = gp.AngularShape(alpha=1.0)
    f = [R.shape_features(x, 1.0) for x in xs]
    steps = [R.angular_shape_distance_points(f[i], f[i + 1]) for i in range(3)]
    length = sum(steps)
    excess = length - R.angular_shape_distance_points(f[0], f[-1])
    turning = sum(np.pi - R.angular_shape_angle_points(f[i - 1], f[i], f[i + 1]) for i in (1, 2))
    assert excess > 0.5 and turning > 1.0  # really off the geodesic
    got = {k: float(gp.path_penalty(space, xs, kind=k)) for k in ("length", "excess", "turning")}
    np.testing.assert_allclose(got["length"], length, rtol=0, atol=1e-11)
    np.testing.assert_allclose(got["excess"], excess, rtol=0, atol=1e-11)
    np.testing.assert_allclose(got["turning"], turning, rtol=0, atol=1e-11)


def test_zero_for_a_geodesic_path(rng):
    """Layers in order on one geodesic: excess and turning vanish, length is the end-to-end distance."""
    space = gp.AngularCKA()
    x, y = rand_rep(rng, 10, 4), rand_rep(rng, 10, 4)
    a, b = space.point(x), space.point(y)
    # CKA points of the layers themselves are needed: use 1-d 'features' whose Gram is the geodesic point.
    pts = [space.geodesic(a, b, t) for t in (0.0, 0.3, 0.55, 1.0)]
    feats = [np.real(_psd_factor(np.asarray(p))) for p in pts]
    np.testing.assert_allclose(float(gp.path_penalty(space, feats, kind="excess")), 0.0, atol=1e-9)
    np.testing.assert_allclose(float(gp.path_penalty(space, feats, kind="turning")), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(gp.path_penalty(space, feats)), float(space.distance(a, b)), rtol=1e-9)


def _psd_factor(k):
    """F with F F^T = k for a PSD (centred) k."""
    lam, v = np.linalg.eigh(0.5 * (k + k.T))
    return v * np.sqrt(np.maximum(lam, 0.0))


def test_errors():
    x = np.ones((6, 2)) + np.arange(12.0).reshape(6, 2) ** 2
    with pytest.raises(ValueError, match="kind"):
        gp.path_penalty(gp.AngularCKA(), [x, x], kind="curvy")
    with pytest.raises(ValueError, match="at least 3 layers"):
        gp.path_penalty(gp.AngularCKA(), [x, x], kind="turning")
