"""End-to-end test of the paths experiment (experiments/paths) on a tiny model and synthetic data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("flax")

import dataclasses  # noqa: E402

from experiments.paths import __main__ as cli  # noqa: E402
from experiments.paths import cache  # noqa: E402
from experiments.paths import config as xc  # noqa: E402
from experiments.paths import pipeline  # noqa: E402
from models.data import Dataset  # noqa: E402


def _synthetic(per_class: int, seed: int) -> Dataset:
    """Class-dependent colour blobs plus noise: learnable, 32x32 RGB uint8."""
    r = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.int32), per_class)
    colours = np.random.default_rng(123).integers(40, 216, (10, 3))
    imgs = colours[labels][:, None, None, :] + r.normal(0, 40, (len(labels), 32, 32, 3))
    return Dataset(np.clip(imgs, 0, 255).astype(np.uint8), labels, f"synthetic-{seed}")


def _opts(tmp_path: Path, training=None, **kw) -> xc.ExperimentConfig:
    fields = dict(
        archs=("resnet8_w0.25",),
        metrics=("angular_shape", "angular_cka"),
        workdir=str(tmp_path / "runs"),
        out=str(tmp_path / "out"),
        progress=False,
        probe_per_class=3,
        capture_batch_size=30,
    )
    fields.update(kw)
    return xc.experiment_config(
        "tiny", training=dict(dict(epochs=1, batch_size=50), **(training or {})), **fields
    )


def test_compact_representation_preserves_distances():
    import jax

    import geopath as gp

    r = np.random.default_rng(0)
    x = r.standard_normal((12, 4, 4, 3)).astype(np.float32)  # p = 48 > n = 12
    z = cache.compact_representation(x)
    assert z.shape[0] == 12 and z.shape[1] <= 12 and z.dtype == np.float32
    np.testing.assert_allclose(z @ z.T, x.reshape(12, -1) @ x.reshape(12, -1).T, rtol=1e-4, atol=1e-4)
    y = np.tanh(x.reshape(12, -1) @ r.standard_normal((48, 7)))
    with jax.enable_x64(True):
        for space in (gp.AngularShape(alpha=1.0), gp.AngularCKA(), gp.Stress()):
            d_raw = float(gp.distance(space, x.astype(np.float64), y))
            d_cmp = float(gp.distance(space, z.astype(np.float64), y))
            assert abs(d_raw - d_cmp) < 1e-5, space
    small = r.standard_normal((12, 5)).astype(np.float32)
    np.testing.assert_array_equal(cache.compact_representation(small), small)


def test_select_steps_and_metrics():
    assert pipeline.select_steps([0, 1, 2, 4, 8, 16, 32], None) == [0, 1, 2, 4, 8, 16, 32]
    sel = pipeline.select_steps([0, 1, 2, 4, 8, 16, 32, 64, 128], 4)
    assert sel[0] == 0 and sel[-1] == 128 and len(sel) <= 4
    assert xc.parse_metric("angular_shape_a0.5").units == "radians"
    with pytest.raises(ValueError):
        xc.parse_metric("nope")
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0


def test_cli_fills_the_training_config_from_the_preset_and_flags():
    from models.config import PRESETS as TRAIN_PRESETS
    from models.config import TrainConfig

    cfg = cli.config_from_args(
        ["--preset", "cpu-small", "--lr", "0.05", "--train-subset", "0", "--archs", "resnet8"]
    )
    assert cfg.archs == ("resnet8",) and cfg.preset == "cpu-small"
    want = TrainConfig(**dict(TRAIN_PRESETS["paths-cpu"], lr=0.05, train_subset=None))
    assert cfg.train_config("resnet14") == dataclasses.replace(want, arch="resnet14")
    cfg = cli.config_from_args(["--preset", "paper", "--no-progress", "--label-smoothing", "0.1"])
    t = cfg.train_config("vgg11")
    assert (
        t.epochs == TRAIN_PRESETS["paper"]["epochs"] and t.ckpt_every_epochs == 4 and t.label_smoothing == 0.1
    )
    assert t.progress is False and cfg.progress is False
    assert cli.main(["--archs", "resnet9"]) == 2


def test_pipeline_end_to_end_and_cache(tmp_path, monkeypatch):
    train, test, probe = _synthetic(10, 0), _synthetic(5, 1), _synthetic(5, 2)
    opts = _opts(tmp_path)
    res = pipeline.run_pipeline(opts, train_data=train, test_data=test, probe_data=probe, log=lambda m: None)

    out = Path(opts.out)
    saved = json.loads((out / "results.json").read_text())
    assert saved["probe"]["n"] == 30 and saved["trajectory_probe"] == saved["probe"]
    arch = "resnet8_w0.25-s0"  # the network's name: architecture and seed
    assert list(saved["archs"]) == [arch] == list(saved["final_test_acc"])
    assert saved["archs"][arch]["family"] == "resnet" and saved["archs"][arch]["seed"] == 0
    assert (tmp_path / "runs" / arch / "summary.json").exists()
    a = saved["archs"][arch]
    assert a["steps"][0] == 0 and len(a["steps"]) >= 3
    assert a["layers"][0] == "input" and a["layers"][-1] == "logits"
    for metric in opts.metrics:
        m = saved["metrics"][metric]
        fin = m["per_arch"][arch]["final"]
        L = len(a["layers"])
        assert len(fin["dist_to_target"]) == L and len(fin["turning"]) == L - 2
        assert fin["length"] > 0 and 0 < fin["straightness"]
        tr = m["per_arch"][arch]["training"]
        assert len(tr["length"]) == len(a["steps"])
        assert len(m["joint"]["labels"]) == L + 1
        assert np.all(np.isfinite(np.asarray(m["joint"]["distances"], float)))
        # one probe set: the final geometry is the last checkpoint's geometry over training
        np.testing.assert_allclose(fin["dist_to_target"], tr["dist_to_target"][-1], rtol=1e-9)
        np.testing.assert_allclose(fin["straightness"], tr["straightness"][-1], rtol=1e-9)
        # the findings restate the analysis: steps closer to the target, position, the t interval
        pn = saved["findings"]["metrics"][metric]["per_network"][arch]
        d = np.asarray(fin["dist_to_target"])
        assert pn["closer_steps"] == int(np.sum(np.diff(d) < 0)) and pn["steps"] == L - 1
        pos = np.asarray(fin["dist_to_input"]) / (np.asarray(fin["dist_to_input"]) + d)
        np.testing.assert_allclose(pn["position"], pos, rtol=1e-12)
        assert pn["position"][0] == 0.0
        iv = m["per_arch"][arch]["interval"]
        assert len(iv["lo"]) == L and all(lo <= t <= hi for lo, t, hi in zip(iv["lo"], iv["t"], iv["hi"]))
        for t, t_proj, projected in zip(iv["t"], fin["proj_t"], iv["projected"]):
            assert t == t_proj or not projected  # the analysis' projection, unless outside [-1, 2]
    figs = saved["figures"]
    assert set(figs) >= {"angular_shape", "angular_cka", "accuracy"}
    for files in figs.values():
        for f in files:
            assert os.path.getsize(out / f) > 1024, f
    report = (out / "report.md").read_text()
    assert "straightness" in report and "figures/paths_mds_angular_shape.png" in report
    # the default embedding is today's: classical MDS only
    assert saved["options"]["embedding"] == "classical" and "spherical_mds" not in m["joint"]
    assert not any("spherical" in f for files in figs.values() for f in files)
    first = res["cache"]
    assert first["captures"] == len(a["steps"]) and first["cache_hits"] == 0
    for metric in opts.metrics:
        _recompute_from_cache(tmp_path, saved, metric, arch)

    # Rerun: the finished run and the cached representations are reused; nothing is trained or captured.
    def boom(*args, **kwargs):
        raise AssertionError("should have been reused")

    import models.train

    monkeypatch.setattr(models.train, "train_and_evaluate", boom)
    monkeypatch.setattr(cache, "capture_checkpoint", boom)
    res2 = pipeline.run_pipeline(
        _opts(tmp_path, metrics=("angular_cka",), embedding="spherical"),
        train_data=train,
        test_data=test,
        probe_data=probe,
        log=lambda m: None,
    )
    assert res2["cache"]["captures"] == 0 and res2["cache"]["cache_hits"] == len(a["steps"])
    _check_spherical(out, json.loads((out / "results.json").read_text()))
    np.testing.assert_allclose(
        res2["metrics"]["angular_cka"]["per_arch"][arch]["final"]["length"],
        res["metrics"]["angular_cka"]["per_arch"][arch]["final"]["length"],
        rtol=1e-12,
    )

    # A different training configuration in the same workdir is refused (not silently mixed).
    with pytest.raises(ValueError, match="different training configuration"):
        pipeline.run_pipeline(
            _opts(tmp_path, training=dict(lr=0.01)),
            train_data=train,
            test_data=test,
            probe_data=probe,
            log=lambda m: None,
        )


def _recompute_from_cache(tmp_path: Path, saved, metric: str, arch: str) -> None:
    """The final path and the joint matrix of ``results.json`` recomputed with geopath's own functions from
    the representation cache on disk (the last checkpoint's entry), not from the pipeline's arrays."""
    import geopath as gp

    entries = sorted((tmp_path / "runs").rglob("step*-probe*.npz"))
    last = max(entries, key=lambda p: int(p.name[4:13]))
    with np.load(last, allow_pickle=False) as z:
        names = [str(n) for n in z["names"]]
        reps = [np.asarray(z[f"layer{i:03d}"], np.float64) for i in range(len(names))]
    a = saved["archs"][arch]
    keep = [names.index(n) for n in a["layers"]]
    space = xc.parse_metric(metric).make()
    labels = np.repeat(np.arange(10), 3)  # the probe set: 3 of each class, in class order
    m = saved["metrics"][metric]
    with jax.enable_x64(True):
        pts = [space.point(reps[i]) for i in keep]
        target = gp.target_point(space, labels, num_classes=10)
        ref = gp.analyze_path(space, pts, target)
        for f in ("length", "straightness", "steps", "turning", "dist_to_target", "proj_t"):
            np.testing.assert_allclose(
                m["per_arch"][arch]["final"][f], np.asarray(getattr(ref, f)), rtol=1e-7, atol=1e-9, err_msg=f
            )
        every = pts + [target]
        D = np.array([[float(space.distance(p, q)) for q in every] for p in every])
    np.testing.assert_allclose(np.asarray(m["joint"]["distances"], float), D, rtol=1e-7, atol=1e-9)


def test_analysis_joint_matrix_and_comparisons_recomputed_with_geopath():
    """analyze_metric on two hand-made networks (4 and 3 layers of mixed widths, two checkpoints): the final
    paths, the geometry over training, the joint matrix and the comparison at matched relative depth, each
    recomputed from geopath's primitives (distance, geodesic) and analyze_path. Measured error ~1e-15."""
    import geopath as gp

    rng = np.random.default_rng(26)
    labels = np.repeat(np.arange(10), 2)
    x0 = rng.standard_normal((20, 6))

    def net(widths):
        return {
            s: [x0] + [x0 @ rng.standard_normal((6, w)) + rng.standard_normal((20, w)) for w in widths]
            for s in (0, 5)
        }

    runs = {}
    for name, widths in (("a-s0", (5, 8, 10)), ("b-s0", (4, 10))):
        reps = net(widths)
        runs[name] = dict(
            steps=[0, 5],
            names=[f"l{i}" for i in range(len(reps[5]))],
            keep=list(range(len(reps[5]))),
            reps=reps,
        )
    out = pipeline.analyze_metric("angular_cka", runs, labels, precision="float64", progress=False)
    space = gp.AngularCKA()
    with jax.enable_x64(True):
        target = gp.target_point(space, labels, num_classes=10)
        pts = {k: [space.point(x) for x in r["reps"][5]] for k, r in runs.items()}
        for k, r in runs.items():
            for step_i, step in enumerate(r["steps"]):
                ref = gp.analyze_path(space, [space.point(x) for x in r["reps"][step]], target)
                got = out["per_arch"][k]["training"]
                np.testing.assert_allclose(got["length"][step_i], float(ref.length), rtol=1e-10)
                np.testing.assert_allclose(
                    got["dist_to_target"][step_i], np.asarray(ref.dist_to_target), rtol=1e-10
                )
            np.testing.assert_allclose(
                out["per_arch"][k]["final"]["turning"],
                out["per_arch"][k]["training"]["turning"][-1],
                rtol=1e-12,
            )
        every = pts["a-s0"] + pts["b-s0"] + [target]
        D = np.array([[float(space.distance(p, q)) if p is not q else 0.0 for q in every] for p in every])
        np.testing.assert_allclose(np.asarray(out["joint"]["distances"], float), D, rtol=0, atol=1e-10)
        assert out["joint"]["labels"] == [f"a-s0:l{i}" for i in range(4)] + [
            f"b-s0:l{i}" for i in range(3)
        ] + ["target"]
        # matched relative depth 0, 1/3, 2/3, 1: a's layers; b's 3 layers resampled on their geodesics
        c = out["comparisons"]["a-s0 vs b-s0"]
        pb = pts["b-s0"]
        resampled = [pb[0], space.geodesic(pb[0], pb[1], 2 / 3), space.geodesic(pb[1], pb[2], 1 / 3), pb[2]]
        aligned = [float(space.distance(p, q)) for p, q in zip(pts["a-s0"], resampled)]
    np.testing.assert_allclose(c["depth"], np.linspace(0, 1, 4), atol=1e-15)
    np.testing.assert_allclose(c["aligned"], aligned, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c["mean_aligned"], np.mean(aligned), rtol=0, atol=1e-10)
    assert list(out["comparisons"]) == ["a-s0 vs b-s0"]


def _check_spherical(out: Path, saved) -> None:
    """The spherical MDS of an angular metric: finite unit vectors whose great-circle distances fit the joint
    matrix (the recorded stress, far below random points'), drawn instead of the classical figure."""
    j = saved["metrics"]["angular_cka"]["joint"]
    sph = j["spherical_mds"]
    D = np.asarray(j["distances"], float)
    X = np.asarray(sph["coords"], float)
    assert sph["dim"] == 3 and X.shape == (len(D), 3) and np.all(np.isfinite(X))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-9)

    def stress(X):
        E = np.arccos(np.clip(X @ X.T, -1.0, 1.0))
        off = ~np.eye(len(D), dtype=bool)
        return np.sqrt(np.sum((D - E)[off] ** 2) / np.sum(D[off] ** 2))

    assert abs(stress(X) - sph["stress"]) < 1e-6
    rng = np.random.default_rng(0)
    chance = []
    for _ in range(200):
        R = rng.standard_normal(X.shape)
        chance.append(stress(R / np.linalg.norm(R, axis=1, keepdims=True)))
    assert sph["stress"] < 0.5 * min(chance), (sph["stress"], min(chance))
    files = saved["figures"]["angular_cka"]
    assert "figures/paths_spherical_angular_cka.png" in files
    assert not any("paths_mds" in f for f in files)  # "spherical": instead of the classical figure
    for f in files:
        assert os.path.getsize(out / f) > 1024, f
    report = (out / "report.md").read_text()
    assert "figures/paths_spherical_angular_cka.png" in report and "spherical MDS" in report


