"""Input checks shared by every space.

Static properties (rank, number of inputs, matching shapes, dtype) are checked from shapes and dtypes and
raise :class:`ValueError` / :class:`TypeError` at trace time, so they work under ``jax.jit`` too. Value
properties (finite entries, non-constant representation) are checked eagerly on concrete arrays; on traced
arrays they become a host callback that raises at run time, so a jitted call never returns a silent NaN for
bad input.

Dtype policy (:func:`as_matrix`, the one place raw data enters): float32 and float64 are kept; float16 and
bfloat16 are computed in float32 (their range and precision are too small for SVDs and eigensolvers);
integers and booleans become the default float type; complex input is refused (a silent cast would drop
the imaginary part). Set the
environment variable ``GEOPATH_RUNTIME_CHECKS=0`` (read at import) to drop the traced checks for speed.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

RUNTIME_CHECKS = os.environ.get("GEOPATH_RUNTIME_CHECKS", "1") not in ("0", "false", "False")

_LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def is_traced(x) -> bool:
    """Whether ``x`` is a tracer (inside ``jit``/``vmap``/``grad``), i.e. its values are not available.

    The one test geopath uses to decide between eager value checks and traced (run-time) checks.
    """
    return isinstance(x, jax.core.Tracer)


def as_matrix(x, *, name: str = "x", min_inputs: int = 3) -> jax.Array:
    """Returns ``x`` as a floating ``[n, p]`` matrix, trailing axes flattened.

    Float32/float64 are kept, float16/bfloat16 are promoted to float32, integers/booleans become the default
    float type (see the module docstring).

    Raises:
      ValueError: if ``x`` has fewer than 2 axes, fewer than ``min_inputs`` rows or no features.
      TypeError: if ``x`` is complex (or not numeric).
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} (shape {tuple(x.shape)}) is complex ({x.dtype}); representations must be real. "
            "Pass the real part, the modulus, or real and imaginary parts as separate features."
        )
    if x.dtype in _LOW_PRECISION:
        x = x.astype(jnp.float32)
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_):
            raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
        x = x.astype(jnp.result_type(float))
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape [n, ...] (n inputs, then one or more feature axes); "
            f"got shape {tuple(x.shape)} with {x.ndim} axis/axes"
        )
    n = x.shape[0]
    if n < min_inputs:
        raise ValueError(
            f"{name} has {n} input(s) (shape {tuple(x.shape)}); at least {min_inputs} are needed for a "
            "representational distance"
        )
    p = int(np.prod(x.shape[1:]))
    if p == 0:
        raise ValueError(f"{name} has no features: shape {tuple(x.shape)}")
    return x.reshape(n, p)


def check_same_inputs(a, b, *, names=("a", "b")) -> None:
    """Raises ``ValueError`` unless ``a`` and ``b`` describe the same number of inputs (axis 0)."""
    sa, sb = tuple(jnp.shape(a)), tuple(jnp.shape(b))
    if len(sa) < 1 or len(sb) < 1 or sa[0] != sb[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must describe the same inputs (same size of axis 0); got shapes "
            f"{sa} and {sb}"
        )


def check_same_shape(a, b, *, names=("a", "b"), what: str = "points") -> None:
    sa, sb = tuple(jnp.shape(a)), tuple(jnp.shape(b))
    if sa != sb:
        raise ValueError(f"{what} {names[0]} and {names[1]} must have the same shape; got {sa} and {sb}")


def _bad_value_message(name, shape, nonfinite, constant) -> str | None:
    if nonfinite:
        return f"{name} (shape {shape}) contains NaN or Inf values"
    if constant:
        return (
            f"{name} (shape {shape}) is constant across inputs (all zero, identical rows, or rows that differ "
            "only by rounding noise of at most 4 units in the last place): it has no variation over the "
            "inputs, so its representational distance is undefined"
        )
    return None


# A column whose centred values stay within this many units of round-off of its magnitude is constant:
# such variation is indistinguishable from rounding noise in the data itself.
_CONSTANT_ULPS = 4.0


