"""Tests for models/data.py (CIFAR-10 pipeline). Fast: small slices, synthetic trees, mocked TFDS."""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import data as D


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's ~/.cache/geopath from tests."""
    monkeypatch.setenv("GEOPATH_CACHE_DIR", str(tmp_path / "geopath-cache"))


_REAL_DECODE = D._decode_files


class DecodeSpy:
    """Wraps models.data._decode_files, recording the paths it is asked to decode."""

    def __init__(self, monkeypatch, fail: bool = False):
        self.calls: list[list[str]] = []
        self._orig = _REAL_DECODE
        self._fail = fail
        monkeypatch.setattr(D, "_decode_files", self)

    def __call__(self, paths, desc):
        self.calls.append(list(paths))
        if self._fail:
            raise AssertionError("decoder called although the cache should have been used")
        return self._orig(paths, desc)


def _pil(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _npz_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.npz")) if d.exists() else []


# --------------------------------------------------------------------------------------
# Constants and locations
# --------------------------------------------------------------------------------------


def test_constants():
    assert D.CLASSES == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    for a in (D.CIFAR10_MEAN, D.CIFAR10_STD):
        assert a.shape == (3,) and a.dtype == np.float32
    np.testing.assert_allclose(D.CIFAR10_MEAN, [0.4914, 0.4822, 0.4465], atol=1e-4)
    np.testing.assert_allclose(D.CIFAR10_STD, [0.2470, 0.2435, 0.2616], atol=1e-4)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOPATH_CIFAR10_DIR", str(tmp_path / "x"))
    assert D.default_data_dir() == str(tmp_path / "x")
    monkeypatch.delenv("GEOPATH_CIFAR10_DIR")
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg"
    expected = os.path.normpath(shared) if shared.is_dir() else None
    assert D.default_data_dir() == expected


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOPATH_CACHE_DIR", str(tmp_path))
    assert D.default_cache_dir() == tmp_path / "cifar10-folder"
    monkeypatch.delenv("GEOPATH_CACHE_DIR")
    assert D.default_cache_dir() == Path("~/.cache/geopath/cifar10-folder").expanduser()


# --------------------------------------------------------------------------------------
# Folder source on the real JPEG copy
# --------------------------------------------------------------------------------------


def test_folder_real_slice(cifar10_dir, tmp_path, monkeypatch):
    spy = DecodeSpy(monkeypatch)
    ds = D.load_cifar10(
        "test", data_dir=cifar10_dir, source="folder", limit_per_class=5, cache_dir=tmp_path / "c"
    )
    assert isinstance(ds, D.Dataset)
    assert ds.images.shape == (50, 32, 32, 3) and ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(10), 5))
    assert str(cifar10_dir / "test") in ds.source and "limit_per_class=5" in ds.source
    # Only the first 5 files of each class (by name) were decoded.
    assert len(spy.calls) == 1
    expected = [
        str(cifar10_dir / "test" / c / n)
        for c in D.CLASSES
        for n in sorted(os.listdir(cifar10_dir / "test" / c))[:5]
    ]
    assert spy.calls[0] == expected
    # Order: class-major, file-name order within a class; pixels are PIL's decode.
    cat_files = sorted(os.listdir(cifar10_dir / "test" / "cat"))
    np.testing.assert_array_equal(ds.images[15], _pil(cifar10_dir / "test" / "cat" / cat_files[0]))
    np.testing.assert_array_equal(ds.images[16], _pil(cifar10_dir / "test" / "cat" / cat_files[1]))
    assert ds.images.std() > 10  # real images, not blank


