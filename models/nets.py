"""CIFAR-style ResNets and VGGs in Flax NNX (NHWC, float32).

Architectures
-------------
``resnet{6n+2}`` (8, 14, 20, 32, 44, 56, 110, ...)
    The CIFAR ResNets of He et al. (2016, section 4.2): a 3x3 stem convolution,
    three stages of ``n`` BasicBlocks with widths ``W, 2W, 4W`` (default
    ``W = 16``), stride 2 at the first block of stages 2 and 3, global average
    pooling and one linear classifier. Every convolution is followed by
    BatchNorm. The shortcut of a block that changes shape is, by default, the
    parameter-free "option A" of the paper (stride-2 subsampling + zero-padding
    of the new channels), which gives ResNet-20 its 0.27M parameters;
    ``shortcut="B"`` uses a 1x1 convolution + BatchNorm projection instead.

``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``
    The usual CIFAR adaptation of VGG: the configuration-A/B/D/E stacks of 3x3
    conv-BN-ReLU layers (64 ... 512 channels) with five 2x2 max-pools, followed
    by ``head="avg"`` (global average pool, the default) or ``head="flatten"``
    and a single linear classifier. On 32x32 inputs the last pool leaves a
    1x1 map, so both heads give the same ``features`` width.

Width multipliers: a name suffix ``_w{mult}`` (``resnet32_w2`` -> stages
32/64/128, ``vgg16_w0.5`` -> 32 ... 256 channels) or the ``width=`` keyword
(a multiplier for both families). Channel counts are ``max(1, round(c * mult))``.

Convolutions have no bias (BatchNorm follows each one), are initialised with
He-normal (fan-out) weights, and use explicit padding 1 (as PyTorch
``padding=1``), so stride-2 convolutions pad symmetrically.

Training vs. evaluation follows the NNX convention: ``model.train()`` makes
BatchNorm use and update batch statistics, ``model.eval()`` makes it use the
running averages. Models are created in eval mode.

Intermediate representations
----------------------------
``model.forward(x)`` returns an ``OrderedDict`` of every named layer output in
network order (see :func:`layer_names`); ``model(x)`` returns only the
logits. Under ``jax.jit`` the unused intermediates cost nothing. Layer names:

* ResNet: ``input``, ``stem``, ``stage{s}.block{b}`` (after the residual sum
  and ReLU; ``s`` from 1, ``b`` from 0), ``pool`` (global average pool =
  pre-logit features), ``logits``.
* VGG: ``input``, ``conv{i}`` (after conv-BN-ReLU, ``i`` from 1 over all
  convolutions), ``pool{j}`` (after each max-pool, ``j`` from 1 to 5),
  ``features`` (after the head's pooling / flattening = pre-logit
  features), ``logits``.

``input`` is the (normalised, float) array the network receives.

Convolution gradients
---------------------
``conv_impl=`` of the constructors / :func:`create_model` chooses how the
convolutions are differentiated: ``"barrier"`` (XLA's gradient with a fusion
barrier before the weight gradient, faster on XLA:CPU), ``"xla"`` (plain
autodiff) or ``"auto"`` (default: ``"barrier"`` on the CPU backend, else
``"xla"``). All give the same numbers to float32 rounding.
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "CONV_IMPLS",
    "ResNet",
    "VGG",
    "BasicBlock",
    "VGG_CONFIGS",
    "available_architectures",
    "create_model",
    "layer_names",
    "parse_arch",
    "conv2d",
    "count_params",
]

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9  # flax convention: running = m * running + (1 - m) * batch  (torch momentum 0.1)
BN_EPSILON = 1e-5

VGG_CONFIGS: dict[int, tuple[Any, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}

_ARCH_RE = re.compile(r"^(resnet|vgg|airbench_resnet|airbench_vgg)(\d*)(?:_w(\d+(?:\.\d*)?|\.\d+))?$")

# The airbench-shaped networks (models.airbench) have one depth: the whitening conv, six convs, the head.
AIRBENCH_DEPTH = 8


def _scaled(channels: int, mult: float) -> int:
    return max(1, int(round(channels * mult)))


_DIMS = ("NHWC", "HWIO", "NHWC")

# How a convolution is differentiated (``conv_impl=`` of the model constructors, see ``conv2d``).
CONV_IMPLS = ("auto", "barrier", "xla")


def _plain_conv(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=_DIMS
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _barrier_conv(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    return _plain_conv(x, w, stride, pad)


def _barrier_conv_fwd(x, w, stride, pad):
    return _plain_conv(x, w, stride, pad), (x, w)


def _weight_grad(x: jax.Array, g: jax.Array, w_shape: tuple[int, ...], stride: int, pad: int) -> jax.Array:
    _, vjp_w = jax.vjp(lambda w_: _plain_conv(x, w_, stride, pad), jnp.zeros(w_shape, x.dtype))
    return vjp_w(g)[0]


def _barrier_conv_bwd(stride, pad, res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda x_: _plain_conv(x_, w, stride, pad), x)
    (dx,) = vjp_x(g)
    # XLA computes dW as a convolution in which batch and channels swap roles, so
    # x and g are transposed NHWC -> CHWN first. XLA:CPU fuses the producers of x
    # and g (BatchNorm/ReLU forward and backward elementwise math) into those
    # transposes, and the fused transposes vectorise very badly. A conditional is
    # an op XLA:CPU never fuses through (optimization_barrier is removed before
    # fusion), so passing x and g through one makes them plain buffers and the
    # transposes plain copies. The branches give exactly the same dW
    # ((-x)(-g) = xg, bitwise); they differ only so that XLA cannot merge them,
    # and the data-dependent predicate (true unless w[0,0,0,0] is NaN) keeps the
    # conditional from being constant-folded. Measured in
    # benchmarks/bench_conv.py --step (results.md, "Training throughput").
    w0 = w[(0,) * w.ndim]
    xb, gb = jax.lax.cond(w0 == w0, lambda a, b: (a, b), lambda a, b: (-a, -b), x, g)
    dw = _weight_grad(xb, gb, w.shape, stride, pad)
    return dx, dw


_barrier_conv.defvjp(_barrier_conv_fwd, _barrier_conv_bwd)


def _im2col_conv(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    """The same convolution as one matmul over explicitly gathered patches."""
    k, _, cin, cout = w.shape
    n, h, wd, _ = x.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = [
        jax.lax.slice(
            xp,
            (0, i, j, 0),
            (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, cin),
            (1, stride, stride, 1),
        )
        for i in range(k)
        for j in range(k)
    ]
    patches = jnp.concatenate(cols, axis=-1).reshape(n * ho * wo, k * k * cin)
    return (patches @ w.reshape(k * k * cin, cout)).reshape(n, ho, wo, cout)


def check_conv_impl(impl: str) -> str:
    """Returns ``impl`` if it is one of :data:`CONV_IMPLS`, else raises ``ValueError``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    return impl


