"""Training state, optimiser and the jitted train / eval steps (pure functions, no closures).

The model is split once into a static ``graphdef`` and array state (``nnx.split``); the steps take the
graphdef, the optax transformation and a :class:`LossSpec` as static (hashable) arguments, so
``jax.jit`` compiles each step once per (architecture, optimiser, loss) and reuses it across runs of
the same process. Module-level flags read while tracing (``models.nets.CONV_GRAD_BARRIER``) must be
set before the first step is traced.

Optimiser: SGD with momentum (PyTorch semantics: ``buf = m * buf + g``, Nesterov optional) and weight
decay, either ``"l2"`` (coupled: ``wd * w`` is added to the gradient before momentum, exactly PyTorch's
``SGD(weight_decay=)``, the default) or ``"decoupled"`` (SGDW: ``w -= lr * (momentum_update + wd * w)``,
the decay bypasses the momentum buffer). Learning-rate schedule: ``cosine`` (to zero), ``step``
(multiply by ``lr_decay`` at ``milestones``, given as fractions of training) or ``constant``, each
with an optional linear warmup from 0 over ``warmup_epochs``; or airbench's ``triangle`` and
``linear`` (to zero). For the airbench networks (:mod:`models.airbench`) and the time-to-accuracy recipe,
the parameters are split into groups (:func:`param_label`: BatchNorm biases at ``bias_lr_scale`` times
the rate, the whitening bias for ``whiten_bias_epochs``, the whitening kernel frozen), ``optimizer="muon"``
gives the convolution kernels :func:`muon_kernels`, and ``lookahead`` adds airbench's Lookahead
(:func:`lookahead_update`, its slow copy in :attr:`TrainState.slow`). Cross-entropy loss, optional label
smoothing, and optionally the path-geometry regulariser (``cfg.path_penalty > 0``): the loss becomes
``cross_entropy + lam * geopath.path_penalty(space, layers, kind=kind)``, where ``layers`` are the train-mode
activations of the minibatch at every layer of the network's path (:func:`models.capture.path_layers`:
input ... logits), from the same forward pass as the logits. With ``lam == 0`` the step is the plain
cross-entropy step (nothing is captured or computed for the penalty).
"""

from __future__ import annotations

import functools
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .capture import path_layers
from .config import TrainConfig
from .data import augment as augment_images
from .data import normalize

__all__ = [
    "TrainState",
    "LossSpec",
    "loss_spec",
    "penalty_space",
    "zero_metrics",
    "init_state",
    "make_optimizer",
    "make_schedule",
    "param_label",
    "muon_kernels",
    "lookahead_update",
    "lookahead_decay",
    "tta_logits",
    "all_finite",
    "training_loss",
    "train_step",
    "eval_step",
    "evaluate",
]


class TrainState(NamedTuple):
    """Everything a training step reads and writes (a pytree; checkpointed whole)."""

    params: Any  # nnx.State of the nnx.Param leaves
    batch_stats: Any  # nnx.State of the BatchNorm running statistics
    opt_state: Any  # optax state of the transformation
    step: jax.Array  # int32 [], global step (the next step's augmentation key is fold_in(key, step))
    key: jax.Array  # uint32 [2], raw key data of the augmentation key
    # Lookahead's slow copy ``(params, batch_stats)`` (``TrainConfig.lookahead``); None without Lookahead.
    slow: Any = None


class LossSpec(NamedTuple):
    """Static loss and input options of the steps."""

    num_classes: int
    label_smoothing: float = 0.0
    augment: bool = True
    path_penalty: float = 0.0  # lambda; 0 = the plain cross-entropy step
    path_penalty_kind: str = "length"  # a kind of geopath.path_penalty
    path_penalty_space: str = "angular_cka"  # one of models.config.PATH_PENALTY_SPACES
    crop_padding: int = 4  # augmentation: largest shift of the random crop, in pixels
    crop_pad_mode: str = "zeros"  # "zeros" or "reflect"
    flip: str = "random"  # "random", or "alternating": the step is given the flips (data.alternating_flips)
    lookahead_steps: int = 0  # total steps of a run with Lookahead (its schedule needs them); 0: off
    tta: int = 0  # test-time augmentation level of the evaluations (models.airbench.tta_views)


