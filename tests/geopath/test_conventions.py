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


# --------------------------------------------------------------------------
# CKA: estimators and kernels
# --------------------------------------------------------------------------


def test_cka_zero_diagonal_matches_repsim(rng):
    x = rand_rep(rng, 15, 6)
    y = related_rep(rng, x, 9)
    space = gp.AngularCKA(unbiased="zero_diagonal")
    a, b = R.repsim_cka_point(R.repsim_kernel(x, "linear")), R.repsim_cka_point(R.repsim_kernel(y, "linear"))
    np.testing.assert_allclose(np.asarray(space.point(x)), a, atol=1e-12)
    np.testing.assert_allclose(dist(space, x, y), R.sphere_distance(a, b), rtol=1e-10)
    # a different estimator from the U-statistic (True) and from the biased one (False)
    d_u, d_b = dist(gp.AngularCKA(unbiased=True), x, y), dist(gp.AngularCKA(), x, y)
    assert min(abs(d_u - dist(space, x, y)), abs(d_b - dist(space, x, y))) > 1e-4
    np.testing.assert_allclose(dist(gp.AngularCKA(unbiased="u_statistic"), x, y), d_u, rtol=1e-14)


@pytest.mark.parametrize(
    "kernel,rbf_scale,ref", [("rbf", 2**-0.5, "sqexp"), ("laplace", 1.0, "laplace")], ids=["rbf", "laplace"]
)
def test_cka_radial_kernels_match_repsim(kernel, rbf_scale, ref, rng):
    """n = 15 gives an odd number of pairs, where the lower median (repsim) is the median (geopath)."""
    x = rand_rep(rng, 15, 6)
    y = np.tanh(related_rep(rng, x, 9))
    space = gp.AngularCKA(kernel=kernel, rbf_scale=rbf_scale, unbiased="zero_diagonal")
    a, b = R.repsim_cka_point(R.repsim_kernel(x, ref)), R.repsim_cka_point(R.repsim_kernel(y, ref))
    np.testing.assert_allclose(np.asarray(space.point(x)), a, atol=1e-12)
    np.testing.assert_allclose(dist(space, x, y), R.sphere_distance(a, b), rtol=1e-10)


def test_cka_rbf_default_bandwidth_differs_from_repsim_by_sqrt2(rng):
    x = rand_rep(rng, 15, 6)
    ref = R.repsim_cka_point(R.repsim_kernel(x, "sqexp"))
    p_default = np.asarray(gp.AngularCKA(kernel="rbf", unbiased="zero_diagonal").point(x))
    assert np.max(np.abs(p_default - ref)) > 1e-3
    p_fixed = gp.AngularCKA(
        kernel="rbf", rbf_sigma=R.repsim_length_scale(x) / np.sqrt(2), unbiased="zero_diagonal"
    )
    np.testing.assert_allclose(np.asarray(p_fixed.point(x)), ref, atol=1e-12)


def test_cka_sum_of_kernels(rng):
    """A weighted sum of kernels is the centred sum of the reference kernels; linear + 0 * rbf is linear CKA."""
    x = rand_rep(rng, 15, 6)
    y = related_rep(rng, x, 4)
    space = gp.AngularCKA(kernel=("linear", "laplace"), kernel_weights=(0.5, 2.0))
    k = 0.5 * R.repsim_kernel(x, "linear") + 2.0 * R.repsim_kernel(x, "laplace")
    np.testing.assert_allclose(np.asarray(space.point(x)), R.cka_point(k), atol=1e-12)
    assert 0.0 < dist(space, x, y) < np.pi / 2
    # a list is accepted and stored as a tuple (hashable, jit-static)
    assert gp.AngularCKA(kernel=["linear", "rbf"]) == gp.AngularCKA(kernel=("linear", "rbf"))
    f = jax.jit(lambda u: space.distance(space.point(u), space.point(y)))
    np.testing.assert_allclose(float(f(x)), dist(space, x, y), rtol=1e-12)


@pytest.mark.parametrize("kernel", ["laplace", ("linear", "rbf")], ids=["laplace", "linear+rbf"])
def test_cka_kernels_are_metrics(kernel, rng):
    """Axioms on random triples: zero self-distance, symmetry, triangle inequality, invariance to rotations."""
    space = gp.AngularCKA(kernel=kernel)
    xs = [rand_rep(rng, 14, 5) for _ in range(3)]
    d = lambda u, v: dist(space, u, v)  # noqa: E731
    assert d(xs[0], xs[0]) < 1e-7
    np.testing.assert_allclose(d(xs[0], xs[1]), d(xs[1], xs[0]), rtol=1e-12)
    assert d(xs[0], xs[2]) <= d(xs[0], xs[1]) + d(xs[1], xs[2]) + 1e-12
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    np.testing.assert_allclose(d(xs[0] @ q + 1.0, xs[1]), d(xs[0], xs[1]), rtol=1e-9)