def test_folder_real_cache_reused(cifar10_dir, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = D.load_cifar10("train", data_dir=cifar10_dir, source="folder", limit_per_class=3, cache_dir=cache)
    files = _npz_files(cache)
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    with np.load(files[0], allow_pickle=False) as z:  # plain arrays, no pickle
        assert z["images"].shape == (30, 32, 32, 3)
        first3 = sorted(os.listdir(cifar10_dir / "train" / "airplane"))[:3]
        assert list(z["files"][:3]) == [f"airplane/{n}" for n in first3]
    DecodeSpy(monkeypatch, fail=True)
    second = D.load_cifar10(
        "train", data_dir=cifar10_dir, source="folder", limit_per_class=3, cache_dir=cache
    )
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.source == second.source
    # A different limit is a different cache entry.
    DecodeSpy(monkeypatch)
    third = D.load_cifar10("train", data_dir=cifar10_dir, source="folder", limit_per_class=2, cache_dir=cache)
    assert len(third.labels) == 20 and len(_npz_files(cache)) == 2


def test_auto_uses_folder_for_real_copy(cifar10_dir, monkeypatch):
    monkeypatch.setenv("GEOPATH_CIFAR10_DIR", str(cifar10_dir))
    ds = D.load_cifar10("test", limit_per_class=1)  # source="auto", data_dir from the environment
    assert ds.source.startswith("folder:") and len(ds.labels) == 10
    ds = D.load_cifar10("test", data_dir=cifar10_dir, limit_per_class=1)
    assert ds.source.startswith("folder:")


# --------------------------------------------------------------------------------------
# Folder source on a synthetic tree: caching and invalidation
# --------------------------------------------------------------------------------------


def test_folder_cache_invalidation(fake_cifar10_tree, tmp_path, monkeypatch, write_jpeg):
    root, cache = fake_cifar10_tree, tmp_path / "c"
    spy = DecodeSpy(monkeypatch)

    def load():
        return D.load_cifar10("train", data_dir=root, source="folder", cache_dir=cache)

    base = load()
    assert base.images.shape == (30, 32, 32, 3) and len(spy.calls) == 1 and len(spy.calls[0]) == 30
    np.testing.assert_array_equal(base.images[3 * 5 + 1], _pil(root / "train" / "dog" / "0001.jpg"))

    load()  # unchanged folder: served from the cache
    assert len(spy.calls) == 1

    # Adding a file invalidates the cache; the new image lands at the end of its class.
    extra = np.full((32, 32, 3), 200, np.uint8)
    write_jpeg(root / "train" / "dog" / "0003.jpg", extra)
    added = load()
    assert len(spy.calls) == 2 and len(added.labels) == 31
    np.testing.assert_array_equal(np.bincount(added.labels), [3] * 5 + [4] + [3] * 4)
    assert abs(int(added.images[3 * 6].astype(int).mean()) - 200) <= 2
    np.testing.assert_array_equal(added.images[3 * 6 + 1 :], base.images[3 * 6 :])

    # Removing it again restores the original fingerprint: the first cache entry is reused.
    (root / "train" / "dog" / "0003.jpg").unlink()
    restored = load()
    assert len(spy.calls) == 2
    np.testing.assert_array_equal(restored.images, base.images)

    # Removing another file invalidates it again.
    (root / "train" / "cat" / "0000.jpg").unlink()
    removed = load()
    assert len(spy.calls) == 3 and len(removed.labels) == 29

    # Rewriting a file (new content and mtime) invalidates it.
    target = root / "train" / "ship" / "0002.jpg"
    write_jpeg(target, np.zeros((32, 32, 3), np.uint8))
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rewritten = load()
    assert len(spy.calls) == 4
    assert rewritten.images[np.flatnonzero(rewritten.labels == 8)[-1]].max() <= 8
    assert not list(cache.glob("*.tmp"))


def test_folder_default_cache_dir_and_disable(fake_cifar10_tree, tmp_path, monkeypatch):
    ds = D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder")
    default = tmp_path / "geopath-cache" / "cifar10-folder"  # from the autouse GEOPATH_CACHE_DIR
    (f,) = _npz_files(default)
    assert f.stat().st_mode & 0o777 == 0o644  # shareable, not mkstemp's 0600
    monkeypatch.setenv("GEOPATH_CACHE_DIR", str(tmp_path / "other"))
    ds2 = D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=False)
    np.testing.assert_array_equal(ds.images, ds2.images)
    assert len(_npz_files(default)) == 1 and not (tmp_path / "other").exists()


