"""All-pairs distances between many representations: the one place that batches over pairs.

The work is described by a :class:`PairwisePlan` (:func:`pairwise_plan`): points grouped into *buckets*
that can be stacked, and one *block* of pairs per pair of buckets. Each block runs as ONE compiled program
whose shapes come from a few fixed sizes (bucket sizes, chunk sizes and chunk counts are rounded up, see
:func:`_size_class` and :func:`_pow2`), so comparisons that differ only in how many layers they hold reuse
compiled code; all blocks are assembled into the output matrix by one scatter. With a
``jax.sharding.Mesh``, the pairs of each block are split evenly over the devices (``jax.shard_map``) while
the prepared points are replicated; the result does not depend on the number of devices.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from geopath._src import sharding
from geopath._src import validation as val
from geopath._src.spaces import Space

# Memory budget for one vmapped chunk of pairs on one device (bytes); chunks run one after another.
_CHUNK_BYTES = 1 << 29
# Work budget for one chunk (estimated FLOPs): bounds the work wasted on padding in a block's last chunk
# (well under the time of one compile on a CPU core).
_CHUNK_FLOPS = 1e8


class PairBlock(NamedTuple):
    """The pairs between bucket ``p`` (rows) and bucket ``q`` (columns), computed by one compiled program.

    Attributes:
      p, q: bucket indices (into :attr:`PairwisePlan.buckets`).
      pairs: number of real pairs.
      chunk: pairs per vectorised step on one device (a power of two).
      chunks: steps per device (a power of two; steps past the real pairs are skipped at run time).
    """

    p: int
    q: int
    pairs: int
    chunk: int
    chunks: int


class PairwisePlan(NamedTuple):
    """How :func:`pairwise_distances` / :func:`cross_distances` will compute a set of points.

    Attributes:
      buckets: the layer indices in each bucket (``xs`` first, then ``ys`` offset by ``len(xs)``).
      shapes: the common (zero-padded) point shape of each bucket.
      sizes: the stacked size of each bucket (its member count rounded up to a fixed size class).
      blocks: one :class:`PairBlock` per pair of buckets that has pairs.
      devices: the number of devices the pairs are split over.
    """

    buckets: tuple[tuple[int, ...], ...]
    shapes: tuple[tuple[int, ...], ...]
    sizes: tuple[int, ...]
    blocks: tuple[PairBlock, ...]
    devices: int

    @property
    def padded_pairs(self) -> int:
        """Pair slots allocated over all blocks and devices (real pairs plus padding)."""
        return sum(self.devices * b.chunk * b.chunks for b in self.blocks)


@jax.jit
def _jit_point(space: Space, x: Array) -> Array:
    return space.point(x)


@jax.jit
def _stack_prepare(space: Space, members: tuple[Array, ...]):
    return jax.vmap(space.prepare)(jnp.stack(members))


def _pair_rows(il: Array, jl: Array, space: Space, pp, pq) -> Array:
    """Distances of the pairs ``(pp[il], pq[jl])`` row by row (``il, jl, out: [rows, chunk]``): ``lax.map``
    over the rows (one vmapped chunk at a time, so memory is bounded by the chunk), skipping rows marked -1."""

    def dist(a, b):
        pa = jax.tree_util.tree_map(lambda x: x[a], pp)
        pb = jax.tree_util.tree_map(lambda x: x[b], pq)
        return space.prepared_distance(pa, pb)

    def step(ij):
        ii, jj = ij
        run = lambda: jax.vmap(dist)(jnp.maximum(ii, 0), jnp.maximum(jj, 0))
        skip = lambda: jnp.zeros(ii.shape, jax.eval_shape(run).dtype)
        return jax.lax.cond(ii[0] >= 0, run, skip)

    return jax.lax.map(step, (il, jl))


@functools.partial(jax.jit, static_argnames=("mesh",))
def _pair_block_spmd(space: Space, prep_p, prep_q, i: Array, j: Array, *, mesh: Mesh) -> Array:
    spec = sharding.batch_spec(mesh)
    return jax.shard_map(
        lambda pp, pq, il, jl: _pair_rows(il, jl, space, pp, pq),
        mesh=mesh,
        in_specs=(P(), P(), spec, spec),
        out_specs=spec,
        check_vma=False,
    )(prep_p, prep_q, i, j)


def _pair_block(space: Space, prep_p, prep_q, i: Array, j: Array, *, mesh: Mesh) -> Array:
    """Distances of the pairs ``(prep_p[i], prep_q[j])``; ``i, j, out: [devices * chunks, chunk]``.

    Rows of ``i``/``j`` are sharded over ``mesh``; each device runs :func:`_pair_rows` on its rows (several
    CPU devices of this process: one program on one of them, see ``sharding.map_serial``).
    """
    if sharding.runs_serially(mesh):
        return sharding.map_serial(_pair_rows, mesh, (i, j), (space, prep_p, prep_q))
    return _pair_block_spmd(space, prep_p, prep_q, i, j, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "mesh"))
def _assemble(ds: tuple[Array, ...], pos: Array, *, shape: tuple[int, int], dtype, mesh: Mesh) -> Array:
    """One scatter of every block's distances into the ``shape`` output, replicated on ``mesh``.

    ``pos: [S, total]`` holds ``S`` flat target positions per distance slot (2 for a symmetric matrix);
    slots at ``pos >= rows * cols`` (padding) are dropped.
    """
    size = shape[0] * shape[1]
    vals = jnp.concatenate([d.reshape(-1).astype(dtype) for d in ds])
    vals = jnp.tile(vals, pos.shape[0])
    out = jnp.zeros((size,), dtype).at[pos.reshape(-1)].set(vals, mode="drop").reshape(shape)
    return jax.lax.with_sharding_constraint(out, sharding.replicated(mesh))


def points(space: Space, xs: Sequence[ArrayLike], *, mesh: Mesh | None = None) -> list[Array]:
    """``space.point`` of each representation in ``xs`` (jitted; compiled once per input shape).

    Concrete inputs are validated eagerly first, so bad input raises ``ValueError`` naming the layer. With a
    ``mesh``, layer ``i`` is computed on this process's ``i % D``-th device of the mesh (the point programs of
    different layers then run concurrently), except that several CPU devices of this process compute every
    layer on the first of them (see ``sharding.map_serial``).

    Args:
      space: the space.
      xs: raw representations ``[n, ...]``; they may have different shapes.
      mesh: a ``jax.sharding.Mesh`` whose devices share the layers (None: the default device).

    Returns:
      A list of points, one per representation, each in the dtype :meth:`Space.point` gives.

    Raises:
      ValueError: a representation is not valid (too few inputs or axes, NaN or Inf, constant); the message
        names the layer.
      TypeError: complex input.
    """
    local = None if mesh is None else sharding.check_mesh(mesh).local_devices
    serial = mesh is not None and sharding.runs_serially(mesh)
    out = []
    for idx, x in enumerate(xs):
        if not val.is_traced(x):
            xm = val.as_matrix(x, name=f"layer {idx}")
            xnp = np.asarray(xm)
            val.check_values(xnp, name=f"layer {idx}")
            if local is None:
                xj = jnp.asarray(x)
            else:  # several CPU devices of this process: all on the first (see sharding.map_serial)
                xj = jax.device_put(x, local[0] if serial else local[idx % len(local)])
            out.append(_jit_point(space, xj))
        else:
            out.append(space.point(x))
    return out


def _pow2(n: int) -> int:
    """Smallest power of two ``>= n`` (and >= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def _size_class(n: int) -> int:
    """Smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (``2^k`` or ``3 * 2^k``) that is ``>= n``."""
    p = _pow2(n)
    return 3 * p // 4 if p >= 4 and 3 * p // 4 >= n else p


def _buckets(space: Space, shapes: Sequence[tuple], ratio: float) -> list[tuple[tuple[int, ...], tuple]]:
    """Groups point indices so that each group can be stacked: ``[(indices, common_shape), ...]``.

    Shape spaces: widths sorted and greedily grouped while ``widest <= ratio * narrowest``; each group is
    zero-padded to its widest member. Other spaces: one group per distinct point shape.
    """
    if not space.variable_width:
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(shapes):
            groups.setdefault(s, []).append(i)
        return [(tuple(v), s) for s, v in groups.items()]
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][1])
    out, cur = [], []
    for i in order:
        if cur and shapes[i][1] > ratio * shapes[cur[0]][1]:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return [(tuple(g), (shapes[g[0]][0], max(shapes[i][1] for i in g))) for g in out]


