"""Differentiable path-geometry penalties for training: regularise the path a minibatch takes."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from geopath._src import ops
from geopath._src.spaces import Space

PENALTIES = ("length", "excess", "turning")


def path_penalty(space: Space, layers: Sequence[ArrayLike], *, kind: str = "length") -> Array:
    """Path-geometry penalty of one minibatch's layer activations; a differentiable scalar.

    ``layers`` are the activations ``[x_0 [n, ...], ..., x_L [n, ...]]`` of the same ``n`` inputs (a
    minibatch) at ``L + 1`` layers; each becomes ``p_l = space.point(x_l)``. Add ``lam * path_penalty(...)``
    to a training loss and differentiate through it with ``jax.grad`` (every step is differentiable; under
    ``jax.jit`` it compiles once per layer-shape signature).

    Kinds (``d`` is the distance of ``space``, ``angle`` is :func:`geopath.angle`):

    * ``"length"``: the path length ``sum_l d(p_l, p_{l+1})`` (radians in the angular spaces);
    * ``"excess"``: ``length - d(p_0, p_L)``, the length beyond the direct geodesic (>= 0 up to rounding, 0
      exactly when the layers lie in order on one geodesic): penalises crookedness, not overall change;
    * ``"turning"``: the total turning angle ``sum_{0<l<L} (pi - angle(p_{l-1}, p_l, p_{l+1}))``, 0 for a
      path that continues straight through every layer (needs ``L >= 2``).

    Args:
      space: the space (e.g. ``geopath.AngularShape()`` or ``geopath.AngularCKA()``).
      layers: at least two activations of one minibatch, in network order.
      kind: one of ``"length"``, ``"excess"``, ``"turning"``.

    Returns:
      ``[]`` the penalty, in the points' dtype (float32, or float64 for float64 activations).

    Raises:
      ValueError: an unknown ``kind``; fewer than 2 layers (3 for ``"turning"``); an invalid activation
        (too few inputs, NaN or Inf, constant: see :meth:`Space.point`). Under ``jit``, NaN or Inf in an
        activation is a run-time error (or, with ``GEOPATH_RUNTIME_CHECKS=0``, a NaN penalty).
      TypeError: complex activations.

    Example:
      >>> import jax, geopath as gp
      >>> x = jax.random.normal(jax.random.key(0), (32, 8))
      >>> w = jax.random.normal(jax.random.key(1), (8, 8))
      >>> loss = lambda w: gp.path_penalty(gp.AngularCKA(), [x, jax.nn.relu(x @ w), x @ w @ w])
      >>> g = jax.grad(loss)(w)
      >>> g.shape
      (8, 8)
    """
    if kind not in PENALTIES:
        raise ValueError(f"kind must be one of {PENALTIES}; got {kind!r}")
    layers = list(layers)
    need = 3 if kind == "turning" else 2
    if len(layers) < need:
        raise ValueError(f"kind={kind!r} needs at least {need} layers; got {len(layers)}")
    pts = ops.stack_points(space, [space.point(x) for x in layers])
    if kind == "turning":
        angles = jax.vmap(lambda a, b, c: ops.angle(space, a, b, c))(pts[:-2], pts[1:-1], pts[2:])
        return jnp.sum(jnp.pi - angles)
    length = ops.path_length(space, pts)
    if kind == "length":
        return length
    return length - space.distance(pts[0], pts[-1])
