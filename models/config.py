"""Training configuration: the :class:`TrainConfig` dataclass and the one table of presets.

Every training option is a field of :class:`TrainConfig`, with its help text in the field's
metadata; the command line (:mod:`models.cli`) and the paths experiment (:mod:`experiments.paths`)
are filled from these fields, not from copies of them. Which fields may change when a run is resumed
(:data:`RESUME_MUTABLE`) and how a saved run is compared with a config (:func:`config_diff`,
:func:`run_fingerprint`) also live here, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TrainConfig",
    "PRESETS",
    "RESUME_MUTABLE",
    "PATH_PENALTY_KINDS",
    "PATH_PENALTY_SPACES",
    "config_diff",
    "run_fingerprint",
]

# Config fields that may change between an interrupted run and its resumption: they change neither the
# parameters nor the checkpoints that the run produces.
RESUME_MUTABLE = frozenset(
    {
        "max_steps",
        "progress",
        "log_every",
        "eval_batch_size",
        "data_dir",
        "data_source",
        "resume",
        "overwrite",
    }
)


# The path-geometry regulariser of the training loss (geopath.path_penalty): its kinds, and the spaces it
# may be measured in (named as the paths experiment names its metrics; built in models.train_state).
PATH_PENALTY_KINDS = ("length", "excess", "turning")
PATH_PENALTY_SPACES = ("angular_cka", "angular_shape")

# Fields added after runs were first saved whose default reproduces those runs exactly: a saved config.json
# without one of them was made with its default, and at the default it is left out of the run fingerprint
# (so the representation caches of older runs stay valid).
_LATER_FIELDS = frozenset(
    {
        "path_penalty",
        "path_penalty_kind",
        "path_penalty_space",
        "devices",
        "flip",
        "crop_padding",
        "crop_pad_mode",
        "tta",
        "bias_lr_scale",
        "whiten_bias_epochs",
        "lookahead",
        "optimizer",
        "muon_lr",
        "muon_momentum",
    }
)

#: Learning-rate schedules (``TrainConfig.schedule``); see :func:`models.train_state.make_schedule`.
SCHEDULES = ("cosine", "step", "constant", "triangle", "linear")


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its CLI help (and optional ``choices`` / ``flags``) in the metadata."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata=dict(help=help, **metadata)
        )
    return dataclasses.field(default=default, metadata=dict(help=help, **metadata))


@dataclasses.dataclass
class TrainConfig:
    """All settings of a training run (saved as ``workdir/config.json``)."""

    # model
    arch: str = _opt("resnet20", "architecture, e.g. resnet20, resnet56, resnet20_w2, vgg11, vgg16_w0.5")
    num_classes: int = _opt(10, "number of classes")
    width: float | None = _opt(None, "width multiplier (alternative to an _w suffix in arch)")
    model_kwargs: dict[str, Any] = _opt(
        {}, "extra model options as KEY=VALUE, e.g. shortcut=B or head=flatten"
    )
    # data
    data_dir: str | None = _opt(
        None, "CIFAR-10 class-folder root or TFDS data dir (default: $GEOPATH_CIFAR10_DIR / shared copy)"
    )
    data_source: str = _opt("auto", "where CIFAR-10 comes from", choices=("auto", "folder", "tfds"))
    train_subset: int | None = _opt(
        None, "total training images (class-balanced: first N/10 per class); none = all"
    )
    test_subset: int | None = _opt(None, "total test images used for evaluation (class-balanced); none = all")
    augment: bool = _opt(True, "random crop (of the padded image) + horizontal flip")
    crop_padding: int = _opt(4, "pixels of padding for the random crop: shifts of up to this many pixels")
    crop_pad_mode: str = _opt(
        "zeros", "padding of the random crop: zeros (black) or reflect", choices=("zeros", "reflect")
    )
    flip: str = _opt(
        "random",
        "random: each image flipped with probability 1/2 at every step; alternating: a random half "
        "flipped in even epochs, the other half in odd ones (airbench's derandomised flip)",
        choices=("random", "alternating"),
    )
    # optimisation
    epochs: int = _opt(30, "training epochs")
    batch_size: int = _opt(128, "training batch size")
    optimizer: str = _opt(
        "sgd",
        "sgd: SGD with momentum for every parameter; muon: Muon (optax.contrib.scale_by_muon, weight-normalised "
        "as airbench94_muon) for the convolution kernels, SGD for the rest",
        choices=("sgd", "muon"),
    )
    lr: float = _opt(0.1, "peak learning rate (of the SGD parameters)")
    muon_lr: float = _opt(0.24, "optimizer=muon: peak learning rate of the Muon kernels")
    muon_momentum: float = _opt(0.6, "optimizer=muon: Nesterov momentum of the Muon kernels")
    momentum: float = _opt(0.9, "SGD momentum (0: none)")
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "weight decay")
    weight_decay_mode: str = _opt(
        "l2",
        "l2: coupled, added to the gradient (PyTorch SGD); decoupled: SGDW",
        choices=("l2", "decoupled"),
    )
    decay_all_params: bool = _opt(True, "also decay BatchNorm scales/biases and linear biases")
    schedule: str = _opt(
        "cosine",
        "learning-rate schedule; triangle: linear 0.2 lr -> lr at 23%% of training -> 0.07 lr (airbench); "
        "linear: lr -> 0 (airbench94_muon)",
        choices=SCHEDULES,
    )
    warmup_epochs: float = _opt(0.0, "linear warmup from 0, in epochs")
    milestones: tuple[float, ...] = _opt((0.5, 0.75), "step schedule: fractions of the total steps")
    lr_decay: float = _opt(0.1, "step schedule: factor at each milestone")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy targets")
    bias_lr_scale: float = _opt(
        1.0,
        "learning-rate multiplier of the BatchNorm biases; their weight decay is divided by it, so the "
        "decay per step is unchanged (airbench: 64)",
    )
    whiten_bias_epochs: int = _opt(
        3, "epochs the bias of a whitening layer trains before it is frozen (airbench networks only)"
    )
    lookahead: bool = _opt(
        False,
        "airbench's Lookahead: every 5 steps the weights and BatchNorm statistics move to an average "
        "with decay 0.95^5 (step / total)^3 kept since step 0; the final weights are that average",
    )
    seed: int = _opt(0, "seed of the initialisation, data order and augmentation")
    # path-geometry regulariser: loss = cross-entropy + path_penalty * geopath.path_penalty(space, layers
    # of the minibatch, kind=...), on the train-mode activations of every layer (docs/regularizer.md)
    path_penalty: float = _opt(0.0, "weight lambda of the path penalty in the loss (0: off, no extra work)")
    path_penalty_kind: str = _opt(
        "length",
        "length: path length; excess: length - d(input, logits); turning: total turning angle",
        choices=PATH_PENALTY_KINDS,
    )
    path_penalty_space: str = _opt(
        "angular_cka",
        "space the minibatch's path is measured in (angular_shape: alpha=1)",
        choices=PATH_PENALTY_SPACES,
    )
    # evaluation, logging, checkpoints
    eval_every_epochs: int = _opt(1, "epochs between test-set evaluations")
    eval_batch_size: int = _opt(500, "evaluation batch size")
    tta: int = _opt(
        0,
        "test-time augmentation of the evaluations, reported beside the plain accuracy: 0 none, "
        "1 mirror, 2 mirror + 1-pixel translations (airbench, 6 views)",
        choices=(0, 1, 2),
    )
    eval_at_checkpoints: bool = _opt(False, "also evaluate at the mid-epoch (log-spaced) checkpoints")
    log_every: int = _opt(50, "steps between host fetches of the running loss / accuracy")
    ckpt_log_spaced: bool = _opt(
        True, "checkpoints at steps 1, 2, 4, ... of epoch 1", flags=("--no-log-spaced-ckpts",)
    )
    ckpt_every_epochs: int = _opt(1, "epochs between scheduled checkpoints")
    keep_best: bool = _opt(True, "keep the checkpoint with the best test accuracy")
    max_steps: int | None = _opt(
        None, "stop after this global step as if interrupted (a checkpoint is saved)"
    )
    resume: bool = _opt(False, "continue the run in the workdir")
    overwrite: bool = _opt(False, "delete an existing run in the workdir first")
    progress: bool = _opt(True, "progress bars")
    # data-parallel training (issue 12; docs/scaling.md): the batch is split over a 1-D ("data",) mesh
    devices: int | None = _opt(
        None,
        "data-parallel training over this many of this process's devices (batch sharded, state "
        "replicated); none or 1: one device. batch_size must be a multiple of it",
    )

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        for f in dataclasses.fields(self):  # every option with a fixed set of values (its CLI choices)
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is not None and (value not in choices or isinstance(value, bool)):
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")
        if (
            isinstance(self.crop_padding, bool)
            or not isinstance(self.crop_padding, int)
            or not 0 <= self.crop_padding < 16
        ):
            raise ValueError(f"crop_padding must be an int in [0, 16), got {self.crop_padding!r}")
        if (
            isinstance(self.whiten_bias_epochs, bool)
            or not isinstance(self.whiten_bias_epochs, int)
            or self.whiten_bias_epochs < 0
        ):
            raise ValueError(
                f"whiten_bias_epochs must be a non-negative int, got {self.whiten_bias_epochs!r}"
            )
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "log_every",
            "ckpt_every_epochs",
            "eval_every_epochs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("train_subset", "test_subset", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if self.devices is not None:
            if isinstance(self.devices, bool) or not isinstance(self.devices, int) or self.devices < 1:
                raise ValueError(f"devices must be a positive int or None, got {self.devices!r}")
            if self.batch_size % self.devices:
                raise ValueError(
                    f"batch_size={self.batch_size} is not divisible by devices={self.devices}: "
                    "every device must get the same number of examples"
                )
            if self.devices == 1:
                self.devices = None  # one device: the single-device path, and the same saved config
        if self.train_subset is not None and self.train_subset < self.num_classes:
            raise ValueError(f"train_subset must be at least num_classes={self.num_classes}")
        if self.test_subset is not None and self.test_subset < self.num_classes:
            raise ValueError(f"test_subset must be at least num_classes={self.num_classes}")
        # Numbers that must be finite and in range (a NaN learning rate would train on NaN from step 1).
        for name, lo, lo_open, hi in (
            ("lr", 0.0, True, math.inf),
            ("weight_decay", 0.0, False, math.inf),
            ("momentum", 0.0, False, 1.0),
            ("label_smoothing", 0.0, False, 1.0),
            ("bias_lr_scale", 0.0, True, math.inf),
            ("warmup_epochs", 0.0, False, math.inf),
            ("lr_decay", 0.0, True, math.inf),
            ("muon_lr", 0.0, True, math.inf),
            ("muon_momentum", 0.0, False, 1.0),
        ):
            value = getattr(self, name)
            ok = (
                not isinstance(value, bool)
                and isinstance(value, (int, float))
                and math.isfinite(value)
                and (value > lo if lo_open else value >= lo)
                and value < hi
            )
            if not ok:
                interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g})"
                raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
            setattr(self, name, float(value))
        lam = self.path_penalty
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < float("inf"):
            raise ValueError(f"path_penalty must be a finite number >= 0, got {self.path_penalty!r}")
        self.path_penalty = float(self.path_penalty)
        if not all(0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing fractions in (0, 1), got {self.milestones}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {sorted(unknown)}")
        return cls(**dict(d))


def config_diff(saved: Mapping[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for every field outside :data:`RESUME_MUTABLE` that differs.

    ``saved`` is a run's ``config.json``; an empty result means ``config`` may resume (or reuse) that run.
    A field that a run saved before it existed (see ``_LATER_FIELDS``) compares as its default.
    """
    defaults = TrainConfig().to_dict()
    out = {}
    for k, v in config.to_dict().items():
        old = saved.get(k, defaults[k]) if k in _LATER_FIELDS else saved.get(k)
        if k not in RESUME_MUTABLE and old != v:
            out[k] = (old, v)
    return out


