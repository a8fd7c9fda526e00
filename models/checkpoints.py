"""Orbax checkpoints of training runs (no pickle), with verified loads and crash-safe saves.

Layout of a run directory (``workdir``)::

    workdir/
      config.json            the TrainConfig of the run
      metrics.jsonl          one JSON object per line (train windows, evals, checkpoints, ...)
      checkpoints/
        index.json           {"last": step, "best": step|null, "best_test_acc": float|null,
                              "scheduled": [steps...], "steps": {step: [tags...]}}  (informational)
        <step>/model/        params + batch_stats   (orbax StandardSave of flat string-keyed dicts)
        <step>/opt/          optimizer state + augmentation key data
        <step>/meta/         JSON: step, epoch, step_in_epoch, seed, arch, model kwargs, metrics, tags,
                             best_so_far, and "integrity" (sha256 of every saved array and of the meta)
      rejected_checkpoints/  checkpoints that failed verification on resume, moved aside

A checkpoint "at step k" holds the state after k optimizer updates (step 0 =
initialisation). Every checkpoint is a complete training state, so any of them
can be resumed from. Trees are stored as flat ``{path string: array}`` dicts,
which makes them independent of optax/NNX container classes; they are restored
into freshly built templates with the same paths.

Guarantees:

* **Atomic saves.** Orbax writes a checkpoint into a temporary folder and renames it
  to ``<step>/`` when complete, so a finalised ``<step>/`` is never half-written;
  deletions rename a checkpoint away before removing it. The index is *derived* from
  the finalised checkpoints (their tags live in their own metadata); ``index.json``
  is a convenience copy written atomically after each change and never trusted on read.
  A kill at any point therefore leaves a consistent run.
* **Verified loads.** Every save records the sha256 of each array's dtype, shape and
  bytes and of the metadata itself; every load recomputes them and raises
  :class:`CheckpointCorruptError` (naming the step and the file) on any mismatch or
  unreadable file, instead of returning wrong numbers.
* **Resume after a crash or corruption.** :meth:`CheckpointStore.restore_latest_valid`
  tries checkpoints newest first, moves each one that fails verification to
  ``rejected_checkpoints/`` (reporting why) and resumes from the newest good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

from .fileio import CorruptFileError
from .fileio import UserFacingError
from .fileio import read_json
from .fileio import write_json_atomic

__all__ = [
    "CheckpointStore",
    "CheckpointCorruptError",
    "UnverifiableCheckpointError",
    "Resumed",
    "SkippedCheckpoint",
    "array_digest",
    "flatten_tree",
    "unflatten_like",
    "list_checkpoints",
    "load_checkpoint",
    "read_index",
]

CKPT_DIR = "checkpoints"
INDEX_FILE = "index.json"
REJECTED_DIR = "rejected_checkpoints"
INTEGRITY_KEY = "integrity"
INTEGRITY_FORMAT = 1
_META_ITEM = "meta"
_META_FILE = "metadata"  # the file orbax's JsonSave writes inside <step>/meta/
_TRASH_PREFIX = ".deleting-"
_RECOVER_HINT = (
    "resume with --resume to fall back to the newest checkpoint that verifies, or restore the "
    "run folder from a backup"
)


class CheckpointCorruptError(CorruptFileError):
    """A checkpoint's files are unreadable or do not match the checksums saved with them.

    Attributes:
        step: The checkpoint step.
        path: The file or folder that failed.
    """

    def __init__(self, message: str, *, step: int | None = None, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.step = step
        self.path = None if path is None else str(path)


class UnverifiableCheckpointError(UserFacingError):
    """A checkpoint carries no checksums (written before they were recorded) and ``verify=True``."""


class SkippedCheckpoint(NamedTuple):
    """A checkpoint that :meth:`CheckpointStore.restore_latest_valid` did not use.

    Attributes:
        step: Its step.
        reason: The verification error.
        moved_to: Where it was moved (under ``workdir/rejected_checkpoints``).
    """

    step: int
    reason: str
    moved_to: str


class Resumed(NamedTuple):
    """Result of :meth:`CheckpointStore.restore_latest_valid`.

    Attributes:
        step: The step resumed from.
        restored: ``{"model": ..., "opt": ..., "meta": ...}`` as from :meth:`CheckpointStore.restore`.
        skipped: Newer checkpoints that failed verification, newest first.
    """

    step: int
    restored: dict[str, Any]
    skipped: tuple[SkippedCheckpoint, ...]


# Test-only fault injection: GEOPATH_TEST_CHECKPOINT_FAULT="<stage>@<step>" makes the process
# exit at once (os._exit, like SIGKILL: no cleanup, no flush) at that stage of the save of <step>.
# Stages, in order: "before_save" (nothing of the checkpoint written), "inside_save" (while orbax
# writes the temporary folder), "after_save" (checkpoint final, index.json not yet updated),
# "after_index" (everything written).
FAULT_ENV = "GEOPATH_TEST_CHECKPOINT_FAULT"
FAULT_EXIT_CODE = 137
FAULT_STAGES = ("before_save", "inside_save", "after_save", "after_index")


def _fault_point(stage: str, step: int, root: Path) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    if spec == f"{stage}@{step}":
        os._exit(FAULT_EXIT_CODE)
    if stage == "before_save" and spec == f"inside_save@{step}":
        # Exit as soon as orbax's temporary folder for this step appears (mid-write).
        def watch() -> None:
            prefix = f"{step}.orbax-checkpoint-tmp"
            while True:
                try:
                    if any(name.startswith(prefix) for name in os.listdir(root)):
                        os._exit(FAULT_EXIT_CODE)
                except OSError:
                    pass
                time.sleep(0.0002)

        threading.Thread(target=watch, daemon=True).start()


def _path_str(path: tuple[Any, ...]) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(str(k.name))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:  # pragma: no cover
            parts.append(str(k))
    return ".".join(parts) if parts else "_"


def flatten_tree(tree: Any) -> dict[str, Any]:
    """``{"a.b.0.c": leaf}`` for any pytree (nnx.State, optax state, dicts): dotted leaf paths."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in flat:
        key = _path_str(path)
        if key in out:
            raise ValueError(f"two leaves share the path {key!r}")
        out[key] = leaf
    return out


