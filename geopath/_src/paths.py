"""A network as a path through a space of representations.

Following Lange et al., "Neural Networks as Paths through the Space of
Representations" (arXiv:2206.10999), the representations that the layers of a
network produce for a fixed probe set are points in a metric space (one of the
``geopath`` spaces); the sequence of layers is a path through that space, and
the one-hot labels of the probe set are a *target* point in the same space.

This module measures such paths:

* :func:`analyze_path` -- length, straightness, step lengths, turning angles,
  distances to input and target, and the projection of every layer onto the
  input -> target geodesic.
* :func:`projection_intervals` -- for every layer, the interval of projection
  fractions that its residual cannot tell apart (:func:`projection_interval`).
* :func:`target_point` -- the target representation (one-hot or softmax).
* :func:`compare_paths` -- distances between the layers of two paths, and the
  distance between the two paths at matched relative depth.
* :func:`analyze_checkpoints` -- :func:`analyze_path` for the same network at
  several training checkpoints, stacked along a leading axis.

Everything is pure JAX: the heavy lifting is ``jax.vmap`` over layers inside
``jax.jit``; it is differentiable with respect to the points (and, through
``space.point``, with respect to the raw activations).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geopath._src import intervals
from geopath._src import linalg
from geopath._src import pairwise
from geopath._src import projection
from geopath._src import sharding
from geopath._src import validation as val
from geopath._src.intervals import ProjectionInterval as ProjectionInterval  # re-exported: it lives there
from geopath._src.intervals import projection_interval as projection_interval

__all__ = [
    "PathAnalysis",
    "PathComparison",
    "ProjectionInterval",
    "analyze_path",
    "analyze_checkpoints",
    "compare_paths",
    "projection_interval",
    "projection_intervals",
    "target_point",
]


class PathAnalysis(NamedTuple):
    """Summary of one path ``p_0, ..., p_{L-1}`` (``L`` layers) and a target ``y``.

    Distances and angles are in the units of the space (radians for the
    angular spaces). ``x`` denotes the input point (``p_0`` unless an explicit
    ``input_point`` was given).

    Attributes:
      length: scalar, ``sum_i d(p_i, p_{i+1})``.
      direct: scalar, ``d(x, y)`` -- length of the direct route from the input
        to the target.
      straightness: scalar, ``direct / length``; defined as 1 for a path of
        length 0. Equals 1 exactly when the layers lie in order on the
        geodesic from the input to the target and the path ends at the
        target; it can exceed 1 when the path stops short of the target.
      chord: scalar, ``d(p_0, p_{L-1})`` (distance between the path's own
        endpoints; ``chord / length`` is the target-free straightness).
      steps: ``[L-1]``, ``d(p_i, p_{i+1})``.
      turning: ``[L-2]``, exterior angle at each interior layer,
        ``pi - angle(p_{i-1}, p_i, p_{i+1})``; 0 when the path goes straight
        on, ``pi`` when it reverses. Set to 0 where an adjacent step is
        below the round-off floor of the distance (``sqrt(2 eps k)`` times
        ``max(1, max step)``, ``k`` = point width; about 1e-2 rad in float32
        for k = 500), because the angle is undefined there -- drop repeated
        layers before the analysis if their turning matters.
      dist_to_input: ``[L]``, ``d(x, p_i)``.
      dist_to_target: ``[L]``, ``d(p_i, y)``.
      proj_t: ``[L]``, fraction along the geodesic ``x -> y`` of the point
        nearest ``p_i`` (0 at the input, 1 at the target; may leave [0, 1]).
      proj_residual: ``[L]``, distance from ``p_i`` to that nearest point.
      proj_gap: ``[L]``, the projection's certificate of global optimality
        (:attr:`geopath.Projection.gap`): no point of the geodesic is nearer
        ``p_i`` than ``proj_residual - proj_gap``. 0 for closed forms (angular
        CKA, stress) and for ``p_0`` when it is the input; NaN for spaces
        without a certified projection (e.g. affine-invariant). At most
        ``1e-6`` (float64) or ``1e-3`` (float32) unless a warning said
        otherwise (see :func:`analyze_path`).
      position: ``[L]``, ``d(x, p_i) / (d(x, p_i) + d(p_i, y))``: 0 at the input, 1 at the target. A
        well-conditioned companion of ``proj_t``: it depends on two distances only, and moving ``p_i`` by
        ``e`` (in distance) changes it by at most ``e / (d(x, p_i) + d(p_i, y) - 2 e)``, at most ``e /
        (direct - 2 e)``; ``proj_t`` can move along the whole flat stretch of a residual (see
        :func:`projection_interval`). It does not say how far ``p_i`` lies off the geodesic
        (``proj_residual`` does). 1/2, with zero gradient, where ``p_i = x = y`` (``d(x, p_i) + d(p_i, y)``
        at or below the round-off floor of ``turning``; possible only when ``direct`` is too): the value of
        every other point when ``x = y``, and finite, so means and plots stay usable.
    """

    length: jax.Array
    direct: jax.Array
    straightness: jax.Array
    chord: jax.Array
    steps: jax.Array
    turning: jax.Array
    dist_to_input: jax.Array
    dist_to_target: jax.Array
    proj_t: jax.Array
    proj_residual: jax.Array
    proj_gap: jax.Array
    position: jax.Array


class PathComparison(NamedTuple):
    """Comparison of two paths ``a`` (``La`` layers) and ``b`` (``Lb`` layers).

    Attributes:
      cross: ``[La, Lb]``, ``d(a_i, b_j)`` for every pair of layers.
      depth: ``[K]``, the common relative-depth grid, ``linspace(0, 1, K)``;
        layer ``i`` of a path with ``L`` layers sits at relative depth
        ``i / (L - 1)``.
      aligned: ``[K]``, distance between the two paths at each grid depth
        (see :func:`compare_paths` for how a path is resampled).
      mean_aligned: scalar, mean of ``aligned`` over the grid (a discrete
        average over relative depth; 0 iff the resampled paths coincide).
    """

    cross: jax.Array
    depth: jax.Array
    aligned: jax.Array
    mean_aligned: jax.Array


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _is_sequence(points: Any) -> bool:
    return isinstance(points, (list, tuple))


def _layers(points) -> list:
    """A path (list of points, or stacked ``[L, n, k]``) as a non-empty list of points."""
    if _is_sequence(points):
        if len(points) == 0:
            raise ValueError("a path needs at least one point; got an empty list")
        return list(points)
    if jnp.ndim(points) != 3:
        raise ValueError(
            "stacked points must have shape [L, n, k] (a leading layer axis over "
            f"[n, k] points); got shape {jnp.shape(points)}. Pass a list of points to stack "
            "points of different widths."
        )
    if jnp.shape(points)[0] == 0:
        raise ValueError("a path needs at least one point; got L = 0")
    if _is_concrete(points):
        points = np.asarray(points)
    return [points[i] for i in range(points.shape[0])]


def _as_list(points) -> list:
    if _is_sequence(points):
        return list(points)
    if jnp.ndim(points) != 3:
        raise ValueError(f"stacked points must have shape [L, n, k]; got {jnp.shape(points)}")
    arr = np.asarray(points) if _is_concrete(points) else jnp.asarray(points)
    return [arr[i] for i in range(arr.shape[0])]


def _zero_step_tol(dtype, width) -> jax.Array:
    # Threshold below which a step counts as zero-length when deciding whether
    # a turning angle is defined: the round-off floor of d(p, p), about
    # sqrt(2 eps k) for k columns (arccos of a number near 1). ``width`` is the
    # widest layer before any bucket padding (traced: no recompilation per width).
    w = jnp.maximum(jnp.asarray(width, dtype), 1.0)
    return jnp.sqrt(2.0 * jnp.finfo(dtype).eps * w)


# Shape buckets: the compiled analysis programs depend on the number of layers and the point width only
# through these buckets, so networks of different depths and widths share compiled code.
_LAYER_MULTIPLE = 4


def _bucket_layers(num_layers: int) -> int:
    """Layer count rounded up to a multiple of :data:`_LAYER_MULTIPLE` (the padding repeats the last layer)."""
    return -(-num_layers // _LAYER_MULTIPLE) * _LAYER_MULTIPLE


def _bucket_width(width: int, n: int) -> int:
    """Zero-padded width for a variable-width space: the next power of two up to 16, then 4 buckets per
    octave (at most 25% wider), but never wider than ``n`` unless ``width`` already is (shape points
    have ``k <= n`` except PCA points, so the common case ``k = n`` of wide layers is never padded)."""
    if width <= 16:
        b = 1 << max(width - 1, 0).bit_length()
    else:
        q = 1 << ((width - 1).bit_length() - 3)
        b = -(-width // q) * q
    return max(width, min(b, n))


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


def _pad_point(space, p, width: int, concrete: bool):
    """One point zero-padded to ``width`` (host-side for concrete arrays: no compiled program per shape)."""
    if not space.variable_width or jnp.shape(p)[-1] == width:
        return np.asarray(p) if concrete else jnp.asarray(p)
    if concrete:
        arr = np.asarray(p)
        return np.pad(arr, [(0, 0)] * (arr.ndim - 1) + [(0, width - arr.shape[-1])])
    return space.pad_to(jnp.asarray(p), width)


class _Padded(NamedTuple):
    stacked: jax.Array  # [T, Lp, n, K] (checkpoint layers, padded and bucketed); [Lp, n, K] if single
    target: jax.Array  # [n, K]
    input_point: Any  # [n, K] or None
    num_layers: int  # L, the real number of layers
    width: int  # widest layer before padding (for the zero-step tolerance)


def _pad_checkpoints(space, checkpoints: list[list], target, input_point, *, single: bool = False) -> _Padded:
    """Checkpoints (lists of ``L`` points each) stacked to ``[T, Lp, n, K]`` in shape buckets.

    Layers are padded to :func:`_bucket_layers` by repeating the last layer (zero steps; the extra entries
    are cut off the results) and, in spaces of variable width, columns are zero-padded (exact) to
    :func:`_bucket_width` of the widest of layers, target and input. Concrete arrays are assembled on the
    host and moved to the device once (no compiled pad/stack programs); traced ones with ``jnp``.
    ``single``: one checkpoint, stacked ``[Lp, n, K]`` without the leading axis.
    """
    L = len(checkpoints[0])
    Lp = _bucket_layers(L)
    flat = [p for ck in checkpoints for p in ck]
    extra = [target] + ([] if input_point is None else [input_point])
    concrete = _is_concrete(*flat, *extra)
    shapes = [tuple(jnp.shape(p)) for p in flat]
    width = max(s[-1] for s in shapes)
    if space.variable_width:
        for s in shapes + [tuple(jnp.shape(e)) for e in extra]:
            if len(s) != 2:
                raise ValueError(f"points of {type(space).__name__} are [n, k] matrices; got shape {s}")
        n = shapes[0][0]
        K = _bucket_width(max([width] + [jnp.shape(e)[-1] for e in extra]), n)
        bad = sorted({s for s in shapes if s[0] != n})
        if bad:
            raise ValueError(f"points must describe the same inputs (same size of axis 0); got shapes {bad}")
    else:
        K = width
        if len(set(shapes)) > 1:
            raise ValueError(
                f"points of this space must all have one shape to be stacked; got {sorted(set(shapes))}"
            )
    target, input_point = (
        None if e is None else _pad_point(space, e, K, concrete) for e in (target, input_point)
    )
    rows = []
    for ck in checkpoints:
        row = [_pad_point(space, p, K, concrete) for p in ck]
        rows.append(row + [row[-1]] * (Lp - L))
    if concrete:
        dt = np.result_type(*[r.dtype for row in rows for r in row])
        host = np.stack(rows[0]) if single else np.stack([np.stack(row) for row in rows])
        stacked = jax.device_put(host.astype(dt, copy=False))
        target = jax.device_put(target)
        input_point = None if input_point is None else jax.device_put(input_point)
    else:
        stacked = jnp.stack(rows[0]) if single else jnp.stack([jnp.stack(row) for row in rows])
    return _Padded(stacked, target, input_point, L, width)


def _trim(res: PathAnalysis, L: int, *, on_mesh: bool = False) -> PathAnalysis:
    """Cuts the layer axes of a result computed on padded layers back to ``L`` layers (host-side when
    concrete: no compiled slice programs). ``on_mesh``: the result of a sharded analysis is sliced where it
    is, so that it stays on the mesh (also when other processes hold some of its devices)."""
    cut = {
        "steps": max(L - 1, 0),
        "turning": max(L - 2, 0),
        "dist_to_input": L,
        "dist_to_target": L,
        "proj_t": L,
        "proj_residual": L,
        "proj_gap": L,
        "position": L,
    }
    if _is_concrete(*res) and not on_mesh:
        host = jax.device_get(res)
        return PathAnalysis(
            *[
                jax.device_put(np.asarray(x)[..., : cut[f]] if f in cut else np.asarray(x))
                for f, x in zip(res._fields, host)
            ]
        )
    return res._replace(**{f: getattr(res, f)[..., :m] for f, m in cut.items()})


# ----------------------------------------------------------------------------
# analyze_path
# ----------------------------------------------------------------------------


def _common_width(space, P: jax.Array, target: jax.Array, input_point):
    """``P [L, n, k]``, target and input point in one floating dtype, zero-padded to one width (exact for
    spaces of variable width), so that the projection frame and every layer share a shape."""
    others = [target] + ([] if input_point is None else [input_point])
    dt = jnp.result_type(P, *others)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    P, target = P.astype(dt), target.astype(dt)
    input_point = None if input_point is None else input_point.astype(dt)
    if space.variable_width:
        k = max(P.shape[-1], *(o.shape[-1] for o in others))
        P, target = linalg.pad_columns(P, k), space.pad_to(target, k)
        input_point = None if input_point is None else space.pad_to(input_point, k)
    return P, target, input_point


# Branch-and-bound budgets of the projections (rounds; see geopath._src.projection): the analysis runs the
# first; where a certificate stays open (gap above the default tolerance), it runs again with the second.
# Measured on the CPU report's resnet14 (54 projections, n = 300, float64): 6 rounds close every gap to
# <= 3e-8 with half the decompositions of the default 16.
_FAST_ROUNDS = 6
_FULL_ROUNDS = projection.NUM_ROUNDS


def _project_all(space, frame, P: jax.Array, num_rounds: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Projection of every layer ``P [L, ...]`` onto the geodesic of ``frame``: ``(t, residual, gap)``, each
    ``[L]``.

    The one place the path analysis projects (swap the projection here). The frame (``log`` of the input ->
    target geodesic and its degeneracy) is built once per checkpoint, outside this ``vmap`` over layers.
    """

    def one(c):
        pr = projection.project_on_frame(space, frame, c, num_rounds=num_rounds)
        return pr.t, pr.distance, pr.gap

    return jax.vmap(one)(P)


