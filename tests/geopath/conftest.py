"""Shared configuration, data generators and space catalogue for the core tests.

float64 is enabled at import time; float32 behaviour is tested explicitly by
passing float32 arrays (with x64 enabled, float32 inputs stay float32).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import ortho_group  # noqa: E402

import geopath as gp  # noqa: E402

from . import reference as R  # noqa: E402

N = 16  # default number of inputs (rows)
WIDTHS = (5, 8)  # default feature widths (p != q; both < N so alpha < 1 is fine)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Deterministic per-test generator (seeded from the test id)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def rand_rep(rng, n: int = N, p: int = 5) -> np.ndarray:
    """Random representation with a non-trivial covariance spectrum."""
    x = rng.standard_normal((n, p)) @ np.diag(np.linspace(1.0, 2.5, p))
    return x + rng.standard_normal((1, p))  # non-zero column means


def related_rep(rng, x, q: int, noise: float = 0.6) -> np.ndarray:
    """A representation correlated with x (moderate distances)."""
    m = rng.standard_normal((x.shape[1], q)) / np.sqrt(x.shape[1])
    return x @ m + noise * rng.standard_normal((x.shape[0], q))


def orthogonal(rng, p: int) -> np.ndarray:
    return ortho_group.rvs(p, random_state=rng)


def well_conditioned(rng, p: int, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    return orthogonal(rng, p) @ np.diag(np.linspace(lo, hi, p)) @ orthogonal(rng, p)


def to_np(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def check_directional_derivatives(f, g, h0, *, seed, eps=1e-6, rtol=1e-5, atol=1e-8, n=3) -> None:
    """Asserts ``<g, u>`` equals the central difference ``(f(h0 + eps u) - f(h0 - eps u)) / 2 eps`` along
    ``n`` random directions ``u`` (``g`` the gradient of the scalar ``f`` at the array ``h0``)."""
    import jax.numpy as jnp

    r = np.random.default_rng(seed)
    for _ in range(n):
        u = jnp.asarray(r.standard_normal(np.shape(h0)))
        fd = (float(f(h0 + eps * u)) - float(f(h0 - eps * u))) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(g, u)), fd, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# space catalogue
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    make: Callable[[], object]
    family: str  # "shape" | "sphere" | "spd" | "flat"
    angular: bool  # distances are angles in [0, pi]
    alpha: float | None = None
    ref: Callable | None = None  # reference distance on raw (x, y)

    @property
    def space(self):
        return self.make()

    def __repr__(self) -> str:  # nice pytest ids
        return self.name


def _cka_ref(x, y):
    return R.safe_arccos(R.linear_cka(x, y))


def _cka_u_ref(x, y):
    return R.safe_arccos(R.unbiased_linear_cka(x, y))


def _spd_ref(x, y):
    return R.affine_invariant_distance_points(R.spd_point(x), R.spd_point(y))


SPECS = {
    "angular_a1": Spec(
        "angular_a1",
        lambda: gp.AngularShape(alpha=1.0),
        "shape",
        True,
        1.0,
        lambda x, y: R.angular_shape_distance(x, y, 1.0),
    ),
    "angular_a05": Spec(
        "angular_a05",
        lambda: gp.AngularShape(alpha=0.5),
        "shape",
        True,
        0.5,
        lambda x, y: R.angular_shape_distance(x, y, 0.5),
    ),
    "angular_a0": Spec(
        "angular_a0",
        lambda: gp.AngularShape(alpha=0.0),
        "shape",
        True,
        0.0,
        lambda x, y: R.angular_shape_distance(x, y, 0.0),
    ),
    "euclid_a1": Spec(
        "euclid_a1",
        lambda: gp.EuclideanShape(alpha=1.0),
        "shape",
        False,
        1.0,
        lambda x, y: R.euclidean_shape_distance(x, y, 1.0),
    ),
    "euclid_a05": Spec(
        "euclid_a05",
        lambda: gp.EuclideanShape(alpha=0.5),
        "shape",
        False,
        0.5,
        lambda x, y: R.euclidean_shape_distance(x, y, 0.5),
    ),
    "euclid_a0": Spec(
        "euclid_a0",
        lambda: gp.EuclideanShape(alpha=0.0),
        "shape",
        False,
        0.0,
        lambda x, y: R.euclidean_shape_distance(x, y, 0.0),
    ),
    "cka": Spec("cka", lambda: gp.AngularCKA(), "sphere", True, None, _cka_ref),
    "cka_unbiased": Spec(
        "cka_unbiased", lambda: gp.AngularCKA(unbiased=True), "sphere", True, None, _cka_u_ref
    ),
    "cka_rbf": Spec("cka_rbf", lambda: gp.AngularCKA(kernel="rbf"), "sphere", True, None, None),
    "affine": Spec("affine", lambda: gp.AffineInvariant(eps=1e-3), "spd", False, None, _spd_ref),
    "stress": Spec("stress", lambda: gp.Stress(), "flat", False, None, R.stress_distance),
}

ALL = list(SPECS.values())
SHAPE = [s for s in ALL if s.family == "shape"]


def ids(specs):
    return [s.name for s in specs]
