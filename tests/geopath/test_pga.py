"""principal_geodesics: tangent PCA at the Frechet mean."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import geopath as gp

from .conftest import rand_rep
from .conftest import related_rep

SPACES = {
    "angular_shape": gp.AngularShape(alpha=1.0),
    "cka": gp.AngularCKA(),
    "affine": gp.AffineInvariant(eps=1e-2),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_points_on_one_geodesic_have_one_component(name, rng):
    """Points on one geodesic: one component explains everything; scores are signed arc lengths."""
    space = SPACES[name]
    x = rand_rep(rng, 10, 4)
    a, b = space.point(x), space.point(related_rep(rng, x, 4))
    ts = np.array([0.0, 0.15, 0.3, 0.6, 0.85, 1.0])  # within the segment: minimising in quotient spaces
    pts = [space.geodesic(a, b, t) for t in ts]
    res = gp.principal_geodesics(space, pts, num_iters=64)
    np.testing.assert_allclose(float(res.explained_variance_ratio[0]), 1.0, atol=1e-9)
    assert np.all(np.asarray(res.explained_variance[1:]) < 1e-12)
    dab = float(space.distance(a, b))
    expected = (ts - ts.mean()) * dab
    s = np.asarray(res.scores[:, 0])
    s = s if np.dot(s, expected) > 0 else -s
    np.testing.assert_allclose(s, expected, atol=1e-8)
    # the component is a unit tangent vector along the geodesic: exp(mean, s_i * c) reproduces the points
    c = res.components[0]
    np.testing.assert_allclose(float(space.norm(res.mean, c)), 1.0, rtol=1e-9)
    for si, p in zip(np.asarray(res.scores[:, 0]), pts):
        assert float(space.distance(space.exp(res.mean, si * c), p)) < 1e-7


def test_variance_decomposition_and_orthonormal_components(rng):
    space = gp.AngularShape(alpha=0.5)
    x = rand_rep(rng, 12, 4)
    pts = [space.point(related_rep(rng, x, 4 + i % 3, noise=0.4)) for i in range(7)]
    res = gp.principal_geodesics(space, pts, num_iters=64)
    fm = gp.frechet_mean(space, pts, num_iters=64)
    assert float(res.residual) < 1e-8
    np.testing.assert_allclose(float(np.sum(res.explained_variance)), float(fm.variance), rtol=1e-8)
    np.testing.assert_allclose(float(np.sum(res.explained_variance_ratio)), 1.0, rtol=1e-8)
    ev = np.asarray(res.explained_variance)
    assert np.all(np.diff(ev) <= 1e-15)
    k = 4
    gram = np.array(
        [
            [float(space.inner(res.mean, res.components[i], res.components[j])) for j in range(k)]
            for i in range(k)
        ]
    )
    np.testing.assert_allclose(gram, np.eye(k), atol=1e-8)
    np.testing.assert_allclose(np.mean(np.asarray(res.scores) ** 2, axis=0), ev, rtol=1e-8, atol=1e-14)


def test_flat_space_is_pca(rng):
    """In the flat Stress space PGA is PCA of the distance matrices (tangent coords scaled by sqrt(n(n-1)))."""
    space = gp.Stress()
    xs = [rand_rep(rng, 8, 3) for _ in range(6)]
    pts = np.stack([np.asarray(space.point(x)) for x in xs])
    res = gp.principal_geodesics(space, pts, n_components=3)
    z = pts.reshape(6, -1) / np.sqrt(8 * 7)
    z = z - z.mean(0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(np.asarray(res.explained_variance), s[:3] ** 2 / 6, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(res.mean), pts.mean(0), atol=1e-12)
    for j in range(3):
        cj = np.asarray(res.components[j]).ravel() / np.sqrt(8 * 7)
        np.testing.assert_allclose(abs(np.dot(cj, vt[j])), 1.0, rtol=1e-9)
        # the scores are the PCA scores (the principal coordinates), up to the component's sign
        sign = np.sign(np.dot(cj, vt[j]))
        np.testing.assert_allclose(np.asarray(res.scores[:, j]), sign * (z @ vt[j]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.explained_variance_ratio), s[:3] ** 2 / np.sum(s**2), rtol=1e-9)


def test_jit_and_errors(rng):
    space = gp.AngularCKA()
    pts = gp.stack_points(space, [space.point(rand_rep(rng, 8, 3)) for _ in range(4)])
    f = jax.jit(lambda p: gp.principal_geodesics(space, p, n_components=2))
    r1, r2 = f(pts), gp.principal_geodesics(space, pts, n_components=2)
    np.testing.assert_allclose(np.asarray(r1.scores), np.asarray(r2.scores), atol=1e-10)
    assert r1.components.shape == (2, 8, 8) and r1.scores.shape == (4, 2)
    with pytest.raises(ValueError, match="n_components"):
        gp.principal_geodesics(space, pts, n_components=5)
