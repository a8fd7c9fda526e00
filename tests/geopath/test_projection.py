"""geopath.project: exact and certified against an independent float64 dense-grid + Newton reference.

The shape-metric cases are built to be multimodal (narrow zero-padded layers between wider ones, as in a
network's path), and the test checks that they are: several local optima along the geodesic.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from .conftest import to_np

K = 8  # common (padded) width of the shape-metric cases: one compilation for all of them


def _unit(x):
    x = x - x.mean(0)
    return x / np.linalg.norm(x)


def _pad(x, k=K):
    return np.pad(x, ((0, 0), (0, k - x.shape[1])))


def _shape_case(rng, n=20):
    """(a, b, c) raw representations: input, class-like target, a narrow rectified layer."""
    wb, wc = rng.choice([1, 2, 3, 4, 8], 2)
    x = rng.standard_normal((n, 8))
    b = (x[:, :1] > 0).astype(float) @ np.ones((1, wb)) + 0.1 * rng.standard_normal((n, wb))
    c = np.maximum(x[:, :wc], 0) + 1e-3 * rng.standard_normal((n, wc))
    return x, b, c


def _aligned(a, b):
    u, _, vt = np.linalg.svd(b.T @ a)
    return b @ (u @ vt)


def _refine(f, fp, grid, values, maximise):
    """Best grid point, then Newton on f' (f'' by a central difference), kept within the grid cell."""
    k = int(np.argmax(values) if maximise else np.argmin(values))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    x = grid[k]
    for _ in range(10):
        e = 1e-6
        d2 = (fp(x + e) - fp(x - e)) / (2 * e)
        if (d2 < 0) if maximise else (d2 > 0):
            x = float(np.clip(x - fp(x) / d2, lo, hi))
    better = f(x) >= values[k] if maximise else f(x) <= values[k]
    n_local = int(np.sum((values[1:-1] > values[:-2]) & (values[1:-1] > values[2:])))
    if not maximise:
        n_local = int(np.sum((values[1:-1] < values[:-2]) & (values[1:-1] < values[2:])))
    return (x if better else grid[k]), n_local


def _nuc_derivative(m, dm):
    u, s, vt = np.linalg.svd(m)
    mask = s > s.max() * 1e-12
    return float(np.sum(np.diag(u.T @ dm @ vt.T) * mask))


def reference_angular(a, b, c, *, segment, num=6001):
    """Nearest point to c on the angular-shape geodesic a -> b: (t, distance, number of local optima)."""
    a, c = a / np.linalg.norm(a), c / np.linalg.norm(c)
    br = _aligned(a, b)
    br = br / np.linalg.norm(br)
    w = br - np.sum(a * br) * a
    theta = np.arctan2(np.linalg.norm(w), np.sum(a * br))
    u = w / np.linalg.norm(w)
    m1, m2 = a.T @ c, u.T @ c

    def h(s):
        return np.linalg.svd(np.cos(s) * m1 + np.sin(s) * m2, compute_uv=False).sum()

    def hp(s):
        return _nuc_derivative(np.cos(s) * m1 + np.sin(s) * m2, -np.sin(s) * m1 + np.cos(s) * m2)

    lo, hi = (0.0, theta) if segment else (theta / 2 - np.pi / 2, theta / 2 + np.pi / 2)
    grid = np.linspace(lo, hi, num)
    s, n_local = _refine(h, hp, grid, np.array([h(s) for s in grid]), maximise=True)
    return s / theta, np.arccos(min(h(s), 1.0)), n_local


def reference_euclidean(a, b, c, *, segment, num=6001):
    w = _aligned(a, b) - a

    def f(t):
        g = a + t * w
        return np.sum(g * g) + np.sum(c * c) - 2 * np.linalg.svd(g.T @ c, compute_uv=False).sum()

    def fp(t):
        return 2 * np.sum(a * w) + 2 * t * np.sum(w * w) - 2 * _nuc_derivative((a + t * w).T @ c, w.T @ c)

    grid = np.linspace(0.0, 1.0, num) if segment else np.linspace(-4.0, 5.0, num)
    t, n_local = _refine(f, fp, grid, np.array([f(t) for t in grid]), maximise=False)
    return t, np.sqrt(max(f(t), 0.0)), n_local


_SHAPES = {
    "angular": (gp.AngularShape(), reference_angular),
    "euclidean": (gp.EuclideanShape(), reference_euclidean),
}


