"""Time-to-accuracy CIFAR-10 networks after airbench (Jordan 2024, arXiv 2404.00498), in Flax NNX.

Two families with one layout, so that their paths can be compared layer for layer:

``airbench_vgg``
    The airbench94 network: a fixed 2x2 patch-whitening convolution to 24 channels (+ GELU), three
    conv groups of widths 64, 256, 256, each ``conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU``,
    a 3x3 max-pool to ``[N, 256]``, and a bias-free linear head scaled by 1/9. About 0.24 GFLOP per
    image forward, 0.71 GFLOP per training image.

``airbench_resnet``
    The same stages with a residual connection around the second conv of every group, ResNet-9 style
    (Page's DAWNBench ResNet): ``y = GELU(BN(pool(conv1(x))))``, ``out = y + GELU(BN(conv2(y)))``. The
    same parameters and FLOPs as ``airbench_vgg``.

Both take a width multiplier as a name suffix (``airbench_vgg_w0.5``: widths 32, 128, 128) or the ``width=``
keyword. Parameters that follow airbench:

* The whitening conv (``whiten``) has a bias and a kernel set from the data by :func:`whitening_kernel`
  (``+-`` the eigenvectors of the 2x2x3 patch covariance divided by ``sqrt(eigenvalue + eps)``); its
  kernel never trains (the optimiser's ``frozen`` label), its bias trains for the first epochs.
* Every other convolution starts as PyTorch's default uniform init with its first ``C_in`` output
  channels replaced by the identity (Dirac) kernel (:func:`dirac_init`), so a fresh group-internal
  conv passes its input through.
* BatchNorm has no scale (fixed to 1), a trainable bias, momentum 0.6 (``running = 0.6 running + 0.4
  batch``) and ``eps = 1e-12``; the two-pass variance keeps that eps safe in float32.

Layer names (:meth:`AirbenchNet.layer_names`): ``input``, ``whiten`` (after the GELU, ``[N, 31, 31,
24]``), ``group{g}.conv1`` (after conv1 - pool - BN - GELU) and ``group{g}`` (the group's output, after
the residual sum in the ResNet) for ``g = 1, 2, 3``, ``pool`` (``[N, 256]``) and ``logits``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .nets import _scaled
from .nets import check_conv_impl
from .nets import conv2d

__all__ = [
    "AIRBENCH_FAMILIES",
    "AirbenchNet",
    "ConvGroup",
    "dirac_init",
    "whitening_kernel",
    "patches",
    "tta_views",
    "TTA_WEIGHTS",
]

AIRBENCH_FAMILIES = ("airbench_vgg", "airbench_resnet")
WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2  # 24: +- each of the 12 eigenvectors of a 2x2x3 patch
BN_MOMENTUM = 0.6
BN_EPSILON = 1e-12
HEAD_SCALE = 1.0 / 9.0


def dirac_init(kernel: jax.Array) -> jax.Array:
    """``kernel [k, k, C_in, C_out]`` with its first ``min(C_in, C_out)`` output channels set to the identity.

    Output channel ``i < C_in`` of the returned kernel copies input channel ``i`` (a 1 at the centre tap,
    0 elsewhere), as PyTorch's ``nn.init.dirac_`` applied to ``weight[:C_in]``; the remaining output channels
    keep their values. ``k`` must be odd.
    """
    k, _, cin, cout = kernel.shape
    if k % 2 != 1 or kernel.shape[1] != k:
        raise ValueError(f"dirac_init needs a square kernel of odd size, got {kernel.shape}")
    m = min(cin, cout)
    eye = jnp.zeros((k, k, cin, m), kernel.dtype).at[k // 2, k // 2, jnp.arange(m), jnp.arange(m)].set(1)
    return kernel.at[..., :m].set(eye)


def _torch_default_init(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """PyTorch's default conv/linear weight init: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (HWIO / IO)."""
    fan_in = int(np.prod(shape[:-1]))
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def patches(x: jax.Array, size: int) -> jax.Array:
    """All ``size x size`` patches of ``x [N, H, W, C]``, flattened ``(dy, dx, c)`` like an HWIO kernel.

    Returns ``[N * (H - size + 1) * (W - size + 1), size * size * C]``.
    """
    n, h, w, c = x.shape
    cols = [x[:, i : h - size + 1 + i, j : w - size + 1 + j, :] for i in range(size) for j in range(size)]
    return jnp.stack(cols, axis=3).reshape(-1, size * size * c)