def conv2d(x: jax.Array, w: jax.Array, *, stride: int = 1, padding: int = 1, impl: str = "auto") -> jax.Array:
    """NHWC x HWIO convolution with symmetric zero padding; the forward equals ``lax.conv_general_dilated``.

    Args:
      x: ``[N, H, W, C_in]`` input.
      w: ``[k, k, C_in, C_out]`` kernel.
      stride: the same stride along both spatial axes.
      padding: zeros added on every side of both spatial axes (PyTorch ``padding=``).
      impl: how the convolution is differentiated; all give the same numbers to float32 rounding.
        ``"barrier"``: XLA's gradient convolutions, with a fusion barrier in front of the
        weight gradient (faster on XLA:CPU, see ``_barrier_conv_bwd``); ``"xla"``: plain
        autodiff of ``lax.conv_general_dilated``; ``"auto"`` (default): ``"barrier"`` when JAX's
        default backend is the CPU, else ``"xla"``.

    Returns:
      ``[N, H_out, W_out, C_out]`` with ``H_out = (H + 2 * padding - k) // stride + 1`` (same
      for W), in the promoted dtype of ``x`` and ``w``.
    """
    check_conv_impl(impl)
    if x.ndim != 4 or w.ndim != 4 or x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"conv2d needs x [N, H, W, C_in] and w [k, k, C_in, C_out], got x {x.shape} and w {w.shape}"
        )
    # Mixed dtypes promote like nnx.Conv (float64 images under jax_enable_x64 meet float32 kernels).
    dtype = jnp.result_type(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    k = w.shape[0]
    if k > 1 and (x.shape[1] < k or x.shape[2] < k):
        # Feature maps smaller than the kernel (VGG's 2x2 maps): XLA:CPU rewrites such
        # convolutions into a form that runs ~100x slower than this matmul.
        return _im2col_conv(x, w, stride, padding)
    if impl == "auto":
        impl = "barrier" if jax.default_backend() == "cpu" else "xla"
    if impl == "barrier":
        return _barrier_conv(x, w, stride, padding)
    return _plain_conv(x, w, stride, padding)


class Conv(nnx.Module):
    """Bias-free square convolution (NHWC, kernel HWIO in ``kernel``), padding ``(k - 1) // 2``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.impl = check_conv_impl(impl)
        self.in_features = cin
        self.out_features = cout
        self.kernel_size = kernel
        self.stride = stride
        self.padding = (kernel - 1) // 2
        self.kernel = nnx.Param(_conv_init(rngs.params(), (kernel, kernel, cin, cout), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv2d(x, self.kernel[...], stride=self.stride, padding=self.padding, impl=self.impl)


def _conv(cin: int, cout: int, *, stride: int = 1, kernel: int = 3, impl: str, rngs: nnx.Rngs) -> Conv:
    return Conv(cin, cout, kernel=kernel, stride=stride, impl=impl, rngs=rngs)


def _bn(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(
        channels,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_running_average=True,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with a residual connection; ReLU after the sum.

    Args:
      cin, cout: input and output channels.
      stride: stride of the first conv (2 halves the spatial size).
      shortcut: "A" (identity, zero-padded channels and strided) or "B" (1x1 projection) where the shape
        changes.
      conv_impl: how the convolutions are differentiated (:data:`CONV_IMPLS`).
      rngs: the parameter initialisation keys.

    Calling it maps ``[N, H, W, cin]`` to ``[N, H / stride, W / stride, cout]`` (float32).
    """

    def __init__(
        self, cin: int, cout: int, *, stride: int, shortcut: str, conv_impl: str = "auto", rngs: nnx.Rngs
    ):
        self.stride = stride
        self.cin = cin
        self.cout = cout
        self.shortcut_kind = shortcut
        self.conv1 = _conv(cin, cout, stride=stride, impl=conv_impl, rngs=rngs)
        self.bn1 = _bn(cout, rngs=rngs)
        self.conv2 = _conv(cout, cout, impl=conv_impl, rngs=rngs)
        self.bn2 = _bn(cout, rngs=rngs)
        self.needs_projection = stride != 1 or cin != cout
        if self.needs_projection and shortcut == "B":
            self.proj_conv = _conv(cin, cout, stride=stride, kernel=1, impl=conv_impl, rngs=rngs)
            self.proj_bn = _bn(cout, rngs=rngs)
        else:
            self.proj_conv = None
            self.proj_bn = None

    def _shortcut(self, x: jax.Array) -> jax.Array:
        if not self.needs_projection:
            return x
        if self.proj_conv is not None:
            return self.proj_bn(self.proj_conv(x))
        # Option A: subsample spatially, zero-pad new channels (split evenly, as in the paper's code).
        if self.stride != 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.cout - self.cin
        if extra < 0:
            raise ValueError("option-A shortcut cannot reduce the channel count")
        lo = extra // 2
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + self._shortcut(x))


