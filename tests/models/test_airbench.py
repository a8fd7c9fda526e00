"""The time-to-accuracy recipe (issue 25): airbench-shaped networks, whitening, Dirac init, alternating
flips, TTA, Lookahead, parameter groups, the triangle schedule, and tiny runs of the presets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import models
from models import airbench as A
from models import config as C
from models import data as D
from models import train as T
from models import train_state as TS


def _conv_valid(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.fixture(scope="module")
def real_images(cifar10_dir, tmp_path_factory):
    """300 real training images (30 per class), normalised, and their uint8 originals."""
    ds = D.load_cifar10(
        "train",
        data_dir=cifar10_dir,
        source="folder",
        limit_per_class=30,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    return np.asarray(D.normalize(ds.images)), ds


def test_whitening_layer_whitens_real_patches(real_images):
    x, _ = real_images
    kernel = A.whitening_kernel(x, eps=5e-4)
    assert kernel.shape == (2, 2, 3, 24)
    p = np.asarray(A.patches(jnp.asarray(x), 2), np.float64)
    raw = p.T @ p / len(p)
    lam = np.linalg.eigvalsh(raw)[::-1]
    # The raw patches are far from white (neighbouring pixels and channels are strongly correlated)...
    assert lam[0] / lam[-1] > 100
    out = np.asarray(_conv_valid(jnp.asarray(x), kernel), np.float64).reshape(-1, 24)
    cov = out[:, :12].T @ out[:, :12] / len(out)
    # ... after the layer, their second moment is diag(lam / (lam + eps)): the identity up to eps.
    np.testing.assert_allclose(cov, np.diag(lam / (lam + 5e-4)), atol=2e-4)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-4  # decorrelated
    # Unit variance in the directions well above eps. airbench's eps is not small for normalised data: the
    # finer colour directions (which the JPEG copy's 4:2:0 chroma subsampling nearly removes) have eigenvalues
    # of the order of eps and stay damped, by design.
    strong = lam > 10 * 5e-4
    assert strong.sum() >= 6
    np.testing.assert_allclose(np.diag(cov)[strong], 1.0, atol=0.1)
    np.testing.assert_allclose(np.diag(cov)[:4], 1.0, atol=0.003)
    # the other 12 channels are the negatives
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-5)


def test_whitening_is_set_from_the_training_data_by_the_trainer(tmp_path):
    x, y = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 10
    cfg = dict(arch="airbench_vgg_w0.25", epochs=1, batch_size=20, max_steps=0, progress=False)
    model = models.create_model("airbench_vgg_w0.25")
    assert float(jnp.abs(model.whiten_kernel[...]).max()) == 0.0  # unset until fitted
    s, state, _ = T._build(T.TrainConfig(**cfg), tmp_path, False, (x, y.astype(np.int32)), (x, y), None)
    want = A.whitening_kernel(D.normalize(x[T.whitening_sample(0, 40)]))
    np.testing.assert_allclose(state.params["whiten_kernel"][...], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cin,cout", [(8, 16), (16, 16), (16, 8)])
def test_dirac_init_makes_a_fresh_conv_the_identity_on_its_first_channels(cin, cout):
    conv = A.DiracConv(cin, cout, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, cin))
    y = conv(x)
    m = min(cin, cout)
    np.testing.assert_array_equal(np.asarray(y[..., :m]), np.asarray(x[..., :m]))
    if cout > cin:  # the other output channels are random, not copies
        assert float(jnp.abs(y[..., m:]).mean()) > 0.05
        assert not np.allclose(np.asarray(y[..., m:]), np.asarray(x[..., : cout - m]))
    # the kernel outside the identity keeps PyTorch's default uniform range
    bound = 1 / np.sqrt(9 * cin)
    assert float(jnp.abs(conv.kernel[...]).max()) <= max(1.0, bound)


def test_alternating_flip_flips_every_image_every_other_epoch():
    n = 1000
    f = [D.alternating_flips(7, e, n) for e in range(5)]
    for e in range(4):
        assert (f[e] ^ f[e + 1]).all()  # every image changes its flip from one epoch to the next
    np.testing.assert_array_equal(f[0], f[2])
    np.testing.assert_array_equal(f[0], D.alternating_flips(7, 0, n))  # a pure function of (seed, epoch)
    assert 0.4 < f[0].mean() < 0.6
    assert (f[0] != D.alternating_flips(8, 0, n)).any()
    # augment applies exactly the given flips (padding 0: no translation)
    imgs = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    flips = np.array([True, False, True, True, False, False])
    out = np.asarray(D.augment(jax.random.key(3), imgs, padding=0, flips=flips))
    want = np.where(flips[:, None, None, None], imgs[:, :, ::-1], imgs)
    np.testing.assert_array_equal(out, want)


def test_augment_defaults_are_unchanged_and_reflect_translation():
    imgs = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    key = jax.random.key(5)
    # reflect-padded crops are translations of the image: every output row/col is an input row/col
    out = np.asarray(D.augment(key, imgs, padding=2, pad_mode="reflect", flips=np.zeros(8, bool)))
    padded = np.pad(imgs, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(8):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[i], padded[i, dy : dy + 32, dx : dx + 32])
        ]
        assert len(hits) == 1
    # the crops do not depend on whether the flips are given
    a = np.asarray(D.augment(key, imgs, padding=2, flips=np.zeros(8, bool)))
    b = np.asarray(D.augment(key, imgs, padding=2))
    unflipped = np.asarray(jax.random.bernoulli(jax.random.split(key)[1], jnp.float32(0.5), (8,))) == 0
    np.testing.assert_array_equal(a[unflipped], b[unflipped])


def test_tta_equals_the_weighted_mean_of_the_views_logits():
    model = models.create_model("airbench_resnet_w0.25", rngs=nnx.Rngs(0))
    imgs = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model.init_whitening(D.normalize(imgs))  # (an unset, zero whitening kernel makes every image alike)
    padded = np.pad(imgs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [imgs, imgs[:, :, ::-1]]
    for d in (0, 2):
        crop = padded[:, d : d + 32, d : d + 32]
        views += [crop, crop[:, :, ::-1]]
    logits = [np.asarray(model(D.normalize(v)), np.float64) for v in views]
    want2 = 0.25 * (logits[0] + logits[1]) + 0.125 * (logits[2] + logits[3] + logits[4] + logits[5])
    got2 = np.asarray(TS.tta_logits(model, jnp.asarray(imgs), level=2))
    np.testing.assert_allclose(got2, want2, rtol=1e-5, atol=1e-5)
    got1 = np.asarray(TS.tta_logits(model, jnp.asarray(imgs), level=1))
    np.testing.assert_allclose(got1, 0.5 * (logits[0] + logits[1]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got2, logits[0], atol=1e-3)  # the views differ: TTA is not the plain logits
    # eval_step's TTA accuracy is the accuracy of these logits
    gd, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    labels = np.argmax(want2, -1).astype(np.int32)
    spec = TS.LossSpec(10, tta=2)
    out = TS.eval_step(params, stats, imgs, labels, np.ones(4, np.float32), graphdef=gd, spec=spec)
    assert out.shape == (5,) and float(out[4]) == 4.0
    assert float(out[1]) == float((np.argmax(logits[0], -1) == labels).sum())


def test_lookahead_matches_optax_lookahead():
    """Our Lookahead, with its decay schedule, equals optax.lookahead given the same slow step size."""
    total = 23
    target = jnp.array([1.0, -2.0, 3.0])

    def grad(w):
        return 2 * (w - target) * jnp.array([1.0, 3.0, 0.5])

    fast_tx = optax.sgd(0.05, momentum=0.8)
    w0 = jnp.zeros(3)
    # ours
    w, slow, st = w0, w0, fast_tx.init(w0)
    # optax's: a new lookahead per step with that step's slow step size (its state does not hold it)
    la_params = optax.LookaheadParams(w0, w0)
    la_state = optax.lookahead(fast_tx, 5, 0.5).init(la_params)
    for step in range(1, total):
        u, st = fast_tx.update(grad(w), st, w)
        w, slow = TS.lookahead_update(optax.apply_updates(w, u), slow, jnp.asarray(step), total)
        tx = optax.lookahead(fast_tx, 5, 1.0 - float(TS.lookahead_decay(step, total)))
        lu, la_state = tx.update(grad(la_params.fast), la_state, la_params)
        la_params = optax.apply_updates(la_params, lu)
        np.testing.assert_allclose(np.asarray(w), np.asarray(la_params.fast), rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(slow), np.asarray(la_params.slow), rtol=2e-6, atol=1e-6)
    # the last step ends on the slow weights (airbench's final update with decay 1)
    fast_final = w + 1.0
    w_end, slow_end = TS.lookahead_update(fast_final, slow, jnp.asarray(total), total)
    np.testing.assert_array_equal(np.asarray(w_end), np.asarray(slow_end))


def test_triangle_schedule():
    cfg = T.TrainConfig(schedule="triangle", lr=2.0, epochs=10)
    sched = TS.make_schedule(cfg, steps_per_epoch=10)
    peak = int(0.23 * 100)
    assert float(sched(0)) == pytest.approx(0.4)
    assert float(sched(peak)) == pytest.approx(2.0)
    assert float(sched(100)) == pytest.approx(0.14)
    assert float(sched(peak // 2)) == pytest.approx(2.0 * (0.2 + 0.8 * (peak // 2) / peak))


def test_param_groups_of_the_airbench_optimizer():
    """One step from a fresh state, against PyTorch's SGD (coupled decay, Nesterov) by hand."""
    cfg = T.TrainConfig(
        arch="airbench_vgg", lr=0.5, momentum=0.8, nesterov=True, weight_decay=0.1, bias_lr_scale=64.0,
        schedule="constant", whiten_bias_epochs=1, epochs=3,
    )  # fmt: skip
    tx, _ = TS.make_optimizer(cfg, steps_per_epoch=2, groups=True)
    params = {
        "whiten_kernel": jnp.ones(2),
        "whiten_bias": jnp.ones(2),
        "norm1": {"bias": jnp.ones(2)},
        "conv": {"kernel": jnp.ones(2)},
    }
    g = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    state = tx.init(params)
    u, state = tx.update(g, state, params)
    one_step = (1 + 0.8) * (0.3 + 0.1 * 1.0)  # Nesterov's first step: (1 + m) (g + wd w)
    np.testing.assert_allclose(u["conv"]["kernel"], -0.5 * one_step, rtol=1e-6)
    np.testing.assert_allclose(u["whiten_bias"], -0.5 * one_step, rtol=1e-6)
    np.testing.assert_allclose(u["norm1"]["bias"], -0.5 * 64 * (1 + 0.8) * (0.3 + 0.1 / 64), rtol=1e-6)
    np.testing.assert_array_equal(u["whiten_kernel"], 0.0)
    # after whiten_bias_epochs (2 steps) the whitening bias stops; the others go on
    for _ in range(2):
        u, state = tx.update(g, state, params)
    np.testing.assert_array_equal(u["whiten_bias"], 0.0)
    assert float(jnp.abs(u["conv"]["kernel"]).min()) > 0
    assert TS.param_label((jax.tree_util.DictKey("stem_bn"), jax.tree_util.DictKey("bias"))) == "norm_bias"
    assert TS.param_label((jax.tree_util.DictKey("head"), jax.tree_util.DictKey("bias"))) == "other"


