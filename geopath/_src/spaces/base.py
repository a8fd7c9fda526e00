"""The contract every space implements, and helpers shared by the spaces.

A *space* turns a layer's activations ``x [n, ...]`` (``n`` inputs, any feature axes) into a *point*
(``space.point(x)``, a plain ``jax.Array``) and knows the Riemannian / metric operations between points.

Every space is a frozen dataclass registered as a pytree *without leaves* (all configuration is static
auxiliary data, see :func:`static_space`), so a space can be passed straight into ``jax.jit``/``jax.vmap``-ed
functions, is hashable, and two equal configurations share compiled code. (Numeric options such as ``alpha``
select code paths at trace time, e.g. whether to whiten at all, so they stay static: a new value compiles
anew.)
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any
from typing import ClassVar
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from geopath._src import linalg
from geopath._src import validation as val


class PairTerms(NamedTuple):
    """What a path analysis needs of one consecutive pair ``(a, b)`` (result of :meth:`Space.pair_terms`).

    Attributes:
      distance: ``[]`` ``d(a, b)``.
      log_ab: ``log(a, b)``, tangent at ``a`` (shaped like the common point).
      log_ba: ``log(b, a)``, tangent at ``b``.
    """

    distance: Array
    log_ab: Array
    log_ba: Array


def static_space(cls):
    """Makes ``cls`` a frozen dataclass and a leaf-less pytree (configuration in aux data)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    jax.tree_util.register_pytree_node(cls, lambda s: ((), s), lambda aux, _: aux)
    return cls


class Centered(NamedTuple):
    """A raw representation, centred and rescaled by a power of two (result of :func:`centered`).

    Attributes:
      values: ``[n, p]`` column-centred data divided by ``2**exponent``; its largest entry lies in
        ``[0.5, 1)``, so squares and Gram matrices of it neither overflow nor underflow.
      exponent: ``[]`` integer: the centred data is ``ldexp(values, exponent)`` (exact: a power of two).
    """

    values: Array
    exponent: Array

    def unscale(self, y: Array, power: int = 1) -> Array:
        """``y * 2**(power * exponent)``: restores the units of a quantity homogeneous of degree ``power``."""
        return jnp.ldexp(y, power * self.exponent)


def centered(x: ArrayLike, name: str) -> Centered:
    """Validated, centred and rescaled raw representation ``x [n, ...]``; see :class:`Centered`.

    The one place where raw data is prepared for every space: ``as_matrix`` (dtype policy, flattening),
    centring that keeps variation small against a common offset (:func:`validation.shift_center`), a
    power-of-two rescaling so that every finite input (1e-30 .. 1e30 in float32) stays in range when
    squared, and the finite / non-constant checks.
    """
    x = val.as_matrix(x, name=name)
    xc = val.shift_center(x)  # (x - mean) / 2, no overflow
    val.check_values(x, xc, name=name)
    e = linalg.max_exponent(xc)
    return Centered(values=jnp.ldexp(xc, -e), exponent=e + 1)


def vdot(u: Array, v: Array) -> Array:
    """Frobenius inner product of two arrays of one shape; scalar."""
    return jnp.sum(u * v)


def sq_dists(xc: Array) -> Array:
    """Squared Euclidean distances ``[n, n]`` between the rows of ``xc [n, p]`` (zero diagonal, >= 0)."""
    sq = jnp.sum(xc * xc, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T), 0.0)
    return d2 * (1.0 - jnp.eye(xc.shape[0], dtype=xc.dtype))


def split_angle(fixed_u: Array, fixed_v: Array, free_u: Array, free_v: Array, free_inner: Array) -> Array:
    """Angle in ``[0, pi]`` between unit vectors ``u = fixed_u + free_u`` and ``v = fixed_v + free_v``.

    ``free_inner`` is the largest inner product of ``free_u`` with the images of ``free_v`` under the
    symmetries that fix the vertex (``<free_u, free_v>`` where there are none), so the result is the
    smallest angle between ``u`` and such an image of ``v``: ``2 atan2(|u - v'|, |u + v'|)`` with
    ``|u -+ v'|^2 = |fixed_u -+ fixed_v|^2 + |free_u|^2 + |free_v|^2 -+ 2 free_inner``. Accurate near pi (a
    sum of non-negative terms); near 0 the free part limits it to about ``sqrt(eps) |free_u|``.
    """
    rr = vdot(free_u, free_u) + vdot(free_v, free_v)
    minus = vdot(fixed_u - fixed_v, fixed_u - fixed_v) + jnp.maximum(rr - 2.0 * free_inner, 0.0)
    plus = vdot(fixed_u + fixed_v, fixed_u + fixed_v) + jnp.maximum(rr + 2.0 * free_inner, 0.0)
    return 2.0 * jnp.arctan2(linalg.safe_sqrt(minus), linalg.safe_sqrt(plus))