def unflatten_like(template: Any, flat: Mapping[str, Any]) -> Any:
    """Inverse of :func:`flatten_tree`: fills the leaves of ``template`` from ``flat`` by path."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    missing = []
    for path, leaf in leaves:
        key = _path_str(path)
        if key not in flat:
            missing.append(key)
            continue
        value = flat[key]
        if tuple(np.shape(value)) != tuple(np.shape(leaf)):
            raise ValueError(f"checkpoint leaf {key} has shape {np.shape(value)}, expected {np.shape(leaf)}")
        values.append(value)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} leaves, e.g. {missing[:3]}")
    extra = set(flat) - {_path_str(p) for p, _ in leaves}
    if extra:
        raise ValueError(f"checkpoint has {len(extra)} unexpected leaves, e.g. {sorted(extra)[:3]}")
    return jax.tree_util.tree_unflatten(treedef, values)


def array_digest(x: Any) -> str:
    """sha256 (hex) of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _leaf_records(flat: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """``{key: [shape, dtype, sha256]}`` of a flat dict of arrays."""
    return {k: [list(np.shape(v)), np.asarray(v).dtype.str, array_digest(v)] for k, v in flat.items()}


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _meta_digest(meta: Mapping[str, Any]) -> str:
    """sha256 of the metadata without its integrity record, as it reads back from JSON."""
    body = {k: v for k, v in meta.items() if k != INTEGRITY_KEY}
    return hashlib.sha256(_canonical_json(json.loads(json.dumps(body))).encode()).hexdigest()


def _abstract(flat: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    return {
        k: jax.ShapeDtypeStruct(np.shape(v), v.dtype if hasattr(v, "dtype") else np.result_type(v))
        for k, v in flat.items()
    }


def _read_meta(step_dir: Path, step: int, *, verify: bool = True) -> dict[str, Any]:
    """The verified metadata of the checkpoint in ``step_dir``.

    Raises:
        CheckpointCorruptError: The metadata file is missing, not JSON, or fails its checksum.
        UnverifiableCheckpointError: No integrity record and ``verify``.
    """
    path = step_dir / _META_ITEM / _META_FILE
    try:
        meta = read_json(path, what=f"metadata of checkpoint step {step}", fix=_RECOVER_HINT)
    except FileNotFoundError as e:
        raise CheckpointCorruptError(
            f"checkpoint step {step} is incomplete: {path} is missing; {_RECOVER_HINT}", step=step, path=path
        ) from e
    except CorruptFileError as e:
        raise CheckpointCorruptError(f"checkpoint step {step}: {e}", step=step, path=path) from e
    if not isinstance(meta, dict):
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {path} holds a {type(meta).__name__}, not a JSON object; {_RECOVER_HINT}",
            step=step,
            path=path,
        )
    record = meta.get(INTEGRITY_KEY)
    if record is None:
        if verify:
            raise UnverifiableCheckpointError(
                f"checkpoint step {step} ({step_dir}) has no checksums (written before they were recorded, "
                "or its metadata lost them) and cannot be verified; retrain with --overwrite, or restore it "
                "with CheckpointStore.restore(..., verify=False) if you trust it"
            )
        return meta
    ok = isinstance(record, dict) and record.get("meta_sha256") == _meta_digest(meta)
    if verify and not ok:
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {path} does not match its saved sha256 checksum (damaged); "
            f"{_RECOVER_HINT}",
            step=step,
            path=path,
        )
    if verify and meta.get("step") != step:
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {path} says step {meta.get('step')!r}; {_RECOVER_HINT}",
            step=step,
            path=path,
        )
    return meta


