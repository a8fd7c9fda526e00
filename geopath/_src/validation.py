"""Input checks shared by every space.

Static properties (rank, number of inputs, matching shapes) are checked from shapes and raise
:class:`ValueError` at trace time, so they work under ``jax.jit`` too. Value properties (finite entries,
non-constant representation) are checked eagerly on concrete arrays; on traced arrays they become a host
callback that raises at run time, so a jitted call never returns a silent NaN for bad input. Set the
environment variable ``GEOPATH_RUNTIME_CHECKS=0`` (read at import) to drop the traced checks for speed.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

RUNTIME_CHECKS = os.environ.get("GEOPATH_RUNTIME_CHECKS", "1") not in ("0", "false", "False")

# A centred representation whose Frobenius norm is below this many machine epsilons of the raw
# representation's norm is treated as constant (no variation over the inputs).
_CONSTANT_RTOL_EPS = 64.0


def is_traced(x) -> bool:
    """Whether ``x`` is a tracer (inside ``jit``/``vmap``/``grad``), i.e. its values are not available.

    The one test geopath uses to decide between eager value checks and traced (run-time) checks.
    """
    return isinstance(x, jax.core.Tracer)


def as_matrix(x, *, name: str = "x", min_inputs: int = 3) -> jax.Array:
    """Returns ``x`` as a floating ``[n, p]`` matrix, trailing axes flattened.

    Raises:
      ValueError: if ``x`` has fewer than 2 axes, fewer than ``min_inputs`` rows or no features.
    """
    x = jnp.asarray(x)
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
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
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
            f"{name} (shape {shape}) is zero or constant across inputs: it has no variation over the "
            "inputs, so its representational distance is undefined"
        )
    return None


def check_values(x: jax.Array, centered: jax.Array, *, name: str = "x") -> jax.Array:
    """Checks that ``x`` is finite and not constant over inputs; returns ``x``.

    Args:
      x: ``[n, p]`` raw representation.
      centered: ``[n, p]`` the same with column means removed.
      name: how to name ``x`` in the error message.
    """
    shape = tuple(x.shape)
    eps = float(jnp.finfo(x.dtype).eps)
    if not (is_traced(x) or is_traced(centered)):
        xa = np.asarray(x)
        nonfinite = not bool(np.all(np.isfinite(xa)))
        constant = False
        if not nonfinite:
            cn = float(np.linalg.norm(np.asarray(centered, dtype=np.float64)))
            xn = float(np.linalg.norm(xa.astype(np.float64)))
            constant = cn <= _CONSTANT_RTOL_EPS * eps * xn or cn == 0.0
        msg = _bad_value_message(name, shape, nonfinite, constant)
        if msg:
            raise ValueError(msg)
        return x
    if not RUNTIME_CHECKS:
        return x
    nonfinite = jnp.logical_not(jnp.all(jnp.isfinite(x)))
    cn = jnp.sqrt(jnp.sum(jnp.square(centered)))
    xn = jnp.sqrt(jnp.sum(jnp.square(x)))
    constant = jnp.logical_or(cn <= _CONSTANT_RTOL_EPS * eps * xn, cn == 0)

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