def run_fingerprint(saved: Mapping[str, Any]) -> str:
    """12-hex-digit hash of a run's ``config.json`` without the :data:`RESUME_MUTABLE` fields: two runs
    with the same fingerprint produce the same checkpoints."""
    defaults = TrainConfig().to_dict()
    stable = {
        k: v
        for k, v in sorted(saved.items())
        if k not in RESUME_MUTABLE and not (k in _LATER_FIELDS and v == defaults[k])
    }
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]


# The fast CPU recipe (issue 10): full 50k training set, SGD + Nesterov momentum 0.9, cosine schedule
# with a 1-epoch warmup, label smoothing 0.1, crop + flip, weight decay 5e-4, batch 128, 30 epochs.
# Expected (not measured yet): ResNet-20 about 91 % test accuracy. Time on 2 CPU cores (measured throughput
# of the training loop with models.xla_cpu's flags, 2026-12-04: 150-170 img/s for resnet20): about 2.5-3
# hours for 30 epochs, plus about 30 s of evaluation per epoch; the deeper, wider and VGG presets several
# times longer. A GPU trains each in minutes.
_CPU_RECIPE: dict[str, Any] = dict(
    arch="resnet20",
    train_subset=None,
    test_subset=None,
    epochs=30,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    weight_decay_mode="l2",
    schedule="cosine",
    warmup_epochs=1.0,
    label_smoothing=0.1,
    augment=True,
    log_every=50,
)

