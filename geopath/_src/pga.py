"""Principal geodesic analysis: tangent PCA of a set of points at their Frechet mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from geopath._src import ops
from geopath._src.spaces import Space


class PrincipalGeodesics(NamedTuple):
    """Result of :func:`principal_geodesics` for ``m`` points and ``k`` components.

    Attributes:
      mean: the Frechet mean (a point of the space).
      components: ``[k, ...]`` unit tangent vectors at ``mean`` (Riemannian norm 1, mutually orthogonal in
        :meth:`Space.inner`), the principal geodesic directions in decreasing order of variance. The
        principal geodesic ``j`` is ``t -> space.exp(mean, t * components[j])``.
      scores: ``[m, k]`` coordinates of ``log_mean(p_i)`` along the components (geodesic arc length from the
        mean, for points on a principal geodesic).
      explained_variance: ``[k]`` mean over the points of ``scores^2``; over all components it sums to the
        Frechet variance ``mean_i d(mean, p_i)^2`` (exactly at a stationary mean).
      explained_variance_ratio: ``[k]`` ``explained_variance`` divided by that total.
      residual: ``[]`` norm of the Riemannian gradient at ``mean`` (see :class:`FrechetMean`).
    """

    mean: Array
    components: Array
    scores: Array
    explained_variance: Array
    explained_variance_ratio: Array
    residual: Array


def principal_geodesics(
    space: Space,
    points: Sequence[Array] | Array,
    *,
    n_components: int | None = None,
    num_iters: int = 32,
) -> PrincipalGeodesics:
    """Principal geodesic analysis (tangent PCA) of ``m`` points (list, or stacked ``[m, ...]``).

    The points are mapped to the tangent space at their Frechet mean (:func:`geopath.frechet_mean`, with
    ``num_iters`` iterations) by ``space.log``, expressed in :meth:`Space.tangent_coords` (where the Riemannian
    inner product is the Frobenius one) and analysed by PCA about the mean point (the log vectors average to 0
    at the mean, so this is ordinary PCA of the linearised data). The components are returned as tangent
    vectors at the mean, built as combinations of the log vectors, so that this works in every space. This is
    the linearised PGA of Fletcher et al. (2004); in a flat space (:class:`Stress`) it is exactly PCA.

    Args:
      space: the space.
      points: the points; shape-space points of different widths are zero-padded to a common width.
      n_components: number of components ``k`` (default and maximum: ``m``).
      num_iters: iterations of the Frechet mean.

    Returns:
      A :class:`PrincipalGeodesics`, in the points' dtype. Signs are fixed so that each component's
      largest-magnitude score is positive. A point that contains NaN gives NaN fields.

    Raises:
      ValueError: ``n_components`` is not in ``[1, m]``, and as :func:`geopath.stack_points`.
    """
    p = ops.stack_points(space, points)
    m = p.shape[0]
    k = m if n_components is None else int(n_components)
    if not 1 <= k <= m:
        raise ValueError(f"n_components must be in [1, {m}] for {m} points of shape {p.shape[1:]}; got {k}")
    fm = ops.frechet_mean(space, p, num_iters=num_iters)
    mean = fm.mean
    logs = jax.vmap(lambda q: space.log(mean, q))(p)  # [m, ...] tangent vectors at the mean
    coords = jax.vmap(lambda v: space.tangent_coords(mean, v).ravel())(logs)  # [m, D]
    gram = coords @ coords.T / m  # [m, m]
    lam, u = jnp.linalg.eigh(gram)
    lam, u = lam[::-1][:k], u[:, ::-1][:, :k]  # decreasing
    lam = jnp.maximum(lam, 0.0)
    ok = lam > jnp.finfo(lam.dtype).eps * jnp.maximum(jnp.max(lam), jnp.finfo(lam.dtype).tiny) * m
    inv = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, lam * m, 1.0)), 0.0)  # [k]
    # scores_ij = <c_i, C^T u_j> / sqrt(m lam_j) = sqrt(m lam_j) u_ij
    scores = u * jnp.sqrt(lam * m)[None, :]
    biggest = jnp.take_along_axis(scores, jnp.argmax(jnp.abs(scores), axis=0)[None, :], axis=0)[0]
    sign = jnp.where(biggest < 0, -1.0, 1.0).astype(scores.dtype)
    scores = scores * sign
    weights = u * (inv * sign)[None, :]  # [m, k]: component_j = sum_i weights_ij log_i
    components = jnp.tensordot(weights.T, logs, axes=1)
    total = jnp.sum(coords * coords) / m
    ratio = lam / jnp.where(total > 0, total, 1.0)
    return PrincipalGeodesics(
        mean=mean,
        components=components,
        scores=scores,
        explained_variance=lam,
        explained_variance_ratio=ratio,
        residual=fm.residual,
    )