def test_folder_corrupt_cache_is_rebuilt(fake_cifar10_tree, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    ds = D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=cache)
    (f,) = _npz_files(cache)
    f.write_bytes(b"not a zip file")
    spy = DecodeSpy(monkeypatch)
    with pytest.warns(RuntimeWarning, match="unreadable cache"):
        again = D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=cache)
    assert len(spy.calls) == 1
    np.testing.assert_array_equal(ds.images, again.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=cache)  # repaired
    assert len(spy.calls) == 1


def test_folder_pool_decode_matches_serial(fake_cifar10_tree, monkeypatch):
    """The spawn process pool returns the same pixels, in order, as the serial path."""
    paths = [str(p) for p in sorted((fake_cifar10_tree / "train").glob("*/*.jpg"))]
    serial = D._decode_files(paths, desc="serial")
    monkeypatch.setattr(D, "_POOL_MIN_FILES", 1)
    monkeypatch.setattr(D, "_CHUNK_FILES", 7)
    monkeypatch.setenv("GEOPATH_DECODE_WORKERS", "2")
    pooled = D._decode_files(paths, desc="pool")
    np.testing.assert_array_equal(serial, pooled)


# --------------------------------------------------------------------------------------
# Folder errors
# --------------------------------------------------------------------------------------


def test_error_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        D.load_cifar10("train", data_dir=missing, source="folder")


def test_error_missing_split_folder(fake_cifar10_tree):
    for source in ("folder", "auto"):  # auto: the tree is recognised from its other splits
        with pytest.raises(FileNotFoundError, match=str(fake_cifar10_tree / "val")):
            D.load_cifar10("val", data_dir=fake_cifar10_tree, source=source)


def test_error_auto_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "typo")):
        D.load_cifar10("train", data_dir=tmp_path / "typo")