def _public_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != INTEGRITY_KEY}


def _steps_on_disk(root: Path) -> list[int]:
    """Steps with a finalised checkpoint folder.

    Orbax renames a complete temporary folder to ``<step>`` and deletions rename it away first,
    so every ``<step>`` folder is a finished checkpoint; one that lost files since is listed too
    (and refused when loaded) rather than silently dropped.
    """
    if not root.is_dir():
        return []
    return sorted(int(e.name) for e in os.scandir(root) if e.name.isdigit() and e.is_dir())


def read_index(workdir: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint index of a run, derived from the finalised checkpoints on disk.

    Returns:
        ``{"last": step|None, "best": step|None, "best_test_acc": float|None,
        "scheduled": [steps], "steps": {str(step): [tags]}, "unreadable": {str(step): reason}}``.
        ``best`` is the running best recorded in the newest readable checkpoint (the newest
        checkpoint tagged "best" for runs without that record) when that checkpoint exists.
        Checkpoints whose metadata fails verification are listed in ``unreadable`` only.
        ``index.json`` is not read: it is a copy for people and may be stale after a kill.
    """
    root = Path(workdir) / CKPT_DIR
    steps = _steps_on_disk(root)
    index: dict[str, Any] = {
        "last": max(steps) if steps else None,
        "best": None,
        "best_test_acc": None,
        "scheduled": [],
        "steps": {},
        "unreadable": {},
    }
    metas = {}
    for step in steps:
        try:
            meta = _read_meta(root / str(step), step, verify=True)
        except (CheckpointCorruptError, UnverifiableCheckpointError) as e:
            if isinstance(e, UnverifiableCheckpointError):  # legacy run: tags readable, arrays unverified
                try:
                    meta = _read_meta(root / str(step), step, verify=False)
                except CheckpointCorruptError as e2:
                    index["unreadable"][str(step)] = str(e2)
                    continue
            else:
                index["unreadable"][str(step)] = str(e)
                continue
        metas[step] = meta
        tags = [str(t) for t in meta.get("tags", [])]
        index["steps"][str(step)] = tags
        if "scheduled" in tags:
            index["scheduled"].append(step)
    if metas:
        newest = metas[max(metas)]
        record = newest.get("best_so_far")
        if isinstance(record, dict) and record.get("step") in metas:
            index["best"], index["best_test_acc"] = int(record["step"]), record.get("test_acc")
        else:
            tagged = [s for s, m in metas.items() if "best" in m.get("tags", [])]
            if tagged:
                index["best"], index["best_test_acc"] = max(tagged), metas[max(tagged)].get("test_acc")
    return index


@contextlib.contextmanager
def _quiet_absl():
    """Silences orbax's absl warnings (read-only managers, restores) while reading."""
    logger = logging.getLogger("absl")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


class CheckpointStore:
    """Saves / restores complete training states under ``workdir/checkpoints``.

    Checkpoints are written synchronously (a save returns when the files are
    final), so an interruption right after a save loses nothing; see the module
    docstring for what a kill at any other point leaves.
    """

    def __init__(self, workdir: str | os.PathLike, *, read_only: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.read_only = read_only
        self.workdir = Path(workdir).absolute()
        self.root = self.workdir / CKPT_DIR
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(self.root):  # deletions a kill interrupted
                if entry.name.startswith(_TRASH_PREFIX):
                    shutil.rmtree(entry.path, ignore_errors=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            enable_async_checkpointing=False,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # half-written saves a kill left behind
        )
        with _quiet_absl() if read_only else contextlib.nullcontext():
            self.manager = ocp.CheckpointManager(
                self.root, options=options, item_names=("model", "opt", "meta")
            )
        self.index = read_index(self.workdir)

    # -- writing ---------------------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        *,
        model_state: Mapping[str, Any],
        opt_state: Mapping[str, Any],
        meta: Mapping[str, Any],
        tags: list[str],
    ) -> None:
        """Writes the checkpoint of ``step`` (replacing one already there) and updates the index."""
        ocp = self._ocp
        step = int(step)
        model_flat = {k: np.asarray(v) for k, v in flatten_tree(model_state).items()}
        opt_flat = {k: np.asarray(v) for k, v in flatten_tree(opt_state).items()}
        if "best" in tags:
            best_so_far = {"step": step, "test_acc": meta.get("test_acc")}
        else:
            best_so_far = {"step": self.index.get("best"), "test_acc": self.index.get("best_test_acc")}
        meta = dict(meta, step=step, tags=list(tags), best_so_far=best_so_far)
        meta.pop(INTEGRITY_KEY, None)
        meta = json.loads(json.dumps(meta))  # exactly what reads back
        meta[INTEGRITY_KEY] = {
            "format": INTEGRITY_FORMAT,
            "algorithm": "sha256 of dtype.str + str(shape) + C-order bytes",
            "model": _leaf_records(model_flat),
            "opt": _leaf_records(opt_flat),
            "meta_sha256": _meta_digest(meta),
        }
        _fault_point("before_save", step, self.root)
        if (self.root / str(step)).exists():
            self._delete_step(step)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(model_flat),
                opt=ocp.args.StandardSave(opt_flat),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        _fault_point("after_save", step, self.root)
        self.index["steps"][str(step)] = list(tags)
        self.index["unreadable"].pop(str(step), None)
        self.index["last"] = max(step, self.index["last"] or 0)
        if "best" in tags:
            self.index["best"] = step
            self.index["best_test_acc"] = meta.get("test_acc")
        if "scheduled" in tags and step not in self.index["scheduled"]:
            self.index["scheduled"] = sorted(self.index["scheduled"] + [step])
        self._write_index()
        _fault_point("after_index", step, self.root)

    def prune(self, keep: set[int]) -> None:
        """Deletes unscheduled checkpoints other than those in ``keep`` (typically last and best).

        Checkpoints whose tags cannot be read (damaged metadata) are never deleted here.
        """
        for step in self.steps():
            tags = self.index["steps"].get(str(step))
            if tags is None or "scheduled" in tags or step in keep:
                continue
            self._delete_step(step)
            self.index["steps"].pop(str(step), None)
        self._write_index()

    def _delete_step(self, step: int) -> None:
        """Renames ``<step>/`` away (atomic), then removes it: a kill never leaves half a checkpoint."""
        src = self.root / str(step)
        trash = self.root / f"{_TRASH_PREFIX}{step}-{os.getpid()}-{time.time_ns()}"
        os.replace(src, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.manager.reload()

    def _reject(self, step: int) -> Path:
        """Moves a checkpoint that failed verification to ``workdir/rejected_checkpoints/``."""
        dest_root = self.workdir / REJECTED_DIR
        dest_root.mkdir(exist_ok=True)
        dest = dest_root / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}"
        os.replace(self.root / str(step), dest)
        self.manager.reload()
        return dest

    def _write_index(self) -> None:
        write_json_atomic(self.root / INDEX_FILE, self.index)

    # -- reading ---------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Steps of the finalised checkpoints."""
        return _steps_on_disk(self.root)

    def resolve(self, step: int | str | None) -> int:
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {self.root}")
        if step is None or step == "last":
            return steps[-1]
        if step == "best":
            best = self.index.get("best")
            unreadable = sorted(int(s) for s in self.index.get("unreadable", {}))
            if unreadable and (best is None or unreadable[-1] > best):
                s = unreadable[-1]
                raise CheckpointCorruptError(
                    f"cannot tell which checkpoint is best: {self.index['unreadable'][str(s)]}",
                    step=s,
                    path=self.root / str(s),
                )
            if best is None:
                raise FileNotFoundError(f"no 'best' checkpoint recorded in {self.root} (no evaluation yet?)")
            return int(best)
        if isinstance(step, str):
            if not step.isdigit():
                raise ValueError(f"step must be an int, 'last', 'best' or None, got {step!r}")
            step = int(step)
        if int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint at step {step} in {self.root}; available: {steps}")
        return int(step)

    def restore_meta(self, step: int, *, verify: bool = True) -> dict[str, Any]:
        """The metadata of checkpoint ``step`` (verified against its checksum unless ``verify=False``)."""
        return _public_meta(_read_meta(self.root / str(int(step)), int(step), verify=verify))

    def restore(
        self, step: int, *, model_template: Any, opt_template: Any | None = None, verify: bool = True
    ) -> dict[str, Any]:
        """Restores ``{"model": ..., "opt": ..., "meta": ...}`` into the given templates' structures.

        Every array is checked against the sha256 saved with it (unless ``verify=False``).

        Raises:
            CheckpointCorruptError: A file of the checkpoint is unreadable or an array or the
                metadata does not match its checksum; the message names the step and the file.
            UnverifiableCheckpointError: The checkpoint has no checksums and ``verify=True``.
            ValueError: The templates do not match the checkpoint's arrays (wrong architecture).
        """
        ocp = self._ocp
        step = int(step)
        step_dir = self.root / str(step)
        meta = _read_meta(step_dir, step, verify=verify)
        record = meta.get(INTEGRITY_KEY) if verify else None
        flats = {"model": flatten_tree(model_template)}
        if opt_template is not None:
            flats["opt"] = flatten_tree(opt_template)
        if record is not None:
            for item, flat in flats.items():
                _check_template(step, item, flat, record.get(item))
        items = {item: ocp.args.StandardRestore(_abstract(flat)) for item, flat in flats.items()}
        try:
            with _quiet_absl():
                out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax / tensorstore raise many types on damaged files
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise CheckpointCorruptError(
                f"checkpoint step {step}: cannot read the arrays in {step_dir} "
                f"({type(e).__name__}: {first}); {_RECOVER_HINT}",
                step=step,
                path=step_dir,
            ) from e
        if record is not None:
            for item in flats:
                _check_arrays(step, step_dir / item, out[item], record[item])
        result = {"meta": _public_meta(meta), "model": unflatten_like(model_template, out["model"])}
        if opt_template is not None:
            result["opt"] = unflatten_like(opt_template, out["opt"])
        return result

    def restore_latest_valid(
        self,
        *,
        model_template: Any,
        opt_template: Any | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Resumed:
        """Restores the newest checkpoint that verifies, for resuming a run.

        Checkpoints are tried newest first. One that fails verification (unreadable file,
        checksum mismatch) is moved to ``workdir/rejected_checkpoints/`` and reported through
        ``log``; then the next older one is tried. The index is re-derived afterwards, so
        ``self.index`` describes the run as of the checkpoint used.

        Args:
            model_template, opt_template: As for :meth:`restore`.
            log: Receives one line per skipped checkpoint and one naming the checkpoint used
                (default: printed to stderr).

        Returns:
            A :class:`Resumed` ``(step, restored, skipped)``.

        Raises:
            FileNotFoundError: There are no checkpoints.
            CheckpointCorruptError: No checkpoint verifies (all were moved aside).
            UnverifiableCheckpointError: The newest readable checkpoint has no checksums.
        """
        if log is None:

            def log(msg: str) -> None:
                print(msg, file=sys.stderr, flush=True)

        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {self.root}")
        skipped: list[SkippedCheckpoint] = []
        for step in reversed(steps):
            try:
                restored = self.restore(step, model_template=model_template, opt_template=opt_template)
            except CheckpointCorruptError as e:
                dest = self._reject(step)
                skipped.append(SkippedCheckpoint(step, str(e), str(dest)))
                log(f"skipping checkpoint step {step}: {e} (moved to {dest})")
                continue
            self.index = read_index(self.workdir)
            self._write_index()
            log(f"resuming from checkpoint step {step} ({self.root / str(step)})")
            return Resumed(step, restored, tuple(skipped))
        self.index = read_index(self.workdir)
        raise CheckpointCorruptError(
            f"no checkpoint in {self.root} verifies; the damaged ones were moved to "
            f"{self.workdir / REJECTED_DIR}; start the run again with --overwrite",
            path=self.root,
        )

    def close(self) -> None:
        self.manager.close()


def _check_template(step: int, item: str, flat: Mapping[str, Any], records: Any) -> None:
    """Template keys, shapes and dtypes against the saved records (ValueError: wrong model, not damage)."""
    if not isinstance(records, dict):
        raise CheckpointCorruptError(
            f"checkpoint step {step}: the integrity record of '{item}' is missing; {_RECOVER_HINT}", step=step
        )
    missing = sorted(set(flat) - set(records))
    extra = sorted(set(records) - set(flat))
    if missing or extra:
        raise ValueError(
            f"checkpoint step {step} '{item}' does not fit the template: the template has "
            f"{len(missing)} leaves the checkpoint lacks (e.g. {missing[:3]}) and the checkpoint "
            f"{len(extra)} the template lacks (e.g. {extra[:3]})"
        )
    for key, leaf in flat.items():
        shape, dtype = tuple(records[key][0]), records[key][1]
        leaf_dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf))
        if tuple(np.shape(leaf)) != shape or leaf_dtype.str != dtype:
            raise ValueError(
                f"checkpoint step {step} leaf {item}/{key} has shape {shape} dtype {dtype}; "
                f"the template expects {tuple(np.shape(leaf))} {leaf_dtype.str}"
            )


