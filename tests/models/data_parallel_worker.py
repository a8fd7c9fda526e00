"""Subprocess half of tests/models/test_data_parallel.py: data-parallel training on forced CPU devices.

Run as ``python -m tests.models.data_parallel_worker JOB ...`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set by the caller (XLA reads it once, at start).
Jobs:

* ``train:D,D,...[:aug]`` -- the tiny 2-epoch run of ``tests/models/test_train.py`` (8 steps,
  checkpoints at steps 0, 1, 2, 4, 8; without augmentation unless ``aug``) on one device and with
  ``devices=D``; for every D and checkpoint, the relative difference ``|a - b| / |b|`` (2-norm over all
  parameters, and over all BatchNorm statistics) from the single-device run, the test metrics, and how
  the loop placed its arrays. The last D is run twice (identical? compiled again?).
* ``augment:D`` -- the crop + flip of a batch split over D devices equals the unsplit one (bit-for-bit).
* ``resume:D,D2`` -- a run on D devices interrupted after step 6 and resumed on D (bit-identical to the
  uninterrupted D run?) and on D2 (refused?).
* ``refuse:D,D2`` -- the same refusal, cheaply: the run on D devices stops at step 0 (no training step).
* ``errors`` -- the ValueErrors of impossible device counts.

Prints one JSON object (the last line of stdout).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import models
from models import train as T
from models import train_state as TS
from tests.models.test_train import synthetic
from tests.models.test_train import tiny_config

STEPS = (0, 1, 2, 4, 8)
SEEN: dict[str, list] = {"train": [], "eval": []}
RUN_SECONDS: list = []


def _record(kind: str, step_fn):
    """Wraps a jitted step so that the shardings of the arrays the loop passes to it are recorded."""

    def wrapper(*args, **kwargs):
        state_or_params, _, images, labels = args[:4]
        leaves = jax.tree.leaves(state_or_params)
        SEEN[kind].append(
            {
                "images_type": type(images).__name__,
                "images_spec": str(getattr(getattr(images, "sharding", None), "spec", None)),
                "images_devices": len(images.sharding.device_set) if hasattr(images, "sharding") else 0,
                "shard_rows": sorted({s.data.shape[0] for s in images.addressable_shards})
                if hasattr(images, "addressable_shards")
                else [],
                "labels_devices": len(labels.sharding.device_set) if hasattr(labels, "sharding") else 0,
                "state_replicated": all(leaf.sharding.is_fully_replicated for leaf in leaves),
                "state_devices": sorted({len(leaf.sharding.device_set) for leaf in leaves}),
            }
        )
        return step_fn(*args, **kwargs)

    wrapper._cache_size = step_fn._cache_size
    return wrapper


TS.train_step = _record("train", TS.train_step)
TS.eval_step = _record("eval", TS.eval_step)


def _data():
    return synthetic(64, 0), synthetic(20, 1)  # 64 images: 4 steps of 16 per epoch


def _arrays(workdir: Path, step) -> tuple[dict[str, np.ndarray], dict]:
    """``({"params": all parameters, "stats": all BatchNorm statistics}, meta)`` of a checkpoint."""
    model, meta = models.load_checkpoint(workdir, step)  # gathered to the host by the checkpoint
    flat = {
        name: np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(nnx.state(model, kind))])
        for name, kind in (("params", nnx.Param), ("stats", nnx.BatchStat))
    }
    return flat, meta


def _rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b}


def _run(tmp: Path, name: str, **overrides) -> tuple[Path, dict]:
    train, test = _data()
    workdir = tmp / name
    SEEN["train"].clear()
    SEEN["eval"].clear()
    t0 = time.perf_counter()
    summary = T.train_and_evaluate(tiny_config(**overrides), workdir, train_data=train, test_data=test)
    RUN_SECONDS.append((name, round(time.perf_counter() - t0, 1)))
    return workdir, summary


def job_train(tmp: Path, devices: list[int], augment: bool) -> list[dict]:
    ref_dir, ref = _run(tmp, "ref", augment=augment)
    ref_seen = {k: list(v) for k, v in SEEN.items()}
    ref_arrays = {s: _arrays(ref_dir, s)[0] for s in STEPS}
    rows = [{"devices": None, "seen_train": ref_seen["train"][:1], "seen_eval": ref_seen["eval"][:1]}]
    for d in devices:
        cache = TS.train_step._cache_size()
        workdir, summary = _run(tmp, f"d{d}", devices=d, augment=augment)
        first_compiles = TS.train_step._cache_size() - cache
        arrays = {s: _arrays(workdir, s) for s in STEPS}
        row = {}
        if d == devices[-1]:  # the same device count again: the same result, no new compilation
            again_dir, _ = _run(tmp, f"d{d}-again", devices=d, augment=augment)
            row["repeat_identical"] = all(
                _rel(_arrays(again_dir, s)[0], arrays[s][0]) == {"params": 0.0, "stats": 0.0} for s in (1, 8)
            )
            row["new_compiles_second_run"] = TS.train_step._cache_size() - cache - first_compiles
        rows.append(
            row
            | {
                "devices": d,
                "summary_devices": summary["devices"],
                "config_devices": json.loads((workdir / "config.json").read_text())["devices"],
                "meta_devices": arrays[8][1].get("devices"),
                "checkpoints": summary["checkpoints"],
                "rel_diff": {str(s): _rel(arrays[s][0], ref_arrays[s]) for s in STEPS},
                "test_acc": (summary["final_test_acc"], ref["final_test_acc"]),
                "test_loss": (summary["final_test_loss"], ref["final_test_loss"]),
                "test_n": arrays[8][1].get("test_n"),
                "new_compiles_first_run": first_compiles,
                "seen_train": SEEN["train"][:1] + SEEN["train"][-1:],
                "n_train_calls": len(SEEN["train"]),
                "seen_eval": SEEN["eval"][:1],
            }
        )
    return rows


def job_augment(d: int) -> bool:
    from models.data import augment

    images = synthetic(16, 2)[0]
    key = jax.random.key(5)
    whole = np.asarray(jax.jit(augment)(key, images))
    split = jax.jit(augment)(key, jax.device_put(images, T.data_parallel(d).batch))
    assert len(split.sharding.device_set) == d
    return bool(np.array_equal(np.asarray(split), whole))


def job_resume(tmp: Path, d: int, d2: int) -> dict:
    opts = dict(devices=d, augment=False)  # the settings of the train job: no new compilation
    full_dir, _ = _run(tmp, f"full{d}", **opts)
    part_dir, part = _run(tmp, f"part{d}", **opts, max_steps=6)
    train, test = _data()
    out: dict = {"interrupted": part["interrupted"]}
    try:
        T.train_and_evaluate(
            tiny_config(**dict(opts, devices=d2), resume=True), part_dir, train_data=train, test_data=test
        )
        out["other_count"] = "resumed"
    except ValueError as e:
        out["other_count"] = str(e)
    s2 = T.train_and_evaluate(tiny_config(**opts, resume=True), part_dir, train_data=train, test_data=test)
    out["final_step"] = s2["final_step"]
    out["bit_identical"] = all(
        _rel(_arrays(part_dir, s)[0], _arrays(full_dir, s)[0]) == {"params": 0.0, "stats": 0.0}
        for s in (4, 8)
    )
    out["metrics_devices"] = [
        json.loads(line).get("devices")
        for line in (part_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["event"] in ("start", "resume")
    ]
    return out


def job_refuse(tmp: Path, d: int, d2: int) -> str:
    part_dir, part = _run(tmp, f"zero{d}", devices=d, max_steps=0)
    assert part["checkpoints"] == [0] and part["devices"] == d
    train, test = _data()
    try:
        T.train_and_evaluate(tiny_config(devices=d2, resume=True), part_dir, train_data=train, test_data=test)
    except ValueError as e:
        return str(e)
    return "resumed"


def job_errors(tmp: Path) -> dict:
    train, test = _data()
    out = {}
    for name, make in {
        "too_many": lambda: T.train_and_evaluate(
            tiny_config(devices=16), tmp / "too_many", train_data=train, test_data=test
        ),
        "indivisible": lambda: tiny_config(devices=3),
        "zero": lambda: tiny_config(devices=0),
        "helper_too_many": lambda: T.data_parallel(9),
    }.items():
        try:
            make()
            out[name] = None
        except ValueError as e:
            out[name] = str(e)
    out["too_many_left_nothing"] = not (tmp / "too_many").exists()
    out["one_is_none"] = tiny_config(devices=1).devices is None and T.data_parallel(1) is None
    return out


def main(jobs: list[str]) -> None:
    res: dict = {"device_count": jax.device_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for job in jobs:
            t0 = time.perf_counter()
            kind, _, arg = job.partition(":")
            if kind == "train":
                counts, _, aug = arg.partition(":")
                res[job] = job_train(
                    tmp / job.replace(":", "-"), [int(v) for v in counts.split(",")], aug == "aug"
                )
            elif kind == "augment":
                res[job] = job_augment(int(arg))
            elif kind == "resume":
                d, d2 = (int(v) for v in arg.split(","))
                res["resume"] = job_resume(tmp / "resume", d, d2)
            elif kind == "refuse":
                d, d2 = (int(v) for v in arg.split(","))
                res["refuse"] = job_refuse(tmp / "refuse", d, d2)
            elif kind == "errors":
                res["errors"] = job_errors(tmp / "errors")
            else:
                raise ValueError(job)
            res.setdefault("seconds", {})[job] = round(time.perf_counter() - t0, 1)
    res["run_seconds"] = RUN_SECONDS
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