def unit_pair(u: Array, v: Array, *, floor: ArrayLike = 0.0) -> tuple[Array, Array, Array]:
    """``(u / |u|, v / |v|, ok)``: ``ok`` is False where ``u`` or ``v`` is too short to have a direction.

    A vector counts as zero when its norm is at most ``sqrt(eps) * max(|u|, |v|, floor)`` (round-off of a
    log between coinciding points is far below that); the returned unit vectors are then finite and their
    gradients are zero, so ``jnp.where(ok, ..., pi / 2)`` differentiates cleanly.
    """
    nu, nv = linalg.safe_norm(u), linalg.safe_norm(v)
    tol = jnp.sqrt(jnp.finfo(nu.dtype).eps) * jnp.maximum(jnp.maximum(nu, nv), jnp.asarray(floor, nu.dtype))
    ok = (nu > tol) & (nv > tol)
    uu = jnp.where(ok, u, jnp.zeros_like(u)) / jnp.where(ok, nu, 1.0)
    vv = jnp.where(ok, v, jnp.zeros_like(v)) / jnp.where(ok, nv, 1.0)
    return uu, vv, ok


def check_points(a, b, *, ndim: int = 2, names=("a", "b")) -> None:
    """Raises ``ValueError`` unless ``a`` and ``b`` have ``ndim`` axes and describe the same inputs."""
    for name, p in zip(names, (a, b)):
        if jnp.ndim(p) != ndim:
            raise ValueError(
                f"{name} must be a point of this space with {ndim} axes; got shape {tuple(jnp.shape(p))}. "
                "Create points with space.point(x)."
            )
    val.check_same_inputs(a, b, names=names)


