"""The XLA CPU deadlock workaround (geopath/_src/xla_workaround.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from geopath._src import xla_workaround

# vmap of project over two zero-padded 200-point shapes: without the workaround this program never
# finishes on jaxlib 0.10 CPU (all XLA worker threads idle, block_until_ready waits forever).
_REPRO = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import geopath as gp
    sp = gp.AngularShape(alpha=1.0)
    rng = np.random.default_rng(0)
    pts = [sp.point(jnp.asarray(rng.standard_normal((200, w)), jnp.float32)) for w in (400, 400, 100, 8)]
    P = gp.stack_points(sp, pts)
    f = jax.jit(lambda P: jax.vmap(lambda c: gp.project(sp, P[0], P[-1], c).t)(P[1:-1]))
    for _ in range(3):
      t = np.asarray(f(P))
    assert np.all(np.isfinite(t)), t
    print("ok", t)
""")


def test_vmapped_projection_completes():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GEOPATH_XLA_WORKAROUND")}
    env["JAX_PLATFORMS"] = "cpu"
    try:
        out = subprocess.run(
            [sys.executable, "-c", _REPRO], env=env, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("vmapped gp.project did not finish in 120 s: the XLA CPU deadlock is back")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


def test_apply_sets_flag_once_and_respects_user_choices(monkeypatch):
    monkeypatch.setattr("jax._src.xla_bridge.backends_are_initialized", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    monkeypatch.delenv("GEOPATH_XLA_WORKAROUND", raising=False)
    assert xla_workaround.apply()
    assert os.environ["XLA_FLAGS"] == f"--xla_foo=1 {xla_workaround.FLAG}"
    assert xla_workaround.apply()  # idempotent
    assert os.environ["XLA_FLAGS"].count("concurrency_optimized") == 1

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true")
    assert not xla_workaround.apply()  # the user's explicit value wins
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_concurrency_optimized_scheduler=true"

    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("GEOPATH_XLA_WORKAROUND", "0")
    assert not xla_workaround.apply()
    assert os.environ["XLA_FLAGS"] == ""


def test_apply_warns_when_backend_already_started(monkeypatch):
    monkeypatch.setattr("jax._src.xla_bridge.backends_are_initialized", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv("GEOPATH_XLA_WORKAROUND", raising=False)
    with pytest.warns(RuntimeWarning, match="imported after JAX started"):
        assert not xla_workaround.apply()
    assert os.environ["XLA_FLAGS"] == ""
