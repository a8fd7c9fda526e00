"""Projection of a point onto a geodesic: exact, with a certificate of global optimality.

:func:`project` finds the point of the geodesic through ``a`` and ``b`` nearest to ``c``. How depends on the
space (one solver per family, chosen by :func:`_solver_for`):

* Shape metrics (:class:`AngularShape`, :class:`EuclideanShape`). The objective is multimodal in the quotient
  space, so a local method is not enough. Along the geodesic every distance to ``c`` is a function of the
  nuclear norm of a ``k x k`` matrix that is affine (Euclidean: ``A + t W``) or trigonometric (angular:
  ``cos(s) M1 + sin(s) M2``, ``s = t d(a, b)``) in the parameter, with ``M1, M2`` (or ``A, W``) computed once.
  That structure gives rigorous bounds between evaluated parameters:

  - angular: ``h(s) = ||cos(s) M1 + sin(s) M2||_*`` is the support function, in direction ``(cos s, sin s)``,
    of the convex set ``{(tr(R^T M1), tr(R^T M2)) : R orthogonal}``; between two evaluated directions the set
    lies inside the wedge of their two support lines, so ``h`` is bounded above by the wedge's support
    function (a sinusoid through the two values, maximised in closed form);
  - Euclidean: ``g(t) = ||A + t W||_*`` is convex, so it lies below its chords, and ``f(t) = |a + t w|^2 -
    2 g(t) + |c|^2`` is bounded below by a quadratic on every interval.

  A branch and bound on singular-values-only decompositions (one per candidate, all candidates of a round
  in one batched call) refines the intervals whose bound is best, for a fixed number of rounds; then three
  Newton steps with closed-form derivatives polish the best candidate (a full SVD at each of the first
  three points; the last step is not evaluated). The polar factor of the best point's SVD is also the
  optimal rotation of ``c`` onto the solution, so the residual ``distance`` needs no decomposition of its
  own. The remaining difference between the best value and the best bound, converted to a distance, is
  returned as ``gap``: no point of the geodesic (or segment) is nearer to ``c`` than ``distance - gap``.
* Unit sphere (:class:`AngularCKA`) and flat spaces (:class:`Stress`): closed forms, ``gap = 0``.
* Any other space (e.g. :class:`AffineInvariant`): the best of a grid in ``t`` and the tangent-space estimate,
  then safeguarded Newton steps (``method="grid"``, also available for every space as the reference
  algorithm); ``gap`` is NaN there (no certificate).

Every loop below is a Python loop over a fixed, small number of steps (unrolled at trace time): no
``while_loop``/``fori_loop`` is emitted, so compiled projections never depend on the XLA CPU runtime's
handling of loops around LAPACK calls (see ``docs/threads.md``).

Gradients follow the implicit function theorem: the search runs on constants, and the derivative of one
Newton step ``t = t* - f'(t*) / f''(t*)`` at the solution (``f = d^2 / 2``, curvature held constant) carries
``dt`` (a custom JVP: ``f'`` is only evaluated when differentiating).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from geopath._src import linalg
from geopath._src.spaces import Space
from geopath._src.spaces.cka import AngularCKA
from geopath._src.spaces.shape import AngularShape
from geopath._src.spaces.shape import EuclideanShape
from geopath._src.spaces.stress import Stress

_METHODS = ("auto", "grid")

# Branch and bound budget of the shape metrics.
_NUM_INIT = 8  # initial equally spaced candidates (both ends included)
_BATCH = 2  # candidates per round (measured on real projections: 2 per round closes the gap with fewer
# evaluations than 4, and with fewer sequential rounds than 1)
NUM_ROUNDS = 16  # default budget: 8 + 16 x 2 = 40 candidates


def default_tol(dtype) -> float:
    """The certificate ``gap`` (units of distance) below which a projection counts as converged."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-3


class Projection(NamedTuple):
    """Result of :func:`project`.

    Attributes:
      t: ``[]`` fraction along the geodesic ``a -> b`` (0 at a, 1 at b) of the point nearest to ``c``.
      point: the geodesic point at ``t``.
      distance: ``[]`` distance from ``point`` to ``c`` (how far ``c`` lies off the geodesic).
      gap: ``[]`` certificate of global optimality, in units of distance: no point of the searched geodesic
        (or segment) is nearer to ``c`` than ``distance - gap``. 0 for closed forms; NaN where the method
        gives no certificate (``method="grid"``, spaces without a certified solver).
      converged: ``[]`` bool: ``gap <= tol`` (always True for closed forms; for uncertified methods, whether
        the last Newton step was below ``tol`` in ``t``). False means the budget (``num_rounds``) was too
        small to prove the answer.
    """

    t: Array
    point: Array
    distance: Array
    gap: Array
    converged: Array