@pytest.mark.parametrize("segment", [False, True], ids=["geodesic", "segment"])
@pytest.mark.parametrize("name", list(_SHAPES))
def test_matches_dense_reference_on_multimodal_cases(name, segment):
    space, reference = _SHAPES[name]
    rng = np.random.default_rng(7)
    f = jax.jit(lambda a, b, c: gp.project(space, a, b, c, segment=segment))
    multimodal = 0
    for _ in range(8):
        a, b, c = (_pad(np.asarray(space.point(jnp.asarray(x)))) for x in _shape_case(rng))
        pr = f(jnp.asarray(a), jnp.asarray(b), jnp.asarray(c))
        t_ref, d_ref, n_local = reference(a, b, c, segment=segment)
        multimodal += n_local > 1
        np.testing.assert_allclose(float(pr.t), t_ref, atol=1e-9, rtol=0)
        np.testing.assert_allclose(float(pr.distance), d_ref, atol=1e-9, rtol=0)
        assert 0.0 <= float(pr.gap) <= 1e-6 and bool(pr.converged), (float(pr.gap), bool(pr.converged))
        if segment:
            assert 0.0 <= float(pr.t) <= 1.0
    if not segment:
        assert multimodal >= 3, f"only {multimodal} of 8 cases are multimodal: the test lost its teeth"


def test_small_budget_is_flagged():
    """With no refinement rounds the certificate cannot close on a multimodal case: converged is False."""
    space = gp.AngularShape()
    rng = np.random.default_rng(7)
    flagged = 0
    for _ in range(4):
        a, b, c = (jnp.asarray(_pad(np.asarray(space.point(jnp.asarray(x))))) for x in _shape_case(rng))
        pr = gp.project(space, a, b, c, num_rounds=0, tol=1e-9)
        exact = gp.project(space, a, b, c)
        assert float(pr.gap) >= 0.0
        # the certificate is honest: the exact distance is no lower than distance - gap
        assert float(exact.distance) >= float(pr.distance) - float(pr.gap) - 1e-12
        flagged += not bool(pr.converged)
    assert flagged >= 1


_CLOSED = {"cka": gp.AngularCKA(), "cka_unbiased": gp.AngularCKA(unbiased=True), "stress": gp.Stress()}


@pytest.mark.parametrize("segment", [False, True], ids=["geodesic", "segment"])
@pytest.mark.parametrize("name", list(_CLOSED))
def test_closed_forms_are_global_minimisers(name, segment, rng):
    space = _CLOSED[name]
    x = rng.standard_normal((12, 4))
    a, b, c = (space.point(v) for v in (x, x @ rng.standard_normal((4, 6)), rng.standard_normal((12, 3))))
    pr = jax.jit(lambda a, b, c: gp.project(space, a, b, c, segment=segment))(a, b, c)
    assert float(pr.gap) == 0.0 and bool(pr.converged)
    lo, hi = (0.0, 1.0) if segment else (-6.0, 7.0)
    ts = jnp.linspace(lo, hi, 4001)
    d = jax.vmap(lambda t: space.distance(space.geodesic(a, b, t), c))(ts)
    assert float(pr.distance) <= float(jnp.min(d)) + 1e-12
    np.testing.assert_allclose(float(pr.distance), float(space.distance(space.geodesic(a, b, pr.t), c)))
    if segment:
        assert 0.0 <= float(pr.t) <= 1.0


ALL_SPACES = {
    "angular": gp.AngularShape(),
    "angular_a05": gp.AngularShape(alpha=0.5),
    "euclidean": gp.EuclideanShape(),
    "cka": gp.AngularCKA(),
    "stress": gp.Stress(),
    "affine": gp.AffineInvariant(),
}


def _triple(space, rng, dtype=np.float64):
    x = rng.standard_normal((12, 4))
    y = x @ rng.standard_normal((4, 5)) + 0.5 * rng.standard_normal((12, 5))
    z = rng.standard_normal((12, 3))
    return space.common(*(space.point(jnp.asarray(v, dtype)) for v in (x, y, z)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ALL_SPACES))
def test_degenerate_geodesic_gives_zero_with_zero_gradient(name, dtype, rng):
    """project(a, a, c): t = 0 exactly (it was 1e4..1e6 with gradients of 1e12), and finite gradients."""
    space = ALL_SPACES[name]
    a, _, c = _triple(space, rng, dtype)
    pr = jax.jit(lambda a, c: gp.project(space, a, a, c))(a, c)
    assert float(pr.t) == 0.0
    np.testing.assert_allclose(float(pr.distance), float(space.distance(a, c)), rtol=1e-5)
    grads = jax.jit(jax.grad(lambda a, b, c: gp.project(space, a, b, c).t, argnums=(0, 1, 2)))(a, a, c)
    for g in grads:
        assert np.all(to_np(g) == 0.0)