def _analyze_impl(
    space, P: jax.Array, target: jax.Array, input_point, width, num_layers=None, *, num_rounds=_FULL_ROUNDS
) -> PathAnalysis:
    """Unjitted analysis of a stacked path ``P`` of shape ``[L, ...]`` (target and input of its shape);
    ``width`` is the widest layer before padding and ``num_layers`` the real number of layers when ``P`` was
    padded by repeating its last layer (both traced; the padded entries are cut off by :func:`_trim`);
    ``num_rounds`` is the projections' budget (static).

    Shared work: :meth:`Space.pair_terms` of each consecutive pair gives its step length and both logs the
    turning angles at its ends need (one SVD per pair in the shape spaces, instead of three); the geodesic
    frame of the projections is built once.

    The stages run one after the other (:func:`linalg.after` between them): no two of their batched
    decompositions may run at once, or jaxlib 0.10's CPU LAPACK kernels can deadlock XLA's thread pool.
    """
    P, target, input_point = _common_width(space, P, target, input_point)
    L = P.shape[0]
    have_input = input_point is not None
    x0 = input_point if have_input else P[0]

    terms = jax.vmap(space.pair_terms)(P[:-1], P[1:])  # per consecutive pair (p_i, p_{i+1})
    P, x0, target = linalg.after(terms, (P, x0, target))  # all three: a space may compute them in turn
    steps = terms.distance  # [L-1]
    if num_layers is not None:  # padded layers: their steps are exactly 0 (d(p, p) need not round to 0)
        steps = jnp.where(jnp.arange(L - 1) < num_layers - 1, steps, jnp.zeros_like(steps))
    length = jnp.sum(steps)
    direct = space.distance(x0, target)
    P, x0, target = linalg.after(direct, (P, x0, target))
    chord = space.distance(P[0], P[-1]) if L > 1 else jnp.zeros((), steps.dtype)
    P, x0, target = linalg.after(chord, (P, x0, target))
    if num_layers is not None:  # P[-1] repeats the real last layer; a one-layer path has chord 0
        chord = jnp.where(num_layers > 1, chord, jnp.zeros_like(chord))
    safe_len = jnp.where(length > 0, length, 1.0)
    straightness = jnp.where(length > 0, direct / safe_len, jnp.ones_like(direct))

    # Turning angles at interior layers: the metric angle (Space.angle_at) between the logs at each vertex:
    # log(p_i, p_{i-1}) is the backward log of pair i-1, log(p_i, p_{i+1}) the forward log of pair i.
    if L >= 3:
        bwd = terms.log_ba[:-1]  # log at p_i towards p_{i-1}
        fwd = terms.log_ab[1:]  # log at p_i towards p_{i+1}
        turning = jnp.pi - jax.vmap(space.angle_at)(P[1:-1], bwd, fwd)
        tol = _zero_step_tol(steps.dtype, width) * jnp.maximum(jnp.max(steps), 1.0)
        ok = (steps[:-1] > tol) & (steps[1:] > tol)
        turning = jnp.where(ok, turning, jnp.zeros_like(turning))
        P, x0, target = linalg.after(turning, (P, x0, target))
    else:
        turning = jnp.zeros((0,), steps.dtype)

    dist_to_target = jax.vmap(lambda p: space.distance(p, target))(P)
    P, x0, target = linalg.after(dist_to_target, (P, x0, target))
    frame = projection.geodesic_frame(space, x0, target)
    P, x0 = linalg.after(frame.v, (P, x0))

    if have_input:
        dist_to_input = jax.vmap(lambda p: space.distance(x0, p))(P)
        P = linalg.after(dist_to_input, P)
        proj_t, proj_res, proj_gap = _project_all(space, frame, P, num_rounds)
    else:
        # Layer 0 *is* the input: its distance, projection fraction and
        # residual are exactly 0. Computing them would differentiate d(x, x),
        # whose gradient is singular for the angular metrics.
        zero = jnp.zeros((1,), steps.dtype)
        rest = P[1:]
        dist_to_input = jnp.concatenate([zero, jax.vmap(lambda p: space.distance(x0, p))(rest)])
        rest = linalg.after(dist_to_input, rest)
        t_rest, r_rest, g_rest = _project_all(space, frame, rest, num_rounds)
        proj_t = jnp.concatenate([zero.astype(t_rest.dtype), t_rest])
        proj_res = jnp.concatenate([zero.astype(r_rest.dtype), r_rest])
        proj_gap = jnp.concatenate([zero.astype(g_rest.dtype), g_rest])

    # position: 1/2 where both distances are at the round-off floor of a distance (p_i = x = y)
    total = dist_to_input + dist_to_target
    floor = jax.lax.stop_gradient(_zero_step_tol(total.dtype, width) * jnp.maximum(jnp.max(total), 1.0))
    defined = total > floor
    position = jnp.where(defined, dist_to_input / jnp.where(defined, total, 1.0), 0.5)

    return PathAnalysis(
        length=length,
        direct=direct,
        straightness=straightness,
        chord=chord,
        steps=steps,
        turning=turning,
        dist_to_input=dist_to_input,
        dist_to_target=dist_to_target,
        proj_t=proj_t,
        proj_residual=proj_res,
        proj_gap=proj_gap,
        position=position,
    )


