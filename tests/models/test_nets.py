"""Architectures, parameter counts, layer names and representation capture (models.nets / models.capture)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import models
from models import nets
from models.capture import _FN_CACHE
from models.capture import eval_view
from models.capture import resolve_layers
from models.data import normalize

VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


# ------------------------------------------------------------------------------------------------
# Parameter counts, by independent formulas
# ------------------------------------------------------------------------------------------------


def resnet_params(depth: int, width: float = 1.0, shortcut: str = "A", classes: int = 10) -> int:
    """Trainable parameters of a CIFAR ResNet: bias-free 3x3 convs, BN (scale+bias), linear head."""
    n = (depth - 2) // 6
    w = [max(1, round(16 * 2**s * width)) for s in range(3)]
    conv = lambda cin, cout, k=3: k * k * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, w[0]) + bn(w[0])
    cin = w[0]
    for s in range(3):
        for b in range(n):
            cout = w[s]
            total += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)
            if shortcut == "B" and (cin != cout or (s > 0 and b == 0)):
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + cin * classes + classes


def vgg_params(depth: int, width: float = 1.0, classes: int = 10, flatten_size: int = 1) -> int:
    total, cin = 0, 3
    for item in VGG_CFG[depth]:
        if item == "M":
            continue
        c = max(1, round(item * width))
        total += 9 * cin * c + 2 * c
        cin = c
    return total + cin * flatten_size * classes + classes


def abstract_count(arch: str, **kwargs) -> int:
    model = nnx.eval_shape(lambda: models.create_model(arch, rngs=nnx.Rngs(0), **kwargs))
    return models.count_params(model)


def test_resnet20_and_vgg11_headline_counts():
    assert resnet_params(20) == 269_722  # "0.27M" of He et al. (2016), option-A shortcuts
    assert abstract_count("resnet20") == 269_722
    assert vgg_params(11) == 9_228_362  # ~9.2M (bias-free convs before BN)
    assert abstract_count("vgg11") == 9_228_362


@pytest.mark.parametrize(
    "arch, kwargs, expected",
    [
        ("resnet8", {}, resnet_params(8)),
        ("resnet32_w2", {}, resnet_params(32, 2.0)),
        ("resnet56", {}, resnet_params(56)),
        ("resnet20", {"shortcut": "B"}, resnet_params(20, shortcut="B")),
        ("resnet8_w0.25", {}, resnet_params(8, 0.25)),
        ("resnet14", {"width": 0.5}, resnet_params(14, 0.5)),
        ("vgg16_w0.5", {}, vgg_params(16, 0.5)),
        ("vgg11", {"head": "flatten"}, vgg_params(11)),
        ("vgg11_w0.125", {}, vgg_params(11, 0.125)),
    ],
)
def test_param_counts_match_formula(arch, kwargs, expected):
    assert abstract_count(arch, **kwargs) == expected


def test_width_multiplier_stage_widths():
    m = nnx.eval_shape(lambda: models.create_model("resnet32_w2"))
    assert m.stage_widths == (32, 64, 128)
    assert nnx.eval_shape(lambda: models.create_model("resnet20", width=0.5)).stage_widths == (8, 16, 32)


# ------------------------------------------------------------------------------------------------
# Names, shapes, errors
# ------------------------------------------------------------------------------------------------


def test_unknown_architecture_errors_name_valid_ones():
    for bad in ("resnet21", "resnet", "vgg12", "alexnet", "resnet20_wx"):
        with pytest.raises(ValueError) as err:
            models.create_model(bad)
        assert "resnet20" in str(err.value) and "vgg11" in str(err.value)
    with pytest.raises(ValueError, match="conflicts"):
        models.create_model("resnet20_w2", width=4)


def test_layer_names_documented_order():
    r = nnx.eval_shape(lambda: models.create_model("resnet20"))
    names = models.layer_names(r)
    assert names[:3] == ["input", "stem", "stage1.block0"]
    assert names[-3:] == ["stage3.block2", "pool", "logits"]
    assert len(names) == 2 + 9 + 2
    v = nnx.eval_shape(lambda: models.create_model("vgg11"))
    assert models.layer_names(v) == [
        "input",
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "conv3",
        "conv4",
        "pool3",
        "conv5",
        "conv6",
        "pool4",
        "conv7",
        "conv8",
        "pool5",
        "features",
        "logits",
    ]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_resnet():
    return models.create_model("resnet8_w0.25", rngs=nnx.Rngs(1))


def test_forward_shapes_resnet(tiny_resnet, images):
    x = normalize(jnp.asarray(images[:4]))
    out = tiny_resnet.forward(x)
    assert list(out) == models.layer_names(tiny_resnet)
    assert out["stem"].shape == (4, 32, 32, 4)
    assert out["stage1.block0"].shape == (4, 32, 32, 4)
    assert out["stage2.block0"].shape == (4, 16, 16, 8)
    assert out["stage3.block0"].shape == (4, 8, 8, 16)
    assert out["pool"].shape == (4, 16)
    assert out["logits"].shape == (4, 10)
    assert tiny_resnet(x).shape == (4, 10)
    # block outputs are post-ReLU
    assert float(jnp.min(out["stage2.block0"])) >= 0.0


def test_forward_shapes_vgg(images):
    m = models.create_model("vgg11_w0.125", num_classes=7)
    out = m.forward(normalize(jnp.asarray(images[:3])))
    assert list(out) == models.layer_names(m)
    assert out["conv1"].shape == (3, 32, 32, 8)
    assert out["pool1"].shape == (3, 16, 16, 8)
    assert out["pool5"].shape == (3, 1, 1, 64)
    assert out["features"].shape == (3, 64)
    assert out["logits"].shape == (3, 7)


def test_models_start_in_eval_mode(tiny_resnet):
    assert all(
        bn.use_running_average for _, bn in nnx.iter_modules(tiny_resnet) if isinstance(bn, nnx.BatchNorm)
    )


# ------------------------------------------------------------------------------------------------
# Capture
# ------------------------------------------------------------------------------------------------


def test_capture_all_layers_order_and_values(tiny_resnet, images):
    reps = models.capture(tiny_resnet, images, batch_size=4)  # 10 images: batches 4, 4, 2 (padded)
    assert list(reps) == models.layer_names(tiny_resnet)
    assert all(isinstance(v, np.ndarray) and v.shape[0] == 10 for v in reps.values())
    np.testing.assert_allclose(reps["input"], np.asarray(normalize(images)), rtol=0, atol=1e-6)
    # capture does not change the network's function: logits == model(x) in eval mode
    logits = np.asarray(tiny_resnet(normalize(jnp.asarray(images))))
    np.testing.assert_allclose(reps["logits"], logits, rtol=1e-5, atol=1e-5)
    # the padded last batch does not leak into the results
    alone = models.capture(tiny_resnet, images[8:], layers=["logits"], batch_size=4)
    np.testing.assert_allclose(alone["logits"], reps["logits"][8:], rtol=1e-5, atol=1e-5)


def test_capture_subset_in_network_order_and_float_input(tiny_resnet, images):
    reps = models.capture(tiny_resnet, images, layers=["logits", "stage2.block0", "logits"], batch_size=5)
    assert list(reps) == ["stage2.block0", "logits"]
    pre = np.asarray(normalize(images))
    again = models.capture(
        tiny_resnet, pre, layers="logits", batch_size=5
    )  # float input: taken as normalised
    np.testing.assert_allclose(again["logits"], reps["logits"], rtol=1e-5, atol=1e-5)


def test_capture_unknown_layer_lists_valid(tiny_resnet, images):
    with pytest.raises(ValueError) as err:
        models.capture(tiny_resnet, images, layers=["stage9.block0"])
    assert "stage1.block0" in str(err.value) and "logits" in str(err.value)
    with pytest.raises(ValueError):
        models.capture(tiny_resnet, images, batch_size=0)
    with pytest.raises(ValueError):
        models.capture(tiny_resnet, images[0])


def test_capture_compiles_once_per_batch_shape(tiny_resnet, images):
    keep = resolve_layers(tiny_resnet, ["pool"])
    graphdef, _ = nnx.split(eval_view(tiny_resnet))
    _FN_CACHE.pop((graphdef, keep, True), None)
    compiles = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        models.capture(tiny_resnet, images, layers=["pool"], batch_size=3)  # 3, 3, 3, 1 -> padded
        first = len(compiles)
        again = models.capture(tiny_resnet, images[:7], layers=["pool"], batch_size=3)  # 3, 3, 1 -> padded
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first >= 1  # the listener sees compilations at all
    assert len(compiles) == first, "a second capture with the same batch shape recompiled"
    assert again["pool"].shape[0] == 7


def test_capture_uses_running_stats_and_leaves_model_untouched(images):
    model = models.create_model("resnet8_w0.25", rngs=nnx.Rngs(2))
    model.train()
    before = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
    reps = models.capture(model, images, layers=["logits"], batch_size=5)
    after = nnx.state(model, nnx.BatchStat)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after))
    assert not model.stem_bn.use_running_average  # still in train mode
    model.eval()
    np.testing.assert_allclose(
        reps["logits"], np.asarray(model(normalize(jnp.asarray(images)))), rtol=1e-5, atol=1e-5
    )


def test_capture_vgg(images):
    m = models.create_model("vgg11_w0.125")
    reps = models.capture(m, images, layers=["conv3", "pool5", "features"], batch_size=6)
    assert list(reps) == ["conv3", "pool5", "features"]
    assert reps["conv3"].shape == (10, 8, 8, 32) and reps["features"].shape == (10, 64)
    np.testing.assert_allclose(reps["features"], reps["pool5"].reshape(10, -1), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# conv2d: every conv_impl equals lax.conv_general_dilated, forward and gradients
# ------------------------------------------------------------------------------------------------


def _lax_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(
        x,
        w,
        (stride, stride),
        ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _conv_loss(conv, x, w):
    # a non-linear loss with a random-looking cotangent, so that dx and dw are not trivial sums
    return jnp.sum(jnp.sin(conv(x, w)) * jnp.cos(jnp.arange(conv(x, w).size).reshape(conv(x, w).shape)))


CONV_CASES = [
    # (N, H, W, C_in, C_out, kernel, stride, padding)
    (3, 8, 8, 4, 6, 3, 1, 1),
    (3, 8, 8, 4, 6, 3, 2, 1),
    (2, 7, 9, 3, 5, 3, 2, 1),  # odd, non-square map with stride 2: the last row/column is not reached
    (2, 9, 7, 5, 3, 3, 1, 0),  # no padding
    (2, 7, 7, 4, 6, 1, 2, 0),  # 1x1 projection shortcut
    (2, 2, 2, 5, 4, 3, 1, 1),  # map smaller than the kernel (the im2col path)
    (2, 2, 2, 5, 4, 3, 2, 1),
]


@pytest.mark.parametrize("impl", ["barrier", "xla", "auto"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_lax_forward_and_gradients(impl, case):
    n, h, wd, cin, cout, k, stride, padding = case
    rng = np.random.default_rng(sum(case))
    x = jnp.asarray(rng.standard_normal((n, h, wd, cin), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout), dtype=np.float32))

    def ours(x, w):
        return nets.conv2d(x, w, stride=stride, padding=padding, impl=impl)

    def ref(x, w):
        return _lax_conv(x, w, stride, padding)

    # float64 reference for the forward and both gradients
    with jax.enable_x64(True):
        x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)
        y_ref = np.asarray(ref(x64, w64))
        g_ref = [np.asarray(g) for g in jax.grad(lambda a, b: _conv_loss(ref, a, b), (0, 1))(x64, w64)]
    grad = jax.grad(lambda a, b: _conv_loss(ours, a, b), (0, 1))
    for y, g in ((ours(x, w), grad(x, w)), (jax.jit(ours)(x, w), jax.jit(grad)(x, w))):
        assert y.shape == y_ref.shape and y.dtype == jnp.float32
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
        for a, b in zip(g, g_ref):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
    # eager == jit
    np.testing.assert_allclose(ours(x, w), jax.jit(ours)(x, w), rtol=1e-6, atol=1e-6)
    for a, b in zip(grad(x, w), jax.jit(grad)(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("impl", ["barrier", "xla"])
def test_conv2d_promotes_mixed_dtypes_like_nnx_conv(impl):
    # Under jax_enable_x64 the images are float64 and the kernels float32 (a whole-suite run
    # enables x64 for the geopath tests): the result is float64 and so is dx; dw stays float32.
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 6, 6, 3)))
        w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
        y = nets.conv2d(x, w, impl=impl)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, _lax_conv(x, jnp.asarray(w, jnp.float64), 1, 1), rtol=1e-12)
        dx, dw = jax.grad(lambda a, b: jnp.sum(nets.conv2d(a, b, impl=impl) ** 2), (0, 1))(x, w)
        assert dx.dtype == jnp.float64 and dw.dtype == jnp.float32


def test_conv2d_errors_name_shapes_and_options():
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 3\).*\(3, 3, 4, 5\)"):
        nets.conv2d(x, jnp.zeros((3, 3, 4, 5)))
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        nets.conv2d(x, jnp.zeros((3, 3, 3, 5)), impl="gemm")
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        models.create_model("resnet8_w0.25", conv_impl="fast")


def _hlo_of_grad(impl):
    x = jnp.ones((2, 8, 8, 4))
    w = jnp.ones((3, 3, 4, 4))

    def loss(x, w):
        y = jax.nn.relu(nets.conv2d(jax.nn.relu(x) * 2.0, w, impl=impl))
        return jnp.sum(y * y)

    return jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the barrier is a CPU-compiler workaround")
def test_barrier_survives_compilation_and_xla_has_none():
    # the conditional is what stops XLA:CPU from fusing elementwise producers into the
    # weight-gradient transposes; if XLA ever folds it away, the "barrier" option is dead code
    assert "conditional(" in _hlo_of_grad("barrier")
    assert "conditional(" in _hlo_of_grad("auto")
    assert "conditional(" not in _hlo_of_grad("xla")


def test_conv_impl_is_static_model_config_and_does_not_change_numbers(images):
    x = normalize(jnp.asarray(images[:4]))
    labels = jnp.arange(4) % 10
    grads, logits = {}, {}
    graphdefs = []
    for impl in ("barrier", "xla"):
        model = models.create_model("resnet8_w0.25", rngs=nnx.Rngs(3), shortcut="B", conv_impl=impl)
        assert model.conv_impl == impl and model.blocks[1].proj_conv.impl == impl
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # eval mode: BatchNorm is affine
        graphdefs.append(graphdef)

        @jax.jit
        def loss_and_grad(params, rest, x, labels, graphdef=graphdef):
            def loss(p):
                logits = nnx.merge(graphdef, p, rest)(x)
                return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(4), labels]), logits

            return jax.grad(loss, has_aux=True)(params)

        grads[impl], logits[impl] = loss_and_grad(params, rest, x, labels)
    # the implementation lives in the graphdef, so jit caches keyed on it tell the two apart
    assert graphdefs[0] != graphdefs[1]
    np.testing.assert_allclose(logits["barrier"], logits["xla"], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(grads["barrier"]), jax.tree.leaves(grads["xla"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)


def test_every_architecture_name_the_message_offers_parses_to_its_family_depth_and_width():
    """models.available_architectures() (the list every "unknown architecture" error shows) names only
    architectures that parse_arch accepts, with the family, depth and width multiplier their names say."""
    import re

    text = models.available_architectures()
    offered = set(re.findall(r"\b(?:resnet\d+|vgg\d+|airbench_vgg|airbench_resnet)(?:_w[\d.]+)?\b", text))
    assert {"resnet8", "resnet110", "vgg19", "airbench_resnet", "vgg16_w0.5", "airbench_vgg_w0.5"} <= offered
    for name in offered:
        family, depth, width = models.parse_arch(name)
        m = re.fullmatch(r"([a-z_]+?)(\d*)(?:_w([\d.]+))?", name)
        assert family == m.group(1) and width == (None if m.group(3) is None else float(m.group(3))), name
        # airbench: 8 layers, no depth in the name
        assert depth == (int(m.group(2)) if m.group(2) else 8), name
    for bad in ("resnet10", "vgg12", "mlp"):
        with pytest.raises(ValueError, match="valid: resnet"):
            models.parse_arch(bad)
    with pytest.raises(ValueError, match="width multiplier must be positive"):
        models.parse_arch("resnet8_w0")
