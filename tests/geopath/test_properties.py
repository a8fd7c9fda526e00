"""Property-based sweep (hypothesis): random shapes, ranks, scales (1e-30 .. 1e30), offsets and dtypes.

For every finite, non-constant input: no NaN, no silent 0 (float32 agrees with float64 on the same inputs
where the metric is well conditioned), and the metric axioms hold to float tolerance (identity, symmetry,
triangle inequality, both for ``distance`` and for ``pairwise_distances``). The default profile is small
(well under a minute); ``-m slow`` runs a bigger one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import geopath as gp

# (name, space, scale-free, tolerance scale: "angle" = absolute radians, "rel" = relative to the largest
# distance, float32 tolerance, well-conditioned enough that float32 must match float64 on the same inputs)
SPACES = {
    "angular_a1": (gp.AngularShape(alpha=1.0), True, "angle", 2e-5, True),
    "angular_a05": (gp.AngularShape(alpha=0.5), True, "angle", 2e-5, False),
    "euclid_a1": (gp.EuclideanShape(alpha=1.0), False, "rel", 2e-5, True),
    "cka": (gp.AngularCKA(), True, "angle", 2e-5, True),
    "affine": (gp.AffineInvariant(eps=1e-2), True, "rel", 1e-4, True),
    "stress": (gp.Stress(), False, "rel", 2e-5, True),
}

DTYPES = {"float32": np.float32, "float64": np.float64}


@st.composite
def triples(draw):
    """Three related representations ``[n, p]`` of one rank, scale and common offset, and their dtype."""
    n = draw(st.sampled_from([5, 9]))
    p = draw(st.sampled_from([3, 7, 12]))
    rank = draw(st.integers(1, min(n - 1, p)))
    log_scale = draw(st.integers(-30, 30))
    offset = draw(st.sampled_from([0.0, 1e3]))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p))
    xs = [base + t * rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p)) for t in (0.0, 0.5, 1.5)]
    scale = 10.0**log_scale
    out = [((x + offset) * scale).astype(DTYPES[dtype]) for x in xs]
    return out, dtype, scale


def _tol(kind, tol, dtype, dmax):
    tol = tol if dtype == "float32" else 1e-9
    return tol if kind == "angle" else tol * max(dmax, np.finfo(np.float64).tiny)


def _check_axioms(d, kind, tol, dtype):
    """``d`` ``[m, m]`` float64 matrix of all distances among the inputs."""
    assert np.all(np.isfinite(d)), d
    assert np.all(d >= 0), d
    t = _tol(kind, tol, dtype, d.max())
    assert np.all(np.abs(np.diag(d)) <= t), d
    assert np.all(np.abs(d - d.T) <= t), d
    m = d.shape[0]
    for i, j, k in itertools.permutations(range(m), 3):
        assert d[i, k] <= d[i, j] + d[j, k] + t, (i, j, k, d)


def _sweep(name, data):
    space, scale_free, kind, tol, well_posed = SPACES[name]
    xs, dtype, scale = data
    pts = [space.point(x) for x in xs]
    for p in pts:
        assert p.dtype == DTYPES[dtype]
        assert np.all(np.isfinite(np.asarray(p))), "point not finite"
    d = np.array([[float(space.distance(a, b)) for b in pts] for a in pts])
    _check_axioms(d, kind, tol, dtype)
    # no silent 0 / NaN: the same inputs computed in float64 agree (the float32 inputs are exact there)
    if well_posed and dtype == "float32":
        p64 = [space.point(np.asarray(x, np.float64)) for x in xs]
        d64 = np.array([[float(space.distance(a, b)) for b in p64] for a in p64])
        assert np.all(np.abs(d - d64) <= 5 * _tol(kind, tol, dtype, d64.max())), (d, d64)
    if not scale_free:
        d = d / scale  # homogeneous metrics: the distances scale with the data
    return d


@pytest.mark.parametrize("name", sorted(SPACES))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=triples())
def test_distance_axioms_sweep(name, data):
    _sweep(name, data)


@pytest.mark.parametrize("name", ["angular_a1", "euclid_a1", "affine"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=triples())
def test_pairwise_axioms_sweep(name, data):
    space, _, kind, tol, _ = SPACES[name]
    xs, dtype, _ = data
    d = np.asarray(gp.pairwise_distances(space, xs), np.float64)
    _check_axioms(d, kind, tol, dtype)
    direct = np.array([[float(gp.distance(space, x, y)) for y in xs] for x in xs])
    assert np.all(np.abs(d - direct) <= 2 * _tol(kind, tol, dtype, direct.max())), (d, direct)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPACES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=triples())
def test_distance_axioms_sweep_large(name, data):
    _sweep(name, data)


def test_scale_free_sweep_agrees_across_scales():
    """The scale-free metrics give the same distance at 1e-30, 1 and 1e30 (float32)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 7))
    y = x + rng.standard_normal((9, 7))
    for name, (space, scale_free, kind, tol, _) in SPACES.items():
        if not scale_free:
            continue
        ds = [
            float(gp.distance(space, (x * s).astype(np.float32), (y * s).astype(np.float32)))
            for s in (1e-30, 1.0, 1e30)
        ]
        assert max(ds) - min(ds) <= _tol(kind, 5 * tol, "float32", max(ds)), (name, ds)
        assert np.isfinite(ds).all() and min(ds) > 0, (name, ds)
