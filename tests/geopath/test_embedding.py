"""Tests of geopath's MDS embeddings (classical_mds, spherical_mds)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _euclid(X):
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)


def _great_circle(X):
    X = np.asarray(X, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    diff = np.linalg.norm(X[:, None] - X[None], axis=-1)
    summ = np.linalg.norm(X[:, None] + X[None], axis=-1)
    return 2 * np.arctan2(diff, summ)


def _sphere_points(seed, L, dim):
    X = np.random.default_rng(seed).standard_normal((L, dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_classical_mds_recovers_planar_configuration():
    X = np.random.default_rng(0).standard_normal((9, 2)) * [3.0, 1.0] + [5.0, -2.0]
    D = _euclid(X)
    res = gp.classical_mds(D, dim=2)
    assert res.coords.shape == (9, 2)
    assert res.eigenvalues.shape == (9,)
    np.testing.assert_allclose(_euclid(res.coords), D, atol=1e-9)  # equal up to rigid motion
    np.testing.assert_allclose(res.stress, 0.0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.coords).mean(0), 0.0, atol=1e-9)  # centred
    assert np.all(np.diff(np.asarray(res.eigenvalues)) <= 1e-12)  # descending
    np.testing.assert_allclose(res.eigenvalues[2:], 0.0, atol=1e-8)
    # first axis carries the larger spread
    c = np.asarray(res.coords)
    assert c[:, 0].var() > c[:, 1].var()


def test_classical_mds_lossy_and_jit():
    X = np.random.default_rng(1).standard_normal((12, 4))
    D = _euclid(X)
    res = gp.classical_mds(D, dim=2)
    # Exact identities against NumPy (float64): the eigenvalues of B = -1/2 J D^2 J, the coordinates' Gram
    # matrix = B's best rank-2 part, the stress = Kruskal stress-1 of the embedded distances (errors ~1e-14).
    J = np.eye(12) - 1.0 / 12
    w, U = np.linalg.eigh(-0.5 * J @ (D**2) @ J)
    w, U = w[::-1], U[:, ::-1]
    np.testing.assert_allclose(res.eigenvalues, w, atol=1e-12)
    C = np.asarray(res.coords)
    np.testing.assert_allclose(C @ C.T, (U[:, :2] * w[:2]) @ U[:, :2].T, atol=1e-12)
    off = ~np.eye(12, dtype=bool)
    kruskal = np.sqrt(((D - _euclid(C))[off] ** 2).sum() / (D[off] ** 2).sum())
    np.testing.assert_allclose(res.stress, kruskal, rtol=1e-10)
    assert float(res.stress) > 0.1  # 4-d points in the plane: lossy (0.240)
    res3 = gp.classical_mds(D, dim=4)
    np.testing.assert_allclose(_euclid(res3.coords), D, atol=1e-8)
    jitted = jax.jit(lambda d: gp.classical_mds(d, dim=2))(jnp.asarray(D))
    np.testing.assert_allclose(jitted.coords, res.coords, atol=1e-10)
    # deterministic signs: each axis' entry of largest magnitude is positive
    assert all(C[np.argmax(np.abs(C[:, k])), k] > 0 for k in range(2))
    with pytest.raises(ValueError):
        gp.classical_mds(D[:3], dim=2)
    with pytest.raises(ValueError):
        gp.classical_mds(D, dim=0)
    with pytest.raises(ValueError):
        gp.classical_mds(D[:2, :2], dim=3)


@pytest.mark.parametrize("dim", [2, 3])
def test_spherical_mds_recovers_points_on_sphere(dim):
    X = _sphere_points(2, 10, dim)
    D = _great_circle(X)
    for n_steps in (0, 100):
        res = gp.spherical_mds(D, dim=dim, n_steps=n_steps)
        assert res.coords.shape == (10, dim)
        np.testing.assert_allclose(np.linalg.norm(res.coords, axis=1), 1.0, atol=1e-10)
        np.testing.assert_allclose(_great_circle(res.coords), D, atol=1e-6)
        assert float(res.stress) < 1e-6


def test_spherical_mds_refinement_helps_when_lossy():
    X = _sphere_points(3, 14, 5)  # points on S^4, embedded on S^2
    D = _great_circle(X)
    r0 = gp.spherical_mds(D, dim=3, n_steps=0)
    r1 = gp.spherical_mds(D, dim=3, n_steps=300)
    assert float(r1.stress) <= float(r0.stress) + 1e-12
    assert float(r1.stress) < float(r0.stress)  # strictly improves here
    # stress is the Kruskal stress-1 of the returned coordinates
    E = _great_circle(r1.coords)
    off = ~np.eye(14, dtype=bool)
    s = np.sqrt(((D - E)[off] ** 2).sum() / (D[off] ** 2).sum())
    np.testing.assert_allclose(r1.stress, s, rtol=1e-6)


def test_spherical_mds_on_real_angular_metric():
    space = gp.AngularCKA()
    r = np.random.default_rng(4)
    x = r.standard_normal((12, 5))
    reps = [x]
    for _ in range(5):
        reps.append(np.tanh(reps[-1] @ r.standard_normal((reps[-1].shape[1], 6))))
    D = np.asarray(gp.pairwise_distances(space, reps))
    res = gp.spherical_mds(D, dim=3)
    assert np.all(np.isfinite(np.asarray(res.coords)))
    # the stress is that of the returned unit vectors' great-circle distances, and low (measured 0.141)
    E = _great_circle(res.coords)
    off = ~np.eye(len(D), dtype=bool)
    np.testing.assert_allclose(
        res.stress, np.sqrt(((D - E)[off] ** 2).sum() / (D[off] ** 2).sum()), rtol=1e-6
    )
    assert float(res.stress) < 0.16


def test_spherical_mds_rejects_non_angular():
    D = _euclid(np.random.default_rng(5).standard_normal((6, 2))) * 10
    with pytest.raises(ValueError):
        gp.spherical_mds(D, dim=3)
    with pytest.raises(ValueError):
        gp.spherical_mds(np.zeros((4, 4)), dim=1)
