"""Networks as paths through representation space: the one-command experiment.

Following Lange et al., "Neural Networks as Paths through the Space of
Representations" (arXiv:2206.10999): each layer's representation of a fixed
probe set is a point in a metric space of representations, a network is the
path of its layers from the input to the logits, and the one-hot labels of the
probe set are a target point in the same space. For every architecture this
driver

1. trains it on CIFAR-10 (or reuses / resumes the run in ``--workdir``), with
   checkpoints at step 0, log-spaced steps in the first epoch and every epoch;
2. captures the probe-set representations of every layer at every scheduled
   checkpoint, caching them as ``.npz`` per (architecture, run, step, probe set);
3. for every metric, analyses the path at every checkpoint
   (:func:`geopath.analyze_path`: length, straightness, turning angles,
   distance to target, progress along the input->target geodesic), compares the
   final paths of the architectures (:func:`geopath.compare_paths`) and embeds
   them jointly with the target by classical MDS;
4. writes ``--out``: ``figures/*.png|pdf``, ``results.json`` (every number) and
   ``report.md``.

Usage::

    python -m models.paths                       # CPU preset: 4 small nets, a few epochs on 5k images
    python -m models.paths --preset paper        # paper scale (GPU)
    python -m models.paths --archs resnet8,vgg11_w0.25 --metrics angular_shape,angular_cka,stress

Cached representations are stored compactly: a layer with ``p`` features for
``n`` probe images is kept as is when ``p <= n``; otherwise it is replaced by
``Z = U sqrt(L)`` from the eigen-decomposition ``X X^T = U L U^T`` (``[n, r]``,
``r <= n``). ``Z = X V`` for an orthonormal ``V``, so every metric that is
invariant to orthogonal transformations of the features -- all geopath spaces
except ``AffineInvariant(kind="covariance")`` -- gives the same distances.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PRESETS",
    "METRICS",
    "Options",
    "options_from_args",
    "parse_metric",
    "compact_representation",
    "run_pipeline",
    "main",
]

NUM_CLASSES = 10
CACHE_FORMAT = "geopath-paths-reps-v1"

# Driver presets. Training fields follow models.train.TrainConfig.
PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes per network on 2 CPU cores.
    "cpu": dict(
        archs=("resnet8", "resnet14", "resnet8_w2", "vgg11_w0.25"),
        metrics=("angular_shape", "angular_cka"),
        train_subset=5000,
        test_subset=1000,
        epochs=4,
        batch_size=128,
        lr=0.1,
        schedule="cosine",
        warmup_epochs=0.5,
        weight_decay=5e-4,
        probe_per_class=30,
        precision="float64",
    ),
    # Paper scale (GPU): full CIFAR-10, the ResNet recipe of He et al. (2016) for every network.
    "paper": dict(
        archs=("resnet20", "resnet32", "resnet56", "resnet20_w2", "vgg11", "vgg16"),
        metrics=("angular_shape", "angular_cka", "angular_shape_a0.5"),
        train_subset=None,
        test_subset=None,
        epochs=164,
        batch_size=128,
        lr=0.1,
        schedule="step",
        warmup_epochs=0.0,
        weight_decay=1e-4,
        momentum=0.9,
        nesterov=False,
        milestones=(0.5, 0.75),
        ckpt_every_epochs=4,
        probe_per_class=100,
        precision="float64",
    ),
    # Seconds: for tests and smoke runs.
    "tiny": dict(
        archs=("resnet8_w0.25",),
        metrics=("angular_shape", "angular_cka"),
        train_subset=200,
        test_subset=100,
        epochs=1,
        batch_size=50,
        lr=0.05,
        schedule="cosine",
        warmup_epochs=0.0,
        weight_decay=5e-4,
        probe_per_class=4,
        precision="float64",
    ),
}

_TRAIN_FIELDS = (
    "train_subset",
    "test_subset",
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "momentum",
    "nesterov",
    "milestones",
    "ckpt_every_epochs",
    "seed",
    "data_dir",
    "data_source",
)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    units: str
    make: Callable[[], Any]


def parse_metric(name: str) -> MetricSpec:
    """``angular_shape`` (alpha=1), ``angular_shape_a0.5``, ``euclidean_shape[_aX]``, ``angular_cka``,
    ``angular_cka_unbiased``, ``angular_cka_rbf``, ``stress``, ``affine`` -> a :class:`MetricSpec`."""
    import geopath as gp

    name = name.strip()
    m = re.fullmatch(r"(angular|euclidean)_shape(?:_a(\d*\.?\d+))?", name)
    if m:
        alpha = 1.0 if m.group(2) is None else float(m.group(2))
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"metric {name!r}: alpha must lie in [0, 1]")
        if m.group(1) == "angular":
            return MetricSpec(
                name,
                f"angular shape metric (Williams et al. 2021), alpha={alpha:g}",
                "radians",
                lambda: gp.AngularShape(alpha=alpha),
            )
        return MetricSpec(
            name,
            f"Euclidean shape metric (Procrustes distance), alpha={alpha:g}",
            "Frobenius units",
            lambda: gp.EuclideanShape(alpha=alpha),
        )
    fixed = {
        "angular_cka": ("angular CKA, arccos(linear CKA)", "radians", lambda: gp.AngularCKA()),
        "angular_cka_unbiased": (
            "angular CKA with the unbiased HSIC estimator",
            "radians",
            lambda: gp.AngularCKA(unbiased=True),
        ),
        "angular_cka_rbf": (
            "angular CKA, RBF kernel (median heuristic)",
            "radians",
            lambda: gp.AngularCKA(kernel="rbf"),
        ),
        "stress": (
            "stress: RMS difference of the pairwise-distance matrices",
            "input-distance units",
            lambda: gp.Stress(),
        ),
        "stress_normalized": (
            "stress of RMS-normalised distance matrices",
            "relative units",
            lambda: gp.Stress(normalize=True),
        ),
        "affine": (
            "affine-invariant Riemannian metric on centred Gram matrices (eps=1e-3)",
            "dimensionless",
            lambda: gp.AffineInvariant(eps=1e-3),
        ),
    }
    if name in fixed:
        desc, units, make = fixed[name]
        return MetricSpec(name, desc, units, make)
    raise ValueError(
        f"unknown metric {name!r}; valid: angular_shape[_aALPHA], euclidean_shape[_aALPHA], "
        f"{', '.join(sorted(fixed))}"
    )


METRICS = (
    "angular_shape",
    "angular_shape_a0.5",
    "angular_shape_a0",
    "euclidean_shape",
    "angular_cka",
    "angular_cka_unbiased",
    "angular_cka_rbf",
    "stress",
    "stress_normalized",
    "affine",
)


# ----------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    archs: tuple[str, ...] = PRESETS["cpu"]["archs"]
    metrics: tuple[str, ...] = PRESETS["cpu"]["metrics"]
    workdir: str = "runs/paths"
    out: str = "results/paths"
    cache_dir: str | None = None  # default: <workdir>/rep_cache
    # training (see models.train.TrainConfig)
    train_subset: int | None = 5000
    test_subset: int | None = 1000
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    milestones: tuple[float, ...] = (0.5, 0.75)
    ckpt_every_epochs: int = 1
    seed: int = 0
    data_dir: str | None = None
    data_source: str = "auto"
    train: bool = True  # False: only use checkpoints already in workdir
    overwrite_runs: bool = False
    # probe set and analysis
    probe_split: str = "test"
    probe_per_class: int = 30
    probe_seed: int = 0
    capture_batch_size: int = 250
    max_checkpoints: int | None = None  # subsample the scheduled checkpoints (log-evenly), keep first/last
    precision: str = "float64"
    progress: bool = True
    preset: str | None = None

    def train_config(self, arch: str) -> dict[str, Any]:
        cfg = dict(
            arch=arch,
            train_subset=self.train_subset,
            test_subset=self.test_subset,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            schedule=self.schedule,
            warmup_epochs=self.warmup_epochs,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            nesterov=self.nesterov,
            milestones=tuple(self.milestones),
            ckpt_every_epochs=self.ckpt_every_epochs,
            seed=self.seed,
            data_dir=self.data_dir,
            data_source=self.data_source,
            progress=self.progress,
        )
        return cfg


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.paths",
        description=(
            "Networks as paths through representation space (Lange et al., arXiv:2206.10999): train several "
            "CIFAR-10 networks (or reuse their runs), capture every layer's representation of a fixed probe set "
            "at every checkpoint, analyse the paths in the chosen metrics and write figures, results.json and "
            "report.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="cpu: 4 small networks, a few epochs on 5k images (minutes per network on 2 cores); "
        "paper: full CIFAR-10, 164 epochs, ResNet-20/32/56, VGG-11/16 (GPU); tiny: smoke test. "
        "Explicit flags override the preset.",
    )
    p.add_argument(
        "--archs", default=None, help="comma-separated architectures, e.g. resnet8,resnet14,vgg11_w0.25"
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metrics; available: {', '.join(METRICS)} (angular_shape_aALPHA and "
        "euclidean_shape_aALPHA for any alpha in [0, 1])",
    )
    p.add_argument(
        "--workdir",
        default="runs/paths",
        help="training runs (<workdir>/<arch>) and the representation cache",
    )
    p.add_argument(
        "--out", default="results/paths", help="results folder (figures/, results.json, report.md)"
    )
    p.add_argument("--cache-dir", default=None, help="representation cache (default <workdir>/rep_cache)")
    g = p.add_argument_group("training (models.train.TrainConfig)")
    g.add_argument("--train-subset", type=int, default=None, help="training images (class-balanced); 0 = all")
    g.add_argument("--test-subset", type=int, default=None, help="test images for evaluation; 0 = all")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--schedule", choices=("cosine", "step", "constant"), default=None)
    g.add_argument("--warmup-epochs", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--ckpt-every-epochs", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument(
        "--data-dir",
        default=None,
        help="CIFAR-10 class-folder root or TFDS dir (default: $GEOPATH_CIFAR10_DIR / shared copy)",
    )
    g.add_argument("--data-source", choices=("auto", "folder", "tfds"), default=None)
    g.add_argument(
        "--no-train", action="store_true", help="do not train: use only the checkpoints already in --workdir"
    )
    g.add_argument(
        "--overwrite-runs", action="store_true", help="retrain from scratch when a run's config differs"
    )
    g = p.add_argument_group("probe set and analysis")
    g.add_argument("--probe-split", default=None, help="split the probe set is drawn from (default test)")
    g.add_argument("--probe-per-class", type=int, default=None, help="probe images per class")
    g.add_argument("--probe-seed", type=int, default=None)
    g.add_argument("--capture-batch-size", type=int, default=None)
    g.add_argument(
        "--max-checkpoints",
        type=int,
        default=None,
        help="analyse at most this many checkpoints per network (log-evenly spaced; first and last kept)",
    )
    g.add_argument(
        "--precision",
        choices=("float64", "float32"),
        default=None,
        help="precision of the geometry (training is always float32)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def options_from_args(argv: Sequence[str] | None = None) -> Options:
    args = _build_parser().parse_args(argv)
    fields: dict[str, Any] = dict(PRESETS[args.preset])
    fields["preset"] = args.preset
    direct = {
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "schedule": args.schedule,
        "warmup_epochs": args.warmup_epochs,
        "weight_decay": args.weight_decay,
        "ckpt_every_epochs": args.ckpt_every_epochs,
        "seed": args.seed,
        "data_dir": args.data_dir,
        "data_source": args.data_source,
        "probe_split": args.probe_split,
        "probe_per_class": args.probe_per_class,
        "probe_seed": args.probe_seed,
        "capture_batch_size": args.capture_batch_size,
        "max_checkpoints": args.max_checkpoints,
        "precision": args.precision,
    }
    fields.update({k: v for k, v in direct.items() if v is not None})
    for k in ("train_subset", "test_subset"):
        if fields.get(k) == 0:
            fields[k] = None
    if args.archs:
        fields["archs"] = tuple(a.strip() for a in args.archs.split(",") if a.strip())
    if args.metrics:
        fields["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    fields.update(
        workdir=args.workdir,
        out=args.out,
        cache_dir=args.cache_dir,
        train=not args.no_train,
        overwrite_runs=args.overwrite_runs,
        progress=not args.no_progress,
    )
    opts = Options(**fields)
    _validate(opts)
    return opts


def _validate(opts: Options) -> None:
    from .nets import parse_arch

    if not opts.archs:
        raise ValueError("no architectures given")
    if len(set(opts.archs)) != len(opts.archs):
        raise ValueError(f"duplicate architectures in {opts.archs}")
    for a in opts.archs:
        parse_arch(a)
    if not opts.metrics:
        raise ValueError("no metrics given")
    for m in opts.metrics:
        parse_metric(m)
    if opts.precision not in ("float64", "float32"):
        raise ValueError(f"precision must be float64 or float32, got {opts.precision!r}")
    if opts.probe_per_class < 1:
        raise ValueError("probe_per_class must be >= 1")
    if opts.max_checkpoints is not None and opts.max_checkpoints < 2:
        raise ValueError("max_checkpoints must be >= 2 (first and last)")


# ----------------------------------------------------------------------------------------------------------
# Representations: compaction and cache
# ----------------------------------------------------------------------------------------------------------


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
    from .train import _RESUME_MUTABLE

    with open(run_dir / "config.json") as f:
        cfg = json.load(f)
    stable = {k: v for k, v in sorted(cfg.items()) if k not in _RESUME_MUTABLE}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]


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
    except (OSError, KeyError, ValueError):
        return None  # unreadable / partial: recompute


def _capture_checkpoint(
    run_dir: Path, step: int, probe_images: np.ndarray, batch_size: int
) -> dict[str, Any]:
    """Loads one checkpoint and captures every layer's representation of the probe images."""
    import logging

    from .capture import capture
    from .train import load_checkpoint

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
    path = _cache_path(cache_dir, arch, _run_id(run_dir), step, probe.hash)
    hit = _read_cache(path)
    if hit is not None:
        stats["cache_hits"] += 1
        return hit
    stats["captures"] += 1
    res = _capture_checkpoint(run_dir, step, probe.images, batch_size)
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


