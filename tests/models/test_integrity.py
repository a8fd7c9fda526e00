"""Fault injection: training runs survive kills and refuse damaged files (models.checkpoints / fileio / data).

Kills run ``models.train.train_and_evaluate`` in a subprocess that exits (``os._exit``, as
SIGKILL would) at a named stage of one checkpoint save; the run is then resumed here and
must end with bit-for-bit the weights, checkpoints and best step of an uninterrupted run.
Damage tests flip or cut bytes in each kind of file and check that loading refuses with an
error naming the step and the file, and that resuming falls back to the newest good one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import models
from models import checkpoints as ckpt
from models import train as T
from models.fileio import CorruptFileError
from models.fileio import UserFacingError
from models.fileio import ensure_writable_dir
from models.fileio import read_json
from models.fileio import write_json_atomic
from models.train_state import make_optimizer

_REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "_geopath_test_train", Path(__file__).with_name("test_train.py")
)
_tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tt)
tiny_config, synthetic = _tt.tiny_config, _tt.synthetic  # the tiny run of test_train.py (4 steps / epoch)

SCHEDULE = [0, 1, 2, 4, 8]  # tiny_config's checkpoints: log-spaced in epoch 1, every epoch

# Runs the tiny training of test_train.py; argv: workdir, config overrides as JSON.
_DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tt", sys.argv[1])
tt = importlib.util.module_from_spec(spec); spec.loader.exec_module(tt)
from models import train as T
T.train_and_evaluate(tt.tiny_config(**json.loads(sys.argv[3])), sys.argv[2],
                     train_data=tt.synthetic(64, 0), test_data=tt.synthetic(20, 1))
"""


