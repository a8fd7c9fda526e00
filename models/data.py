"""CIFAR-10 data pipeline: loading, normalisation, augmentation, batching, probe sets.

Two sources are supported, both returning the same in-memory :class:`Dataset`
(``uint8`` images ``[N, 32, 32, 3]`` and ``int32`` labels ``[N]``):

* ``"folder"``: a class-folder tree ``root/{train,test}/<class>/*.jpg`` such as
  the shared JPEG copy at ``<repo>/../shared/data/cifar10-jpeg``. Images are
  decoded once with PIL and cached as a compressed ``.npz`` keyed by a
  fingerprint of the files, so later loads take about a second.
* ``"tfds"``: ``tfds.data_source("cifar10")`` on an ``array_record`` build.
  This is random-access and needs no TensorFlow *to read* (preparing the build
  does need TensorFlow; see :func:`load_cifar10`).

TensorFlow is never imported here; ``tensorflow_datasets`` is imported lazily
on the TFDS path only, and JAX lazily in :func:`augment`, so that the decode
worker processes stay light.

Typical use::

    train = load_cifar10("train")
    key = jax.random.key(0)
    for epoch in range(epochs):
        key, k_epoch = jax.random.split(key)
        for images, labels in batches(train, batch_size=128, key=k_epoch,
                                      shuffle=True, drop_last=True):
            key, k_aug = jax.random.split(key)
            x = normalize(augment(k_aug, images))  # [B, 32, 32, 3] float32
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple

import numpy as np

from .fileio import CorruptFileError

if TYPE_CHECKING:  # pragma: no cover
    import jax

__all__ = [
    "CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGE_SHAPE",
    "Dataset",
    "ProbeSet",
    "default_data_dir",
    "default_cache_dir",
    "load_cifar10",
    "normalize",
    "augment",
    "alternating_flips",
    "batches",
    "probe_set",
]

#: CIFAR-10 class names in label order (0..9); also alphabetical order.
CLASSES: tuple[str, ...] = (
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

#: Per-channel (R, G, B) mean of the CIFAR-10 training images, pixel values scaled to [0, 1]. Shape [3].
CIFAR10_MEAN: np.ndarray = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
#: Per-channel (R, G, B) standard deviation of the CIFAR-10 training pixels, scaled to [0, 1]. Shape [3].
#: (The true pixel std; the often-copied (0.2023, 0.1994, 0.2010) is a different, wrong statistic.)
CIFAR10_STD: np.ndarray = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
CIFAR10_MEAN.setflags(write=False)
CIFAR10_STD.setflags(write=False)

#: Shape of one CIFAR-10 image (height, width, channels).
IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)

_REPO_ROOT = Path(__file__).resolve().parent.parent
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
_CACHE_FORMAT = "geopath-cifar10-folder-v1"
_PAD = 4  # pixels of zero padding for the random crop
_POOL_MIN_FILES = 2000  # below this, decode serially in-process
_CHUNK_FILES = 500  # files per decode task
_PROGRESS_MIN = 1000  # show progress bars only for at least this many items
_TFDS_BATCH = 1024  # records per __getitems__ call


class Dataset(NamedTuple):
    """An in-memory image-classification split.

    Attributes:
        images: ``uint8`` array ``[N, 32, 32, 3]`` (RGB, channels last), C-contiguous.
        labels: ``int32`` array ``[N]`` with values in ``0..9`` (index into :data:`CLASSES`).
        source: Human-readable description of where the data came from, e.g.
            ``"folder:/work/shared/data/cifar10-jpeg/train"`` or ``"tfds:cifar10/train"``.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str


