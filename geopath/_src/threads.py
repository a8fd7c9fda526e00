"""Pinning XLA's CPU runtime to one thread, for shared machines (see ``docs/threads.md``).

geopath itself changes no process-wide setting: importing it leaves ``os.environ`` and JAX's configuration
untouched. This helper is for the user who asks for it, before JAX starts.
"""

from __future__ import annotations

import importlib
import os

#: The ``XLA_FLAGS`` that keep XLA's CPU runtime from multi-threading Eigen's kernels. They leave the size
#: of XLA's intra-op thread pool alone: that is :data:`POOL_SIZE_VARIABLE`.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")

#: The environment variable the XLA CPU client of jaxlib 0.10 reads, when JAX starts, for the number of
#: threads of its intra-op pool (before ``NPROC``, then the cores the process may use). Measured: 2 threads on
#: this 2-core machine by default and with the flags above, 1 with ``PJRT_NPROC=1``. One thread also rules
#: out the LAPACK deadlock of ``docs/threads.md``: jaxlib never splits a batch over a pool of one thread.
POOL_SIZE_VARIABLE = "PJRT_NPROC"


def _backend_started() -> bool:
    # JAX offers no public query; a moved private name reads as "not started" (the flags may then be late).
    try:
        bridge = importlib.import_module("jax._src.xla_bridge")
        return bool(bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def set_cpu_threads(num_threads: int = 1) -> str:
    """Pins XLA's CPU runtime to ``num_threads`` threads: adds the flags to ``XLA_FLAGS`` (returned) and sets
    ``PJRT_NPROC=1`` (:data:`POOL_SIZE_VARIABLE`, the size of XLA's thread pool).

    XLA reads both once, when JAX starts its first backend, so call this before any JAX computation (or set
    them in the shell, see ``docs/threads.md``). Flags already in ``XLA_FLAGS``, and a ``PJRT_NPROC`` already
    set, are kept; calling twice adds nothing.

    Args:
      num_threads: only 1 is supported (XLA has no documented flag for a pool of N > 1 threads; to use N
        cores, restrict the process with ``taskset -c 0-<N-1>``).

    Raises:
      ValueError: ``num_threads`` is not 1.
      RuntimeError: JAX has already started its backends, so the flags would be ignored.
    """
    if num_threads != 1:
        raise ValueError(
            f"set_cpu_threads supports num_threads=1 only; got {num_threads!r}. To use N cores, run the "
            "process under `taskset -c 0-<N-1>` instead (see docs/threads.md)."
        )
    if _backend_started():
        raise RuntimeError(
            "JAX has already started its backends, so XLA_FLAGS can no longer take effect. Call "
            f"geopath.set_cpu_threads(1) before any JAX computation, or start Python with {POOL_SIZE_VARIABLE}=1 "
            f"XLA_FLAGS='{' '.join(SINGLE_THREAD_XLA_FLAGS)}' (see docs/threads.md)."
        )
    flags = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in flags}
    flags += [f for f in SINGLE_THREAD_XLA_FLAGS if f.split("=")[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ.setdefault(POOL_SIZE_VARIABLE, "1")
    return os.environ["XLA_FLAGS"]
