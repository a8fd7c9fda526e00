"""The training loop: ``train_and_evaluate(config, workdir)`` trains a CIFAR-10 ResNet / VGG with optax
SGD and saves orbax checkpoints over training.

Python API::

    from models.train import TrainConfig, train_and_evaluate
    summary = train_and_evaluate(TrainConfig(arch="resnet20", epochs=30), "runs/resnet20")
    steps = models.list_checkpoints("runs/resnet20")
    model, meta = models.load_checkpoint("runs/resnet20", steps[3])

CLI (:mod:`models.cli`; every :class:`~models.config.TrainConfig` field is a flag)::

    python -m models.train --arch resnet20 --epochs 30 --workdir runs/resnet20
    python -m models.train --preset cpu --workdir runs/resnet20               # full CIFAR-10, 30 epochs
    python -m models.train --preset paper --workdir runs/paper-resnet20       # GPU scale
    python -m models.train --workdir runs/resnet20 --resume                   # continue a run
    python -m models.train --preset cpu --devices 8 --workdir runs/resnet20   # data-parallel, 8 devices

Where things are: options and presets in :mod:`models.config`; the state, optimiser and the jitted
steps in :mod:`models.train_state`; this module holds the loop (data order, checkpoint schedule,
evaluation, logging, resuming).

Speed on a CPU: the command line adds :data:`models.xla_cpu.CPU_TRAINING_FLAGS` to ``XLA_FLAGS`` before
JAX starts (2.1x for resnet20 on 2 cores); from Python, call :func:`models.xla_cpu.use_cpu_training_flags`
before the first JAX computation.

Train step: one jitted XLA program per step (uint8 batch in; random crop + flip and normalisation on
device; forward, backward, optimiser update; state buffers donated). The host only gathers the next
batch's indices; loss and accuracy are summed on device and fetched every ``log_every`` steps.

Determinism and resuming: the data order of epoch ``e`` is
``numpy.random.default_rng([seed, e]).permutation(N)`` (batches are consecutive slices of it; the last
partial batch is dropped) and the augmentation key of step ``s`` is ``fold_in(key(seed), s)``, so every
step's input is a pure function of ``(seed, step)``. Checkpoints hold the full training state (params,
BatchNorm statistics, optimiser state, step, augmentation key), hence ``resume=True`` continues an
interrupted run to bit-for-bit the same parameters as an uninterrupted run (same machine, software and
``XLA_FLAGS``: the start event of ``metrics.jsonl`` records the flags, and resuming with others warns).
``max_steps`` stops a run early as an interruption would (it saves a checkpoint there) and is how the
tests check this.

Data-parallel training (``devices=D``, ``--devices D``; see :func:`data_parallel`): the same jitted steps
run on a 1-D ``("data",)`` mesh of D devices, each batch split along its first axis and the state
replicated; the compiler inserts the all-reduces of the gradient and of the BatchNorm batch statistics,
which are computed over the whole batch, as on one device. The parameters equal the single-device run's
up to float round-off (reductions are summed in another order), so they are not bit-for-bit equal across
device counts, and a run resumes only on the device count it was started with (``devices`` is part of the
run's configuration; checkpoints are gathered to the host and hold no device layout). ``devices=None``
(or 1) is the single-device path, unchanged.

One process per run folder: :func:`train_and_evaluate` holds ``workdir``'s OS lock (:func:`run_lock`) while
it trains, so a second trainer, resume or overwrite on the same folder stops at once with
:class:`RunLockedError` naming the holder; the lock dies with its process, so a killed run resumes normally.
Divergence: a non-finite loss, gradient or weight stops the run at the next host sync (a log window) with
:class:`TrainingDiverged`, before any checkpoint of it is written; ``--resume`` with a lower ``--lr``
continues from the newest (finite) checkpoint. The command line exits with 2 (bad options), 3
(diverged) or 4 (folder in use).

Checkpoint schedule: step 0, log-spaced steps ``1, 2, 4, 8, ...`` up to one epoch, every
``ckpt_every_epochs`` epochs and the final step ("scheduled"; never deleted), plus the latest epoch end
("last", for resuming) and the best test accuracy so far ("best"); unscheduled last/best checkpoints are
replaced as training goes on. See :mod:`models.checkpoints` for the on-disk layout. Metrics go to
``workdir/metrics.jsonl`` (one JSON object per line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import NamedTuple

import numpy as np

from .config import PRESETS
from .config import TrainConfig
from .config import config_diff
from .fileio import read_json
from .fileio import write_json_atomic

__all__ = [
    "TrainConfig",
    "PRESETS",
    "train_and_evaluate",
    "TrainingDiverged",
    "RunLockedError",
    "run_lock",
    "checkpoint_schedule",
    "epoch_permutation",
    "DataParallel",
    "data_parallel",
]


# ----------------------------------------------------------------------------------------------------------
# Pure pieces (data order, checkpoint schedule)
# ----------------------------------------------------------------------------------------------------------


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The example order of ``epoch``: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


# Evaluation results kept in checkpoint metadata and restored on resume.
_EVAL_KEYS = ("test_loss", "test_acc", "test_n", "test_loss_tta", "test_acc_tta", "tta_level")

WHITENING_IMAGES = 5000


def whitening_sample(seed: int, n: int) -> np.ndarray:
    """Indices of the training images a whitening layer is fitted to: ``min(5000, n)`` of ``n``, drawn
    without replacement from ``(seed, "whitening")`` (the stored data is sorted by class)."""
    rng = np.random.default_rng([int(seed), 0x3417E])
    return np.sort(rng.choice(int(n), size=min(WHITENING_IMAGES, int(n)), replace=False))


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


class DataParallel(NamedTuple):
    """Where a data-parallel run puts its arrays (:func:`data_parallel`)."""

    mesh: Any  # jax.sharding.Mesh, 1-D, axis "data" of D devices
    batch: Any  # NamedSharding(mesh, P("data")): the leading (batch) axis split over the D devices
    replicated: Any  # NamedSharding(mesh, P()): the TrainState and the metric sums, whole on every device


def data_parallel(devices: int | None) -> DataParallel | None:
    """The mesh and shardings of data-parallel training over the first ``devices`` devices.

    Args:
        devices: Number of devices D (:attr:`TrainConfig.devices`); None or 1: one device.

    Returns:
        A :class:`DataParallel` for D > 1; None for the single-device path.

    Raises:
        ValueError: D is not a positive int, exceeds ``jax.device_count()`` (both numbers named), or this
            is one process of several (``jax.distributed``): the loop feeds every batch from this
            process's memory, so it trains on one host only.
    """
    import jax
    from jax.sharding import AxisType
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"devices must be a positive int or None, got {devices!r}")
    if devices is None or devices == 1:
        return None
    if devices > jax.device_count():
        raise ValueError(
            f"devices={devices} exceeds jax.device_count()={jax.device_count()} "
            f"({jax.default_backend()}); on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "(set before JAX starts) gives N devices"
        )
    if jax.process_count() > 1:
        raise ValueError(
            f"data-parallel training runs in one process; this is process {jax.process_index()} "
            f"of {jax.process_count()}"
        )
    # Auto axes: the compiler propagates the shardings and inserts the collectives (gradient all-reduce).
    mesh = jax.make_mesh((devices,), ("data",), (AxisType.Auto,), devices=jax.devices()[:devices])
    return DataParallel(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))


def _replicate(dp: DataParallel | None, tree: Any) -> Any:
    """``tree`` placed whole on every device of the mesh (unchanged on one device)."""
    import jax

    return tree if dp is None else jax.device_put(tree, dp.replicated)


def _shard_batch(dp: DataParallel | None, *arrays: np.ndarray) -> tuple[Any, ...]:
    """Host batches split over the mesh along their first axis (NumPy, unchanged, on one device)."""
    import jax

    return arrays if dp is None else tuple(jax.device_put(a, dp.batch) for a in arrays)


# The optax transformation is a static argument of the jitted steps: one object per optimiser setting
# keeps later runs of this process (other seeds, resuming) on the already compiled steps.
_OPT_FIELDS = (
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
    "bias_lr_scale",
    "whiten_bias_epochs",
    "optimizer",
    "muon_lr",
    "muon_momentum",
)
_OPTIMIZERS: dict[Any, Any] = {}


def _uses_param_groups(cfg: TrainConfig) -> bool:
    """Whether the optimiser splits the parameters into groups (``make_optimizer(groups=True)``)."""
    from .nets import parse_arch

    return cfg.bias_lr_scale != 1 or cfg.optimizer != "sgd" or parse_arch(cfg.arch)[0].startswith("airbench")


def _optimizer(cfg: TrainConfig, steps_per_epoch: int):
    from .train_state import make_optimizer

    groups = _uses_param_groups(cfg)
    key = (steps_per_epoch, groups, tuple(getattr(cfg, f) for f in _OPT_FIELDS))
    if key not in _OPTIMIZERS:
        if len(_OPTIMIZERS) >= 8:
            _OPTIMIZERS.pop(next(iter(_OPTIMIZERS)))
        _OPTIMIZERS[key] = make_optimizer(cfg, steps_per_epoch, groups=groups)
    return _OPTIMIZERS[key]


# ----------------------------------------------------------------------------------------------------------
# Set-up: existing run, data, model
# ----------------------------------------------------------------------------------------------------------


class _Log:
    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.time()

    def write(self, event: str, **fields: Any) -> None:
        rec = {"event": event, "time": round(time.time() - self.t0, 3), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")


def _existing_run(cfg: TrainConfig, workdir: Path) -> bool:
    """Whether to resume a run in ``workdir``; removes it first for ``overwrite``; refuses a mismatch."""
    from . import checkpoints as ckpt

    has_run = (workdir / "checkpoints").is_dir() and bool(ckpt.list_checkpoints(workdir))
    if has_run and cfg.overwrite:
        ckpt.remove_run(workdir)
        has_run = False
    if has_run and not cfg.resume:
        raise FileExistsError(
            f"{workdir} already holds a run; pass resume=True (--resume) or overwrite=True (--overwrite)"
        )
    if has_run:
        saved = read_json(
            workdir / "config.json", what="run config", fix="restore it or rerun with --overwrite"
        )
        diff = config_diff(saved, cfg)
        if "devices" in diff:
            before, now = (d or 1 for d in diff["devices"])
            raise ValueError(
                f"cannot resume {workdir} on {now} device(s): it was trained on {before}. Data-parallel "
                "results differ between device counts by float round-off, so the resumed run would not "
                f"continue the same trajectory; resume with devices={before} (--devices {before}), or "
                "start afresh with --overwrite"
            )
        if diff and set(diff) <= DIVERGED_RESUME_MUTABLE and _last_event(workdir) == "diverged":
            warnings.warn(
                f"resuming the diverged run in {workdir} from its last finite checkpoint with {diff} "
                "(saved, new): from here on it is a different run",
                stacklevel=3,
            )
        elif diff:
            raise ValueError(f"cannot resume {workdir}: config differs from the saved run in {diff}")
    return has_run


def _last_event(workdir: Path) -> str | None:
    """The ``event`` of the last readable line of ``workdir/metrics.jsonl`` (None if there is none)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    last = None
    with open(path) as f:
        for line in f:
            try:
                last = json.loads(line).get("event", last)
            except (json.JSONDecodeError, AttributeError):
                continue
    return last


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


