"""PreShape: the pre-shape sphere (angular shape metric without the rotation quotient)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import orthogonal
from .conftest import rand_rep
from .conftest import related_rep


def _ref_point(x, alpha):
    return R.shape_features(x, alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_distance_vs_reference(alpha, rng):
    x = rand_rep(rng, 16, 5)
    y = related_rep(rng, x, 5)
    space = gp.PreShape(alpha=alpha)
    a, b = space.point(x), space.point(y)
    np.testing.assert_allclose(np.asarray(a), _ref_point(x, alpha), atol=1e-12)
    ref = R.sphere_distance(_ref_point(x, alpha), _ref_point(y, alpha))
    np.testing.assert_allclose(float(space.distance(a, b)), ref, rtol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_at_least_shape_distance_and_equal_after_alignment(alpha, rng):
    x = rand_rep(rng, 16, 5)
    y = related_rep(rng, x, 5)
    pre, shape = gp.PreShape(alpha=alpha), gp.AngularShape(alpha=alpha, method="features")
    a, b = pre.point(x), pre.point(y)
    d_pre, d_shape = float(pre.distance(a, b)), float(shape.distance(a, b))
    assert d_pre > d_shape + 1e-3
    np.testing.assert_allclose(float(pre.distance(a, shape.align(a, b))), d_shape, rtol=1e-9)


def test_invariances(rng):
    """Translations and scaling are quotiented out; rotations of the features are not."""
    x = rand_rep(rng, 16, 5)
    y = related_rep(rng, x, 5)
    space = gp.PreShape()
    d = float(gp.distance(space, x, y))
    np.testing.assert_allclose(float(gp.distance(space, 3.0 * x + 2.0, y)), d, rtol=1e-10)
    assert abs(float(gp.distance(space, x @ orthogonal(rng, 5), y)) - d) > 1e-2


def test_metric_axioms(rng):
    space = gp.PreShape(alpha=0.5)
    pts = [space.point(rand_rep(rng, 12, 4)) for _ in range(4)]
    d = np.array([[float(space.distance(p, q)) for q in pts] for p in pts])
    assert np.all(np.abs(np.diag(d)) < 1e-7)
    np.testing.assert_allclose(d, d.T, rtol=1e-12)
    assert np.all(d[np.triu_indices(4, 1)] > 1e-3)
    for i in range(4):
        for j in range(4):
            assert np.all(d[i, j] <= d[i] + d[:, j] + 1e-12)
    assert np.all(d <= np.pi + 1e-12)


def test_geodesic_identities(rng):
    space = gp.PreShape(alpha=0.3)
    a, b = space.point(rand_rep(rng, 12, 4)), space.point(rand_rep(rng, 12, 4))
    dab = float(space.distance(a, b))
    for t in (0.25, 0.7):
        g = space.geodesic(a, b, t)
        np.testing.assert_allclose(float(space.distance(a, g)), t * dab, rtol=1e-9)
        np.testing.assert_allclose(float(space.distance(g, b)), (1 - t) * dab, rtol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(g)), 1.0, rtol=1e-12)
    v = space.log(a, b)
    np.testing.assert_allclose(float(space.norm(a, v)), dab, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(space.exp(a, v)), np.asarray(b), atol=1e-10)
    w = space.transport(a, b, v)
    np.testing.assert_allclose(float(space.norm(b, w)), dab, rtol=1e-10)


def test_jit_vmap_and_errors(rng):
    space = gp.PreShape()
    xs = np.stack([rand_rep(rng, 10, 3) for _ in range(3)])
    pts = jax.vmap(space.point)(xs)
    d = jax.jit(space.distance)(pts[0], pts[1])
    np.testing.assert_allclose(
        float(d), float(space.distance(space.point(xs[0]), space.point(xs[1]))), rtol=1e-12
    )
    with pytest.raises(ValueError, match="shape"):
        space.distance(space.point(rand_rep(rng, 10, 3)), space.point(rand_rep(rng, 10, 4)))
    with pytest.raises(ValueError, match="whitening"):
        gp.PreShape(whitening="nope")


@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_repsim_whitening_matches_repsim_preshape(alpha, rng):
    """repsim's PreShapeMetric (angular): its whitening, unit norm, arccos of the Frobenius inner product."""
    x = 5.0 * rand_rep(rng, 14, 5)
    y = related_rep(rng, x, 5)
    space = gp.PreShape(alpha=alpha, whitening="repsim")

    def ref_point(z):
        w = R.repsim_whiten(z - z.mean(0), alpha)
        return w / np.linalg.norm(w)

    np.testing.assert_allclose(np.asarray(space.point(x)), ref_point(x), atol=1e-12)
    d = float(space.distance(space.point(x), space.point(y)))
    np.testing.assert_allclose(d, R.sphere_distance(ref_point(x), ref_point(y)), rtol=1e-10)