class GeodesicFrame(NamedTuple):
    """The per-geodesic work of a projection, built once by :func:`geodesic_frame` and shared by every point
    projected onto the geodesic ``a -> b`` (e.g. every layer of a path, onto its input -> target geodesic).

    Attributes:
      a, b: the endpoints (common width, common floating dtype).
      v: ``log(a, b)``, differentiable where the geodesic is non-degenerate (gradient cut where it is not).
      sv: ``v`` without gradient (what the searches use).
      ok: ``[]`` bool: the geodesic has a length that can be resolved (see :func:`_nondegenerate`).
    """

    a: Array
    b: Array
    v: Array
    sv: Array
    ok: Array


class _Search(NamedTuple):
    """What a solver hands back: the solution on constants, and the curvature for the implicit gradient."""

    t: Array  # [] solution (no gradient)
    curvature: Array  # [] f''(t) of f = d^2 / 2 in units of t, > 0 (no gradient)
    gap: Array  # [] certificate in units of distance
    converged: Array  # [] bool
    # [k, k] shape metrics: the optimal rotation of c onto the solution's geodesic point, from the solver's
    # last decomposition (so the residual distance needs no SVD of its own); None for other solvers
    rotation: Array | None = None


def project(
    space: Space,
    a: Array,
    b: Array,
    c: Array,
    *,
    segment: bool = False,
    method: str = "auto",
    tol: float | None = None,
    num_rounds: int = NUM_ROUNDS,
    num_iters: int = 6,
    num_grid: int = 31,
) -> Projection:
    """Projects ``c`` onto the geodesic through ``a`` and ``b`` (or onto the segment from ``a`` to ``b``).

    Minimises ``d(gamma(t), c)`` with ``gamma(t) = exp_a(t log_a b)`` (``t = 0`` at ``a``, ``t = 1`` at
    ``b``) over

    * ``segment=True``: ``0 <= t <= 1``, the nearest point of the minimising segment;
    * ``segment=False``: the whole geodesic. Where it closes up, one period is searched, and ``t`` is
      reported in the period centred on the segment's midpoint: ``|t - 1/2| <= P / 2`` with ``P = pi /
      d(a, b)`` for the angular shape metric (``gamma(t + P) = -gamma(t)``, the same shape) and ``P = 2 pi /
      d(a, b)`` on the sphere of :class:`AngularCKA`. Flat directions extend without bound
      (:class:`EuclideanShape`, :class:`Stress`); other spaces search ``t`` near ``[-1, 2]`` (``method="grid"``).

    The answer is the global minimiser, found by a certified branch and bound in the shape spaces and in closed
    form for :class:`AngularCKA` and :class:`Stress` (see the module notes); ``gap`` bounds how far it could
    be from the true minimum distance. If ``a`` and ``b`` coincide (``d(a, b)`` below ``1e3 eps`` times the
    scale of the points) the geodesic is a point: ``t = 0``, with zero gradient. If several points of the
    geodesic are equally near (ties), which one is returned is unspecified.

    Gradients follow the implicit function theorem at the solution.

    Args:
      space: the space.
      a, b: points defining the geodesic, e.g. ``[n, k]`` (shape spaces, widths may differ) or ``[n, n]``.
      c: the point to project.
      segment: restrict ``t`` to ``[0, 1]`` (static).
      method: "auto" (the exact solver of the space) or "grid" (the earlier algorithm, for every space: best
        of ``num_grid`` equally spaced ``t`` in ``[-1, 2]`` and the tangent-space estimate, then ``num_iters``
        safeguarded Newton steps; kept as a reference and for comparisons; no certificate).
      tol: the certificate ``gap`` (in units of distance) at or below which ``converged`` is True; default
        ``1e-6`` in float64, ``1e-3`` in float32.
      num_rounds: rounds of the branch and bound (static; 2 candidates each, after 8 initial ones).
      num_iters: Newton steps of ``method="grid"`` (static).
      num_grid: grid size of ``method="grid"`` (static, >= 2).

    Returns:
      :class:`Projection` ``(t, point, distance, gap, converged)``: ``point`` shaped like the common point of
      ``a`` and ``b``, the others ``[]``, in the points' dtype (``converged`` bool).

    Raises:
      ValueError: ``method`` is not "auto" or "grid", ``num_grid < 2``, or ``num_rounds`` or ``num_iters``
        is negative; points of different inputs.

    NaN: a point that contains NaN gives a NaN ``distance``, but ``t`` may be a number (0 when ``a`` or
    ``b`` holds the NaN) and ``converged`` True: check ``distance``. In :class:`AngularCKA`, :class:`Stress`
    and :class:`AffineInvariant`, NaN in ``b`` alone is not seen: the result is ``t = 0`` and the finite
    ``d(a, c)``, as for a geodesic that is a point. Validate the points where that matters.
    """
    _check_options(method, num_grid, num_rounds, num_iters)
    a, b, c = space.common(a, b, c)
    a, b, c = (jnp.asarray(p) for p in (a, b, c))
    dtype = jnp.result_type(a, b, c)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    a, b, c = (p.astype(dtype) for p in (a, b, c))
    return project_on_frame(
        space,
        geodesic_frame(space, a, b),
        c,
        segment=segment,
        method=method,
        tol=tol,
        num_rounds=num_rounds,
        num_iters=num_iters,
        num_grid=num_grid,
    )


