"""The metric (Alexandrov) angle of ``gp.angle`` at smooth and singular points of the shape spaces.

The reference is computed from distances alone: the angle at ``b`` of the flat triangle with the side lengths
of ``b, gamma_ba(h), gamma_bc(h)``, extrapolated to ``h -> 0`` (its error is O(h^2), so Richardson with
``h`` and ``h / 2`` leaves O(h^4)). At a vertex of rank below the common width the angle between the log
vectors is larger than this limit; the tests check that they differ there, so they can fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from .conftest import SPECS
from .conftest import to_np

N = 24
SPACES = [SPECS[k] for k in ("angular_a1", "angular_a05", "euclid_a1", "euclid_a05")]
# (width of a, width of the vertex b, width of c). The log-vector angle is wrong only where both logs leave
# the row space of b, i.e. where b is narrower than both neighbours; at the other singular vertices (b padded
# to a wider neighbour, or a neighbour no wider than b) it is already the metric angle.
CORRECTED = [(20, 6, 18), (12, 4, 16)]
UNCHANGED = [(6, 18, 20), (18, 6, 6), (5, 16, 3), (8, 8, 8), (4, 10, 6)]


def _points(space, rng, widths, n=N):
    x = rng.standard_normal((n, 6))
    reps = [x @ rng.standard_normal((6, w)) / 3 + rng.standard_normal((n, w)) for w in widths]
    return [space.point(r) for r in reps]


def _comparison_angle(space, a, b, c, h):
    a, b, c = space.common(a, b, c)
    g1, g2 = space.geodesic(b, a, h), space.geodesic(b, c, h)
    d1, d2, d12 = (float(space.distance(p, q)) for p, q in ((b, g1), (b, g2), (g1, g2)))
    return float(np.arccos(np.clip((d1 * d1 + d2 * d2 - d12 * d12) / (2 * d1 * d2), -1.0, 1.0)))


def _metric_angle_limit(space, a, b, c, h=2e-3):
    """Comparison angle at ``h -> 0`` from distances only (Richardson on the O(h^2) error)."""
    c1, c2 = _comparison_angle(space, a, b, c, h), _comparison_angle(space, a, b, c, h / 2)
    return (4 * c2 - c1) / 3


def _log_vector_angle(space, a, b, c):
    """The angle between the horizontal logs at ``b`` (what ``gp.angle`` returned before the fix)."""
    a, b, c = space.common(a, b, c)
    u, v = to_np(space.log(b, a)).ravel(), to_np(space.log(b, c)).ravel()
    return float(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1.0, 1.0)))


@pytest.mark.parametrize("widths", CORRECTED + UNCHANGED, ids=str)
@pytest.mark.parametrize("spec", SPACES, ids=str)
def test_angle_is_limit_of_comparison_angles(spec, widths, rng):
    space = spec.space
    a, b, c = _points(space, rng, widths)
    th = float(gp.angle(space, a, b, c))
    ref = _metric_angle_limit(space, a, b, c)
    np.testing.assert_allclose(th, ref, atol=2e-8)
    old = _log_vector_angle(space, a, b, c)
    if widths in UNCHANGED:
        np.testing.assert_allclose(th, old, atol=1e-10)
    else:  # the stabiliser of b turns one log relative to the other: the log angle is too large
        assert old - th > 1e-2, (old, th)


def test_angle_at_singular_vertex_of_gram_route(rng):
    """Gram-route points ``[n, n]`` have rank ``n - 1`` (centring): singular with a one-dimensional stabiliser."""
    space = gp.AngularShape(alpha=1.0)
    a, b, c = _points(space, rng, (30, 40, 3), n=12)
    assert b.shape == (12, 12)
    np.testing.assert_allclose(
        float(gp.angle(space, a, b, c)), _metric_angle_limit(space, a, b, c), atol=2e-8
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPACES, ids=str)
@pytest.mark.parametrize("widths", [(6, 20, 18), (8, 8, 8)], ids=str)
def test_angle_with_coinciding_points_is_right_angle_with_zero_gradient(spec, widths, dtype, rng):
    space = spec.space
    a, _, c = (p.astype(dtype) for p in _points(space, rng, widths))
    a, c = space.common(a, c)
    angle = jax.jit(lambda a, c: gp.angle(space, a, a, c))
    assert float(angle(a, c)) == pytest.approx(np.pi / 2, abs=1e-6)
    assert float(gp.angle(space, c, a, a)) == pytest.approx(np.pi / 2, abs=1e-6)
    for g in jax.grad(angle, argnums=(0, 1))(a, c):
        assert np.all(np.isfinite(to_np(g)))
        assert float(jnp.max(jnp.abs(g))) == 0.0


def _fd_check(f, x, direction, curve=None, eps=1e-6, rtol=1e-6):
    """``jax.grad(f)(x) . direction`` against a central difference along ``curve(t)`` (default
    ``x + t direction``), a curve through ``x`` with velocity ``direction``."""
    curve = curve or (lambda t: x + t * direction)
    g = jax.grad(f)(x)
    fd = (f(curve(eps)) - f(curve(-eps))) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(g, direction)), float(fd), rtol=rtol, atol=1e-8)


@pytest.mark.parametrize("spec", SPACES, ids=str)
@pytest.mark.parametrize("widths", [(8, 8, 8), (20, 6, 18), (6, 18, 20)], ids=str)
def test_angle_gradient_matches_finite_differences(spec, widths, rng):
    """Each point moves within its own columns, which keeps its rank: where the rank changes the geometry
    has a kink (new singular values enter nuclear norms as ``|t|``) and the angle jumps."""
    space = spec.space
    pts = space.common(*_points(space, rng, widths))
    for i, w in enumerate(widths):
        direction = jnp.zeros_like(pts[i]).at[:, :w].set(jnp.asarray(rng.standard_normal((N, w))))

        def f(p, i=i):
            return gp.angle(space, *(p if j == i else q for j, q in enumerate(pts)))

        _fd_check(f, pts[i], direction)


def test_angle_gradient_with_a_turning_row_space(rng):
    """A singular vertex whose row space turns along the curve (not just padded columns)."""
    space = gp.EuclideanShape(alpha=1.0)
    a, b, c = space.common(*_points(space, rng, (20, 6, 18)))
    b = b @ jnp.asarray(np.linalg.qr(rng.standard_normal((20, 20)))[0])  # rank 6, generic row space
    np.testing.assert_allclose(
        float(gp.angle(space, a, b, c)), _metric_angle_limit(space, a, b, c), atol=2e-8
    )
    x, y = jnp.asarray(rng.standard_normal((N, N))), jnp.asarray(rng.standard_normal((20, 20)))

    def curve(t):  # stays of rank 6 exactly
        return (jnp.eye(N) + t * x) @ b @ (jnp.eye(20) + t * y)

    _fd_check(lambda b: gp.angle(space, a, b, c), b, x @ b + b @ y, curve=curve)


def test_angle_eager_jit_vmap_agree_at_singular_vertices(rng):
    space = gp.AngularShape(alpha=1.0)
    trip = [space.common(*_points(space, rng, (20, 6, 18))) for _ in range(3)]
    As, Bs, Cs = (jnp.stack(t) for t in zip(*trip))
    eager = np.array([float(gp.angle(space, *t)) for t in trip])
    jitted = jax.jit(gp.angle, static_argnums=0)
    np.testing.assert_allclose([float(jitted(space, *t)) for t in trip], eager, rtol=1e-12)
    vm = jax.vmap(lambda a, b, c: gp.angle(space, a, b, c))(As, Bs, Cs)
    np.testing.assert_allclose(to_np(vm), eager, rtol=1e-12)


def test_angle_is_pi_on_a_geodesic_through_a_singular_point(rng):
    space = gp.AngularShape(alpha=1.0)
    a, b = space.common(*_points(space, rng, (6, 18)))
    m = space.geodesic(a, b, 0.4)
    np.testing.assert_allclose(float(gp.angle(space, a, m, b)), np.pi, atol=1e-7)
    # the start of a geodesic is the singular (narrow) point; the angle there between the two ends is 0
    assert float(gp.angle(space, m, a, b)) < 1e-6