def test_spherical_embedding_only_for_angles_and_the_option_is_checked():
    D = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
    skipped = pipeline.spherical_embedding(D, units="input-distance units")
    assert skipped["coords"] is None and skipped["stress"] is None and "not angles" in skipped["skipped"]
    with pytest.raises(ValueError, match=r"embedding must be one of \('classical', 'spherical', 'both'\)"):
        xc.experiment_config("tiny", embedding="sphere").validate()
    assert cli.config_from_args(["--preset", "tiny", "--embedding", "both"]).embedding == "both"
    assert xc.experiment_config("cpu").embedding == "classical"
    with pytest.raises(SystemExit):
        cli.config_from_args(["--embedding", "tsne"])


def test_azimuthal_map_keeps_distances_to_the_centre_and_along_great_circles():
    from experiments.paths.report import azimuthal_map

    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 3)) + [0.0, 0.0, 4.0]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    P = azimuthal_map(X)
    c = X.mean(0) / np.linalg.norm(X.mean(0))
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), np.arccos(np.clip(X @ c, -1, 1)), atol=1e-12)
    # points on one great circle through the centre map to a line with their exact angular spacing
    a = np.array([1.0, 0.0, 0.0])
    t = np.array([-0.6, -0.2, 0.1, 0.5, 0.9])
    G = np.outer(np.cos(t), [0.0, 0.0, 1.0]) + np.outer(np.sin(t), a)
    Q = azimuthal_map(np.vstack([G, G * [-1, 1, 1]]))  # symmetric about the centre (0, 0, 1)
    np.testing.assert_allclose(np.linalg.norm(Q[:5] - Q[:1], axis=1), t - t[0], atol=1e-12)
    np.testing.assert_array_equal(azimuthal_map(X), P)  # deterministic


