"""XLA:CPU flags that make convolutional training faster on a CPU.

jaxlib 0.10.2 runs convolutions, matmuls and their surrounding element-wise work on the CPU as YNNPACK /
XNNPACK fusions. For the small-channel 3x3 convolutions of CIFAR networks those kernels are slow and keep
only about one of two cores busy; XLA's own (Eigen) kernels are faster. Measured on 2 EPYC cores with
``benchmarks/train_throughput.py`` (batch 128, alternated runs, see ``benchmarks/results.md``): resnet20
66-72 -> 147-150 train img/s (2.1x), vgg11 52-58 -> 74-75 img/s (1.3x); numerically these are other
kernels for the same operations (float32 round-off only).

The flags take effect only if they are in ``XLA_FLAGS`` before JAX creates its CPU backend (the first
computation or device query), so ``python -m models.train`` and ``benchmarks/train_throughput.py`` apply
them as their first step. They make geopath's analysis slower (measured the same day: points 0.58 -> 0.87
s, path analysis 5.9 -> 7.2 s, all-pairs 4.1 -> 4.6 s), so ``python -m experiments.paths``, which trains
and analyses in one process, does not set them. In your own script, call :func:`use_cpu_training_flags`
before any JAX computation, or export the flags yourself::

    XLA_FLAGS="--xla_cpu_use_xnnpack=false --xla_cpu_experimental_ynn_fusion_type=" python train.py

A flag you set yourself in ``XLA_FLAGS`` always wins (e.g. ``XLA_FLAGS=--xla_cpu_use_xnnpack=true``
keeps XNNPACK). Runs record the ``XLA_FLAGS`` they started with, and resuming with different flags warns:
other kernels round differently, so the resumed run would not be bit-identical.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["CPU_TRAINING_FLAGS", "with_cpu_training_flags", "use_cpu_training_flags"]

#: Flags (``name=value``) added to ``XLA_FLAGS``: no XNNPACK, and no YNNPACK fusions of any op type.
CPU_TRAINING_FLAGS: tuple[str, ...] = (
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_experimental_ynn_fusion_type=",
)


def _flag_name(token: str) -> str:
    return token.split("=", 1)[0]


def with_cpu_training_flags(xla_flags: str) -> str:
    """Returns ``xla_flags`` with each of :data:`CPU_TRAINING_FLAGS` appended unless already set.

    Args:
        xla_flags: An ``XLA_FLAGS`` value (space-separated ``--name[=value]`` tokens).

    Returns:
        The same tokens, followed by every training flag whose name does not occur in them.
    """
    present = {_flag_name(tok) for tok in xla_flags.split()}
    extra = [flag for flag in CPU_TRAINING_FLAGS if _flag_name(flag) not in present]
    return " ".join([*xla_flags.split(), *extra])


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without the module: cannot tell, assume not
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False


def use_cpu_training_flags(*, quiet: bool = False) -> bool:
    """Adds :data:`CPU_TRAINING_FLAGS` to ``os.environ["XLA_FLAGS"]`` (flags already set there win).

    Call it before JAX's first computation. Harmless on other backends (the flags are CPU-only).

    Args:
        quiet: No warning when JAX's backend has already started (the command lines use this, since
            they may be called from a running Python process, e.g. by tests).

    Returns:
        True if ``XLA_FLAGS`` now holds the flags for a backend that has not started yet; False if
        JAX's backend was already running (the flags would have no effect, so the environment is left
        unchanged; a ``UserWarning`` says so unless ``quiet``).
    """
    if _backend_started():
        if not quiet:
            warnings.warn(
                "use_cpu_training_flags() was called after JAX started its backend; XLA_FLAGS is left "
                "unchanged. Call it before the first JAX computation, or export the flags in the shell.",
                stacklevel=2,
            )
        return False
    os.environ["XLA_FLAGS"] = with_cpu_training_flags(os.environ.get("XLA_FLAGS", ""))
    return True
