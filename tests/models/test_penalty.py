"""The path-geometry regulariser as a training option (TrainConfig.path_penalty*, train_state, capture)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import geopath as gp
import models
from models import cli
from models import config as C
from models import train_state as TS
from models.capture import path_layers
from models.data import normalize


class TinyNet(nnx.Module):
    """input -> conv (stride 4) + BatchNorm + relu -> mean pool -> logits: compiles in about a second."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, kernel_size=(3, 3), strides=(4, 4), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, 10, rngs=rngs)

    def forward(self, x: jax.Array) -> OrderedDict[str, jax.Array]:
        out = OrderedDict(input=x)
        out["conv"] = h = nnx.relu(self.bn(self.conv(x)))
        out["pool"] = h = jnp.mean(h, axis=(1, 2))
        out["logits"] = self.head(h)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)["logits"]


@pytest.fixture(scope="module")
def tiny():
    """A :class:`TinyNet` (created once: eager initialisation costs seconds on a loaded machine)."""
    return TinyNet(rngs=nnx.Rngs(1))


def _batch(n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.int32)
    images = rng.integers(0, 200, (n, 32, 32, 3)).astype(np.int32)
    images[..., 1] += labels[:, None, None] * 5
    return images.astype(np.uint8), labels


def _setup(model, **cfg_fields):
    """``(graphdef, tx, spec, state)``; ``state`` holds ShapeDtypeStructs for an abstract ``model``."""
    cfg = C.TrainConfig(**dict(dict(lr=0.05, weight_decay=0.0, augment=False), **cfg_fields))
    model.train()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx, _ = TS.make_optimizer(cfg, steps_per_epoch=10)
    if isinstance(jax.tree.leaves(params)[0], jax.ShapeDtypeStruct):
        state = jax.eval_shape(lambda p, s: TS.init_state(p, s, tx, seed=0), params, stats)
    else:  # copies: train_step donates the state, and the model is shared between tests
        params, stats = jax.tree.map(jnp.copy, (params, stats))
        state = TS.init_state(params, stats, tx, seed=0)
    return graphdef, tx, TS.loss_spec(cfg), state


def _abstract(arch: str):
    """The model ``arch`` without its arrays (shapes only: creating the real one costs seconds)."""
    return nnx.eval_shape(lambda: models.create_model(arch, rngs=nnx.Rngs(0)))


# ------------------------------------------------------------------------------------------------
# Options


def test_config_validates_the_penalty_options():
    cfg = C.TrainConfig(path_penalty=0.3, path_penalty_kind="turning", path_penalty_space="angular_shape")
    assert TS.loss_spec(cfg)[3:6] == (0.3, "turning", "angular_shape")
    assert C.TrainConfig(path_penalty=1).path_penalty == 1.0  # ints from JSON / the CLI become floats
    with pytest.raises(
        ValueError, match=r"path_penalty_kind must be one of \('length', 'excess', 'turning'\)"
    ):
        C.TrainConfig(path_penalty_kind="curvature")
    with pytest.raises(ValueError, match=r"'angular_cka', 'angular_shape'"):
        C.TrainConfig(path_penalty_space="stress")
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="path_penalty must be a finite number >= 0"):
            C.TrainConfig(path_penalty=bad)
    with pytest.raises(ValueError, match="path_penalty_space must be one of"):
        TS.penalty_space("euclidean")


def test_every_configured_kind_and_space_is_one_geopath_accepts():
    x = np.random.default_rng(0).standard_normal((8, 5))
    layers = [x, np.tanh(x), np.tanh(2 * x) + 0.1 * x]
    for name in C.PATH_PENALTY_SPACES:
        space = TS.penalty_space(name)
        for kind in C.PATH_PENALTY_KINDS:  # traced, not run: geopath's own tests check the values
            out = jax.eval_shape(lambda: gp.path_penalty(space, layers, kind=kind))  # noqa: B023
            assert out.shape == (), (name, kind)
    assert isinstance(TS.penalty_space("angular_shape"), gp.AngularShape)
    assert isinstance(TS.penalty_space("angular_cka"), gp.AngularCKA)