def test_cpu_report_preset_reproduces_the_committed_report_configuration():
    """The committed CPU report was made with ``--preset cpu-report``: the preset must still give its options
    (or the report's numbers could no longer be reproduced, and its cached runs would not be reused), and
    the report must hold every network's accuracy by name (family and seed) and the probe sizes."""
    root = Path(__file__).resolve().parents[2]
    res = json.loads((root / "docs" / "results" / "cpu" / "results.json").read_text())
    saved = res["options"]
    cfg = xc.experiment_config("cpu-report")
    assert saved["preset"] == "cpu-report"
    assert list(cfg.archs) == list(saved["archs"]) and list(cfg.metrics) == list(saved["metrics"])
    for k in ("probe_split", "probe_per_class", "trajectory_per_class", "probe_seed", "precision"):
        assert getattr(cfg, k) == saved[k], k
    assert list(cfg.run_seeds()) == list(saved["seeds"]) and cfg.max_checkpoints == saved["max_checkpoints"]
    names = [n for n, _, _ in cfg.networks()]
    assert list(res["final_test_acc"]) == names and all(0.8 < a < 1 for a in res["final_test_acc"].values())
    assert res["probe"]["n"] == 10 * cfg.probe_per_class
    assert res["trajectory_probe"]["n"] == 10 * cfg.trajectory_probe_per_class()
    assert "/work/" not in json.dumps(res) and str(root) not in json.dumps(res)  # no machine paths
    training = saved.get("training", saved)  # older results.json files keep the training fields flat
    want = {f.name for f in dataclasses.fields(cfg.training)} & set(training) - {"data_dir", "data_source"}
    assert len(want) >= 12
    got = cfg.training.to_dict()
    for k in sorted(want):
        assert got[k] == training[k], k


