"""Placing geopath's batch work on the devices of a ``jax.sharding.Mesh`` (one host or many).

geopath uses JAX's own distributed runtime and nothing else: a :class:`jax.sharding.Mesh` names the devices,
``jax.shard_map`` runs one program per device on its slice of a batch axis, and replicated inputs are plain
``NamedSharding(mesh, P())``. With ``jax.distributed.initialize`` the same mesh spans the devices of every
process (host); nothing here is specific to one host.

Every function that takes ``mesh=`` shards ONE leading batch axis (pairs of layers, checkpoints) over ALL
axes of the mesh (flattened, in ``mesh.devices`` order) and replicates everything else; a multi-axis mesh
is therefore used as a flat list of devices.

CPU devices of one process do not run their shards at once (:func:`runs_serially`). They share one
intra-op thread pool, sized by the cores the process may use, and jaxlib 0.10's CPU LAPACK kernels (SVD,
eigh, QR, ... on a batch) split the batch over that pool and block a pool thread until the pieces are done:
when as many devices as the pool has threads reach such a kernel at once, every thread waits and the process
hangs at 0% CPU (seen with 2 forced host devices on 2 cores). So this process's share of the work is computed
on the first of its devices, in one program (:func:`map_serial`), and laid out on the mesh afterwards: the
same numbers, and on one host's CPU no loss, since the devices share the same cores anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

#: Axis name of the meshes made by :func:`device_mesh`.
AXIS = "devices"


def device_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (axis ``"devices"``) over ``devices`` (default: ``jax.devices()``, every process's).

    Pass it as ``mesh=`` to :func:`geopath.pairwise_distances`, :func:`geopath.cross_distances` or
    :func:`geopath.analyze_checkpoints`.

    Args:
      devices: the devices, in mesh order (None: ``jax.devices()``).

    Returns:
      A ``jax.sharding.Mesh`` of shape ``{"devices": len(devices)}``.

    Raises:
      ValueError: an empty ``devices``.

    Example:
      >>> import jax, geopath as gp
      >>> mesh = gp.device_mesh()
      >>> mesh.axis_names, mesh.size == len(jax.devices())
      (('devices',), True)
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("device_mesh needs at least one device")
    return Mesh(np.asarray(devs, dtype=object), (AXIS,))


def default_mesh() -> Mesh:
    """The mesh used when ``mesh=None``: this process's first device alone."""
    return _one_device_mesh(jax.local_devices()[0])


@functools.cache
def _one_device_mesh(device) -> Mesh:
    return Mesh(np.asarray([device], dtype=object), (AXIS,))


def check_mesh(mesh) -> Mesh:
    """``mesh`` itself (or the default one-device mesh for None); TypeError for anything else."""
    if mesh is None:
        return default_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (see geopath.device_mesh); got {type(mesh).__name__}"
        )
    return mesh


def size(mesh: Mesh) -> int:
    """Number of devices in ``mesh``."""
    return int(mesh.devices.size)


