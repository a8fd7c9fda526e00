"""Train CIFAR-10 ResNets / VGGs with optax SGD and orbax checkpoints over training.

Python API::

    from models.train import TrainConfig, train_and_evaluate
    summary = train_and_evaluate(TrainConfig(arch="resnet20", epochs=30), "runs/resnet20")
    steps = models.list_checkpoints("runs/resnet20")
    model, meta = models.load_checkpoint("runs/resnet20", steps[3])

CLI::

    python -m models.train --arch resnet20 --epochs 30 --workdir runs/resnet20
    python -m models.train --preset cpu-small --workdir runs/cpu-small
    python -m models.train --preset paper --workdir runs/paper-resnet20   # GPU scale
    python -m models.train --workdir runs/resnet20 --resume                 # continue a run

Optimiser: SGD with momentum (PyTorch semantics: ``buf = m * buf + g``,
Nesterov optional) and weight decay, either ``"l2"`` (coupled: ``wd * w`` is
added to the gradient before momentum, exactly PyTorch's ``SGD(weight_decay=)``,
the default) or ``"decoupled"`` (SGDW: ``w -= lr * (momentum_update + wd * w)``,
the decay bypasses the momentum buffer). Learning-rate schedule: ``cosine``
(to zero), ``step`` (multiply by ``lr_decay`` at ``milestones``, given as
fractions of training) or ``constant``, each with an optional linear warmup
from 0 over ``warmup_epochs``. Cross-entropy loss, optional label smoothing.

Train step: one jitted XLA program per step (uint8 batch in; random crop +
flip and normalisation on device; forward, backward, optimiser update; state
buffers donated). The host only gathers the next batch's indices; loss and
accuracy are summed on device and fetched every ``log_every`` steps.

Determinism and resuming: the data order of epoch ``e`` is
``numpy.random.default_rng([seed, e]).permutation(N)`` (batches are
consecutive slices of it; the last partial batch is dropped) and the
augmentation key of step ``s`` is ``fold_in(key(seed), s)``, so every step's
input is a pure function of ``(seed, step)``. Checkpoints hold the full
training state (params, BatchNorm statistics, optimiser state, step, epoch,
augmentation key), hence ``resume=True`` continues an interrupted run to
bit-for-bit the same parameters as an uninterrupted run (same machine and
software). ``max_steps`` stops a run early as an interruption would (it saves
a checkpoint there) and is how the tests check this.

Checkpoint schedule: step 0, log-spaced steps ``1, 2, 4, 8, ...`` up to one
epoch, every ``ckpt_every_epochs`` epochs and the final step ("scheduled";
never deleted), plus the latest epoch end ("last", for resuming) and the best
test accuracy so far ("best"); unscheduled last/best checkpoints are replaced
as training goes on. See :mod:`models.checkpoints` for the on-disk layout.
Metrics go to ``workdir/metrics.jsonl`` (one JSON object per line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TrainConfig",
    "PRESETS",
    "train_and_evaluate",
    "load_checkpoint",
    "list_checkpoints",
    "checkpoint_schedule",
    "epoch_permutation",
    "make_optimizer",
    "make_schedule",
    "main",
]

# Config fields that may change between an interrupted run and its resumption.
_RESUME_MUTABLE = frozenset(
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


@dataclasses.dataclass
class TrainConfig:
    """All settings of a training run (saved as ``workdir/config.json``)."""

    # model
    arch: str = "resnet20"
    num_classes: int = 10
    width: float | None = None  # width multiplier (alternative to an _w suffix in arch)
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"shortcut": "B"}
    # data
    data_dir: str | None = None  # None: models.data.default_data_dir() (or TFDS)
    data_source: str = "auto"  # "auto" | "folder" | "tfds"
    train_subset: int | None = None  # total training images (class-balanced: first N/10 per class)
    test_subset: int | None = None  # total test images used for evaluation (class-balanced)
    augment: bool = True
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    weight_decay_mode: str = "l2"  # "l2" (coupled, PyTorch) | "decoupled" (SGDW)
    decay_all_params: bool = True  # False: no decay on BatchNorm scales/biases and linear biases
    schedule: str = "cosine"  # "cosine" | "step" | "constant"
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)  # "step" schedule: fractions of the total steps
    lr_decay: float = 0.1  # "step" schedule factor
    label_smoothing: float = 0.0
    seed: int = 0
    # evaluation, logging, checkpoints
    eval_every_epochs: int = 1
    eval_batch_size: int = 500
    eval_at_checkpoints: bool = False  # also evaluate at the mid-epoch (log-spaced) checkpoints
    log_every: int = 50  # steps between host fetches of the running loss / accuracy
    ckpt_log_spaced: bool = True  # steps 0, 1, 2, 4, ... up to one epoch
    ckpt_every_epochs: int = 1
    keep_best: bool = True
    max_steps: int | None = None  # stop after this global step as if interrupted (a checkpoint is saved)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.milestones = tuple(float(m) for m in self.milestones)
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}")
        if self.weight_decay_mode not in ("l2", "decoupled"):
            raise ValueError(f"weight_decay_mode must be 'l2' or 'decoupled', got {self.weight_decay_mode!r}")
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
        if self.train_subset is not None and self.train_subset < self.num_classes:
            raise ValueError(f"train_subset must be at least num_classes={self.num_classes}")
        if self.test_subset is not None and self.test_subset < self.num_classes:
            raise ValueError(f"test_subset must be at least num_classes={self.num_classes}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
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


PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on a 2-core CPU; well above chance (see README / benchmarks).
    "cpu-small": dict(
        arch="resnet8",
        train_subset=10000,
        test_subset=2000,
        epochs=8,
        batch_size=128,
        lr=0.1,
        schedule="cosine",
        warmup_epochs=0.5,
        weight_decay=5e-4,
        log_every=20,
    ),
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
}


# ----------------------------------------------------------------------------------------------------------
# Pure pieces (schedule, optimiser, data order, checkpoint schedule)
# ----------------------------------------------------------------------------------------------------------


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The example order of ``epoch``: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def checkpoint_schedule(cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> list[int]:
    """Scheduled checkpoint steps: 0, log-spaced early steps, every k epochs, and the last step."""
    steps = {0, total_steps}
    if cfg.ckpt_log_spaced:
        s = 1
        while s <= min(steps_per_epoch, total_steps):
            steps.add(s)
            s *= 2
    for epoch in range(cfg.ckpt_every_epochs, cfg.epochs + 1, cfg.ckpt_every_epochs):
        steps.add(epoch * steps_per_epoch)
    return sorted(s for s in steps if s <= total_steps)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    import optax

    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total - 1, 0))
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, max(total - warmup, 1))
    elif cfg.schedule == "step":
        bounds = {int(round(m * total)) - warmup: cfg.lr_decay for m in cfg.milestones}
        main = optax.piecewise_constant_schedule(cfg.lr, {b: f for b, f in bounds.items() if b > 0})
    else:
        main = optax.constant_schedule(cfg.lr)
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, cfg.lr, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    """optax SGD + momentum (+ Nesterov) + weight decay ("l2" coupled or "decoupled") + schedule."""
    import jax
    import optax

    schedule = make_schedule(cfg, steps_per_epoch)
    mask = None
    if not cfg.decay_all_params:
        mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731  (kernels only)
    if cfg.weight_decay_mode == "l2":
        parts = []
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask))
        parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
        tx = optax.chain(*parts)
    else:
        parts = []
        if cfg.momentum:
            parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask))
        parts.append(optax.scale_by_learning_rate(schedule))
        tx = optax.chain(*parts)
    return tx, schedule


# ----------------------------------------------------------------------------------------------------------
# Jitted steps
# ----------------------------------------------------------------------------------------------------------


# Compiled steps are reused by later runs in the same process with the same architecture and
# optimisation settings (e.g. several seeds, or resuming), keyed by the fields they depend on.
_STEP_FIELDS = ("num_classes", "label_smoothing", "augment")
_STEP_CACHE: dict[Any, Any] = {}


def _cached_steps(graphdef_train, graphdef_eval, cfg: TrainConfig, steps_per_epoch: int):
    opt_fields = (
        "epochs",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "weight_decay_mode",
        "decay_all_params",
        "schedule",
        "warmup_epochs",
        "milestones",
        "lr_decay",
    )
    from . import nets

    key = (
        graphdef_train,
        graphdef_eval,
        steps_per_epoch,
        nets.CONV_GRAD_BARRIER,
        tuple(getattr(cfg, f) for f in _STEP_FIELDS + opt_fields),
    )
    hit = _STEP_CACHE.get(key)
    if hit is None:
        tx, schedule = make_optimizer(cfg, steps_per_epoch)
        hit = (tx, schedule, *_make_steps(graphdef_train, graphdef_eval, tx, cfg))
        if len(_STEP_CACHE) >= 8:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
        _STEP_CACHE[key] = hit
    return hit


def _make_steps(graphdef_train, graphdef_eval, tx, cfg: TrainConfig):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from .data import augment
    from .data import normalize

    num_classes = cfg.num_classes
    smoothing = float(cfg.label_smoothing)
    do_augment = bool(cfg.augment)

    def loss_of(logits, labels):
        if smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
            return optax.softmax_cross_entropy(logits, targets)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def train_step(state, metrics, images, labels):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
        x = augment(key, images) if do_augment else images
        x = normalize(x)

        def loss_fn(params_and_stats):
            # Differentiating w.r.t. the BatchNorm statistics as well keeps NNX's
            # Variables on one trace level; their (zero) gradients are dropped.
            model = nnx.merge(graphdef_train, *params_and_stats)
            logits = model(x)
            loss = loss_of(logits, labels).mean()
            return loss, (logits, nnx.state(model, nnx.BatchStat))

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            (state["params"], state["batch_stats"])
        )
        updates, opt_state = tx.update(grads[0], state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        n = jnp.float32(labels.shape[0])
        correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        metrics = metrics + jnp.stack([loss * n, correct, n])
        new_state = dict(
            params=params, batch_stats=new_stats, opt=opt_state, step=state["step"] + 1, key=state["key"]
        )
        return new_state, metrics

    def eval_step(params, batch_stats, images, labels, valid):
        model = nnx.merge(graphdef_eval, params, batch_stats)
        logits = model(normalize(images))
        loss = loss_of(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return jnp.stack([jnp.sum(loss * valid), jnp.sum(correct * valid), jnp.sum(valid)])

    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step)


def _evaluate(eval_fn, state, images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict[str, float]:
    import jax

    n = len(labels)
    bs = min(batch_size, n)
    totals = []
    for start in range(0, n, bs):
        xb, yb = images[start : start + bs], labels[start : start + bs]
        valid = np.ones(bs, np.float32)
        if len(yb) < bs:
            pad = bs - len(yb)
            valid[len(yb) :] = 0
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
        totals.append(eval_fn(state["params"], state["batch_stats"], xb, yb, valid))
    loss_sum, correct, count = np.sum(jax.device_get(totals), axis=0)
    return {"test_loss": float(loss_sum / count), "test_acc": float(correct / count), "test_n": int(count)}


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


class _Log:
    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.time()

    def write(self, event: str, **fields: Any) -> None:
        rec = {"event": event, "time": round(time.time() - self.t0, 3), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")


def _load_data(cfg: TrainConfig):
    from .data import load_cifar10

    def per_class(total):
        return None if total is None else max(1, total // cfg.num_classes)

    train = load_cifar10(
        "train", data_dir=cfg.data_dir, source=cfg.data_source, limit_per_class=per_class(cfg.train_subset)
    )
    test = load_cifar10(
        "test", data_dir=cfg.data_dir, source=cfg.data_source, limit_per_class=per_class(cfg.test_subset)
    )
    return train, test


def _check_data(name: str, data: Any) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (
        np.asarray(data[0] if isinstance(data, tuple) else data.images),
        np.asarray(data[1] if isinstance(data, tuple) else data.labels),
    )
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{name} images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{name} labels must be [N] matching the images, got {labels.shape}")
    if len(labels) == 0:
        raise ValueError(f"{name} set is empty")
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kwargs = dict(cfg.model_kwargs)
    if cfg.width is not None:
        kwargs["width"] = float(cfg.width)
    return kwargs


def train_and_evaluate(
    config: TrainConfig | Mapping[str, Any],
    workdir: str | os.PathLike,
    *,
    train_data: Any = None,
    test_data: Any = None,
) -> dict[str, Any]:
    """Trains ``config.arch`` on CIFAR-10, evaluating every epoch and checkpointing over training.

    Args:
        config: A :class:`TrainConfig` (or a dict of its fields).
        workdir: Run directory (created). Holds ``config.json``, ``metrics.jsonl``,
            ``summary.json`` and ``checkpoints/``. An existing run is an error unless
            ``config.resume`` (continue it) or ``config.overwrite`` (start afresh).
        train_data, test_data: Optional in-memory data instead of loading CIFAR-10:
            a :class:`models.data.Dataset` or an ``(images uint8 [N,32,32,3], labels [N])``
            pair (used by tests and benchmarks). Subset options are ignored for them.

    Returns:
        Summary dict: ``final_step``, ``epochs_completed``, ``interrupted`` (stopped by
        ``max_steps``), ``final_test_acc``, ``best_test_acc``, ``best_step``,
        ``train_images_per_s`` (steady-state, excluding compilation and evaluation),
        ``wall_time_s``, ``checkpoints`` (steps) and ``workdir``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tqdm.auto import tqdm

    from . import checkpoints as ckpt
    from .nets import count_params
    from .nets import create_model
    from .nets import parse_arch

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    workdir = Path(workdir)
    t_start = time.time()

    parse_arch(cfg.arch)  # fail fast on an unknown architecture (ValueError naming the valid ones)

    # ---- existing run? ------------------------------------------------------------------------------------
    has_run = (workdir / "checkpoints").is_dir() and bool(ckpt.list_checkpoints(workdir))
    if has_run and cfg.overwrite:
        ckpt.remove_run(workdir)
        has_run = False
    if has_run and not cfg.resume:
        raise FileExistsError(
            f"{workdir} already holds a run; pass resume=True (--resume) or overwrite=True (--overwrite)"
        )
    if has_run:
        with open(workdir / "config.json") as f:
            saved = json.load(f)
        diff = {
            k: (saved.get(k), v)
            for k, v in cfg.to_dict().items()
            if k not in _RESUME_MUTABLE and saved.get(k) != v
        }
        if diff:
            raise ValueError(f"cannot resume {workdir}: config differs from the saved run in {diff}")

    # ---- data ---------------------------------------------------------------------------------------------
    if train_data is None or test_data is None:
        loaded_train, loaded_test = _load_data(cfg)
        train_data = loaded_train if train_data is None else train_data
        test_data = loaded_test if test_data is None else test_data
    train_x, train_y = _check_data("train", train_data)
    test_x, test_y = _check_data("test", test_data)
    n_train = len(train_y)
    if n_train < cfg.batch_size:
        raise ValueError(f"training set ({n_train}) is smaller than batch_size={cfg.batch_size}")
    steps_per_epoch = n_train // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    scheduled = set(checkpoint_schedule(cfg, steps_per_epoch, total_steps))

    if not has_run and (workdir / "metrics.jsonl").exists():
        ckpt.remove_run(workdir)  # leftovers of a run of ours that never saved a checkpoint
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f, indent=1)
    log = _Log(workdir / "metrics.jsonl")

    # ---- model, optimiser, state --------------------------------------------------------------------------
    model_kwargs = _model_kwargs(cfg)
    model = create_model(cfg.arch, num_classes=cfg.num_classes, rngs=nnx.Rngs(cfg.seed), **model_kwargs)
    n_params = count_params(model)
    graphdef_eval, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    graphdef_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    tx, schedule, train_step, eval_step = _cached_steps(graphdef_train, graphdef_eval, cfg, steps_per_epoch)
    aug_key = jax.random.key_data(jax.random.fold_in(jax.random.key(cfg.seed), 0x5EED))
    state = dict(
        params=params,
        batch_stats=batch_stats,
        opt=tx.init(params),
        step=jnp.asarray(0, jnp.int32),
        key=aug_key,
    )

    store = ckpt.CheckpointStore(workdir)
    static_meta = dict(
        arch=cfg.arch,
        num_classes=cfg.num_classes,
        model_kwargs=model_kwargs,
        seed=cfg.seed,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        n_train=n_train,
        config=cfg.to_dict(),
    )

    def model_part(st):
        return {"params": st["params"], "batch_stats": st["batch_stats"]}

    def opt_part(st):
        return {"opt": st["opt"], "step": st["step"], "key": st["key"]}

    start_step = 0
    best_acc = None
    best_step = None
    resumed_eval: dict[str, Any] = {}
    if has_run:
        # Newest checkpoint that verifies; damaged newer ones are moved aside and reported on stderr.
        resume_step, restored, _ = store.restore_latest_valid(
            model_template=model_part(state), opt_template=opt_part(state)
        )
        state = dict(
            params=restored["model"]["params"],
            batch_stats=restored["model"]["batch_stats"],
            opt=restored["opt"]["opt"],
            step=restored["opt"]["step"],
            key=restored["opt"]["key"],
        )
        state = jax.tree.map(jnp.asarray, state)
        start_step = int(resume_step)
        if int(state["step"]) != start_step:
            raise RuntimeError(f"checkpoint {resume_step} holds step {int(state['step'])}")
        best_step = store.index.get("best")
        best_acc = store.index.get("best_test_acc")
        last_meta = restored["meta"]
        resumed_eval = {k: last_meta[k] for k in ("test_loss", "test_acc", "test_n") if k in last_meta}
        log.write("resume", step=start_step)
    else:
        log.write(
            "start",
            arch=cfg.arch,
            params=n_params,
            n_train=n_train,
            n_test=len(test_y),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            backend=jax.default_backend(),
        )

    def save(step: int, tags: list[str], metrics: Mapping[str, Any]) -> None:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        meta = dict(
            static_meta,
            epoch=epoch,
            step_in_epoch=in_epoch,
            lr=float(schedule(step)),
            data_order=dict(
                rule="numpy.random.default_rng([seed, epoch]).permutation(n_train)",
                seed=cfg.seed,
                epoch=epoch,
                next_example=in_epoch * cfg.batch_size,
            ),
            **metrics,
        )
        store.save(step, model_state=model_part(state), opt_state=opt_part(state), meta=meta, tags=tags)
        log.write("checkpoint", step=step, epoch=epoch, tags=tags)

    if start_step == 0 and 0 in scheduled and not has_run:
        extra = (
            _evaluate(eval_step, state, test_x, test_y, cfg.eval_batch_size)
            if cfg.eval_at_checkpoints
            else {}
        )
        save(0, ["scheduled"], extra)

    # ---- loop ---------------------------------------------------------------------------------------------
    metrics = jnp.zeros(3, jnp.float32)
    step = start_step
    last_eval: dict[str, Any] = dict(resumed_eval)
    interrupted = False
    timed_images = 0
    timed_seconds = 0.0
    stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    start_epoch = start_step // steps_per_epoch
    window_first = True  # the first log window of this process includes compilation: not timed
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= stop_at:
                break
            order = epoch_permutation(cfg.seed, epoch, n_train)
            first = step - epoch * steps_per_epoch
            epoch_sums = np.zeros(3)
            bar = tqdm(
                total=steps_per_epoch,
                initial=first,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step",
                disable=not cfg.progress,
                leave=False,
                dynamic_ncols=True,
            )
            window_start = time.perf_counter()
            window_steps = 0
            for i in range(first, steps_per_epoch):
                idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                state, metrics = train_step(state, metrics, train_x[idx], train_y[idx])
                step += 1
                window_steps += 1
                end_of_epoch = i == steps_per_epoch - 1
                must_save = step in scheduled and not end_of_epoch
                stopping = step >= stop_at
                if window_steps >= cfg.log_every or end_of_epoch or must_save or stopping:
                    loss_sum, correct, count = (float(v) for v in jax.device_get(metrics))
                    elapsed = time.perf_counter() - window_start
                    if not window_first:
                        timed_images += int(count)
                        timed_seconds += elapsed
                    epoch_sums += (loss_sum, correct, count)
                    log.write(
                        "train",
                        step=step,
                        epoch=epoch,
                        loss=loss_sum / count,
                        acc=correct / count,
                        lr=float(schedule(step - 1)),
                        images_per_s=count / max(elapsed, 1e-9),
                    )
                    bar.set_postfix(
                        loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}", refresh=False
                    )
                    metrics = jnp.zeros(3, jnp.float32)
                    window_start = time.perf_counter()
                    window_steps = 0
                    window_first = False
                bar.update(1)
                if must_save and not stopping:
                    extra = {}
                    if cfg.eval_at_checkpoints:
                        extra = _evaluate(eval_step, state, test_x, test_y, cfg.eval_batch_size)
                        log.write("eval", step=step, epoch=epoch, **extra)
                    save(step, ["scheduled"], extra)
                    window_start = time.perf_counter()
                if stopping and not end_of_epoch:
                    interrupted = step < total_steps
                    tags = (
                        ["last"]
                        + (["scheduled"] if step in scheduled else [])
                        + (["interrupted"] if interrupted else [])
                    )
                    save(step, tags, {})
                    break
            bar.close()
            if step < (epoch + 1) * steps_per_epoch:
                break  # interrupted mid-epoch
            # ---- end of epoch: evaluate, checkpoint ----------------------------------------------------------
            ep_metrics = {}
            if epoch_sums[2]:
                ep_metrics = dict(
                    train_loss=epoch_sums[0] / epoch_sums[2], train_acc=epoch_sums[1] / epoch_sums[2]
                )
            done = epoch + 1
            if done % cfg.eval_every_epochs == 0 or done == cfg.epochs or step >= stop_at:
                last_eval = _evaluate(eval_step, state, test_x, test_y, cfg.eval_batch_size)
                ep_metrics.update(last_eval)
                log.write("eval", step=step, epoch=done, **ep_metrics)
                if cfg.progress:
                    tqdm.write(
                        f"epoch {done}/{cfg.epochs} step {step}: train loss {ep_metrics.get('train_loss', float('nan')):.4f} "
                        f"acc {ep_metrics.get('train_acc', float('nan')):.4f} | test loss {last_eval['test_loss']:.4f} "
                        f"acc {last_eval['test_acc']:.4f}"
                    )
            tags = ["last"]
            if step in scheduled:
                tags.append("scheduled")
            is_best = (
                cfg.keep_best
                and "test_acc" in ep_metrics
                and (best_acc is None or ep_metrics["test_acc"] > best_acc)
            )
            if is_best:
                tags.append("best")
            if step >= stop_at and step < total_steps:
                interrupted = True
                tags.append("interrupted")
            save(step, tags, dict(ep_metrics, epoch_completed=done))  # "best" in tags updates the index
            if is_best:
                best_acc, best_step = ep_metrics["test_acc"], step
            store.prune(keep={step} | ({best_step} if best_step is not None else set()))
            window_start = time.perf_counter()
    finally:
        store.close()

    summary = dict(
        workdir=str(workdir),
        arch=cfg.arch,
        params=n_params,
        final_step=step,
        total_steps=total_steps,
        epochs_completed=step // steps_per_epoch,
        interrupted=interrupted or step < total_steps,
        final_test_acc=last_eval.get("test_acc"),
        final_test_loss=last_eval.get("test_loss"),
        best_test_acc=best_acc,
        best_step=best_step,
        train_images_per_s=(timed_images / timed_seconds) if timed_seconds > 0 else None,
        wall_time_s=time.time() - t_start,
        checkpoints=ckpt.list_checkpoints(workdir),
    )
    log.write("end", **{k: v for k, v in summary.items() if k not in ("checkpoints", "workdir")})
    with open(workdir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def load_checkpoint(workdir: str | os.PathLike, step: int | str | None = None):
    """``(model, meta)`` of a checkpoint; see :func:`models.checkpoints.load_checkpoint`."""
    from .checkpoints import load_checkpoint as _load

    return _load(workdir, step)


def list_checkpoints(workdir: str | os.PathLike, *, scheduled_only: bool = False) -> list[int]:
    """Checkpoint steps of a run; see :func:`models.checkpoints.list_checkpoints`."""
    from .checkpoints import list_checkpoints as _list

    return _list(workdir, scheduled_only=scheduled_only)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _str2bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def _build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description="Train a CIFAR-10 ResNet/VGG (Flax NNX + optax) with orbax checkpoints over training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="run directory (config, metrics.jsonl, checkpoints/)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="starting configuration; explicit flags override it. cpu-small: resnet8 on 10k images, "
        "a few minutes on 2 CPU cores; paper: ResNet-20 recipe of He et al. (GPU scale)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        default=None,
        help=f"architecture name (default {defaults.arch}); e.g. resnet20, resnet32_w2, vgg11, vgg16_w0.5",
    )
    g.add_argument("--width", type=float, default=None, help="width multiplier (alternative to an _w suffix)")
    g.add_argument(
        "--shortcut",
        choices=("A", "B"),
        default=None,
        help="ResNet shortcut: A zero-pad (paper), B 1x1 projection",
    )
    g.add_argument(
        "--vgg-head", choices=("avg", "flatten"), default=None, help="VGG head before the classifier"
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-dir",
        default=None,
        help="CIFAR-10 class-folder root or TFDS data dir (default: $GEOPATH_CIFAR10_DIR / shared copy)",
    )
    g.add_argument("--data-source", choices=("auto", "folder", "tfds"), default=None)
    g.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="number of training images (class-balanced); default all",
    )
    g.add_argument(
        "--test-subset", type=int, default=None, help="number of test images for evaluation; default all"
    )
    g.add_argument("--no-augment", action="store_true", help="disable random crop + flip")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}")
    g.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size}")
    g.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {defaults.lr})")
    g.add_argument("--momentum", type=float, default=None, help=f"default {defaults.momentum}")
    g.add_argument(
        "--nesterov", type=_str2bool, default=None, help=f"true/false (default {defaults.nesterov})"
    )
    g.add_argument("--weight-decay", type=float, default=None, help=f"default {defaults.weight_decay}")
    g.add_argument(
        "--weight-decay-mode",
        choices=("l2", "decoupled"),
        default=None,
        help="l2: coupled, added to the gradient (PyTorch SGD); decoupled: SGDW (default l2)",
    )
    g.add_argument(
        "--decay-all-params",
        type=_str2bool,
        default=None,
        help="also decay BatchNorm and bias parameters (default true)",
    )
    g.add_argument(
        "--schedule",
        choices=("cosine", "step", "constant"),
        default=None,
        help=f"default {defaults.schedule}",
    )
    g.add_argument(
        "--warmup-epochs", type=float, default=None, help="linear warmup length in epochs (default 0)"
    )
    g.add_argument(
        "--milestones",
        type=float,
        nargs="+",
        default=None,
        help="step schedule: fractions of training (default 0.5 0.75)",
    )
    g.add_argument("--lr-decay", type=float, default=None, help="step schedule factor (default 0.1)")
    g.add_argument("--label-smoothing", type=float, default=None)
    g.add_argument("--seed", type=int, default=None)
    g = p.add_argument_group("evaluation, logging, checkpoints")
    g.add_argument("--eval-every-epochs", type=int, default=None)
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument(
        "--eval-at-checkpoints", type=_str2bool, default=None, help="evaluate at mid-epoch checkpoints too"
    )
    g.add_argument("--log-every", type=int, default=None, help="steps between loss/accuracy fetches")
    g.add_argument("--ckpt-every-epochs", type=int, default=None)
    g.add_argument(
        "--no-log-spaced-ckpts", action="store_true", help="no checkpoints at steps 1, 2, 4, ... of epoch 1"
    )
    g.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (simulates an interruption)"
    )
    g.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run in --workdir first")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--xla-cpu-flags",
        default="auto",
        help="'auto' (tuned flags for CPU training), 'none', or a flag string "
        "appended to XLA_FLAGS; only affects the CPU backend",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed CLI flags: defaults < preset (or the saved run with --resume) < explicit flags."""
    fields: dict[str, Any] = {}
    saved_path = Path(args.workdir) / "config.json"
    if args.resume and saved_path.exists():
        with open(saved_path) as f:
            fields.update(json.load(f))
    elif args.preset:
        fields.update(PRESETS[args.preset])
    explicit = {
        "arch": args.arch,
        "width": args.width,
        "data_dir": args.data_dir,
        "data_source": args.data_source,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "nesterov": args.nesterov,
        "weight_decay": args.weight_decay,
        "weight_decay_mode": args.weight_decay_mode,
        "decay_all_params": args.decay_all_params,
        "schedule": args.schedule,
        "warmup_epochs": args.warmup_epochs,
        "milestones": tuple(args.milestones) if args.milestones else None,
        "lr_decay": args.lr_decay,
        "label_smoothing": args.label_smoothing,
        "seed": args.seed,
        "eval_every_epochs": args.eval_every_epochs,
        "eval_batch_size": args.eval_batch_size,
        "eval_at_checkpoints": args.eval_at_checkpoints,
        "log_every": args.log_every,
        "ckpt_every_epochs": args.ckpt_every_epochs,
    }
    fields.update({k: v for k, v in explicit.items() if v is not None})
    model_kwargs = dict(fields.get("model_kwargs", {}))
    if args.shortcut:
        model_kwargs["shortcut"] = args.shortcut
    if args.vgg_head:
        model_kwargs["head"] = args.vgg_head
    fields["model_kwargs"] = model_kwargs
    if args.no_augment:
        fields["augment"] = False
    if args.no_log_spaced_ckpts:
        fields["ckpt_log_spaced"] = False
    fields["max_steps"] = args.max_steps
    fields["resume"] = bool(args.resume)
    fields["overwrite"] = bool(args.overwrite)
    fields["progress"] = not args.no_progress
    return TrainConfig.from_dict(fields)


# XLA:CPU flags for training, applied by the CLI only (``--xla-cpu-flags auto``). None of the
# jaxlib 0.10 CPU flags tried (oneDNN, XNNPACK/YNN fusion types, vector width, opt presets)
# gave a measurable gain on the dev machine, so this is empty; the big CPU win is the
# weight-gradient fusion barrier in models/nets.py. See benchmarks/train_throughput.py.
CPU_XLA_FLAGS: str = ""


def _apply_xla_flags(spec: str) -> None:
    """Adds XLA:CPU flags to ``XLA_FLAGS`` (effective only before JAX initialises its backends)."""
    flags = CPU_XLA_FLAGS if spec == "auto" else ("" if spec == "none" else spec)
    if flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    _apply_xla_flags(args.xla_cpu_flags)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        summary = train_and_evaluate(cfg, args.workdir)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    acc = summary["final_test_acc"]
    print(
        f"done: {summary['arch']} step {summary['final_step']}/{summary['total_steps']} "
        f"({summary['epochs_completed']} epochs) test acc "
        f"{'n/a' if acc is None else f'{acc:.4f}'} best {summary['best_test_acc']} "
        f"| {summary['train_images_per_s'] or float('nan'):.0f} img/s | {summary['wall_time_s']:.0f} s "
        f"| checkpoints: {len(summary['checkpoints'])} in {summary['workdir']}/checkpoints"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
