"""All-pairs distances between many representations: the one place that batches over pairs."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from geopath._src import validation as val
from geopath._src.spaces import Space

# Memory budget for one vmapped chunk of pairs (bytes); chunks are processed sequentially by lax.map.
_CHUNK_BYTES = 1 << 29


@jax.jit
def _jit_point(space: Space, x: Array) -> Array:
    return space.point(x)


@jax.jit
def _jit_prepare(space: Space, stacked: Array):
    return jax.vmap(space.prepare)(stacked)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _pair_block(space: Space, prep_p, prep_q, i: Array, j: Array, *, chunk: int) -> Array:
    def one(ij):
        ii, jj = ij
        pa = jax.tree_util.tree_map(lambda x: x[ii], prep_p)
        pb = jax.tree_util.tree_map(lambda x: x[jj], prep_q)
        return space.prepared_distance(pa, pb)

    return jax.lax.map(one, (i, j), batch_size=chunk)


def points(space: Space, xs: Sequence[ArrayLike]) -> list[Array]:
    """``space.point`` of each representation in ``xs`` (jitted; compiled once per input shape).

    Concrete inputs are validated eagerly first, so bad input raises ``ValueError`` naming the layer.
    """
    out = []
    for idx, x in enumerate(xs):
        if not val.is_traced(x):
            xm = val.as_matrix(x, name=f"layer {idx}")
            xnp = np.asarray(xm)
            val.check_values(xnp, xnp - xnp.mean(axis=0, keepdims=True), name=f"layer {idx}")
            out.append(_jit_point(space, jnp.asarray(x)))
        else:
            out.append(space.point(x))
    return out


def _buckets(space: Space, pts: Sequence[Array], ratio: float) -> list[tuple[np.ndarray, tuple]]:
    """Groups point indices so that each group can be stacked: ``[(indices, common_shape), ...]``.

    Shape spaces: widths sorted and greedily grouped while ``widest <= ratio * narrowest``; each group is
    zero-padded to its widest member. Other spaces: one group per distinct point shape.
    """
    shapes = [tuple(jnp.shape(p)) for p in pts]
    if not space.variable_width:
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(shapes):
            groups.setdefault(s, []).append(i)
        return [(np.asarray(v), s) for s, v in groups.items()]
    order = sorted(range(len(pts)), key=lambda i: shapes[i][1])
    out, cur = [], []
    for i in order:
        if cur and shapes[i][1] > ratio * shapes[cur[0]][1]:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return [(np.asarray(g), (shapes[g[0]][0], max(shapes[i][1] for i in g))) for g in out]


def _stack_group(space: Space, pts, idx, shape) -> Array:
    return jnp.stack([space.pad_to(pts[i], shape[1]) for i in idx])


def _chunk_size(shape_p, shape_q, itemsize, npairs, chunk):
    if chunk is not None:
        return max(1, min(int(chunk), npairs))
    per_pair = 4 * itemsize * (int(np.prod(shape_p)) + int(np.prod(shape_q)) + shape_p[-1] * shape_q[-1])
    return max(1, min(npairs, _CHUNK_BYTES // max(per_pair, 1)))


def _prepare_all(space, pts, ratio):
    pts = list(pts)
    if not pts:
        raise ValueError("need at least one representation")
    n0 = jnp.shape(pts[0])[0]
    for i, p in enumerate(pts):
        if jnp.shape(p)[0] != n0:
            raise ValueError(
                f"all representations must describe the same inputs: layer 0 has shape {tuple(jnp.shape(pts[0]))}"
                f" but layer {i} has shape {tuple(jnp.shape(p))}"
            )
    groups = _buckets(space, pts, ratio)
    prepared = []
    for idx, shape in groups:
        stacked = _stack_group(space, pts, idx, shape)
        prepared.append((idx, stacked.shape[1:], stacked.dtype, _jit_prepare(space, stacked)))
    return prepared


def block_pairs(groups):
    """Yields ``(gi, gj, ii, jj)`` for every pair of buckets ``gi <= gj`` that has pairs: ``ii``/``jj`` index
    the members of the two buckets (``i < j`` within one bucket, all combinations across two)."""
    for gi in range(len(groups)):
        for gj in range(gi, len(groups)):
            mi, mj = len(groups[gi][0]), len(groups[gj][0])
            if gi == gj:
                ii, jj = np.triu_indices(mi, 1)
            else:
                ii, jj = (a.ravel() for a in np.meshgrid(np.arange(mi), np.arange(mj), indexing="ij"))
            if len(ii):
                yield gi, gj, ii, jj


def _block(space, gp_, gq, ii, jj, chunk):
    idx_p, shape_p, dtype, prep_p = gp_
    idx_q, shape_q, _, prep_q = gq
    c = _chunk_size(shape_p, shape_q, jnp.dtype(dtype).itemsize, len(ii), chunk)
    d = _pair_block(space, prep_p, prep_q, jnp.asarray(ii), jnp.asarray(jj), chunk=c)
    return idx_p[ii], idx_q[jj], d


def pairwise_distances(
    space: Space,
    xs: Sequence[ArrayLike],
    *,
    are_points: bool = False,
    chunk_size: int | None = None,
    bucket_ratio: float = 1.25,
) -> Array:
    """Distance matrix ``[L, L]`` between all representations in ``xs`` (e.g. all layers of a network).

    How it batches: each representation becomes a point once (``space.point``, jitted per shape) and is
    prepared once (``space.prepare``; e.g. ``A^{-1/2}`` for the affine-invariant metric). Points are then
    grouped into *buckets* that can be stacked: for the shape metrics, layers whose widths are within a
    factor ``bucket_ratio`` of each other, zero-padded to the widest (exact for these metrics); for the other
    spaces, points of equal shape. For every pair of buckets, ONE jitted function computes all its pairs
    (``i < j`` within a bucket) with ``vmap``, in chunks of ``chunk_size`` pairs run by ``lax.map`` to bound
    memory (default: as many as fit in about 512 MiB). So there are at most ``B (B + 1) / 2`` compiled
    programs for ``B`` buckets, none of them loops over pairs in Python, and a repeated call with the same
    shapes compiles nothing. The result is symmetric with a zero diagonal and differentiable.

    Args:
      space: the metric space.
      xs: ``L`` raw representations ``[n, ...]`` (same ``n``; widths may differ), or points if ``are_points``.
      are_points: ``xs`` are already points of ``space``.
      chunk_size: pairs per vectorised chunk (None: from the memory budget).
      bucket_ratio: widest/narrowest width allowed within a bucket (>= 1).

    Returns:
      ``[L, L]`` distances.
    """
    if bucket_ratio < 1:
        raise ValueError(f"bucket_ratio must be >= 1; got {bucket_ratio}")
    pts = list(xs) if are_points else points(space, xs)
    groups = _prepare_all(space, pts, bucket_ratio)
    L = len(pts)
    dtype = jnp.result_type(*[g[2] for g in groups])
    out = jnp.zeros((L, L), dtype)
    for gi, gj, ii, jj in block_pairs(groups):
        rows, cols, d = _block(space, groups[gi], groups[gj], ii, jj, chunk_size)
        out = out.at[rows, cols].set(d.astype(dtype))
        out = out.at[cols, rows].set(d.astype(dtype))
    return out


def cross_distances(
    space: Space,
    xs: Sequence[ArrayLike],
    ys: Sequence[ArrayLike],
    *,
    are_points: bool = False,
    chunk_size: int | None = None,
    bucket_ratio: float = 1.25,
) -> Array:
    """Distances ``[L1, L2]`` between every representation in ``xs`` and every one in ``ys``.

    E.g. all layers of one model against all layers of another, on the same inputs. Batched like
    :func:`pairwise_distances` (buckets of similar width, one vmapped program per pair of buckets).
    """
    if bucket_ratio < 1:
        raise ValueError(f"bucket_ratio must be >= 1; got {bucket_ratio}")
    xs, ys = list(xs), list(ys)
    pts = (xs + ys) if are_points else points(space, xs + ys)
    groups = _prepare_all(space, pts, bucket_ratio)
    l1, l2 = len(xs), len(ys)
    dtype = jnp.result_type(*[g[2] for g in groups])
    out = jnp.zeros((l1 + l2, l1 + l2), dtype)
    for gi in range(len(groups)):
        for gj in range(len(groups)):
            ip, iq = groups[gi][0], groups[gj][0]
            sel_p, sel_q = np.flatnonzero(ip < l1), np.flatnonzero(iq >= l1)
            if len(sel_p) == 0 or len(sel_q) == 0:
                continue
            ii, jj = (a.ravel() for a in np.meshgrid(sel_p, sel_q, indexing="ij"))
            rows, cols, d = _block(space, groups[gi], groups[gj], ii, jj, chunk_size)
            out = out.at[rows, cols].set(d.astype(dtype))
    return out[:l1, l1:]