def batch_spec(mesh: Mesh) -> P:
    """Partition spec that shards a leading axis over all axes of ``mesh``."""
    return P(tuple(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(x, target: NamedSharding):
    """``x`` (the same whole value on every process) laid out as ``target``; tracers are left to ``jit``.

    One process: ``jax.device_put``. Several processes (``jax.distributed``): every process builds its own
    devices' shards from its copy (``jax.make_array_from_callback``), since the CPU backend cannot transfer
    arrays between hosts.
    """
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
        return x  # already laid out so (possibly across processes)
    if target.is_fully_addressable:
        return jax.device_put(x, target)
    x = jnp.asarray(x)
    return jax.make_array_from_callback(x.shape, target, lambda idx: x[idx])


def replicate(tree, mesh: Mesh):
    """``tree`` placed whole on every device of ``mesh`` (tracers are left to the enclosing ``jit``)."""
    return jax.tree_util.tree_map(lambda x: place(x, replicated(mesh)), tree)


def padded_length(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the number of devices (at least one item per device)."""
    d = size(mesh)
    return max(d, -(-n // d) * d)


def runs_serially(mesh: Mesh) -> bool:
    """Whether this process computes its shards of ``mesh`` on one device (:func:`map_serial`): it holds more
    than one of the mesh's devices and they are CPU devices (see the module notes: a hang otherwise)."""
    me = jax.process_index()
    local = [d for d in mesh.devices.flat if d.process_index == me]
    return len(local) > 1 and all(d.platform == "cpu" for d in local)


def _shard_on(x: jax.Array, device) -> jax.Array:
    """The piece of the global array ``x`` held by ``device``."""
    for s in x.addressable_shards:
        if s.device == device:
            return s.data
    raise ValueError(f"no shard of the array on {device}")


@functools.partial(jax.jit, static_argnames=("fn",))
def _local_jit(fn, sharded, rest):
    return fn(*sharded, *rest)


def map_serial(fn: Callable, mesh: Mesh, sharded: tuple, rest: tuple):
    """``fn(*sharded_local, *rest)`` for this process's devices of ``mesh``, computed on the first of them.

    ``sharded``: whole arrays (the same on every process) with a common leading axis divisible by the device
    count, split over the mesh like ``batch_spec(mesh)``; ``rest``: pytrees, replicated. The rows that belong to
    this process's devices (in mesh order) go through ``fn`` once, on the first of those devices: one program,
    compiled once as on a single device, so no two devices' programs run at once. Its outputs (every leaf with
    the leading axis of the input) are split back and laid out like the inputs, as ``jax.shard_map`` with
    ``out_specs=batch_spec(mesh)`` would return them.
    """
    spec = NamedSharding(mesh, batch_spec(mesh))
    me = jax.process_index()
    flat = list(mesh.devices.flat)
    mine = [k for k, d in enumerate(flat) if d.process_index == me]
    first = flat[mine[0]]

    def rows(x):
        host = np.asarray(x)
        b = host.shape[0] // len(flat)
        return jax.device_put(np.concatenate([host[k * b : (k + 1) * b] for k in mine]), first)

    def on_first(a):  # a replicated array already on the mesh: its copy there; anything else: moved there
        return (
            _shard_on(a, first)
            if isinstance(a, jax.Array) and first in a.devices()
            else jax.device_put(a, first)
        )

    out = jax.block_until_ready(
        _local_jit(fn, tuple(rows(x) for x in sharded), jax.tree_util.tree_map(on_first, rest))
    )

    def assemble(leaf):
        pieces = np.split(np.asarray(leaf), len(mine))
        shape = (pieces[0].shape[0] * len(flat),) + pieces[0].shape[1:]
        arrays = [jax.device_put(piece, flat[k]) for piece, k in zip(pieces, mine)]
        return jax.make_array_from_single_device_arrays(shape, spec, arrays)

    return jax.tree_util.tree_map(assemble, out)


def map_leading(fn: Callable, mesh, x, *rest):
    """``fn(x, *rest)`` where ``fn`` maps over the leading axis of ``x``, run with that axis sharded over ``mesh``.

    ``x [T, ...]`` is padded to a multiple of the device count by repeating its last item (valid input, so
    the padding cannot produce NaNs or errors), each device runs ``fn`` on its slice, and the padding is cut
    off the results. ``rest`` (any pytrees, None allowed) is replicated. Several CPU devices of this process:
    see :func:`map_serial`. ``fn`` must be a module-level
    function (it is a static argument of the compiled program: a new function object compiles anew). The
    result does not depend on the number of devices beyond float reassociation inside ``fn``.

    Returns:
      ``fn``'s output pytree, every leaf with leading axis ``T``.
    """
    mesh = check_mesh(mesh)
    t = int(jnp.shape(x)[0])
    tp = padded_length(t, mesh)
    if tp != t:
        x = jnp.concatenate([x, jnp.repeat(x[-1:], tp - t, axis=0)])
    if runs_serially(mesh):
        out = map_serial(fn, mesh, (x,), rest)
    else:
        x = place(x, NamedSharding(mesh, batch_spec(mesh)))
        out = _map_leading_jit(fn, mesh, x, replicate(rest, mesh))
    return jax.tree_util.tree_map(lambda a: a[:t], out)


@functools.partial(jax.jit, static_argnames=("fn", "mesh"))
def _map_leading_jit(fn, mesh, x, rest):
    spec = batch_spec(mesh)
    return jax.shard_map(lambda xl, r: fn(xl, *r), mesh=mesh, in_specs=(spec, P()), out_specs=spec)(x, rest)
