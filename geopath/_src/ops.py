"""Geodesic operations that work in any space: angles, projections, midpoints, means, path length."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val
from geopath._src.projection import Projection as Projection  # re-exported: project lives there
from geopath._src.projection import project as project
from geopath._src.spaces import Space


def distance(space: Space, x: ArrayLike, y: ArrayLike) -> Array:
    """Distance between two raw representations ``x [n, ...]`` and ``y [n, ...]``.

    ``space.distance(space.point(x), space.point(y))``: the widths (trailing axes) may differ, the inputs
    ``n`` may not.

    Args:
      space: the space.
      x, y: raw representations of the same ``n`` inputs (``n >= 3``), e.g. two layers' activations.

    Returns:
      ``[]`` the distance, in the dtype of the points (float32, or float64 for float64 input; see
      :meth:`Space.point`). Radians for the angular spaces.

    Raises:
      ValueError: ``x`` and ``y`` describe different numbers of inputs, or either is not a valid
        representation (too few inputs or axes, NaN or Inf, constant: see :meth:`Space.point`).
      TypeError: complex input.

    Example:
      >>> import jax, geopath as gp
      >>> x = jax.random.normal(jax.random.key(0), (100, 32))
      >>> y = 3.0 * x @ jax.random.orthogonal(jax.random.key(1), 32) + 1.0  # rotated, scaled, shifted
      >>> round(float(gp.distance(gp.AngularShape(), x, y)), 4)
      0.0
    """
    return space.distance(space.point(x), space.point(y))


def stack_points(space: Space, points: Sequence[Array] | Array) -> Array:
    """Stacks points into one array ``[L, ...]`` (shape-space points zero-padded to a common width).

    Zero-padding is exact for the shape metrics, so the stacked points can be ``vmap``-ed over.
    An array that is already stacked is returned unchanged.

    Args:
      space: the space of the points.
      points: ``L`` points (``space.point`` of each representation), or an array ``[L, ...]``.

    Returns:
      ``[L, ...]``: ``[L, n, k]`` with ``k`` the widest width for the shape spaces; the points' common
      shape otherwise. The dtype is the points' (promoted if they differ).

    Raises:
      ValueError: no points, points of different inputs ``n``, or (fixed-width spaces) of different shapes.
    """
    if isinstance(points, (jax.Array, jnp.ndarray)) or hasattr(points, "shape"):
        return jnp.asarray(points)
    points = list(points)
    if not points:
        raise ValueError("stack_points needs at least one point")
    points = space.common(*points)
    shapes = {tuple(jnp.shape(p)) for p in points}
    if len(shapes) > 1:
        raise ValueError(f"points of this space must all have one shape to be stacked; got {sorted(shapes)}")
    return jnp.stack(points)


def angle(space: Space, a: Array, b: Array, c: Array) -> Array:
    """Angle at ``b`` between the geodesics ``b -> a`` and ``b -> c``, in ``[0, pi]`` radians.

    This is the angle of the metric space (the Alexandrov angle: the limit as ``h -> 0`` of the angle at ``b``
    of the flat triangle with the side lengths of ``b, gamma_ba(h), gamma_bc(h)``), computed from the logs at
    ``b`` by :meth:`Space.angle_at`. In Riemannian spaces it is the angle between the log vectors; in the
    shape spaces it is the smallest angle between them over the rotations that fix ``b``, which is smaller
    at singular points (``b`` of rank below the common width, e.g. a narrow layer between wider ones). It is
    pi when ``b`` lies on the geodesic between ``a`` and ``c``. If ``b`` coincides with ``a`` or ``c`` (a log
    shorter than ``sqrt(eps)`` times the other log or the scale of ``b``) the angle is undefined and
    ``pi / 2`` is returned, with zero gradient.

    Args:
      space: the space.
      a, b, c: points (``space.point`` of representations of the same inputs); shape-space points may
        have different widths.

    Returns:
      ``[]`` the angle in radians, in ``[0, pi]``, in the points' dtype.

    NaN: a point that contains NaN also gives ``pi / 2`` (the value of an undefined angle), not NaN. Check
    the distances (which are NaN then) where points may be invalid.

    Example:
      >>> import jax.numpy as jnp, geopath as gp
      >>> space = gp.AngularCKA()
      >>> x = jnp.arange(40.0).reshape(10, 4) ** 0.5
      >>> a, c = space.point(x), space.point(jnp.cos(x))
      >>> b = space.geodesic(a, c, 0.3)  # on the geodesic from a to c
      >>> round(float(gp.angle(space, a, b, c)), 3)  # a straight angle
      3.142
    """
    a, b, c = space.common(a, b, c)
    log_a = space.log(b, a)
    b, c = linalg.after(log_a, (b, c))  # one decomposition at a time (docs/threads.md)
    log_c = space.log(b, c)
    return space.angle_at(*linalg.after(log_c, (b, log_a)), log_c)


def midpoint(space: Space, a: Array, b: Array) -> Array:
    """The geodesic midpoint of ``a`` and ``b``: ``space.geodesic(a, b, 0.5)``.

    Returns:
      A point shaped like ``a`` (shape spaces: padded to the common width of ``a`` and ``b``), in the points'
      dtype; NaN if ``a`` or ``b`` contains NaN.
    """
    return space.geodesic(a, b, 0.5)


def subdivide(space: Space, a: Array, b: Array, k: int) -> Array:
    """``k + 1`` equally spaced points on the geodesic from ``a`` to ``b`` (both included).

    Args:
      space: the space.
      a, b: the end points.
      k: the number of segments, ``>= 1`` (static).

    Returns:
      ``[k + 1, ...]``: ``space.geodesic(a, b, i / k)`` for ``i = 0 .. k``, shaped like the common point.

    Raises:
      ValueError: ``k < 1``.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"subdivide needs k >= 1 segments; got {k}")
    a, b = space.common(a, b)
    ts = jnp.linspace(0.0, 1.0, k + 1, dtype=a.dtype)
    return jax.vmap(lambda t: space.geodesic(a, b, t))(ts)