class ResNet(nnx.Module):
    """CIFAR ResNet with ``depth = 6n + 2`` (three stages of ``n`` BasicBlocks).

    Args:
      depth: ``6n + 2`` with ``n >= 1`` (8, 14, 20, 32, 44, 56, 110, ...).
      num_classes: logits per input.
      width: multiplier of the stage widths ``base_width * (1, 2, 4)``.
      base_width: channels of the first stage.
      shortcut: "A" (zero-padding identity) or "B" (1x1 projection) where a stage changes shape.
      in_channels: channels of the input images.
      conv_impl: how the convolutions are differentiated (:data:`CONV_IMPLS`).
      rngs: the parameter initialisation keys.

    Raises:
      ValueError: a depth that is not ``6n + 2``, an unknown ``shortcut`` or ``conv_impl``.

    Calling the model maps normalised images ``[N, 32, 32, in_channels]`` (float32) to logits
    ``[N, num_classes]``; ``forward`` returns every layer of :meth:`layer_names` in an ordered dict.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        width: float = 1.0,
        base_width: int = 16,
        shortcut: str = "A",
        in_channels: int = 3,
        conv_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 projection), got {shortcut!r}")
        self.conv_impl = check_conv_impl(conv_impl)
        self.depth = depth
        self.blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.width = float(width)
        widths = [_scaled(base_width * 2**s, width) for s in range(3)]
        self.stage_widths = tuple(widths)
        self.stem_conv = _conv(in_channels, widths[0], impl=conv_impl, rngs=rngs)
        self.stem_bn = _bn(widths[0], rngs=rngs)
        blocks = []
        cin = widths[0]
        for s, cout in enumerate(widths):
            for b in range(self.blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(
                    BasicBlock(cin, cout, stride=stride, shortcut=shortcut, conv_impl=conv_impl, rngs=rngs)
                )
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

    def _block_names(self) -> list[str]:
        return [f"stage{s + 1}.block{b}" for s in range(3) for b in range(self.blocks_per_stage)]

    def layer_names(self) -> list[str]:
        return ["input", "stem", *self._block_names(), "pool", "logits"]

    def forward(self, x: jax.Array) -> OrderedDict[str, jax.Array]:
        out: OrderedDict[str, jax.Array] = OrderedDict()
        out["input"] = x
        h = nnx.relu(self.stem_bn(self.stem_conv(x)))
        out["stem"] = h
        for name, block in zip(self._block_names(), self.blocks):
            h = block(h)
            out[name] = h
        h = jnp.mean(h, axis=(1, 2))
        out["pool"] = h
        out["logits"] = self.head(h)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)["logits"]


class VGG(nnx.Module):
    """CIFAR VGG-{11,13,16,19} with BatchNorm and a single linear classifier.

    Args:
      depth: 11, 13, 16 or 19 (the layouts of :data:`VGG_CONFIGS`).
      num_classes: logits per input.
      width: multiplier of the channel counts.
      head: "avg" (global average pool, then the classifier) or "flatten" (flatten the last feature map).
      in_channels: channels of the input images.
      input_size: height and width of the input images.
      conv_impl: how the convolutions are differentiated (:data:`CONV_IMPLS`).
      rngs: the parameter initialisation keys.

    Raises:
      ValueError: an unknown ``depth``, ``head`` or ``conv_impl``.

    Calling the model maps normalised images ``[N, input_size, input_size, in_channels]`` (float32) to
    logits ``[N, num_classes]``; ``forward`` returns every layer of :meth:`layer_names` in an ordered dict.
    """

    def __init__(
        self,
        depth: int = 11,
        *,
        num_classes: int = 10,
        width: float = 1.0,
        head: str = "avg",
        in_channels: int = 3,
        input_size: int = 32,
        conv_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        if head not in ("avg", "flatten"):
            raise ValueError(f"head must be 'avg' or 'flatten', got {head!r}")
        self.conv_impl = check_conv_impl(conv_impl)
        self.depth = depth
        self.num_classes = num_classes
        self.width = float(width)
        self.head_kind = head
        convs, bns = [], []
        names: list[str] = []
        plan: list[str] = []  # 'C' (conv) or 'M' (pool), static
        cin = in_channels
        nconv = npool = 0
        size = input_size
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                npool += 1
                names.append(f"pool{npool}")
                plan.append("M")
                size //= 2
            else:
                cout = _scaled(item, width)
                convs.append(_conv(cin, cout, impl=conv_impl, rngs=rngs))
                bns.append(_bn(cout, rngs=rngs))
                nconv += 1
                names.append(f"conv{nconv}")
                plan.append("C")
                cin = cout
        self.convs = nnx.List(convs)
        self.bns = nnx.List(bns)
        self._names = tuple(names)
        self._plan = tuple(plan)
        feat = cin if head == "avg" else cin * max(size, 1) ** 2
        self.feature_dim = feat
        self.classifier = nnx.Linear(feat, num_classes, rngs=rngs)

    def layer_names(self) -> list[str]:
        return ["input", *self._names, "features", "logits"]

    def forward(self, x: jax.Array) -> OrderedDict[str, jax.Array]:
        out: OrderedDict[str, jax.Array] = OrderedDict()
        out["input"] = x
        h = x
        ci = 0
        for name, kind in zip(self._names, self._plan):
            if kind == "M":
                h = nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))
            else:
                h = nnx.relu(self.bns[ci](self.convs[ci](h)))
                ci += 1
            out[name] = h
        if self.head_kind == "avg":
            h = jnp.mean(h, axis=(1, 2))
        else:
            h = h.reshape(h.shape[0], -1)
        out["features"] = h
        out["logits"] = self.classifier(h)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)["logits"]


def available_architectures() -> str:
    """A one-line description of the architecture names :func:`create_model` accepts (for messages)."""
    return (
        "resnet{6n+2} (resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110, ...), "
        "vgg11, vgg13, vgg16, vgg19, airbench_vgg, airbench_resnet; optional width suffix _w{mult} "
        "(e.g. resnet32_w2, vgg16_w0.5, airbench_vgg_w0.5)"
    )


def parse_arch(name: str) -> tuple[str, int, float | None]:
    """``"resnet32_w2"`` -> ``("resnet", 32, 2.0)``; width is ``None`` without a suffix.

    The airbench networks have no depth in their name: ``"airbench_vgg"`` -> ``("airbench_vgg", 8, None)``.

    Raises:
      ValueError: an unknown name, a ResNet depth that is not ``6n + 2``, a VGG depth other than 11, 13, 16,
        19, or a width multiplier that is not positive and finite. The message lists the valid names.
    """
    m = _ARCH_RE.match(str(name).strip().lower())
    if m is None:
        raise ValueError(f"unknown architecture {name!r}; valid: {available_architectures()}")
    family, digits, w = m.group(1), m.group(2), m.group(3)
    if family.startswith("airbench") != (digits == ""):
        raise ValueError(f"unknown architecture {name!r}; valid: {available_architectures()}")
    depth = AIRBENCH_DEPTH if family.startswith("airbench") else int(digits)
    if family == "resnet" and (depth < 8 or (depth - 2) % 6 != 0):
        raise ValueError(
            f"unknown architecture {name!r}: ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...); "
            f"valid: {available_architectures()}"
        )
    if family == "vgg" and depth not in VGG_CONFIGS:
        raise ValueError(
            f"unknown architecture {name!r}: VGG depth must be one of {sorted(VGG_CONFIGS)}; "
            f"valid: {available_architectures()}"
        )
    width = None if w is None else float(w)
    if width is not None and not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width multiplier must be positive, got {w!r} in {name!r}")
    return family, depth, width


def create_model(
    arch: str,
    *,
    num_classes: int = 10,
    rngs: nnx.Rngs | int | None = None,
    width: float | None = None,
    **kwargs: Any,
) -> nnx.Module:
    """Build a CIFAR network by name (see module docstring). The model starts in eval mode.

    ``width`` (keyword) and a ``_w{mult}`` name suffix are alternatives; giving
    both with different values is an error. Extra keywords go to the class
    (``shortcut=`` for ResNets, ``head=`` for VGGs, ``base_width=``, ``conv_impl=``...).
    ``conv_impl`` (one of :data:`CONV_IMPLS`, default ``"auto"``) chooses how the
    convolutions are differentiated (see :func:`conv2d`); it changes speed, not numbers.

    Args:
      arch: an architecture name, e.g. ``"resnet20"``, ``"vgg11_w0.5"`` (:func:`available_architectures`).
      num_classes: logits per input.
      rngs: ``nnx.Rngs`` or an integer seed for the initialisation (None: seed 0).
      width: width multiplier, instead of a ``_w{mult}`` suffix.
      **kwargs: passed to the class (:class:`ResNet`, :class:`VGG`, :class:`AirbenchNet`).

    Returns:
      The network (an ``nnx.Module``, float32 parameters) in eval mode.

    Raises:
      ValueError: an unknown ``arch`` (see :func:`parse_arch`), a ``width`` that conflicts with the name's
        suffix, or an invalid keyword value.
    """
    family, depth, name_width = parse_arch(arch)
    if width is not None and name_width is not None and float(width) != name_width:
        raise ValueError(f"width={width} conflicts with the suffix of {arch!r}")
    mult = name_width if name_width is not None else (1.0 if width is None else float(width))
    if rngs is None:
        rngs = nnx.Rngs(0)
    elif isinstance(rngs, int):
        rngs = nnx.Rngs(rngs)
    if family.startswith("airbench"):
        from .airbench import AirbenchNet

        model = AirbenchNet(family, num_classes=num_classes, width=mult, rngs=rngs, **kwargs)
    elif family == "resnet":
        model = ResNet(depth, num_classes=num_classes, width=mult, rngs=rngs, **kwargs)
    else:
        model = VGG(depth, num_classes=num_classes, width=mult, rngs=rngs, **kwargs)
    model.eval()
    return model


def layer_names(model: nnx.Module) -> list[str]:
    """Names of the representations ``model.forward`` returns, in network order.

    Raises:
      TypeError: ``model`` does not define ``layer_names()`` (not a network of this package).
    """
    fn = getattr(model, "layer_names", None)
    if fn is None:
        raise TypeError(f"{type(model).__name__} does not define layer_names()")
    return list(fn())


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` leaves; BatchNorm running stats excluded)."""
    state = nnx.state(model, nnx.Param)
    return int(sum(int(x.size) for x in jax.tree.leaves(state)))
