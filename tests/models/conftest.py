"""Shared fixtures for the models/ tests: CIFAR-10 locations and a tiny synthetic class-folder tree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """Root of the real CIFAR-10 JPEG copy ($GEOPATH_CIFAR10_DIR or ../shared/data/cifar10-jpeg); skips if absent."""
    env = os.environ.get("GEOPATH_CIFAR10_DIR")
    root = (
        Path(env).expanduser() if env else (_REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg").resolve()
    )
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {root} (set GEOPATH_CIFAR10_DIR)")
    return root


def write_jpeg(path: Path, array: np.ndarray, quality: int = 95) -> None:
    """Writes a uint8 [H, W, 3] (or [H, W]) array as a JPEG file."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format="JPEG", quality=quality)


def make_class_tree(root: Path, *, per_class: int = 3, splits=("train", "test"), seed: int = 0) -> Path:
    """Creates root/<split>/<class>/NNNN.jpg with random 32x32 RGB images; returns root."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for cls in CIFAR10_CLASSES:
            for i in range(per_class):
                write_jpeg(
                    root / split / cls / f"{i:04d}.jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                )
    return root


@pytest.fixture(name="write_jpeg")
def write_jpeg_fixture():
    """The :func:`write_jpeg` helper, as a fixture (test modules should not import conftest)."""
    return write_jpeg


@pytest.fixture(name="make_class_tree")
def make_class_tree_fixture():
    """The :func:`make_class_tree` helper, as a fixture."""
    return make_class_tree


@pytest.fixture
def fake_cifar10_tree(tmp_path: Path) -> Path:
    """A synthetic class-folder tree (train and test, 3 random JPEGs per class) under tmp_path."""
    return make_class_tree(tmp_path / "cifar10-fake")
