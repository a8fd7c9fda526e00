"""geopath's conventions against independent float64 references of netrep's and repsim's conventions.

Each option that reproduces a reference library is compared with a NumPy implementation of that library's
stated formula (``reference.py``); each geopath default that differs is checked to differ, by the documented
relation (``docs/conventions.md``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import rand_rep
from .conftest import related_rep


def dist(space, x, y) -> float:
    return float(space.distance(space.point(x), space.point(y)))


# --------------------------------------------------------------------------
# shape metrics: whitening
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,p,q", [(20, 5, 8), (12, 30, 4)])
def test_default_alpha0_and_alpha1_match_netrep(n, p, q, rng):
    """With no ridge by default, alpha in {0, 1} gives netrep's angular numbers (widths may differ)."""
    x = rand_rep(rng, n, p)
    y = related_rep(rng, x, q)
    for alpha in (0.0, 1.0):
        d = dist(gp.AngularShape(alpha=alpha), x, y)
        np.testing.assert_allclose(d, R.netrep_shape_distance(x, y, alpha), rtol=1e-9, atol=1e-9)


def test_ridge_moves_away_from_netrep(rng):
    """The old default ridge (whiten_eps=1e-6) changes the alpha=0 distance measurably: the option is live."""
    x = rand_rep(rng, 20, 6) @ np.diag([1, 1, 1, 1, 1e-2, 1e-3])
    y = related_rep(rng, x, 6)
    ref = R.netrep_shape_distance(x, y, 0.0)
    np.testing.assert_allclose(dist(gp.AngularShape(alpha=0.0), x, y), ref, rtol=1e-9)
    assert abs(dist(gp.AngularShape(alpha=0.0, whiten_eps=1e-6), x, y) - ref) > 1e-6 * ref


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("method", ["features", "gram"])
def test_netrep_whitening_matches_netrep(alpha, method, rng):
    n, p, q = (20, 6, 9) if method == "features" else (10, 25, 14)
    x = 3.0 * rand_rep(rng, n, p)
    y = 0.2 * related_rep(rng, x, q)
    space = gp.AngularShape(alpha=alpha, whitening="netrep", method=method)
    np.testing.assert_allclose(dist(space, x, y), R.netrep_shape_distance(x, y, alpha), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_netrep_euclidean_matches_netrep(alpha, rng):
    """Euclidean score with netrep's preserve_variance rescaling (equal widths, as netrep compares them)."""
    x = rand_rep(rng, 18, 6)
    y = 2.0 * related_rep(rng, x, 6)
    space = gp.EuclideanShape(alpha=alpha, whitening="netrep")
    ref = R.netrep_shape_distance(x, y, alpha, score="euclidean")
    np.testing.assert_allclose(dist(space, x, y), ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_repsim_whitening_matches_repsim(alpha, rng):
    x = 4.0 * rand_rep(rng, 16, 6)
    y = related_rep(rng, x, 6)
    ang = gp.AngularShape(alpha=alpha, whitening="repsim")
    euc = gp.EuclideanShape(alpha=alpha, whitening="repsim")
    np.testing.assert_allclose(dist(ang, x, y), R.repsim_shape_distance(x, y, alpha), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(
        dist(euc, x, y), R.repsim_shape_distance(x, y, alpha, score="euclidean"), rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_default_is_netrep_on_unit_norm_data(alpha, rng):
    """The documented relation: default(X, Y) == netrep(X_c / ||X_c||_F, Y_c / ||Y_c||_F), and the default is
    scale invariant while netrep's convention is not."""
    x = rand_rep(rng, 20, 5)
    y = related_rep(rng, x, 7)

    def unit(z):
        zc = z - z.mean(0)
        return zc / np.linalg.norm(zc)

    d = dist(gp.AngularShape(alpha=alpha), x, y)
    np.testing.assert_allclose(d, R.netrep_shape_distance(unit(x), unit(y), alpha), rtol=1e-9)
    np.testing.assert_allclose(dist(gp.AngularShape(alpha=alpha), 50.0 * x, y), d, rtol=1e-9)
    net = gp.AngularShape(alpha=alpha, whitening="netrep")
    assert abs(dist(net, 50.0 * x, y) - dist(net, x, y)) > 1e-3
    assert abs(dist(net, x, y) - d) > 1e-3


def test_netrep_whitening_jit_and_grad(rng):
    x = rand_rep(rng, 12, 4)
    y = related_rep(rng, x, 4)
    space = gp.AngularShape(alpha=0.5, whitening="netrep")
    f = lambda u: space.distance(space.point(u), space.point(y))  # noqa: E731
    np.testing.assert_allclose(float(jax.jit(f)(x)), float(f(x)), rtol=1e-12)
    g = np.asarray(jax.grad(f)(x))
    v = rng.standard_normal(x.shape)
    h = 1e-6
    fd = (float(f(x + h * v)) - float(f(x - h * v))) / (2 * h)
    np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-5, atol=1e-8)


def test_whitening_option_validated():
    with pytest.raises(ValueError, match="whitening"):
        gp.AngularShape(whitening="nope")