def _check_arrays(step: int, item_dir: Path, out: Mapping[str, Any], records: Mapping[str, Any]) -> None:
    bad = [k for k in sorted(records) if k not in out or array_digest(out[k]) != records[k][2]]
    if bad:
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {len(bad)} array(s) in {item_dir} do not match their saved sha256 "
            f"checksums (damaged files), e.g. {bad[:3]}; {_RECOVER_HINT}",
            step=step,
            path=item_dir,
        )


def list_checkpoints(workdir: str | os.PathLike, *, scheduled_only: bool = False) -> list[int]:
    """Steps with a checkpoint in ``workdir`` (sorted).

    By default every checkpoint on disk: the scheduled ones (log-spaced early
    steps, every ``ckpt_every_epochs`` epochs, the final step) plus, when they
    are not on the schedule, the current "last" and "best" ones. With
    ``scheduled_only=True``, only the scheduled steps (the stable "path").

    Raises:
        CheckpointCorruptError: ``scheduled_only=True`` and some checkpoint's metadata is damaged
            (whether it is scheduled cannot be told, so the list would be silently short).
    """
    index = read_index(workdir)
    steps = _steps_on_disk(Path(workdir) / CKPT_DIR)
    if scheduled_only:
        if index["unreadable"]:
            s = min(int(k) for k in index["unreadable"])
            raise CheckpointCorruptError(
                index["unreadable"][str(s)], step=s, path=Path(workdir) / CKPT_DIR / str(s)
            )
        sched = set(int(s) for s in index.get("scheduled", []))
        steps = [s for s in steps if s in sched]
    return steps