def test_sharded_analysis_gives_the_same_numbers(monkeypatch):
    """``--shard`` passes ``gp.device_mesh()`` to the analysis: the sharded code path (here over the one
    CPU device; the geopath sharding tests cover 2, 3 and 8 devices) must give the same numbers."""

    import geopath as gp

    r = np.random.default_rng(3)
    labels = np.arange(20) % 10
    x0 = r.standard_normal((20, 6))
    runs = {
        arch: dict(
            steps=[0, 4],
            names=["input", "a", "b", "logits"],
            keep=[0, 1, 2, 3],
            reps={
                s: [x0] + [np.tanh(x0 @ r.standard_normal((6, w))) for w in (5 + k, 4, 10)] for s in (0, 4)
            },
        )
        for k, arch in enumerate(("net1", "net2"))
    }
    plain = pipeline.analyze_metric("angular_cka", runs, labels, precision="float64", progress=False)
    meshes = []
    for name in ("analyze_checkpoints", "pairwise_distances"):
        fn = getattr(gp, name)
        monkeypatch.setattr(gp, name, lambda *a, _fn=fn, **k: meshes.append(k.get("mesh")) or _fn(*a, **k))
    sharded = pipeline.analyze_metric(
        "angular_cka", runs, labels, precision="float64", progress=False, mesh=gp.device_mesh()
    )
    for arch in runs:
        for f, a in plain["per_arch"][arch]["training"].items():
            np.testing.assert_allclose(sharded["per_arch"][arch]["training"][f], a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sharded["joint"]["distances"], plain["joint"]["distances"], rtol=0, atol=1e-12)
    assert len(meshes) == 3 and all(m is not None for m in meshes)  # 2 networks + the joint matrix
    from experiments.paths.__main__ import config_from_args

    assert config_from_args(["--preset", "tiny", "--shard"]).shard
    assert not config_from_args(["--preset", "tiny"]).shard