_analyze_jit = jax.jit(_analyze_impl, static_argnames="num_rounds")


@functools.partial(jax.jit, static_argnames="num_rounds")
def _analyze_batched_jit(space, stacked, target, input_point, width, num_layers, *, num_rounds):
    return _analyze_local(stacked, space, target, input_point, width, num_layers, num_rounds=num_rounds)


def _analyze_local(stacked, space, target, input_point, width, num_layers, *, num_rounds) -> PathAnalysis:
    """:func:`_analyze_impl` vmapped over the checkpoints ``[T, L, ...]`` held by one device."""
    return jax.vmap(
        functools.partial(_analyze_impl, num_rounds=num_rounds), in_axes=(None, 0, None, None, None, None)
    )(space, stacked, target, input_point, width, num_layers)


# one function object per budget: map_leading compiles once per function object
_ANALYZE_LOCAL = {r: functools.partial(_analyze_local, num_rounds=r) for r in (_FAST_ROUNDS, _FULL_ROUNDS)}


def _open_certificates(res: PathAnalysis) -> tuple[int, float]:
    """How many projections of a concrete result have a gap above the default tolerance, and the largest."""
    gap = res.proj_gap
    if not getattr(gap, "is_fully_addressable", True):  # a mesh over several processes: all see every gap,
        # so that every process takes the same branch
        from jax.experimental import multihost_utils

        gap = multihost_utils.process_allgather(gap, tiled=True)
    gap = np.asarray(jax.device_get(gap))
    over = gap > projection.default_tol(gap.dtype)  # NaN (no certificate) is not "open"
    return int(np.sum(over)), float(np.max(gap[over])) if over.any() else 0.0