def test_airbench_layers_and_families():
    vgg = models.create_model("airbench_vgg_w0.25", rngs=nnx.Rngs(0))
    res = models.create_model("airbench_resnet_w0.25", rngs=nnx.Rngs(0))
    assert models.count_params(vgg) == models.count_params(res)
    x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
    vgg.init_whitening(x)
    res.init_whitening(x)
    a, b = vgg.forward(x), res.forward(x)
    assert list(a) == list(b) == models.layer_names(vgg)
    shapes = {k: v.shape for k, v in a.items()}
    assert shapes["whiten"] == (3, 31, 31, 24) and shapes["group1"] == (3, 15, 15, 16)
    assert shapes["group3"] == (3, 3, 3, 64) and shapes["pool"] == (3, 64) and shapes["logits"] == (3, 10)
    # the residual family adds the group's first activation to its output; the plain one does not
    np.testing.assert_allclose(np.asarray(a["group1.conv1"]), np.asarray(b["group1.conv1"]), atol=1e-6)
    assert not np.allclose(np.asarray(a["group1"]), np.asarray(b["group1"]), atol=1e-3)


TINY_RUN = dict(epochs=4, batch_size=100, eval_batch_size=250, progress=False, seed=0)


@pytest.mark.parametrize("preset", ["quick-vgg", "quick-resnet", "airbench94", "fast-vgg", "fast-resnet"])
def test_tiny_run_of_each_time_to_accuracy_preset_beats_chance(preset, cifar10_dir, tmp_path):
    """Each preset's recipe, on its own family at width 0.25, 1000 real images, 4 epochs: >= 35% (chance 10%)."""
    train = D.load_cifar10("train", data_dir=cifar10_dir, limit_per_class=100, cache_dir=tmp_path / "c")
    test = D.load_cifar10("test", data_dir=cifar10_dir, limit_per_class=50, cache_dir=tmp_path / "c")
    fields = dict(C.PRESETS[preset], **TINY_RUN)
    fields["arch"] = fields["arch"].split("_w")[0] + "_w0.25"
    fields["eval_every_epochs"] = 4
    summary = T.train_and_evaluate(
        T.TrainConfig(**fields), tmp_path / "run", train_data=train, test_data=test
    )
    assert summary["final_test_acc"] >= 0.35, summary
    assert summary["final_test_acc_tta"] >= 0.35 and summary["tta_level"] == 2


