"""Smoke test of the benchmark scripts: each ``main(["--smoke"])`` runs in-process at a tiny size.

This checks that the harness, the baselines and the wiring to geopath work (and that the answers agree);
it does not time anything meaningful. PyTorch parts are skipped when torch is not installed.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _common as C  # noqa: E402

HAVE_TORCH = C.torch_available()


def _run(name: str, *extra: str) -> dict:
    mod = importlib.import_module(f"benchmarks.{name}")
    argv = ["--smoke", "--quiet", *extra]
    if not HAVE_TORCH:
        argv.append("--no-torch")
    return mod.main(argv)


def test_common_helpers():
    assert C.resnet_widths(20) == [3072] + [16384] * 6 + [8192] * 6 + [4096] * 6 + [64]
    assert len(C.resnet_widths(56)) == 56 and len(C.resnet_widths(8)) == 8
    xs = C.make_layers(12, [5, 7], dtype="float32", seed=0)
    assert [x.shape for x in xs] == [(12, 5), (12, 7)] and xs[0].dtype == np.float32
    t, out = C.time_call(lambda: 3, repeats=2, budget_s=60.0)  # a generous budget: cores may be busy
    assert out == 3 and t.repeats == 2 and t.steady_s >= 0
    info = C.machine_info()
    for key in ("cpu", "cores", "ram_gib", "jax", "numpy", "scipy", "date_utc"):
        assert key in info


def test_baselines_agree_with_each_other():
    from benchmarks import baselines as B

    xs = C.make_layers(30, [10, 45, 20], dtype="float64", seed=3)
    d_a = B.np_pairwise([B.np_shape_point(x) for x in xs])
    d_lit = B.np_netrep_literal_pair(B.np_centered_unit(xs[0]), B.np_centered_unit(xs[1]))
    assert abs(d_a[0, 1] - d_lit) < 1e-12
    if HAVE_TORCH:
        prep = [B.torch_gram_prepare(x, dtype="float64") for x in xs]
        assert abs(B.torch_bures_distance(prep[0], prep[2]) - d_a[0, 2]) < 1e-10
    # alpha < 1 with and without the width reduction
    d_r = B.np_pairwise([B.np_shape_point(x, 0.3) for x in xs])
    d_f = B.np_pairwise([B.np_shape_point(x, 0.3, reduce=False) for x in xs])
    np.testing.assert_allclose(d_r, d_f, atol=1e-10)


@pytest.mark.slow  # 575 s on 2 busy cores (torch installed)
def test_bench_pairwise_smoke():
    out = _run("bench_pairwise")
    (r,) = out["results"]
    assert r["numpy"]["complete"]
    assert "geopath" in r, "the geopath result is missing"
    assert r["diff"]["geopath_vs_numpy"] < 1e-3
    assert r["err_vs_f64_ref"]["geopath"] < 1e-3
    if HAVE_TORCH:
        assert r["diff"]["geopath_vs_torch"] < 1e-2


def test_broken_geopath_fails_the_benchmarks(monkeypatch):
    """A geopath that does not import must stop a benchmark, not drop its results silently."""
    for name in [m for m in sys.modules if m == "geopath" or m.startswith("geopath.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "geopath", None)  # makes `import geopath` raise ImportError
    with pytest.raises(ImportError):
        C.import_geopath()
    with pytest.raises(ImportError):
        _run("bench_pairwise")


def test_bench_geodesic_smoke():
    out = _run("bench_geodesic", "--dtype", "float64")
    assert out["results"]
    for r in out["results"]:
        assert r["geopath"] is not None, r
        if r["max_abs_diff"] is not None:
            assert r["max_abs_diff"] < 1e-6, r


def test_bench_grad_smoke():
    out = _run("bench_grad", "--dtype", "float64")
    assert {r["objective"] for r in out["results"]} == {"distance", "path_length"}
    for r in out["results"]:
        assert r["geopath"] is not None and np.isfinite(r["value"]), r
        if "grad_rel_diff" in r:
            assert r["grad_rel_diff"] < 1e-6, r


def test_bench_roofline_smoke():
    out = _run("bench_roofline")
    for r in out["results"]:
        assert r["gemm_gflops"] > 0
        if "fraction" in r:
            assert math.isfinite(r["fraction"]) and r["fraction"] > 0


@pytest.mark.slow  # 106 s on 2 busy cores
def test_bench_scaling_smoke():
    out = _run("bench_scaling")
    assert set(out["sweeps"]) == {"n", "L"}
    for sweep in out["sweeps"].values():
        assert math.isfinite(sweep["exponents"]["numpy"])
        assert math.isfinite(sweep["exponents"]["geopath"])


@pytest.mark.skipif(HAVE_TORCH, reason="only meaningful without torch")
def test_no_torch_path():
    out = _run("bench_pairwise")
    assert "torch" not in out["results"][0]


@pytest.mark.slow  # trains in subprocesses (about a minute on 2 cores); needs the CIFAR-10 copy
def test_time_to_accuracy_smoke(tmp_path):
    data = Path(os.environ.get("GEOPATH_CIFAR10_DIR") or ROOT.parent / "shared" / "data" / "cifar10-jpeg")
    if not (data / "train").is_dir():
        pytest.skip("CIFAR-10 copy not found")
    argv = ["--presets", "quick-resnet", "--seeds", "4", "--runs", str(tmp_path)]
    out = _run("time_to_accuracy", *argv)
    (r,) = out["runs"]["quick-resnet"]
    assert not r["reused"] and r["epochs_completed"] == 1 and r["final_step"] == 4  # 200 images, batch 50
    assert r["step_flops"] > 1e9 and r["train_flops"] == 4 * r["step_flops"]
    assert 0 < r["gflop_per_s"] < 1e4 and 0 <= r["final_test_acc"] <= 1 and r["tta_level"] == 2
    assert r["final_test_acc_tta"] is not None
    # a finished run is reused, not trained again
    again = _run("time_to_accuracy", *argv)["runs"]["quick-resnet"][0]
    assert again["reused"] and again["final_test_acc"] == r["final_test_acc"]
