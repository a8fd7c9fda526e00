"""Options of the paths experiment: the metric registry, :class:`ExperimentConfig` and its presets.

Training options are not repeated here: an :class:`ExperimentConfig` holds a
:class:`models.config.TrainConfig` (``training``) that every network is trained with (its ``arch`` set
per network), and each experiment preset names a training preset of :data:`models.config.PRESETS`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from models.config import PRESETS as TRAIN_PRESETS
from models.config import TrainConfig

__all__ = [
    "NUM_CLASSES",
    "EMBEDDINGS",
    "METRICS",
    "MetricSpec",
    "parse_metric",
    "PRESETS",
    "ExperimentConfig",
    "experiment_config",
    "network_name",
    "family",
]

NUM_CLASSES = 10

# Embeddings of the joint distance matrix drawn in the figures: classical MDS (Euclidean plane), spherical
# MDS (great circles on the unit sphere S^2: natural for the angular metrics, whose distances are angles;
# computed for the metrics in radians only), or both.
EMBEDDINGS = ("classical", "spherical", "both")


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


def network_name(arch: str, seed: int) -> str:
    """The name of network ``arch`` trained with ``seed``: ``f"{arch}-s{seed}"`` (family and seed)."""
    return f"{arch}-s{int(seed)}"


def family(arch: str) -> str:
    """The architecture family of ``arch`` (``"resnet"`` or ``"vgg"``), as the report groups networks."""
    from models.nets import parse_arch

    fam = parse_arch(arch)[0]
    return "resnet" if "resnet" in fam else "vgg"


# ----------------------------------------------------------------------------------------------------------
# Experiment options and presets
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExperimentConfig:
    """Everything the paths experiment needs; training options live in ``training`` (a TrainConfig)."""

    archs: tuple[str, ...]
    metrics: tuple[str, ...]
    training: TrainConfig  # every network is trained with these options; its arch and seed set per network
    seeds: tuple[int, ...] | None = None  # every arch is trained with each seed; None: (training.seed,)
    workdir: str = "runs/paths"  # training runs (<workdir>/<arch>) and the representation cache
    out: str = "results/paths"  # figures/, results.json, report.md
    cache_dir: str | None = None  # default: <workdir>/rep_cache
    reuse_only: bool = False  # do not train: only use checkpoints already in workdir
    overwrite_runs: bool = False  # retrain from scratch when a run's config differs
    # Each network trains in its own `python -m` process with the CPU training flags of models.xla_cpu
    # (they slow the analysis, which runs in this process without them); in-memory data trains in-process.
    train_in_subprocess: bool = True
    # probe sets: the final-checkpoint geometry on probe_per_class images per class; the geometry over
    # training on the first trajectory_per_class of them (None: the same set)
    probe_split: str = "test"
    probe_per_class: int = 30
    trajectory_per_class: int | None = None
    probe_seed: int = 0
    # projections: the interval of t whose residual lies within interval_tol of the minimum (the metric's
    # units) is reported beside t (geopath.projection_interval)
    interval_tol: float = 1e-3
    capture_batch_size: int = 250
    max_checkpoints: int | None = None  # subsample the scheduled checkpoints (log-evenly), keep first/last
    precision: str = "float64"
    embedding: str = "classical"  # one of EMBEDDINGS: the path figures' embedding(s) of the joint distances
    shard: bool = False  # spread the analysis over every JAX device (gp.device_mesh()); same numbers
    progress: bool = True
    preset: str | None = None

    def run_seeds(self) -> tuple[int, ...]:
        """The training seeds of every architecture (``seeds``, or the training preset's seed)."""
        return tuple(self.seeds) if self.seeds is not None else (self.training.seed,)

    def networks(self) -> list[tuple[str, str, int]]:
        """``[(name, arch, seed)]``, architectures outer, seeds inner; ``name = f"{arch}-s{seed}"`` names
        the network's run folder (``<workdir>/<name>``) and its entries in the results."""
        return [(network_name(a, s), a, s) for a in self.archs for s in self.run_seeds()]

    def train_config(self, arch: str, seed: int | None = None) -> TrainConfig:
        """The training configuration of network ``arch`` trained with ``seed`` (default: the preset's)."""
        seed = self.training.seed if seed is None else seed
        return dataclasses.replace(self.training, arch=arch, seed=seed, progress=self.progress)

    def trajectory_probe_per_class(self) -> int:
        return self.probe_per_class if self.trajectory_per_class is None else self.trajectory_per_class

    def validate(self) -> None:
        from models.nets import parse_arch

        if not self.archs:
            raise ValueError("no architectures given")
        if len(set(self.archs)) != len(self.archs):
            raise ValueError(f"duplicate architectures in {self.archs}")
        for a in self.archs:
            parse_arch(a)
        if not self.metrics:
            raise ValueError("no metrics given")
        for m in self.metrics:
            parse_metric(m)
        if self.precision not in ("float64", "float32"):
            raise ValueError(f"precision must be float64 or float32, got {self.precision!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.probe_per_class < 1:
            raise ValueError("probe_per_class must be >= 1")
        if not 1 <= self.trajectory_probe_per_class() <= self.probe_per_class:
            raise ValueError(
                f"trajectory_per_class must lie in [1, probe_per_class = {self.probe_per_class}], "
                f"got {self.trajectory_per_class}"
            )
        seeds = self.run_seeds()
        if not seeds or len(set(seeds)) != len(seeds) or any(int(s) != s or s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        if not (self.interval_tol > 0 and math.isfinite(self.interval_tol)):
            raise ValueError(f"interval_tol must be positive and finite, got {self.interval_tol}")
        if self.max_checkpoints is not None and self.max_checkpoints < 2:
            raise ValueError("max_checkpoints must be >= 2 (first and last)")


# Experiment presets: the networks, the metrics, the probe set, and the name of the training preset in
# models.config.PRESETS (plus overrides of it, if any).
_QUICK_PAIR = dict(
    archs=("airbench_resnet_w0.5", "airbench_vgg_w0.5"),
    metrics=("angular_shape", "angular_shape_a0.5", "angular_cka"),
    train_preset="quick-resnet",  # the recipe of models.config's quick-resnet / quick-vgg (arch set per net)
    # n = 500 for the final geometry and over training (one set; issue 26 asked for 1000 and >= 500): on 2
    # CPU cores a projection takes 1.35 s at n = k = 500 and 8.6 s at 1000, a distance 0.086 s and 0.39 s
    # (quiet, float64, 2026-12-05), so n = 1000 would put the report's analysis above an hour.
    probe_per_class=50,
    max_checkpoints=6,  # of the 11 scheduled (log-spaced; init and final kept)
    precision="float64",
)

PRESETS: dict[str, dict[str, Any]] = {
    # The main job (the README's command): one ResNet- and one VGG-family network of the quick recipe
    # (5 epochs of full CIFAR-10, about 85-86% on the JPEG copy), seed 0, the full analysis.
    "cpu": dict(_QUICK_PAIR),
    # The committed report (docs/results/cpu/): both families, 3 seeds each, so that every difference
    # between them is set against the seed-to-seed spread.
    "cpu-report": dict(_QUICK_PAIR, seeds=(0, 1, 2)),
    # The earlier small-network configuration: 4 networks, 4 epochs on 5k images (41-47% test accuracy).
    "cpu-small": dict(
        archs=("resnet8", "resnet14", "resnet8_w2", "vgg11_w0.25"),
        metrics=("angular_shape", "angular_cka"),
        train_preset="paths-cpu",
        probe_per_class=30,
        precision="float64",
    ),
    # Paper scale (GPU): full CIFAR-10, the ResNet recipe of He et al. (2016) for every network.
    "paper": dict(
        archs=("resnet20", "resnet32", "resnet56", "resnet20_w2", "vgg11", "vgg16"),
        metrics=("angular_shape", "angular_cka", "angular_shape_a0.5"),
        train_preset="paper",
        train_overrides=dict(ckpt_every_epochs=4, eval_at_checkpoints=False),
        probe_per_class=100,
        trajectory_per_class=50,
        precision="float64",
    ),
    # Seconds: for tests and smoke runs.
    "tiny": dict(
        archs=("resnet8_w0.25",),
        metrics=("angular_shape", "angular_cka"),
        train_preset="tiny",
        probe_per_class=4,
        precision="float64",
    ),
}


def experiment_config(
    preset: str, *, training: dict[str, Any] | None = None, **options: Any
) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of ``preset``, with ``training`` overriding TrainConfig fields and
    ``options`` overriding experiment fields."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {sorted(PRESETS)}")
    p = dict(PRESETS[preset])
    train_fields = dict(
        TRAIN_PRESETS[p.pop("train_preset")], **p.pop("train_overrides", {}), **(training or {})
    )
    p.update(options)
    p.setdefault("preset", preset)
    return ExperimentConfig(training=TrainConfig.from_dict(train_fields), **p)
