"""Issue 15: the path analysis built around shared work gives the same answers, and compiles few programs.

The reference below is the previous implementation of the analysis, written with independent per-call
``space.distance`` / ``space.log`` / ``gp.project``: every ``PathAnalysis`` field of the new implementation
(one decomposition per consecutive pair, the projection frame built once per checkpoint, padded widths and
layer counts) must equal it to 1e-12 in float64, for every space of the catalogue.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import geopath as gp

from .conftest import ALL
from .conftest import check_directional_derivatives
from .conftest import rand_rep
from .conftest import related_rep

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------------
# reference: the analysis before issue 15, one independent call per quantity


def _reference_analysis(space, points, target, input_point=None) -> gp.PathAnalysis:
    P = gp.stack_points(space, list(points))
    L = P.shape[0]
    x0 = P[0] if input_point is None else input_point
    steps = jnp.stack([space.distance(P[i], P[i + 1]) for i in range(L - 1)]) if L > 1 else jnp.zeros(0)
    length = jnp.sum(steps)
    direct = space.distance(x0, target)
    chord = space.distance(P[0], P[-1]) if L > 1 else jnp.zeros(())
    straightness = direct / length if length > 0 else jnp.ones(())
    turning = []
    if L >= 3:
        tol = math.sqrt(2.0 * jnp.finfo(steps.dtype).eps * P.shape[-1]) * max(float(jnp.max(steps)), 1.0)
        for i in range(1, L - 1):
            ang = jnp.pi - space.angle_at(P[i], space.log(P[i], P[i - 1]), space.log(P[i], P[i + 1]))
            turning.append(ang if (steps[i - 1] > tol and steps[i] > tol) else jnp.zeros(()))
    first = 0 if input_point is not None else 1
    projs = [gp.project(space, x0, target, P[i]) for i in range(first, L)]
    dist_in = [space.distance(x0, P[i]) for i in range(first, L)]
    zero = [jnp.zeros(())] * first
    d_in = jnp.stack(zero + dist_in)
    d_tgt = jnp.stack([space.distance(P[i], target) for i in range(L)])
    return gp.PathAnalysis(
        length=length,
        direct=direct,
        straightness=straightness,
        chord=chord,
        steps=steps,
        turning=jnp.stack(turning) if turning else jnp.zeros(0),
        dist_to_input=d_in,
        dist_to_target=d_tgt,
        proj_t=jnp.stack(zero + [p.t for p in projs]),
        proj_residual=jnp.stack(zero + [p.distance for p in projs]),
        proj_gap=jnp.stack(zero + [p.gap for p in projs]),
        position=jnp.where(d_in + d_tgt > 0, d_in / jnp.where(d_in + d_tgt > 0, d_in + d_tgt, 1.0), 0.5),
    )


def _path(spec, rng, widths, n=12, repeat=None):
    """Raw layers related to one input (widths differ for the shape spaces), optionally with a repeated
    layer (a zero step), and the one-hot target."""
    if spec.family != "shape":
        widths = [widths[0]] * len(widths)
    x0 = rand_rep(rng, n, widths[0])
    xs = [x0] + [related_rep(rng, x0, w, noise=0.8) for w in widths[1:]]
    if repeat is not None:
        xs.insert(repeat, xs[repeat])
    space = spec.space
    labels = np.arange(n) % 3
    return space, [space.point(x) for x in xs], gp.target_point(space, jnp.asarray(labels), num_classes=3)


def _assert_same(new, ref, atol=1e-12):
    for f in gp.PathAnalysis._fields:
        a, b = np.asarray(getattr(new, f)), np.asarray(getattr(ref, f))
        assert a.shape == b.shape, (f, a.shape, b.shape)
        if f == "proj_gap":
            # the certificate depends on the candidates the budget evaluated, not only on the answer: both
            # closed (or both absent, NaN), not equal
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            tol = 1e-6 if a.dtype == np.float64 else 1e-3
            assert np.all(a[~np.isnan(a)] <= tol) and np.all(b[~np.isnan(b)] <= tol), (a, b)
            continue
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=f)


def _catalogue(fast=("angular_a1",)):
    """Every space of the catalogue; all but ``fast`` only in the slow run (each compiles the analysis and the
    reference's projections anew: tens of seconds on 2 cores)."""
    return [pytest.param(s, id=s.name, marks=() if s.name in fast else pytest.mark.slow) for s in ALL]


@pytest.mark.parametrize("spec", _catalogue())
def test_analysis_equals_independent_calls(spec, rng):
    """Every field equals the per-call reference to 1e-12 (float64), with padded widths and a zero step."""
    space, pts, target = _path(spec, rng, (4, 6, 3, 7, 5), repeat=2)
    new = gp.analyze_path(space, pts, target)
    _assert_same(new, _reference_analysis(space, pts, target))
    # the repeated layer: a zero step (exactly 0 where d(p, p) is, e.g. not for AffineInvariant's
    # eigen-decompositions) and no turning at its two ends
    assert abs(float(new.steps[2])) < 1e-12 and float(new.turning[1]) == 0.0 and float(new.turning[2]) == 0.0


@pytest.mark.parametrize("spec", _catalogue(fast=()))
def test_analysis_with_input_point_equals_independent_calls(spec, rng):
    space, pts, target = _path(spec, rng, (4, 6, 3, 7, 5), repeat=2)
    x_in = space.point(rand_rep(rng, 12, 4))
    new = gp.analyze_path(space, pts, target, input_point=x_in)
    _assert_same(new, _reference_analysis(space, pts, target, input_point=x_in))


@pytest.mark.parametrize("spec", _catalogue(fast=("stress",)))
def test_analysis_gradients_finite(spec, rng):
    """The gradient of the analysis (length and projections, a zero step in the path) with respect to a raw
    layer is finite and the true one: central differences along random directions (measured agreement
    2e-8 relative for Stress; tolerance 1e-6)."""
    space, pts, target = _path(spec, rng, (4, 6, 3, 5), repeat=2)
    x0 = rand_rep(rng, 12, 4)
    h0 = jnp.asarray(related_rep(rng, x0, 6 if spec.family == "shape" else 4, noise=0.8))

    def loss(h):
        a = gp.analyze_path(space, [pts[0], space.point(h), *pts[2:]], target)
        return a.length + a.proj_t.sum()

    vg = jax.jit(jax.value_and_grad(loss))  # one program for the gradient and the differences
    g = vg(h0)[1]
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(jnp.max(jnp.abs(g))) > 1e-3
    check_directional_derivatives(lambda h: vg(h)[0], g, h0, seed=5, rtol=1e-6, atol=1e-8)


def test_pair_terms_match_separate_calls(rng):
    """The shape override of Space.pair_terms (one SVD) equals distance and both logs (full-rank case)."""
    for space in (gp.AngularShape(alpha=0.5), gp.EuclideanShape(alpha=1.0)):
        x = rand_rep(rng, 12, 5)
        a, b = space.point(x), space.point(related_rep(rng, x, 5))
        t = jax.jit(space.pair_terms)(a, b)
        np.testing.assert_allclose(t.distance, space.distance(a, b), rtol=0, atol=1e-13)
        np.testing.assert_allclose(t.log_ab, space.log(a, b), rtol=0, atol=1e-12)
        np.testing.assert_allclose(t.log_ba, space.log(b, a), rtol=0, atol=1e-12)
        default = gp.Space.pair_terms(space, a, b)
        for u, v in zip(t, default):
            np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------------
# compilations


@contextlib.contextmanager
def count_compiles():
    """Names of the XLA programs compiled inside the block (jax.monitoring backend-compile events)."""
    names: list[str] = []

    def listener(event, duration, **kwargs):
        del duration
        if event == _COMPILE_EVENT:
            names.append(str(kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _arch(rng, x0, widths, ckpts=2):
    space = gp.AngularShape(alpha=1.0)
    return [
        gp.points(space, [related_rep(rng, x0, w, noise=0.5 + 0.1 * t) for w in widths]) for t in range(ckpts)
    ]


def test_analysis_and_comparison_reuse_compiled_programs(rng):
    """Issue 15: a second identical call compiles nothing, and a second architecture with other widths and
    another depth in the same buckets compiles no new analysis or comparison program."""
    n = 24
    space = gp.AngularShape(alpha=1.0)
    x0 = rand_rep(rng, n, 6)
    target = gp.target_point(space, jnp.asarray(np.arange(n) % 3), num_classes=3)
    arch_a = _arch(rng, x0, (6, 9, 12, 5, 7))  # 5 layers, widest 12 -> width bucket 16, 8 layer slots
    arch_b = _arch(rng, x0, (5, 14, 10, 7, 11, 13, 6))  # 7 layers, widest 14 -> the same buckets
    with count_compiles() as first:  # the counter works: the first call compiles the analysis
        gp.analyze_checkpoints(space, arch_a, target, are_points=True)
        gp.compare_paths(space, arch_a[-1], arch_b[-1], cross=np.zeros((5, 7)))
    assert any("analyze" in s for s in first) and any("aligned" in s for s in first), first
    with count_compiles() as again:
        res_a = gp.analyze_checkpoints(space, arch_a, target, are_points=True)
        cmp_ab = gp.compare_paths(space, arch_a[-1], arch_b[-1], cross=np.zeros((5, 7)))
    assert again == [], again
    with count_compiles() as other:
        res_b = gp.analyze_checkpoints(space, arch_b, target, are_points=True)
        cmp_ba = gp.compare_paths(space, arch_b[-1], arch_a[-1], cross=np.zeros((7, 5)))
    assert [s for s in other if "analyze" in s or "aligned" in s] == [], other
    assert len(other) <= 2, other  # nothing but (at most) small host-transfer helpers
    # the padded results are the unpadded ones, cut to the real depth
    assert res_a.steps.shape == (2, 4) and res_b.turning.shape == (2, 5) and res_b.proj_t.shape == (2, 7)
    pb = arch_b[-1]
    steps = [space.distance(pb[i], pb[i + 1]) for i in range(len(pb) - 1)]
    np.testing.assert_allclose(res_b.steps[-1], steps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res_b.length[-1], np.sum(steps), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res_b.chord[-1], space.distance(pb[0], pb[-1]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res_b.dist_to_target[-1], [space.distance(p, target) for p in pb], atol=1e-12)
    np.testing.assert_allclose(cmp_ab.aligned, cmp_ba.aligned, rtol=0, atol=1e-12)  # d is symmetric
    direct = [space.distance(a, b) for a, b in zip(arch_a[-1][::4], arch_b[-1][::6])]
    np.testing.assert_allclose(np.asarray(cmp_ab.aligned)[[0, -1]], direct, rtol=0, atol=1e-12)


def _multimodal_path(rng, n=20, k=6, L=6):
    """Random shape points: their projections onto the input -> target geodesic are often multimodal, so
    the 8 initial candidates alone leave the certificates open (gap far above 1e-6)."""
    space = gp.AngularShape()
    pts = [space.point(jnp.asarray(rng.standard_normal((n, k)))) for _ in range(L)]
    return space, pts, space.point(jnp.asarray(rng.standard_normal((n, k))))


def _spy_budgets(monkeypatch, name):
    """Records the projection budget (``num_rounds``) of every call of ``paths.<name>``."""
    from geopath._src import paths

    real, budgets = getattr(paths, name), []

    def spy(*args, num_rounds):
        budgets.append(num_rounds)
        return real(*args, num_rounds=num_rounds)

    monkeypatch.setattr(paths, name, spy)
    return paths, budgets


def test_open_certificates_rerun_with_the_full_budget(monkeypatch, rng):
    """Eager analysis: the fast budget first; where a certificate stays open, the full budget, whose
    answers are certified and equal the default projection's."""
    space, pts, target = _multimodal_path(rng)
    ref = gp.analyze_path(space, pts, target)
    paths, budgets = _spy_budgets(monkeypatch, "_analyze_jit")
    assert paths._FAST_ROUNDS < paths._FULL_ROUNDS
    gp.analyze_path(space, pts, target)
    assert budgets == [paths._FAST_ROUNDS]  # the fast budget sufficed here: one run
    monkeypatch.setattr(paths, "_FAST_ROUNDS", 0)  # no refinement: the certificates stay open
    budgets.clear()
    res = gp.analyze_path(space, pts, target)
    assert budgets == [0, paths._FULL_ROUNDS], budgets
    assert np.all(np.asarray(res.proj_gap) <= 1e-6), res.proj_gap
    np.testing.assert_allclose(res.proj_t, ref.proj_t, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.proj_residual, ref.proj_residual, rtol=0, atol=1e-9)


def test_certificates_left_open_are_reported(monkeypatch, rng):
    """If even the full budget leaves a certificate open, a RuntimeWarning says so and proj_gap shows it."""
    space, pts, target = _multimodal_path(rng)
    paths, budgets = _spy_budgets(monkeypatch, "_analyze_batched_jit")
    monkeypatch.setattr(paths, "_FAST_ROUNDS", 0)
    monkeypatch.setattr(paths, "_FULL_ROUNDS", 0)
    with pytest.warns(RuntimeWarning, match="could not be certified"):
        res = gp.analyze_checkpoints(space, [pts, pts[::-1]], target, are_points=True)
    assert budgets == [0, 0]
    assert float(np.max(res.proj_gap)) > 1e-6
    assert np.all(np.asarray(res.proj_gap)[:, 0] == 0.0)  # layer 0 is the input: nothing to certify


def test_traced_analysis_runs_the_full_budget(monkeypatch, rng):
    """Under jit nothing can be inspected between budgets: the full budget runs at once."""
    space, pts, target = _multimodal_path(rng, L=3)
    paths, budgets = _spy_budgets(monkeypatch, "_analyze_jit")
    P = gp.stack_points(space, pts)
    jax.jit(lambda P: gp.analyze_path(space, P, target).proj_t)(P)
    assert budgets == [paths._FULL_ROUNDS], budgets