def _with_budgets(run, *inputs) -> PathAnalysis:
    """``run(num_rounds)`` with the fast budget, again with the full one where a certificate stayed open.

    Only a concrete result can be inspected: with traced ``inputs`` (under ``jit``/``grad``) the full budget
    runs at once. What is returned is certified (every gap at most the default tolerance) or a warning says
    it is not.
    """
    if not _is_concrete(*jax.tree_util.tree_leaves(inputs)):
        return run(_FULL_ROUNDS)
    res = run(_FAST_ROUNDS)
    if _open_certificates(res)[0]:
        res = run(_FULL_ROUNDS)
        count, worst = _open_certificates(res)
        if count:
            warnings.warn(
                f"{count} projection(s) of the path analysis could not be certified within "
                f"{_FULL_ROUNDS} rounds of branch and bound (largest gap {worst:.3g}); their proj_t may "
                "not be the global optimum: see PathAnalysis.proj_gap",
                RuntimeWarning,
                stacklevel=3,
            )
    return res


def _analyze_padded(space, padded: _Padded, mesh) -> PathAnalysis:
    """All checkpoints at once; with a ``mesh``, the checkpoint axis is sharded over its devices."""
    # the sizes as int32 arrays: traced, so every width and depth in one bucket shares the program
    args = (padded.target, padded.input_point, np.int32(padded.width), np.int32(padded.num_layers))

    def run(num_rounds):
        if mesh is None:
            return _analyze_batched_jit(space, padded.stacked, *args, num_rounds=num_rounds)
        return sharding.map_leading(_ANALYZE_LOCAL[num_rounds], mesh, padded.stacked, space, *args)

    res = _with_budgets(run, padded.stacked, padded.target, padded.input_point)
    return _trim(res, padded.num_layers, on_mesh=mesh is not None)


