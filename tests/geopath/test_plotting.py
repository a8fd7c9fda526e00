"""Tests of geopath.plotting: every figure is written as a non-empty PNG and a PDF."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import geopath as gp  # noqa: E402
from geopath import plotting  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _path_reps(seed, n=12, depth=4):
    r = np.random.default_rng(seed)
    reps = [r.standard_normal((n, 5))]
    for _ in range(depth):
        reps.append(np.tanh(reps[-1] @ r.standard_normal((reps[-1].shape[1], 6)) + 0.3))
    return reps


@pytest.fixture(scope="module")
def data():
    space = gp.AngularShape(alpha=1.0)
    labels = np.arange(12) % 3
    y = gp.target_point(space, labels, num_classes=3)
    reps = {"net_a": _path_reps(0, depth=4), "net_b": _path_reps(1, depth=6)}
    pts = {k: [space.point(x) for x in v] for k, v in reps.items()}
    analyses = {k: gp.analyze_path(space, p, y) for k, p in pts.items()}
    flat = [p for v in pts.values() for p in v] + [y]
    D = np.asarray(gp.pairwise_distances(space, flat, are_points=True))
    return dict(space=space, y=y, reps=reps, pts=pts, analyses=analyses, D=D)


def _check_written(png, pdf):
    assert os.path.getsize(png) > 1024
    assert os.path.getsize(pdf) > 1024
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"


def test_plot_paths_2d(data, tmp_path):
    D = data["D"]
    emb = gp.classical_mds(D, dim=2).coords
    emb = np.asarray(emb)
    coords = {"net_a": emb[:5], "net_b": emb[5:12]}
    fig = plotting.plot_paths_2d(coords, target=emb[-1], layer_labels={"net_a": [f"a{i}" for i in range(5)]})
    ax = fig.axes[0]
    assert ax.get_title() and "radians" in ax.get_xlabel()
    assert ax.get_legend() is not None
    _check_written(*plotting.save_figure(fig, tmp_path / "paths2d"))
    # 3-D coordinates from a spherical embedding
    sph = np.asarray(gp.spherical_mds(D, dim=3, n_steps=50).coords)
    fig3 = plotting.plot_paths_2d({"net_a": sph[:5], "net_b": sph[5:12]}, target=sph[-1])
    _check_written(*plotting.save_figure(fig3, tmp_path / "sub" / "paths3d.png"))


def test_plot_distance_matrix(data, tmp_path):
    D = data["D"]
    labels = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(7)] + ["target"]
    fig = plotting.plot_distance_matrix(D, labels, boundaries=[5, 12])
    assert fig.axes[0].get_title()
    _check_written(*plotting.save_figure(fig, tmp_path / "dist"))
    with pytest.raises(ValueError):
        plotting.plot_distance_matrix(D, labels[:-1])


def test_plot_depth_profiles(data, tmp_path):
    fig = plotting.plot_depth_profiles(data["analyses"])
    assert len(fig.axes) == 4
    assert any("radians" in ax.get_ylabel() for ax in fig.axes)
    _check_written(*plotting.save_figure(fig, tmp_path / "depth"))
    fig2 = plotting.plot_depth_profiles(data["analyses"], depth="index")
    _check_written(*plotting.save_figure(fig2, tmp_path / "depth_index"))


def test_plot_training(data, tmp_path):
    space, y = data["space"], data["y"]
    r = np.random.default_rng(3)
    base = data["reps"]["net_a"]
    ckpts = [[x + s * r.standard_normal(x.shape) for x in base] for s in (0.5, 0.2, 0.1, 0.0)]
    stacked = gp.analyze_checkpoints(space, ckpts, y)
    steps = np.array([0, 10, 100, 1000])
    fig = plotting.plot_training(stacked, steps)
    assert fig.axes[0].get_xscale() == "symlog"
    _check_written(*plotting.save_figure(fig, tmp_path / "train_single"))
    fig2 = plotting.plot_training(
        {"net_a": stacked, "net_a_again": stacked}, {"net_a": steps, "net_a_again": steps + 5}
    )
    _check_written(*plotting.save_figure(fig2, tmp_path / "train_multi"))
    with pytest.raises(ValueError):
        plotting.plot_training(stacked, steps[:3])


def test_geopath_imports_without_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import geopath, geopath.plotting\n"
        "assert geopath.AngularShape is not None\n"
        "try:\n    geopath.plotting.plot_distance_matrix([[0.0]])\n"
        "except ImportError:\n    pass\nelse:\n    raise SystemExit('expected ImportError')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr


def _line_data(ax):
    return [(np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)) for ln in ax.get_lines()]


def test_figures_draw_the_numbers_they_are_given(data):
    """What each figure draws (no files written): the depth profiles are the analyses' per-layer fields at
    relative depth i / (L - 1) (or the index), the training curves the per-checkpoint fields sorted by step,
    the 2-D paths the coordinates given, start and end marked."""
    an = data["analyses"]
    fig = plotting.plot_depth_profiles(an)
    axs = fig.axes
    for k, a in enumerate(an.values()):
        L = a.dist_to_target.shape[0]
        x = np.linspace(0.0, 1.0, L)
        for ax, field in zip(axs[:3], ("dist_to_target", "proj_t", "proj_residual")):
            lx, ly = _line_data(ax)[k]
            np.testing.assert_allclose(lx, x, atol=1e-15)
            np.testing.assert_allclose(ly, np.asarray(getattr(a, field)), atol=1e-15, err_msg=field)
        lx, ly = _line_data(axs[3])[k]
        np.testing.assert_allclose(lx, x[1:-1], atol=1e-15)
        np.testing.assert_allclose(ly, np.asarray(a.turning), atol=1e-15)
    idx = plotting.plot_depth_profiles(an, depth="index")
    np.testing.assert_array_equal(
        _line_data(idx.axes[0])[1][0], np.arange(an["net_b"].dist_to_target.shape[0])
    )
    # training curves: checkpoints given out of order are drawn in step order
    a = an["net_a"]
    stacked = type(a)(*[np.stack([np.asarray(f) * (1 + 0.1 * t) for t in range(3)]) for f in a])
    steps = np.array([100, 0, 10])
    tr = plotting.plot_training(stacked, steps)
    order = np.argsort(steps)
    expect = (stacked.straightness[order], stacked.length[order], stacked.dist_to_target[order, -1])
    for ax, y in zip(tr.axes[:3], expect):
        lx, ly = _line_data(ax)[0]
        np.testing.assert_array_equal(lx, [0, 10, 100])
        np.testing.assert_allclose(ly, y, atol=1e-15)
    # 2-D paths: the coordinates as given; the first and last points marked
    C = np.arange(10.0).reshape(5, 2) ** 1.5
    pf = plotting.plot_paths_2d({"net": C})
    lines = _line_data(pf.axes[0])
    np.testing.assert_allclose(lines[0][0], C[:, 0])
    np.testing.assert_allclose(lines[0][1], C[:, 1])
    assert any(np.allclose(lx, C[0, 0]) and np.allclose(ly, C[0, 1]) for lx, ly in lines[1:])
    assert any(np.allclose(lx, C[-1, 0]) and np.allclose(ly, C[-1, 1]) for lx, ly in lines[1:])