def loss_spec(cfg: TrainConfig, total_steps: int = 0) -> LossSpec:
    """The :class:`LossSpec` of a training configuration (``total_steps``: the run's, needed by Lookahead)."""
    return LossSpec(
        cfg.num_classes,
        float(cfg.label_smoothing),
        bool(cfg.augment),
        float(cfg.path_penalty),
        cfg.path_penalty_kind,
        cfg.path_penalty_space,
        int(cfg.crop_padding),
        cfg.crop_pad_mode,
        cfg.flip,
        int(total_steps) if cfg.lookahead else 0,
        int(cfg.tta),
    )


def penalty_space(name: str):
    """The geopath space of a ``path_penalty_space`` name (one of ``models.config.PATH_PENALTY_SPACES``)."""
    import geopath as gp

    spaces = {"angular_cka": gp.AngularCKA, "angular_shape": lambda: gp.AngularShape(alpha=1.0)}
    if name not in spaces:
        raise ValueError(f"path_penalty_space must be one of {tuple(spaces)}, got {name!r}")
    return spaces[name]()


def zero_metrics(spec: LossSpec) -> jax.Array:
    """float32 ``[3]`` (``[4]`` with a path penalty): the zero running sums that :func:`train_step` adds to."""
    return jnp.zeros(4 if spec.path_penalty else 3, jnp.float32)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the step (warmup, then cosine / step / constant)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total - 1, 0))
    if cfg.schedule == "linear":
        return optax.linear_schedule(cfg.lr, 0.0, max(total, 1))
    if cfg.schedule == "triangle":
        # airbench: linear from 0.2 lr to lr at 23% of the steps, then linear to 0.07 lr at the end
        peak = int(0.23 * total)
        return lambda step: (
            cfg.lr * jnp.interp(step, jnp.array([0, peak, total]), jnp.array([0.2, 1.0, 0.07]))
        )
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


def param_label(path: tuple[Any, ...]) -> str:
    """The optimiser group of a parameter, from its pytree path in the model's ``nnx.Param`` state.

    ``"frozen"``: a whitening kernel (never trained); ``"whiten_bias"``: a whitening bias (trained for
    ``whiten_bias_epochs``); ``"norm_bias"``: a BatchNorm bias (a module named ``*bn*`` or ``*norm*``;
    learning rate times ``bias_lr_scale``); ``"other"``: everything else.
    """
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    names = [n for n in names if n != "value"]
    if names and names[-1] == "whiten_kernel":
        return "frozen"
    if names and names[-1] == "whiten_bias":
        return "whiten_bias"
    if names and names[-1] == "bias" and any("bn" in n or "norm" in n for n in names[:-1]):
        return "norm_bias"
    return "other"


