"""The interval of projection fractions that the residual cannot tell apart (issue 26).

The projection fraction ``t`` of :func:`geopath.project` minimises the residual ``r(t) = d(c, gamma(t))``
along the geodesic ``gamma`` from ``a`` (``t = 0``) to ``b`` (``t = 1``). Where ``r`` is flat near its minimum
``t`` is ill-conditioned: on held-out paths the residual was 0.6704 at both ``t = -0.59`` and ``t = 0.34``.
:func:`projection_interval` reports, beside ``t``, the connected interval of ``t`` on which ``r`` stays within
``tol`` of its minimum.

Only distances are evaluated (no gradients), each from per-geodesic and per-point work done once:

* angular shape metric: ``cos r = ||cos(s) M1 + sin(s) M2||_*`` with ``s = t d(a, b)`` and ``k x k`` matrices
  ``M1, M2`` (as in the projection): one singular-values-only SVD per ``t``;
* Euclidean shape metric: ``r^2 = |a + t w|^2 + |c|^2 - 2 ||M0 + t Mw||_*``: one such SVD per ``t``;
* unit spheres (:class:`AngularCKA`, :class:`PreShape`) and :class:`Stress`: closed forms, ``O(1)`` per ``t``;
* any other space: ``space.distance`` to ``exp_a(t log_a b)``.

SVDs run in batches of :data:`_CHUNK` values of ``t`` (memory: ``_CHUNK k^2`` per point, as the projection's
first round), one batch after the other (:func:`linalg.after`; see ``docs/threads.md``). Loops are Python
loops over a fixed number of steps, unrolled at trace time. Measured (2-core CPU, float64, defaults, angular
shape metric, ``n = k = 1000``): 15 s per call, 12 s with ``t`` given; :func:`geopath.project` alone 7 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import projection
from geopath._src import validation as val
from geopath._src.spaces import Space
from geopath._src.spaces.shape import AngularShape
from geopath._src.spaces.shape import EuclideanShape
from geopath._src.spaces.sphere import UnitSphereSpace
from geopath._src.spaces.stress import Stress

NUM_GRID = 31  # default grid: spacing 0.1 on the default range [-1, 2]
NUM_BISECT = 12  # default steps per edge: bracket 0.1 / 2^12 = 2.4e-5, then linear interpolation
_CHUNK = 8  # values of t per batched decomposition


class ProjectionInterval(NamedTuple):
    """Result of :func:`projection_interval` (fields ``[]``) and :func:`projection_intervals` (``[L]``).

    Attributes:
      t: fraction along the geodesic ``a -> b`` (0 at a, 1 at b) of the least residual in ``[t_min, t_max]``
        (see :func:`projection_interval`).
      residual: ``d(c, gamma(t))``.
      lo, hi: the interval ``t_min <= lo <= t <= hi <= t_max`` on which the residual stays within ``tol`` of
        ``residual``.
      clipped_lo, clipped_hi: bool: the interval reaches ``t_min`` (``lo = t_min``) or ``t_max`` (``hi =
        t_max``); the residual may stay within ``tol`` beyond it.
      projected: bool: ``t`` is the projection (:func:`geopath.project`, or the ``t`` given); False where that
        lay outside ``[t_min, t_max]`` or a grid point had a lower residual, and ``t`` is the least residual
        found around the lowest grid point instead.
    """

    t: Array
    residual: Array
    lo: Array
    hi: Array
    clipped_lo: Array
    clipped_hi: Array
    projected: Array


def check_options(tol, t_min, t_max, num_grid: int, num_bisect: int) -> None:
    """Raises ``ValueError`` for options that cannot work (values only where they are concrete)."""
    if int(num_grid) != num_grid or num_grid < 2:
        raise ValueError(f"num_grid must be an integer >= 2; got {num_grid!r}")
    if int(num_bisect) != num_bisect or num_bisect < 0:
        raise ValueError(f"num_bisect must be an integer >= 0; got {num_bisect!r}")
    if not any(val.is_traced(x) for x in (tol, t_min, t_max)):
        tol, t_min, t_max = (float(np.asarray(x)) for x in (tol, t_min, t_max))
        if not (np.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be finite and >= 0; got {tol}")
        if not (np.isfinite(t_min) and np.isfinite(t_max) and t_min < t_max):
            raise ValueError(f"need finite t_min < t_max; got t_min = {t_min}, t_max = {t_max}")


def projection_interval(
    space: Space,
    a: Array,
    b: Array,
    c: Array,
    *,
    t: ArrayLike | None = None,
    tol: float = 1e-3,
    t_min: float = -1.0,
    t_max: float = 2.0,
    num_grid: int = NUM_GRID,
    num_bisect: int = NUM_BISECT,
) -> ProjectionInterval:
    """The projection of ``c`` onto the geodesic through ``a`` and ``b``, and the interval of ``t`` that its
    residual cannot tell apart from it.

    With ``gamma(t) = exp_a(t log_a b)`` (``t = 0`` at ``a``, ``t = 1`` at ``b``, extended both ways) and the
    residual ``r(t) = d(c, gamma(t))``:

    * ``t``, ``residual``: the projection of :func:`geopath.project` (or the ``t`` given) if it lies in
      ``[t_min, t_max]`` and no grid point has a lower residual; otherwise (``projected`` False) the least
      residual in the two grid cells around the lowest grid point (golden-section search, then a parabolic
      step: a local minimum to about ``1e-10`` where ``r`` is smooth; a range end, exactly, where ``r`` is
      monotone towards it). Where the projection is certified (:attr:`geopath.Projection.gap`), the first
      case is the minimum over the range.
    * ``[lo, hi]``: the connected interval of ``t`` in ``[t_min, t_max]`` that contains ``t`` and on which
      ``r(t) <= residual + tol``: the fractions the residual cannot distinguish from ``t`` at tolerance
      ``tol``. An end that reaches ``t_min`` or ``t_max`` is that bound, flagged ``clipped_lo`` /
      ``clipped_hi``.

    The residual is evaluated on ``num_grid`` equally spaced ``t`` (spacing ``h = (t_max - t_min) /
    (num_grid - 1)``, both ends included); the run of grid points within tolerance around ``t`` brackets each
    edge between an inner point (``<= residual + tol``) and an outer grid point (``>``); ``num_bisect``
    bisection steps narrow the bracket to ``h / 2^num_bisect``, then linear interpolation places the edge.
    What holds:

    * every unclipped edge is a crossing, ``r(lo) = r(hi) = residual + tol``, to the interpolation's error
      (``max|r''| w^2 / 8`` with ``w = h / 2^num_bisect`` the final bracket: ``7e-11 max|r''|`` at the
      defaults; at most the residual's Lipschitz constant times ``w`` where ``r`` has a kink in that bracket);
    * if ``r`` is quasi-convex on ``[t_min, t_max]`` (non-increasing, then non-decreasing: :class:`Stress`;
      the unit spheres where the range lies within half a period of ``t`` on either side), ``[lo, hi]`` is
      exactly the set ``{t : r(t) <= residual + tol}`` and the grid does not limit it;
    * otherwise (multi-modal ``r``, e.g. the shape metrics) the grid limits the result only in two ways: an
      excursion of ``r`` above ``residual + tol`` that begins and ends between two adjacent grid points is
      not seen (the interval spans it), and where ``r`` crosses ``residual + tol`` several times between the
      two grid points around an edge, the edge is one of those crossings. Every grid point in ``[lo, hi]`` is
      within tolerance. (At an interior minimum of the angular shape metric ``cos r(t') >= cos(residual)
      cos(d(a, b) (t' - t))``, so the interval is never narrower than that of the sphere, to within ``w``.)

    The angular shape metric's geodesic closes up after ``pi / d(a, b)`` in ``t`` (a sphere's after ``2 pi /
    d(a, b)``): a range wider than that holds copies of the minimum, and the interval is the one around
    ``t``. If ``a`` and ``b`` coincide the geodesic is a point: ``r`` is constant and the interval is the
    whole range. NaN in an input gives NaN ``t``, ``residual``, ``lo`` and ``hi`` (and False flags).

    The residual is evaluated as in the module notes; for the angular shape metric, from the arccos of a
    nuclear norm, it is accurate to about ``sqrt(eps)`` (``1e-8`` in float64) where it is near 0
    (:func:`geopath.project` gives the distance itself there).

    Cost: distances only, each from work done once per geodesic and per ``c``; the shape metrics spend one
    singular-values-only SVD of a ``k x k`` matrix per evaluation, ``num_grid + 11 + 2 num_bisect`` of them
    (66 at the defaults) besides the projection's (unless ``t`` is given). The result carries no gradient
    (use :func:`geopath.project` for a differentiable ``t``).

    Args:
      space: the space.
      a, b: points defining the geodesic, e.g. ``[n, k]`` (shape spaces, widths may differ) or ``[n, n]``.
      c: the point to project (as in :func:`geopath.project`: points, not raw representations).
      t: ``[]`` a known projection of ``c`` (e.g. :attr:`PathAnalysis.proj_t`) used instead of calling
        :func:`geopath.project`; its residual is evaluated here.
      tol: the tolerance, in units of distance (radians for the angular spaces); ``>= 0``.
      t_min, t_max: the range of ``t`` searched (``t_min < t_max``).
      num_grid: grid size (static, ``>= 2``).
      num_bisect: bisection steps per edge (static, ``>= 0``).

    Returns:
      :class:`ProjectionInterval` ``(t, residual, lo, hi, clipped_lo, clipped_hi, projected)``, each ``[]``.

    Example:
      The flat case: ``c`` is at the pole of the great circle through ``a`` and ``b``, a right angle from
      every point of it, so no ``t`` is better than another.

      >>> import jax, jax.numpy as jnp, geopath as gp
      >>> e = jnp.eye(9).reshape(9, 3, 3)  # orthonormal points of AngularCKA's unit sphere
      >>> a, b, c = e[0], jnp.cos(1.0) * e[0] + jnp.sin(1.0) * e[1], e[2]
      >>> iv = jax.jit(gp.projection_interval, static_argnums=0)(gp.AngularCKA(), a, b, c)
      >>> round(float(iv.residual), 4), float(iv.lo), float(iv.hi), bool(iv.clipped_lo & iv.clipped_hi)
      (1.5708, -1.0, 2.0, True)
    """
    check_options(tol, t_min, t_max, num_grid, num_bisect)
    a, b, c = space.common(a, b, c)
    a, b, c = (jnp.asarray(p) for p in (a, b, c))
    for name, p in (("b", b), ("c", c)):
        if p.shape != a.shape:
            raise ValueError(f"a and {name} must have one shape (after padding); got {a.shape} and {p.shape}")
    if t is not None and jnp.ndim(t) != 0:
        raise ValueError(f"t must be a scalar (shape ()); got shape {jnp.shape(t)}")
    dtype = jnp.result_type(a, b, c)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    a, b, c = (jax.lax.stop_gradient(p.astype(dtype)) for p in (a, b, c))
    return interval_on_frame(
        space,
        projection.geodesic_frame(space, a, b),
        c,
        t,
        tol=tol,
        t_min=t_min,
        t_max=t_max,
        num_grid=num_grid,
        num_bisect=num_bisect,
    )


def interval_on_frame(
    space: Space,
    frame: projection.GeodesicFrame,
    c: Array,
    t: ArrayLike | None = None,
    *,
    tol,
    t_min,
    t_max,
    num_grid: int,
    num_bisect: int,
) -> ProjectionInterval:
    """:func:`projection_interval` of ``c`` on a prebuilt :func:`projection.geodesic_frame` (same options).

    ``c`` must have the frame's shape and dtype. ``jax.vmap`` over ``c`` (and ``t``) with the frame unbatched
    does the per-geodesic work once: this is how :func:`projection_intervals` treats the layers of a path.
    """
    frame, c = jax.lax.stop_gradient((frame, c))
    dtype = frame.a.dtype
    tol, t_min, t_max = (jnp.asarray(x, dtype) for x in (tol, t_min, t_max))
    residual = _residual_fn(space, frame, c)
    grid = t_min + (t_max - t_min) * jnp.linspace(0.0, 1.0, num_grid, dtype=dtype)
    grid = grid.at[-1].set(t_max)  # both ends exactly
    if t is None:
        t_star = projection.project_on_frame(space, frame, c).t
        grid = linalg.after(t_star, grid)  # the projection's decompositions first
    else:
        t_star = jax.lax.stop_gradient(jnp.asarray(t, dtype))
    # the grid and t in one evaluation (num_grid + 1 = 32: four full batches at the default)
    rs = residual(jnp.concatenate([grid, t_star[None]]))
    rs, r_star = rs[:-1], rs[-1]

    # the least residual in [t_min, t_max]: the projection's, unless a grid point is lower; then the minimum
    # around that grid point
    in_range = (t_star >= t_min) & (t_star <= t_max)
    clean = jnp.where(jnp.isnan(rs), jnp.inf, rs)
    use_grid = jnp.min(clean) < jnp.where(in_range, r_star, jnp.inf)
    t_loc, r_loc = _local_minimum(residual, grid, clean)
    t0 = jnp.where(use_grid, t_loc, t_star)
    r0 = jnp.where(use_grid, r_loc, r_star)
    level = r0 + tol

    # the run of grid points within tolerance around t0, and the brackets of its two edges
    inside = rs <= level
    idx = jnp.arange(num_grid)
    left = jnp.max(jnp.where(~inside & (grid < t0), idx, -1))  # last grid point out, left of t0
    right = jnp.min(jnp.where(~inside & (grid > t0), idx, num_grid))  # first one out, right of t0
    clipped_lo, clipped_hi = left < 0, right >= num_grid
    out_i = jnp.clip(jnp.stack([left, right]), 0, num_grid - 1)
    in_i = jnp.clip(jnp.stack([left + 1, right - 1]), 0, num_grid - 1)
    # the inner end: the grid point next to the outer one, unless t0 lies between them
    grid_inner = jnp.stack([grid[in_i[0]] < t0, grid[in_i[1]] > t0])
    t_in = jnp.where(grid_inner, grid[in_i], t0)
    r_in = jnp.where(grid_inner, rs[in_i], r0)
    t_out, r_out = grid[out_i], rs[out_i]
    for _ in range(num_bisect):  # both edges at once: r(t_in) <= level < r(t_out)
        mid = 0.5 * (t_in + t_out)
        r_mid = residual(mid)
        keep = r_mid <= level
        t_in, r_in = jnp.where(keep, mid, t_in), jnp.where(keep, r_mid, r_in)
        t_out, r_out = jnp.where(keep, t_out, mid), jnp.where(keep, r_out, r_mid)
    gap = r_out - r_in
    frac = jnp.clip((level - r_in) / jnp.where(gap > 0, gap, 1.0), 0.0, 1.0)
    edges = t_in + frac * (t_out - t_in)
    lo = jnp.where(clipped_lo, t_min, edges[0])
    hi = jnp.where(clipped_hi, t_max, edges[1])

    bad = jnp.isnan(r0) | jnp.any(jnp.isnan(rs)) | jnp.isnan(level)
    nan = jnp.full((), jnp.nan, dtype)
    no = jnp.zeros((), bool)
    return ProjectionInterval(
        t=jnp.where(bad, nan, t0),
        residual=jnp.where(bad, nan, r0),
        lo=jnp.where(bad, nan, lo),
        hi=jnp.where(bad, nan, hi),
        clipped_lo=jnp.where(bad, no, clipped_lo),
        clipped_hi=jnp.where(bad, no, clipped_hi),
        projected=jnp.where(bad, no, ~use_grid),
    )


_GOLDEN = 0.5 * (math.sqrt(5.0) - 1.0)  # 0.618...
_NUM_GOLDEN = 8  # golden-section steps of the local minimum: bracket 2 h 0.618^8 = 0.02 h, then a parabola


def _local_minimum(residual, grid: Array, rs: Array) -> tuple[Array, Array]:
    """The least residual on the grid cells around the lowest grid point: ``(t, r(t))``.

    Golden-section search on ``[t_{j-1}, t_{j+1}]`` (one evaluation per step after the first two), then one
    step to the vertex of the parabola through the best point and its two neighbours, kept inside the
    bracket; the best point evaluated (the grid point included) is returned. ``rs``: grid residuals, NaN
    replaced by inf.
    """
    g = jnp.asarray(_GOLDEN, grid.dtype)
    j = jnp.argmin(rs)
    last = grid.shape[0] - 1
    a, b = grid[jnp.maximum(j - 1, 0)], grid[jnp.minimum(j + 1, last)]
    fa, fb = rs[jnp.maximum(j - 1, 0)], rs[jnp.minimum(j + 1, last)]
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = residual(jnp.stack([x1, x2]))
    for _ in range(_NUM_GOLDEN - 1):
        left = f1 < f2  # the minimum lies in [a, x2]: keep x1 as the new x2; else in [x1, b]
        a, fa = jnp.where(left, a, x1), jnp.where(left, fa, f1)
        b, fb = jnp.where(left, x2, b), jnp.where(left, f2, fb)
        kx, kf = jnp.where(left, x1, x2), jnp.where(left, f1, f2)
        nx = jnp.where(left, b - g * (b - a), a + g * (b - a))
        nf = residual(nx[None])[0]
        x1, f1 = jnp.where(left, nx, kx), jnp.where(left, nf, kf)
        x2, f2 = jnp.where(left, kx, nx), jnp.where(left, kf, nf)
    # the parabola through the lower interior point and its neighbours among (a, x1, x2, b)
    left = f1 < f2
    xl, xm, xr = jnp.where(left, a, x1), jnp.where(left, x1, x2), jnp.where(left, x2, b)
    fl, fm, fr = jnp.where(left, fa, f1), jnp.where(left, f1, f2), jnp.where(left, f2, fb)
    p = (xm - xl) * (fm - fr)
    q = (xm - xr) * (fm - fl)
    den = 2.0 * (p - q)
    ok = jnp.isfinite(den) & (den != 0)
    xv = xm - ((xm - xl) * p - (xm - xr) * q) / jnp.where(ok, den, 1.0)
    xv = jnp.clip(jnp.where(ok & jnp.isfinite(xv), xv, xm), xl, xr)
    fv = residual(xv[None])[0]
    xs = jnp.stack([grid[j], x1, x2, xv])
    fs = jnp.stack([rs[j], f1, f2, fv])
    k = jnp.argmin(jnp.where(jnp.isnan(fs), jnp.inf, fs))
    return xs[k], fs[k]


# ------------------------------------------------------------------------------------------------------
# The residual r(t) = d(c, gamma(t)) along one geodesic, vectorised over t.


def _in_batches(values: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``values`` applied to at most :data:`_CHUNK` values of ``t`` at a time, one batch after the other."""

    def run(ts: Array) -> Array:
        out = []
        for i in range(0, ts.shape[0], _CHUNK):
            part = ts[i : i + _CHUNK]
            if out:
                part = linalg.after(out[-1], part)
            out.append(values(part))
        return out[0] if len(out) == 1 else jnp.concatenate(out)

    return run


def _unit_direction(frame: projection.GeodesicFrame) -> tuple[Array, Array]:
    """``(|v|, v / |v|)`` of ``v = log(a, b)``; ``(1, 0)`` where the geodesic is degenerate."""
    theta = linalg.safe_norm(frame.sv)
    safe = jnp.where(frame.ok, theta, 1.0)
    return safe, jnp.where(frame.ok, frame.sv / safe, jnp.zeros_like(frame.sv))


def _residual_fn(space: Space, frame: projection.GeodesicFrame, c: Array) -> Callable[[Array], Array]:
    """``ts [m] -> r [m]``, ``r(t) = d(c, exp_a(t log_a b))`` (constant where the geodesic is degenerate)."""
    a, ok = frame.a, frame.ok

    def along(ts):  # a degenerate geodesic is the point a for every t
        return jnp.where(ok, ts, jnp.zeros_like(ts))

    if isinstance(space, AngularShape):
        theta, u = _unit_direction(frame)
        an, cn = a / linalg.safe_norm(a), c / linalg.safe_norm(c)
        m1, m2 = an.T @ cn, u.T @ cn

        def angular(ts):
            s = (along(ts) * theta)[:, None, None]
            h = jnp.sum(jnp.linalg.svd(jnp.cos(s) * m1 + jnp.sin(s) * m2, compute_uv=False), axis=-1)
            return linalg.safe_arccos(jnp.minimum(h, 1.0))

        return _in_batches(angular)
    if isinstance(space, EuclideanShape):
        w = frame.sv  # log(a, b) = b R - a
        qa, qb, qw, cc = jnp.sum(a * a), jnp.sum(a * w), jnp.sum(w * w), jnp.sum(c * c)
        m0, mw = a.T @ c, w.T @ c

        def euclidean(ts):
            ts = along(ts)
            g = jnp.sum(jnp.linalg.svd(m0 + ts[:, None, None] * mw, compute_uv=False), axis=-1)
            return jnp.sqrt(jnp.maximum(qa + 2 * ts * qb + ts * ts * qw + cc - 2 * g, 0.0))

        return _in_batches(euclidean)
    if isinstance(space, UnitSphereSpace):
        # c = x a + y u + e with e orthogonal to the circle: sin r and cos r of gamma(s) = cos(s) a + sin(s) u
        theta, u = _unit_direction(frame)
        x, y = jnp.sum(a * c), jnp.sum(u * c)
        e = c - x * a - y * u
        ee = jnp.sum(e * e)

        def sphere(ts):
            s = along(ts) * theta
            cos_r = x * jnp.cos(s) + y * jnp.sin(s)
            sin_r = jnp.sqrt(ee + jnp.square(x * jnp.sin(s) - y * jnp.cos(s)))
            return jnp.arctan2(sin_r, cos_r)

        return sphere
    if isinstance(space, Stress):
        # flat: c - a = alpha w + e with e orthogonal to w (tangent coordinates): r^2 = |e|^2 + (t - alpha)^2 |w|^2
        tw, td = space.tangent_coords(a, frame.sv), space.tangent_coords(a, c - a)
        ww = jnp.sum(tw * tw)
        alpha = jnp.where(ok, jnp.sum(td * tw) / jnp.where(ok, ww, 1.0), 0.0)
        e = td - alpha * tw
        ee = jnp.sum(e * e)
        ww = jnp.where(ok, ww, 0.0)

        def flat(ts):
            return jnp.sqrt(ee + jnp.square(along(ts) - alpha) * ww)

        return flat

    def generic(ts):
        # every decomposition of a batch follows ts (hence the batch before): c is prepared per batch, a is
        # factored per point
        a_t, sv_t, c_t = linalg.after(ts, (a, frame.sv, c))
        pc = space.prepare(c_t)
        a_t, sv_t = linalg.after(pc, (a_t, sv_t))
        return jax.vmap(lambda t: space.prepared_distance(space.prepare(space.exp(a_t, t * sv_t)), pc))(
            along(ts)
        )

    return _in_batches(generic)