def shift_center(x):
    """Column-centred ``x [n, p]`` computed so that no variation is lost to a large common offset.

    The first row is subtracted first (``x/2 - x[0]/2``: exact differences up to rounding, no overflow), then
    the mean of the differences: the result is ``(x - mean) / 2`` with relative error ``O(eps)`` of the
    variation itself, where a plain ``x - mean`` loses everything below ``eps * |offset|``.
    """
    xp = jnp if is_traced(x) or isinstance(x, jax.Array) else np
    d = x / 2 - x[:1] / 2
    return d - xp.mean(d, axis=0, keepdims=True)


def _constant_columns(x, xc, eps):
    """Per column: centred values within ``_CONSTANT_ULPS`` round-off units of the column's magnitude."""
    xp = jnp if is_traced(x) or is_traced(xc) else np
    mx = xp.max(xp.abs(x), axis=0)
    mc = 2 * xp.max(xp.abs(xc), axis=0)  # xc is (x - mean) / 2
    return mc <= _CONSTANT_ULPS * eps * mx


def check_values(x: jax.Array, centered: jax.Array | None = None, *, name: str = "x") -> jax.Array:
    """Checks that ``x [n, p]`` is finite and varies over the inputs; returns ``x``.

    *Constant* means that in every column the centred values stay within 4 units of round-off of the column's
    magnitude (``max |x_j - mean_j| <= 4 eps max |x_j|``): exactly equal rows, all zeros, or a constant
    perturbed by rounding noise. Any larger variation, however small against a common offset (``1e6 + x`` in
    float32), is kept by the centring (:func:`shift_center`) and accepted. Only maxima are compared, no sums
    of squares, so the check is right for every finite input (no overflow at 1e30, no underflow at 1e-30).

    Args:
      x: ``[n, p]`` raw representation.
      centered: ``[n, p]`` ``shift_center(x)`` if already computed (traced path only).
      name: how to name ``x`` in the error message.
    """
    shape = tuple(x.shape)
    eps = float(jnp.finfo(x.dtype).eps)
    if not (is_traced(x) or is_traced(centered)):
        xa = np.asarray(x)
        # Column extremes (NaN propagates through max/min, so they are finite iff every value is).
        hi, lo = (np.max(xa, axis=0), np.min(xa, axis=0)) if xa.size else (np.zeros(0), np.zeros(0))
        hi, lo = hi.astype(np.float64), lo.astype(np.float64)
        nonfinite = not bool(np.all(np.isfinite(hi)) and np.all(np.isfinite(lo)))
        constant = False
        # A column whose range exceeds twice the tolerance varies for certain (max |x - mean| >= range / 2),
        # so the exact float64 test below is only needed when no column shows that much variation.
        if not nonfinite and not np.any(hi - lo > 4 * _CONSTANT_ULPS * eps * np.maximum(abs(hi), abs(lo))):
            x64 = xa.astype(np.float64)
            constant = bool(np.all(_constant_columns(x64, shift_center(x64), eps)))
        msg = _bad_value_message(name, shape, nonfinite, constant)
        if msg:
            raise ValueError(msg)
        return x
    if not RUNTIME_CHECKS:
        return x
    if centered is None:
        centered = shift_center(x)
    nonfinite = jnp.logical_not(jnp.all(jnp.isfinite(x)))
    constant = jnp.logical_and(jnp.logical_not(nonfinite), jnp.all(_constant_columns(x, centered, eps)))

    def _callback(nonfinite, constant):
        nonfinite, constant = np.asarray(nonfinite), np.asarray(constant)
        if nonfinite.any() or constant.any():
            where = ""
            if nonfinite.ndim:  # batched under vmap: say which batch elements
                bad = np.flatnonzero((nonfinite | constant).ravel())
                where = f" (batch indices {bad.tolist()[:10]})"
            msg = _bad_value_message(name, shape, bool(nonfinite.any()), bool(constant.any()))
            raise ValueError(msg + where)

    jax.debug.callback(_callback, nonfinite, constant)
    return x


def check_unit_interval(value: float, *, name: str) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0) or not np.isfinite(v):
        raise ValueError(f"{name} must lie in [0, 1]; got {value!r}")
    return v
