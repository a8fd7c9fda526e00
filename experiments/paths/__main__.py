"""Command line of the paths experiment: ``python -m experiments.paths``.

Usage::

    python -m experiments.paths --out results/paths          # ResNet + VGG, quick recipe (the main job)
    python -m experiments.paths --preset cpu-report          # both families x 3 seeds (the committed report)
    python -m experiments.paths --preset paper               # paper scale (GPU)
    python -m experiments.paths --archs resnet8,vgg11_w0.25 --metrics angular_shape,angular_cka,stress

The training flags are those of ``python -m models.train`` (generated from
:class:`models.config.TrainConfig`); they override the training preset that the experiment preset names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from models.cli import add_config_flags
from models.cli import config_overrides

from .config import EMBEDDINGS
from .config import METRICS
from .config import PRESETS
from .config import ExperimentConfig
from .config import experiment_config
from .pipeline import run_pipeline

__all__ = ["build_parser", "config_from_args", "main"]

# Run control of the training loop that the experiment decides itself (per network, or by its own flags).
_NOT_TRAINING_FLAGS = ("arch", "max_steps", "resume", "overwrite", "progress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.paths",
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
        help="cpu: one ResNet- and one VGG-family airbench network of the quick recipe (5 epochs of "
        "CIFAR-10), seed 0; cpu-report: the same with seeds 0, 1, 2 (the committed report); cpu-small: the "
        "earlier 4 small networks (4 epochs on 5k images); paper: full CIFAR-10, 164 epochs, ResNet-20/32/56, "
        "VGG-11/16 (GPU); tiny: smoke test. Explicit flags override the preset.",
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
        "--seeds", default=None, help="comma-separated training seeds of every architecture, e.g. 0,1,2"
    )
    p.add_argument(
        "--workdir", default="runs/paths", help="training runs (<workdir>/<arch>-s<seed>) and the cache"
    )
    p.add_argument(
        "--out", default="results/paths", help="results folder (figures/, results.json, report.md)"
    )
    p.add_argument("--cache-dir", default=None, help="representation cache (default <workdir>/rep_cache)")
    p.add_argument(
        "--no-train", action="store_true", help="do not train: use only the checkpoints already in --workdir"
    )
    p.add_argument(
        "--overwrite-runs", action="store_true", help="retrain from scratch when a run's config differs"
    )
    g = p.add_argument_group("probe set and analysis")
    g.add_argument("--probe-split", default=None, help="split the probe set is drawn from (default test)")
    g.add_argument(
        "--probe-per-class", type=int, default=None, help="probe images per class (final-checkpoint geometry)"
    )
    g.add_argument(
        "--trajectory-per-class",
        type=int,
        default=None,
        help="probe images per class for the geometry over training (the first of the final probe set)",
    )
    g.add_argument(
        "--interval-tol",
        type=float,
        default=None,
        help="tolerance (metric units) of the interval of projection fractions t reported beside each t",
    )
    g.add_argument(
        "--train-in-process",
        action="store_true",
        help="train in this process (default: each network in its own process, with the CPU training flags)",
    )
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
    g.add_argument(
        "--embedding",
        choices=EMBEDDINGS,
        default=None,
        help="embedding of the path figures: classical MDS (default), spherical MDS on S^2 (angular "
        "metrics only; great-circle distances approximate the angles) or both",
    )
    g.add_argument(
        "--shard",
        action="store_true",
        help="shard the analysis over every JAX device (gp.device_mesh(); on a CPU, XLA_FLAGS="
        "--xla_force_host_platform_device_count=N gives N devices); the numbers do not depend on it",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(
        p, exclude=_NOT_TRAINING_FLAGS, title="training of every network (models.config.TrainConfig)"
    )
    return p


def config_from_args(argv: Sequence[str] | None = None) -> ExperimentConfig:
    """ExperimentConfig from the command line: preset < explicit flags."""
    args = build_parser().parse_args(argv)
    training = config_overrides(args)
    for k in ("train_subset", "test_subset"):
        if training.get(k) == 0:  # 0 = all, as before
            training[k] = None
    options = {
        k: getattr(args, k)
        for k in (
            "probe_split",
            "probe_per_class",
            "trajectory_per_class",
            "interval_tol",
            "probe_seed",
            "capture_batch_size",
            "max_checkpoints",
            "precision",
            "embedding",
        )
        if getattr(args, k) is not None
    }
    if args.archs:
        options["archs"] = tuple(a.strip() for a in args.archs.split(",") if a.strip())
    if args.seeds:
        try:
            options["seeds"] = tuple(int(x) for x in args.seeds.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.train_in_process:
        options["train_in_subprocess"] = False
    if args.metrics:
        options["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    cfg = experiment_config(
        args.preset,
        training=training,
        workdir=args.workdir,
        out=args.out,
        cache_dir=args.cache_dir,
        reuse_only=args.no_train,
        overwrite_runs=args.overwrite_runs,
        progress=not args.no_progress,
        shard=args.shard,
        **options,
    )
    cfg.validate()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run_pipeline(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a network's training failed (its own output says why)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