def test_muon_step_matches_optax_muon_on_weight_normalised_kernels():
    """muon_kernels = optax.contrib.muon (3 Newton-Schulz steps, Nesterov 0.6) applied after rescaling the
    kernel to norm sqrt(C_out), step for step on a toy least-squares problem."""
    from optax.contrib import MuonDimensionNumbers
    from optax.contrib import muon

    target = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))

    def grad(w):
        return 2 * (w - target) * jnp.linspace(0.5, 2.0, w.size).reshape(w.shape)

    sched = optax.linear_schedule(0.24, 0.0, 6)
    ours = TS.muon_kernels(sched, momentum=0.6)
    dims = MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
    ref = muon(sched, ns_steps=3, beta=0.6, nesterov=True, muon_weight_dimension_numbers=dims)
    w = w_ref = jax.random.normal(jax.random.key(1), target.shape) * 0.1
    s, s_ref = ours.init(w), ref.init(w_ref)
    for _ in range(5):
        u, s = ours.update(grad(w), s, w)
        w = optax.apply_updates(w, u)
        u_ref, s_ref = ref.update(grad(w_ref), s_ref, w_ref)
        w_ref = w_ref * (4.0 / jnp.linalg.norm(w_ref)) + u_ref  # sqrt(C_out) = 4
        np.testing.assert_allclose(np.asarray(w), np.asarray(w_ref), rtol=1e-5, atol=1e-6)
    # the steps moved the kernel (not only its norm) towards the target
    w0 = jax.random.normal(jax.random.key(1), target.shape)
    cos = lambda a, b: float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))  # noqa: E731
    assert cos(w, target) > cos(w0, target) + 0.1