class _Setup(NamedTuple):
    """What the loop needs besides the mutable progress (built once per call)."""

    cfg: TrainConfig
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    steps_per_epoch: int
    total_steps: int
    stop_at: int
    scheduled: frozenset[int]
    graphdef_train: Any
    graphdef_eval: Any
    tx: Any
    schedule: Any
    spec: Any  # train_state.LossSpec
    store: Any  # checkpoints.CheckpointStore
    log: _Log
    static_meta: dict[str, Any]
    dp: DataParallel | None  # data-parallel mesh and shardings; None on one device


@dataclasses.dataclass
class _Progress:
    """The mutable part of a run: state, position, best / last evaluation, throughput."""

    state: Any  # train_state.TrainState
    step: int
    best_acc: float | None = None
    best_step: int | None = None
    last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    timed_images: int = 0
    timed_seconds: float = 0.0
    last_finite_loss: tuple[float, int] | None = None  # (mean loss of the last finite log window, its step)
    window_first: bool = True  # the first log window of this process includes compilation: not timed


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and evaluation of the current state
# ----------------------------------------------------------------------------------------------------------


def _model_part(state) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _opt_part(state) -> dict[str, Any]:
    part = {"opt": state.opt_state, "step": state.step, "key": state.key}
    if state.slow is not None:
        part["slow"] = state.slow
    return part