def make_optimizer(
    cfg: TrainConfig, steps_per_epoch: int, *, groups: bool = False
) -> tuple[optax.GradientTransformation, Any]:
    """``(tx, schedule)``: SGD + momentum (+ Nesterov) + weight decay ("l2" or "decoupled") + schedule.

    With ``groups`` (a model with a whitening layer, or ``bias_lr_scale != 1``), the parameters are
    split by :func:`param_label` (``optax.partition``): BatchNorm biases get ``bias_lr_scale`` times the
    learning rate and ``1 / bias_lr_scale`` times the weight decay (the same decay per step), a whitening
    bias stops after ``whiten_bias_epochs`` and a whitening kernel never moves. Without ``groups`` the
    transformation (and its state) is the plain chain of earlier runs.
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    mask = None
    if not cfg.decay_all_params:
        mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731  (kernels only)

    def sgd(lr, weight_decay):
        parts = []
        if cfg.weight_decay_mode == "l2":
            if weight_decay:
                parts.append(optax.add_decayed_weights(weight_decay, mask))
            parts.append(optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
        else:
            if cfg.momentum:
                parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
            if weight_decay:
                parts.append(optax.add_decayed_weights(weight_decay, mask))
            parts.append(optax.scale_by_learning_rate(lr))
        return optax.chain(*parts)

    muon = cfg.optimizer == "muon"
    if not groups and not muon:
        return sgd(schedule, cfg.weight_decay), schedule
    scale = cfg.bias_lr_scale
    whiten_steps = max(cfg.whiten_bias_epochs * steps_per_epoch, 1)
    if muon:  # airbench94_muon: the whitening bias at the biases' rate, decaying linearly to 0
        whiten_lr = lambda step: scale * cfg.lr * jnp.maximum(0.0, 1.0 - step / whiten_steps)  # noqa: E731
        whiten_decay = cfg.weight_decay / scale
    else:  # airbench94: the whitening bias with the other parameters, stopped after whiten_bias_epochs
        whiten_lr = lambda step: jnp.where(step < whiten_steps, schedule(step), 0.0)  # noqa: E731
        whiten_decay = cfg.weight_decay
    transforms = {
        "other": sgd(schedule, cfg.weight_decay),
        "norm_bias": sgd(lambda step: scale * schedule(step), cfg.weight_decay / scale),
        "whiten_bias": sgd(whiten_lr, whiten_decay),
        "frozen": optax.set_to_zero(),
    }
    if muon:
        muon_schedule = lambda step: cfg.muon_lr / cfg.lr * schedule(step)  # noqa: E731 (same shape)
        transforms["muon"] = muon_kernels(muon_schedule, momentum=cfg.muon_momentum)

    def labels(params):
        def label(path, x):
            name = param_label(path)
            return "muon" if muon and name == "other" and jnp.ndim(x) == 4 else name

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.partition(transforms, labels), schedule


MUON_NS_STEPS = 3


def muon_kernels(learning_rate: optax.ScalarOrSchedule, *, momentum: float) -> optax.GradientTransformation:
    """airbench94_muon's update of convolution kernels ``[k, k, C_in, C_out]`` (HWIO).

    The direction is ``optax.contrib.scale_by_muon`` (Nesterov momentum ``momentum``, Frobenius
    preconditioning, :data:`MUON_NS_STEPS` Newton-Schulz steps of each kernel as a ``(k k C_in) x C_out``
    matrix); before the step the kernel is rescaled to norm ``sqrt(C_out)`` (airbench94_muon's weight
    normalisation), so ``w <- w sqrt(C_out) / |w| - lr * direction``. Needs ``params`` in ``update``.
    """
    from optax.contrib import MuonDimensionNumbers
    from optax.contrib import scale_by_muon

    dims = lambda params: jax.tree.map(  # noqa: E731
        lambda p: MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3), params
    )
    direction = optax.chain(
        scale_by_muon(ns_steps=MUON_NS_STEPS, beta=momentum, nesterov=True, weight_dimension_numbers=dims),
        optax.scale_by_learning_rate(learning_rate),
    )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("muon_kernels needs the params (weight normalisation)")
        step, state = direction.update(updates, state, params)

        def normalised(u, w):
            norm = jnp.sqrt(jnp.sum(jnp.square(w)))
            return w * (jnp.sqrt(jnp.float32(w.shape[-1])) / norm - 1.0) + u

        return jax.tree.map(normalised, step, params), state

    return optax.GradientTransformation(direction.init, update)


def init_state(
    params: Any, batch_stats: Any, tx: optax.GradientTransformation, *, seed: int, lookahead: bool = False
) -> TrainState:
    """The state at step 0; the augmentation key is derived from ``seed`` alone. With ``lookahead`` the
    slow copy starts as the initial ``(params, batch_stats)``."""
    key = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 0x5EED))
    slow = jax.tree.map(jnp.copy, (params, batch_stats)) if lookahead else None
    return TrainState(params, batch_stats, tx.init(params), jnp.asarray(0, jnp.int32), key, slow)


LOOKAHEAD_EVERY = 5


def lookahead_decay(step: jax.Array, total_steps: int) -> jax.Array:
    """airbench's Lookahead decay after ``step`` steps of ``total_steps``: ``0.95^5 (step / total)^3``."""
    return 0.95**5 * (step / total_steps) ** 3


def lookahead_update(fast: Any, slow: Any, step: jax.Array, total_steps: int) -> tuple[Any, Any]:
    """airbench's Lookahead after the update that made ``step`` (1-based) steps: returns ``(fast, slow)``.

    Every :data:`LOOKAHEAD_EVERY` steps ``slow <- slow + (1 - decay) (fast - slow)`` and ``fast <- slow``,
    with ``decay = lookahead_decay(step, total_steps)``; at ``step == total_steps`` ``fast <- slow``
    (airbench's final update with decay 1). ``fast`` and ``slow`` are matching pytrees.
    """
    sync = step % LOOKAHEAD_EVERY == 0
    alpha = jnp.where(sync, 1.0 - lookahead_decay(step, total_steps), 0.0).astype(jnp.float32)
    slow = jax.tree.map(lambda s_, f: s_ + alpha * (f - s_), slow, fast)
    take = sync | (step >= total_steps)
    fast = jax.tree.map(lambda s_, f: jnp.where(take, s_, f), slow, fast)
    return fast, slow