def _check_options(method: str, num_grid: int, num_rounds: int, num_iters: int) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if num_grid < 2:
        raise ValueError(f"num_grid must be >= 2; got {num_grid}")
    if num_rounds < 0 or num_iters < 0:
        raise ValueError(f"num_rounds and num_iters must be >= 0; got {num_rounds} and {num_iters}")


def geodesic_frame(space: Space, a: Array, b: Array) -> GeodesicFrame:
    """The work shared by every projection onto the geodesic ``a -> b``: ``log(a, b)`` and its degeneracy.

    ``a`` and ``b`` must already have a common shape and floating dtype. Costs two logs (one without
    gradient to decide degeneracy, one differentiable with the gradient cut where degenerate), whatever the
    number of points later projected with :func:`project_on_frame`.
    """
    sa, sb = jax.lax.stop_gradient(a), jax.lax.stop_gradient(b)
    sv = space.log(sa, sb)
    ok = _nondegenerate(space, sa, sb, sv)
    # where the geodesic is degenerate, nothing may carry a gradient through its direction: cut it off
    # before any NaN can form. The second log follows the first (one decomposition at a time, docs/threads.md).
    a_, b_ = linalg.after(sv, (a, b))
    v = space.log(jnp.where(ok, a_, sa), jnp.where(ok, b_, sb))
    return GeodesicFrame(a=a, b=b, v=v, sv=jax.lax.stop_gradient(v), ok=ok)


def project_on_frame(
    space: Space,
    frame: GeodesicFrame,
    c: Array,
    *,
    segment: bool = False,
    method: str = "auto",
    tol: float | None = None,
    num_rounds: int = NUM_ROUNDS,
    num_iters: int = 6,
    num_grid: int = 31,
) -> Projection:
    """:func:`project` of ``c`` onto the geodesic of a prebuilt :func:`geodesic_frame` (same options).

    ``c`` must have the frame's shape and dtype. ``jax.vmap`` over ``c`` with the frame unbatched computes the
    per-geodesic work once: this is how the path analysis projects all layers of a checkpoint.
    """
    _check_options(method, num_grid, num_rounds, num_iters)
    a, ok = frame.a, frame.ok
    dtype = a.dtype
    if tol is None:
        tol = default_tol(dtype)

    solver = _grid_newton if method == "grid" else _solver_for(space)
    # each stage follows the one before (linalg.after): one decomposition at a time (docs/threads.md)
    sa, sv, sc = linalg.after((frame.v, c), (jax.lax.stop_gradient(a), frame.sv, jax.lax.stop_gradient(c)))
    if solver is _closed_form_sphere or solver is _closed_form_flat:
        t = solver(space, a, frame.v, c, ok=ok, segment=segment)
        gap = jnp.zeros((), dtype)
        converged = jnp.ones((), bool)
    else:
        kw = {"num_iters": num_iters, "num_grid": num_grid} if solver is _grid_newton else {}
        if solver in (_shape_angular, _shape_euclidean):
            kw = {"num_rounds": num_rounds}
        search = solver(space, sa, sv, sc, ok=ok, segment=segment, tol=tol, **kw)
        t = _implicit_step(space, frame, c, search, segment=segment)
        gap, converged = search.gap, search.converged
    a_t, v_t = linalg.after(t, (a, frame.v))
    point = jnp.where(ok, space.exp(a_t, t * v_t), a)  # a degenerate geodesic is the point a itself
    if solver in (_shape_angular, _shape_euclidean):
        distance = space._distance_at_rotation(point, c, search.rotation)
    else:
        distance = space.distance(point, c)
    return Projection(t=t, point=point, distance=distance, gap=gap, converged=converged)


