"""Data-parallel training (``TrainConfig.devices``): the same run as on one device, up to float round-off.

XLA fixes the number of CPU devices when the backend starts, so the multi-device runs happen in a
subprocess (``tests/models/data_parallel_worker.py``) with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
as in ``tests/geopath/test_sharding.py``.

Tolerance: the data-parallel step is the single-device program partitioned by the compiler; only the
order of the float32 sums over the batch changes (the gradient is summed per device, then all-reduced;
the BatchNorm mean and variance likewise). Each such sum differs by a few ulp (float32 eps = 6e-8), and a
few SGD steps at the tiny run's learning rate carry that over to the parameters with little growth:
measured, the parameters and BatchNorm statistics of 2 and 8 devices stay within 1e-7 (relative, 2-norm
over all of them) of one device for the whole 2-epoch run. The bound 1e-5 leaves two orders of magnitude
for other CPUs and XLA versions, and catches every real fault: statistics computed per device (2 examples
each, not 16), a gradient that is not reduced over the devices, or crops that depend on the layout
change the step-1 and step-2 checkpoints by 1e-3 or more.

That run is without augmentation; with augmentation on (the slow test), the single-device run itself
amplifies any perturbation of 1e-7 to about 1e-4 within 8 steps (measured: perturbing its initial
parameters by 1e-7 gives the same curve as running it on 2 devices), so there the bound 1e-5 holds for the
first two steps and the later checkpoints are held to 1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from models import cli
from models import config as C
from models import train as T

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


def _worker(jobs: list[str], *, timeout: float = 400) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.models.data_parallel_worker", *jobs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["device_count"] == 8
    return res


def _check_run(row: dict, *, tol_late: float = TOL) -> None:
    """One data-parallel run of the worker's ``train`` job against the single-device run."""
    d = row["devices"]
    assert row["checkpoints"] == [0, 1, 2, 4, 8]
    assert row["summary_devices"] == d and row["meta_devices"] == d
    assert row["config_devices"] == (None if d == 1 else d)
    for step, diff in row["rel_diff"].items():
        bound = TOL if int(step) <= 2 else tol_late
        assert diff["params"] <= bound and diff["stats"] <= bound, (d, step, diff)
    if d == 1:  # devices=1 is the single-device path: bit-for-bit
        assert all(v == {"params": 0.0, "stats": 0.0} for v in row["rel_diff"].values())
    acc, ref_acc = row["test_acc"]
    loss, ref_loss = row["test_loss"]
    assert abs(acc - ref_acc) <= 1 / row["test_n"] and abs(loss - ref_loss) <= tol_late * 10 * abs(ref_loss)
    assert row["n_train_calls"] == 8
    # What the loop passed to the jitted steps: the batch split over the devices, the state replicated.
    for seen in row["seen_train"] + row["seen_eval"]:
        if d == 1:
            assert seen["images_type"] == "ndarray"  # host arrays, as before data parallelism
            continue
        assert seen["images_spec"] == "P('data',)" and seen["images_devices"] == d
        assert seen["labels_devices"] == d and seen["shard_rows"] == [16 // d]
        assert seen["state_replicated"] and seen["state_devices"] == [d]
    assert row["new_compiles_first_run"] == (0 if d == 1 else 1)
    if "repeat_identical" in row:
        assert row["repeat_identical"] and row["new_compiles_second_run"] == 0


def test_data_parallel_equals_one_device():
    res = _worker(["train:1,8", "augment:8", "refuse:2,8", "errors"])
    rows = res["train:1,8"]
    assert [r["devices"] for r in rows] == [None, 1, 8]
    for row in rows[1:]:
        _check_run(row)
    assert res["augment:8"] is True  # crops and flips do not depend on the layout of the batch
    # Resuming on another device count is refused, naming both counts.
    assert "cannot resume" in res["refuse"] and "on 8 device(s)" in res["refuse"]
    assert "trained on 2" in res["refuse"] and "--devices 2" in res["refuse"]
    err = res["errors"]
    assert "devices=16" in err["too_many"] and "jax.device_count()=8" in err["too_many"]
    assert err["too_many_left_nothing"]  # refused before the workdir was touched
    assert "devices=9" in err["helper_too_many"] and "=8" in err["helper_too_many"]
    assert "batch_size=16" in err["indivisible"] and "devices=3" in err["indivisible"]
    assert "devices" in err["zero"] and err["one_is_none"]


@pytest.mark.slow
def test_data_parallel_two_devices_augmented_and_resume():
    res = _worker(["train:2", "train:2,8:aug", "resume:2,8"], timeout=900)
    _check_run(res["train:2"][1])
    for row in res["train:2,8:aug"][1:]:
        _check_run(row, tol_late=1e-3)
    r = res["resume"]
    assert r["interrupted"] and r["final_step"] == 8
    assert r["bit_identical"]  # resumed on the same device count: bit-for-bit the uninterrupted run
    assert r["metrics_devices"] == [2, 2] and "trained on 2" in r["other_count"]


# ---------------------------------------------------------------------------------------------------------
# in this process (one CPU device)
# ---------------------------------------------------------------------------------------------------------


def test_devices_option_is_checked():
    assert C.TrainConfig(devices=1).devices is None  # one device: the same saved config as None
    assert C.TrainConfig(batch_size=64, devices=8).to_dict()["devices"] == 8
    with pytest.raises(ValueError, match=r"batch_size=50 is not divisible by devices=8"):
        C.TrainConfig(batch_size=50, devices=8)
    for bad in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="devices must be a positive int or None"):
            C.TrainConfig(devices=bad)
    # devices is part of the run: a run does not resume on another count (refused, see the worker test).
    assert "devices" not in C.RESUME_MUTABLE
    assert C.config_diff(C.TrainConfig(devices=2).to_dict(), C.TrainConfig(devices=4)) == {"devices": (2, 4)}
    assert (
        C.config_diff({k: v for k, v in C.TrainConfig().to_dict().items() if k != "devices"}, C.TrainConfig())
        == {}
    )


def test_data_parallel_mesh_errors_name_both_counts():
    assert T.data_parallel(None) is None and T.data_parallel(1) is None
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"devices={n + 1} exceeds jax.device_count\(\)={n}"):
        T.data_parallel(n + 1)
    with pytest.raises(ValueError, match="positive int"):
        T.data_parallel(0)


def test_devices_flag():
    parser = cli.build_parser()
    cfg = cli.config_from_args(parser.parse_args(["--workdir", "x", "--preset", "cpu", "--devices", "8"]))
    assert cfg.devices == 8 and cfg.batch_size == 128
    assert cli.config_from_args(parser.parse_args(["--workdir", "x", "--devices", "none"])).devices is None
    with pytest.raises(SystemExit):  # 128 is not a multiple of 3: a parser error, before any work
        cli.main(["--workdir", "x", "--preset", "cpu", "--devices", "3"])


@pytest.mark.slow
def test_train_throughput_devices_smoke():
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/train_throughput.py",
            "--smoke",
            "--no-torch",
            "--archs",
            "resnet8_w0.25",
        ]
        + ["--devices", "2", "--xla-flags=--xla_force_host_platform_device_count=2"],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "JAX devices 2 of 2" in proc.stdout and "resnet8_w0.25" in proc.stdout