def test_muon_optimizer_groups():
    cfg = T.TrainConfig(**dict(C.PRESETS["quick-vgg"], epochs=2))
    tx, _ = TS.make_optimizer(cfg, steps_per_epoch=3, groups=True)
    model = models.create_model("airbench_vgg_w0.25", rngs=nnx.Rngs(0))
    model.init_whitening(jax.random.normal(jax.random.key(2), (8, 32, 32, 3)))
    _, params, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    state = tx.init(params)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    g = jax.tree.unflatten(treedef, [0.01 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
    u, _ = tx.update(g, state, params)
    np.testing.assert_array_equal(np.asarray(u["whiten_kernel"][...]), 0.0)  # frozen
    # a Muon kernel: rescaled to norm sqrt(C_out), then an orthogonalised step of size about muon_lr
    w = params["groups"][1]["conv1"]["kernel"][...]
    new = w + u["groups"][1]["conv1"]["kernel"][...]
    step = new - w * (np.sqrt(w.shape[-1]) / jnp.linalg.norm(w))
    sv = np.linalg.svd(np.asarray(step).reshape(-1, w.shape[-1]), compute_uv=False)
    assert 0.3 * cfg.muon_lr < sv.max() < 2.0 * cfg.muon_lr and sv.min() > 0.05 * cfg.muon_lr
    # the head is SGD: the first Nesterov step is -lr (1 + m) (g + wd w)
    w_head, g_head = params["head"][...], g["head"][...]
    want = -cfg.lr * (1 + cfg.momentum) * (g_head + cfg.weight_decay * w_head)
    np.testing.assert_allclose(np.asarray(u["head"][...]), np.asarray(want), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("preset", ["airbench94", "quick-resnet"])  # Lookahead + SGD; Muon
def test_interrupted_recipe_run_resumes_bit_for_bit(preset, tmp_path):
    """The Lookahead copy, the Muon state and the alternating flips survive an interruption exactly."""
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), (np.arange(64) % 10).astype(np.int32))
    test = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), (np.arange(20) % 10).astype(np.int32))
    fields = dict(C.PRESETS[preset], epochs=3, batch_size=16, eval_batch_size=20, progress=False, seed=1)
    fields["arch"] = fields["arch"].split("_w")[0] + "_w0.125"
    fields.update(eval_every_epochs=3, whiten_bias_epochs=1)
    full = T.train_and_evaluate(T.TrainConfig(**fields), tmp_path / "full", train_data=train, test_data=test)
    part = T.train_and_evaluate(
        T.TrainConfig(**fields, max_steps=7), tmp_path / "part", train_data=train, test_data=test
    )
    assert part["interrupted"] and part["final_step"] == 7  # mid-epoch 2, after a Lookahead sync (step 5)
    again = T.train_and_evaluate(
        T.TrainConfig(**fields, resume=True), tmp_path / "part", train_data=train, test_data=test
    )
    assert again["final_step"] == full["final_step"] == 12
    a, b = models.load_checkpoint(tmp_path / "full"), models.load_checkpoint(tmp_path / "part")
    for x, y in zip(jax.tree.leaves(nnx.state(a[0])), jax.tree.leaves(nnx.state(b[0]))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert again["final_test_acc_tta"] == full["final_test_acc_tta"]
