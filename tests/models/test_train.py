"""Training, checkpoints and exact resumption (models.config / train_state / train / cli / checkpoints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import models
from models import checkpoints as ckpt
from models import cli
from models import config as C
from models import data as D
from models import train as T
from models import train_state as TS

ARCH = "resnet8_w0.25"
_REPO = Path(__file__).resolve().parents[2]


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy data: the label sets the mean brightness of one colour channel."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int32) % 10
    images = rng.integers(0, 120, (n, 32, 32, 3)).astype(np.int32)
    images[..., 0] += labels[:, None, None] * 12
    return np.clip(images, 0, 255).astype(np.uint8), labels


def tiny_config(**overrides) -> T.TrainConfig:
    base = dict(
        arch=ARCH,
        epochs=2,
        batch_size=16,
        lr=0.05,
        warmup_epochs=0.5,
        log_every=2,
        eval_batch_size=16,
        progress=False,
        seed=3,
    )
    base.update(overrides)
    return T.TrainConfig(**base)


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 0), synthetic(20, 1)  # 64 train images -> 4 steps per epoch at batch 16


def model_arrays(workdir, step="last"):
    model, meta = models.load_checkpoint(workdir, step)
    return (
        jax.tree.map(np.asarray, nnx.state(model, nnx.Param)),
        jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)),
        meta,
    )


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------------


def _fresh_state(cfg):
    model = models.create_model(ARCH, rngs=nnx.Rngs(0))
    gd_eval, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    gd_train, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    tx, _ = TS.make_optimizer(cfg, steps_per_epoch=10)
    spec = TS.LossSpec(10, float(cfg.label_smoothing), bool(cfg.augment))
    return gd_train, gd_eval, tx, spec, TS.init_state(params, stats, tx, seed=0)


def test_train_step_lowers_loss_on_fixed_batch():
    cfg = tiny_config(augment=False, weight_decay=0.0, warmup_epochs=0.0, schedule="constant", lr=0.05)
    gd_train, gd_eval, tx, spec, state = _fresh_state(cfg)
    x, y = synthetic(16, 5)
    losses = []
    for _ in range(4):
        metrics = jnp.zeros(3)
        state, metrics = TS.train_step(state, metrics, x, y, graphdef=gd_train, tx=tx, spec=spec)
        losses.append(float(metrics[0] / metrics[2]))
    assert losses[-1] < losses[0]
    assert isinstance(state, TS.TrainState) and int(state.step) == 4
    out = TS.eval_step(
        state.params, state.batch_stats, x, y, np.ones(16, np.float32), graphdef=gd_eval, spec=spec
    )
    assert float(out[2]) == 16.0


def test_train_step_compiles_once_per_setting():
    cfg = tiny_config(label_smoothing=0.1)
    gd_train, _, tx, spec, state = _fresh_state(cfg)
    x, y = synthetic(16, 6)
    state, m = TS.train_step(state, jnp.zeros(3), x, y, graphdef=gd_train, tx=tx, spec=spec)
    size = TS.train_step._cache_size()
    # a fresh model of the same architecture has an equal graphdef: no new trace
    gd2, _, _, _, state2 = _fresh_state(cfg)
    for _ in range(2):
        state2, m = TS.train_step(state2, jnp.zeros(3), x, y, graphdef=gd2, tx=tx, spec=spec)
    assert TS.train_step._cache_size() == size


def test_label_smoothing_is_the_closed_form_smoothed_cross_entropy():
    """Loss sum = sum_i -sum_c q_ic log softmax(z_i)_c with q = (1 - eps) onehot + eps / K (NumPy, float64),
    on the logits of the same model; eps = 0 is the plain cross-entropy. Measured error ~1e-6 (float32)."""
    x, y = synthetic(16, 7)
    valid = np.ones(16, np.float32)
    valid[3] = 0.0  # a padded example does not count
    for smoothing in (0.0, 0.1, 0.3):
        cfg = tiny_config(augment=False, label_smoothing=smoothing)
        _, gd_eval, _, spec, state = _fresh_state(cfg)
        out = TS.eval_step(state.params, state.batch_stats, x, y, valid, graphdef=gd_eval, spec=spec)
        model = nnx.merge(gd_eval, state.params, state.batch_stats)
        z = np.asarray(model(D.normalize(x)), np.float64)
        logp = z - z.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        q = (1 - smoothing) * np.eye(10)[np.asarray(y)] + smoothing / 10
        want = float(np.sum(-(q * logp).sum(1) * valid))
        np.testing.assert_allclose(float(out[0]), want, rtol=1e-5)
        assert float(out[2]) == 15.0


def test_schedules_and_weight_decay_modes():
    cfg = tiny_config(epochs=10, schedule="step", milestones=(0.5, 0.75), warmup_epochs=1.0, lr=0.1)
    sched = TS.make_schedule(cfg, steps_per_epoch=10)
    assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 0.1) < 1e-7
    assert abs(float(sched(49)) - 0.1) < 1e-7 and abs(float(sched(51)) - 0.01) < 1e-8
    assert abs(float(sched(80)) - 0.001) < 1e-9
    cos = TS.make_schedule(tiny_config(epochs=10, schedule="cosine", warmup_epochs=0.0, lr=0.2), 10)
    assert abs(float(cos(0)) - 0.2) < 1e-7 and float(cos(100)) < 1e-6
    # Two steps against the closed forms (momentum mu, lr, wd, a constant gradient g): "l2" puts wd * w into
    # the momentum, "decoupled" (SGDW) adds it after the momentum. The first steps agree; the second ones
    # differ by lr * mu * wd * w0, so swapping the modes fails.
    w0 = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = np.array([[0.3, 0.1], [-0.2, 0.4]])
    mu, lr, wd = 0.9, 0.5, 0.1
    m1 = g + wd * w0
    w1 = w0 - lr * m1
    want = {"l2": [-lr * m1, -lr * (mu * m1 + g + wd * w1)]}
    w1d = w0 - lr * (g + wd * w0)
    want["decoupled"] = [-lr * (g + wd * w0), -lr * (mu * g + g + wd * w1d)]
    for mode in ("l2", "decoupled"):
        tx, _ = TS.make_optimizer(
            tiny_config(
                weight_decay_mode=mode,
                weight_decay=wd,
                momentum=mu,
                schedule="constant",
                warmup_epochs=0.0,
                lr=lr,
                nesterov=False,
            ),
            10,
        )
        params = {"w": jnp.asarray(w0, jnp.float32)}
        opt = tx.init(params)
        for k in range(2):
            upd, opt = tx.update({"w": jnp.asarray(g, jnp.float32)}, opt, params)
            np.testing.assert_allclose(upd["w"], want[mode][k], rtol=1e-6, atol=1e-7)
            params = optax.apply_updates(params, upd)
    assert np.abs(want["l2"][1] - want["decoupled"][1]).min() > 1e-3
    # decoupled weight decay shrinks weights even with zero gradient
    tx, _ = TS.make_optimizer(
        tiny_config(
            weight_decay_mode="decoupled", weight_decay=wd, schedule="constant", lr=lr, warmup_epochs=0.0
        ),
        10,
    )
    params = {"w": jnp.ones((2, 2))}
    upd, _ = tx.update({"w": jnp.zeros((2, 2))}, tx.init(params), params)
    np.testing.assert_allclose(upd["w"], -lr * wd * np.ones((2, 2)), rtol=1e-6)


def test_checkpoint_schedule():
    cfg = tiny_config(epochs=3, ckpt_every_epochs=2)
    assert T.checkpoint_schedule(cfg, steps_per_epoch=10, total_steps=30) == [0, 1, 2, 4, 8, 20, 30]
    assert T.checkpoint_schedule(tiny_config(epochs=2, ckpt_log_spaced=False), 4, 8) == [0, 4, 8]


def test_epoch_order_is_pure():
    a = T.epoch_permutation(7, 3, 100)
    np.testing.assert_array_equal(a, T.epoch_permutation(7, 3, 100))
    assert not np.array_equal(a, T.epoch_permutation(7, 4, 100))


def test_checkpoint_store_round_trip_is_bit_exact(tmp_path):
    model = models.create_model(ARCH, rngs=nnx.Rngs(4))
    state = ckpt.model_state_of(model)
    # perturb batch stats so they are not the init constants
    state["batch_stats"] = jax.tree.map(
        lambda v: v + jax.random.normal(jax.random.key(1), v.shape, v.dtype), state["batch_stats"]
    )
    opt = {
        "opt": TS.make_optimizer(tiny_config(), 4)[0].init(state["params"]),
        "step": jnp.asarray(7, jnp.int32),
        "key": jax.random.key_data(jax.random.key(9)),
    }
    store = ckpt.CheckpointStore(tmp_path)
    store.save(
        7, model_state=state, opt_state=opt, meta={"arch": ARCH, "num_classes": 10}, tags=["scheduled"]
    )
    restored = store.restore(
        7, model_template=ckpt.model_state_of(models.create_model(ARCH)), opt_template=opt
    )
    store.close()
    assert_trees_equal(state, restored["model"])
    assert_trees_equal(opt, restored["opt"])
    assert type(restored["opt"]["opt"]) is type(opt["opt"])
    loaded, meta = models.load_checkpoint(tmp_path, 7)
    assert_trees_equal(state, ckpt.model_state_of(loaded))
    assert meta["step"] == 7 and meta["tags"] == ["scheduled"]
    with pytest.raises(FileNotFoundError):
        models.load_checkpoint(tmp_path, 8)


def test_train_checkpoints_and_resume_exactly(tmp_path, data):
    train, test = data
    full = tmp_path / "full"
    summary = T.train_and_evaluate(tiny_config(), full, train_data=train, test_data=test)
    assert summary["final_step"] == 8 and not summary["interrupted"]
    assert summary["final_test_acc"] is not None and summary["best_step"] in (4, 8)
    # log-spaced steps within epoch 1 (4 steps/epoch) + every epoch; nothing extra left behind
    assert models.list_checkpoints(full) == [0, 1, 2, 4, 8]
    assert models.list_checkpoints(full, scheduled_only=True) == [0, 1, 2, 4, 8]
    index = ckpt.read_index(full)
    assert index["last"] == 8 and index["best"] == summary["best_step"]
    lines = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
    assert {"start", "train", "eval", "checkpoint", "end"} <= {l["event"] for l in lines}
    p_full, s_full, meta = model_arrays(full)
    assert meta["step"] == 8 and meta["epoch"] == 2 and "test_acc" in meta and meta["arch"] == ARCH
    _, _, meta_best = model_arrays(full, "best")
    assert meta_best["step"] == summary["best_step"]

    # Interrupt in the middle of epoch 2 (after step 6), then resume.
    part = tmp_path / "part"
    s1 = T.train_and_evaluate(tiny_config(max_steps=6), part, train_data=train, test_data=test)
    assert s1["interrupted"] and s1["final_step"] == 6
    assert models.list_checkpoints(part) == [0, 1, 2, 4, 6]
    with pytest.raises(FileExistsError):
        T.train_and_evaluate(tiny_config(), part, train_data=train, test_data=test)
    with pytest.raises(ValueError, match="config differs"):
        T.train_and_evaluate(tiny_config(resume=True, lr=0.2), part, train_data=train, test_data=test)
    s2 = T.train_and_evaluate(tiny_config(resume=True), part, train_data=train, test_data=test)
    assert s2["final_step"] == 8 and not s2["interrupted"]
    p_part, s_part, _ = model_arrays(part)
    assert_trees_equal(p_full, p_part)  # bit-for-bit
    assert_trees_equal(s_full, s_part)
    assert models.list_checkpoints(part) == [0, 1, 2, 4, 8]  # the interruption checkpoint was pruned
    # Intermediate checkpoints agree too.
    assert_trees_equal(model_arrays(full, 4)[0], model_arrays(part, 4)[0])
    assert summary["final_test_acc"] == s2["final_test_acc"]


def test_cli_help_and_presets(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--preset" in out and "cpu-small" in out and "--resume" in out
    parser = cli.build_parser()
    cfg = cli.config_from_args(parser.parse_args(["--workdir", "x", "--preset", "paper"]))
    assert (
        cfg.arch == "resnet20" and cfg.epochs >= 160 and cfg.train_subset is None and cfg.schedule == "step"
    )
    cfg = cli.config_from_args(
        parser.parse_args(["--workdir", "x", "--preset", "cpu-small", "--epochs", "3"])
    )
    assert cfg.epochs == 3 and cfg.train_subset == C.PRESETS["cpu-small"]["train_subset"]


def test_cli_has_a_flag_for_every_config_field():
    import dataclasses

    parser = cli.build_parser()
    dests = {a.dest for a in parser._actions}
    for f in dataclasses.fields(C.TrainConfig):
        assert f.name in dests, f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"
    argv = [
        "--workdir",
        "x",
        "--lr",
        "0.3",
        "--nesterov",
        "false",
        "--no-augment",
        "--milestones",
        "0.3",
        "0.6",
    ]
    argv += ["--train-subset", "none", "--max-steps", "5", "--no-log-spaced-ckpts", "--shortcut", "B"]
    argv += ["--model-kwargs", "head=flatten", "--eval-at-checkpoints", "--no-progress"]
    cfg = cli.config_from_args(parser.parse_args(argv))
    assert cfg.lr == 0.3 and cfg.nesterov is False and cfg.augment is False and cfg.milestones == (0.3, 0.6)
    assert cfg.train_subset is None and cfg.max_steps == 5 and cfg.ckpt_log_spaced is False
    assert cfg.model_kwargs == {"head": "flatten", "shortcut": "B"} and cfg.eval_at_checkpoints is True
    assert cfg.progress is False and cfg.resume is False
    # defaults come from the dataclass, not from the parser
    assert cli.config_from_args(parser.parse_args(["--workdir", "x"])) == C.TrainConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--workdir", "x", "--schedule", "exponential"])


def test_cli_resume_reads_the_saved_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config(max_steps=3, lr=0.07).to_dict()))
    parser = cli.build_parser()
    cfg = cli.config_from_args(parser.parse_args(["--workdir", str(tmp_path), "--resume"]))
    assert cfg.lr == 0.07 and cfg.arch == ARCH and cfg.resume and cfg.max_steps is None and cfg.progress


def test_presets_are_valid_configs():
    from models.nets import parse_arch

    for name, fields in C.PRESETS.items():
        cfg = C.TrainConfig(**fields)
        parse_arch(cfg.arch)
        assert C.config_diff(cfg.to_dict(), cfg) == {}, name
    cpu = C.TrainConfig(**C.PRESETS["cpu"])
    assert cpu.train_subset is None and cpu.label_smoothing == 0.1 and cpu.nesterov and cpu.augment
    assert cpu.weight_decay == 5e-4 and cpu.batch_size == 128 and cpu.warmup_epochs > 0
    assert {C.PRESETS[n]["arch"] for n in ("cpu-resnet56", "cpu-resnet20_w2", "cpu-vgg11")} == {
        "resnet56",
        "resnet20_w2",
        "vgg11",
    }


def test_bad_config_and_unknown_arch(tmp_path, data):
    with pytest.raises(ValueError):
        T.TrainConfig(schedule="exponential")
    with pytest.raises(ValueError):
        T.TrainConfig(batch_size=0)
    train, test = data
    with pytest.raises(ValueError, match="resnet20"):
        T.train_and_evaluate(tiny_config(arch="resnet9"), tmp_path / "bad", train_data=train, test_data=test)


def test_missing_or_empty_data_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError):
        T.train_and_evaluate(tiny_config(data_dir=str(tmp_path / "nope")), tmp_path / "run1")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises((ValueError, FileNotFoundError)):
        T.train_and_evaluate(tiny_config(data_dir=str(empty), data_source="folder"), tmp_path / "run2")
    rc = cli.main(
        [
            "--workdir",
            str(tmp_path / "run3"),
            "--arch",
            ARCH,
            "--data-dir",
            str(tmp_path / "nope"),
            "--no-progress",
        ]
    )
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_tfds_mock_data_smoke(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "tfds").mkdir()
    cfg = tiny_config(epochs=1, data_source="tfds", data_dir=str(tmp_path / "tfds"), eval_batch_size=8)
    with tfds.testing.mock_data(num_examples=40):
        summary = T.train_and_evaluate(cfg, tmp_path / "run")
    assert "tensorflow" not in sys.modules
    assert summary["final_step"] == 2 and summary["final_test_acc"] is not None
    model, meta = models.load_checkpoint(tmp_path / "run", "last")
    assert meta["n_train"] == 40


@pytest.mark.parametrize(
    "field,value",
    [
        ("lr", float("nan")),
        ("lr", 0.0),
        ("weight_decay", float("inf")),
        ("weight_decay", -1e-4),
        ("momentum", 1.0),
        ("label_smoothing", 1.0),
        ("bias_lr_scale", 0.0),
        ("muon_lr", float("-inf")),
    ],
)
def test_out_of_range_numbers_are_refused_when_the_config_is_built(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be a finite number in .*, got {value!r}$"):
        T.TrainConfig(**{field: value})


def test_cli_refuses_a_nan_learning_rate_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--workdir", "unused", "--preset", "tiny", "--lr", "nan"])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "lr must be a finite number" in last and "nan" in last


def _all_finite(workdir, step):
    model, _ = models.load_checkpoint(workdir, step)
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(nnx.state(model)))


def test_divergence_stops_the_run_and_a_lower_lr_resumes_it(tmp_path, data):
    train, test = data
    run = tmp_path / "run"
    cfg = dict(warmup_epochs=0.0, log_every=1, ckpt_log_spaced=False)  # checkpoints at steps 0, 4, 8
    with pytest.raises(T.TrainingDiverged) as exc:
        T.train_and_evaluate(tiny_config(lr=1e30, **cfg), run, train_data=train, test_data=test)
    e = exc.value
    assert 1 <= e.first_step == e.step < 4 and e.epoch == 1  # log_every=1: the exact step
    assert f"step {e.step}" in str(e) and "--resume" in str(e)
    assert models.list_checkpoints(run) == [0] and e.checkpoint == 0 and _all_finite(run, 0)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "diverged" and events[-1]["step"] == e.step
    assert not any(ev["event"] == "end" for ev in events)
    assert not (run / "summary.json").exists()
    # the same learning rate diverges again; a lower one continues from the last finite checkpoint
    with pytest.raises(T.TrainingDiverged):
        T.train_and_evaluate(tiny_config(lr=1e30, resume=True, **cfg), run, train_data=train, test_data=test)
    with pytest.warns(UserWarning, match="diverged run"):
        s = T.train_and_evaluate(
            tiny_config(lr=0.05, resume=True, **cfg), run, train_data=train, test_data=test
        )
    assert s["final_step"] == 8 and np.isfinite(s["final_test_loss"])
    assert all(_all_finite(run, step) for step in models.list_checkpoints(run))
    # only the learning rates may change after a divergence
    with pytest.raises(ValueError, match="config differs"):
        T.train_and_evaluate(
            tiny_config(lr=0.05, resume=True, seed=9, **cfg), run, train_data=train, test_data=test
        )


def test_cli_exit_code_3_on_divergence(tmp_path, fake_cifar10_tree, capsys):
    argv = ["--workdir", str(tmp_path / "run"), "--data-dir", str(fake_cifar10_tree), "--arch", ARCH]
    argv += ["--epochs", "2", "--batch-size", "10", "--lr", "1e30", "--no-progress", "--log-every", "1"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "training diverged" in err and "--resume" in err


def test_python_m_models_train_runs_to_a_successful_end_and_overwrite_starts_afresh(
    tmp_path, make_class_tree
):
    """``python -m models.train`` as a user runs it: exit 0, the "done" line with the step count, a summary
    and checkpoints; ``--train-subset`` takes the first images of each class; a second run in the same
    folder is refused (exit 2) unless ``--overwrite``, which starts the run afresh (one "start" event)."""
    tree = make_class_tree(tmp_path / "cifar", per_class=3)  # 30 train / 30 test images
    run = tmp_path / "run"
    argv = ["--workdir", str(run), "--data-dir", str(tree), "--arch", ARCH, "--epochs", "1"]
    argv += ["--batch-size", "10", "--train-subset", "20", "--no-progress", "--log-every", "1"]
    env = dict(os.environ, PYTHONPATH=str(_REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "models.train", *argv],
        cwd=_REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [line for line in proc.stdout.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and f"done: {ARCH} step 2/2 (1 epochs)" in done[0], proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_step"] == 2 and 0.0 <= summary["final_test_acc"] <= 1.0
    assert models.list_checkpoints(run)[-1] == 2
    _, meta = models.load_checkpoint(run, "last")
    assert meta["n_train"] == 20 and meta["seed"] == 0  # 2 images of each class; the default seed
    # the same folder again: refused without --resume / --overwrite, nothing touched
    before = (run / "metrics.jsonl").read_text()
    assert cli.main(argv) == 2
    assert (run / "metrics.jsonl").read_text() == before
    # --overwrite: a fresh run with the new options (one start event, the new seed)
    assert cli.main([*argv, "--overwrite", "--seed", "5"]) == 0
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "end"
    assert models.load_checkpoint(run, "last")[1]["seed"] == 5