def _loss(logits: jax.Array, labels: jax.Array, spec: LossSpec) -> jax.Array:
    """Per-example cross-entropy ``[B]`` of ``logits [B, C]`` against integer ``labels [B]``."""
    if spec.label_smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, spec.num_classes), spec.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def training_loss(
    params_and_stats: tuple[Any, Any],
    x: jax.Array,
    labels: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    spec: LossSpec,
) -> tuple[jax.Array, tuple[jax.Array, Any, tuple[jax.Array, ...]]]:
    """The training objective of one minibatch (train mode), what :func:`train_step` differentiates.

    Args:
        params_and_stats: ``(params, batch_stats)``. Differentiating w.r.t. the BatchNorm statistics as well
            keeps NNX's Variables on one trace level; their (zero) gradients are dropped.
        x: float ``[B, 32, 32, 3]`` normalised (augmented) images; labels: int32 ``[B]``.
        graphdef: the model's graph definition in train mode; spec: the loss options.

    Returns:
        ``(loss [], (logits [B, C], new batch_stats, parts))``: ``loss`` is the mean cross-entropy, plus
        ``spec.path_penalty * penalty`` when that is > 0, and then ``parts = (cross_entropy [], penalty [])``;
        ``parts = ()`` without a penalty.
    """
    model = nnx.merge(graphdef, *params_and_stats)
    if not spec.path_penalty:
        logits = model(x)
        loss = _loss(logits, labels, spec).mean()
        return loss, (logits, nnx.state(model, nnx.BatchStat), ())
    out = model.forward(x)
    logits = out["logits"]
    ce = _loss(logits, labels, spec).mean()
    penalty = _path_penalty(out, spec)
    return ce + spec.path_penalty * penalty, (logits, nnx.state(model, nnx.BatchStat), (ce, penalty))


def _path_penalty(outputs, spec: LossSpec) -> jax.Array:
    """``geopath.path_penalty`` of the minibatch's layers ``outputs`` (``model.forward``), a scalar."""
    import geopath as gp

    layers = [outputs[name] for name in path_layers(outputs)]
    return gp.path_penalty(penalty_space(spec.path_penalty_space), layers, kind=spec.path_penalty_kind)


def all_finite(tree: Any) -> jax.Array:
    """bool ``[]``: whether every element of every array in ``tree`` is finite (no squares: a huge but
    finite value is finite)."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "spec"), donate_argnames=("state", "metrics"))
def train_step(
    state: TrainState,
    metrics: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    flips: jax.Array | None = None,
    *,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    spec: LossSpec,
) -> tuple[TrainState, jax.Array]:
    """One SGD step on a uint8 batch: augment + normalise on device, forward, backward, update.

    Args:
        state: the current :class:`TrainState` (donated).
        metrics: float32 running sums (donated): ``[3]`` ``(loss * n, correct, n)``, where ``loss`` is the
            cross-entropy; with ``spec.path_penalty > 0``, ``[4]``: ``(..., penalty * n)``. Start from
            :func:`zero_metrics`. A step whose loss, gradient or new parameters are not all finite adds
            NaN to the loss sum (how :func:`models.train.train_and_evaluate` detects divergence).
        images: uint8 ``[B, 32, 32, 3]``; labels: int32 ``[B]``.
        flips: bool ``[B]``, which images to flip, for ``spec.flip == "alternating"``
            (:func:`models.data.alternating_flips`); None for random flips.
        graphdef: the model's graph definition in train mode (``nnx.split(model, nnx.Param, nnx.BatchStat)``).
        tx: the optax transformation; spec: loss and augmentation options.

    Returns:
        ``(new_state, metrics + this batch's sums)``. With Lookahead (``spec.lookahead_steps > 0``) the new
        state's weights are :func:`lookahead_update`'s.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    if spec.augment:
        x = augment_images(key, images, padding=spec.crop_padding, pad_mode=spec.crop_pad_mode, flips=flips)
    else:
        x = images
    x = normalize(x)

    (loss, (logits, new_stats, parts)), grads = jax.value_and_grad(training_loss, has_aux=True)(
        (state.params, state.batch_stats), x, labels, graphdef=graphdef, spec=spec
    )
    updates, opt_state = tx.update(grads[0], state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    n = jnp.float32(labels.shape[0])
    correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    # Divergence: a non-finite loss, gradient or new parameter makes this step's loss term NaN, so the
    # running loss sum that the loop fetches anyway shows it (no extra host sync).
    finite = jnp.isfinite(loss) & all_finite(grads[0]) & all_finite(params)
    if parts:
        ce, penalty = parts
        metrics = metrics + jnp.stack([jnp.where(finite, ce * n, jnp.nan), correct, n, penalty * n])
    else:
        metrics = metrics + jnp.stack([jnp.where(finite, loss * n, jnp.nan), correct, n])
    slow = state.slow
    if spec.lookahead_steps:
        (params, new_stats), slow = lookahead_update(
            (params, new_stats), slow, state.step + 1, spec.lookahead_steps
        )
    return TrainState(params, new_stats, opt_state, state.step + 1, state.key, slow), metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "spec"))
