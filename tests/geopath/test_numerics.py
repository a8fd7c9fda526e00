"""Numerical guarantees (issue 16, items 2-4): never a silent wrong number.

NaN in gives NaN out; every finite scale works; a big common offset keeps its variation; dtypes follow one
policy; the affine-invariant metric is symmetric and accurate in float32; identical inputs give exactly 0;
all-pairs distances keep the triangle inequality in float32; bad Frechet weights are refused.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import ALL
from .conftest import SPECS
from .conftest import N
from .conftest import ids
from .conftest import rand_rep
from .conftest import related_rep

SCALE_FREE = [s for s in ALL if s.name not in ("euclid_a1", "euclid_a05", "euclid_a0", "stress")]
HOMOGENEOUS = [SPECS[k] for k in ("euclid_a1", "euclid_a05", "stress")]  # d(s x, s y) = s d(x, y)


def _pair32(rng, p=5, q=8):
    x = rand_rep(rng, N, p)
    return x.astype(np.float32), related_rep(rng, x, q).astype(np.float32)


# --------------------------------------------------------------------------
# NaN in, NaN out
# --------------------------------------------------------------------------


def test_safe_norm_and_sqrt_propagate_nan_with_finite_gradient_at_zero():
    assert np.isnan(gp.safe_norm(jnp.array([1.0, jnp.nan])))
    assert np.isnan(gp.safe_norm(jnp.array([[0.0, jnp.nan]]), axis=1)[0])
    assert float(gp.safe_norm(jnp.zeros(3))) == 0.0
    np.testing.assert_array_equal(jax.grad(gp.safe_norm)(jnp.zeros(3)), 0.0)
    from geopath._src import linalg

    assert np.isnan(linalg.safe_sqrt(jnp.nan))
    assert float(linalg.safe_sqrt(-1.0)) == 0.0
    assert float(jax.grad(linalg.safe_sqrt)(0.0)) == 0.0


def test_safe_norm_has_no_overflow_or_underflow():
    for s in (1e30, 1e-30):  # (XLA on CPU flushes subnormals such as 1e-40 to zero)
        x = jnp.array([3.0, 4.0], jnp.float32) * jnp.float32(s)
        np.testing.assert_allclose(float(gp.safe_norm(x)), 5.0 * np.float32(s), rtol=1e-5)


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_nan_inside_a_point_gives_nan_distance(spec, rng):
    space = spec.space
    x, y = rand_rep(rng, N, 5), rand_rep(rng, N, 5)
    a, b = space.point(x), space.point(y)
    bad = jnp.asarray(a).at[1, 1].set(jnp.nan)
    assert np.isnan(float(space.distance(bad, b))), spec.name
    assert np.isnan(float(space.distance(b, bad))), spec.name
    assert np.isnan(float(jax.jit(space.distance)(bad, b))), spec.name


# --------------------------------------------------------------------------
# scales, offsets, dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SCALE_FREE, ids=ids(SCALE_FREE))
@pytest.mark.parametrize("scale", [1e30, 1e20, 1e-20, 1e-30])
def test_scale_free_metrics_work_at_every_float32_scale(spec, scale, rng):
    space = spec.space
    x, y = _pair32(rng)
    ref = float(gp.distance(space, x, y))
    s = np.float32(scale)
    assert np.isfinite(s * x).all()
    got = float(gp.distance(space, s * x, s * y))
    jit_got = float(jax.jit(lambda x, y: gp.distance(space, x, y))(s * x, s * y))
    tol = 2e-5 * max(ref, 1.0)
    assert abs(got - ref) <= tol, (scale, got, ref)
    assert abs(jit_got - ref) <= tol, (scale, jit_got, ref)


@pytest.mark.parametrize("spec", HOMOGENEOUS, ids=ids(HOMOGENEOUS))
@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_homogeneous_metrics_scale_exactly(spec, scale, rng):
    space = spec.space
    x, y = _pair32(rng, 5, 5)
    ref = float(gp.distance(space, x, y))
    s = np.float32(scale)
    got = float(gp.distance(space, s * x, s * y)) / float(s)
    np.testing.assert_allclose(got, ref, rtol=2e-5)


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_large_offset_keeps_variation(spec, rng):
    """1e6 + x in float32: centring keeps the (quantised) variation instead of calling it constant."""
    space = spec.space
    x, y = _pair32(rng, 5, 5)
    xo, yo = x + np.float32(1e6), y + np.float32(1e6)
    got = float(gp.distance(space, xo, yo))
    # the same float32 inputs, computed in float64: only the float32 arithmetic differs
    ref = float(gp.distance(space, xo.astype(np.float64), yo.astype(np.float64)))
    assert abs(got - ref) <= 1e-4 * max(ref, 1.0), (got, ref)


def test_jit_error_does_not_blame_scaled_data_as_constant(rng):
    space = gp.AngularShape()
    x = (rand_rep(rng) * 1e30).astype(np.float32)
    assert np.isfinite(float(jax.jit(lambda x: space.distance(space.point(x), space.point(x)))(x)))


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_complex_input_is_refused(spec, rng):
    x = rand_rep(rng) + 1j * rand_rep(rng)
    with pytest.raises(TypeError, match=r"(?i)complex"):
        spec.space.point(x)
    with pytest.raises(TypeError, match=r"(?i)complex"):
        jax.jit(spec.space.point)(x)


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_is_computed_in_float32(spec, dtype, rng):
    space = spec.space
    x, y = _pair32(rng, 5, 5)
    xh, yh = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    a = space.point(xh)
    assert a.dtype == jnp.float32
    got = float(space.distance(a, space.point(yh)))
    ref = float(gp.distance(space, xh.astype(jnp.float32), yh.astype(jnp.float32)))
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-6)


# --------------------------------------------------------------------------
# AffineInvariant in float32
# --------------------------------------------------------------------------


def _spd_triple32(rng, n=40, p=5):
    """Low-rank centred Gram matrices (n > p): generalised eigenvalues span ~8 decades."""
    x = rand_rep(rng, n, p)
    return [z.astype(np.float32) for z in (x, related_rep(rng, x, p), related_rep(rng, x, p + 2, noise=1.5))]


def test_affine_invariant_float32_symmetric_exact_and_accurate(rng):
    space = gp.AffineInvariant(eps=1e-3)
    xs = _spd_triple32(rng)
    pts = [space.point(x) for x in xs]
    for (i, a), (j, b) in itertools.combinations(enumerate(pts), 2):
        dab, dba = float(space.distance(a, b)), float(space.distance(b, a))
        assert dab == dba, (dab, dba)
        ref = R.affine_invariant_distance_points(R.spd_point(xs[i]), R.spd_point(xs[j]))
        assert abs(dab - ref) <= 1e-4 * ref, (dab, ref)
    for a in pts:
        assert float(space.distance(a, a)) <= 1e-5


def test_affine_invariant_float32_extrapolated_geodesic(rng):
    # well-conditioned points (covariances): extrapolation stays accurate
    space = gp.AffineInvariant(eps=1e-3, kind="covariance")
    a, b, _ = (space.point(x) for x in _spd_triple32(rng, 40, 6))
    d = float(space.distance(a, b))
    for t in (-1.0, 2.0, 0.5):
        g = space.geodesic(a, b, t)
        assert float(space.distance(a, g)) == pytest.approx(abs(t) * d, rel=1e-4)
        assert float(space.distance(b, g)) == pytest.approx(abs(1 - t) * d, rel=1e-4)
    np.testing.assert_allclose(space.geodesic(a, b, 1.0), b, rtol=1e-4, atol=1e-4 * float(jnp.max(b)))


def test_affine_invariant_float32_extrapolation_is_accurate_or_nan(rng):
    # ridge-dominated Gram points: geodesic(a, b, -1) has a condition number far beyond 1 / eps(float32),
    # so it may not be numerically positive definite; then its distances are NaN, never a wrong number
    space = gp.AffineInvariant(eps=1e-3)
    a, b, _ = (space.point(x) for x in _spd_triple32(rng))
    d = float(space.distance(a, b))
    for t in (-1.0, 2.0):
        got = float(space.distance(a, space.geodesic(a, b, t)))
        assert np.isnan(got) or got == pytest.approx(abs(t) * d, rel=2e-3), (t, got, d)


def test_affine_invariant_float32_triangle_inequality_pairwise(rng):
    space = gp.AffineInvariant(eps=1e-3)
    xs = []
    for _ in range(3):
        xs += _spd_triple32(rng)
    d = np.asarray(gp.pairwise_distances(space, xs), np.float64)
    np.testing.assert_array_equal(d, d.T)
    viol = max(d[i, k] - d[i, j] - d[j, k] for i, j, k in itertools.permutations(range(len(xs)), 3))
    assert viol <= 1e-4 * d.max(), viol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_invariant_rejects_ridge_below_round_off(dtype, rng):
    with pytest.raises(ValueError, match=r"eps"):
        gp.AffineInvariant(eps=1e-30).point(rand_rep(rng).astype(dtype))


# --------------------------------------------------------------------------
# identical inputs, near-zero pairs, all-pairs triangle inequality
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_identical_inputs_give_zero(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 8).astype(np.float32)
    a = space.point(x)
    assert float(space.distance(a, a)) <= 1e-6 * max(1.0, float(gp.safe_norm(a)))
    d = gp.pairwise_distances(space, [x, x])
    assert float(d[0, 1]) <= 1e-6 * max(1.0, float(gp.safe_norm(a)))


def test_euclidean_identical_points_give_exactly_zero(rng):
    space = gp.EuclideanShape()
    a = space.point(rand_rep(rng, N, 8).astype(np.float32) * 10)
    assert float(space.distance(a, a)) == 0.0


@pytest.mark.parametrize("spec", [SPECS["angular_a1"], SPECS["euclid_a1"]], ids=["angular", "euclid"])
def test_pairwise_matches_distance_near_zero_in_float32(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 8).astype(np.float32)
    y = (x + 1e-4 * rng.standard_normal(x.shape)).astype(np.float32)
    direct = float(space.distance(space.point(x), space.point(y)))
    pair = float(gp.pairwise_distances(space, [x, y])[0, 1])
    assert abs(pair - direct) <= 1e-3 * direct + 1e-6, (pair, direct)


@pytest.mark.parametrize("spec", [SPECS["angular_a1"], SPECS["euclid_a1"]], ids=["angular", "euclid"])
def test_pairwise_triangle_inequality_float32(spec, rng):
    space = spec.space
    base = rand_rep(rng, N, 8)
    # clusters of near-identical representations: the regime where an arccos / sqrt-of-difference loses it
    xs = [(base + eps * rng.standard_normal(base.shape)).astype(np.float32) for eps in (0, 1e-4, 3e-4, 1e-3)]
    xs += [(related_rep(rng, base, 8, noise=0.1)).astype(np.float32) for _ in range(2)]
    d = np.asarray(gp.pairwise_distances(space, xs), np.float64)
    viol = max(d[i, k] - d[i, j] - d[j, k] for i, j, k in itertools.permutations(range(len(xs)), 3))
    assert viol <= 1e-5 * max(1.0, d.max()), viol


# --------------------------------------------------------------------------
# Frechet mean weights
# --------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [1.0, np.nan, 1.0]])
def test_frechet_mean_refuses_bad_weights(weights, rng):
    space = gp.AngularShape()
    pts = [space.point(rand_rep(rng)) for _ in range(3)]
    with pytest.raises(ValueError, match=r"weights"):
        gp.frechet_mean(space, pts, weights=jnp.asarray(weights))
    stacked = gp.stack_points(space, pts)
    out = jax.jit(lambda w: gp.frechet_mean(space, stacked, weights=w))(jnp.asarray(weights))
    assert np.isnan(np.asarray(out.mean)).all()
    assert np.isnan(float(out.residual)) and np.isnan(float(out.variance))


def test_frechet_mean_accepts_some_zero_weights(rng):
    space = gp.AngularShape()
    pts = [space.point(rand_rep(rng)) for _ in range(3)]
    out = gp.frechet_mean(space, pts, weights=jnp.asarray([1.0, 0.0, 1.0]), num_iters=64)
    mid = gp.midpoint(space, pts[0], pts[2])
    assert float(space.distance(out.mean, mid)) < 1e-6