def test_cka_options_validated():
    with pytest.raises(ValueError, match="kernel"):
        gp.AngularCKA(kernel="poly")
    with pytest.raises(ValueError, match="one weight per kernel"):
        gp.AngularCKA(kernel=("linear", "rbf"), kernel_weights=(1.0,))
    with pytest.raises(ValueError, match="unbiased"):
        gp.AngularCKA(unbiased="yes")


# --------------------------------------------------------------------------
# AffineInvariant and Stress: repsim's conventions and kernels
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind,mode", [("gram", "gram"), ("covariance", "cov")])
def test_affine_invariant_unscaled_matches_repsim(kind, mode, rng):
    x = 3.0 * rand_rep(rng, 12, 5)
    y = related_rep(rng, x, 5)
    space = gp.AffineInvariant(eps=0.1, kind=kind, scale="none")
    a, b = R.repsim_spd_point(x, 0.1, mode=mode), R.repsim_spd_point(y, 0.1, mode=mode)
    np.testing.assert_allclose(np.asarray(space.point(x)), a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dist(space, x, y), R.affine_invariant_distance_points(a, b), rtol=1e-9)
    # repsim's convention depends on the scale of x; the default (trace) does not
    assert abs(dist(space, 10.0 * x, y) - dist(space, x, y)) > 1e-2
    default = gp.AffineInvariant(eps=0.1, kind=kind)
    np.testing.assert_allclose(dist(default, 10.0 * x, y), dist(default, x, y), rtol=1e-9)


@pytest.mark.parametrize("kernel,rbf_scale,ref", [("rbf", 2**-0.5, "sqexp"), ("laplace", 1.0, "laplace")])
def test_affine_invariant_kernels_match_repsim(kernel, rbf_scale, ref, rng):
    x = rand_rep(rng, 15, 4)
    y = np.tanh(related_rep(rng, x, 6))
    space = gp.AffineInvariant(eps=1e-3, scale="none", kernel=kernel, rbf_scale=rbf_scale)
    a, b = R.repsim_spd_point(x, 1e-3, kernel=ref), R.repsim_spd_point(y, 1e-3, kernel=ref)
    np.testing.assert_allclose(dist(space, x, y), R.affine_invariant_distance_points(a, b), rtol=1e-8)
    # geodesic identity in the new space: d(a, gamma(t)) = t d(a, b)
    pa, pb = space.point(x), space.point(y)
    np.testing.assert_allclose(
        float(space.distance(pa, space.geodesic(pa, pb, 0.3))), 0.3 * float(space.distance(pa, pb)), rtol=1e-8
    )


@pytest.mark.parametrize(
    "kernel,rbf_scale,ref",
    [("linear", 1.0, "linear"), ("rbf", 2**-0.5, "sqexp"), ("laplace", 1.0, "laplace")],
)
def test_stress_median_and_kernels_match_repsim(kernel, rbf_scale, ref, rng):
    """n = 15: an odd number of pairs, where every median convention agrees."""
    x = rand_rep(rng, 15, 4)
    y = related_rep(rng, x, 6)
    space = gp.Stress(normalize=True, normalize_by="median", kernel=kernel, rbf_scale=rbf_scale)
    a = R.repsim_stress_point(x, kernel=ref, rescale=True)
    b = R.repsim_stress_point(y, kernel=ref, rescale=True)
    np.testing.assert_allclose(np.asarray(space.point(x)), a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dist(space, x, y), R.stress_distance_points(a, b), rtol=1e-10)
    np.testing.assert_allclose(dist(space, 7.0 * x, y), dist(space, x, y), rtol=1e-9)


def test_stress_rbf_distances_are_bounded(rng):
    """RBF feature-space distances are sqrt(2 - 2 k) in [0, sqrt(2)); the unnormalised metric is <= sqrt(2)."""
    x = rand_rep(rng, 10, 3)
    d = np.asarray(gp.Stress(kernel="rbf").point(x))
    assert np.all(d >= 0) and np.all(d < np.sqrt(2)) and np.all(np.diag(d) == 0)


def test_spd_stress_options_validated():
    with pytest.raises(ValueError, match="scale"):
        gp.AffineInvariant(scale="median")
    with pytest.raises(ValueError, match="linear kernel"):
        gp.AffineInvariant(kind="covariance", kernel="rbf")
    with pytest.raises(ValueError, match="normalize_by"):
        gp.Stress(normalize=True, normalize_by="mean")