def eval_step(
    params: Any,
    batch_stats: Any,
    images: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    spec: LossSpec,
) -> jax.Array:
    """float32 ``[3]``: ``(sum of losses, correct, count)`` over the ``valid [B]`` (0/1) examples; ``[5]``
    with test-time augmentation (``spec.tta > 0``): ``(..., sum of TTA losses, TTA correct)``.

    ``graphdef`` is the model's graph definition in eval mode (BatchNorm uses its running statistics).
    The TTA logits are :func:`tta_logits`.
    """
    model = nnx.merge(graphdef, params, batch_stats)
    logits = model(normalize(images))
    loss = _loss(logits, labels, spec)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    sums = [jnp.sum(loss * valid), jnp.sum(correct * valid), jnp.sum(valid)]
    if spec.tta:
        tta = tta_logits(model, images, level=spec.tta, plain=logits)
        tta_correct = (jnp.argmax(tta, -1) == labels).astype(jnp.float32)
        sums += [jnp.sum(_loss(tta, labels, spec) * valid), jnp.sum(tta_correct * valid)]
    return jnp.stack(sums)


def tta_logits(model: Any, images: jax.Array, *, level: int, plain: jax.Array | None = None) -> jax.Array:
    """Test-time-augmented logits ``[B, C]`` of uint8 ``images [B, 32, 32, 3]``: the weighted mean of the
    logits of :func:`models.airbench.tta_views` (weights :data:`models.airbench.TTA_WEIGHTS`).

    ``plain`` (optional) is ``model(normalize(images))``, reused for the first view.
    """
    from .airbench import TTA_WEIGHTS
    from .airbench import tta_views

    views = tta_views(images, level)
    out = None
    for i, (view, weight) in enumerate(zip(views, TTA_WEIGHTS[level])):
        logits = plain if (i == 0 and plain is not None) else model(normalize(view))
        out = weight * logits if out is None else out + weight * logits
    return out


def evaluate(
    params: Any,
    batch_stats: Any,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    graphdef: nnx.GraphDef,
    spec: LossSpec,
    batch_size: int,
    batch_sharding: Any = None,
) -> dict[str, float]:
    """Test loss / accuracy over ``images [N, 32, 32, 3]`` in fixed-size (zero-padded) batches.

    Returns ``test_loss``, ``test_acc`` (plain) and ``test_n``; with ``spec.tta > 0`` also
    ``test_loss_tta``, ``test_acc_tta`` and ``tta_level``.

    ``batch_sharding`` (a ``NamedSharding`` splitting the leading axis, as in data-parallel training)
    places every batch over its devices; the batch size is then rounded up to a multiple of their number.
    """
    n = len(labels)
    bs = min(batch_size, n)
    if batch_sharding is not None:
        d = batch_sharding.num_devices
        bs = -(-bs // d) * d
    totals = []
    for start in range(0, n, bs):
        xb, yb = images[start : start + bs], labels[start : start + bs]
        valid = np.ones(bs, np.float32)
        if len(yb) < bs:
            pad = bs - len(yb)
            valid[len(yb) :] = 0
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
        if batch_sharding is not None:
            xb, yb, valid = jax.device_put((xb, yb, valid), batch_sharding)
        totals.append(eval_step(params, batch_stats, xb, yb, valid, graphdef=graphdef, spec=spec))
    loss_sum, correct, count, *tta = np.sum(jax.device_get(totals), axis=0)
    out = {"test_loss": float(loss_sum / count), "test_acc": float(correct / count), "test_n": int(count)}
    if tta:
        out.update(
            test_loss_tta=float(tta[0] / count), test_acc_tta=float(tta[1] / count), tta_level=spec.tta
        )
    return out