def _solver_for(space: Space):
    """The exact solver of ``space``'s family; the grid + Newton search for any other space."""
    if isinstance(space, AngularShape):
        return _shape_angular
    if isinstance(space, EuclideanShape):
        return _shape_euclidean
    if isinstance(space, AngularCKA):
        return _closed_form_sphere
    if isinstance(space, Stress):
        return _closed_form_flat
    return _grid_newton


def _nondegenerate(space: Space, a: Array, b: Array, v: Array) -> Array:
    """Whether the geodesic ``a -> b`` (``v = log(a, b)``) has a length that can be resolved.

    Shape, sphere and flat spaces: ``|log_a b| > 1e3 eps`` (times the size of the points in the flat ones).
    Other spaces: also above 100 times ``|log_a a|``, the rounding floor of that very computation (it grows
    with the condition number of SPD points, e.g. ~1e-12 instead of 0 in float64).
    """
    eps = jnp.finfo(a.dtype).eps
    length = space.norm(a, v)
    if isinstance(space, (AngularShape, AngularCKA)):
        return length > 1e3 * eps
    if isinstance(space, (EuclideanShape, Stress)):
        return length > 1e3 * eps * jnp.maximum(space.norm(a, a), space.norm(b, b))
    a = linalg.after(length, a)  # one decomposition at a time (docs/threads.md)
    w = space.log(a, a)
    floor = space.norm(linalg.after(w, a), w)
    return length > 100.0 * floor + 1e3 * eps


def _implicit_step(space: Space, frame: GeodesicFrame, c, search: _Search, *, segment: bool) -> Array:
    """The solution ``t*``, with the derivative of one Newton step at it: ``dt`` by the implicit function
    theorem.

    ``t = t* - f'(t*) / f''`` with ``f'(t) = -<log_gamma(t) c, gamma'(t)>`` (first variation of ``d^2 / 2``,
    written without ``jax.grad`` of the distance, so differentiating it needs only first derivatives of the
    SVD-based maps) and ``f''`` the solver's (constant) curvature. ``f'(t*)`` is zero up to rounding at an
    interior solution, so the value is ``t*`` itself and ``f'`` is evaluated only when differentiating (a
    custom JVP): the forward pass spends no decomposition on it. On a segment's end, the step would leave
    the segment: the derivative is 0 there, as for the clipped step.
    """
    ok = frame.ok
    # where the geodesic is degenerate, t = 0 carries no gradient: cut it off before any NaN can form
    a, c = (jnp.where(ok, p, jax.lax.stop_gradient(p)) for p in (frame.a, c))
    curv = jnp.where(ok & (search.curvature > 0), search.curvature, 1.0)
    t = _newton_at_solution(space, segment, search.t, curv, a, frame.v, c)
    return jnp.where(ok, t, jnp.zeros_like(t))


def _first_variation(space: Space, t, a, v, c):
    """``f'(t) = -<log_gamma(t) c, gamma'(t)>`` of ``f = d(gamma(t), c)^2 / 2``, ``gamma(t) = exp_a(t v)``."""
    p, vel = jax.jvp(lambda t: space.exp(a, t * v), (t,), (jnp.ones_like(t),))
    p, c = linalg.after(vel, (p, c))  # one decomposition at a time (docs/threads.md)
    return -space.inner(p, space.log(p, c), vel)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _newton_at_solution(space, segment, t_star, curv, a, v, c):
    """``t*``; see :func:`_implicit_step` for the derivative (``t_star`` and ``curv`` carry none)."""
    del space, segment, curv, a, v, c
    return t_star


@_newton_at_solution.defjvp
def _newton_at_solution_jvp(space, segment, primals, tangents):
    t_star, curv, a, v, c = primals
    _, _, da, dv, dc = tangents
    a, v, c = linalg.after((t_star, curv), (a, v, c))  # after the whole search (docs/threads.md)
    g, dg = jax.jvp(lambda a, v, c: _first_variation(space, t_star, a, v, c), (a, v, c), (da, dv, dc))
    dt = -dg / curv
    if segment:  # the clipped step: no derivative where it leaves [0, 1]
        t = t_star - g / curv
        dt = jnp.where((t >= 0.0) & (t <= 1.0), dt, jnp.zeros_like(dt))
    return t_star, dt