class ProbeSet(NamedTuple):
    """A fixed, class-balanced subset used by every representation analysis.

    Attributes:
        images: ``uint8`` array ``[K * 10, 32, 32, 3]``, sorted by class then by index.
        labels: ``int32`` array ``[K * 10]``.
        indices: ``int64`` array ``[K * 10]``; positions of the images in the source split.
        hash: First 16 hex digits of the SHA-256 of ``images`` bytes followed by
            ``labels`` (little-endian int32) bytes; identifies the probe set.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    hash: str


# --------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------


def default_data_dir() -> str | None:
    """Returns the default CIFAR-10 class-folder root, if one is known.

    Returns:
        ``$GEOPATH_CIFAR10_DIR`` if that variable is set and non-empty (returned as
        given, even if it does not exist, so that a wrong setting fails loudly);
        otherwise ``<repo root>/../shared/data/cifar10-jpeg`` if that directory exists;
        otherwise ``None``.
    """
    env = os.environ.get("GEOPATH_CIFAR10_DIR")
    if env:
        return os.path.expanduser(env)
    shared = os.path.normpath(_REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg")
    return shared if os.path.isdir(shared) else None


def default_cache_dir() -> Path:
    """Returns the directory for decoded class-folder caches.

    Returns:
        ``$GEOPATH_CACHE_DIR/cifar10-folder`` if ``GEOPATH_CACHE_DIR`` is set, else
        ``~/.cache/geopath/cifar10-folder``.
    """
    base = os.environ.get("GEOPATH_CACHE_DIR") or os.path.join("~", ".cache", "geopath")
    return Path(base).expanduser() / "cifar10-folder"


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_cifar10(
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source: str = "auto",
    cache_dir: str | os.PathLike | None | bool = None,
    limit_per_class: int | None = None,
) -> Dataset:
    """Loads one CIFAR-10 split into memory.

    Args:
        split: ``"train"`` or ``"test"``. For the folder source this is the name of the
            split sub-folder; for TFDS any TFDS split string (e.g. ``"train[:10%]"``).
        data_dir: For ``"folder"``: the root holding ``train/`` and ``test/`` (default
            :func:`default_data_dir`). For ``"tfds"``: the TFDS data directory (default:
            TFDS's own default, ``~/tensorflow_datasets``).
        source: ``"folder"``, ``"tfds"`` or ``"auto"``. ``"auto"`` uses the folder loader
            when ``data_dir`` looks like a class-folder tree (has ``<some split>/<class>/``
            sub-folders), TFDS when ``data_dir`` holds a ``cifar10/`` TFDS folder, and raises
            FileNotFoundError when ``data_dir`` does not exist or is neither. With ``data_dir=None`` it uses
            the folder loader on :func:`default_data_dir` when that is set, else TFDS.
        cache_dir: Folder source only: where the decoded ``.npz`` cache lives (default
            :func:`default_cache_dir`); ``False`` disables caching. Ignored by TFDS.
        limit_per_class: If given, keep only the first ``limit_per_class`` images of
            each class (in file-name order for folders, record order for TFDS). Only
            those files are decoded, so this is cheap; meant for fast tests.

    Returns:
        A :class:`Dataset` with ``images`` ``uint8 [N, 32, 32, 3]`` and ``labels``
        ``int32 [N]``. Folder datasets are sorted by class, then by file name; TFDS
        datasets keep the TFDS record order.

    Raises:
        FileNotFoundError: The folder root or split folder is missing, or no data
            directory is known for the folder source.
        models.fileio.CorruptFileError: An image file is damaged or not an image (a
            ``ValueError``; the message names the file).
        ValueError: Bad arguments; the split folder has no class folders, unknown or
            missing class folders, a class folder with no images, or an image that is
            not 32x32 RGB (the message names the file and its size).
        ImportError: The TFDS path needs ``tensorflow_datasets`` and ``array_record``;
            preparing (downloading and converting) the TFDS build additionally needs
            TensorFlow, which this project does not install: prepare it elsewhere and
            pass its ``data_dir``, or use the folder source.
    """
    if source not in ("auto", "folder", "tfds"):
        raise ValueError(f"source must be 'auto', 'folder' or 'tfds', got {source!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    if limit_per_class is not None:
        if isinstance(limit_per_class, bool) or not isinstance(limit_per_class, (int, np.integer)):
            raise ValueError(f"limit_per_class must be a positive int or None, got {limit_per_class!r}")
        if limit_per_class < 1:
            raise ValueError(f"limit_per_class must be >= 1, got {limit_per_class}")
        limit_per_class = int(limit_per_class)

    if source == "auto":
        if data_dir is not None:
            if _looks_like_class_tree(data_dir):
                source = "folder"
            elif os.path.isdir(os.path.join(data_dir, "cifar10")):
                source = "tfds"
            elif os.path.isdir(data_dir):  # an empty or unrelated folder: say so instead of trying TFDS
                raise FileNotFoundError(
                    f"data_dir {data_dir} holds neither a CIFAR-10 class-folder tree "
                    f"({os.path.join(data_dir, 'train', '<class>', '*.jpg')}) nor a TFDS cifar10 build "
                    f"({os.path.join(data_dir, 'cifar10')}); point it at one of those, or pass source='tfds' "
                    "to let TFDS prepare it there"
                )
            else:  # do not let a typo trigger a TFDS download into a new directory
                raise FileNotFoundError(
                    f"data_dir {data_dir} does not exist (source='auto' needs an existing class-folder tree or "
                    "TFDS data directory; pass source='tfds' to let TFDS create it)"
                )
        else:
            data_dir = default_data_dir()
            source = "folder" if data_dir is not None else "tfds"

    if source == "folder":
        if data_dir is None:
            data_dir = default_data_dir()
        if data_dir is None:
            raise FileNotFoundError(
                "no CIFAR-10 class-folder directory: pass data_dir=, set GEOPATH_CIFAR10_DIR, or place "
                f"the JPEG copy at {os.path.normpath(_REPO_ROOT.parent / 'shared/data/cifar10-jpeg')}"
            )
        return _load_folder(Path(data_dir), split, cache_dir=cache_dir, limit_per_class=limit_per_class)
    return _load_tfds(split, data_dir=data_dir, limit_per_class=limit_per_class)


def _looks_like_class_tree(root: str | os.PathLike) -> bool:
    """True if some sub-folder of ``root`` (a split folder) contains a CIFAR-10 class folder."""
    try:
        subdirs = [e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return any(os.path.isdir(os.path.join(d, c)) for d in subdirs for c in CLASSES)


def _scan_split(
    root: Path, split: str, limit_per_class: int | None
) -> tuple[Path, list[tuple[str, int, int, int]]]:
    """Lists the image files of a class-folder split.

    Returns:
        ``(split_dir, files)`` with ``files`` a list of ``(relative_path, label, size,
        mtime_ns)``, sorted by label then file name, limited to ``limit_per_class``
        files per class.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder not found: {root}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 split folder not found: {split_dir} (expected {root}/<split>/<class>/*.jpg)"
        )

    class_dirs = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"no class folders in {split_dir} (expected one folder per class: {', '.join(CLASSES)})"
        )
    unknown = [c for c in class_dirs if c not in CLASSES]
    if unknown:
        raise ValueError(
            f"unknown class folder(s) {unknown} in {split_dir}; CIFAR-10 classes are {list(CLASSES)}"
        )
    missing = [c for c in CLASSES if c not in class_dirs]
    if missing:
        raise ValueError(f"missing class folder(s) {missing} in {split_dir}")

    files: list[tuple[str, int, int, int]] = []
    for label, cls in enumerate(CLASSES):
        class_dir = split_dir / cls
        names = sorted(
            e.name
            for e in os.scandir(class_dir)
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES
            and e.is_file()
        )
        if not names:
            raise ValueError(f"class folder {class_dir} contains no images (*.jpg, *.jpeg, *.png)")
        if limit_per_class is not None:
            names = names[:limit_per_class]
        for name in names:
            st = os.stat(class_dir / name)
            files.append((f"{cls}/{name}", label, st.st_size, st.st_mtime_ns))
    return split_dir, files


def _fingerprint(split: str, files: Sequence[tuple[str, int, int, int]], limit_per_class: int | None) -> str:
    """Hashes the selected files' relative paths, sizes and mtimes (plus split and limit)."""
    h = hashlib.sha256()
    h.update(f"{_CACHE_FORMAT}\nsplit={split}\nlimit_per_class={limit_per_class}\n".encode())
    for rel, label, size, mtime_ns in files:
        h.update(f"{rel}\t{label}\t{size}\t{mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode_chunk(paths: Sequence[str]) -> np.ndarray:
    """Decodes image files into a ``uint8 [len(paths), 32, 32, 3]`` array (runs in workers)."""
    from PIL import Image

    out = np.empty((len(paths), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(paths):
        arr = None
        try:
            with Image.open(path) as im:
                (w, h), mode = im.size, im.mode
                if (h, w, mode) == (*IMAGE_SHAPE[:2], "RGB"):
                    arr = np.asarray(im)  # decodes: a truncated file fails here
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged / foreign files
            raise CorruptFileError(
                f"image {path} is damaged or not an image ({type(e).__name__}: {e}); "
                "replace it with a good copy or delete it (the cache is rebuilt automatically)"
            ) from e
        if arr is None:
            raise ValueError(
                f"image {path} is {w}x{h} (width x height) mode {mode}; expected 32x32 RGB (32x32x3)"
            )
        if arr.shape != IMAGE_SHAPE:  # defensive: PIL mode/shape disagreement
            raise ValueError(f"image {path} decoded to shape {arr.shape}; expected {IMAGE_SHAPE}")
        out[i] = arr
    return out


def _num_decode_workers() -> int:
    env = os.environ.get("GEOPATH_DECODE_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, min(os.cpu_count() or 1, 8))


def _decode_files(paths: Sequence[str], desc: str) -> np.ndarray:
    """Decodes many image files with a progress bar, using a process pool when large.

    The pool uses the ``spawn`` start method (``fork`` is unsafe once JAX has started
    its threads), so scripts that load data must keep the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        paths: Absolute file paths.
        desc: Progress-bar label.

    Returns:
        ``uint8`` array ``[len(paths), 32, 32, 3]`` in the order of ``paths``.
    """
    from tqdm.auto import tqdm

    n = len(paths)
    out = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
    chunks = [(s, paths[s : s + _CHUNK_FILES]) for s in range(0, n, _CHUNK_FILES)]
    workers = _num_decode_workers()
    with tqdm(total=n, desc=desc, unit="img", disable=n < _PROGRESS_MIN, leave=False) as bar:
        if n < _POOL_MIN_FILES or workers == 1:
            for start, chunk in chunks:
                out[start : start + len(chunk)] = _decode_chunk(chunk)
                bar.update(len(chunk))
            return out
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)), mp_context=ctx
        ) as pool:
            futures = {pool.submit(_decode_chunk, chunk): (start, len(chunk)) for start, chunk in chunks}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    start, size = futures[fut]
                    out[start : start + size] = fut.result()
                    bar.update(size)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return out


def _load_folder(
    root: Path,
    split: str,
    *,
    cache_dir: str | os.PathLike | None | bool,
    limit_per_class: int | None,
) -> Dataset:
    split_dir, files = _scan_split(root, split, limit_per_class)
    labels = np.array([f[1] for f in files], dtype=np.int32)
    desc = f"folder:{os.path.abspath(split_dir)}" + (
        f" [limit_per_class={limit_per_class}]" if limit_per_class else ""
    )

    cache_path: Path | None = None
    fp = _fingerprint(split, files, limit_per_class)
    if cache_dir is not False:
        cache_root = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
        cache_path = cache_root / f"cifar10-{split}-n{len(files)}-{fp}.npz"
        cached = _read_cache(cache_path, fp, len(files))
        if cached is not None:
            images, cached_labels = cached
            if np.array_equal(cached_labels, labels):
                return Dataset(images, labels, desc)
            warnings.warn(f"ignoring inconsistent cache {cache_path}", RuntimeWarning, stacklevel=3)

    paths = [str(split_dir / rel) for rel, *_ in files]
    images = _decode_files(paths, desc=f"decoding CIFAR-10 {split}")
    if cache_path is not None:
        _write_cache(cache_path, fp, images, labels, [rel for rel, *_ in files])
    return Dataset(images, labels, desc)


def _read_cache(path: Path, fp: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Returns ``(images, labels)`` from a valid cache file, else None (missing or corrupt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp or str(z["format"]) != _CACHE_FORMAT:
                return None
            images = np.ascontiguousarray(z["images"], dtype=np.uint8)
            labels = np.asarray(z["labels"], dtype=np.int32)
    except Exception as e:  # corrupt / truncated / foreign file: rebuild it
        warnings.warn(f"ignoring unreadable cache {path}: {e!r}", RuntimeWarning, stacklevel=4)
        return None
    if images.shape != (n, *IMAGE_SHAPE) or labels.shape != (n,):
        return None
    return images, labels


def _write_cache(path: Path, fp: str, images: np.ndarray, labels: np.ndarray, rel_paths: list[str]) -> None:
    """Writes the cache atomically (temporary file in the same folder, then ``os.replace``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        warnings.warn(f"cannot write CIFAR-10 cache in {path.parent}: {e}", RuntimeWarning, stacklevel=4)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f,
                images=images,
                labels=labels,
                files=np.array(rel_paths, dtype=np.str_),
                fingerprint=np.array(fp),
                format=np.array(_CACHE_FORMAT),
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _load_tfds(split: str, *, data_dir: str | os.PathLike | None, limit_per_class: int | None) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - installed in this project
        raise ImportError(
            "source='tfds' needs tensorflow_datasets and array_record (pip install geopath[models])"
        ) from e

    try:
        src = tfds.data_source(
            "cifar10",
            split=split,
            data_dir=None if data_dir is None else os.fspath(data_dir),
            builder_kwargs={"file_format": "array_record"},
        )
    except ImportError as e:
        raise ImportError(
            f"TFDS cifar10 is not prepared in {data_dir or '~/tensorflow_datasets'} and preparing it needs "
            "TensorFlow, which geopath does not use. Prepare the array_record build elsewhere and pass its "
            "data_dir, or use source='folder' with the JPEG copy."
        ) from e

    info = getattr(src, "dataset_info", None)
    if info is not None:
        # A prepared build reads the names from batches.meta.txt; an unprepared (or mocked)
        # builder only knows num_classes=10 and reports the names '0'..'9'.
        names = tuple(info.features["label"].names)
        if names != CLASSES and names != tuple(str(i) for i in range(len(CLASSES))):
            raise ValueError(f"TFDS cifar10 label names {names} differ from {CLASSES}")
    images, labels = _arrays_from_records(src, limit_per_class, desc=f"reading TFDS cifar10 {split}")
    desc = f"tfds:cifar10/{split}" + (f" [limit_per_class={limit_per_class}]" if limit_per_class else "")
    return Dataset(images, labels, desc)


def _arrays_from_records(src: Any, limit_per_class: int | None, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads a random-access source of ``{"image", "label"}`` records into arrays.

    Uses batched ``src.__getitems__(keys)`` when it works and falls back to
    ``src[i]`` otherwise (the ``tfds.testing.mock_data`` data source exposes a
    ``__getitems__`` that raises ``TypeError``).

    Args:
        src: Sequence-like source with ``len(src)`` and ``src[i]``.
        limit_per_class: Keep only the first k records of each class (stops reading early).
        desc: Progress-bar label.

    Returns:
        ``(images uint8 [N, 32, 32, 3], labels int32 [N])`` in record order.
    """
    from tqdm.auto import tqdm

    n = len(src)
    batched = callable(getattr(src, "__getitems__", None))
    images: list[np.ndarray] = []
    labels: list[int] = []
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    with tqdm(total=n, desc=desc, unit="img", disable=n < _PROGRESS_MIN, leave=False) as bar:
        for start in range(0, n, _TFDS_BATCH):
            keys = list(range(start, min(start + _TFDS_BATCH, n)))
            records = None
            if batched:
                try:
                    records = src.__getitems__(keys)
                except TypeError:
                    batched = False
            if records is None:
                records = [src[k] for k in keys]
            for key, rec in zip(keys, records):
                label = int(rec["label"])
                if not 0 <= label < len(CLASSES):
                    raise ValueError(f"record {key}: label {label} outside 0..{len(CLASSES) - 1}")
                if limit_per_class is not None and counts[label] >= limit_per_class:
                    continue
                img = np.asarray(rec["image"])
                if img.shape != IMAGE_SHAPE or img.dtype != np.uint8:
                    raise ValueError(
                        f"record {key}: image has shape {img.shape} dtype {img.dtype}; expected uint8 {IMAGE_SHAPE}"
                    )
                images.append(img)
                labels.append(label)
                counts[label] += 1
            bar.update(len(keys))
            if limit_per_class is not None and np.all(counts >= limit_per_class):
                break
    if not images:
        raise ValueError(f"{desc}: no records")
    return np.ascontiguousarray(np.stack(images)), np.asarray(labels, dtype=np.int32)


# --------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------


def normalize(images: Any) -> Any:
    """Scales pixels to [0, 1] and standardises each channel with the CIFAR-10 statistics.

    Args:
        images: Pixel values in [0, 255] (any dtype, typically ``uint8``), shape
            ``[..., 3]`` (e.g. ``[N, 32, 32, 3]``); a numpy or jax array (jit-able).

    Returns:
        ``float32`` array of the same shape, ``(images / 255 - CIFAR10_MEAN) / CIFAR10_STD``;
        a jax array for jax input, a numpy array otherwise.
    """
    if not hasattr(images, "astype"):
        images = np.asarray(images)
    if images.shape[-1:] != (3,):
        raise ValueError(f"normalize expects channels-last RGB [..., 3], got shape {images.shape}")
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    return (x - CIFAR10_MEAN) / CIFAR10_STD


def augment(
    key: jax.Array,
    images: Any,
    *,
    padding: int = _PAD,
    pad_mode: str = "zeros",
    flips: Any = None,
) -> jax.Array:
    """CIFAR augmentation: a random crop of the padded image (a random translation) and a horizontal flip.

    Each image in the batch gets its own crop offset, uniform in ``0..2 * padding`` on each axis (a shift
    of ``-padding..+padding`` pixels), and, unless ``flips`` is given, its own horizontal flip with
    probability 1/2. With the defaults this is the standard CIFAR augmentation (4-pixel zero padding:
    black pixels for ``uint8`` input, so apply this before :func:`normalize`). Jit-able; the output is a
    deterministic function of ``key`` (and ``flips``): the random draws use explicit 32-bit dtypes, so
    enabling ``jax_enable_x64`` does not change them.

    Args:
        key: A JAX PRNG key (``jax.random.key`` or ``jax.random.PRNGKey``).
        images: Batch ``[B, H, W, C]`` (``[B, 32, 32, 3]`` for CIFAR), ``uint8`` or float.
        padding: Pixels of padding on every side (the largest shift); 0 means no translation.
        pad_mode: ``"zeros"`` or ``"reflect"`` (mirror without repeating the edge, as ``numpy.pad``).
        flips: Optional bool ``[B]``: which images to flip (e.g. from :func:`alternating_flips`); the
            key then draws only the crops, with the same offsets as without ``flips``.

    Returns:
        Array ``[B, H, W, C]`` with the dtype of ``images``.
    """
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"augment expects a batch [B, H, W, C], got shape {images.shape}")
    if pad_mode not in ("zeros", "reflect"):
        raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got {pad_mode!r}")
    b, h, w, c = images.shape
    if flips is not None and jnp.shape(flips) != (b,):
        raise ValueError(f"flips must be [B] = ({b},) for images {images.shape}, got {jnp.shape(flips)}")
    k_crop, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * padding + 1, dtype=jnp.int32)
    if flips is None:
        flips = jax.random.bernoulli(k_flip, jnp.float32(0.5), (b,))
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(images, pads, mode="constant" if pad_mode == "zeros" else "reflect")

    def one(img, offset, flip):
        crop = jax.lax.dynamic_slice(img, (offset[0], offset[1], jnp.int32(0)), (h, w, c))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(padded, offsets, jnp.asarray(flips, bool))


def alternating_flips(seed: int, epoch: int, n: int) -> np.ndarray:
    """Which of ``n`` training images are flipped in ``epoch``: bool ``[n]`` (airbench's derandomised flip).

    A random half of the images (each with probability 1/2, drawn from ``seed`` alone) is flipped in even
    epochs and the other images in odd ones, so every image is seen flipped in every other epoch. A pure
    function of ``(seed, epoch, n)``.
    """
    base = np.random.default_rng([int(seed), 0xF119]).random(int(n)) < 0.5
    return base ^ bool(int(epoch) % 2)


# --------------------------------------------------------------------------------------
# Batching and probe sets
# --------------------------------------------------------------------------------------


def batches(
    ds: Dataset,
    *,
    batch_size: int,
    key: Any = None,
    seed: int | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates once over a dataset (one epoch) in mini-batches.

    Arguments are checked eagerly (when ``batches`` is called, not on first ``next``).

    Args:
        ds: A :class:`Dataset` (or anything with ``images`` ``[N, ...]`` and ``labels`` ``[N]``,
            e.g. a :class:`ProbeSet`).
        batch_size: Examples per batch (positive).
        key: Shuffle randomness: a JAX PRNG key, or an int used as a numpy seed. Use a
            fresh key per epoch.
        seed: Alternative to ``key``: an int numpy seed. Give at most one of the two.
        shuffle: Visit examples in a random order (needs ``key`` or ``seed``); otherwise in
            dataset order.
        drop_last: Drop the final batch if it has fewer than ``batch_size`` examples.

    Returns:
        Iterator of ``(images, labels)`` numpy pairs, ``images`` ``[B, 32, 32, 3]``
        (dtype of ``ds.images``, normally ``uint8``) and ``labels`` ``int32 [B]``, with
        ``B == batch_size`` except possibly for the last batch.

    Raises:
        ValueError: ``batch_size`` not positive, both ``key`` and ``seed`` given, or
            ``shuffle`` without ``key``/``seed``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if key is not None and seed is not None:
        raise ValueError("give either key or seed, not both")
    images, labels = ds.images, ds.labels
    n = len(labels)
    if len(images) != n:
        raise ValueError(f"images ({len(images)}) and labels ({n}) differ in length")
    if shuffle:
        if key is None and seed is None:
            raise ValueError("shuffle=True needs a key (JAX PRNG key) or seed (int)")
        rng_seed = seed if seed is not None else key
        if isinstance(rng_seed, (int, np.integer)):
            order = np.random.default_rng(int(rng_seed)).permutation(n)
        else:
            import jax

            order = np.asarray(jax.random.permutation(rng_seed, n))
    else:
        order = None
    return _batch_iter(images, labels, order, int(batch_size), bool(drop_last))


def _batch_iter(
    images: np.ndarray, labels: np.ndarray, order: np.ndarray | None, batch_size: int, drop_last: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n = len(labels)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if order is None:
            yield images[start:end], np.asarray(labels[start:end], dtype=np.int32)
        else:
            idx = order[start:end]
            yield images[idx], np.asarray(labels[idx], dtype=np.int32)


def probe_set(ds: Dataset, *, per_class: int = 100, seed: int = 0) -> ProbeSet:
    """Selects a fixed, class-balanced probe set.

    For each class ``c``, a permutation of that class's indices is drawn from
    ``numpy.random.default_rng((seed, c))`` and its first ``per_class`` entries are kept;
    the result is sorted by class, then by index. The same ``(ds, per_class, seed)``
    always gives the same probe set, identified by its ``hash``. Note that the
    pixels (hence the hash) differ between the JPEG-folder and TFDS sources.

    Args:
        ds: A :class:`Dataset` with ``images`` ``[N, 32, 32, 3]`` and ``labels`` ``[N]``.
        per_class: Images per class, K.
        seed: Selection seed.

    Returns:
        A :class:`ProbeSet` with ``images`` ``uint8 [10 K, 32, 32, 3]``, ``labels``
        ``int32 [10 K]``, ``indices`` ``int64 [10 K]`` into ``ds`` and the hash.

    Raises:
        ValueError: ``per_class`` not positive or some class has fewer than ``per_class``
            examples.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    labels = np.asarray(ds.labels)
    chosen = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(
                f"class {c} ({CLASSES[c]}) has {len(idx)} examples in {getattr(ds, 'source', 'dataset')}, "
                f"fewer than per_class={per_class}"
            )
        perm = np.random.default_rng((int(seed), c)).permutation(len(idx))[:per_class]
        chosen.append(np.sort(idx[perm]))
    indices = np.concatenate(chosen).astype(np.int64)
    images = np.ascontiguousarray(np.asarray(ds.images)[indices])
    probe_labels = labels[indices].astype(np.int32)
    return ProbeSet(images, probe_labels, indices, _probe_hash(images, probe_labels))


def _probe_hash(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())
    return h.hexdigest()[:16]