def analyze_path(space, points, target, *, input_point=None) -> PathAnalysis:
    """Geometry of a path of representations relative to a target.

    Args:
      space: a geopath space (e.g. ``gp.AngularShape(alpha=1.0)``).
      points: the path, as a list of points (``space.point(x)`` of each
        layer's activations; shape points of different widths are allowed and
        are zero-padded by ``gp.stack_points``, which is exact) or as an
        already stacked array ``[L, n, k]``.
      target: the target point (see :func:`target_point`).
      input_point: the reference "input" point used for ``direct``,
        ``dist_to_input`` and the projections; defaults to the first point of
        the path. It is *not* added to the path (prepend it to ``points`` if the
        step from the input to the first layer should count in ``length``).

    Returns:
      A :class:`PathAnalysis`. Jit-compatible (``jax.jit(analyze_path,
      static_argnums=())`` works since spaces are pytrees without leaves) and
      differentiable with respect to ``points``, ``target`` and
      ``input_point``.

    The projections are certified (``proj_gap``). Called eagerly, they first run with a small
    branch-and-bound budget and again with the full one only if some certificate stayed open; if one is
    still open then, a ``RuntimeWarning`` says so. Traced (under ``jit`` or ``grad``), the full budget runs
    at once. Either way the answers agree to the certificate's tolerance.
    """
    padded = _pad_checkpoints(space, [_layers(points)], target, input_point, single=True)
    args = (space, padded.stacked, padded.target, padded.input_point, padded.width, padded.num_layers)
    res = _with_budgets(lambda num_rounds: _analyze_jit(*args, num_rounds=num_rounds), *args[1:4])
    return _trim(res, padded.num_layers)


