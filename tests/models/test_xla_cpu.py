"""models.xla_cpu: the CPU training flags, how they are applied, and the record that guards resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from models import train as T
from models import xla_cpu

YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def test_with_cpu_training_flags_appends_missing_flags_only():
    assert xla_cpu.with_cpu_training_flags("").split() == list(xla_cpu.CPU_TRAINING_FLAGS)
    mine = "--xla_force_host_platform_device_count=4"
    assert xla_cpu.with_cpu_training_flags(mine).split() == [mine, *xla_cpu.CPU_TRAINING_FLAGS]
    # A flag the user set wins, whatever its value, and is not repeated.
    out = xla_cpu.with_cpu_training_flags("--xla_cpu_use_xnnpack=true").split()
    assert out == ["--xla_cpu_use_xnnpack=true", YNN_OFF]
    out = xla_cpu.with_cpu_training_flags(" --xla_cpu_experimental_ynn_fusion_type=dot  ").split()
    assert out == ["--xla_cpu_experimental_ynn_fusion_type=dot", "--xla_cpu_use_xnnpack=false"]
    # Idempotent.
    once = xla_cpu.with_cpu_training_flags(mine)
    assert xla_cpu.with_cpu_training_flags(once) == once


_CHILD = """
import json, os, re
import jax, jax.numpy as jnp
from models.xla_cpu import use_cpu_training_flags
applied = use_cpu_training_flags()
f = jax.jit(lambda x, w: jax.nn.relu(jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).sum())
text = f.lower(jnp.ones((8, 16, 16, 16)), jnp.ones((3, 3, 16, 16))).compile().as_text()
print(json.dumps(dict(applied=applied, flags=os.environ["XLA_FLAGS"], ynn="__ynn_fusion" in text)))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX subprocess environment")
def test_flags_take_effect_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["applied"] is True
    assert res["flags"].split() == list(xla_cpu.CPU_TRAINING_FLAGS)
    # The compiled convolution + ReLU + sum is XLA's own fusion, not a YNNPACK one.
    assert res["ynn"] is False


def test_after_the_backend_started_nothing_changes(monkeypatch):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the backend is running in this process
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=true")
    with pytest.warns(UserWarning, match="after JAX started its backend"):
        assert xla_cpu.use_cpu_training_flags() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xla_cpu.use_cpu_training_flags(quiet=True) is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true"


def _config(**overrides) -> T.TrainConfig:
    base = dict(arch="resnet8_w0.25", epochs=1, batch_size=16, eval_batch_size=16, progress=False)
    return T.TrainConfig(**{**base, **overrides})


def test_run_records_its_flags_and_resume_with_others_warns(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (48, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(48, dtype=np.int32) % 10
    train, test = (images[:32], labels[:32]), (images[32:], labels[32:])  # 2 steps per epoch
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=false")
    run = tmp_path / "run"
    T.train_and_evaluate(_config(max_steps=1), run, train_data=train, test_data=test)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["xla_flags"] == "--xla_cpu_use_xnnpack=false"
    # Same flags (other spacing): no warning.
    monkeypatch.setenv("XLA_FLAGS", " --xla_cpu_use_xnnpack=false ")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        T.train_and_evaluate(_config(max_steps=2, resume=True), run, train_data=train, test_data=test)
    # Other flags: a warning naming both.
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.warns(UserWarning, match="not bit-identical") as rec:
        T.train_and_evaluate(_config(resume=True), run, train_data=train, test_data=test)
    assert "--xla_cpu_use_xnnpack=false" in str(rec[0].message)
