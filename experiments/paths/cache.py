"""The representation cache of the paths experiment: one ``.npz`` per (network, run, step, probe set).

Cached representations are stored compactly: a layer with ``p`` features for ``n`` probe images is kept
as is when ``p <= n``; otherwise it is replaced by ``Z = U sqrt(L)`` from the eigen-decomposition
``X X^T = U L U^T`` (``[n, r]``, ``r <= n``). ``Z = X V`` for an orthonormal ``V``, so every metric that
is invariant to orthogonal transformations of the features -- all geopath spaces except
``AffineInvariant(kind="covariance")`` -- gives the same distances. A run is identified by
:func:`models.config.run_fingerprint` of its ``config.json``, so a retrained run never reuses stale
entries.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from models.config import run_fingerprint
from models.fileio import read_json

__all__ = ["CACHE_FORMAT", "compact_representation", "capture_checkpoint", "load_or_capture"]

CACHE_FORMAT = "geopath-paths-reps-v1"


def compact_representation(x: np.ndarray) -> np.ndarray:
    """``[n, ...]`` activations -> ``[n, k]`` float32 with the same Gram matrix ``X X^T``.

    ``k = p`` (the flattened width, data unchanged) when ``p <= n``; otherwise
    ``Z = U sqrt(L)`` with ``X X^T = U L U^T`` (computed in float64), keeping the
    eigenvalues above ``n * eps * max(L)``, so ``k = rank <= n``. Distances in any
    metric invariant to orthogonal maps of the features are unchanged (up to
    rounding).
    """
    x = np.asarray(x)
    n = x.shape[0]
    x = x.reshape(n, -1)
    p = x.shape[1]
    if p <= n:
        return np.ascontiguousarray(x, dtype=np.float32)
    x64 = x.astype(np.float64)
    g = x64 @ x64.T
    w, u = np.linalg.eigh(g)
    wmax = max(float(w[-1]), 0.0)
    keep = w > n * np.finfo(np.float64).eps * wmax
    if not np.any(keep):  # an all-zero layer: keep one zero column so the shape stays valid
        return np.zeros((n, 1), np.float32)
    z = u[:, keep] * np.sqrt(w[keep])
    return np.ascontiguousarray(z[:, ::-1], dtype=np.float32)  # largest component first


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _run_id(run_dir: Path) -> str:
    """Hash of the run's training configuration (what determines its checkpoints)."""
    return run_fingerprint(read_json(run_dir / "config.json", what="run config"))


def _cache_path(cache_dir: Path, arch: str, run_id: str, step: int, probe_hash: str) -> Path:
    return cache_dir / arch / f"run-{run_id}" / f"step{step:09d}-probe{probe_hash}.npz"


def _read_cache(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT:
                return None
            names = [str(s) for s in z["names"]]
            reps = [z[f"layer{i:03d}"] for i in range(len(names))]
            return dict(
                names=names,
                reps=reps,
                logits=z["logits"],
                widths=z["widths"].tolist(),
                meta=json.loads(str(z["meta"])),
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # A damaged entry (a torn copy, a bad disk block): recompute it, never reuse it. Entries are written
        # atomically (_atomic_savez), so a concurrent writer is never seen half-way.
        warnings.warn(
            f"representation cache entry {path} is unreadable ({e!r}); recomputing it", stacklevel=2
        )
        return None


def capture_checkpoint(run_dir: Path, step: int, probe_images: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Loads one checkpoint and captures every layer's representation of the probe images."""
    import logging

    from models import capture
    from models import load_checkpoint

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax's read-only notices, once per checkpoint
    try:
        model, meta = load_checkpoint(run_dir, step)
    finally:
        absl_logger.setLevel(level)
    reps = capture(model, probe_images, layers=None, batch_size=batch_size)
    names = list(reps)
    widths = [int(np.prod(v.shape[1:])) for v in reps.values()]
    logits = np.asarray(reps["logits"], np.float32).reshape(len(probe_images), -1)
    compact = [compact_representation(v) for v in reps.values()]
    keep_meta = {
        k: meta.get(k)
        for k in (
            "step",
            "epoch",
            "test_acc",
            "test_loss",
            "train_acc",
            "train_loss",
            "lr",
            "n_train",
            "steps_per_epoch",
            "total_steps",
        )
        if meta.get(k) is not None
    }
    return dict(names=names, reps=compact, logits=logits, widths=widths, meta=keep_meta)


def load_or_capture(
    cache_dir: Path, run_dir: Path, arch: str, step: int, probe, batch_size: int, stats: dict[str, int]
) -> dict[str, Any]:
    """The cached representations of checkpoint ``step`` of ``run_dir`` for ``probe`` (a
    :class:`models.data.ProbeSet`), capturing and caching them on a miss; counts hits / captures in
    ``stats``. Returns ``names`` (layers), ``reps`` (compact ``[n, k]`` float32 per layer), ``logits``
    ``[n, classes]``, ``widths`` (flattened layer widths) and ``meta`` (the checkpoint's metrics)."""
    path = _cache_path(cache_dir, arch, _run_id(run_dir), step, probe.hash)
    hit = _read_cache(path)
    if hit is not None:
        stats["cache_hits"] += 1
        return hit
    stats["captures"] += 1
    res = capture_checkpoint(run_dir, step, probe.images, batch_size)
    arrays = {f"layer{i:03d}": r for i, r in enumerate(res["reps"])}
    _atomic_savez(
        path,
        format=np.array(CACHE_FORMAT),
        names=np.array(res["names"]),
        logits=res["logits"],
        widths=np.array(res["widths"]),
        meta=np.array(json.dumps(res["meta"])),
        **arrays,
    )
    return res
