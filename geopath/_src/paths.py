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

import math
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geopath._src import linalg
from geopath._src import ops
from geopath._src import pairwise
from geopath._src import projection
from geopath._src import sharding
from geopath._src import validation as val

__all__ = [
    "PathAnalysis",
    "PathComparison",
    "analyze_path",
    "analyze_checkpoints",
    "compare_paths",
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


def _stack(space, points) -> jax.Array:
    """Points (list of points, or an already stacked array) -> ``[L, ...]``."""
    if _is_sequence(points):
        if len(points) == 0:
            raise ValueError("a path needs at least one point; got an empty list")
        return ops.stack_points(space, list(points))
    arr = jnp.asarray(points)
    if arr.ndim != 3:
        raise ValueError(
            "stacked points must have shape [L, n, k] (a leading layer axis over "
            f"[n, k] points); got shape {arr.shape}. Pass a list of points to stack "
            "points of different widths."
        )
    if arr.shape[0] == 0:
        raise ValueError("a path needs at least one point; got L = 0")
    return arr


def _as_list(points) -> list:
    if _is_sequence(points):
        return list(points)
    arr = jnp.asarray(points)
    if arr.ndim != 3:
        raise ValueError(f"stacked points must have shape [L, n, k]; got {arr.shape}")
    return [arr[i] for i in range(arr.shape[0])]


def _zero_step_tol(dtype, width: int) -> float:
    # Threshold below which a step counts as zero-length when deciding whether
    # a turning angle is defined: the round-off floor of d(p, p), about
    # sqrt(2 eps k) for k columns (arccos of a number near 1).
    return float(math.sqrt(2.0 * jnp.finfo(dtype).eps * max(int(width), 1)))


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


def _project_all(space, frame, P: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Projection of every layer ``P [L, ...]`` onto the geodesic of ``frame``: ``(t [L], residual [L])``.

    The one place the path analysis projects (swap the projection here). The frame (``log`` of the input ->
    target geodesic and its degeneracy) is built once per checkpoint, outside this ``vmap`` over layers.
    """

    def one(c):
        pr = projection.project_on_frame(space, frame, c)
        return pr.t, pr.distance

    return jax.vmap(one)(P)


def _analyze_impl(space, P: jax.Array, target: jax.Array, input_point) -> PathAnalysis:
    """Unjitted analysis of a stacked path ``P`` of shape ``[L, ...]`` (target and input of its shape).

    Shared work: :meth:`Space.pair_terms` of each consecutive pair gives its step length and both logs the
    turning angles at its ends need (one SVD per pair in the shape spaces, instead of three); the geodesic
    frame of the projections is built once.
    """
    P, target, input_point = _common_width(space, P, target, input_point)
    L = P.shape[0]
    have_input = input_point is not None
    x0 = input_point if have_input else P[0]

    terms = jax.vmap(space.pair_terms)(P[:-1], P[1:])  # per consecutive pair (p_i, p_{i+1})
    steps = terms.distance  # [L-1]
    length = jnp.sum(steps)
    direct = space.distance(x0, target)
    chord = space.distance(P[0], P[-1]) if L > 1 else jnp.zeros((), steps.dtype)
    safe_len = jnp.where(length > 0, length, 1.0)
    straightness = jnp.where(length > 0, direct / safe_len, jnp.ones_like(direct))

    # Turning angles at interior layers: the metric angle (Space.angle_at) between the logs at each vertex:
    # log(p_i, p_{i-1}) is the backward log of pair i-1, log(p_i, p_{i+1}) the forward log of pair i.
    if L >= 3:
        bwd = terms.log_ba[:-1]  # log at p_i towards p_{i-1}
        fwd = terms.log_ab[1:]  # log at p_i towards p_{i+1}
        turning = jnp.pi - jax.vmap(space.angle_at)(P[1:-1], bwd, fwd)
        tol = _zero_step_tol(steps.dtype, P.shape[-1]) * jnp.maximum(jnp.max(steps), 1.0)
        ok = (steps[:-1] > tol) & (steps[1:] > tol)
        turning = jnp.where(ok, turning, jnp.zeros_like(turning))
    else:
        turning = jnp.zeros((0,), steps.dtype)

    dist_to_target = jax.vmap(lambda p: space.distance(p, target))(P)
    frame = projection.geodesic_frame(space, x0, target)

    if have_input:
        dist_to_input = jax.vmap(lambda p: space.distance(x0, p))(P)
        proj_t, proj_res = _project_all(space, frame, P)
    else:
        # Layer 0 *is* the input: its distance, projection fraction and
        # residual are exactly 0. Computing them would differentiate d(x, x),
        # whose gradient is singular for the angular metrics.
        zero = jnp.zeros((1,), steps.dtype)
        rest = P[1:]
        dist_to_input = jnp.concatenate([zero, jax.vmap(lambda p: space.distance(x0, p))(rest)])
        t_rest, r_rest = _project_all(space, frame, rest)
        proj_t = jnp.concatenate([zero.astype(t_rest.dtype), t_rest])
        proj_res = jnp.concatenate([zero.astype(r_rest.dtype), r_rest])

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
    )


_analyze_jit = jax.jit(_analyze_impl)
_analyze_batched_jit = jax.jit(jax.vmap(_analyze_impl, in_axes=(None, 0, None, None)))


def _analyze_local(stacked, space, target, input_point) -> PathAnalysis:
    """:func:`_analyze_impl` vmapped over the checkpoints ``[T, L, ...]`` held by one device."""
    return jax.vmap(_analyze_impl, in_axes=(None, 0, None, None))(space, stacked, target, input_point)


def _analyze_stacked(space, stacked, target, input_point, mesh) -> PathAnalysis:
    """All checkpoints at once; with a ``mesh``, the checkpoint axis is sharded over its devices."""
    if mesh is None:
        return _analyze_batched_jit(space, stacked, target, input_point)
    return sharding.map_leading(_analyze_local, mesh, stacked, space, target, input_point)


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
    """
    P = _stack(space, points)
    target = jnp.asarray(target)
    if input_point is not None:
        input_point = jnp.asarray(input_point)
    return _analyze_jit(space, P, target, input_point)


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
    target = jnp.asarray(target)
    if input_point is not None:
        input_point = jnp.asarray(input_point)
    if not _is_sequence(reps_per_checkpoint):
        arr = jnp.asarray(reps_per_checkpoint)
        if not are_points:
            raise ValueError(
                "an array of stacked checkpoints must hold points; pass are_points=True "
                "or a list of lists of activations"
            )
        if arr.ndim != 4:
            raise ValueError(f"stacked checkpoints must have shape [T, L, n, k]; got {arr.shape}")
        return _analyze_stacked(space, arr, target, input_point, mesh)

    if len(reps_per_checkpoint) == 0:
        raise ValueError("no checkpoints given")
    lengths = {len(r) for r in reps_per_checkpoint}
    if len(lengths) != 1:
        raise ValueError(f"every checkpoint must have the same number of layers; got {sorted(lengths)}")
    (L,) = lengths
    if L == 0:
        raise ValueError("a path needs at least one point; got a checkpoint with no layers")
    T = len(reps_per_checkpoint)
    flat = []
    for reps in reps_per_checkpoint:
        if _is_sequence(reps):
            items = list(reps)
        else:
            arr = jnp.asarray(reps)
            items = [arr[i] for i in range(arr.shape[0])]
        flat.extend(items if are_points else [space.point(x) for x in items])
    stacked = ops.stack_points(space, flat)
    stacked = stacked.reshape((T, L) + stacked.shape[1:])
    return _analyze_stacked(space, stacked, target, input_point, mesh)


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


@jax.jit
def _aligned_geodesic(space, Pa, ia, fa, Pb, ib, fb):
    def interp(P, i, f):
        if P.shape[0] == 1:
            return P[i]
        a, b = P[i], P[i + 1]
        return space.geodesic(a, b, f)

    def one(i_a, f_a, i_b, f_b):
        return space.distance(interp(Pa, i_a, f_a), interp(Pb, i_b, f_b))

    return jax.vmap(one)(ia, fa, ib, fb)


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
        cross = jnp.asarray(cross)
        if cross.shape != (La, Lb):
            raise ValueError(
                f"cross must have shape ({La}, {Lb}) for paths of {La} and {Lb} layers; got {cross.shape}"
            )
    if method == "nearest":
        ia = np.floor(depth_np * (La - 1) + 0.5).astype(np.int32)
        ib = np.floor(depth_np * (Lb - 1) + 0.5).astype(np.int32)
        aligned = cross[ia, ib]
    else:
        Pa, Pb = _stack(space, points_a), _stack(space, points_b)
        ia, fa = _resample_positions(La, depth_np)
        ib, fb = _resample_positions(Lb, depth_np)
        dt = Pa.dtype
        aligned = _aligned_geodesic(
            space, Pa, jnp.asarray(ia), jnp.asarray(fa, dt), Pb, jnp.asarray(ib), jnp.asarray(fb, dt)
        )
    depth = jnp.asarray(depth_np, cross.dtype)
    return PathComparison(cross=cross, depth=depth, aligned=aligned, mean_aligned=jnp.mean(aligned))