def whitening_kernel(images: jax.Array, *, size: int = WHITEN_KERNEL, eps: float = 5e-4) -> jax.Array:
    """The patch-whitening kernel ``[size, size, C, 2 * size * size * C]`` of normalised ``images [N, H, W, C]``.

    With ``S = E[p p^T]`` the (uncentred) second moment of the image's ``size x size`` patches ``p`` and
    ``S = V diag(lam) V^T``, output channel ``j < D = size * size * C`` is ``v_j / sqrt(lam_j + eps)``
    (largest eigenvalue first) and channel ``D + j`` its negative. A patch's first ``D`` outputs then have
    second moment ``diag(lam / (lam + eps))``: about the identity wherever ``lam >> eps``. Computed in
    float64 on the host (``numpy.linalg.eigh``) and returned as float32.
    """
    p = np.asarray(patches(jnp.asarray(images, jnp.float32), size), np.float64)
    cov = p.T @ p / len(p)
    lam, vec = np.linalg.eigh(cov)
    lam, vec = lam[::-1], vec[:, ::-1]  # largest first
    scaled = vec / np.sqrt(np.maximum(lam, 0.0) + eps)  # columns: the D whitening directions
    c = images.shape[-1]
    kernel = np.concatenate([scaled, -scaled], axis=1).reshape(size, size, c, -1)
    return jnp.asarray(kernel, jnp.float32)