def _save(s: _Setup, state, step: int, tags: list[str], metrics: Mapping[str, Any]) -> None:
    epoch, in_epoch = divmod(step, s.steps_per_epoch)
    meta = dict(
        s.static_meta,
        epoch=epoch,
        step_in_epoch=in_epoch,
        lr=float(s.schedule(step)),
        data_order=dict(
            rule="numpy.random.default_rng([seed, epoch]).permutation(n_train)",
            seed=s.cfg.seed,
            epoch=epoch,
            next_example=in_epoch * s.cfg.batch_size,
        ),
        **metrics,
    )
    s.store.save(step, model_state=_model_part(state), opt_state=_opt_part(state), meta=meta, tags=tags)
    s.log.write("checkpoint", step=step, epoch=epoch, tags=tags)


def _evaluate(s: _Setup, state) -> dict[str, float]:
    from .train_state import evaluate

    return evaluate(
        state.params,
        state.batch_stats,
        s.test_x,
        s.test_y,
        graphdef=s.graphdef_eval,
        spec=s.spec,
        batch_size=s.cfg.eval_batch_size,
        batch_sharding=None if s.dp is None else s.dp.batch,
    )


def _restore(s: _Setup, state, p: _Progress) -> None:
    """Loads the "last" checkpoint into ``p`` (state, step, best and last evaluation)."""
    import jax
    import jax.numpy as jnp

    from .train_state import TrainState

    # The newest checkpoint that verifies; damaged newer ones are moved aside and reported on stderr.
    resume_step, restored, _ = s.store.restore_latest_valid(
        model_template=_model_part(state), opt_template=_opt_part(state)
    )
    m, o = restored["model"], restored["opt"]
    p.state = _replicate(
        s.dp,
        jax.tree.map(
            jnp.asarray,
            TrainState(m["params"], m["batch_stats"], o["opt"], o["step"], o["key"], o.get("slow")),
        ),
    )
    p.step = int(resume_step)
    if int(p.state.step) != p.step:
        raise RuntimeError(f"checkpoint {resume_step} holds step {int(p.state.step)}")
    p.best_step = s.store.index.get("best")
    p.best_acc = s.store.index.get("best_test_acc")
    last_meta = restored["meta"]
    p.last_eval = {k: last_meta[k] for k in _EVAL_KEYS if k in last_meta}
    _warn_if_flags_changed(s.log.path)
    s.log.write("resume", step=p.step, devices=s.cfg.devices or 1, xla_flags=os.environ.get("XLA_FLAGS", ""))