def analyze_checkpoints(
    space,
    reps_per_checkpoint,
    target,
    *,
    input_point=None,
    are_points: bool = False,
    mesh=None,
) -> PathAnalysis:
    """:func:`analyze_path` for one network at several training checkpoints.

    Args:
      space: a geopath space.
      reps_per_checkpoint: either a sequence (one entry per checkpoint) of
        sequences (one entry per layer) of activations ``[n, ...]`` -- or of
        points when ``are_points=True`` -- or, with ``are_points=True``, an
        array of stacked points ``[T, L, n, k]``. Every checkpoint must have
        the same number of layers ``L``.
      target: target point (shared by all checkpoints).
      input_point: optional shared input point (default: each checkpoint's
        first layer).
      are_points: whether the entries are already points.
      mesh: a ``jax.sharding.Mesh`` (e.g. ``gp.device_mesh()``) whose devices share the checkpoints
        (``T`` padded to a multiple of the device count; the result does not depend on it). None: the
        default device.

    Returns:
      A :class:`PathAnalysis` whose fields carry a leading checkpoint axis
      ``[T, ...]``. All checkpoints are stacked into one ``[T, L, n, k]``
      array (zero-padded to a common width for the shape spaces) and analysed
      with a single ``jax.vmap``.
    """
    if not _is_sequence(reps_per_checkpoint):
        arr = reps_per_checkpoint
        if not are_points:
            raise ValueError(
                "an array of stacked checkpoints must hold points; pass are_points=True "
                "or a list of lists of activations"
            )
        if jnp.ndim(arr) != 4:
            raise ValueError(f"stacked checkpoints must have shape [T, L, n, k]; got {jnp.shape(arr)}")
        if jnp.shape(arr)[1] == 0:
            raise ValueError("a path needs at least one point; got a checkpoint with no layers")
        arr = np.asarray(arr) if _is_concrete(arr) else jnp.asarray(arr)
        checkpoints = [[arr[t, i] for i in range(arr.shape[1])] for t in range(arr.shape[0])]
        return _analyze_padded(space, _pad_checkpoints(space, checkpoints, target, input_point), mesh)

    if len(reps_per_checkpoint) == 0:
        raise ValueError("no checkpoints given")
    lengths = {len(r) for r in reps_per_checkpoint}
    if len(lengths) != 1:
        raise ValueError(f"every checkpoint must have the same number of layers; got {sorted(lengths)}")
    (L,) = lengths
    if L == 0:
        raise ValueError("a path needs at least one point; got a checkpoint with no layers")
    checkpoints = []
    for reps in reps_per_checkpoint:
        items = list(reps) if _is_sequence(reps) else [reps[i] for i in range(jnp.shape(reps)[0])]
        checkpoints.append(items if are_points else [space.point(x) for x in items])
    return _analyze_padded(space, _pad_checkpoints(space, checkpoints, target, input_point), mesh)


# ----------------------------------------------------------------------------
# projection intervals
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_grid", "num_bisect"))
def _intervals_jit(
    space, P, target, input_point, proj_t, tol, t_min, t_max, *, num_grid, num_bisect
) -> ProjectionInterval:
    """:func:`intervals.interval_on_frame` of every layer of ``P [L, ...]``, the frame built once."""
    P, target, input_point = _common_width(space, P, target, input_point)
    x0 = P[0] if input_point is None else input_point
    frame = projection.geodesic_frame(space, *jax.lax.stop_gradient((x0, target)))
    P = linalg.after(frame.v, P)
    kw = dict(tol=tol, t_min=t_min, t_max=t_max, num_grid=num_grid, num_bisect=num_bisect)

    def one(c, t):
        return intervals.interval_on_frame(space, frame, c, t, **kw)

    if proj_t is None:
        return jax.vmap(lambda c: one(c, None))(P)
    return jax.vmap(one)(P, proj_t.astype(P.dtype))