def test_error_empty_folder(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class folders.*" + str(tmp_path / "empty" / "train")):
        D.load_cifar10("train", data_dir=tmp_path / "empty", source="folder")


def test_error_class_without_images(fake_cifar10_tree):
    for p in (fake_cifar10_tree / "test" / "frog").iterdir():
        p.unlink()
    (fake_cifar10_tree / "test" / "frog" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images") as e:
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder")
    assert str(fake_cifar10_tree / "test" / "frog") in str(e.value)


def test_error_unknown_and_missing_class(fake_cifar10_tree):
    (fake_cifar10_tree / "test" / "unicorn").mkdir()
    with pytest.raises(ValueError, match="unknown class.*unicorn") as e:
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder")
    assert str(fake_cifar10_tree / "test") in str(e.value)
    (fake_cifar10_tree / "test" / "unicorn").rmdir()
    for p in (fake_cifar10_tree / "test" / "truck").iterdir():
        p.unlink()
    (fake_cifar10_tree / "test" / "truck").rmdir()
    with pytest.raises(ValueError, match="missing class.*truck"):
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder")


def test_error_wrong_image_size(fake_cifar10_tree, write_jpeg):
    bad = fake_cifar10_tree / "test" / "bird" / "0000.jpg"
    write_jpeg(bad, np.zeros((32, 31, 3), np.uint8))  # PIL size (31, 32): 31 wide, 32 high
    with pytest.raises(ValueError, match="31x32") as e:
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=False)
    assert str(bad) in str(e.value)


def test_error_grayscale_image(fake_cifar10_tree, write_jpeg):
    bad = fake_cifar10_tree / "train" / "deer" / "0001.jpg"
    write_jpeg(bad, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="mode L") as e:
        D.load_cifar10("train", data_dir=fake_cifar10_tree, source="folder", cache_dir=False)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_error_damaged_image_names_the_file(fake_cifar10_tree, damage):
    """A damaged JPEG is one clear error naming the file (was: OSError 'Truncated File Read', no name)."""
    from models.fileio import CorruptFileError

    bad = fake_cifar10_tree / "train" / "cat" / "0002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(
        {"truncated": data[: len(data) // 3], "garbage": b"not a jpeg" * 40, "empty": b""}[damage]
    )
    with pytest.raises(CorruptFileError, match="damaged or not an image") as e:
        D.load_cifar10("train", data_dir=fake_cifar10_tree, source="folder", cache_dir=False)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)  # CLIs print ValueErrors as one line


def test_error_damaged_image_in_pool_worker(fake_cifar10_tree, monkeypatch):
    """The error survives the spawn process pool (pickled back from a worker) with the file name."""
    from models.fileio import CorruptFileError

    bad = fake_cifar10_tree / "test" / "ship" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    monkeypatch.setattr(D, "_POOL_MIN_FILES", 1)
    monkeypatch.setattr(D, "_CHUNK_FILES", 10)
    monkeypatch.setenv("GEOPATH_DECODE_WORKERS", "2")
    with pytest.raises(CorruptFileError, match=str(bad)):
        D.load_cifar10("test", data_dir=fake_cifar10_tree, source="folder", cache_dir=False)


@pytest.mark.parametrize("content", ["empty", "unrelated"])
def test_error_auto_folder_that_is_neither_tree_nor_tfds(tmp_path, content):
    """An empty or unrelated --data-dir says what it should hold (was: ImportError traceback from TFDS)."""
    root = tmp_path / "data"
    root.mkdir()
    if content == "unrelated":
        (root / "photos").mkdir()
        (root / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="neither a CIFAR-10 class-folder tree") as e:
        D.load_cifar10("train", data_dir=root)
    assert str(root) in str(e.value)


def test_error_bad_arguments(fake_cifar10_tree, monkeypatch):
    with pytest.raises(ValueError, match="source"):
        D.load_cifar10("train", data_dir=fake_cifar10_tree, source="kaggle")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit_per_class"):
            D.load_cifar10("train", data_dir=fake_cifar10_tree, source="folder", limit_per_class=bad)
    monkeypatch.setattr(D, "default_data_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="GEOPATH_CIFAR10_DIR"):
        D.load_cifar10("train", source="folder")


# --------------------------------------------------------------------------------------
# TFDS source (mocked; no TensorFlow)
# --------------------------------------------------------------------------------------


def test_tfds_mock_data_without_tensorflow(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "tfds" / "cifar10").mkdir(parents=True)  # what source='auto' recognises as TFDS
    with tfds.testing.mock_data(num_examples=37):
        ds = D.load_cifar10("train", source="tfds", data_dir=tmp_path / "tfds")
        limited = D.load_cifar10("test", source="tfds", data_dir=tmp_path / "tfds", limit_per_class=2)
        auto = D.load_cifar10(
            "train", data_dir=tmp_path / "tfds", limit_per_class=1
        )  # not a class tree -> tfds
    assert "tensorflow" not in sys.modules  # nothing on this path imported TensorFlow
    assert ds.images.shape == (37, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (37,) and ds.labels.dtype == np.int32
    assert ds.labels.min() >= 0 and ds.labels.max() <= 9
    assert ds.source == "tfds:cifar10/train"
    # limit_per_class keeps the first k records of each class, in record order.
    counts = np.bincount(ds.labels, minlength=10)
    np.testing.assert_array_equal(np.bincount(limited.labels, minlength=10), np.minimum(counts, 2))
    keep = np.concatenate([np.flatnonzero(ds.labels == c)[:2] for c in range(10)])
    np.testing.assert_array_equal(limited.images, ds.images[np.sort(keep)])
    assert auto.source.startswith("tfds:") and np.all(np.bincount(auto.labels, minlength=10) <= 1)


class _FakeSource:
    """Random-access source with a working batched __getitems__ (like a real ArrayRecordDataSource)."""

    def __init__(self, n):
        rng = np.random.default_rng(1)
        self.images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.labels = np.arange(n) % 10
        self.batched_calls = 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        raise AssertionError("should use __getitems__")

    def __getitems__(self, keys):
        self.batched_calls += 1
        return [{"image": self.images[k], "label": np.int64(self.labels[k]), "id": f"x{k}"} for k in keys]


def test_records_batched_and_early_stop(monkeypatch):
    monkeypatch.setattr(D, "_TFDS_BATCH", 16)
    src = _FakeSource(100)
    images, labels = D._arrays_from_records(src, None, desc="fake")
    np.testing.assert_array_equal(images, src.images)
    np.testing.assert_array_equal(labels, src.labels)
    assert labels.dtype == np.int32 and src.batched_calls == 7
    src = _FakeSource(100)
    images, labels = D._arrays_from_records(src, 2, desc="fake")
    np.testing.assert_array_equal(labels, np.tile(np.arange(10), 2))
    assert src.batched_calls == 2  # stopped once every class had 2 records


# --------------------------------------------------------------------------------------
# normalize / augment
# --------------------------------------------------------------------------------------


def test_normalize_numpy_and_jax():
    import jax
    import jax.numpy as jnp

    x = np.zeros((2, 32, 32, 3), np.uint8)
    x[1] = 255
    y = D.normalize(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y[0, 0, 0], -D.CIFAR10_MEAN / D.CIFAR10_STD, rtol=1e-6)
    np.testing.assert_allclose(y[1, 5, 7], (1 - D.CIFAR10_MEAN) / D.CIFAR10_STD, rtol=1e-6)
    yj = D.normalize(jnp.asarray(x))
    assert isinstance(yj, jax.Array) and yj.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(yj), y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(D.normalize)(x)), y, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        D.normalize(np.zeros((2, 3, 32, 32), np.uint8))


def _is_padded_crop(out: np.ndarray, img: np.ndarray) -> bool:
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
                return True
    return False


def test_augment_crops_and_flips():
    import jax

    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (16, 32, 32, 3), dtype=np.uint8)  # no zeros, so padding is visible
    key = jax.random.key(0)
    y = np.asarray(D.augment(key, x))
    assert y.shape == x.shape and y.dtype == np.uint8
    assert all(_is_padded_crop(y[i], x[i]) for i in range(len(x)))
    np.testing.assert_array_equal(y, np.asarray(D.augment(key, x)))  # same key, same result
    assert not np.array_equal(y, np.asarray(D.augment(jax.random.key(1), x)))
    np.testing.assert_array_equal(y, np.asarray(jax.jit(D.augment)(key, x)))
    # Legacy raw uint32 keys work too.
    assert D.augment(jax.random.PRNGKey(3), x).shape == x.shape


def test_augment_does_not_depend_on_x64():
    """Random draws have explicit 32-bit dtypes: enabling x64 (geopath's tests and many analysis
    notebooks do) must not change the crops and flips, or a resumed run would leave its reference."""
    import jax

    x = np.random.default_rng(1).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    with jax.enable_x64(False):
        y32 = np.asarray(D.augment(jax.random.key(7), x))
    with jax.enable_x64(True):
        y64 = np.asarray(D.augment(jax.random.key(7), x))
    np.testing.assert_array_equal(y32, y64)
    assert not np.array_equal(y32, np.asarray(D.augment(jax.random.key(8), x)))


def test_augment_constant_image_and_per_image_randomness():
    import jax

    x = np.full((64, 32, 32, 3), 7, np.uint8)
    y = np.asarray(D.augment(jax.random.key(42), x))
    assert set(np.unique(y)) <= {0, 7}
    for img in y:  # the non-padding part is one rectangle of at least 28x28 pixels
        rows = np.flatnonzero((img == 7).any(axis=(1, 2)))
        cols = np.flatnonzero((img == 7).any(axis=(0, 2)))
        assert len(rows) >= 28 and len(cols) >= 28
        np.testing.assert_array_equal(img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 7)
        assert (img == 7).sum() == len(rows) * len(cols) * 3
    # Identical inputs get different crops within one batch.
    assert len({img.tobytes() for img in y}) > 10
    # Float input keeps its dtype.
    yf = D.augment(jax.random.key(0), x.astype(np.float32))
    assert yf.dtype == np.float32
    with pytest.raises(ValueError, match="batch"):
        D.augment(jax.random.key(0), x[0])


def test_augment_flip_happens():
    import jax

    x = np.zeros((200, 32, 32, 3), np.uint8)
    x[:, :, :16] = 255  # left half white
    y = np.asarray(D.augment(jax.random.key(5), x))
    left_white = y[:, 16, 10, 0] == 255
    assert 40 < left_white.sum() < 160  # both orientations occur


# --------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------


def _toy(n=23):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    return D.Dataset(images, (np.arange(n) % 10).astype(np.int32), "toy")


def test_batches_in_order():
    ds = _toy()
    out = list(D.batches(ds, batch_size=5, shuffle=False, drop_last=False))
    assert [len(lbl) for _, lbl in out] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([img[:, 0, 0, 0] for img, _ in out]), np.arange(23))
    assert all(
        img.shape[1:] == (32, 32, 3) and img.dtype == np.uint8 and lbl.dtype == np.int32 for img, lbl in out
    )
    assert [len(lbl) for _, lbl in D.batches(ds, batch_size=5, shuffle=False, drop_last=True)] == [5] * 4
    assert list(D.batches(ds, batch_size=50, shuffle=False, drop_last=True)) == []