# ------------------------------------------------------------------------------------------------------
# Closed forms: the unit sphere (AngularCKA) and flat spaces (Stress).


def _closed_form_sphere(space: Space, a, v, c, *, ok: Array, segment: bool) -> Array:
    """``s* = atan2(<u, c>, <a, c>)`` on the great circle ``cos(s) a + sin(s) u`` (``v = log(a, b)``)."""
    theta = linalg.safe_norm(v)
    safe_theta = jnp.where(ok, theta, 1.0)
    u = jnp.where(ok, v / safe_theta, jnp.zeros_like(v))
    x, y = jnp.sum(a * c), jnp.sum(u * c)
    # c orthogonal to the whole circle: every point is equally far; report t = 0.
    flat = (x * x + y * y) <= (jnp.finfo(a.dtype).eps ** 2) * linalg.safe_norm(c) ** 2
    s = jnp.arctan2(jnp.where(flat, 0.0, y), jnp.where(flat, 1.0, x))
    half = 0.5 * theta
    # into the period centred on the segment's midpoint: s in [half - pi, half + pi)
    s = jax.lax.stop_gradient(jnp.round((s - half) / (2 * jnp.pi))) * (-2 * jnp.pi) + s
    t = s / safe_theta
    if segment:
        # cos(s - s*) is unimodal on the circle: s* itself when it lies on the segment, else the nearer end
        inside = (s >= 0) & (s <= theta)
        end = jnp.where(jnp.cos(s) >= jnp.cos(s - theta), 0.0, 1.0).astype(t.dtype)
        t = jnp.where(inside, t, end)
    return jnp.where(ok, t, jnp.zeros_like(t))


def _closed_form_flat(space: Space, a, w, c, *, ok: Array, segment: bool) -> Array:
    """``t* = <c - a, w> / <w, w>`` with ``w = log(a, b)`` (Riemannian inner product at ``a``)."""
    ww = space.inner(a, w, w)
    t = space.inner(a, space.log(a, c), w) / jnp.where(ok, ww, 1.0)
    if segment:
        t = jnp.clip(t, 0.0, 1.0)
    return jnp.where(ok, t, jnp.zeros_like(t))


# ------------------------------------------------------------------------------------------------------
# Branch and bound on one parameter, shared by the two shape metrics (budget: _NUM_INIT, _BATCH above).


def _sorted(xs, ys):
    order = jnp.argsort(xs)
    return xs[order], ys[order]


def _branch_and_bound(values, objective, bound, lo, hi, *, num_rounds):
    """Minimises ``objective(x, values(x))`` over ``[lo, hi]`` by branch and bound.

    Args:
      values: ``x [m] -> y [m]``, the cheap (singular-values-only) evaluation, vectorised.
      objective: ``(x, y) -> [m]`` the quantity minimised.
      bound: ``(x_i, y_i, x_j, y_j) -> (lower bound of the objective on [x_i, x_j], where it is attained)``.
      lo, hi: ``[]`` the interval.
      num_rounds: rounds of :data:`_BATCH` candidates (static).

    Returns:
      ``(xs, ys)`` all evaluated candidates, sorted by ``x``.
    """
    frac = jnp.linspace(0.0, 1.0, _NUM_INIT, dtype=lo.dtype)
    xs = lo + (hi - lo) * frac
    ys = values(xs)
    for _ in range(num_rounds):
        xs, ys = _sorted(xs, ys)
        lb, where = bound(xs[:-1], ys[:-1], xs[1:], ys[1:])
        _, idx = jax.lax.top_k(-lb, _BATCH)
        # split inside the interval, at least 5% of its width away from its ends
        x_i, x_j = xs[idx], xs[idx + 1]
        width = x_j - x_i
        new = jnp.clip(where[idx], x_i + 0.05 * width, x_j - 0.05 * width)
        xs = jnp.concatenate([xs, new])
        ys = jnp.concatenate([ys, values(new)])
    return _sorted(xs, ys)


def _pair_weights(s: Array) -> Array:
    """``1 / (s_i + s_j)`` for ``i != j`` where the sum is numerically non-zero, else 0; ``[k, k]``."""
    tot = s[:, None] + s[None, :]
    tiny = jnp.max(s) * 4 * s.shape[0] * jnp.finfo(s.dtype).eps
    off = 1.0 - jnp.eye(s.shape[0], dtype=s.dtype)
    return jnp.where(tot > tiny, off / jnp.where(tot > tiny, tot, 1.0), 0.0)


