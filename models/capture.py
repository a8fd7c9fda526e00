"""Batched, jitted extraction of intermediate representations.

:func:`capture` runs a model from :mod:`models.nets` in evaluation mode
(BatchNorm running statistics) over a set of images and returns the outputs
of the chosen layers as host numpy arrays. It never modifies the model: it
works on an eval-mode *view* of it (``nnx.view``), so a model in train mode
stays in train mode and its BatchNorm statistics are not touched.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .nets import layer_names

__all__ = ["capture", "eval_view", "resolve_layers", "path_layers"]

# (graphdef, kept layers, normalize?) -> jitted fn(state, x) -> tuple of arrays.
# GraphDefs are hashable and compare by structure, so two models with the same
# architecture share one compiled function per batch shape.
_FN_CACHE: dict[tuple[Any, tuple[str, ...], bool], Any] = {}


def eval_view(model: nnx.Module) -> nnx.Module:
    """An eval-mode view of ``model`` sharing its arrays (the model itself is unchanged)."""
    return nnx.view(model, use_running_average=True, deterministic=True, raise_if_not_found=False)


def resolve_layers(model: nnx.Module, layers: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validates ``layers`` against :func:`layer_names` and returns them in network order.

    ``None`` means every layer. Duplicates are dropped. Unknown names raise
    ``ValueError`` listing the valid ones.
    """
    valid = layer_names(model)
    if layers is None:
        return tuple(valid)
    if isinstance(layers, str):
        layers = [layers]
    wanted = list(layers)
    if not wanted:
        raise ValueError(f"layers is empty; choose from {valid}")
    unknown = [name for name in wanted if name not in valid]
    if unknown:
        raise ValueError(f"unknown layer name(s) {unknown} for {type(model).__name__}; valid layers: {valid}")
    keep = set(wanted)
    return tuple(name for name in valid if name in keep)


def path_layers(outputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The layers that make up a network's path, from the outputs of ``model.forward`` (in network order).

    Every layer, less one that only drops the singleton spatial axes of the previous kept layer
    (``[n, 1, 1, C]`` -> ``[n, C]``, e.g. VGG's ``features`` after a 1x1 last pool): the same point twice
    adds a zero-length step and an undefined turning angle. This is what the paths experiment's value
    check drops, decided from the shapes alone, so it works on tracers inside a jitted step.
    """
    names = list(outputs)
    keep = names[:1]
    for name in names[1:]:
        prev, cur = tuple(outputs[keep[-1]].shape), tuple(outputs[name].shape)
        if len(prev) > 2 and all(d == 1 for d in prev[1:-1]) and cur == (prev[0], prev[-1]):
            continue
        keep.append(name)
    return tuple(keep)


def _capture_fn(graphdef: Any, keep: tuple[str, ...], normalize_input: bool):
    key = (graphdef, keep, normalize_input)
    fn = _FN_CACHE.get(key)
    if fn is None:
        from .data import normalize

        def run(state, x):
            if normalize_input:
                x = normalize(x)
            out = nnx.merge(graphdef, state).forward(x)
            return tuple(out[name] for name in keep)

        fn = jax.jit(run)
        _FN_CACHE[key] = fn
    return fn


def capture(
    model: nnx.Module,
    images: Any,
    layers: str | Sequence[str] | None = None,
    batch_size: int = 500,
) -> OrderedDict[str, np.ndarray]:
    """Returns the representations of ``images`` at the chosen layers.

    Args:
        model: A network from :func:`models.create_model` (any mode; it is run in
            eval mode without being changed).
        images: ``[N, 32, 32, 3]`` array. ``uint8`` images are normalised with the
            CIFAR-10 statistics (:func:`models.data.normalize`), exactly as in
            training; floating-point images are taken as already normalised.
        layers: Layer names to keep (see :func:`models.layer_names`), or ``None``
            for all of them. The result is ordered by network depth whatever the
            order given here.
        batch_size: Images per forward pass. The last partial batch is padded to
            this size, so the jitted forward pass compiles once per input shape
            (batches of ``min(batch_size, N)`` images).

    Returns:
        ``OrderedDict`` layer name -> ``numpy.float32`` array ``[N, ...]``
        (``[N, H, W, C]`` for convolutional layers, ``[N, D]`` for ``pool``,
        ``features`` and ``logits``). ``input`` is the normalised float input.
        Only the kept layers are accumulated, on the host, one batch at a time.

    Raises:
        ValueError: Unknown layer names, bad ``batch_size`` or an image array of the
            wrong rank.
    """
    keep = resolve_layers(model, layers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch [N, H, W, C], got shape {tuple(images.shape)}")
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("images is empty")
    normalize_input = jnp.issubdtype(images.dtype, jnp.integer)
    if not normalize_input and images.dtype != np.float32:
        images = images.astype(np.float32)

    graphdef, state = nnx.split(eval_view(model))
    fn = _capture_fn(graphdef, keep, bool(normalize_input))
    bs = min(int(batch_size), n)

    def batch(start: int):
        stop = min(start + bs, n)
        xb = images[start:stop]
        if stop - start < bs:  # pad the last batch: one compiled shape
            pad = [(0, bs - (stop - start))] + [(0, 0)] * (images.ndim - 1)
            xb = jnp.pad(jnp.asarray(xb), pad) if isinstance(xb, jax.Array) else np.pad(xb, pad)
        return fn(state, xb), stop - start

    out: OrderedDict[str, np.ndarray] = OrderedDict()
    starts = list(range(0, n, bs))
    pending = batch(starts[0])
    for i, start in enumerate(starts):
        # Dispatch the next batch before copying this one to the host (overlap).
        nxt = batch(starts[i + 1]) if i + 1 < len(starts) else None
        arrays, valid = pending
        host = jax.device_get(arrays)
        for name, arr in zip(keep, host):
            if name not in out:
                out[name] = np.empty((n, *arr.shape[1:]), dtype=arr.dtype)
            out[name][start : start + valid] = arr[:valid]
        pending = nxt
    return out