@pytest.mark.parametrize("name", list(ALL_SPACES))
def test_point_on_the_geodesic_or_at_an_end(name, rng):
    """c == a gives t = 0 (it was NaN for AffineInvariant), c == b gives t = 1; gradients finite."""
    space = ALL_SPACES[name]
    a, b, _ = _triple(space, rng)
    f = jax.jit(lambda a, b, c: gp.project(space, a, b, c))
    tol = 1e-5 if name == "affine" else 1e-9
    for c, t_want in ((a, 0.0), (b, 1.0)):
        pr = f(a, b, c)
        np.testing.assert_allclose(float(pr.t), t_want, atol=tol)
        grads = jax.grad(lambda a, b, c: gp.project(space, a, b, c).t, argnums=(0, 1, 2))(a, b, c)
        assert all(np.all(np.isfinite(to_np(g))) for g in grads)


@pytest.mark.parametrize("name", ["angular", "euclidean", "cka", "stress"])
def test_gradient_of_t_matches_finite_differences(name, rng):
    """d t / d (raw layer of c), by the implicit function theorem, against central differences."""
    space = ALL_SPACES[name]
    a, b, _ = _triple(space, rng)
    z = jnp.asarray(rng.standard_normal((12, 3)))

    def t_of(z):
        (c,) = (
            space.common(space.point(z))
            if not space.variable_width
            else (space.pad_to(space.point(z), a.shape[1]),)
        )
        return gp.project(space, a, b, c).t

    g = jax.jit(jax.grad(t_of))(z)
    t_jit = jax.jit(t_of)
    for _ in range(2):
        u = jnp.asarray(rng.standard_normal(z.shape))
        eps = 1e-6
        fd = (t_jit(z + eps * u) - t_jit(z - eps * u)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(g, u)), float(fd), rtol=1e-5, atol=1e-7)


def _eqns(jaxpr):
    """All equations of a jaxpr, recursing into sub-jaxprs (jit, custom_jvp, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


@pytest.mark.parametrize("name", list(ALL_SPACES))
def test_no_loop_primitives(name, rng):
    """project emits no while/scan loop: the construct behind the XLA:CPU hang (issue 16.5)."""
    space = ALL_SPACES[name]
    a, b, c = _triple(space, rng)
    stacked = tuple(jnp.stack([p, p]) for p in (a, b, c))
    for fn, args in (
        (lambda a, b, c: gp.project(space, a, b, c), (a, b, c)),
        (jax.grad(lambda a, b, c: gp.project(space, a, b, c).t), (a, b, c)),
        (jax.vmap(lambda a, b, c: gp.project(space, a, b, c).t), stacked),
    ):
        names = {eqn.primitive.name for eqn in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)}
        assert not names & {"while", "scan"}, (name, names & {"while", "scan"})


def test_decompositions_counted():
    """The angular shape projection: most candidates cost one values-only SVD (batched), few full SVDs."""
    space = gp.AngularShape()
    a, b, c = (space.point(np.random.default_rng(i).standard_normal((10, K))) for i in range(3))
    jaxpr = jax.make_jaxpr(lambda a, b, c: gp.project(space, a, b, c))(a, b, c).jaxpr
    full = values = 0
    for eqn in _eqns(jaxpr):
        if eqn.primitive.name == "svd":
            batch = int(np.prod(eqn.invars[0].aval.shape[:-2]))
            if eqn.params["compute_uv"]:
                full += batch
            else:
                values += batch
    print(f"angular shape project: {values} values-only SVDs, {full} full SVDs (traced, before CSE)")
    assert values == 8 + 16 * 2, values  # 8 initial candidates + 16 rounds of 2
    assert full <= 12, full


@pytest.mark.parametrize("name", ["angular", "cka", "stress", "affine"])
def test_grid_method_is_kept_as_reference(name, rng):
    space = ALL_SPACES[name]
    a, b, c = _triple(space, rng)
    exact = jax.jit(lambda a, b, c: gp.project(space, a, b, c))(a, b, c)
    grid = jax.jit(lambda a, b, c: gp.project(space, a, b, c, method="grid"))(a, b, c)
    assert float(exact.distance) <= float(grid.distance) + 1e-9
    if name != "affine":
        assert np.isnan(float(grid.gap))


def test_options_are_checked():
    space = gp.AngularShape()
    a = space.point(np.random.default_rng(0).standard_normal((6, 3)))
    with pytest.raises(ValueError, match="method"):
        gp.project(space, a, a, a, method="newton")
    with pytest.raises(ValueError, match="num_grid"):
        gp.project(space, a, a, a, num_grid=1)