def step_lengths(space: Space, points: Sequence[Array] | Array) -> Array:
    """Distances between consecutive points (one ``vmap``, no Python loop).

    Args:
      space: the space.
      points: ``L`` points, as a list or stacked ``[L, ...]`` (see :func:`stack_points`).

    Returns:
      ``[L - 1]`` the distances ``d(p_i, p_{i+1})`` in the points' dtype (empty for one point); NaN for
      each step with a NaN point.

    Raises:
      ValueError: as :func:`stack_points`.
    """
    p = stack_points(space, points)
    if p.shape[0] < 2:
        return jnp.zeros((0,), p.dtype)
    return jax.vmap(space.distance)(p[:-1], p[1:])


def path_length(space: Space, points: Sequence[Array] | Array) -> Array:
    """Length of the piecewise-geodesic path through ``points``: the sum of :func:`step_lengths`.

    Args:
      space: the space.
      points: ``L`` points, as a list or stacked ``[L, ...]``.

    Returns:
      ``[]`` the length in the points' dtype (0 for one point); NaN if a point contains NaN.

    Raises:
      ValueError: as :func:`stack_points`.

    Example:
      >>> import jax.numpy as jnp, geopath as gp
      >>> space = gp.AngularCKA()
      >>> x = jnp.arange(40.0).reshape(10, 4) ** 0.5
      >>> a, c = space.point(x), space.point(jnp.cos(x))
      >>> on_geodesic = [a, space.geodesic(a, c, 0.5), c]
      >>> round(float(gp.path_length(space, on_geodesic) - space.distance(a, c)), 4)
      0.0
    """
    return jnp.sum(step_lengths(space, points))


class FrechetMean(NamedTuple):
    """Result of :func:`frechet_mean`.

    Attributes:
      mean: the (Karcher) mean point.
      residual: ``[]`` norm of the Riemannian gradient ``sum_i w_i log_mean(p_i)`` at the result (0 at a
        stationary point).
      variance: ``[]`` ``sum_i w_i d(mean, p_i)^2``.
    """

    mean: Array
    residual: Array
    variance: Array


