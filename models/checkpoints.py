"""Orbax checkpoints of training runs (no pickle).

Layout of a run directory (``workdir``)::

    workdir/
      config.json            the TrainConfig of the run
      metrics.jsonl          one JSON object per line (train windows, evals, checkpoints, ...)
      checkpoints/
        index.json           {"last": step, "best": step|null, "best_test_acc": float|null,
                              "scheduled": [steps...], "steps": {step: [tags...]}}
        <step>/model/        params + batch_stats   (orbax StandardSave of flat string-keyed dicts)
        <step>/opt/          optimizer state + augmentation key data
        <step>/meta/         JSON: step, epoch, step_in_epoch, seed, arch, model kwargs, metrics, tags

A checkpoint "at step k" holds the state after k optimizer updates (step 0 =
initialisation). Every checkpoint is a complete training state, so any of them
can be resumed from. Trees are stored as flat ``{path string: array}`` dicts,
which makes them independent of optax/NNX container classes; they are restored
into freshly built templates with the same paths.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = [
    "CheckpointStore",
    "flatten_tree",
    "unflatten_like",
    "list_checkpoints",
    "load_checkpoint",
    "read_index",
]

CKPT_DIR = "checkpoints"
INDEX_FILE = "index.json"


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


def _abstract(flat: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    return {
        k: jax.ShapeDtypeStruct(np.shape(v), v.dtype if hasattr(v, "dtype") else np.result_type(v))
        for k, v in flat.items()
    }


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index(workdir: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint index of a run (see module docstring); rebuilt from disk if missing."""
    root = Path(workdir) / CKPT_DIR
    path = root / INDEX_FILE
    steps = _steps_on_disk(root)
    if path.exists():
        with open(path) as f:
            index = json.load(f)
        index["steps"] = {str(k): v for k, v in index.get("steps", {}).items() if int(k) in steps}
    else:
        index = {"last": None, "best": None, "best_test_acc": None, "scheduled": [], "steps": {}}
    # The index is written after each save; trust the directory for what exists.
    index["last"] = max(steps) if steps else None
    if index.get("best") is not None and int(index["best"]) not in steps:
        index["best"] = None
    return index


def _steps_on_disk(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    steps = []
    for entry in os.scandir(root):
        if entry.is_dir() and entry.name.isdigit() and (Path(entry.path) / "meta").exists():
            steps.append(int(entry.name))
    return sorted(steps)


@contextlib.contextmanager
def _quiet_absl():
    """Silences orbax's absl warnings about read-only managers while reading."""
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
    final), so an interruption right after a save loses nothing.
    """

    def __init__(self, workdir: str | os.PathLike, *, read_only: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.workdir = Path(workdir).absolute()
        self.root = self.workdir / CKPT_DIR
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            enable_async_checkpointing=False,
            create=not read_only,
            read_only=read_only,
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
        ocp = self._ocp
        step = int(step)
        model_flat = {k: np.asarray(v) for k, v in flatten_tree(model_state).items()}
        opt_flat = {k: np.asarray(v) for k, v in flatten_tree(opt_state).items()}
        meta = dict(meta, step=step, tags=list(tags))
        if step in self.manager.all_steps():
            self.manager.delete(step)
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
        self.index["steps"][str(step)] = list(tags)
        self.index["last"] = max(step, self.index["last"] or 0)
        if "best" in tags:
            self.index["best"] = step
            self.index["best_test_acc"] = meta.get("test_acc")
        if "scheduled" in tags and step not in self.index["scheduled"]:
            self.index["scheduled"] = sorted(self.index["scheduled"] + [step])
        self._write_index()

    def prune(self, keep: set[int]) -> None:
        """Deletes unscheduled checkpoints other than those in ``keep`` (typically last and best)."""
        scheduled = set(self.index["scheduled"])
        for step in list(self.manager.all_steps()):
            if step not in scheduled and step not in keep:
                self.manager.delete(step)
                self.index["steps"].pop(str(step), None)
        self._write_index()

    def _write_index(self) -> None:
        _write_json_atomic(self.root / INDEX_FILE, self.index)

    # -- reading ---------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.manager.all_steps())

    def resolve(self, step: int | str | None) -> int:
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {self.root}")
        if step is None or step == "last":
            return steps[-1]
        if step == "best":
            best = self.index.get("best")
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

    def restore_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, step: int, *, model_template: Any, opt_template: Any | None = None) -> dict[str, Any]:
        """Restores ``{"model": ..., "opt": ..., "meta": ...}`` into the given templates' structures."""
        ocp = self._ocp
        model_flat = flatten_tree(model_template)
        items = dict(
            model=ocp.args.StandardRestore(_abstract(model_flat)),
            meta=ocp.args.JsonRestore(),
        )
        if opt_template is not None:
            items["opt"] = ocp.args.StandardRestore(_abstract(flatten_tree(opt_template)))
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        result = {"meta": dict(out["meta"]), "model": unflatten_like(model_template, out["model"])}
        if opt_template is not None:
            result["opt"] = unflatten_like(opt_template, out["opt"])
        return result

    def close(self) -> None:
        self.manager.close()


def list_checkpoints(workdir: str | os.PathLike, *, scheduled_only: bool = False) -> list[int]:
    """Steps with a checkpoint in ``workdir`` (sorted).

    By default every checkpoint on disk: the scheduled ones (log-spaced early
    steps, every ``ckpt_every_epochs`` epochs, the final step) plus, when they
    are not on the schedule, the current "last" and "best" ones. With
    ``scheduled_only=True``, only the scheduled steps (the stable "path").
    """
    index = read_index(workdir)
    steps = _steps_on_disk(Path(workdir) / CKPT_DIR)
    if scheduled_only:
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
    for name in ("metrics.jsonl", "config.json", "summary.json"):
        try:
            (workdir / name).unlink()
        except FileNotFoundError:
            pass