def _nuclear_derivatives(m: Array, dm: Array, ddm_trace_sign: float):
    """``(||m||_*, d/dx, d^2/dx^2, R)`` of ``||m(x)||_*`` with ``m' = dm`` and ``m'' = ddm_trace_sign * m``;
    ``R = V U^T`` is the polar factor of ``m^T``.

    From one full SVD ``m = U S V^T``: the first derivative is ``tr(U^T m' V)`` over the non-zero singular
    values, the second ``tr(U^T m'' V) + sum_{i < j} (X_ij - X_ji)^2 / (s_i + s_j)`` with ``X = U^T m' V``
    (finite for repeated singular values).
    """
    u, s, vh = jnp.linalg.svd(m)
    tiny = jnp.max(s) * 4 * s.shape[0] * jnp.finfo(s.dtype).eps
    mask = (s > tiny).astype(s.dtype)
    x = u.T @ dm @ vh.T
    h = jnp.sum(s)
    d1 = jnp.sum(jnp.diagonal(x) * mask)
    skew = x - x.T
    d2 = ddm_trace_sign * h + 0.5 * jnp.sum(skew * skew * _pair_weights(s))
    return h, d1, d2, vh.T @ u.T


class _Polished(NamedTuple):
    xs: Array  # [num_steps + 1] the points evaluated (the best candidate first)
    ys: Array  # [num_steps + 1] their values
    x: Array  # [] the best of them (the best point overall: the first is the best candidate), moved by the
    # Newton step its decomposition gave (not evaluated: it corrects x to second order)
    curvature: Array  # [] the solver's curvature at the best point
    rotation: Array  # [k, k] the polar factor at the best point (first-order accurate at x)


def _polish(newton_step, xs, ys, objective, lo, hi, num_steps=2) -> _Polished:
    """``num_steps`` safeguarded Newton steps from the best candidate, kept inside its bracketing interval.

    ``newton_step(x) -> (value, step, curvature, rotation)``, one full decomposition each. The best point is
    the last one whose objective is within rounding of the least (near the optimum the values are equal to
    rounding, and the later points are the better ones); its own Newton step is then taken without evaluating
    where it lands, clipped to ``[lo, hi]`` only (rounding in the candidates' values can leave the optimum
    just outside the bracket).
    """
    m = xs.shape[0]
    k = jnp.argmin(objective(xs, ys))
    left = jnp.maximum(xs[jnp.maximum(k - 1, 0)], lo)
    right = jnp.minimum(xs[jnp.minimum(k + 1, m - 1)], hi)
    x = xs[k]
    evals = []
    for _ in range(num_steps + 1):
        y, step, curv, rot = newton_step(x)
        evals.append((x, y, step, curv, rot))
        x = jnp.clip(x + step, left, right)
    px, py, ps, pc, pr = (jnp.stack(e) for e in zip(*evals))
    obj = objective(px, py)
    tiny = 16 * jnp.finfo(obj.dtype).eps * jnp.maximum(jnp.max(jnp.abs(py)), jnp.max(jnp.abs(obj)))
    best = jnp.argmax(jnp.where(obj <= jnp.min(obj) + tiny, jnp.arange(obj.shape[0]), -1))
    x = jnp.clip(px[best] + ps[best], lo, hi)
    return _Polished(xs=px, ys=py, x=x, curvature=pc[best], rotation=pr[best])


# ------------------------------------------------------------------------------------------------------
# Angular shape metric.