def test_cli_flags_come_from_the_dataclass():
    parser = cli.build_parser()
    argv = ["--workdir", "x", "--path-penalty", "0.2", "--path-penalty-kind", "excess"]
    cfg = cli.config_from_args(parser.parse_args([*argv, "--path-penalty-space", "angular_shape"]))
    assert (cfg.path_penalty, cfg.path_penalty_kind, cfg.path_penalty_space) == (
        0.2,
        "excess",
        "angular_shape",
    )
    for bad in (["--path-penalty-kind", "curvature"], ["--path-penalty-space", "stress"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--workdir", "x", *bad])


def test_resume_with_another_penalty_is_refused_and_older_runs_still_match():
    base = C.TrainConfig(path_penalty=0.1)
    saved = base.to_dict()
    assert not {"path_penalty", "path_penalty_kind", "path_penalty_space"} & C.RESUME_MUTABLE
    assert C.config_diff(saved, base) == {}
    assert C.config_diff(saved, dataclasses.replace(base, path_penalty=0.2)) == {"path_penalty": (0.1, 0.2)}
    assert set(C.config_diff(saved, dataclasses.replace(base, path_penalty_kind="turning"))) == {
        "path_penalty_kind"
    }
    # A run saved before the options existed trained without a penalty: it matches the defaults (and may
    # be resumed or reused), keeps its fingerprint (its cached representations), and differs from lam > 0.
    plain = C.TrainConfig()
    old = {k: v for k, v in plain.to_dict().items() if not k.startswith("path_penalty")}
    assert C.config_diff(old, plain) == {}
    assert C.run_fingerprint(old) == C.run_fingerprint(plain.to_dict())
    assert C.run_fingerprint(old) != C.run_fingerprint(base.to_dict())
    assert C.config_diff(old, base) == {"path_penalty": (0.0, 0.1)}


def test_path_layers_drop_only_a_repeated_point():
    for arch, dropped in (("resnet8_w0.25", []), ("vgg11_w0.25", ["features"])):
        model = _abstract(arch)
        graphdef, arrays = nnx.split(model)
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        outputs = jax.eval_shape(lambda a, x: nnx.merge(graphdef, a).forward(x), arrays, x)  # noqa: B023
        names = models.layer_names(model)
        assert list(path_layers(outputs)) == [n for n in names if n not in dropped], arch
    assert outputs["pool5"].shape == (2, 1, 1, outputs["features"].shape[1])  # VGG: the same point twice
    # the rule reads shapes: a [n, 1, 1, C] -> [n, C] step is dropped, any other kept
    shapes = OrderedDict(
        a=jax.ShapeDtypeStruct((5, 1, 1, 3), jnp.float32),
        b=jax.ShapeDtypeStruct((5, 3), jnp.float32),
        c=jax.ShapeDtypeStruct((5, 2, 1, 3), jnp.float32),
        d=jax.ShapeDtypeStruct((5, 6), jnp.float32),
        e=jax.ShapeDtypeStruct((5, 1, 1, 5), jnp.float32),
        f=jax.ShapeDtypeStruct((5, 6), jnp.float32),
    )
    assert path_layers(shapes) == ("a", "c", "d", "e", "f")


# ------------------------------------------------------------------------------------------------
# The step


def test_zero_penalty_traces_the_plain_step():
    """lam = 0 compiles exactly the cross-entropy step of a config without the option, whatever the kind
    and space, with no penalty work in it; lam > 0 adds the penalty."""
    images, labels = _batch(8)
    texts = {}
    for name, fields in (
        ("absent", {}),
        ("zero", dict(path_penalty=0.0, path_penalty_kind="turning", path_penalty_space="angular_shape")),
        ("on", dict(path_penalty=0.1)),
    ):
        graphdef, tx, spec, state = _setup(_abstract("resnet8_w0.25"), **fields)
        if name == "absent":
            assert spec == TS.LossSpec(10, 0.0, False)
        lowered = TS.train_step.lower(
            state, TS.zero_metrics(spec), images, labels, graphdef=graphdef, tx=tx, spec=spec
        )
        texts[name] = lowered.as_text()
    assert texts["zero"] == texts["absent"]

    def ops(text):
        return set(re.findall(r"(?:stablehlo|chlo)\.(\w+)", text))

    assert {"atan2", "sqrt"} <= ops(texts["on"]) - ops(texts["absent"])  # the penalty's angles and norms


def test_penalty_changes_the_step_and_is_logged(tiny):
    images, labels = _batch(12)
    states, metrics = {}, {}
    for lam in (0.0, 0.5):
        graphdef, tx, spec, state = _setup(tiny, path_penalty=lam)
        x0 = jax.tree.map(jnp.copy, (state.params, state.batch_stats))  # state is donated
        m = TS.zero_metrics(spec)
        states[lam], metrics[lam] = TS.train_step(
            state, m, images, labels, graphdef=graphdef, tx=tx, spec=spec
        )
    assert metrics[0.0].shape == (3,) and metrics[0.5].shape == (4,)
    # same cross-entropy, correct count and n (same parameters before the step); the penalty is extra
    np.testing.assert_array_equal(np.asarray(metrics[0.5][:3]), np.asarray(metrics[0.0]))
    # the logged penalty is geopath's, on the train-mode activations of the minibatch

    @jax.jit
    def independent(params_and_stats, x):
        out = nnx.merge(graphdef, *params_and_stats).forward(normalize(x))
        return gp.path_penalty(gp.AngularCKA(), list(out.values()), kind="length")

    want = independent(x0, images)
    np.testing.assert_allclose(float(metrics[0.5][3] / 12), float(want), rtol=1e-5)
    assert float(want) > 0.1
    diffs = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(states[0.0].params), jax.tree.leaves(states[0.5].params))
    ]
    assert max(diffs) > 1e-4