def _warn_if_flags_changed(metrics_path: Path) -> None:
    """Warns if ``XLA_FLAGS`` differs from the one the run started with (recorded in its start event)."""
    started = None
    if metrics_path.exists():
        with open(metrics_path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("event") == "start":
                    started = rec.get("xla_flags")
                    break
    now = os.environ.get("XLA_FLAGS", "")
    if started is not None and started.split() != now.split():
        warnings.warn(
            f"resuming with XLA_FLAGS={now!r}, but the run started with XLA_FLAGS={started!r}: other "
            "kernels round differently, so the resumed run is not bit-identical to an uninterrupted one "
            "(see models/xla_cpu.py)",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """A training step produced a non-finite loss, gradient or parameter; the run stopped there.

    Attributes: ``first_step`` and ``step`` (the divergent step is one of ``first_step..step``, the steps
    since the previous host sync), ``epoch`` (1-based), ``last_finite_loss`` (mean training loss of the
    last finite log window, or None) and ``checkpoint`` (the newest checkpoint, which is finite, or None).
    """

    def __init__(self, message: str, **fields: Any):
        super().__init__(message)
        for k, v in fields.items():
            setattr(self, k, v)


LOCK_FILE = ".lock"
LOCK_OWNER_FILE = ".lock-owner.json"


class RunLockedError(RuntimeError):
    """The run folder is held by another training process (its lock is taken)."""


@contextlib.contextmanager
def run_lock(workdir: str | os.PathLike):
    """Holds ``workdir``'s OS lock (``workdir/.lock``, ``filelock.FileLock``) for a training process.

    A second process that asks for it fails at once with :class:`RunLockedError`, naming the folder and
    the holder (pid, host, start time, from ``workdir/.lock-owner.json``). The lock is an OS lock
    (``flock``), so it dies with its process (``kill -9``, a reset): a later ``--resume`` just takes it.
    Readers (``models.load_checkpoint``, ``CheckpointStore(read_only=True)``) never take it.
    """
    from filelock import FileLock
    from filelock import Timeout

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The lock file is kept (no unlink race); no soft-lock fallback: only a lock that dies with its process.
    lock = FileLock(workdir / LOCK_FILE, preserve_lock_file=True, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLockedError(
            f"{workdir} is in use by another training process ({_lock_holder(workdir)}); "
            "wait for it to end or stop it, then --resume"
        ) from None
    try:
        write_json_atomic(
            workdir / LOCK_OWNER_FILE,
            dict(
                pid=os.getpid(),
                host=socket.gethostname(),
                started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            ),
        )
        yield
    finally:
        try:
            (workdir / LOCK_OWNER_FILE).unlink()
        except FileNotFoundError:
            pass
        lock.release()


def _lock_holder(workdir: Path) -> str:
    try:
        owner = json.loads((workdir / LOCK_OWNER_FILE).read_text())
        return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# Fields that may change when a diverged run is resumed (to continue from its last finite checkpoint).
DIVERGED_RESUME_MUTABLE = frozenset({"lr", "muon_lr"})


def _diverged(s: _Setup, p: _Progress, epoch: int, *, first: int) -> None:
    """Records a ``diverged`` event and raises :class:`TrainingDiverged`; nothing is saved."""
    steps = s.store.steps()
    newest = steps[-1] if steps else None
    last = p.last_finite_loss
    s.log.write(
        "diverged",
        first_step=first,
        step=p.step,
        epoch=epoch + 1,
        last_finite_loss=None if last is None else last[0],
        last_finite_step=None if last is None else last[1],
        checkpoint=newest,
    )
    where = f"step {p.step}" if first == p.step else f"one of steps {first}-{p.step}"
    loss = "none yet" if last is None else f"{last[0]:.4f} (at step {last[1]})"
    raise TrainingDiverged(
        f"training diverged: non-finite loss, gradient or weights at {where} (epoch {epoch + 1}); "
        f"last finite loss {loss}. No checkpoint was written after it: the newest, step {newest}, is "
        f"finite; continue from it with --resume and a lower --lr",
        first_step=first,
        step=p.step,
        epoch=epoch + 1,
        last_finite_loss=None if last is None else last[0],
        checkpoint=newest,
    )


def _train_epoch(s: _Setup, p: _Progress, epoch: int) -> np.ndarray:
    """Trains from ``p.step`` to the end of ``epoch`` (or to ``stop_at``); returns the epoch's train sums
    ``(loss * n, correct, n)`` of this process. Saves the mid-epoch scheduled and interruption checkpoints."""
    import jax
    from tqdm.auto import tqdm

    from .data import alternating_flips
    from .train_state import train_step
    from .train_state import zero_metrics

    cfg, spe = s.cfg, s.steps_per_epoch
    order = epoch_permutation(cfg.seed, epoch, len(s.train_y))
    flips = alternating_flips(cfg.seed, epoch, len(s.train_y)) if cfg.flip == "alternating" else None
    first = p.step - epoch * spe
    epoch_sums = np.zeros(3)
    metrics = _replicate(s.dp, zero_metrics(s.spec))
    bar = tqdm(
        total=spe * cfg.batch_size,
        initial=first * cfg.batch_size,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="img",
        unit_scale=True,
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    window_start = time.perf_counter()
    window_steps = 0
    for i in range(first, spe):
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        images, labels = _shard_batch(s.dp, s.train_x[idx], s.train_y[idx])
        batch_flips = None if flips is None else _shard_batch(s.dp, flips[idx])[0]
        p.state, metrics = train_step(
            p.state, metrics, images, labels, batch_flips, graphdef=s.graphdef_train, tx=s.tx, spec=s.spec
        )
        p.step += 1
        window_steps += 1
        end_of_epoch = i == spe - 1
        must_save = p.step in s.scheduled and not end_of_epoch
        stopping = p.step >= s.stop_at
        if window_steps >= cfg.log_every or end_of_epoch or must_save or stopping:
            loss_sum, correct, count, *penalty = (float(v) for v in jax.device_get(metrics))
            if not math.isfinite(loss_sum):
                bar.close()
                _diverged(s, p, epoch, first=p.step - window_steps + 1)
            p.last_finite_loss = (loss_sum / count, p.step)
            elapsed = time.perf_counter() - window_start
            if not p.window_first:
                p.timed_images += int(count)
                p.timed_seconds += elapsed
            epoch_sums += (loss_sum, correct, count)
            s.log.write(
                "train",
                step=p.step,
                epoch=epoch,
                loss=loss_sum / count,
                acc=correct / count,
                lr=float(s.schedule(p.step - 1)),
                images_per_s=count / max(elapsed, 1e-9),
                **({"penalty": penalty[0] / count} if penalty else {}),
            )
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}", refresh=False)
            metrics = _replicate(s.dp, zero_metrics(s.spec))
            window_start = time.perf_counter()
            window_steps = 0
            p.window_first = False
        bar.update(cfg.batch_size)
        if must_save and not stopping:
            extra = {}
            if cfg.eval_at_checkpoints:
                extra = _evaluate(s, p.state)
                s.log.write("eval", step=p.step, epoch=epoch, **extra)
            _save(s, p.state, p.step, ["scheduled"], extra)
            window_start = time.perf_counter()
        if stopping and not end_of_epoch:
            p.interrupted = p.step < s.total_steps
            tags = (
                ["last"]
                + (["scheduled"] if p.step in s.scheduled else [])
                + (["interrupted"] if p.interrupted else [])
            )
            _save(s, p.state, p.step, tags, {})
            break
    bar.close()
    return epoch_sums


def _finish_epoch(s: _Setup, p: _Progress, epoch: int, epoch_sums: np.ndarray, seconds: float) -> None:
    """End of ``epoch``: evaluate (every ``eval_every_epochs``), one summary line, checkpoint, prune."""
    from tqdm.auto import tqdm

    cfg = s.cfg
    ep_metrics: dict[str, Any] = {}
    if epoch_sums[2]:
        ep_metrics = dict(train_loss=epoch_sums[0] / epoch_sums[2], train_acc=epoch_sums[1] / epoch_sums[2])
    done = epoch + 1
    evaluated = done % cfg.eval_every_epochs == 0 or done == cfg.epochs or p.step >= s.stop_at
    if evaluated:
        p.last_eval = _evaluate(s, p.state)
        ep_metrics.update(p.last_eval)
        s.log.write("eval", step=p.step, epoch=done, **ep_metrics)
    if cfg.progress:
        line = (
            f"epoch {done}/{cfg.epochs} step {p.step}: train loss {ep_metrics.get('train_loss', float('nan')):.4f} "
            f"acc {ep_metrics.get('train_acc', float('nan')):.4f} | {epoch_sums[2] / max(seconds, 1e-9):.0f} img/s"
        )
        if evaluated:
            line += f" | test loss {p.last_eval['test_loss']:.4f} acc {p.last_eval['test_acc']:.4f}"
            if "test_acc_tta" in p.last_eval:
                line += f" (TTA {p.last_eval['test_acc_tta']:.4f})"
        tqdm.write(line)
    tags = ["last"]
    if p.step in s.scheduled:
        tags.append("scheduled")
    is_best = (
        cfg.keep_best
        and "test_acc" in ep_metrics
        and (p.best_acc is None or ep_metrics["test_acc"] > p.best_acc)
    )
    if is_best:
        tags.append("best")
    if p.step >= s.stop_at and p.step < s.total_steps:
        p.interrupted = True
        tags.append("interrupted")
    _save(
        s, p.state, p.step, tags, dict(ep_metrics, epoch_completed=done)
    )  # "best" in tags updates the index
    if is_best:
        p.best_acc, p.best_step = ep_metrics["test_acc"], p.step
    s.store.prune(keep={p.step} | ({p.best_step} if p.best_step is not None else set()))


def _build(
    cfg: TrainConfig, workdir: Path, has_run: bool, train_data: Any, test_data: Any, dp: DataParallel | None
):
    """Loads and checks the data, writes ``config.json``, builds the model, optimiser and fixed pieces.

    Returns ``(setup, initial TrainState, number of parameters)``.
    """
    from flax import nnx

    from . import checkpoints as ckpt
    from .data import normalize
    from .nets import count_params
    from .nets import create_model
    from .train_state import init_state
    from .train_state import loss_spec

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

    if not has_run and (workdir / "metrics.jsonl").exists():
        ckpt.remove_run(workdir)  # leftovers of a run of ours that never saved a checkpoint
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "config.json", cfg.to_dict())

    model_kwargs = _model_kwargs(cfg)
    model = create_model(cfg.arch, num_classes=cfg.num_classes, rngs=nnx.Rngs(cfg.seed), **model_kwargs)
    if hasattr(model, "init_whitening"):
        model.init_whitening(normalize(train_x[whitening_sample(cfg.seed, n_train)]))
    n_params = count_params(model)
    graphdef_eval, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    graphdef_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    tx, schedule = _optimizer(cfg, steps_per_epoch)
    s = _Setup(
        cfg=cfg,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        stop_at=total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps),
        scheduled=frozenset(checkpoint_schedule(cfg, steps_per_epoch, total_steps)),
        graphdef_train=graphdef_train,
        graphdef_eval=graphdef_eval,
        tx=tx,
        schedule=schedule,
        spec=loss_spec(cfg, total_steps),
        store=ckpt.CheckpointStore(workdir),
        log=_Log(workdir / "metrics.jsonl"),
        static_meta=dict(
            arch=cfg.arch,
            num_classes=cfg.num_classes,
            model_kwargs=model_kwargs,
            seed=cfg.seed,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            n_train=n_train,
            config=cfg.to_dict(),
            devices=cfg.devices or 1,
        ),
        dp=dp,
    )
    state = init_state(params, batch_stats, tx, seed=cfg.seed, lookahead=cfg.lookahead)
    return s, _replicate(dp, state), n_params


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
        ``max_steps``), ``final_test_acc`` (plain: the headline), ``final_test_acc_tta`` (with
        test-time augmentation at level ``tta_level``; None when ``tta == 0``), ``best_test_acc``
        (plain), ``best_step``,
        ``train_images_per_s`` (steady-state, excluding compilation and evaluation),
        ``wall_time_s``, ``devices`` (data-parallel device count, 1 on one device), ``checkpoints``
        (steps) and ``workdir``.

    Raises:
        TrainingDiverged: A step's loss, gradient or new weights were not finite (checked at the log
            windows' host syncs, so at no extra cost). The run stops there: ``metrics.jsonl`` gets a
            ``diverged`` event, no checkpoint is written after the divergence, and ``resume=True`` continues
            from the newest (finite) checkpoint, with a lower ``lr`` / ``muon_lr`` if wanted (the only
            fields a diverged run may change; see :data:`DIVERGED_RESUME_MUTABLE`).
        RunLockedError: Another process is training in ``workdir`` (:func:`run_lock`).
    """
    from .nets import parse_arch

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    workdir = Path(workdir)
    t_start = time.time()
    parse_arch(cfg.arch)  # fail fast on an unknown architecture (ValueError naming the valid ones)
    dp = data_parallel(cfg.devices)  # fail fast: more devices than there are (ValueError naming both)
    with run_lock(workdir):
        return _train(cfg, workdir, train_data, test_data, dp, t_start)


def _train(
    cfg: TrainConfig, workdir: Path, train_data: Any, test_data: Any, dp: Any, t_start: float
) -> dict[str, Any]:
    """:func:`train_and_evaluate` once it holds the run folder's lock."""
    import jax

    from . import checkpoints as ckpt

    has_run = _existing_run(cfg, workdir)
    s, state, n_params = _build(cfg, workdir, has_run, train_data, test_data, dp)
    steps_per_epoch, total_steps = s.steps_per_epoch, s.total_steps
    p = _Progress(state=state, step=0)
    try:
        if has_run:
            _restore(s, p.state, p)
        else:
            s.log.write(
                "start",
                arch=cfg.arch,
                params=n_params,
                n_train=len(s.train_y),
                n_test=len(s.test_y),
                steps_per_epoch=steps_per_epoch,
                total_steps=total_steps,
                backend=jax.default_backend(),
                devices=cfg.devices or 1,
                xla_flags=os.environ.get("XLA_FLAGS", ""),
            )
            if 0 in s.scheduled:
                _save(s, p.state, 0, ["scheduled"], _evaluate(s, p.state) if cfg.eval_at_checkpoints else {})
        for epoch in range(p.step // steps_per_epoch, cfg.epochs):
            if p.step >= s.stop_at:
                break
            t_epoch = time.perf_counter()
            epoch_sums = _train_epoch(s, p, epoch)
            if p.step < (epoch + 1) * steps_per_epoch:
                break  # interrupted mid-epoch
            _finish_epoch(s, p, epoch, epoch_sums, time.perf_counter() - t_epoch)
    finally:
        s.store.close()

    summary = dict(
        workdir=str(workdir),
        arch=cfg.arch,
        params=n_params,
        final_step=p.step,
        total_steps=total_steps,
        epochs_completed=p.step // steps_per_epoch,
        interrupted=p.interrupted or p.step < total_steps,
        final_test_acc=p.last_eval.get("test_acc"),
        final_test_acc_tta=p.last_eval.get("test_acc_tta"),
        tta_level=cfg.tta,
        final_test_loss=p.last_eval.get("test_loss"),
        best_test_acc=p.best_acc,
        best_step=p.best_step,
        devices=cfg.devices or 1,
        train_images_per_s=(p.timed_images / p.timed_seconds) if p.timed_seconds > 0 else None,
        wall_time_s=time.time() - t_start,
        checkpoints=ckpt.list_checkpoints(workdir),
    )
    s.log.write("end", **{k: v for k, v in summary.items() if k not in ("checkpoints", "workdir")})
    write_json_atomic(workdir / "summary.json", summary)
    return summary


if __name__ == "__main__":
    # ``python -m models.train`` is the command line of models/cli.py. models.cli imports this module, so
    # this one runs it by name (runpy) instead of importing it: no import cycle, same flags and exit codes.
    import runpy

    runpy.run_module("models.cli", run_name="__main__")