def _bn(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(
        channels,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_scale=False,
        use_bias=True,
        use_fast_variance=False,
        use_running_average=True,
        rngs=rngs,
    )


class DiracConv(nnx.Module):
    """Bias-free 3x3 'same' convolution, PyTorch default init with the Dirac kernel on its first channels."""

    def __init__(self, cin: int, cout: int, *, impl: str = "auto", rngs: nnx.Rngs):
        self.impl = check_conv_impl(impl)
        self.kernel = nnx.Param(dirac_init(_torch_default_init(rngs.params(), (3, 3, cin, cout))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv2d(x, self.kernel[...], stride=1, padding=1, impl=self.impl)


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _max_pool(x: jax.Array, size: int) -> jax.Array:
    return nnx.max_pool(x, window_shape=(size, size), strides=(size, size))


class ConvGroup(nnx.Module):
    """``conv1 - maxpool2 - BN - GELU - conv2 - BN - GELU``, with ``residual``: ``y + GELU(BN(conv2(y)))``."""

    def __init__(self, cin: int, cout: int, *, residual: bool, conv_impl: str = "auto", rngs: nnx.Rngs):
        self.residual = residual
        self.conv1 = DiracConv(cin, cout, impl=conv_impl, rngs=rngs)
        self.norm1 = _bn(cout, rngs=rngs)
        self.conv2 = DiracConv(cout, cout, impl=conv_impl, rngs=rngs)
        self.norm2 = _bn(cout, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``(after conv1, group output)``."""
        y = _gelu(self.norm1(_max_pool(self.conv1(x), 2)))
        z = _gelu(self.norm2(self.conv2(y)))
        return y, (y + z if self.residual else z)


class AirbenchNet(nnx.Module):
    """The airbench94-shaped network, plain (``family="airbench_vgg"``) or residual (``"airbench_resnet"``).

    Input: normalised ``[N, 32, 32, 3]`` float32 images. Call :meth:`init_whitening` with training images
    before training (``models.train`` does); until then the whitening kernel is zero.

    Args:
      family: "airbench_vgg" or "airbench_resnet".
      num_classes: logits per input.
      width: multiplier of the group widths 64 / 256 / 256.
      in_channels: channels of the input images.
      conv_impl: how the convolutions are differentiated (:data:`models.nets.CONV_IMPLS`).
      rngs: the parameter initialisation keys.

    Raises:
      ValueError: an unknown ``family`` or ``conv_impl``.
    """

    def __init__(
        self,
        family: str = "airbench_vgg",
        *,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        conv_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if family not in AIRBENCH_FAMILIES:
            raise ValueError(f"family must be one of {AIRBENCH_FAMILIES}, got {family!r}")
        self.family = family
        self.conv_impl = check_conv_impl(conv_impl)
        self.num_classes = num_classes
        self.width = float(width)
        widths = tuple(_scaled(w, width) for w in WIDTHS)
        self.stage_widths = widths
        shape = (WHITEN_KERNEL, WHITEN_KERNEL, in_channels, 2 * WHITEN_KERNEL**2 * in_channels)
        self.whiten_kernel = nnx.Param(jnp.zeros(shape, jnp.float32))
        self.whiten_bias = nnx.Param(jnp.zeros(shape[-1], jnp.float32))
        groups = []
        cin = shape[-1]
        for cout in widths:
            groups.append(
                ConvGroup(cin, cout, residual=family == "airbench_resnet", conv_impl=conv_impl, rngs=rngs)
            )
            cin = cout
        self.groups = nnx.List(groups)
        self.head = nnx.Param(_torch_default_init(rngs.params(), (cin, num_classes)))

    def init_whitening(self, images: jax.Array, *, eps: float = 5e-4) -> None:
        """Sets the whitening kernel from normalised ``images [N, 32, 32, 3]`` (:func:`whitening_kernel`)."""
        self.whiten_kernel[...] = whitening_kernel(images, size=WHITEN_KERNEL, eps=eps)

    def layer_names(self) -> list[str]:
        groups = [name for g in range(1, 4) for name in (f"group{g}.conv1", f"group{g}")]
        return ["input", "whiten", *groups, "pool", "logits"]

    def forward(self, x: jax.Array) -> OrderedDict[str, jax.Array]:
        out: OrderedDict[str, jax.Array] = OrderedDict()
        out["input"] = x
        h = conv2d(x, self.whiten_kernel[...], stride=1, padding=0, impl=self.conv_impl)
        h = _gelu(h + self.whiten_bias[...])
        out["whiten"] = h
        for g, group in enumerate(self.groups, start=1):
            y, h = group(h)
            out[f"group{g}.conv1"] = y
            out[f"group{g}"] = h
        h = _max_pool(h, 3).reshape(h.shape[0], -1)
        out["pool"] = h
        out["logits"] = (h @ self.head[...]) * HEAD_SCALE
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)["logits"]


#: Weights of the views of :func:`tta_views` at each level (airbench's multi-crop TTA).
TTA_WEIGHTS: dict[int, tuple[float, ...]] = {
    0: (1.0,),
    1: (0.5, 0.5),
    2: (0.25, 0.25, 0.125, 0.125, 0.125, 0.125),
}


def tta_views(x: jax.Array, level: int) -> list[jax.Array]:
    """The test-time views of a batch ``x [N, H, W, C]`` (any dtype): see :data:`TTA_WEIGHTS` for their weights.

    Level 0: ``[x]``. Level 1: ``[x, mirror(x)]``. Level 2: those two and, of the image reflect-padded by one
    pixel, the crops shifted by (-1, -1) and (+1, +1) and their mirrors. The TTA logits are the weighted
    mean of the views' logits.
    """
    if level not in TTA_WEIGHTS:
        raise ValueError(f"tta level must be one of {sorted(TTA_WEIGHTS)}, got {level!r}")
    views = [x]
    if level >= 1:
        views.append(x[:, :, ::-1, :])
    if level >= 2:
        h, w = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        for dy, dx in ((0, 0), (2, 2)):
            crop = padded[:, dy : dy + h, dx : dx + w, :]
            views += [crop, crop[:, :, ::-1, :]]
    return views