def projection_intervals(
    space,
    points,
    target,
    *,
    input_point=None,
    proj_t=None,
    tol: float = 1e-3,
    t_min: float = -1.0,
    t_max: float = 2.0,
    num_grid: int = intervals.NUM_GRID,
    num_bisect: int = intervals.NUM_BISECT,
) -> ProjectionInterval:
    """:func:`projection_interval` of every layer of a path onto its input -> target geodesic.

    The path is taken as by :func:`analyze_path` (a list of points, widths may differ, or stacked ``[L, n,
    k]``; padded to shape buckets, so paths of other depths and widths in the same buckets share the compiled
    program); the geodesic frame is built once and the layers are ``vmap``-ed. The input ``x`` is
    ``input_point`` or the first layer (whose own interval is then the one around ``t = 0``).

    Args:
      space: a geopath space.
      points: the path.
      target: the target point.
      input_point: the input point (default: the first layer).
      proj_t: ``[L]`` the layers' projections, e.g. :attr:`PathAnalysis.proj_t` of the same path and input,
        used instead of projecting again (the projection is about half the cost at the defaults).
      tol, t_min, t_max, num_grid, num_bisect: as in :func:`projection_interval` (the first three traced:
        other values compile nothing new).

    Returns:
      A :class:`ProjectionInterval` whose fields are ``[L]``. Not differentiable (no gradient).

    Memory, as for :func:`analyze_path`: the shape metrics decompose ``8 L`` matrices ``k x k`` at once
    (4 GB at ``L = 60``, ``k = 1000`` in float64).
    """
    intervals.check_options(tol, t_min, t_max, num_grid, num_bisect)
    padded = _pad_checkpoints(space, [_layers(points)], target, input_point, single=True)
    L, Lp = padded.num_layers, padded.stacked.shape[0]
    if proj_t is not None:
        if tuple(jnp.shape(proj_t)) != (L,):
            raise ValueError(
                f"proj_t must have shape ({L},), one fraction per layer; got shape {tuple(jnp.shape(proj_t))}"
            )
        if _is_concrete(proj_t):
            proj_t = jax.device_put(np.pad(np.asarray(proj_t), (0, Lp - L), mode="edge"))
        else:
            proj_t = jnp.pad(jnp.asarray(proj_t), (0, Lp - L), mode="edge")
    res = _intervals_jit(
        space,
        padded.stacked,
        padded.target,
        padded.input_point,
        proj_t,
        tol,
        t_min,
        t_max,
        num_grid=int(num_grid),
        num_bisect=int(num_bisect),
    )
    if _is_concrete(*res):  # host-side cut: no compiled slice programs
        return ProjectionInterval(*[jax.device_put(np.asarray(x)[:L]) for x in jax.device_get(res)])
    return ProjectionInterval(*[x[:L] for x in res])


# ----------------------------------------------------------------------------
# target
# ----------------------------------------------------------------------------


def target_point(space, labels, *, num_classes: int, logits=None, kind: str = "onehot") -> jax.Array:
    """The target representation of a probe set.

    Args:
      space: a geopath space.
      labels: ``[n]`` integer class labels of the probe set.
      num_classes: number of classes ``C``.
      logits: ``[n, C]`` network outputs; required for ``kind="softmax"``.
      kind: ``"onehot"`` -- the one-hot label matrix ``[n, C]`` (the task's
        ideal output); ``"softmax"`` -- ``softmax(logits)`` (what a network
        actually outputs).

    Returns:
      ``space.point`` of the ``[n, C]`` target matrix.
    """
    if kind == "onehot":
        labels = jnp.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D integer array; got shape {labels.shape}")
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
        lab = None if val.is_traced(labels) else np.asarray(labels)
        if lab is not None:
            if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
                raise ValueError(
                    f"labels must lie in [0, {num_classes}); got range [{lab.min()}, {lab.max()}]"
                )
            if np.unique(lab).size < 2:
                raise ValueError("the probe set must contain at least two classes for a one-hot target")
        y = jax.nn.one_hot(labels, num_classes, dtype=jnp.result_type(float))
    elif kind == "softmax":
        if logits is None:
            raise ValueError('kind="softmax" needs logits')
        logits = jnp.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != num_classes:
            raise ValueError(f"logits must have shape [n, {num_classes}]; got {logits.shape}")
        y = jax.nn.softmax(logits.astype(jnp.result_type(logits.dtype, float)), axis=-1)
    else:
        raise ValueError(f'kind must be "onehot" or "softmax"; got {kind!r}')
    return space.point(y)


# ----------------------------------------------------------------------------
# compare_paths
# ----------------------------------------------------------------------------


def _resample_positions(L: int, depth: np.ndarray):
    """Bracketing layer index and fraction for each relative depth (static)."""
    if L == 1:
        return np.zeros(depth.shape, np.int32), np.zeros(depth.shape)
    pos = depth * (L - 1)
    idx = np.minimum(np.floor(pos).astype(np.int32), L - 2)
    frac = pos - idx
    return idx, frac


_GRID_MULTIPLE = 8  # the depth grid is padded to a multiple of this (fewer compiled programs)


