"""Metric axioms, invariances and closed forms of the distances (vs. float64 references)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg as sla

import geopath as gp

from . import reference as R
from .conftest import ALL
from .conftest import SPECS
from .conftest import N
from .conftest import ids
from .conftest import orthogonal
from .conftest import rand_rep
from .conftest import related_rep
from .conftest import to_np
from .conftest import well_conditioned


def dist(space, x, y) -> float:
    return float(space.distance(space.point(x), space.point(y)))


def _tol(spec) -> float:
    # arccos(1 - O(eps)) and sqrt(O(eps) * n) both give ~1e-8..1e-6 at coincident points.
    return 2e-6 if spec.family in ("shape", "sphere") else 1e-7


# --------------------------------------------------------------------------
# 1. metric axioms
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_metric_axioms(spec, rng):
    space = spec.space
    # 7 representations of alternating widths (p != q), some related, some independent.
    xs = []
    for i in range(7):
        p = (5, 8)[i % 2]
        if i >= 2 and i % 3 == 0:
            xs.append(related_rep(rng, xs[i - 2], p, noise=0.4))
        else:
            xs.append(rand_rep(rng, N, p))
    pts = [space.point(x) for x in xs]
    L = len(pts)
    D = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            D[i, j] = float(space.distance(pts[i], pts[j]))

    # identity of indiscernibles
    assert np.all(np.abs(np.diag(D)) <= _tol(spec)), np.diag(D)
    off = D[~np.eye(L, dtype=bool)]
    assert np.all(off > 1e-3), "distinct representations must have positive distance"
    # symmetry
    np.testing.assert_allclose(D, D.T, rtol=1e-9, atol=1e-9)
    # angular spaces stay within [0, pi]
    if spec.angular:
        assert np.all(D <= np.pi + 1e-12) and np.all(D >= 0)
    # triangle inequality over all ordered triples
    worst = -np.inf
    for i, j, k in itertools.permutations(range(L), 3):
        worst = max(worst, D[i, k] - D[i, j] - D[j, k])
    assert worst <= 1e-9, f"triangle inequality violated by {worst}"
    # and the values are the right ones
    if spec.ref is not None:
        for i, j in itertools.combinations(range(L), 2):
            np.testing.assert_allclose(D[i, j], spec.ref(xs[i], xs[j]), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# 2. invariances and non-invariances
# --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_rotation_translation_invariance(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    d0 = dist(space, x, y)
    q = orthogonal(rng, 5)
    c = 3.0 * rng.standard_normal((1, 5))
    np.testing.assert_allclose(dist(space, x @ q, y), d0, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dist(space, x + c, y), d0, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dist(space, x @ q + c, y @ orthogonal(rng, 8)), d0, rtol=1e-8, atol=1e-9)
    assert dist(space, x, x @ q + c) <= _tol(spec)
    # appending all-zero features changes nothing (zero padding / embedding in more dims)
    xz = np.concatenate([x, np.zeros((N, 3))], axis=1)
    np.testing.assert_allclose(dist(space, xz, y), d0, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_isotropic_scale(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    d0 = dist(space, x, y)
    if spec.family == "flat":
        # Stress is NOT scale invariant: d(x, s x) = |s - 1| * rms of the distances.
        dx = R.distance_matrix(x)[np.triu_indices(N, 1)]
        np.testing.assert_allclose(dist(space, x, 3.0 * x), 2.0 * np.sqrt(np.mean(dx**2)), rtol=1e-9)
        assert abs(dist(space, 3.0 * x, y) - d0) > 1e-2
    elif spec.family == "shape" and not spec.angular:
        # EuclideanShape keeps the data's scale (documented): homogeneous of degree 1
        np.testing.assert_allclose(dist(space, 7.5 * x, 7.5 * y), 7.5 * d0, rtol=1e-8)
        assert abs(dist(space, 7.5 * x, y) - d0) > 1e-2
        np.testing.assert_allclose(
            dist(space, x, 3.0 * x),
            2.0 * np.linalg.norm(R.euclidean_shape_features(x, spec.alpha)),
            rtol=1e-7,
        )
    else:
        np.testing.assert_allclose(dist(space, 7.5 * x, y), d0, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(dist(space, 0.01 * x, 40.0 * y), d0, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("spec", [SPECS["angular_a0"], SPECS["euclid_a0"]], ids=["angular_a0", "euclid_a0"])
def test_alpha0_affine_invariance(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 7)
    d0 = dist(space, x, y)
    xc = x - x.mean(0)
    for _ in range(2):
        a = well_conditioned(rng, 5, 0.5, 2.0)
        # EuclideanShape keeps the scale ||Xc||_F: use maps that preserve it
        a *= np.linalg.norm(xc) / np.linalg.norm(xc @ a)
        c = rng.standard_normal((1, 5))
        # exact invariance (whiten_eps = 0 by default): measured |error| <= 2e-15 rad (angular) and 4e-14 on
        # distances 20-57 (Euclidean) over 20 seeds, i.e. round-off; tolerance 1e-12 relative
        np.testing.assert_allclose(dist(space, x @ a + c, y), d0, rtol=1e-12, atol=1e-13)
    # different widths: an injective linear map into more dimensions
    b = rng.standard_normal((5, 9))
    b *= np.linalg.norm(xc) / np.linalg.norm(xc @ b)
    np.testing.assert_allclose(dist(space, x @ b, y), d0, rtol=1e-12, atol=1e-13)  # measured <= 2e-14


@pytest.mark.parametrize(
    "spec",
    [SPECS[k] for k in ("angular_a1", "angular_a05", "euclid_a1", "euclid_a05", "cka", "affine", "stress")],
    ids=["angular_a1", "angular_a05", "euclid_a1", "euclid_a05", "cka", "affine", "stress"],
)
def test_not_invariant_to_nonorthogonal_maps(spec, rng):
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 5)
    d0 = dist(space, x, y)
    a = well_conditioned(rng, 5, 0.2, 3.0)
    assert abs(dist(space, x @ a, y) - d0) > 1e-2
    assert dist(space, x, x @ a) > 1e-2


@pytest.mark.parametrize("spec", ALL, ids=ids(ALL))
def test_row_permutation(spec, rng):
    """Permuting the inputs of both representations is a symmetry; of only one, it is not."""
    space = spec.space
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    perm = rng.permutation(N)
    d0 = dist(space, x, y)
    np.testing.assert_allclose(dist(space, x[perm], y[perm]), d0, rtol=1e-8, atol=1e-9)
    assert dist(space, x[perm], x) > 5e-2
    assert abs(dist(space, x[perm], y) - d0) > 1e-3


# --------------------------------------------------------------------------
# 3. closed forms vs references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("n,p,q", [(16, 5, 8), (12, 30, 4), (12, 25, 40)])
def test_shape_distances_vs_reference(alpha, n, p, q, rng):
    x = rand_rep(rng, n, p)
    y = related_rep(rng, x, q)
    ang = gp.AngularShape(alpha=alpha)
    euc = gp.EuclideanShape(alpha=alpha)
    d_ang = dist(ang, x, y)
    d_euc = dist(euc, x, y)
    if alpha == 0.0 and min(p, q) >= n - 1:
        # fully whitened, both span the whole centred input space: the same point up to whiten_eps
        assert d_ang < 1e-3
        assert d_ang < 1e-2 * R.angular_shape_distance(x, y, 1.0)
        return
    np.testing.assert_allclose(d_ang, R.angular_shape_distance(x, y, alpha), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(d_euc, R.euclidean_shape_distance(x, y, alpha), rtol=1e-7, atol=1e-8)
    # the convenience wrapper on raw activations
    np.testing.assert_allclose(float(gp.distance(ang, x, y)), d_ang, rtol=1e-10)
    # scipy Procrustes residual on the (reference) normalised representations
    a = R.shape_features(x, alpha)
    b = R.shape_features(y, alpha)
    ap, bp = R.pad_pair(a, b)
    rot, _ = sla.orthogonal_procrustes(bp, ap)
    res = np.linalg.norm(bp @ rot - ap)
    np.testing.assert_allclose(np.cos(d_ang), 1.0 - 0.5 * res**2, rtol=1e-7, atol=1e-9)
    if alpha == 1.0:
        # the Euclidean point is the centred data: d_E^2 = |Xc|^2 + |Yc|^2 - 2 |Xc| |Yc| cos d_A
        nx = np.linalg.norm(x - x.mean(0))
        ny = np.linalg.norm(y - y.mean(0))
        np.testing.assert_allclose(d_euc**2, nx**2 + ny**2 - 2 * nx * ny * np.cos(d_ang), rtol=1e-7)


@pytest.mark.parametrize("p,q", [(5, 5), (6, 4)])
def test_orthogonal_procrustes_vs_scipy(p, q, rng):
    x = rng.standard_normal((N, p))
    y = x[:, :q] @ rng.standard_normal((q, q)) + 0.5 * rng.standard_normal((N, q))
    out = gp.orthogonal_procrustes(x, y)
    k = max(p, q)
    xp, yp = R.pad_to(x, k), R.pad_to(y, k)
    r_ref, scale = sla.orthogonal_procrustes(xp, yp)
    res_ref = np.linalg.norm(xp @ r_ref - yp)
    np.testing.assert_allclose(float(out.residual), res_ref, rtol=1e-9)
    np.testing.assert_allclose(float(out.nuclear_norm), scale, rtol=1e-9)
    rot = to_np(out.rotation)
    assert rot.shape == (k, k)
    np.testing.assert_allclose(rot.T @ rot, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(to_np(out.aligned), xp @ rot, atol=1e-10)
    if p == q:  # generic full-rank problem: the rotation is unique
        np.testing.assert_allclose(rot, r_ref, atol=1e-9)
        np.testing.assert_allclose(to_np(out.aligned), xp @ r_ref, atol=1e-9)


def test_linear_cka_vs_formula(rng):
    space = gp.AngularCKA()
    for p, q in [(5, 8), (30, 3)]:
        x = rand_rep(rng, N, p)
        y = related_rep(rng, x, q)
        cka = R.linear_cka(x, y)
        np.testing.assert_allclose(np.cos(dist(space, x, y)), cka, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dist(space, x, y), np.arccos(cka), rtol=1e-8)
        # the point is the normalised doubly-centred Gram
        np.testing.assert_allclose(to_np(space.point(x)), R.cka_point(R.linear_gram(x)), atol=1e-12)


def test_unbiased_cka_vs_song_hsic(rng):
    space = gp.AngularCKA(unbiased=True)
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    ref = R.unbiased_linear_cka(x, y)  # Song et al. unbiased HSIC (no U-centering)
    np.testing.assert_allclose(np.cos(dist(space, x, y)), ref, rtol=1e-9, atol=1e-12)
    a = to_np(space.point(x))
    np.testing.assert_allclose(a, R.cka_point(R.linear_gram(x), unbiased=True), atol=1e-12)
    # U-centred matrices have zero diagonal and zero row sums
    np.testing.assert_allclose(np.diag(a), 0.0, atol=1e-14)
    np.testing.assert_allclose(a.sum(1), 0.0, atol=1e-12)
    # unbiased and biased CKA differ
    assert abs(dist(space, x, y) - dist(gp.AngularCKA(), x, y)) > 1e-3


def test_rbf_cka_median_heuristic(rng):
    """RBF kernel with length scale = rbf_scale * median pairwise distance (squared: median of d^2)."""
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    for scale in (1.0, 2.5):
        space = gp.AngularCKA(kernel="rbf", rbf_scale=scale)
        a = to_np(space.point(x))
        b = to_np(space.point(y))
        ka = R.rbf_gram(x, R.rbf_median_sigma(x, scale))
        kb = R.rbf_gram(y, R.rbf_median_sigma(y, scale))
        np.testing.assert_allclose(a, R.cka_point(ka), atol=1e-11)
        np.testing.assert_allclose(
            float(space.distance(a, b)), R.sphere_distance(R.cka_point(ka), R.cka_point(kb)), rtol=1e-8
        )
        ua = to_np(gp.AngularCKA(kernel="rbf", rbf_scale=scale, unbiased=True).point(x))
        np.testing.assert_allclose(ua, R.cka_point(ka, unbiased=True), atol=1e-11)
    # the bandwidth matters ...
    assert (
        abs(dist(gp.AngularCKA(kernel="rbf", rbf_scale=0.3), x, y) - dist(gp.AngularCKA(kernel="rbf"), x, y))
        > 1e-3
    )
    # ... and a huge bandwidth tends to linear CKA
    big = gp.AngularCKA(kernel="rbf", rbf_scale=1e3)
    np.testing.assert_allclose(dist(big, x, y), dist(gp.AngularCKA(), x, y), atol=1e-5)


def test_affine_invariant_vs_generalized_eigh(rng):
    space = gp.AffineInvariant(eps=1e-3)
    for p, q in [(5, 8), (20, 30)]:
        x = rand_rep(rng, N, p)
        y = related_rep(rng, x, q)
        a = to_np(space.point(x))
        np.testing.assert_allclose(a, R.spd_point(x, 1e-3), atol=1e-12)
        np.testing.assert_allclose(np.trace(a), N * (1 + 1e-3), rtol=1e-12)
        np.testing.assert_allclose(
            dist(space, x, y), R.affine_invariant_distance_points(R.spd_point(x), R.spd_point(y)), rtol=1e-8
        )
    # eps matters
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    np.testing.assert_allclose(
        dist(gp.AffineInvariant(eps=1e-2), x, y),
        R.affine_invariant_distance_points(R.spd_point(x, 1e-2), R.spd_point(y, 1e-2)),
        rtol=1e-8,
    )


def test_stress_vs_numpy(rng):
    space = gp.Stress()
    x = rng.standard_normal((N, 3, 2))  # trailing dims are flattened
    y = rng.standard_normal((N, 7))
    a = to_np(space.point(x))
    np.testing.assert_allclose(a, R.distance_matrix(x), atol=1e-12)
    np.testing.assert_allclose(dist(space, x, y), R.stress_distance(x, y), rtol=1e-10)


@pytest.mark.parametrize("p,q", [(30, 40), (4, 6)])  # full-rank and rank-deficient Grams
def test_bures_similarity_vs_sqrtm(p, q, rng):
    x = rng.standard_normal((N, p))
    y = related_rep(rng, x, q)
    kx = x @ x.T / p
    ky = y @ y.T / q
    got = float(gp.bures_similarity(kx, ky))
    ref = R.bures_similarity(kx, ky)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # ... and the Gram identity tr sqrt(Kx^1/2 Ky Kx^1/2) = ||X^T Y||_*
    # (rank-deficient Grams: the zero eigenvalues of kx^1/2 ky kx^1/2 come out as +-1e-16 and
    #  their square roots add ~sqrt(eps) each, so only ~1e-8 relative accuracy is possible)
    np.testing.assert_allclose(got, R.nuclear_norm(x.T @ y) / np.sqrt(p * q), rtol=1e-8 if p >= N else 1e-7)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("p,q", [(5, 9), (20, 30), (6, 25)])
def test_gram_route_equals_feature_route(alpha, p, q, rng):
    n = 12
    x = rand_rep(rng, n, p)
    y = related_rep(rng, x, q)
    for cls in (gp.AngularShape, gp.EuclideanShape):
        sf = cls(alpha=alpha, method="features")
        sg = cls(alpha=alpha, method="gram")
        assert sf.point(x).shape == (n, p)
        assert sg.point(x).shape == (n, n)
        d_f = dist(sf, x, y)
        d_g = dist(sg, x, y)
        np.testing.assert_allclose(d_g, d_f, rtol=1e-7, atol=1e-8)
        # Gram points and feature points of the same space are interchangeable
        np.testing.assert_allclose(float(sf.distance(sf.point(x), sg.point(y))), d_f, rtol=1e-7, atol=1e-8)
        assert float(sf.distance(sf.point(x), sg.point(x))) <= 2e-6
        # default "auto" gives the same distance
        np.testing.assert_allclose(dist(cls(alpha=alpha), x, y), d_f, rtol=1e-7, atol=1e-8)
    ref = R.angular_shape_distance(x, y, alpha)
    np.testing.assert_allclose(
        dist(gp.AngularShape(alpha=alpha, method="gram"), x, y), ref, rtol=1e-7, atol=1e-8
    )


def test_angular_shape_is_arccos_bures(rng):
    x = rand_rep(rng, N, 5)
    y = related_rep(rng, x, 8)
    kx = R.normalized_gram(x)
    ky = R.normalized_gram(y)
    d = dist(gp.AngularShape(alpha=1.0), x, y)
    np.testing.assert_allclose(d, np.arccos(float(gp.bures_similarity(kx, ky))), rtol=1e-7)
    np.testing.assert_allclose(d, np.arccos(R.bures_similarity(kx, ky)), rtol=1e-6)


def test_n_components_keeps_distance_at_full_rank(rng):
    n, p = 12, 30
    x = rand_rep(rng, n, p)
    y = related_rep(rng, x, 20)
    full = dist(gp.AngularShape(alpha=1.0), x, y)
    s = gp.AngularShape(alpha=1.0, n_components=n - 1)  # rank of a centred [n, p] matrix
    a = s.point(x)
    assert a.shape == (n, n - 1)
    np.testing.assert_allclose(dist(s, x, y), full, rtol=1e-7, atol=1e-8)
    # truncating to fewer components changes the distance
    assert abs(dist(gp.AngularShape(alpha=1.0, n_components=2), x, y) - full) > 1e-3


# --------------------------------------------------------------------------
# 10. float32
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("n,widths", [(16, (5, 8, 12)), (20, (7, 50, 35))], ids=["features", "gram"])
def test_float32_angular_shape(alpha, n, widths, rng):
    space = gp.AngularShape(alpha=alpha)
    x0 = rand_rep(rng, n, 6)
    xs32 = [related_rep(rng, x0, p, noise=1.0).astype(np.float32) for p in widths]
    xs32.append(rand_rep(rng, n, 9).astype(np.float32))
    pts32 = [space.point(x) for x in xs32]
    assert all(p.dtype == np.float32 for p in pts32)
    pts64 = [space.point(x.astype(np.float64)) for x in xs32]
    worst, worst_all, separated = 0.0, 0.0, 0
    for i, j in itertools.combinations(range(len(xs32)), 2):
        d32 = space.distance(pts32[i], pts32[j])
        assert d32.dtype == np.float32
        d64 = float(space.distance(pts64[i], pts64[j]))
        np.testing.assert_allclose(d64, R.angular_shape_distance(xs32[i], xs32[j], alpha), rtol=1e-7)
        err = abs(float(d32) - d64)
        worst_all = max(worst_all, err)
        if d64 > 0.1:  # well separated
            separated += 1
            worst = max(worst, err)
    assert separated >= 4
    print(
        f"float32 max |d32 - d64| (alpha={alpha}, n={n}, widths={widths}): {worst:.3e} rad "
        f"(well separated), {worst_all:.3e} rad (all pairs)"
    )
    assert worst <= 1e-4


def test_cka_rbf_fixed_sigma_matches_formula(rng):
    """rbf_sigma fixes the kernel length: compare against a direct float64 computation."""
    x = rng.standard_normal((15, 4))
    y = rng.standard_normal((15, 6))
    sigma = 1.7

    def kern(z):
        z = z - z.mean(0)
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        k = np.exp(-d2 / (2 * sigma**2))
        h = np.eye(15) - 1.0 / 15
        kc = h @ k @ h
        return kc / np.linalg.norm(kc)

    ref = np.arccos(np.clip(np.sum(kern(x) * kern(y)), -1, 1))
    space = gp.AngularCKA(kernel="rbf", rbf_sigma=sigma)
    np.testing.assert_allclose(float(space.distance(space.point(x), space.point(y))), ref, atol=1e-9)
    # a different sigma gives a different distance (the option is really used)
    other = gp.AngularCKA(kernel="rbf", rbf_sigma=0.3)
    assert abs(float(other.distance(other.point(x), other.point(y))) - ref) > 1e-3
    with pytest.raises(ValueError, match="rbf_sigma"):
        gp.AngularCKA(kernel="rbf", rbf_sigma=-1.0)