def test_batches_shuffle():
    import jax

    ds = _toy()

    def order(**kw):
        return np.concatenate(
            [img[:, 0, 0, 0] for img, lbl in D.batches(ds, batch_size=4, shuffle=True, **kw)]
        )

    a = order(key=jax.random.key(0))
    assert sorted(a) == list(range(23)) and not np.array_equal(a, np.arange(23))
    np.testing.assert_array_equal(a, order(key=jax.random.key(0)))
    assert not np.array_equal(a, order(key=jax.random.key(1)))
    s = order(seed=3)
    np.testing.assert_array_equal(s, order(key=3))  # int key == numpy seed
    assert sorted(s) == list(range(23))
    for img, lbl in D.batches(ds, batch_size=4, shuffle=True, seed=0):
        np.testing.assert_array_equal(lbl, img[:, 0, 0, 0] % 10)  # images and labels stay paired
    with pytest.raises(ValueError, match="key"):
        D.batches(ds, batch_size=4, shuffle=True)  # eager check
    with pytest.raises(ValueError, match="batch_size"):
        D.batches(ds, batch_size=0, shuffle=False)
    with pytest.raises(ValueError, match="either"):
        D.batches(ds, batch_size=2, shuffle=True, key=jax.random.key(0), seed=1)


# --------------------------------------------------------------------------------------
# probe_set
# --------------------------------------------------------------------------------------