# The small-subset recipe of ``cpu-small`` and ``paths-cpu`` (ResNet-8, cosine from 0.1; they differ in
# subset sizes and epochs only).
_SMALL_CPU_RECIPE: dict[str, Any] = dict(
    arch="resnet8", batch_size=128, lr=0.1, schedule="cosine", warmup_epochs=0.5, weight_decay=5e-4
)

# airbench94's recipe (Jordan 2024, arXiv 2404.00498; models/airbench.py), converted to the mean loss: its
# SGD on the summed loss of 1024 images with lr 11.5 / (1024 (1 + 1 / (1 - 0.85))) is lr 1.5 on the mean
# loss; its weight decay 0.0153 per 1024 examples, coupled as PyTorch's, is weight_decay 0.0153 / 11.5 on
# that scale. BatchNorm biases: 64x the learning rate (same decay per step). Nesterov momentum 0.85, label
# smoothing 0.2, the triangle schedule, Lookahead, the whitening bias trained for 3 epochs, alternating
# flips and 2-pixel reflect-padded translations, 6-view TTA at the final evaluation. Checkpoints as usual
# (log-spaced in epoch 1, every epoch) for the over-training analysis; one evaluation, at the end.
_AIRBENCH_RECIPE: dict[str, Any] = dict(
    train_subset=None,
    test_subset=None,
    batch_size=1024,
    lr=1.5,
    momentum=0.85,
    nesterov=True,
    weight_decay=0.0153 / 11.5,
    weight_decay_mode="l2",
    decay_all_params=True,
    schedule="triangle",
    warmup_epochs=0.0,
    label_smoothing=0.2,
    bias_lr_scale=64.0,
    whiten_bias_epochs=3,
    lookahead=True,
    augment=True,
    flip="alternating",
    crop_padding=2,
    crop_pad_mode="reflect",
    tta=2,
    log_every=8,
)

