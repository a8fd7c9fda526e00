"""All-pairs / cross distances: values, symmetry, and no recompilation on repeated calls."""

from __future__ import annotations

import contextlib

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from .conftest import SPECS
from .conftest import ids
from .conftest import rand_rep
from .conftest import related_rep
from .conftest import to_np

NL = 20
WIDTHS = (3, 7, 8, 64, 200)  # feature route (p <= n) and Gram route (p > n); several width buckets

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations and jaxpr traces inside the block (jax.monitoring events)."""
    counts = {"compile": 0, "trace": 0, "names": []}

    def listener(event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            counts["compile"] += 1
            counts["names"].append(kwargs.get("fun_name"))
        elif event == _TRACE_EVENT:
            counts["trace"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _layers(rng, widths=WIDTHS, n=NL):
    x0 = rand_rep(rng, n, 10)
    return [related_rep(rng, x0, p, noise=0.8) for p in widths]


PW_SPECS = [SPECS[k] for k in ("angular_a1", "euclid_a05", "cka", "affine", "stress")]


@pytest.mark.parametrize("spec", PW_SPECS, ids=ids(PW_SPECS))
def test_pairwise_matches_individual(spec, rng):
    space = spec.space
    xs = _layers(rng)
    L = len(xs)
    Dm = to_np(gp.pairwise_distances(space, xs))
    assert Dm.shape == (L, L)
    np.testing.assert_array_equal(np.diag(Dm), 0.0)
    np.testing.assert_allclose(Dm, Dm.T, atol=0)
    pts = [space.point(x) for x in xs]
    ind = np.array(
        [[float(space.distance(pts[i], pts[j])) if i != j else 0.0 for j in range(L)] for i in range(L)]
    )
    np.testing.assert_allclose(Dm, ind, rtol=1e-8, atol=1e-10)
    if spec.ref is not None:
        ref = np.array([[spec.ref(xs[i], xs[j]) if i != j else 0.0 for j in range(L)] for i in range(L)])
        np.testing.assert_allclose(Dm, ref, rtol=1e-6, atol=1e-8)
    # the same from points
    Dp = to_np(gp.pairwise_distances(space, pts, are_points=True))
    np.testing.assert_allclose(Dp, Dm, rtol=1e-12, atol=1e-12)
    assert np.all(Dm[~np.eye(L, dtype=bool)] > 1e-3)


def test_pairwise_alpha_half_mixed_routes(rng):
    space = gp.AngularShape(alpha=0.5)
    xs = _layers(rng, (4, 9, 35))
    Dm = to_np(gp.pairwise_distances(space, xs))
    from . import reference as R

    for i in range(3):
        for j in range(3):
            if i != j:
                np.testing.assert_allclose(Dm[i, j], R.angular_shape_distance(xs[i], xs[j], 0.5), rtol=1e-6)


@pytest.mark.parametrize("spec", [SPECS["angular_a1"], SPECS["cka"]], ids=["angular_a1", "cka"])
def test_cross_distances(spec, rng):
    space = spec.space
    xs = _layers(rng, (3, 64, 7))
    ys = _layers(rng, (8, 200))
    C = to_np(gp.cross_distances(space, xs, ys))
    assert C.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(
                C[i, j], float(gp.distance(space, xs[i], ys[j])), rtol=1e-8, atol=1e-10
            )
    Cp = to_np(
        gp.cross_distances(space, [space.point(x) for x in xs], [space.point(y) for y in ys], are_points=True)
    )
    np.testing.assert_allclose(Cp, C, rtol=1e-12, atol=1e-12)
    # a layer against itself in the other list gives 0
    C2 = to_np(gp.cross_distances(space, xs, [xs[1], ys[0]]))
    assert C2[1, 0] <= 1e-6
    np.testing.assert_allclose(C2[:, 1], C[:, 0], rtol=1e-10)


def test_pairwise_does_not_recompile(rng):
    space = gp.AngularShape(alpha=1.0)
    widths = (3, 7, 64)
    first = [np.asarray(x) for x in _layers(rng, widths)]
    second = [np.asarray(x) for x in _layers(rng, widths)]
    new_n = [np.asarray(x) for x in _layers(rng, widths, n=NL + 1)]
    d1 = gp.pairwise_distances(space, first).block_until_ready()
    with count_compiles() as c:
        d2 = gp.pairwise_distances(space, second).block_until_ready()
    assert c["compile"] == 0, f"second call compiled: {c['names']}"
    assert c["trace"] == 0
    assert not np.allclose(to_np(d1), to_np(d2))  # it really computed something new
    # the counter itself works: new shapes do compile
    with count_compiles() as c_new:
        gp.pairwise_distances(space, new_n).block_until_ready()
    assert c_new["compile"] > 0
    # cross_distances too
    gp.cross_distances(space, first[:2], first[2:]).block_until_ready()
    with count_compiles() as c2:
        gp.cross_distances(space, second[:2], second[2:]).block_until_ready()
    assert c2["compile"] == 0, f"second cross call compiled: {c2['names']}"


def test_pairwise_is_differentiable(rng):
    space = gp.AngularShape(alpha=1.0)
    xs = [jnp.asarray(x) for x in _layers(rng, (5, 5, 6))]

    def via_pairwise(x0):
        return jnp.sum(gp.pairwise_distances(space, [x0, xs[1], xs[2]]))

    def via_loop(x0):
        p = [space.point(x0), space.point(xs[1]), space.point(xs[2])]
        return 2.0 * sum(space.distance(p[i], p[j]) for i in range(3) for j in range(i + 1, 3))

    g1 = to_np(jax.grad(via_pairwise)(xs[0]))
    g2 = to_np(jax.grad(via_loop)(xs[0]))
    assert np.all(np.isfinite(g1))
    np.testing.assert_allclose(g1, g2, rtol=1e-7, atol=1e-10)
