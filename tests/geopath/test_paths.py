"""Tests of geopath's path analysis (analyze_path, target_point, compare_paths, analyze_checkpoints).

Synthetic paths with known answers: points placed on a geodesic, a symmetric detour in the flat Stress
space, and paths resampled at matched relative depth. Everything runs in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from . import reference as R
from .conftest import check_directional_derivatives


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _rep(seed: int, n: int = 12, p: int = 5) -> np.ndarray:
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, p)) @ np.diag(np.linspace(1.0, 2.0, p))
    return x + r.standard_normal((1, p))


def _related(seed: int, x: np.ndarray, q: int, noise: float = 0.7) -> np.ndarray:
    r = np.random.default_rng(seed)
    m = r.standard_normal((x.shape[1], q)) / math.sqrt(x.shape[1])
    return x @ m + noise * r.standard_normal((x.shape[0], q))


SPACES = {
    "angular_a1": lambda: gp.AngularShape(alpha=1.0),
    "angular_a05": lambda: gp.AngularShape(alpha=0.5),
    "euclid_a1": lambda: gp.EuclideanShape(alpha=1.0),
    "cka": lambda: gp.AngularCKA(),
    "stress": lambda: gp.Stress(),
}
GEODESIC_SPACES = ["angular_a1", "angular_a05", "euclid_a1", "cka", "stress"]


def _endpoints(space, n=12):
    x = _rep(0, n, 5)
    y = _related(1, x, 7)
    return space.point(x), space.point(y)


# ------------------------------------------------------------------------------------------------
# analyze_path: known answers


@pytest.mark.parametrize("name", GEODESIC_SPACES)
def test_points_on_geodesic(name):
    space = SPACES[name]()
    a, b = _endpoints(space)
    fracs = np.array([0.0, 0.1, 0.35, 0.6, 0.85, 1.0])
    pts = [space.geodesic(a, b, t) for t in fracs]
    pts[0], pts[-1] = a, b
    res = gp.analyze_path(space, pts, b)
    d = float(space.distance(a, b))
    assert d > 0.1
    np.testing.assert_allclose(res.straightness, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.length, d, rtol=1e-6)
    np.testing.assert_allclose(res.direct, d, rtol=1e-9)
    np.testing.assert_allclose(res.chord, d, rtol=1e-6)
    np.testing.assert_allclose(res.steps, np.diff(fracs) * d, rtol=1e-6, atol=1e-9)
    assert res.turning.shape == (len(fracs) - 2,)
    np.testing.assert_allclose(res.turning, 0.0, atol=1e-5)
    np.testing.assert_allclose(res.proj_t, fracs, atol=1e-6)
    np.testing.assert_allclose(res.proj_residual, 0.0, atol=1e-5)
    np.testing.assert_allclose(res.dist_to_input, fracs * d, atol=1e-6)
    np.testing.assert_allclose(res.dist_to_target, (1 - fracs) * d, atol=1e-6)


@pytest.mark.parametrize("name", ["angular_a1", "cka"])
def test_subdivide_path_and_explicit_input(name):
    space = SPACES[name]()
    a, b = _endpoints(space)
    k = 5
    P = gp.subdivide(space, a, b, k)  # stacked [k+1, ...]
    res = gp.analyze_path(space, P, b)
    np.testing.assert_allclose(res.straightness, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.proj_t, np.arange(k + 1) / k, atol=1e-6)
    np.testing.assert_allclose(res.turning, 0.0, atol=1e-5)

    # interior points only, with the input given explicitly
    inner = P[1:-1]
    res2 = gp.analyze_path(space, inner, b, input_point=a)
    fr = np.arange(1, k) / k
    d = float(space.distance(a, b))
    np.testing.assert_allclose(res2.proj_t, fr, atol=1e-6)
    np.testing.assert_allclose(res2.dist_to_input, fr * d, atol=1e-6)
    np.testing.assert_allclose(res2.direct, d, rtol=1e-9)
    np.testing.assert_allclose(res2.length, (fr[-1] - fr[0]) * d, rtol=1e-6)
    np.testing.assert_allclose(res2.straightness, d / ((fr[-1] - fr[0]) * d), rtol=1e-6)


def test_reversing_path_turns_by_pi():
    space = gp.AngularCKA()
    a, b = _endpoints(space)
    pts = [a, space.geodesic(a, b, 0.6), space.geodesic(a, b, 0.3)]
    res = gp.analyze_path(space, pts, b)
    np.testing.assert_allclose(res.turning, [math.pi], atol=1e-5)
    d = float(space.distance(a, b))
    np.testing.assert_allclose(res.length, 0.9 * d, rtol=1e-6)


def _orthonormal_detour(space, a, b, h):
    """Point c at distance h from the midpoint m of a-b, in a direction orthogonal to the geodesic."""
    m = space.geodesic(a, b, 0.5)
    v = space.log(m, b)
    w = space.log(m, space.point(_rep(7, a.shape[0], 6)))
    w = w - space.inner(m, w, v) / space.inner(m, v, v) * v
    w = w * (h / space.norm(m, w))
    return space.exp(m, w)


def test_known_detour_in_flat_space():
    space = gp.Stress()
    a, b = _endpoints(space)
    D = float(space.distance(a, b))
    h = 0.8 * D
    c = _orthonormal_detour(space, a, b, h)
    res = gp.analyze_path(space, [a, c, b], b)
    leg = math.hypot(D / 2, h)
    np.testing.assert_allclose(res.steps, [leg, leg], rtol=1e-9)
    np.testing.assert_allclose(res.length, 2 * leg, rtol=1e-9)
    np.testing.assert_allclose(res.straightness, D / (2 * leg), rtol=1e-9)
    # exterior angle at c: pi - 2 atan((D/2) / h)
    np.testing.assert_allclose(res.turning, [math.pi - 2 * math.atan2(D / 2, h)], atol=1e-7)
    np.testing.assert_allclose(res.proj_t, [0.0, 0.5, 1.0], atol=1e-9)
    np.testing.assert_allclose(res.proj_residual, [0.0, h, 0.0], atol=1e-7)
    np.testing.assert_allclose(res.dist_to_target, [D, leg, 0.0], atol=1e-7)


def test_mixed_widths_and_raw_consistency():
    space = gp.AngularShape(alpha=1.0)
    x = _rep(3, 12, 4)
    xs = [x, _related(4, x, 9), _related(5, x, 2), _related(6, x, 15)]  # 15 > n: Gram route
    pts = [space.point(v) for v in xs]
    y = gp.target_point(space, np.arange(12) % 3, num_classes=3)
    res = gp.analyze_path(space, pts, y)
    steps = [float(gp.distance(space, xs[i], xs[i + 1])) for i in range(3)]
    np.testing.assert_allclose(res.steps, steps, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.length, sum(steps), rtol=1e-7)
    np.testing.assert_allclose(res.dist_to_target, [float(space.distance(p, y)) for p in pts], rtol=1e-7)
    np.testing.assert_allclose(res.direct, float(space.distance(pts[0], y)), rtol=1e-9)
    ang = float(gp.angle(space, pts[1], pts[2], pts[3]))
    np.testing.assert_allclose(res.turning[1], math.pi - ang, atol=1e-7)
    for i in (2, 3):
        pr = gp.project(space, pts[0], y, pts[i])
        np.testing.assert_allclose(res.proj_t[i], float(pr.t), atol=1e-7)
        np.testing.assert_allclose(res.proj_residual[i], float(pr.distance), atol=1e-6)
    assert np.all(np.isfinite(np.asarray(res.turning)))


def test_short_paths():
    space = gp.AngularCKA()
    a, b = _endpoints(space)
    r1 = gp.analyze_path(space, [a], b)
    assert r1.steps.shape == (0,) and r1.turning.shape == (0,)
    assert float(r1.length) == 0.0 and float(r1.straightness) == 1.0
    r2 = gp.analyze_path(space, [a, b], b)
    assert r2.steps.shape == (1,) and r2.turning.shape == (0,)
    np.testing.assert_allclose(r2.straightness, 1.0, atol=1e-9)


def test_repeated_layer_gives_zero_turning():
    space = gp.AngularShape(alpha=1.0)
    a, b = _endpoints(space)
    c = space.geodesic(a, b, 0.5)
    res = gp.analyze_path(space, [a, c, c, b], b)
    assert np.all(np.isfinite(np.asarray(res.turning)))
    np.testing.assert_allclose(res.turning, 0.0, atol=1e-6)


def test_bad_inputs():
    space = gp.AngularCKA()
    a, b = _endpoints(space)
    with pytest.raises(ValueError):
        gp.analyze_path(space, [], b)
    with pytest.raises(ValueError):
        gp.analyze_path(space, jnp.ones((3, 4)), b)  # not stacked points
    with pytest.raises(ValueError):
        gp.target_point(space, np.array([0, 1, 5]), num_classes=3)
    with pytest.raises(ValueError):
        gp.target_point(space, np.array([0, 1, 2]), num_classes=3, kind="softmax")
    with pytest.raises(ValueError):
        gp.target_point(space, np.array([0, 1, 2]), num_classes=3, kind="nope")


# ------------------------------------------------------------------------------------------------
# jit / grad


def test_eager_equals_jit():
    space = gp.AngularShape(alpha=1.0)
    x = _rep(10, 12, 4)
    pts = [space.point(v) for v in (x, _related(11, x, 6), _related(12, x, 3), _related(13, x, 8))]
    y = gp.target_point(space, np.arange(12) % 4, num_classes=4)
    eager = gp.analyze_path(space, pts, y)
    jitted = jax.jit(gp.analyze_path)(space, pts, y)
    jitted2 = jax.jit(lambda p, t: gp.analyze_path(space, p, t, input_point=pts[0]))(pts, y)
    for f in eager._fields:
        np.testing.assert_allclose(getattr(jitted, f), getattr(eager, f), rtol=1e-10, atol=1e-12, err_msg=f)
        # layer 0 is analysed against an explicit input here: d(x, x) is round-off (~1e-8), not exactly 0
        np.testing.assert_allclose(getattr(jitted2, f), getattr(eager, f), rtol=1e-7, atol=1e-7, err_msg=f)


def _grad_setup(space, widths):
    x = _rep(20, 10, widths[0])
    xs = [jnp.asarray(x)] + [jnp.asarray(_related(21 + i, x, w)) for i, w in enumerate(widths[1:])]
    y = gp.target_point(space, np.arange(10) % 3, num_classes=3)

    def analysis(h):
        pts = [space.point(v) for v in (xs[0], h, *xs[2:])]
        return gp.analyze_path(space, pts, y)

    def others(h):
        a = analysis(h)
        return (
            a.straightness
            + jnp.sum(a.dist_to_target)
            + jnp.sum(a.proj_t)
            + jnp.sum(a.proj_residual)
            + jnp.sum(a.turning)
            + jnp.sum(a.dist_to_input)
        )

    return xs[1], analysis, others


@pytest.mark.parametrize("name", ["angular_a1", "cka"])
def test_grad_of_length_matches_finite_differences(name):
    space = SPACES[name]()
    # shape space: equal widths (see test_grad_of_projection_with_mixed_widths for the mixed case)
    h0, analysis, others = _grad_setup(space, (4, 4, 4, 4) if name == "angular_a1" else (4, 5, 6, 3))
    length = jax.jit(lambda h: analysis(h).length)
    g = jax.grad(length)(h0)
    assert np.all(np.isfinite(np.asarray(g)))
    r = np.random.default_rng(0)
    eps = 1e-6
    for _ in range(3):
        u = jnp.asarray(r.standard_normal(h0.shape))
        fd = (length(h0 + eps * u) - length(h0 - eps * u)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(g, u), fd, rtol=1e-5, atol=1e-7)
    # every other field is differentiable too (finite gradients)
    gf = jax.grad(others)(h0)
    assert np.all(np.isfinite(np.asarray(gf)))


def test_grad_of_length_with_mixed_widths():
    space = gp.AngularShape(alpha=1.0)
    h0, analysis, _ = _grad_setup(space, (4, 5, 6, 3))
    g = jax.grad(lambda h: analysis(h).length)(h0)
    assert np.all(np.isfinite(np.asarray(g)))


def test_grad_of_projection_with_mixed_widths():
    """The gradient of the projection parameters through layers of different widths is the true one
    (directional finite differences, measured agreement 8e-10 relative; tolerance 1e-5), not just finite."""
    space = gp.AngularShape(alpha=1.0)
    h0, analysis, _ = _grad_setup(space, (4, 5, 6, 3))
    vg = jax.jit(jax.value_and_grad(lambda h: jnp.sum(analysis(h).proj_t)))  # one program for both
    g = vg(h0)[1]
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 1e-3
    check_directional_derivatives(lambda h: vg(h)[0], g, h0, seed=1)


# ------------------------------------------------------------------------------------------------
# target_point


def test_target_point_kinds():
    space = gp.AngularShape(alpha=1.0)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 1])
    t = gp.target_point(space, labels, num_classes=3)
    np.testing.assert_allclose(t, space.point(np.eye(3)[labels]), atol=1e-12)
    logits = 50.0 * np.eye(3)[labels]
    ts = gp.target_point(space, labels, num_classes=3, logits=logits, kind="softmax")
    assert float(space.distance(t, ts)) < 1e-6
    logits = np.random.default_rng(0).standard_normal((10, 3))
    ts = gp.target_point(space, labels, num_classes=3, logits=logits, kind="softmax")
    assert float(space.distance(t, ts)) > 0.1
    # jit-compatible
    tj = jax.jit(lambda l: gp.target_point(space, l, num_classes=3))(jnp.asarray(labels))
    np.testing.assert_allclose(tj, t, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# compare_paths


def _flat_resample(D, depth):
    """Stress-space path ``D [L, n, n]`` at relative depths ``depth``: the straight line between the two
    bracketing layers, at the fraction linear in depth (NumPy; the geodesics of the flat space)."""
    L = len(D)
    u = np.asarray(depth) * (L - 1)
    i = np.minimum(np.floor(u).astype(int), L - 2)
    f = (u - i)[:, None, None]
    return (1 - f) * D[i] + f * D[i + 1]


def test_compare_paths_and_input_point_values_in_flat_space():
    """compare_paths in the flat Stress space against a NumPy reference: the resampling between layers (5
    and 3 layers, ``num`` default and 7), ``method="nearest"``, ``cross`` and ``mean_aligned``; and
    analyze_path with an explicit ``input_point``. Distances are RMS differences of distance matrices
    (tests/geopath/reference.py). Measured error <= 9e-16; tolerance 1e-12."""
    space = gp.Stress()
    xa = [_rep(70 + i, 12, 3 + i) for i in range(5)]
    xb = [_rep(80 + i, 12, 4) for i in range(3)]
    DA = np.stack([R.distance_matrix(x) for x in xa])
    DB = np.stack([R.distance_matrix(x) for x in xb])
    pa, pb = [space.point(x) for x in xa], [space.point(x) for x in xb]
    cross = np.array([[R.stress_distance_points(a, b) for b in DB] for a in DA])
    for num, K in ((None, 5), (7, 7)):
        cmp = gp.compare_paths(space, pa, pb, num=num)
        depth = np.linspace(0, 1, K)
        ra, rb = _flat_resample(DA, depth), _flat_resample(DB, depth)
        aligned = np.array([R.stress_distance_points(a, b) for a, b in zip(ra, rb)])
        np.testing.assert_allclose(cmp.depth, depth, rtol=0, atol=1e-15)
        np.testing.assert_allclose(cmp.cross, cross, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cmp.aligned, aligned, rtol=0, atol=1e-12)
        np.testing.assert_allclose(float(cmp.mean_aligned), aligned.mean(), rtol=0, atol=1e-12)
    # resampled points between layers are not layers: the interpolation is really used
    assert abs(float(cmp.aligned[1]) - cross[1, 0]) > 1e-3
    # nearest at depths 0, .25, .5, .75, 1: layers 0..4 of a; 0, 1, 1, 2, 2 of b (ties round up)
    near = gp.compare_paths(space, pa, pb, method="nearest")
    expected = cross[[0, 1, 2, 3, 4], [0, 1, 1, 2, 2]]
    np.testing.assert_allclose(near.aligned, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(float(near.mean_aligned), expected.mean(), rtol=0, atol=1e-12)
    # analyze_path with an explicit input: every layer (the first included) is measured from it
    x_in, target = R.distance_matrix(_rep(90, 12, 6)), R.distance_matrix(_rep(91, 12, 2))
    res = gp.analyze_path(space, pa, jnp.asarray(target), input_point=jnp.asarray(x_in))
    d = lambda a, b: R.stress_distance_points(a, b)  # noqa: E731
    np.testing.assert_allclose(res.dist_to_input, [d(x_in, a) for a in DA], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.dist_to_target, [d(a, target) for a in DA], rtol=0, atol=1e-12)
    np.testing.assert_allclose(float(res.direct), d(x_in, target), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.steps, [d(DA[i], DA[i + 1]) for i in range(4)], rtol=0, atol=1e-12)
    # the projection onto the straight line x_in -> target: t = <a - x, y - x> / |y - x|^2
    iu = np.triu_indices(12, k=1)
    v = (target - x_in)[iu]
    t = np.array([np.dot((a - x_in)[iu], v) / np.dot(v, v) for a in DA])
    np.testing.assert_allclose(res.proj_t, t, rtol=0, atol=1e-12)
    resid = [d(a, x_in + ti * (target - x_in)) for a, ti in zip(DA, t)]
    np.testing.assert_allclose(res.proj_residual, resid, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["angular_a1", "cka"])
def test_compare_paths_resampling(name):
    space = SPACES[name]()
    a, b = _endpoints(space)
    d = float(space.distance(a, b))
    pa = gp.subdivide(space, a, b, 4)  # 5 layers at 0, .25, .5, .75, 1
    pb = gp.subdivide(space, a, b, 2)  # 3 layers at 0, .5, 1
    cmp = gp.compare_paths(space, pa, pb)
    assert cmp.cross.shape == (5, 3)
    np.testing.assert_allclose(cmp.depth, np.linspace(0, 1, 5))
    # both are the same geodesic, parametrised proportionally to depth: identical after resampling
    np.testing.assert_allclose(cmp.aligned, 0.0, atol=1e-6)
    np.testing.assert_allclose(cmp.mean_aligned, 0.0, atol=1e-6)
    fr_a, fr_b = np.linspace(0, 1, 5), np.linspace(0, 1, 3)
    np.testing.assert_allclose(cmp.cross, np.abs(fr_a[:, None] - fr_b[None, :]) * d, atol=1e-6)
    # nearest: depths .25 -> layer 1 of b (0.5; ties round up), .75 -> layer 2 (1.0)
    near = gp.compare_paths(space, list(pa), list(pb), method="nearest")
    np.testing.assert_allclose(near.aligned, np.array([0, 0.25, 0, 0.25, 0]) * d, atol=1e-6)
    # a path against itself
    self_cmp = gp.compare_paths(space, pa, pa, num=9)
    np.testing.assert_allclose(self_cmp.aligned, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.diag(np.asarray(self_cmp.cross)), 0.0, atol=1e-6)
    with pytest.raises(ValueError):
        gp.compare_paths(space, pa, pb, method="cubic")


def test_compare_paths_mixed_widths():
    space = gp.AngularShape(alpha=1.0)
    x = _rep(30, 12, 4)
    A = [space.point(v) for v in (x, _related(31, x, 8), _related(32, x, 3))]
    B = [space.point(v) for v in (x, _related(33, x, 5), _related(34, x, 6), _related(35, x, 2))]
    cmp = gp.compare_paths(space, A, B)
    assert cmp.aligned.shape == (4,)
    np.testing.assert_allclose(cmp.aligned[0], 0.0, atol=1e-6)  # same input
    np.testing.assert_allclose(cmp.aligned[-1], float(space.distance(A[-1], B[-1])), atol=1e-6)
    np.testing.assert_allclose(cmp.cross[1, 2], float(space.distance(A[1], B[2])), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# analyze_checkpoints


def test_analyze_checkpoints_matches_per_checkpoint():
    space = gp.AngularShape(alpha=1.0)
    x = _rep(40, 12, 4)
    T = 3
    reps = [[x, _related(41 + t, x, 6), _related(51 + t, x, 3), _related(61 + t, x, 5)] for t in range(T)]
    y = gp.target_point(space, np.arange(12) % 3, num_classes=3)
    stacked = gp.analyze_checkpoints(space, reps, y)
    assert stacked.length.shape == (T,)
    assert stacked.turning.shape == (T, 2)
    assert stacked.dist_to_target.shape == (T, 4)
    for t in range(T):
        single = gp.analyze_path(space, [space.point(v) for v in reps[t]], y)
        for f in single._fields:
            np.testing.assert_allclose(
                getattr(stacked, f)[t], getattr(single, f), rtol=1e-8, atol=1e-9, err_msg=f
            )
    # points in, and an explicit stacked array
    pts = [[space.point(v) for v in r] for r in reps]
    s2 = gp.analyze_checkpoints(space, pts, y, are_points=True)
    np.testing.assert_allclose(s2.length, stacked.length, rtol=1e-10)
    arr = jnp.stack([gp.stack_points(space, p) for p in pts])  # same widths at every checkpoint
    s3 = gp.analyze_checkpoints(space, arr, y, are_points=True)
    np.testing.assert_allclose(s3.length, stacked.length, rtol=1e-10)
    with pytest.raises(ValueError):
        gp.analyze_checkpoints(space, [reps[0], reps[1][:3]], y)


# ----------------------------------------------------------------------------
# metric turning angles at singular vertices; precomputed cross distances
# ----------------------------------------------------------------------------


def _log_turning(space, pts):
    """Turning angles from the angle between log vectors (the analysis before the metric angle)."""
    pts = space.common(*pts)
    out = []
    for a, b, c in zip(pts[:-2], pts[1:-1], pts[2:]):
        u, v = np.asarray(space.log(b, a)).ravel(), np.asarray(space.log(b, c)).ravel()
        out.append(math.pi - math.acos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))
    return np.array(out)


def test_turning_is_metric_angle_unchanged_at_smooth_corrected_at_singular_vertices():
    rng = np.random.default_rng(16)
    space = gp.AngularShape(alpha=1.0)
    x = rng.standard_normal((24, 6))
    widths = (20, 6, 18, 18, 18)  # vertex 1 is narrower than both neighbours; 2 and 3 are smooth
    pts = [space.point(x @ rng.standard_normal((6, w)) / 3 + rng.standard_normal((24, w))) for w in widths]
    target = space.point(rng.standard_normal((24, 10)))
    res = gp.analyze_path(space, pts, target)
    old = _log_turning(space, pts)
    ref = np.array([math.pi - float(gp.angle(space, *pts[i : i + 3])) for i in range(3)])
    np.testing.assert_allclose(np.asarray(res.turning), ref, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.turning)[1:], old[1:], atol=1e-12)
    assert float(res.turning[0]) - old[0] > 1e-2  # metric angle smaller => larger turning


def test_compare_paths_accepts_precomputed_cross_distances():
    rng = np.random.default_rng(17)
    space = gp.AngularShape(alpha=1.0)
    pa = [space.point(rng.standard_normal((20, w))) for w in (5, 7, 6)]
    pb = [space.point(rng.standard_normal((20, w))) for w in (4, 6)]
    ref = gp.compare_paths(space, pa, pb, method="nearest")
    joint = gp.pairwise_distances(space, pa + pb, are_points=True)
    got = gp.compare_paths(space, pa, pb, method="nearest", cross=joint[:3, 3:])
    for f in ref._fields:
        np.testing.assert_allclose(np.asarray(getattr(got, f)), np.asarray(getattr(ref, f)), atol=1e-12)
    with pytest.raises(ValueError, match="cross must have shape"):
        gp.compare_paths(space, pa, pb, cross=joint)
