"""Sharded all-pairs and path analysis: the result must not depend on the number of devices.

XLA fixes the number of CPU devices when the backend starts, so the multi-device checks run in subprocesses
(``tests/geopath/sharding_worker.py``) with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``, and the
multi-process check starts two processes that join through ``jax.distributed`` (gloo collectives on CPU).
The default run covers 3 and 8 devices for pairwise (AngularShape), 2 for cross (AngularCKA) and 3 for
the path analysis (AngularShape: the case that hung before the CPU devices of one process stopped running at once);
3 divides none of the block sizes, so the padding of pairs and checkpoints is exercised. The slow tests run
every space on 1, 2, 3 and 8 devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import geopath as gp

from .conftest import SPECS
from .conftest import rand_rep
from .conftest import related_rep
from .conftest import to_np

ROOT = Path(__file__).resolve().parents[2]
ALL_SPACES = "angular_a1,angular_a05,euclid_a05,cka,affine,stress"


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _worker(jobs: list[str], *, devices: int = 8, timeout: float = 240) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.geopath.sharding_worker", *jobs],
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(res: dict, expected: int) -> None:
    rows = res["results"]
    assert len(rows) == expected
    for r in rows:
        assert r["mesh_size"] == r["devices"]
        assert r["result_devices"] == r["devices"], r  # the result lives on the mesh (replicated)
        assert r["finite"] and r["shapes_ok"], r
        assert r["max_abs_diff"] <= 1e-12 * max(1.0, r["ref_scale"]), r


def test_sharded_equals_unsharded_default_matrix():
    # checkpoints:angular_a1 on 3 CPU devices hung (0% CPU) before the CPU devices of one process stopped running at once:
    # their batched LAPACK calls blocked every thread of the shared pool (see geopath/_src/sharding.py)
    # (8 devices, and every space, in the slow test_sharded_equals_unsharded_every_space)
    res = _worker(["pairwise:angular_a1:3", "cross:cka:2", "checkpoints:angular_a1:3"])
    assert res["device_count"] == 8
    _check(res, 3)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["pairwise", "cross", "checkpoints"])
def test_sharded_equals_unsharded_every_space(case):
    res = _worker([f"{case}:{ALL_SPACES}:1,2,3,8"], timeout=1200)
    _check(res, 6 * 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "jobs",
    [
        pytest.param(["pairwise:angular_a1:4"], id="pairwise"),
        pytest.param(
            ["cross:affine:4", "checkpoints:angular_a1:4"], id="cross+checkpoints", marks=pytest.mark.slow
        ),
    ],
)
def test_two_processes_with_jax_distributed(jobs):
    """Two processes x 2 CPU devices = one 4-device mesh, as on two hosts; both get the unsharded result."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.geopath.sharding_worker", f"--distributed={pid},2,{port}", *jobs],
            cwd=ROOT,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-4000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for res in outs:
        assert res["process_count"] == 2 and res["device_count"] == 4
        _check(res, len(jobs))


# ---------------------------------------------------------------------------------------------------------
# in this process (one CPU device)
# ---------------------------------------------------------------------------------------------------------


def test_one_device_mesh_equals_default(rng):
    space = gp.AngularShape(alpha=1.0)
    x0 = rand_rep(rng, 14, 6)
    xs = [related_rep(rng, x0, p) for p in (3, 9, 5, 16)]
    mesh = gp.device_mesh(jax.devices()[:1])
    np.testing.assert_array_equal(
        to_np(gp.pairwise_distances(space, xs, mesh=mesh)), to_np(gp.pairwise_distances(space, xs))
    )
    np.testing.assert_array_equal(
        to_np(gp.cross_distances(space, xs[:2], xs[2:], mesh=mesh)),
        to_np(gp.cross_distances(space, xs[:2], xs[2:])),
    )


def test_mesh_must_be_a_mesh(rng):
    xs = [rand_rep(rng, 10, 3), rand_rep(rng, 10, 4)]
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        gp.pairwise_distances(SPECS["cka"].space, xs, mesh=jax.devices())
    with pytest.raises(ValueError, match="at least one device"):
        gp.device_mesh([])


def test_checkpoints_on_a_mesh_equal_default(rng):
    space = gp.Stress()  # cheap to compile; every space is covered by the slow subprocess test
    x0 = rand_rep(rng, 12, 5)
    reps = [[related_rep(rng, x0, p) for p in (3, 5, 4)] for _ in range(3)]
    target = gp.target_point(space, np.arange(12) % 3, num_classes=3)
    a = gp.analyze_checkpoints(space, reps, target)
    b = gp.analyze_checkpoints(space, reps, target, mesh=gp.device_mesh())
    for f in a._fields:
        np.testing.assert_allclose(to_np(getattr(b, f)), to_np(getattr(a, f)), rtol=1e-12, atol=1e-14)
        assert getattr(b, f).shape == getattr(a, f).shape


@pytest.mark.slow
def test_bench_sharding_smoke():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sharding", "--smoke", "--quiet", "--devices", "1,3,8"],
        cwd=ROOT,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| 6x24 | 8 " in proc.stdout and "overhead, not speed-up" in proc.stdout