# airbench94_muon's recipe (Jordan, airbench94_muon.py), converted in the same way: Muon (lr 0.24, Nesterov
# momentum 0.6, 3 Newton-Schulz steps, weight-normalised kernels) for the convolution kernels; SGD with
# Nesterov momentum 0.85 for the rest, on batches of 2000 and a linear decay to 0. Its head is scaled by
# 1/256 with unit-variance weights; ours by 1/9 with PyTorch's default init (the same function at the
# start), so its head learning rate 0.67 per summed loss becomes 0.67 (9/256)^2 2000 = 1.656 here, its
# biases' 0.053 * 2000 = 106 = 64 x 1.656, and its decay of 4e-3 per step weight_decay = 4e-3 / 1.656.
_AIRBENCH_MUON_RECIPE: dict[str, Any] = dict(
    _AIRBENCH_RECIPE,
    optimizer="muon",
    batch_size=2000,
    lr=1.656,
    muon_lr=0.24,
    muon_momentum=0.6,
    weight_decay=4e-3 / 1.656,
    schedule="linear",
    lookahead=False,
    log_every=5,
)

# The one table of training presets (``python -m models.train --preset NAME``; the paths experiment
# names one per experiment preset). Fields not given keep the TrainConfig defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(_CPU_RECIPE),
    # The same recipe on a deeper, a 2x-wider and a VGG network.
    "cpu-resnet56": dict(_CPU_RECIPE, arch="resnet56"),
    "cpu-resnet20_w2": dict(_CPU_RECIPE, arch="resnet20_w2"),
    "cpu-vgg11": dict(_CPU_RECIPE, arch="vgg11"),
    # A few minutes on a 2-core CPU; well above chance (see README / benchmarks).
    "cpu-small": dict(_SMALL_CPU_RECIPE, train_subset=10000, test_subset=2000, epochs=8, log_every=20),
    # Per-network training of the paths experiment's cpu preset (5k images, 4 epochs; arch set per network).
    "paths-cpu": dict(_SMALL_CPU_RECIPE, train_subset=5000, test_subset=1000, epochs=4),
    # He et al. (2016) CIFAR-10 ResNet-20 recipe: 64k iterations of batch 128 (~164 epochs),
    # lr 0.1 divided by 10 at 32k and 48k iterations, momentum 0.9, L2 weight decay 1e-4.
    "paper": dict(
        arch="resnet20",
        train_subset=None,
        test_subset=None,
        epochs=164,
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-4,
        weight_decay_mode="l2",
        schedule="step",
        milestones=(0.5, 0.75),
        lr_decay=0.1,
        warmup_epochs=0.0,
        eval_at_checkpoints=True,
        log_every=100,
    ),
    # Time-to-accuracy presets (issue 25): the airbench recipes on the two airbench-shaped families. Measured
    # 2026-12-05 on 2 cores without AVX-512 (benchmarks/results.md, "Time to accuracy"), mean of 3 seeds,
    # plain / TTA test accuracy on the JPEG copy: quick-vgg 85.7 / 86.7%, quick-resnet
    # 84.8 / 86.0%, 12.3-12.7 min a run (goal: 87 / 88% in 12 min; missed on this machine, which
    # is 1.9x slower per image than the AVX-512 one the goals were set on). fast-*: not measured (about 47
    # min of training here; airbench94_muon reaches 94.0% on the original data with it).
    "quick-vgg": dict(_AIRBENCH_MUON_RECIPE, arch="airbench_vgg_w0.5", epochs=5, eval_every_epochs=5),
    "quick-resnet": dict(_AIRBENCH_MUON_RECIPE, arch="airbench_resnet_w0.5", epochs=5, eval_every_epochs=5),
    "fast-vgg": dict(_AIRBENCH_MUON_RECIPE, arch="airbench_vgg", epochs=8, eval_every_epochs=8),
    "fast-resnet": dict(_AIRBENCH_MUON_RECIPE, arch="airbench_resnet", epochs=8, eval_every_epochs=8),
    # airbench94 itself (SGD + Lookahead, batch 1024, 10 epochs; 9.9 in the original) on the VGG family.
    "airbench94": dict(_AIRBENCH_RECIPE, arch="airbench_vgg", epochs=10, eval_every_epochs=10),
    # Seconds: tests and smoke runs.
    "tiny": dict(
        arch="resnet8_w0.25",
        train_subset=200,
        test_subset=100,
        epochs=1,
        batch_size=50,
        lr=0.05,
        schedule="cosine",
        warmup_epochs=0.0,
        weight_decay=5e-4,
    ),
}