def run_killed(workdir: Path, fault: str, **overrides) -> subprocess.CompletedProcess:
    """Runs the tiny training in a subprocess that exits at ``fault`` ("<stage>@<step>")."""
    env = dict(os.environ, **{ckpt.FAULT_ENV: fault, "PYTHONPATH": str(_REPO), "JAX_PLATFORMS": "cpu"})
    # the same x64 setting as this process (a whole-suite run enables it for the geopath tests), where the
    # reference and the resumed run train: a run killed after its last save is compared as it was written
    env["JAX_ENABLE_X64"] = str(bool(jax.config.jax_enable_x64))
    cmd = [sys.executable, "-c", _DRIVER, str(Path(__file__).with_name("test_train.py")), str(workdir)]
    return subprocess.run(
        cmd + [json.dumps(overrides)], cwd=_REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 0), synthetic(20, 1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted tiny run: (workdir, summary, params, batch_stats)."""
    workdir = tmp_path_factory.mktemp("integrity") / "reference"
    summary = T.train_and_evaluate(tiny_config(), workdir, train_data=data[0], test_data=data[1])
    params, stats = final_arrays(workdir)
    return workdir, summary, params, stats


def final_arrays(workdir, step="last"):
    model, _ = models.load_checkpoint(workdir, step)
    return (
        jax.tree.map(np.asarray, nnx.state(model, nnx.Param)),
        jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)),
    )


def assert_same_run(workdir, reference, summary):
    ref_dir, ref_summary, ref_params, ref_stats = reference
    params, stats = final_arrays(workdir)
    for a, b in zip(jax.tree.leaves((ref_params, ref_stats)), jax.tree.leaves((params, stats)), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-for-bit
    assert models.list_checkpoints(workdir) == SCHEDULE
    assert models.list_checkpoints(workdir, scheduled_only=True) == SCHEDULE
    index = ckpt.read_index(workdir)
    assert index["best"] == ckpt.read_index(ref_dir)["best"] == ref_summary["best_step"]
    assert summary["best_step"] == ref_summary["best_step"]
    assert summary["best_test_acc"] == ref_summary["best_test_acc"]
    assert summary["final_test_acc"] == ref_summary["final_test_acc"]
    assert not (workdir / ckpt.CKPT_DIR / ckpt.INDEX_FILE).read_text().count("\x00")
    assert read_json(workdir / ckpt.CKPT_DIR / ckpt.INDEX_FILE, what="index")["best"] == index["best"]


def resume(workdir, data):
    return T.train_and_evaluate(tiny_config(resume=True), workdir, train_data=data[0], test_data=data[1])


# ------------------------------------------------------------------------------------------------
# Kills at every stage of a checkpoint save
# ------------------------------------------------------------------------------------------------

# Default run: a kill inside orbax's write of the first checkpoint (temporary folder left
# behind; cheap: before the train step compiles) and one between the finalised epoch-end
# checkpoint and the index update (the case that used to lose that scheduled checkpoint and
# change best_step). The full matrix is slow.
FAST_FAULTS = ["inside_save@0", "after_save@4"]
ALL_FAULTS = [f"{stage}@{step}" for stage in ckpt.FAULT_STAGES for step in (0, 2, 4, 8)]


def _kill_and_resume(tmp_path, data, reference, fault):
    workdir = tmp_path / "run"
    proc = run_killed(workdir, fault)
    assert proc.returncode == ckpt.FAULT_EXIT_CODE, proc.stderr[-3000:]
    stage, step = fault.split("@")
    on_disk = ckpt._steps_on_disk(workdir / ckpt.CKPT_DIR)
    assert (int(step) in on_disk) == (stage in ("after_save", "after_index"))
    if stage == "inside_save":  # really killed mid-write: orbax's temporary folder is left behind
        assert any(".orbax-checkpoint-tmp" in p.name for p in (workdir / ckpt.CKPT_DIR).iterdir())
    summary = resume(workdir, data)
    assert not any(".orbax-checkpoint-tmp" in p.name for p in (workdir / ckpt.CKPT_DIR).iterdir())
    assert_same_run(workdir, reference, summary)


@pytest.mark.parametrize("fault", FAST_FAULTS)
def test_kill_during_save_then_resume_is_exact(tmp_path, data, reference, fault):
    _kill_and_resume(tmp_path, data, reference, fault)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [f for f in ALL_FAULTS if f not in FAST_FAULTS])
def test_kill_during_save_then_resume_is_exact_all_stages(tmp_path, data, reference, fault):
    _kill_and_resume(tmp_path, data, reference, fault)


def test_stale_index_is_not_trusted(tmp_path, data, reference):
    """index.json missing the last save (a kill before its update) or garbled: derived from disk instead."""
    workdir = tmp_path / "run"
    T.train_and_evaluate(tiny_config(max_steps=4), workdir, train_data=data[0], test_data=data[1])
    index_path = workdir / ckpt.CKPT_DIR / ckpt.INDEX_FILE
    stale = read_json(index_path, what="index")
    stale["scheduled"].remove(4)
    stale["steps"].pop("4")
    stale["best"] = stale["best_test_acc"] = None
    index_path.write_text(json.dumps(stale))
    assert ckpt.read_index(workdir)["scheduled"] == [0, 1, 2, 4]
    assert ckpt.read_index(workdir)["best"] == 4
    index_path.write_text('{"last": 4, "sched')  # truncated
    assert ckpt.read_index(workdir)["best"] == 4
    assert_same_run(workdir, reference, resume(workdir, data))


# ------------------------------------------------------------------------------------------------
# Damaged files
# ------------------------------------------------------------------------------------------------


def flip(path: Path, n: int = 1, *, at: float = 0.5) -> None:
    """XORs ``n`` consecutive bytes of ``path`` (starting at fraction ``at`` of its length) with 0xFF."""
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), len(data) - n)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def largest_data_file(item_dir: Path) -> Path:
    files = [p for p in item_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.fixture
def run_copy(tmp_path, reference):
    workdir = tmp_path / "run"
    shutil.copytree(reference[0], workdir)
    return workdir


@pytest.mark.parametrize("n", [1, 16])
def test_flipped_array_bytes_are_refused(tmp_path, reference, n):
    """Flipped bytes in compressed array data: an error naming step and file, never different weights.

    An OCDBT data file can hold bytes that no restore reads (one default run flipped such bytes at 70% of the
    file): a flip there must load the saved weights bit for bit. At least one of the flips must be refused.
    """
    saved = final_arrays(reference[0], 8)
    refused = 0
    for k, at in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
        run = tmp_path / f"run{k}"
        shutil.copytree(reference[0], run)
        flip(largest_data_file(run / ckpt.CKPT_DIR / "8" / "model"), n, at=at)
        try:
            got = final_arrays(run, 8)
        except ckpt.CheckpointCorruptError as e:
            refused += 1
            assert e.step == 8
            assert "checkpoint step 8" in str(e) and "\n" not in str(e)
            assert str(run / ckpt.CKPT_DIR / "8") in str(e)
            assert isinstance(e, ValueError)  # CLIs print it as one line, exit 2
            models.load_checkpoint(run, 4)  # the others still load
        else:
            for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(got), strict=True):
                np.testing.assert_array_equal(a, b)
    assert refused >= 1


@pytest.mark.parametrize(
    "target",
    ["opt_data", "model_manifest", "model_metadata", "meta_truncated", "meta_value", "meta_checksum"],
)
def test_damaged_last_checkpoint_resume_falls_back(run_copy, data, reference, capfd, target):
    """Resume skips a damaged newest checkpoint, says so, moves it aside and ends bit-identical."""
    step_dir = run_copy / ckpt.CKPT_DIR / "8"
    meta_file = step_dir / "meta" / "metadata"
    if target == "opt_data":
        flip(largest_data_file(step_dir / "opt"), 16)
    elif target == "model_manifest":
        flip(step_dir / "model" / "manifest.ocdbt", 4)
    elif target == "model_metadata":
        (step_dir / "model" / "_METADATA").write_text("{")
    elif target == "meta_truncated":
        meta_file.write_bytes(meta_file.read_bytes()[:-40])
    elif target == "meta_value":  # still valid JSON, one metric changed
        text = meta_file.read_text()
        acc = json.loads(text)["test_acc"]
        meta_file.write_text(text.replace(json.dumps(acc), json.dumps(acc + 0.25), 1))
    else:
        meta = json.loads(meta_file.read_text())
        meta["integrity"]["meta_sha256"] = "0" * 64
        meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointCorruptError, match="checkpoint step 8"):
        store = ckpt.CheckpointStore(run_copy, read_only=True)
        try:
            model = models.create_model(tiny_config().arch, rngs=nnx.Rngs(0))
            state = ckpt.model_state_of(model)
            opt = make_optimizer(tiny_config(), 4)[0].init(state["params"])
            store.restore(
                8,
                model_template=state,
                opt_template={"opt": opt, "step": np.int32(0), "key": jax.random.key_data(jax.random.key(0))},
            )
        finally:
            store.close()
    capfd.readouterr()
    summary = resume(run_copy, data)
    err = capfd.readouterr().err
    assert "skipping checkpoint step 8" in err and "resuming from checkpoint step 4" in err
    rejected = list((run_copy / ckpt.REJECTED_DIR).iterdir())
    assert [p.name.split("-")[0] for p in rejected] == ["8"]
    assert_same_run(run_copy, reference, summary)


def test_damaged_metadata_is_named_and_best_refused(run_copy):
    """A damaged meta: loading names the file; 'best' is refused when the damaged one may be it."""
    meta_file = run_copy / ckpt.CKPT_DIR / "8" / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text()[:50])
    with pytest.raises(ckpt.CheckpointCorruptError, match="invalid JSON") as e:
        models.load_checkpoint(run_copy, 8)
    assert str(meta_file) in str(e.value) and e.value.path == str(meta_file)
    assert ckpt.read_index(run_copy)["unreadable"].keys() == {"8"}
    with pytest.raises(ckpt.CheckpointCorruptError, match="which checkpoint is best"):
        models.load_checkpoint(run_copy, "best")
    with pytest.raises(ckpt.CheckpointCorruptError, match=str(meta_file)):
        models.list_checkpoints(run_copy, scheduled_only=True)
    assert models.list_checkpoints(run_copy) == SCHEDULE


def test_unverifiable_and_mismatched_checkpoints(run_copy):
    """No checksums: refused unless verify=False. A wrong template is a ValueError, not 'damage'."""
    meta_file = run_copy / ckpt.CKPT_DIR / "4" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["integrity"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.UnverifiableCheckpointError, match="no checksums"):
        models.load_checkpoint(run_copy, 4)
    store = ckpt.CheckpointStore(run_copy, read_only=True)
    try:
        template = ckpt.model_state_of(models.create_model(tiny_config().arch, rngs=nnx.Rngs(0)))
        restored = store.restore(4, model_template=template, verify=False)
        assert restored["meta"]["step"] == 4
        flat = ckpt.flatten_tree(template)
        key = next(iter(flat))
        wider = dict(flat, **{key: np.zeros((*np.shape(flat[key]), 2), np.float32)})
        with pytest.raises(ValueError, match=f"{key}.*template") as e:
            store.restore(8, model_template=wider)
        assert not isinstance(e.value, ckpt.CheckpointCorruptError)
    finally:
        store.close()


def test_resume_refuses_unverifiable_checkpoint_without_moving_it(run_copy, data):
    """A checkpoint without checksums is not 'damaged': resume stops and says what to do."""
    meta_file = run_copy / ckpt.CKPT_DIR / "8" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["integrity"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ckpt.UnverifiableCheckpointError, match="--overwrite"):
        resume(run_copy, data)
    assert models.list_checkpoints(run_copy) == SCHEDULE and not (run_copy / ckpt.REJECTED_DIR).exists()


def test_checkpoint_missing_its_metadata_is_listed_and_refused(run_copy):
    shutil.rmtree(run_copy / ckpt.CKPT_DIR / "2" / "meta")
    assert models.list_checkpoints(run_copy) == SCHEDULE  # not silently dropped
    with pytest.raises(ckpt.CheckpointCorruptError, match="checkpoint step 2 is incomplete"):
        models.load_checkpoint(run_copy, 2)


def test_all_checkpoints_damaged(run_copy, data):
    for step in SCHEDULE:
        meta_file = run_copy / ckpt.CKPT_DIR / str(step) / "meta" / "metadata"
        meta_file.write_text("")
    with pytest.raises(ckpt.CheckpointCorruptError, match="no checkpoint .* verifies.*--overwrite"):
        resume(run_copy, data)
    assert len(list((run_copy / ckpt.REJECTED_DIR).iterdir())) == len(SCHEDULE)


def test_integrity_record_covers_every_array(reference):
    meta = json.loads((reference[0] / ckpt.CKPT_DIR / "8" / "meta" / "metadata").read_text())
    record = meta["integrity"]
    assert set(record["model"]) == set(
        ckpt.flatten_tree(ckpt.model_state_of(models.load_checkpoint(reference[0])[0]))
    )
    assert {"step", "key"} <= set(record["opt"]) and any(k.startswith("opt.") for k in record["opt"])
    model, _ = models.load_checkpoint(reference[0], 8)
    flat = ckpt.flatten_tree(ckpt.model_state_of(model))
    assert all(record["model"][k][2] == ckpt.array_digest(v) for k, v in flat.items())
    assert ckpt.array_digest(np.zeros(2, np.float32)) != ckpt.array_digest(np.zeros(2, np.int32))
    assert ckpt.array_digest(np.zeros((2, 1))) != ckpt.array_digest(np.zeros((1, 2)))


# ------------------------------------------------------------------------------------------------
# models.fileio: atomic JSON, clear read errors, writable folders
# ------------------------------------------------------------------------------------------------


def test_write_json_atomic_and_read_json(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"a": [1, 2.5, None]})
    assert read_json(path, what="summary") == {"a": [1, 2.5, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left
    path.write_text('{"a": "unterminated')
    with pytest.raises(CorruptFileError, match="Unterminated string") as e:
        read_json(path, what="summary")
    assert str(path) in str(e.value) and str(e.value).startswith("summary ") and "\n" not in str(e.value)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(CorruptFileError, match="not UTF-8"):
        read_json(path, what="summary")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        read_json(tmp_path / "nope.json", what="meta")
    with pytest.raises(UserFacingError, match=str(tmp_path / "no" / "x.json")):
        write_json_atomic(tmp_path / "no" / "x.json", {})


def test_write_json_atomic_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "index.json"
    write_json_atomic(path, {"v": 1})

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"v": 2})
    assert read_json(path, what="index") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_ensure_writable_dir(tmp_path, monkeypatch):
    out = ensure_writable_dir(tmp_path / "a" / "b", what="--out folder")
    assert out.is_dir() and list(out.iterdir()) == []
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserFacingError, match=f"--out folder {a_file} is a file"):
        ensure_writable_dir(a_file, what="--out folder")
    with pytest.raises(UserFacingError, match=f"is under the file {a_file}"):
        ensure_writable_dir(a_file / "sub" / "dir", what="--out folder")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(UserFacingError, match=f"work dir {out} is not writable .*Permission denied"):
        ensure_writable_dir(out, what="work dir")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_ensure_writable_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserFacingError, match="not writable"):
            ensure_writable_dir(ro, what="--out folder")
        with pytest.raises(UserFacingError, match="cannot create"):
            ensure_writable_dir(ro / "new", what="--out folder")
    finally:
        ro.chmod(0o755)