def _shape_angular(space, a, v, c, *, ok, segment, tol, num_rounds) -> _Search:
    """Branch and bound on ``h(s) = ||cos(s) M1 + sin(s) M2||_*``, then Newton steps (see module notes)."""
    dt = a.dtype
    an = a / linalg.safe_norm(a)
    cn = c / linalg.safe_norm(c)
    theta = linalg.safe_norm(v)
    safe_theta = jnp.where(ok, theta, 1.0)
    u = jnp.where(ok, v / safe_theta, jnp.zeros_like(v))
    m1, m2 = an.T @ cn, u.T @ cn
    if segment:
        lo, hi = jnp.zeros((), dt), jnp.where(ok, theta, 1.0)
    else:
        lo, hi = 0.5 * theta - 0.5 * jnp.pi, 0.5 * theta + 0.5 * jnp.pi

    def values(ss):
        mm = jnp.cos(ss)[:, None, None] * m1 + jnp.sin(ss)[:, None, None] * m2
        return jnp.sum(jnp.linalg.svd(mm, compute_uv=False), axis=-1)

    def objective(ss, hs):
        del ss
        return -hs

    def bound(s_i, h_i, s_j, h_j):
        # sup over tau in [0, delta] of h_i cos(tau) + beta sin(tau): the wedge of the two support lines
        delta = s_j - s_i
        good = delta > 0
        sd = jnp.where(good, jnp.sin(delta), 1.0)
        beta = (h_j - h_i * jnp.cos(delta)) / sd
        tau = jnp.arctan2(beta, h_i)
        inside = good & (tau > 0) & (tau < delta)
        top = jnp.where(inside, jnp.hypot(h_i, beta), jnp.maximum(h_i, h_j))
        return -top, jnp.where(inside, s_i + tau, 0.5 * (s_i + s_j))

    xs, ys = _branch_and_bound(values, objective, bound, lo, hi, num_rounds=num_rounds)

    def newton_step(s):
        mm = jnp.cos(s) * m1 + jnp.sin(s) * m2
        dm = -jnp.sin(s) * m1 + jnp.cos(s) * m2
        h, d1, d2, rot = _nuclear_derivatives(mm, dm, -1.0)
        step = jnp.where(d2 < 0, -d1 / jnp.where(d2 < 0, d2, -1.0), 0.0)
        return h, step, d2, rot

    pol = _polish(newton_step, xs, ys, objective, lo, hi)
    xs, ys = _sorted(jnp.concatenate([xs, pol.xs]), jnp.concatenate([ys, pol.ys]))
    s_best, h_best, d2 = pol.x, jnp.max(ys), pol.curvature
    lb, _ = bound(xs[:-1], ys[:-1], xs[1:], ys[1:])
    h_top = jnp.maximum(-jnp.min(lb), h_best)
    d_best = linalg.safe_arccos(jnp.minimum(h_best, 1.0))
    gap = d_best - linalg.safe_arccos(jnp.minimum(h_top, 1.0))
    # f = d^2 / 2 in units of t: f'' = -theta^2 h'' d / sin(d) at a stationary point
    d_over_sin = 1.0 / jnp.sinc(d_best / jnp.pi)
    curv = -(theta**2) * d2 * d_over_sin
    t = jnp.where(ok, s_best / safe_theta, 0.0)
    gap = jnp.where(ok, gap, 0.0)
    return _Search(t=t, curvature=curv, gap=gap, converged=gap <= tol, rotation=pol.rotation)


# ------------------------------------------------------------------------------------------------------
# Euclidean shape metric.


def _shape_euclidean(space, a, w, c, *, ok, segment, tol, num_rounds) -> _Search:
    """Branch and bound on ``f(t) = |a + t w|^2 + |c|^2 - 2 ||(a + t w)^T c||_*`` (convex nuclear norm)."""
    dt = a.dtype  # w = log(a, b) = b R - a
    qa, qb, qw = jnp.sum(a * a), jnp.sum(a * w), jnp.sum(w * w)
    qw_safe = jnp.where(ok, qw, 1.0)
    cc = jnp.sum(c * c)
    m0, mw = a.T @ c, w.T @ c

    def values(ts):
        mm = m0 + ts[:, None, None] * mw
        return jnp.sum(jnp.linalg.svd(mm, compute_uv=False), axis=-1)

    def quad(ts):
        return qa + 2 * ts * qb + ts * ts * qw

    def objective(ts, gs):
        return quad(ts) - 2 * gs + cc

    if segment:
        lo, hi = jnp.zeros((), dt), jnp.ones((), dt)
    else:
        # the minimiser satisfies (|a + t w| - |c|)^2 <= f(t*) <= min(f(0), f(1)): a bounded window
        ends = jnp.asarray([0.0, 1.0], dt)
        f_ref = jnp.maximum(jnp.min(objective(ends, values(ends))), 0.0)
        r = jnp.sqrt(cc) + jnp.sqrt(f_ref)
        disc = jnp.sqrt(jnp.maximum(qb * qb - qw * (qa - r * r), 0.0))
        pad = 1e-6 * (1.0 + jnp.abs(qb) / qw_safe)
        lo = jnp.where(ok, (-qb - disc) / qw_safe - pad, -1.0)
        hi = jnp.where(ok, (-qb + disc) / qw_safe + pad, 1.0)

    def bound(t_i, g_i, t_j, g_j):
        # f >= quad(t) - 2 (chord of g), a convex quadratic: minimise on [t_i, t_j]
        delta = t_j - t_i
        good = delta > 0
        slope = (g_j - g_i) / jnp.where(good, delta, 1.0)
        tm = jnp.clip((slope - qb) / qw_safe, t_i, t_j)
        low = quad(tm) - 2 * (g_i + slope * (tm - t_i)) + cc
        low = jnp.where(good, low, jnp.minimum(quad(t_i) - 2 * g_i, quad(t_j) - 2 * g_j) + cc)
        return low, tm

    xs, ys = _branch_and_bound(values, objective, bound, lo, hi, num_rounds=num_rounds)

    def newton_step(t):
        g, d1, d2, rot = _nuclear_derivatives(m0 + t * mw, mw, 0.0)
        f1 = 2 * (qb + t * qw) - 2 * d1
        f2 = 2 * qw - 2 * d2
        step = jnp.where(f2 > 0, -f1 / jnp.where(f2 > 0, f2, 1.0), 0.0)
        return g, step, 0.5 * f2, rot

    pol = _polish(newton_step, xs, ys, objective, lo, hi)
    xs, ys = _sorted(jnp.concatenate([xs, pol.xs]), jnp.concatenate([ys, pol.ys]))
    f_best = jnp.maximum(jnp.min(objective(xs, ys)), 0.0)
    lb, _ = bound(xs[:-1], ys[:-1], xs[1:], ys[1:])
    f_low = jnp.clip(jnp.min(lb), 0.0, f_best)
    gap = jnp.where(ok, jnp.sqrt(f_best) - jnp.sqrt(f_low), 0.0)
    t = jnp.where(ok, pol.x, 0.0)
    return _Search(t=t, curvature=pol.curvature, gap=gap, converged=gap <= tol, rotation=pol.rotation)


