"""One training process per run folder (models.train.run_lock), across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import models
from models import train as T

ROOT = Path(__file__).resolve().parents[2]


def _cmd(workdir: Path, tree: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "models.train", "--workdir", str(workdir), "--data-dir", str(tree),
        "--arch", "resnet8_w0.25", "--epochs", "40", "--batch-size", "10", "--lr", "0.05",
        "--no-progress", "--seed", "3", *extra,
    ]  # fmt: skip


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the first trainer ended early:\n{proc.stderr.read()[-3000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _arrays(workdir: Path) -> list[np.ndarray]:
    model, _ = models.load_checkpoint(workdir, "last")
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def test_second_trainer_is_refused_and_the_first_finishes_as_a_lone_run(tmp_path, fake_cifar10_tree):
    run = tmp_path / "run"
    first = _start(_cmd(run, fake_cifar10_tree))
    _wait_for(lambda: (run / T.LOCK_OWNER_FILE).exists() and (run / "checkpoints").is_dir(), first)
    second = subprocess.run(
        _cmd(run, fake_cifar10_tree, "--resume"), cwd=ROOT, capture_output=True, text=True
    )
    assert second.returncode == 4, second.stderr[-3000:]
    lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(run) in lines[0] and f"pid {first.pid}" in lines[0], second.stderr
    assert first.poll() is None, "the second process must be refused while the first still runs"
    overwrite = subprocess.run(
        _cmd(run, fake_cifar10_tree, "--overwrite"), cwd=ROOT, capture_output=True, text=True
    )
    assert overwrite.returncode == 4 and "in use by another training process" in overwrite.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    # The first run is exactly what a lone run produces.
    alone = tmp_path / "alone"
    assert subprocess.run(_cmd(alone, fake_cifar10_tree), cwd=ROOT, capture_output=True).returncode == 0
    for a, b in zip(_arrays(run), _arrays(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_step"] == summary["total_steps"] and not (run / T.LOCK_OWNER_FILE).exists()


def test_kill_9_leaves_no_stale_lock_and_resume_finishes(tmp_path, fake_cifar10_tree):
    run = tmp_path / "run"
    proc = _start(_cmd(run, fake_cifar10_tree))
    _wait_for(
        lambda: len(models.list_checkpoints(run)) >= 3 if (run / "checkpoints").is_dir() else False, proc
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / T.LOCK_OWNER_FILE).exists()  # the owner note is stale; the OS lock died with the process
    done = subprocess.run(_cmd(run, fake_cifar10_tree, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_step"] == summary["total_steps"] and not summary["interrupted"]


def test_readers_do_not_take_the_lock(tmp_path):
    """load_checkpoint works while a trainer holds the folder; a second holder in-process is refused."""
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), (np.arange(20) % 10).astype(np.int32))
    cfg = T.TrainConfig(arch="resnet8_w0.25", epochs=1, batch_size=10, progress=False)
    T.train_and_evaluate(cfg, tmp_path, train_data=data, test_data=data)
    with T.run_lock(tmp_path):
        model, meta = models.load_checkpoint(tmp_path, "last")  # a reader: no lock needed
        assert meta["step"] == 2
        code = "import sys; from models.train import run_lock\nwith run_lock(sys.argv[1]): pass"
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
        )
        assert (
            other.returncode != 0
            and "RunLockedError" in other.stderr
            and f"pid {os.getpid()}" in other.stderr
        )
    # released: the next holder gets it
    with T.run_lock(tmp_path):
        pass