def frechet_mean(
    space: Space,
    points: Sequence[Array] | Array,
    *,
    weights: ArrayLike | None = None,
    num_iters: int = 32,
    step_size: float = 1.0,
) -> FrechetMean:
    """Weighted Frechet (Karcher) mean by Riemannian gradient descent ``m <- exp_m(step * sum_i w_i log_m p_i)``.

    Args:
      space: the space.
      points: list of points or stacked ``[m, ...]``.
      weights: ``[m]`` finite non-negative weights with a positive sum (normalised to sum 1); uniform if None.
      num_iters: fixed number of iterations (differentiable, no recompilation).
      step_size: step length; 1 is the classical Karcher iteration.

    Returns:
      :class:`FrechetMean` ``(mean, residual, variance)``: the mean shaped like the stacked points' entries,
      the two scalars in the points' dtype. A point that contains NaN gives a NaN mean.

    Raises:
      ValueError: if concrete ``weights`` are negative, non-finite or all zero, or do not have shape
        ``[m]``. Traced weights (under ``jit``) that violate this give a NaN mean, residual and variance,
        never a number.
    """
    p = stack_points(space, points)
    m = p.shape[0]
    w = jnp.full((m,), 1.0 / m, p.dtype) if weights is None else jnp.asarray(weights, p.dtype)
    if w.shape != (m,):
        raise ValueError(f"weights must have shape ({m},) to match points {p.shape}; got {w.shape}")
    valid = jnp.all(jnp.isfinite(w)) & jnp.all(w >= 0) & (jnp.sum(w) > 0)
    if not val.is_traced(valid) and not bool(valid):
        raise ValueError(
            f"weights must be finite and non-negative with a positive sum; got {np.asarray(w).tolist()}"
        )
    w = jnp.where(valid, w / jnp.sum(w), jnp.nan)

    def grad_at(x):
        logs = jax.vmap(lambda q: space.log(x, q))(p)
        return jnp.tensordot(w, logs, axes=1)

    # one decomposition at a time: each step's inputs pass through linalg.after (docs/threads.md)
    def body(x, _):
        g = grad_at(x)
        return space.exp(linalg.after(g, x), step_size * g), None

    mean, _ = jax.lax.scan(body, p[0], None, length=num_iters)
    g = grad_at(mean)
    mean_g, p_g = linalg.after(g, (mean, p))
    d = jax.vmap(lambda q: space.distance(mean_g, q))(p_g)
    residual = space.norm(*linalg.after(d, (mean, g)))
    return FrechetMean(mean=mean, residual=residual, variance=jnp.sum(w * d * d))


class AlexandrovCurvature(NamedTuple):
    """Result of :func:`alexandrov_curvature` (triangle comparison at the median from ``b``).

    Attributes:
      median: ``[]`` ``d(b, m)`` with ``m`` the geodesic midpoint of ``a`` and ``c``.
      euclidean_median: ``[]`` the same median in the flat comparison triangle with the same side lengths,
        ``sqrt(2 d_ab^2 + 2 d_bc^2 - d_ac^2) / 2``.
      excess: ``[]`` ``(median - euclidean_median) / euclidean_median``: > 0 where triangles are fatter
        than flat ones (positive curvature, e.g. spheres), < 0 where thinner (negative curvature), 0 if flat.
    """

    median: Array
    euclidean_median: Array
    excess: Array


def alexandrov_curvature(space: Space, a: Array, b: Array, c: Array) -> AlexandrovCurvature:
    """Alexandrov (triangle comparison) curvature of the triangle ``a, b, c`` measured at ``b``.

    Compares the median from ``b`` (to the geodesic midpoint of ``a`` and ``c``) with the median of the flat
    triangle that has the same side lengths.

    Args:
      space: the space.
      a, b, c: points of the same inputs.

    Returns:
      :class:`AlexandrovCurvature` ``(median, euclidean_median, excess)``, each ``[]`` in the points' dtype.
      ``excess`` is 0 where the flat median is 0 (a degenerate triangle). NaN in a point gives NaN medians
      but an ``excess`` of 0: check the medians.
    """
    a, b, c = space.common(a, b, c)
    # one decomposition at a time: each step's inputs pass through linalg.after (docs/threads.md)
    dab = space.distance(a, b)
    dbc = space.distance(*linalg.after(dab, (b, c)))
    dac = space.distance(*linalg.after(dbc, (a, c)))
    a, c = linalg.after(dac, (a, c))
    mid = midpoint(space, a, c)
    med = space.distance(linalg.after(mid, b), mid)
    flat = 0.5 * linalg.safe_sqrt(2 * dab**2 + 2 * dbc**2 - dac**2)
    excess = jnp.where(flat > 0, (med - flat) / jnp.where(flat > 0, flat, 1.0), 0.0)
    return AlexandrovCurvature(median=med, euclidean_median=flat, excess=excess)
