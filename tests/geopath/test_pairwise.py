"""All-pairs / cross distances: values, symmetry, and no recompilation on repeated calls."""

from __future__ import annotations

import contextlib

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from . import reference as R
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


def _pair_compiles(counts) -> int:
    return sum(1 for n in counts["names"] if n and "_pair_block" in n)


def test_joint_stage_compiles_few_programs(rng):
    """Issue 15: one call compiles one program per pair of buckets plus ONE assembly (no eager scatters), and
    a call with more layers in the same buckets reuses every pair program (pair indices are padded)."""
    space = gp.AngularShape(alpha=1.0)
    x0 = rand_rep(rng, NL, 10)
    first = [np.asarray(related_rep(rng, x0, p)) for p in (3, 3, 3, 3, 3, 8, 8, 64)]
    pts = gp.points(space, first)
    plan = gp.pairwise_plan(space, pts)
    with count_compiles() as c:
        gp.pairwise_distances(space, pts, are_points=True).block_until_ready()
    names = [n for n in c["names"] if n]
    assert len(plan.blocks) == 5  # buckets of widths 3, 8 and 20 (64 > n); no pairs within the last
    assert _pair_compiles(c) <= len(plan.blocks), names
    assert sum("_assemble" in n for n in names) == 1, names
    allowed = ("_pair_block", "_assemble", "_stack_prepare", "_pad")
    assert all(any(a in n for a in allowed) for n in names), names  # no scatter/convert/concatenate/...
    # one more layer of width 3 (5 -> 6 members: same size class): the pair counts of its blocks change
    # (10 -> 15, 10 -> 12, 5 -> 6) but not their padded sizes, so nothing compiles but the assembly
    more = pts + [gp.points(space, [np.asarray(related_rep(rng, x0, 3))])[0]]
    with count_compiles() as c2:
        gp.pairwise_distances(space, more, are_points=True).block_until_ready()
    assert sum(1 for b in gp.pairwise_plan(space, more).blocks if b.p == 0 and b.q == 0) == 1
    assert _pair_compiles(c2) == 0, c2["names"]
    assert all("_assemble" in n for n in c2["names"] if n), c2["names"]
    # and cross comparisons of different compositions share programs too
    with count_compiles() as c3:
        gp.cross_distances(space, more[:3], more[5:], are_points=True).block_until_ready()
        gp.cross_distances(space, more[:2], more[6:], are_points=True).block_until_ready()
    with count_compiles() as c4:
        gp.cross_distances(space, more[1:3], more[6:], are_points=True).block_until_ready()
    assert _pair_compiles(c4) == 0, c4["names"]
    assert _pair_compiles(c3) > 0  # the counter sees pair programs


def test_plan_counts_every_pair_once(rng):
    space = gp.AngularCKA()
    shapes = [jax.ShapeDtypeStruct((NL, NL), jnp.float64)] * 7
    plan = gp.pairwise_plan(space, shapes)
    assert plan.devices == 1 and len(plan.buckets) == 1 and plan.sizes == (8,)
    assert sum(b.pairs for b in plan.blocks) == 21
    cross = gp.pairwise_plan(space, shapes[:3], shapes[3:])
    assert sum(b.pairs for b in cross.blocks) == 12
    x0 = rand_rep(rng, NL, 6)
    xs = [related_rep(rng, x0, p) for p in WIDTHS]
    plan = gp.pairwise_plan(
        gp.AngularShape(alpha=1.0), gp.points(gp.AngularShape(alpha=1.0), xs), chunk_size=3
    )
    assert sum(b.pairs for b in plan.blocks) == len(xs) * (len(xs) - 1) // 2
    for b in plan.blocks:
        assert b.chunk == 3 and b.chunks & (b.chunks - 1) == 0 and b.chunk * b.chunks >= b.pairs
    assert plan.padded_pairs >= 10
    assert sorted(i for g in plan.buckets for i in g) == list(range(len(xs)))


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_chunk_size_does_not_change_the_result(chunk, rng):
    space = gp.EuclideanShape(alpha=0.5)
    x0 = rand_rep(rng, NL, 6)
    xs = [related_rep(rng, x0, p) for p in (3, 3, 4, 9, 9, 9)]
    ref = to_np(gp.pairwise_distances(space, xs))
    np.testing.assert_allclose(
        to_np(gp.pairwise_distances(space, xs, chunk_size=chunk)), ref, rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(
        to_np(gp.cross_distances(space, xs[:2], xs[2:], chunk_size=chunk)),
        ref[:2, 2:],
        rtol=1e-12,
        atol=1e-13,
    )
    with pytest.raises(ValueError, match="chunk_size"):
        gp.pairwise_distances(space, xs, chunk_size=0)


# ------------------------------------------------------------------------------------------------------
# default-run value checks of the batched assembly (issue 27): width buckets, the Gram route, chunking


BUCKET_WIDTHS = (3, 3, 7, 64)  # two members of bucket 3, one of bucket 7, one on the Gram route (64 > NL)


@pytest.fixture(scope="module")
def bucket_case():
    """Layers of four widths (three width buckets, one of them the Gram route) and their distances from the
    independent NumPy reference (no geopath code), computed once for the module."""
    rng = np.random.default_rng(2707)
    xs = _layers(rng, BUCKET_WIDTHS)
    ys = _layers(rng, (8, 64))
    ref = lambda a, b: R.angular_shape_distance(a, b, 1.0)  # noqa: E731
    L = len(xs)
    D = np.array([[ref(xs[i], xs[j]) if i != j else 0.0 for j in range(L)] for i in range(L)])
    C = np.array([[ref(x, y) for y in ys] for x in xs])
    return xs, ys, D, C


@pytest.mark.parametrize("chunk", [None, 1])
def test_pairwise_over_width_buckets_matches_the_reference(chunk, bucket_case):
    """Every entry of the assembled matrix against the reference distance of its own pair: a pair written to
    the wrong cell, a missing symmetric fill, a bucket mixed up with another or a chunk boundary that drops
    or repeats a pair all fail here. Measured error <= 1.2e-15; tolerance 1e-10."""
    xs, ys, D, C = bucket_case
    space = gp.AngularShape(alpha=1.0)
    kw = {} if chunk is None else {"chunk_size": chunk}
    plan = gp.pairwise_plan(space, gp.points(space, xs), **kw)
    assert len(plan.buckets) == 3 and sum(b.pairs for b in plan.blocks) == 6  # the buckets really differ
    if chunk == 1:
        assert all(b.chunk == 1 for b in plan.blocks)
    assert np.all(D[~np.eye(len(xs), dtype=bool)] > 0.05)  # no trivially zero pair
    got = to_np(gp.pairwise_distances(space, xs, **kw))
    np.testing.assert_array_equal(np.diag(got), 0.0)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_allclose(got, D, rtol=0, atol=1e-10)
    np.testing.assert_allclose(to_np(gp.cross_distances(space, xs, ys, **kw)), C, rtol=0, atol=1e-10)
    # a sub-list in another order: the entries follow the layers, not their positions in the plan
    order = [3, 0, 2]
    np.testing.assert_allclose(
        to_np(gp.pairwise_distances(space, [xs[i] for i in order], **kw)), D[np.ix_(order, order)], atol=1e-10
    )