def _jpeg_tree(root: Path, per_class: dict[str, int]) -> Path:
    """root/<split>/<class>/NNNN.jpg: class-coloured 32x32 images plus noise (learnable, not trivial)."""
    from PIL import Image

    from models.data import CLASSES

    rng = np.random.default_rng(0)
    colours = np.random.default_rng(123).integers(40, 216, (10, 3))
    for split, k in per_class.items():
        for c, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(k):
                img = np.clip(colours[c] + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i:04d}.jpg", quality=95)
    return root


def test_cli_trains_every_seed_in_its_own_process_and_splits_the_probe_sets(tmp_path, monkeypatch):
    """Two seeds of one architecture, each trained by ``python -m experiments.paths.train_one`` with the CPU
    training flags (which this process does not have); the final geometry on 4 images a class, the
    geometry over training on the first 2 of them."""
    import os

    from models.xla_cpu import CPU_TRAINING_FLAGS

    data = _jpeg_tree(tmp_path / "data", {"train": 6, "test": 4})
    monkeypatch.setenv("GEOPATH_CACHE_DIR", str(tmp_path / "cache"))
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["--preset", "tiny", "--seeds", "0,1", "--metrics", "angular_cka", "--no-progress"]
    argv += ["--data-dir", str(data), "--data-source", "folder", "--train-subset", "0", "--test-subset", "0"]
    argv += ["--epochs", "1", "--batch-size", "20", "--probe-per-class", "4", "--trajectory-per-class", "2"]
    assert cli.main(argv + ["--workdir", str(runs), "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    names = ["resnet8_w0.25-s0", "resnet8_w0.25-s1"]
    assert list(saved["archs"]) == names and list(saved["final_test_acc"]) == names
    assert [saved["archs"][n]["seed"] for n in names] == [0, 1]
    assert saved["probe"]["n"] == 40 and saved["trajectory_probe"]["n"] == 20
    assert saved["probe"]["hash"] != saved["trajectory_probe"]["hash"]
    assert set(saved["trajectory_probe"]["indices"]) < set(saved["probe"]["indices"])
    assert str(tmp_path) not in json.dumps(saved["probe"])  # no machine paths in the probe entries
    for n in names:
        start = json.loads((runs / n / "metrics.jsonl").read_text().splitlines()[0])
        assert all(flag in start["xla_flags"] for flag in CPU_TRAINING_FLAGS), start
        assert json.loads((runs / n / "config.json").read_text())["seed"] == saved["archs"][n]["seed"]
    assert not any(flag in os.environ.get("XLA_FLAGS", "") for flag in CPU_TRAINING_FLAGS)
    # different seeds, different networks: their final paths differ
    per = saved["metrics"]["angular_cka"]["per_arch"]
    assert per[names[0]]["final"]["length"] != per[names[1]]["final"]["length"]
    assert len(per[names[0]]["training"]["length"]) == len(saved["archs"][names[0]]["steps"])
    f = saved["findings"]["metrics"]["angular_cka"]
    assert f["families"]["resnet"]["straightness"]["n"] == 2
    assert "vs" in next(iter(saved["metrics"]["angular_cka"]["comparisons"]))
    report = (out / "report.md").read_text()
    assert "resnet8_w0.25-s1" in report and "What the data support" in report
