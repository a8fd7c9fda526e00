"""Gradients: finite differences (check_grads) and finiteness at degenerate inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import geopath as gp

from .conftest import SPECS
from .conftest import N
from .conftest import ids
from .conftest import orthogonal
from .conftest import rand_rep
from .conftest import related_rep

GRAD_SPECS = [SPECS[k] for k in ("angular_a1", "angular_a05", "cka", "affine")]
DEGEN_SPECS = [
    SPECS[k]
    for k in (
        "angular_a1",
        "angular_a05",
        "angular_a0",
        "euclid_a1",
        "euclid_a05",
        "cka",
        "cka_unbiased",
        "affine",
        "stress",
    )
]


def _data(rng, p=5, q=8):
    x = rand_rep(rng, N, p)
    y = related_rep(rng, x, q)
    z = related_rep(rng, 0.5 * (x[:, :4] + y[:, :4]), 6, noise=0.8)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(z)


# --------------------------------------------------------------------------
# 7a. finite-difference checks (float64)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", GRAD_SPECS, ids=ids(GRAD_SPECS))
def test_check_grads_distance(spec, rng):
    space = spec.space
    x, y, _ = _data(rng)

    def f(x, y):
        return space.distance(space.point(x), space.point(y))

    check_grads(f, (x, y), order=1, modes=("fwd", "rev"))
    # the convenience wrapper differentiates identically
    g1 = jax.grad(lambda x: gp.distance(space, x, y))(x)
    g2 = jax.grad(lambda x: f(x, y))(x)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-10, atol=1e-14)
    assert np.abs(np.asarray(g1)).max() > 1e-6


@pytest.mark.parametrize("spec", GRAD_SPECS, ids=ids(GRAD_SPECS))
def test_check_grads_geodesic(spec, rng):
    space = spec.space
    # equal widths: the aligned representative (an array) is unique and smooth in x
    x, y, _ = _data(rng, 5, 5)
    b = space.point(y)
    check_grads(lambda x: space.geodesic(space.point(x), b, 0.3), (x,), order=1, modes=("fwd", "rev"))
    if spec.family == "shape":
        # different widths: the zero-padded columns of the representative are only defined up to
        # a rotation, so differentiate the rotation-invariant g g^T instead
        x, y, _ = _data(rng, 5, 8)
        b = space.point(y)

        def gram_of_geodesic(x):
            g = space.geodesic(space.point(x), b, 0.3)
            return g @ g.T

        check_grads(gram_of_geodesic, (x,), order=1, modes=("fwd", "rev"))
    x, y, _ = _data(rng)
    b = space.point(y)
    a = space.point(x)
    check_grads(lambda t: space.geodesic(a, b, t), (jnp.asarray(0.4),), order=1, modes=("fwd", "rev"))
    # d/dt d(a, g(t)) = d(a, b) along the geodesic
    dd = jax.grad(lambda t: space.distance(a, space.geodesic(a, b, t)))(jnp.asarray(0.6))
    np.testing.assert_allclose(float(dd), float(space.distance(a, b)), rtol=1e-6)


@pytest.mark.parametrize("spec", GRAD_SPECS, ids=ids(GRAD_SPECS))
def test_check_grads_angle(spec, rng):
    space = spec.space
    x, y, z = _data(rng)
    b = space.point(y)
    c = space.point(z)
    check_grads(lambda x: gp.angle(space, space.point(x), b, c), (x,), order=1, modes=("fwd", "rev"))
    a = space.point(x)
    check_grads(lambda y: gp.angle(space, a, space.point(y), c), (y,), order=1, modes=("rev",))


def test_check_grads_affine_invariant_solves(rng):
    """The custom JVPs of AffineInvariant's triangular solves (one solve per tangent, after the primal one, so
    that no two LAPACK calls run at once: docs/threads.md) against finite differences, to second order in
    both modes; and the methods built on them."""
    from geopath._src.spaces import spd

    tri = jnp.asarray(np.tril(rng.standard_normal((5, 5))) + 3 * np.eye(5))
    y = jnp.asarray(rng.standard_normal((5, 5)))
    for trans in (0, 1):
        check_grads(lambda l, y: spd._ordered_solve(l, y, trans), (tri, y), order=2, modes=("fwd", "rev"))
    check_grads(spd._congruence, (tri, y + y.T), order=2, modes=("fwd", "rev"))
    # well-conditioned points (5 x 5 covariances of 16 inputs): finite differences are accurate there
    space = gp.AffineInvariant(kind="covariance")
    x, z, w = (jnp.asarray(rand_rep(rng, 16, 5)) for _ in range(3))
    a, b, v = space.point(x), space.point(z), space.log(space.point(x), space.point(w))
    for f, args in [
        (space.transport, (a, b, v)),
        (space.tangent_coords, (a, v)),
        (space.inner, (a, v, v + a)),
    ]:
        check_grads(f, args, order=1, modes=("fwd", "rev"))
    # Gram points (rank 5 of 16, ridge 1e-3): the same derivatives as JAX's own solve rules (measured 1e-13)
    space = gp.AffineInvariant()
    x, z, w = _data(rng)
    a, b, v = space.point(x), space.point(z), space.log(space.point(x), space.point(w))
    dirs = tuple(jnp.asarray(d + d.T) for d in rng.standard_normal((3,) + a.shape))
    ours = jax.jvp(space.transport, (a, b, v), dirs)[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spd, "_ordered_solve", lambda l, y, trans=0: spd._solve(l, y, trans))
        mp.setattr(spd, "_congruence", lambda l, v: gp._src.linalg.sym(spd._solve(l, spd._solve(l, v).T)))
        jaxs = jax.jvp(space.transport, (a, b, v), dirs)[1]
    np.testing.assert_allclose(
        np.asarray(ours), np.asarray(jaxs), rtol=1e-10, atol=1e-10 * float(jnp.abs(jaxs).max())
    )


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_check_grads_gram_route(alpha, rng):
    """p > n: the Gram route (psd_sqrt of a rank-deficient Gram, whitening on its spectrum)."""
    space = gp.AngularShape(alpha=alpha)
    x = jnp.asarray(rand_rep(rng, 10, 25))
    y = jnp.asarray(related_rep(rng, np.asarray(x), 30))
    assert space.point(x).shape == (10, 10)
    check_grads(lambda x: space.distance(space.point(x), space.point(y)), (x,), order=1, modes=("fwd", "rev"))


def _equal_sv_rep(rng, n, p, scale=3.0):
    """x with orthogonal, equal-norm, centred columns: all singular values equal."""
    m = rng.standard_normal((n, p))
    m = m - m.mean(0)
    q, _ = np.linalg.qr(m)
    return scale * q[:, :p]


@pytest.mark.parametrize(
    "spec",
    [SPECS["angular_a1"], SPECS["angular_a05"], SPECS["cka"]],
    ids=["angular_a1", "angular_a05", "cka"],
)
def test_check_grads_at_repeated_singular_values(spec, rng):
    """Distance is smooth at a representation with repeated singular values: the gradient must be
    the true one (not just finite)."""
    space = spec.space
    x = jnp.asarray(_equal_sv_rep(rng, N, 5))
    sv = np.linalg.svd(np.asarray(x) - np.asarray(x).mean(0), compute_uv=False)
    np.testing.assert_allclose(sv, sv[0], rtol=1e-12)
    y = jnp.asarray(related_rep(rng, rand_rep(rng, N, 5), 6))
    check_grads(lambda x: space.distance(space.point(x), space.point(y)), (x,), order=1, modes=("fwd", "rev"))


# --------------------------------------------------------------------------
# 7b. finite gradients at degenerate inputs
# --------------------------------------------------------------------------


def _finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(l)))) for l in jax.tree_util.tree_leaves(tree))


def _degenerate_cases(rng):
    x = rand_rep(rng, N, 5)
    eq = _equal_sv_rep(rng, N, 5)
    eq2 = _equal_sv_rep(rng, N, 4, scale=0.7)
    wide = rand_rep(rng, 10, 30)  # p > n (rank n - 1 after centring)
    dup = np.concatenate([x, x[:, :2], 2.0 * x[:, 3:4]], axis=1)  # duplicated columns
    return {
        "identical": (x, x.copy()),
        "affine_copy": (x, 2.0 * x + 1.0),
        "rotated_copy": (x, x @ orthogonal(rng, 5)),
        "repeated_sv_vs_random": (eq, related_rep(rng, x, 6)),
        "repeated_sv_both": (eq, np.concatenate([eq2, np.zeros((N, 1))], axis=1)),
        "repeated_sv_identical": (eq, eq.copy()),
        "wide_vs_wide": (wide, related_rep(rng, wide, 40)),
        "wide_identical": (wide, wide.copy()),
        "duplicated_columns": (dup, related_rep(rng, x, 6)),
        "duplicated_columns_identical": (dup, dup.copy()),
    }


@pytest.mark.parametrize("spec", DEGEN_SPECS, ids=ids(DEGEN_SPECS))
def test_finite_gradients_at_degenerate_inputs(spec, rng):
    space = spec.space

    def f(x, y):
        return space.distance(space.point(x), space.point(y))

    grad_xy = jax.grad(f, argnums=(0, 1))
    grad_same = jax.grad(lambda x: f(x, x))
    bad = []
    seen = set()
    for name, (x, y) in _degenerate_cases(rng).items():
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        val = float(f(x, y))
        grads = list(grad_xy(x, y))
        key = (x.shape, float(x[0, 0]))
        if key not in seen:  # d(x, x) differentiated through both arguments at once
            seen.add(key)
            grads.append(grad_same(x))
        if not (np.isfinite(val) and _finite(grads)):
            bad.append(f"{name}: value={val}, finite grads={[_finite(g) for g in grads]}")
            continue
        if (
            name in ("identical", "repeated_sv_identical", "wide_identical", "duplicated_columns_identical")
            and val > 1e-6
        ):
            bad.append(f"{name}: d(x, x) = {val}")
        # (EuclideanShape and Stress keep the data's scale, so 2x + 1 is a different point)
        invariant = name == "rotated_copy" or (name == "affine_copy" and spec.angular)
        if invariant and val > 1e-6:
            bad.append(f"{name}: invariant copy at distance {val}")
    assert not bad, "; ".join(bad)


PATH_SPECS = [SPECS[k] for k in ("angular_a1", "angular_a05", "cka", "affine", "stress")]


@pytest.mark.parametrize("spec", PATH_SPECS, ids=ids(PATH_SPECS))
def test_finite_gradients_path_length(spec, rng):
    space = spec.space
    cases = _degenerate_cases(rng)
    x, _ = cases["identical"]
    eq, _ = cases["repeated_sv_vs_random"]
    dup, _ = cases["duplicated_columns"]
    # consecutive identical points, repeated singular values, duplicated columns, invariant copy
    xs = [jnp.asarray(v) for v in (x, x.copy(), eq, dup, 2.0 * dup + 1.0)]

    def length(xs):
        return gp.path_length(space, [space.point(v) for v in xs])

    vg = jax.jit(jax.value_and_grad(length))  # one program for the gradient and the differences

    def f(xs):
        return vg(xs)[0]

    val, g = vg(xs)
    val = float(val)
    assert np.isfinite(val) and val > 0
    assert _finite(g), [bool(np.all(np.isfinite(np.asarray(gi)))) for gi in g]
    # the true gradient, not just a finite one, where the length is smooth: central differences along
    # directions that move the two identical layers together (a zero step is a kink; along these it stays
    # zero) and the repeated-singular-value layer, the rank-deficient layers held fixed (there the distance
    # has a kink and the gradient is one subgradient of it; only its finiteness is asserted above).
    # Measured agreement: <= 5e-9 relative over the five spaces (tolerance 1e-5).
    r = np.random.default_rng(7)
    for _ in range(2):
        u = [r.standard_normal(v.shape) for v in xs]
        u[1], u[3], u[4] = u[0], 0.0 * u[3], 0.0 * u[4]
        eps = 1e-6
        plus = f([v + eps * w for v, w in zip(xs, u)])
        minus = f([v - eps * w for v, w in zip(xs, u)])
        fd = (float(plus) - float(minus)) / (2 * eps)
        dd = sum(float(jnp.vdot(gi, w)) for gi, w in zip(g, u))
        np.testing.assert_allclose(dd, fd, rtol=1e-5, atol=1e-7)