def _balanced(n_per_class=30, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), n_per_class)).astype(np.int32)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return D.Dataset(images, labels, "synthetic")


def test_probe_set_deterministic_and_balanced():
    ds = _balanced()
    p = D.probe_set(ds, per_class=7)
    assert isinstance(p, D.ProbeSet)
    assert p.images.shape == (70, 32, 32, 3) and p.images.dtype == np.uint8
    assert p.labels.dtype == np.int32 and p.indices.dtype == np.int64
    np.testing.assert_array_equal(p.labels, np.repeat(np.arange(10), 7))
    for c in range(10):
        idx = p.indices[p.labels == c]
        assert np.all(np.diff(idx) > 0)  # sorted by index within class
    np.testing.assert_array_equal(p.images, ds.images[p.indices])
    np.testing.assert_array_equal(p.labels, ds.labels[p.indices])
    expected = hashlib.sha256(p.images.tobytes() + p.labels.astype("<i4").tobytes()).hexdigest()[:16]
    assert p.hash == expected and len(p.hash) == 16

    q = D.probe_set(ds, per_class=7, seed=0)
    assert q.hash == p.hash
    np.testing.assert_array_equal(q.indices, p.indices)
    r = D.probe_set(ds, per_class=7, seed=1)
    assert r.hash != p.hash and not np.array_equal(r.indices, p.indices)
    # Not just the first k of each class.
    first = np.concatenate([np.flatnonzero(ds.labels == c)[:7] for c in range(10)])
    assert not np.array_equal(p.indices, first)
    # Same subset per class whatever other classes contain (per-class seeding).
    ds2 = D.Dataset(ds.images.copy(), ds.labels, "copy")
    ds2.images[ds.labels == 3] = 0
    np.testing.assert_array_equal(D.probe_set(ds2, per_class=7).indices, p.indices)


def test_probe_set_errors():
    ds = _balanced(n_per_class=5)
    with pytest.raises(ValueError, match="fewer than per_class=6"):
        D.probe_set(ds, per_class=6)
    with pytest.raises(ValueError, match="per_class"):
        D.probe_set(ds, per_class=0)
    assert len(D.probe_set(ds, per_class=5).labels) == 50
