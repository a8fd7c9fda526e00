"""Low-dimensional embeddings of a distance matrix, for looking at paths.

* :func:`classical_mds` -- Torgerson multidimensional scaling: Euclidean
  coordinates whose pairwise distances approximate ``D``.
* :func:`spherical_mds` -- coordinates on the unit sphere ``S^{dim-1}`` whose
  great-circle distances approximate an *angular* distance matrix ``D`` (in
  radians), e.g. from ``gp.AngularShape`` or ``gp.AngularCKA``.

Both are jitted pure-JAX functions (``dim`` and the optimiser settings are
static). Eigenvector signs are fixed (the entry of largest magnitude in each
eigenvector is positive) so that repeated calls give the same picture.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from geopath._src import validation as val

__all__ = ["MDSResult", "classical_mds", "spherical_mds"]


class MDSResult(NamedTuple):
    """Result of an MDS embedding of ``L`` items.

    Attributes:
      coords: ``[L, dim]`` coordinates (unit vectors for :func:`spherical_mds`).
      eigenvalues: ``[L]`` all eigenvalues of the decomposed matrix, in
        descending order (the double-centred matrix ``-J D^2 J / 2`` for
        :func:`classical_mds`; ``cos(D)`` for :func:`spherical_mds`). Large
        negative eigenvalues mean ``D`` is far from embeddable.
      stress: scalar Kruskal stress-1,
        ``sqrt(sum_ij (D_ij - E_ij)^2 / sum_ij D_ij^2)``, where ``E`` are the
        distances in the embedding (Euclidean, or great-circle for
        :func:`spherical_mds`); 0 for a perfect embedding.
    """

    coords: jax.Array
    eigenvalues: jax.Array
    stress: jax.Array


def _check_D(D, dim: int, min_dim: int = 1) -> jax.Array:
    D = jnp.asarray(D)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square [L, L] distance matrix; got shape {D.shape}")
    if D.shape[0] < 2:
        raise ValueError(f"need at least 2 items to embed; got {D.shape[0]}")
    if not isinstance(dim, (int, np.integer)) or dim < min_dim:
        raise ValueError(f"dim must be an integer >= {min_dim}; got {dim!r}")
    if not jnp.issubdtype(D.dtype, jnp.floating):
        D = D.astype(jnp.result_type(float))
    if val.is_traced(D):
        return D  # traced: no value checks
    Dn = np.asarray(D)
    if not np.all(np.isfinite(Dn)):
        raise ValueError("D contains NaN or infinite entries")
    return D


def _fix_signs(V: jax.Array) -> jax.Array:
    """Flip each column so its entry of largest magnitude is positive."""
    idx = jnp.argmax(jnp.abs(V), axis=0)
    s = jnp.sign(V[idx, jnp.arange(V.shape[1])])
    s = jnp.where(s == 0, 1.0, s).astype(V.dtype)
    return V * s


def _top_eig(M: jax.Array, dim: int):
    w, V = jnp.linalg.eigh(M)  # ascending
    w, V = w[::-1], V[:, ::-1]
    return w, _fix_signs(V[:, :dim])


def _safe_norm(x: jax.Array, axis=-1) -> jax.Array:
    # Differentiable at 0 (gradient 0 there).
    sq = jnp.sum(x * x, axis=axis)
    tiny = jnp.finfo(x.dtype).tiny
    return jnp.sqrt(sq + tiny)


def _euclidean_dists(X: jax.Array) -> jax.Array:
    return _safe_norm(X[:, None, :] - X[None, :, :])


def _great_circle_dists(X: jax.Array) -> jax.Array:
    # For unit vectors: angle = 2 atan2(|x - y|, |x + y|), accurate at 0 and pi.
    diff = _safe_norm(X[:, None, :] - X[None, :, :])
    summ = _safe_norm(X[:, None, :] + X[None, :, :])
    return 2.0 * jnp.arctan2(diff, summ)


def _stress(D: jax.Array, E: jax.Array) -> jax.Array:
    L = D.shape[0]
    off = 1.0 - jnp.eye(L, dtype=D.dtype)
    num = jnp.sum(off * (D - E) ** 2)
    den = jnp.sum(off * D**2)
    return jnp.sqrt(num / jnp.where(den > 0, den, 1.0))


@partial(jax.jit, static_argnames=("dim",))
def _classical_mds(D: jax.Array, dim: int) -> MDSResult:
    L = D.shape[0]
    D = 0.5 * (D + D.T)
    J = jnp.eye(L, dtype=D.dtype) - 1.0 / L
    B = -0.5 * J @ (D * D) @ J
    B = 0.5 * (B + B.T)
    w, V = _top_eig(B, dim)
    coords = V * jnp.sqrt(jnp.maximum(w[:dim], 0.0))
    return MDSResult(coords=coords, eigenvalues=w, stress=_stress(D, _euclidean_dists(coords)))


def classical_mds(D, *, dim: int = 2) -> MDSResult:
    """Classical (Torgerson) multidimensional scaling.

    Double-centres the squared distances, ``B = -J D^2 J / 2`` with
    ``J = I - 11^T / L``, and takes the top ``dim`` eigenpairs of ``B``:
    ``coords = V_dim sqrt(max(w_dim, 0))``. Exact (stress 0, up to rigid
    motion) when ``D`` is a Euclidean distance matrix of points in ``dim``
    dimensions.

    Args:
      D: ``[L, L]`` symmetric distance matrix (symmetrised if not).
      dim: embedding dimension (``1 <= dim <= L``).

    Returns:
      :class:`MDSResult` with coordinates ``[L, dim]`` centred at the origin, in ``D``'s floating dtype
      (integer ``D``: the default float type).

    Raises:
      ValueError: ``D`` is not a square matrix of at least 2 items, ``dim`` is not an integer in
        ``[1, L]``, or a concrete ``D`` holds NaN or Inf (a traced ``D`` is not checked: NaN gives NaN).

    Example:
      >>> import jax.numpy as jnp, geopath as gp
      >>> pts = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
      >>> D = jnp.linalg.norm(pts[:, None] - pts[None], axis=-1)  # a flat triangle: exact in 2-D
      >>> r = gp.classical_mds(D, dim=2)
      >>> r.coords.shape, round(float(r.stress), 4)
      ((3, 2), 0.0)
    """
    D = _check_D(D, dim)
    if dim > D.shape[0]:
        raise ValueError(f"dim={dim} exceeds the number of items {D.shape[0]}")
    return _classical_mds(D, dim)


@partial(jax.jit, static_argnames=("dim", "n_steps", "learning_rate"))
def _spherical_mds(D: jax.Array, dim: int, n_steps: int, learning_rate: float) -> MDSResult:
    L = D.shape[0]
    D = 0.5 * (D + D.T)
    D = D * (1.0 - jnp.eye(L, dtype=D.dtype))
    G = jnp.cos(D)
    w, V = _top_eig(G, dim)
    Y0 = V * jnp.sqrt(jnp.maximum(w[:dim], 0.0))
    # A row that is (numerically) zero has no direction; nudge it.
    small = _safe_norm(Y0) < jnp.finfo(D.dtype).eps ** 0.5
    Y0 = jnp.where(small[:, None], jnp.eye(L, dim, dtype=D.dtype)[::-1] + Y0, Y0)
    X0 = Y0 / _safe_norm(Y0)[:, None]

    def loss(Y):
        X = Y / _safe_norm(Y)[:, None]
        return _stress(D, _great_circle_dists(X)) ** 2

    if n_steps > 0:
        # Plain Adam on the unnormalised rows (the loss only sees Y / |Y|).
        b1, b2, eps = 0.9, 0.999, 1e-8
        grad = jax.grad(loss)

        def body(i, state):
            Y, m, v, best_Y, best_l = state
            l = loss(Y)
            better = l < best_l
            best_Y = jnp.where(better, Y, best_Y)
            best_l = jnp.where(better, l, best_l)
            g = grad(Y)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            t = (i + 1).astype(D.dtype)
            mh = m / (1 - b1**t)
            vh = v / (1 - b2**t)
            Y = Y - learning_rate * mh / (jnp.sqrt(vh) + eps)
            # keep rows near unit length so the step size stays meaningful
            Y = Y / _safe_norm(Y)[:, None]
            return Y, m, v, best_Y, best_l

        z = jnp.zeros_like(X0)
        init = (X0, z, z, X0, loss(X0))
        Y, _, _, best_Y, best_l = jax.lax.fori_loop(0, n_steps, body, init)
        final_l = loss(Y)
        Yb = jnp.where(final_l < best_l, Y, best_Y)
    else:
        Yb = X0
    X = Yb / _safe_norm(Yb)[:, None]
    return MDSResult(coords=X, eigenvalues=w, stress=_stress(D, _great_circle_dists(X)))


def spherical_mds(D, *, dim: int = 3, n_steps: int = 500, learning_rate: float = 0.02) -> MDSResult:
    """Embed an angular distance matrix on the unit sphere ``S^{dim-1}``.

    Points ``x_i`` on the unit sphere in ``R^dim`` are sought whose
    great-circle distances ``arccos(x_i . x_j)`` approximate ``D`` (radians).
    Initialisation: the top ``dim`` eigenpairs of ``cos(D)`` (exact when
    ``cos(D)`` is a rank-``dim`` Gram matrix of unit vectors), rows normalised
    to unit length. Refinement: ``n_steps`` Adam steps (plain JAX) on the
    squared Kruskal stress of the great-circle distances; the best iterate is
    returned (never worse than the initialisation).

    Args:
      D: ``[L, L]`` angular distances in radians, entries in ``[0, pi]``.
      dim: ambient dimension: 2 (points on a circle) or 3 (on a sphere);
        larger values are allowed.
      n_steps: number of refinement steps (0 = eigen-decomposition only).
      learning_rate: Adam step size (rows are kept at unit length).

    Returns:
      :class:`MDSResult` with unit-norm ``coords`` ``[L, dim]``, in ``D``'s floating dtype.

    Raises:
      ValueError: ``D`` is not a square matrix of at least 2 items; ``dim`` is not an integer in
        ``[2, L]``; ``n_steps < 0``; a concrete ``D`` holds NaN or Inf or entries outside ``[0, pi]``
        (a traced ``D`` is not checked).
    """
    D = _check_D(D, dim, min_dim=2)
    if dim > D.shape[0]:
        raise ValueError(f"dim={dim} exceeds the number of items {D.shape[0]}")
    if not val.is_traced(D):
        Dn = np.asarray(D)
        if Dn.min() < -1e-6 or Dn.max() > np.pi + 1e-6:
            raise ValueError(
                "spherical_mds needs angular distances in [0, pi] (radians); got range "
                f"[{Dn.min():.4g}, {Dn.max():.4g}]"
            )
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0; got {n_steps}")
    return _spherical_mds(D, int(dim), int(n_steps), float(learning_rate))
