"""Works around an XLA CPU runtime deadlock before any JAX backend starts.

With jaxlib 0.10 the XLA CPU "concurrency optimized" scheduler can produce programs whose execution never
completes: every worker thread idles and ``block_until_ready`` waits forever. We hit it with
``jax.vmap`` of :func:`geopath.project` (a ``fori_loop`` of SVD-based Newton steps) over zero-padded
points, e.g. ``analyze_path`` of a network's layers, on the first or a later call of the compiled function.
Turning that scheduler off (``--xla_cpu_enable_concurrency_optimized_scheduler=false``) removed the hang
in every reproduction we had; its cost on speed is measured in ``benchmarks/results.md``.

XLA reads ``XLA_FLAGS`` once, when the first backend is created, so :func:`apply` only helps when geopath is
imported before any JAX computation runs; otherwise it warns. Opt out with ``GEOPATH_XLA_WORKAROUND=0``; a
value of the flag already present in ``XLA_FLAGS`` is left alone.
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
_NAME = FLAG.split("=")[0]


def apply() -> bool:
    """Adds :data:`FLAG` to ``XLA_FLAGS`` if allowed and still effective; returns whether the flag is active."""
    if os.environ.get("GEOPATH_XLA_WORKAROUND", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if _NAME in flags:
        return FLAG in flags.split()
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # private API moved: assume not started
        started = False
    if started:
        warnings.warn(
            "geopath was imported after JAX started its backends, so it could not set XLA_FLAGS="
            f"{FLAG} (a workaround for an XLA CPU deadlock in vmapped projections). Import geopath first, or "
            "set the flag yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