def _block_pairs(members_p, members_q, *, same: bool, split: int | None):
    """Local index pairs ``(ii, jj)`` of one block: ``i < j`` within a bucket (pairwise), or every row
    member of ``xs`` (index < split) against every column member of ``ys`` (cross)."""
    if split is None:
        if same:
            return np.triu_indices(len(members_p), 1)
        return tuple(
            a.ravel()
            for a in np.meshgrid(np.arange(len(members_p)), np.arange(len(members_q)), indexing="ij")
        )
    sel_p = np.flatnonzero(np.asarray(members_p) < split)
    sel_q = np.flatnonzero(np.asarray(members_q) >= split)
    return tuple(a.ravel() for a in np.meshgrid(sel_p, sel_q, indexing="ij"))


def _chunk(shape_p, shape_q, itemsize: int, per_device: int, chunk_size: int | None) -> int:
    """Pairs per vectorised step: ``chunk_size``, else a power of two: the pairs of one device rounded up
    (so small blocks of similar size share compiled code), capped by :data:`_CHUNK_BYTES` of memory and
    :data:`_CHUNK_FLOPS` of estimated work (which bounds the work a block's last, padded chunk can waste)."""
    if chunk_size is not None:
        return int(chunk_size)
    kp, kq = shape_p[-1], shape_q[-1]
    per_pair = 4 * itemsize * (int(np.prod(shape_p)) + int(np.prod(shape_q)) + kp * kq)
    flops = 2.0 * int(np.prod(shape_p)) * kq + 10.0 * min(kp, kq) ** 3  # a^T b, then an SVD/eigh of it
    c = max(1, min(_CHUNK_BYTES // max(per_pair, 1), int(_CHUNK_FLOPS // flops)))
    return min(1 << (c.bit_length() - 1), _pow2(per_device))


def _plan(space, shapes, itemsize, *, split, chunk_size, bucket_ratio, devices):
    """``(PairwisePlan, [(ii, jj) per block])`` for points of the given shapes."""
    if bucket_ratio < 1:
        raise ValueError(f"bucket_ratio must be >= 1; got {bucket_ratio}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    if not shapes:
        raise ValueError("need at least one representation")
    for i, s in enumerate(shapes):
        if s[0] != shapes[0][0]:
            raise ValueError(
                f"all representations must describe the same inputs: layer 0 has shape {tuple(shapes[0])}"
                f" but layer {i} has shape {tuple(s)}"
            )
    groups = _buckets(space, shapes, bucket_ratio)
    blocks, index_pairs = [], []
    for gi in range(len(groups)):
        for gj in range(len(groups)) if split is not None else range(gi, len(groups)):
            ii, jj = _block_pairs(groups[gi][0], groups[gj][0], same=gi == gj, split=split)
            if len(ii) == 0:
                continue
            per_device = -(-len(ii) // devices)
            c = _chunk(groups[gi][1], groups[gj][1], itemsize, per_device, chunk_size)
            blocks.append(PairBlock(gi, gj, len(ii), c, _pow2(-(-per_device // c))))
            index_pairs.append((np.asarray(ii), np.asarray(jj)))
    plan = PairwisePlan(
        buckets=tuple(g for g, _ in groups),
        shapes=tuple(tuple(int(v) for v in s) for _, s in groups),
        sizes=tuple(_size_class(len(g)) for g, _ in groups),
        blocks=tuple(blocks),
        devices=devices,
    )
    return plan, index_pairs


def _layout(block: PairBlock, ii, jj, devices: int):
    """Pair indices laid out ``[devices * chunks, chunk]``: device ``d`` holds pairs ``d*m .. (d+1)*m - 1``
    (``m = ceil(pairs / devices)``) in its rows; padding inside a chunk with real pairs is 0 (computed and
    dropped), whole padding chunks are -1 (skipped). Also returns each slot's pair number (-1: padding)."""
    m = -(-block.pairs // devices)
    slots = block.chunks * block.chunk
    k = np.arange(block.pairs)
    where = (k // m) * slots + k % m
    pair_of = np.full(devices * slots, -1, np.int64)
    pair_of[where] = k
    pi = np.full(devices * slots, -1, np.int32)
    pj = np.full(devices * slots, -1, np.int32)
    pi[where], pj[where] = ii, jj
    pi, pj = pi.reshape(-1, block.chunk), pj.reshape(-1, block.chunk)
    live = (pi[:, :1] >= 0) & (pi < 0)
    pi[live], pj[live] = 0, 0
    return pi, pj, pair_of


def _shape_dtype(p) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(int(v) for v in jnp.shape(p)), np.dtype(getattr(p, "dtype", None) or jnp.result_type(p))


def pairwise_plan(
    space: Space,
    pts: Sequence,
    ys: Sequence | None = None,
    *,
    chunk_size: int | None = None,
    bucket_ratio: float = 1.25,
    mesh: Mesh | None = None,
) -> PairwisePlan:
    """The plan of :func:`pairwise_distances` (or, with ``ys``, :func:`cross_distances`) for these points.

    Args:
      space: the metric space.
      pts: points (``space.point`` of each layer), or anything with ``.shape`` and ``.dtype`` such as
        ``jax.ShapeDtypeStruct``: only shapes are read.
      ys: the second list of a cross comparison (None: all pairs of ``pts``).
      chunk_size, bucket_ratio, mesh: as in :func:`pairwise_distances`.

    Returns:
      A :class:`PairwisePlan`: buckets (layer indices, padded shapes, stacked sizes) and blocks (pairs,
      chunk size, chunks per device). Executed work is ``sum(devices * chunk * (real chunks))``; compiled
      programs are one per distinct ``(shapes, sizes, chunk, chunks)`` of a block.

    Raises:
      ValueError: no points, points of different inputs ``n``, ``bucket_ratio < 1`` or ``chunk_size < 1``.
    """
    allp = list(pts) + ([] if ys is None else list(ys))
    sd = [_shape_dtype(p) for p in allp]
    itemsize = max((d.itemsize for _, d in sd), default=4)
    plan, _ = _plan(
        space,
        [s for s, _ in sd],
        itemsize,
        split=None if ys is None else len(pts),
        chunk_size=chunk_size,
        bucket_ratio=bucket_ratio,
        devices=sharding.size(sharding.check_mesh(mesh)),
    )
    return plan


def _run(space, pts, *, split, chunk_size, bucket_ratio, mesh):
    """Shared driver: returns the flat ``[rows * cols]`` distances of the plan's pairs (assembled)."""
    mesh = sharding.check_mesh(mesh)
    devices = sharding.size(mesh)
    sd = [_shape_dtype(p) for p in pts]
    dtype = np.dtype(jnp.result_type(*[d for _, d in sd]))
    plan, index_pairs = _plan(
        space,
        [s for s, _ in sd],
        dtype.itemsize,
        split=split,
        chunk_size=chunk_size,
        bucket_ratio=bucket_ratio,
        devices=devices,
    )
    prepared = []
    for members, shape, sz in zip(plan.buckets, plan.shapes, plan.sizes):
        stack = [space.pad_to(pts[i], shape[1]) if space.variable_width else pts[i] for i in members]
        stack += [stack[0]] * (sz - len(stack))  # fixed size class: valid copies, never indexed
        prepared.append(_stack_prepare(space, tuple(sharding.replicate(stack, mesh))))
    L = len(pts)
    rows, cols = (L, L) if split is None else (split, L - split)
    ds, pos = [], []
    for block, (ii, jj) in zip(plan.blocks, index_pairs):
        pi, pj, pair_of = _layout(block, ii, jj, devices)
        ds.append(_pair_block(space, prepared[block.p], prepared[block.q], pi, pj, mesh=mesh))
        r = np.asarray(plan.buckets[block.p])[ii][pair_of]
        c = np.asarray(plan.buckets[block.q])[jj][pair_of] - (0 if split is None else split)
        pad = pair_of < 0
        fwd = np.where(pad, rows * cols, r * cols + c)
        pos.append(np.stack([fwd, np.where(pad, rows * cols, c * cols + r)]) if split is None else fwd[None])
    if not ds:
        return jnp.zeros((rows, cols), dtype)
    pos = np.concatenate(pos, axis=1).astype(np.int32)
    return _assemble(tuple(ds), pos, shape=(rows, cols), dtype=dtype, mesh=mesh)


def pairwise_distances(
    space: Space,
    xs: Sequence[ArrayLike],
    *,
    are_points: bool = False,
    chunk_size: int | None = None,
    bucket_ratio: float = 1.25,
    mesh: Mesh | None = None,
) -> Array:
    """Distance matrix ``[L, L]`` between all representations in ``xs`` (e.g. all layers of a network).

    How it batches: each representation becomes a point once (``space.point``, jitted per shape) and is
    prepared once (``space.prepare``; e.g. ``A^{-1/2}`` for the affine-invariant metric). Points are then
    grouped into *buckets* that can be stacked: for the shape metrics, layers whose widths are within a
    factor ``bucket_ratio`` of each other, zero-padded to the widest (exact for these metrics); for the other
    spaces, points of equal shape. For every pair of buckets, ONE jitted function computes all its pairs
    (``i < j`` within a bucket) with ``vmap``, in chunks of ``chunk_size`` pairs run one after another to
    bound memory (default: a power of two that fits in about 512 MiB). Bucket sizes, chunk sizes and chunk
    counts are rounded up to a few fixed sizes, so a repeated call with the same shapes compiles nothing and
    a call that differs only in the number of layers per bucket usually reuses compiled code;
    :func:`pairwise_plan` shows the plan. The result is symmetric with a zero diagonal and differentiable.

    Several devices: pass ``mesh`` (e.g. ``gp.device_mesh()``, all devices of all processes). The pairs of
    every block are split evenly over the mesh's devices (``jax.shard_map``), the prepared points are
    replicated on every device, and the points of layer ``i`` are computed on device ``i % D``. Memory per
    device: all prepared points plus one chunk of pairs. The result, replicated on every device, does not
    depend on the number of devices.

    Args:
      space: the metric space.
      xs: ``L`` raw representations ``[n, ...]`` (same ``n``; widths may differ), or points if ``are_points``.
      are_points: ``xs`` are already points of ``space``.
      chunk_size: pairs per vectorised chunk on one device (None: from the memory budget).
      bucket_ratio: widest/narrowest width allowed within a bucket (>= 1).
      mesh: a ``jax.sharding.Mesh`` to spread the pairs over (None: the default device alone).

    Returns:
      ``[L, L]`` distances in the points' dtype (float32, or float64 for float64 input), symmetric, with a
      zero diagonal. With ``are_points``, a point that contains NaN gives NaN in its row and column (its
      diagonal entry stays 0).

    Raises:
      ValueError: no representations; representations of different inputs ``n``; an invalid representation
        (see :func:`points`); ``bucket_ratio < 1`` or ``chunk_size < 1``.
      TypeError: complex input.

    Example:
      >>> import jax, geopath as gp
      >>> x = jax.random.normal(jax.random.key(0), (50, 8))
      >>> layers = [x, jax.nn.relu(x @ jax.random.normal(jax.random.key(1), (8, 16))), 2.0 * x]
      >>> D = gp.pairwise_distances(gp.AngularShape(), layers)
      >>> D.shape, round(float(D[0, 2]), 4), bool((D == D.T).all())
      ((3, 3), 0.0, True)
    """
    pts = list(xs) if are_points else points(space, xs, mesh=mesh)
    return _run(space, pts, split=None, chunk_size=chunk_size, bucket_ratio=bucket_ratio, mesh=mesh)


def cross_distances(
    space: Space,
    xs: Sequence[ArrayLike],
    ys: Sequence[ArrayLike],
    *,
    are_points: bool = False,
    chunk_size: int | None = None,
    bucket_ratio: float = 1.25,
    mesh: Mesh | None = None,
) -> Array:
    """Distances ``[L1, L2]`` between every representation in ``xs`` and every one in ``ys``.

    E.g. all layers of one model against all layers of another, on the same inputs. Batched (and spread over
    ``mesh``) like :func:`pairwise_distances`: buckets of similar width, one program per pair of buckets.
    The entries equal the corresponding block of ``pairwise_distances(space, xs + ys)``.

    Args:
      space: the metric space.
      xs: ``L1`` raw representations ``[n, ...]``, or points if ``are_points``.
      ys: ``L2`` raw representations of the same ``n`` inputs, or points if ``are_points``.
      are_points, chunk_size, bucket_ratio, mesh: as in :func:`pairwise_distances`.

    Returns:
      ``[L1, L2]`` distances ``d(xs[i], ys[j])`` in the points' dtype; with ``are_points``, NaN in the row
      or column of a point that contains NaN.

    Raises:
      ValueError: an empty ``xs`` or ``ys``, and as :func:`pairwise_distances`.
      TypeError: complex input.

    Example:
      >>> import jax, geopath as gp
      >>> x = jax.random.normal(jax.random.key(0), (50, 8))
      >>> C = gp.cross_distances(gp.AngularCKA(), [x, x ** 2], [3.0 * x, jax.nn.relu(x), x ** 3])
      >>> C.shape, round(float(C[0, 0]), 4)
      ((2, 3), 0.0)
    """
    xs, ys = list(xs), list(ys)
    if not xs or not ys:
        raise ValueError(f"need at least one representation on each side; got {len(xs)} and {len(ys)}")
    pts = (xs + ys) if are_points else points(space, xs + ys, mesh=mesh)
    return _run(space, pts, split=len(xs), chunk_size=chunk_size, bucket_ratio=bucket_ratio, mesh=mesh)
