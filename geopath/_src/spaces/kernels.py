"""Kernel (Gram) matrices of a representation, shared by the kernel-based spaces (CKA, SPD, Stress).

A kernel is named by a string, or a sum of kernels by a tuple of names with optional weights. The radial
kernels share one length ``s``: ``s = scale * sqrt(median_{i<j} |x_i - x_j|^2)`` (the median heuristic),
or a fixed ``sigma``.

* "linear": ``k_ij = <x_i, x_j>`` (of the column-centred ``x``);
* "rbf": ``k_ij = exp(-|x_i - x_j|^2 / (2 s^2))``;
* "laplace": ``k_ij = exp(-|x_i - x_j| / s)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array

from geopath._src import linalg
from geopath._src.spaces.base import Centered
from geopath._src.spaces.base import sq_dists

KERNELS = ("linear", "rbf", "laplace")


def kernel_names(kernel: str | tuple[str, ...]) -> tuple[str, ...]:
    """The kernel names of a kernel specification (a name or a tuple of names)."""
    return (kernel,) if isinstance(kernel, str) else tuple(kernel)


def normalize_fields(space) -> None:
    """Stores a list ``kernel`` / ``kernel_weights`` of a frozen space as tuples (hashable, static)."""
    if not isinstance(space.kernel, str):
        object.__setattr__(space, "kernel", tuple(space.kernel))
    if space.kernel_weights is not None:
        object.__setattr__(space, "kernel_weights", tuple(float(w) for w in space.kernel_weights))


def check_kernel(kernel, weights, scale, sigma) -> None:
    """Raises ``ValueError`` for an unknown kernel, mismatched weights or a bad length scale."""
    names = kernel_names(kernel)
    if not names or any(k not in KERNELS for k in names):
        raise ValueError(f"kernel must be one of {KERNELS} or a non-empty tuple of them; got {kernel!r}")
    if weights is not None:
        if len(weights) != len(names):
            raise ValueError(
                f"kernel_weights must have one weight per kernel: {len(names)} kernels {names}, "
                f"{len(weights)} weights {tuple(weights)}"
            )
        if not all(np.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"kernel_weights must be positive numbers; got {tuple(weights)!r}")
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"rbf_scale must be a positive number; got {scale!r}")
    if sigma is not None and not (sigma > 0 and np.isfinite(sigma)):
        raise ValueError(f"rbf_sigma must be a positive number or None; got {sigma!r}")


def _length_sq(d2: Array, scale: float, sigma: float | None) -> Array:
    """Squared radial length ``s^2`` for squared distances ``d2 [n, n]``; scalar."""
    if sigma is not None:
        return jnp.asarray(sigma * sigma, d2.dtype)
    iu = np.triu_indices(d2.shape[0], 1)
    return scale * scale * jnp.maximum(jnp.median(d2[iu]), jnp.finfo(d2.dtype).tiny)


def gram(
    c: Centered,
    kernel: str | tuple[str, ...] = "linear",
    *,
    weights: tuple[float, ...] | None = None,
    scale: float = 1.0,
    sigma: float | None = None,
    scale_free: bool = False,
) -> Array:
    """Kernel matrix ``[n, n]`` of the rows of a centred representation (weighted sum for a tuple).

    Args:
      c: the centred, power-of-two-rescaled representation (:func:`geopath._src.spaces.base.centered`).
      kernel, weights, scale, sigma: the kernel specification (see the module docstring).
      scale_free: the caller normalises the result by its own size (CKA, trace-normalised SPD), so a lone
        linear kernel may stay in the rescaled units (exact, and safe from overflow for any finite input).
        Otherwise the result is in the data's units: the linear part is ``X_c X_c^T`` of the original data,
        and a fixed ``sigma`` is compared with the original distances (the median heuristic is scale-free).
    """
    xs = c.values
    names = kernel_names(kernel)
    weights = (1.0,) * len(names) if weights is None else weights
    if scale_free and all(name == "linear" for name in names):
        return sum(weights) * (xs @ xs.T)
    d2 = None
    total = None
    for name, w in zip(names, weights):
        if name == "linear":
            k = c.unscale(xs @ xs.T, 2)
        else:
            if d2 is None:
                d2 = sq_dists(xs)
                if sigma is not None:
                    d2 = c.unscale(d2, 2)  # back to the units of sigma
                s2 = _length_sq(d2, scale, sigma)
            if name == "rbf":
                k = jnp.exp(-d2 / (2.0 * s2))
            else:
                k = jnp.exp(-linalg.safe_sqrt(d2 / s2))
        k = k if w == 1.0 else w * k
        total = k if total is None else total + k
    return total