# ----------------------------------------------------------------------------------------------------------
# Training (or reuse)
# ----------------------------------------------------------------------------------------------------------


def _config_matches(run_dir: Path, cfg: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    from .train import _RESUME_MUTABLE
    from .train import TrainConfig

    with open(run_dir / "config.json") as f:
        saved = json.load(f)
    want = TrainConfig.from_dict(cfg).to_dict()
    diff = {k: (saved.get(k), v) for k, v in want.items() if k not in _RESUME_MUTABLE and saved.get(k) != v}
    return not diff, diff


def ensure_run(arch: str, opts: Options, *, train_data=None, test_data=None, log=print) -> dict[str, Any]:
    """Trains ``arch`` in ``<workdir>/<arch>``, resumes an interrupted run, or reuses a finished one."""
    from .train import list_checkpoints
    from .train import train_and_evaluate

    run_dir = Path(opts.workdir) / arch
    cfg = opts.train_config(arch)
    has_ckpts = (run_dir / "checkpoints").is_dir() and bool(list_checkpoints(run_dir))
    if has_ckpts and (run_dir / "config.json").exists():
        same, diff = _config_matches(run_dir, cfg)
        if not same:
            if not opts.overwrite_runs:
                raise ValueError(
                    f"{run_dir} holds a run with a different training configuration ({diff}); "
                    "use another --workdir, or --overwrite-runs to retrain"
                )
            if not opts.train:
                raise ValueError(f"{run_dir}: configuration differs and --no-train forbids retraining")
            cfg["overwrite"] = True
            has_ckpts = False
        else:
            summary_path = run_dir / "summary.json"
            if summary_path.exists():
                with open(summary_path) as f:
                    summary = json.load(f)
                if not summary.get("interrupted") and summary.get("final_step") == summary.get("total_steps"):
                    log(f"[{arch}] reusing finished run in {run_dir}")
                    return dict(summary, reused=True)
            cfg["resume"] = True
    if not opts.train:
        if has_ckpts:
            log(f"[{arch}] --no-train: using the {len(list_checkpoints(run_dir))} checkpoints in {run_dir}")
            return dict(workdir=str(run_dir), arch=arch, reused=True, final_test_acc=None)
        raise FileNotFoundError(f"--no-train but {run_dir} holds no checkpoints")
    log(f"[{arch}] {'resuming' if cfg.get('resume') else 'training'} in {run_dir}")
    summary = train_and_evaluate(cfg, run_dir, train_data=train_data, test_data=test_data)
    return dict(summary, reused=False)


def _select_steps(steps: Sequence[int], max_n: int | None) -> list[int]:
    """All steps, or at most ``max_n`` of them spaced evenly in log(step + 1) (first and last kept)."""
    steps = sorted(set(int(s) for s in steps))
    if max_n is None or len(steps) <= max_n:
        return steps
    pos = np.log1p(np.asarray(steps, float))
    targets = np.linspace(pos[0], pos[-1], max_n)
    idx = sorted({int(np.argmin(np.abs(pos - t))) for t in targets} | {0, len(steps) - 1})
    return [steps[i] for i in idx]


# ----------------------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------------------


def _dedupe_layers(names: Sequence[str], reps: Sequence[np.ndarray]) -> list[int]:
    """Indices of layers to keep: drops a layer identical to the previous kept one (e.g. VGG pool5 vs
    features on a 1x1 map); a repeated point has zero step length and an undefined turning angle."""
    keep = [0]
    for i in range(1, len(reps)):
        prev = reps[keep[-1]]
        if reps[i].shape == prev.shape and np.array_equal(reps[i], prev):
            continue
        keep.append(i)
    return keep


def _tolist(x) -> Any:
    a = np.asarray(x)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
        if a.ndim == 0:
            v = float(a)
            return v if math.isfinite(v) else None
        return (
            [(_tolist(v)) for v in a] if a.ndim > 1 else [float(v) if math.isfinite(v) else None for v in a]
        )
    return a.tolist()


def _analysis_dict(a) -> dict[str, Any]:
    return {f: _tolist(getattr(a, f)) for f in a._fields}


def analyze_metric(
    metric: str, runs: Mapping[str, Mapping[str, Any]], labels: np.ndarray, *, precision: str, progress: bool
) -> dict[str, Any]:
    """Path analysis of every network at every checkpoint, joint distances and comparisons, for one metric."""
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import geopath as gp

    spec = parse_metric(metric)
    space = spec.make()
    dtype = np.float64 if precision == "float64" else np.float32
    out: dict[str, Any] = dict(
        name=metric, description=spec.description, units=spec.units, space=repr(space), per_arch={}, timing={}
    )
    final_points: dict[str, list] = {}
    with jax.enable_x64(precision == "float64"):
        t0 = time.time()
        target = gp.target_point(space, jnp.asarray(labels, jnp.int32), num_classes=NUM_CLASSES)
        total = sum(len(r["steps"]) for r in runs.values())
        bar = tqdm(total=total, desc=f"paths [{metric}]", unit="ckpt", disable=not progress, leave=False)
        for arch, run in runs.items():
            analyses = []
            for step in run["steps"]:
                reps = [np.asarray(run["reps"][step][i], dtype) for i in run["keep"]]
                pts = gp.points(space, reps)
                a = jax.device_get(gp.analyze_path(space, pts, target))
                analyses.append(a)
                if step == run["steps"][-1]:
                    final_points[arch] = pts
                bar.update(1)
            stacked = type(analyses[0])(*[np.stack(f) for f in zip(*analyses)])
            out["per_arch"][arch] = dict(
                layers=[run["names"][i] for i in run["keep"]],
                steps=list(run["steps"]),
                final=_analysis_dict(analyses[-1]),
                training=_analysis_dict(stacked),
                _stacked=stacked,
                _final=analyses[-1],
            )
        bar.close()
        out["timing"]["paths_s"] = time.time() - t0

        # Joint distance matrix of all final paths and the target, MDS embedding, pairwise comparisons.
        t0 = time.time()
        labels_joint, pts_joint, bounds = [], [], []
        for arch, pts in final_points.items():
            labels_joint += [f"{arch}:{n}" for n in out["per_arch"][arch]["layers"]]
            pts_joint += list(pts)
            bounds.append(len(pts_joint))
        labels_joint.append("target")
        pts_joint.append(target)
        D = np.asarray(gp.pairwise_distances(space, pts_joint, are_points=True), np.float64)
        mds = gp.classical_mds(D, dim=2)
        ev = np.asarray(mds.eigenvalues, np.float64)
        pos = ev[ev > 0]
        out["joint"] = dict(
            labels=labels_joint,
            boundaries=bounds[:-1] + [bounds[-1]],
            distances=_tolist(D),
            mds_coords=_tolist(mds.coords),
            mds_stress=float(mds.stress),
            mds_explained=float(ev[:2].clip(min=0).sum() / pos.sum()) if pos.size else None,
        )
        comps = {}
        archs = list(final_points)
        for i in range(len(archs)):
            for j in range(i + 1, len(archs)):
                c = gp.compare_paths(space, final_points[archs[i]], final_points[archs[j]])
                comps[f"{archs[i]} vs {archs[j]}"] = dict(
                    mean_aligned=float(c.mean_aligned),
                    aligned=_tolist(c.aligned),
                    depth=_tolist(c.depth),
                    method="geodesic interpolation, linear in relative depth",
                )
        out["comparisons"] = comps
        out["timing"]["joint_s"] = time.time() - t0
    return out


# ----------------------------------------------------------------------------------------------------------
# Figures and report
# ----------------------------------------------------------------------------------------------------------


def make_figures(res: Mapping[str, Any], fig_dir: Path) -> dict[str, list[str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from geopath import plotting

    files: dict[str, list[str]] = {}
    for metric, m in res["metrics"].items():
        units = m["units"]
        per = m["per_arch"]
        joint = m["joint"]
        coords = np.asarray(joint["mds_coords"])
        starts = [0] + joint["boundaries"][:-1]
        ends = joint["boundaries"]
        by_model = {arch: coords[s:e] for arch, s, e in zip(per, starts, ends)}
        layer_labels = {arch: per[arch]["layers"] for arch in per}
        fl = []
        fig = plotting.plot_paths_2d(
            by_model,
            target=coords[-1],
            units=units,
            layer_labels=layer_labels,
            title=f"Final networks as paths, {m['description']}\n"
            f"(classical MDS of all layers + target; stress {joint['mds_stress']:.3f})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"paths_mds_{metric}")
        fig = plotting.plot_distance_matrix(
            np.asarray(joint["distances"]),
            joint["labels"],
            boundaries=joint["boundaries"],
            units=units,
            title=f"Distances between all layers of the final networks and the target\n{m['description']}",
        )
        fl += plotting.save_figure(fig, fig_dir / f"distances_{metric}")
        fig = plotting.plot_depth_profiles(
            {arch: per[arch]["_final"] for arch in per},
            units=units,
            title=f"Layer-by-layer geometry of the final networks ({m['description']})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"depth_profiles_{metric}")
        fig = plotting.plot_training(
            {arch: per[arch]["_stacked"] for arch in per},
            {arch: per[arch]["steps"] for arch in per},
            units=units,
            title=f"Path geometry over training ({m['description']})",
        )
        fl += plotting.save_figure(fig, fig_dir / f"training_{metric}")
        files[metric] = fl
    # accuracy over training (probe set = held-out images)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    all_steps = []
    for arch, a in res["archs"].items():
        st = np.asarray(a["steps"], float)
        all_steps.append(st)
        ax.plot(st, np.asarray(a["probe_accuracy"]) * 100, marker="o", ms=3.5, label=arch)
    pos = np.concatenate(all_steps) if all_steps else np.zeros(0)
    pos = pos[pos > 0]
    ax.set_xscale("symlog", linthresh=float(pos.min()) if pos.size else 1.0)
    ax.axhline(100.0 / NUM_CLASSES, color="gray", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("training step (log scale; 0 = initialisation)")
    ax.set_ylabel("probe-set accuracy (%)")
    ax.set_title("Accuracy on the probe set (held-out images) over training")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    files["accuracy"] = list(plotting.save_figure(fig, fig_dir / "accuracy"))
    return files


def _fmt(x, nd=3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def write_report(res: Mapping[str, Any], out_dir: Path, figures: Mapping[str, list[str]]) -> Path:
    def rel(p):
        return os.path.relpath(p, out_dir)

    def png(files):
        return [f for f in files if f.endswith(".png")]

    o = res["options"]
    lines = [
        "# Networks as paths through representation space",
        "",
        f"Generated {res['created']} by `python -m models.paths` (preset `{o.get('preset')}`). "
        "All numbers are also in `results.json`.",
        "",
        "## Setup",
        "",
        f"- Networks: {', '.join(f'`{a}`' for a in res['archs'])}; trained on {res['data']['train']} "
        f"({_fmt(res['data']['n_train'])} training images, {o['epochs']} epochs, "
        f"batch {o['batch_size']}, SGD lr {o['lr']} {o['schedule']}, seed {o['seed']}).",
        f"- Probe set: {res['probe']['n']} images ({o['probe_per_class']} per class) from "
        f"{res['probe']['source']}, hash `{res['probe']['hash']}`. Every layer's representation of these "
        "images (from the input pixels to the logits) is a point; the network is the path through them.",
        "- Target: the one-hot label matrix of the probe set, as a point of the same space.",
        "- Metrics: "
        + "; ".join(f"`{k}` = {v['description']} ({v['units']})" for k, v in res["metrics"].items())
        + ".",
        f"- Geometry computed in {o['precision']}. Straightness = d(input, target) / path length "
        "(1 for a path that runs straight to the target). Turning angle at a layer = pi - the angle between "
        "the geodesics to the previous and next layer (0 = straight on). Progress t = fraction along the "
        "input->target geodesic of the point nearest the layer.",
        "",
        "## Accuracy",
        "",
        "| network | layers analysed | checkpoints | probe accuracy at init | final probe accuracy | final test accuracy (run) |",
        "|---|---|---|---|---|---|",
    ]
    for arch, a in res["archs"].items():
        lines.append(
            f"| `{arch}` | {len(a['layers'])} | {len(a['steps'])} (steps {a['steps'][0]}..{a['steps'][-1]}) | "
            f"{_fmt(a['probe_accuracy'][0])} | {_fmt(a['probe_accuracy'][-1])} | {_fmt(a.get('final_test_acc'))} |"
        )
        if a["dropped_layers"]:
            lines.append("")
            lines.append(
                f"  (`{arch}`: dropped layer(s) identical to the previous one: "
                f"{', '.join(a['dropped_layers'])})"
            )
    if "accuracy" in figures:
        lines += ["", f"![accuracy]({rel(png(figures['accuracy'])[0])})", ""]
    for metric, m in res["metrics"].items():
        u = m["units"]
        lines += [
            "",
            f"## Metric `{metric}`: {m['description']}",
            "",
            f"Final checkpoint of each network (distances in {u}):",
            "",
            "| network | path length | d(input, target) | straightness | d(last layer, target) | "
            "progress t of last layer | mean turning angle (rad) | straightness at init |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arch, pa in m["per_arch"].items():
            f = pa["final"]
            tr = pa["training"]
            turning = [v for v in (f["turning"] or []) if v is not None]
            lines.append(
                f"| `{arch}` | {_fmt(f['length'])} | {_fmt(f['direct'])} | {_fmt(f['straightness'])} | "
                f"{_fmt(f['dist_to_target'][-1])} | {_fmt(f['proj_t'][-1])} | "
                f"{_fmt(float(np.mean(turning)) if turning else None)} | {_fmt(tr['straightness'][0])} |"
            )
        j = m["joint"]
        lines += [
            "",
            f"Joint classical MDS of all final layers and the target: Kruskal stress {j['mds_stress']:.3f}, "
            f"the two dimensions carry {_fmt(j['mds_explained'])} of the positive eigenvalue mass.",
            "",
        ]
        if m["comparisons"]:
            lines += [
                "Distance between final paths at matched relative depth (mean over the depth grid, "
                f"{u}; geodesic interpolation between layers):",
                "",
                "| pair | mean aligned distance |",
                "|---|---|",
            ]
            for pair, c in m["comparisons"].items():
                lines.append(f"| {pair} | {_fmt(c['mean_aligned'])} |")
            lines.append("")
        names = {
            "paths_mds": "paths (MDS)",
            "distances": "distance matrix",
            "depth_profiles": "depth profiles",
            "training": "over training",
        }
        for f in png(figures.get(metric, [])):
            stem = Path(f).stem
            kind = next((v for k, v in names.items() if stem.startswith(k)), stem)
            lines += [f"![{metric}: {kind}]({rel(f)})", ""]
        lines += [
            "PDF versions: "
            + ", ".join(f"[{Path(f).name}]({rel(f)})" for f in figures.get(metric, []) if f.endswith('.pdf')),
            "",
        ]
    t = res["timing"]
    lines += [
        "## Timing",
        "",
        ", ".join(f"{k}: {v:.1f} s" for k, v in t.items() if isinstance(v, (int, float))),
        "",
        f"Cache: {res['cache']['captures']} captures, {res['cache']['cache_hits']} reused from "
        f"`{res['cache']['dir']}`.",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------------


def _load_probe(opts: Options, probe_data=None):
    from .data import load_cifar10
    from .data import probe_set

    if probe_data is None:
        probe_data = load_cifar10(opts.probe_split, data_dir=opts.data_dir, source=opts.data_source)
    return probe_set(probe_data, per_class=opts.probe_per_class, seed=opts.probe_seed), getattr(
        probe_data, "source", "in-memory"
    )


def run_pipeline(
    opts: Options, *, train_data=None, test_data=None, probe_data=None, log=None
) -> dict[str, Any]:
    """Runs the whole experiment; returns the results dict (also written to ``<out>/results.json``).

    ``train_data`` / ``test_data`` / ``probe_data`` (a :class:`models.data.Dataset` or anything with
    ``images`` and ``labels``) replace the CIFAR-10 loads, e.g. in tests.
    """
    from tqdm.auto import tqdm

    _validate(opts)
    if log is None:

        def log(msg):
            tqdm.write(msg) if opts.progress else print(msg, flush=True)

    t_all = time.time()
    timing: dict[str, float] = {}
    out_dir = Path(opts.out)
    fig_dir = out_dir / "figures"
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.workdir) / "rep_cache"
    out_dir.mkdir(parents=True, exist_ok=True)

    probe, probe_source = _load_probe(opts, probe_data)
    labels = np.asarray(probe.labels)
    log(f"probe set: {len(labels)} images from {probe_source} (hash {probe.hash})")

    # 1. train / reuse
    t0 = time.time()
    summaries = {}
    for arch in opts.archs:
        summaries[arch] = ensure_run(arch, opts, train_data=train_data, test_data=test_data, log=log)
    timing["training_s"] = time.time() - t0

    # 2. capture (cached)
    from .train import list_checkpoints

    t0 = time.time()
    stats = {"captures": 0, "cache_hits": 0}
    runs: dict[str, dict[str, Any]] = {}
    plan = {}
    for arch in opts.archs:
        run_dir = Path(opts.workdir) / arch
        steps = list_checkpoints(run_dir, scheduled_only=True) or list_checkpoints(run_dir)
        plan[arch] = _select_steps(steps, opts.max_checkpoints)
    bar = tqdm(
        total=sum(len(s) for s in plan.values()),
        desc="representations",
        unit="ckpt",
        disable=not opts.progress,
    )
    for arch in opts.archs:
        run_dir = Path(opts.workdir) / arch
        reps, names, meta, acc = {}, None, {}, []
        for step in plan[arch]:
            bar.set_postfix_str(f"{arch} step {step}")
            r = load_or_capture(cache_dir, run_dir, arch, step, probe, opts.capture_batch_size, stats)
            if names is None:
                names = r["names"]
            elif r["names"] != names:
                raise RuntimeError(f"{arch}: layer names differ between checkpoints")
            reps[step] = r["reps"]
            meta[step] = r["meta"]
            acc.append(float(np.mean(np.argmax(r["logits"], axis=1) == labels)))
            bar.update(1)
        keep = _dedupe_layers(names, reps[plan[arch][-1]])
        runs[arch] = dict(steps=plan[arch], names=names, reps=reps, keep=keep, meta=meta, probe_accuracy=acc)
    bar.close()
    timing["representations_s"] = time.time() - t0
    log(f"representations: {stats['captures']} captured, {stats['cache_hits']} from cache ({cache_dir})")

    # 3. analysis
    metrics_res = {}
    for metric in opts.metrics:
        t0 = time.time()
        metrics_res[metric] = analyze_metric(
            metric, runs, labels, precision=opts.precision, progress=opts.progress
        )
        timing[f"analysis_{metric}_s"] = time.time() - t0

    res: dict[str, Any] = dict(
        created=_dt.datetime.now().isoformat(timespec="seconds"),
        paper="Lange et al., Neural Networks as Paths through the Space of Representations, arXiv:2206.10999",
        options=dataclasses.asdict(opts),
        environment=dict(python=platform.python_version(), platform=platform.platform(), **_versions()),
        data=dict(
            train=(
                f"in-memory data `{getattr(train_data, 'source', 'arrays')}`"
                if train_data is not None
                else f"CIFAR-10 ({opts.data_source} source{', ' + str(opts.data_dir) if opts.data_dir else ''})"
            ),
            n_train=next(
                (m.get("n_train") for r in runs.values() for m in r["meta"].values() if m.get("n_train")),
                None,
            ),
        ),
        probe=dict(
            n=int(len(labels)),
            hash=probe.hash,
            source=f"`{probe_source}`",
            indices=[int(i) for i in probe.indices],
        ),
        archs={
            arch: dict(
                layers=[runs[arch]["names"][i] for i in runs[arch]["keep"]],
                all_layers=runs[arch]["names"],
                dropped_layers=[n for i, n in enumerate(runs[arch]["names"]) if i not in runs[arch]["keep"]],
                steps=runs[arch]["steps"],
                probe_accuracy=runs[arch]["probe_accuracy"],
                checkpoint_meta=[runs[arch]["meta"][s] for s in runs[arch]["steps"]],
                final_test_acc=summaries[arch].get("final_test_acc"),
                run=dict((k, v) for k, v in summaries[arch].items() if k != "checkpoints"),
            )
            for arch in opts.archs
        },
        metrics=metrics_res,
        cache=dict(dir=str(cache_dir), **stats),
    )

    # 4. figures, results.json, report.md
    t0 = time.time()
    figures = make_figures(res, fig_dir)
    timing["figures_s"] = time.time() - t0
    timing["total_s"] = time.time() - t_all
    res["timing"] = timing
    res["figures"] = {k: [os.path.relpath(f, out_dir) for f in v] for k, v in figures.items()}
    serialisable = _strip_private(res)
    tmp = out_dir / ".results.json.tmp"
    with open(tmp, "w") as f:
        json.dump(serialisable, f, indent=1)
    os.replace(tmp, out_dir / "results.json")
    report = write_report(res, out_dir, figures)
    log(
        f"wrote {out_dir / 'results.json'}, {report} and {sum(len(v) for v in figures.values())} figure files"
    )
    return serialisable


def _strip_private(obj):
    if isinstance(obj, dict):
        return {
            k: _strip_private(v) for k, v in obj.items() if not (isinstance(k, str) and k.startswith("_"))
        }
    if isinstance(obj, (list, tuple)):
        return [_strip_private(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("jax", "flax", "optax", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = options_from_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run_pipeline(opts)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