class Space(abc.ABC):
    """A metric space of representations: the contract every space implements.

    Points are ``jax.Array`` made by :meth:`point`; a tangent vector at ``a`` has the shape of ``a``.
    A new space must implement the abstract methods :meth:`point`, :meth:`distance`, :meth:`log`,
    :meth:`exp`, :meth:`transport` and :meth:`tangent_coords`. Everything else has a default built on them:
    :meth:`geodesic` (``exp(a, t log(a, b))``), :meth:`inner` and :meth:`norm` (Frobenius in tangent
    coordinates), :meth:`angle_at` (Riemannian angle), :meth:`align` (identity), the padding hooks (:attr:`variable_width`, :meth:`pad_to`,
    :meth:`common`), the all-pairs hooks (:meth:`prepare`, :meth:`prepared_distance`) and the shared-work
    hook of the path analysis (:meth:`pair_terms`). Decorate a concrete
    space with :func:`static_space` so that it is a hashable, leaf-less pytree.

    Padding is one idea: in a space with ``variable_width = True`` (the shape spaces) points of the same
    inputs may have different widths ``[n, k1]``, ``[n, k2]``, and zero-padding columns to a common width is
    exact (the point is the same element of the quotient space). :meth:`pad_to` pads one point;
    :meth:`common` pads several to their widest; :func:`geopath.stack_points` and the all-pairs functions
    use only these two hooks.

    Numerics (every space; details on the "Numerical guarantees" page, ``docs/numerics.md``): raw input is
    validated by :meth:`point` (``ValueError`` / ``TypeError``, also under ``jit``); a point that contains
    NaN gives NaN distances, logs and geodesics, never 0; float32 and float64 points stay in their dtype.
    """

    #: Whether points of one space may differ in width (axis 1), compared after zero-padding (:meth:`pad_to`).
    variable_width: ClassVar[bool] = False

    @abc.abstractmethod
    def point(self, x: ArrayLike) -> Array:
        """The point of the raw representation ``x [n, ...]`` (``n`` inputs, any feature axes).

        Args:
          x: ``[n, ...]`` real array; the trailing axes are flattened to ``p`` features.

        Returns:
          The point, an array whose shape each space gives (``[n, k]`` for the shape spaces, ``[n, n]`` for
          the kernel and distance-matrix spaces, ``[p, p]`` for covariances). Its dtype is ``x``'s for
          float32 and float64; float16 and bfloat16 are computed in float32; integer and boolean input
          becomes the default float type.

        Raises:
          ValueError: ``x`` has fewer than 2 axes, fewer than 3 inputs (4 for unbiased CKA) or no features;
            contains NaN or Inf; or is constant across inputs. Shapes are checked at trace time; values
            eagerly, and under ``jit`` by a run-time check (``GEOPATH_RUNTIME_CHECKS=0`` drops it: then bad
            values give NaN points).
          TypeError: ``x`` is complex.
        """

    @abc.abstractmethod
    def distance(self, a: Array, b: Array) -> Array:
        """Geodesic distance between points ``a`` and ``b``.

        Returns:
          ``[]`` in the points' dtype (radians in the angular spaces); NaN if ``a`` or ``b`` contains NaN.

        Raises:
          ValueError: ``a`` and ``b`` are not points of this space of the same inputs (shapes are checked at
            trace time).
        """

    @abc.abstractmethod
    def log(self, a: Array, b: Array) -> Array:
        """Tangent vector at ``a`` (shaped like the common point) whose geodesic reaches ``b`` at time 1."""

    @abc.abstractmethod
    def exp(self, a: Array, v: Array) -> Array:
        """The point reached at time 1 by the geodesic from ``a`` with initial velocity ``v``."""

    @abc.abstractmethod
    def transport(self, a: Array, b: Array, v: Array) -> Array:
        """Parallel transport of ``v`` (tangent at ``a``) along the geodesic ``a -> b``; tangent at ``b``."""

    @abc.abstractmethod
    def tangent_coords(self, a: Array, v: Array) -> Array:
        """Coordinates of ``v`` in ``T_a`` in which the Riemannian inner product is the Frobenius one."""

    def geodesic(self, a: Array, b: Array, t: ArrayLike) -> Array:
        """Point at arc-length fraction ``t`` of the geodesic from ``a`` (t=0) to ``b`` (t=1).

        ``t`` outside ``[0, 1]`` extrapolates along the same geodesic. Returns a point shaped like ``a``
        (shape spaces: padded to the common width of ``a`` and ``b``).
        """
        a, b = self.common(a, b)
        return self.exp(a, jnp.asarray(t, a.dtype) * self.log(a, b))

    def inner(self, a: Array, u: Array, v: Array) -> Array:
        """Riemannian inner product of tangent vectors ``u, v`` at ``a``; scalar."""
        cu = self.tangent_coords(a, u)
        return vdot(cu, self.tangent_coords(*linalg.after(cu, (a, v))))  # in turn (docs/threads.md)

    def norm(self, a: Array, v: Array) -> Array:
        """Riemannian norm of the tangent vector ``v`` at ``a`` (gradient-safe at 0); scalar."""
        return linalg.safe_norm(self.tangent_coords(a, v))

    def angle_at(self, b: Array, u: Array, v: Array) -> Array:
        """Angle in ``[0, pi]`` at ``b`` between the geodesics with initial velocities ``u`` and ``v``.

        ``u, v`` are tangent vectors at ``b`` (logs). The default is the Riemannian angle between them;
        spaces with a quotient override it with the metric (Alexandrov) angle, which can be smaller where
        ``b`` is a singular point of the quotient. ``pi / 2`` (with zero gradient) if ``u`` or ``v`` is zero
        (see :func:`unit_pair`).
        """
        cu = self.tangent_coords(b, u)
        cv = self.tangent_coords(*linalg.after(cu, (b, v)))  # one decomposition at a time (docs/threads.md)
        uu, vv, ok = unit_pair(cu, cv)
        zero = jnp.zeros_like(uu)
        ang = split_angle(uu, vv, zero, zero, jnp.zeros((), uu.dtype))
        return jnp.where(ok, ang, 0.5 * jnp.pi)

    def align(self, a: Array, b: Array) -> Array:
        """Representative of ``b`` optimally aligned to ``a``; ``b`` itself in spaces without a quotient."""
        del a
        return b

    def pad_to(self, a: Array, width: int) -> Array:
        """``a [n, k]`` zero-padded to ``[n, width]``; spaces of fixed width only accept their own width."""
        if jnp.shape(a)[-1] != width:
            raise ValueError(
                f"points of {type(self).__name__} have a fixed shape: cannot pad shape {tuple(jnp.shape(a))} "
                f"to width {width}"
            )
        return a

    def common(self, *points: Array) -> tuple[Array, ...]:
        """The points made directly comparable: zero-padded to their widest if :attr:`variable_width`."""
        if not self.variable_width:
            return points
        for p in points:
            if jnp.ndim(p) != 2:
                raise ValueError(
                    f"points of {type(self).__name__} are [n, k] matrices; got shape {jnp.shape(p)}"
                )
        shapes = [tuple(jnp.shape(p)) for p in points]
        if len({s[0] for s in shapes}) > 1:
            raise ValueError(
                "points must describe the same inputs (same size of axis 0); got shapes "
                + ", ".join(str(s) for s in shapes)
            )
        k = max(s[1] for s in shapes)
        return tuple(self.pad_to(jnp.asarray(p), k) for p in points)

    # Hooks for all-pairs computations: per-point work done once, then a cheap per-pair distance.
    def prepare(self, a: Array) -> Any:
        """Per-point work reused by every pair that involves ``a`` (default: ``a`` itself); a pytree."""
        return a

    def prepared_distance(self, pa: Any, pb: Any) -> Array:
        """``distance`` from two :meth:`prepare` results (same-width points); scalar."""
        return self.distance(pa, pb)

    # Shared-work hook of the path analysis: one call per consecutive pair of layers.
    def pair_terms(self, a: Array, b: Array) -> PairTerms:
        """``(d(a, b), log(a, b), log(b, a))`` of two points of one shape, as a :class:`PairTerms`.

        The default is the three calls. A space whose three share an expensive step overrides it (the shape
        metrics: one optimal rotation, i.e. one SVD of ``b^T a``, serves all three); an override must return
        what the three calls return (up to rounding, and up to the choice among equally optimal alignments
        where the logs are not unique).
        """
        d = self.distance(a, b)
        log_ab = self.log(*linalg.after(d, (a, b)))  # one decomposition at a time (docs/threads.md)
        return PairTerms(d, log_ab, self.log(*linalg.after(log_ab, (b, a))))