def load_checkpoint(workdir: str | os.PathLike, step: int | str | None = None):
    """Loads the model of one checkpoint.

    Args:
        workdir: A run directory written by :func:`models.train.train_and_evaluate`.
        step: ``None`` or ``"last"`` (latest), ``"best"`` (best test accuracy) or
            an int step from :func:`list_checkpoints`.

    Returns:
        ``(model, meta)``: the network (eval mode) with the checkpoint's params and
        BatchNorm statistics, and the checkpoint's metadata dict (``step``,
        ``epoch``, ``step_in_epoch``, ``arch``, ``model_kwargs``, ``seed``,
        ``tags``, metrics such as ``train_loss`` / ``test_acc`` when known, and
        ``config``).

    Raises:
        FileNotFoundError: No such run or checkpoint.
        CheckpointCorruptError: A file of the checkpoint is damaged (checksum mismatch or
            unreadable); the message names the step and the file.
        UnverifiableCheckpointError: The checkpoint predates checksums.
    """
    from .nets import create_model

    workdir = Path(workdir)
    if not (workdir / CKPT_DIR).is_dir():
        raise FileNotFoundError(f"no checkpoints directory in {workdir}")
    store = CheckpointStore(workdir, read_only=True)
    try:
        resolved = store.resolve(step)
        meta = store.restore_meta(resolved)
        model = create_model(
            meta["arch"], num_classes=meta["num_classes"], rngs=nnx.Rngs(0), **meta.get("model_kwargs", {})
        )
        template = model_state_of(model)
        restored = store.restore(resolved, model_template=template)
    finally:
        store.close()
    set_model_state(model, restored["model"])
    model.eval()
    return model, restored["meta"]


def model_state_of(model: nnx.Module) -> dict[str, Any]:
    """``{"params": nnx.State, "batch_stats": nnx.State}`` of a model."""
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return {"params": params, "batch_stats": batch_stats}


def set_model_state(model: nnx.Module, state: Mapping[str, Any]) -> None:
    nnx.update(model, state["params"], state["batch_stats"])


def remove_run(workdir: str | os.PathLike) -> None:
    """Deletes a run's checkpoints, index and logs (used by ``--overwrite``)."""
    workdir = Path(workdir)
    shutil.rmtree(workdir / CKPT_DIR, ignore_errors=True)
    shutil.rmtree(workdir / REJECTED_DIR, ignore_errors=True)
    for name in ("metrics.jsonl", "config.json", "summary.json"):
        try:
            (workdir / name).unlink()
        except FileNotFoundError:
            pass