# ------------------------------------------------------------------------------------------------------
# Grid + safeguarded Newton: the generic method (any space) and the reference ``method="grid"``.


def _grid_newton(space, a, v, c, *, ok, segment, tol, num_iters=6, num_grid=31) -> _Search:
    """Best of the tangent-space estimate and a grid in ``t``, then safeguarded Newton steps (unrolled).

    ``f'`` by autodiff, ``f''`` by a central difference of ``f'`` (autodiff second derivatives of SVD-based
    distances are not finite where singular values repeat), steps clipped to the grid spacing.
    """
    lo, hi = (0.0, 1.0) if segment else (-1.0, 2.0)
    h = (hi - lo) / (num_grid - 1)
    vv = space.inner(a, v, v)
    a, c = linalg.after(vv, (a, c))

    # Every evaluation depends on the one before (linalg.after): no two batched decompositions at once
    # (docs/threads.md). f's inputs pass through after(t, .), so its decompositions follow t's computation.
    def f(t):
        a_t, v_t, c_t = linalg.after(t, (a, v, c))
        return 0.5 * jnp.square(space.distance(space.exp(a_t, t * v_t), c_t))

    t_lin = jnp.where(ok, space.inner(a, space.log(a, c), v) / jnp.where(ok, vv, 1.0), 0.0)
    t_lin = jnp.clip(t_lin, lo, hi)
    cands = jnp.concatenate([t_lin[None], jnp.linspace(lo, hi, num_grid, dtype=a.dtype)])
    pc = space.prepare(linalg.after(t_lin, c))
    a_g, v_g, cands = linalg.after(pc, (a, v, cands))
    grid_d = jax.vmap(lambda t: space.prepared_distance(space.prepare(space.exp(a_g, t * v_g)), pc))(cands)
    grid_d = jnp.where(jnp.isnan(grid_d), jnp.inf, grid_d)
    t = cands[jnp.argmin(grid_d)]
    df = jax.grad(f)
    delta = 1e-3 * h

    def curvature(t, done):
        d_hi = df(linalg.after(done, t + delta))
        return (d_hi - df(linalg.after(d_hi, t - delta))) / (2 * delta)

    step = jnp.zeros_like(t)
    for _ in range(num_iters):
        g = df(t)
        curv = curvature(t, g)
        step = jnp.where(curv > 0, -g / jnp.where(curv > 0, curv, 1.0), -jnp.sign(g) * h)
        step = jnp.where(ok & jnp.isfinite(step), jnp.clip(step, -h, h), 0.0)
        t = jnp.clip(t + step, lo, hi)
    curv = curvature(t, step)
    curv = jnp.where(jnp.isfinite(curv) & (curv > 0), curv, jnp.where(ok, vv, 1.0))
    t = jnp.where(ok, t, 0.0)
    nan = jnp.full((), math.nan, a.dtype)
    return _Search(t=t, curvature=curv, gap=nan, converged=jnp.abs(step) <= tol)