@jax.jit
def _aligned_geodesic(space, Pa, ia, fa, Pb, ib, fb, num):
    """Distances at the (padded) grid points and their mean over the first ``num`` (traced) of them.

    ``Pa``, ``Pb`` are padded paths (at least 2 layers each, the last repeated), so every bracketing pair
    ``(P[i], P[i + 1])`` exists; a one-layer path is resampled at fraction 0 of ``(P[0], P[0])``.
    """

    def interp(P, i, f):
        return space.geodesic(P[i], P[i + 1], f)

    def one(i_a, f_a, i_b, f_b):
        return space.distance(interp(Pa, i_a, f_a), interp(Pb, i_b, f_b))

    d = jax.vmap(one)(ia, fa, ib, fb)
    real = jnp.arange(d.shape[0]) < num
    return d, jnp.sum(jnp.where(real, d, jnp.zeros_like(d))) / num.astype(d.dtype)


def _pad_paths(space, la: list, lb: list) -> tuple[jax.Array, jax.Array]:
    """Two paths stacked in shape buckets (layers: repeat the last; columns: zero-padded to one width)."""
    widest = max(la + lb, key=lambda p: jnp.shape(p)[-1])  # sets the common bucket width of both
    a = _pad_checkpoints(space, [la], widest, None, single=True)
    b = _pad_checkpoints(space, [lb], widest, None, single=True)
    return a.stacked, b.stacked


def compare_paths(
    space, points_a, points_b, *, num: int | None = None, method: str = "geodesic", cross=None
) -> PathComparison:
    """Compare two paths (e.g. two architectures, or two seeds) layer by layer.

    Both paths are put on a common relative-depth grid ``s_j = j / (K - 1)``,
    ``K = num`` (default ``max(La, Lb)``), where layer ``i`` of an ``L``-layer
    path sits at ``i / (L - 1)``. Resampling ``method``:

    * ``"geodesic"`` (default): linear in normalised depth -- the point at
      depth ``s`` lies on the geodesic between the two bracketing layers, at the
      fraction given by linear interpolation of the depth.
    * ``"nearest"``: the layer whose relative depth is nearest ``s`` (ties
      round up); the aligned distances are then entries of ``cross``.

    Args:
      space: a geopath space.
      points_a, points_b: paths (lists of points or stacked ``[L, n, k]``).
      num: size of the depth grid.
      method: ``"geodesic"`` or ``"nearest"``.
      cross: optional precomputed ``[La, Lb]`` distances ``d(a_i, b_j)`` (e.g. a block of a joint
        ``gp.pairwise_distances`` matrix that is already at hand); used as given instead of recomputed.

    Returns:
      A :class:`PathComparison`.
    """
    if method not in ("geodesic", "nearest"):
        raise ValueError(f'method must be "geodesic" or "nearest"; got {method!r}')
    la, lb = _as_list(points_a), _as_list(points_b)
    if not la or not lb:
        raise ValueError("both paths need at least one point")
    La, Lb = len(la), len(lb)
    K = int(num) if num is not None else max(La, Lb)
    if K < 1:
        raise ValueError(f"num must be >= 1; got {num}")
    depth_np = np.linspace(0.0, 1.0, K) if K > 1 else np.zeros(1)
    if cross is None:
        cross = pairwise.cross_distances(space, la, lb, are_points=True)
    else:
        cross = jax.device_put(cross) if isinstance(cross, np.ndarray) else jnp.asarray(cross)
        if cross.shape != (La, Lb):
            raise ValueError(
                f"cross must have shape ({La}, {Lb}) for paths of {La} and {Lb} layers; got {cross.shape}"
            )
    concrete = _is_concrete(cross)
    if method == "nearest":
        ia = np.floor(depth_np * (La - 1) + 0.5).astype(np.int32)
        ib = np.floor(depth_np * (Lb - 1) + 0.5).astype(np.int32)
        if concrete:  # host-side gather: no compiled program per grid size
            host = np.asarray(cross)[ia, ib]
            aligned, mean_aligned = jax.device_put(host), jax.device_put(host.mean(dtype=host.dtype))
        else:
            aligned = cross[ia, ib]
            mean_aligned = jnp.mean(aligned)
    else:
        Pa, Pb = _pad_paths(space, la, lb)
        ia, fa = _resample_positions(La, depth_np)
        ib, fb = _resample_positions(Lb, depth_np)
        Kp = -(-K // _GRID_MULTIPLE) * _GRID_MULTIPLE
        ia, ib, fa, fb = (np.pad(x, (0, Kp - K)) for x in (ia, ib, fa, fb))
        dt = np.dtype(Pa.dtype)
        d, mean_aligned = _aligned_geodesic(
            space, Pa, ia, fa.astype(dt), Pb, ib, fb.astype(dt), np.asarray(K, np.int32)
        )
        if _is_concrete(d):
            aligned = jax.device_put(np.asarray(d)[:K])
        else:
            aligned = d[:K]
    depth = jax.device_put(depth_np.astype(np.dtype(cross.dtype)))
    return PathComparison(cross=cross, depth=depth, aligned=aligned, mean_aligned=mean_aligned)
