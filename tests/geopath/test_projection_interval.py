"""Issue 26: the interval of projection fractions t that the residual cannot tell apart, and the position.

The flat case has a closed form: on a unit sphere, with ``c`` at angle ``phi`` from the plane of the great
circle ``gamma(t) = cos(theta t) a + sin(theta t) u`` and ``c``'s projection onto that plane at angle ``s0``
from ``a``, ``cos d(c, gamma(t)) = cos(phi) cos(theta t - s0) = cos(phi) cos(theta (t - t0))`` with ``t0 = s0 /
theta``. The minimum is ``phi`` at ``t0``, so ``d <= phi + tol`` exactly where ``|t - t0| <= arccos(cos(phi +
tol) / cos(phi)) / theta`` (while ``theta |t - t0| <= pi``). At the pole (``phi = pi / 2``) the residual is
``pi / 2`` for every ``t``. The shape-metric cases are checked against an independent NumPy float64 evaluation
of the residual.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import rand_rep
from .conftest import related_rep
from .test_analysis_speed import count_compiles
from .test_xla_workaround import _unordered_lapack_pairs

N, K = 12, 4  # one shape for the shape-metric cases: one compiled program
TOL = 1e-3

_jitted = jax.jit(gp.projection_interval, static_argnames=("num_grid", "num_bisect"))


def _interval(space, a, b, c, *, tol=TOL, t_min=-1.0, t_max=2.0):
    """The jitted kernel, always with the same traced options: one compiled program per space."""
    return _jitted(space, a, b, c, tol=tol, t_min=t_min, t_max=t_max)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------------
# (a) the flat case on a sphere, in closed form


def _sphere_case(rng, theta, t0, phi, m=4):
    """Points of AngularCKA (unit [m, m] arrays): a, b = gamma(1), c at angle phi off the circle at t0."""
    q, _ = np.linalg.qr(rng.standard_normal((m * m, 3)))
    e1, e2, e3 = (q[:, i].reshape(m, m) for i in range(3))
    b = np.cos(theta) * e1 + np.sin(theta) * e2
    s0 = theta * t0
    c = np.cos(phi) * (np.cos(s0) * e1 + np.sin(s0) * e2) + np.sin(phi) * e3
    return e1, b, c


def test_pole_residual_is_flat_over_the_whole_range(rng):
    space = gp.AngularCKA()
    a, b, c = _sphere_case(rng, theta=1.0, t0=0.0, phi=np.pi / 2)
    iv = _interval(space, a, b, c)
    np.testing.assert_allclose(iv.residual, np.pi / 2, rtol=0, atol=1e-12)
    assert float(iv.lo) == -1.0 and float(iv.hi) == 2.0
    assert bool(iv.clipped_lo) and bool(iv.clipped_hi)
    assert -1.0 <= float(iv.t) <= 2.0


@pytest.mark.parametrize(
    "theta, t0, eps",
    [(1.0, 0.4, 0.01), (0.7, 0.25, 0.003), (1.0, -0.8, 0.01)],
    ids=["interior", "narrow", "clipped_lo"],
)
def test_tilted_pole_matches_the_closed_form(rng, theta, t0, eps):
    space = gp.AngularCKA()
    phi = np.pi / 2 - eps  # nearly flat: the residual varies by 2 eps over the whole circle
    a, b, c = _sphere_case(rng, theta, t0, phi)
    iv = _interval(space, a, b, c, tol=TOL)
    half = np.arccos(np.cos(phi + TOL) / np.cos(phi)) / theta
    np.testing.assert_allclose([iv.t, iv.residual], [t0, phi], rtol=0, atol=1e-12)
    lo, hi = t0 - half, t0 + half
    assert bool(iv.clipped_lo) == (lo < -1.0) and not bool(iv.clipped_hi) and bool(iv.projected)
    np.testing.assert_allclose(iv.lo, max(lo, -1.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(iv.hi, hi, rtol=0, atol=1e-6)


def test_projection_outside_the_range_gives_the_least_residual_in_it(rng):
    """The range [0.5, 2] lies right of the minimum at t0 = 0.2 (unimodal there): the least residual over the
    range is at its left end."""
    space = gp.AngularCKA()
    a, b, c = _sphere_case(rng, theta=1.0, t0=0.2, phi=1.0)
    iv = _interval(space, a, b, c, t_min=0.5, t_max=2.0)
    assert not bool(iv.projected) and float(iv.t) == 0.5 and bool(iv.clipped_lo)
    np.testing.assert_allclose(iv.residual, np.arccos(np.cos(1.0) * np.cos(0.3)), rtol=0, atol=1e-12)
    half = np.arccos(np.cos(float(iv.residual) + TOL) / np.cos(1.0))  # theta = 1
    np.testing.assert_allclose(iv.hi, 0.2 + half, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# (b) the angular shape metric against an independent NumPy residual


def _np_residual(a, b, c):
    """``ts -> d(c, gamma(ts))`` for the angular shape metric, in NumPy float64: gamma is the great circle
    from a to the optimally rotated b on the pre-shape sphere, the distance arccos of a nuclear norm."""
    a, b, c = (np.asarray(p, np.float64) for p in (a, b, c))
    a, c = a / np.linalg.norm(a), c / np.linalg.norm(c)
    u_, _, vt = np.linalg.svd(b.T @ a)
    br = b @ (u_ @ vt)
    br = br / np.linalg.norm(br)
    w = br - np.sum(a * br) * a
    theta = np.arctan2(np.linalg.norm(w), np.sum(a * br))
    u = w / np.linalg.norm(w)

    def residual(ts):
        ts = np.atleast_1d(np.asarray(ts, np.float64))
        g = np.cos(theta * ts)[:, None, None] * a + np.sin(theta * ts)[:, None, None] * u
        nuc = np.linalg.svd(np.einsum("mnk,nl->mkl", g, c), compute_uv=False).sum(-1)
        return np.arccos(np.clip(nuc, -1.0, 1.0))

    return residual


def _shape_points(rng, alpha):
    """NumPy reference points (tests/geopath/reference.py) of three related representations [N, K]."""
    x = rand_rep(rng, N, K)
    reps = (x, related_rep(rng, x, K, noise=0.8), related_rep(rng, x, K, noise=1.2))
    return [R.shape_features(r, alpha) for r in reps]


def _shape_interval(a, b, c, *, tol=TOL):
    """:func:`gp.projection_interval` of the angular shape metric, through the path form (one layer ``c``,
    input ``a``, target ``b``): one compiled program for every shape-metric test (the path form is the
    kernel per layer: tested below)."""
    res = gp.projection_intervals(gp.AngularShape(), [c], b, input_point=a, tol=tol)
    return gp.ProjectionInterval(*[x[0] for x in res])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("tol", [1e-3, 2e-2])
def test_shape_interval_against_numpy(rng, alpha, tol):
    # the points are the reference's alpha-whitened ones; the geodesic operations of AngularShape do not
    # depend on alpha (it only enters space.point), so one space serves both
    a, b, c = _shape_points(rng, alpha)
    iv = _shape_interval(a, b, c, tol=tol)
    r = _np_residual(a, b, c)
    dense = np.linspace(-1.0, 2.0, 30001)  # spacing 1e-4
    rd = r(dense)
    level = float(iv.residual) + tol
    np.testing.assert_allclose(iv.residual, r(iv.t)[0], rtol=0, atol=1e-9)
    assert float(iv.residual) <= rd.min() + 1e-9  # the least residual over the range
    lo, hi = float(iv.lo), float(iv.hi)
    assert lo <= float(iv.t) <= hi
    for edge, clipped, outside in ((lo, iv.clipped_lo, lo - 1e-4), (hi, iv.clipped_hi, hi + 1e-4)):
        if bool(clipped):
            assert edge in (-1.0, 2.0) and r(edge)[0] <= level
        else:  # a crossing of the level, and the residual exceeds it just outside
            np.testing.assert_allclose(r(edge)[0], level, rtol=0, atol=1e-6)
            assert r(outside)[0] > level
    assert np.all(r(np.linspace(lo, hi, 2001)) <= level + 1e-9)
    # the connected run of the dense grid around t is the interval (to the dense grid's spacing)
    k = int(np.argmin(np.abs(dense - float(iv.t))))
    out = rd > level
    left, right = np.nonzero(out[:k])[0], np.nonzero(out[k:])[0]
    brute_lo = dense[left[-1] + 1] if left.size else -1.0
    brute_hi = dense[k + right[0] - 1] if right.size else 2.0
    np.testing.assert_allclose([lo, hi], [brute_lo, brute_hi], rtol=0, atol=1.1e-4)


def test_degenerate_geodesic_is_flat(rng):
    a, _, c = _shape_points(rng, 1.0)
    iv = _shape_interval(a, a, c)
    assert float(iv.t) == 0.0 and bool(iv.projected)
    assert float(iv.lo) == -1.0 and float(iv.hi) == 2.0 and bool(iv.clipped_lo) and bool(iv.clipped_hi)
    np.testing.assert_allclose(iv.residual, R.angular_shape_distance_points(a, c), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------------------
# (c) eager == jit == vmap, the path form, compilations, order of the decompositions


def test_eager_jit_vmap_agree(rng):
    space = gp.AngularCKA()
    a, b, c = _sphere_case(rng, theta=1.0, t0=0.4, phi=1.5)
    cs = [c] + [x / np.linalg.norm(x) for x in rng.standard_normal((2, 4, 4))]  # unit [4, 4]: on the sphere
    eager = gp.projection_interval(space, a, b, cs[0])
    jitted = [_interval(space, a, b, c) for c in cs]
    vmapped = jax.jit(jax.vmap(lambda c: gp.projection_interval(space, a, b, c)))(jnp.stack(cs))
    for f in gp.ProjectionInterval._fields:
        want = [getattr(x, f) for x in jitted]
        np.testing.assert_allclose(getattr(eager, f), want[0], rtol=0, atol=1e-12, err_msg=f)
        np.testing.assert_allclose(getattr(vmapped, f), want, rtol=0, atol=1e-12, err_msg=f)


def _layers_and_ends(rng):
    """Input a, target b and three layers off the geodesic a -> b (shape metric)."""
    a, b, c = _shape_points(rng, 1.0)
    return a, b, [c, *(_shape_points(rng, 1.0)[2] for _ in range(2))]


def test_path_form_is_the_kernel_per_layer_and_compiles_once(rng):
    space = gp.AngularShape()
    a, b, cs = _layers_and_ends(rng)
    path = gp.projection_intervals(space, cs, b, input_point=a)
    assert path.lo.shape == (3,)
    # the kernel and the path form with the projections given (e.g. PathAnalysis.proj_t)
    hinted = gp.projection_intervals(space, cs, b, input_point=a, proj_t=np.asarray(path.t))
    kernel = jax.jit(lambda c, t: gp.projection_interval(space, a, b, c, t=t))
    loop = [kernel(c, t) for c, t in zip(cs, np.asarray(path.t))]
    for f in gp.ProjectionInterval._fields:
        want = getattr(path, f)
        if f != "projected":  # given, t is the projection by definition
            np.testing.assert_allclose([getattr(x, f) for x in loop], want, rtol=0, atol=1e-9, err_msg=f)
            np.testing.assert_allclose(getattr(hinted, f), want, rtol=0, atol=1e-9, err_msg=f)
    with count_compiles() as again:
        gp.projection_intervals(space, cs, b, input_point=a)
        gp.projection_intervals(space, cs[:2], b, input_point=a, tol=2e-3, t_min=-0.5)  # same buckets
    assert again == [], again


def test_decompositions_are_ordered(rng):
    """Every pair of LAPACK calls of the compiled path form (frame, projections, grid, local minimum,
    bisection) is ordered by a data dependency (docs/threads.md)."""
    from geopath._src import paths

    space = gp.AngularShape()
    a, b, cs = _layers_and_ends(rng)
    padded = paths._pad_checkpoints(space, [cs], b, a, single=True)
    args = (space, padded.stacked, padded.target, padded.input_point, None, TOL, -1.0, 2.0)
    lowered = paths._intervals_jit.lower(*args, num_grid=31, num_bisect=12)
    count, bad = _unordered_lapack_pairs(lowered.compile().as_text())  # compiled (cached) above
    assert count >= 30, count
    assert not bad, f"{len(bad)} of the {count} LAPACK calls' pairs are unordered: {bad[:5]}"


# ------------------------------------------------------------------------------------------------------
# (d) errors and NaN


def test_shape_errors_name_both_shapes():
    space = gp.AngularCKA()
    a, c = np.eye(4) / 2.0, np.eye(5) / np.sqrt(5.0)
    for fn in (gp.projection_interval, _jitted):
        with pytest.raises(ValueError, match=r"\(4, 4\) and \(5, 5\)"):
            fn(space, a, a, c)
    shape = gp.AngularShape()
    with pytest.raises(ValueError, match=r"\(12, 3\).*\(10, 3\)"):
        gp.projection_interval(shape, np.ones((12, 3)), np.ones((12, 3)), np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        gp.projection_intervals(shape, [np.ones((12, 3))] * 3, np.ones((12, 2)), proj_t=np.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(\)"):
        gp.projection_interval(space, a, a, a, t=np.zeros(2))
    with pytest.raises(ValueError, match="t_min < t_max"):
        gp.projection_interval(space, a, a, a, t_min=1.0, t_max=0.0)
    with pytest.raises(ValueError, match="num_grid"):
        gp.projection_interval(space, a, a, a, num_grid=1)


def test_nan_input_gives_nan(rng):
    a, b, c = _shape_points(rng, 1.0)
    c = c.copy()
    c[0, 0] = np.nan
    iv = _shape_interval(a, b, c)
    assert all(np.isnan(float(getattr(iv, f))) for f in ("t", "residual", "lo", "hi")), iv


# ------------------------------------------------------------------------------------------------------
# (e) PathAnalysis.position


def _path(rng, space):
    x0 = rand_rep(rng, N, 5)
    pts = [space.point(x0)] + [space.point(related_rep(rng, x0, 5)) for _ in range(3)]
    target = gp.target_point(space, jnp.asarray(np.arange(N) % 3), num_classes=3)
    return pts, target


def test_position_from_the_distances(rng):
    space = gp.AngularCKA()
    pts, target = _path(rng, space)
    res = gp.analyze_path(space, pts[:3] + [target], target)  # the path ends at the target
    d_in, d_tgt = np.asarray(res.dist_to_input), np.asarray(res.dist_to_target)
    assert res.position.shape == (4,) and res._fields[-1] == "position"
    np.testing.assert_allclose(res.position, d_in / (d_in + d_tgt), rtol=1e-12, atol=0)
    assert float(res.position[0]) == 0.0  # d(x, x) = 0 exactly: layer 0 is the input
    np.testing.assert_allclose(res.position[-1], 1.0, rtol=0, atol=1e-12)  # d(y, y) is round-off here


def test_position_where_input_is_target_is_one_half_with_finite_gradient(rng):
    """p_0 = x = y: both distances 0, position 1/2 (as for every other layer when x = y); gradients finite
    (angular: d(p, p) has a singular gradient unless guarded)."""
    space = gp.AngularCKA()
    pts, target = _path(rng, space)
    path = [target] + pts[1:]
    res = gp.analyze_path(space, path, target)
    np.testing.assert_allclose(res.position, 0.5, rtol=0, atol=1e-12)

    def total(path, target):
        return jnp.sum(gp.analyze_path(space, path, target).position)

    g_path, g_target = jax.grad(total, argnums=(0, 1))(path, target)
    assert all(np.all(np.isfinite(g)) for g in [*g_path, g_target])