@pytest.mark.parametrize(
    "kind,space",
    [
        ("length", "angular_cka"),
        pytest.param("turning", "angular_cka", marks=pytest.mark.slow),
        pytest.param("excess", "angular_shape", marks=pytest.mark.slow),
    ],
)
def test_penalised_loss_gradient_matches_finite_differences(tiny, kind, space):
    """Central difference of the training objective along a random direction, float64 in a tiny net."""
    images, labels = _batch(12, seed=1)
    with jax.enable_x64(True):
        graphdef, _, spec, state = _setup(
            tiny, path_penalty=1.0, path_penalty_kind=kind, path_penalty_space=space
        )
        params, stats = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (state.params, state.batch_stats))
        x = jnp.asarray(normalize(images), jnp.float64)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(7), len(leaves))
        v = [jax.random.normal(k, a.shape, jnp.float64) for k, a in zip(keys, leaves)]
        norm = jnp.sqrt(sum(jnp.sum(a * a) for a in v))
        v = jax.tree.unflatten(treedef, [a / norm for a in v])

        def objective(params_and_stats):
            loss, (_, _, (_, penalty)) = TS.training_loss(
                params_and_stats, x, labels, graphdef=graphdef, spec=spec
            )
            return loss, penalty

        @jax.jit
        def directional(p, s):  # s: the BatchNorm statistics
            g = jax.grad(lambda ps: objective(ps)[0])((p, s))[0]
            dot = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
            ends = [objective((jax.tree.map(lambda a, b: a + t * b, p, v), s)) for t in (eps, -eps)]
            return dot, ends

        eps = 1e-5
        dot, ((plus, pen_plus), (minus, pen_minus)) = jax.tree.map(float, directional(params, stats))
        fd = (plus - minus) / (2 * eps)
        assert abs(dot - fd) <= 1e-7 * max(1.0, abs(fd)), (dot, fd)
        # the penalty's share of the derivative is far above that tolerance (the check sees it)
        assert abs(pen_plus - pen_minus) / (2 * eps) > 1e-4


# ------------------------------------------------------------------------------------------------
# The training loop


@pytest.mark.slow
def test_training_with_penalty_logs_it_resumes_exactly_and_refuses_another_lambda(tmp_path):
    from models import train as T

    def data(n, seed):
        return _batch(n, seed)

    train, test = data(48, 0), data(20, 1)
    cfg = dict(
        arch="resnet8_w0.25",
        epochs=1,
        batch_size=16,
        lr=0.05,
        log_every=1,
        eval_batch_size=20,
        progress=False,
        path_penalty=0.2,
    )
    full = T.train_and_evaluate(C.TrainConfig(**cfg), tmp_path / "full", train_data=train, test_data=test)
    lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    pens = [l["penalty"] for l in lines if l["event"] == "train"]
    assert len(pens) == 3 and all(np.isfinite(p) and p > 0 for p in pens)

    T.train_and_evaluate(
        C.TrainConfig(**cfg, max_steps=1), tmp_path / "part", train_data=train, test_data=test
    )
    with pytest.raises(ValueError, match="path_penalty"):
        T.train_and_evaluate(
            C.TrainConfig(**dict(cfg, path_penalty=0.3), resume=True),
            tmp_path / "part",
            train_data=train,
            test_data=test,
        )
    part = T.train_and_evaluate(
        C.TrainConfig(**cfg, resume=True), tmp_path / "part", train_data=train, test_data=test
    )
    assert part["final_test_acc"] == full["final_test_acc"]
    a, _ = models.load_checkpoint(tmp_path / "full", "last")
    b, _ = models.load_checkpoint(tmp_path / "part", "last")
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_regularizer_experiment_runs_on_the_training_option():
    import argparse

    from experiments import regularizer
    from models.data import Dataset

    args = argparse.Namespace(
        arch="resnet8_w0.25",
        epochs=1,
        batch=10,
        lr=0.05,
        seed=0,
        kind="length",
        space="angular_cka",
        probe=10,
    )
    assert regularizer.train_config(0.3, args).path_penalty == 0.3
    train, test = Dataset(*_batch(20, 0), "synthetic"), Dataset(*_batch(10, 1), "synthetic")
    r = regularizer.run(0.3, args, train, test)
    assert r["final_train_penalty"] > 0 and 0 <= r["test_acc"] <= 1
    for geo in r["geometry"].values():
        assert geo["length"] > 0 and 0 < geo["straightness"] <= 1 + 1e-6
